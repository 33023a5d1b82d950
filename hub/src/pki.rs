//! The hub's own certificate authority: created once in the data dir (key
//! mode 0600), it signs the broker's server certificate at every start and a
//! client certificate per provisioned device with Organization = device id —
//! the Organization is what rumqttd's tenant check confines the device to.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Paths of the files rumqttd's TLS listener reads.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A freshly issued device certificate.
pub struct IssuedCert {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub certificate_sha256: String,
    pub not_after_ms: u64,
}

pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

impl Pki {
    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Pki, PkiError> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !cert_path.exists() || !key_path.exists() {
            create_ca(&cert_path, &key_path)?;
        }
        let ca_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            issuer,
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Signs a server certificate for `names` and writes it with the CA for
    /// rumqttd. `names` must include the DNS names devices dial: rustls
    /// refuses an IP address sent as SNI.
    pub fn write_server_files(&self, names: &[String]) -> Result<ServerTlsFiles, PkiError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = name("yizhan-hub", None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, 825);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = ServerTlsFiles {
            ca: self.dir.join(CA_CERT),
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
        };
        write_file(&files.cert, cert.pem().as_bytes(), 0o644)?;
        write_file(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
        Ok(files)
    }

    /// Issues a client certificate with CN = O = `device_id`.
    pub fn issue_device(&self, device_id: &str, days: u32) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(device_id, Some(device_id));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let not_after = set_validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            certificate_sha256: hex::encode(Sha256::digest(cert.der())),
            not_after_ms: unix_ms(not_after),
        })
    }
}

fn create_ca(cert_path: &Path, key_path: &Path) -> Result<(), PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name("Yizhan hub CA", Some("Yizhan"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, 3650);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// Valid from an hour ago (clock skew) for `days`; random serial. Returns
/// the expiry.
fn set_validity(params: &mut CertificateParams, days: u32) -> SystemTime {
    let now = SystemTime::now();
    let not_after = now + Duration::from_secs(u64::from(days) * 86_400);
    params.not_before = (now - Duration::from_secs(3_600)).into();
    params.not_after = not_after.into();
    params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    not_after
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ca_persists_with_private_key_mode_0600() {
        let dir = std::env::temp_dir().join(format!("yizhan-pki-{}", rand::random::<u32>()));
        fs::create_dir_all(&dir).unwrap();
        let first = Pki::load_or_create(&dir).unwrap();
        let again = Pki::load_or_create(&dir).unwrap();
        assert_eq!(first.ca_pem(), again.ca_pem());
        let mode = fs::metadata(dir.join(CA_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let issued = again.issue_device("piano01", 1).unwrap();
        assert!(issued
            .certificate_pem
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(issued.certificate_sha256.len(), 64);
        fs::remove_dir_all(&dir).ok();
    }
}
