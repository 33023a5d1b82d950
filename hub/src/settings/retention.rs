//! `[retention]`: how long stored events, command records and
//! notifications are kept, and how often old ones are removed — spans
//! such as `90d`, `12h`, `30m` or `45s`, each in its range (a test may
//! keep records for seconds; nothing may keep them for more than ten
//! years or prune more often than every second).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The file's `[retention]` section, unchecked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub events: String,
    pub commands: String,
    pub notifications: String,
    pub every: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            events: "90d".into(),
            commands: "30d".into(),
            notifications: "30d".into(),
            every: "1h".into(),
        }
    }
}

/// How long each kind of record is kept, and how often retention runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub events: Duration,
    pub commands: Duration,
    pub notifications: Duration,
    /// The audit log's (`api.audit_retention_days`).
    pub audit: Duration,
    pub every: Duration,
}

/// Longest retention: ten years.
const MOST_KEPT: Duration = Duration::from_secs(3_660 * 86_400);
const MOST_EVERY: Duration = Duration::from_secs(86_400);

impl Retention {
    /// Parses `[retention]`; `audit` comes from `[api]`.
    pub fn parse(config: &RetentionConfig, audit: Duration) -> Result<Retention, ConfigError> {
        let kept = |field: &str, text: &str| span(field, text, MOST_KEPT);
        Ok(Retention {
            events: kept("retention.events", &config.events)?,
            commands: kept("retention.commands", &config.commands)?,
            notifications: kept("retention.notifications", &config.notifications)?,
            audit,
            every: span("retention.every", &config.every, MOST_EVERY)?,
        })
    }
}

/// `<whole number><s|m|h|d>`, from one second to `most`.
fn span(field: &str, text: &str, most: Duration) -> Result<Duration, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        field: field.to_string(),
        reason,
    };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(invalid(format!(
                "{text:?} is not a span like 90d, 12h, 30m or 45s"
            )))
        }
    };
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_secs))
        .ok_or_else(|| invalid(format!("{text:?} is not a span like 90d, 12h, 30m or 45s")))?;
    let span = Duration::from_secs(secs);
    if span < Duration::from_secs(1) || span > most {
        return Err(invalid(format!(
            "must be 1s-{}d, got {text}",
            most.as_secs() / 86_400
        )));
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_whole_units_in_range() {
        let day = 86_400;
        for (text, expect) in [
            ("90d", Some(90 * day)),
            ("1s", Some(1)),
            ("30m", Some(1_800)),
            ("12h", Some(43_200)),
            ("3660d", Some(3_660 * day)),
            ("3661d", None),
            ("0s", None),
            ("", None),
            ("d", None),
            ("-1d", None),
            ("1.5d", None),
            ("90", None),
            ("18446744073709551615d", None),
        ] {
            let got = span("retention.events", text, MOST_KEPT);
            assert_eq!(got.as_ref().ok().map(Duration::as_secs), expect, "{text}");
            if let Err(error) = got {
                assert!(error.to_string().contains("retention.events"), "{error}");
            }
        }
        assert!(span("retention.every", "2d", MOST_EVERY).is_err());
    }

    #[test]
    fn the_defaults_parse() {
        let retention =
            Retention::parse(&RetentionConfig::default(), Duration::from_secs(1)).unwrap();
        assert_eq!(retention.events, Duration::from_secs(90 * 86_400));
        assert_eq!(retention.commands, Duration::from_secs(30 * 86_400));
        assert_eq!(retention.notifications, Duration::from_secs(30 * 86_400));
        assert_eq!(retention.every, Duration::from_secs(3_600));
    }
}
