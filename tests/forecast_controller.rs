//! The forecast in the running controller: a real kube-apiserver, real Prometheus scraping the
//! Pulsar emulator, `pulsar-autoscaler run` as a separate process. Load rising steadily is met
//! by a forecast scale-up before it leaves the tolerance, and the status keeps what the
//! forecast needs across evaluations.

mod support;

use std::time::Duration;

use pulsar_autoscaler::api::{DecisionRecord, ScalingPolicy};
use support::monitoring::eventually;
use support::pulsar::{Pulsar, Shape};

/// 180 MiB/s at load 1 over a 60 MiB/s target is 3 brokers; the tolerance ends at load 1.1.
const POLICY: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 2
  maxReplicas: 12
  tolerance: 0.1
  metrics: [{type: Throughput, targetPerBroker: 60Mi}]
  scaleUp: {stabilizationWindow: 0s, cooldown: 4s, maxStep: {replicas: 4}}
  scaleDown: {stabilizationWindow: 10m, cooldown: 6s, maxStep: {replicas: 1}}
  forecast: {enabled: true, horizon: 20s}
rateLimit: {actionsPerHour: 1000, burst: 100}
"#;

fn scale_ups(sp: &ScalingPolicy) -> Vec<DecisionRecord> {
    sp.status
        .as_ref()
        .map(|s| {
            s.decisions
                .iter()
                .filter(|d| d.action == "ScaleUp")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rising_load_is_met_ahead_and_the_status_keeps_the_trend() {
    let p = Pulsar::start(Shape::default()).await;
    let _c = p.controller("a");
    p.create_policy("ahead", POLICY).await;

    // Flat load first: the trend fills from complete samples, nothing changes.
    eventually("the forecast's samples in status", 240, || async {
        let sp = p.policy("ahead").await;
        let f = sp
            .status
            .as_ref()
            .and_then(|s| s.brokers.as_ref())
            .and_then(|b| b.forecast.clone());
        match f {
            Some(f)
                if f.samples
                    .iter()
                    .any(|s| s.metric == "throughput" && s.times.len() >= 4)
                    && f.last
                        .as_deref()
                        .is_some_and(|l| l.contains("expected in 22s")) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(scale_ups(&p.policy("ahead").await).is_empty());
    assert_eq!(p.replicas().await, 3);

    // Load rising 0.02 per second, stopped at 1.08: never beyond the tolerance, so only the
    // forecast (22 s ahead) can ask for brokers.
    let mut load = 1.0;
    while load < 1.08 {
        load += 0.01;
        p.set_load(load).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let up = eventually("a forecast scale-up", 240, || async {
        match scale_ups(&p.policy("ahead").await).first() {
            Some(d) => Ok(d.clone()),
            None => Err("none yet".to_string()),
        }
    })
    .await;
    assert!(
        up.reason.contains("forecast: throughput: "),
        "{}",
        up.reason
    );
    assert!(up.reason.contains("horizon 20s (set)"), "{}", up.reason);
    assert!(up.reason.contains("within tolerance"), "{}", up.reason);
    assert!(up.to > 3 && up.to <= 7, "{up:?}");

    // `horizon: auto` learns from that scale-up: once every new broker reports, the time it took
    // is in the status.
    p.patch_policy(
        "ahead",
        serde_json::json!({"spec": {"brokers": {"forecast": {"horizon": "auto"}}}}),
    )
    .await;
    let measured = eventually("a measured horizon", 240, || async {
        let sp = p.policy("ahead").await;
        let f = sp
            .status
            .as_ref()
            .and_then(|s| s.brokers.as_ref())
            .and_then(|b| b.forecast.clone());
        match f.as_ref().and_then(|f| f.measured_horizon_seconds) {
            Some(s) => Ok(s),
            None => Err(format!("{f:?}")),
        }
    })
    .await;
    assert!((0..=120).contains(&measured), "{measured}");
}

/// Follows every swing without flap damping: no window, no cooldown. Two turns an hour count.
const SWINGING: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 2
  maxReplicas: 12
  tolerance: 0.1
  metrics: [{type: Throughput, targetPerBroker: 60Mi}]
  scaleUp: {stabilizationWindow: 0s, cooldown: 0s, maxStep: {replicas: 4}}
  scaleDown: {stabilizationWindow: 0s, cooldown: 0s, maxStep: {replicas: 4}}
  forecast: {enabled: true, horizon: 20s, flapTurnsPerHour: 2}
rateLimit: {actionsPerHour: 1000, burst: 100}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swinging_load_turns_flapping_true_with_one_event() {
    let p = Pulsar::start(Shape::default()).await;
    let _c = p.controller("a");
    p.create_policy("swing", SWINGING).await;
    let flapping = |sp: &ScalingPolicy| {
        sp.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Flapping").cloned())
    };
    // Load 1 is 3 brokers' worth, load 2 six: the recommendation swings 3 → 6 → 3 → 6, two
    // turns of three brokers each.
    for load in [2.0, 1.0, 2.0, 1.0, 2.0] {
        p.set_load(load).await;
        let want = if load > 1.5 { 6 } else { 3 };
        eventually("the recommendation following the load", 240, || async {
            let sp = p.policy("swing").await;
            let last = sp
                .status
                .as_ref()
                .and_then(|s| s.brokers.as_ref())
                .and_then(|b| b.recommendations.last().map(|r| r.replicas));
            if flapping(&sp).is_some_and(|c| c.status == "True") || last == Some(want) {
                Ok(())
            } else {
                Err(format!("{last:?}"))
            }
        })
        .await;
    }
    let c = eventually("Flapping True", 240, || async {
        match flapping(&p.policy("swing").await) {
            Some(c) if c.status == "True" => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(c.reason, "HoldingCapacity");
    assert!(
        c.message
            .starts_with("load is flapping: the recommendation changed direction")
            && c.message.contains("holding 6 brokers"),
        "{}",
        c.message
    );
    let sp = p.policy("swing").await;
    let status = sp.status.as_ref().and_then(|s| s.brokers.as_ref());
    let flap = status
        .and_then(|b| b.flapping.clone())
        .expect("status.brokers.flapping");
    assert!(flap.holding && flap.turns_last_hour >= 2, "{flap:?}");
    // One Event when it turned True, not one per evaluation while it stays so.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let events: Vec<_> = p
        .events("swing")
        .await
        .into_iter()
        .filter(|(reason, _, _)| reason == "Flapping")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].1.contains("holding 6 brokers"), "{events:?}");
}
