//! Every error the API answers is an RFC 9457 problem details object,
//! `application/problem+json`: `type` (a stable URI per `Kind`, listed in
//! docs/api.md), `title`, `status`, `detail` (the reason, naming the field
//! at fault) and, when a booking rule refused, `rule`.
//!
//! Handlers answer `HttpError`s; axum's own rejections that reach no
//! handler code (a path segment that is not UTF-8, a method the route does
//! not take) are turned into problems by the `problems` layer, so no error
//! answer leaves the API in another shape.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::api::{Problem, PROBLEM_BASE, PROBLEM_JSON};
use serde::Serialize;

/// A kind of problem: its `type` URI (`PROBLEM_BASE` + `slug`) and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 400: a query, path or header value out of shape or range.
    InvalidParameter,
    /// 400: a body that is not JSON.
    MalformedBody,
    /// 401: no bearer token, or one the hub does not know.
    Unauthorized,
    /// 403: a token whose role the route does not admit.
    Forbidden,
    /// 404: no record with the id the path names.
    NotFound,
    /// 404: no route at this path.
    NoSuchRoute,
    /// 405: the route does not take the method.
    MethodNotAllowed,
    /// 409: the change contradicts what is stored.
    Conflict,
    /// 409: the slot is full; a waitlist place is offered.
    SlotFull,
    /// 413: a body over the route's limit.
    BodyTooLarge,
    /// 415: a body without `Content-Type: application/json`.
    UnsupportedMediaType,
    /// 422: a body field out of shape or range.
    InvalidField,
    /// 422: a booking rule refused (`rule` names it).
    BookingRule,
    /// 422: an `Idempotency-Key` sent again with another request.
    KeyReused,
    /// 500: a store failure or a bug; the hub's log says more.
    Internal,
    /// 503: the booking desk is busy, stopped, or could not make the
    /// change durable (`Retry-After`).
    Unavailable,
    /// 503: no answer within `api.request_timeout_ms`.
    Timeout,
    /// 503: the hub is starting, or a component is down (`/readyz`).
    NotReady,
    /// Any other status: `about:blank`, titled by the status (RFC 9457
    /// §4.2.1).
    Other,
}

impl Kind {
    /// Every kind with a `type` of its own (not `Other`).
    pub const ALL: [Kind; 18] = [
        Kind::InvalidParameter,
        Kind::MalformedBody,
        Kind::Unauthorized,
        Kind::Forbidden,
        Kind::NotFound,
        Kind::NoSuchRoute,
        Kind::MethodNotAllowed,
        Kind::Conflict,
        Kind::SlotFull,
        Kind::BodyTooLarge,
        Kind::UnsupportedMediaType,
        Kind::InvalidField,
        Kind::BookingRule,
        Kind::KeyReused,
        Kind::Internal,
        Kind::Unavailable,
        Kind::Timeout,
        Kind::NotReady,
    ];

    /// The last segment of the kind's `type` URI.
    pub fn slug(self) -> &'static str {
        self.facts().0
    }

    /// The status a problem of this kind is answered with (`Other`: none
    /// of its own).
    pub fn status(self) -> Option<StatusCode> {
        self.facts().1
    }

    fn title(self) -> &'static str {
        self.facts().2
    }

    fn facts(self) -> (&'static str, Option<StatusCode>, &'static str) {
        use StatusCode as S;
        match self {
            Kind::InvalidParameter => (
                "invalid-parameter",
                Some(S::BAD_REQUEST),
                "Invalid parameter",
            ),
            Kind::MalformedBody => ("malformed-body", Some(S::BAD_REQUEST), "Malformed body"),
            Kind::Unauthorized => ("unauthorized", Some(S::UNAUTHORIZED), "Unauthorized"),
            Kind::Forbidden => ("forbidden", Some(S::FORBIDDEN), "Forbidden"),
            Kind::NotFound => ("not-found", Some(S::NOT_FOUND), "Not found"),
            Kind::NoSuchRoute => ("no-such-route", Some(S::NOT_FOUND), "No such route"),
            Kind::MethodNotAllowed => (
                "method-not-allowed",
                Some(S::METHOD_NOT_ALLOWED),
                "Method not allowed",
            ),
            Kind::Conflict => ("conflict", Some(S::CONFLICT), "Conflict"),
            Kind::SlotFull => ("slot-full", Some(S::CONFLICT), "Slot full"),
            Kind::BodyTooLarge => (
                "body-too-large",
                Some(S::PAYLOAD_TOO_LARGE),
                "Body too large",
            ),
            Kind::UnsupportedMediaType => (
                "unsupported-media-type",
                Some(S::UNSUPPORTED_MEDIA_TYPE),
                "Unsupported media type",
            ),
            Kind::InvalidField => (
                "invalid-field",
                Some(S::UNPROCESSABLE_ENTITY),
                "Invalid field",
            ),
            Kind::BookingRule => (
                "booking-rule",
                Some(S::UNPROCESSABLE_ENTITY),
                "Refused by a booking rule",
            ),
            Kind::KeyReused => (
                "idempotency-key-reused",
                Some(S::UNPROCESSABLE_ENTITY),
                "Idempotency key reused",
            ),
            Kind::Internal => ("internal", Some(S::INTERNAL_SERVER_ERROR), "Internal error"),
            Kind::Unavailable => ("unavailable", Some(S::SERVICE_UNAVAILABLE), "Unavailable"),
            Kind::Timeout => ("timeout", Some(S::SERVICE_UNAVAILABLE), "No answer in time"),
            Kind::NotReady => ("not-ready", Some(S::SERVICE_UNAVAILABLE), "Not ready"),
            Kind::Other => ("", None, ""),
        }
    }

    /// The kind an error of `status` is when nothing more is known: the
    /// first kind answered with it, else `Other`.
    pub fn of_status(status: StatusCode) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.status() == Some(status))
            .unwrap_or(Kind::Other)
    }

    /// The `type` URI (`about:blank` for `Other`).
    pub fn uri(self) -> String {
        match self {
            Kind::Other => "about:blank".to_string(),
            kind => format!("{PROBLEM_BASE}{}", kind.slug()),
        }
    }
}

