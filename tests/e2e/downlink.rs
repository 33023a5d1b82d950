//! The downlink (issue 12, item 5) with real parts: mosquitto (persistence
//! on) as the upstream, the district service holding a key made by
//! `district keygen`, a hub trusting that key, and a device over mTLS that
//! takes commands and acknowledges them. A forged, an expired and a
//! replayed command — published raw on the upstream by a plain MQTT
//! client, as anyone with the broker's credentials could — are each
//! refused and counted (exact counts) and never reach the device; a
//! command sent through the district's API reaches the device, its ack
//! goes back up and the district shows it `acked`. After a `kill -9` and a
//! restart of the hub, the same replay is still refused.

use std::path::Path;
use std::time::Duration;

use protocol::upstream::{command_id, parse_signing_key, CommandMessage, Refusal, SigningKey};
use protocol::DeviceKind;
use serde_json::{json, Value};
use tests::*;

const USER: &str = "downlink-e2e";
const PASSWORD: &str = "downlink-password-0123";
const WAIT: Duration = Duration::from_secs(30);
const CENTER: &str = "center01";
const DEVICE: &str = "piano1";
const TOPIC: &str = "yz/v1/center01/piano1/cmd";

/// A key pair from `district keygen --out`: its file, id and public key.
struct KeyPair {
    id: String,
    public: String,
    signer: SigningKey,
}

fn keygen(path: &Path) -> anyhow::Result<KeyPair> {
    let output = std::process::Command::new(workspace_binary("district"))
        .arg("keygen")
        .arg("--out")
        .arg(path)
        .output()?;
    anyhow::ensure!(output.status.success(), "district keygen: {output:?}");
    let text = String::from_utf8(output.stdout)?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_string())
            .ok_or_else(|| anyhow::anyhow!("no {name:?} in {text:?}"))
    };
    let seed = std::fs::read_to_string(path)?;
    anyhow::ensure!(
        !text.contains(seed.trim()),
        "keygen printed the private key"
    );
    Ok(KeyPair {
        id: field("key id:")?,
        public: field("public key:")?,
        signer: parse_signing_key(&seed)?,
    })
}

/// The hub: an uplink to mosquitto, commands for `center01` signed by
/// `key`.
fn hub_options(port: u16, key: &KeyPair) -> HubOptions {
    let config = format!(
        "[uplink]\nenabled = true\nurls = [\"mqtt://127.0.0.1:{port}\"]\nclient_id = \"hub-dl\"\n\
         username = \"{USER}\"\nkeepalive_secs = 2\nconnect_timeout_secs = 2\n\
         backoff_initial_ms = 100\nbackoff_max_ms = 1000\n\
         [uplink.downlink]\ncenters = [\"{CENTER}\"]\nkeys = {{ \"{}\" = \"{}\" }}\n\
         max_lifetime_secs = 600\n",
        key.id, key.public
    );
    HubOptions {
        extra_config: config,
        env: vec![("YIZHAN_UPLINK_PASSWORD".into(), PASSWORD.into())],
        ..HubOptions::default()
    }
}

/// A command to the piano, signed by `signer`, living `[issued, expires)`.
fn command(signer: &SigningKey, issued_at: u64, expires_at: u64) -> CommandMessage {
    CommandMessage {
        id: command_id(issued_at, rand::random()),
        center: CENTER.into(),
        device: DEVICE.into(),
        op: "unlock".into(),
        args: "{}".into(),
        issued_at,
        expires_at,
        key: String::new(),
        sig: String::new(),
    }
    .sign(signer)
}

/// `yizhan_downlink_refused_total` per reason.
async fn refusals(hub: &HubProcess) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let text = hub.metrics().await?;
    Ok(Refusal::ALL
        .into_iter()
        .map(|reason| {
            let labels = format!("reason=\"{}\"", reason.as_str());
            let value = sum_metric(&text, "yizhan_downlink_refused_total", &labels);
            (reason.as_str(), value)
        })
        .collect())
}

