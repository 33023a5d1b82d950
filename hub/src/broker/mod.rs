//! The embedded rumqttd router and the hub's in-process links to it.
//!
//! rumqttd's own `Server` is not used: the device edge (`edge`) owns every
//! client socket and builds one router link per session through the
//! `LinkFactory`. What stays rumqttd's: routing, subscriptions, retained
//! messages, QoS 1/2 state, persistent sessions and the tenant prefix
//! (`/tenants/D/`) a device's link is confined to.
//!
//! The hub's links: ingest's (reads every uplink channel, publishes to
//! devices), the `Waker` (only publishes to `WAKE_TOPIC`, which wakes the
//! ingest thread from its wait on the first) and the group-commit thread's
//! (publishes event acks once their batch is durable). And the ingest
//! window (`window`): what the edge may let through towards ingest.

pub mod window;

use std::collections::HashMap;
use std::sync::Arc;

use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::{Notification, Router, RouterConfig};

use protocol::Channel;

use crate::settings::BrokerConfig;

/// Client id of the in-process link. Tools may not use it (or any id
/// starting with `__`): taking it over would kill ingest.
pub const HUB_CLIENT_ID: &str = "__yizhan_hub";
/// Client id of the second in-process link, which only wakes ingest.
const WAKER_CLIENT_ID: &str = "__yizhan_waker";
/// Client id of the third in-process link, which publishes event acks once
/// their batch is durable (`commit`).
const COMMIT_CLIENT_ID: &str = "__yizhan_commit";
/// Topic the waker publishes to and ingest listens on. Devices cannot reach
/// it (they are confined to `/tenants/D/`); ingest never treats it as data.
pub const WAKE_TOPIC: &str = "/hub/wake";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker link: {0}")]
    Link(Box<LinkError>),
}

impl From<LinkError> for BrokerError {
    fn from(error: LinkError) -> Self {
        BrokerError::Link(Box::new(error))
    }
}

/// A running router and the hub's links to it.
pub struct Broker {
    pub link_tx: LinkTx,
    pub link_rx: LinkRx,
    pub waker: Waker,
    /// The group-commit thread's link (publish only).
    pub commit_link: (LinkTx, LinkRx),
    /// Builds the links of client sessions.
    pub links: LinkFactory,
}

/// A session link: its halves and the router's CONNACK.
pub type Link = (LinkTx, LinkRx, Notification);

type BuildLink = dyn Fn(&str, Option<String>, bool) -> Result<Link, Box<LinkError>> + Send + Sync;

/// Builds router links for client sessions. (rumqttd's router handle has
/// a type the crate does not export, so it is kept inside a closure.)
#[derive(Clone)]
pub struct LinkFactory(Arc<BuildLink>);

impl LinkFactory {
    /// A link for `client_id`, confined to `/tenants/{tenant}/` when a
    /// tenant is given. Building waits for the router's answer on a
    /// blocking thread, so a burst of connects never stalls the runtime.
    pub async fn build(
        &self,
        client_id: String,
        tenant: Option<String>,
        clean_session: bool,
    ) -> Result<Link, Box<LinkError>> {
        let build = self.0.clone();
        tokio::task::spawn_blocking(move || build(&client_id, tenant, clean_session))
            .await
            .unwrap_or(Err(Box::new(LinkError::NotConnectionAck)))
    }
}

/// Does a publish on `topic` reach ingest (one of the filters `Ingest`
/// subscribes to: `/tenants/+/{uplink channel}`)? The edge's ingest
/// window counts exactly these.
pub fn reaches_ingest(topic: &str) -> bool {
    let Some(rest) = topic.strip_prefix("/tenants/") else {
        return false;
    };
    let Some((_device, suffix)) = rest.split_once('/') else {
        return false;
    };
    Channel::UPLINK.iter().any(|c| c.suffix() == suffix)
}

/// Wakes the ingest thread out of its wait on the link, so work handed to it
/// from outside (a command issued through the API, an alarm acknowledged)
/// starts at once instead of at its next idle timeout.
pub struct Waker {
    /// std Mutex: held only to publish, never across an await.
    tx: std::sync::Mutex<LinkTx>,
    /// Kept so the router keeps the link.
    _rx: LinkRx,
}

