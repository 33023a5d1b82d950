//! A people counter over one door, the entrance's or a room's: the people
//! through it, read from the center's crowd.

use protocol::FieldValue;

use super::{field, Flow, World};

/// A people counter over one door: the entrance or a room's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counter {
    /// `None` for the entrance.
    room: Option<String>,
    entered: u64,
    left: u64,
}

impl Counter {
    /// A counter over `room`'s door (`None`: the entrance).
    pub(super) fn over(room: Option<String>) -> Counter {
        Counter {
            room,
            ..Counter::default()
        }
    }

    pub(super) fn step(&mut self, world: &World, from: u64, to: u64) {
        let (_, crowd) = world.crowd_on(from);
        let log = match &self.room {
            None => Some(&crowd.entrance),
            Some(room) => crowd.rooms.get(room),
        };
        if let Some(log) = log {
            let (entered, left) = log.flow(from, to);
            self.entered += entered;
            self.left += left;
        }
    }

    pub(super) fn telemetry_fields(&self) -> Vec<(String, FieldValue)> {
        vec![
            field("in", FieldValue::Number(self.entered as f64)),
            field("out", FieldValue::Number(self.left as f64)),
        ]
    }

    /// The people reported since the last report; starts counting anew.
    pub(super) fn commit_report(&mut self) -> Flow {
        Flow {
            entered: std::mem::take(&mut self.entered),
            left: std::mem::take(&mut self.left),
        }
    }
}
