//! The shutdown signal.

/// Completes on the first SIGINT or SIGTERM (logging which); never when
/// the handlers cannot be installed (logged as an error).
pub async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = sigint.recv() => tracing::info!("SIGINT"),
        _ = sigterm.recv() => tracing::info!("SIGTERM"),
    }
}