/// Waits until the hub counted exactly `expect` refusals (each reason
/// absent from it at 0).
async fn wait_refusals(hub: &HubProcess, expect: &[(&str, f64)]) -> anyhow::Result<()> {
    let wanted = |reason: &str| {
        expect
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0.0, |(_, n)| *n)
    };
    let last = std::sync::Mutex::new(Vec::new());
    let waited = eventually(WAIT, "the hub's refusals", || async {
        let counted = refusals(hub).await.ok()?;
        let holds = counted.iter().all(|(r, n)| *n == wanted(r));
        *last.lock().unwrap_or_else(|p| p.into_inner()) = counted;
        holds.then_some(())
    })
    .await;
    let last = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
    waited.map_err(|e| {
        e.context(format!(
            "counted {last:?}, expected {expect:?}:\n{}",
            hub.log()
        ))
    })
}

/// Sends a command through the district's API; its id.
async fn send(district: &DistrictProcess, op: &str) -> anyhow::Result<String> {
    let path = format!("/api/v1/district/centers/{CENTER}/devices/{DEVICE}/commands");
    let body = json!({"op": op, "args": {"minutes": 30}, "expires_in_ms": 120_000});
    let (status, answer) = district.post_json(&path, &body).await?;
    anyhow::ensure!(status == 202, "POST {path}: {status} {answer}");
    anyhow::ensure!(answer["status"] == "sent", "{answer}");
    Ok(answer["id"].as_str().unwrap_or_default().to_string())
}

/// Waits until the district shows command `id` with `status`; its record.
async fn district_status(
    district: &DistrictProcess,
    id: &str,
    status: &str,
) -> anyhow::Result<Value> {
    let path = format!("/api/v1/district/commands/{id}");
    eventually(WAIT, &format!("{id} {status} at the district"), || async {
        let command = district.get_json(&path).await.ok()?;
        (command["status"] == status).then_some(command)
    })
    .await
}

/// The command the district published for `id`, as the upstream carried it.
async fn captured(upstream: &UpstreamSubscriber, id: &str) -> anyhow::Result<Vec<u8>> {
    let message = eventually(WAIT, "the district's publish", || async {
        upstream
            .messages()
            .into_iter()
            .find(|m| m.topic == TOPIC && m.id() == id)
    })
    .await?;
    let command: CommandMessage = serde_json::from_value(message.payload)?;
    Ok(serde_json::to_vec(&command)?)
}

