//! Backtest replays of the bundled traces and of small made-up ones, through the library and
//! through the command line.

#[path = "../examples/gen_traces.rs"]
#[allow(dead_code)]
mod gen_traces;

use std::path::{Path, PathBuf};
use std::process::Command;

use pulsar_autoscaler::backtest::chart::series;
use pulsar_autoscaler::backtest::replay::{Outcome, Record, TRACE_EPOCH};
use pulsar_autoscaler::backtest::report::Report;
use pulsar_autoscaler::backtest::trace::Trace;
use pulsar_autoscaler::backtest::{self, DEFAULT_READY_DELAY, LoadedPolicy, Options};
use pulsar_autoscaler::decide::Action;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn policy(name: &str) -> LoadedPolicy {
    backtest::load_policy(&root().join(format!("deploy/examples/backtest-{name}.yaml")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn options() -> Options {
    Options {
        initial_replicas: None,
        ready_delay: DEFAULT_READY_DELAY,
        drain_delay: None,
        compare_hpa: true,
        initial_claim_size: None,
        epoch: TRACE_EPOCH,
        source: "test".into(),
    }
}

fn bundled(name: &str) -> Report {
    let trace = Trace::read(&root().join(format!("examples/traces/{name}.csv"))).unwrap();
    backtest::run(&trace, &policy(name), &options()).unwrap()
}

fn policy_from_yaml(yaml: &str) -> LoadedPolicy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, yaml).unwrap();
    backtest::load_policy(&path).unwrap()
}

const BROKERS_POLICY: &str = r#"
apiVersion: pulsar-autoscaler.dev/v1alpha1
kind: ScalingPolicy
metadata: {name: test, namespace: pulsar}
spec:
  interval: 15s
  dryRun: DRY
  metricsSource: {url: "http://prometheus:9090", maxStaleness: 2m}
  brokers:
    statefulSet: pulsar-broker
    minReplicas: 2
    maxReplicas: 30
    metrics:
      - type: Throughput
        targetPerBroker: "100"
    scaleDown: {stabilizationWindow: 1m, cooldown: 1m, maxStep: {replicas: 4}}
  rateLimit: {actionsPerHour: PER_HOUR, burst: BURST}
"#;

fn brokers_policy(dry_run: bool, per_hour: u32, burst: u32) -> LoadedPolicy {
    policy_from_yaml(
        &BROKERS_POLICY
            .replace("DRY", &dry_run.to_string())
            .replace("PER_HOUR", &per_hour.to_string())
            .replace("BURST", &burst.to_string()),
    )
}

/// A trace of `throughput_bytes` every 15 s; `None` is a missing sample.
fn throughput_trace(values: &[Option<f64>]) -> Trace {
    let mut text = String::from("seconds,throughput_bytes\n");
    for (i, v) in values.iter().enumerate() {
        let cell = v.map(|v| v.to_string()).unwrap_or_default();
        text.push_str(&format!("{},{cell}\n", i * 15));
    }
    Trace::parse(text.as_bytes()).unwrap()
}

fn broker_changes(records: &[Record]) -> impl Iterator<Item = &Record> {
    records.iter().filter(|r| {
        r.outcome == Outcome::Carried && matches!(r.action, Action::ScaleUp | Action::ScaleDown)
    })
}

#[test]
fn bundled_traces_are_what_the_generator_makes() {
    for (name, trace) in gen_traces::all() {
        let mut fresh = Vec::new();
        trace.write(&mut fresh).unwrap();
        let committed = std::fs::read(root().join("examples/traces").join(name)).unwrap();
        assert!(
            fresh == committed,
            "examples/traces/{name} differs from the generator; run `cargo run --example gen_traces`"
        );
    }
}

#[test]
fn bundled_policies_pass_validate() {
    let status = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .arg("validate")
        .args(
            [
                "diurnal",
                "flash-crowd",
                "oscillating",
                "outage",
                "disk-growth",
            ]
            .map(|n| root().join(format!("deploy/examples/backtest-{n}.yaml"))),
        )
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn no_scale_down_during_the_metrics_outage() {
    let report = bundled("outage");
    let (start, end) = gen_traces::OUTAGE;
    // Samples stay usable for maxStaleness (2m) after the last one; after that nothing may
    // remove a broker until data is back.
    let blind = (start + 120.0)..end;
    for run in [&report.policy, report.hpa.as_ref().unwrap()] {
        let downs: Vec<_> = broker_changes(&run.records)
            .filter(|r| r.action == Action::ScaleDown && blind.contains(&r.seconds))
            .collect();
        assert!(downs.is_empty(), "scale-down without data: {downs:?}");
        assert!(run.summary.held_for_missing_data_seconds > 0.0);
        assert_eq!(run.summary.load_unknown_seconds, end - start);
    }
}

#[test]
fn a_gap_before_a_drop_holds_until_data_returns() {
    // 40 brokers' worth of load, then 30 minutes without any data, then almost nothing.
    let mut values = vec![Some(4000.0); 60];
    values.extend(vec![None; 120]);
    values.extend(vec![Some(150.0); 120]);
    let trace = throughput_trace(&values);
    let loaded = brokers_policy(false, 100, 10);
    let mut opts = options();
    opts.initial_replicas = Some(10);
    let report = backtest::run(&trace, &loaded, &opts).unwrap();
    let gap = (60.0 * 15.0)..(180.0 * 15.0);
    for run in [&report.policy, report.hpa.as_ref().unwrap()] {
        let last_up = broker_changes(&run.records)
            .filter(|r| r.seconds < gap.start)
            .last()
            .map(|r| r.to)
            .unwrap();
        assert_eq!(last_up, 30, "scaled to maxReplicas before the gap");
        let in_gap: Vec<_> = broker_changes(&run.records)
            .filter(|r| r.seconds > gap.start + 120.0 && r.seconds < gap.end)
            .collect();
        assert!(in_gap.is_empty(), "{in_gap:?}");
        assert!(run.summary.held_for_missing_data_seconds >= 25.0 * 60.0);
        let after: Vec<_> = broker_changes(&run.records)
            .filter(|r| r.seconds >= gap.end)
            .collect();
        assert!(after.iter().all(|r| r.action == Action::ScaleDown));
        assert!(!after.is_empty(), "scales down once data is back");
    }
}

#[test]
fn oscillating_load_changes_direction_less_than_the_hpa() {
    let report = bundled("oscillating");
    let ours = &report.policy.summary;
    let hpa = &report.hpa.as_ref().unwrap().summary;
    assert!(
        ours.direction_changes < hpa.direction_changes,
        "policy {} vs HPA {}",
        ours.direction_changes,
        hpa.direction_changes
    );
}

#[test]
fn every_bundled_trace_replays_with_its_policy() {
    for name in ["diurnal", "flash-crowd", "oscillating", "outage"] {
        let report = bundled(name);
        let s = &report.policy.summary;
        assert!(s.scale_ups > 0, "{name}: {s:?}");
        assert!(s.broker_hours > 0.0, "{name}");
        assert_eq!(s.refused_unsafe, 0, "{name}");
        assert!(report.hpa.is_some(), "{name}");
    }
    let disk = bundled("disk-growth");
    let s = &disk.policy.summary;
    assert!(s.expansions >= 3, "{s:?}");
    assert_eq!(s.broker_hours, 0.0);
    // Expansions keep the claim below BookKeeper's 90 % warning mark.
    assert!(s.max_claim_used_percent.unwrap() < 90.0, "{s:?}");
    assert!(disk.hpa.is_none());
}

#[test]
fn carried_scale_ups_respect_the_cooldown() {
    // The engine only learns of a change through note_action; without it the cooldown would
    // never start and scale-ups would follow each other every interval.
    let report = bundled("flash-crowd");
    let ups: Vec<f64> = broker_changes(&report.policy.records)
        .filter(|r| r.action == Action::ScaleUp)
        .map(|r| r.seconds)
        .collect();
    assert!(ups.len() >= 2, "{ups:?}");
    for w in ups.windows(2) {
        assert!(
            w[1] - w[0] >= 30.0,
            "scale-ups {ups:?} closer than the 30s cooldown"
        );
    }
}

#[test]
fn dry_run_records_but_changes_nothing() {
    let values: Vec<_> = (0..240)
        .map(|i| Some(if i < 120 { 1000.0 } else { 300.0 }))
        .collect();
    let trace = throughput_trace(&values);
    let report = backtest::run(&trace, &brokers_policy(true, 100, 10), &options()).unwrap();
    let s = &report.policy.summary;
    assert_eq!((s.scale_ups, s.scale_downs), (0, 0));
    assert!(s.dry_run_decisions > 0);
    assert!(report.policy.points.iter().all(|p| p.replicas == 2));
    assert!(
        report
            .policy
            .records
            .iter()
            .all(|r| r.outcome == Outcome::DryRun && r.action_label() == "DryRun")
    );
}

#[test]
fn rate_limited_actions_are_dropped_and_counted() {
    // Load steps up every five minutes; one action per hour is allowed.
    let values: Vec<_> = (0..240)
        .map(|i| Some(300.0 * f64::from(1 + i / 20)))
        .collect();
    let trace = throughput_trace(&values);
    let report = backtest::run(&trace, &brokers_policy(false, 1, 1), &options()).unwrap();
    let s = &report.policy.summary;
    assert_eq!(s.scale_ups, 1, "{s:?}");
    assert!(s.dropped_by_rate_limit > 0);
    let dropped: Vec<_> = report
        .policy
        .records
        .iter()
        .filter(|r| r.outcome == Outcome::Dropped)
        .collect();
    assert_eq!(dropped.len() as u32, s.dropped_by_rate_limit);
    assert!(
        dropped[0].reason.contains("rate limit"),
        "{}",
        dropped[0].reason
    );
    // Dropped actions change nothing: replicas stay at what the one carried action set.
    let carried = broker_changes(&report.policy.records).next().unwrap().to as u32;
    assert!(
        report
            .policy
            .points
            .iter()
            .skip(1)
            .all(|p| p.replicas == carried)
    );
}

#[test]
fn new_brokers_take_load_after_the_ready_delay() {
    let values: Vec<_> = (0..40).map(|_| Some(800.0)).collect();
    let trace = throughput_trace(&values);
    let mut opts = options();
    opts.ready_delay = std::time::Duration::from_secs(90);
    let report = backtest::run(&trace, &brokers_policy(false, 100, 10), &opts).unwrap();
    let up = broker_changes(&report.policy.records).next().unwrap();
    assert_eq!(
        (up.seconds, up.from, up.to),
        (0.0, 2, 6),
        "max(4, 100 %) from 2"
    );
    let at = |s: f64| {
        report
            .policy
            .points
            .iter()
            .find(|p| p.seconds == s)
            .unwrap()
    };
    assert_eq!((at(75.0).ready, at(75.0).load_per_broker), (2, Some(400.0)));
    assert_eq!(
        (at(90.0).ready, at(90.0).load_per_broker),
        (6, Some(800.0 / 6.0))
    );
}

fn svg_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("chart.svg is well-formed XML");
    let svg = doc.root_element();
    assert_eq!(svg.tag_name().name(), "svg");
    svg.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect()
}

fn polylines(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count()
}

#[test]
fn chart_is_an_svg_with_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let report = bundled("flash-crowd");
    report.write(dir.path()).unwrap();
    let chart = dir.path().join("chart.svg");
    let texts = svg_texts(&chart);
    for name in [
        series::LOAD_POLICY,
        series::LOAD_HPA,
        series::TARGET,
        series::REPLICAS_POLICY,
        series::REPLICAS_HPA,
        series::SCALE_UP,
        series::SCALE_DOWN,
        series::HPA_CHANGE,
    ] {
        assert!(
            texts.iter().any(|t| t == name),
            "legend lacks {name:?}: {texts:?}"
        );
    }
    // Lines: two loads and the target, two replica step lines, plus legend samples.
    assert!(polylines(&chart) >= 5);

    let disk = bundled("disk-growth");
    disk.write(dir.path()).unwrap();
    let texts = svg_texts(&chart);
    for name in [
        series::CLAIM_SIZE,
        series::CLAIM_USED,
        series::CLAIM_THRESHOLD,
        series::EXPANSION,
    ] {
        assert!(
            texts.iter().any(|t| t == name),
            "legend lacks {name:?}: {texts:?}"
        );
    }
}

