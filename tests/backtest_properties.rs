//! Properties of any replay: bounds hold, nothing is removed without fresh data, no safety clamp
//! ever fires, and a replay is deterministic.

use proptest::prelude::*;

use pulsar_autoscaler::backtest::replay::{Outcome, TRACE_EPOCH};
use pulsar_autoscaler::backtest::trace::Trace;
use pulsar_autoscaler::backtest::{self, LoadedPolicy, Options};
use pulsar_autoscaler::decide::Action;

const POLICY: &str = r#"
apiVersion: pulsar-autoscaler.dev/v1alpha1
kind: ScalingPolicy
metadata: {name: prop, namespace: pulsar}
spec:
  interval: 15s
  metricsSource: {url: "http://prometheus:9090", maxStaleness: 2m}
  brokers:
    statefulSet: pulsar-broker
    minReplicas: 2
    maxReplicas: 12
    metrics:
      - {type: Throughput, targetPerBroker: "100"}
      - {type: HeapMemory, targetUtilization: 70}
    scaleUp: {cooldown: 15s, maxStep: {replicas: 3}}
    scaleDown: {stabilizationWindow: 1m, cooldown: 30s, maxStep: {replicas: 2}}
  rateLimit: {actionsPerHour: 40, burst: 3}
"#;

fn policy() -> LoadedPolicy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, POLICY).unwrap();
    backtest::load_policy(&path).unwrap()
}

/// Rows of (gap before in steps, throughput or missing, heap or missing).
fn rows() -> impl Strategy<Value = Vec<(u32, Option<f64>, Option<f64>)>> {
    prop::collection::vec(
        (
            prop_oneof![4 => Just(1u32), 1 => 1u32..40],
            prop::option::weighted(0.8, 0.0f64..2000.0),
            prop::option::weighted(0.8, 0.0f64..100.0),
        ),
        2..150,
    )
}

fn trace(rows: &[(u32, Option<f64>, Option<f64>)]) -> Trace {
    let mut text = String::from("seconds,throughput_bytes,heap_percent,brokers\n");
    let mut t = 0;
    for (gap, tp, heap) in rows {
        t += gap * 15;
        let cell = |v: &Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        text.push_str(&format!("{t},{},{},4\n", cell(tp), cell(heap)));
    }
    Trace::parse(text.as_bytes()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn replays_keep_the_rules(rows in rows(), initial in 1u32..16, delay in 0u64..180) {
        let trace = trace(&rows);
        let options = Options {
            initial_replicas: Some(initial),
            ready_delay: std::time::Duration::from_secs(delay),
            drain_delay: None,
            compare_hpa: true,
            initial_claim_size: None,
            epoch: TRACE_EPOCH,
            source: "prop".into(),
        };
        let loaded = policy();
        let report = backtest::run(&trace, &loaded, &options).unwrap();
        let again = backtest::run(&trace, &loaded, &options).unwrap();
        prop_assert_eq!(&report.policy.records, &again.policy.records);

        // Whether metric `c` had a value within maxStaleness (2m) before `t`.
        let fresh = |t: f64, c: usize| {
            trace.rows.iter()
                .rev()
                .find(|r| r.seconds <= t && r.values[c].is_some())
                .map(|r| r.seconds)
                .is_some_and(|d| t - d <= 120.0)
        };
        for run in [&report.policy, report.hpa.as_ref().unwrap()] {
            prop_assert_eq!(run.summary.refused_unsafe, 0);
            for r in run.records.iter().filter(|r| r.outcome == Outcome::Carried) {
                prop_assert!((2..=12).contains(&r.to), "{:?}", r);
                if r.action == Action::ScaleDown {
                    // Below minReplicas is not data-driven: bounds are enforced regardless.
                    let into_bounds = r.from > 12;
                    prop_assert!(
                        into_bounds || (fresh(r.seconds, 0) && fresh(r.seconds, 1)),
                        "scale-down without fresh data for every metric: {:?}", r
                    );
                }
            }
            for p in run.points.iter().skip(1) {
                prop_assert!((2..=12).contains(&p.replicas) || p.replicas == initial, "{:?}", p);
                prop_assert!(p.ready <= p.replicas);
            }
        }
    }
}
