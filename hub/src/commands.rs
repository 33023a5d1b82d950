//! The command service: every command the hub sends a device, from issue to
//! outcome.
//!
//! A command is published on `/tenants/D/cmd` whenever `D` is online, resent
//! on a doubling schedule until the device answers on `/tenants/D/cmd/ack`,
//! and never published after its `expires_at`. Its record (`pending` →
//! `sent` → `acked` | `failed` | `expired`) is written through `store` at
//! every change; open commands are reloaded at start, so a command to an
//! offline device survives a restart and goes out when the device is back.
//!
//! Owned by the ingest thread, which holds the broker link: this module only
//! queues what must go out (`take_outgoing`); ingest publishes it at once,
//! before the batch's fsync, so a reaction never waits for the disk.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::api::{CommandOrigin, CommandRecord, CommandStatus};
use protocol::{topic, Channel, CommandAck};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::settings::CommandsConfig;
use crate::store::{Store, StoreError};

/// How long after `expires_at` a sent command may still be answered: the
/// device may have obeyed it just in time, and its ack is on the way.
pub const ACK_GRACE_MS: u64 = 2_000;

/// Ops with their own metric label; any other op is labelled `other`.
const KNOWN_OPS: [&str; 5] = ["stop", "open", "deny", "unlock", "lock"];

/// The `op` label of a command's metrics (bounded).
pub fn op_label(op: &str) -> &'static str {
    KNOWN_OPS
        .into_iter()
        .find(|known| *known == op)
        .unwrap_or("other")
}

/// What a new command is.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub device: String,
    pub op: String,
    pub args: Value,
    pub expires_at: u64,
    pub origin: CommandOrigin,
}

impl NewCommand {
    /// Its record, `pending`, with a fresh id that sorts by issue time.
    pub fn into_record(self, now_ms: u64) -> CommandRecord {
        let id = format!("{now_ms:013x}{:08x}", rand::random::<u32>());
        self.into_record_as(id, now_ms)
    }

    /// Its record, `pending`, under `id` (a district command keeps the
    /// district's).
    pub fn into_record_as(self, id: String, now_ms: u64) -> CommandRecord {
        CommandRecord {
            id,
            device: self.device,
            op: self.op,
            args: self.args,
            origin: self.origin,
            status: CommandStatus::Pending,
            created_at: now_ms,
            expires_at: self.expires_at,
            first_sent_at: None,
            last_sent_at: None,
            completed_at: None,
            attempts: 0,
            error: None,
        }
    }
}

impl NewCommand {
    /// Records it `pending` through the store (not fsynced: the caller
    /// fsyncs before it hands the record to ingest, so a command is durable
    /// before anything may publish it).
    pub fn record(self, store: &Store, now_ms: u64) -> Result<CommandRecord, StoreError> {
        let record = self.into_record(now_ms);
        store.put_command(&record)?;
        Ok(record)
    }
}

/// What an open command needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Publish it (first time or resend).
    Send,
    /// Its time is up: record it expired.
    Expire,
    Wait,
}

/// The pure rule: what an open command needs at `now_ms`. `resend_at` is
/// when the next resend is due (`None`: not sent since the device came
/// online).
pub fn next_step(
    record: &CommandRecord,
    now_ms: u64,
    online: bool,
    resend_at: Option<u64>,
) -> NextStep {
    let deadline = match record.status {
        CommandStatus::Sent => record.expires_at + ACK_GRACE_MS,
        _ => record.expires_at,
    };
    if now_ms > deadline {
        return NextStep::Expire;
    }
    // Never publish after expiry, even inside the ack grace.
    if !online || now_ms > record.expires_at {
        return NextStep::Wait;
    }
    match resend_at {
        Some(at) if now_ms < at => NextStep::Wait,
        _ => NextStep::Send,
    }
}

/// Wait after the `attempts`-th publish before the next: `initial`, doubled
/// per attempt, at most `max`.
pub fn retry_delay(attempts: u32, config: &CommandsConfig) -> u64 {
    let doublings = attempts.saturating_sub(1).min(20);
    config
        .retry_initial_ms
        .saturating_mul(1 << doublings)
        .min(config.retry_max_ms)
}

