//! The load: telemetry (contract v1, padded to a chosen size) from every
//! connection at full speed or at a fixed total rate, until a deadline or
//! a total count; events from one connection at a low fixed rate, for the
//! event → ack round trip.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use tokio::task::JoinSet;

use super::connection::{Counters, PendingEvents};
use crate::unix_ms;

/// When publishing stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    After(Duration),
    /// Messages in total, spread evenly over the connections.
    Count(u64),
}

/// What every telemetry connection publishes.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub qos: QoS,
    /// Payload size; a payload is never smaller than its JSON needs.
    pub payload_bytes: usize,
    /// Messages per second over all connections; `None`: full speed.
    pub rate: Option<f64>,
    pub stop: Stop,
}

/// One publishing connection and its telemetry topic.
pub struct Publisher {
    pub client: AsyncClient,
    pub topic: String,
}

/// Publishes `load` from every publisher; returns when all have queued
/// their last message.
pub async fn publish_telemetry(publishers: &[Publisher], load: Load) {
    let started = tokio::time::Instant::now();
    let count = publishers.len() as u64;
    let mut tasks = JoinSet::new();
    for (index, publisher) in publishers.iter().enumerate() {
        let (client, topic) = (publisher.client.clone(), publisher.topic.clone());
        let quota = match load.stop {
            Stop::Count(total) => Some(share(total, count, index as u64)),
            Stop::After(_) => None,
        };
        let period = load.rate.map(|rate| per_message(rate / count as f64));
        let deadline = match load.stop {
            Stop::After(window) => Some(started + window),
            Stop::Count(_) => None,
        };
        tasks.spawn(async move {
            let mut seq = 0u64;
            loop {
                // Paced: message `seq` is due at `seq` periods after the start.
                let due = period.map(|p| started + p.mul_f64(seq as f64));
                let now = tokio::time::Instant::now();
                if quota.is_some_and(|q| seq >= q)
                    || deadline.is_some_and(|d| due.unwrap_or(now) >= d)
                {
                    break;
                }
                if let Some(due) = due {
                    tokio::time::sleep_until(due).await;
                }
                seq += 1;
                let payload = telemetry(seq, load.payload_bytes);
                if client
                    .publish(&topic, load.qos, false, payload)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Connection `index`'s part of `total` messages over `count` connections.
fn share(total: u64, count: u64, index: u64) -> u64 {
    total / count + u64::from(index < total % count)
}

fn per_message(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate.max(1e-3))
}

/// A contract v1 telemetry payload of people-counter fields, padded with a
/// string field to `size` bytes (sizes below ~60 bytes give the smallest
/// payload with or without the padding field).
pub fn telemetry(seq: u64, size: usize) -> Vec<u8> {
    let head = format!(r#"{{"ts":{},"seq":{seq},"in":3,"out":1"#, unix_ms());
    const PAD_FRAME: usize = r#","pad":""}"#.len();
    let mut payload = head.into_bytes();
    if size <= payload.len() + 1 {
        payload.push(b'}');
        return payload;
    }
    let pad = size.saturating_sub(payload.len() + PAD_FRAME);
    payload.extend_from_slice(br#","pad":""#);
    payload.resize(payload.len() + pad, b'x');
    payload.extend_from_slice(br#""}"#);
    payload
}

/// Publishes events at `rate` per second until `stop` fires, recording in
/// `pending` when each went out.
pub async fn publish_events(
    client: AsyncClient,
    topic: String,
    rate: f64,
    pending: PendingEvents,
    counters: Arc<Counters>,
    stop: tokio_util::sync::CancellationToken,
) {
    let period = per_message(rate);
    let started = tokio::time::Instant::now();
    // The hub stores each (device, id) once: ids unique to this run make
    // every event a new one, stored and fsynced, not a duplicate.
    let run = unix_ms();
    for seq in 1u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(started + period.mul_f64((seq - 1) as f64)) => {}
        }
        let id = format!("bench-{run}-{seq}");
        let payload = format!(
            r#"{{"id":"{id}","ts":{},"seq":{seq},"type":"bench"}}"#,
            unix_ms()
        );
        // invariant: no holder of this lock panics while holding it.
        pending
            .lock()
            .expect("pending events lock")
            .insert(id, Instant::now());
        if client
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await
            .is_err()
        {
            return;
        }
        counters.events_sent.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_contract_telemetry_of_the_asked_size() {
        for size in [0, 30, 50, 64, 100, 1000] {
            let payload = telemetry(7, size);
            let decoded = protocol::Telemetry::decode(&payload).unwrap();
            assert_eq!(decoded.seq, 7);
            assert!(payload.len() <= size.max(60), "size {size}");
        }
        assert_eq!(telemetry(7, 100).len(), 100);
        assert_eq!(telemetry(7, 1000).len(), 1000);
    }

    #[test]
    fn a_count_is_shared_out_exactly() {
        let shares: Vec<u64> = (0..3).map(|i| share(10, 3, i)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        assert_eq!((0..7).map(|i| share(5, 7, i)).sum::<u64>(), 5);
    }
}
