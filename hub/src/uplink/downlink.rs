//! The downlink (docs/upstream.md, "Downlink"): district commands taken
//! from the upstream session, on the forwarder's thread.
//!
//! A message on `yz/v1/{center}/+/cmd` is decided by `authorise` (shape,
//! signature, times, center), then by the store's facts: the device must
//! be provisioned in that center and not revoked, and the id must never
//! have been taken (`Store::take_downlink` records the command `pending`
//! with its id in one transaction). The store is fsynced before the
//! message is acknowledged upstream and before ingest may publish the
//! command, so neither a crash nor a restart takes an id twice. The
//! command service then delivers it with the usual resends and expiry (the
//! message's `expires_at`); its outcome goes back up in the same store
//! transaction as its final record (`Store::put_command`).
//!
//! A refusal is counted (`yizhan_downlink_refused_total{reason}`), logged
//! (at most once per reason every 10 s) and reported on
//! `yz/v1/{center}/cmd_refused` when the topic names one of the hub's
//! centers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::api::{CommandOrigin, CommandRecord};
use protocol::upstream::{command_filter, Refusal};

use crate::authorise::{authorise, Authorised};
use crate::commands::NewCommand;
use crate::metrics::Metrics;
use crate::records::uplink::{self, DownlinkTaken, Refused};
use crate::settings::DownlinkSettings;
use crate::store::{Store, StoreError};

/// At most one log line per refusal reason this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Takes district commands for the forwarder.
pub struct Downlink {
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub settings: DownlinkSettings,
    /// The hub's client id upstream: the first part of its message ids.
    pub hub: String,
    /// Hands a taken command to ingest, which publishes it (wired in
    /// `lib.rs`, as the desk's hand-over: uplink does not know ingest).
    pub hand_over: HandOver,
    /// When each reason was last logged.
    logged: Mutex<HashMap<Refusal, Instant>>,
}

/// Hands a command made durable to ingest.
pub type HandOver = Box<dyn Fn(CommandRecord) + Send + Sync>;

impl Downlink {
    pub fn new(
        store: Arc<Store>,
        metrics: Metrics,
        settings: DownlinkSettings,
        hub: String,
        hand_over: HandOver,
    ) -> Downlink {
        Downlink {
            store,
            metrics,
            settings,
            hub,
            hand_over,
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// What the session subscribes to: each center's command topics.
    pub fn filters(&self) -> Vec<String> {
        self.settings
            .centers
            .iter()
            .map(|c| command_filter(c))
            .collect()
    }

    /// Takes or refuses one message; on `Ok` it is durable either way and
    /// may be acknowledged upstream. A store error ends the forwarder.
    pub fn receive(&self, topic: &str, payload: &[u8], now_ms: u64) -> Result<(), StoreError> {
        let decided = match authorise(topic, payload, &self.settings, now_ms) {
            Ok(authorised) => self.take(authorised, now_ms)?,
            Err(refused) => Err(refused),
        };
        match decided {
            Ok(record) => {
                self.metrics.downlink_accepted.inc();
                tracing::info!(command = %record.id, device = %record.device, op = %record.op, "district command taken");
                (self.hand_over)(record);
                Ok(())
            }
            Err(refused) => self.refuse(&refused, now_ms),
        }
    }

    /// The store's part: the device in the command's center, the id new.
    /// Records and fsyncs the command when it is taken.
    fn take(
        &self,
        authorised: Authorised,
        now_ms: u64,
    ) -> Result<Result<CommandRecord, Refused>, StoreError> {
        let message = authorised.message;
        let refuse = |reason| Refused {
            center: Some(message.center.clone()),
            command: Some(message.id.clone()),
            device: Some(message.device.clone()),
            reason,
        };
        let known = match self.store.device(&message.device)? {
            Some(_) if self.store.is_revoked(&message.device)? => None,
            known => known,
        };
        let Some(device) = known else {
            return Ok(Err(refuse(Refusal::UnknownDevice)));
        };
        if device.center != message.center {
            return Ok(Err(refuse(Refusal::WrongCenter)));
        }
        let taken = DownlinkTaken {
            center: message.center.clone(),
            device: message.device.clone(),
            expires_at: message.expires_at,
        };
        let record = NewCommand {
            device: message.device.clone(),
            op: message.op.clone(),
            args: authorised.args,
            expires_at: message.expires_at,
            origin: CommandOrigin::District,
        }
        .into_record_as(message.id.clone(), now_ms);
        if !self.store.take_downlink(&record, &taken)? {
            return Ok(Err(refuse(Refusal::Replayed)));
        }
        self.store.flush()?;
        Ok(Ok(record))
    }

    /// Counts, logs and reports a refusal.
    fn refuse(&self, refused: &Refused, now_ms: u64) -> Result<(), StoreError> {
        let reason = refused.reason;
        self.metrics
            .downlink_refused
            .with_label_values(&[reason.as_str()])
            .inc();
        if self.may_log(reason) {
            tracing::warn!(
                reason = reason.as_str(),
                command = refused.command.as_deref().unwrap_or("-"),
                device = refused.device.as_deref().unwrap_or("-"),
                "district command refused"
            );
        }
        let ours = refused
            .center
            .as_ref()
            .filter(|c| self.settings.centers.contains(*c));
        if let Some(center) = ours {
            let n = self.store.next_id()?;
            let entry = uplink::command_refused(&self.hub, center, refused, now_ms, n);
            self.store.uplink_append(&entry)?;
        }
        Ok(())
    }

    fn may_log(&self, reason: Refusal) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match logged.get(&reason) {
            Some(at) if now.duration_since(*at) < LOG_EVERY => false,
            _ => {
                logged.insert(reason, now);
                true
            }
        }
    }
}
