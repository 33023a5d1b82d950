//! Issue 9, part 3: the hub knows when it is broken. With the test-only
//! fault switch each supervised component in turn panics (or fails) while
//! a real device keeps sending events: `/readyz` answers 503 naming it,
//! `yizhan_component_up` reads 0, the process exits with status 3 within
//! 5 s, and after a restart every event the hub acknowledged is stored.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use protocol::{Channel, DeviceKind};
use serde_json::{json, Value};
use tests::*;

/// The hub's exit status when a component went down.
const COMPONENT_DOWN: i32 = 3;
/// Events acknowledged before the fault fires.
const BEFORE: usize = 20;

#[tokio::test]
async fn an_ingest_panic_stops_the_hub_and_loses_no_acknowledged_event() -> Result<()> {
    check_fault("ingest", "panic").await
}

#[tokio::test]
async fn an_ingest_error_stops_the_hub_and_loses_no_acknowledged_event() -> Result<()> {
    check_fault("ingest", "error").await
}

#[tokio::test]
async fn a_commit_panic_stops_the_hub_and_loses_no_acknowledged_event() -> Result<()> {
    check_fault("commit", "panic").await
}

#[tokio::test]
async fn a_desk_panic_stops_the_hub_and_loses_no_acknowledged_event() -> Result<()> {
    check_fault("desk", "panic").await
}

#[tokio::test]
async fn a_webhook_panic_stops_the_hub_and_loses_no_acknowledged_event() -> Result<()> {
    check_fault("webhook", "panic").await
}

#[tokio::test]
async fn a_webhook_error_stops_the_hub_and_loses_no_acknowledged_event() -> Result<()> {
    check_fault("webhook", "error").await
}

#[tokio::test]
async fn an_edge_acceptor_panic_stops_the_hub_and_loses_no_acknowledged_event() -> Result<()> {
    check_fault("edge_devices", "panic").await
}

#[tokio::test]
async fn an_api_panic_stops_the_hub_and_loses_no_acknowledged_event() -> Result<()> {
    check_fault("api", "panic").await
}

#[tokio::test]
async fn an_uplink_panic_stops_the_hub_and_loses_no_acknowledged_event() -> Result<()> {
    // An upstream that is not there: the forwarder waits between attempts.
    let uplink = "[uplink]\nenabled = true\nurls = [\"mqtt://127.0.0.1:1\"]\n";
    check_fault_with("uplink", "panic", uplink).await
}

async fn check_fault(component: &str, mode: &str) -> Result<()> {
    check_fault_with(component, mode, "").await
}

/// Starts a hub (with `extra` configuration) whose `component` fails
/// (`mode`) on SIGUSR1, acknowledges events, fires the fault while the
/// device keeps sending, watches the hub report and exit, restarts it and
/// looks for every acknowledged event.
async fn check_fault_with(component: &str, mode: &str, extra: &str) -> Result<()> {
    let webhook = WebhookSink::start(0).await?;
    let mut hub = HubProcess::start(HubOptions {
        extra_config: format!("[schedule]\nwebhook_url = {:?}\n{extra}", webhook.url),
        env: vec![("YIZHAN_TEST_FAULT".into(), format!("{component}:{mode}"))],
        ..HubOptions::default()
    })
    .await?;
    let labels = format!("component=\"{component}\"");
    assert_eq!(hub.metric("yizhan_component_up", &labels).await?, 1.0);
    let creds = hub.provision("piano1", DeviceKind::Piano).await?;
    let device = TestDevice::online(&creds, hub.mqtt_port, DeviceKind::Piano).await?;
    let mut events = Events::new(device);
    for _ in 0..BEFORE {
        events.send().await;
    }
    events.acknowledged(BEFORE, Duration::from_secs(10)).await?;

    hub.signal("USR1")?;
    let fired = Instant::now();
    let readiness = events.send_until_not_ready(&hub).await?;
    if component == "api" {
        // The API's accept loop is gone: no new connection is answered. A
        // keep-alive connection opened before may still get the 503, and
        // then it must name the API.
        if let Some(body) = readiness {
            assert_eq!(body["down"][0]["component"], json!("api"), "{body}");
        }
    } else {
        let body = readiness.with_context(|| format!("no 503 before exit:\n{}", hub.log()))?;
        assert_eq!(body["down"][0]["component"], json!(component), "{body}");
        let up = hub.metric("yizhan_component_up", &labels).await?;
        assert_eq!(up, 0.0, "yizhan_component_up{{{labels}}}");
    }
    let (status, _) = hub.wait_exit(Duration::from_secs(10)).await?;
    let took = fired.elapsed();
    assert_eq!(
        status.code(),
        Some(COMPONENT_DOWN),
        "{status:?}\n{}",
        hub.log()
    );
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    let named = format!("components down: {component} ");
    let log = hub.log();
    let said = log
        .lines()
        .any(|l| l.starts_with("hub: ") && l.contains(&named));
    assert!(said, "no exit message naming {component}:\n{log}");

    hub.options_mut().env.clear();
    hub.restart().await?;
    let stored = stored_event_ids(&hub, "piano1").await?;
    let lost: Vec<_> = events.acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(events.acked.len() >= BEFORE);
    Ok(())
}

/// A device sending events `ev1`, `ev2`, … and the ids the hub acked.
struct Events {
    device: TestDevice,
    sent: u64,
    acked: HashSet<String>,
}

impl Events {
    fn new(device: TestDevice) -> Events {
        Events {
            device,
            sent: 0,
            acked: HashSet::new(),
        }
    }

    /// Publishes the next event; a hub that is going away may refuse it.
    async fn send(&mut self) {
        self.sent += 1;
        let id = format!("ev{}", self.sent);
        let body = json!({ "keys": self.sent % 88 });
        let _ = self
            .device
            .event(&id, self.sent, "key_activity", body)
            .await;
    }

    /// Records the acks that arrived so far.
    fn take_acks(&mut self) -> Result<()> {
        let topic = self.device.topic(Channel::EventAck);
        while let Ok(event) = self.device.events.try_recv() {
            if let DeviceEvent::Message { topic: t, payload } = event {
                if t == topic {
                    let ack: protocol::EventAck = serde_json::from_slice(&payload)?;
                    self.acked.insert(ack.id);
                }
            }
        }
        Ok(())
    }

    /// Waits until `count` events are acknowledged.
    async fn acknowledged(&mut self, count: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            self.take_acks()?;
            if self.acked.len() >= count {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("{} of {count} events acknowledged", self.acked.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Keeps sending (the commit thread meets its fault with the next
    /// batch) and polls `/readyz` until it answers 503 (its body) or the
    /// API is gone (`None`).
    async fn send_until_not_ready(&mut self, hub: &HubProcess) -> Result<Option<Value>> {
        let http = reqwest::Client::new();
        let readyz = format!("{}/readyz", hub.api);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            self.send().await;
            self.take_acks()?;
            match http.get(&readyz).send().await {
                Ok(response) if response.status() == 503 => {
                    return Ok(Some(response.json().await?));
                }
                Ok(response) => anyhow::ensure!(response.status() == 200, "{response:?}"),
                Err(_) => return Ok(None),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("/readyz still answers 200:\n{}", hub.log())
    }
}

async fn stored_event_ids(hub: &HubProcess, device: &str) -> Result<HashSet<String>> {
    let list = hub
        .get_json(&format!("/api/v1/devices/{device}/events"))
        .await?;
    let events = list["events"].as_array().context("events")?;
    Ok(events
        .iter()
        .filter_map(|e| e["event"]["id"].as_str().map(String::from))
        .collect())
}
