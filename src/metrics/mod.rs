//! Metrics sources: the `MetricsSource` trait and its implementations — Prometheus and
//! VictoriaMetrics through the query API, and `Direct` pod scraping — plus the Pulsar presets
//! and the grouped evaluation round that serves many policies with one request per preset.

pub mod credentials;
pub mod direct;
pub mod error;
pub mod exposition;
pub mod history;
pub mod http;
pub mod kubelet;
pub mod preset;
pub mod prometheus;
pub mod rates;
pub mod response;
pub mod round;
pub mod source;

use std::sync::Arc;

pub use credentials::{Auth, Credentials};
pub use direct::{DirectSource, KubeletStats, PodEndpoint};
pub use error::MetricsError;
pub use preset::{Preset, Role};
pub use prometheus::{Flavor, PrometheusSource};
pub use response::{Point, QueryResult};
pub use round::{PolicyReadings, Reading, Target, collect};
pub use source::{CustomValue, Grouped, MetricsSource};

use crate::api::SourceType;
use crate::policy::Source;

/// Builds the source a policy declares. `Direct` needs the pods to scrape (and optionally
/// kubelet access for claims); the query API sources need only the URL and credentials.
pub fn build(
    source: &Source,
    credentials: &Credentials,
    pods: Vec<PodEndpoint>,
    kubelet: Option<KubeletStats>,
) -> Result<Arc<dyn MetricsSource>, MetricsError> {
    let flavor = match source.kind {
        SourceType::Direct => {
            return Ok(Arc::new(DirectSource::new(
                pods,
                kubelet,
                source.timeout,
                credentials,
            )?));
        }
        SourceType::Prometheus => Flavor::Prometheus,
        SourceType::VictoriaMetrics => Flavor::VictoriaMetrics,
    };
    let url = source
        .url
        .as_deref()
        .ok_or_else(|| MetricsError::Config(format!("a {flavor:?} source needs a url")))?;
    Ok(Arc::new(PrometheusSource::new(
        flavor,
        url,
        source.timeout,
        &source.headers,
        credentials,
    )?))
}
