//! The controller end to end: a real kube-apiserver and etcd, real Prometheus scraping the
//! Pulsar emulator, and `pulsar-autoscaler run` as a separate process acting as the
//! ServiceAccount that `deploy/rbac.yaml` binds.

mod support;

use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::api::{DecisionRecord, ScalingPolicy};
use serde_json::json;
use support::monitoring::eventually;
use support::pulsar::{Controller, Pulsar, Shape, leads};

/// Brokers policy: 180 MiB/s at load 1 over a 60 MiB/s target is 3 brokers.
const BROKERS: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 2
  maxReplicas: 8
  metrics: [{type: Throughput, targetPerBroker: 60Mi}]
  scaleUp: {stabilizationWindow: 0s, cooldown: 4s, maxStep: {replicas: 4}}
  scaleDown: {stabilizationWindow: 12s, cooldown: 6s, maxStep: {replicas: 1}}
rateLimit: {actionsPerHour: 1000, burst: 100}
"#;

fn condition(sp: &ScalingPolicy, type_: &str) -> Option<(String, String, String)> {
    sp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn decisions(sp: &ScalingPolicy) -> Vec<DecisionRecord> {
    let mut d = sp
        .status
        .as_ref()
        .map(|s| s.decisions.clone())
        .unwrap_or_default();
    d.reverse(); // oldest first
    d
}

fn actions<'a>(d: &'a [DecisionRecord], action: &str) -> Vec<&'a DecisionRecord> {
    d.iter().filter(|r| r.action == action).collect()
}

/// Seconds from the last scale-up before `down` to `down`. A scale-down window counts from the
/// last evaluation that recommended more brokers: the scale-up's is one, and any later one
/// (before the drop shows in Prometheus) only delays the scale-down. The load drop is no
/// reference: when the next evaluation already sees it, the scale-down comes one window after
/// the scale-up's evaluation, which can be less than a window after the drop. Record times are
/// whole seconds; a difference of truncated times is never below the real one's whole seconds.
fn after_last_scale_up(log: &[DecisionRecord], down: &DecisionRecord) -> f64 {
    let up = actions(log, "ScaleUp")
        .into_iter()
        .rfind(|r| r.time <= down.time)
        .unwrap_or_else(|| panic!("no scale-up before the scale-down: {log:#?}"));
    down.time.0.duration_since(up.time.0).as_secs_f64()
}

async fn wait_replicas(p: &Pulsar, want: u32) {
    eventually(&format!("brokers reach {want}"), 480, || async {
        let got = p.replicas().await;
        if got == want {
            Ok(())
        } else {
            Err(format!("{got} replicas"))
        }
    })
    .await;
}

