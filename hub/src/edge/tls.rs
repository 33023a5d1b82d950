//! TLS on the device listener: the server configuration (client
//! certificate required, signed by the hub's CA) and the device a
//! finished handshake identifies.
//!
//! A device's identity is its certificate's Organization (the device id,
//! ASCII letters and digits only) and the certificate's SHA-256, which the
//! CONNECT checks against the device's record (`auth::device_allowed`):
//! the certificate issued last, or the one a renewal replaced within its
//! grace; a re-provisioned device's old certificate no longer gets in.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::{ServerConnection, WebPkiClientVerifier};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::pki::ServerIdentity;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The server side of the device listener's TLS.
pub fn server_config(identity: &ServerIdentity) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(identity.ca.clone()))?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(identity.cert.clone())], key)?;
    // Stateless tickets: a reconnect storm resumes sessions instead of
    // running a full handshake each, and the hub keeps no per-session state.
    config.ticketer = aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// The device a finished handshake presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDevice {
    pub id: String,
    pub certificate_sha256: String,
}

/// Why a finished handshake does not identify a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityError {
    NoCertificate,
    Unparsable,
    /// No Organization, or one that is not a device id.
    NotADevice,
}

impl IdentityError {
    pub fn label(self) -> &'static str {
        match self {
            IdentityError::NoCertificate => "no_certificate",
            IdentityError::Unparsable => "bad_certificate",
            IdentityError::NotADevice => "not_a_device",
        }
    }
}

/// The device id and certificate hash of the client of `connection`.
pub fn peer_device(connection: &ServerConnection) -> Result<PeerDevice, IdentityError> {
    let der = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(IdentityError::NoCertificate)?;
    device_of_certificate(der)
}

fn device_of_certificate(der: &[u8]) -> Result<PeerDevice, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::Unparsable)?;
    let organization = cert
        .subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .ok_or(IdentityError::NotADevice)?;
    if !protocol::is_valid_device_id(organization) {
        return Err(IdentityError::NotADevice);
    }
    Ok(PeerDevice {
        id: organization.to_owned(),
        certificate_sha256: hex::encode(Sha256::digest(der)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Pki;
    use tokio_rustls::rustls::pki_types::pem::PemObject;

    #[test]
    fn a_device_certificate_names_its_device_and_the_server_config_builds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::load_or_create(dir.path()).expect("CA");
        let issued = pki.issue_device("piano01", 1).expect("issued");
        let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).expect("PEM");
        let device = device_of_certificate(&der).expect("device");
        assert_eq!(device.id, "piano01");
        assert_eq!(device.certificate_sha256, issued.certificate_sha256);
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        server_config(&pki.server_identity(&names).expect("identity")).expect("config");
        let server_der = pki.server_identity(&names).expect("identity").cert;
        assert_eq!(
            device_of_certificate(&server_der),
            Err(IdentityError::NotADevice)
        );
    }
}
