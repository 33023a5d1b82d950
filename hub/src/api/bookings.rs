//! Bookings: book, read, list, cancel, check in, join a waitlist, and a
//! resident's notifications. Changes go to the booking desk and are
//! answered once durable. Refusals are problems (`problem`): a booking
//! rule's a 422 `booking-rule` naming the `rule`; a full slot a 409
//! `slot-full` with the `offer` of a waitlist place and its `waitlist`
//! link (`/api/v1/bookings/<id>/waitlist`). A change the desk could not make
//! durable (undone), a desk with `API_QUEUE` requests waiting, or a
//! stopped desk is 503 with `Retry-After`. A booking sent with an
//! `Idempotency-Key` header is answered once: a retry with the same key
//! for the same resident gets the first answer (201 or 409) again.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::api::Problem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, IntoResponses, ToSchema};
use utoipa_axum::routes;

use super::problem::{answer, Kind};
use super::ranges::{next_of, PageQuery};
use super::routing::{may, Routes};
use super::{
    blocking, check_label, check_parameter, error, internal, json_body, parse_instant, query_of,
    ranges, window, ApiState, HttpError, Instant, WindowQuery,
};
use crate::bookings::{BookRequest, BookingPlace, DeskError, ListFilter};
use crate::records::{Booker, Booking, Group, Notification, Status};
use crate::schedule::Refusal;

/// A booking (or an offer, a waitlist place) the path names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct BookingPath {
    /// The booking's id.
    id: String,
}

pub(super) fn routes() -> Routes {
    Routes::group("bookings")
        .route(may::SEE_BOOKINGS, routes!(list_bookings))
        .route(may::BOOK, routes!(book))
        .route(may::SEE_BOOKINGS, routes!(get_booking))
        .route(may::BOOK, routes!(cancel))
        .route(may::STAFF, routes!(check_in))
        .route(may::BOOK, routes!(join_waitlist))
        .route(may::SEE_BOOKINGS, routes!(notifications))
}

/// A booking asked for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"resource": "yoga", "slot_start": "2027-01-06T19:00:00+08:00",
                          "resident": "r1", "group": "adult"}))]
struct BookBody {
    #[schema(example = "yoga")]
    resource: String,
    /// The slot's start.
    #[schema(value_type = Instant)]
    slot_start: Value,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "r1")]
    resident: String,
    /// The resident's group (fair shares and age rules).
    #[schema(value_type = Group)]
    group: String,
    /// YYYY-MM-DD (childcare: the child's age is checked at the slot).
    #[serde(default)]
    #[schema(format = Date)]
    child_birthdate: Option<String>,
}

/// The header that makes a booking request safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 255;

/// The request's `Idempotency-Key`: 1-255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, HttpError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_KEY_LEN || !visible {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("`Idempotency-Key` must be 1-{MAX_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_string()))
}

/// Books a place in a slot for a resident, once durable. With an
/// `Idempotency-Key`, a retry of the same request answers the first answer.
#[utoipa::path(post, path = "/api/v1/bookings",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters: a retry with the same key for the same resident gets the first answer")),
    request_body = BookBody,
    responses(
        (status = 201, description = "booked", body = Booking, links(
            ("read" = (operation_id = "get_booking", parameters(("id" = "$response.body#/id")))),
            ("cancel" = (operation_id = "cancel", parameters(("id" = "$response.body#/id")))),
            ("check_in" = (operation_id = "check_in", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, description = "`Idempotency-Key` invalid"),
        (status = 404, description = "no resource with this id"),
        (status = 409, description = "the slot is full: a waitlist place is offered (`offer`, `waitlist`); or closed for maintenance, or the resident already holds a place", body = SlotFull, content_type = "application/problem+json", links(
            ("join_waitlist" = (operation_id = "join_waitlist", parameters(("id" = "$response.body#/offer/id")))),
        )),
        (status = 422, description = "a field invalid, a booking rule refused (`rule`), or the key was used with another request"),
        (status = 503, description = "the desk is busy, stopped, or could not make the booking durable (`Retry-After`)"),
    ))]
async fn book(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<BookBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Booking>), Response> {
    let key = idempotency_key(&headers).map_err(IntoResponse::into_response)?;
    let body = json_body(body).map_err(IntoResponse::into_response)?;
    let mut request = book_request(&state, body).map_err(IntoResponse::into_response)?;
    request.idempotency_key = key;
    let booking = state.bookings.book(request).await.map_err(desk_error)?;
    tracing::debug!(booking = %booking.id, resource = %booking.resource, "booked");
    Ok((StatusCode::CREATED, Json(booking)))
}

fn book_request(state: &ApiState, body: BookBody) -> Result<BookRequest, HttpError> {
    check_label("resident", &body.resident)?;
    if state.bookings.resources.get(&body.resource).is_none() {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no resource {}", body.resource),
        ));
    }
    let group = Group::parse(&body.group).ok_or_else(|| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`group` must be child, youth, adult or senior",
        )
    })?;
    let child_birthdate = body
        .child_birthdate
        .map(|d| {
            let date = protocol::calendar::parse_date(&d).map_err(|_| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "`child_birthdate` must be a date as YYYY-MM-DD",
                )
            })?;
            ranges::birth_date("child_birthdate", date)
        })
        .transpose()?;
    let slot_start =
        parse_instant(state, "slot_start", &body.slot_start).map_err(HttpError::for_field)?;
    Ok(BookRequest {
        resource: body.resource,
        slot_start,
        who: Booker {
            resident: body.resident,
            group,
            child_birthdate,
        },
        idempotency_key: None,
    })
}

