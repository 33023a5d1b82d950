//! The mosquitto command-line clients (Debian `mosquitto-clients`), a
//! client nobody here wrote: `mosquitto_pub` for a plan that publishes,
//! `mosquitto_sub` for one that subscribes. Both run with `-d`, whose
//! debug lines say what went over the wire; `mosquitto_sub` prints each
//! message as JSON (`-F %j`).

use anyhow::{bail, Result};
use serde::Deserialize;
use tokio::process::Command;
use tokio::sync::mpsc::UnboundedSender;

use super::process::{spawn, Stream};
use super::{End, Event, Plan};

pub fn start(plan: &Plan, tx: UnboundedSender<Event>) -> Result<End> {
    if plan.keepalive < super::Stack::Mosquitto.min_keepalive() {
        bail!(
            "mosquitto's clients refuse a keepalive of {}",
            plan.keepalive
        );
    }
    let subscriber = plan.publish.is_empty();
    // Line-buffered: the debug lines go to a pipe and must arrive as they
    // happen, not when the client exits.
    let mut command = Command::new("stdbuf");
    command.arg("-oL");
    command.arg(if subscriber {
        "mosquitto_sub"
    } else {
        "mosquitto_pub"
    });
    command.arg("-d");
    command.args(["-h", &plan.host, "-p", &plan.port.to_string()]);
    command.arg("--cafile").arg(&plan.ca);
    command.arg("--cert").arg(&plan.cert);
    command.arg("--key").arg(&plan.key);
    command.args(["-i", &plan.client_id, "-u", &plan.username]);
    command.args(["-P", &plan.password, "-k", &plan.keepalive.to_string()]);
    if !plan.clean_session {
        command.arg("-c");
    }
    if let Some(will) = &plan.will {
        command.args(["--will-topic", &will.topic, "--will-payload", &will.payload]);
        command.args(["--will-qos", &will.qos.to_string()]);
        if will.retain {
            command.arg("--will-retain");
        }
    }
    if subscriber {
        if plan.subscribe.is_empty() {
            bail!("mosquitto_sub needs a topic to subscribe to");
        }
        for topic in &plan.subscribe {
            command.args(["-t", topic]);
        }
        command.args(["-q", "1", "-F", "%j"]);
        if !plan.stay {
            // Exit (with DISCONNECT) once subscribed.
            command.arg("-E");
        }
    } else {
        let [message] = plan.publish.as_slice() else {
            bail!("mosquitto_pub publishes one message per connection");
        };
        if !plan.subscribe.is_empty() || plan.stay {
            bail!("mosquitto_pub neither subscribes nor stays");
        }
        command.args(["-t", &message.topic, "-m", &message.payload]);
        command.args(["-q", &message.qos.to_string()]);
        if message.retain {
            command.arg("-r");
        }
    }
    let mut connects = 0;
    spawn(command, tx, move |stream, line| {
        let event = match stream {
            Stream::Stdout => stdout_event(line, subscriber, &mut connects),
            Stream::Stderr => stderr_event(line),
        };
        vec![event.unwrap_or_else(|| Event::Output { line: line.into() })]
    })
}

/// One line of `-d` output (or of `-F %j`).
fn stdout_event(line: &str, subscriber: bool, connects: &mut u32) -> Option<Event> {
    if line.starts_with('{') {
        let message: JsonMessage = serde_json::from_str(line).ok()?;
        return Some(Event::Message {
            topic: message.topic,
            payload: Some(message.payload),
            retain: message.retain != 0,
        });
    }
    let (_, what) = line.strip_prefix("Client ")?.split_once(' ')?;
    if what == "sending CONNECT" {
        *connects += 1;
        // The tools reconnect by themselves: a second CONNECT means the
        // first connection was lost.
        return (*connects > 1).then(|| Event::Closed {
            reason: "reconnecting".into(),
        });
    }
    if let Some(code) = what.strip_prefix("received CONNACK (") {
        let code = code.trim_end_matches(')').parse().ok()?;
        return Some(Event::Connack {
            code,
            session_present: None,
        });
    }
    if what == "received SUBACK" {
        return Some(Event::Suback);
    }
    if what.starts_with("received PUBACK") {
        return Some(Event::Puback);
    }
    if what.starts_with("sending PUBLISH (d0, q0") {
        return Some(Event::Sent);
    }
    // mosquitto_pub shows a message only here, by topic;
    // mosquitto_sub prints it again as JSON.
    let flags = what.strip_prefix("received PUBLISH (")?;
    let topic = flags.split('\'').nth(1)?;
    (!subscriber).then(|| Event::Message {
        topic: topic.into(),
        payload: None,
        retain: flags.contains(", r1,"),
    })
}

fn stderr_event(line: &str) -> Option<Event> {
    if line.contains("connection was lost") {
        return Some(Event::Closed {
            reason: line.into(),
        });
    }
    (line.contains("TLS") || line.contains("OpenSSL")).then(|| Event::Failed { error: line.into() })
}

/// A message as `mosquitto_sub -F %j` prints it.
#[derive(Deserialize)]
struct JsonMessage {
    topic: String,
    retain: u8,
    #[serde(default)]
    payload: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lines: &[&str], subscriber: bool, expect: Vec<Option<Event>>) {
        let mut connects = 0;
        let got: Vec<Option<Event>> = lines
            .iter()
            .map(|line| stdout_event(line, subscriber, &mut connects))
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn debug_lines_become_events() {
        check(
            &[
                "Client m1 sending CONNECT",
                "Client m1 received CONNACK (4)",
                "Client m1 sending PUBLISH (d0, q0, r0, m1, '/t', ... (3 bytes))",
                "Client m1 received PUBACK (Mid: 1, RC:0)",
                "Client m1 received PUBLISH (d0, q1, r1, m1, '/tenants/m1/cmd', ... (9 bytes))",
                "Client m1 sending CONNECT",
            ],
            false,
            vec![
                None,
                Some(Event::Connack {
                    code: 4,
                    session_present: None,
                }),
                Some(Event::Sent),
                Some(Event::Puback),
                Some(Event::Message {
                    topic: "/tenants/m1/cmd".into(),
                    payload: None,
                    retain: true,
                }),
                Some(Event::Closed {
                    reason: "reconnecting".into(),
                }),
            ],
        );
        check(
            &[
                "Client m1 received PUBLISH (d0, q1, r0, m1, '/x', ... (2 bytes))",
                r#"{"tst":"t","topic":"/x","qos":1,"retain":0,"payloadlen":2,"payload":"hi"}"#,
                "Client m1 received SUBACK",
            ],
            true,
            vec![
                None,
                Some(Event::Message {
                    topic: "/x".into(),
                    payload: Some("hi".into()),
                    retain: false,
                }),
                Some(Event::Suback),
            ],
        );
    }
}
