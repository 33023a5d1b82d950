//! What a bench run found: a serde summary (`--json`) and its text form.

use serde::{Deserialize, Serialize};

use super::connect::ConnectReport;
use super::latency::Percentiles;

/// The summary of one bench run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// `hub` (received = ingested into twins, from its metrics) or `mqtt`
    /// (received = what one subscriber got).
    pub broker: String,
    /// `tcp` (username/password) or `mtls` (provisioned devices).
    pub transport: String,
    pub connections: usize,
    pub qos: u8,
    pub payload_bytes: usize,
    /// Messages per second asked for; `None`: full speed.
    pub target_rate: Option<f64>,
    pub connect: ConnectReport,
    /// Connections that broke after they were up.
    pub connection_errors: u64,
    /// From the first publish until every publisher queued its last one.
    pub publish_seconds: f64,
    /// Telemetry written to sockets.
    pub sent: u64,
    /// PUBACKs (QoS 1; 0 at QoS 0).
    pub acknowledged: u64,
    /// Ingested by the hub, or delivered to the subscriber.
    pub received: u64,
    /// From the first publish until `received` stopped growing.
    pub received_seconds: f64,
    pub sent_per_second: f64,
    pub received_per_second: f64,
    /// Telemetry the hub counted missing from `seq` (hub only).
    pub seq_gaps: Option<u64>,
    pub puback: Option<Percentiles>,
    pub events_sent: u64,
    pub events_acknowledged: u64,
    /// Event → event-ack round trip (hub only).
    pub event_ack: Option<Percentiles>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.connect;
        writeln!(
            f,
            "{} over {}: {}/{} connected in {:.2} s, {} connect errors, {} broken connections",
            self.broker,
            self.transport,
            c.connected,
            c.attempted,
            c.seconds,
            c.errors,
            self.connection_errors
        )?;
        if self.publish_seconds == 0.0 {
            return writeln!(f, "idle: nothing published");
        }
        let rate = self
            .target_rate
            .map_or("full speed".to_owned(), |r| format!("{r:.0} msg/s"));
        writeln!(
            f,
            "QoS {}, {} B payload, {rate}: sent {} ({:.0}/s over {:.2} s), acknowledged {}, received {} ({:.0}/s over {:.2} s)",
            self.qos,
            self.payload_bytes,
            self.sent,
            self.sent_per_second,
            self.publish_seconds,
            self.acknowledged,
            self.received,
            self.received_per_second,
            self.received_seconds
        )?;
        if let Some(gaps) = self.seq_gaps {
            writeln!(f, "hub seq gaps (telemetry lost before its twin): {gaps}")?;
        }
        if let Some(p) = &self.puback {
            writeln!(f, "PUBACK round trip: {p}")?;
        }
        if let Some(p) = &self.event_ack {
            writeln!(
                f,
                "event → ack round trip: {p}; {} of {} events acknowledged",
                self.events_acknowledged, self.events_sent
            )?;
        }
        Ok(())
    }
}
