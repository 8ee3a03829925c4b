//! The emulator's live pages against the pages captured from a real Pulsar: every family the
//! emulator serves exists on the real page with the same type, `# TYPE` line and label names;
//! the metrics paths answer alike; values are in the real units; every preset reads both.

use std::collections::BTreeMap;

use pulsar_autoscaler::emulator::Config;
use pulsar_autoscaler::metrics::Preset;
use pulsar_autoscaler::metrics::exposition::{parse_page, preset_value};
use serde_json::Value;

use crate::real::{answers, fixture_dir};
use crate::shape::{LEDGER_DIR_USAGE, Sample, not_in_reference, samples, shape};

/// A committed capture; the message says how to make it.
pub fn fixture(name: &str) -> String {
    let path = fixture_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; capture it with `cargo test --test page_shape -- --ignored \
             capture_real_pages` (see docs/testing.md)",
            path.display()
        )
    })
}

/// `capture.json`: the load, the bookie disk's own measure and the HTTP answers of the capture.
pub fn record() -> Value {
    serde_json::from_str(&fixture("capture.json"))
        .unwrap_or_else(|e| panic!("tests/fixtures/real/capture.json: {e}"))
}

/// The emulator's broker and bookie pages (broker 0, bookie 0) and how their servers answer
/// the metrics paths; `detail`: every topic-level family, not only the five rate series.
pub async fn emulator_pages(detail: bool) -> (String, String, Value) {
    let emu = crate::support::emulator(Config {
        brokers: 2,
        max_brokers: 3,
        bookies: 2,
        topic_detail: detail,
        ..Config::default()
    })
    .await;
    let http = crate::support::client();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            assert!(r.status().is_success(), "GET {url}: HTTP {}", r.status());
            r.text().await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
        }
    };
    let broker = get(format!("http://{}/metrics/", emu.brokers[0])).await;
    let bookie = get(format!("http://{}/metrics", emu.bookies[0])).await;
    let answers = serde_json::json!({
        "broker": answers(&format!("http://{}", emu.brokers[0])).await,
        "bookie": answers(&format!("http://{}", emu.bookies[0])).await,
    });
    (broker, bookie, answers)
}

/// How the answers to the metrics paths differ: status and redirect target always, content
/// type on success (error pages are whatever the web server has).
pub fn answers_differ(ours: &Value, reference: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for role in ["broker", "bookie"] {
        for path in ["/metrics", "/metrics/"] {
            let (a, r) = (&ours[role][path], &reference[role][path]);
            let mut fields = vec!["status", "location"];
            if r["status"] == 200 {
                fields.push("contentType");
            }
            for f in fields {
                if a[f] != r[f] {
                    out.push(format!(
                        "{role} GET {path}: {f} is {} here but {} on the reference",
                        a[f], r[f]
                    ));
                }
            }
        }
    }
    out
}

fn one<'a>(s: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    s.iter().find(|x| {
        x.name == name
            && labels
                .iter()
                .all(|(k, v)| x.labels.get(*k).map(String::as_str) == Some(v))
    })
}

