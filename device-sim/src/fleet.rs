//! A fleet run: plan the devices of C centers, provision them, set up the
//! district's rooms and bookable resources, connect the devices paced, run
//! them and the residents' bookings (`frontdesk`) until shutdown or the
//! configured duration, and sum up the ground truth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::api::Provisioned;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::behaviour::World;
use crate::crowd::{fnv1a, member_credential, member_id, CenterCrowd, Profile};
use crate::device::{run_device, DeviceReport, DeviceSettings};
use crate::district::{self, Bookable};
use crate::frontdesk::{FrontDesk, HubClock};
use crate::hub_api::{ApiCallError, HubApi};
use crate::mqtt::{self, Endpoint};
use crate::plan::{center_names, plan_fleet, DeviceMix, DeviceSpec, PlanError};
use crate::provision::{ProvisionError, Provisioner};
use crate::residents::Attendance;
use crate::simtime::{Calendar, SimClock};
use crate::stats::{DeviceTruth, GroundTruth, RunSpan};
use crate::store::CredentialStore;
use crate::unix_ms;

/// Provisioning requests in flight at once.
const PROVISION_CONCURRENCY: usize = 8;
/// An unacknowledged event is resent after this long.
const RESEND_INTERVAL: Duration = Duration::from_secs(5);
/// On shutdown, how long devices wait for outstanding event acks.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// On shutdown, how long a device's `offline` + DISCONNECT may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long (real time) someone at a gate waits for the hub's answer.
const GATE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What to simulate and against which hub.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Hub HTTP API base, e.g. `http://127.0.0.1:8080`.
    pub api_url: String,
    /// Bearer token for `POST /api/v1/devices`.
    pub admin_token: String,
    /// Broker host: a DNS name (the TLS server name; IP SNI is refused).
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// Number of centers, named `center01`, `center02`, …
    pub centers: usize,
    /// The first center's number (`center03` for 3); 1 by default.
    pub first_center: usize,
    /// Devices per center.
    pub mix: DeviceMix,
    /// Where device credentials are kept (`<id>.json`, mode 0600).
    pub cert_dir: PathBuf,
    pub telemetry_interval: Duration,
    /// MQTT keepalive: whole seconds, 1 s to 65535 s.
    pub keepalive: Duration,
    pub seed: u64,
    /// Pause between two devices' connects (the broker stalls on bursts).
    pub connect_pacing: Duration,
    /// Stop by itself after this long, real time (counted from the first
    /// connect).
    pub duration: Option<Duration>,
    /// Simulated seconds per real second (600: ten hours a minute).
    pub speed: f64,
    /// Simulated Unix ms at the start; now if unset.
    pub start_ms: Option<u64>,
    /// The centers' time zone.
    pub calendar: Calendar,
    /// How busy each center is.
    pub profile: Profile,
    /// Chance that a therapy session runs into an overheat fault.
    pub overheat_chance: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            api_url: "http://127.0.0.1:8080".into(),
            admin_token: String::new(),
            mqtt_host: "localhost".into(),
            mqtt_port: 8883,
            centers: 1,
            first_center: 1,
            mix: DeviceMix::default(),
            cert_dir: PathBuf::from("sim-certs"),
            telemetry_interval: Duration::from_secs(5),
            keepalive: Duration::from_secs(30),
            seed: 1,
            connect_pacing: Duration::from_millis(20),
            duration: None,
            speed: 1.0,
            start_ms: None,
            calendar: Calendar::default(),
            profile: Profile::default(),
            overheat_chance: 0.01,
        }
    }
}

/// Why a fleet run failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("invalid fleet configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("setting up the district: {0}")]
    District(#[from] ApiCallError),
    #[error("cancelled before the devices started")]
    Cancelled,
    #[error("device task failed: {0}")]
    DeviceTask(String),
}

