//! Supervision: every long-lived thread and task of the hub runs under a
//! component name, and the hub knows when one of them is gone.
//!
//! `Supervisor::spawn_thread` and `Supervisor::spawn_task` start a
//! component. One that panics, returns an error, or ends while the hub is
//! not stopping is *down*: `yizhan_component_up{component}` drops from 1 to
//! 0, `/readyz` answers 503 naming it, and the supervisor cancels the hub's
//! one stop token, so every other part stops in the usual order (ingest
//! writes its twins and fsyncs, sled is flushed last) and the process exits
//! non-zero for systemd or Kubernetes to restart it.
//!
//! A component is never restarted in place: a panic may have left shared
//! state half-changed (ingest's twin cache, the desk's batch), while a new
//! process reloads everything from sled, as every start already does. A
//! store error ends a component for the same reason: after a failed fsync
//! the kernel may have dropped the dirty pages, so a later fsync that
//! succeeds proves nothing (PostgreSQL's "fsyncgate"); nothing written
//! since the last good fsync was acknowledged, so stopping loses nothing.
//!
//! Also here: the test-only fault switch (`TEST_FAULT_ENV`), which makes
//! one component panic or fail on cue. Tasks are struck by the supervisor
//! itself; threads cannot be interrupted, so their loops call `checkpoint`.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::IntGaugeVec;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// The supervised components, by the name their metric label, `/readyz`
/// and the fault switch use. Static, so the label stays bounded.
pub mod component {
    pub const INGEST: &str = "ingest";
    pub const COMMIT: &str = "commit";
    /// The booking desk (due slot work runs on its thread too).
    pub const DESK: &str = "desk";
    pub const WEBHOOK: &str = "webhook";
    /// The public device port's accept loop.
    pub const EDGE_DEVICES: &str = "edge_devices";
    pub const EDGE_TOOLS: &str = "edge_tools";
    pub const API: &str = "api";
    /// Gauges read from outside the hub's own state (the store's size).
    pub const GAUGES: &str = "gauges";
    /// The API's audit log writer.
    pub const AUDIT: &str = "audit";
    /// The forwarder to the upstream broker (`[uplink]`).
    pub const UPLINK: &str = "uplink";
    /// Removes records older than their retention.
    pub const RETENTION: &str = "retention";
    pub const ALL: [&str; 11] = [
        INGEST,
        COMMIT,
        DESK,
        WEBHOOK,
        EDGE_DEVICES,
        EDGE_TOOLS,
        API,
        GAUGES,
        AUDIT,
        UPLINK,
        RETENTION,
    ];
}

/// Places outside the components that the fault switch can strike.
pub mod fault_point {
    /// `Store::flush`: every fsync fails from the cue on (`error` only), as
    /// a full or failing disk would make it.
    pub const STORE_FLUSH: &str = "store_flush";
    pub const ALL: [&str; 1] = [STORE_FLUSH];
}

/// Test-only: `<component>:<panic|error>[:<after_ms>]` makes that component
/// panic (or fail with an error) on SIGUSR1, or `after_ms` after the start;
/// `store_flush:error[:<after_ms>]` makes every fsync fail from then on.
/// Read once at start; never set it in production.
pub const TEST_FAULT_ENV: &str = "YIZHAN_TEST_FAULT";

/// How long the HTTP API keeps answering after a component went down, so
/// probes and scrapes see the 503 and the 0 before the process exits.
const LINGER: Duration = Duration::from_millis(1_500);

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("{TEST_FAULT_ENV}={0:?}: expected <component>:<panic|error>[:<after_ms>] with a component among {list}, or {points}:error[:<after_ms>]", list = component::ALL.join(", "), points = fault_point::ALL.join("|"))]
    BadFault(String),
}

/// The error a component returns when the fault switch says `error`.
#[derive(Debug, thiserror::Error)]
#[error("injected test fault ({TEST_FAULT_ENV})")]
pub struct InjectedFault;

/// A component that is down, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Down {
    pub component: &'static str,
    pub reason: String,
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.component, self.reason)
    }
}

/// `ingest panicked: …; commit ended …`: who is down, for logs and bodies.
pub fn describe(down: &[Down]) -> String {
    let named: Vec<String> = down.iter().map(Down::to_string).collect();
    named.join("; ")
}

