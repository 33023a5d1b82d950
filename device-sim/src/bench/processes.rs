//! The brokers a peer benchmark (and the end-to-end tests) start: mosquitto
//! from the Debian package and the hub's release binary, each on free
//! loopback ports with its own temp dir, killed by PID when dropped; and
//! the resident memory of a process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Start(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProcessError {
    let what = what.into();
    move |source| ProcessError::Io { what, source }
}

/// A free loopback port (released just before the broker binds it).
pub fn free_port() -> Result<u16, ProcessError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("picking a free port"))
}

/// mosquitto on a free loopback port, one user with a password, no limit
/// on connections or on queued messages.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start(username: &str, password: &str) -> Result<Mosquitto, ProcessError> {
        Mosquitto::start_with(username, password, "")
    }

    /// Like [`Mosquitto::start`], with `extra` lines appended to its config.
    pub fn start_with(
        username: &str,
        password: &str,
        extra: &str,
    ) -> Result<Mosquitto, ProcessError> {
        let dir = tempfile::tempdir().map_err(io("temp dir"))?;
        let port = free_port()?;
        let passwd = dir.path().join("passwd");
        let status = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwd)
            .args([username, password])
            .stdout(Stdio::null())
            .status()
            .map_err(io("mosquitto_passwd (apt-get install mosquitto)"))?;
        if !status.success() {
            return Err(ProcessError::Start(format!("mosquitto_passwd: {status}")));
        }
        let conf = dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous false\n\
             password_file {}\n\
             max_connections -1\n\
             # no limit on what waits for the subscriber: QoS 1 pub→sub\n\
             # counts every message (the default 1000 drops under load)\n\
             max_queued_messages 0\n\
             # stay the user who started it (root would switch to `mosquitto`,\n\
             # which cannot read this temp dir)\n\
             user root\n\
             {extra}\n",
            passwd.display()
        );
        std::fs::write(&conf, text).map_err(io("writing mosquitto.conf"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("mosquitto (apt-get install mosquitto)"))?;
        let mut mosquitto = Mosquitto {
            port,
            child,
            _dir: dir,
        };
        wait_listening(&mut mosquitto.child, port, "mosquitto")?;
        Ok(mosquitto)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until `port` accepts connections; fails if the process exits.
fn wait_listening(child: &mut Child, port: u16, name: &str) -> Result<(), ProcessError> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ProcessError::Start(format!("{name} exited: {status}")));
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(ProcessError::Start(format!(
                "{name} did not listen on {port}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// How a benchmark hub is set up.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub binary: PathBuf,
    pub admin_token: String,
    /// The tools listener's one user.
    pub username: String,
    pub password: String,
    pub max_connections: usize,
}

/// A hub process with its plain tools listener on, its own data dir.
pub struct HubChild {
    pub api_url: String,
    /// The public mTLS device port.
    pub device_port: u16,
    pub plain_port: u16,
    child: Child,
    data: tempfile::TempDir,
}

impl HubChild {
    pub async fn start(settings: &HubSettings) -> Result<HubChild, ProcessError> {
        let data = tempfile::tempdir().map_err(io("temp dir"))?;
        let plain_port = free_port()?;
        let hash = hash_password(&settings.binary, &settings.password)?;
        let config = data.path().join("hub.toml");
        let text = format!(
            "data_dir = {data:?}\n\
             [broker]\nlisten = \"127.0.0.1:0\"\nmax_connections = {max}\n\
             [broker.limits]\nmessages_per_second = 0\n\
             [broker.plain]\nenabled = true\nlisten = \"127.0.0.1:{plain_port}\"\n\
             users = [{{ username = {user:?}, password_hash = {hash:?} }}]\n\
             [api]\nlisten = \"127.0.0.1:0\"\n\
             [log]\nfilter = \"warn,rumqttd=error\"\n",
            data = data.path().display().to_string(),
            max = settings.max_connections,
            user = settings.username,
        );
        std::fs::write(&config, text).map_err(io("writing hub.toml"))?;
        let log = std::fs::File::create(data.path().join("hub.log")).map_err(io("hub.log"))?;
        let child = Command::new(&settings.binary)
            .arg("--config")
            .arg(&config)
            .env("YIZHAN_ADMIN_TOKEN", &settings.admin_token)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("hub.log"))?)
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {}", settings.binary.display())))?;
        let mut hub = HubChild {
            api_url: String::new(),
            device_port: 0,
            plain_port,
            child,
            data,
        };
        let endpoints = endpoints(hub.data.path(), &mut hub.child).await?;
        hub.api_url = format!("http://{}", endpoints.api);
        hub.device_port = endpoints.mqtt.port();
        wait_listening(&mut hub.child, plain_port, "the hub's tools listener")?;
        Ok(hub)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("hub.log")).unwrap_or_default()
    }
}

impl Drop for HubChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses a hub bound, as it writes them to
/// `data_dir/endpoints.json` once it is ready.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Endpoints {
    pub api: std::net::SocketAddr,
    pub mqtt: std::net::SocketAddr,
}

/// Waits for the hub `child` running on `data_dir` to be ready and reads
/// the addresses it bound; fails with its log (`data_dir/hub.log`, if it
/// writes one) when it exits or takes too long.
pub async fn endpoints(data_dir: &Path, child: &mut Child) -> Result<Endpoints, ProcessError> {
    let path = data_dir.join("endpoints.json");
    let log = || std::fs::read_to_string(data_dir.join("hub.log")).unwrap_or_default();
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text)
                .map_err(|e| ProcessError::Start(format!("{}: {e}", path.display())));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ProcessError::Start(format!(
                "the hub exited ({status}):\n{}",
                log()
            )));
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(ProcessError::Start(format!(
                "the hub did not start:\n{}",
                log()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Argon2 hash `hub hash-password` prints for `password`.
pub fn hash_password(binary: &Path, password: &str) -> Result<String, ProcessError> {
    let mut child = Command::new(binary)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io(format!("{} hash-password", binary.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{password}").map_err(io("hash-password stdin"))?;
    }
    let output = child.wait_with_output().map_err(io("hash-password"))?;
    let hash = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !hash.starts_with("$argon2") {
        return Err(ProcessError::Start(format!(
            "hub hash-password gave no hash ({})",
            output.status
        )));
    }
    Ok(hash)
}

/// Resident memory of process `pid` in bytes (VmRSS), if it is running.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
