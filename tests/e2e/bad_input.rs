//! Each kind of bad input is rejected with its reason counted and reported,
//! and the next well-formed message is ingested.

use std::collections::HashMap;
use std::time::Duration;

use protocol::{Channel, DeviceKind};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;
use tests::*;

/// A hub with its plain tools listener on, user `tool` / `tool-password`.
async fn hub_with_tools_listener() -> anyhow::Result<(HubProcess, u16)> {
    let plain_port = free_port()?;
    let options = HubOptions::with_tools_listener(plain_port, "tool", "tool-password")?;
    Ok((HubProcess::start(options).await?, plain_port))
}

/// A bad message: the reason it is rejected with, its channel, its payload.
type Case = (&'static str, Channel, Vec<u8>);

/// Publishes each case from `counter1`; each is reported with its reason
/// and counted, and the next good telemetry lands in the twin.
async fn check_rejections(
    hub: &HubProcess,
    device: &mut TestDevice,
    cases: Vec<Case>,
) -> anyhow::Result<()> {
    let mut counted: HashMap<&str, f64> = HashMap::new();
    for (n, (reason, channel, payload)) in cases.into_iter().enumerate() {
        device.publish(channel, payload).await?;
        let report = device
            .next_error(Duration::from_secs(5))
            .await
            .map_err(|e| e.context(format!("case {n}: {reason}")))?;
        assert!(
            report.reason.starts_with(reason),
            "case {n}: {reason}: {report:?}"
        );
        let count = counted.entry(reason).or_default();
        *count += 1.0;
        let metric = hub
            .metric(
                "yizhan_ingest_rejected_total",
                &format!("reason=\"{reason}\""),
            )
            .await?;
        assert_eq!(metric, *count, "case {n}: {reason} counted");
        let marker = n as u64 + 1;
        device
            .publish(
                Channel::Telemetry,
                telemetry(marker, &[("in", json!(marker))]),
            )
            .await?;
        eventually(Duration::from_secs(5), "the next good message", || async {
            let twin = hub.twin("counter1").await.ok()?;
            (twin["fields"]["in"]["value"] == json!(marker as f64)).then_some(())
        })
        .await
        .map_err(|e| e.context(format!("after case {n}: {reason}")))?;
    }
    Ok(())
}

#[tokio::test]
async fn every_bad_input_is_rejected_with_its_reason_and_the_next_message_lands(
) -> anyhow::Result<()> {
    let (hub, plain_port) = hub_with_tools_listener().await?;
    let creds = hub.provision("counter1", DeviceKind::Counter).await?;
    let mut device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Counter).await?;

    let oversize = telemetry(1, &[("blob", json!("x".repeat(20_000)))]);
    let cases: Vec<Case> = vec![
        ("malformed_json", Channel::Telemetry, b"{not json".to_vec()),
        (
            "unknown_kind",
            Channel::Birth,
            br#"{"kind":"toaster","fw":"1","model":"m"}"#.to_vec(),
        ),
        ("oversize", Channel::Telemetry, oversize),
        (
            "wrong_type",
            Channel::Telemetry,
            br#"{"ts":1,"seq":1,"in":{"nested":1}}"#.to_vec(),
        ),
        (
            "invalid_payload",
            Channel::Event,
            br#"{"id":"e","seq":1,"type":"x"}"#.to_vec(),
        ),
    ];
    check_rejections(&hub, &mut device, cases).await?;

    // An unprovisioned device id, from a tool on the plain listener.
    let mut options = MqttOptions::new("tool1", "127.0.0.1", plain_port);
    options.set_credentials("tool", "tool-password");
    let (tool, mut eventloop) = AsyncClient::new(options, 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    tool.publish(
        "/tenants/ghost/telemetry",
        QoS::AtLeastOnce,
        false,
        telemetry(1, &[]),
    )
    .await?;
    eventually(
        Duration::from_secs(5),
        "unprovisioned rejection",
        || async {
            let n = hub
                .metric("yizhan_ingest_rejected_total", "reason=\"unprovisioned\"")
                .await
                .ok()?;
            (n == 1.0).then_some(())
        },
    )
    .await?;
    assert_eq!(hub.get("/api/v1/devices/ghost").send().await?.status(), 404);
    let twin = hub.twin("counter1").await?;
    assert_eq!(twin["rejections"], json!(5));
    Ok(())
}

/// Telemetry `{"ts":ts,"seq":seq, fields}`.
fn telemetry_at(ts: u64, seq: u64, fields: serde_json::Value) -> Vec<u8> {
    let mut payload = json!({"ts": ts, "seq": seq});
    if let (Some(map), serde_json::Value::Object(fields)) = (payload.as_object_mut(), fields) {
        map.extend(fields);
    }
    payload.to_string().into_bytes()
}

/// Issue 9: a counter's `ts` of 8210266850000000 panicked the ingest thread.
/// Every number out of its range is rejected with its reason and ingest
/// goes on with the next message.
#[tokio::test]
async fn issue_9_numbers_out_of_range_are_rejected_and_the_next_message_lands() -> anyhow::Result<()>
{
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("counter1", DeviceKind::Counter).await?;
    let mut device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Counter).await?;
    const DAY: u64 = 86_400_000;
    let now = now_ms();
    let event = |ts: u64| json!({"id": "e1", "ts": ts, "seq": 1, "type": "x"}).to_string();
    let cases: Vec<Case> = vec![
        (
            "invalid_ts",
            Channel::Telemetry,
            telemetry_at(8_210_266_850_000_000, 1, json!({"in": 1})),
        ),
        (
            "invalid_ts",
            Channel::Telemetry,
            telemetry_at(0, 1, json!({})),
        ),
        (
            "invalid_ts",
            Channel::Telemetry,
            telemetry_at(now - 8 * DAY, 1, json!({"in": 1})),
        ),
        (
            "invalid_ts",
            Channel::Telemetry,
            telemetry_at(now + DAY, 1, json!({"in": 1})),
        ),
        ("invalid_ts", Channel::Event, event(u64::MAX).into_bytes()),
        (
            "out_of_range",
            Channel::Telemetry,
            telemetry_at(now, 0, json!({})),
        ),
        (
            "out_of_range",
            Channel::Telemetry,
            telemetry_at(now, 1, json!({"in": 1_000_000})),
        ),
        (
            "invalid_payload",
            Channel::Telemetry,
            telemetry_at(now, 1, json!({"out": -1})),
        ),
    ];
    check_rejections(&hub, &mut device, cases).await?;
    let twin = hub.twin("counter1").await?;
    assert_eq!(twin["rejections"], json!(8));
    assert!(hub.get("/readyz").send().await?.status().is_success());
    Ok(())
}

#[tokio::test]
async fn the_plain_listener_refuses_device_and_hub_client_ids() -> anyhow::Result<()> {
    let (hub, plain_port) = hub_with_tools_listener().await?;
    hub.provision("piano5", DeviceKind::Piano).await?;
    for (client_id, password, allowed) in [
        ("piano5", "tool-password", false),
        ("piano5.piano5", "tool-password", false),
        ("__yizhan_hub", "tool-password", false),
        ("tool2", "wrong", false),
        ("tool2", "tool-password", true),
    ] {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", plain_port);
        options.set_credentials("tool", password);
        let (_client, mut eventloop) = AsyncClient::new(options, 10);
        let result = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await?;
        assert_eq!(
            result, allowed,
            "client id {client_id} with password {password}"
        );
    }
    Ok(())
}
