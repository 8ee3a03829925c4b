//! Fetches a trace from Prometheus or VictoriaMetrics with range queries, one column per query,
//! in chunks small enough for the servers' per-query point limits.
//!
//! The boundary is [`fetch`]: base URL, one PromQL query per trace column, from/to/step → trace
//! rows. The queries are the named constants below, filled in per policy by [`queries`].

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::LoadedPolicy;
use super::trace::{Column, Row, Trace};
use crate::policy::bounded;

/// Bytes per second in + out over the policy's brokers (broker-level gauges, already rates).
pub const THROUGHPUT: &str = r#"sum(pulsar_broker_throughput_in{namespace="{{namespace}}",pod=~"{{statefulset}}-[0-9]+"}) + sum(pulsar_broker_throughput_out{namespace="{{namespace}}",pod=~"{{statefulset}}-[0-9]+"})"#;
/// Messages per second in + out over the policy's brokers.
pub const MESSAGE_RATE: &str = r#"sum(pulsar_broker_rate_in{namespace="{{namespace}}",pod=~"{{statefulset}}-[0-9]+"}) + sum(pulsar_broker_rate_out{namespace="{{namespace}}",pod=~"{{statefulset}}-[0-9]+"})"#;
/// Heap used / max in percent, averaged over the brokers.
pub const HEAP: &str = r#"100 * avg(jvm_memory_bytes_used{area="heap",namespace="{{namespace}}",pod=~"{{statefulset}}-[0-9]+"} / jvm_memory_bytes_max{area="heap",namespace="{{namespace}}",pod=~"{{statefulset}}-[0-9]+"})"#;
/// Direct memory used / max in percent, averaged over the brokers.
pub const DIRECT: &str = r#"100 * avg(jvm_memory_direct_bytes_used{namespace="{{namespace}}",pod=~"{{statefulset}}-[0-9]+"} / jvm_memory_direct_bytes_max{namespace="{{namespace}}",pod=~"{{statefulset}}-[0-9]+"})"#;
/// Brokers reporting: the count the memory averages were taken over.
pub const BROKERS: &str = r#"count(pulsar_broker_throughput_in{namespace="{{namespace}}",pod=~"{{statefulset}}-[0-9]+"})"#;
/// Used bytes of the fullest ledger claim.
pub const LEDGER_USED: &str = r#"max(kubelet_volume_stats_used_bytes{namespace="{{namespace}}",persistentvolumeclaim=~"{{claims}}"})"#;
/// Capacity of the largest ledger claim.
pub const LEDGER_CAPACITY: &str = r#"max(kubelet_volume_stats_capacity_bytes{namespace="{{namespace}}",persistentvolumeclaim=~"{{claims}}"})"#;

/// Points per range query at most (Prometheus refuses more than 11,000 per series).
pub const CHUNK_POINTS: i64 = 5_000;
/// Points per column at most in one fetch (a week at 1 s steps fits; a year at 1 s does not).
pub const MAX_POINTS: i64 = 2_000_000;

/// A time range and where to query it.
#[derive(Debug, Clone)]
pub struct RangeQuery {
    /// Base URL of the query API (`http://prometheus:9090`, `.../select/0/prometheus`).
    pub url: String,
    /// First point.
    pub from: Timestamp,
    /// Last point (inclusive when on the step grid).
    pub to: Timestamp,
    /// Resolution.
    pub step: Duration,
    /// Extra headers, e.g. `X-Scope-OrgID`.
    pub headers: BTreeMap<String, String>,
    /// Points per range query at most (normally [`CHUNK_POINTS`]).
    pub chunk_points: i64,
}

/// Why fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A time could not be read.
    #[error(
        "{text:?} is not a time: use RFC 3339 (2024-05-01T00:00:00Z), unix seconds, `now` or `now-7d`"
    )]
    Time {
        /// The text.
        text: String,
    },
    /// The range is unusable.
    #[error("{0}")]
    Range(String),
    /// The request failed before an answer came.
    #[error("query for {column} failed: {source}")]
    Http {
        /// The column being fetched.
        column: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("query for {column} failed with HTTP {status}: {message}\nquery: {query}")]
    Server {
        /// The column being fetched.
        column: String,
        /// HTTP status.
        status: u16,
        /// The server's error text.
        message: String,
        /// The query sent.
        query: String,
    },
    /// The answer was not a Prometheus range result.
    #[error("query for {column} returned an unexpected answer: {message}")]
    Decode {
        /// The column being fetched.
        column: String,
        /// What was wrong.
        message: String,
    },
    /// A query returned several series instead of one total.
    #[error(
        "query for {column} returned {series} series; it must aggregate to one (e.g. wrap it in sum())\nquery: {query}"
    )]
    NotAggregated {
        /// The column being fetched.
        column: String,
        /// How many series came back.
        series: usize,
        /// The query sent.
        query: String,
    },
    /// Nothing came back at all.
    #[error(
        "no query returned data between {from} and {to}; check the URL, the namespace and that the metrics are scraped"
    )]
    NoData {
        /// Range start.
        from: Timestamp,
        /// Range end.
        to: Timestamp,
    },
}