/// An API error: a kind, the status it is answered with, the reason, and
/// the booking rule that refused, if one did.
#[derive(Debug)]
pub struct HttpError {
    kind: Kind,
    status: StatusCode,
    detail: String,
    rule: Option<String>,
}

impl HttpError {
    /// A problem of `kind`, answered with the kind's status.
    pub fn new(kind: Kind, detail: impl Into<String>) -> HttpError {
        let status = kind.status().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpError {
            kind,
            status,
            detail: detail.into(),
            rule: None,
        }
    }

    /// A problem answered with `status`, of the kind that status is by
    /// default (`Kind::of_status`).
    pub fn of_status(status: StatusCode, detail: impl Into<String>) -> HttpError {
        HttpError {
            kind: Kind::of_status(status),
            status,
            detail: detail.into(),
            rule: None,
        }
    }

    /// A booking rule's refusal: 422 naming the rule.
    pub fn refused_by(rule: &str, detail: impl Into<String>) -> HttpError {
        HttpError {
            rule: Some(rule.to_string()),
            ..HttpError::new(Kind::BookingRule, detail)
        }
    }

    /// The same reason about a body field (422): the checks of times and
    /// labels serve parameters and body fields alike.
    pub fn for_field(self) -> HttpError {
        HttpError::new(Kind::InvalidField, self.detail)
    }

    /// The same reason about a query, path or header parameter (400).
    pub fn for_parameter(self) -> HttpError {
        HttpError::new(Kind::InvalidParameter, self.detail)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The body this error is answered with.
    pub fn problem(&self) -> Problem {
        let title = match self.kind {
            Kind::Other => self.status.canonical_reason().unwrap_or("Error"),
            kind => kind.title(),
        };
        Problem {
            problem_type: self.kind.uri(),
            title: title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            rule: self.rule.clone(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        answer(self.status, &self.problem())
    }
}

/// `body` (a `Problem`, or one with members of its own kind) answered
/// with `status` as `application/problem+json`.
pub fn answer(status: StatusCode, body: &impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// Longest body of an error answered by axum itself that `problems`
/// keeps as the detail (its rejections' texts are one line).
const MAX_PLAIN_DETAIL: usize = 4096;

/// The layer that keeps every error a problem: an error answer in any
/// other media type (axum's own rejections, answered before or around a
/// handler) becomes a problem of its status, its text the detail. Its
/// headers (`Allow`, `Retry-After`) are kept.
pub async fn problems(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status().as_u16() < 400 || is_problem(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_DETAIL)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let error = HttpError::of_status(parts.status, text);
    let mut problem = error.problem();
    if problem.detail.is_empty() {
        problem.detail = problem.title.clone();
    }
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_types_and_statuses_default_to_the_first_kind() {
        let mut slugs: Vec<&str> = Kind::ALL.iter().map(|k| k.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), Kind::ALL.len());
        for (status, kind) in [
            (StatusCode::BAD_REQUEST, Kind::InvalidParameter),
            (StatusCode::NOT_FOUND, Kind::NotFound),
            (StatusCode::CONFLICT, Kind::Conflict),
            (StatusCode::UNPROCESSABLE_ENTITY, Kind::InvalidField),
            (StatusCode::SERVICE_UNAVAILABLE, Kind::Unavailable),
            (StatusCode::IM_A_TEAPOT, Kind::Other),
        ] {
            assert_eq!(Kind::of_status(status), kind, "{status}");
        }
    }

    #[test]
    fn a_problem_carries_type_title_status_detail_and_the_rule() {
        let problem = HttpError::refused_by("quota_per_day", "at most 1 a day").problem();
        assert_eq!(
            problem.problem_type,
            "https://yizhan.dev/problems/booking-rule"
        );
        assert_eq!(problem.kind(), "booking-rule");
        assert_eq!(
            (problem.status, problem.rule.as_deref()),
            (422, Some("quota_per_day"))
        );
        assert_eq!(problem.detail, "at most 1 a day");
        let teapot = HttpError::of_status(StatusCode::IM_A_TEAPOT, "short and stout").problem();
        assert_eq!(
            (teapot.problem_type.as_str(), teapot.title.as_str()),
            ("about:blank", "I'm a teapot")
        );
        let query = HttpError::new(Kind::InvalidField, "`from` …").for_parameter();
        assert_eq!(
            (query.status(), query.kind()),
            (StatusCode::BAD_REQUEST, Kind::InvalidParameter)
        );
    }

    #[tokio::test]
    async fn plain_errors_become_problems_and_keep_their_headers() {
        use axum::routing::get;
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/plain",
                get(|| async {
                    (
                        StatusCode::METHOD_NOT_ALLOWED,
                        [(header::ALLOW, "GET")],
                        "use GET",
                    )
                }),
            )
            .route("/fine", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(problems));
        let call = |path: &'static str| {
            let app = app.clone();
            async move {
                let request = Request::get(path).body(Body::empty()).unwrap();
                // invariant: axum's router never fails (Infallible).
                app.oneshot(request).await.expect("infallible")
            }
        };
        let response = call("/plain").await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (problem.kind(), problem.detail.as_str()),
            ("method-not-allowed", "use GET")
        );
        let fine = call("/fine").await;
        assert_eq!(
            fine.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