impl Waker {
    pub fn wake(&self) {
        let Ok(mut tx) = self.tx.lock() else {
            return;
        };
        if let Err(error) = tx.publish(WAKE_TOPIC, &b"1"[..]) {
            tracing::warn!(?error, "could not wake ingest");
        }
    }
}

/// Starts the router and the hub's links.
pub fn start(config: &BrokerConfig) -> Result<Broker, BrokerError> {
    let router_tx = Router::new(0, router_config(config)).spawn();
    let link = |id: &str| {
        // The hub's links may publish to a topic nobody subscribed yet (a
        // command to a device that never connected): without dynamic
        // filters the router would disconnect them.
        LinkBuilder::new(id, router_tx.clone())
            .dynamic_filters(true)
            .build()
            .map_err(BrokerError::from)
    };
    let (link_tx, link_rx, _ack) = link(HUB_CLIENT_ID)?;
    let (waker_tx, waker_rx, _ack) = link(WAKER_CLIENT_ID)?;
    let waker = Waker {
        tx: std::sync::Mutex::new(waker_tx),
        _rx: waker_rx,
    };
    let (commit_tx, commit_rx, _ack) = link(COMMIT_CLIENT_ID)?;
    let links = LinkFactory(Arc::new(move |client_id, tenant, clean| {
        // A client publishing where nobody listens is disconnected by the
        // router instead of growing a new in-memory log.
        LinkBuilder::new(client_id, router_tx.clone())
            .tenant_id(tenant)
            .clean_session(clean)
            .dynamic_filters(false)
            .build()
            .map_err(Box::new)
    }));
    Ok(Broker {
        link_tx,
        link_rx,
        waker,
        commit_link: (commit_tx, commit_rx),
        links,
    })
}

fn router_config(config: &BrokerConfig) -> RouterConfig {
    RouterConfig {
        max_connections: config.max_connections,
        max_outgoing_packet_count: 200,
        max_segment_size: config.segment_bytes,
        max_segment_count: config.segment_count,
        custom_segment: Some(downlink_segments()),
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

/// rumqttd keeps a log per filter and drops by size, not by consumption:
/// with the default size every device's `cmd`, `event/ack` and `error`
/// filter could hold megabytes. Downlink traffic per device is small and
/// read at once, so its logs are kept small (a device that falls behind
/// misses acks and resends; commands are retried until acknowledged).
fn downlink_segments() -> HashMap<String, rumqttd::SegmentConfig> {
    [Channel::Cmd, Channel::EventAck, Channel::Error]
        .into_iter()
        .map(|channel| {
            let segment = rumqttd::SegmentConfig {
                max_segment_size: DOWNLINK_SEGMENT_BYTES,
                max_segment_count: 2,
            };
            (channel.filter_all_devices(), segment)
        })
        .collect()
}

/// rumqttd counts a segment's size in topic and payload bytes, but each
/// message costs ~250 B of bookkeeping on top: a full 16 KiB segment of
/// event acks held ~65 KB, and every device's three downlink logs fill up
/// over time. A full 4 KiB segment is ~45 acks or commands, enough for a
/// device that reconnects (open commands are resent by the hub anyway).
const DOWNLINK_SEGMENT_BYTES: usize = 4 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uplink_topics_reach_ingest() {
        for (topic, expect) in [
            ("/tenants/gate1/telemetry", true),
            ("/tenants/gate1/cmd/ack", true),
            ("/tenants/gate1/status", true),
            ("/tenants/gate1/event/ack", false),
            ("/tenants/gate1/cmd", false),
            ("/tenants/gate1/error", false),
            ("/tenants/gate1/telemetry/x", false),
            ("/tenants/telemetry", false),
            ("/hub/wake", false),
            ("other/gate1/telemetry", false),
        ] {
            assert_eq!(reaches_ingest(topic), expect, "{topic}");
        }
    }
}
