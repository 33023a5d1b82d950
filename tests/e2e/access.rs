//! Gate access decisions through real gate clients: each rule (unknown
//! resident, blocked, unknown room, closed, full, allowed), occupancy from
//! passages, rooms set through the API, and credentials kept out of
//! metrics and logs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::DeviceKind;
use serde_json::{json, Value};
use tests::*;

const WAIT: Duration = Duration::from_secs(5);
const ALICE: &str = "qr-alice-7f3a9c";
const BOB: &str = "qr-bob-51d2e0";

/// `HH:MM` in Asia/Shanghai (UTC+8, no daylight saving), `hours` from now.
fn shanghai_clock_in(hours: u64) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let local = (secs + (8 + hours) * 3600) % 86_400;
    format!("{:02}:{:02}", local / 3600, (local % 3600) / 60)
}

/// A gym open day and night for one person, and a yoga room that opens in
/// two hours (so it is closed now, whatever the time).
fn rooms() -> String {
    format!(
        "[[rooms]]\ncenter = \"center1\"\nid = \"gym\"\ncapacity = 1\nhours = \"24h\"\n\
         [[rooms]]\ncenter = \"center1\"\nid = \"yoga\"\ncapacity = 10\nopen = \"{}\"\nclose = \"{}\"\n",
        shanghai_clock_in(2),
        shanghai_clock_in(3)
    )
}

/// Sends an access request and returns the gate's answer (op, reason),
/// acknowledging it as a gate does.
async fn ask(
    gate: &mut TestDevice,
    seq: u64,
    credential: Value,
) -> anyhow::Result<(String, String)> {
    let id = format!("req{seq}");
    gate.event(
        &id,
        seq,
        "access_request",
        json!({"credential": credential}),
    )
    .await?;
    let answer = gate.next_command(WAIT).await?;
    assert_eq!(answer.args["request"], json!(id));
    gate.ack(&answer.id, true, None).await?;
    let reason = answer.args["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((answer.op, reason))
}

fn check(got: (String, String), op: &str, reason: &str) {
    assert_eq!((got.0.as_str(), got.1.as_str()), (op, reason));
}

#[tokio::test]
async fn gate_decisions_follow_each_rule_in_order() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions {
        extra_config: rooms(),
        ..HubOptions::default()
    })
    .await?;
    for (id, credential) in [("alice", ALICE), ("bob", BOB)] {
        let (status, body) = hub
            .post_json(
                "/api/v1/residents",
                &json!({"id": id, "credential": credential, "group": "adults"}),
            )
            .await?;
        assert_eq!(status, 201, "{body}");
        assert!(!body.to_string().contains(credential));
    }
    let (status, body) = hub
        .post_json("/api/v1/residents/bob/block", &Value::Null)
        .await?;
    assert_eq!((status, body["blocked"].clone()), (200, json!(true)));

    let gym = hub
        .provision_in("gymgate", DeviceKind::Gate, "center1", "gym")
        .await?;
    let yoga = hub
        .provision_in("yogagate", DeviceKind::Gate, "center1", "yoga")
        .await?;
    let lobby = hub
        .provision_in("lobbygate", DeviceKind::Gate, "center1", "lobby")
        .await?;
    let mut gym = TestDevice::online(&gym, hub.mqtt_port, DeviceKind::Gate).await?;
    let mut yoga = TestDevice::online(&yoga, hub.mqtt_port, DeviceKind::Gate).await?;
    let mut lobby = TestDevice::online(&lobby, hub.mqtt_port, DeviceKind::Gate).await?;

    check(
        ask(&mut gym, 1, json!("qr-stranger")).await?,
        "deny",
        "unknown_resident",
    );
    check(ask(&mut gym, 2, json!(BOB)).await?, "deny", "blocked");
    check(ask(&mut gym, 3, json!(42)).await?, "deny", "bad_request");
    check(ask(&mut yoga, 1, json!(ALICE)).await?, "deny", "closed");
    check(
        ask(&mut lobby, 1, json!(ALICE)).await?,
        "deny",
        "unknown_room",
    );
    check(ask(&mut gym, 4, json!(ALICE)).await?, "open", "allowed");

    // Someone goes in: the gym (capacity 1) is full.
    gym.event("p1", 5, "passage", json!({"direction":"in"}))
        .await?;
    eventually(WAIT, "occupancy 1", || async {
        let m = hub
            .metric("yizhan_room_occupancy", "room=\"gym\"")
            .await
            .ok()?;
        (m == 1.0).then_some(())
    })
    .await?;
    check(ask(&mut gym, 6, json!(ALICE)).await?, "deny", "full");
    // Two leave (one more than went in): occupancy stops at zero.
    gym.event("p2", 7, "passage", json!({"direction":"out"}))
        .await?;
    gym.event("p3", 8, "passage", json!({"direction":"out"}))
        .await?;
    eventually(WAIT, "occupancy 0", || async {
        let events = hub.get_json("/api/v1/devices/gymgate/events").await.ok()?;
        (events["count"] == json!(8)).then_some(())
    })
    .await?;
    assert_eq!(
        hub.metric("yizhan_room_occupancy", "room=\"gym\"").await?,
        0.0
    );
    check(ask(&mut gym, 9, json!(ALICE)).await?, "open", "allowed");

    // Unblocked, bob may enter too.
    let (status, _) = hub
        .post_json("/api/v1/residents/bob/unblock", &Value::Null)
        .await?;
    assert_eq!(status, 200);
    check(ask(&mut gym, 10, json!(BOB)).await?, "open", "allowed");

    // A decision is timed right after its answer is published: the device
    // may read the answer before the last observation lands.
    let metrics = eventually(Duration::from_secs(5), "nine decisions timed", || async {
        let metrics = hub.metrics().await.ok()?;
        let timed = sum_metric(&metrics, "yizhan_access_decision_seconds_count", "");
        (timed == 9.0).then_some(metrics)
    })
    .await?;
    for (labels, count) in [
        ("outcome=\"open\",reason=\"allowed\"", 3.0),
        ("reason=\"unknown_resident\"", 1.0),
        ("reason=\"blocked\"", 1.0),
        ("reason=\"closed\"", 1.0),
        ("reason=\"full\"", 1.0),
        ("reason=\"unknown_room\"", 1.0),
    ] {
        assert_eq!(
            sum_metric(&metrics, "yizhan_access_decisions_total", labels),
            count,
            "{labels}"
        );
    }
    assert_eq!(
        sum_metric(&metrics, "yizhan_access_decision_seconds_count", ""),
        9.0
    );
    for secret in [ALICE, BOB] {
        assert!(!metrics.contains(secret), "credential in /metrics");
        assert!(!hub.log().contains(secret), "credential in the hub's log");
    }
    Ok(())
}

