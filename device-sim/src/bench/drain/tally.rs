//! The district's side of the drain bench: one persistent-session QoS 1
//! subscriber on the upstream broker (`yz/v1/#`) that tallies every
//! message by its id — distinct, duplicates (at least once allows them;
//! consumers drop them by id), per class — and, for the checks against
//! the bench's own ground truth, each device's raw telemetry and event
//! `seq`s.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde::Deserialize;

use super::DrainError;

/// The subscriber's client id on the upstream broker.
const CLIENT_ID: &str = "drain-bench-district";
/// How long the subscription may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the tally reads of a payload (docs/upstream.md).
#[derive(Deserialize)]
struct Head {
    id: String,
    device: Option<String>,
    /// Raw telemetry's `seq`.
    seq: Option<u64>,
    event: Option<EventHead>,
}

#[derive(Deserialize)]
struct EventHead {
    seq: Option<u64>,
}

/// One device's distinct messages of a class, and the highest `seq` seen:
/// a device that sends `seq` 1, 2, 3, … has lost none when they are equal.
#[derive(Debug, Clone, Copy, Default)]
struct Seqs {
    distinct: u64,
    highest: u64,
}

/// What the tally holds.
#[derive(Default)]
struct State {
    /// Copies received per message id.
    copies: HashMap<String, u32>,
    /// Distinct messages per class (the topic after `{center}/{device}/`).
    classes: BTreeMap<String, u64>,
    telemetry: HashMap<String, Seqs>,
    events: HashMap<String, Seqs>,
    /// Payloads without an id.
    unreadable: u64,
}

/// Messages received so far, duplicates included, and distinct ones;
/// read without the tally's lock.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<(AtomicU64, AtomicU64)>);

impl Arrivals {
    pub fn get(&self) -> (u64, u64) {
        (
            self.0 .0.load(Ordering::Relaxed),
            self.0 .1.load(Ordering::Relaxed),
        )
    }
}

/// The tally at the end of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counted {
    pub received: u64,
    pub distinct: u64,
    pub duplicates: u64,
    /// Distinct messages per class.
    pub classes: BTreeMap<String, u64>,
    /// Distinct raw telemetry messages, and the `seq`s missing below each
    /// device's highest.
    pub telemetry: u64,
    pub telemetry_gaps: u64,
    /// Distinct events, and the `seq`s missing below each device's highest.
    pub events: u64,
    pub event_gaps: u64,
    pub unreadable: u64,
}

/// The subscriber; its event loop runs in a task.
pub struct Tally {
    state: Arc<Mutex<State>>,
    arrivals: Arrivals,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Tally {
    /// Connects to the broker on `port` as `username`, subscribes to
    /// `yz/v1/#` at QoS 1 with a persistent session and waits for the
    /// SUBACK.
    pub async fn connect(port: u16, username: &str, password: &str) -> Result<Tally, DrainError> {
        let mut options = MqttOptions::new(CLIENT_ID, "127.0.0.1", port);
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30))
            .set_credentials(username, password)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        client
            .subscribe("yz/v1/#", QoS::AtLeastOnce)
            .await
            .map_err(|e| DrainError::Subscriber(e.to_string()))?;
        let state = Arc::new(Mutex::new(State::default()));
        let arrivals = Arrivals::default();
        let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        keep(&state, &arrivals, &publish.topic, &publish.payload);
                    }
                    Ok(_) => {}
                    Err(error) => return Err(error.to_string()),
                }
            }
        })
        .await;
        match subscribed {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(DrainError::Subscriber(reason)),
            Err(_) => return Err(DrainError::Subscriber("no SUBACK within 10 s".into())),
        }
        let task = tokio::spawn(drive(eventloop, Arc::clone(&state), arrivals.clone()));
        Ok(Tally {
            state,
            arrivals,
            _client: client,
            task,
        })
    }

    pub fn arrivals(&self) -> Arrivals {
        self.arrivals.clone()
    }

    /// The tally so far.
    pub fn counted(&self) -> Counted {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        count(&state, &self.arrivals)
    }
}

