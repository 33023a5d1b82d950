//! Bookings: book, read, list, cancel, check in, join a waitlist, and a
//! resident's notifications. Changes go to the booking desk and are
//! answered once durable. Refusals carry the rule: 422 `{"error","rule"}`;
//! a full slot is 409 `{"error","offer":{booking},"waitlist":
//! "/api/v1/bookings/<id>/waitlist"}`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::routing::{get, post, Routes};
use super::{
    blocking, check_label, error, internal, json_body, parse_instant, query_of, window, Admin,
    ApiState, HttpError, WindowQuery,
};
use crate::bookings::{BookRequest, DeskError, ListFilter};
use crate::records::{Booker, Booking, Group};
use crate::schedule::Refusal;

pub(super) fn routes() -> Routes {
    Routes::default()
        .route("/api/v1/bookings", get(list_bookings).post(book))
        .route("/api/v1/bookings/{id}", get(get_booking).delete(cancel))
        .route("/api/v1/bookings/{id}/checkin", post(check_in))
        .route("/api/v1/bookings/{id}/waitlist", post(join_waitlist))
        .route("/api/v1/notifications", get(notifications))
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

async fn book(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    body: Result<Json<BookBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Booking>), Response> {
    let body = json_body(body).map_err(IntoResponse::into_response)?;
    let request = book_request(&state, body).map_err(IntoResponse::into_response)?;
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
            protocol::calendar::parse_date(&d).map_err(|_| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "`child_birthdate` must be a date as YYYY-MM-DD",
                )
            })
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
    })
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
        DeskError::Store(_) | DeskError::Stopped => internal(e).into_response(),
    }
}

async fn get_booking(
    _: Admin,
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
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.cancel(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

async fn check_in(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.check_in(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

async fn join_waitlist(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Booking>, Response> {
    let booking = state.bookings.join_waitlist(id).await.map_err(desk_error)?;
    Ok(Json(booking))
}

async fn list_bookings(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let query = query_of(query)?;
    let (from, to) = window(&state, &query)?;
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
    let bookings = blocking(&state, move |state| {
        let bookings = state.bookings.bookings(&filter, from, to);
        bookings.map_err(internal)
    })
    .await?;
    Ok(Json(
        json!({ "count": bookings.len(), "bookings": bookings }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResidentQuery {
    resident: String,
}

async fn notifications(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ResidentQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let query = query_of(query)?;
    let resident = query.resident;
    blocking(&state, move |state| {
        let list = state.bookings.notifications(&resident).map_err(internal)?;
        Ok(Json(json!({ "resident": resident, "notifications": list })))
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
    }
}
