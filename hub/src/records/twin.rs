//! A device's twin: what the hub knows of one device (kind, center, room,
//! presence, last values, an unacknowledged interlock alarm) and the pure
//! rules that update it from contract messages, which need nothing but the
//! contract. No I/O here; `ingest` decides when twins are read and written.

use std::collections::BTreeMap;

use protocol::{Birth, DeviceKind, FieldValue, Telemetry};
use serde::{Deserialize, Serialize};

use super::device::DeviceRecord;

/// Last reported value of one telemetry field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastValue {
    pub value: FieldValue,
    pub ts: u64,
}

/// Why a robot was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TripReason {
    OverTemperature,
    Watchdog,
    /// The session ran on past the end of its booked slot.
    PastSlot,
}

impl TripReason {
    pub const ALL: [TripReason; 3] = [
        TripReason::OverTemperature,
        TripReason::Watchdog,
        TripReason::PastSlot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TripReason::OverTemperature => "over_temperature",
            TripReason::Watchdog => "watchdog",
            TripReason::PastSlot => "past_slot",
        }
    }
}

/// An unacknowledged interlock alarm, kept on the robot's twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alarm {
    pub reason: TripReason,
    /// Unix ms of the trip.
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<f64>,
    /// The `stop` command sent for it.
    pub command: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Twin {
    pub id: String,
    pub kind: DeviceKind,
    pub center: String,
    pub room: String,
    pub model: Option<String>,
    pub fw: Option<String>,
    pub online: bool,
    /// Boot epoch of the hub process that saw the device online. A twin
    /// online in an older epoch is offline: that process and its sessions
    /// are gone.
    #[serde(default)]
    pub online_epoch: u64,
    pub connected_since: Option<u64>,
    pub last_seen: Option<u64>,
    pub keepalive_secs: Option<u16>,
    pub fields: BTreeMap<String, LastValue>,
    pub messages: u64,
    pub rejections: u64,
    pub last_telemetry_seq: Option<u64>,
    pub last_event_seq: Option<u64>,
    pub seq_gaps: u64,
    pub events_stored: u64,
    /// An interlock alarm staff have not acknowledged yet (therapy robots).
    #[serde(default)]
    pub alarm: Option<Alarm>,
    /// Device `ts` of the running session's `session_start` (pianos).
    #[serde(default)]
    pub session_since: Option<u64>,
}

/// Presence change caused by a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Unchanged,
    CameOnline,
    WentOffline,
}

impl Twin {
    /// The twin of a freshly provisioned device: offline, nothing seen.
    pub fn provisioned(record: &DeviceRecord) -> Twin {
        Twin {
            id: record.id.clone(),
            kind: record.kind,
            center: record.center.clone(),
            room: record.room.clone(),
            model: None,
            fw: None,
            online: false,
            online_epoch: 0,
            connected_since: None,
            last_seen: None,
            keepalive_secs: None,
            fields: BTreeMap::new(),
            messages: 0,
            rejections: 0,
            last_telemetry_seq: None,
            last_event_seq: None,
            seq_gaps: 0,
            events_stored: 0,
            alarm: None,
            session_since: None,
        }
    }

    /// Whether the device is online in the hub process of `epoch`.
    pub fn is_online(&self, epoch: u64) -> bool {
        self.online && self.online_epoch == epoch
    }

    /// This twin as the API shows it in `epoch`.
    pub fn view(mut self, epoch: u64) -> Twin {
        self.online = self.is_online(epoch);
        self
    }

    /// Any accepted message: the device is alive. Returns whether it just
    /// came online.
    pub fn seen(&mut self, now: u64, epoch: u64) -> Presence {
        self.messages += 1;
        self.last_seen = Some(now);
        if self.is_online(epoch) {
            return Presence::Unchanged;
        }
        self.online = true;
        self.online_epoch = epoch;
        self.connected_since = Some(now);
        Presence::CameOnline
    }

    pub fn went_offline(&mut self, epoch: u64) -> Presence {
        if !self.is_online(epoch) {
            return Presence::Unchanged;
        }
        self.online = false;
        Presence::WentOffline
    }