fn count(state: &State, arrivals: &Arrivals) -> Counted {
    let (received, distinct) = arrivals.get();
    let gaps = |seqs: &HashMap<String, Seqs>| {
        seqs.values()
            .map(|s| s.highest.saturating_sub(s.distinct))
            .sum()
    };
    let distinct_of = |seqs: &HashMap<String, Seqs>| seqs.values().map(|s| s.distinct).sum();
    Counted {
        received,
        distinct,
        duplicates: received.saturating_sub(distinct + state.unreadable),
        classes: state.classes.clone(),
        telemetry: distinct_of(&state.telemetry),
        telemetry_gaps: gaps(&state.telemetry),
        events: distinct_of(&state.events),
        event_gaps: gaps(&state.events),
        unreadable: state.unreadable,
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(mut eventloop: EventLoop, state: Arc<Mutex<State>>, arrivals: Arrivals) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                keep(&state, &arrivals, &publish.topic, &publish.payload);
            }
            Ok(_) => {}
            // rumqttc connects again on the next poll (same session).
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The class of an upstream topic: what follows `yz/v1/{center}/{device}/`
/// (`event`, `telemetry/raw`, …) or `yz/v1/{center}/` (`booking`, `visits`).
fn class(topic: &str) -> &str {
    let rest = topic.strip_prefix("yz/v1/").unwrap_or(topic);
    let mut levels = rest.splitn(3, '/');
    let (_center, second, third) = (levels.next(), levels.next(), levels.next());
    third.or(second).unwrap_or(rest)
}

fn keep(state: &Mutex<State>, arrivals: &Arrivals, topic: &str, payload: &[u8]) {
    arrivals.0 .0.fetch_add(1, Ordering::Relaxed);
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let Ok(head) = serde_json::from_slice::<Head>(payload) else {
        state.unreadable += 1;
        return;
    };
    let copies = state.copies.entry(head.id).or_insert(0);
    *copies += 1;
    if *copies > 1 {
        return;
    }
    arrivals.0 .1.fetch_add(1, Ordering::Relaxed);
    let class = class(topic);
    *state.classes.entry(class.to_string()).or_insert(0) += 1;
    let seq = match class {
        "telemetry/raw" => head.seq.map(|seq| (seq, &mut state.telemetry)),
        "event" => head
            .event
            .and_then(|e| e.seq)
            .map(|seq| (seq, &mut state.events)),
        _ => None,
    };
    if let (Some((seq, devices)), Some(device)) = (seq, head.device) {
        let seqs = devices.entry(device).or_default();
        seqs.distinct += 1;
        seqs.highest = seqs.highest.max(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_what_follows_the_device_or_the_center() {
        for (topic, expected) in [
            ("yz/v1/c1/d1/event", "event"),
            ("yz/v1/c1/d1/telemetry/raw", "telemetry/raw"),
            ("yz/v1/c1/d1/telemetry", "telemetry"),
            ("yz/v1/c1/booking", "booking"),
            ("yz/v1/c1/visits", "visits"),
        ] {
            assert_eq!(class(topic), expected, "{topic}");
        }
    }

    #[test]
    fn duplicates_count_once_and_missing_seqs_show_as_gaps() {
        let state = Mutex::new(State::default());
        let arrivals = Arrivals::default();
        let raw = |seq: u64| {
            format!(r#"{{"id":"h/tr/d1/{seq}/9","device":"d1","seq":{seq},"fields":{{}}}}"#)
        };
        for seq in [1, 2, 2, 4] {
            keep(
                &state,
                &arrivals,
                "yz/v1/c/d1/telemetry/raw",
                raw(seq).as_bytes(),
            );
        }
        let event = r#"{"id":"h/ev/e1/x-1","device":"e1","event":{"id":"x-1","seq":1}}"#;
        keep(&state, &arrivals, "yz/v1/c/e1/event", event.as_bytes());
        keep(&state, &arrivals, "yz/v1/c/e1/event", b"not json");
        let counted = count(&state.lock().unwrap(), &arrivals);
        assert_eq!((counted.received, counted.distinct), (6, 4));
        assert_eq!(counted.duplicates, 1);
        assert_eq!((counted.telemetry, counted.telemetry_gaps), (3, 1));
        assert_eq!((counted.events, counted.event_gaps), (1, 0));
        assert_eq!(counted.classes["telemetry/raw"], 3);
        assert_eq!(counted.unreadable, 1);
    }
}
