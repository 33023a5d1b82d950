//! Issue 9's conformance list against the hub's edge, each item with three
//! client stacks over mTLS: rumqttc, the mosquitto command-line clients and
//! paho-mqtt (Python). A scenario is written once, for a `Device` of some
//! stack, and `on_stacks` runs it for every stack at once on one hub, each
//! with its own devices. Every client dials `127.0.0.1` and verifies the
//! server certificate against the hub's CA.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use protocol::Channel;
use rumqttc::{AsyncClient, Incoming, MqttOptions, QoS};
use serde_json::{json, Value};
use tests::raw_mqtt::{self, Ending, RawDevice};
use tests::stacks::{on_stacks, Plan, Stack};
use tests::*;

const WAIT: Duration = Duration::from_secs(5);
const TOOL_USER: &str = "tool";
const TOOL_PASSWORD: &str = "tool-password";

/// A hub with its loopback tools listener on; the listener's port.
async fn hub_with_tools() -> Result<(HubProcess, u16)> {
    let port = free_port()?;
    let options = HubOptions::with_tools_listener(port, TOOL_USER, TOOL_PASSWORD)?;
    Ok((HubProcess::start(options).await?, port))
}

/// A hub with `YIZHAN_*` overrides.
async fn hub_with(env: &[(&str, &str)]) -> Result<HubProcess> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    HubProcess::start(HubOptions {
        env: env.collect(),
        ..HubOptions::default()
    })
    .await
}

