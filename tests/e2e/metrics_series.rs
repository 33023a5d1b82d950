//! Bounded cardinality (issue 11): 10,000 devices in 100 centers (every
//! kind, a dozen rooms with seats, three bookable resources each) connect
//! over mTLS and report once — a birth, then a reading, a gate request or
//! a piano session — and the hub's `/metrics` holds fewer series than the
//! bound docs/metrics.md gives, with no device id in any label.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use device_sim::bench::connect::{connect_all, Pacing};
use device_sim::bench::connection::{self, Broker, Counters, Login, Role};
use device_sim::crowd::ROOMS;
use device_sim::plan::{default_center_names, plan_fleet, DeviceMix, DeviceSpec};
use device_sim::provision::Provisioner;
use device_sim::store::CredentialStore;
use protocol::topic::for_device;
use protocol::{Channel, DeviceKind};
use rumqttc::QoS;
use serde_json::{json, Value};
use tests::*;

const CENTERS: usize = 100;
/// 100 devices a center: 10,000 in all.
const MIX: DeviceMix = DeviceMix {
    pianos: 20,
    therapy_robots: 10,
    gates: 10,
    counters: 60,
};
/// The bookable resources of every center: (kind, room).
const RESOURCES: [(&str, &str); 3] = [("piano", "music"), ("class", "yoga"), ("seat", "study")];

/// The bound of docs/metrics.md, "How many series":
/// `F + C × (8 + 11·K + 14·R + 17·B)`.
fn series_bound(centers: usize, kinds: usize, rooms: usize, resource_kinds: usize) -> usize {
    /// The families without a center label, and the HTTP histogram of the
    /// few routes this test calls.
    const FIXED: usize = 1_000;
    FIXED + centers * (8 + 11 * kinds + 14 * rooms + 17 * resource_kinds)
}

/// Seats for every room of every center (the gym is open all day), and
/// the centers' resources.
fn district_config(centers: &[String]) -> String {
    let mut config = String::new();
    for center in centers {
        for (room, seats) in ROOMS {
            config.push_str(&format!(
                "[[rooms]]\ncenter = \"{center}\"\nid = \"{room}\"\ncapacity = {seats}\n\
                 open = \"08:00\"\nclose = \"22:00\"\n"
            ));
        }
        config.push_str(&format!(
            "[[rooms]]\ncenter = \"{center}\"\nid = \"gym\"\ncapacity = 40\nhours = \"24h\"\n"
        ));
        for (kind, room) in RESOURCES {
            config.push_str(&format!(
                "[[resources]]\nid = \"{center}-{kind}\"\ncenter = \"{center}\"\nkind = \"{kind}\"\n\
                 room = \"{room}\"\ncapacity = 4\nslot_minutes = 60\nopen = \"08:00\"\n\
                 close = \"22:00\"\nprice = 0.0\nmarket_price = 50.0\n"
            ));
        }
    }
    config
}

/// What a device of `kind` says after its birth: a reading, a gate
/// request or a piano session.
fn report(spec: &DeviceSpec) -> (Channel, Value) {
    let now = now_ms();
    match spec.kind {
        DeviceKind::TherapyRobot => (
            Channel::Telemetry,
            json!({"ts": now, "seq": 1, "temp_c": 38.5, "heating": false}),
        ),
        DeviceKind::Counter => (
            Channel::Telemetry,
            json!({"ts": now, "seq": 1, "in": 3, "out": 1}),
        ),
        DeviceKind::Gate => (
            Channel::Event,
            json!({"id": "e1", "ts": now, "seq": 1, "type": "access_request",
                   "body": {"credential": format!("card-{}", spec.id)}}),
        ),
        DeviceKind::Piano => (
            Channel::Event,
            json!({"id": "e1", "ts": now, "seq": 1, "type": "session_start",
                   "body": {"source": "walk_in"}}),
        ),
    }
}

/// Every label value of an exposition's samples (between quotes).
fn label_values(exposition: &str) -> HashSet<&str> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split('"').skip(1).step_by(2))
        .collect()
}

/// Counts the samples of an exposition (every line but comments).
fn series(exposition: &str) -> usize {
    exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_devices_in_a_hundred_centers_stay_under_the_series_bound() -> Result<()> {
    let _heavy = heavy();
    let started = Instant::now();
    let centers = default_center_names(CENTERS);
    let hub = HubProcess::start(HubOptions {
        extra_config: district_config(&centers),
        ..HubOptions::default()
    })
    .await?;
    let specs = plan_fleet(&centers, &MIX, 11)?;
    ensure!(specs.len() == 10_000);
    let certs = tempfile::tempdir()?;
    let provisioner = Provisioner::new(&hub.api, ADMIN_TOKEN, CredentialStore::new(certs.path()));
    let creds = provisioner.ensure_all(&specs, 32).await?;
    let provisioned = started.elapsed();

    let broker = Broker {
        host: "localhost".into(),
        port: hub.mqtt_port,
        keepalive: Duration::from_secs(120),
    };
    let clients = creds
        .iter()
        .map(|c| {
            let login = Login::Device(Box::new(c.clone()));
            (connection::options(&c.id, &broker, &login), Role::Telemetry)
        })
        .collect();
    let pacing = Pacing {
        concurrency: 512,
        timeout: Duration::from_secs(60),
    };
    let counters = std::sync::Arc::new(Counters::default());
    let (connections, connected) = connect_all(clients, pacing, &counters).await;
    ensure!(connected.connected == 10_000, "{connected:?}");
    let connected_at = started.elapsed();
    for (index, connection) in &connections {
        let spec = &specs[*index];
        let birth = json!({"kind": spec.kind, "fw": "1.0", "model": "sim"});
        let (channel, body) = report(spec);
        let client = &connection.client;
        client
            .publish(
                for_device(&spec.id, Channel::Birth),
                QoS::AtLeastOnce,
                false,
                birth.to_string(),
            )
            .await?;
        client
            .publish(
                for_device(&spec.id, channel),
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await?;
    }
    eventually(
        Duration::from_secs(60),
        "every device online and heard twice",
        || async {
            let exposition = hub.metrics().await.ok()?;
            let online = sum_metric(&exposition, "yizhan_devices_online", "");
            let received = sum_metric(&exposition, "yizhan_messages_received_total", "");
            (online == 10_000.0 && received >= 20_000.0).then_some(())
        },
    )
    .await?;
    let exposition = hub.metrics().await?;
    let count = series(&exposition);
    let rooms = ROOMS.len() + 3; // + entrance, gym, therapy
    let bound = series_bound(CENTERS, DeviceKind::ALL.len(), rooms, RESOURCES.len());
    eprintln!(
        "10,000 devices in {CENTERS} centers: {count} series (bound {bound}); \
         provisioned in {provisioned:?}, connected in {connected_at:?}, scraped in {:?}",
        started.elapsed()
    );
    assert!(count <= bound, "{count} series, bound {bound}");
    assert_eq!(sum_metric(&exposition, "yizhan_devices", ""), 10_000.0);
    assert_eq!(sum_metric(&exposition, "yizhan_pianos_in_use", ""), 2_000.0);
    assert!(
        sum_metric(&exposition, "yizhan_access_decisions_total", "") >= 1_000.0,
        "every gate asked once"
    );
    let values = label_values(&exposition);
    let device_in_a_label = specs.iter().find(|spec| values.contains(spec.id.as_str()));
    assert!(
        device_in_a_label.is_none(),
        "{device_in_a_label:?} in a label"
    );
    for (_, connection) in connections {
        connection.stop.cancel();
    }
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}
