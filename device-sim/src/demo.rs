//! `device-sim demo`: the README's first command. Starts the `hub` binary
//! as a child process on a config made for simulated centers (the ts
//! window opened for simulated clocks, the schedule on a `fixed:` clock the
//! residents move along with the simulated one), then runs simulated
//! centers against it, as against any hub: their rooms and bookable
//! resources set up through the API, devices over MQTT with mTLS, residents
//! booking through the API from the first minute, until SIGINT or SIGTERM:
//! the devices say goodbye first, then the hub is stopped. The simulator is
//! not part of the hub binary; the hub knows nothing of it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString};
use tokio_util::sync::CancellationToken;

use crate::bench::processes::{endpoints, ProcessError};
use crate::crowd::Profile;
use crate::fleet::{run_fleet, FleetConfig, FleetError};
use crate::simtime::Calendar;
use crate::unix_ms;

/// A `ts` window holding every instant the calendar does (10,000 years
/// either way): the simulated devices' clocks run ahead of the hub's.
const SIMULATED_CLOCK_WINDOW_SECS: u64 = 10_000 * 365 * 86_400;
/// How long the devices may take to say goodbye, and the hub to stop.
const GOODBYE: Duration = Duration::from_secs(2);
const HUB_STOP: Duration = Duration::from_secs(6);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Hub(#[from] ProcessError),
    #[error("the hub exited while the demo ran ({0})")]
    HubExited(std::process::ExitStatus),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `hub` binary.
    pub hub: PathBuf,
    /// The hub's data dir (its store, CA, config and endpoints).
    pub data_dir: PathBuf,
    /// Overrides of the hub's listen addresses (its defaults otherwise).
    pub api_listen: Option<String>,
    pub mqtt_listen: Option<String>,
    /// Simulated centers (18 devices each).
    pub centers: usize,
    /// Where the simulated devices keep their issued credentials.
    pub device_dir: PathBuf,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// The admin token the hub takes (`YIZHAN_ADMIN_TOKEN`).
    pub admin_token: String,
}

/// A fresh admin token for a demo.
pub fn random_token() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
}

/// The hub's config for a demo whose simulated time starts at `start`:
/// the ts window opened for simulated clocks, and the schedule on a
/// `fixed:` clock standing at `start`, which the residents' front desk
/// moves along with the simulated one. (Rooms and resources the run sets
/// up through the API.)
pub fn hub_config(data_dir: &Path, start: u64, calendar: &Calendar) -> String {
    format!(
        "data_dir = {data_dir:?}\n\n[ingest]\nmax_ts_behind_secs = {w}\nmax_ts_ahead_secs = {w}\n\n\
         [schedule]\nclock = \"fixed:{start}\"\n",
        data_dir = data_dir.display().to_string(),
        w = SIMULATED_CLOCK_WINDOW_SECS,
        start = calendar.local(start).to_rfc3339(),
    )
}

/// When the demo's simulated time starts, `now` being the real time: now
/// while the centers are open (up to an hour before closing), else half an
/// hour before they next open, so that bookings and check-ins flow from
/// the first minute.
pub fn demo_start(now: u64, calendar: &Calendar, profile: &Profile) -> u64 {
    const HALF_HOUR_MS: u64 = 30 * 60_000;
    let day = calendar.day(now);
    let opening = |day| calendar.at(day, profile.opens) - HALF_HOUR_MS;
    if now < opening(day) {
        opening(day)
    } else if now + 2 * HALF_HOUR_MS < calendar.at(day, profile.closes) {
        now
    } else {
        opening(day.succ_opt().unwrap_or(day))
    }
}

/// The hub started as a child process; stopped (SIGTERM, then SIGKILL)
/// when dropped.
struct HubProcess {
    child: Child,
}