/// Unit and range rules that a real broker page satisfies; a page in other units (MiB instead
/// of bytes, a fraction instead of percent, KB/s instead of bytes/s) breaks one of them.
pub fn broker_units(page: &str) -> Vec<String> {
    let s = samples(page);
    let mut out = Vec::new();
    let mut rule = |ok: bool, what: String| {
        if !ok {
            out.push(what);
        }
    };
    let v = |name: &str, labels: &[(&str, &str)]| one(&s, name, labels).map(|x| x.value);
    const MIB: f64 = 1024.0 * 1024.0;
    let heap_max = v("jvm_memory_bytes_max", &[("area", "heap")]);
    let heap_used = v("jvm_memory_bytes_used", &[("area", "heap")]);
    rule(
        heap_max.is_some_and(|m| (64.0 * MIB..=1024.0 * 1024.0 * MIB).contains(&m)),
        format!("heap max {heap_max:?} is not a JVM heap in bytes (64 MiB to 1 TiB)"),
    );
    rule(
        heap_used
            .zip(heap_max)
            .is_some_and(|(u, m)| u > 0.0 && u <= m),
        format!("heap used {heap_used:?} is not within (0, max {heap_max:?}]"),
    );
    rule(
        v("jvm_memory_bytes_max", &[("area", "nonheap")]) == Some(-1.0),
        "non-heap max is not -1 (unbounded)".into(),
    );
    let direct_max = v("jvm_memory_direct_bytes_max", &[]);
    let direct_used = v("jvm_memory_direct_bytes_used", &[]);
    rule(
        direct_max.is_some_and(|m| (16.0 * MIB..=1024.0 * 1024.0 * MIB).contains(&m)),
        format!("direct max {direct_max:?} is not a direct-memory limit in bytes"),
    );
    rule(
        direct_used
            .zip(direct_max)
            .is_some_and(|(u, m)| (0.0..=m).contains(&u)),
        format!("direct used {direct_used:?} is not within [0, max {direct_max:?}]"),
    );
    // Bytes/s over messages/s is a message size in bytes.
    let (t_in, r_in) = (
        v("pulsar_broker_throughput_in", &[]),
        v("pulsar_broker_rate_in", &[]),
    );
    rule(
        t_in.zip(r_in)
            .is_some_and(|(t, r)| r > 0.0 && (16.0..=5.0 * MIB).contains(&(t / r))),
        format!("throughput_in {t_in:?} / rate_in {r_in:?} is not a message size in bytes"),
    );
    // The broker-level rates are the sums of the topic-level ones, taken together.
    for (topic, broker) in [
        ("pulsar_throughput_in", "pulsar_broker_throughput_in"),
        ("pulsar_rate_in", "pulsar_broker_rate_in"),
    ] {
        let sum: f64 = s.iter().filter(|x| x.name == topic).map(|x| x.value).sum();
        let total = v(broker, &[]);
        rule(
            total.is_some_and(|t| (sum - t).abs() <= 0.01 * t.abs().max(1.0)),
            format!("{topic} sums to {sum} over topics but {broker} is {total:?}"),
        );
    }
    let cpu = v("process_cpu_seconds_total", &[]);
    rule(
        cpu.is_some_and(|c| c > 0.0 && c < 1e7),
        format!("process_cpu_seconds_total {cpu:?} is not seconds of CPU"),
    );
    out
}

/// Unit and range rules that a real bookie page satisfies: the ledger directory's usage is the
/// percent of its disk; when that disk's own measure `disk` is known, the page must agree with
/// it within 2 points, else (the emulator) it must exceed 1, which a fraction never does.
pub fn bookie_units(page: &str, disk: Option<f64>) -> Vec<String> {
    let s = samples(page);
    let mut out = Vec::new();
    let usage: Vec<f64> = s
        .iter()
        .filter(|x| crate::shape::family(&x.name) == LEDGER_DIR_USAGE)
        .map(|x| x.value)
        .collect();
    let percent = |u: f64| match disk {
        Some(d) => u > 0.0 && u <= 100.0 && (u - d).abs() <= 2.0,
        None => u > 1.0 && u <= 100.0,
    };
    if usage.is_empty() || !usage.iter().all(|u| percent(*u)) {
        out.push(format!(
            "ledger directory usage {usage:?} is not the disk's used percent (disk: {disk:?})"
        ));
    }
    let status = one(&s, "bookie_SERVER_STATUS", &[]).map(|x| x.value);
    let writable = one(&s, "bookie_ledger_writable_dirs", &[]).map(|x| x.value);
    if !matches!(status, Some(v) if v == 0.0 || v == 1.0) {
        out.push(format!("bookie_SERVER_STATUS {status:?} is not 0 or 1"));
    }
    if !writable.is_some_and(|w| w >= 0.0 && w.fract() == 0.0 && w as usize <= usage.len()) {
        out.push(format!(
            "bookie_ledger_writable_dirs {writable:?} is not a count of the {} ledger directories",
            usage.len()
        ));
    }
    out
}

/// Every broker and bookie preset's value from `broker` and `bookie` through Direct mode's own
/// reader; `None` where a page lacks a preset's inputs.
pub fn preset_values(broker: &str, bookie: &str) -> BTreeMap<&'static str, Option<f64>> {
    let (b, k) = (parse_page(broker), parse_page(bookie));
    Preset::ALL
        .into_iter()
        .filter_map(|p| match p {
            Preset::LedgerUsage => Some((p.name(), preset_value(p, &k))),
            Preset::ClaimUsage => None,
            _ => Some((p.name(), preset_value(p, &b))),
        })
        .collect()
}

