//! Devices are confined to their own topics; no certificate, no entry;
//! revocation cuts a device off at once and for good.

use std::time::Duration;

use protocol::{Channel, DeviceKind};
use rumqttc::QoS;
use serde_json::json;
use tests::*;

#[tokio::test]
async fn a_device_cannot_publish_into_or_read_another_devices_topics() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let a = hub.provision("deva", DeviceKind::Counter).await?;
    let b = hub.provision("devb", DeviceKind::Counter).await?;
    let before = hub.twin("devb").await?;

    let mut publisher = TestDevice::connect(&a, hub.mqtt_port, DeviceOptions::default());
    publisher.connected(Duration::from_secs(5)).await?;
    publisher
        .client
        .publish(
            "/tenants/devb/telemetry",
            QoS::AtLeastOnce,
            false,
            telemetry(1, &[("in", json!(99))]),
        )
        .await?;
    let closed = publisher.disconnected(Duration::from_secs(5)).await?;
    assert!(!closed.is_empty());

    let mut spy = TestDevice::connect(&a, hub.mqtt_port, DeviceOptions::default());
    spy.connected(Duration::from_secs(5)).await?;
    spy.client
        .subscribe("/tenants/devb/cmd", QoS::AtLeastOnce)
        .await?;
    spy.disconnected(Duration::from_secs(5)).await?;

    // B itself still works, and its twin never saw A's message.
    let mut b_dev = TestDevice::connect(&b, hub.mqtt_port, DeviceOptions::default());
    b_dev.connected(Duration::from_secs(5)).await?;
    b_dev
        .publish(Channel::Telemetry, telemetry(1, &[("in", json!(1))]))
        .await?;
    let after = eventually(Duration::from_secs(5), "B's own telemetry", || async {
        let twin = hub.twin("devb").await.ok()?;
        (twin["messages"] == json!(1)).then_some(twin)
    })
    .await?;
    assert_eq!(
        after["fields"]["in"]["value"],
        json!(1.0),
        "B's twin holds only B's data"
    );
    assert_eq!(before["fields"], json!({}));
    Ok(())
}

#[tokio::test]
async fn a_client_without_certificate_cannot_connect() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("nocert", DeviceKind::Gate).await?;
    let options = DeviceOptions {
        with_certificate: false,
        ..DeviceOptions::default()
    };
    let mut device = TestDevice::connect(&creds, hub.mqtt_port, options);
    let error = device.connected(Duration::from_secs(5)).await.unwrap_err();
    assert!(error.to_string().contains("connection failed"), "{error:#}");
    Ok(())
}

#[tokio::test]
async fn a_revoked_device_is_cut_off_and_cannot_reconnect() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("robot1", DeviceKind::TherapyRobot).await?;
    let mut device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::TherapyRobot).await?;
    device
        .publish(Channel::Telemetry, telemetry(1, &[("temp_c", json!(40.0))]))
        .await?;
    eventually(Duration::from_secs(5), "robot online", || async {
        let twin = hub.twin("robot1").await.ok()?;
        (twin["online"] == json!(true) && twin["messages"].as_u64() >= Some(3)).then_some(())
    })
    .await?;

    let robots = "kind=\"therapy_robot\"";
    assert_eq!(hub.metric("yizhan_devices", robots).await?, 1.0);
    let earliest = "certificate=\"device_earliest\"";
    let expiry = hub
        .metric("yizhan_certificate_expiry_timestamp_seconds", earliest)
        .await?;
    assert_eq!(expiry, (creds.not_after / 1000) as f64);

    let response = hub.delete("/api/v1/devices/robot1").send().await?;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["session_closed"], json!(true));
    let again = hub.delete("/api/v1/devices/robot1").send().await?;
    assert_eq!(again.status(), 200, "revoking twice is harmless");
    let metrics = hub.metrics().await?;
    assert_eq!(sum_metric(&metrics, "yizhan_devices", robots), 0.0);
    assert_eq!(
        sum_metric(&metrics, "yizhan_device_revocations_total", ""),
        1.0
    );
    assert!(!metrics.contains(earliest), "no live device certificate");
    device.disconnected(Duration::from_secs(2)).await?;

    // Its reconnects (the event loop retries every 200 ms) are refused.
    let mut again = TestDevice::connect(&creds, hub.mqtt_port, DeviceOptions::default());
    assert!(again.connected(Duration::from_secs(3)).await.is_err());
    let twin = hub.twin("robot1").await?;
    assert_eq!(twin["revoked"], json!(true));
    assert_eq!(twin["online"], json!(false), "{twin}\n{}", hub.log());
    assert_eq!(twin["fields"]["temp_c"]["value"], json!(40.0));
    let refused = hub
        .metric("yizhan_mqtt_connect_attempts_total", "outcome=\"refused\"")
        .await?;
    assert!(refused >= 1.0);
    Ok(())
}
