//! A client stack run as a child process: its stdout and stderr are read
//! line by line and translated into `Event`s; `Exited` follows once both
//! streams are closed.

use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc::UnboundedSender;

use super::{End, Event};

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Spawns `command`; `translate` turns each line into events (it may keep
/// state: lines arrive one at a time, stdout's in order).
pub fn spawn(
    mut command: Command,
    tx: UnboundedSender<Event>,
    translate: impl FnMut(Stream, &str) -> Vec<Event> + Send + 'static,
) -> Result<End> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {command:?}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let translate = std::sync::Arc::new(std::sync::Mutex::new(translate));
    tokio::spawn(async move {
        tokio::join!(
            pump(stdout, Stream::Stdout, translate.clone(), tx.clone()),
            pump(stderr, Stream::Stderr, translate, tx.clone()),
        );
        let _ = tx.send(Event::Exited);
    });
    Ok(End::Process(child))
}

type Translate = std::sync::Arc<std::sync::Mutex<dyn FnMut(Stream, &str) -> Vec<Event> + Send>>;

async fn pump(
    stream: impl AsyncRead + Unpin,
    which: Stream,
    translate: Translate,
    tx: UnboundedSender<Event>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let events = match translate.lock() {
            Ok(mut translate) => translate(which, &line),
            Err(_) => return,
        };
        for event in events {
            let _ = tx.send(event);
        }
    }
}

/// Waits (up to `limit`) until the process sits in its event loop's wait
/// (poll, select or epoll), so that a signal sent next finds it idle.
/// mosquitto_sub's SIGTERM handler calls into libmosquitto (and its
/// logging) from the handler: a signal landing while the client is busy
/// printing or allocating can hang it before it sends DISCONNECT (seen
/// once in a full run, the client silent for 15 s after the signal).
pub async fn until_idle(pid: u32, limit: std::time::Duration) {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until && !waiting_in_event_loop(pid) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Whether the process is blocked in a wait for file descriptors, as
/// `/proc/PID/syscall` reports its current system call (x86_64 numbers:
/// poll 7, select 23, epoll_wait 232, pselect6 270, ppoll 271,
/// epoll_pwait 281, epoll_pwait2 441). Elsewhere: assumed idle.
fn waiting_in_event_loop(pid: u32) -> bool {
    if !cfg!(target_arch = "x86_64") {
        return true;
    }
    let Ok(syscall) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return true;
    };
    let number = syscall.split_whitespace().next().unwrap_or("running");
    matches!(number, "7" | "23" | "232" | "270" | "271" | "281" | "441")
}
