//! One entry point per parser of outside input, shared by the coverage-guided targets in `fuzz/`
//! and the replay of their committed corpora in `tests/fuzz_corpus.rs`. Each takes raw bytes,
//! runs the parser, and asserts what must hold for any input: no panic, and the properties
//! named in each function (a failed assertion is a finding, like a crash).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::api::SourceType;
use crate::backtest::trace::Trace;
use crate::metrics::{exposition, kubelet, preset, response};
use crate::policy;
use crate::quantity;

/// Longest stored or shown message a parser may produce from any input, beyond the URL.
const MESSAGE_BOUND: usize = 600;

/// Names of the targets, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: [&str; 7] = [
    "policy",
    "exposition",
    "query_response",
    "range_response",
    "quantity",
    "query_template",
    "trace_csv",
];

/// Runs the target `name` on `data`; `false` when there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "policy" => policy_document(data),
        "exposition" => exposition_page(data),
        "query_response" => query_response(data),
        "range_response" => range_response(data),
        "quantity" => quantity_text(data),
        "query_template" => query_template(data),
        "trace_csv" => trace_csv(data),
        _ => return false,
    }
    true
}

/// YAML or JSON → checked policy (what `validate` and the controller do). An accepted policy
/// keeps the rules the checks promise: interval ≥ 1s, timeout shorter than the interval, bounds
/// in order, and a source URL that names only an address.
pub fn policy_document(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for p in policy::check_yaml(text) {
        assert!(!p.problem.message.is_empty(), "a problem without words");
    }
    let mut objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(text)
        .map_while(|doc| Value::deserialize(doc).ok())
        .take(16)
        .collect();
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        objects.push(v);
    }
    for object in objects {
        if let Ok((_, checked)) = policy::check_object(&object) {
            accepted_policy(&checked);
        }
    }
}

fn accepted_policy(p: &policy::Policy) {
    assert!(p.interval >= Duration::from_secs(1), "{:?}", p.interval);
    assert!(!p.source.timeout.is_zero());
    assert!(
        p.source.timeout < p.interval,
        "timeout {:?} not below interval {:?}",
        p.source.timeout,
        p.interval
    );
    if p.source.kind != SourceType::Direct {
        let url = p.source.url.as_deref().unwrap_or("");
        assert!(policy::source_url(url).is_ok(), "accepted URL {url:?}");
    }
    if let Some(b) = &p.brokers {
        assert!(1 <= b.min_replicas && b.min_replicas <= b.max_replicas);
        assert!(b.max_replicas <= policy::MAX_REPLICAS);
        for m in &b.metrics {
            assert!(m.target.is_finite() && m.target > 0.0, "{m:?}");
        }
    }
    if let Some(b) = &p.bookies {
        assert!(b.max_size > 0);
        assert!(b.expand_at_used_percent > 0.0 && b.expand_at_used_percent < 100.0);
    }
}

/// The Direct mode's readers: a pod's Prometheus text page and a kubelet summary.
pub fn exposition_page(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let series = exposition::parse_page(&text);
    for s in &series {
        assert!(exposition::wanted(&s.name), "{} was not asked for", s.name);
    }
    for p in preset::Preset::ALL {
        let _ = exposition::preset_value(p, &series);
    }
    if let Ok(volumes) = kubelet::parse_summary(&text) {
        for v in volumes {
            let _ = v.used_percent();
        }
    }
}

