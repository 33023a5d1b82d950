//! Each kind of bad input is rejected with its reason counted and reported,
//! and the next well-formed message is ingested.

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

#[tokio::test]
async fn every_bad_input_is_rejected_with_its_reason_and_the_next_message_lands(
) -> anyhow::Result<()> {
    let (hub, plain_port) = hub_with_tools_listener().await?;
    let creds = hub.provision("counter1", DeviceKind::Counter).await?;
    let mut device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Counter).await?;
    let error_topic = device.topic(Channel::Error);

    let oversize = telemetry(1, &[("blob", json!("x".repeat(20_000)))]);
    let cases: Vec<(&str, Channel, Vec<u8>)> = vec![
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
    for (seq, (reason, channel, payload)) in cases.into_iter().enumerate() {
        device.publish(channel, payload).await?;
        let report = device
            .message_on(&error_topic, Duration::from_secs(5))
            .await
            .map_err(|e| e.context(format!("case {reason}")))?;
        let report: protocol::ErrorReport = serde_json::from_slice(&report)?;
        assert!(report.reason.starts_with(reason), "{reason}: {report:?}");
        let counted = hub
            .metric(
                "yizhan_ingest_rejected_total",
                &format!("reason=\"{reason}\""),
            )
            .await?;
        assert_eq!(counted, 1.0, "{reason} counted once");
        let marker = seq as u64 + 1;
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
        .await?;
    }

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
