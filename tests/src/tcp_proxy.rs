//! A TCP relay the test can cut and restore: the uplink's network to its
//! upstream broker going dark for a while.

use anyhow::Result;
use tokio::io::copy;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Relays connections to `127.0.0.1:upstream_port`. `cut` makes the
/// network dark: nothing passes either way and sockets stay open (no
/// reset, no FIN), new connections are accepted and then hear nothing.
/// `restore` closes the connections from before it and lets new ones
/// through. Dropped: every connection is closed.
pub struct TcpProxy {
    pub port: u16,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream_port: u16) -> Result<TcpProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (cut, watch) = watch::channel(false);
        let task = tokio::spawn(accept(listener, upstream_port, watch));
        Ok(TcpProxy { port, cut, task })
    }

    /// The network goes dark.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// The network is back: connections from the dark are closed.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// `mqtt://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The accept task owns the connections' set: aborting it closes them.
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream_port: u16, cut: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { return };
                connections.spawn(relay(client, upstream_port, cut.clone()));
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// One connection: relayed until either side closes or the network goes
/// dark; a dark connection is held open and silent, then closed when the
/// network is back.
async fn relay(client: TcpStream, upstream_port: u16, mut cut: watch::Receiver<bool>) {
    if *cut.borrow() {
        let _ = cut.wait_for(|dark| !*dark).await;
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let dark = tokio::select! {
        _ = copy(&mut client_read, &mut server_write) => false,
        _ = copy(&mut server_read, &mut client_write) => false,
        _ = cut.wait_for(|dark| *dark) => true,
    };
    if dark {
        let _ = cut.wait_for(|dark| !*dark).await;
    }
}
