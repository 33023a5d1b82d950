//! Prometheus metrics: one registry, every family the hub exports, and the
//! text rendering behind `GET /metrics`.
//!
//! Labels are bounded: center, device kind, channel, reason, room, op,
//! outcome, component (`supervise::component`) — never a device id, a
//! resident or a credential. One label name per idea: `outcome` for what
//! became of something, `reason` for why. docs/metrics.md is the catalog.
//!
//! Every value is kept in memory by the part of the hub where its fact
//! changes; rendering reads the registry and nothing else.

use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub messages_received: IntCounterVec,
    pub rejected: IntCounterVec,
    pub seq_gaps: IntCounterVec,
    pub events_stored: IntCounterVec,
    pub ingest_latency: Histogram,
    pub ingest_batch_size: Histogram,
    pub devices_online: IntGaugeVec,
    pub connections: IntGaugeVec,
    pub connect_attempts: IntCounterVec,
    pub handshake_failures: IntCounterVec,
    pub edge_refused: IntCounterVec,
    pub edge_disconnects: IntCounterVec,
    pub edge_throttled: IntCounterVec,
    pub store_size: IntGauge,
    pub twins: IntGauge,
    pub http_requests: HistogramVec,
    pub revocations: IntCounter,
    pub certificate_renewals: IntCounter,
    pub commands: IntCounterVec,
    pub command_round_trip: HistogramVec,
    pub interlock_trips: IntCounterVec,
    pub interlock_restarts_refused: IntCounter,
    pub interlock_latency: Histogram,
    pub access_decisions: IntCounterVec,
    pub access_latency: Histogram,
    pub room_occupancy: IntGaugeVec,
    pub room_occupancy_ratio: GaugeVec,
    pub room_saturated: IntGaugeVec,
    pub room_saturation_alarms: IntCounterVec,
    pub visits: IntCounterVec,
    pub piano_usage: CounterVec,
    pub bookings: IntCounterVec,
    pub booking_seat_seconds: CounterVec,
    pub booking_waitlist: IntGaugeVec,
    pub booking_slots_full: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
    pub records_pruned: IntCounterVec,
    pub booking_slots_unstaffed: IntGaugeVec,
    pub booking_day_seat_seconds: GaugeVec,
    pub component_up: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub commands_open: IntGauge,
    pub webhook_outbox: IntGauge,
    pub devices: IntGaugeVec,
    pub alarms_active: IntGaugeVec,
    pub center_visits: IntGaugeVec,
    pub pianos_in_use: IntGaugeVec,
    pub therapy_temperature_max: GaugeVec,
    pub certificate_expiry: IntGaugeVec,
    pub uplink_backlog_messages: IntGauge,
    pub uplink_backlog_bytes: IntGauge,
    pub uplink_oldest_age: Gauge,
    pub uplink_sent: IntCounterVec,
    pub uplink_dropped: IntCounterVec,
    pub uplink_connected: IntGauge,
    pub uplink_connect_attempts: IntCounterVec,
    /// District commands taken (delivered through the command service).
    pub downlink_accepted: IntCounter,
    /// Messages on a command topic refused, by `Refusal` (every reason at 0
    /// from the start).
    pub downlink_refused: IntCounterVec,
    /// 1 while the hub is subscribed to its centers' command topics.
    pub downlink_subscribed: IntGauge,
}