/// Reads `now`, `now-<duration>`, unix seconds or an RFC 3339 timestamp.
pub fn parse_time(text: &str, now: Timestamp) -> Result<Timestamp, FetchError> {
    let err = || FetchError::Time {
        text: text.to_string(),
    };
    let t = text.trim();
    if t == "now" {
        return Ok(now);
    }
    if let Some(ago) = t.strip_prefix("now-") {
        let d = humantime::parse_duration(ago.trim()).map_err(|_| err())?;
        let d = SignedDuration::try_from(d).map_err(|_| err())?;
        return now.checked_sub(d).map_err(|_| err());
    }
    if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let secs: f64 = t.parse().map_err(|_| err())?;
        return Timestamp::from_millisecond((secs * 1000.0).round() as i64).map_err(|_| err());
    }
    t.parse::<Timestamp>().map_err(|_| err())
}

/// Replaces `{{name}}` placeholders.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    out
}

/// The query of every column the policy needs, with its names filled in.
pub fn queries(loaded: &LoadedPolicy) -> Vec<(Column, String)> {
    let policy = &loaded.policy;
    let ns = loaded.namespace.as_str();
    let mut out = Vec::new();
    if let Some(b) = &policy.brokers {
        let values = [
            ("namespace", ns),
            ("statefulset", b.stateful_set.as_str()),
            ("policy", loaded.name.as_str()),
        ];
        let mut push = |column: Column, query: String| {
            if !out.iter().any(|(c, _)| *c == column) {
                out.push((column, query));
            }
        };
        push(Column::Brokers, fill(BROKERS, &values));
        for m in &b.metrics {
            let column = super::replay::metric_column(m);
            let template = match &column {
                Column::Throughput => THROUGHPUT,
                Column::MessageRate => MESSAGE_RATE,
                Column::Heap => HEAP,
                Column::Direct => DIRECT,
                _ => m.query.as_deref().unwrap_or(""),
            };
            push(column, fill(template, &values));
        }
    }
    if let Some(b) = &policy.bookies {
        let claim = super::claim_name(b);
        let template = claim
            .strip_suffix(&format!("-{}-0", b.stateful_set))
            .unwrap_or("ledgers");
        let claims = format!("{template}-{}-[0-9]+", b.stateful_set);
        let values = [("namespace", ns), ("claims", claims.as_str())];
        out.push((Column::LedgerUsed, fill(LEDGER_USED, &values)));
        out.push((Column::LedgerCapacity, fill(LEDGER_CAPACITY, &values)));
    }
    out
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    values: Vec<(f64, String)>,
}

fn seconds_param(t: Timestamp) -> String {
    format!("{:.3}", t.as_millisecond() as f64 / 1000.0)
}

/// Fetches one trace column per query over the range, calling `progress(done, total)` after
/// every chunk.
pub async fn fetch(
    client: &reqwest::Client,
    range: &RangeQuery,
    queries: &[(Column, String)],
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Trace, FetchError> {
    let step_ms = range.step.as_millis() as i64;
    if step_ms < 1000 {
        return Err(FetchError::Range(format!(
            "--step must be at least 1s, got {}",
            humantime::format_duration(range.step)
        )));
    }
    let span_ms = range.to.as_millisecond() - range.from.as_millisecond();
    if span_ms < 0 {
        return Err(FetchError::Range(format!(
            "--from {} is after --to {}",
            range.from, range.to
        )));
    }
    let points = span_ms / step_ms + 1;
    if points as f64 * range.step.as_secs_f64() > super::trace::MAX_SECONDS {
        return Err(FetchError::Range(
            "the range covers more than a year; replay a shorter one".into(),
        ));
    }
    if points > MAX_POINTS {
        return Err(FetchError::Range(format!(
            "{points} points per query is more than {MAX_POINTS}; use a coarser --step"
        )));
    }
    let chunk_points = range.chunk_points.clamp(1, CHUNK_POINTS);
    let chunks = (points + chunk_points - 1) / chunk_points;
    let total = chunks as u64 * queries.len() as u64;
    let mut done = 0;
    progress(done, total);
    let mut cells: Vec<Vec<Option<f64>>> = vec![vec![None; queries.len()]; points as usize];
    let endpoint = format!("{}/api/v1/query_range", range.url.trim_end_matches('/'));
    let step_s = format!("{}", range.step.as_secs_f64());
    let from_ms = range.from.as_millisecond();
    for (q, (column, query)) in queries.iter().enumerate() {
        for chunk in 0..chunks {
            let first = chunk * chunk_points;
            let last = ((chunk + 1) * chunk_points - 1).min(points - 1);
            let at = |k: i64| Timestamp::from_millisecond(from_ms + k * step_ms);
            let (Ok(start), Ok(end)) = (at(first), at(last)) else {
                return Err(FetchError::Range(
                    "the range is outside the calendar".into(),
                ));
            };
            let series =
                query_range(client, range, &endpoint, column, query, start, end, &step_s).await?;
            for (ts, text) in series {
                let k = ((ts * 1000.0 - from_ms as f64) / step_ms as f64).round() as i64;
                if !(first..=last).contains(&k) {
                    continue;
                }
                // NaN and infinities are missing samples, as the engine treats them.
                let value = text
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0);
                cells[k as usize][q] = value;
            }
            done += 1;
            progress(done, total);
        }
    }
    if cells.iter().all(|row| row.iter().all(Option::is_none)) {
        return Err(FetchError::NoData {
            from: range.from,
            to: range.to,
        });
    }
    let rows = cells
        .into_iter()
        .enumerate()
        .map(|(k, values)| Row {
            seconds: (k as i64 * step_ms) as f64 / 1000.0,
            values,
        })
        .collect();
    Ok(Trace {
        columns: queries.iter().map(|(c, _)| c.clone()).collect(),
        rows,
    })
}

