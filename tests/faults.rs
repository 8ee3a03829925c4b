//! Faults injected between real processes: the controller (a separate process) talks to a real
//! kube-apiserver, Prometheus and VictoriaMetrics through a fault-injecting proxy
//! (`tests/support/faults.rs`), and is killed with SIGKILL at chosen moments. Every assertion
//! reads the API server's own objects: the StatefulSet, the policy status, Events.

mod support;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pulsar_autoscaler::api::{DecisionRecord, ScalingPolicy};
use serde_json::json;
use support::faults::{Fault, Proxy, Rule};
use support::monitoring::{self, eventually};
use support::pulsar::{Pulsar, Shape, controller_via, counter, leads, wait_leads};

const NS: &str = "pulsar";

/// 180 MiB/s at load 1 over a 60 MiB/s target is 3 brokers; one broker per step, and a long
/// scale-up cooldown so that a repeated action would show.
const SLOW_UP: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 1
  maxReplicas: 8
  metrics: [{type: Throughput, targetPerBroker: 60Mi}]
  scaleUp: {stabilizationWindow: 0s, cooldown: 40s, maxStep: {replicas: 1}}
  scaleDown: {stabilizationWindow: 0s, cooldown: 40s, maxStep: {replicas: 1}}
rateLimit: {actionsPerHour: 1000, burst: 100}
"#;

/// Quick in both directions: any hold below is the fault's doing, not a window's.
const QUICK: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 1
  maxReplicas: 8
  metrics: [{type: Throughput, targetPerBroker: 60Mi}]
  scaleUp: {stabilizationWindow: 0s, cooldown: 2s, maxStep: {replicas: 4}}
  scaleDown: {stabilizationWindow: 0s, cooldown: 2s, maxStep: {replicas: 1}}
rateLimit: {actionsPerHour: 1000, burst: 100}
"#;

fn decisions(sp: &ScalingPolicy) -> Vec<DecisionRecord> {
    let mut d = sp
        .status
        .as_ref()
        .map(|s| s.decisions.clone())
        .unwrap_or_default();
    d.reverse(); // oldest first
    d
}

fn count(d: &[DecisionRecord], action: &str) -> usize {
    d.iter().filter(|r| r.action == action).count()
}

