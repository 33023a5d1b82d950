//! Serving the API's connections. axum's `serve` has no header-read
//! timeout, so a client sending its headers a byte a second (slowloris)
//! held a connection and a file descriptor for as long as it liked. Here:
//!
//! - at most `api.max_connections` connections are served at once; the
//!   accept loop waits for a free place (the rest wait in the kernel's
//!   listen queue), so the API cannot take the file descriptors the device
//!   port needs;
//! - each is served by hyper's HTTP/1.1 with a timer: a request's headers
//!   must arrive within `api.header_read_timeout_ms`, which also closes a
//!   connection idle that long between requests;
//! - with `api.tls`, each connection is TLS first (the hub's server
//!   certificate, no client certificate: callers carry bearer tokens), the
//!   handshake bounded by the same timeout;
//! - when `stop` resolves, no more connections are accepted and each
//!   finishes the request it is serving, then closes; one still sending
//!   its headers is not waited for beyond `DRAIN`.
//!
//! The request timeout and body limits are the router's (`deadline`,
//! `routing`). HTTP/2 is not offered: the API's clients speak HTTP/1.1.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::pki::ServerIdentity;
use crate::settings::HttpSettings;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("API TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// How long a stopping server waits for its connections to finish their
/// requests: requests take milliseconds, and a client still trickling
/// headers must not hold the hub's shutdown (5 s in all).
const DRAIN: Duration = Duration::from_millis(1_000);

/// How long the accept loop pauses after an error that is not one
/// connection's (out of file descriptors): the next accept would fail too.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The TLS side of `api.tls`: the hub's server certificate (the device
/// edge's, signed by the hub's CA), no client certificate, HTTP/1.1.
pub fn tls_acceptor(identity: &ServerIdentity) -> Result<TlsAcceptor, ServeError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(identity.cert.clone())], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `stop` resolves, then lets every
/// connection finish its request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: HttpSettings,
    stop: impl Future<Output = ()>,
) {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = Connection {
        http,
        app,
        tls,
        handshake_timeout: limits.header_read_timeout,
    };
    tokio::pin!(stop);
    loop {
        let place = tokio::select! {
            () = &mut stop => break,
            place = places.clone().acquire_owned() => place,
        };
        // invariant: the semaphore is never closed.
        let place = place.expect("connection places");
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        let (connection, watcher) = (connection.clone(), graceful.watcher());
        tokio::spawn(async move {
            connection.run(stream, watcher).await;
            drop(place);
        });
    }
    drop(listener);
    let open = graceful.count();
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open,
            "API connections still open after the drain; left to close with the process"
        );
    }
}

/// A failed accept: one connection's trouble is logged at debug; anything
/// else (out of file descriptors) is a warning and a pause.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::debug!(%error, "API connection failed before accept");
        return;
    }
    tracing::warn!(%error, "API accept failed; pausing");
    tokio::time::sleep(ACCEPT_PAUSE).await;
}

/// What serving one connection takes.
#[derive(Clone)]
struct Connection {
    http: http1::Builder,
    app: Router,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
}

impl Connection {
    /// Serves one accepted connection (TLS first, when configured).
    async fn run(self, stream: TcpStream, watcher: Watcher) {
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = self.tls.clone() else {
            return self.http(TokioIo::new(stream), watcher).await;
        };
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.http(TokioIo::new(stream), watcher).await,
            Ok(Err(error)) => tracing::debug!(%error, "API TLS handshake failed"),
            Err(_) => tracing::debug!("API TLS handshake timed out"),
        }
    }

    /// HTTP/1.1 over `io` until the client closes, a timeout closes it, or
    /// the server stops.
    async fn http<I>(self, io: I, watcher: Watcher)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(self.app);
        let connection = self.http.serve_connection(io, service);
        if let Err(error) = watcher.watch(connection).await {
            // A header-read timeout, a client gone mid-request, a bad
            // request line: the client's matter.
            tracing::debug!(%error, "API connection closed");
        }
    }
}
