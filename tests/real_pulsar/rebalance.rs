//! Rebalance after scale-up on a real Pulsar: the controller (`pulsar-autoscaler run` as the
//! `deploy/` ServiceAccount) scales 2 → 3 brokers under real producers and consumers, then moves
//! bundles onto the added broker through the admin API. Measured against the same scale-up
//! without rebalance: seconds until the added broker owns bundles and carries traffic, publish
//! errors and the longest publish stall. And the failure path: the added broker's admin API
//! stops answering mid-rebalance, and the rebalance is reported Failed, not retried forever.
//!
//! Everything is asserted from the API server's objects, the admin API, the brokers' own
//! metric pages and the load generator's counts.

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use pulsar_autoscaler::admin::{AdminClient, AdminSettings};
use pulsar_autoscaler::api::{RebalanceStatus, ScalingPolicy};
use serde_json::json;

use super::common::NS;
use super::common::scaled_up_to_three;
use crate::support::monitoring::{client, eventually, free_port};
use crate::support::pulsar::Controller;
use crate::support::real_kube::RealPulsarOnKube;
use crate::support::real_pulsar::{BrokerSettings, CLUSTER, Load, LoadStats, WEB_PORT};

const RATE: f64 = 100.0;
const SIZE: u64 = 8192;
/// How long the test waits for the added broker to carry load.
const CARRY_WAIT: Duration = Duration::from_secs(180);

/// 100 msg/s of 8 KiB in and out is about 1.56 MiB/s: three brokers at 600 KiB/s each.
fn policy_yaml(rebalance: Option<u32>) -> String {
    let rebalance = rebalance
        .map(|r| format!(", rebalance: {{maxUnloadsPerSecond: {r}}}"))
        .unwrap_or_default();
    format!(
        r#"
interval: 3s
brokers:
  statefulSet: pulsar-broker
  minReplicas: 2
  maxReplicas: 3
  metrics: [{{type: Throughput, targetPerBroker: 600Ki}}]
  admin: {{port: {WEB_PORT}}}
  scaleUp: {{stabilizationWindow: 0s, cooldown: 0s{rebalance}}}
  scaleDown: {{stabilizationWindow: 10m, cooldown: 10m}}
rateLimit: {{actionsPerHour: 100, burst: 10}}
"#
    )
}

/// What one scale-up run measured.
#[derive(Debug)]
struct Carried {
    /// Seconds from the scale-up (StatefulSet at 3) until broker 2 owned a bundle.
    bundles_after: Option<f64>,
    /// Seconds until broker 2's own page showed traffic.
    traffic_after: Option<f64>,
    /// Bundles on broker 2 at the end of the wait.
    bundles: usize,
    /// Bytes/s in + out on broker 2 at the end of the wait.
    throughput: f64,
    /// The load's counts at the end.
    load: LoadStats,
    /// Publish failures during the run.
    failed: u64,
}

impl Carried {
    /// One row of the table in `benches/README.md`.
    fn row(&self, label: &str) -> String {
        let secs = |s: Option<f64>| {
            s.map_or(format!("not within {}s", CARRY_WAIT.as_secs()), |s| {
                format!("{s:.1}s")
            })
        };
        format!(
            "| {label} | {} | {} | {} bundles, {:.0} KiB/s | {} | {:.0} ms |",
            secs(self.bundles_after),
            secs(self.traffic_after),
            self.bundles,
            self.throughput / 1024.0,
            self.failed,
            self.load.max_ms
        )
    }
}

fn admin() -> AdminClient {
    AdminClient::new(AdminSettings {
        port: WEB_PORT,
        timeout: Duration::from_secs(5),
        ..AdminSettings::default()
    })
    .expect("admin client")
}