fn condition(sp: &ScalingPolicy, type_: &str) -> Option<(String, String, String)> {
    sp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_condition(p: &Pulsar, policy: &str, type_: &str, status: &str) -> (String, String) {
    eventually(&format!("{policy}: {type_}={status}"), 480, || async {
        match condition(&p.policy(policy).await, type_) {
            Some(c) if c.0 == status => Ok((c.1, c.2)),
            other => Err(format!("{other:?}")),
        }
    })
    .await
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

const SCALE: &str = "/statefulsets/pulsar-broker/scale";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_action_and_answer_leaves_the_action_recorded_and_not_repeated() {
    let p = Pulsar::start(Shape::default()).await;
    let (mut a, proxy) = controller_via(&p, "a").await;
    wait_leads(&a, "a", 1.0).await;
    // The API server applies the first /scale patch; its answer never reaches the controller.
    proxy.add(Rule::new("PATCH", SCALE, Fault::HoldResponse).times(1));
    p.create_policy("brokers", SLOW_UP).await;
    p.set_load(2.0).await;
    eventually("the /scale patch is held", 480, || async {
        if proxy.held() == 1 {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    // Already applied, and already recorded (decision and its time) before the call was made.
    assert_eq!(p.replicas().await, 4);
    let log = decisions(&p.policy("brokers").await);
    assert_eq!(count(&log, "ScaleUp"), 1, "{log:#?}");
    let acted_at = log.last().expect("a decision").time.0;
    a.kill();
    let killed_at = Timestamp::now();
    proxy.release();

    // A new controller (directly on the API server) takes over after the Lease (6 s) and keeps
    // evaluating a load that wants 6 brokers: nothing more inside the 40 s cooldown.
    let b = p.controller("b");
    wait_leads(&b, "b", 1.0).await;
    let deadline = acted_at
        .checked_add(jiff::SignedDuration::from_secs(36))
        .unwrap();
    while Timestamp::now() < deadline {
        assert_eq!(
            p.replicas().await,
            4,
            "a second scale-up inside the cooldown"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = decisions(&p.policy("brokers").await);
    assert_eq!(count(&log, "ScaleUp"), 1, "{log:#?}");
    // The action's Event and count, lost with a, were published by b, once.
    let events = p.events("brokers").await;
    let scaled: Vec<_> = events.iter().filter(|e| e.0 == "ScaledUp").collect();
    assert!(
        scaled.len() == 1 && scaled[0].1.contains("3 → 4") && scaled[0].2 == "b",
        "{events:?}"
    );
    let text = b.metrics().await;
    assert_eq!(
        counter(
            &text,
            "pulsar_autoscaler_decisions_total",
            &["action=\"ScaleUp\"", "result=\"applied\""]
        ),
        1.0,
        "{text}"
    );
    let status = p.policy("brokers").await.status.unwrap_or_default();
    assert!(status.brokers.is_some_and(|b| b.in_flight.is_none()));
    // After the cooldown, b continues: every change it makes is recorded too.
    wait_replicas(&p, 5).await;
    let log = decisions(&p.policy("brokers").await);
    let ups: Vec<_> = log.iter().filter(|d| d.action == "ScaleUp").collect();
    assert_eq!(
        ups.iter().map(|d| (d.from, d.to)).collect::<Vec<_>>(),
        vec![(3, 4), (4, 5)]
    );
    let gap = ups[1].time.0.duration_since(ups[0].time.0).as_secs_f64();
    assert!(gap >= 40.0, "scale-ups {gap}s apart across the crash");
    // ...and no later than the cooldown requires (evaluations every 2 s, a round behind).
    assert!(
        gap <= 50.0,
        "the successor waited {gap}s for a 40s cooldown"
    );
    eprintln!("figure: kill after action: second scale-up {gap}s after the first (cooldown 40s)");
    assert!(ups[1].time.0 > killed_at);
    // No Conflict: the new controller recognises the first change as one of its own kind.
    let (reason, _) = wait_condition(&p, "brokers", "Conflict", "False").await;
    assert_eq!(reason, "NoConflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_record_and_the_patch_is_corrected_by_the_successor() {
    let p = Pulsar::start(Shape::default()).await;
    let (mut a, proxy) = controller_via(&p, "a").await;
    wait_leads(&a, "a", 1.0).await;
    // The first /scale patch never reaches the API server.
    proxy.add(Rule::new("PATCH", SCALE, Fault::Hang).times(1));
    p.create_policy("brokers", SLOW_UP).await;
    p.set_load(2.0).await;
    eventually("the /scale patch hangs", 480, || async {
        match proxy.count("PATCH", SCALE, "hang") {
            1 => Ok(()),
            _ => Err("not yet".to_string()),
        }
    })
    .await;
    // Recorded before the call, which never happened.
    let sp = p.policy("brokers").await;
    let log = decisions(&sp);
    assert_eq!(count(&log, "ScaleUp"), 1, "{log:#?}");
    let in_flight = sp
        .status
        .and_then(|s| s.brokers)
        .and_then(|b| b.in_flight)
        .expect("the record names the action in flight");
    assert_eq!((in_flight.from, in_flight.to), (3, 4));
    assert_eq!(p.replicas().await, 3);
    a.kill();
    let killed_at = Timestamp::now();

    // The successor sees 3 replicas: the record is corrected, and it scales up at once
    // instead of waiting the 40 s cooldown of an action that never happened.
    let b = p.controller("b");
    wait_leads(&b, "b", 1.0).await;
    wait_replicas(&p, 4).await;
    let acted = Timestamp::now().duration_since(killed_at).as_secs_f64();
    let log = decisions(&p.policy("brokers").await);
    let actions: Vec<(&str, i64, i64)> = log
        .iter()
        .map(|d| (d.action.as_str(), d.from, d.to))
        .collect();
    assert_eq!(
        actions,
        [("FailedScaleUp", 3, 4), ("ScaleUp", 3, 4)],
        "{log:#?}"
    );
    assert!(log[0].reason.contains("not carried out"), "{log:#?}");
    assert!(acted < 30.0, "the successor waited {acted}s after the kill");
    eprintln!("figure: kill before the patch: successor scaled up {acted:.1}s after the kill");
    let events = p.events("brokers").await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "ActionFailed" && e.1.contains("not carried out") && e.2 == "b"),
        "{events:?}"
    );
    // Its own change is no one else's: no Conflict at any point.
    assert!(events.iter().all(|e| e.0 != "Conflict"), "{events:?}");
    let (reason, _) = wait_condition(&p, "brokers", "Conflict", "False").await;
    assert_eq!(reason, "NoConflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_the_record_is_in_flight_changes_nothing() {
    let p = Pulsar::start(Shape::default()).await;
    let (mut a, proxy) = controller_via(&p, "a").await;
    wait_leads(&a, "a", 1.0).await;
    p.create_policy("brokers", SLOW_UP).await;
    wait_condition(&p, "brokers", "MetricsAvailable", "True").await;
    // The next status write (the record of the scale-up) is held before the API server sees it.
    proxy.add(Rule::new(
        "PATCH",
        "/scalingpolicies/brokers/status",
        Fault::HoldRequest,
    ));
    p.set_load(2.0).await;
    eventually("the status write is held", 480, || async {
        if proxy.held() >= 1 {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        p.replicas().await,
        3,
        "acted before the action was recorded"
    );
    assert_eq!(proxy.count("PATCH", SCALE, "pass"), 0);
    a.kill();
    proxy.clear();
    proxy.release();

    let b = p.controller("b");
    wait_leads(&b, "b", 1.0).await;
    wait_replicas(&p, 4).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = decisions(&p.policy("brokers").await);
    assert_eq!(
        count(&log, "ScaleUp"),
        1,
        "one scale-up, recorded: {log:#?}"
    );
    assert_eq!(p.replicas().await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_steps_down_and_its_late_writes_change_nothing() {
    let p = Pulsar::start(Shape::default()).await;
    let (a, proxy) = controller_via(&p, "a").await;
    wait_leads(&a, "a", 1.0).await;
    let b = p.controller("b");
    wait_leads(&b, "b", 0.0).await;
    p.create_policy("brokers", SLOW_UP).await;
    p.set_load(2.0).await;
    wait_replicas(&p, 4).await;
    let first = decisions(&p.policy("brokers").await);
    assert_eq!(count(&first, "ScaleUp"), 1, "{first:#?}");

    // Cut a off: every request from now on is held, open watches are dropped.
    let cut_at = Timestamp::now();
    proxy.add(Rule::new("", "/", Fault::HoldRequest));
    proxy.cut_streams();
    // a stops leading on its own (renew deadline), b takes over when the Lease expires.
    // Both watched together: a must have stopped before b starts (no two leaders at once).
    let (mut stepped_down, mut took_over) = (None, None);
    for _ in 0..600 {
        let now = Timestamp::now();
        if stepped_down.is_none() && leads(&a).await == Some(0.0) {
            stepped_down = Some(now);
        }
        if took_over.is_none() && leads(&b).await == Some(1.0) {
            took_over = Some(now);
        }
        if stepped_down.is_some() && took_over.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stepped_down = stepped_down.expect("a never stepped down");
    let took_over = took_over.expect("b never took over");
    assert!(
        stepped_down <= took_over,
        "b led from {took_over} while a still led until {stepped_down}"
    );
    assert!(
        stepped_down.duration_since(cut_at).as_secs_f64() < 30.0,
        "a kept leading {}s without renewals",
        stepped_down.duration_since(cut_at).as_secs_f64()
    );
    // b continues after a's cooldown, then a's held requests reach the API server late.
    wait_replicas(&p, 5).await;
    let held = proxy.held();
    proxy.clear();
    proxy.release();
    tokio::time::sleep(Duration::from_secs(10)).await;

    let sp = p.policy("brokers").await;
    let log = decisions(&sp);
    let ups: Vec<_> = log.iter().filter(|d| d.action == "ScaleUp").collect();
    assert_eq!(
        ups.iter().map(|d| (d.from, d.to)).collect::<Vec<_>>(),
        vec![(3, 4), (4, 5)],
        "every action recorded once, none lost to a late write ({held} were held): {log:#?}"
    );
    let gap = ups[1].time.0.duration_since(ups[0].time.0).as_secs_f64();
    assert!(gap >= 40.0, "scale-ups {gap}s apart across the failover");
    assert!(
        gap <= 50.0,
        "the new leader waited {gap}s for a 40s cooldown"
    );
    eprintln!(
        "figure: cut-off leader stepped down {:.1}s after the cut, standby led {:.1}s after it \
         (lease 6s); {held} requests held then released; scale-ups {gap}s apart",
        stepped_down.duration_since(cut_at).as_secs_f64(),
        took_over.duration_since(cut_at).as_secs_f64()
    );
    assert_eq!(p.replicas().await, 5, "a late write moved replicas");
    // Every action has its Event: b's own once; a's once by a, and once more by b (saying so)
    // if the cut fell between a's patch and the status write after a's Event, which left the
    // action marked in flight. At least once, never lost, never more than twice.
    let events = p.events("brokers").await;
    let scaled: Vec<_> = events.iter().filter(|e| e.0 == "ScaledUp").collect();
    let by = |who: &str, span: &str| {
        scaled
            .iter()
            .filter(|e| e.2 == who && e.1.contains(span))
            .collect::<Vec<_>>()
    };
    assert_eq!(by("b", "4 → 5").len(), 1, "{events:?}");
    let (first, again) = (by("a", "3 → 4"), by("b", "3 → 4"));
    assert!(
        first.len() <= 1 && again.len() <= 1 && first.len() + again.len() >= 1,
        "{events:?}"
    );
    assert!(
        again
            .iter()
            .all(|e| e.1.contains("before the previous controller stopped")),
        "{events:?}"
    );
    assert_eq!(scaled.len(), 1 + first.len() + again.len(), "{events:?}");
    eprintln!(
        "figure: cut-off leader: first action's Event by a {}, republished by b {}",
        first.len(),
        again.len()
    );
}

/// Marks every query answer as partial (VictoriaMetrics) or adds a warning (Prometheus).
fn partial(body: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["isPartial"] = json!(true);
    v.to_string()
}

fn warned(body: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["warnings"] = json!(["remote storage b did not answer"]);
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_answers_and_warnings_never_scale_down() {
    let p = Pulsar::start(Shape::default()).await;
    let mut vm = monitoring::victoria_metrics(&p.scrape);
    monitoring::ready(&mut vm, "/health", &monitoring::client()).await;
    // vmselect's cluster path in front of the single-node server.
    let vm_proxy = Proxy::start_mapped(&vm.url, None, Some(("/select/0/prometheus", ""))).await;
    let prom_proxy = Proxy::start(&p.prom.url, None).await;
    let _c = p.controller("a");
    let spec = QUICK.replace(
        "{type: Prometheus, url: \"{{prometheus}}\", maxStaleness: 30s}",
        &format!(
            "{{type: VictoriaMetrics, url: \"{}/select/0/prometheus\", maxStaleness: 30s}}",
            vm_proxy.url
        ),
    );
    p.create_policy("brokers", &spec).await;
    wait_condition(&p, "brokers", "MetricsAvailable", "True").await;
    assert_eq!(p.replicas().await, 3);

    // VictoriaMetrics: a vmstorage node is missing, the sum looks like half the load.
    vm_proxy.add(Rule::new(
        "",
        "/api/v1/query",
        Fault::Rewrite(Arc::new(partial)),
    ));
    p.set_load(0.5).await;
    let (_, message) = wait_condition(&p, "brokers", "MetricsAvailable", "False").await;
    assert!(message.contains("partial"), "{message}");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(p.replicas().await, 3, "scaled down on a partial answer");
    assert_eq!(
        count(&decisions(&p.policy("brokers").await), "ScaleDown"),
        0
    );
    // Whole answers again: the same load scales down, so the hold was the fault's doing.
    vm_proxy.clear();
    wait_replicas(&p, 2).await;

    // Prometheus with warnings.
    prom_proxy.add(Rule::new(
        "",
        "/api/v1/query",
        Fault::Rewrite(Arc::new(warned)),
    ));
    p.patch_policy(
        "brokers",
        json!({"spec": {"metricsSource": {"type": "Prometheus", "url": prom_proxy.url}}}),
    )
    .await;
    p.set_load(0.2).await;
    let (_, message) = eventually("MetricsAvailable names the warning", 480, || async {
        match condition(&p.policy("brokers").await, "MetricsAvailable") {
            Some(c) if c.0 == "False" && c.2.contains("remote storage b") => Ok((c.1, c.2)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(message.contains("warnings"), "{message}");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        p.replicas().await,
        2,
        "scaled down on an answer with warnings"
    );
    prom_proxy.clear();
    wait_replicas(&p, 1).await;
    let downs = count(&decisions(&p.policy("brokers").await), "ScaleDown");
    assert_eq!(
        downs, 2,
        "3 → 2 → 1, each only once whole answers came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_policy_an_hpa_or_a_person_is_a_conflict_not_a_fight() {
    let p = Pulsar::start(Shape::default()).await;
    let _c = p.controller("a");
    let spec = QUICK.replace(
        "cooldown: 2s, maxStep: {replicas: 1}",
        "cooldown: 20s, maxStep: {replicas: 1}",
    );
    p.create_policy("main", &spec).await;
    wait_condition(&p, "main", "MetricsAvailable", "True").await;
    let (reason, _) = wait_condition(&p, "main", "Conflict", "False").await;
    assert_eq!(reason, "NoConflict");

    // A person sets 5 replicas by hand: shown, and not undone inside the policy's cooldown.
    let sts: Api<StatefulSet> = Api::namespaced(p.admin.clone(), NS);
    sts.patch_scale(
        "pulsar-broker",
        &PatchParams {
            field_manager: Some("kubectl".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .expect("scale by hand");
    let (reason, message) = wait_condition(&p, "main", "Conflict", "True").await;
    assert_eq!(reason, "ReplicasChangedElsewhere");
    assert!(message.contains("from 3 to 5"), "{message}");
    // Not Ready while the conflict holds, with the conflict as the reason.
    let (reason, message) = wait_condition(&p, "main", "Ready", "False").await;
    assert_eq!(reason, "Conflict");
    assert!(message.contains("from 3 to 5"), "{message}");
    let changed = Timestamp::now();
    while Timestamp::now().duration_since(changed).as_secs_f64() < 14.0 {
        assert_eq!(
            p.replicas().await,
            5,
            "the person's change was undone at once"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // After the cooldown the policy resumes (load 1 is 3 brokers): one step down.
    wait_replicas(&p, 4).await;

    // A second policy on the same StatefulSet: both show it, neither acts. (The person's
    // conflict is shown for the longer cooldown, 20 s, and can outlast the scale-down above:
    // wait for it to end, so the Conflict seen next is the rival's.)
    wait_condition(&p, "main", "Conflict", "False").await;
    p.create_policy("rival", &spec).await;
    let (reason, message) = wait_condition(&p, "main", "Conflict", "True").await;
    assert_eq!(reason, "AnotherPolicy", "{message}");
    let (reason, _) = wait_condition(&p, "rival", "Conflict", "True").await;
    assert_eq!(reason, "AnotherPolicy");
    let logged = decisions(&p.policy("main").await).len();
    p.set_load(2.0).await; // wants 6
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        p.replicas().await,
        4,
        "two policies acted on one StatefulSet"
    );
    assert_eq!(decisions(&p.policy("main").await).len(), logged);
    assert!(decisions(&p.policy("rival").await).is_empty());
    let api: Api<ScalingPolicy> = Api::namespaced(p.admin.clone(), NS);
    api.delete("rival", &Default::default())
        .await
        .expect("delete rival");
    wait_replicas(&p, 6).await;

    // An HPA on the same StatefulSet: the policy stands back while it exists.
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(p.admin.clone(), NS);
    support::pulsar::create(
        &hpas,
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "brokers-hpa", "namespace": NS},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "pulsar-broker"},
                     "minReplicas": 1, "maxReplicas": 10,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(22)).await; // past the scale-up cooldown
    p.set_load(0.5).await; // wants 2
    let (reason, message) = wait_condition(&p, "main", "Conflict", "True").await;
    assert_eq!(reason, "HorizontalPodAutoscaler", "{message}");
    assert!(message.contains("brokers-hpa"), "{message}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(p.replicas().await, 6, "acted beside an HPA");
    let events = p.events("main").await;
    assert!(
        events.iter().filter(|e| e.0 == "Conflict").count() >= 3,
        "one Event per conflict: {events:?}"
    );
    hpas.delete("brokers-hpa", &Default::default())
        .await
        .expect("delete hpa");
    wait_replicas(&p, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_latency_and_dropped_watches_never_double_an_action() {
    let p = Pulsar::start(Shape::default()).await;
    let (a, proxy) = controller_via(&p, "a").await;
    wait_leads(&a, "a", 1.0).await;
    p.create_policy("brokers", SLOW_UP).await;
    wait_condition(&p, "brokers", "MetricsAvailable", "True").await;
    // Slow reads, two failed status writes, a 409 on the first /scale patch, 503s on watches.
    proxy.add(Rule::new(
        "GET",
        SCALE,
        Fault::Delay(Duration::from_secs(2)),
    ));
    proxy.add(
        Rule::new(
            "PATCH",
            "/scalingpolicies/brokers/status",
            Fault::Respond(
                500,
                r#"{"kind":"Status","code":500,"message":"etcd timeout"}"#,
            ),
        )
        .times(2),
    );
    proxy.add(
        Rule::new(
            "PATCH",
            SCALE,
            Fault::Respond(409, r#"{"kind":"Status","code":409,"reason":"Conflict","message":"the object has been modified"}"#),
        )
        .times(1),
    );
    proxy.add(
        Rule::new(
            "GET",
            "watch=true",
            Fault::Respond(503, r#"{"kind":"Status","code":503}"#),
        )
        .times(3),
    );
    proxy.cut_streams();
    p.set_load(2.0).await;
    wait_replicas(&p, 4).await;
    let reached = Timestamp::now();
    // Inside the 40 s cooldown nothing more happens, whatever failed on the way.
    while Timestamp::now().duration_since(reached).as_secs_f64() < 25.0 {
        assert_eq!(
            p.replicas().await,
            4,
            "a second scale-up inside the cooldown"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = decisions(&p.policy("brokers").await);
    assert_eq!(count(&log, "ScaleUp"), 1, "{log:#?}");
    assert_eq!(proxy.count("PATCH", SCALE, "respond"), 1, "the 409 was met");
    assert_eq!(
        proxy.count("PATCH", "/scalingpolicies/brokers/status", "respond"),
        2
    );
    // The refused patch is recorded as failed, the one that worked as the scale-up.
    assert_eq!(count(&log, "FailedScaleUp"), 1, "{log:#?}");
    let events = p.events("brokers").await;
    assert_eq!(
        events.iter().filter(|e| e.0 == "ScaledUp").count(),
        1,
        "{events:?}"
    );
}

/// Removes broker 2's series from a query answer, as when its scrape target vanishes.
fn without_broker_2(body: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if let Some(result) = v["data"]["result"].as_array_mut() {
        result.retain(|s| s["metric"]["pod"] != "pulsar-broker-2");
    }
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_metric_missing_a_broker_never_scales_down() {
    let p = Pulsar::start(Shape::default()).await;
    let prom_proxy = Proxy::start(&p.prom.url, None).await;
    let _c = p.controller("a");
    // The Throughput preset's arithmetic written as a per-pod Custom query.
    let custom = r#"[{type: Custom, name: traffic, targetPerBroker: 60Mi, query: 'sum by (pod) (pulsar_broker_throughput_in{namespace="{{namespace}}"}) + sum by (pod) (pulsar_broker_throughput_out{namespace="{{namespace}}"})'}]"#;
    let spec = QUICK
        .replace("{{prometheus}}", &prom_proxy.url)
        .replace("[{type: Throughput, targetPerBroker: 60Mi}]", custom);
    p.create_policy("brokers", &spec).await;
    wait_condition(&p, "brokers", "MetricsAvailable", "True").await;
    assert_eq!(p.replicas().await, 3);

    // Broker 2's series disappear from every answer: the total looks like 2/3 of the load.
    prom_proxy.add(Rule::new(
        "",
        "/api/v1/query",
        Fault::Rewrite(Arc::new(without_broker_2)),
    ));
    let (value, proposed) = eventually("the status shows the partial value", 240, || async {
        let sp = p.policy("brokers").await;
        let m = sp
            .status
            .as_ref()
            .and_then(|s| s.brokers.as_ref())
            .and_then(|b| b.metrics.first().cloned());
        match m {
            Some(m) if m.problem.as_deref() == Some("only 2 of 3 brokers reported") => {
                Ok((m.value, m.proposed_replicas))
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // 2 of 3 brokers' traffic (2 × 60 MiB/s) over 60 MiB/s proposes 2: taken as complete,
    // it would remove a broker.
    let value = value.unwrap_or_default();
    assert!(
        monitoring::close(value, 120.0 * 1024.0 * 1024.0, 10.0),
        "{value}"
    );
    assert_eq!(proposed, Some(2));
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        p.replicas().await,
        3,
        "scaled down on a partial Custom value"
    );
    assert_eq!(
        count(&decisions(&p.policy("brokers").await), "ScaleDown"),
        0
    );
    // Every broker reporting again, at a load that wants 2: the same query scales down.
    prom_proxy.clear();
    p.set_load(0.5).await;
    wait_replicas(&p, 2).await;

    // The same total as a plain `sum(...)`: no pod label, so no broker count. It is used as
    // complete, and both the metric and the condition say that a missing broker is not seen.
    let plain = r#"sum(pulsar_broker_throughput_in{namespace="{{namespace}}"}) + sum(pulsar_broker_throughput_out{namespace="{{namespace}}"})"#;
    p.patch_policy(
        "brokers",
        json!({"spec": {"brokers": {"metrics": [
            {"type": "Custom", "name": "traffic", "targetPerBroker": "60Mi", "query": plain}
        ]}}}),
    )
    .await;
    let message = eventually("the condition warns of the unknown count", 240, || async {
        match condition(&p.policy("brokers").await, "MetricsAvailable") {
            Some((status, _, message))
                if status == "True" && message.contains("broker count unknown for traffic") =>
            {
                Ok(message)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(message.contains("sum by (pod)"), "{message}");
    let sp = p.policy("brokers").await;
    let m = sp
        .status
        .and_then(|s| s.brokers)
        .and_then(|b| b.metrics.first().cloned());
    assert!(
        m.as_ref().is_some_and(|m| m.value.is_some()
            && m.problem
                .as_deref()
                .is_some_and(|p| p.contains("broker count unknown"))),
        "{m:?}"
    );
}
