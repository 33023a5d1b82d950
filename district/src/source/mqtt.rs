//! The MQTT source, for brokers other than NATS (EMQX, mosquitto): a
//! persistent session (`clean_session = false`) subscribed to `yz/v1/#`
//! at QoS 1 with manual acknowledgements. The broker keeps what arrives
//! while the district is away and sends again what it did not
//! acknowledge; a PUBACK leaves only after the batch holding the message
//! was applied and fsynced. On a failure the next address is tried.

use std::sync::atomic::Ordering;
use std::time::Duration;

use protocol::upstream::TOPIC_ROOT;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};

use super::{apply, Parts, SessionEnd};
use crate::message::Incoming;

/// How long messages wait for more before their batch is applied.
const GATHER: Duration = Duration::from_millis(20);
/// The largest message accepted.
const MAX_PACKET: usize = 1024 * 1024;

pub(super) async fn session(parts: &Parts, attempt: usize) -> SessionEnd {
    let settings = &parts.settings;
    let endpoint = &settings.endpoints[attempt % settings.endpoints.len()];
    let mut options = MqttOptions::new(&settings.consumer, &endpoint.host, endpoint.port);
    options
        .set_clean_session(false)
        .set_keep_alive(settings.keepalive)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some((user, password)) = &settings.credentials {
        options.set_credentials(user, password);
    }
    // Room for every ack of a batch and the subscription.
    let (client, mut eventloop) = AsyncClient::new(options, settings.batch * 2 + 8);
    eventloop
        .network_options
        .set_connection_timeout(settings.connect_timeout.as_secs().max(1));
    let mut pending: Vec<Publish> = Vec::new();
    loop {
        let event = tokio::select! {
            _ = parts.stop.cancelled() => return SessionEnd::Stopped,
            event = poll(&mut eventloop, !pending.is_empty()) => event,
        };
        let quiet = matches!(event, Polled::Quiet);
        match event {
            Polled::Event(Event::Incoming(Packet::Publish(publish))) => pending.push(publish),
            Polled::Event(Event::Incoming(Packet::ConnAck(_))) => {
                let filter = format!("{TOPIC_ROOT}/#");
                if let Err(error) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                    return SessionEnd::Retry(format!("subscribe: {error}"));
                }
            }
            Polled::Event(Event::Incoming(Packet::SubAck(_))) => {
                parts.intake.metrics.source_connected.set(1);
                parts.ready.store(true, Ordering::Relaxed);
                tracing::info!(broker = %format!("{}:{}", endpoint.host, endpoint.port), "consuming");
            }
            Polled::Event(_) => {}
            Polled::Quiet => {}
            Polled::Failed(error) => return SessionEnd::Retry(format!("mqtt: {error}")),
        }
        if !pending.is_empty() && (quiet || pending.len() >= settings.batch) {
            if let Err(end) = apply_and_ack(parts, &client, std::mem::take(&mut pending)).await {
                return end;
            }
        }
    }
}

enum Polled {
    Event(Event),
    /// Nothing for `GATHER` while messages wait.
    Quiet,
    Failed(rumqttc::ConnectionError),
}

async fn poll(eventloop: &mut EventLoop, waiting: bool) -> Polled {
    let polled = match waiting {
        true => match tokio::time::timeout(GATHER, eventloop.poll()).await {
            Ok(polled) => polled,
            Err(_) => return Polled::Quiet,
        },
        false => eventloop.poll().await,
    };
    match polled {
        Ok(event) => Polled::Event(event),
        Err(error) => Polled::Failed(error),
    }
}

async fn apply_and_ack(
    parts: &Parts,
    client: &AsyncClient,
    batch: Vec<Publish>,
) -> Result<(), SessionEnd> {
    let incoming = batch
        .iter()
        .map(|p| Incoming {
            topic: p.topic.clone(),
            payload: p.payload.to_vec(),
        })
        .collect();
    apply(&parts.intake, incoming).await?;
    for publish in &batch {
        client
            .try_ack(publish)
            .map_err(|error| SessionEnd::Retry(format!("ack: {error}")))?;
    }
    Ok(())
}