#[allow(clippy::too_many_arguments)]
async fn query_range(
    client: &reqwest::Client,
    range: &RangeQuery,
    endpoint: &str,
    column: &Column,
    query: &str,
    start: Timestamp,
    end: Timestamp,
    step: &str,
) -> Result<Vec<(f64, String)>, FetchError> {
    let column_name = column.name();
    let mut request = client.post(endpoint).form(&[
        ("query", query),
        ("start", &seconds_param(start)),
        ("end", &seconds_param(end)),
        ("step", step),
    ]);
    for (k, v) in &range.headers {
        request = request.header(k, v);
    }
    let http = |source| FetchError::Http {
        column: column_name.clone(),
        source,
    };
    let response = request.send().await.map_err(http)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(http)?;
    decode_range(status, &body, &column_name, query)
}

/// Longest server text kept in an error: enough to act on, never a whole page.
const SERVER_TEXT_BOUND: usize = 300;

/// Reads one range answer: the points of its single series, or why there are none.
pub fn decode_range(
    status: u16,
    body: &str,
    column: &str,
    query: &str,
) -> Result<Vec<(f64, String)>, FetchError> {
    let answer: Result<Answer, _> = serde_json::from_str(body);
    if !(200..300).contains(&status) {
        let message = match answer {
            Ok(Answer { error: Some(e), .. }) => bounded(&e, SERVER_TEXT_BOUND),
            _ => bounded(body, SERVER_TEXT_BOUND),
        };
        return Err(FetchError::Server {
            column: column.to_string(),
            status,
            message,
            query: query.to_string(),
        });
    }
    let decode = |message: String| FetchError::Decode {
        column: column.to_string(),
        message: bounded(&message, SERVER_TEXT_BOUND),
    };
    let answer = answer.map_err(|e| decode(e.to_string()))?;
    if answer.status != "success" {
        return Err(decode(answer.error.unwrap_or(answer.status)));
    }
    let data = answer.data.ok_or_else(|| decode("no data field".into()))?;
    if data.result_type != "matrix" {
        return Err(decode(format!(
            "result type {}, expected matrix",
            data.result_type
        )));
    }
    match data.result.len() {
        0 => Ok(Vec::new()),
        1 => Ok(data.result.into_iter().flat_map(|s| s.values).collect()),
        n => Err(FetchError::NotAggregated {
            column: column.to_string(),
            series: n,
            query: query.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_times() {
        let now: Timestamp = "2024-05-08T12:00:00Z".parse().unwrap();
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(
            parse_time("now-7d", now).unwrap(),
            "2024-05-01T12:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_time("1714564800", now).unwrap(),
            "2024-05-01T12:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_time("2024-05-01T12:00:00Z", now).unwrap(),
            "2024-05-01T12:00:00Z".parse::<Timestamp>().unwrap()
        );
        for bad in ["yesterday", "now-", "now-7x", "2024-13-01"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn decodes_one_series_and_bounds_server_text() {
        let ok = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"2"],[16,"3"]]}]}}"#;
        let points = decode_range(200, ok, "c", "q").unwrap();
        assert_eq!(
            points,
            vec![(1.0, "2".to_string()), (16.0, "3".to_string())]
        );
        let long = format!(r#"{{"status":"error","error":"{}"}}"#, "x".repeat(10_000));
        match decode_range(400, &long, "c", "q") {
            Err(FetchError::Server {
                status: 400,
                message,
                ..
            }) => assert!(message.chars().count() <= SERVER_TEXT_BOUND, "{message}"),
            other => panic!("{other:?}"),
        }
        let two = r#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[]},{"values":[]}]}}"#;
        assert!(matches!(
            decode_range(200, two, "c", "q"),
            Err(FetchError::NotAggregated { series: 2, .. })
        ));
    }

    #[test]
    fn fills_names_into_queries() {
        let filled = fill(
            THROUGHPUT,
            &[("namespace", "pulsar"), ("statefulset", "pulsar-broker")],
        );
        assert!(!filled.contains("{{"), "{filled}");
        assert!(
            filled.contains(r#"pod=~"pulsar-broker-[0-9]+""#),
            "{filled}"
        );
    }
}
