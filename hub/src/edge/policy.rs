//! What a connection may publish and subscribe to (pure rules).
//!
//! A device (`Scope::Device`) may publish only on its own uplink topics
//! (`/tenants/D/{birth,status,telemetry,event,cmd/ack}`) and subscribe only
//! under `/tenants/D/`. Reaching outside `/tenants/D/` is a breach of
//! confinement and ends the session (as the router, which enforces the
//! prefix too, would); other refusals are answered and counted and the
//! session goes on. A tool on the loopback
//! tools listener is not confined. For both, a retained message is kept
//! only on a status topic, so the retained store holds at most one small
//! message per device.

use protocol::{Channel, Topic};

/// Who is on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A device: its id, from its certificate.
    Device(String),
    /// A tool on the loopback listener.
    Tool,
}

/// Why a publish or a subscription was refused; the `reason` label of
/// `yizhan_edge_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A device reaching outside `/tenants/D/`: the session ends.
    OutsidePrefix,
    /// Not a topic name (empty, wildcards, NUL).
    InvalidTopic,
    /// A topic outside the device's own uplink topics.
    TopicNotAllowed,
    /// A retained message off a status topic.
    RetainNotAllowed,
    /// Not a topic filter (misplaced wildcard, empty).
    InvalidFilter,
    /// More subscriptions than the connection may hold.
    TooManySubscriptions,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::OutsidePrefix => "outside_prefix",
            Refused::InvalidTopic => "invalid_topic",
            Refused::TopicNotAllowed => "topic_not_allowed",
            Refused::RetainNotAllowed => "retain_not_allowed",
            Refused::InvalidFilter => "invalid_filter",
            Refused::TooManySubscriptions => "too_many_subscriptions",
        }
    }
}

/// May this connection publish (or leave as its will) on `topic`?
pub fn check_publish(scope: &Scope, topic: &str, retain: bool) -> Result<(), Refused> {
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return Err(Refused::InvalidTopic);
    }
    let parsed = Topic::parse(topic);
    if let Scope::Device(id) = scope {
        if !under_prefix(id, topic) {
            return Err(Refused::OutsidePrefix);
        }
        let own_uplink = parsed.is_some_and(|t| Channel::UPLINK.contains(&t.channel));
        if !own_uplink {
            return Err(Refused::TopicNotAllowed);
        }
    }
    if retain && parsed.is_none_or(|t| t.channel != Channel::Status) {
        return Err(Refused::RetainNotAllowed);
    }
    Ok(())
}

/// May this connection subscribe to `filter`?
pub fn check_filter(scope: &Scope, filter: &str) -> Result<(), Refused> {
    if !is_valid_filter(filter) {
        return Err(Refused::InvalidFilter);
    }
    match scope {
        Scope::Device(id) if !under_prefix(id, filter) => Err(Refused::OutsidePrefix),
        _ => Ok(()),
    }
}

/// Is `name` (a topic or a filter) under `/tenants/{id}/`?
fn under_prefix(id: &str, name: &str) -> bool {
    name.strip_prefix("/tenants/")
        .and_then(|rest| rest.strip_prefix(id))
        .is_some_and(|rest| rest.starts_with('/'))
}

/// MQTT 3.1.1 §4.7: `#` only as a whole last level, `+` only as a whole
/// level, no NUL, not empty.
fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == last,
        "+" => true,
        other => !other.contains(['+', '#']),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Scope {
        Scope::Device("gate1".into())
    }

    fn check_pub(scope: Scope, topic: &str, retain: bool, expect: Result<(), Refused>) {
        assert_eq!(check_publish(&scope, topic, retain), expect, "{topic}");
    }

    #[test]
    fn a_device_publishes_on_its_own_uplink_only() {
        check_pub(device(), "/tenants/gate1/telemetry", false, Ok(()));
        check_pub(device(), "/tenants/gate1/event", false, Ok(()));
        check_pub(device(), "/tenants/gate1/cmd/ack", false, Ok(()));
        check_pub(device(), "/tenants/gate1/status", true, Ok(()));
        check_pub(
            device(),
            "/tenants/gate2/telemetry",
            false,
            Err(Refused::OutsidePrefix),
        );
        check_pub(device(), "elsewhere", false, Err(Refused::OutsidePrefix));
        check_pub(
            device(),
            "/tenants/gate1/cmd",
            false,
            Err(Refused::TopicNotAllowed),
        );
        check_pub(
            device(),
            "/tenants/gate1/foo",
            false,
            Err(Refused::TopicNotAllowed),
        );
        check_pub(
            device(),
            "/tenants/gate1/telemetry",
            true,
            Err(Refused::RetainNotAllowed),
        );
        check_pub(
            device(),
            "/tenants/gate1/+",
            false,
            Err(Refused::InvalidTopic),
        );
        check_pub(device(), "", false, Err(Refused::InvalidTopic));
    }

    #[test]
    fn a_tool_publishes_anywhere_but_retains_only_status() {
        check_pub(Scope::Tool, "anything/at/all", false, Ok(()));
        check_pub(Scope::Tool, "/tenants/gate1/cmd", false, Ok(()));
        check_pub(Scope::Tool, "/tenants/gate1/status", true, Ok(()));
        check_pub(
            Scope::Tool,
            "anything",
            true,
            Err(Refused::RetainNotAllowed),
        );
    }

    fn check_sub(scope: Scope, filter: &str, expect: Result<(), Refused>) {
        assert_eq!(check_filter(&scope, filter), expect, "{filter}");
    }

    #[test]
    fn a_device_subscribes_under_its_own_prefix_only() {
        check_sub(device(), "/tenants/gate1/cmd", Ok(()));
        check_sub(device(), "/tenants/gate1/#", Ok(()));
        check_sub(device(), "/tenants/gate1/+/ack", Ok(()));
        check_sub(device(), "/tenants/gate2/cmd", Err(Refused::OutsidePrefix));
        check_sub(device(), "/tenants/gate12/cmd", Err(Refused::OutsidePrefix));
        check_sub(device(), "/tenants/gate1", Err(Refused::OutsidePrefix));
        check_sub(device(), "#", Err(Refused::OutsidePrefix));
        check_sub(device(), "/tenants/+/cmd", Err(Refused::OutsidePrefix));
        check_sub(
            device(),
            "$share/g/tenants/gate1/cmd",
            Err(Refused::OutsidePrefix),
        );
        check_sub(Scope::Tool, "#", Ok(()));
        check_sub(Scope::Tool, "a/#/b", Err(Refused::InvalidFilter));
        check_sub(Scope::Tool, "a/b+", Err(Refused::InvalidFilter));
        check_sub(Scope::Tool, "", Err(Refused::InvalidFilter));
    }
}
