//! Keys and certificates (issue 13, item 7): a device's certificate renewed
//! with a short grace: the old and the new one connect during it; after it
//! the old one is refused (CONNACK 5, counted) and the session still on it
//! has been ended, while the new one connects. A certificate the hub's CA
//! signed for a device but never issued to it is refused the same way. The
//! data dir is 0700 (tightened at start), the credential key is a 0600
//! file whose key is nowhere in the database, and a hub holding residents'
//! credentials refuses to start without that key or with another.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hmac::{Hmac, Mac};
use protocol::api::{Provisioned, Renewed};
use protocol::{Channel, DeviceKind};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use tests::raw_mqtt::RawDevice;
use tests::*;

/// CONNACK's return code for "not authorised".
const NOT_AUTHORIZED: u8 = 5;

/// The grace the test asks for: long enough for four connections on a
/// loaded machine, short enough to wait for.
const GRACE_SECS: u64 = 5;

/// `mosquitto_pub` of one telemetry message with `creds`' files.
fn mosquitto_telemetry(creds: &Provisioned, port: u16, seq: u64) -> Result<std::process::Output> {
    let files = write_credentials(creds)?;
    let payload = String::from_utf8(telemetry(seq, &[("in", json!(seq))]))?;
    let topic = protocol::topic::for_device(&creds.id, Channel::Telemetry);
    mosquitto_pub(creds, &files, port, &topic, &payload)
}

/// `mosquitto_telemetry`, which must succeed (`what` names the step).
fn mosquitto_gets_in(creds: &Provisioned, port: u16, seq: u64, what: &str) -> Result<()> {
    let output = mosquitto_telemetry(creds, port, seq)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "mosquitto_pub, {what}: {stderr}");
    Ok(())
}

/// Waits until the twin of `id` shows telemetry `seq`.
async fn twin_has_seq(hub: &HubProcess, id: &str, seq: u64) -> Result<()> {
    eventually(Duration::from_secs(5), "telemetry in the twin", || async {
        let twin = hub.twin(id).await.ok()?;
        (twin["last_telemetry_seq"] == json!(seq)).then_some(())
    })
    .await
}

/// Fails unless the grace (ending at `deadline` ms) is still running: a
/// step meant to happen within it.
fn within_grace(deadline: u64, step: &str) -> Result<()> {
    let now = now_ms();
    ensure!(
        now < deadline,
        "{step} ended {} ms after the grace: the machine was too slow for a {GRACE_SECS} s grace",
        now - deadline
    );
    Ok(())
}

#[tokio::test]
async fn a_renewed_certificate_connects_and_the_old_one_is_refused_after_its_grace() -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let port = hub.mqtt_port;
    let old = hub.provision("gate7", DeviceKind::Gate).await?;
    let provisioned_at = now_ms();
    // A second device whose certificate expires in a later second, so the
    // expiry gauge can tell the renewed device's old certificate from it.
    while now_ms() / 1000 == provisioned_at / 1000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = hub.provision("gate8", DeviceKind::Gate).await?;
    let earliest = "certificate=\"device_earliest\"";
    let expiry = "yizhan_certificate_expiry_timestamp_seconds";
    assert_eq!(
        hub.metric(expiry, earliest).await?,
        (old.not_after / 1000) as f64
    );
    let first = TestDevice::online(&old, port, DeviceKind::Gate).await?;

    let asked_at = now_ms();
    let (status, body) = hub
        .post_json(
            "/api/v1/devices/gate7/certificate",
            &json!({ "grace_secs": GRACE_SECS }),
        )
        .await?;
    ensure!(status == 200, "renewal: {status} {body}");
    let renewed: Renewed = serde_json::from_value(body)?;
    let deadline = renewed.previous_accepted_until;
    let grace_ms = GRACE_SECS * 1000;
    assert!((asked_at + grace_ms..=now_ms() + grace_ms).contains(&deadline));
    assert_ne!(renewed.certificate, old.certificate);
    assert_eq!(renewed.ca_certificate, old.ca_certificate);
    assert!(renewed.not_after > old.not_after);
    let new = Provisioned {
        certificate: renewed.certificate.clone(),
        private_key: renewed.private_key.clone(),
        ..old.clone()
    };
    let metrics = hub.metrics().await?;
    assert_eq!(
        sum_metric(&metrics, "yizhan_certificate_renewals_total", ""),
        1.0
    );
    assert_eq!(
        sum_metric(&metrics, expiry, earliest),
        (other.not_after / 1000) as f64,
        "the replaced certificate's expiry no longer counts"
    );

    // Within the grace: the session open on the old certificate goes on...
    first
        .publish(Channel::Telemetry, telemetry(1, &[("in", json!(1))]))
        .await?;
    twin_has_seq(&hub, "gate7", 1).await?;
    drop(first);
    // ... the new certificate connects (mosquitto_pub) ...
    mosquitto_gets_in(&new, port, 2, "new certificate")?;
    twin_has_seq(&hub, "gate7", 2).await?;
    // ... and so does the old one, anew (rumqttc); this session outlives it.
    let mut second = TestDevice::connect(&old, port, DeviceOptions::default());
    second.connected(Duration::from_secs(5)).await?;
    within_grace(deadline, "connecting with both certificates")?;

    // At the grace's end the session on the old certificate is ended.
    let left = Duration::from_millis(deadline.saturating_sub(now_ms()));
    let ended = second.disconnected(left + Duration::from_secs(10)).await?;
    assert!(
        now_ms() >= deadline,
        "ended before the grace was over: {ended}"
    );
    drop(second);
    hub.wait_metric(
        "yizhan_edge_disconnects_total",
        "reason=\"certificate_superseded\"",
        |n| n == 1.0,
        Duration::from_secs(5),
    )
    .await?;

    // After it: the old certificate is refused with CONNACK 5, counted...
    assert_eq!(RawDevice::connack_code(&old, port).await?, NOT_AUTHORIZED);
    let output = mosquitto_telemetry(&old, port, 3)?;
    ensure!(
        !output.status.success(),
        "mosquitto_pub got in with the old certificate"
    );
    let metrics = hub.metrics().await?;
    let refused = "reason=\"certificate_superseded\"";
    let failures = sum_metric(&metrics, "yizhan_edge_handshake_failures_total", refused);
    assert!(failures >= 2.0, "refusals counted: {failures}");
    // ... while the new one connects.
    assert_eq!(RawDevice::connack_code(&new, port).await?, 0);
    mosquitto_gets_in(&new, port, 4, "new certificate after the grace")?;
    twin_has_seq(&hub, "gate7", 4).await?;

    // The renewal is in the audit log.
    eventually(Duration::from_secs(5), "the renewal audited", || async {
        let page = hub.get_json("/api/v1/audit?limit=1000").await.ok()?;
        let entries = page["entries"].as_array()?.clone();
        entries
            .into_iter()
            .find(|e| {
                e["route"] == json!("/api/v1/devices/{id}/certificate")
                    && e["object"] == json!("gate7")
                    && e["status"] == json!(200)
            })
            .map(drop)
    })
    .await?;
    refusals(&hub).await
}