/// What a tool on the loopback listener, subscribing now, gets first on
/// `topic`: the payload and whether it came as a retained message.
async fn tool_reads(port: u16, topic: &str) -> Result<(String, bool)> {
    static CLIENTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut options = MqttOptions::new(format!("observer{n}"), "127.0.0.1", port);
    options.set_credentials(TOOL_USER, TOOL_PASSWORD);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe(topic, QoS::AtLeastOnce).await?;
    let read = async {
        loop {
            if let rumqttc::Event::Incoming(Incoming::Publish(p)) = eventloop.poll().await? {
                if p.topic == topic {
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    return anyhow::Ok((payload, p.retain));
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .with_context(|| format!("nothing on {topic} for a tool"))?
}

#[tokio::test]
async fn dialing_127_0_0_1_verifies_the_server_certificate_by_ip_address() -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    // The same hub behind another loopback address, which its certificate
    // does not name: a client that really checks must refuse it.
    let elsewhere = SilentCut::start_on("127.0.0.2", hub.mqtt_port).await?;
    let other_port = elsewhere.port;
    on_stacks(&hub, &Stack::ALL, "tlsip", |dev| async move {
        let plan = dev.plan().publish(dev.telemetry(1, 7, 1));
        dev.run_acknowledged(&plan).await?;
        dev.twin_field("key_presses", 7.0).await?;
        let refused = dev.run(&plan.via("127.0.0.2", other_port)).await?;
        ensure!(
            refused.connack.is_none() && refused.failed,
            "127.0.0.2 accepted:\n{}",
            refused.transcript
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn qos_0_telemetry_reaches_the_twin_and_a_qos_1_event_is_acknowledged() -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    on_stacks(&hub, &Stack::ALL, "qos", |dev| async move {
        let outcome = dev
            .run(&dev.plan().publish(dev.telemetry(1, 10, 0)))
            .await?;
        ensure!(outcome.sent == 1, "QoS 0 not sent:\n{}", outcome.transcript);
        dev.twin_field("key_presses", 10.0).await?;
        let event = json!({"id": "ev1", "ts": now_ms(), "seq": 1, "type": "key_activity"});
        let event = dev.message(Channel::Event, event.to_string(), 1, false);
        let ack = dev
            .publish_and_receive(event, &dev.topic(Channel::EventAck))
            .await?;
        if let Some(ack) = ack {
            ensure!(serde_json::from_str::<Value>(&ack)? == json!({"id": "ev1"}));
        }
        let events = dev
            .hub
            .get_json(&format!("/api/v1/devices/{}/events", dev.id))
            .await?;
        ensure!(events["count"] == json!(1), "{events}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_retained_online_status_reaches_a_later_tool_subscriber() -> Result<()> {
    let (hub, tools) = hub_with_tools().await?;
    on_stacks(&hub, &Stack::ALL, "retained", |dev| async move {
        dev.announce_online().await?;
        let read = tool_reads(tools, &dev.topic(Channel::Status)).await?;
        ensure!(read == ("online".into(), true), "{read:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_will_of_a_killed_client_is_published_and_its_twin_goes_offline() -> Result<()> {
    let (hub, tools) = hub_with_tools().await?;
    on_stacks(&hub, &Stack::ALL, "will", |dev| async move {
        // A second device leaves with DISCONNECT: its will must not fire.
        let polite = dev.peer("b").await?;
        let mut sessions = Vec::new();
        for device in [&dev, &polite] {
            device.announce_online().await?;
            let plan = device
                .plan()
                .will(device.offline_will())
                .subscribe(device.topic(Channel::Cmd));
            sessions.push(device.connect(&plan).await?);
        }
        let (mut killed, left) = (sessions.remove(0), sessions.remove(0));
        left.disconnect().await?;
        killed.kill();
        dev.twin_online(false, WAIT).await?;
        let read = tool_reads(tools, &dev.topic(Channel::Status)).await?;
        ensure!(read == ("offline".into(), true), "killed: {read:?}");
        let read = tool_reads(tools, &polite.topic(Channel::Status)).await?;
        ensure!(read == ("online".into(), true), "left politely: {read:?}");
        polite.twin_online(true, WAIT).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_silent_network_cut_marks_the_device_offline_within_one_and_a_half_keepalives(
) -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    on_stacks(&hub, &Stack::ALL, "cut", |dev| async move {
        let keepalive = dev.stack.min_keepalive().max(2);
        let limit = Duration::from_millis(1_500 * u64::from(keepalive));
        // A second device stays reachable: the control.
        let kept = dev.peer("b").await?;
        let mut sessions = Vec::new();
        for device in [&dev, &kept] {
            device.announce_online().await?;
            let relay = SilentCut::start(dev.hub.mqtt_port).await?;
            let plan = device
                .plan()
                .keepalive(keepalive)
                .will(device.offline_will())
                .subscribe(device.topic(Channel::Cmd))
                .via("127.0.0.1", relay.port);
            sessions.push((device.connect(&plan).await?, relay, Instant::now()));
        }
        sessions[0].1.cut();
        let took = dev.twin_online(false, limit + WAIT).await?;
        // The hub's liveness sweep (250 ms), the will's way to the twin and
        // this test's polling on a busy machine.
        ensure!(
            took <= limit + Duration::from_millis(750),
            "offline {took:?} after the cut (keepalive {keepalive} s)"
        );
        let (client, _relay, connected_at) = &mut sessions[1];
        tokio::time::sleep_until((*connected_at + limit + Duration::from_millis(500)).into()).await;
        ensure!(!client.has_closed(), "the uncut client was disconnected");
        kept.twin_online(true, Duration::ZERO).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_connect_with_keepalive_0_is_accepted_and_the_session_works() -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    // mosquitto's tools refuse `-k 0` themselves (see Stack::min_keepalive).
    let stacks: Vec<Stack> = Stack::ALL
        .into_iter()
        .filter(|stack| stack.min_keepalive() == 0)
        .collect();
    on_stacks(&hub, &stacks, "idle", |dev| async move {
        let plan = dev.plan().keepalive(0);
        let online = plan.clone().publish(dev.status(protocol::STATUS_ONLINE));
        dev.run_acknowledged(&online).await?;
        dev.twin_online(true, WAIT).await?;
        let mut client = dev
            .connect(&plan.subscribe(dev.topic(Channel::Cmd)))
            .await?;
        let id = dev.issue_command("lock").await?;
        let command = client.message_on(&dev.topic(Channel::Cmd), WAIT).await?;
        let command: protocol::Command = serde_json::from_str(&command.context("payload")?)?;
        ensure!(command.id == id, "{command:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_persistent_session_receives_a_qos_1_command_queued_while_it_was_away() -> Result<()> {
    // No resend within the test: only the session can deliver the command.
    let hub = hub_with(&[
        ("YIZHAN_COMMANDS__RETRY_INITIAL_MS", "600000"),
        ("YIZHAN_COMMANDS__RETRY_MAX_MS", "600000"),
    ])
    .await?;
    on_stacks(&hub, &Stack::ALL, "persist", |dev| async move {
        let cmd = dev.topic(Channel::Cmd);
        let plan = dev.plan().persistent();
        let subscribed = dev.run(&plan.clone().subscribe(cmd.clone())).await?;
        ensure!(!subscribed.closed, "{}", subscribed.transcript);
        // Online without a will, then gone with DISCONNECT: the twin stays
        // online, so the hub publishes the command into the session.
        let online = plan.clone().publish(dev.status(protocol::STATUS_ONLINE));
        dev.run_acknowledged(&online).await?;
        dev.twin_online(true, WAIT).await?;
        let id = dev.issue_command("unlock").await?;
        dev.command_record(&id, "sent").await?;
        let mut back = dev.connect(&plan.clone().subscribe(cmd.clone())).await?;
        let connack = back.connack().context("CONNACK")?;
        ensure!(connack.session_present != Some(false), "{connack:?}");
        if let Some(payload) = back.message_on(&cmd, WAIT).await? {
            let command: protocol::Command = serde_json::from_str(&payload)?;
            ensure!(command.id == id, "{command:?}");
        }
        back.disconnect().await?;
        let ack = json!({"id": id, "ok": true}).to_string();
        let ack = dev.message(Channel::CmdAck, ack, 1, false);
        dev.run_acknowledged(&plan.publish(ack)).await?;
        let record = dev.command_record(&id, "acked").await?;
        ensure!(record["attempts"] == json!(1), "{record}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_the_session_over() -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    on_stacks(&hub, &Stack::ALL, "takeover", |dev| async move {
        dev.announce_online().await?;
        let mut first = dev
            .connect(&dev.plan().subscribe(dev.topic(Channel::Cmd)))
            .await?;
        let second = dev.plan().publish(dev.telemetry(1, 42, 1));
        dev.run_acknowledged(&second).await?;
        first.closed(WAIT).await?;
        dev.twin_field("key_presses", 42.0).await?;
        Ok(())
    })
    .await?;
    let taken = hub
        .metric("yizhan_edge_disconnects_total", "reason=\"taken_over\"")
        .await?;
    ensure!(taken >= 3.0, "{taken} takeovers counted");
    Ok(())
}

const MAX_PACKET_BYTES: usize = 8 * 1024;

/// Packets every server must refuse by closing the connection (MQTT 3.1.1
/// §4.8), each sent after a valid CONNECT by device `creds`.
fn malformed_packets(creds: &protocol::api::Provisioned) -> Vec<(&'static str, Vec<u8>)> {
    let telemetry = format!("/tenants/{}/telemetry", creds.id);
    let cmd = format!("/tenants/{}/cmd", creds.id);
    let mut not_utf8 = format!("/tenants/{}/", creds.id).into_bytes();
    not_utf8.extend_from_slice(&[0xff, 0xfe]);
    vec![
        (
            "remaining length over four bytes",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        ("reserved packet type 0", vec![0x00, 0x00]),
        ("reserved packet type 15", vec![0xf0, 0x00]),
        (
            "topic length past the packet's end",
            vec![0x30, 0x04, 0x00, 0x09, b'a', b'b'],
        ),
        (
            "PUBLISH with both QoS bits set",
            raw_mqtt::publish(0x36, telemetry.as_bytes(), b"{}"),
        ),
        (
            "topic that is not UTF-8",
            raw_mqtt::publish(0x32, &not_utf8, b"{}"),
        ),
        (
            "SUBSCRIBE without a topic filter",
            vec![0x82, 0x02, 0x00, 0x01],
        ),
        (
            "SUBSCRIBE with its reserved flags clear",
            raw_mqtt::subscribe(0x80, &cmd),
        ),
        ("PINGREQ with reserved flags set", vec![0xc1, 0x00]),
        (
            "a second CONNECT",
            raw_mqtt::connect_packet(&creds.id, &creds.mqtt_username, &creds.mqtt_password),
        ),
    ]
}

#[tokio::test]
async fn malformed_and_oversize_packets_disconnect_only_their_client() -> Result<()> {
    let max = MAX_PACKET_BYTES.to_string();
    let hub = hub_with(&[("YIZHAN_BROKER__MAX_PACKET_BYTES", &max)]).await?;
    on_stacks(&hub, &Stack::ALL, "bad", |dev| async move {
        dev.announce_online().await?;
        let cmd = dev.topic(Channel::Cmd);
        let mut bystander = dev.connect(&dev.plan().subscribe(cmd.clone())).await?;

        let big = dev.peer("big").await?;
        let payload = "x".repeat(MAX_PACKET_BYTES + 1024);
        let oversize = big.message(Channel::Telemetry, payload, 1, false);
        let outcome = big.run(&big.plan().publish(oversize)).await?;
        ensure!(
            outcome.connack.map(|c| c.code) == Some(0) && outcome.pubacks == 0 && outcome.closed,
            "oversize publish:\n{}",
            outcome.transcript
        );

        let raw = dev.peer("raw").await?;
        let mut still_open = Vec::new();
        for (what, bytes) in malformed_packets(&raw.creds) {
            let mut client = RawDevice::connect(&raw.creds, dev.hub.mqtt_port).await?;
            client.send(&bytes).await?;
            match client.ending(WAIT).await {
                Ending::Closed => {}
                Ending::Open(answer) => still_open.push(format!("{what} (answered {answer:?})")),
            }
        }
        ensure!(
            still_open.is_empty(),
            "still open after: {}",
            still_open.join("; ")
        );

        ensure!(!bystander.has_closed(), "the bystander was disconnected");
        let id = dev.issue_command("lock").await?;
        let command = bystander.message_on(&cmd, WAIT).await?;
        if let Some(command) = command {
            ensure!(serde_json::from_str::<protocol::Command>(&command)?.id == id);
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn refused_connects_get_the_connack_code_that_says_why() -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    on_stacks(&hub, &Stack::ALL, "refused", |dev| async move {
        let message = dev.telemetry(1, 1, 1);
        let wrong_password = Plan {
            password: "not-the-password".into(),
            ..dev.plan().publish(message.clone())
        };
        let not_the_certificate = Plan {
            client_id: format!("{}x", dev.id),
            ..dev.plan().publish(message)
        };
        for (plan, code) in [(wrong_password, 4), (not_the_certificate, 2)] {
            let outcome = dev.run(&plan).await?;
            ensure!(
                outcome.connack.map(|c| c.code) == Some(code) && outcome.pubacks == 0,
                "expected CONNACK {code}:\n{}",
                outcome.transcript
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_publish_in_the_same_read_as_the_disconnect_after_it_is_not_dropped() -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub
        .provision("goodbye", protocol::DeviceKind::Piano)
        .await?;
    let mut raw = RawDevice::connect(&creds, hub.mqtt_port).await?;
    let payload = telemetry(1, &[("key_presses", json!(5))]);
    let mut bytes = raw_mqtt::publish(0x30, b"/tenants/goodbye/telemetry", &payload);
    bytes.extend_from_slice(&[0xe0, 0x00]); // DISCONNECT
    raw.send(&bytes).await?;
    ensure!(raw.ending(WAIT).await == Ending::Closed);
    eventually(WAIT, "the telemetry sent before DISCONNECT", || async {
        let twin = hub.twin("goodbye").await.ok()?;
        (twin["fields"]["key_presses"]["value"] == json!(5.0)).then_some(())
    })
    .await
}
