//! The whole Pulsar-aware cycle on one real three-broker cluster, with producers and consumers
//! running from the first minute to the last: the controller (as the `deploy/` ServiceAccount)
//! drains broker 2 and scales 3 → 2, then, when the policy asks for more, scales 2 → 3 and moves
//! bundles onto the broker it added. The stand-in kubelet stops broker 2's process only when the
//! StatefulSet shrinks. Asserted from the API server's objects, the brokers' admin API and the
//! load's counts.

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use pulsar_autoscaler::api::ScalingPolicy;
use serde_json::json;

use super::common::NS;
use super::drain::{
    admin, bundles_on, condition, create_policy, events, fresh_topics, status, stops_of_2,
};
use super::rebalance::broker_throughput;
use crate::support::monitoring::{eventually, free_port};
use crate::support::pulsar::Controller;
use crate::support::real_kube::{BROKERS, RealPulsarOnKube};
use crate::support::real_pulsar::{BrokerSettings, Load};

const NAME: &str = "lifecycle";

/// Throughput per broker: `1Ti` wants the minimum (2), `1Ki` the maximum (3) under this load.
/// `down_window` is the scale-down stabilization window: none for the first phase; a real one
/// for the second, so that a publish stall while bundles open on the added broker (throughput
/// near zero for seconds) is not taken for the load going away.
fn spec(target: &str, down_window: &str) -> serde_json::Value {
    json!({"interval": "2s", "brokers": {
        "statefulSet": BROKERS, "minReplicas": 2, "maxReplicas": 3,
        "metrics": [{"type": "Throughput", "targetPerBroker": target}],
        "admin": admin(),
        "scaleUp": {"stabilizationWindow": "0s", "cooldown": "0s",
                    "rebalance": {"maxUnloadsPerSecond": 10}},
        "scaleDown": {"stabilizationWindow": down_window, "cooldown": "0s",
                      "drain": {"timeout": "2m", "maxUnloadsPerSecond": 10}}},
        "rateLimit": {"actionsPerHour": 100, "burst": 10}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_down_then_rebalance_up_under_load() {
    let k = RealPulsarOnKube::start(3, 3, 30, BrokerSettings::default()).await;
    let log = k.api.dir().join("controller-lifecycle.log");
    let mut controller = Controller::start(&k.controller_kubeconfig, "lifecycle", log, free_port());
    let topics = fresh_topics(&k, NAME).await;
    let mut load = Load::start(&k.service_url, 100.0, 1024, &topics);
    load.wait_acked(300).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    load.reset_latencies();
    let on_broker_2 = bundles_on(&k, 2).await;

    // 3 → 2, drained first.
    create_policy(&k, NAME, spec("1Ti", "0s")).await;
    let started = Instant::now();
    eventually("the controller scales 3 → 2", 4 * 180, || async {
        match k.replicas().await {
            2 => Ok(()),
            n => Err(format!("{n} replicas; status {:?}", status(&k, NAME).await)),
        }
    })
    .await;
    let drained_after = started.elapsed().as_secs_f64();
    let stop = eventually("broker 2 stops", 4 * 90, || async {
        stops_of_2(&k)
            .first()
            .cloned()
            .ok_or_else(|| format!("{:?}", k.kubelet_events()))
    })
    .await;
    let after_down = load.latest();

    // 2 → 3, then bundles onto the added broker.
    let policies: Api<ScalingPolicy> = Api::namespaced(k.admin.clone(), NS);
    policies
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec("1Ki", "10m")})),
        )
        .await
        .expect("asking for more brokers");
    eventually("the controller scales 2 → 3", 4 * 180, || async {
        match k.replicas().await {
            3 => Ok(()),
            n => Err(format!("{n} replicas; status {:?}", status(&k, NAME).await)),
        }
    })
    .await;
    let scaled_up = Instant::now();
    k.wait_ready(3).await;
    let ip = k.broker_ips[2].clone();
    let carries = eventually("the added broker carries load", 4 * 180, || async {
        let bundles = bundles_on(&k, 2).await;
        let throughput = broker_throughput(&ip).await;
        if bundles > 0 && throughput > 0.0 {
            Ok(scaled_up.elapsed().as_secs_f64())
        } else {
            Err(format!("{bundles} bundles, {throughput} B/s"))
        }
    })
    .await;
    let rebalance = eventually("the rebalance ends", 4 * 120, || async {
        match status(&k, NAME).await.brokers.and_then(|b| b.rebalance) {
            Some(r) if r.state == "Done" || r.state == "Failed" => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stats = load.stop().await;

    println!(
        "lifecycle: {on_broker_2} bundles drained off broker 2, /scale {drained_after:.1} s after \
         the policy, broker 2 stopped in {:.1} s{}; the added broker carried load {carries:.1} s \
         after the scale-up ({} bundles moved); load {stats:?}; after the scale-down {after_down:?}",
        stop.took.as_secs_f64(),
        if stop.killed { " (killed)" } else { "" },
        rebalance.bundles_moved
    );

    let s = status(&k, NAME).await;
    let actions: Vec<&str> = s.decisions.iter().map(|d| d.action.as_str()).collect();
    let position = |a: &str| actions.iter().position(|x| *x == a);
    // Newest first: ScaleUp, then ScaleDown, then DrainStarted.
    assert!(
        matches!(
            (position("ScaleUp"), position("ScaleDown"), position("DrainStarted")),
            (Some(u), Some(d), Some(s)) if u < d && d < s
        ),
        "{actions:?}"
    );
    assert_eq!(rebalance.state, "Done", "{rebalance:?}");
    let share = rebalance.fair_share.unwrap_or(0);
    assert!(
        share >= 1
            && rebalance
                .added_brokers
                .iter()
                .any(|b| b.pod == "pulsar-broker-2" && b.bundles >= share),
        "{rebalance:?}"
    );
    assert_eq!(k.replicas().await, 3, "no further scale-up");
    assert!(
        !stop.killed,
        "broker 2 closed within its grace period: {stop:?}"
    );
    // The grace period of Pulsar's Helm chart is shorter than the broker's own shutdown timeout.
    assert!(
        condition(&s, "DrainAvailable")
            .is_some_and(|(reason, value, _)| reason == "GracePeriodTooShort" && value == "False"),
        "{:?}",
        s.conditions
    );
    let reasons: Vec<String> = events(&k, NAME).await.into_iter().map(|e| e.1).collect();
    for r in ["DrainStarted", "ScaledDown", "ScaledUp", "Rebalanced"] {
        assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
    }
    // Nothing lost and no send failed across both changes; a consumer whose topic moved may get
    // unacknowledged messages again (at-least-once).
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert!(stats.received >= stats.acked, "{stats:?}");
    assert!(controller.running(), "the controller kept running");
}
