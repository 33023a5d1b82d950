//! Piano usage: how long each piano played per local day, from its
//! `session_start` and `session_end` events (device `ts`).
//!
//! The running session's start is kept on the twin (`session_since`), so a
//! session survives a hub restart. A session spanning midnight is split
//! between the days; a `session_start` while one runs (its end was lost)
//! closes the old one there. Totals are stored per `center, day, piano` and
//! exported per center as `yizhan_piano_usage_seconds_total`. Owned by the
//! ingest thread, through `actions`.

use std::sync::Arc;

use protocol::calendar::Calendar;
use protocol::Event;

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::twin::Twin;

pub struct Usage {
    store: Arc<Store>,
    metrics: Metrics,
    calendar: Calendar,
}

impl Usage {
    pub fn new(store: Arc<Store>, metrics: Metrics, calendar: Calendar) -> Usage {
        Usage {
            store,
            metrics,
            calendar,
        }
    }

    /// A newly stored piano event.
    pub fn on_piano_event(&mut self, twin: &mut Twin, event: &Event) -> Result<(), StoreError> {
        match event.event_type.as_str() {
            "session_start" => {
                if let Some(since) = twin.session_since.take() {
                    self.record(twin, since, event.ts)?;
                }
                twin.session_since = Some(event.ts);
            }
            "session_end" => {
                if let Some(since) = twin.session_since.take() {
                    self.record(twin, since, event.ts)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Files the play from `from` to `to` (device ms) under its local days.
    fn record(&self, twin: &Twin, from: u64, to: u64) -> Result<(), StoreError> {
        for (start, end) in self.calendar.split_days(from, to) {
            let day = self.calendar.day(start);
            let ms = end - start;
            self.store.add_usage(&twin.center, day, &twin.id, ms)?;
            self.metrics
                .piano_usage
                .with_label_values(&[&twin.center])
                .inc_by(ms as f64 / 1000.0);
        }
        Ok(())
    }
}