/// PUTs a room entry; returns (status, JSON body).
async fn put_room(hub: &HubProcess, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let response = hub.put(path).json(&body).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// A hub without `[[rooms]]` in its file denies the gym gate (`unknown_room`)
/// until the room is set through the API; then it admits, counts the
/// room's seats, refuses bad entries naming the field, and keeps the room
/// across a restart.
#[tokio::test]
async fn a_room_set_through_the_api_opens_its_gate_and_is_kept() -> anyhow::Result<()> {
    let mut hub = HubProcess::start(HubOptions::default()).await?;
    let body = json!({"id": "alice", "credential": ALICE});
    assert_eq!(hub.post_json("/api/v1/residents", &body).await?.0, 201);
    let creds = hub
        .provision_in("gymgate", DeviceKind::Gate, "center1", "gym")
        .await?;
    let mut gym = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Gate).await?;
    check(
        ask(&mut gym, 1, json!(ALICE)).await?,
        "deny",
        "unknown_room",
    );

    let path = "/api/v1/centers/center1/rooms/gym";
    let gym_entry = json!({"center": "center1", "id": "gym", "capacity": 1, "hours": "24h"});
    let refused = [
        (
            json!({"center": "center1", "id": "gym", "capacity": 0, "hours": "24h"}),
            422,
            "capacity",
        ),
        (
            json!({"center": "center1", "id": "pool", "capacity": 1, "hours": "24h"}),
            422,
            "id",
        ),
        (
            json!({"center": "center1", "id": "gym", "capacity": 1}),
            422,
            "hours",
        ),
        (
            json!({"center": "center1", "id": "gym", "capacity": 1, "open": "7am", "close": "22:00"}),
            422,
            "open",
        ),
        (
            json!({"center": "center1", "id": "gym", "hours": "24h"}),
            422,
            "capacity",
        ),
        (
            json!({"center": "center1", "id": "gym", "capacity": -1, "hours": "24h"}),
            422,
            "capacity",
        ),
    ];
    for (body, status, field) in refused {
        let (got, answer) = put_room(&hub, path, body.clone()).await?;
        let reason = answer["detail"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{body}: {answer}");
        assert!(reason.contains(field), "{body}: {reason:?} names {field}");
    }
    let malformed = hub.put(path).header("content-type", "application/json");
    assert_eq!(malformed.body("{").send().await?.status(), 400);
    let anonymous = reqwest::Client::new().put(format!("{}{path}", hub.api));
    assert_eq!(anonymous.json(&gym_entry).send().await?.status(), 401);
    assert_eq!(
        hub.get("/api/v1/centers/center1/rooms/gym")
            .send()
            .await?
            .status(),
        404,
        "nothing refused was kept"
    );

    let (status, answer) = put_room(&hub, path, gym_entry.clone()).await?;
    assert_eq!((status, &answer), (200, &gym_entry));
    check(ask(&mut gym, 2, json!(ALICE)).await?, "open", "allowed");
    gym.event("p1", 3, "passage", json!({"direction": "in"}))
        .await?;
    eventually(WAIT, "the gym's one seat taken", || async {
        let ratio = hub
            .metric("yizhan_room_occupancy_ratio", "room=\"gym\"")
            .await
            .ok()?;
        (ratio == 1.0).then_some(())
    })
    .await?;
    check(ask(&mut gym, 4, json!(ALICE)).await?, "deny", "full");

    // A second seat, through the API: the gate opens again.
    let two_seats = json!({"center": "center1", "id": "gym", "capacity": 2, "hours": "24h"});
    assert_eq!(put_room(&hub, path, two_seats.clone()).await?.0, 200);
    check(ask(&mut gym, 5, json!(ALICE)).await?, "open", "allowed");
    let study = json!({"center": "center1", "id": "study", "capacity": 40, "open": "08:30", "close": "21:30"});
    let study_path = "/api/v1/centers/center1/rooms/study";
    assert_eq!(put_room(&hub, study_path, study.clone()).await?.0, 200);
    let listed = json!({"center": "center1", "rooms": [two_seats.clone(), study.clone()]});
    assert_eq!(hub.get_json("/api/v1/centers/center1/rooms").await?, listed);
    let other = hub.get_json("/api/v1/centers/center2/rooms").await?;
    assert_eq!(other["rooms"], json!([]));

    drop(gym);
    hub.restart().await?;
    assert_eq!(hub.get_json("/api/v1/centers/center1/rooms").await?, listed);
    let occupancy = hub.get_json("/api/v1/centers/center1/occupancy").await?;
    let rooms = occupancy["rooms"].as_array().cloned().unwrap_or_default();
    let gym_now = rooms.iter().find(|r| r["room"] == "gym").cloned();
    assert_eq!(
        gym_now.map(|r| r["seats"].clone()),
        Some(json!(2)),
        "{occupancy}"
    );
    Ok(())
}

#[tokio::test]
async fn residents_are_validated_and_unique() -> anyhow::Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let add = |body: Value| {
        let hub = &hub;
        async move { hub.post_json("/api/v1/residents", &body).await }
    };
    assert_eq!(add(json!({"id":"r1","credential":"c1"})).await?.0, 201);
    assert_eq!(add(json!({"id":"r1","credential":"c2"})).await?.0, 409);
    let (status, body) = add(json!({"id":"r2","credential":"c1"})).await?;
    assert_eq!(status, 409);
    assert!(body["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("credential"));
    assert_eq!(body["type"], "https://yizhan.dev/problems/conflict");
    assert_eq!(add(json!({"id":"r 3","credential":"c3"})).await?.0, 422);
    assert_eq!(add(json!({"id":"r4","credential":""})).await?.0, 422);
    assert_eq!(add(json!({"id":"r5"})).await?.0, 422);
    let resident = hub.get_json("/api/v1/residents/r1").await?;
    assert_eq!(resident["blocked"], json!(false));
    assert!(resident.get("credential_hash").is_none());
    let (status, _) = hub
        .post_json("/api/v1/residents/nobody/block", &Value::Null)
        .await?;
    assert_eq!(status, 404);
    Ok(())
}

/// Every file under `dir`, recursively, as bytes.
fn files_under(dir: &std::path::Path) -> anyhow::Result<Vec<(std::path::PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push((path.clone(), std::fs::read(&path)?));
        }
    }
    Ok(files)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Issue 9: a gate's `access_request` credential was stored in clear and
/// served back by `GET /api/v1/devices/{id}/events`. After allowed and
/// denied requests, no API answer, metric, log line or file of the store
/// holds a clear credential; the events hold its keyed hash.
#[tokio::test]
async fn issue_9_no_clear_credential_at_rest_or_in_any_answer() -> anyhow::Result<()> {
    const STRANGER: &str = "qr-stranger-9c41d7";
    const CARD: u64 = 31_415_926_535;
    let mut hub = HubProcess::start(HubOptions {
        extra_config: rooms(),
        ..HubOptions::default()
    })
    .await?;
    for (id, credential) in [("alice", ALICE), ("bob", BOB)] {
        let body = json!({"id": id, "credential": credential});
        assert_eq!(hub.post_json("/api/v1/residents", &body).await?.0, 201);
    }
    hub.post_json("/api/v1/residents/bob/block", &Value::Null)
        .await?;
    let creds = hub
        .provision_in("gymgate", DeviceKind::Gate, "center1", "gym")
        .await?;
    let mut gate = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Gate).await?;
    let requests = [
        (json!(ALICE), "open", "allowed"),
        (json!(BOB), "deny", "blocked"),
        (json!(STRANGER), "deny", "unknown_resident"),
        (json!(CARD), "deny", "bad_request"),
    ];
    for (seq, (credential, op, reason)) in (1..).zip(requests) {
        check(ask(&mut gate, seq, credential).await?, op, reason);
    }

    let events = hub.get_json("/api/v1/devices/gymgate/events").await?;
    let hashes: Vec<String> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event"]["credential_hash"].as_str().map(String::from))
        .collect();
    assert_eq!(events["count"], json!(4), "{events}");
    assert_eq!(hashes.len(), 3, "the string credentials, hashed: {events}");
    assert!(hashes.iter().all(|h| h.len() == 64), "{hashes:?}");
    let secrets = [ALICE, BOB, STRANGER, &CARD.to_string()];
    for path in [
        "/api/v1/devices/gymgate/events",
        "/api/v1/devices/gymgate",
        "/api/v1/devices/gymgate/commands",
        "/api/v1/devices",
        "/api/v1/residents/alice",
        "/api/v1/residents/bob",
        "/api/v1/bookings?resident=alice",
        "/api/v1/notifications?resident=alice",
        "/api/v1/centers/center1/occupancy",
        "/metrics",
    ] {
        let answer = hub.get(path).send().await?.text().await?;
        for secret in secrets {
            assert!(!answer.contains(secret), "{secret} in {path}: {answer}");
        }
    }

    // A clean stop flushes the store; then nothing on disk holds a clear
    // credential, while the hashes are there (the scan reads the events).
    let (status, _) = hub.terminate()?;
    assert!(status.success());
    let files = files_under(hub.data_dir())?;
    for (path, bytes) in &files {
        for secret in secrets {
            assert!(!contains(bytes, secret), "{secret} in {}", path.display());
        }
    }
    for hash in &hashes {
        assert!(
            files.iter().any(|(_, bytes)| contains(bytes, hash)),
            "the stored events hold {hash}"
        );
    }
    Ok(())
}
