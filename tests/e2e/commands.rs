//! The command service through the API and real MQTT devices: delivery on
//! reconnect (also across a hub restart), expiry, device errors, resends.

use std::time::Duration;

use protocol::DeviceKind;
use serde_json::{json, Value};
use tests::*;

const WAIT: Duration = Duration::from_secs(5);

async fn issue(hub: &HubProcess, device: &str, body: Value) -> anyhow::Result<Value> {
    let (status, record) = hub
        .post_json(&format!("/api/v1/devices/{device}/commands"), &body)
        .await?;
    anyhow::ensure!(status == 202, "issue: {status} {record}");
    Ok(record)
}

/// Polls the command's record until its status is `status`.
async fn command_status(
    hub: &HubProcess,
    device: &str,
    id: &str,
    status: &str,
) -> anyhow::Result<Value> {
    let path = format!("/api/v1/devices/{device}/commands/{id}");
    eventually(WAIT, &format!("command {status}"), || async {
        let record = hub.get_json(&path).await.ok()?;
        (record["status"] == json!(status)).then_some(record)
    })
    .await
}

#[tokio::test]
async fn a_command_to_an_offline_device_survives_a_restart_and_is_delivered_on_reconnect(
) -> anyhow::Result<()> {
    let mut hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("piano1", DeviceKind::Piano).await?;
    let record = issue(
        &hub,
        "piano1",
        json!({"op":"unlock","args":{"resident":"r1"},"expires_in_ms":60_000}),
    )
    .await?;
    assert_eq!(record["status"], json!("pending"));
    assert_eq!(record["attempts"], json!(0));
    let id = record["id"].as_str().unwrap_or_default().to_string();

    hub.restart().await?;
    command_status(&hub, "piano1", &id, "pending").await?;

    let mut device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano).await?;
    let command = device.next_command(WAIT).await?;
    assert_eq!(command.id, id);
    assert_eq!(command.op, "unlock");
    assert_eq!(command.args, json!({"resident":"r1"}));
    device.ack(&id, true, None).await?;
    let done = command_status(&hub, "piano1", &id, "acked").await?;
    assert_eq!(done["attempts"], json!(1));
    assert!(done["completed_at"].is_u64());

    let metrics = hub.metrics().await?;
    let acked = sum_metric(&metrics, "yizhan_commands_total", "outcome=\"acked\"");
    assert_eq!(acked, 1.0);
    let trips = sum_metric(
        &metrics,
        "yizhan_command_round_trip_seconds_count",
        "op=\"unlock\"",
    );
    assert_eq!(trips, 1.0);
    let list = hub.get_json("/api/v1/devices/piano1/commands").await?;
    assert_eq!(list["count"], json!(1));
    Ok(())
}

#[tokio::test]
async fn an_expired_command_is_recorded_expired_and_never_delivered() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("piano2", DeviceKind::Piano).await?;
    let record = issue(&hub, "piano2", json!({"op":"unlock","expires_in_ms":300})).await?;
    let id = record["id"].as_str().unwrap_or_default().to_string();
    let expired = command_status(&hub, "piano2", &id, "expired").await?;
    assert_eq!(expired["attempts"], json!(0));
    assert_eq!(expired["first_sent_at"], Value::Null);

    let mut device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano).await?;
    // A later command proves the device is subscribed and being served; the
    // expired one must not have come before it.
    let later = issue(&hub, "piano2", json!({"op":"lock","expires_in_ms":60_000})).await?;
    let first = device.next_command(WAIT).await?;
    assert_eq!(first.id, later["id"].as_str().unwrap_or_default());
    let metrics = hub.metrics().await?;
    assert_eq!(
        sum_metric(&metrics, "yizhan_commands_total", "outcome=\"expired\""),
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn a_device_error_is_recorded_failed_and_unanswered_commands_are_resent() -> anyhow::Result<()>
{
    let hub = HubProcess::start(HubOptions {
        extra_config: "[commands]\nretry_initial_ms = 200\nretry_max_ms = 400\n".into(),
        ..HubOptions::default()
    })
    .await?;
    let creds = hub.provision("gate9", DeviceKind::Gate).await?;
    let mut device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Gate).await?;
    eventually(WAIT, "gate online", || async {
        let twin = hub.twin("gate9").await.ok()?;
        (twin["online"] == json!(true)).then_some(())
    })
    .await?;

    let record = issue(
        &hub,
        "gate9",
        json!({"op":"self_destruct","expires_in_ms":60_000}),
    )
    .await?;
    let id = record["id"].as_str().unwrap_or_default().to_string();
    let first = device.next_command(WAIT).await?;
    let again = device.next_command(WAIT).await?;
    assert_eq!(
        (first.id.as_str(), again.id.as_str()),
        (id.as_str(), id.as_str())
    );
    device.ack(&id, false, Some("unknown op")).await?;
    let failed = command_status(&hub, "gate9", &id, "failed").await?;
    assert_eq!(failed["error"], json!("unknown op"));
    assert!(failed["attempts"].as_u64().unwrap_or(0) >= 2, "{failed}");
    let metrics = hub.metrics().await?;
    assert_eq!(
        sum_metric(
            &metrics,
            "yizhan_commands_total",
            "op=\"other\",outcome=\"failed\""
        ),
        1.0,
        "an unknown op is labelled `other`"
    );
    Ok(())
}

#[tokio::test]
async fn bad_command_requests_are_refused_with_a_reason() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    hub.provision("robot1", DeviceKind::TherapyRobot).await?;
    let path = "/api/v1/devices/robot1/commands";
    for (body, status, needle) in [
        (json!({"op":"stop"}), 422, "exactly one"),
        (
            json!({"op":"stop","expires_in_ms":1000,"expires_at":9}),
            422,
            "exactly one",
        ),
        (json!({"op":"stop","expires_at":1}), 422, "past"),
        (json!({"op":"Stop!","expires_in_ms":1000}), 422, "op"),
        (
            json!({"op":"stop","args":[1],"expires_in_ms":1000}),
            422,
            "args",
        ),
        (json!({"op":"stop","expires_in_ms":1000,"x":1}), 422, "x"),
    ] {
        let (got, error) = hub.post_json(path, &body).await?;
        assert_eq!(got, status, "{body}: {error}");
        let reason = error["detail"].as_str().unwrap_or_default();
        assert!(reason.contains(needle), "{body}: {reason}");
    }
    let (status, _) = hub
        .post_json(
            "/api/v1/devices/nobody/commands",
            &json!({"op":"stop","expires_in_ms":1000}),
        )
        .await?;
    assert_eq!(status, 404);
    let response = hub
        .get("/api/v1/devices/robot1/commands/nope")
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    let anonymous = reqwest::Client::new()
        .post(format!("{}{path}", hub.api))
        .json(&json!({"op":"stop","expires_in_ms":1000}))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);
    Ok(())
}
