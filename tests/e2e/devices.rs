//! A provisioned device connects over mTLS and its data reaches its twin,
//! with rumqttc and with mosquitto_pub.

use std::time::Duration;

use protocol::{Channel, DeviceKind};
use serde_json::json;
use tests::*;

#[tokio::test]
async fn provisioned_device_telemetry_reaches_its_twin() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("piano01", DeviceKind::Piano).await?;
    let device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano).await?;
    device
        .publish(
            Channel::Telemetry,
            telemetry(
                1,
                &[("key_presses", json!(42)), ("session_active", json!(true))],
            ),
        )
        .await?;
    let twin = eventually(Duration::from_secs(5), "telemetry in the twin", || async {
        let twin = hub.twin("piano01").await.ok()?;
        (twin["fields"]["key_presses"]["value"] == json!(42.0)).then_some(twin)
    })
    .await?;
    assert_eq!(twin["online"], json!(true));
    assert_eq!(twin["model"], json!("e2e"));
    assert_eq!(twin["fields"]["session_active"]["value"], json!(true));
    assert_eq!(twin["center"], json!("center1"));
    assert_eq!(twin["last_telemetry_seq"], json!(1));
    let received = hub
        .metric("yizhan_messages_received_total", "channel=\"telemetry\"")
        .await?;
    assert_eq!(received, 1.0);
    Ok(())
}

#[tokio::test]
async fn mosquitto_pub_with_issued_files_reaches_the_twin() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("counter7", DeviceKind::Counter).await?;
    let files = write_credentials(&creds)?;
    let payload = String::from_utf8(telemetry(1, &[("in", json!(3)), ("out", json!(1))]))?;
    let output = mosquitto_pub(
        &creds,
        &files,
        hub.mqtt_port,
        "/tenants/counter7/telemetry",
        &payload,
    )?;
    assert!(
        output.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eventually(
        Duration::from_secs(5),
        "mosquitto telemetry in the twin",
        || async {
            let twin = hub.twin("counter7").await.ok()?;
            (twin["fields"]["in"]["value"] == json!(3.0)).then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn events_are_acknowledged_and_stored_once() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("gate1", DeviceKind::Gate).await?;
    let mut device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Gate).await?;
    let event = json!({"id":"e1","ts":now_ms(),"seq":1,"type":"passage","direction":"in"});
    for _ in 0..3 {
        device
            .publish(Channel::Event, serde_json::to_vec(&event)?)
            .await?;
        let ack = device
            .message_on("/tenants/gate1/event/ack", Duration::from_secs(5))
            .await?;
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&ack)?,
            json!({"id":"e1"})
        );
    }
    let events: serde_json::Value = hub
        .get("/api/v1/devices/gate1/events")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(events["count"], json!(1));
    assert_eq!(events["events"][0]["event"]["direction"], json!("in"));
    Ok(())
}
