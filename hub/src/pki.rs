//! The hub's own certificate authority: created once in the data dir (key
//! mode 0600), it signs the device edge's server certificate at every start
//! (every configured DNS name and IP address) and a client certificate per
//! provisioned device with Organization = device id — the identity the edge
//! reads from the handshake and confines the device to.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};

use crate::data_dir;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("CA certificate: {0}")]
    Pem(String),
}

/// The edge's TLS identity, in DER, and the CA devices' certificates are
/// checked against.
pub struct ServerIdentity {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    /// When the server certificate expires (unix ms).
    pub not_after_ms: u64,
}

/// A freshly issued device certificate.
pub struct IssuedCert {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub certificate_sha256: String,
    pub not_after_ms: u64,
}

pub struct Pki {
    ca_pem: String,
    /// The CA certificate in DER.
    issuer_der: Vec<u8>,
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
        let issuer_der = pem_body(&ca_pem)?;
        Ok(Pki {
            ca_pem,
            issuer_der,
            issuer,
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// When the CA certificate expires (unix ms).
    pub fn ca_not_after_ms(&self) -> Result<u64, PkiError> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.issuer_der)
            .map_err(|error| PkiError::Pem(error.to_string()))?;
        let seconds = cert.validity().not_after.timestamp();
        Ok(u64::try_from(seconds).unwrap_or(0).saturating_mul(1000))
    }

    /// Signs a server certificate for `names`: each is a DNS name or, when
    /// it parses as one, an IP address (devices may dial the hub by address).
    pub fn server_identity(&self, names: &[String]) -> Result<ServerIdentity, PkiError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = name("yizhan-hub", None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let not_after = set_validity(&mut params, 825);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerIdentity {
            ca: self.issuer_der.clone(),
            cert: cert.der().to_vec(),
            key: key.serialize_der(),
            not_after_ms: unix_ms(not_after),
        })
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
    write_file(
        key_path,
        key.serialize_pem().as_bytes(),
        data_dir::SECRET_MODE,
    )?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// The DER inside a PEM certificate.
fn pem_body(pem: &str) -> Result<Vec<u8>, PkiError> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|error| PkiError::Pem(error.to_string()))
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
    data_dir::write_file(path, bytes, mode).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
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
        let ten_years_ms = 3650 * 86_400_000;
        let expires_in = again
            .ca_not_after_ms()
            .unwrap()
            .abs_diff(unix_ms(SystemTime::now()));
        assert!(expires_in.abs_diff(ten_years_ms) < 60_000, "{expires_in}");
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
