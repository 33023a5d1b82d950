//! The device edge under the loads and abuses of issue 9: a reconnect
//! storm, clients that stall their TLS handshake, ids that once killed
//! rumqttd's listener, retained messages and subscriptions over their
//! limits, and a device flooding its rate.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use device_sim::bench::connect::Pacing;
use device_sim::bench::connection::Broker;
use device_sim::bench::load::{Load, Stop};
use device_sim::bench::{Auth, BenchConfig, HubAccess, Session};
use protocol::{Channel, DeviceKind};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;
use tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `device-sim bench`'s idle session of `connections` provisioned devices.
fn idle_devices(hub: &HubProcess, connections: usize, dir: &std::path::Path) -> BenchConfig {
    BenchConfig {
        broker: Broker {
            host: "localhost".into(),
            port: hub.mqtt_port,
            keepalive: Duration::from_secs(60),
        },
        auth: Auth::Devices,
        hub: Some(HubAccess {
            api_url: hub.api.clone(),
            admin_token: ADMIN_TOKEN.into(),
            cert_dir: dir.to_path_buf(),
        }),
        connections,
        pacing: Pacing {
            concurrency: connections,
            timeout: Duration::from_secs(60),
        },
        load: Load {
            qos: QoS::AtMostOnce,
            payload_bytes: 0,
            rate: None,
            stop: Stop::After(Duration::ZERO),
        },
        idle: true,
        event_rate: 0.0,
        id_prefix: "storm".into(),
        progress: false,
    }
}

#[tokio::test]
async fn a_thousand_devices_dropped_and_reconnecting_at_once_five_times_all_come_back() -> Result<()>
{
    let _heavy = heavy();
    const DEVICES: usize = 1_000;
    let hub = HubProcess::start(HubOptions::default()).await?;
    let certs = tempfile::tempdir()?;
    let config = idle_devices(&hub, DEVICES, certs.path());
    let mut session = Session::open(&config).await?;
    ensure!(
        session.connect_report().connected == DEVICES,
        "first connect"
    );
    for (round, report) in session.reconnect_storm(5).await.iter().enumerate() {
        assert_eq!(report.connected, DEVICES, "round {round}: {report:?}");
    }
    let sessions = hub
        .metric("yizhan_mqtt_connections", "listener=\"devices\"")
        .await?;
    assert_eq!(sessions, DEVICES as f64);
    session.close_idle().await;
    // Every listener is still up: a new device connects.
    let creds = hub.provision("afterstorm", DeviceKind::Gate).await?;
    TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Gate).await?;
    assert_eq!(
        hub.metric("yizhan_component_up", "component=\"edge_devices\"")
            .await?,
        1.0
    );
    Ok(())
}

/// The first flight of a TLS 1.3 handshake a real client would send.
fn client_hello() -> Result<Vec<u8>> {
    use rumqttc::tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
    device_sim::mqtt::ensure_crypto_provider();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from("localhost")?;
    let mut client = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
    let mut hello = Vec::new();
    client.write_tls(&mut hello)?;
    Ok(hello)
}

#[tokio::test]
async fn a_device_connects_within_a_second_past_64_stalled_handshakes_and_50_idle_sockets(
) -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("gate64", DeviceKind::Gate).await?;
    let hello = client_hello()?;
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut staller = TcpStream::connect(("127.0.0.1", hub.mqtt_port)).await?;
        staller.write_all(&hello).await?;
        held.push(staller);
    }
    for _ in 0..50 {
        held.push(TcpStream::connect(("127.0.0.1", hub.mqtt_port)).await?);
    }
    eventually(Duration::from_secs(5), "114 connections open", || async {
        let open = hub
            .metric("yizhan_mqtt_connections", "listener=\"devices\"")
            .await
            .ok()?;
        (open >= 114.0).then_some(())
    })
    .await?;
    let start = Instant::now();
    let mut device = TestDevice::connect(&creds, hub.mqtt_port, DeviceOptions::default());
    device.connected(Duration::from_secs(1)).await?;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "connect took {took:?}");
    drop(held);
    Ok(())
}

/// A tool on the hub's loopback listener.
fn tool(port: u16, client_id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options
        .set_credentials("tool", "tool-password")
        .set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(options, 10)
}

