//! A throwaway PKI as PEM files: a CA, a server certificate for
//! `localhost` and 127.0.0.1, and a client certificate — for a broker's
//! TLS listener and the hub's `mqtts://` uplink.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

/// The files written.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Writes a fresh CA and the two certificates it signs under `dir`.
    pub fn write(dir: &Path) -> Result<TlsFiles> {
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = named("e2e district CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let files = TlsFiles {
            ca: dir.join("district-ca.pem"),
            server_cert: dir.join("broker.pem"),
            server_key: dir.join("broker.key"),
            client_cert: dir.join("hub.pem"),
            client_key: dir.join("hub.key"),
        };
        std::fs::write(&files.ca, ca.pem())?;
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let server = (names, ExtendedKeyUsagePurpose::ServerAuth, "broker");
        let client = (Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, "hub");
        for ((names, usage, name), (cert, key)) in [server, client].into_iter().zip([
            (&files.server_cert, &files.server_key),
            (&files.client_cert, &files.client_key),
        ]) {
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name = named(name);
            params.extended_key_usages = vec![usage];
            let key_pair = KeyPair::generate()?;
            let signed = params.signed_by(&key_pair, &ca)?;
            std::fs::write(cert, signed.pem())?;
            std::fs::write(key, key_pair.serialize_pem())?;
        }
        Ok(files)
    }
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}
