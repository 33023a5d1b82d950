//! `[uplink]` parsed: the upstream brokers as typed addresses, the TLS
//! files read and checked as PEM, the numbers as durations and bounds. A
//! bad value names its field (`uplink.urls[1]`, `uplink.ca_file`, …), so a
//! hub never starts forwarding with a setting it would fail on later.

use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::downlink::{self, DownlinkSettings};
use super::file::UplinkConfig;
use super::FieldError;

/// One upstream broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `mqtts://`: TLS with `UplinkSettings::tls`.
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        match self.host.contains(':') {
            true => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            false => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

impl Upstream {
    /// `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 in brackets);
    /// the port defaults to 1883 and 8883.
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("expected mqtt://host[:port] or mqtts://host[:port]")?;
        let (tls, default_port) = match scheme {
            "mqtt" => (false, 1883),
            "mqtts" => (true, 8883),
            _ => return Err(format!("scheme {scheme:?}: expected mqtt or mqtts")),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err("no path, query or credentials: host[:port] only".into());
        }
        let (host, port) = split_host_port(rest)?;
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {port:?}: expected 1-65535"))?,
        };
        Ok(Upstream {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [ in the host")?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err("expected :port after ]".into()),
            },
        };
    }
    match text.split_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((text, None)),
    }
}

/// PEM files for `mqtts://`, read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkTls {
    /// Certificates the upstream's certificate chains to.
    pub ca_pem: Vec<u8>,
    /// A client certificate (chain) and its private key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// The uplink, parsed (`[uplink]` with `enabled = true`).
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkSettings {
    pub urls: Vec<Upstream>,
    /// `None`: the hub's own id (`Store::hub_id`).
    pub client_id: Option<String>,
    pub credentials: Credentials,
    pub tls: Option<UplinkTls>,
    pub max_backlog_bytes: u64,
    pub max_in_flight: u16,
    /// Publishes per second at most; `None`: no limit.
    pub max_rate: Option<u32>,
    pub raw_telemetry: bool,
    pub telemetry_window: Duration,
    pub keepalive: Duration,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Signed commands taken on the same session; `None`: no key trusted.
    pub downlink: Option<DownlinkSettings>,
}

