//! What a center's counters and pianos counted: headcount and rooms'
//! occupancy, visits per local day, piano minutes per local day.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{Datelike, NaiveDate};
use protocol::api::{
    CenterOccupancy, CenterPianoUsage, CenterVisits, DayVisits, PianoDay, RoomOccupancy,
};
use protocol::ENTRANCE_ROOM;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::routes;

use super::routing::{may, Routes};
use super::{blocking, check_parameter, error, internal, query_of, ranges, ApiState, HttpError};
use crate::clock::unix_ms;

/// A center the path names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct CenterPath {
    /// The center's id.
    #[param(example = "c1", pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pub(super) id: String,
}

pub(super) fn routes() -> Routes {
    Routes::group("centers")
        .route(may::READ, routes!(center_occupancy))
        .route(may::READ, routes!(center_visits))
        .route(may::READ, routes!(center_pianos))
}

/// Longest range of days a center query answers at once.
const MAX_RANGE_DAYS: i64 = 366;

/// The local days asked about, both included, at most 366, in the years
/// 2000-2199.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DayRangeQuery {
    /// YYYY-MM-DD
    #[param(example = "2027-01-01")]
    from: String,
    /// YYYY-MM-DD
    #[param(example = "2027-01-31")]
    to: String,
}

/// Visits of `center` on every day from `from` to `to`.
fn visits_between(
    state: &ApiState,
    center: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<CenterVisits, HttpError> {
    let counted: HashMap<NaiveDate, u64> = state
        .store
        .visits(center, from, to)
        .map_err(internal)?
        .into_iter()
        .collect();
    let days: Vec<DayVisits> = from
        .iter_days()
        .take_while(|day| *day <= to)
        .map(|day| DayVisits {
            day: day.to_string(),
            visits: counted.get(&day).copied().unwrap_or(0),
        })
        .collect();
    Ok(CenterVisits {
        center: center.to_owned(),
        from: from.to_string(),
        to: to.to_string(),
        total: days.iter().map(|d| d.visits).sum(),
        days,
    })
}

/// Visits of a center per local day (its entrance counters' `in`).
#[utoipa::path(get, path = "/api/v1/centers/{id}/visits",
    params(CenterPath, DayRangeQuery),
    responses((status = 200, description = "every day of the range, days without visits as 0", body = CenterVisits)))]
async fn center_visits(
    State(state): State<Arc<ApiState>>,
    Path(CenterPath { id: center }): Path<CenterPath>,
    query: Result<Query<DayRangeQuery>, QueryRejection>,
) -> Result<Json<CenterVisits>, HttpError> {
    check_parameter("center", &center)?;
    let (from, to) = day_range(query)?;
    blocking(&state, move |state| {
        visits_between(state, &center, from, to)
    })
    .await
    .map(Json)
}

/// The days of a `?from=YYYY-MM-DD&to=YYYY-MM-DD` query (both included).
fn day_range(
    query: Result<Query<DayRangeQuery>, QueryRejection>,
) -> Result<(NaiveDate, NaiveDate), HttpError> {
    let query = query_of(query)?;
    let (from, to) = protocol::calendar::day_range(&query.from, &query.to, MAX_RANGE_DAYS)
        .map_err(|reason| error(StatusCode::BAD_REQUEST, reason))?;
    Ok((ranges::day("from", from)?, ranges::day("to", to)?))
}

/// How long each piano of a center played per local day.
#[utoipa::path(get, path = "/api/v1/centers/{id}/pianos",
    params(CenterPath, DayRangeQuery),
    responses((status = 200, description = "minutes per piano and day (ended sessions)", body = CenterPianoUsage)))]
async fn center_pianos(
    State(state): State<Arc<ApiState>>,
    Path(CenterPath { id: center }): Path<CenterPath>,
    query: Result<Query<DayRangeQuery>, QueryRejection>,
) -> Result<Json<CenterPianoUsage>, HttpError> {
    check_parameter("center", &center)?;
    let (from, to) = day_range(query)?;
    blocking(&state, move |state| piano_usage(state, center, from, to))
        .await
        .map(Json)
}

fn piano_usage(
    state: &ApiState,
    center: String,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<CenterPianoUsage, HttpError> {
    let usage: Vec<PianoDay> = state
        .store
        .usage(&center, from, to)
        .map_err(internal)?
        .into_iter()
        .map(|(day, piano, ms)| PianoDay {
            day: day.to_string(),
            piano,
            minutes: ms as f64 / 60_000.0,
        })
        .collect();
    Ok(CenterPianoUsage {
        center,
        from: from.to_string(),
        to: to.to_string(),
        total_minutes: usage.iter().map(|u| u.minutes).sum(),
        usage,
    })
}

/// People in a center and its rooms now, its visits today and this month.
#[utoipa::path(get, path = "/api/v1/centers/{id}/occupancy",
    params(CenterPath),
    responses((status = 200, description = "headcount, rooms, visits", body = CenterOccupancy)))]
async fn center_occupancy(
    State(state): State<Arc<ApiState>>,
    Path(CenterPath { id: center }): Path<CenterPath>,
) -> Result<Json<CenterOccupancy>, HttpError> {
    check_parameter("center", &center)?;
    blocking(&state, move |state| occupancy(state, center))
        .await
        .map(Json)
}

/// Headcount, visits today and this month, and the rooms of `center`.
fn occupancy(state: &ApiState, center: String) -> Result<CenterOccupancy, HttpError> {
    let today = state.calendar.day(unix_ms());
    let first_of_month = today.with_day(1).unwrap_or(today);
    let month = visits_between(state, &center, first_of_month, today)?;
    let mut headcount = 0;
    let mut rooms = Vec::new();
    for (c, room, count) in state.store.occupancies().map_err(internal)? {
        if c != center {
            continue;
        }
        if room == ENTRANCE_ROOM {
            headcount = count.people;
            continue;
        }
        let seats = state.rooms().seats(&c, &room);
        rooms.push(RoomOccupancy {
            room,
            people: count.people,
            seats,
            ratio: seats.map(|s| count.people as f64 / s.max(1) as f64),
            saturated: count.saturated,
        });
    }
    Ok(CenterOccupancy {
        center,
        headcount,
        visits_today: month.days.last().map(|d| d.visits).unwrap_or(0),
        visits_this_month: month.total,
        rooms,
    })
}
