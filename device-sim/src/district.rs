//! The district a run sets up on its hub through the API, so that any hub
//! works: every center's rooms (seats and hours: the 24-hour gym behind
//! the gates, the seated rooms in opening hours) and its bookable
//! resources, as the field describes them (`BRIEF.md`): childcare mornings
//! and afternoons for children of 1.5 to 3, three yoga classes a week,
//! study seats by the hour, each piano's hours and each therapy robot's
//! half hours. The lists are pure; `set_up` PUTs them.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveTime, Weekday};
use protocol::api::{ResourceConfig, RoomConfig, SlotConfig};
use protocol::DeviceKind;
use reqwest::Method;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::crowd::{Profile, GYM_CAPACITY};
use crate::hub_api::{ApiCallError, HubApi};
use crate::plan::DeviceSpec;
use crate::simtime::Calendar;

/// What residents book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// Temporary childcare, morning and afternoon, for 18 to 36 months.
    Childcare,
    /// The free yoga classes, three a week.
    Yoga,
    /// A seat in the study room for an hour.
    Study,
    /// An AI piano for an hour.
    Piano,
    /// A moxibustion session on a therapy robot.
    Therapy,
}

/// Where a booked resident checks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckIn {
    /// The bound device: the hub unlocks it at the slot's start and its
    /// `session_start` names the booking.
    Device,
    /// The center's kiosk (no device there knows the resident): the
    /// check-in API.
    Kiosk,
}

impl Service {
    /// The resource's `kind` (a label of the hub's booking metrics).
    pub fn kind(self) -> &'static str {
        match self {
            Service::Childcare => "childcare",
            Service::Yoga => "class",
            Service::Study => "seat",
            Service::Piano => "piano",
            Service::Therapy => "therapy",
        }
    }

    pub fn check_in(self) -> CheckIn {
        match self {
            Service::Piano | Service::Therapy => CheckIn::Device,
            Service::Childcare | Service::Yoga | Service::Study => CheckIn::Kiosk,
        }
    }
}

/// Ages in months the childcare takes (1.5 to 3 years).
pub const CHILDCARE_AGE_MONTHS: [u32; 2] = [18, 36];

/// A slot repeated on some weekdays (all when `days` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailySlot {
    pub days: Vec<Weekday>,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// One bookable resource of a center.
#[derive(Debug, Clone, PartialEq)]
pub struct Bookable {
    pub id: String,
    pub center: String,
    pub service: Service,
    pub room: String,
    /// The piano or robot it is, if any.
    pub devices: Vec<String>,
    pub capacity: u32,
    pub slots: Vec<DailySlot>,
    /// Yuan per slot, below the market's.
    pub price: f64,
    pub market_price: f64,
}

impl Bookable {
    /// Its entry for `PUT /api/v1/resources/{id}`: explicit slots, so that
    /// the simulator knows them without reading the hub's layout rules.
    pub fn config(&self) -> ResourceConfig {
        let hhmm = |t: NaiveTime| t.format("%H:%M").to_string();
        ResourceConfig {
            id: self.id.clone(),
            center: self.center.clone(),
            kind: self.service.kind().to_owned(),
            room: self.room.clone(),
            devices: self.devices.clone(),
            capacity: self.capacity,
            slot_minutes: None,
            hours: None,
            open: None,
            close: None,
            slots: self
                .slots
                .iter()
                .map(|s| SlotConfig {
                    days: s.days.iter().map(|d| weekday_name(*d).to_owned()).collect(),
                    start: hhmm(s.start),
                    end: hhmm(s.end),
                })
                .collect(),
            horizon_days: 7,
            price: self.price,
            market_price: self.market_price,
            child_age_months: (self.service == Service::Childcare).then_some(CHILDCARE_AGE_MONTHS),
            per_day: None,
            per_week: None,
            max_active: None,
            shares: Vec::new(),
            release_before_minutes: 120,
        }
    }

    /// Its slots on local `day`, as `(start, end)` unix ms.
    pub fn slots_on(&self, calendar: &Calendar, day: NaiveDate) -> Vec<(u64, u64)> {
        self.slots
            .iter()
            .filter(|s| s.days.is_empty() || s.days.contains(&day.weekday()))
            .map(|s| (calendar.at(day, s.start), calendar.at(day, s.end)))
            .collect()
    }
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "mon",
        Weekday::Tue => "tue",
        Weekday::Wed => "wed",
        Weekday::Thu => "thu",
        Weekday::Fri => "fri",
        Weekday::Sat => "sat",
        Weekday::Sun => "sun",
    }
}

