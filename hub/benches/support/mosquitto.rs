//! A mosquitto broker (Debian package) for benchmarks: anonymous, on a free
//! loopback port, with a temp config; killed on drop. Shared by the benches
//! through `#[path]`.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct MosquittoProcess {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl MosquittoProcess {
    /// Starts mosquitto with `extra` appended to its config and waits until
    /// it accepts connections.
    pub fn start(extra: &str) -> Result<MosquittoProcess> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = dir.path().join("mosquitto.conf");
        writeln!(
            std::fs::File::create(&conf)?,
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n{extra}"
        )?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("mosquitto (apt-get install mosquitto)")?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(5) {
                bail!("mosquitto did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(MosquittoProcess {
            port,
            child,
            _dir: dir,
        })
    }
}

impl Drop for MosquittoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
