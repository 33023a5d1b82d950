//! A provisioned device's credentials as files, and `mosquitto_pub` (a
//! client nobody here wrote) using them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;
use protocol::api::Provisioned;

/// Files of a provisioned device's credentials, as mosquitto clients want.
pub struct CredentialFiles {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn write_credentials(creds: &Provisioned) -> Result<CredentialFiles> {
    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca, &creds.ca_certificate)?;
    std::fs::write(&cert, &creds.certificate)?;
    std::fs::write(&key, &creds.private_key)?;
    Ok(CredentialFiles { dir, ca, cert, key })
}

/// Runs `mosquitto_pub` (a client nobody here wrote) with a device's files.
pub fn mosquitto_pub(
    creds: &Provisioned,
    files: &CredentialFiles,
    port: u16,
    topic: &str,
    message: &str,
) -> Result<std::process::Output> {
    Ok(Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port.to_string(), "-q", "1"])
        .args([
            "-i",
            &creds.id,
            "-u",
            &creds.mqtt_username,
            "-P",
            &creds.mqtt_password,
        ])
        .arg("--cafile")
        .arg(&files.ca)
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .args(["-t", topic, "-m", message])
        .output()?)
}