fn time(h: u32, m: u32) -> NaiveTime {
    // invariant: callers pass literal valid times.
    NaiveTime::from_hms_opt(h, m, 0).expect("valid time")
}

/// Back-to-back slots of `minutes` from `opens` to `closes`, every day.
fn every(minutes: u32, opens: NaiveTime, closes: NaiveTime) -> Vec<DailySlot> {
    let length = chrono::Duration::minutes(i64::from(minutes));
    let mut slots = Vec::new();
    let mut start = opens;
    while start + length <= closes && start + length > start {
        slots.push(DailySlot {
            days: Vec::new(),
            start,
            end: start + length,
        });
        start += length;
    }
    slots
}

/// Every center's rooms: the 24-hour gym behind its gates, and the seated
/// rooms open in the centers' hours.
pub fn rooms(centers: &[String], profile: &Profile) -> Vec<RoomConfig> {
    let hhmm = |t: NaiveTime| Some(t.format("%H:%M").to_string());
    centers
        .iter()
        .flat_map(|center| {
            let gym = RoomConfig {
                center: center.clone(),
                id: "gym".into(),
                capacity: GYM_CAPACITY,
                hours: Some("24h".into()),
                open: None,
                close: None,
            };
            let seated = profile.rooms.iter().map(|room| RoomConfig {
                center: center.clone(),
                id: room.name.clone(),
                capacity: room.seats,
                hours: None,
                open: hhmm(profile.opens),
                close: hhmm(profile.closes),
            });
            std::iter::once(gym).chain(seated).collect::<Vec<_>>()
        })
        .collect()
}

/// Seats of `room` in the profile (1 if it has none there).
fn seats(profile: &Profile, room: &str) -> u32 {
    let room = profile.rooms.iter().find(|r| r.name == room);
    room.map_or(1, |r| r.seats)
}

/// Every center's bookable resources: childcare, yoga and study seats
/// (places = the room's seats), and one resource per piano and therapy
/// robot of `devices`.
pub fn bookables(centers: &[String], devices: &[DeviceSpec], profile: &Profile) -> Vec<Bookable> {
    let (opens, closes) = (profile.opens, profile.closes);
    let mut all = Vec::new();
    for center in centers {
        let shared = |service, room: &str, slots, price, market_price| Bookable {
            id: format!("{center}-{}", room),
            center: center.clone(),
            service,
            room: room.to_owned(),
            devices: Vec::new(),
            capacity: seats(profile, room),
            slots,
            price,
            market_price,
        };
        let half_days = vec![
            DailySlot {
                days: Vec::new(),
                start: time(8, 30),
                end: time(12, 0),
            },
            DailySlot {
                days: Vec::new(),
                start: time(13, 30),
                end: time(17, 30),
            },
        ];
        let classes = vec![DailySlot {
            days: vec![Weekday::Mon, Weekday::Wed, Weekday::Fri],
            start: time(19, 0),
            end: time(20, 0),
        }];
        all.push(shared(
            Service::Childcare,
            "childcare",
            half_days,
            105.0,
            150.0,
        ));
        all.push(shared(Service::Yoga, "yoga", classes, 0.0, 80.0));
        all.push(shared(
            Service::Study,
            "study",
            every(60, opens, closes),
            0.0,
            10.0,
        ));
        for device in devices.iter().filter(|d| &d.center == center) {
            let (service, slots, price, market_price) = match device.kind {
                DeviceKind::Piano => (Service::Piano, every(60, opens, closes), 0.0, 50.0),
                DeviceKind::TherapyRobot => {
                    (Service::Therapy, every(30, opens, closes), 29.9, 60.0)
                }
                DeviceKind::Gate | DeviceKind::Counter => continue,
            };
            all.push(Bookable {
                id: format!("{center}-{}", device.id),
                center: center.clone(),
                service,
                room: device.room.clone(),
                devices: vec![device.id.clone()],
                capacity: 1,
                slots,
                price,
                market_price,
            });
        }
    }
    all
}

