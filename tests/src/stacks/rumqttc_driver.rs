//! rumqttc, in this process: a task polls the event loop and takes the
//! plan's steps as their acknowledgements arrive. It never reconnects.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Result;
use rumqttc::{
    AsyncClient, ConnectionError, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::sync::mpsc::UnboundedSender;

use super::{End, Event, Message, Plan};

pub fn start(plan: &Plan, tx: UnboundedSender<Event>) -> Result<End> {
    let mut options = MqttOptions::new(plan.client_id.clone(), plan.host.clone(), plan.port);
    options
        .set_max_packet_size(256 * 1024, 256 * 1024)
        .set_keep_alive(Duration::from_secs(plan.keepalive.into()))
        .set_clean_session(plan.clean_session)
        .set_credentials(plan.username.clone(), plan.password.clone())
        .set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca: std::fs::read(&plan.ca)?,
            alpn: None,
            client_auth: Some((std::fs::read(&plan.cert)?, std::fs::read(&plan.key)?)),
        }));
    if let Some(will) = &plan.will {
        let will = LastWill::new(
            will.topic.clone(),
            will.payload.clone(),
            qos(will.qos),
            will.retain,
        );
        options.set_last_will(will);
    }
    let (client, eventloop) = AsyncClient::new(options, 16);
    let steps = Steps {
        client: client.clone(),
        subscribe: plan.subscribe.clone(),
        publish: plan.publish.iter().cloned().collect(),
        stay: plan.stay,
    };
    let task = tokio::spawn(drive(eventloop, steps, tx));
    Ok(End::Task { task, client })
}

fn qos(qos: u8) -> QoS {
    match qos {
        0 => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// What is left of the plan.
struct Steps {
    client: AsyncClient,
    subscribe: Vec<String>,
    publish: VecDeque<Message>,
    stay: bool,
}

impl Steps {
    /// After CONNACK: subscribe, or go on.
    fn connected(&mut self) {
        if self.subscribe.is_empty() {
            return self.next();
        }
        let filters = self
            .subscribe
            .iter()
            .map(|topic| SubscribeFilter::new(topic.clone(), QoS::AtLeastOnce));
        let _ = self.client.try_subscribe_many(filters);
    }

    /// After an acknowledgement: the next publish, or leave.
    fn next(&mut self) {
        match self.publish.pop_front() {
            Some(m) => {
                let _ = self
                    .client
                    .try_publish(m.topic, qos(m.qos), m.retain, m.payload);
            }
            None if !self.stay => {
                let _ = self.client.try_disconnect();
            }
            None => {}
        }
    }
}

async fn drive(mut eventloop: EventLoop, mut steps: Steps, tx: UnboundedSender<Event>) {
    let mut connected = false;
    let mut leaving = false;
    loop {
        let polled = match leaving {
            // After DISCONNECT the hub closes the socket; do not wait long.
            true => tokio::time::timeout(Duration::from_secs(1), eventloop.poll())
                .await
                .unwrap_or(Err(ConnectionError::RequestsDone)),
            false => eventloop.poll().await,
        };
        let event = match polled {
            Ok(rumqttc::Event::Incoming(incoming)) => match incoming {
                Incoming::ConnAck(ack) => {
                    connected = true;
                    steps.connected();
                    Event::Connack {
                        code: ack.code as u8,
                        session_present: Some(ack.session_present),
                    }
                }
                Incoming::SubAck(_) => {
                    steps.next();
                    Event::Suback
                }
                Incoming::PubAck(_) => {
                    steps.next();
                    Event::Puback
                }
                Incoming::Publish(publish) => Event::Message {
                    topic: publish.topic.clone(),
                    payload: Some(String::from_utf8_lossy(&publish.payload).into_owned()),
                    retain: publish.retain,
                },
                _ => continue,
            },
            Ok(rumqttc::Event::Outgoing(Outgoing::Publish(0))) => {
                steps.next();
                Event::Sent
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect)) => {
                leaving = true;
                continue;
            }
            Ok(_) => continue,
            Err(_) if leaving => break,
            Err(ConnectionError::ConnectionRefused(code)) => {
                let _ = tx.send(Event::Connack {
                    code: code as u8,
                    session_present: Some(false),
                });
                break;
            }
            Err(error) if connected => {
                let _ = tx.send(Event::Closed {
                    reason: error.to_string(),
                });
                break;
            }
            Err(error) => {
                let _ = tx.send(Event::Failed {
                    error: error.to_string(),
                });
                break;
            }
        };
        let _ = tx.send(event);
    }
    let _ = tx.send(Event::Exited);
}
