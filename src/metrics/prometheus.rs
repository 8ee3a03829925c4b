//! Prometheus and VictoriaMetrics through the Prometheus query API (`/api/v1/query`,
//! `/api/v1/query_range`, form-encoded POST).
//!
//! VictoriaMetrics differences handled here: it evaluates a query without `time=` at
//! now − `-search.latencyOffset`, so `time=` is always sent; bad PromQL is HTTP 422 with
//! `errorType: "422"` (Prometheus: 400 `bad_data`), which maps to the same
//! [`MetricsError::Query`]; the cluster version serves the API under `/select/<tenant>/prometheus`,
//! which is simply part of the configured URL; a scalar expression comes back as a one-element
//! vector rather than a scalar, which a Custom metric sums to the same value.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use jiff::Timestamp;

use super::credentials::Credentials;
use super::error::MetricsError;
use super::http::HttpClient;
use super::preset::{FIELD, Preset};
use super::response::{self, Point, QueryResult};
use super::source::{CustomValue, Grouped, MetricsSource};

/// Which server speaks the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Prometheus (or anything Prometheus-compatible without VictoriaMetrics' quirks).
    Prometheus,
    /// VictoriaMetrics, single node or cluster.
    VictoriaMetrics,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Prometheus => "Prometheus",
            Flavor::VictoriaMetrics => "VictoriaMetrics",
        }
    }
}

/// A Prometheus-API source.
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    flavor: Flavor,
    base: String,
    http: HttpClient,
}

impl PrometheusSource {
    /// A source for the API at `url` (e.g. `http://prometheus:9090` or
    /// `http://vmselect:8481/select/0/prometheus`).
    pub fn new(
        flavor: Flavor,
        url: &str,
        timeout: Duration,
        headers: &BTreeMap<String, String>,
        credentials: &Credentials,
    ) -> Result<Self, MetricsError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| MetricsError::Config(format!("url {url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(MetricsError::Config(format!(
                "url {url:?} must start with http:// or https://"
            )));
        }
        Ok(PrometheusSource {
            flavor,
            base: url.trim_end_matches('/').to_string(),
            http: HttpClient::new(timeout, headers, credentials)?,
        })
    }

    /// The server kind.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// An instant query evaluated at `at`.
    pub async fn query(&self, promql: &str, at: Timestamp) -> Result<QueryResult, MetricsError> {
        let url = format!("{}/api/v1/query", self.base);
        let form = [
            ("query", promql.to_string()),
            ("time", unix(at)),
            ("timeout", server_timeout(self.http.timeout())),
        ];
        let (status, body) = self
            .http
            .send(&url, self.http.post(&url).form(&form))
            .await?;
        response::parse(&url, status, &body)
    }

    /// A range query over `[start, end]` every `step`.
    pub async fn query_range(
        &self,
        promql: &str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<QueryResult, MetricsError> {
        let url = format!("{}/api/v1/query_range", self.base);
        let form = [
            ("query", promql.to_string()),
            ("start", unix(start)),
            ("end", unix(end)),
            ("step", format!("{:.3}", step.as_secs_f64().max(0.001))),
            ("timeout", server_timeout(self.http.timeout())),
        ];
        let (status, body) = self
            .http
            .send(&url, self.http.post(&url).form(&form))
            .await?;
        response::parse(&url, status, &body)
    }

    /// Reads one preset with its grouped query.
    pub async fn grouped(&self, preset: Preset, at: Timestamp) -> Result<Grouped, MetricsError> {
        let result = self.query(&preset.grouped_query(), at).await?;
        let QueryResult::Vector(series) = result else {
            return Err(MetricsError::Decode {
                url: format!("{}/api/v1/query", self.base),
                detail: format!("{} query did not return a vector", preset.name()),
                snippet: String::new(),
            });
        };
        let label = preset.object_label();
        let mut values = BTreeMap::new();
        let mut times = BTreeMap::new();
        for s in series {
            let (Some(ns), Some(obj)) = (s.labels.get("namespace"), s.labels.get(label)) else {
                // Series without the grouping labels belong to no policy.
                continue;
            };
            let key = (ns.clone(), obj.clone());
            match s.labels.get(FIELD).map(String::as_str) {
                Some("time") => {
                    times.insert(key, s.point.value);
                }
                _ => {
                    values.insert(key, s.point);
                }
            }
        }
        let points = values
            .into_iter()
            .map(|(key, p)| {
                // The measurement time when the server told it, else the evaluation time.
                let at = times
                    .get(&key)
                    .and_then(|secs| response::timestamp(*secs))
                    .unwrap_or(p.at);
                (key, Point { value: p.value, at })
            })
            .collect();
        Ok(Grouped {
            points,
            failures: BTreeMap::new(),
        })
    }
}

impl MetricsSource for PrometheusSource {
    fn describe(&self) -> String {
        format!("{} at {}", self.flavor.name(), self.base)
    }

    fn fetch<'a>(
        &'a self,
        presets: &'a [Preset],
        at: Timestamp,
    ) -> BoxFuture<'a, Vec<Result<Grouped, MetricsError>>> {
        Box::pin(join_all(presets.iter().map(|p| self.grouped(*p, at))))
    }

    fn custom<'a>(
        &'a self,
        query: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<Option<CustomValue>, MetricsError>> {
        Box::pin(async move {
            match self.query(query, at).await? {
                QueryResult::Scalar(point) => Ok(Some(CustomValue {
                    point,
                    pods: BTreeSet::new(),
                })),
                QueryResult::Vector(v) if v.is_empty() => Ok(None),
                QueryResult::Vector(v) => {
                    let at = v.iter().map(|s| s.point.at).min().unwrap_or(at);
                    let value = v.iter().map(|s| s.point.value).sum();
                    let pods = v
                        .iter()
                        .filter_map(|s| s.labels.get("pod").cloned())
                        .collect();
                    Ok(Some(CustomValue {
                        point: Point { value, at },
                        pods,
                    }))
                }
                QueryResult::Matrix(_) => Err(MetricsError::Unsupported(format!(
                    "custom query {query:?} returns a range vector; use an instant expression such as sum(rate(x[1m]))"
                ))),
            }
        })
    }
}

/// Unix seconds with milliseconds, as both servers accept for `time`, `start` and `end`.
fn unix(t: Timestamp) -> String {
    format!("{:.3}", t.as_millisecond() as f64 / 1000.0)
}

/// The server-side timeout: a little under ours, so the server's own error arrives first.
fn server_timeout(client: Duration) -> String {
    let ms = client
        .as_millis()
        .saturating_sub(client.as_millis() / 10)
        .max(1);
    format!("{ms}ms")
}