/// PUTs every room and resource, `concurrency` requests at a time; stops
/// at the first the hub refuses.
pub async fn set_up(
    api: &HubApi,
    rooms: &[RoomConfig],
    bookables: &[Bookable],
    concurrency: usize,
) -> Result<(), ApiCallError> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let puts = rooms
        .iter()
        .map(|room| {
            let path = format!("/api/v1/centers/{}/rooms/{}", room.center, room.id);
            (path, serde_json::json!(room))
        })
        .chain(bookables.iter().map(|b| {
            (
                format!("/api/v1/resources/{}", b.id),
                serde_json::json!(b.config()),
            )
        }));
    for (path, body) in puts {
        let (api, permits) = (api.clone(), Arc::clone(&permits));
        tasks.spawn(async move {
            // invariant: the semaphore is never closed.
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            api.expect_ok(Method::PUT, &path, Some(&body)).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        // invariant: the tasks above never panic.
        joined.expect("set-up task")?;
    }
    Ok(())
}

/// The bookable resources of `centers` default centers (for tests).
#[cfg(test)]
pub(crate) fn default_district(centers: usize) -> Vec<Bookable> {
    use crate::plan::{default_center_names, plan_fleet, DeviceMix};
    let centers = default_center_names(centers);
    // invariant: the default mix plans valid devices.
    let devices = plan_fleet(&centers, &DeviceMix::default(), 1).expect("a plan");
    bookables(&centers, &devices, &Profile::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::default_center_names;

    fn district() -> Vec<Bookable> {
        default_district(2)
    }

    #[test]
    fn each_center_books_childcare_yoga_study_and_its_pianos_and_robots() {
        let all = district();
        assert_eq!(all.len(), 2 * (3 + 8 + 2));
        let first: Vec<&str> = all.iter().take(5).map(|b| b.id.as_str()).collect();
        assert_eq!(
            first,
            [
                "center01-childcare",
                "center01-yoga",
                "center01-study",
                "center01-c01piano01",
                "center01-c01piano02"
            ]
        );
        let piano = &all[3];
        assert_eq!((piano.service, piano.capacity), (Service::Piano, 1));
        assert_eq!(piano.devices, ["c01piano01"]);
        let robot = all.iter().find(|b| b.service == Service::Therapy).unwrap();
        assert_eq!(robot.room, "therapy");
        assert_eq!(all[0].capacity, 10, "childcare: the room's seats");
        assert_eq!(all[2].capacity, 40, "study: the room's seats");
    }

    #[test]
    fn slots_fall_in_opening_hours_and_yoga_three_days_a_week() {
        let all = district();
        let cal = Calendar::default();
        let monday = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let week: Vec<NaiveDate> = (0..7).map(|n| monday + chrono::Days::new(n)).collect();
        let yoga: usize = week.iter().map(|d| all[1].slots_on(&cal, *d).len()).sum();
        assert_eq!(yoga, 3);
        assert_eq!(
            all[0].slots_on(&cal, monday).len(),
            2,
            "childcare AM and PM"
        );
        let study = all[2].slots_on(&cal, monday);
        assert_eq!(study.len(), 13, "08:30 to 21:30 by the hour");
        assert_eq!(study[0].0, cal.at(monday, time(8, 30)));
        assert_eq!(study[12].1, cal.at(monday, time(21, 30)));
        let robot = all.iter().find(|b| b.service == Service::Therapy).unwrap();
        assert_eq!(robot.slots_on(&cal, monday).len(), 26);
    }

    #[test]
    fn entries_are_what_the_hub_takes() {
        let all = district();
        let childcare = all[0].config();
        assert_eq!(childcare.child_age_months, Some([18, 36]));
        assert!(childcare.price < childcare.market_price);
        let yoga = all[1].config();
        assert_eq!(yoga.kind, "class");
        assert_eq!(yoga.slots[0].days, ["mon", "wed", "fri"]);
        assert_eq!(
            (yoga.slots[0].start.as_str(), yoga.slots[0].end.as_str()),
            ("19:00", "20:00")
        );
        let rooms = rooms(&default_center_names(1), &Profile::default());
        assert_eq!(rooms.len(), 10);
        assert_eq!(
            (rooms[0].id.as_str(), rooms[0].hours.as_deref()),
            ("gym", Some("24h"))
        );
        assert_eq!(rooms[1].open.as_deref(), Some("08:30"));
    }
}
