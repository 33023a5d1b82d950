//! A TCP relay that can cut a link silently: a network that went dark, not
//! a closed connection.

use anyhow::Result;

/// A TCP relay that can cut a link silently: after `cut`, nothing is
/// forwarded either way but both sockets stay open — a network that went
/// dark, not a closed connection.
pub struct SilentCut {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SilentCut {
    pub async fn start(upstream_port: u16) -> Result<SilentCut> {
        SilentCut::start_on("127.0.0.1", upstream_port).await
    }

    /// A relay listening on `ip` (any loopback address) instead.
    pub async fn start_on(ip: &str, upstream_port: u16) -> Result<SilentCut> {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
        let port = listener.local_addr()?.port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, flag.clone()));
                tokio::spawn(pump(server_read, client_write, flag.clone()));
            }
        });
        Ok(SilentCut { port, cut })
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Keep both halves open and silent for as long as the test runs.
    if cut.load(std::sync::atomic::Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
}