/// Waits for the device's next CONNACK, past the errors of its lost
/// connection and of attempts while the hub restarts.
async fn reconnected(device: &mut TestDevice) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match device.connected(WAIT).await {
            Ok(()) => return Ok(()),
            Err(error) if std::time::Instant::now() > deadline => return Err(error),
            Err(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_replayed_commands_are_refused_and_a_signed_one_runs_and_reports_back(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("district.key");
    let key = keygen(&key_file)?;
    let persistence = format!(
        "persistence true\npersistence_location {}/\n",
        dir.path().display()
    );
    let mosquitto = Mosquitto::start_with(USER, PASSWORD, &persistence)?;
    let source = format!(
        "[source]\nkind = \"mqtt\"\nurls = [\"mqtt://127.0.0.1:{}\"]\nusername = \"{USER}\"\n\
         consumer = \"district-dl\"\nkeepalive_secs = 2\n\
         [downlink]\nkey_file = {:?}\nmax_lifetime_secs = 300\n",
        mosquitto.port,
        key_file.display().to_string()
    );
    let password = vec![("DISTRICT_SOURCE_PASSWORD".to_string(), PASSWORD.to_string())];
    let district = DistrictProcess::start(&source, password).await?;
    assert!(
        !district
            .log()
            .contains(std::fs::read_to_string(&key_file)?.trim()),
        "the district logged its private key"
    );
    let mut hub = HubProcess::start(hub_options(mosquitto.port, &key)).await?;
    let creds = hub
        .provision_in(DEVICE, DeviceKind::Piano, CENTER, "music")
        .await?;
    let mut piano = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano)
        .await
        .map_err(|e| e.context(hub.log()))?;
    let upstream = UpstreamSubscriber::connect(SubscriberOptions {
        port: mosquitto.port,
        client_id: "raw-e2e".into(),
        credentials: Some((USER.into(), PASSWORD.into())),
    })
    .await?;
    hub.wait_metric("yizhan_downlink_subscribed", "", |v| v == 1.0, WAIT)
        .await?;
    wait_refusals(&hub, &[]).await?;

    // Forged: signed by a key the hub does not trust, under the trusted id.
    let now = now_ms();
    let mut forged = command(&SigningKey::from_bytes(&[9; 32]), now, now + 60_000);
    forged.key = key.id.clone();
    upstream
        .publish(TOPIC, serde_json::to_vec(&forged)?)
        .await?;
    wait_refusals(&hub, &[("forged", 1.0)]).await?;

    // Expired: the district's own key, but a minute late.
    let expired = command(&key.signer, now - 120_000, now - 60_000);
    upstream
        .publish(TOPIC, serde_json::to_vec(&expired)?)
        .await?;
    wait_refusals(&hub, &[("forged", 1.0), ("expired", 1.0)]).await?;

    // Valid, through the district: the first command the device ever gets.
    let id = send(&district, "unlock").await?;
    let received = piano.next_command(WAIT).await?;
    assert_eq!(
        (received.id.as_str(), received.op.as_str()),
        (id.as_str(), "unlock"),
        "the device's first command is the district's: the refused ones never reached it"
    );
    assert_eq!(received.args, json!({"minutes": 30}));
    piano.ack(&id, true, None).await?;
    let acked = district_status(&district, &id, "acked").await?;
    assert_eq!(acked["outcome"]["hub"], "hub-dl");
    assert_eq!(acked["outcome"]["attempts"], 1);
    let record = hub
        .get_json(&format!("/api/v1/devices/{DEVICE}/commands/{id}"))
        .await?;
    assert_eq!(
        (record["origin"].as_str(), record["status"].as_str()),
        (Some("district"), Some("acked"))
    );

    // Replayed: the district's own publish, sent again.
    let replay = captured(&upstream, &id).await?;
    upstream.publish(TOPIC, replay.clone()).await?;
    let first_run = [("forged", 1.0), ("expired", 1.0), ("replayed", 1.0)];
    wait_refusals(&hub, &first_run).await?;
    assert_eq!(hub.metric("yizhan_downlink_accepted_total", "").await?, 1.0);

    // kill -9 and restart: the id is still known.
    hub.restart().await?;
    reconnected(&mut piano).await?;
    piano.hello(DeviceKind::Piano, 30).await?;
    hub.wait_metric("yizhan_downlink_subscribed", "", |v| v == 1.0, WAIT)
        .await?;
    upstream.publish(TOPIC, replay).await?;
    wait_refusals(&hub, &[("replayed", 1.0)]).await?;
    assert_eq!(hub.metric("yizhan_downlink_accepted_total", "").await?, 0.0);

    // The next new command the device gets is the district's second. The
    // first may come again (a copy: the kill may have taken its ack's
    // record with it, and the hub resends until acknowledged; a device
    // acts once per id and acknowledges every copy).
    let second = send(&district, "lock").await?;
    let mut copies = 0;
    loop {
        let received = piano.next_command(WAIT).await?;
        if received.id == second {
            break;
        }
        assert_eq!(received.id, id, "an unknown command reached the device");
        copies += 1;
        piano.ack(&id, true, None).await?;
    }
    piano.ack(&second, false, Some("jammed")).await?;
    let failed = district_status(&district, &second, "failed").await?;
    assert_eq!(failed["outcome"]["error"], "jammed");
    let listed = hub
        .get_json(&format!("/api/v1/devices/{DEVICE}/commands"))
        .await?;
    let ids: Vec<&str> = listed["commands"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [id.as_str(), second.as_str()],
        "the hub ran two commands"
    );

    // The district saw why: the replays noted on the command, which stays
    // acked; every refusal counted by reason.
    let replayed = eventually(WAIT, "both replays noted at the district", || async {
        let command = district
            .get_json(&format!("/api/v1/district/commands/{id}"))
            .await
            .ok()?;
        (command["refusals"].as_array()?.len() == 2).then_some(command)
    })
    .await?;
    assert_eq!(replayed["status"], "acked");
    assert_eq!(replayed["refusals"][1]["reason"], "replayed");
    for (reason, count) in [("forged", 1.0), ("expired", 1.0), ("replayed", 2.0)] {
        let labels = format!("reason=\"{reason}\"");
        let counted = district
            .metric("yizhan_district_commands_refused_total", &labels)
            .await;
        assert_eq!(counted, count, "the district's count of {reason}");
    }
    for (status, count) in [("acked", 1.0), ("failed", 1.0), ("expired", 0.0)] {
        let labels = format!("status=\"{status}\"");
        let counted = district
            .metric("yizhan_district_command_outcomes_total", &labels)
            .await;
        assert_eq!(counted, count, "outcomes {status}");
    }
    println!(
        "downlink: forged, expired and replayed (twice, across a kill -9) refused; \
         {id} acked ({copies} copies resent after the kill) and {second} failed reached \
         the district"
    );
    Ok(())
}

#[tokio::test]
async fn the_districts_command_api_checks_every_field_and_its_key_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("district.key");
    keygen(&key_file)?;
    assert!(keygen(&key_file).is_err(), "keygen overwrote a key");
    let mosquitto = Mosquitto::start(USER, PASSWORD)?;
    let source = format!(
        "[source]\nkind = \"mqtt\"\nurls = [\"mqtt://127.0.0.1:{}\"]\nusername = \"{USER}\"\n\
         [downlink]\nkey_file = {:?}\nmax_lifetime_secs = 300\n",
        mosquitto.port,
        key_file.display().to_string()
    );
    let password = vec![("DISTRICT_SOURCE_PASSWORD".to_string(), PASSWORD.to_string())];
    let district = DistrictProcess::start(&source, password.clone()).await?;
    let path = |center: &str, device: &str| {
        format!("/api/v1/district/centers/{center}/devices/{device}/commands")
    };
    let good = path(CENTER, DEVICE);
    for (path, body, status, reason) in [
        (
            path("a.b", DEVICE),
            json!({"op": "unlock", "expires_in_ms": 1000}),
            400,
            "center",
        ),
        (
            path(CENTER, "p-1"),
            json!({"op": "unlock", "expires_in_ms": 1000}),
            400,
            "device",
        ),
        (
            good.clone(),
            json!({"op": "Unlock", "expires_in_ms": 1000}),
            422,
            "`op`",
        ),
        (good.clone(), json!({"op": "unlock"}), 422, "exactly one"),
        (
            good.clone(),
            json!({"op": "unlock", "expires_in_ms": 300_001}),
            422,
            "300 s",
        ),
        (
            good.clone(),
            json!({"op": "unlock", "expires_at": 1}),
            422,
            "past",
        ),
        (
            good.clone(),
            json!({"op": "unlock", "expires_in_ms": 1000, "args": [1]}),
            422,
            "`args`",
        ),
        (
            good.clone(),
            json!({"op": "unlock", "expires_in_ms": 1000, "to": "x"}),
            400,
            "unknown field",
        ),
    ] {
        let (got, answer) = district.post_json(&path, &body).await?;
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert!(
            error.contains(reason),
            "{path} {body}: {error:?} should say {reason}"
        );
    }
    let unauthorised = reqwest::Client::new()
        .post(format!("{}{good}", district.api))
        .json(&json!({"op": "unlock", "expires_in_ms": 1000}))
        .send()
        .await?;
    assert_eq!(unauthorised.status(), 401);
    let missing = district
        .get(&format!("/api/v1/district/commands/{}", command_id(1, 1)))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);

    // A key others may read is refused at start, naming the field.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644))?;
    let config = dir.path().join("district.toml");
    std::fs::write(&config, &source)?;
    let output = std::process::Command::new(workspace_binary("district"))
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .env("DISTRICT_TOKEN", DISTRICT_TOKEN)
        .envs(password)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("downlink.key_file") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    Ok(())
}
