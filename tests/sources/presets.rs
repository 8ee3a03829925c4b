//! Every preset returns the emulator's ground truth within 1 %, from each source.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::emulator::{Config, Truth};
use pulsar_autoscaler::metrics::{
    Credentials, DirectSource, Flavor, MetricsSource, Preset, PrometheusSource, QueryResult,
    Target, collect,
};

use crate::support::{self, ALL_BROKER_METRICS, Stack, close};

const NS: &str = "pulsar";

fn config() -> Config {
    Config {
        brokers: 3,
        max_brokers: 4,
        bookies: 2,
        ..Config::default()
    }
}

/// Checks one source against the truth; returns the mismatches.
async fn check(source: &dyn MetricsSource, truth: &Truth) -> Vec<String> {
    let mut wrong = Vec::new();
    let what = source.describe();
    // Through a policy: grouped reads, split and reduced per policy.
    let policy = support::policy(NS, "all", ALL_BROKER_METRICS);
    let targets = [Target {
        namespace: NS,
        name: "all",
        policy: &policy,
    }];
    let readings = collect(source, &targets, Timestamp::now()).await.remove(0);
    let want = [
        truth.throughput,
        truth.message_rate,
        truth.heap_memory,
        truth.direct_memory,
    ];
    for ((reading, want), name) in readings.brokers.iter().zip(want).zip([
        "Throughput",
        "MessageRate",
        "HeapMemory",
        "DirectMemory",
    ]) {
        match reading.sample {
            Some(s) if close(s.value, want, 1.0) && s.reporting == Some(truth.brokers) => {}
            other => wrong.push(format!(
                "{what} {name}: got {other:?} ({:?}), want {want}",
                reading.problem
            )),
        }
    }
    if readings.claims.len() != truth.claim_usage.len() {
        wrong.push(format!(
            "{what} claims: got {:?}, want {:?}",
            readings.claims.keys(),
            truth.claim_usage.keys()
        ));
    }
    for (claim, want) in &truth.claim_usage {
        match readings.claims.get(claim).and_then(|r| r.sample) {
            Some(s) if close(s.value, *want, 1.0) => {}
            other => wrong.push(format!(
                "{what} ClaimUsage {claim}: got {other:?}, want {want}"
            )),
        }
    }
    // Bookie directory presets, read directly.
    let bookie = [Preset::LedgerUsage];
    let results = source.fetch(&bookie, Timestamp::now()).await;
    for (preset, result) in bookie.iter().zip(results) {
        let want: &BTreeMap<String, f64> = &truth.ledger_usage;
        match result {
            Ok(g) => {
                for (pod, want) in want {
                    match g.points.get(&(NS.to_string(), pod.clone())) {
                        Some(p) if close(p.value, *want, 1.0) => {}
                        other => wrong.push(format!(
                            "{what} {preset:?} {pod}: got {other:?}, want {want}"
                        )),
                    }
                }
            }
            Err(e) => wrong.push(format!("{what} {preset:?}: {e}")),
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preset_matches_the_ground_truth_from_every_source() {
    let stack = Stack::start(config()).await;
    let none = BTreeMap::new();
    let creds = Credentials::default();
    let timeout = Duration::from_secs(5);
    let prom =
        PrometheusSource::new(Flavor::Prometheus, &stack.prom.url, timeout, &none, &creds).unwrap();
    let vm = PrometheusSource::new(
        Flavor::VictoriaMetrics,
        &stack.vm.url,
        timeout,
        &none,
        &creds,
    )
    .unwrap();
    let direct = DirectSource::new(
        support::pods(&stack.emu).await,
        Some(support::kubelet(&stack.emu).await),
        timeout,
        &creds,
    )
    .unwrap();
    let truth = support::truth(&stack.emu).await;
    let mut wrong = Vec::new();
    for source in [&prom as &dyn MetricsSource, &vm, &direct] {
        wrong.extend(check(source, &truth).await);
    }
    assert!(wrong.is_empty(), "mismatches:\n{}", wrong.join("\n"));

    // The other result shapes, from both servers: scalar and range (matrix).
    for s in [&prom, &vm] {
        // Prometheus answers a scalar expression as a scalar, VictoriaMetrics as a one-element
        // vector without labels; a Custom metric reads 2 from either.
        let r = s.query("1 + 1", Timestamp::now()).await.unwrap();
        match s.flavor() {
            Flavor::Prometheus => assert!(
                matches!(r, QueryResult::Scalar(p) if p.value == 2.0),
                "{r:?}"
            ),
            Flavor::VictoriaMetrics => {
                assert!(
                    matches!(&r, QueryResult::Vector(v) if v.len() == 1 && v[0].point.value == 2.0),
                    "{r:?}"
                )
            }
        }
        let p = s.custom("1 + 1", Timestamp::now()).await.unwrap();
        assert_eq!(p.map(|p| p.point.value), Some(2.0));
        let end = Timestamp::now();
        let start = end - jiff::SignedDuration::from_secs(3);
        let r = s
            .query_range(
                "pulsar_broker_throughput_in",
                start,
                end,
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        let QueryResult::Matrix(m) = r else {
            panic!("{r:?}")
        };
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(
            m.iter()
                .all(|s| !s.points.is_empty() && s.labels.contains_key("pod")),
            "{m:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_follow_broker_count_and_load_changes() {
    let stack = Stack::start(config()).await;
    let none = BTreeMap::new();
    let prom = PrometheusSource::new(
        Flavor::Prometheus,
        &stack.prom.url,
        Duration::from_secs(5),
        &none,
        &Credentials::default(),
    )
    .unwrap();
    support::change(
        &stack.emu,
        serde_json::json!({"brokers": 4, "loadFactor": 2.0}),
    )
    .await;
    let truth = support::truth(&stack.emu).await;
    assert_eq!(truth.brokers, 4);
    let policy = support::policy(NS, "p", ALL_BROKER_METRICS);
    let targets = [Target {
        namespace: NS,
        name: "p",
        policy: &policy,
    }];
    // Prometheus sees the fourth broker and the doubled load after its next scrapes.
    support::eventually("Prometheus follows the change", 80, || async {
        let r = collect(&prom, &targets, Timestamp::now()).await.remove(0);
        match r.brokers[0].sample {
            Some(s) if s.reporting == Some(4) && close(s.value, truth.throughput, 1.0) => Ok(()),
            other => Err(format!(
                "{other:?}, want {} over 4 brokers",
                truth.throughput
            )),
        }
    })
    .await;
}