impl HubProcess {
    /// Runs `hub --config <data_dir>/demo.toml` in its own process group, so
    /// a Ctrl-C in the terminal reaches the demo (which stops the devices
    /// first), not the hub.
    fn start(options: &DemoOptions, start: u64) -> Result<HubProcess, DemoError> {
        use std::os::unix::process::CommandExt;
        let data_dir = &options.data_dir;
        std::fs::create_dir_all(data_dir)
            .map_err(io(format!("creating {}", data_dir.display())))?;
        let config = data_dir.join("demo.toml");
        let calendar = Calendar::default();
        std::fs::write(&config, hub_config(data_dir, start, &calendar))
            .map_err(io(format!("writing {}", config.display())))?;
        // A ready hub writes it anew: an old one must not be read.
        let _ = std::fs::remove_file(data_dir.join("endpoints.json"));
        let mut command = Command::new(&options.hub);
        command.arg("--config").arg(&config);
        if let Some(addr) = &options.api_listen {
            command.args(["--api-listen", addr]);
        }
        if let Some(addr) = &options.mqtt_listen {
            command.args(["--mqtt-listen", addr]);
        }
        let child = command
            .env("YIZHAN_ADMIN_TOKEN", &options.admin_token)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io(format!("starting {}", options.hub.display())))?;
        Ok(HubProcess { child })
    }

    /// Asks the hub to stop (SIGTERM) and waits for it.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < HUB_STOP {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resolves once the hub exited by itself.
    async fn exited(&mut self) -> std::process::ExitStatus {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the demo until `stop` is cancelled (or the hub exits by itself,
/// an error).
pub async fn run_demo(options: DemoOptions, stop: CancellationToken) -> Result<(), DemoError> {
    let start = demo_start(unix_ms(), &Calendar::default(), &Profile::default());
    let mut hub = HubProcess::start(&options, start)?;
    let bound = endpoints(&options.data_dir, &mut hub.child).await?;
    let api = format!("http://{}", bound.api);
    let token = &options.admin_token;
    println!("Demo hub running. Admin token: {token}");
    println!("  curl -H 'Authorization: Bearer {token}' {api}/api/v1/devices");
    println!("  curl -H 'Authorization: Bearer {token}' {api}/metrics");
    let fleet = FleetConfig {
        api_url: api,
        admin_token: options.admin_token.clone(),
        mqtt_host: "localhost".into(),
        mqtt_port: bound.mqtt.port(),
        centers: options.centers,
        cert_dir: options.device_dir.clone(),
        speed: options.speed,
        start_ms: Some(start),
        ..FleetConfig::default()
    };
    let fleet_stop = stop.child_token();
    let mut fleet = tokio::spawn(run_fleet(fleet, fleet_stop.clone()));
    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        status = hub.exited() => Err(DemoError::HubExited(status)),
        ran = &mut fleet => {
            // The fleet ends only when stopped, or when it failed.
            return match ran {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(error.into()),
                Err(error) => Err(io("the fleet task")(std::io::Error::other(error))),
            };
        }
    };
    // Let the simulated devices say goodbye before the hub stops.
    fleet_stop.cancel();
    let _ = tokio::time::timeout(GOODBYE, fleet).await;
    hub.stop();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, NaiveTime};

    #[test]
    fn the_demo_starts_now_while_the_centers_are_open_else_before_they_open() {
        let cal = Calendar::default();
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let at = |day: NaiveDate, h, m| cal.at(day, NaiveTime::from_hms_opt(h, m, 0).unwrap());
        let start = |h, m| demo_start(at(day, h, m), &cal, &Profile::default());
        assert_eq!(start(3, 0), at(day, 8, 0));
        assert_eq!(start(9, 15), at(day, 9, 15));
        assert_eq!(start(20, 29), at(day, 20, 29));
        assert_eq!(start(20, 31), at(day.succ_opt().unwrap(), 8, 0));
    }

    #[test]
    fn the_config_opens_the_ts_window_and_fixes_the_schedule_clock_at_the_start() {
        let cal = Calendar::default();
        let start = cal.parse_instant("2026-11-28T08:00:00+08:00").unwrap();
        let text = hub_config(Path::new("/tmp/d"), start, &cal);
        assert!(
            text.contains("clock = \"fixed:2026-11-28T08:00:00+08:00\""),
            "{text}"
        );
        assert!(text.contains("max_ts_ahead_secs"));
        assert!(!text.contains("[[rooms]]"), "rooms come through the API");
    }
}
