//! Bookings: book, read, list, cancel, check in, join a waitlist, and a
//! resident's notifications. Changes go to the booking desk and are
//! answered once durable. Refusals carry the rule: 422 `{"error","rule"}`;
//! a full slot is 409 `{"error","offer":{booking},"waitlist":
//! "/api/v1/bookings/<id>/waitlist"}`. A change the desk could not make
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
use serde::Deserialize;
use serde_json::{json, Value};

use super::ranges::{next_of, PageQuery};
use super::routing::{get, may, post, Routes};
use super::{
    blocking, check_label, error, internal, json_body, parse_instant, query_of, ranges, window,
    ApiState, HttpError, WindowQuery,
};
use crate::bookings::{BookRequest, BookingPlace, DeskError, ListFilter};
use crate::records::{Booker, Booking, Group};
use crate::schedule::Refusal;

pub(super) fn routes() -> Routes {
    Routes::default()
        .route(
            "/api/v1/bookings",
            get(may::SEE_BOOKINGS, list_bookings).post(may::BOOK, book),
        )
        .route(
            "/api/v1/bookings/{id}",
            get(may::SEE_BOOKINGS, get_booking).delete(may::BOOK, cancel),
        )
        .route("/api/v1/bookings/{id}/checkin", post(may::STAFF, check_in))
        .route(
            "/api/v1/bookings/{id}/waitlist",
            post(may::BOOK, join_waitlist),
        )
        .route(
            "/api/v1/notifications",
            get(may::SEE_BOOKINGS, notifications),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookBody {
    resource: String,
    slot_start: Value,
    resident: String,
    group: String,
    #[serde(default)]
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
    let slot_start = parse_instant(state, "slot_start", &body.slot_start)
        .map_err(|e| HttpError(StatusCode::UNPROCESSABLE_ENTITY, e.1))?;
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

/// An offer as a refusal shows it: without its resident (and child's
/// birth date), since no error answer names a resident; `GET
/// /api/v1/bookings/{id}` shows the whole booking.
fn without_resident(offer: Box<Booking>) -> Value {
    let mut offer = json!(offer);
    if let Some(fields) = offer.as_object_mut() {
        fields.remove("resident");
        fields.remove("child_birthdate");
    }
    offer
}

fn desk_error(e: DeskError) -> Response {
    match e {
        DeskError::Refused(Refusal::Rule { rule, reason }, _) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": reason, "rule": rule })),
        )
            .into_response(),
        DeskError::Refused(Refusal::Full { reason }, offer) => {
            let waitlist = offer
                .as_ref()
                .map(|o| format!("/api/v1/bookings/{}/waitlist", o.id));
            let offer = offer.map(without_resident);
            (
                StatusCode::CONFLICT,
                Json(json!({ "error": reason, "offer": offer, "waitlist": waitlist })),
            )
                .into_response()
        }
        DeskError::NoResource(_) | DeskError::NoBooking(_) => {
            error(StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        DeskError::Conflict(reason) => error(StatusCode::CONFLICT, reason).into_response(),
        DeskError::KeyReused => {
            error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response()
        }
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

async fn get_booking(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, HttpError> {
    blocking(&state, move |state| {
        let booking = state.bookings.booking(&id).map_err(internal)?;
        booking.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no booking {id}")))
    })
    .await
    .map(Json)
}

async fn cancel(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.cancel(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

async fn check_in(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.check_in(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

async fn join_waitlist(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.join_waitlist(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

/// A booking list's query: a window, whose bookings, and a page.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookingListQuery {
    from: String,
    to: String,
    resident: Option<String>,
    resource: Option<String>,
    center: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_bookings(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<BookingListQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let query = query_of(query)?;
    let labels = [
        ("resident", &query.resident),
        ("resource", &query.resource),
        ("center", &query.center),
    ];
    for (field, value) in labels {
        if let Some(value) = value {
            check_label(field, value).map_err(|e| HttpError(StatusCode::BAD_REQUEST, e.1))?;
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
    let mut answer = json!({ "count": bookings.len(), "bookings": bookings });
    if let Some(next) =
        next_of(next.map(|(start, id)| [&start.to_be_bytes()[..], id.as_bytes()].concat()))
    {
        answer["next"] = Value::String(next);
    }
    Ok(Json(answer))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationQuery {
    resident: String,
    after: Option<String>,
    limit: Option<usize>,
}

/// A resident's notifications, oldest first, a page at a time (`after`,
/// `limit`; `next` absent on the last page).
async fn notifications(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<NotificationQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
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
        let mut answer = json!({ "resident": resident, "notifications": page.items });
        if let Some(next) = next_of(page.next) {
            answer["next"] = Value::String(next);
        }
        Ok(Json(answer))
    })
    .await
}

#[cfg(test)]
mod tests {
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
        assert_eq!(body["error"], "at most 1 booking(s) a day");

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
        assert_eq!(status, 409);
        assert_eq!(body["offer"]["id"], "00000000000000ab");
        assert_eq!(
            body["waitlist"],
            "/api/v1/bookings/00000000000000ab/waitlist"
        );

        let (status, _) = answer(DeskError::NoBooking("x".into())).await;
        assert_eq!(status, 404);
        let (status, body) = answer(DeskError::Conflict("closed for maintenance".into())).await;
        assert_eq!(
            (status, body["error"].as_str()),
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
            idempotency_key(&headers).map_err(|e| (e.0, e.1))
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
