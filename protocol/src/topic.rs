//! Topic names of contract v1: `/tenants/{device}/{channel}`.
//!
//! The `/tenants/{id}/` prefix is what rumqttd's `validate-tenant-prefix`
//! confines a certificate with Organization `{id}` to.

use crate::is_valid_device_id;

/// The channels of contract v1, each the tail of a device's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Birth,
    Status,
    Telemetry,
    Event,
    EventAck,
    Cmd,
    CmdAck,
    Error,
}

impl Channel {
    pub const ALL: [Channel; 8] = [
        Channel::Birth,
        Channel::Status,
        Channel::Telemetry,
        Channel::Event,
        Channel::EventAck,
        Channel::Cmd,
        Channel::CmdAck,
        Channel::Error,
    ];

    /// The device→hub channels: what the hub subscribes to.
    pub const UPLINK: [Channel; 5] = [
        Channel::Birth,
        Channel::Status,
        Channel::Telemetry,
        Channel::Event,
        Channel::CmdAck,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Channel::Birth => "birth",
            Channel::Status => "status",
            Channel::Telemetry => "telemetry",
            Channel::Event => "event",
            Channel::EventAck => "event/ack",
            Channel::Cmd => "cmd",
            Channel::CmdAck => "cmd/ack",
            Channel::Error => "error",
        }
    }

    /// Label value for metrics (no slash).
    pub fn label(self) -> &'static str {
        match self {
            Channel::EventAck => "event_ack",
            Channel::CmdAck => "cmd_ack",
            other => other.suffix(),
        }
    }

    /// The filter that matches this channel for every device.
    pub fn filter_all_devices(self) -> String {
        format!("/tenants/+/{}", self.suffix())
    }
}

/// A parsed device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    pub device: &'a str,
    pub channel: Channel,
}

impl<'a> Topic<'a> {
    /// Parses `/tenants/{device}/{channel}`; `None` for anything else.
    pub fn parse(topic: &'a str) -> Option<Topic<'a>> {
        let rest = topic.strip_prefix("/tenants/")?;
        let (device, suffix) = rest.split_once('/')?;
        if !is_valid_device_id(device) {
            return None;
        }
        let channel = Channel::ALL.into_iter().find(|c| c.suffix() == suffix)?;
        Some(Topic { device, channel })
    }
}

/// The full topic of `channel` for `device`.
pub fn for_device(device: &str, channel: Channel) -> String {
    format!("/tenants/{device}/{}", channel.suffix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_channel_and_rejects_others() {
        for channel in Channel::ALL {
            let t = for_device("dev1", channel);
            assert_eq!(
                Topic::parse(&t),
                Some(Topic {
                    device: "dev1",
                    channel
                })
            );
        }
        assert_eq!(Topic::parse("/tenants/dev1/other"), None);
        assert_eq!(Topic::parse("/tenants/dev-1/telemetry"), None);
        assert_eq!(Topic::parse("tenants/dev1/telemetry"), None);
        assert_eq!(Topic::parse("/tenants/dev1/event/ack/x"), None);
    }
}
