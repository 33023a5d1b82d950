//! `yizhan_center_visits{center,period}`: the visits of each center's
//! current local day and month (the hub's calendar on the wall clock, as
//! `GET /api/v1/centers/{id}/occupancy` shows them). Kept by the ingest
//! thread as entrance counters count people (`counted`), filled from the
//! stored days of this month once at start. When the local day turns
//! (`turn`, checked whenever ingest writes its counts) the gauges show the
//! new day, visits already filed under it (a device clock a little ahead)
//! included, and days before the new month are forgotten.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use protocol::calendar::Calendar;

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

pub struct VisitGauges {
    metrics: Metrics,
    calendar: Calendar,
    /// The local day the gauges are of.
    today: NaiveDate,
    /// center → visits per local day, from the first of today's month on.
    days: HashMap<String, BTreeMap<NaiveDate, u64>>,
}

impl VisitGauges {
    /// This month's stored visits of every center, at `now_ms`.
    pub fn load(
        store: &Store,
        metrics: Metrics,
        calendar: Calendar,
        now_ms: u64,
    ) -> Result<VisitGauges, StoreError> {
        let today = calendar.day(now_ms);
        let mut gauges = VisitGauges {
            metrics,
            calendar,
            today,
            days: HashMap::new(),
        };
        for (center, day, visits) in store.visits_from(first_of_month(today))? {
            *gauges
                .days
                .entry(center)
                .or_default()
                .entry(day)
                .or_default() += visits;
        }
        gauges.show_all();
        Ok(gauges)
    }

    /// `people` came into `center` on local `day`.
    pub fn counted(&mut self, center: &str, day: NaiveDate, people: u64) {
        if day < first_of_month(self.today) {
            return;
        }
        let days = self.days.entry(center.to_string()).or_default();
        *days.entry(day).or_default() += people;
        self.show(center);
    }

    /// Moves the gauges to the local day of `now_ms` once it turned.
    pub fn turn(&mut self, now_ms: u64) {
        let today = self.calendar.day(now_ms);
        if today == self.today {
            return;
        }
        self.today = today;
        let first = first_of_month(today);
        for days in self.days.values_mut() {
            days.retain(|day, _| *day >= first);
        }
        self.show_all();
    }

    fn show_all(&self) {
        for center in self.days.keys() {
            self.show(center);
        }
    }

    fn show(&self, center: &str) {
        let Some(days) = self.days.get(center) else {
            return;
        };
        let today = days.get(&self.today).copied().unwrap_or(0);
        let month: u64 = days
            .range(first_of_month(self.today)..=self.today)
            .map(|(_, visits)| visits)
            .sum();
        for (period, visits) in [("day", today), ("month", month)] {
            self.metrics
                .center_visits
                .with_label_values(&[center, period])
                .set(i64::try_from(visits).unwrap_or(i64::MAX));
        }
    }
}

fn first_of_month(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> u64 {
        protocol::calendar::parse_rfc3339(rfc3339).unwrap()
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn the_gauges_follow_the_local_day_and_month() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_visits("c1", day("2027-01-30"), 5).unwrap();
        store.add_visits("c1", day("2026-12-31"), 7).unwrap();
        let metrics = Metrics::new();
        let calendar = Calendar {
            tz: chrono_tz::Asia::Shanghai,
        };
        let now = ms("2027-01-31T23:00:00+08:00");
        let mut gauges = VisitGauges::load(&store, metrics.clone(), calendar, now).unwrap();
        let shown = |period: &str| {
            metrics
                .center_visits
                .with_label_values(&["c1", period])
                .get()
        };
        assert_eq!((shown("day"), shown("month")), (0, 5), "December left out");
        gauges.counted("c1", day("2027-01-31"), 3);
        gauges.counted("c1", day("2027-02-01"), 2);
        assert_eq!((shown("day"), shown("month")), (3, 8), "tomorrow not yet");
        gauges.turn(ms("2027-02-01T00:00:01+08:00"));
        assert_eq!(
            (shown("day"), shown("month")),
            (2, 2),
            "a new day and month"
        );
    }
}
