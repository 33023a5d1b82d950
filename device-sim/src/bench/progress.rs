//! The live progress bar (indicatif) on a terminal; nothing otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::connection::Counters;
use super::load::Stop;

/// How often the bar redraws its counts.
const TICK: Duration = Duration::from_millis(200);

/// A progress bar fed from the run's counters by a ticker task.
pub struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// A bar over the publishing phase, drawn only when stderr is a
    /// terminal.
    pub fn start(enabled: bool, stop: Stop, counters: Arc<Counters>) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                ticker: None,
            };
        }
        let (length, template) = match stop {
            Stop::After(window) => (
                window.as_millis() as u64,
                "{elapsed_precise} [{wide_bar}] {msg}",
            ),
            Stop::Count(count) => (count, "{elapsed_precise} [{wide_bar}] {pos}/{len} {msg}"),
        };
        let bar = ProgressBar::new(length);
        // invariant: the templates above are valid.
        bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
        let ticker = tokio::spawn(tick(bar.clone(), stop, counters));
        Progress {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }

    pub fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

async fn tick(bar: ProgressBar, stop: Stop, counters: Arc<Counters>) {
    let started = std::time::Instant::now();
    loop {
        let sent = Counters::get(&counters.sent);
        let position = match stop {
            Stop::After(_) => started.elapsed().as_millis() as u64,
            Stop::Count(_) => sent,
        };
        bar.set_position(position.min(bar.length().unwrap_or(u64::MAX)));
        bar.set_message(format!(
            "sent {sent} ({:.0}/s), acked {}",
            sent as f64 / started.elapsed().as_secs_f64().max(1e-3),
            Counters::get(&counters.acknowledged)
        ));
        tokio::time::sleep(TICK).await;
    }
}
