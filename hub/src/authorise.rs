//! Whether a district command may run (docs/upstream.md, "Downlink"): a
//! pure decision over the message, the `[uplink.downlink]` settings and
//! the clock. In order: the topic and payload have the contract's shape
//! and name the same center and device (`malformed`); a trusted key signed
//! it (`forged`); it has not expired (`expired`); it lives no longer than
//! `max_lifetime` and was not issued in the future (`lifetime`); its center
//! is one of the hub's (`wrong_center`). Whether the device exists and
//! whether the id was taken before are facts of the store, checked by the
//! service after this (`uplink::downlink`).

use protocol::upstream::{is_command_id, Class, CommandMessage, Refusal, UpstreamTopic};
use serde_json::Value;

use crate::records::uplink::Refused;
use crate::settings::DownlinkSettings;

/// How far ahead of the hub's clock `issued_at` may be (the district's
/// clock may run ahead by this much).
pub const CLOCK_SKEW_MS: u64 = 60_000;

/// A command that may run, with its `args` parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorised {
    pub message: CommandMessage,
    pub args: Value,
}

/// The decision on `payload` received on `topic` at `now_ms`.
pub fn authorise(
    topic: &str,
    payload: &[u8],
    settings: &DownlinkSettings,
    now_ms: u64,
) -> Result<Authorised, Refused> {
    let parsed = UpstreamTopic::parse(topic).filter(|t| t.class == Class::Command);
    let center = parsed.as_ref().map(|t| t.center.clone());
    let device = parsed.and_then(|t| t.device);
    let refuse = |reason: Refusal, command: Option<&str>| Refused {
        center: center.clone(),
        command: command.filter(|id| is_command_id(id)).map(String::from),
        device: device.clone(),
        reason,
    };
    let Ok(message) = serde_json::from_slice::<CommandMessage>(payload) else {
        return Err(refuse(Refusal::Malformed, None));
    };
    let id = Some(message.id.as_str());
    let named = center.as_deref() == Some(message.center.as_str())
        && device.as_deref() == Some(message.device.as_str());
    let args = match message.check().and_then(|()| message.args_value()) {
        Ok(args) if named => args,
        _ => return Err(refuse(Refusal::Malformed, id)),
    };
    let trusted = settings.keys.get(&message.key);
    if !trusted.is_some_and(|key| message.verify(key)) {
        return Err(refuse(Refusal::Forged, id));
    }
    if now_ms > message.expires_at {
        return Err(refuse(Refusal::Expired, id));
    }
    let lifetime = message.expires_at.saturating_sub(message.issued_at);
    if message.expires_at <= message.issued_at
        || u128::from(lifetime) > settings.max_lifetime.as_millis()
        || message.issued_at > now_ms.saturating_add(CLOCK_SKEW_MS)
    {
        return Err(refuse(Refusal::Lifetime, id));
    }
    if !settings.centers.contains(&message.center) {
        return Err(refuse(Refusal::WrongCenter, id));
    }
    Ok(Authorised { message, args })
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::upstream::{command_id, key_id, SigningKey};
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    const NOW: u64 = 1_800_000_000_000;

    fn signer(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn settings() -> DownlinkSettings {
        let key = signer(1).verifying_key();
        DownlinkSettings {
            keys: BTreeMap::from([(key_id(&key), key)]),
            centers: BTreeSet::from(["c1".to_string()]),
            max_lifetime: Duration::from_secs(600),
        }
    }

    fn message(change: impl FnOnce(&mut CommandMessage)) -> CommandMessage {
        let mut message = CommandMessage {
            id: command_id(NOW, 1),
            center: "c1".into(),
            device: "p1".into(),
            op: "unlock".into(),
            args: "{}".into(),
            issued_at: NOW,
            expires_at: NOW + 60_000,
            key: String::new(),
            sig: String::new(),
        };
        change(&mut message);
        message.sign(&signer(1))
    }

    fn check(topic: &str, message: &CommandMessage, now: u64, expect: Result<(), Refusal>) {
        let payload = serde_json::to_vec(message).unwrap();
        let got = authorise(topic, &payload, &settings(), now)
            .map(drop)
            .map_err(|refused| refused.reason);
        assert_eq!(got, expect, "{topic} at {now}: {message:?}");
    }

    #[test]
    fn a_command_runs_only_signed_in_time_for_one_of_the_hubs_centers() {
        use Refusal::*;
        let topic = "yz/v1/c1/p1/cmd";
        check(topic, &message(|_| {}), NOW, Ok(()));
        check(topic, &message(|_| {}), NOW + 60_000, Ok(()));
        check(topic, &message(|_| {}), NOW + 60_001, Err(Expired));
        check(topic, &message(|_| {}), NOW - 60_000, Ok(()));
        check(topic, &message(|_| {}), NOW - 60_001, Err(Lifetime));
        let long = message(|m| m.expires_at = NOW + 600_001);
        check(topic, &long, NOW, Err(Lifetime));
        let backwards = message(|m| m.expires_at = NOW);
        check(topic, &backwards, NOW, Err(Lifetime));
        let mut forged = message(|_| {});
        forged.op = "lock".into();
        check(topic, &forged, NOW, Err(Forged));
        let other_key = message(|_| {});
        let other_key = CommandMessage {
            sig: String::new(),
            ..other_key
        }
        .sign(&signer(2));
        check(topic, &other_key, NOW, Err(Forged));
        let mut named_key = other_key.clone();
        named_key.key = message(|_| {}).key;
        check(topic, &named_key, NOW, Err(Forged));
        check(
            topic,
            &message(|m| m.op = "Bad".into()),
            NOW,
            Err(Malformed),
        );
        check(
            topic,
            &message(|m| m.args = "[]".into()),
            NOW,
            Err(Malformed),
        );
        check("yz/v1/c1/p2/cmd", &message(|_| {}), NOW, Err(Malformed));
        check("yz/v1/c2/p1/cmd", &message(|_| {}), NOW, Err(Malformed));
        check("yz/v1/c1/p1/event", &message(|_| {}), NOW, Err(Malformed));
        let elsewhere = message(|m| m.center = "c2".into());
        check("yz/v1/c2/p1/cmd", &elsewhere, NOW, Err(WrongCenter));
    }

    #[test]
    fn a_refusal_names_what_the_message_named_within_the_contract() {
        let refused = authorise("yz/v1/c1/p1/cmd", b"{", &settings(), NOW).unwrap_err();
        assert_eq!(
            refused,
            Refused {
                center: Some("c1".into()),
                command: None,
                device: Some("p1".into()),
                reason: Refusal::Malformed,
            }
        );
        let late = serde_json::to_vec(&message(|_| {})).unwrap();
        let refused = authorise("yz/v1/c1/p1/cmd", &late, &settings(), NOW + 70_000);
        assert_eq!(refused.unwrap_err().command, Some(command_id(NOW, 1)));
        let refused = authorise("not/a/topic", &late, &settings(), NOW).unwrap_err();
        assert_eq!((refused.center, refused.device), (None, None));
    }
}