#[test]
fn outputs_hold_decisions_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let report = bundled("oscillating");
    report.write(dir.path()).unwrap();
    let decisions = std::fs::read_to_string(dir.path().join("decisions.csv")).unwrap();
    assert!(decisions.starts_with("seconds,target,action,from,to,reason\n"));
    assert_eq!(decisions.lines().count(), report.policy.records.len() + 1);
    assert!(dir.path().join("hpa-decisions.csv").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    for who in ["policy", "hpa"] {
        for field in [
            "scale_ups",
            "scale_downs",
            "expansions",
            "dropped_by_rate_limit",
            "broker_hours",
            "overload_seconds",
            "peak_load_per_broker",
            "max_claim_used_percent",
            "held_for_missing_data_seconds",
        ] {
            assert!(summary[who].get(field).is_some(), "{who}.{field} missing");
        }
    }
    assert_eq!(summary["policy"]["name"], "oscillating");
}

#[test]
fn command_line_writes_outputs_and_prints_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .current_dir(root())
        .args([
            "backtest",
            "--policy",
            "deploy/examples/backtest-oscillating.yaml",
            "--trace",
            "examples/traces/oscillating.csv",
            "--compare",
            "hpa",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("direction changes"), "{stdout}");
    assert!(stdout.contains("HPA"), "{stdout}");
    for f in [
        "decisions.csv",
        "hpa-decisions.csv",
        "summary.json",
        "chart.svg",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
}

#[test]
fn command_line_rejects_a_malformed_trace_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("bad.csv");
    std::fs::write(&trace, "seconds,throughput_bytes\n0,100\n15,100\n30,lots\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .current_dir(root())
        .args([
            "backtest",
            "--policy",
            "deploy/examples/backtest-oscillating.yaml",
            "--trace",
        ])
        .arg(&trace)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 4, column throughput_bytes"),
        "{stderr}"
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn a_policy_metric_without_its_column_is_named() {
    let trace = throughput_trace(&[Some(1.0), Some(2.0)]);
    let err = backtest::run(&trace, &policy("diurnal"), &options()).unwrap_err();
    assert!(err.to_string().contains("`message_rate`"), "{err}");
}

#[test]
fn a_trace_may_start_later_than_zero() {
    let mut text = String::from("seconds,throughput_bytes\n");
    for i in 0..40 {
        text.push_str(&format!("{},800\n", 3600 + i * 15));
    }
    let trace = Trace::parse(text.as_bytes()).unwrap();
    let report = backtest::run(&trace, &brokers_policy(false, 100, 10), &options()).unwrap();
    assert_eq!(report.policy.summary.duration_seconds, 39.0 * 15.0);
    let first = broker_changes(&report.policy.records).next().unwrap();
    assert_eq!(first.seconds, 3600.0);
    let dir = tempfile::tempdir().unwrap();
    report.write(dir.path()).unwrap();
    assert!(
        svg_texts(&dir.path().join("chart.svg"))
            .iter()
            .any(|t| t == series::REPLICAS_POLICY)
    );
}