/// A waitlist place offered with a full slot's refusal: the booking
/// without its resident (and child's birth date), since no error answer
/// names a resident; `GET /api/v1/bookings/{id}` shows the whole booking.
#[derive(Serialize, ToSchema)]
struct Offer {
    id: String,
    resource: String,
    center: String,
    kind: String,
    slot_start: u64,
    slot_end: u64,
    group: Group,
    status: Status,
    created_at: u64,
}

impl From<Booking> for Offer {
    fn from(b: Booking) -> Offer {
        Offer {
            id: b.id,
            resource: b.resource,
            center: b.center,
            kind: b.kind,
            slot_start: b.slot_start,
            slot_end: b.slot_end,
            group: b.group,
            status: b.status,
            created_at: b.created_at,
        }
    }
}

/// A full slot's refusal: a `slot-full` problem with the offer of a
/// waitlist place, and where to take it.
#[derive(Serialize, ToSchema)]
struct SlotFull {
    #[serde(flatten)]
    problem: Problem,
    offer: Option<Offer>,
    /// `POST` here to join the waitlist with the offer.
    waitlist: Option<String>,
}

fn desk_error(e: DeskError) -> Response {
    match e {
        DeskError::Refused(Refusal::Rule { rule, reason }, _) => {
            HttpError::refused_by(rule, reason).into_response()
        }
        DeskError::Refused(Refusal::Full { reason }, offer) => {
            let waitlist = offer
                .as_ref()
                .map(|o| format!("/api/v1/bookings/{}/waitlist", o.id));
            let body = SlotFull {
                problem: HttpError::new(Kind::SlotFull, reason).problem(),
                offer: offer.map(|o| Offer::from(*o)),
                waitlist,
            };
            answer(StatusCode::CONFLICT, &body)
        }
        DeskError::NoResource(_) | DeskError::NoBooking(_) => {
            error(StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        DeskError::Conflict(reason) => error(StatusCode::CONFLICT, reason).into_response(),
        DeskError::KeyReused => HttpError::new(Kind::KeyReused, e.to_string()).into_response(),
        DeskError::Busy => unavailable(&e, BUSY_RETRY_SECS),
        DeskError::NotDurable | DeskError::Stopped => unavailable(&e, STOPPED_RETRY_SECS),
        DeskError::Store(_) => internal(e).into_response(),
    }
}

/// When to retry after a full queue: the desk applies a batch in
/// milliseconds.
const BUSY_RETRY_SECS: u32 = 1;
/// When to retry after an fsync failure or a stopped desk: the hub stops
/// and its process manager starts it again.
const STOPPED_RETRY_SECS: u32 = 5;

/// 503 with `Retry-After`.
fn unavailable(e: &DeskError, retry_after_secs: u32) -> Response {
    let retry = [(header::RETRY_AFTER, retry_after_secs.to_string())];
    (retry, error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())).into_response()
}

/// What a change the desk makes to a named booking answers besides its
/// own answers: a part of the document only (`desk_error` makes them).
#[derive(IntoResponses)]
#[allow(dead_code)] // never built: the variants describe answers
enum DeskAnswers {
    #[response(status = 404, description = "no booking with this id")]
    NoBooking,
    #[response(
        status = 503,
        description = "the desk is busy, stopped, or could not make the change durable (`Retry-After`)"
    )]
    Unavailable,
}

/// One booking, whole.
#[utoipa::path(get, path = "/api/v1/bookings/{id}",
    params(BookingPath),
    responses(
        (status = 200, description = "the booking", body = Booking),
        (status = 404, description = "no booking with this id"),
    ))]