/// Renewals that must be refused, each naming why.
async fn refusals(hub: &HubProcess) -> Result<()> {
    let check = |path: &'static str, body: Value, status: u16, needle: &'static str| async move {
        let (got, answer) = hub.post_json(path, &body).await?;
        let reason = answer["detail"].as_str().unwrap_or_default().to_string();
        ensure!(
            got == status && reason.contains(needle),
            "{path} {body}: {got} {answer}"
        );
        Ok::<(), anyhow::Error>(())
    };
    check(
        "/api/v1/devices/nosuch/certificate",
        json!({}),
        404,
        "no device",
    )
    .await?;
    let longer = json!({ "grace_secs": 604_801 });
    check(
        "/api/v1/devices/gate8/certificate",
        longer,
        422,
        "`grace_secs`",
    )
    .await?;
    let unknown = json!({ "days": 3 });
    check("/api/v1/devices/gate8/certificate", unknown, 422, "days").await?;
    let response = hub.delete("/api/v1/devices/gate8").send().await?;
    ensure!(response.status() == 200, "revoke: {}", response.status());
    check(
        "/api/v1/devices/gate8/certificate",
        json!({}),
        409,
        "revoked",
    )
    .await?;
    // Without a body: the default grace.
    let response = hub.post("/api/v1/devices/gate7/certificate").send().await?;
    ensure!(response.status() == 200, "no body: {}", response.status());
    let renewed: Renewed = response.json().await?;
    let week_ms = 7 * 86_400_000;
    assert!(renewed.previous_accepted_until.abs_diff(now_ms() + week_ms) < 60_000);
    Ok(())
}

/// A client certificate for `device` signed with the hub's CA key from
/// `data_dir` (as a copy of the CA key would allow), and its key.
fn forge_certificate(data_dir: &Path, device: &str) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(data_dir.join("ca.key"))?)?;
    // The CA's name as `hub::pki` writes it: an issuer must match it.
    let mut ca = CertificateParams::default();
    ca.distinguished_name = named("Yizhan hub CA", "Yizhan");
    let issuer = Issuer::new(ca, ca_key);
    let mut params = CertificateParams::default();
    params.distinguished_name = named(device, device);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn named(common_name: &str, organization: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, organization);
    name
}

