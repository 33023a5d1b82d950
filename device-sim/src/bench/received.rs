//! Counting what the broker delivered. The hub: telemetry fully ingested
//! into twins, read from its Prometheus `/metrics` (admin token); any other
//! broker: what one subscriber on the topic filter received. Either count
//! is polled until it stops growing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connection::Counters;

/// How often a count is polled while it settles.
const POLL: Duration = Duration::from_millis(100);
/// A count that did not grow for this long has settled.
const QUIET: Duration = Duration::from_secs(1);

/// Why the hub's metrics could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {url}: {source}")]
pub struct MetricsError {
    url: String,
    source: reqwest::Error,
}

/// The hub's `/metrics`, read with the admin token.
#[derive(Debug, Clone)]
pub struct HubMetrics {
    http: reqwest::Client,
    url: String,
    token: String,
}

/// Telemetry counts from the hub.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HubCounts {
    /// Decoded, validated and applied to twins.
    pub ingested: u64,
    /// Telemetry the hub found missing from devices' `seq`.
    pub seq_gaps: u64,
}

impl HubMetrics {
    pub fn new(api_url: &str, token: &str) -> HubMetrics {
        HubMetrics {
            http: reqwest::Client::new(),
            url: format!("{}/metrics", api_url.trim_end_matches('/')),
            token: token.to_owned(),
        }
    }

    pub async fn telemetry(&self) -> Result<HubCounts, MetricsError> {
        let error = |source| MetricsError {
            url: self.url.clone(),
            source,
        };
        let text = self
            .http
            .get(&self.url)
            .bearer_auth(&self.token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(error)?
            .text()
            .await
            .map_err(error)?;
        let telemetry = r#"channel="telemetry""#;
        Ok(HubCounts {
            ingested: sum_metric(&text, "yizhan_messages_received_total", telemetry) as u64,
            seq_gaps: sum_metric(&text, "yizhan_seq_gaps_total", telemetry) as u64,
        })
    }
}

/// Sums the samples of `name` (exact family sample name) in Prometheus
/// text whose label set contains `labels` (e.g. `reason="oversize"`;
/// empty for all).
pub fn sum_metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Where "received" comes from.
#[derive(Debug, Clone)]
pub enum Receiver {
    Hub(HubMetrics),
    /// The counting subscriber's tally in the shared counters.
    Subscriber(Arc<Counters>),
}

impl Receiver {
    pub async fn count(&self) -> Result<HubCounts, MetricsError> {
        match self {
            Receiver::Hub(metrics) => metrics.telemetry().await,
            Receiver::Subscriber(counters) => Ok(HubCounts {
                ingested: Counters::get(&counters.subscriber_received),
                seq_gaps: 0,
            }),
        }
    }

    /// Polls until the count stopped growing; returns it and when it last
    /// grew.
    pub async fn settle(&self) -> Result<(HubCounts, Instant), MetricsError> {
        let mut last = self.count().await?;
        let mut grew = Instant::now();
        while grew.elapsed() < QUIET {
            tokio::time::sleep(POLL).await;
            let now = self.count().await?;
            if now != last {
                last = now;
                grew = Instant::now();
            }
        }
        Ok((last, grew))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_only_the_named_family_and_labels() {
        let text = "\
# HELP yizhan_messages_received_total x
yizhan_messages_received_total{center=\"a\",channel=\"telemetry\",kind=\"counter\"} 5
yizhan_messages_received_total{center=\"b\",channel=\"telemetry\",kind=\"piano\"} 7
yizhan_messages_received_total{center=\"a\",channel=\"event\",kind=\"counter\"} 100
yizhan_messages_received_total_other{channel=\"telemetry\"} 1000
";
        let telemetry = r#"channel="telemetry""#;
        assert_eq!(
            sum_metric(text, "yizhan_messages_received_total", telemetry),
            12.0
        );
        assert_eq!(
            sum_metric(text, "yizhan_messages_received_total", ""),
            112.0
        );
        assert_eq!(sum_metric(text, "nothing", ""), 0.0);
    }
}