fn fail_on(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what} differ from a real Pulsar's:\n  {}",
        problems.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_pages_have_the_real_shape() {
    let (broker, bookie, http) = emulator_pages(false).await;
    let real_broker = fixture("broker.prom");
    let real_bookie = fixture("bookie.prom");
    let real_http = record()["http"].clone();

    let mut problems = not_in_reference("broker", &shape(&broker), &shape(&real_broker));
    problems.extend(not_in_reference(
        "bookie",
        &shape(&bookie),
        &shape(&real_bookie),
    ));
    problems.extend(answers_differ(&http, &real_http));
    fail_on("the emulator's pages", problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detailed_topics_have_every_real_topic_family() {
    let (broker, _, _) = emulator_pages(true).await;
    let (ours, real) = (shape(&broker), shape(&fixture("broker.prom")));
    let mut problems = not_in_reference("broker", &ours, &real);
    for (name, family) in &real {
        let per_topic = family.label_sets.iter().any(|l| l.contains("topic"));
        if per_topic && !ours.contains_key(name) {
            problems.push(format!(
                "broker: topic-level `{name}` of the real page is missing with topic detail"
            ));
        }
    }
    fail_on("the emulator's detailed pages", problems);
    // Each of our topics has as many series as a captured topic with one producer and one
    // subscription.
    let topic = |s: &Sample, t: &str| s.labels.get("topic").is_some_and(|x| x == t);
    let real_per_topic = samples(&fixture("broker.prom"))
        .iter()
        .filter(|s| topic(s, "persistent://public/default/shape-0"))
        .count();
    let ours_per_topic = samples(&broker)
        .iter()
        .filter(|s| topic(s, "persistent://public/default/topic-0"))
        .count();
    assert!(
        real_per_topic > 5,
        "the capture has {real_per_topic} series for shape-0"
    );
    assert_eq!(ours_per_topic, real_per_topic, "series per topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_values_are_in_the_real_units() {
    let (broker, bookie, _) = emulator_pages(true).await;
    // The rules hold on the real pages, so they say what the real units are.
    let disk = record()["bookieLedgerDiskUsedPercent"].as_f64();
    assert!(
        disk.is_some(),
        "capture.json lacks bookieLedgerDiskUsedPercent"
    );
    let real = [
        broker_units(&fixture("broker.prom")),
        bookie_units(&fixture("bookie.prom"), disk),
    ]
    .concat();
    assert!(
        real.is_empty(),
        "the real captures break the unit rules: {real:#?}"
    );
    fail_on(
        "the emulator's values",
        [broker_units(&broker), bookie_units(&bookie, None)].concat(),
    );

    // Every preset reads a value from both, in the same range.
    let ours = preset_values(&broker, &bookie);
    let theirs = preset_values(&fixture("broker.prom"), &fixture("bookie.prom"));
    for (preset, value) in &theirs {
        let Some(real) = *value else {
            panic!("preset {preset} reads nothing from the real captures");
        };
        let Some(emulated) = ours[preset] else {
            panic!("preset {preset} reads nothing from the emulator's pages");
        };
        if matches!(*preset, "heap_memory" | "direct_memory" | "ledger_usage") {
            for (what, v) in [("real", real), ("emulated", emulated)] {
                assert!(
                    (0.0..=100.0).contains(&v) && v > 0.0,
                    "{preset} on the {what} page is {v}, not a percent"
                );
            }
        } else {
            assert!(
                real > 0.0 && emulated > 0.0,
                "{preset}: real {real}, emulated {emulated}"
            );
        }
    }
}

/// The hand-written pages other tests read (`tests/fixtures/{broker,bookie}-N.prom`) keep the
/// real shape too, except that the broker pages carry namespace-level series (what a broker
/// publishes with `exposeTopicLevelMetricsInPrometheus=false`, which the captures do not show).
#[test]
fn hand_written_fixtures_have_the_real_shape() {
    let dir = fixture_dir().join("..");
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let (broker, bookie) = (
        shape(&fixture("broker.prom")),
        shape(&fixture("bookie.prom")),
    );
    let mut problems = Vec::new();
    for name in ["bookie-0.prom", "bookie-1.prom"] {
        problems.extend(not_in_reference(name, &shape(&read(name)), &bookie));
    }
    for name in ["broker-0.prom", "broker-1.prom"] {
        let mut ours = shape(&read(name));
        ours.retain(|family, _| family.starts_with("pulsar_broker_") || family.starts_with("jvm_"));
        assert!(ours.len() >= 8, "{name}: {ours:?}");
        problems.extend(not_in_reference(name, &ours, &broker));
    }
    fail_on("the hand-written fixtures", problems);
}
