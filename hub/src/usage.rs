//! Piano usage: how long each piano played per local day, from its
//! `session_start` and `session_end` events (device `ts`).
//!
//! The running session's start is kept on the twin (`session_since`), so a
//! session survives a hub restart. A session spanning midnight is split
//! between the days; a `session_start` while one runs (its end was lost)
//! closes the old one there, unless it would run backwards or for more
//! than a day (then it is not counted). Sessions arrive checked
//! (`input::PianoSession`): a span lasts at most a day, so splitting it
//! at midnights gives at most three pieces. Totals are stored per
//! `center, day, piano` and exported per center as
//! `yizhan_piano_usage_seconds_total`. Owned by the ingest thread, through
//! `actions`.

use std::sync::Arc;

use protocol::calendar::Calendar;

use crate::input::{PianoSession, Previous, SessionSpan};
use crate::metrics::Metrics;
use crate::records::Twin;
use crate::store::{Store, StoreError};

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

    /// A newly stored piano session event. The twin follows the session
    /// first, so a store error loses only the minutes, not the session.
    pub fn on_piano_session(
        &mut self,
        twin: &mut Twin,
        session: &PianoSession,
    ) -> Result<(), StoreError> {
        match session {
            PianoSession::Start { at, previous, .. } => {
                twin.session_since = Some(at.ms());
                match previous {
                    Previous::Idle => Ok(()),
                    Previous::Ends(span) => self.record(twin, *span),
                    Previous::Discarded(why) => {
                        // Debug only: a device may send this at every start.
                        tracing::debug!(device = %twin.id, %why, "a session whose end was lost is not counted");
                        Ok(())
                    }
                }
            }
            PianoSession::End { closes } => {
                twin.session_since = None;
                closes.map_or(Ok(()), |span| self.record(twin, span))
            }
        }
    }

    /// Files the play of `span` (device ms) under its local days.
    fn record(&self, twin: &Twin, span: SessionSpan) -> Result<(), StoreError> {
        for (start, end) in self.calendar.split_days(span.from(), span.to()) {
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