/// Creates `namespace` with `bundles` bundles.
async fn namespace_with_bundles(web: &str, namespace: &str, bundles: u32) {
    let r = client()
        .put(format!("{web}/admin/v2/namespaces/{namespace}"))
        .json(&json!({"bundles": {"numBundles": bundles}}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating namespace {namespace}: {e}"));
    assert!(
        r.status().is_success() || r.status().as_u16() == 409,
        "creating namespace {namespace}: HTTP {}",
        r.status()
    );
}

/// `pulsar_broker_throughput_in + _out` from broker `ip`'s own page.
pub(super) async fn broker_throughput(ip: &str) -> f64 {
    let url = format!("http://{ip}:{WEB_PORT}/metrics/");
    let Ok(r) = client().get(&url).send().await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("pulsar_broker_throughput_in")
                || l.starts_with("pulsar_broker_throughput_out")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn create_policy(k: &RealPulsarOnKube, yaml: &str) {
    let spec: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("spec");
    let api: Api<ScalingPolicy> = Api::namespaced(k.admin.clone(), NS);
    let sp: ScalingPolicy = serde_json::from_value(json!({
        "apiVersion": "pulsar-autoscaler.dev/v1alpha1", "kind": "ScalingPolicy",
        "metadata": {"name": "brokers", "namespace": NS}, "spec": spec}))
    .expect("policy");
    api.create(&PostParams::default(), &sp)
        .await
        .expect("creating the policy");
}

async fn rebalance_status(k: &RealPulsarOnKube) -> Option<RebalanceStatus> {
    let api: Api<ScalingPolicy> = Api::namespaced(k.admin.clone(), NS);
    api.get("brokers")
        .await
        .ok()?
        .status?
        .brokers?
        .rebalance
        .map(|r| *r)
}

/// Reasons and notes of the Events about the policy.
async fn events(k: &RealPulsarOnKube) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(k.admin.clone(), NS);
    let list = api.list(&Default::default()).await.expect("events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("brokers"))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Starts 2 brokers under load with 32 topics over two namespaces, the policy and the controller.
async fn scenario(rebalance: Option<u32>) -> (RealPulsarOnKube, Controller, Load) {
    scenario_with(rebalance, 16, 32).await
}

/// [`scenario`] with `spread` bundles in `public/spread` and `topics` topics.
async fn scenario_with(
    rebalance: Option<u32>,
    spread: u32,
    topics: usize,
) -> (RealPulsarOnKube, Controller, Load) {
    let k = RealPulsarOnKube::start(3, 2, 30, BrokerSettings::default()).await;
    namespace_with_bundles(&k.web_url(0), "public/spread", spread).await;
    create_policy(&k, &policy_yaml(rebalance)).await;
    let log = k.api.dir().join("controller.log");
    let controller = Controller::start(&k.controller_kubeconfig, "real", log, free_port());
    let topics: Vec<String> = (0..topics)
        .map(|i| {
            let ns = if i % 4 == 0 { "default" } else { "spread" };
            format!("persistent://public/{ns}/rebalance-{i}")
        })
        .collect();
    let load = Load::start(&k.service_url, RATE, SIZE, &topics);
    load.wait_acked(100).await;
    (k, controller, load)
}

/// Waits for the scale-up to 3, then follows broker 2 until it owns bundles and carries traffic.
async fn follow_added_broker(
    k: &RealPulsarOnKube,
    controller: &Controller,
    load: &Load,
) -> Carried {
    let failed_before = load.latest().failed;
    scaled_up_to_three(k, controller, 240).await;
    let scaled = Instant::now();
    k.wait_ready(3).await;
    let ip = k.broker_ips[2].clone();
    let id = format!("{ip}:{WEB_PORT}");
    let admin = admin();
    let (mut bundles_after, mut traffic_after) = (None, None);
    let (mut bundles, mut throughput) = (0, 0.0);
    while scaled.elapsed() < CARRY_WAIT {
        bundles = admin
            .owned_bundles(&ip, CLUSTER, &id)
            .await
            .map(|b| b.len())
            .unwrap_or(0);
        throughput = broker_throughput(&ip).await;
        let t = scaled.elapsed().as_secs_f64();
        if bundles > 0 && bundles_after.is_none() {
            bundles_after = Some(t);
        }
        if throughput > 0.0 && traffic_after.is_none() {
            traffic_after = Some(t);
        }
        if bundles_after.is_some() && traffic_after.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let latest = load.latest();
    Carried {
        bundles_after,
        traffic_after,
        bundles,
        throughput,
        failed: latest.failed - failed_before,
        load: latest,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_moves_load_onto_the_added_broker() {
    let (k, controller, load) = scenario(Some(10)).await;
    let carried = follow_added_broker(&k, &controller, &load).await;
    let done = eventually("the rebalance ends", 4 * 120, || async {
        match rebalance_status(&k).await {
            Some(r) if r.state == "Done" || r.state == "Failed" => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let stats = load.stop().await;
    eprintln!("with rebalance: {carried:?}; rebalance {done:?}; load at the end {stats:?}");
    eprintln!("{}", carried.row("2 → 3 with rebalance"));
    assert_eq!(done.state, "Done", "{done:?}");
    assert!(done.bundles_moved >= 1, "{done:?}");
    let share = done.fair_share.expect("fair share in status");
    let added = done
        .added_brokers
        .first()
        .expect("the added broker in status");
    assert_eq!(added.pod, "pulsar-broker-2");
    assert!(added.bundles >= share && share >= 1, "{done:?}");
    assert!(carried.bundles_after.is_some(), "{carried:?}");
    assert!(carried.traffic_after.is_some(), "{carried:?}");
    let events = events(&k).await;
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "Rebalanced" && n.contains("pulsar-broker-2 owns")),
        "{events:?}"
    );
    let metrics = controller.metrics().await;
    let moved = metrics
        .lines()
        .find(|l| l.starts_with("pulsar_autoscaler_rebalance_bundles_moved_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(moved, Some(f64::from(done.bundles_moved)), "{metrics}");
    assert!(
        metrics.contains(
            "pulsar_autoscaler_rebalance_in_progress{namespace=\"pulsar\",policy=\"brokers\"} 0"
        ),
        "{metrics}"
    );
    assert_eq!(k.replicas().await, 3, "no second scale-up");
    // Every acknowledged message arrived. A consumer whose topic moved gets its unacknowledged
    // messages again (at-least-once), so receipts may exceed acknowledgements.
    assert!(stats.received >= stats.acked, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rebalance_the_added_broker_waits_for_the_load_manager() {
    let (k, controller, load) = scenario(None).await;
    let carried = follow_added_broker(&k, &controller, &load).await;
    let stats = load.stop().await;
    eprintln!("without rebalance: {carried:?}; load at the end {stats:?}");
    eprintln!("{}", carried.row("2 → 3 without rebalance"));
    assert!(
        rebalance_status(&k).await.is_none(),
        "no rebalance without scaleUp.rebalance"
    );
    assert_eq!(stats.received, stats.acked, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_added_broker_fails_the_rebalance_once_not_forever() {
    // One unload per second, so the rebalance is still moving when broker 2 stops answering.
    let (k, controller, load) = scenario(Some(1)).await;
    eventually(
        "the controller scales 2 → 3 under load",
        4 * 240,
        || async {
            match k.replicas().await {
                3 => Ok(()),
                n => Err(format!("{n} replicas")),
            }
        },
    )
    .await;
    eventually("the rebalance moves a first bundle", 4 * 180, || async {
        match rebalance_status(&k).await {
            Some(r) if r.state == "Moving" && r.bundles_moved >= 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The broker process freezes: its admin API accepts connections and never answers.
    let pid = {
        let cluster = k.pulsar.lock().await;
        cluster
            .broker(2)
            .and_then(|b| b.pid())
            .expect("broker 2 runs")
    };
    // SAFETY: kill(2) on a process this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGSTOP);
    }
    let failed = eventually("the rebalance is reported Failed", 4 * 300, || async {
        match rebalance_status(&k).await {
            Some(r) if r.state == "Failed" => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("failed rebalance: {failed:?}");
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        message.contains(&k.broker_ips[2]),
        "names the broker: {message}"
    );
    assert_eq!(failed.failures, 3, "{failed:?}");
    // Not retried: the status and the failure counter stay as they are.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let later = rebalance_status(&k).await.expect("rebalance status");
    assert_eq!((later.state.as_str(), later.failures), ("Failed", 3));
    let events = events(&k).await;
    let failures: Vec<_> = events
        .iter()
        .filter(|(r, _)| r == "RebalanceFailed")
        .collect();
    assert_eq!(failures.len(), 1, "{events:?}");
    let metrics = controller.metrics().await;
    assert!(
        metrics.contains(
            "pulsar_autoscaler_rebalance_failures_total{namespace=\"pulsar\",policy=\"brokers\"} 3"
        ),
        "{metrics}"
    );
    // SAFETY: as above; lets the fixture stop it normally.
    unsafe {
        libc::kill(pid as i32, libc::SIGCONT);
    }
    drop(load);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_survives_a_controller_restart() {
    // Many bundles at one unload per second: the rebalance lasts long enough to be interrupted.
    let (k, mut controller, load) = scenario_with(Some(1), 64, 64).await;
    eventually(
        "the controller scales 2 → 3 under load",
        4 * 240,
        || async {
            match k.replicas().await {
                3 => Ok(()),
                n => Err(format!("{n} replicas")),
            }
        },
    )
    .await;
    let before = eventually("the rebalance moves a first bundle", 4 * 180, || async {
        match rebalance_status(&k).await {
            Some(r) if r.state == "Moving" && r.bundles_moved >= 1 => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    controller.kill();
    let killed = rebalance_status(&k).await.expect("rebalance status");
    eprintln!("killed the controller mid-rebalance: {killed:?}");
    assert_eq!(killed.state, "Moving", "killed before the end: {killed:?}");
    let share = killed.fair_share.expect("fair share");
    assert!(killed.bundles_moved < share, "{killed:?}");
    // A new leader, once the killed one's Lease expires (6 s).
    let log = k.api.dir().join("controller-2.log");
    let second = Controller::start(&k.controller_kubeconfig, "second", log, free_port());
    let done = eventually("the new leader finishes the rebalance", 4 * 180, || async {
        match rebalance_status(&k).await {
            Some(r) if r.state == "Done" || r.state == "Failed" => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("rebalance after the restart: {done:?}");
    assert_eq!(done.state, "Done", "{done:?}");
    // The same rebalance carried on: same start, the count kept and added to.
    assert_eq!(done.started_at, before.started_at);
    assert!(
        done.bundles_moved > killed.bundles_moved,
        "{killed:?} then {done:?}"
    );
    let added = done.added_brokers.first().expect("the added broker");
    assert!(added.bundles >= share, "{done:?}");
    // What the broker itself owns now, through its own admin API.
    let ip = &k.broker_ips[2];
    let owned = admin()
        .owned_bundles(ip, CLUSTER, &format!("{ip}:{WEB_PORT}"))
        .await
        .expect("bundles of the added broker");
    assert!(owned.len() as i32 >= share, "{owned:?} vs share {share}");
    // The new leader moved the rest: its own counter shows it.
    let metrics = second.metrics().await;
    let moved = metrics
        .lines()
        .find(|l| l.starts_with("pulsar_autoscaler_rebalance_bundles_moved_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<i32>().ok());
    assert_eq!(
        moved,
        Some(done.bundles_moved - killed.bundles_moved),
        "{metrics}"
    );
    let stats = load.stop().await;
    assert!(stats.received >= stats.acked, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_stops_a_rebalance() {
    let (k, controller, load) = scenario_with(Some(1), 64, 64).await;
    eventually(
        "the controller scales 2 → 3 under load",
        4 * 240,
        || async {
            match k.replicas().await {
                3 => Ok(()),
                n => Err(format!("{n} replicas")),
            }
        },
    )
    .await;
    eventually("the rebalance moves a first bundle", 4 * 180, || async {
        match rebalance_status(&k).await {
            Some(r) if r.state == "Moving" && r.bundles_moved >= 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Someone shrinks the StatefulSet while bundles move onto its last broker.
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(k.admin.clone(), NS);
    sets.patch_scale(
        "pulsar-broker",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .expect("scaling the StatefulSet down");
    let stopped = eventually("the rebalance stops", 4 * 60, || async {
        let events = events(&k).await;
        events
            .into_iter()
            .find(|(r, _)| r == "RebalanceStopped")
            .ok_or_else(|| "no RebalanceStopped Event yet".to_string())
    })
    .await;
    eprintln!("stopped: {stopped:?}");
    assert!(stopped.1.contains("scale-down to 2"), "{stopped:?}");
    let metrics = controller.metrics().await;
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("pulsar_autoscaler_rebalance_failures_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<i32>().ok());
    assert_eq!(failures.unwrap_or(0), 0, "stopped, not failed: {metrics}");
    // Let the stand-in kubelet finish stopping broker 2 before the fixture goes.
    eventually("broker 2's process stops", 4 * 60, || async {
        k.kubelet_events()
            .into_iter()
            .find(|e| e.broker == 2 && e.what == "stopped")
            .ok_or_else(|| format!("{:?}", k.kubelet_events()))
    })
    .await;
    drop(load);
}