async fn get_booking(
    State(state): State<Arc<ApiState>>,
    Path(BookingPath { id }): Path<BookingPath>,
) -> Result<Json<Booking>, HttpError> {
    blocking(&state, move |state| {
        let booking = state.bookings.booking(&id).map_err(internal)?;
        booking.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no booking {id}")))
    })
    .await
    .map(Json)
}

/// Cancels a booking (or leaves a waitlist); the place goes to the
/// waitlist's first.
#[utoipa::path(delete, path = "/api/v1/bookings/{id}",
    params(BookingPath),
    responses(
        (status = 200, description = "cancelled", body = Booking),
        (status = 409, description = "the booking can no longer be cancelled"),
        DeskAnswers,
    ))]
async fn cancel(
    State(state): State<Arc<ApiState>>,
    Path(BookingPath { id }): Path<BookingPath>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.cancel(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

/// Checks a booking in (staff, at the desk).
#[utoipa::path(post, path = "/api/v1/bookings/{id}/checkin",
    params(BookingPath),
    responses(
        (status = 200, description = "checked in", body = Booking),
        (status = 409, description = "not a booked place, or outside its check-in window"),
        DeskAnswers,
    ))]
async fn check_in(
    State(state): State<Arc<ApiState>>,
    Path(BookingPath { id }): Path<BookingPath>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.check_in(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

/// Takes the waitlist place a full slot's refusal offered.
#[utoipa::path(post, path = "/api/v1/bookings/{id}/waitlist",
    params(BookingPath),
    responses(
        (status = 200, description = "on the waitlist", body = Booking),
        (status = 409, description = "not an open offer"),
        DeskAnswers,
    ))]
async fn join_waitlist(
    State(state): State<Arc<ApiState>>,
    Path(BookingPath { id }): Path<BookingPath>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.join_waitlist(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

/// A booking list's query: a window of slot starts (as availability's),
/// whose bookings (at least one of `resident`, `resource`, `center`), and
/// a page.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct BookingListQuery {
    #[param(example = "2027-01-04")]
    from: String,
    #[param(example = "2027-01-05")]
    to: String,
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    resident: Option<String>,
    #[param(example = "yoga", pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    resource: Option<String>,
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    center: Option<String>,
    /// The `next` of the page before, as it was answered.
    #[param(pattern = "^[0-9a-f]{0,512}$")]
    after: Option<String>,
    /// 1-10000; 100 when not given.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// A page of bookings.
#[derive(Serialize, ToSchema)]
struct BookingList {
    /// Bookings on this page.
    count: usize,
    bookings: Vec<Booking>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Bookings whose slots start in a window, of a resident, a resource or a
/// center, in slot order, a page at a time.
#[utoipa::path(get, path = "/api/v1/bookings",
    params(BookingListQuery),
    responses((status = 200, description = "a page of bookings", body = BookingList)))]
async fn list_bookings(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<BookingListQuery>, QueryRejection>,
) -> Result<Json<BookingList>, HttpError> {
    let query = query_of(query)?;
    let labels = [
        ("resident", &query.resident),
        ("resource", &query.resource),
        ("center", &query.center),
    ];
    for (field, value) in labels {
        if let Some(value) = value {
            check_parameter(field, value)?;
        }
    }
    let (from, to) = window(
        &state,
        &WindowQuery {
            from: query.from,
            to: query.to,
        },
    )?;
    let filter = ListFilter {
        resident: query.resident,
        resource: query.resource,
        center: query.center,
    };
    if filter.resident.is_none() && filter.resource.is_none() && filter.center.is_none() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "give `resident`, `resource` or `center` (or several)",
        ));
    }
    let at = PageQuery {
        after: query.after,
        limit: query.limit,
    }
    .checked()?;
    let after = at.after.as_deref().map(booking_place).transpose()?;
    let (bookings, next) = blocking(&state, move |state| {
        let page = state
            .bookings
            .bookings(&filter, (from, to), after.as_ref(), at.limit);
        page.map_err(internal)
    })
    .await?;
    let next = next_of(next.map(|(start, id)| [&start.to_be_bytes()[..], id.as_bytes()].concat()));
    Ok(Json(BookingList {
        count: bookings.len(),
        bookings,
        next,
    }))
}