/// The hub's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the hub was built from, `unknown` without git (build.rs).
pub const COMMIT: &str = env!("HUB_BUILD_COMMIT");

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let metrics = Metrics {
            messages_received: counter_vec(
                "yizhan_messages_received_total",
                "Messages accepted from devices",
                &["center", "kind", "channel"],
            ),
            rejected: counter_vec(
                "yizhan_ingest_rejected_total",
                "Device messages rejected, by reason",
                &["reason"],
            ),
            seq_gaps: counter_vec(
                "yizhan_seq_gaps_total",
                "Messages missing between a device and its twin, from seq gaps",
                &["center", "kind", "channel"],
            ),
            events_stored: counter_vec(
                "yizhan_events_stored_total",
                "Device events stored durably (duplicates excluded)",
                &["center", "kind"],
            ),
            ingest_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "yizhan_ingest_latency_seconds",
                    "From a message's arrival at the hub to its twin being updated",
                )
                .buckets(fast_buckets()),
            )
            .expect("histogram"),
            ingest_batch_size: Histogram::with_opts(
                HistogramOpts::new("yizhan_ingest_batch_messages", "Messages per ingest batch")
                    .buckets(prometheus::exponential_buckets(1.0, 4.0, 7).expect("buckets")),
            )
            .expect("histogram"),
            devices_online: gauge_vec(
                "yizhan_devices_online",
                "Devices online",
                &["center", "kind"],
            ),
            connections: gauge_vec(
                "yizhan_mqtt_connections",
                "MQTT connections open, in handshake or in session, by listener",
                &["listener"],
            ),
            connect_attempts: counter_vec(
                "yizhan_mqtt_connect_attempts_total",
                "MQTT CONNECTs answered, by listener and outcome (accepted, refused)",
                &["listener", "outcome"],
            ),
            handshake_failures: counter_vec(
                "yizhan_edge_handshake_failures_total",
                "Connections closed before their session started (TLS or CONNECT), by reason",
                &["listener", "reason"],
            ),
            edge_refused: counter_vec(
                "yizhan_edge_refused_total",
                "Publishes and subscriptions the edge refused, by reason",
                &["listener", "reason"],
            ),
            edge_disconnects: counter_vec(
                "yizhan_edge_disconnects_total",
                "MQTT sessions ended, by reason",
                &["listener", "reason"],
            ),
            edge_throttled: counter_vec(
                "yizhan_edge_throttled_total",
                "Publishes that waited for their connection's rate limit",
                &["listener"],
            ),
            store_size: IntGauge::new("yizhan_store_size_bytes", "sled size on disk")
                .expect("gauge"),
            twins: IntGauge::new("yizhan_twins", "Device twins stored").expect("gauge"),
            http_requests: HistogramVec::new(
                HistogramOpts::new(
                    "yizhan_http_request_duration_seconds",
                    "HTTP API requests, from arrival to response, by route template, method and status code",
                )
                .buckets(prometheus::exponential_buckets(0.000_1, 4.0, 8).expect("buckets")),
                &["route", "method", "code"],
            )
            .expect("histogram"),
            revocations: IntCounter::new("yizhan_device_revocations_total", "Devices revoked")
                .expect("counter"),
            certificate_renewals: IntCounter::new(
                "yizhan_certificate_renewals_total",
                "Device certificates renewed through the API",
            )
            .expect("counter"),
            commands: counter_vec(
                "yizhan_commands_total",
                "Commands that reached an outcome (acked, failed, expired), by op",
                &["op", "outcome"],
            ),
            command_round_trip: HistogramVec::new(
                HistogramOpts::new(
                    "yizhan_command_round_trip_seconds",
                    "From a command's first publish to the device's answer",
                )
                .buckets(reaction_buckets()),
                &["op"],
            )
            .expect("histogram"),
            interlock_trips: counter_vec(
                "yizhan_interlock_trips_total",
                "Therapy robots stopped by the safety interlock, by reason",
                &["center", "reason"],
            ),
            interlock_restarts_refused: IntCounter::new(
                "yizhan_interlock_restarts_refused_total",
                "Sessions a robot started before staff acknowledged its alarm (answered with stop)",
            )
            .expect("counter"),
            interlock_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "yizhan_interlock_reaction_seconds",
                    "From an over-limit message's arrival at ingest to the stop command leaving the hub",
                )
                .buckets(reaction_buckets()),
            )
            .expect("histogram"),
            access_decisions: counter_vec(
                "yizhan_access_decisions_total",
                "Gate access decisions, by outcome and reason",
                &["center", "room", "outcome", "reason"],
            ),
            access_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "yizhan_access_decision_seconds",
                    "From an access request's arrival at ingest to the open/deny command leaving the hub",
                )
                .buckets(reaction_buckets()),
            )
            .expect("histogram"),
            room_occupancy: gauge_vec(
                "yizhan_room_occupancy",
                "People in a room now (counters at its door, or gate passages for 24-hour rooms); room \"entrance\" is the center's headcount",
                &["center", "room"],
            ),
            room_occupancy_ratio: GaugeVec::new(
                Opts::new(
                    "yizhan_room_occupancy_ratio",
                    "People in a room over its configured seats",
                ),
                &["center", "room"],
            )
            .expect("gauge vec"),
            room_saturated: gauge_vec(
                "yizhan_room_saturated",
                "1 while a room is saturated (raised at 90% of its seats, cleared below 80%)",
                &["center", "room"],
            ),
            room_saturation_alarms: counter_vec(
                "yizhan_room_saturation_alarms_total",
                "Times a room became saturated",
                &["center", "room"],
            ),
            visits: counter_vec(
                "yizhan_visits_total",
                "People counted in at a center's entrance",
                &["center"],
            ),
            piano_usage: CounterVec::new(
                Opts::new(
                    "yizhan_piano_usage_seconds_total",
                    "Time the center's pianos were played (ended sessions)",
                ),
                &["center"],
            )
            .expect("counter vec"),
            bookings: counter_vec(
                "yizhan_bookings_total",
                "Booking outcomes: booked, checked_in, no_show, cancelled, late_cancel, full, refused, waitlisted, promoted",
                &["center", "kind", "outcome"],
            ),
            booking_seat_seconds: CounterVec::new(
                Opts::new(
                    "yizhan_booking_seat_seconds_total",
                    "Seat time of booked places (state booked) and of checked-in places at slot end (state used)",
                ),
                &["center", "kind", "state"],
            )
            .expect("counter vec"),
            booking_waitlist: gauge_vec(
                "yizhan_booking_waitlist",
                "People on waitlists of slots not yet ended",
                &["center", "kind"],
            ),
            booking_slots_full: counter_vec(
                "yizhan_booking_slots_full_total",
                "Slots whose last place was booked",
                &["center", "kind"],
            ),
            booking_slots_unstaffed: gauge_vec(
                "yizhan_booking_slots_unstaffed",
                "Slots from now to the booking horizon in rooms with a duty roster and no manager on duty",
                &["center", "kind"],
            ),
            booking_day_seat_seconds: GaugeVec::new(
                Opts::new(
                    "yizhan_booking_day_seat_seconds",
                    "Seat time of today's slots (local day): available (capacity x length) and booked",
                ),
                &["center", "kind", "state"],
            )
            .expect("gauge vec"),
            webhook_deliveries: counter_vec(
                "yizhan_webhook_deliveries_total",
                "Notification deliveries to the booking webhook: ok, or retry after a failure",
                &["outcome"],
            ),
            records_pruned: counter_vec(
                "yizhan_records_pruned_total",
                "Stored records removed by retention, by kind (events, commands, notifications, audit)",
                &["kind"],
            ),
            component_up: gauge_vec(
                "yizhan_component_up",
                "1 while a supervised thread or task runs, 0 once it ended (see /readyz)",
                &["component"],
            ),
            build_info: gauge_vec(
                "yizhan_build_info",
                "Always 1: the hub's version and the git commit it was built from",
                &["version", "commit"],
            ),
            commands_open: IntGauge::new(
                "yizhan_commands_open",
                "Commands pending or sent, without an outcome yet",
            )
            .expect("gauge"),
            webhook_outbox: IntGauge::new(
                "yizhan_webhook_outbox_messages",
                "Notifications waiting in the durable outbox for the booking webhook",
            )
            .expect("gauge"),
            devices: gauge_vec(
                "yizhan_devices",
                "Devices provisioned and not revoked (offline = this - yizhan_devices_online)",
                &["center", "kind"],
            ),
            alarms_active: gauge_vec(
                "yizhan_alarms_active",
                "Interlock alarms raised and not yet acknowledged by staff",
                &["center", "kind"],
            ),
            center_visits: gauge_vec(
                "yizhan_center_visits",
                "Visits of the center's current local day and month",
                &["center", "period"],
            ),
            pianos_in_use: gauge_vec(
                "yizhan_pianos_in_use",
                "Pianos with a session started and not ended",
                &["center"],
            ),
            therapy_temperature_max: GaugeVec::new(
                Opts::new(
                    "yizhan_therapy_temperature_max_celsius",
                    "Highest last temperature among the room's online therapy robots",
                ),
                &["center", "room"],
            )
            .expect("gauge vec"),
            certificate_expiry: gauge_vec(
                "yizhan_certificate_expiry_timestamp_seconds",
                "When a certificate expires: the CA, the edge's server certificate, the earliest of the live devices'",
                &["certificate"],
            ),
            uplink_backlog_messages: IntGauge::new(
                "yizhan_uplink_backlog_messages",
                "Messages in the uplink outbox, waiting for the upstream's PUBACK",
            )
            .expect("gauge"),
            uplink_backlog_bytes: IntGauge::new(
                "yizhan_uplink_backlog_bytes",
                "Bytes in the uplink outbox (keys and entries)",
            )
            .expect("gauge"),
            uplink_oldest_age: Gauge::new(
                "yizhan_uplink_oldest_age_seconds",
                "Age of the oldest message in the uplink outbox (0 when empty)",
            )
            .expect("gauge"),
            uplink_sent: counter_vec(
                "yizhan_uplink_sent_total",
                "Messages the upstream acknowledged (PUBACK), by class",
                &["class"],
            ),
            uplink_dropped: counter_vec(
                "yizhan_uplink_dropped_total",
                "Messages dropped from the uplink outbox over its bound, by class (telemetry only)",
                &["class"],
            ),
            uplink_connected: IntGauge::new(
                "yizhan_uplink_connected",
                "1 while the hub holds a session with an upstream broker",
            )
            .expect("gauge"),
            uplink_connect_attempts: counter_vec(
                "yizhan_uplink_connect_attempts_total",
                "Connections to upstream brokers, by outcome (connected, failed)",
                &["outcome"],
            ),
            downlink_accepted: IntCounter::new(
                "yizhan_downlink_accepted_total",
                "District commands taken from the upstream and handed to the command service",
            )
            .expect("counter"),
            downlink_refused: counter_vec(
                "yizhan_downlink_refused_total",
                "Messages on the hub's command topics refused, by reason",
                &["reason"],
            ),
            downlink_subscribed: IntGauge::new(
                "yizhan_downlink_subscribed",
                "1 while the hub is subscribed to its centers' command topics upstream",
            )
            .expect("gauge"),
            registry,
        };
        metrics.register_all();
        for reason in protocol::upstream::Refusal::ALL {
            metrics
                .downlink_refused
                .with_label_values(&[reason.as_str()]);
        }
        metrics
            .build_info
            .with_label_values(&[VERSION, COMMIT])
            .set(1);
        metrics
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.messages_received.clone()),
            Box::new(self.rejected.clone()),
            Box::new(self.seq_gaps.clone()),
            Box::new(self.events_stored.clone()),
            Box::new(self.ingest_latency.clone()),
            Box::new(self.ingest_batch_size.clone()),
            Box::new(self.devices_online.clone()),
            Box::new(self.connections.clone()),
            Box::new(self.connect_attempts.clone()),
            Box::new(self.handshake_failures.clone()),
            Box::new(self.edge_refused.clone()),
            Box::new(self.edge_disconnects.clone()),
            Box::new(self.edge_throttled.clone()),
            Box::new(self.store_size.clone()),
            Box::new(self.twins.clone()),
            Box::new(self.http_requests.clone()),
            Box::new(self.revocations.clone()),
            Box::new(self.certificate_renewals.clone()),
            Box::new(self.commands.clone()),
            Box::new(self.command_round_trip.clone()),
            Box::new(self.interlock_trips.clone()),
            Box::new(self.interlock_restarts_refused.clone()),
            Box::new(self.interlock_latency.clone()),
            Box::new(self.access_decisions.clone()),
            Box::new(self.access_latency.clone()),
            Box::new(self.room_occupancy.clone()),
            Box::new(self.room_occupancy_ratio.clone()),
            Box::new(self.room_saturated.clone()),
            Box::new(self.room_saturation_alarms.clone()),
            Box::new(self.visits.clone()),
            Box::new(self.piano_usage.clone()),
            Box::new(self.bookings.clone()),
            Box::new(self.booking_seat_seconds.clone()),
            Box::new(self.booking_waitlist.clone()),
            Box::new(self.booking_slots_full.clone()),
            Box::new(self.webhook_deliveries.clone()),
            Box::new(self.records_pruned.clone()),
            Box::new(self.booking_slots_unstaffed.clone()),
            Box::new(self.booking_day_seat_seconds.clone()),
            Box::new(self.component_up.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.commands_open.clone()),
            Box::new(self.webhook_outbox.clone()),
            Box::new(self.devices.clone()),
            Box::new(self.alarms_active.clone()),
            Box::new(self.center_visits.clone()),
            Box::new(self.pianos_in_use.clone()),
            Box::new(self.therapy_temperature_max.clone()),
            Box::new(self.certificate_expiry.clone()),
            Box::new(self.uplink_backlog_messages.clone()),
            Box::new(self.uplink_backlog_bytes.clone()),
            Box::new(self.uplink_oldest_age.clone()),
            Box::new(self.uplink_sent.clone()),
            Box::new(self.uplink_dropped.clone()),
            Box::new(self.uplink_connected.clone()),
            Box::new(self.uplink_connect_attempts.clone()),
            Box::new(self.downlink_accepted.clone()),
            Box::new(self.downlink_refused.clone()),
            Box::new(self.downlink_subscribed.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for collector in collectors {
            // invariant: every family above has a unique name.
            self.registry.register(collector).expect("unique metric");
        }
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // invariant: encoding into a Vec cannot fail for valid families.
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode metrics");
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// 50 µs to ~1.6 s, doubling (ingest latency).
fn fast_buckets() -> Vec<f64> {
    // invariant: start > 0, factor > 1, count > 0.
    prometheus::exponential_buckets(0.000_05, 2.0, 16).expect("buckets")
}

/// Reactions and round trips: with edges at the targets (10, 20, 50 ms).
fn reaction_buckets() -> Vec<f64> {
    vec![
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5, 10.0,
    ]
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // invariant: names and labels are static and valid.
    IntCounterVec::new(Opts::new(name, help), labels).expect("counter vec")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    // invariant: names and labels are static and valid.
    IntGaugeVec::new(Opts::new(name, help), labels).expect("gauge vec")
}