#[tokio::test]
async fn a_certificate_from_the_hubs_ca_that_was_never_issued_is_refused() -> Result<()> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    let port = hub.mqtt_port;
    let issued = hub.provision("piano3", DeviceKind::Piano).await?;
    let (certificate, private_key) = forge_certificate(hub.data_dir(), "piano3")?;
    let clone = Provisioned {
        certificate,
        private_key,
        ..issued.clone()
    };
    // The handshake passes (the CA signed it); the CONNECT is refused.
    assert_eq!(RawDevice::connack_code(&clone, port).await?, NOT_AUTHORIZED);
    let output = mosquitto_telemetry(&clone, port, 1)?;
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    ensure!(
        !output.status.success(),
        "mosquitto_pub got in with a clone"
    );
    assert!(stderr.contains("not authori"), "{stderr}");
    let metrics = hub.metrics().await?;
    let reason = "reason=\"certificate_not_issued\"";
    let failures = sum_metric(&metrics, "yizhan_edge_handshake_failures_total", reason);
    assert_eq!(failures, 2.0, "both refusals counted as a clone's");
    let tls = sum_metric(
        &metrics,
        "yizhan_edge_handshake_failures_total",
        "reason=\"tls_error\"",
    );
    assert_eq!(tls, 0.0, "the clone got through TLS");
    let refused = "outcome=\"refused\"";
    assert!(sum_metric(&metrics, "yizhan_mqtt_connect_attempts_total", refused) >= 2.0);
    // The issued certificate still gets in.
    assert_eq!(RawDevice::connack_code(&issued, port).await?, 0);
    mosquitto_gets_in(&issued, port, 1, "the issued certificate")?;
    Ok(())
}

/// Mode bits of `path`.
fn mode_of(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// Every file under `dir`, read whole, concatenated.
fn bytes_under(dir: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            match path.is_dir() {
                true => todo.push(path),
                false => bytes.extend(std::fs::read(&path)?),
            }
        }
    }
    Ok(bytes)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// HMAC-SHA256 (hex) of `credential` under `key`, as the hub stores it.
fn credential_hash(key: &[u8], credential: &str) -> Result<String> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key)?;
    mac.update(credential.as_bytes());
    let digest = mac.finalize().into_bytes();
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

fn decode_hex(text: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    ensure!(text.len().is_multiple_of(2), "odd hex: {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("hex digit"))
        .collect()
}

#[tokio::test]
async fn the_data_dir_is_private_and_the_credential_key_is_a_file_outside_the_database(
) -> Result<()> {
    let mut hub = HubProcess::start(HubOptions::default()).await?;
    let dir = hub.data_dir().to_path_buf();
    let credential = "qr-e2e-7f3a9c";
    let resident = json!({ "id": "keyholder", "credential": credential });
    let (status, body) = hub.post_json("/api/v1/residents", &resident).await?;
    ensure!(status == 201, "resident: {status} {body}");

    assert_eq!(mode_of(&dir)?, 0o700, "the data dir");
    let key_file = dir.join("credential.key");
    assert_eq!(mode_of(&key_file)?, 0o600, "the key file");
    let key_text = std::fs::read_to_string(&key_file)?;
    let key = decode_hex(&key_text)?;
    assert_eq!(key.len(), 32, "{key_text:?}");

    // Stopped cleanly (sled flushed): the key is in no file of the
    // database, the credential's hash under it is.
    let (status, _) = hub.terminate()?;
    ensure!(status.success(), "the hub's exit: {status}");
    let db = bytes_under(&dir.join("db"))?;
    assert!(!contains(&db, &key), "the key's bytes are in the database");
    assert!(
        !contains(&db, key_text.trim().as_bytes()),
        "the key's hex is in the database"
    );
    assert!(
        !contains(&db, credential.as_bytes()),
        "the credential in clear"
    );
    let hash = credential_hash(&key, credential)?;
    assert!(
        contains(&db, hash.as_bytes()),
        "the credential's hash under the file's key"
    );

    // A data dir opened to others is tightened at start, and says so.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    hub.restart().await?;
    assert_eq!(mode_of(&dir)?, 0o700);
    assert!(hub.log().contains("tightened to 0700"), "{}", hub.log());

    // Without its key, or with another, the hub refuses to start (exit 2,
    // naming the setting) and makes no new key.
    let kept = dir.join("credential.key.kept");
    std::fs::rename(&key_file, &kept)?;
    let (status, log) = hub.restart_refused(Duration::from_secs(20)).await?;
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("`credential_key_file`") && log.contains("does not exist"),
        "{log}"
    );
    assert!(!key_file.exists(), "a new key was made");
    std::fs::write(&key_file, format!("{}\n", "5a".repeat(32)))?;
    let (status, log) = hub.restart_refused(Duration::from_secs(20)).await?;
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("not the key this store's credentials were hashed with"),
        "{log}"
    );

    // With it back, the stored credential is still recognised.
    std::fs::rename(&kept, &key_file)?;
    hub.restart().await?;
    let again = json!({ "id": "someoneelse", "credential": credential });
    let (status, body) = hub.post_json("/api/v1/residents", &again).await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("credential"),
        "{body}"
    );
    Ok(())
}