/// How a component's body may end: `()`, or `Result<(), E>` with a
/// printable error.
pub trait Exit {
    fn into_result(self) -> Result<(), String>;
}

impl Exit for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> Exit for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|error| error.to_string())
    }
}

/// Starts components and watches them; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    stop: CancellationToken,
    tasks: TaskTracker,
    up: IntGaugeVec,
    /// Who is down, and whether it was a cause (a panic or an error)
    /// rather than a plain end. std Mutex: never held across an await.
    down: Mutex<Vec<(Down, bool)>>,
    fault: Option<(&'static str, Trigger)>,
}

impl Supervisor {
    /// A supervisor that cancels `stop` when a component goes down. With a
    /// fault plan it must be created inside the tokio runtime (the plan's
    /// trigger is armed at once).
    pub fn new(stop: CancellationToken, metrics: &Metrics, fault: Option<FaultPlan>) -> Self {
        let fault = fault.map(|plan| (plan.component, Trigger::arm(&plan, &stop)));
        Supervisor {
            inner: Arc::new(Inner {
                stop,
                tasks: TaskTracker::new(),
                up: metrics.component_up.clone(),
                down: Mutex::new(Vec::new()),
                fault,
            }),
        }
    }

    /// The hub's one stop token: cancelled at shutdown and when a component
    /// goes down.
    pub fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    /// The tracker the hub waits on at shutdown (also for unsupervised
    /// helper tasks, such as one connection's).
    pub fn tracker(&self) -> TaskTracker {
        self.inner.tasks.clone()
    }

