//! Ingest throughput against mosquitto in the same run.
//!
//! The same publishers (N rumqttc clients, QoS 0, ~80 B telemetry JSON, at
//! full speed for S seconds) hit (a) the hub, where a message counts once it
//! is decoded, validated and applied to its twin (`yizhan_messages_received_total`),
//! and (b) mosquitto, where it counts once one subscriber on `#` received it.
//! Both over plain TCP on loopback (the hub's tools listener), so TLS cost is
//! left out of both. Alternates hub and mosquitto runs and prints the median.
//!
//! `cargo bench -p hub --bench ingest -- [publishers] [seconds] [runs]`

#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hub::config::{Config, PlainUser};
use mosquitto::MosquittoProcess;
use protocol::api::ProvisionRequest;
use protocol::DeviceKind;
use rumqttc::{AsyncClient, MqttOptions, QoS};

const TOKEN: &str = "bench-admin-token-0123456789";

struct Run {
    sent: u64,
    delivered: u64,
    rate: f64,
}

fn main() -> Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let publishers = *args.first().unwrap_or(&10) as usize;
    let seconds = *args.get(1).unwrap_or(&10);
    let runs = *args.get(2).unwrap_or(&3) as usize;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(bench(publishers, Duration::from_secs(seconds), runs))
}

async fn bench(publishers: usize, window: Duration, runs: usize) -> Result<()> {
    let hub = HubTarget::start(publishers).await?;
    let mosquitto = Mosquitto::start()?;
    let (mut hub_runs, mut peer_runs) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let h = hub.run(publishers, window).await?;
        println!(
            "run {run} hub:       sent {:>9} ingested {:>9} → {:>9.0} msg/s",
            h.sent, h.delivered, h.rate
        );
        let m = mosquitto.run(publishers, window).await?;
        println!(
            "run {run} mosquitto: sent {:>9} delivered {:>8} → {:>9.0} msg/s",
            m.sent, m.delivered, m.rate
        );
        hub_runs.push(h.rate);
        peer_runs.push(m.rate);
    }
    let (hub_median, peer_median) = (median(&mut hub_runs), median(&mut peer_runs));
    println!(
        "median of {runs}: hub {hub_median:.0} msg/s, mosquitto {peer_median:.0} msg/s, ratio {:.2}",
        hub_median / peer_median
    );
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// An in-process hub with its tools listener on, and one provisioned
/// device per publisher.
struct HubTarget {
    plain_port: u16,
    metrics_url: String,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl HubTarget {
    async fn start(publishers: usize) -> Result<HubTarget> {
        let data = tempfile::tempdir()?;
        let plain_port = free_port()?;
        let mut config = Config {
            data_dir: data.path().to_path_buf(),
            ..Config::default()
        };
        config.broker.listen = "127.0.0.1:0".parse()?;
        config.api.listen = "127.0.0.1:0".parse()?;
        config.api.admin_token_sha256 = hub::secrets::sha256_hex(TOKEN);
        config.log.filter = "warn,rumqttd=off".into();
        config.broker.plain.enabled = true;
        config.broker.plain.listen = format!("127.0.0.1:{plain_port}").parse()?;
        config.broker.plain.users = vec![PlainUser {
            username: "bench".into(),
            password_hash: hub::secrets::hash_password("bench")
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        }];
        let hub = hub::Hub::start(config).await?;
        let api = format!("http://{}", hub.api_addr());
        tokio::spawn(hub.run_until(std::future::pending()));
        let http = reqwest::Client::new();
        for n in 0..publishers {
            let request = ProvisionRequest {
                id: format!("bench{n}"),
                center: "bench".into(),
                room: "room1".into(),
                kind: DeviceKind::Counter,
            };
            let response = http
                .post(format!("{api}/api/v1/devices"))
                .bearer_auth(TOKEN)
                .json(&request)
                .send()
                .await?;
            anyhow::ensure!(
                response.status() == 201,
                "provisioning: {}",
                response.status()
            );
        }
        Ok(HubTarget {
            plain_port,
            metrics_url: format!("{api}/metrics"),
            http,
            _data: data,
        })
    }

    async fn ingested(&self) -> Result<u64> {
        let text = self
            .http
            .get(&self.metrics_url)
            .bearer_auth(TOKEN)
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| {
                l.starts_with("yizhan_messages_received_total")
                    && l.contains("channel=\"telemetry\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    async fn run(&self, publishers: usize, window: Duration) -> Result<Run> {
        let before = self.ingested().await?;
        let started = Instant::now();
        let sent = publish_all(
            self.plain_port,
            Some(("bench", "bench")),
            publishers,
            window,
        )
        .await?;
        let (after, ended) = settle(|| self.ingested()).await?;
        let delivered = after - before;
        Ok(Run {
            sent,
            delivered,
            rate: delivered as f64 / (ended - started).as_secs_f64(),
        })
    }
}

/// mosquitto from the Debian package, on a free loopback port, anonymous
/// (loopback only, for this benchmark), with one subscriber on `#`.
struct Mosquitto {
    port: u16,
    received: Arc<AtomicU64>,
    _process: MosquittoProcess,
}

impl Mosquitto {
    fn start() -> Result<Mosquitto> {
        let process = MosquittoProcess::start("")?;
        let port = process.port;
        let received = Arc::new(AtomicU64::new(0));
        let mut options = MqttOptions::new("bench-sub", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let counter = received.clone();
        tokio::spawn(async move {
            let _ = client.subscribe("#", QoS::AtMostOnce).await;
            while let Ok(event) = eventloop.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = event {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Mosquitto {
            port,
            received,
            _process: process,
        })
    }

    async fn run(&self, publishers: usize, window: Duration) -> Result<Run> {
        let before = self.received.load(Ordering::Relaxed);
        let started = Instant::now();
        let sent = publish_all(self.port, None, publishers, window).await?;
        let (after, ended) = settle(|| async { Ok(self.received.load(Ordering::Relaxed)) }).await?;
        let delivered = after - before;
        Ok(Run {
            sent,
            delivered,
            rate: delivered as f64 / (ended - started).as_secs_f64(),
        })
    }
}

/// Waits until `count` stops growing for 500 ms; returns the final count and
/// when it last grew.
async fn settle<F, Fut>(count: F) -> Result<(u64, Instant)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let mut last = count().await?;
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = count().await?;
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_millis(500) {
            return Ok((last, last_change));
        }
    }
}

/// N clients publish telemetry at full speed for `window`; returns how many
/// messages they handed to their sockets.
async fn publish_all(
    port: u16,
    login: Option<(&str, &str)>,
    publishers: usize,
    window: Duration,
) -> Result<u64> {
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for n in 0..publishers {
        let mut options = MqttOptions::new(format!("benchpub{n}"), "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(1000);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let topic = format!("/tenants/bench{n}/telemetry");
            let publisher = async {
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    seq += 1;
                    let payload = format!(
                        r#"{{"ts":1700000000000,"seq":{seq},"in":3,"out":1,"temp_c":21.5}}"#
                    );
                    if client
                        .publish(&topic, QoS::AtMostOnce, false, payload)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                let _ = client.disconnect().await;
            };
            let driver = async {
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => {
                            return
                        }
                        Ok(_) => {}
                    }
                }
            };
            tokio::join!(publisher, driver);
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(sent.load(Ordering::Relaxed))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