/// A query API answer (Prometheus, VictoriaMetrics): the first two bytes are the HTTP status.
/// Whatever the body, an error's text stays within a bound and never repeats a non-JSON body.
pub fn query_response(data: &[u8]) {
    const URL: &str = "http://prometheus.test:9090/api/v1/query";
    let (status, body) = match data {
        [a, b, rest @ ..] => (100 + u16::from_be_bytes([*a, *b]) % 500, rest),
        _ => (200, data),
    };
    let body = String::from_utf8_lossy(body);
    match response::parse(URL, status, &body) {
        Ok(response::QueryResult::Vector(v)) => assert!(v.len() <= body.len()),
        Ok(response::QueryResult::Matrix(m)) => assert!(m.len() <= body.len()),
        Ok(response::QueryResult::Scalar(_)) => {}
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.chars().count() <= URL.len() + MESSAGE_BOUND,
                "{} characters",
                text.len()
            );
            let trimmed = body.trim();
            if trimmed.len() >= 16 && !trimmed.starts_with('{') && text.contains(trimmed) {
                // Our own words and the URL may spell the body by chance: it is repeated only
                // when the same answer with its characters masked does not say it too.
                let masked: String = body
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if i == 0 || c.is_whitespace() { c } else { '~' })
                    .collect();
                let reference = response::parse(URL, status, &masked)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                assert!(reference.contains(trimmed), "the body was repeated: {text}");
            }
        }
    }
}

/// A range-query answer as `backtest --prometheus` and the forecast's history read it: the first
/// two bytes are the HTTP status. Points never outnumber the body's bytes, and an error's text
/// stays within a bound whatever the server sent.
pub fn range_response(data: &[u8]) {
    const COLUMN: &str = "throughput";
    const QUERY: &str = "sum(rate(pulsar_throughput_in[1m]))";
    let (status, body) = match data {
        [a, b, rest @ ..] => (100 + u16::from_be_bytes([*a, *b]) % 500, rest),
        _ => (200, data),
    };
    let body = String::from_utf8_lossy(body);
    match crate::backtest::prometheus::decode_range(status, &body, COLUMN, QUERY) {
        Ok(points) => assert!(points.len() <= body.len()),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.chars().count() <= COLUMN.len() + QUERY.len() + MESSAGE_BOUND,
                "{} characters",
                text.chars().count()
            );
        }
    }
}

/// Kubernetes quantities: a parsed value is finite, and whole bytes survive a round trip.
pub fn quantity_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = quantity::parse(text) {
        assert!(v.is_finite(), "{text:?} → {v}");
    }
    if let Ok(b) = quantity::parse_bytes(text) {
        let again = quantity::parse_bytes(&quantity::format_bytes(b).0);
        assert_eq!(again, Ok(b), "{text:?} → {b} does not survive formatting");
    }
}

/// Custom query templates: the first line is the template, the next three the namespace, policy
/// and StatefulSet values. Whatever the values, the rendered query has the template's PromQL
/// outside string literals: a value can never end its string and add PromQL of its own.
pub fn query_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\n');
    let template = parts.next().unwrap_or("");
    let namespace = parts.next().unwrap_or("pulsar");
    let name = parts.next().unwrap_or("policy");
    let statefulset = parts.next().unwrap_or("pulsar-broker");
    let values = preset::Placeholders {
        namespace,
        policy: name,
        statefulset,
    };
    if let Ok(query) = preset::render(template, values) {
        assert_eq!(
            outside_literals(&query),
            outside_literals(template),
            "a value changed the query's PromQL: {query:?}"
        );
    }
}

/// The characters of a PromQL text outside its string literals (`"…"`, `'…'` with backslash
/// escapes, and raw `` `…` ``), with each literal replaced by its quote pair.
fn outside_literals(text: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => {
                out.push(c);
                quote = None;
            }
            Some('`') => {}
            Some(_) if c == '\\' => {
                chars.next();
            }
            Some(_) => {}
            None => {
                if matches!(c, '"' | '\'' | '`') {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// Backtest trace CSV: an accepted trace has rows in strictly increasing time, and what it
/// writes reads back with the same shape.
pub fn trace_csv(data: &[u8]) {
    let Ok(trace) = Trace::parse(data) else {
        return;
    };
    assert!(trace.rows.windows(2).all(|w| w[0].seconds < w[1].seconds));
    let mut written = Vec::new();
    if trace.write(&mut written).is_ok() {
        let again = Trace::parse(written.as_slice()).expect("a written trace reads back");
        assert_eq!(again.rows.len(), trace.rows.len());
        assert_eq!(again.columns, trace.columns);
    }
}
