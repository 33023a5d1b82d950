//! Fuzz targets for what devices send: telemetry (`Telemetry::decode`,
//! then `Input::telemetry` for every kind), events (the JSON decoder, then
//! `Input::event` against pianos with and without a running session, a
//! gate, a robot, a counter), births (`ingest::decode_birth`, then the
//! twin) and command acks (the JSON decoder, then the command service's
//! `on_ack` against an open command).

use std::cell::RefCell;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use protocol::api::{CommandOrigin, CommandStatus};
use protocol::limits::{MAX_PEOPLE_PER_MESSAGE, MAX_SEQ, MAX_TS_MS, MIN_TEMP_C};
use protocol::{CommandAck, DeviceKind, Event, Telemetry};

use super::{bytes_like, corpus, json_mutated, json_object, run, Bytes};
use crate::commands::{Commands, NewCommand};
use crate::input::{Detail, Input, Reading, TsWindow};
use crate::metrics::Metrics;
use crate::records::device::record;
use crate::records::Twin;
use crate::settings::CommandsConfig;
use crate::store::Store;

/// The hub's clock in these targets: 2026-12-01T00:00:00Z, the seeds' time.
const NOW: u64 = 1_796_083_200_000;
const WINDOW: TsWindow = TsWindow {
    behind_secs: 7 * 86_400,
    ahead_secs: 300,
};

fn input() -> Input {
    Input::new(WINDOW, [7; 32])
}

fn twin(kind: DeviceKind, session_since: Option<u64>) -> Twin {
    let mut twin = Twin::provisioned(&record("d1", "c1", "r1", kind));
    twin.session_since = session_since;
    twin
}

/// The message's `ts` is one the calendar holds, inside the window.
fn check_ts(ts: u64) -> Result<(), TestCaseError> {
    prop_assert!(ts <= MAX_TS_MS, "ts {} past the calendar", ts);
    prop_assert!(ts + WINDOW.behind_secs * 1000 >= NOW, "ts {} too old", ts);
    prop_assert!(ts <= NOW + WINDOW.ahead_secs * 1000, "ts {} too new", ts);
    Ok(())
}

/// Bytes, mutated seeds, seeds with fields changed, objects of the
/// message's fields.
fn strategy(target: &str, fields: &'static [&'static str]) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        1 => bytes_like(corpus(target)),
        3 => json_mutated(corpus(target), fields),
        1 => json_object(fields),
    ]
}

#[test]
fn telemetry_never_panics_and_what_passes_holds_up() {
    let fields = &["ts", "seq", "in", "out", "temp_c", "heating", "playing"];
    let input = input();
    run(
        "telemetry",
        strategy("telemetry", fields),
        |Bytes(payload)| {
            let Ok(telemetry) = Telemetry::decode(&payload) else {
                return Ok(false);
            };
            let sorted = |mut t: Telemetry| {
                t.fields.sort_by(|a, b| a.0.cmp(&b.0));
                t
            };
            let again = Telemetry::decode(&telemetry.encode());
            prop_assert_eq!(again.map(sorted), Ok(sorted(telemetry.clone())));
            for kind in DeviceKind::ALL {
                match input.telemetry(telemetry.clone(), kind, NOW) {
                    Ok(checked) => {
                        check_ts(checked.ts.ms())?;
                        prop_assert!((1..=MAX_SEQ).contains(&checked.telemetry.seq));
                        match checked.reading {
                            Reading::Counter(flow) => prop_assert!(
                                flow.entered <= MAX_PEOPLE_PER_MESSAGE
                                    && flow.left <= MAX_PEOPLE_PER_MESSAGE
                            ),
                            Reading::Robot(robot) => {
                                prop_assert!(robot.temp_c.is_none_or(|t| t >= MIN_TEMP_C))
                            }
                            Reading::Plain => {}
                        }
                    }
                    Err(error) => prop_assert!(!error.to_string().is_empty()),
                }
            }
            Ok(true)
        },
    );
}

#[test]
fn events_never_panic_and_no_credential_stays_in_clear() {
    let fields = &[
        "id",
        "ts",
        "seq",
        "type",
        "credential",
        "minutes",
        "booking",
    ];
    let input = input();
    let twins = [
        twin(DeviceKind::Piano, None),
        twin(DeviceKind::Piano, Some(NOW - 3_600_000)),
        twin(DeviceKind::Piano, Some(u64::MAX)),
        twin(DeviceKind::Gate, None),
        twin(DeviceKind::TherapyRobot, None),
        twin(DeviceKind::Counter, None),
    ];
    run("event", strategy("event", fields), |Bytes(payload)| {
        let Ok(event) = serde_json::from_slice::<Event>(&payload) else {
            return Ok(false);
        };
        for twin in &twins {
            match input.event(event.clone(), twin, NOW) {
                Ok(checked) => {
                    check_ts(checked.ts.ms())?;
                    prop_assert!(!checked.event.body.contains_key("credential"));
                    if let Detail::AccessRequest {
                        credential_hash: Some(hash),
                    } = &checked.detail
                    {
                        prop_assert_eq!(hash.len(), 64);
                    }
                }
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }
        Ok(true)
    });
}

#[test]
fn births_never_panic_and_what_passes_is_of_the_provisioned_kind() {
    let fields = &["kind", "fw", "model", "keepalive"];
    run("birth", strategy("birth", fields), |Bytes(payload)| {
        let mut taken = false;
        for kind in DeviceKind::ALL {
            match crate::ingest::decode_birth(&payload, kind) {
                Ok(birth) => {
                    prop_assert_eq!(birth.kind, kind);
                    twin(kind, None).apply_birth(&birth);
                    taken = true;
                }
                Err(rejection) => prop_assert!(!rejection.detail.is_empty()),
            }
        }
        Ok(taken)
    });
}

/// A command service over a temporary store with command `c1` open on
/// device `d1`.
struct OpenCommand {
    store: std::sync::Arc<Store>,
    commands: RefCell<Commands>,
    _dir: tempfile::TempDir,
}

impl OpenCommand {
    fn new() -> OpenCommand {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = std::sync::Arc::new(Store::open(dir.path()).expect("store"));
        let commands = Commands::load(store.clone(), Metrics::new(), CommandsConfig::default())
            .expect("commands");
        OpenCommand {
            store,
            commands: RefCell::new(commands),
            _dir: dir,
        }
    }

    fn open_c1(&self) {
        let mut record = NewCommand {
            device: "d1".into(),
            op: "unlock".into(),
            args: serde_json::json!({}),
            expires_at: NOW + 60_000,
            origin: CommandOrigin::Api,
        }
        .into_record(NOW);
        record.id = "c1".into();
        self.commands.borrow_mut().adopt(record, false, NOW);
    }
}

#[test]
fn command_acks_never_panic_and_settle_the_command_they_name() {
    let service = OpenCommand::new();
    run(
        "cmd_ack",
        strategy("cmd_ack", &["id", "ok", "error"]),
        |Bytes(payload)| {
            let Ok(ack) = serde_json::from_slice::<CommandAck>(&payload) else {
                return Ok(false);
            };
            service.open_c1();
            service.commands.borrow_mut().on_ack("d1", &ack, NOW + 1);
            if ack.id == "c1" {
                let record = service.store.command("d1", "c1");
                let record = record.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let record = record.ok_or_else(|| TestCaseError::fail("c1 not stored"))?;
                let settled = match ack.ok {
                    true => CommandStatus::Acked,
                    false => CommandStatus::Failed,
                };
                prop_assert_eq!(record.status, settled);
                prop_assert_eq!(record.error, ack.error);
            }
            Ok(true)
        },
    );
}
