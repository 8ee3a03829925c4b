//! Broken policies tell the truth: against a real kube-apiserver, real Prometheus scraping the
//! Pulsar emulator and `pulsar-autoscaler run`, each way a policy cannot do its job (source
//! unreachable, no data ever, target StatefulSet missing, claims matched by nothing) turns
//! `Ready` False with its own reason and publishes exactly one Event; and each action is an Event
//! of its own, with from/to in its note.

mod support;

use std::time::Duration;

use pulsar_autoscaler::api::ScalingPolicy;
use support::monitoring::{eventually, free_port};
use support::pulsar::{Pulsar, Shape};

fn condition(sp: &ScalingPolicy, type_: &str) -> Option<(String, String, String)> {
    sp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the policy's Ready condition is False; returns its reason and message.
async fn not_ready(p: &Pulsar, policy: &str) -> (String, String) {
    eventually(&format!("{policy}: Ready=False"), 240, || async {
        let sp = p.policy(policy).await;
        match condition(&sp, "Ready") {
            Some((status, reason, message)) if status == "False" => Ok((reason, message)),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Counter value of `name{...}` lines containing every `labels` fragment, summed.
fn counter(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_policy_is_not_ready_with_its_reason_and_one_event() {
    let p = Pulsar::start(Shape::default()).await;
    let c = p.controller("a");
    // Nothing listens on this port: every query is refused.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let cases = [
        (
            "unreachable",
            format!(
                "interval: 2s\nmetricsSource: {{type: Prometheus, url: \"{closed}\"}}\n\
                 brokers: {{statefulSet: pulsar-broker, maxReplicas: 8, \
                 metrics: [{{type: Throughput, targetPerBroker: 60Mi}}]}}\n"
            ),
            "SourceUnavailable",
            "cannot reach",
        ),
        (
            "no-data",
            "interval: 2s\nmetricsSource: {type: Prometheus, url: \"{{prometheus}}\"}\n\
             brokers: {statefulSet: pulsar-broker, maxReplicas: 8, metrics: [{type: Custom, \
             name: backlog, query: \"sum(no_such_series)\", targetPerBroker: \"100\"}]}\n"
                .to_string(),
            "NoData",
            "backlog",
        ),
        (
            "missing-target",
            "interval: 2s\nmetricsSource: {type: Prometheus, url: \"{{prometheus}}\"}\n\
             brokers: {statefulSet: pulsar-brokers, maxReplicas: 8, \
             metrics: [{type: Throughput, targetPerBroker: 60Mi}]}\n"
                .to_string(),
            "TargetNotFound",
            "pulsar-brokers",
        ),
        (
            "no-claims",
            "interval: 2s\nmetricsSource: {type: Prometheus, url: \"{{prometheus}}\"}\n\
             bookies: {statefulSet: pulsar-bookie, volumeClaimTemplates: [ledger], maxSize: 1Ti}\n"
                .to_string(),
            "ClaimsNotFound",
            "[ledger]",
        ),
    ];
    for (name, spec, _, _) in &cases {
        p.create_policy(name, spec).await;
    }
    for (name, _, reason, words) in &cases {
        let (got, message) = not_ready(&p, name).await;
        assert_eq!(&got, reason, "{name}: {message}");
        assert!(message.contains(words), "{name}: {message}");
    }
    // Several more evaluations (interval 2s): still one Event per policy, not one per interval.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for (name, _, reason, _) in &cases {
        let events = p.events(name).await;
        let warnings: Vec<_> = events.iter().filter(|e| e.0 == *reason).collect();
        assert_eq!(warnings.len(), 1, "{name}: {events:?}");
        assert!(!warnings[0].1.is_empty(), "{name}: the Event says why");
        let sp = p.policy(name).await;
        assert_eq!(
            condition(&sp, "Ready").map(|c| c.1).as_deref(),
            Some(*reason),
            "{name}"
        );
    }
    // The counter names what failed: the refused connection, not a generic `query`.
    let text = c.metrics().await;
    // Readiness is exported for the PulsarAutoscalerPolicyNotReady alert.
    for (name, _, _, _) in &cases {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("pulsar_autoscaler_policy_ready{")
                    && l.contains(&format!("policy=\"{name}\""))
            })
            .unwrap_or_else(|| panic!("{name}: no pulsar_autoscaler_policy_ready series"));
        assert!(line.ends_with(" 0"), "{line}");
    }
    assert!(
        counter(
            &text,
            "pulsar_autoscaler_source_errors_total",
            &["policy=\"unreachable\"", "kind=\"connect\""]
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        counter(
            &text,
            "pulsar_autoscaler_source_errors_total",
            &["policy=\"unreachable\"", "kind=\"query\""]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_is_an_event_of_its_own() {
    let p = Pulsar::start(Shape::default()).await;
    let _c = p.controller("a");
    // Load 1 needs 3 brokers at 60 MiB/s each; at 0.2 the policy steps down to its minimum of 1.
    p.set_load(0.2).await;
    p.create_policy(
        "down",
        "interval: 2s\nmetricsSource: {type: Prometheus, url: \"{{prometheus}}\", maxStaleness: 30s}\n\
         brokers:\n  statefulSet: pulsar-broker\n  minReplicas: 1\n  maxReplicas: 8\n  \
         metrics: [{type: Throughput, targetPerBroker: 60Mi}]\n  \
         scaleDown: {stabilizationWindow: 0s, cooldown: 2s, maxStep: {replicas: 1}}\n\
         rateLimit: {actionsPerHour: 1000, burst: 100}\n",
    )
    .await;
    let events = eventually("two scale-downs as two Events", 480, || async {
        let events = p.events("down").await;
        let downs: Vec<String> = events
            .iter()
            .filter(|e| e.0 == "ScaledDown")
            .map(|e| e.1.clone())
            .collect();
        if downs.len() >= 2 {
            Ok(downs)
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    assert!(
        events
            .iter()
            .any(|n| n.starts_with("statefulset/pulsar-broker 3 → 2")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|n| n.starts_with("statefulset/pulsar-broker 2 → 1")),
        "{events:?}"
    );
}