/// Refuses configurations the hub or rumqttc would reject later, less
/// clearly.
fn validate(config: &FleetConfig) -> Result<(), FleetError> {
    let invalid = |msg: &str| Err(FleetError::InvalidConfig(msg.to_owned()));
    if config.admin_token.is_empty() {
        return invalid("the admin token is empty");
    }
    if config.mqtt_host.parse::<IpAddr>().is_ok() {
        return invalid(
            "the MQTT host must be a DNS name (e.g. localhost): the broker refuses an IP address as TLS server name",
        );
    }
    if config.keepalive < Duration::from_secs(1)
        || config.keepalive > Duration::from_secs(u16::MAX.into())
    {
        return invalid("the keepalive must be between 1 s and 65535 s");
    }
    if config.telemetry_interval.is_zero() {
        return invalid("the telemetry interval must be above zero");
    }
    if !(config.speed.is_finite() && config.speed > 0.0) {
        return invalid("the speed must be a number above zero");
    }
    if !(0.0..=1.0).contains(&config.overheat_chance) {
        return invalid("the overheat chance must be between 0 and 1");
    }
    if !(1..=99_999).contains(&config.first_center) {
        return invalid("the first center's number must be between 1 and 99999");
    }
    Ok(())
}

fn device_settings(config: &FleetConfig, run_id: String, clock: SimClock) -> DeviceSettings {
    DeviceSettings {
        endpoint: Endpoint {
            host: config.mqtt_host.clone(),
            port: config.mqtt_port,
            // rumqttc sends whole seconds.
            keepalive: Duration::from_secs(config.keepalive.as_secs()),
        },
        telemetry_interval: config.telemetry_interval,
        resend_interval: RESEND_INTERVAL,
        drain_timeout: DRAIN_TIMEOUT,
        goodbye_timeout: GOODBYE_TIMEOUT,
        run_id,
        clock,
    }
}

/// Every center's gym members as `(resident id, credential)`.
fn gym_members(config: &FleetConfig) -> Vec<(String, String)> {
    center_names(config.first_center, config.centers)
        .iter()
        .flat_map(|center| {
            (0..config.profile.gym_members).map(move |m| {
                (
                    member_id(center, m),
                    member_credential(config.seed, center, m),
                )
            })
        })
        .collect()
}

/// Each center's world: its own crowd (seeded from the run's seed and its
/// name), shared by its devices; the run's attendance, by all.
fn center_worlds(
    config: &FleetConfig,
    clock: &SimClock,
    attendance: &Arc<Attendance>,
) -> HashMap<String, Arc<World>> {
    let answer_timeout_ms = clock.sim_span(GATE_ANSWER_TIMEOUT).as_millis() as u64;
    center_names(config.first_center, config.centers)
        .into_iter()
        .map(|center| {
            let crowd = CenterCrowd::new(
                config.seed ^ fnv1a(center.as_bytes()),
                clock.start_ms(),
                config.calendar,
                config.profile.clone(),
            );
            let world = World {
                crowd: Arc::new(crowd),
                gates: config.mix.gates,
                seed: config.seed,
                overheat_chance: config.overheat_chance,
                answer_timeout_ms,
                attendance: Arc::clone(attendance),
            };
            (center, Arc::new(world))
        })
        .collect()
}

