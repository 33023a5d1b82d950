//! paho-mqtt (Python) through `tests/conformance/paho_client.py`, which
//! takes the plan as JSON and prints events as JSON lines.

use anyhow::Result;
use tokio::process::Command;
use tokio::sync::mpsc::UnboundedSender;

use super::process::{spawn, Stream};
use super::{End, Event, Plan};

pub fn start(plan: &Plan, tx: UnboundedSender<Event>) -> Result<End> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/paho_client.py");
    let mut command = Command::new("python3");
    command.arg(script).arg(serde_json::to_string(plan)?);
    spawn(command, tx, |stream, line| {
        let event = match stream {
            Stream::Stdout => serde_json::from_str(line).ok(),
            Stream::Stderr => None,
        };
        vec![event.unwrap_or_else(|| Event::Output { line: line.into() })]
    })
}
