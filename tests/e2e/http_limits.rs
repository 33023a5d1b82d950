//! The API's HTTP limits and TLS (issue 13, item 3): slowloris does not
//! delay a normal request and its connections are closed by the header
//! timeout; a request trickling its body meets the request timeout; bodies
//! over a route's limit are 413; with `api.tls` the API answers over https
//! with the hub's certificate, and plain HTTP gets nothing.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The header timeout of the slowloris hub.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const SLOW_CONNECTIONS: usize = 100;

fn hub_with(api_config: &str) -> HubOptions {
    HubOptions {
        api_config: api_config.into(),
        ..HubOptions::default()
    }
}

/// `host:port` of the hub's API.
fn address(hub: &HubProcess) -> String {
    hub.api.rsplit("://").next().unwrap_or_default().to_string()
}

/// The median time of `count` normal requests in a row (an authenticated
/// list, read to its end), and the slowest.
async fn latency(hub: &HubProcess, count: usize) -> Result<(Duration, Duration)> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let response = hub.get("/api/v1/devices").send().await?;
        ensure!(response.status() == 200, "{}", response.status());
        response.bytes().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok((times[count / 2], times[count - 1]))
}

/// A slowloris client: connects, says so on `connected`, then sends a
/// request's headers one byte a second, never finishing them. How long the
/// hub kept the connection open.
async fn slow_client(addr: String, connected: tokio::sync::mpsc::Sender<()>) -> Result<Duration> {
    let stream = TcpStream::connect(&addr).await?;
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let head = b"GET /api/v1/devices HTTP/1.1\r\nHost: hub\r\nX-Slow: ";
    let trickle = async move {
        for (sent, byte) in head.iter().chain(std::iter::repeat(&b'a')).enumerate() {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            if sent == 0 {
                let _ = connected.send(()).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let mut buf = [0u8; 256];
    let closed = async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = closed => {}
        () = trickle => {}
        () = tokio::time::sleep(HEADER_TIMEOUT * 5) => anyhow::bail!("still open after 10 s"),
    }
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_delay_a_normal_request_and_is_closed_by_the_header_timeout(
) -> Result<()> {
    let hub = HubProcess::start(hub_with("header_read_timeout_ms = 2000")).await?;
    latency(&hub, 5).await?; // warm: the client's connection, the hub's pages
    let (before, before_max) = latency(&hub, 20).await?;

    let (connected, mut connections) = tokio::sync::mpsc::channel(SLOW_CONNECTIONS);
    let slow: Vec<_> = (0..SLOW_CONNECTIONS)
        .map(|_| tokio::spawn(slow_client(address(&hub), connected.clone())))
        .collect();
    for _ in 0..SLOW_CONNECTIONS {
        connections.recv().await.context("a slow client failed")?;
    }
    let (during, during_max) = latency(&hub, 20).await?;
    println!(
        "median request {before:?} alone (slowest {before_max:?}), {during:?} beside \
         {SLOW_CONNECTIONS} slowloris connections (slowest {during_max:?})"
    );
    assert!(
        during.saturating_sub(before) < Duration::from_millis(100),
        "a normal request took {during:?} beside slowloris, {before:?} without"
    );

    let mut held = Vec::new();
    for client in slow {
        held.push(client.await??);
    }
    held.sort();
    let (first, last) = (held[0], held[held.len() - 1]);
    println!("slow connections closed after {first:?} to {last:?}");
    assert!(
        first >= HEADER_TIMEOUT - Duration::from_millis(100),
        "closed before the header timeout: {first:?}"
    );
    assert!(
        last <= HEADER_TIMEOUT + Duration::from_secs(2),
        "a slow connection was held {last:?}"
    );
    // The hub still answers at once.
    latency(&hub, 3).await?;
    Ok(())
}

/// The status line's code of what the hub answered on `stream`, and the
/// answer.
async fn answer(stream: &mut TcpStream) -> Result<(u16, String)> {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes))
        .await
        .context("no answer within 5 s")??;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line: {text:?}"))?;
    Ok((status, text))
}

#[tokio::test]
async fn a_trickled_body_meets_the_request_timeout_and_bodies_over_a_routes_limit_are_413(
) -> Result<()> {
    let hub = HubProcess::start(hub_with("request_timeout_ms = 300")).await?;
    let mut stream = TcpStream::connect(address(&hub)).await?;
    let head = format!(
        "POST /api/v1/residents HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 64\r\nConnection: close\r\n\r\n{{\"id\""
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await?;
    let (status, text) = answer(&mut stream).await?;
    let waited = started.elapsed();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("api.request_timeout_ms"), "{text}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    let credential = "q".repeat(20_000);
    let body = serde_json::json!({ "id": "r1", "credential": credential });
    let response = hub.post("/api/v1/residents").json(&body).send().await?;
    assert_eq!(response.status(), 413, "16 KiB for a resident");
    // A resource's entry may be larger: read, then refused for what it
    // holds, not for its size; past 64 KiB it is 413 too.
    for (padding, expected) in [(20_000, 422), (70_000, 413)] {
        let body = format!("{{}}{}", " ".repeat(padding));
        let response = hub
            .put("/api/v1/resources/big")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        assert_eq!(response.status(), expected, "{padding} bytes");
    }
    Ok(())
}

#[tokio::test]
async fn with_tls_the_api_answers_over_https_with_the_hubs_certificate() -> Result<()> {
    let hub = HubProcess::start(HubOptions {
        api_tls: true,
        api_config: "header_read_timeout_ms = 1000".into(),
        ..HubOptions::default()
    })
    .await?;
    assert!(hub.api.starts_with("https://"), "{}", hub.api);
    let (addr, ca) = (
        address(&hub),
        std::fs::read_to_string(hub.data_dir().join("ca.pem"))?,
    );
    let (status, body) =
        https_request(&addr, &ca, "GET", "/api/v1/devices", Some(ADMIN_TOKEN)).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"devices\""), "{body}");
    let (status, _) = https_request(&addr, &ca, "GET", "/api/v1/devices", None).await?;
    assert_eq!(status, 401);

    let plain = reqwest::get(format!("http://{addr}/readyz")).await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");

    // A connection that never starts its handshake is closed by the
    // header timeout.
    let mut idle = TcpStream::connect(&addr).await?;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open after 5 s"
    );
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(3),
        "{held:?}"
    );
    Ok(())
}