/// Runs the fleet until `shutdown` fires or `config.duration` passed, then
/// every device says goodbye and the ground truth is returned.
pub async fn run_fleet(
    config: FleetConfig,
    shutdown: CancellationToken,
) -> Result<GroundTruth, FleetError> {
    validate(&config)?;
    mqtt::ensure_crypto_provider();
    let centers = center_names(config.first_center, config.centers);
    let specs = plan_fleet(&centers, &config.mix, config.seed)?;
    let creds = provision(&config, &specs, &shutdown).await?;
    let api = HubApi::new(&config.api_url, &config.admin_token);
    let bookables = set_up_district(&config, &centers, &specs, &api, &shutdown).await?;
    let start_ms = config.start_ms.unwrap_or_else(unix_ms);
    let attendance = Arc::new(Attendance::default());
    let desk = front_desk(&config, api, &bookables, &attendance, start_ms, &shutdown).await;

    let started_at_ms = unix_ms();
    let clock = SimClock::new(start_ms, config.speed);
    let worlds = center_worlds(&config, &clock, &attendance);
    let settings = Arc::new(device_settings(
        &config,
        started_at_ms.to_string(),
        clock.clone(),
    ));
    let stop = shutdown.child_token();
    // Stops the timer below (and any device still running) if this future
    // is dropped.
    let _stop_on_drop = stop.clone().drop_guard();
    if let Some(duration) = config.duration {
        tokio::spawn(cancel_after(duration, stop.clone()));
    }
    let residents = desk.map(|desk| tokio::spawn(desk.run(clock.clone(), stop.clone())));
    let running = start_paced(
        specs,
        creds,
        settings,
        &worlds,
        &stop,
        config.connect_pacing,
    )
    .await;
    let devices = join_devices(running).await?;
    let span = RunSpan {
        seed: config.seed,
        speed: config.speed,
        started_at_ms,
        finished_at_ms: unix_ms(),
        sim_started_at_ms: clock.start_ms(),
        sim_finished_at_ms: clock.now_ms(),
    };
    let bookings = match residents {
        Some(residents) => residents.await.map_err(task_failed)?,
        None => Default::default(),
    };
    let truth = GroundTruth::new(span, devices, bookings);
    tracing::info!(devices = truth.devices.len(), "fleet stopped");
    Ok(truth)
}

fn task_failed(error: tokio::task::JoinError) -> FleetError {
    FleetError::DeviceTask(error.to_string())
}

/// `work`, unless `shutdown` fires first.
async fn unless_cancelled<T>(
    shutdown: &CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> Result<T, FleetError> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(FleetError::Cancelled),
        done = work => Ok(done),
    }
}

/// Every device's credentials (in `specs` order), and the gym members
/// registered.
async fn provision(
    config: &FleetConfig,
    specs: &[DeviceSpec],
    shutdown: &CancellationToken,
) -> Result<Vec<Provisioned>, FleetError> {
    let provisioner = Provisioner::new(
        &config.api_url,
        &config.admin_token,
        CredentialStore::new(&config.cert_dir),
    );
    let ensuring = provisioner.ensure_all(specs, PROVISION_CONCURRENCY);
    let creds = unless_cancelled(shutdown, ensuring).await??;
    tracing::info!(
        devices = specs.len(),
        centers = config.centers,
        "fleet provisioned"
    );
    let registering = provisioner.register_residents(gym_members(config), PROVISION_CONCURRENCY);
    let created = unless_cancelled(shutdown, registering).await??;
    tracing::info!(created, "gym members registered");
    Ok(creds)
}

/// Sets up every center's rooms and bookable resources through the API;
/// returns the resources.
async fn set_up_district(
    config: &FleetConfig,
    centers: &[String],
    specs: &[DeviceSpec],
    api: &HubApi,
    shutdown: &CancellationToken,
) -> Result<Vec<Bookable>, FleetError> {
    let rooms = district::rooms(centers, &config.profile);
    let bookables = district::bookables(centers, specs, &config.profile);
    let setting_up = district::set_up(api, &rooms, &bookables, PROVISION_CONCURRENCY);
    unless_cancelled(shutdown, setting_up).await??;
    tracing::info!(
        rooms = rooms.len(),
        resources = bookables.len(),
        "district set up"
    );
    Ok(bookables)
}

/// The residents' front desk, with the bookings made before `start` made,
/// if the hub's schedule clock can follow the simulated one.
async fn front_desk(
    config: &FleetConfig,
    api: HubApi,
    bookables: &[Bookable],
    attendance: &Arc<Attendance>,
    start: u64,
    shutdown: &CancellationToken,
) -> Option<FrontDesk> {
    let hub_clock = HubClock::attach(&api, start, config.speed).await;
    if let HubClock::Unavailable(reason) = &hub_clock {
        tracing::warn!(%reason, "residents do not book");
        return None;
    }
    let run = (config.seed, config.calendar);
    let mut desk = FrontDesk::new(api, &hub_clock, run, bookables, attendance.clone(), start);
    desk.catch_up(start, shutdown).await;
    Some(desk)
}

