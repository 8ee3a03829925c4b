//! Direct mode's reading of a `/metrics` page: keep the lines a preset needs, parse them with
//! `prometheus-parse`, and compute each preset's per-pod value the way the PromQL does.

use std::io;

use prometheus_parse::{Sample, Scrape, Value};

use super::preset::Preset;

/// Metric names on broker and bookie pages that presets read.
const BROKER_NAMES: [&str; 8] = [
    "pulsar_broker_throughput_in",
    "pulsar_broker_throughput_out",
    "pulsar_broker_rate_in",
    "pulsar_broker_rate_out",
    "jvm_memory_bytes_used",
    "jvm_memory_bytes_max",
    "jvm_memory_direct_bytes_used",
    "jvm_memory_direct_bytes_max",
];

/// One series of a page, after counters have (possibly) been turned into rates.
#[derive(Debug, Clone, PartialEq)]
pub struct PageSeries {
    /// Metric name.
    pub name: String,
    /// Labels, sorted, as `k="v"` pairs joined by commas; identifies the series within the pod.
    pub labels: String,
    /// Value.
    pub value: f64,
    /// Whether the page declared it a counter.
    pub counter: bool,
    area_heap: bool,
}

/// Whether Direct mode needs a series of this name.
pub fn wanted(name: &str) -> bool {
    BROKER_NAMES.contains(&name) || usage_dir(name, "bookie_ledger_dir_")
}

/// `bookie_<kind>_dir_<path>_usage`: the path is part of the name.
fn usage_dir(name: &str, prefix: &str) -> bool {
    name.len() > prefix.len() + "_usage".len()
        && name.starts_with(prefix)
        && name.ends_with("_usage")
}

/// The metric name a sample or `# TYPE` line is about, if any.
fn line_metric(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let rest = if let Some(comment) = line.strip_prefix('#') {
        comment.trim_start().strip_prefix("TYPE")?.trim_start()
    } else {
        line
    };
    let end = rest
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// Parses the lines of `page` that presets need. Lines about other metrics (topic-level
/// series, histograms) never reach the parser, which is where a large page's time goes.
pub fn parse_page(page: &str) -> Vec<PageSeries> {
    let lines = page
        .lines()
        .filter(|l| line_metric(l).is_some_and(wanted))
        .map(|l| Ok::<_, io::Error>(l.to_string()));
    // Reading from memory cannot fail; an empty scrape is the safe fallback regardless.
    let scrape = Scrape::parse(lines).unwrap_or(Scrape {
        docs: Default::default(),
        samples: Vec::new(),
    });
    scrape.samples.into_iter().filter_map(series).collect()
}

fn series(s: Sample) -> Option<PageSeries> {
    let (value, counter) = match s.value {
        Value::Counter(v) => (v, true),
        Value::Gauge(v) | Value::Untyped(v) => (v, false),
        Value::Histogram(_) | Value::Summary(_) => return None,
    };
    let area_heap = s.labels.get("area") == Some("heap");
    Some(PageSeries {
        labels: s.labels.to_string(),
        name: s.metric,
        value,
        counter,
        area_heap,
    })
}

/// A preset's value for one pod, from its (rate-converted) series; `None` when the page lacks
/// the inputs. NaN and infinities are returned as such for the caller to reject.
pub fn preset_value(preset: Preset, series: &[PageSeries]) -> Option<f64> {
    let sum = |names: &[&str], heap_only: bool| {
        let mut found = false;
        let total = series
            .iter()
            .filter(|s| names.contains(&s.name.as_str()) && (!heap_only || s.area_heap))
            .inspect(|_| found = true)
            .map(|s| s.value)
            .sum::<f64>();
        found.then_some(total)
    };
    let ratio = |used: Option<f64>, max: Option<f64>| Some(100.0 * used? / max?);
    let max_of = |prefix: &str| {
        series
            .iter()
            .filter(|s| usage_dir(&s.name, prefix))
            .map(|s| s.value)
            .reduce(f64::max)
    };
    match preset {
        // Both directions must be on the page: a page without `_out` is no value, not a
        // broker without outbound traffic.
        Preset::Throughput => Some(
            sum(&["pulsar_broker_throughput_in"], false)?
                + sum(&["pulsar_broker_throughput_out"], false)?,
        ),
        Preset::MessageRate => {
            Some(sum(&["pulsar_broker_rate_in"], false)? + sum(&["pulsar_broker_rate_out"], false)?)
        }
        Preset::HeapMemory => ratio(
            sum(&["jvm_memory_bytes_used"], true),
            sum(&["jvm_memory_bytes_max"], true),
        ),
        Preset::DirectMemory => ratio(
            sum(&["jvm_memory_direct_bytes_used"], false),
            sum(&["jvm_memory_direct_bytes_max"], false),
        ),
        Preset::LedgerUsage => max_of("bookie_ledger_dir_"),
        // Claims come from the kubelet, not from pod pages.
        Preset::ClaimUsage => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKER: &str = include_str!("../../tests/fixtures/broker-0.prom");
    const BOOKIE: &str = include_str!("../../tests/fixtures/bookie-1.prom");

    #[test]
    fn a_page_missing_one_direction_has_no_traffic_value() {
        let page = BROKER
            .lines()
            .filter(|l| !l.contains("pulsar_broker_throughput_out"))
            .collect::<Vec<_>>()
            .join("\n");
        let s = parse_page(&page);
        assert_eq!(preset_value(Preset::Throughput, &s), None);
        assert!(preset_value(Preset::MessageRate, &s).is_some());
    }

    #[test]
    fn reads_broker_fixture() {
        let s = parse_page(BROKER);
        let v = |p| preset_value(p, &s).unwrap();
        assert_eq!(v(Preset::Throughput), 41943040.0 + 83886080.0);
        assert_eq!(v(Preset::MessageRate), 45000.0);
        assert_eq!(v(Preset::HeapMemory), 75.0);
        assert!((v(Preset::DirectMemory) - 45.0).abs() < 1e-9);
        assert_eq!(preset_value(Preset::LedgerUsage, &s), None);
        // Namespace-level and unrelated series never reach the parser.
        assert!(s.iter().all(|x| wanted(&x.name)));
    }

    #[test]
    fn reads_bookie_fixture() {
        let s = parse_page(BOOKIE);
        assert_eq!(preset_value(Preset::LedgerUsage, &s), Some(96.1));
        assert_eq!(preset_value(Preset::Throughput, &s), None);
    }

    #[test]
    fn garbage_gives_nothing_and_no_panic() {
        for page in [
            "",
            "\0\0\0",
            "{{{",
            "pulsar_broker_rate_in{",
            "pulsar_broker_rate_in abc\n# TYPE",
        ] {
            let s = parse_page(page);
            assert_eq!(preset_value(Preset::MessageRate, &s), None, "{page:?}");
        }
        let nan = parse_page("pulsar_broker_rate_in NaN\npulsar_broker_rate_out 1\n");
        assert!(preset_value(Preset::MessageRate, &nan).unwrap().is_nan());
    }

    #[test]
    fn recognises_metric_of_line() {
        assert_eq!(line_metric("# TYPE foo gauge"), Some("foo"));
        assert_eq!(line_metric("foo{a=\"b\"} 1"), Some("foo"));
        assert_eq!(line_metric("# HELP foo x"), None);
        assert_eq!(line_metric(""), None);
    }
}