/// A command without an outcome, as the service tracks it.
struct Open {
    record: CommandRecord,
    /// Unix ms of the next resend; `None` until sent in the device's
    /// current session.
    resend_at: Option<u64>,
    /// First publish by this process (for the round-trip histogram).
    first_sent: Option<Instant>,
}

pub struct Commands {
    store: Arc<Store>,
    metrics: Metrics,
    config: CommandsConfig,
    /// Open commands per device, oldest first.
    open: HashMap<String, Vec<Open>>,
    outgoing: Vec<(String, Vec<u8>)>,
}

impl Commands {
    /// Loads every open command from the store.
    pub fn load(
        store: Arc<Store>,
        metrics: Metrics,
        config: CommandsConfig,
    ) -> Result<Commands, StoreError> {
        let mut commands = Commands {
            open: HashMap::new(),
            outgoing: Vec::new(),
            store,
            metrics,
            config,
        };
        let open = commands.store.open_commands()?;
        if !open.is_empty() {
            tracing::info!(count = open.len(), "open commands reloaded");
        }
        for record in open {
            commands.track(record);
        }
        Ok(commands)
    }

    /// Issues a command made by the hub itself: records it and, when the
    /// device is online, queues it for publishing now. Returns its id.
    pub fn issue(&mut self, command: NewCommand, online: bool, now_ms: u64) -> String {
        let record = command.into_record(now_ms);
        let id = record.id.clone();
        self.adopt(record, online, now_ms);
        id
    }

    /// Takes over a command already recorded `pending` (issued through the
    /// API) or a new one, and publishes it if it can.
    pub fn adopt(&mut self, record: CommandRecord, online: bool, now_ms: u64) {
        let device = record.device.clone();
        self.track(record);
        if online {
            self.send_due(&device, now_ms);
        }
        // Sending recorded it; a command still pending is recorded here.
        if let Some(open) = self.open.get(&device).and_then(|list| list.last()) {
            if open.record.status == CommandStatus::Pending {
                self.persist(&open.record);
            }
        }
    }

    fn track(&mut self, record: CommandRecord) {
        let open = Open {
            record,
            resend_at: None,
            first_sent: None,
        };
        self.open
            .entry(open.record.device.clone())
            .or_default()
            .push(open);
        self.metrics.commands_open.inc();
    }

    /// The device is (back) online: publish what it has not had in this
    /// session.
    pub fn device_online(&mut self, device: &str, now_ms: u64) {
        self.send_due(device, now_ms);
    }

    /// The device went offline: everything open goes out again when it is
    /// back, as if never sent.
    pub fn device_offline(&mut self, device: &str) {
        for open in self.open.get_mut(device).into_iter().flatten() {
            open.resend_at = None;
        }
    }

    /// A `cmd/ack` from `device`.
    pub fn on_ack(&mut self, device: &str, ack: &CommandAck, now_ms: u64) {
        let Some(list) = self.open.get_mut(device) else {
            tracing::debug!(device, command = %ack.id, "ack for no open command");
            return;
        };
        let Some(index) = list.iter().position(|o| o.record.id == ack.id) else {
            tracing::debug!(device, command = %ack.id, "ack for no open command");
            return;
        };
        let mut open = list.remove(index);
        if list.is_empty() {
            self.open.remove(device);
        }
        let op = op_label(&open.record.op);
        if let Some(first) = open.first_sent {
            self.metrics
                .command_round_trip
                .with_label_values(&[op])
                .observe(first.elapsed().as_secs_f64());
        }
        let status = if ack.ok {
            CommandStatus::Acked
        } else {
            CommandStatus::Failed
        };
        open.record.error = ack.error.clone();
        self.finish(open.record, status, now_ms);
    }

    /// Sends what is due and expires what is late, for every device.
    pub fn tick(&mut self, online: &HashSet<String>, now_ms: u64) {
        let devices: Vec<String> = self.open.keys().cloned().collect();
        for device in devices {
            if online.contains(&device) {
                self.send_due(&device, now_ms);
            }
            self.expire_late(&device, now_ms);
        }
    }

