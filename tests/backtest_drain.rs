//! The backtest models drain time on scale-down the way it models readiness on scale-up: a
//! broker removed by a policy with `scaleDown.drain` keeps serving (and costing) until drained.

use std::time::Duration;

use pulsar_autoscaler::backtest::replay::TRACE_EPOCH;
use pulsar_autoscaler::backtest::trace::Trace;
use pulsar_autoscaler::backtest::{
    self, DEFAULT_DRAIN_DELAY, DEFAULT_READY_DELAY, LoadedPolicy, Options, drain_delay,
};
use pulsar_autoscaler::decide::Action;

const POLICY: &str = r#"
apiVersion: pulsar-autoscaler.dev/v1alpha1
kind: ScalingPolicy
metadata: {name: drained, namespace: pulsar}
spec:
  interval: 15s
  metricsSource: {url: "http://prometheus:9090", maxStaleness: 2m}
  brokers:
    statefulSet: pulsar-broker
    minReplicas: 2
    maxReplicas: 10
    metrics: [{type: Throughput, targetPerBroker: "100"}]
    admin: {port: 8080}
    scaleDown: {stabilizationWindow: 0s, cooldown: 1m, maxStep: {replicas: 2}DRAIN}
  rateLimit: {actionsPerHour: 100, burst: 10}
"#;

fn policy(drain: &str) -> LoadedPolicy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, POLICY.replace("DRAIN", drain)).unwrap();
    backtest::load_policy(&path).unwrap()
}

fn options(drain: Option<Duration>) -> Options {
    Options {
        initial_replicas: Some(6),
        ready_delay: DEFAULT_READY_DELAY,
        drain_delay: drain,
        compare_hpa: true,
        initial_claim_size: None,
        epoch: TRACE_EPOCH,
        source: "test".into(),
    }
}

/// 600 B/s on 6 brokers for a minute, then 350 B/s: 4 brokers wanted, 2 removed at once.
fn trace() -> Trace {
    let mut csv = String::from("seconds,throughput_bytes\n");
    for i in 0..40 {
        let t = i * 15;
        csv.push_str(&format!("{t},{}\n", if t < 60 { 600 } else { 350 }));
    }
    Trace::parse(csv.as_bytes()).unwrap()
}

#[test]
fn a_drained_broker_serves_and_costs_until_its_drain_time_has_passed() {
    let trace = trace();
    let drained = backtest::run(&trace, &policy(", drain: {timeout: 5m}"), &options(None)).unwrap();
    let plain = backtest::run(&trace, &policy(""), &options(None)).unwrap();

    // The same decision either way: 6 → 4 at 60 s.
    let down = |r: &backtest::report::Report| {
        r.policy
            .records
            .iter()
            .filter(|d| d.action == Action::ScaleDown)
            .map(|d| (d.seconds, d.from, d.to))
            .collect::<Vec<_>>()
    };
    assert_eq!(down(&drained), vec![(60.0, 6, 4)]);
    assert_eq!(down(&plain), down(&drained));

    // With drain the two leaving brokers carry load until 60 + 30 s: six ready, four replicas.
    let at = |r: &backtest::report::Report, s: f64| {
        let p = r.policy.points.iter().find(|p| p.seconds == s).unwrap();
        (p.replicas, p.ready)
    };
    assert_eq!(at(&drained, 75.0), (4, 6));
    assert_eq!(at(&drained, 90.0), (4, 4));
    assert_eq!(at(&plain, 75.0), (4, 4));

    // And they are paid for meanwhile: 2 brokers × 30 s more broker-hours, exactly.
    let extra = drained.policy.summary.broker_hours - plain.policy.summary.broker_hours;
    let want = 2.0 * DEFAULT_DRAIN_DELAY.as_secs_f64() / 3600.0;
    assert!((extra - want).abs() < 1e-9, "{extra} vs {want}");
    assert!(
        drained
            .notes
            .iter()
            .any(|n| n.contains("keeps serving for 30s while it is drained")),
        "{:?}",
        drained.notes
    );

    // The HPA only patches /scale: its baseline is the same with or without the policy's drain.
    let hpa = |r: &backtest::report::Report| r.hpa.as_ref().unwrap().summary.broker_hours;
    assert_eq!(hpa(&drained), hpa(&plain));
}

#[test]
fn the_drain_time_is_the_default_capped_at_the_timeout_or_what_is_given() {
    let with = policy(", drain: {timeout: 20s}");
    let without = policy("");
    assert_eq!(drain_delay(&options(None), &with), Duration::from_secs(20));
    assert_eq!(
        drain_delay(&options(None), &policy(", drain: {timeout: 5m}")),
        DEFAULT_DRAIN_DELAY
    );
    assert_eq!(drain_delay(&options(None), &without), Duration::ZERO);
    let given = options(Some(Duration::from_secs(12)));
    assert_eq!(drain_delay(&given, &without), Duration::from_secs(12));
    let long = options(Some(Duration::from_secs(600)));
    assert_eq!(drain_delay(&long, &with), Duration::from_secs(20));
}
