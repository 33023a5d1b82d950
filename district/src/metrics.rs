//! The district's Prometheus metrics (docs/metrics.md, "District
//! service"): one registry, rendered by `GET /metrics`. Labels are bounded:
//! `class` (the contract's classes and `unknown`), `outcome`, `reason`,
//! the HTTP route template, method and code — never a hub, a device or a
//! message id. Every value is kept in memory where its fact changes.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use protocol::upstream::{Class, Refusal};

use crate::message::{Rejection, OUTCOME_STATUSES};
use crate::tally::Outcome;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `{class, outcome}`: applied, duplicate, stale, ignored, rejected.
    pub messages: IntCounterVec,
    pub rejected: IntCounterVec,
    /// Payload bytes received, by class (sizing the upstream: docs/scale.md).
    pub received_bytes: IntCounterVec,
    /// Applying a batch and its fsync.
    pub batch_seconds: Histogram,
    pub batch_messages: Histogram,
    /// 1 while the source (NATS or MQTT) is connected and consuming.
    pub source_connected: IntGauge,
    /// NATS: messages the durable consumer has not delivered yet, plus
    /// those delivered and not acknowledged.
    pub source_pending: IntGauge,
    pub hubs: IntGauge,
    pub centers: IntGauge,
    /// The newest fact applied (hub clock), unix seconds.
    pub last_message: IntGauge,
    pub store_bytes: IntGauge,
    pub http_requests: HistogramVec,
    pub build_info: IntGaugeVec,
    /// Commands published: `sent` (the broker acknowledged), `unconfirmed`.
    pub commands_published: IntCounterVec,
    /// The hubs' outcomes of commands, by status.
    pub command_outcomes: IntCounterVec,
    /// The hubs' refusals of messages on command topics, by reason.
    pub commands_refused: IntCounterVec,
    /// 1 while the command publisher holds a session with a broker.
    pub downlink_connected: IntGauge,
}

/// The service's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const PREFIX: &str = "yizhan_district_";

fn name(short: &str) -> String {
    format!("{PREFIX}{short}")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counters = |short: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name(short), help), labels)
                // invariant: names and labels are constants that prometheus accepts.
                .expect("metric");
            // invariant: each family is registered once.
            registry.register(Box::new(vec.clone())).expect("register");
            vec
        };
        let gauge = |short: &str, help: &str| {
            // invariant: as above.
            let gauge = IntGauge::new(name(short), help).expect("metric");
            registry
                .register(Box::new(gauge.clone()))
                .expect("register");
            gauge
        };
        let histogram = |short: &str, help: &str, buckets: Vec<f64>| {
            let opts = HistogramOpts::new(name(short), help).buckets(buckets);
            // invariant: as above.
            let histogram = Histogram::with_opts(opts).expect("metric");
            registry
                .register(Box::new(histogram.clone()))
                .expect("register");
            histogram
        };
        let messages = counters(
            "messages_total",
            "Messages from the hubs by class and outcome (applied, duplicate, stale, ignored, rejected).",
            &["class", "outcome"],
        );
        let rejected = counters(
            "rejected_total",
            "Messages refused at the boundary, by reason.",
            &["reason"],
        );
        let received_bytes = counters(
            "received_bytes_total",
            "Payload bytes of the messages received, by class (duplicates included).",
            &["class"],
        );
        let http_requests = HistogramVec::new(
            HistogramOpts::new(
                name("http_request_duration_seconds"),
                "HTTP requests by route template, method and status code.",
            ),
            &["route", "method", "code"],
        )
        // invariant: as above.
        .expect("metric");
        registry
            .register(Box::new(http_requests.clone()))
            .expect("register");
        let build_info = IntGaugeVec::new(
            Opts::new(
                name("build_info"),
                "The running build: 1, labelled by version.",
            ),
            &["version"],
        )
        // invariant: as above.
        .expect("metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("register");
        build_info.with_label_values(&[VERSION]).set(1);
        let process = prometheus::process_collector::ProcessCollector::for_self();
        // invariant: registered once.
        registry.register(Box::new(process)).expect("register");
        let commands_published = counters(
            "commands_published_total",
            "Commands published to the hubs' upstream, by outcome (sent: acknowledged by the broker; unconfirmed).",
            &["outcome"],
        );
        let command_outcomes = counters(
            "command_outcomes_total",
            "Outcomes of the district's commands as the hubs reported them, by status.",
            &["status"],
        );
        let commands_refused = counters(
            "commands_refused_total",
            "Messages on command topics the hubs refused, by reason.",
            &["reason"],
        );
        let downlink_connected = gauge(
            "downlink_connected",
            "1 while the command publisher holds a session with an upstream broker.",
        );
        let metrics = Metrics {
            commands_published,
            command_outcomes,
            commands_refused,
            downlink_connected,
            messages,
            rejected,
            received_bytes,
            batch_seconds: histogram(
                "batch_duration_seconds",
                "Applying a batch of messages and its fsync, before they are acknowledged.",
                prometheus::exponential_buckets(0.0005, 2.0, 14).unwrap_or_default(),
            ),
            batch_messages: histogram(
                "batch_messages",
                "Messages per applied batch.",
                prometheus::exponential_buckets(1.0, 2.0, 14).unwrap_or_default(),
            ),
            source_connected: gauge(
                "source_connected",
                "1 while the source (NATS or MQTT) is connected and consumed.",
            ),
            source_pending: gauge(
                "source_pending_messages",
                "NATS: messages of the durable consumer not delivered or not acknowledged yet.",
            ),
            hubs: gauge("hubs", "Hubs the district has heard from."),
            centers: gauge("centers", "Centers the district has heard of."),
            last_message: gauge(
                "last_message_timestamp_seconds",
                "The hub time of the newest fact applied, unix seconds.",
            ),
            store_bytes: gauge("store_bytes", "Size of the district's store on disk."),
            http_requests,
            build_info,
            registry,
        };
        metrics.zero_series();
        metrics
    }

    /// Every bounded series exists from the start (a rate over a missing
    /// series is no rate at all).
    fn zero_series(&self) {
        for class in Class::ALL {
            for outcome in [Outcome::Applied, Outcome::Duplicate, Outcome::Stale] {
                self.messages
                    .with_label_values(&[class.as_str(), outcome.as_str()]);
            }
            self.messages.with_label_values(&[class.as_str(), REJECTED]);
        }
        self.messages.with_label_values(&[UNKNOWN, IGNORED]);
        self.messages
            .with_label_values(&[Class::Command.as_str(), SKIPPED]);
        for outcome in [SENT, UNCONFIRMED] {
            self.commands_published.with_label_values(&[outcome]);
        }
        for status in OUTCOME_STATUSES {
            self.command_outcomes.with_label_values(&[status]);
        }
        for reason in Refusal::ALL {
            self.commands_refused.with_label_values(&[reason.as_str()]);
        }
        for reason in Rejection::ALL {
            self.rejected.with_label_values(&[reason.as_str()]);
        }
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
            tracing::error!(%error, "rendering metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The `class` of a topic outside the contract.
pub const UNKNOWN: &str = "unknown";
/// Outcomes decided at the boundary.
pub const IGNORED: &str = "ignored";
pub const REJECTED: &str = "rejected";
/// The district's own commands seen on the source.
pub const SKIPPED: &str = "skipped";
/// A command's publishing: acknowledged by the broker, or not in time.
pub const SENT: &str = "sent";
pub const UNCONFIRMED: &str = "unconfirmed";