    /// What must be published now, in order.
    pub fn take_outgoing(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.outgoing)
    }

    /// Open commands (for tests and metrics).
    pub fn open_count(&self) -> usize {
        self.open.values().map(Vec::len).sum()
    }

    fn send_due(&mut self, device: &str, now_ms: u64) {
        let Some(list) = self.open.get_mut(device) else {
            return;
        };
        for open in list.iter_mut() {
            if next_step(&open.record, now_ms, true, open.resend_at) != NextStep::Send {
                continue;
            }
            let record = &mut open.record;
            record.attempts += 1;
            record.status = CommandStatus::Sent;
            record.first_sent_at.get_or_insert(now_ms);
            record.last_sent_at = Some(now_ms);
            open.first_sent.get_or_insert_with(Instant::now);
            open.resend_at = Some(now_ms + retry_delay(record.attempts, &self.config));
            // invariant: a Command serializes.
            let payload = serde_json::to_vec(&record.wire()).expect("command serializes");
            self.outgoing
                .push((topic::for_device(device, Channel::Cmd), payload));
            persist(&self.store, record);
        }
    }

    fn expire_late(&mut self, device: &str, now_ms: u64) {
        let Some(list) = self.open.get_mut(device) else {
            return;
        };
        let (late, keep): (Vec<Open>, Vec<Open>) = std::mem::take(list)
            .into_iter()
            .partition(|o| next_step(&o.record, now_ms, false, o.resend_at) == NextStep::Expire);
        if keep.is_empty() {
            self.open.remove(device);
        } else {
            *list = keep;
        }
        for open in late {
            tracing::info!(device, command = %open.record.id, op = %open.record.op, "command expired");
            self.finish(open.record, CommandStatus::Expired, now_ms);
        }
    }

    /// A command taken out of `open` reached its outcome.
    fn finish(&mut self, mut record: CommandRecord, status: CommandStatus, now_ms: u64) {
        self.metrics.commands_open.dec();
        record.status = status;
        record.completed_at = Some(now_ms);
        self.metrics
            .commands
            .with_label_values(&[op_label(&record.op), status.as_str()])
            .inc();
        self.persist(&record);
    }

    fn persist(&self, record: &CommandRecord) {
        persist(&self.store, record);
    }
}

fn persist(store: &Store, record: &CommandRecord) {
    if let Err(error) = store.put_command(record) {
        // The command still goes out; only its record is behind.
        tracing::error!(%error, command = %record.id, "recording a command failed");
    }
}

