//! What makes the controller carry fleets, end to end on a real kube-apiserver and Prometheus:
//! a deleted policy leaves nothing behind, an unchanged policy is evaluated every interval but
//! written only when something visible changed, and policies sharing a source share its rounds.

mod support;

use std::time::Duration;

use kube::api::{Api, DeleteParams};
use pulsar_autoscaler::api::ScalingPolicy;
use support::monitoring::{self, eventually};
use support::pulsar::{Controller, NS, Pulsar, Shape};

const BROKERS: &str = r#"
interval: 1s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 2
  maxReplicas: 8
  metrics: [{type: Throughput, targetPerBroker: 60Mi}]
  # A short cooldown: right after a scale-up, Prometheus can hold the old brokers' last values
  # beside the new brokers' first ones for a scrape, and the sum briefly counts load twice.
  scaleUp: {stabilizationWindow: 0s, cooldown: 10s}
  scaleDown: {stabilizationWindow: 5m, cooldown: 5m}
rateLimit: {actionsPerHour: 1000, burst: 100}
"#;

const DISKS: &str = r#"
interval: 1s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
bookies: {statefulSet: pulsar-bookie, expandAtUsedPercent: 95, maxSize: 1Ti}
"#;

fn counter(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn evaluations(c: &Controller) -> f64 {
    counter(
        &c.metrics().await,
        "pulsar_autoscaler_reconcile_duration_seconds_count",
        &[],
    )
}

async fn ready(p: &Pulsar, name: &str) -> ScalingPolicy {
    eventually(&format!("{name} is Ready"), 480, || async {
        let sp = p.policy(name).await;
        let ok = sp.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ok {
            Ok(sp)
        } else {
            Err(format!("{:?}", sp.status))
        }
    })
    .await
}

async fn prometheus_queries(p: &Pulsar) -> f64 {
    let text = monitoring::client()
        .get(format!("{}/metrics", p.prom.url))
        .send()
        .await
        .expect("Prometheus /metrics")
        .text()
        .await
        .unwrap_or_default();
    counter(
        &text,
        "prometheus_http_requests_total",
        &["handler=\"/api/v1/query\""],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_policy_leaves_nothing_behind() {
    let p = Pulsar::start(Shape::default()).await;
    let c = p.controller("a");
    p.create_policy("brokers", BROKERS).await;
    p.create_policy("disks", DISKS).await;
    ready(&p, "brokers").await;
    ready(&p, "disks").await;
    let text = c.metrics().await;
    for family in ["metric_value", "current_replicas", "decisions_total"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("pulsar_autoscaler_{family}{{"))
                    && l.contains("policy=\"brokers\"")),
            "{family} of brokers is missing:\n{text}"
        );
    }

    let api: Api<ScalingPolicy> = Api::namespaced(p.admin.clone(), NS);
    api.delete("brokers", &DeleteParams::default())
        .await
        .expect("deleting the policy");
    eventually(
        "every series of the deleted policy is gone",
        240,
        || async {
            let text = c.metrics().await;
            let left: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("policy=\"brokers\""))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join("\n"))
            }
        },
    )
    .await;
    // The other policy keeps its series. Its claims' capacity and size limit are set at every
    // evaluation whatever the data, so only a wrong removal could take them away.
    let text = c.metrics().await;
    for family in ["claim_capacity_bytes", "claim_max_size_bytes"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("pulsar_autoscaler_{family}{{"))
                    && l.contains("policy=\"disks\"")),
            "the other policy lost {family}:\n{text}"
        );
    }
    // Its used percent is there whenever the last round had a usage value for the claim, and
    // is withdrawn (not left at an old value) after a round without one: on a busy machine a
    // scrape of the emulator past Prometheus' 1 s timeout marks the claim's series stale, and a
    // query can time out. A one-shot check once met such a gap right after the deletion; the
    // deletion itself removes nothing of this policy (the capacity series above).
    eventually("the other policy's used percent", 60, || async {
        let text = c.metrics().await;
        if text.lines().any(|l| {
            l.starts_with("pulsar_autoscaler_claim_used_percent{") && l.contains("policy=\"disks\"")
        }) {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;

    // Created again under the same name, it starts afresh: a new status, new series.
    p.create_policy("brokers", BROKERS).await;
    ready(&p, "brokers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_policy_is_evaluated_but_not_written_every_interval() {
    let p = Pulsar::start(Shape::default()).await;
    let c = p.controller("a");
    p.create_policy("brokers", BROKERS).await;
    p.create_policy("disks", DISKS).await;
    ready(&p, "brokers").await;
    ready(&p, "disks").await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let before = p.policy("brokers").await;
    let (evaluated, queries) = (evaluations(&c).await, prometheus_queries(&p).await);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = p.policy("brokers").await;
    let evaluated = evaluations(&c).await - evaluated;
    let queries = prometheus_queries(&p).await - queries;
    assert!(
        evaluated >= 8.0,
        "two policies at 1s for 8s: {evaluated} evaluations"
    );
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "nothing visible changed, yet the status was written:\n{:#?}\n{:#?}",
        before.status, after.status
    );
    // One round per second for both policies: Throughput, claim usage and the bookies' own
    // ledger usage, one grouped query each, not one set per policy.
    assert!(
        queries <= 8.0 * 3.0 + 6.0,
        "{queries} queries in 8 s for two policies sharing one Prometheus"
    );

    // Load moves: the new proposal is written, and the brokers follow.
    p.set_load(2.0).await;
    eventually("the scale-up is written", 240, || async {
        let sp = p.policy("brokers").await;
        let desired = sp
            .status
            .and_then(|s| s.brokers)
            .map(|b| b.desired_replicas);
        if desired == Some(6) {
            Ok(())
        } else {
            Err(format!("{desired:?}"))
        }
    })
    .await;
    // The proposal is recorded before the StatefulSet is patched (so that a crash in between
    // is settled by the successor), so the patch may land a moment after the status.
    eventually("the brokers follow", 60, || async {
        match p.replicas().await {
            6 => Ok(()),
            n => Err(format!("{n} replicas")),
        }
    })
    .await;
}

/// A controller process with extra flags; killed when dropped.
struct Shard(std::process::Child);

impl Drop for Shard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_evaluates_only_the_policies_labelled_for_it() {
    let p = Pulsar::start(Shape::default()).await;
    p.create_policy("mine", BROKERS).await;
    p.create_policy("disks", DISKS).await;
    p.patch_policy(
        "mine",
        serde_json::json!({"metadata": {"labels": {"pulsar-autoscaler.dev/shard": "a"}}}),
    )
    .await;
    let log = std::fs::File::create(p.api.dir().join("shard-a.log")).expect("log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .args(["run", "--kubeconfig"])
        .arg(&p.controller_kubeconfig)
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{}", monitoring::free_port()),
        ])
        .args(["--policy-selector", "pulsar-autoscaler.dev/shard=a"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting the shard");
    let _shard = Shard(child);
    ready(&p, "mine").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        p.policy("disks").await.status.is_none(),
        "a policy outside the shard was evaluated"
    );
}