/// The numbers of `[uplink]` and their ranges (both ends included).
fn ranges(config: &UplinkConfig) -> [(&'static str, u64, u64, u64); 7] {
    [
        (
            "max_backlog_bytes",
            config.max_backlog_bytes,
            64 * 1024,
            u64::MAX,
        ),
        ("max_in_flight", u64::from(config.max_in_flight), 1, 65_535),
        (
            "telemetry_window_secs",
            config.telemetry_window_secs,
            1,
            3_600,
        ),
        ("keepalive_secs", config.keepalive_secs, 1, 65_535),
        (
            "connect_timeout_secs",
            config.connect_timeout_secs,
            1,
            3_600,
        ),
        (
            "backoff_initial_ms",
            config.backoff_initial_ms,
            1,
            3_600_000,
        ),
        (
            "backoff_max_ms",
            config.backoff_max_ms,
            config.backoff_initial_ms,
            86_400_000,
        ),
    ]
}

/// The first number of `[uplink]` out of its range, named.
fn check_numbers(config: &UplinkConfig) -> Result<(), FieldError> {
    for (field, value, min, max) in ranges(config) {
        if !(min..=max).contains(&value) {
            let reason = match max {
                u64::MAX => format!("must be at least {min}"),
                _ => format!("must be between {min} and {max}"),
            };
            return Err((format!("uplink.{field}"), reason));
        }
    }
    Ok(())
}

/// The URLs, each named by its place when refused.
fn parse_urls(config: &UplinkConfig) -> Result<Vec<Upstream>, FieldError> {
    let urls = config.urls.iter().enumerate().map(|(index, url)| {
        Upstream::parse(url).map_err(|reason| (format!("uplink.urls[{index}]"), reason))
    });
    let urls = urls.collect::<Result<Vec<_>, _>>()?;
    if config.enabled && urls.is_empty() {
        let reason = "at least one URL is required when enabled".to_string();
        return Err(("uplink.urls".into(), reason));
    }
    Ok(urls)
}

/// Username and password.
type Credentials = Option<(String, String)>;

/// The client id (`None`: the hub's own) and the credentials.
fn identity(config: &UplinkConfig) -> Result<(Option<String>, Credentials), FieldError> {
    let fail = |field: &str, reason: &str| Err((format!("uplink.{field}"), reason.to_string()));
    let client_id = match config.client_id.as_str() {
        "" => None,
        id if is_client_id(id) => Some(id.to_string()),
        _ => return fail("client_id", "1-64 ASCII letters, digits, '-', '_' or '.'"),
    };
    if !config.password.is_empty() && config.username.is_empty() {
        return fail("username", "required with a password");
    }
    let credentials =
        (!config.username.is_empty()).then(|| (config.username.clone(), config.password.clone()));
    Ok((client_id, credentials))
}

/// Checks every value of `[uplink]` (also when it is off, so a mistake is
/// found before the day it is turned on); `None` when it is off.
pub fn parse(config: &UplinkConfig) -> Result<Option<UplinkSettings>, FieldError> {
    let urls = parse_urls(config)?;
    let (client_id, credentials) = identity(config)?;
    check_numbers(config)?;
    let tls = tls_files(config, urls.iter().any(|u| u.tls))?;
    let downlink = downlink::parse(&config.downlink)?;
    if !config.enabled {
        return Ok(None);
    }
    Ok(Some(UplinkSettings {
        urls,
        client_id,
        credentials,
        tls,
        max_backlog_bytes: config.max_backlog_bytes,
        // invariant: `check_numbers` held it to 1..=65535.
        max_in_flight: u16::try_from(config.max_in_flight).unwrap_or(u16::MAX),
        max_rate: Some(config.max_messages_per_second).filter(|rate| *rate > 0),
        raw_telemetry: config.raw_telemetry,
        telemetry_window: Duration::from_secs(config.telemetry_window_secs),
        keepalive: Duration::from_secs(config.keepalive_secs),
        connect_timeout: Duration::from_secs(config.connect_timeout_secs),
        backoff_initial: Duration::from_millis(config.backoff_initial_ms),
        backoff_max: Duration::from_millis(config.backoff_max_ms),
        downlink,
    }))
}

/// An MQTT client id that is also safe inside a message id and a topic.
fn is_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The CA and client files, read and checked; `None` without a CA file.
fn tls_files(config: &UplinkConfig, needed: bool) -> Result<Option<UplinkTls>, FieldError> {
    let field = |name: &str| format!("uplink.{name}");
    if config.ca_file.is_empty() {
        if needed {
            return Err((field("ca_file"), "required for mqtts:// URLs".into()));
        }
        if !config.cert_file.is_empty() || !config.key_file.is_empty() {
            return Err((
                field("ca_file"),
                "required with a client certificate".into(),
            ));
        }
        return Ok(None);
    }
    let ca_pem = read_pem(&config.ca_file, "ca_file", has_certificate)?;
    let client = match (config.cert_file.as_str(), config.key_file.as_str()) {
        ("", "") => None,
        ("", _) => return Err((field("cert_file"), "required with key_file".into())),
        (_, "") => return Err((field("key_file"), "required with cert_file".into())),
        (cert, key) => Some((
            read_pem(cert, "cert_file", has_certificate)?,
            read_pem(key, "key_file", |pem| {
                PrivateKeyDer::from_pem_slice(pem).is_ok()
            })?,
        )),
    };
    Ok(Some(UplinkTls { ca_pem, client }))
}

fn has_certificate(pem: &[u8]) -> bool {
    let mut certificates = CertificateDer::pem_slice_iter(pem);
    matches!(certificates.next(), Some(Ok(_)))
}

/// The bytes of file `path` (field `uplink.{name}`), which `check` must
/// accept as the PEM it should hold.
fn read_pem(path: &str, name: &str, check: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, FieldError> {
    let field = format!("uplink.{name}");
    let bytes =
        std::fs::read(path).map_err(|e| (field.clone(), format!("cannot read {path}: {e}")))?;
    if !check(&bytes) {
        let what = if name == "key_file" {
            "a private key"
        } else {
            "a certificate"
        };
        return Err((field, format!("{path} holds no PEM {what}")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_url(url: &str, expect: Result<(bool, &str, u16), &str>) {
        let got = Upstream::parse(url);
        match expect {
            Ok((tls, host, port)) => {
                let want = Upstream {
                    tls,
                    host: host.into(),
                    port,
                };
                assert_eq!(got, Ok(want), "{url}");
            }
            Err(needle) => {
                let error = got.expect_err(url);
                assert!(error.contains(needle), "{url}: {error}");
            }
        }
    }

    #[test]
    fn upstream_urls_parse_into_scheme_host_and_port() {
        check_url("mqtt://district", Ok((false, "district", 1883)));
        check_url("mqtts://district", Ok((true, "district", 8883)));
        check_url("mqtt://10.0.0.5:11883", Ok((false, "10.0.0.5", 11883)));
        check_url("mqtts://[::1]:8884", Ok((true, "::1", 8884)));
        check_url("mqtt://[::1]", Ok((false, "::1", 1883)));
        check_url("http://district", Err("scheme"));
        check_url("district:1883", Err("expected mqtt://"));
        check_url("mqtt://:1883", Err("host is missing"));
        check_url("mqtt://h:0", Err("port"));
        check_url("mqtt://h:99999", Err("port"));
        check_url("mqtt://h:1883/x", Err("no path"));
        check_url("mqtt://user:pw@h", Err("no path"));
        check_url("mqtt://[::1", Err("unclosed"));
        assert_eq!(
            Upstream::parse("mqtts://[::1]:8884").unwrap().to_string(),
            "mqtts://[::1]:8884"
        );
    }

    fn enabled(change: impl FnOnce(&mut UplinkConfig)) -> UplinkConfig {
        let mut config = UplinkConfig {
            enabled: true,
            urls: vec!["mqtt://district:1883".into()],
            ..UplinkConfig::default()
        };
        change(&mut config);
        config
    }

    fn check_refused(config: UplinkConfig, field: &str) {
        let (named, reason) = parse(&config).expect_err(field);
        assert_eq!(named, field, "{reason}");
    }

    #[test]
    fn bad_uplink_values_name_their_field() {
        check_refused(enabled(|c| c.urls.clear()), "uplink.urls");
        check_refused(enabled(|c| c.urls.push("ftp://x".into())), "uplink.urls[1]");
        check_refused(
            enabled(|c| c.urls.push("mqtts://x".into())),
            "uplink.ca_file",
        );
        check_refused(enabled(|c| c.client_id = "a/b".into()), "uplink.client_id");
        check_refused(enabled(|c| c.password = "pw".into()), "uplink.username");
        check_refused(
            enabled(|c| c.max_backlog_bytes = 1000),
            "uplink.max_backlog_bytes",
        );
        check_refused(enabled(|c| c.max_in_flight = 0), "uplink.max_in_flight");
        check_refused(
            enabled(|c| c.max_in_flight = 70_000),
            "uplink.max_in_flight",
        );
        check_refused(
            enabled(|c| c.telemetry_window_secs = 0),
            "uplink.telemetry_window_secs",
        );
        check_refused(enabled(|c| c.keepalive_secs = 0), "uplink.keepalive_secs");
        check_refused(enabled(|c| c.backoff_max_ms = 1), "uplink.backoff_max_ms");
        check_refused(
            enabled(|c| c.ca_file = "/nonexistent/ca.pem".into()),
            "uplink.ca_file",
        );
        check_refused(enabled(|c| c.cert_file = "/x.pem".into()), "uplink.ca_file");
        // Checked while off, too.
        let off = UplinkConfig {
            urls: vec!["tcp://x".into()],
            ..UplinkConfig::default()
        };
        check_refused(off, "uplink.urls[0]");
        assert_eq!(parse(&UplinkConfig::default()), Ok(None));
    }

    #[test]
    fn tls_files_must_hold_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let pki = crate::pki::Pki::load_or_create(dir.path()).unwrap();
        let issued = pki.issue_device("d1", 30).unwrap();
        let ca = write("ca.pem", pki.ca_pem());
        let cert = write("cert.pem", &issued.certificate_pem);
        let key = write("key.pem", &issued.private_key_pem);
        let junk = write("junk.pem", "not PEM");
        let tls = |ca: &str, cert: &str, key: &str| {
            enabled(|c| {
                c.urls = vec!["mqtts://district".into()];
                c.ca_file = ca.into();
                c.cert_file = cert.into();
                c.key_file = key.into();
            })
        };
        let parsed = parse(&tls(&ca, &cert, &key)).unwrap().unwrap();
        let files = parsed.tls.unwrap();
        assert!(files.client.is_some());
        check_refused(tls(&junk, "", ""), "uplink.ca_file");
        check_refused(tls(&ca, &junk, &key), "uplink.cert_file");
        check_refused(tls(&ca, &cert, &cert), "uplink.key_file");
        check_refused(tls(&ca, &cert, ""), "uplink.key_file");
        check_refused(tls(&ca, "", &key), "uplink.cert_file");
    }
}