async fn wait_condition(
    p: &Pulsar,
    policy: &str,
    type_: &str,
    status: &str,
) -> (String, String, String) {
    eventually(&format!("{type_}={status}"), 480, || async {
        let sp = p.policy(policy).await;
        match condition(&sp, type_) {
            Some(c) if c.0 == status => Ok(c),
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

async fn reconciles(c: &Controller) -> f64 {
    counter(
        &c.metrics().await,
        "pulsar_autoscaler_reconcile_duration_seconds_count",
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_follow_load_up_and_down_within_bounds() {
    let p = Pulsar::start(Shape::default()).await;
    let c = p.controller("a");
    p.create_policy("brokers", BROKERS).await;
    wait_condition(&p, "brokers", "MetricsAvailable", "True").await;
    assert_eq!(p.replicas().await, 3, "load 1 is on target: no change");

    // Up: the scale-up follows within two evaluations of Prometheus showing the crossing.
    p.set_load(2.0).await;
    let seen = eventually("Prometheus shows the crossing", 240, || async {
        match p.throughput().await {
            Some(v) if v > 3.0 * 60.0 * 1024.0 * 1024.0 * 1.1 => Ok(reconciles(&c).await),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let at_scale_up = eventually("a scale-up", 480, || async {
        let count = reconciles(&c).await;
        let sp = p.policy("brokers").await;
        if actions(&decisions(&sp), "ScaleUp").is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(count)
        }
    })
    .await;
    // One evaluation may still read the round cached just before the crossing.
    assert!(
        at_scale_up - seen <= 3.0,
        "scale-up took {} evaluations after the crossing",
        at_scale_up - seen
    );
    wait_replicas(&p, 6).await;

    // Down: only after the window, one step per cooldown, never below minReplicas.
    p.set_load(0.5).await;
    wait_replicas(&p, 2).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(p.replicas().await, 2, "minReplicas holds");
    let sp = p.policy("brokers").await;
    let log = decisions(&sp);
    let downs = actions(&log, "ScaleDown");
    assert_eq!(downs.len(), 4, "6 → 2 one replica at a time: {log:#?}");
    let waited = after_last_scale_up(&log, downs[0]);
    assert!(
        waited >= 12.0,
        "first scale-down {waited}s after the last scale-up, inside the 12s window: {log:#?}"
    );
    for pair in downs.windows(2) {
        let gap = pair[1].time.0.duration_since(pair[0].time.0).as_secs_f64();
        assert!(gap >= 6.0, "scale-downs {gap}s apart, cooldown is 6s");
        assert_eq!(pair[0].to - 1, pair[1].to);
    }
    for d in &log {
        assert!((2..=8).contains(&d.to), "decision outside [2, 8]: {d:?}");
    }
    let events = p.events("brokers").await;
    assert!(events.iter().any(|e| e.0 == "ScaledUp"), "{events:?}");
    assert!(events.iter().any(|e| e.0 == "ScaledDown"), "{events:?}");
    let text = c.metrics().await;
    assert!(
        counter(
            &text,
            "pulsar_autoscaler_decisions_total",
            &["action=\"ScaleDown\"", "result=\"applied\""]
        ) >= 4.0
    );
    assert_eq!(
        counter(
            &text,
            "pulsar_autoscaler_current_replicas",
            &["policy=\"brokers\""]
        ),
        2.0
    );
    // The managed field shows who changed replicas.
    let sts: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> =
        kube::Api::namespaced(p.admin.clone(), "pulsar");
    let managers: Vec<String> = sts
        .get("pulsar-broker")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.iter().any(|m| m == "pulsar-autoscaler"),
        "{managers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_outage_holds_replicas_and_says_why() {
    let mut p = Pulsar::start(Shape::default()).await;
    let c = p.controller("a");
    p.create_policy("brokers", BROKERS).await;
    wait_condition(&p, "brokers", "MetricsAvailable", "True").await;

    p.stop_prometheus();
    p.set_load(0.3).await;
    let (_, reason, message) = wait_condition(&p, "brokers", "MetricsAvailable", "False").await;
    assert_eq!(reason, "MetricsUnavailable");
    assert!(message.contains("throughput"), "{message}");
    // Longer than the down window and cooldown: a scale-down would have happened by now.
    let before = reconciles(&c).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        reconciles(&c).await > before,
        "evaluation went on during the outage"
    );
    assert_eq!(p.replicas().await, 3);
    let sp = p.policy("brokers").await;
    assert!(
        decisions(&sp).is_empty(),
        "no decision during the outage: {:?}",
        decisions(&sp)
    );
    let events = p.events("brokers").await;
    assert!(
        events.iter().any(|e| e.0 == "MetricsUnavailable"),
        "{events:?}"
    );

    // Back: evaluation resumes and the low load scales down.
    p.restart_prometheus().await;
    wait_condition(&p, "brokers", "MetricsAvailable", "True").await;
    wait_replicas(&p, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookie_claims_grow_until_max_size_and_never_when_not_allowed() {
    let shape = Shape {
        ledger_used: 70.0,
        journal_used: 90.0,
        journal_expandable: false,
        ..Shape::default()
    };
    let p = Pulsar::start(shape).await;
    let _c = p.controller("a");
    p.create_policy(
        "disks",
        r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
bookies:
  statefulSet: pulsar-bookie
  expandAtUsedPercent: 50
  increase: {percent: 20, minimum: 1Gi}
  maxSize: 70Gi
  cooldown: 5s
rateLimit: {actionsPerHour: 1000, burst: 100}
"#,
    )
    .await;
    // 50Gi at 70 % → 60Gi (58 %) → 72Gi capped at 70Gi (50 %) → at maxSize.
    let volume = eventually("the ledgers claim reaches AtMaxSize", 480, || async {
        let sp = p.policy("disks").await;
        let v = sp.status.and_then(|s| s.bookies).and_then(|b| {
            b.volumes
                .into_iter()
                .find(|v| v.claim == "ledgers-pulsar-bookie-0")
        });
        match v {
            Some(v) if v.state == "AtMaxSize" => Ok(v),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(volume.requested.map(|q| q.0).as_deref(), Some("70Gi"));
    let pvc = p.claim("ledgers-pulsar-bookie-0").await;
    let request = pvc.spec.unwrap().resources.unwrap().requests.unwrap()["storage"]
        .0
        .clone();
    assert_eq!(request, "70Gi");
    let sp = p.policy("disks").await;
    let expands = actions(&decisions(&sp), "Expand")
        .into_iter()
        .filter(|d| d.target == "pvc/ledgers-pulsar-bookie-0")
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        expands.iter().map(|d| d.to).collect::<Vec<_>>(),
        vec![60 << 30, 70 << 30]
    );
    let gap = expands[1]
        .time
        .0
        .duration_since(expands[0].time.0)
        .as_secs_f64();
    assert!(gap >= 5.0, "expansions {gap}s apart, cooldown is 5s");

    // The journal's StorageClass forbids expansion: never patched, and the status says why.
    let journal = sp
        .status
        .unwrap()
        .bookies
        .unwrap()
        .volumes
        .into_iter()
        .find(|v| v.claim == "journal-pulsar-bookie-0")
        .unwrap();
    assert_eq!(journal.state, "Blocked");
    assert!(
        journal
            .message
            .unwrap_or_default()
            .contains("allowVolumeExpansion")
    );
    let pvc = p.claim("journal-pulsar-bookie-0").await;
    let managers: Vec<String> = pvc
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        !managers.iter().any(|m| m == "pulsar-autoscaler"),
        "journal claim was patched: {managers:?}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let events = p.events("disks").await;
    let count = |reason: &str| events.iter().filter(|e| e.0 == reason).count();
    assert_eq!(count("ClaimAtMaxSize"), 1, "{events:?}");
    assert_eq!(count("ExpansionBlocked"), 1, "{events:?}");
    assert_eq!(count("Expanded"), 2, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_records_and_suspend_does_nothing() {
    let p = Pulsar::start(Shape::default()).await;
    let _c = p.controller("a");
    p.create_policy("brokers", &format!("dryRun: true\n{BROKERS}"))
        .await;
    p.set_load(2.0).await;
    // A round may catch Prometheus between the brokers' scrapes (some at the new load, some at
    // the old); the decision for the full load follows within a round.
    let d = eventually("a dry-run decision for the full load", 480, || async {
        let sp = p.policy("brokers").await;
        decisions(&sp)
            .into_iter()
            .find(|d| d.action == "ScaleUp" && d.to == 6)
            .ok_or_else(|| format!("{:?}", decisions(&sp)))
    })
    .await;
    assert!(d.dry_run && d.from == 3, "{d:?}");
    let (_, reason, _) = wait_condition(&p, "brokers", "DryRun", "True").await;
    assert_eq!(reason, "DryRun");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logged = decisions(&p.policy("brokers").await);
    assert!(
        logged.iter().all(|d| d.dry_run && d.action == "ScaleUp"),
        "{logged:#?}"
    );
    for pair in logged.windows(2) {
        assert_ne!(
            (pair[0].from, pair[0].to),
            (pair[1].from, pair[1].to),
            "a dry-run decision logged twice: {logged:#?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(p.replicas().await, 3, "dry run changed the StatefulSet");
    let sp = p.policy("brokers").await;
    assert_eq!(
        decisions(&sp).len(),
        logged.len(),
        "the same dry-run decision is not logged every interval"
    );
    assert!(
        p.events("brokers")
            .await
            .iter()
            .any(|e| e.0 == "DryRunScaleUp")
    );

    p.patch_policy(
        "brokers",
        json!({"spec": {"dryRun": false, "suspend": true}}),
    )
    .await;
    wait_condition(&p, "brokers", "Suspended", "True").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        p.replicas().await,
        3,
        "a suspended policy changed the StatefulSet"
    );
    assert_eq!(decisions(&p.policy("brokers").await).len(), logged.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_the_window_and_cooldown_from_status() {
    let p = Pulsar::start(Shape::default()).await;
    let spec = BROKERS.replace("stabilizationWindow: 12s", "stabilizationWindow: 25s");
    let mut a = p.controller("a");
    p.create_policy("brokers", &spec).await;
    p.set_load(2.0).await;
    wait_replicas(&p, 6).await;
    p.set_load(0.5).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    a.kill();
    let killed_at = Timestamp::now();
    // The new process waits out the dead one's Lease (6 s), then continues from status.
    let _b = p.controller("b");
    eventually("a scale-down after the restart", 480, || async {
        let n = p.replicas().await;
        if n < 6 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let log = decisions(&p.policy("brokers").await);
    let downs = actions(&log, "ScaleDown");
    let waited = after_last_scale_up(&log, downs[0]);
    assert!(
        waited >= 25.0,
        "scale-down {waited}s after the last scale-up, inside the 25s window: {log:#?}"
    );
    // The load step may have been met in one or two scale-ups (a round can land between the
    // brokers' scrapes), all before the restart; none after it.
    assert!(
        actions(&log, "ScaleUp")
            .iter()
            .all(|d| d.time.0 <= killed_at),
        "no extra action after the restart: {log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_a_standby_takes_over() {
    let p = Pulsar::start(Shape::default()).await;
    let mut a = p.controller("a");
    eventually("a leads", 240, || async {
        if leads(&a).await == Some(1.0) {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    let mut b = p.controller("b");
    eventually("b serves metrics", 240, || async {
        leads(&b).await.ok_or_else(|| "no metrics".to_string())
    })
    .await;
    p.create_policy("brokers", BROKERS).await;
    p.set_load(2.0).await;
    wait_replicas(&p, 6).await;
    assert_eq!(leads(&b).await, Some(0.0), "b must stand by");
    assert_eq!(reconciles(&b).await, 0.0, "a standby evaluates nothing");
    let events = p.events("brokers").await;
    assert!(events.iter().all(|e| e.2 == "a"), "only a acts: {events:?}");

    a.kill();
    eventually("b takes over", 480, || async {
        if leads(&b).await == Some(1.0) {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    p.set_load(0.5).await;
    wait_replicas(&p, 5).await;
    // The Event follows the `/scale` patch's answer, so it can come a moment after the replicas.
    eventually("b's ScaledDown Event", 40, || async {
        let events = p.events("brokers").await;
        if events.iter().any(|e| e.0 == "ScaledDown" && e.2 == "b") {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;

    // SIGTERM releases the Lease at once.
    b.terminate();
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(p.admin.clone(), "pulsar-autoscaler");
    let lease = leases.get("pulsar-autoscaler").await.unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.is_empty(),
        "lease still held by {holder:?} after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_drops_actions_visibly() {
    let p = Pulsar::start(Shape::default()).await;
    let c = p.controller("a");
    let spec = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 2
  maxReplicas: 8
  tolerance: 0
  metrics: [{type: Throughput, targetPerBroker: 60Mi}]
  scaleUp: {stabilizationWindow: 0s, cooldown: 0s, maxStep: {replicas: 8}}
  scaleDown: {stabilizationWindow: 0s, cooldown: 0s, maxStep: {replicas: 8}}
rateLimit: {actionsPerHour: 2, burst: 2}
"#;
    p.create_policy("flappy", spec).await;
    for i in 0..8 {
        p.set_load(if i % 2 == 0 { 2.0 } else { 0.5 }).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let log = decisions(&p.policy("flappy").await);
    let applied = log
        .iter()
        .filter(|d| d.action == "ScaleUp" || d.action == "ScaleDown")
        .count();
    let dropped = log
        .iter()
        .filter(|d| d.action.starts_with("Dropped"))
        .count();
    assert!(
        applied <= 2,
        "burst 2 at 2/h allows two actions, got {applied}: {log:#?}"
    );
    assert!(dropped >= 1, "flapping load must hit the limit: {log:#?}");
    assert!(
        log.iter()
            .filter(|d| d.action.starts_with("Dropped"))
            .all(|d| d.reason.contains("rate limit"))
    );
    let text = c.metrics().await;
    assert!(
        counter(
            &text,
            "pulsar_autoscaler_decisions_total",
            &["result=\"rate_limited\""]
        ) >= 1.0
    );
    assert!(
        p.events("flappy")
            .await
            .iter()
            .any(|e| e.0 == "ActionDropped")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named_not_a_crash() {
    let p = Pulsar::start(Shape::default()).await;
    let mut c = p.controller("a");
    // The ClusterRole without `patch` on statefulsets/scale.
    let rbac = std::fs::read_to_string("deploy/rbac.yaml").unwrap();
    let reduced = rbac.replace(
        "    resources: [statefulsets/scale]\n    verbs: [get, patch]",
        "    resources: [statefulsets/scale]\n    verbs: [get]",
    );
    assert_ne!(rbac, reduced, "deploy/rbac.yaml changed shape");
    support::pulsar::apply_yaml(&p.admin, &reduced).await;
    p.create_policy("brokers", BROKERS).await;
    p.set_load(2.0).await;
    let (_, _, message) = wait_condition(&p, "brokers", "Ready", "False").await;
    assert!(
        message.contains("statefulsets/scale") && message.contains("patch"),
        "{message}"
    );
    assert!(
        p.events("brokers")
            .await
            .iter()
            .any(|e| e.0 == "ActionFailed")
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        c.running(),
        "the controller must not exit; log:\n{}",
        c.log_text()
    );
    assert_eq!(p.replicas().await, 3);

    support::pulsar::apply_yaml(&p.admin, &rbac).await;
    wait_replicas(&p, 6).await;
    wait_condition(&p, "brokers", "Ready", "True").await;
}