/// A booking list's `after` (its `next`: a slot start, big-endian, then a
/// booking id).
fn booking_place(after: &[u8]) -> Result<BookingPlace, HttpError> {
    let bad = || {
        error(
            StatusCode::BAD_REQUEST,
            "`after` must be a page's `next` as it was answered",
        )
    };
    let (start, id) = after.split_first_chunk::<8>().ok_or_else(bad)?;
    let id = std::str::from_utf8(id).map_err(|_| bad())?;
    Ok((u64::from_be_bytes(*start), id.to_owned()))
}

/// Whose notifications, and a page.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct NotificationQuery {
    resident: String,
    /// The `next` of the page before, as it was answered.
    #[param(pattern = "^[0-9a-f]{0,512}$")]
    after: Option<String>,
    /// 1-10000; 100 when not given.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// A page of a resident's notifications.
#[derive(Serialize, ToSchema)]
struct NotificationList {
    resident: String,
    notifications: Vec<Notification>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// A resident's notifications, oldest first, a page at a time (`after`,
/// `limit`; `next` absent on the last page).
#[utoipa::path(get, path = "/api/v1/notifications",
    params(NotificationQuery),
    responses((status = 200, description = "a page of notifications", body = NotificationList)))]
async fn notifications(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<NotificationQuery>, QueryRejection>,
) -> Result<Json<NotificationList>, HttpError> {
    let query = query_of(query)?;
    let NotificationQuery {
        resident,
        after,
        limit,
    } = query;
    let at = PageQuery { after, limit }.checked()?;
    blocking(&state, move |state| {
        let page = state
            .bookings
            .notifications(&resident, at.after.as_deref(), at.limit)
            .map_err(internal)?;
        Ok(Json(NotificationList {
            resident,
            notifications: page.items,
            next: next_of(page.next),
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The status and JSON body `desk_error` answers `error` with.
    async fn answer(error: DeskError) -> (u16, Value) {
        let response = desk_error(error);
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn refusals_are_422_naming_the_rule_and_a_full_slot_409_with_its_offer() {
        let rule = Refusal::Rule {
            rule: "quota_per_day",
            reason: "at most 1 booking(s) a day".into(),
        };
        let (status, body) = answer(DeskError::Refused(rule, None)).await;
        assert_eq!(
            (status, body["rule"].as_str()),
            (422, Some("quota_per_day"))
        );
        assert_eq!(body["detail"], "at most 1 booking(s) a day");
        assert_eq!(body["type"], "https://yizhan.dev/problems/booking-rule");

        let offer: Booking = serde_json::from_value(json!({
            "id": "00000000000000ab", "resource": "yoga", "center": "c1", "kind": "class",
            "slot_start": 1, "slot_end": 2, "resident": "r", "group": "adult",
            "status": "offered", "created_at": 0
        }))
        .unwrap();
        let full = Refusal::Full {
            reason: "slot full".into(),
        };
        let (status, body) = answer(DeskError::Refused(full, Some(Box::new(offer)))).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (409, Some("https://yizhan.dev/problems/slot-full"))
        );
        assert_eq!(body["offer"]["id"], "00000000000000ab");
        assert!(body["offer"].get("resident").is_none(), "{body}");
        assert_eq!(
            body["waitlist"],
            "/api/v1/bookings/00000000000000ab/waitlist"
        );

        let (status, _) = answer(DeskError::NoBooking("x".into())).await;
        assert_eq!(status, 404);
        let (status, body) = answer(DeskError::Conflict("closed for maintenance".into())).await;
        assert_eq!(
            (status, body["detail"].as_str()),
            (409, Some("closed for maintenance"))
        );
        let (status, _) = answer(DeskError::KeyReused).await;
        assert_eq!(status, 422);
    }

    #[test]
    fn an_undone_change_a_full_queue_and_a_stopped_desk_are_503_with_retry_after() {
        for (e, retry) in [
            (DeskError::NotDurable, "5"),
            (DeskError::Busy, "1"),
            (DeskError::Stopped, "5"),
        ] {
            let response = desk_error(e);
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let header = response.headers().get(header::RETRY_AFTER);
            assert_eq!(header.and_then(|v| v.to_str().ok()), Some(retry));
        }
    }

    #[test]
    fn idempotency_keys_are_1_to_255_visible_ascii_characters() {
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(IDEMPOTENCY_KEY, value.parse().unwrap());
            idempotency_key(&headers).map_err(|e| (e.status(), e.detail().to_string()))
        };
        assert_eq!(idempotency_key(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(check("a1-b2").ok(), Some(Some("a1-b2".to_string())));
        assert!(check(&"k".repeat(255)).is_ok());
        for bad in ["", "a b", &"k".repeat(256)] {
            let (status, reason) = check(bad).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(reason.contains("`Idempotency-Key`"), "{reason}");
        }
    }
}
