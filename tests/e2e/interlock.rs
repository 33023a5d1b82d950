//! The therapy-robot safety interlock with a real robot client: an injected
//! overheat is stopped and alarmed (twin, metrics, event); a restart is
//! refused until staff acknowledge; a silent session trips the watchdog.

use std::time::Duration;

use protocol::{Channel, DeviceKind};
use serde_json::{json, Value};
use tests::*;

const WAIT: Duration = Duration::from_secs(5);

async fn event_types(hub: &HubProcess, device: &str) -> anyhow::Result<Vec<String>> {
    let events = hub
        .get_json(&format!("/api/v1/devices/{device}/events"))
        .await?;
    Ok(events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event"]["type"].as_str().map(String::from))
        .collect())
}

async fn alarm_on_twin(hub: &HubProcess, device: &str) -> anyhow::Result<Value> {
    eventually(WAIT, "alarm on the twin", || async {
        let twin = hub.twin(device).await.ok()?;
        (!twin["alarm"].is_null()).then_some(twin)
    })
    .await
}

#[tokio::test]
async fn an_overheating_robot_is_stopped_and_may_restart_only_after_staff_acknowledge(
) -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let creds = hub.provision("robot1", DeviceKind::TherapyRobot).await?;
    let mut robot = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::TherapyRobot).await?;
    robot.event("s1", 1, "session_start", json!({})).await?;
    robot
        .publish(
            Channel::Telemetry,
            telemetry(1, &[("temp_c", json!(44.9)), ("heating", json!(true))]),
        )
        .await?;
    robot
        .publish(
            Channel::Telemetry,
            telemetry(2, &[("temp_c", json!(47.5)), ("heating", json!(true))]),
        )
        .await?;

    let stop = robot.next_command(WAIT).await?;
    assert_eq!(stop.op, "stop");
    assert_eq!(stop.args["reason"], json!("over_temperature"));
    assert_eq!(stop.args["temp_c"], json!(47.5));
    assert_eq!(stop.args["limit_c"], json!(45.0));
    robot.ack(&stop.id, true, None).await?;

    // The stop leaves before the twin is written: poll for the alarm.
    let twin = alarm_on_twin(&hub, "robot1").await?;
    assert_eq!(twin["alarm"]["reason"], json!("over_temperature"));
    assert_eq!(twin["alarm"]["command"], json!(stop.id));
    let metrics = hub.metrics().await?;
    assert_eq!(
        sum_metric(
            &metrics,
            "yizhan_interlock_trips_total",
            "reason=\"over_temperature\""
        ),
        1.0
    );
    assert_eq!(
        sum_metric(&metrics, "yizhan_interlock_reaction_seconds_count", ""),
        1.0
    );
    assert!(event_types(&hub, "robot1")
        .await?
        .contains(&"interlock_trip".to_string()));
    let robot_labels = "center=\"center1\",kind=\"therapy_robot\"";
    assert_eq!(
        sum_metric(&metrics, "yizhan_alarms_active", robot_labels),
        1.0
    );
    assert_eq!(
        sum_metric(
            &metrics,
            "yizhan_therapy_temperature_max_celsius",
            "room=\"room1\""
        ),
        47.5,
        "the online robot's last reading"
    );

    // A restart before the acknowledgement is answered with stop again.
    robot.event("s2", 2, "session_start", json!({})).await?;
    let again = robot.next_command(WAIT).await?;
    assert_eq!(again.op, "stop");
    assert_eq!(again.args["reason"], json!("alarm_unacknowledged"));
    robot.ack(&again.id, true, None).await?;
    assert_eq!(
        hub.metric("yizhan_interlock_restarts_refused_total", "")
            .await?,
        1.0
    );

    let (status, body) = hub
        .post_json("/api/v1/devices/robot1/alarm/ack", &Value::Null)
        .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["alarm"]["reason"], json!("over_temperature"));
    eventually(WAIT, "alarm cleared on the twin", || async {
        let twin = hub.twin("robot1").await.ok()?;
        twin["alarm"].is_null().then_some(())
    })
    .await?;
    let (status, _) = hub
        .post_json("/api/v1/devices/robot1/alarm/ack", &Value::Null)
        .await?;
    assert_eq!(status, 409, "nothing left to acknowledge");
    assert_eq!(
        hub.metric("yizhan_alarms_active", robot_labels).await?,
        0.0,
        "acknowledged"
    );
    assert!(event_types(&hub, "robot1")
        .await?
        .contains(&"alarm_ack".to_string()));

    // Now a session may start: no stop follows. The next command the robot
    // gets is one staff send, proving nothing came before it.
    robot.event("s3", 3, "session_start", json!({})).await?;
    robot
        .publish(
            Channel::Telemetry,
            telemetry(3, &[("temp_c", json!(30.0)), ("heating", json!(true))]),
        )
        .await?;
    let marker = hub
        .post_json(
            "/api/v1/devices/robot1/commands",
            &json!({"op":"ping","expires_in_ms":10_000}),
        )
        .await?;
    let next = robot.next_command(WAIT).await?;
    assert_eq!(next.op, "ping", "{marker:?}");
    drop(robot);
    eventually(WAIT, "an offline robot shows no temperature", || async {
        let metrics = hub.metrics().await.ok()?;
        (!metrics.contains("yizhan_therapy_temperature_max_celsius{")).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_running_session_without_telemetry_trips_the_watchdog() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions {
        extra_config: "[interlock]\nwatchdog_ms = 500\n".into(),
        ..HubOptions::default()
    })
    .await?;
    let creds = hub.provision("robot2", DeviceKind::TherapyRobot).await?;
    let mut robot = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::TherapyRobot).await?;
    robot.event("s1", 1, "session_start", json!({})).await?;
    let stop = robot.next_command(WAIT).await?;
    assert_eq!(stop.op, "stop");
    assert_eq!(stop.args["reason"], json!("watchdog"));
    let twin = alarm_on_twin(&hub, "robot2").await?;
    assert_eq!(twin["alarm"]["reason"], json!("watchdog"));
    assert_eq!(
        hub.metric("yizhan_interlock_trips_total", "reason=\"watchdog\"")
            .await?,
        1.0
    );
    Ok(())
}
