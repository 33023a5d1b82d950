//! Arguments of `device-sim bench` and `device-sim peer-bench`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use device_sim::bench::connect::Pacing;
use device_sim::bench::connection::Broker;
use device_sim::bench::load::{Load, Stop};
use device_sim::bench::peer::{peer_bench as run_peer_bench, table, PeerConfig};
use device_sim::bench::{run, Auth, BenchConfig, HubAccess};
use rumqttc::QoS;

#[derive(Args)]
pub struct BenchArgs {
    /// Broker host (with --mtls a DNS name such as localhost).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port: plain TCP (the hub's tools listener), or with --mtls
    /// the hub's device port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    #[arg(long, default_value = "bench")]
    username: String,
    #[arg(
        long,
        env = "BENCH_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    password: String,
    /// Connect as provisioned devices over mTLS (hub only) instead of
    /// username/password.
    #[arg(long)]
    mtls: bool,
    /// The hub's API base URL: the broker is the hub (devices are
    /// provisioned; received = ingested, from its metrics).
    #[arg(long)]
    api: Option<String>,
    /// The hub's admin token (with --api).
    #[arg(
        long,
        env = "YIZHAN_ADMIN_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
    /// Where provisioned devices' credentials are kept (with --api).
    #[arg(long, default_value = "bench-certs")]
    cert_dir: PathBuf,
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// 0 or 1.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Total messages per second over all connections; full speed if unset.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Publish for this long (ignored with --count).
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// Publish this many messages in total instead of for a duration.
    #[arg(long)]
    count: Option<u64>,
    /// Events per second timed to their ack (hub only; 0: none).
    #[arg(long, default_value_t = 50.0)]
    event_rate: f64,
    /// Connect, stay idle for --duration, publish nothing.
    #[arg(long)]
    idle: bool,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Connections not up by then are given up.
    #[arg(long, default_value = "60s")]
    connect_timeout: humantime::Duration,
    #[arg(long, default_value = "60s")]
    keepalive: humantime::Duration,
    /// Device ids are <prefix><n>.
    #[arg(long, default_value = "bench")]
    id_prefix: String,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    fn into_config(self) -> BenchConfig {
        let hub = self.api.map(|api_url| HubAccess {
            api_url,
            admin_token: self.token,
            cert_dir: self.cert_dir,
        });
        BenchConfig {
            broker: Broker {
                host: self.host,
                port: self.port,
                keepalive: Duration::from_secs(Duration::from(self.keepalive).as_secs()),
            },
            auth: if self.mtls {
                Auth::Devices
            } else {
                Auth::Password {
                    username: self.username,
                    password: self.password,
                }
            },
            hub,
            connections: self.connections,
            pacing: Pacing {
                concurrency: self.connect_concurrency,
                timeout: self.connect_timeout.into(),
            },
            load: Load {
                qos: if self.qos == 1 {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                },
                payload_bytes: self.payload_bytes,
                rate: self.rate,
                stop: match self.count {
                    Some(count) => Stop::Count(count),
                    None => Stop::After(self.duration.into()),
                },
            },
            idle: self.idle,
            event_rate: self.event_rate,
            id_prefix: self.id_prefix,
            progress: !self.json,
        }
    }
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let json = args.json;
    let report = run(&args.into_config()).await.context("bench failed")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

#[derive(Args)]
pub struct PeerArgs {
    /// The hub binary to start (a release build).
    #[arg(long, default_value = "target/release/hub")]
    hub_binary: PathBuf,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Connections of the throughput and latency rows.
    #[arg(long, default_value_t = 10)]
    publishers: usize,
    /// Length of each throughput and latency run.
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Total rate of the PUBACK latency row.
    #[arg(long, default_value_t = 2000.0)]
    fixed_rate: f64,
    /// Connections of the memory and connect-time rows.
    #[arg(long, default_value_t = 5000)]
    idle_connections: usize,
    /// Connects in flight at once in those rows.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Leave out the row of provisioned devices over mTLS.
    #[arg(long)]
    skip_devices: bool,
    /// Also write every figure of every run as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub async fn peer_bench(args: PeerArgs) -> anyhow::Result<()> {
    let config = PeerConfig {
        hub_binary: args.hub_binary,
        runs: args.runs.max(1),
        publishers: args.publishers,
        window: args.duration.into(),
        payload_bytes: args.payload_bytes,
        fixed_rate: args.fixed_rate,
        idle_connections: args.idle_connections,
        pacing: Pacing {
            concurrency: args.connect_concurrency,
            timeout: Duration::from_secs(120),
        },
        devices: !args.skip_devices,
    };
    let result = run_peer_bench(&config)
        .await
        .context("peer benchmark failed")?;
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", table(&result, &config));
    Ok(())
}
