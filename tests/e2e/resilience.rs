//! The hub keeps what it acknowledged through kill -9, keeps twins through
//! restarts, notices silent devices, and stays reachable while idle sockets
//! sit on its TLS port.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use protocol::{Channel, DeviceKind};
use rumqttc::QoS;
use serde_json::json;
use tests::*;

#[tokio::test]
async fn a_device_connects_while_50_idle_sockets_sit_on_the_tls_port() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("gym1", DeviceKind::Gate).await?;
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", hub.mqtt_port)).await?);
    }
    let start = Instant::now();
    let mut device = TestDevice::connect(&creds, hub.mqtt_port, DeviceOptions::default());
    device.connected(Duration::from_secs(2)).await?;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "connect took {took:?}");
    // Idle sockets that never send a ClientHello are dropped by the edge
    // at their handshake deadline (5 s).
    let aborted = eventually(
        Duration::from_secs(10),
        "idle sockets timed out",
        || async {
            let n = hub
                .metric("yizhan_edge_handshake_failures_total", "reason=\"timeout\"")
                .await
                .ok()?;
            (n >= 50.0).then_some(n)
        },
    )
    .await?;
    assert!(aborted >= 50.0);
    drop(idle);
    Ok(())
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_acknowledged_event() -> anyhow::Result<()> {
    const TOTAL: u64 = 10_000;
    const WINDOW: usize = 500;
    // Durability, not rate limits, is tested here: the device may send as
    // fast as the hub takes it.
    let options = HubOptions {
        extra_config: "[broker.limits]\nmessages_per_second = 0\n".into(),
        ..HubOptions::default()
    };
    let mut hub = HubProcess::start(options).await?;
    let creds = hub.provision("piano9", DeviceKind::Piano).await?;
    let mut device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano).await?;
    let ack_topic = device.topic(Channel::EventAck);
    let event_topic = device.topic(Channel::Event);

    let mut next = 1u64;
    let mut unacked: HashMap<String, Vec<u8>> = HashMap::new();
    let mut acked: HashSet<String> = HashSet::new();
    let mut acked_before_kill = None;
    let mut last_resend = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(180);
    while acked.len() < TOTAL as usize {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {TOTAL} acknowledged",
            acked.len()
        );
        while next <= TOTAL && unacked.len() < WINDOW {
            let id = format!("ev{next}");
            let payload = serde_json::to_vec(
                &json!({"id": id, "ts": now_ms(), "seq": next, "type": "key_activity", "keys": next % 88}),
            )?;
            if device
                .client
                .try_publish(&event_topic, QoS::AtLeastOnce, false, payload.clone())
                .is_err()
            {
                break;
            }
            unacked.insert(id, payload);
            next += 1;
        }
        match tokio::time::timeout(Duration::from_millis(50), device.events.recv()).await {
            Ok(Some(DeviceEvent::Message { topic, payload })) if topic == ack_topic => {
                let ack: protocol::EventAck = serde_json::from_slice(&payload)?;
                if unacked.remove(&ack.id).is_some() {
                    acked.insert(ack.id);
                }
            }
            Ok(Some(DeviceEvent::Connected)) => {
                device.hello(DeviceKind::Piano, 30).await?;
                resend(&device, &event_topic, &unacked);
                last_resend = Instant::now();
            }
            _ => {}
        }
        if acked_before_kill.is_none() && acked.len() >= 3_000 {
            acked_before_kill = Some(acked.len());
            hub.restart().await?;
        }
        if last_resend.elapsed() > Duration::from_secs(3) {
            resend(&device, &event_topic, &unacked);
            last_resend = Instant::now();
        }
    }
    assert!(acked_before_kill.is_some(), "the hub was never killed");
    let events: serde_json::Value = hub
        .get("/api/v1/devices/piano9/events?limit=10000")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        events["count"],
        json!(TOTAL),
        "every sent event stored exactly once"
    );
    let stored: HashSet<String> = events["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["event"]["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let all: HashSet<String> = (1..=TOTAL).map(|n| format!("ev{n}")).collect();
    assert_eq!(stored, all);
    Ok(())
}

fn resend(device: &TestDevice, topic: &str, unacked: &HashMap<String, Vec<u8>>) {
    for payload in unacked.values() {
        if device
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .is_err()
        {
            return;
        }
    }
}

#[tokio::test]
async fn a_restart_keeps_every_twin() -> anyhow::Result<()> {
    let mut hub = HubProcess::start(HubOptions::default()).await?;
    let mut devices = Vec::new();
    for (i, kind) in DeviceKind::ALL.into_iter().enumerate() {
        let creds = hub.provision(&format!("dev{i}"), kind).await?;
        let device = TestDevice::online(&creds, hub.mqtt_port, kind).await?;
        device
            .publish(Channel::Telemetry, telemetry(1, &[("value", json!(i))]))
            .await?;
        devices.push(device);
    }
    let mut before = Vec::new();
    for i in 0..DeviceKind::ALL.len() {
        let twin = eventually(Duration::from_secs(5), "telemetry stored", || async {
            let twin = hub.twin(&format!("dev{i}")).await.ok()?;
            (twin["fields"]["value"]["value"] == json!(i as f64)).then_some(twin)
        })
        .await?;
        before.push(twin);
    }
    let (status, took) = hub.terminate()?;
    assert!(status.success(), "exit status {status:?}\n{}", hub.log());
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    drop(devices);
    hub.restart().await?;
    for (i, mut expected) in before.into_iter().enumerate() {
        let mut twin = hub.twin(&format!("dev{i}")).await?;
        assert_eq!(
            twin["online"],
            json!(false),
            "sessions end with the process"
        );
        for t in [&mut twin, &mut expected] {
            t.as_object_mut().map(|m| {
                m.remove("online");
                m.remove("online_epoch")
            });
        }
        assert_eq!(twin, expected);
    }
    Ok(())
}

#[tokio::test]
async fn a_silently_dropped_device_goes_offline_within_one_and_a_half_keepalives(
) -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("counter3", DeviceKind::Counter).await?;
    let link = SilentCut::start(hub.mqtt_port).await?;
    let options = DeviceOptions {
        keepalive: Duration::from_secs(2),
        ..DeviceOptions::default()
    };
    let mut device = TestDevice::connect(&creds, link.port, options);
    device.connected(Duration::from_secs(5)).await?;
    device.hello(DeviceKind::Counter, 2).await?;
    eventually(Duration::from_secs(5), "online", || async {
        let twin = hub.twin("counter3").await.ok()?;
        (twin["online"] == json!(true)).then_some(())
    })
    .await?;
    link.cut();
    let cut_at = Instant::now();
    eventually(Duration::from_secs(10), "offline", || async {
        let twin = hub.twin("counter3").await.ok()?;
        (twin["online"] == json!(false)).then_some(())
    })
    .await?;
    let took = cut_at.elapsed();
    // 1.5 x 2 s keepalive, plus the hub's 250 ms liveness sweep and polling.
    assert!(
        took <= Duration::from_millis(3_500),
        "offline after {took:?}"
    );
    Ok(())
}
