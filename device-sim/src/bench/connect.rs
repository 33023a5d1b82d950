//! Opening many connections, paced: at most `concurrency` connects in
//! flight at once (brokers stall on bursts: rumqttd accepts one connection
//! at a time per listener), each retried until an overall deadline. Reports
//! how long it took until the last one was ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::MqttOptions;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::connection::{self, Counters, LoadConnection, Role};

/// How connections are opened.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Connects in flight at once.
    pub concurrency: usize,
    /// Connections not ready by then are given up.
    pub timeout: Duration,
}

/// How the connect phase went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectReport {
    pub attempted: usize,
    pub connected: usize,
    /// From the first connect to the last connection ready.
    pub seconds: f64,
    /// Failed attempts (each retried until the deadline).
    pub errors: u64,
}

/// Opens every connection; returns those that became ready, with their
/// index in `clients`, in order.
pub async fn connect_all(
    clients: Vec<(MqttOptions, Role)>,
    pacing: Pacing,
    counters: &Arc<Counters>,
) -> (Vec<(usize, LoadConnection)>, ConnectReport) {
    let attempted = clients.len();
    let errors_before = Counters::get(&counters.connect_errors);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + pacing.timeout;
    let permits = Arc::new(Semaphore::new(pacing.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (index, (options, role)) in clients.into_iter().enumerate() {
        let (permits, counters) = (Arc::clone(&permits), Arc::clone(counters));
        tasks.spawn(async move {
            // invariant: the semaphore is never closed.
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            let (connection, ready) = connection::open(options, role, counters);
            let ok = matches!(tokio::time::timeout_at(deadline, ready).await, Ok(Ok(())));
            (index, connection, ok, started.elapsed())
        });
    }
    let mut ready = Vec::with_capacity(attempted);
    let mut last_ready = Duration::ZERO;
    while let Some(joined) = tasks.join_next().await {
        let Ok((index, connection, ok, at)) = joined else {
            continue;
        };
        if ok {
            last_ready = last_ready.max(at);
            ready.push((index, connection));
        } else {
            connection.stop.cancel();
        }
    }
    ready.sort_by_key(|(index, _)| *index);
    let report = ConnectReport {
        attempted,
        connected: ready.len(),
        seconds: last_ready.as_secs_f64(),
        errors: Counters::get(&counters.connect_errors) - errors_before,
    };
    (ready, report)
}