    /// Runs `body` on its own OS thread named `name`. The handle joins
    /// after the supervisor has seen the end (a panic is caught and
    /// reported, so `join` returns `Ok`).
    pub fn spawn_thread<F, O>(&self, name: &'static str, body: F) -> std::io::Result<JoinHandle<()>>
    where
        F: FnOnce() -> O + Send + 'static,
        O: Exit,
    {
        let watch = self.watch(name);
        let trigger = self.trigger_for(name);
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                THREAD_FAULT.set(trigger);
                let ending = match std::panic::catch_unwind(AssertUnwindSafe(body)) {
                    Ok(exit) => Ending::from(exit.into_result()),
                    Err(payload) => Ending::Panicked(panic_message(&*payload)),
                };
                watch.ended(ending);
            });
        if spawned.is_err() {
            self.inner.up.with_label_values(&[name]).set(0);
        }
        spawned
    }

    /// Runs `body` as a tokio task named `name`, tracked for shutdown.
    pub fn spawn_task<F>(&self, name: &'static str, body: F)
    where
        F: Future + Send + 'static,
        F::Output: Exit,
    {
        let watch = self.watch(name);
        let body = self
            .inner
            .tasks
            .spawn(strike_task(self.trigger_for(name), body));
        self.inner.tasks.spawn(async move {
            let ending = match body.await {
                Ok(result) => Ending::from(result),
                Err(error) if error.is_panic() => {
                    Ending::Panicked(panic_message(&*error.into_panic()))
                }
                Err(_) => Ending::Cancelled,
            };
            watch.ended(ending);
        });
    }

    /// Components that went down so far: panics and errors first, then
    /// components that just ended, each in the order they went down.
    pub fn down(&self) -> Vec<Down> {
        self.inner
            .lock_down()
            .iter()
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// Starts the shutdown: cancels the stop token, closes the tracker.
    pub fn stop(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
    }

    /// Waits up to `timeout` for every tracked task to end.
    pub async fn wait_tasks(&self, timeout: Duration) {
        if tokio::time::timeout(timeout, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(?timeout, "tasks still running at shutdown");
        }
    }

    /// What the HTTP API's graceful shutdown waits for: the stop token,
    /// then, if a component is down, `LINGER` more so the last probes and
    /// scrapes see why the hub stops.
    pub async fn api_may_stop(&self) {
        self.inner.stop.cancelled().await;
        if !self.down().is_empty() {
            tokio::time::sleep(LINGER).await;
        }
    }

    fn watch(&self, name: &'static str) -> Watch {
        debug_assert!(component::ALL.contains(&name), "unlisted component {name}");
        self.inner.up.with_label_values(&[name]).set(1);
        Watch {
            name,
            inner: self.inner.clone(),
        }
    }

    /// The switch of fault point `name` (`fault_point`), when the fault
    /// plan names it.
    pub fn fault_point(&self, name: &str) -> Option<FaultSwitch> {
        self.trigger_for(name).map(FaultSwitch)
    }

    fn trigger_for(&self, name: &str) -> Option<Trigger> {
        match &self.inner.fault {
            Some((target, trigger)) if *target == name => Some(trigger.clone()),
            _ => None,
        }
    }
}

impl Inner {
    fn lock_down(&self) -> std::sync::MutexGuard<'_, Vec<(Down, bool)>> {
        // Nothing panics while holding this lock (insert and clone only);
        // recover the list anyway rather than lose it.
        self.down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lists a component as down, causes (panics, errors) before plain
    /// ends: a thread whose input channel closed because its feeder
    /// panicked (commit after ingest) may report before the feeder does.
    fn record(&self, down: Down, cause: bool) {
        let mut list = self.lock_down();
        let at = match cause {
            true => list.iter().position(|(_, c)| !c).unwrap_or(list.len()),
            false => list.len(),
        };
        list.insert(at, (down, cause));
    }
}

/// How a component ended.
enum Ending {
    Returned,
    Failed(String),
    Panicked(String),
    /// A task dropped by the runtime (only at process exit).
    Cancelled,
}

impl From<Result<(), String>> for Ending {
    fn from(result: Result<(), String>) -> Ending {
        match result {
            Ok(()) => Ending::Returned,
            Err(error) => Ending::Failed(error),
        }
    }
}

/// One running component, reporting its end.
struct Watch {
    name: &'static str,
    inner: Arc<Inner>,
}

impl Watch {
    fn ended(self, ending: Ending) {
        self.inner.up.with_label_values(&[self.name]).set(0);
        let stopping = self.inner.stop.is_cancelled();
        let (reason, cause) = match ending {
            Ending::Returned | Ending::Cancelled if stopping => {
                tracing::debug!(component = self.name, "component stopped");
                return;
            }
            Ending::Returned => ("ended while the hub was running".to_string(), false),
            Ending::Cancelled => ("was cancelled while the hub was running".to_string(), false),
            Ending::Failed(error) => (format!("failed: {error}"), true),
            Ending::Panicked(message) => (format!("panicked: {message}"), true),
        };
        tracing::error!(component = self.name, %reason, "component down; the hub stops");
        let down = Down {
            component: self.name,
            reason,
        };
        self.inner.record(down, cause);
        self.inner.stop.cancel();
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// What the fault switch does to its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    Panic,
    Error,
}

/// The parsed `TEST_FAULT_ENV`: which component, how, and when (`None`:
/// on SIGUSR1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    pub component: &'static str,
    pub mode: FaultMode,
    pub after: Option<Duration>,
}

impl FaultPlan {
    /// The plan in `TEST_FAULT_ENV`, if it is set.
    pub fn from_env() -> Result<Option<FaultPlan>, SuperviseError> {
        match std::env::var(TEST_FAULT_ENV) {
            Ok(text) if !text.is_empty() => FaultPlan::parse(&text).map(Some),
            _ => Ok(None),
        }
    }

    pub fn parse(text: &str) -> Result<FaultPlan, SuperviseError> {
        let bad = || SuperviseError::BadFault(text.to_string());
        let mut parts = text.split(':');
        let name = parts.next().ok_or_else(bad)?;
        let point = fault_point::ALL.into_iter().find(|p| *p == name);
        let component = component::ALL
            .into_iter()
            .find(|c| *c == name)
            .or(point)
            .ok_or_else(bad)?;
        let mode = match parts.next() {
            Some("panic") if point.is_none() => FaultMode::Panic,
            Some("error") => FaultMode::Error,
            _ => return Err(bad()),
        };
        let after = match parts.next() {
            Some(ms) => Some(Duration::from_millis(ms.parse().map_err(|_| bad())?)),
            None => None,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(FaultPlan {
            component,
            mode,
            after,
        })
    }
}

/// A fault point's switch: `check` fails once the fault has fired.
#[derive(Clone)]
pub struct FaultSwitch(Trigger);

impl FaultSwitch {
    pub fn check(&self) -> Result<(), InjectedFault> {
        match self.0.fired.is_cancelled() {
            true => self.0.strike(),
            false => Ok(()),
        }
    }
}

/// A fault that fires once, for the component it was planned for.
#[derive(Clone)]
struct Trigger {
    mode: FaultMode,
    fired: CancellationToken,
}

impl Trigger {
    /// Fires after the plan's delay or on SIGUSR1 (the handler is installed
    /// here, before the hub reports ready, so an early signal cannot kill
    /// the process instead).
    fn arm(plan: &FaultPlan, stop: &CancellationToken) -> Trigger {
        let trigger = Trigger {
            mode: plan.mode,
            fired: CancellationToken::new(),
        };
        let (fired, stop, after) = (trigger.fired.clone(), stop.clone(), plan.after);
        let component = plan.component;
        let signal = match after {
            Some(_) => None,
            None => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                .map_err(|error| tracing::error!(%error, "no SIGUSR1 handler: the test fault never fires"))
                .ok(),
        };
        tokio::spawn(async move {
            let cue = async {
                match (after, signal) {
                    (Some(after), _) => tokio::time::sleep(after).await,
                    (None, Some(mut signal)) => {
                        signal.recv().await;
                    }
                    (None, None) => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = cue => {
                    tracing::warn!(component, "test fault fires ({TEST_FAULT_ENV})");
                    fired.cancel();
                }
            }
        });
        trigger
    }

    fn strike(&self) -> Result<(), InjectedFault> {
        match self.mode {
            FaultMode::Panic => panic!("injected test fault ({TEST_FAULT_ENV})"),
            FaultMode::Error => Err(InjectedFault),
        }
    }
}

thread_local! {
    /// The fault planned for the supervised component on this thread.
    static THREAD_FAULT: RefCell<Option<Trigger>> = const { RefCell::new(None) };
}

/// Called by thread components once per loop: panics or returns the
/// injected error once this thread's test fault has fired; otherwise (and
/// always in production) `Ok`.
pub fn checkpoint() -> Result<(), InjectedFault> {
    THREAD_FAULT.with_borrow(|trigger| match trigger {
        Some(trigger) if trigger.fired.is_cancelled() => trigger.strike(),
        _ => Ok(()),
    })
}

/// `body`, struck by the fault when it fires first.
async fn strike_task<F>(trigger: Option<Trigger>, body: F) -> Result<(), String>
where
    F: Future,
    F::Output: Exit,
{
    let Some(trigger) = trigger else {
        return body.await.into_result();
    };
    tokio::select! {
        exit = body => exit.into_result(),
        _ = trigger.fired.cancelled() => trigger.strike().map_err(|fault| fault.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_plan(text: &str, expect: Option<(&str, FaultMode, Option<u64>)>) {
        let parsed = FaultPlan::parse(text).ok();
        let expect = expect.map(|(component, mode, after)| FaultPlan {
            component: component::ALL
                .into_iter()
                .chain(fault_point::ALL)
                .find(|c| *c == component)
                .expect("listed component"),
            mode,
            after: after.map(Duration::from_millis),
        });
        assert_eq!(parsed, expect, "{text}");
    }

    #[test]
    fn fault_plans_parse_or_are_refused() {
        check_plan("ingest:panic", Some(("ingest", FaultMode::Panic, None)));
        check_plan(
            "desk:error:250",
            Some(("desk", FaultMode::Error, Some(250))),
        );
        check_plan("api:panic:0", Some(("api", FaultMode::Panic, Some(0))));
        check_plan("ingest", None);
        check_plan("nobody:panic", None);
        check_plan("ingest:explode", None);
        check_plan("ingest:panic:soon", None);
        check_plan("ingest:panic:1:2", None);
        check_plan("", None);
        check_plan(
            "store_flush:error",
            Some(("store_flush", FaultMode::Error, None)),
        );
        check_plan("store_flush:panic", None);
    }

    fn supervisor(fault: Option<&str>) -> Supervisor {
        let plan = fault.map(|text| FaultPlan::parse(text).expect("valid plan"));
        Supervisor::new(CancellationToken::new(), &Metrics::new(), plan)
    }

    fn up(supervisor: &Supervisor, name: &str) -> i64 {
        supervisor.inner.up.with_label_values(&[name]).get()
    }

    async fn stopped(supervisor: &Supervisor) {
        let wait = supervisor.stop_token();
        tokio::time::timeout(Duration::from_secs(5), wait.cancelled())
            .await
            .expect("the supervisor stops the hub");
    }

    #[tokio::test]
    async fn a_panicking_thread_is_down_and_stops_the_hub() {
        let supervisor = supervisor(None);
        let thread = supervisor
            .spawn_thread(component::INGEST, || -> Result<(), InjectedFault> {
                panic!("boom")
            })
            .expect("thread");
        stopped(&supervisor).await;
        assert!(thread.join().is_ok(), "the panic was caught");
        assert_eq!(
            supervisor.down(),
            vec![Down {
                component: component::INGEST,
                reason: "panicked: boom".into()
            }]
        );
        assert_eq!(up(&supervisor, component::INGEST), 0);
    }

    #[tokio::test]
    async fn a_task_that_returns_while_running_is_down_but_not_while_stopping() {
        let supervisor = supervisor(None);
        let stop = supervisor.stop_token();
        supervisor.spawn_task(component::API, async move { stop.cancelled().await });
        assert_eq!(up(&supervisor, component::API), 1);
        supervisor.spawn_task(component::WEBHOOK, async {});
        stopped(&supervisor).await;
        supervisor.stop();
        supervisor.wait_tasks(Duration::from_secs(5)).await;
        let down: Vec<_> = supervisor.down().iter().map(|d| d.to_string()).collect();
        assert_eq!(down, ["webhook ended while the hub was running"]);
        assert_eq!(up(&supervisor, component::API), 0);
    }

    /// Like `GroupCommit` in ingest: dropped while unwinding, it closes the
    /// channel and waits for the thread it feeds.
    struct Feeder(Option<std::sync::mpsc::Sender<()>>, Option<JoinHandle<()>>);

    impl Drop for Feeder {
        fn drop(&mut self) {
            self.0.take();
            if let Some(thread) = self.1.take() {
                let _ = thread.join();
            }
        }
    }

    #[tokio::test]
    async fn causes_are_listed_before_components_that_just_ended() {
        let supervisor = supervisor(None);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // commit ends when its feeder's channel closes, before the
        // feeder's panic is reported.
        let commit = supervisor
            .spawn_thread(component::COMMIT, move || while rx.recv().is_ok() {})
            .expect("thread");
        let ingest = supervisor
            .spawn_thread(component::INGEST, move || -> Result<(), InjectedFault> {
                let _feeder = Feeder(Some(tx), Some(commit));
                panic!("boom")
            })
            .expect("thread");
        stopped(&supervisor).await;
        assert!(ingest.join().is_ok());
        let order: Vec<_> = supervisor.down().iter().map(|d| d.component).collect();
        assert_eq!(order, [component::INGEST, component::COMMIT]);
    }

    #[tokio::test]
    async fn an_error_names_the_component_and_its_cause() {
        let supervisor = supervisor(None);
        supervisor.spawn_task(component::COMMIT, async { Err::<(), _>("disk gone") });
        stopped(&supervisor).await;
        assert_eq!(supervisor.down()[0].reason, "failed: disk gone");
    }

    #[tokio::test]
    async fn the_fault_switch_strikes_tasks_and_thread_checkpoints() {
        for (plan, name, reason) in [
            (
                "api:panic:10",
                component::API,
                "panicked: injected test fault",
            ),
            (
                "webhook:error:10",
                component::WEBHOOK,
                "failed: injected test fault",
            ),
            (
                "desk:panic:10",
                component::DESK,
                "panicked: injected test fault",
            ),
            (
                "commit:error:10",
                component::COMMIT,
                "failed: injected test fault",
            ),
        ] {
            let supervisor = supervisor(Some(plan));
            let stop = supervisor.stop_token();
            if name == component::DESK || name == component::COMMIT {
                supervisor
                    .spawn_thread(name, move || -> Result<(), InjectedFault> {
                        while !stop.is_cancelled() {
                            checkpoint()?;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Ok(())
                    })
                    .expect("thread");
            } else {
                supervisor.spawn_task(name, async move { stop.cancelled().await });
            }
            stopped(&supervisor).await;
            let down = supervisor.down();
            assert_eq!(down.len(), 1, "{plan}: {down:?}");
            assert_eq!(down[0].component, name, "{plan}");
            assert!(down[0].reason.starts_with(reason), "{plan}: {}", down[0]);
        }
    }

    #[test]
    fn checkpoints_pass_on_threads_without_a_fault() {
        assert!(checkpoint().is_ok());
    }
}