    /// A birth message. Keepalive 0 (MQTT: none) states no keepalive: the
    /// hub's default applies, rather than a liveness deadline at the last
    /// message itself.
    pub fn apply_birth(&mut self, birth: &Birth) {
        self.model = Some(birth.model.clone());
        self.fw = Some(birth.fw.clone());
        self.keepalive_secs = birth.keepalive.filter(|secs| *secs > 0);
    }

    /// Applies telemetry values; returns the seq gap it revealed.
    pub fn apply_telemetry(&mut self, telemetry: &Telemetry) -> u64 {
        let gap = seq_gap(&mut self.last_telemetry_seq, telemetry.seq);
        for (name, value) in &telemetry.fields {
            let reading = LastValue {
                value: value.clone(),
                ts: telemetry.ts,
            };
            self.fields.insert(name.clone(), reading);
        }
        self.seq_gaps = self.seq_gaps.saturating_add(gap);
        gap
    }

    /// Records an event's seq; returns the gap it revealed.
    pub fn observe_event_seq(&mut self, seq: u64) -> u64 {
        let gap = seq_gap(&mut self.last_event_seq, seq);
        self.seq_gaps = self.seq_gaps.saturating_add(gap);
        gap
    }

    /// Unix ms after which the device counts as gone if nothing arrives:
    /// 1.5× its keepalive after the last message.
    pub fn liveness_deadline(&self, default_keepalive_secs: u16) -> Option<u64> {
        let keepalive = u64::from(self.keepalive_secs.unwrap_or(default_keepalive_secs));
        self.last_seen
            .map(|seen| seen.saturating_add(keepalive * 1500))
    }
}

/// A freshly provisioned twin `d` of `kind` in center `c`, room `r`.
#[cfg(test)]
pub(crate) fn provisioned(kind: DeviceKind) -> Twin {
    Twin::provisioned(&super::device::record("d", "c", "r", kind))
}

/// Messages missing between the last seq seen and `seq`. A seq at or below
/// the last is a resend or a device restart: no gap, and a restart resets
/// the baseline.
fn seq_gap(last: &mut Option<u64>, seq: u64) -> u64 {
    let gap = match *last {
        Some(prev) if seq > prev => seq - prev - 1,
        Some(prev) if seq <= prev && seq > 1 => return 0,
        _ => 0,
    };
    *last = Some(seq);
    gap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_gaps(seqs: &[u64], expect_total: u64, expect_last: Option<u64>) {
        let mut last = None;
        let total: u64 = seqs.iter().map(|&s| seq_gap(&mut last, s)).sum();
        assert_eq!((total, last), (expect_total, expect_last), "seqs {seqs:?}");
    }

    #[test]
    fn seq_gaps_count_lost_messages_only() {
        check_gaps(&[1, 2, 3], 0, Some(3));
        check_gaps(&[1, 3, 4], 1, Some(4));
        check_gaps(&[5], 0, Some(5));
        check_gaps(&[1, 2, 2, 3], 0, Some(3)); // resend
        check_gaps(&[1, 5, 3, 6], 3, Some(6)); // late resend is no gap
        check_gaps(&[1, 2, 9, 1, 2], 6, Some(2)); // device restarted at 1
    }

    #[test]
    fn presence_follows_epochs() {
        let mut twin = provisioned(DeviceKind::Gate);
        assert_eq!(twin.seen(10, 1), Presence::CameOnline);
        assert_eq!(twin.seen(11, 1), Presence::Unchanged);
        assert!(twin.is_online(1));
        assert!(
            !twin.is_online(2),
            "a new hub process starts with everyone offline"
        );
        assert_eq!(twin.went_offline(2), Presence::Unchanged);
        assert_eq!(twin.went_offline(1), Presence::WentOffline);
        assert_eq!(twin.liveness_deadline(30), Some(11 + 45_000));
    }

    #[test]
    fn a_birth_with_keepalive_0_leaves_the_default() {
        let mut twin = provisioned(DeviceKind::Counter);
        twin.seen(10, 1);
        for (keepalive, deadline) in [
            (Some(20), 10 + 30_000),
            (Some(0), 10 + 45_000),
            (None, 10 + 45_000),
        ] {
            let birth = Birth {
                kind: DeviceKind::Counter,
                fw: "1".into(),
                model: "m".into(),
                keepalive,
            };
            twin.apply_birth(&birth);
            assert_eq!(twin.liveness_deadline(30), Some(deadline), "{keepalive:?}");
        }
    }
}