/// Every device's truth once it stopped, in plan order.
async fn join_devices(mut running: JoinSet<DeviceOutcome>) -> Result<Vec<DeviceTruth>, FleetError> {
    let mut devices = Vec::with_capacity(running.len());
    while let Some(joined) = running.join_next().await {
        let (index, spec, report) = joined.map_err(task_failed)?;
        let truth = DeviceTruth::new(&spec, report.counters, report.daily, report.clean_goodbye);
        devices.push((index, truth));
    }
    devices.sort_by_key(|(index, _)| *index);
    Ok(devices.into_iter().map(|(_, d)| d).collect())
}

/// Cancels `stop` after `duration` unless it was cancelled before.
async fn cancel_after(duration: Duration, stop: CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => stop.cancel(),
        _ = stop.cancelled() => {}
    }
}

type DeviceOutcome = (usize, DeviceSpec, DeviceReport);

/// Starts one device task per spec, `pacing` apart; stops starting more
/// once `stop` fires. Tasks carry their plan index for ordering.
async fn start_paced(
    specs: Vec<DeviceSpec>,
    creds: Vec<Provisioned>,
    settings: Arc<DeviceSettings>,
    worlds: &HashMap<String, Arc<World>>,
    stop: &CancellationToken,
    pacing: Duration,
) -> JoinSet<DeviceOutcome> {
    let total = specs.len();
    let mut tasks = JoinSet::new();
    for (index, (spec, creds)) in specs.into_iter().zip(creds).enumerate() {
        if index > 0 && !pacing.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pacing) => {}
                _ = stop.cancelled() => break,
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let settings = Arc::clone(&settings);
        // invariant: the worlds are made from the same center names as the plan.
        let world = Arc::clone(&worlds[&spec.center]);
        let stop = stop.clone();
        tasks.spawn(async move {
            let report = run_device(spec.clone(), creds, settings, world, stop).await;
            (index, spec, report)
        });
    }
    if tasks.len() < total {
        tracing::warn!(
            started = tasks.len(),
            total,
            "stopped before every device started"
        );
    } else {
        tracing::info!(devices = total, "every device started");
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FleetConfig {
        FleetConfig {
            admin_token: "t".into(),
            ..FleetConfig::default()
        }
    }

    fn invalid(config: FleetConfig) -> String {
        match validate(&config) {
            Err(FleetError::InvalidConfig(msg)) => msg,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn the_default_config_with_a_token_is_valid() {
        assert!(validate(&config()).is_ok());
        assert!(invalid(FleetConfig::default()).contains("token"));
    }

    #[test]
    fn ip_hosts_and_bad_keepalives_are_refused() {
        let ip = FleetConfig {
            mqtt_host: "127.0.0.1".into(),
            ..config()
        };
        assert!(invalid(ip).contains("DNS name"));
        for keepalive in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(70_000),
        ] {
            let c = FleetConfig {
                keepalive,
                ..config()
            };
            assert!(invalid(c).contains("keepalive"));
        }
        let c = FleetConfig {
            telemetry_interval: Duration::ZERO,
            ..config()
        };
        assert!(invalid(c).contains("telemetry"));
    }

    #[test]
    fn keepalive_is_truncated_to_whole_seconds() {
        let c = FleetConfig {
            keepalive: Duration::from_millis(30_900),
            ..config()
        };
        assert_eq!(
            device_settings(&c, "r".into(), SimClock::new(0, 1.0))
                .endpoint
                .keepalive,
            Duration::from_secs(30)
        );
    }

    #[tokio::test]
    async fn a_run_cancelled_while_provisioning_reports_it() {
        // Nothing listens on port 9, but cancellation is checked first.
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let c = FleetConfig {
            api_url: "http://127.0.0.1:9".into(),
            cert_dir: std::env::temp_dir().join("device-sim-never-written"),
            ..config()
        };
        let result = run_fleet(c, shutdown).await;
        assert!(matches!(result, Err(FleetError::Cancelled)), "{result:?}");
    }
}
