//! Time for a hub whose store holds N twins (default 1,000,000) to start
//! until ready (`Hub::start` returned: store opened, broker, front, ingest
//! and API up). `cargo bench -p hub --bench store_open -- [N]`

use std::time::Instant;

use hub::records::{DeviceRecord, Twin};
use hub::settings::{Config, Settings};
use hub::store::Store;
use protocol::DeviceKind;

fn main() -> anyhow::Result<()> {
    let twins: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let filled = Instant::now();
    fill(&dir.path().join("db"), twins)?;
    println!(
        "filled {twins} twins in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.broker.listen = "127.0.0.1:0".parse()?;
    config.api.listen = "127.0.0.1:0".parse()?;
    config.api.admin_token_sha256 = hub::secrets::sha256_hex("bench-token-0123456789");
    let start = Instant::now();
    let hub = runtime.block_on(hub::Hub::start(Settings::parse(config)?))?;
    let ready = start.elapsed();
    println!("ready with {twins} twins in {:.3} s", ready.as_secs_f64());
    runtime.block_on(hub.run_until(async {}))?;
    Ok(())
}

fn fill(path: &std::path::Path, count: usize) -> anyhow::Result<()> {
    let store = Store::open(path)?;
    let mut batch = Vec::with_capacity(10_000);
    for n in 0..count {
        let record = DeviceRecord {
            id: format!("c{:04}dev{n:07}", n / 10_000),
            center: format!("center{:04}", n / 10_000),
            room: "room1".into(),
            kind: DeviceKind::ALL[n % 4],
            password_sha256: String::new(),
            certificate_sha256: String::new(),
            not_after: 0,
            provisioned_at: 0,
            previous_certificate: None,
        };
        let mut twin = Twin::provisioned(&record);
        twin.apply_telemetry(&protocol::Telemetry {
            ts: 1,
            seq: 1,
            fields: vec![("temp_c".into(), protocol::FieldValue::Number(21.5))],
        });
        batch.push(twin);
        if batch.len() == 10_000 {
            store.put_twins(batch.iter())?;
            batch.clear();
        }
    }
    store.put_twins(batch.iter())?;
    store.flush()?;
    Ok(())
}