/// Expiry of a command issued now with time to live `ttl`.
pub fn expires_in(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_add(ttl.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: CommandStatus, expires_at: u64) -> CommandRecord {
        let mut record = NewCommand {
            device: "d".into(),
            op: "stop".into(),
            args: Value::Null,
            expires_at,
            origin: CommandOrigin::Api,
        }
        .into_record(0);
        record.status = status;
        record
    }

    fn check_due(
        status: CommandStatus,
        now: u64,
        online: bool,
        resend_at: Option<u64>,
        expect: NextStep,
    ) {
        let got = next_step(&record(status, 1_000), now, online, resend_at);
        assert_eq!(
            got, expect,
            "{status:?} at {now}, online {online}, resend {resend_at:?}"
        );
    }

    #[test]
    fn commands_are_sent_only_before_expiry_and_expire_after_it() {
        use CommandStatus::*;
        check_due(Pending, 10, true, None, NextStep::Send);
        check_due(Pending, 10, false, None, NextStep::Wait);
        check_due(Pending, 1_000, true, None, NextStep::Send); // at expiry: still valid
        check_due(Pending, 1_001, true, None, NextStep::Expire); // never sent: expired at once
        check_due(Sent, 500, true, Some(600), NextStep::Wait);
        check_due(Sent, 600, true, Some(600), NextStep::Send);
        check_due(Sent, 1_001, true, Some(600), NextStep::Wait); // in the ack grace: no resend
        check_due(Sent, 1_000 + ACK_GRACE_MS, true, None, NextStep::Wait);
        check_due(Sent, 1_001 + ACK_GRACE_MS, true, None, NextStep::Expire);
        check_due(Sent, 1_001 + ACK_GRACE_MS, false, None, NextStep::Expire);
    }

    #[test]
    fn resends_double_up_to_the_cap() {
        let config = CommandsConfig {
            retry_initial_ms: 500,
            retry_max_ms: 3_000,
        };
        let delays: Vec<u64> = (1..=6).map(|n| retry_delay(n, &config)).collect();
        assert_eq!(delays, [500, 1_000, 2_000, 3_000, 3_000, 3_000]);
        assert_eq!(retry_delay(u32::MAX, &config), 3_000);
    }

    #[test]
    fn known_ops_keep_their_label_and_others_share_one() {
        assert_eq!(op_label("stop"), "stop");
        assert_eq!(op_label("open"), "open");
        assert_eq!(op_label("self_destruct"), "other");
    }

    #[test]
    fn command_ids_sort_by_issue_time() {
        let a = record(CommandStatus::Pending, 0);
        let b = NewCommand {
            device: "d".into(),
            op: "x".into(),
            args: Value::Null,
            expires_at: 0,
            origin: CommandOrigin::Api,
        }
        .into_record(1);
        assert!(a.id < b.id);
    }

    fn service() -> (Commands, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "yizhan-cmd-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let store = Arc::new(Store::open(&dir).unwrap());
        let commands = Commands::load(store, Metrics::new(), CommandsConfig::default()).unwrap();
        (commands, dir)
    }

    fn stop_for(device: &str, expires_at: u64) -> NewCommand {
        NewCommand {
            device: device.into(),
            op: "stop".into(),
            args: Value::Null,
            expires_at,
            origin: CommandOrigin::Interlock,
        }
    }

    #[test]
    fn an_offline_device_gets_its_command_when_back_and_an_ack_closes_it() {
        let (mut commands, dir) = service();
        let id = commands.issue(stop_for("r1", 10_000), false, 0);
        assert_eq!(commands.metrics.commands_open.get(), 1);
        assert!(commands.take_outgoing().is_empty(), "offline: nothing sent");
        commands.device_online("r1", 100);
        let out = commands.take_outgoing();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "/tenants/r1/cmd");
        commands.device_online("r1", 150);
        assert!(commands.take_outgoing().is_empty(), "sent once per session");
        commands.on_ack(
            "r1",
            &CommandAck {
                id: id.clone(),
                ok: false,
                error: Some("jammed".into()),
            },
            200,
        );
        assert_eq!(commands.open_count(), 0);
        assert_eq!(commands.metrics.commands_open.get(), 0);
        let stored = commands.store.command("r1", &id).unwrap().unwrap();
        assert_eq!(stored.status, CommandStatus::Failed);
        assert_eq!(stored.error.as_deref(), Some("jammed"));
        assert_eq!(stored.attempts, 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn unanswered_commands_are_resent_then_expire() {
        let (mut commands, dir) = service();
        let online: HashSet<String> = ["r1".to_string()].into();
        let id = commands.issue(stop_for("r1", 2_500), true, 0);
        assert_eq!(commands.take_outgoing().len(), 1);
        commands.tick(&online, 999);
        assert!(commands.take_outgoing().is_empty());
        commands.tick(&online, 1_000);
        assert_eq!(commands.take_outgoing().len(), 1, "resent after 1 s");
        commands.tick(&online, 2_999);
        assert!(commands.take_outgoing().is_empty(), "next resend at 3 s");
        commands.tick(&online, 3_000);
        assert!(
            commands.take_outgoing().is_empty(),
            "past expires_at: never sent again"
        );
        assert_eq!(commands.metrics.commands_open.get(), 1);
        commands.tick(&online, 2_500 + ACK_GRACE_MS + 1);
        assert_eq!(commands.open_count(), 0);
        assert_eq!(commands.metrics.commands_open.get(), 0);
        let stored = commands.store.command("r1", &id).unwrap().unwrap();
        assert_eq!(stored.status, CommandStatus::Expired);
        assert_eq!(stored.attempts, 2);
        std::fs::remove_dir_all(dir).ok();
    }
}
