//! The controller on a real Pulsar: `pulsar-autoscaler run` as the `deploy/` ServiceAccount,
//! Direct mode (it finds the broker pods and scrapes the URLs it builds from their pod IPs),
//! real producers and consumers. The StatefulSet grows 2 → 3 under load and shrinks back when
//! it stops;
//! brokers start and stop only because the StatefulSet changed, as under a kubelet.

use std::time::Instant;

use kube::api::{Api, PostParams};
use pulsar_autoscaler::api::ScalingPolicy;
use serde_json::json;

use super::common::NS;
use super::common::scaled_up_to_three;
use crate::support::monitoring::close;
use crate::support::monitoring::{eventually, free_port};
use crate::support::pulsar::Controller;
use crate::support::real_kube::RealPulsarOnKube;
use crate::support::real_pulsar::{BrokerSettings, Load, create_namespace};

const RATE: f64 = 100.0;
const SIZE: u64 = 8192;

/// 100 msg/s of 8 KiB in and out is about 1.56 MiB/s: three brokers at 600 KiB/s each.
const POLICY: &str = r#"
interval: 3s
brokers:
  statefulSet: pulsar-broker
  minReplicas: 2
  maxReplicas: 3
  metrics: [{type: Throughput, targetPerBroker: 600Ki}]
  scaleUp: {stabilizationWindow: 0s, cooldown: 0s}
  scaleDown: {stabilizationWindow: 15s, cooldown: 0s}
rateLimit: {actionsPerHour: 100, burst: 10}
"#;

async fn policy(k: &RealPulsarOnKube) -> ScalingPolicy {
    let api: Api<ScalingPolicy> = Api::namespaced(k.admin.clone(), NS);
    api.get("brokers").await.expect("policy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_scales_real_brokers_up_under_load_and_down_when_it_stops() {
    let k = RealPulsarOnKube::start(3, 2, 30, BrokerSettings::default()).await;
    create_namespace(&k.web_url(0), "public/second").await;
    let spec: serde_json::Value = serde_yaml_ng::from_str(POLICY).expect("spec");
    let api: Api<ScalingPolicy> = Api::namespaced(k.admin.clone(), NS);
    let sp: ScalingPolicy = serde_json::from_value(json!({
        "apiVersion": "pulsar-autoscaler.dev/v1alpha1", "kind": "ScalingPolicy",
        "metadata": {"name": "brokers", "namespace": NS}, "spec": spec}))
    .expect("policy");
    api.create(&PostParams::default(), &sp)
        .await
        .expect("creating the policy");
    let log = k.api.dir().join("controller.log");
    let mut controller = Controller::start(&k.controller_kubeconfig, "real", log, free_port());

    let topics: Vec<String> = (0..4)
        .map(|i| {
            let ns = if i % 2 == 0 { "default" } else { "second" };
            format!("persistent://public/{ns}/scale-{i}")
        })
        .collect();
    let load = Load::start(&k.service_url, RATE, SIZE, &topics);
    let started = Instant::now();
    load.wait_acked(100).await;

    scaled_up_to_three(&k, &controller, 180).await;
    let up_after = started.elapsed();
    k.wait_ready(3).await;
    {
        let cluster = k.pulsar.lock().await;
        eprintln!(
            "3 brokers, 1 bookie, ZooKeeper: {} MiB resident, {} MiB on disk",
            cluster.rss_bytes() >> 20,
            cluster.disk_bytes() >> 20
        );
    }
    let sp = policy(&k).await;
    let status = sp.status.clone().expect("status");
    let metric = status
        .brokers
        .as_ref()
        .and_then(|b| b.metrics.first().cloned())
        .expect("throughput in status");
    let (acked, received) = load.rates(10.0);
    let sent = (acked + received) * SIZE as f64;
    eprintln!(
        "scaled up {:.1}s after the load started; status throughput {:?} vs load {sent:.0} B/s",
        up_after.as_secs_f64(),
        metric.value
    );
    assert!(
        metric.value.is_some_and(|v| close(v, sent, 15.0)),
        "the controller read {:?} B/s, the load sends {sent:.0}",
        metric.value
    );
    let scale_up = status
        .decisions
        .iter()
        .find(|d| d.action == "ScaleUp")
        .expect("a ScaleUp decision in status");
    assert_eq!((scale_up.from, scale_up.to), (2, 3));

    let stats = load.stop().await;
    let stopped = Instant::now();
    eventually(
        "the controller scales 3 → 2 once the load stops",
        4 * 240,
        || async {
            match k.replicas().await {
                2 => Ok(()),
                n => Err(format!("{n} replicas")),
            }
        },
    )
    .await;
    eprintln!(
        "scaled down {:.1}s after the load stopped",
        stopped.elapsed().as_secs_f64()
    );
    k.wait_ready(2).await;
    let sp = policy(&k).await;
    let down = sp
        .status
        .as_ref()
        .and_then(|s| {
            s.decisions
                .iter()
                .find(|d| d.action == "ScaleDown")
                .cloned()
        })
        .expect("a ScaleDown decision in status");
    assert_eq!((down.from, down.to), (3, 2));
    let stop = eventually("broker 2's process stops", 4 * 60, || async {
        k.kubelet_events()
            .into_iter()
            .find(|e| e.broker == 2 && e.what == "stopped")
            .ok_or_else(|| format!("{:?}", k.kubelet_events()))
    })
    .await;
    eprintln!("broker 2 stopped: {stop:?}; load: {stats:?}");
    assert!(
        !stop.killed,
        "broker 2 closed within its grace period: {stop:?}"
    );
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.received, stats.acked, "{stats:?}");
    assert!(controller.running(), "the controller kept running");
}