/// The CONNACK code a tool gets, or the error that ended its attempt.
async fn tool_connack(port: u16, client_id: &str) -> Result<rumqttc::ConnectReturnCode> {
    let (_client, mut eventloop) = tool(port, client_id);
    let attempt = async {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => Ok(ack.code),
            Ok(other) => anyhow::bail!("unexpected {other:?}"),
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => Ok(code),
            Err(error) => Err(error.into()),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .context("no CONNACK")?
}

#[tokio::test]
async fn two_connects_with_client_id_a_slash_b_leave_the_tools_listener_working() -> Result<()> {
    let port = free_port()?;
    let hub = HubProcess::start(HubOptions::with_tools_listener(
        port,
        "tool",
        "tool-password",
    )?)
    .await?;
    for _ in 0..2 {
        let code = tool_connack(port, "a/b").await?;
        assert_eq!(code, rumqttc::ConnectReturnCode::BadClientId);
    }
    let code = tool_connack(port, "tool-after").await?;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
    assert_eq!(
        hub.metric("yizhan_component_up", "component=\"edge_tools\"")
            .await?,
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn a_retained_publish_off_status_and_a_subscription_over_the_limit_are_refused() -> Result<()>
{
    let port = free_port()?;
    let mut options = HubOptions::with_tools_listener(port, "tool", "tool-password")?;
    options
        .extra_config
        .push_str("[broker.limits]\nmax_subscriptions = 3\n");
    let hub = HubProcess::start(options).await?;
    let creds = hub.provision("retain1", DeviceKind::Counter).await?;
    // `online` subscribes to cmd, event/ack and error: the limit is full.
    let mut device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Counter).await?;
    let telemetry_topic = device.topic(Channel::Telemetry);
    device
        .client
        .publish(&telemetry_topic, QoS::AtLeastOnce, true, telemetry(1, &[]))
        .await?;
    let report = device.next_error(Duration::from_secs(5)).await?;
    assert!(
        report.reason.starts_with("retain_not_allowed"),
        "{report:?}"
    );

    device
        .client
        .subscribe(device.topic(Channel::Telemetry), QoS::AtMostOnce)
        .await?;
    let codes = device.next_suback(Duration::from_secs(5)).await?;
    assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);

    // Nothing was retained: a tool subscribing later gets no telemetry.
    let (watcher, mut watching) = tool(port, "watcher");
    watcher.subscribe(&telemetry_topic, QoS::AtMostOnce).await?;
    let retained = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = watching.poll().await
            {
                return p;
            }
        }
    })
    .await;
    assert!(retained.is_err(), "a retained telemetry was kept");
    for (reason, count) in [("retain_not_allowed", 1.0), ("too_many_subscriptions", 1.0)] {
        let labels = format!("reason=\"{reason}\"");
        assert_eq!(
            hub.metric("yizhan_edge_refused_total", &labels).await?,
            count
        );
    }
    // The device is still connected and heard.
    device
        .publish(Channel::Telemetry, telemetry(2, &[("in", json!(1))]))
        .await?;
    eventually(
        Duration::from_secs(5),
        "telemetry after refusals",
        || async {
            let twin = hub.twin("retain1").await.ok()?;
            (twin["fields"]["in"]["value"] == json!(1.0)).then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_device_publishing_ten_times_its_rate_is_slowed_and_cut_while_others_are_heard(
) -> Result<()> {
    const RATE: u64 = 20;
    let mut options = HubOptions::default();
    options.extra_config.push_str(&format!(
        "[broker.limits]\nmessages_per_second = {RATE}\nburst = {RATE}\nflood_disconnect_secs = 2\n"
    ));
    let hub = HubProcess::start(options).await?;
    let flooder_creds = hub.provision("flood1", DeviceKind::Counter).await?;
    let calm_creds = hub.provision("calm1", DeviceKind::Gate).await?;
    let mut flooder =
        TestDevice::online(&flooder_creds, hub.mqtt_port, DeviceKind::Counter).await?;
    let mut calm = TestDevice::online(&calm_creds, hub.mqtt_port, DeviceKind::Gate).await?;

    // The flooder sends ten times its rate, without waiting.
    let flood_client = flooder.client.clone();
    let topic = flooder.topic(Channel::Telemetry);
    let flood = tokio::spawn(async move {
        let started = Instant::now();
        let mut seq = 0;
        while started.elapsed() < Duration::from_secs(4) {
            seq += 1;
            let payload = telemetry(seq, &[("in", json!(0))]);
            if flood_client
                .try_publish(&topic, QoS::AtMostOnce, false, payload)
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1000 / (10 * RATE))).await;
        }
    });
    // Meanwhile the calm device's events are acknowledged at once.
    let mut slowest = Duration::ZERO;
    for seq in 1..=10u64 {
        let sent = Instant::now();
        calm.event(
            &format!("c{seq}"),
            seq,
            "passage",
            json!({"direction": "in"}),
        )
        .await?;
        calm.message_on(&calm.topic(Channel::EventAck), Duration::from_secs(5))
            .await?;
        slowest = slowest.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = flood.await;
    flooder.disconnected(Duration::from_secs(5)).await?;
    assert!(slowest < Duration::from_secs(1), "slowest ack {slowest:?}");

    let throttled = hub
        .metric("yizhan_edge_throttled_total", "listener=\"devices\"")
        .await?;
    assert!(throttled > 0.0, "the flooder was never slowed");
    let cut = hub
        .metric("yizhan_edge_disconnects_total", "reason=\"flooding\"")
        .await?;
    assert_eq!(cut, 1.0);
    // What reached the hub is what the rate allowed over the 4 s of
    // flooding, reconnects included: the burst, then RATE a second (and
    // the hello), not the 10 x RATE a second sent.
    let twin = hub.twin("flood1").await?;
    let heard = twin["messages"].as_u64().context("messages")?;
    assert!(heard <= 5 * RATE + 10, "{heard} messages passed the limit");
    Ok(())
}
