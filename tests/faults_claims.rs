//! Faults around bookie claims, injected through the real API server: a resize the storage
//! system refuses (the claim's status set as an external resizer would), and a second policy
//! growing the same bookie StatefulSet's claims. Assertions read the claims, the policies'
//! status and Events.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use pulsar_autoscaler::api::{InFlightScale, ScalingPolicy, VolumeStatus};
use serde_json::json;
use support::faults::{Fault, Proxy, Rule};
use support::monitoring::eventually;
use support::pulsar::{NS, Pulsar, Shape, controller_via, counter, wait_leads};

/// 50Gi ledgers at 70 % with a 50 % threshold: every evaluation wants to grow them.
const DISKS: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
bookies:
  statefulSet: pulsar-bookie
  volumeClaimTemplates: [ledgers]
  expandAtUsedPercent: 50
  increase: {percent: 20, minimum: 1Gi}
  maxSize: 1Ti
  cooldown: 5s
rateLimit: {actionsPerHour: 1000, burst: 100}
"#;

const LEDGERS: &str = "ledgers-pulsar-bookie-0";

fn shape() -> Shape {
    Shape {
        ledger_used: 70.0,
        ..Shape::default()
    }
}

fn volume(sp: &ScalingPolicy) -> Option<VolumeStatus> {
    sp.status
        .as_ref()?
        .bookies
        .as_ref()?
        .volumes
        .iter()
        .find(|v| v.claim == LEDGERS)
        .cloned()
}

fn expands(sp: &ScalingPolicy) -> usize {
    sp.status.as_ref().map_or(0, |s| {
        s.decisions
            .iter()
            .filter(|d| d.action == "Expand" && d.target == format!("pvc/{LEDGERS}"))
            .count()
    })
}

async fn request(p: &Pulsar) -> String {
    let pvc = p.claim(LEDGERS).await;
    pvc.spec
        .and_then(|s| s.resources)
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").map(|q| q.0.clone()))
        .unwrap_or_default()
}

async fn wait_state(p: &Pulsar, policy: &str, state: &str) -> VolumeStatus {
    eventually(&format!("{LEDGERS} is {state}"), 480, || async {
        match volume(&p.policy(policy).await) {
            Some(v) if v.state == state => Ok(v),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn conflict(p: &Pulsar, policy: &str) -> (String, String) {
    eventually(&format!("{policy} shows Conflict"), 480, || async {
        let sp = p.policy(policy).await;
        let c = sp
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Conflict"));
        match c {
            Some(c) if c.status == "True" => Ok((c.reason.clone(), c.message.clone())),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_the_storage_refuses_is_not_retried() {
    let p = Pulsar::start(shape()).await;
    // The storage system has refused a resize of the claim (as the external resizer records it).
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(p.admin.clone(), NS);
    let refused =
        json!({"status": {"allocatedResourceStatuses": {"storage": "ControllerResizeInfeasible"}}});
    claims
        .patch_status(LEDGERS, &PatchParams::default(), &Patch::Merge(&refused))
        .await
        .expect("setting the claim's resize status");
    let _c = p.controller("a");
    p.create_policy("disks", DISKS).await;
    let v = wait_state(&p, "disks", "ResizeInfeasible").await;
    assert!(
        v.message
            .as_deref()
            .is_some_and(|m| m.contains("ControllerResizeInfeasible")),
        "{v:?}"
    );
    // Wanted at every evaluation (70 % over a 50 % threshold), yet never attempted.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(request(&p).await, "50Gi");
    let sp = p.policy("disks").await;
    assert_eq!(expands(&sp), 0, "{:#?}", sp.status);
    assert_eq!(
        volume(&sp).map(|v| v.state).as_deref(),
        Some("ResizeInfeasible")
    );
    let events = p.events("disks").await;
    let refusals = events.iter().filter(|e| e.0 == "ResizeInfeasible").count();
    assert_eq!(refusals, 1, "one Event, not one per evaluation: {events:?}");

    // The storage system accepts resizes again: the same usage grows the claim, so the hold
    // was the refusal's doing.
    let cleared = json!({"status": {"allocatedResourceStatuses": null}});
    claims
        .patch_status(LEDGERS, &PatchParams::default(), &Patch::Merge(&cleared))
        .await
        .expect("clearing the claim's resize status");
    eventually("the claim grows", 480, || async {
        match request(&p).await.as_str() {
            "50Gi" => Err("still 50Gi".to_string()),
            other => Ok(other.to_string()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_on_one_bookie_statefulset_stand_back() {
    let p = Pulsar::start(shape()).await;
    let _c = p.controller("a");
    p.create_policy("disks", DISKS).await;
    p.create_policy("disks-too", DISKS).await;
    for policy in ["disks", "disks-too"] {
        let (reason, message) = conflict(&p, policy).await;
        assert_eq!(reason, "AnotherPolicy", "{message}");
        assert!(message.contains("pulsar-bookie"), "{message}");
    }
    // Both want the claim grown; neither touches it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(request(&p).await, "50Gi");
    for policy in ["disks", "disks-too"] {
        let sp = p.policy(policy).await;
        assert_eq!(expands(&sp), 0, "{policy}: {:#?}", sp.status);
    }
    // One left: it grows the claim, once per cooldown.
    let api: Api<ScalingPolicy> = Api::namespaced(p.admin.clone(), NS);
    api.delete("disks-too", &DeleteParams::default())
        .await
        .expect("deleting a policy");
    eventually("the survivor grows the claim", 480, || async {
        if expands(&p.policy("disks").await) >= 1 && request(&p).await != "50Gi" {
            Ok(())
        } else {
            Err(request(&p).await)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growth_starts_from_a_capacity_above_the_request() {
    let p = Pulsar::start(shape()).await;
    // The provider gave 60Gi for a 50Gi request (it rounds up), and nothing resizes it back.
    p.resizer.store(false, Ordering::SeqCst);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(p.admin.clone(), NS);
    let larger = json!({"status": {"capacity": {"storage": "60Gi"}}});
    claims
        .patch_status(LEDGERS, &PatchParams::default(), &Patch::Merge(&larger))
        .await
        .expect("setting the claim's capacity");
    let _c = p.controller("a");
    p.create_policy("disks", DISKS).await;
    // 20 % over the 60Gi the volume has is 72Gi; from the request it would be 60Gi, no growth.
    eventually("the claim grows", 480, || async {
        match request(&p).await.as_str() {
            "50Gi" => Err("still 50Gi".to_string()),
            other => Ok(other.to_string()),
        }
    })
    .await;
    assert_eq!(request(&p).await, "72Gi");
    let sp = p.policy("disks").await;
    let tos: Vec<i64> = sp
        .status
        .as_ref()
        .map(|s| {
            s.decisions
                .iter()
                .filter(|d| d.action == "Expand")
                .map(|d| d.to)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(tos, [72 << 30], "{:#?}", sp.status);
}

/// Sets every measurement time in a query answer to `at` (unix seconds).
fn measured_at(body: &str, at: f64) -> String {
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if let Some(result) = v["data"]["result"].as_array_mut() {
        for s in result {
            if s["metric"]["autoscaler_field"] == "time" {
                s["value"][1] = json!(format!("{at:.3}"));
            }
        }
    }
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_sample_older_than_the_last_expansion_grows_nothing() {
    let p = Pulsar::start(shape()).await;
    let proxy = Proxy::start(&p.prom.url, None).await;
    let _c = p.controller("a");
    p.create_policy("disks", &DISKS.replace("{{prometheus}}", &proxy.url))
        .await;
    // 50Gi at 70 % → 60Gi, which the resizer completes: about 58 %, still over 50 %.
    let expanded = eventually("the first expansion", 480, || async {
        let sp = p.policy("disks").await;
        match volume(&sp).and_then(|v| v.last_expand_time) {
            Some(t) if expands(&sp) == 1 => Ok(t.0),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // From now on every sample reads as taken 2 s before that expansion (and within
    // maxStaleness for the next 28 s): it describes the old size.
    let before = expanded.as_millisecond() as f64 / 1000.0 - 2.0;
    proxy.add(Rule::new(
        "",
        "/api/v1/query",
        Fault::Rewrite(Arc::new(move |body: &str| measured_at(body, before))),
    ));
    // (First the resize itself shows as `Resizing`, until the resizer completes it.)
    eventually("the old sample is named as such", 480, || async {
        match volume(&p.policy("disks").await) {
            Some(v)
                if v.state == "Resizing"
                    && v.message
                        .as_deref()
                        .is_some_and(|m| m.contains("predates the last expansion")) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Past the 5 s cooldown, over the threshold, yet no second increment for the same fill.
    let deadline = expanded
        .checked_add(jiff::SignedDuration::from_secs(20))
        .unwrap();
    while jiff::Timestamp::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(request(&p).await, "60Gi");
    assert_eq!(expands(&p.policy("disks").await), 1);
    // Samples taken after it: the claim grows again (60Gi at 58 % → 72Gi).
    proxy.clear();
    eventually("the second expansion", 480, || async {
        match request(&p).await.as_str() {
            "72Gi" => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
}

/// The claim patch's path, as the proxy sees it.
const CLAIM_PATCH: &str = "/persistentvolumeclaims/ledgers-pulsar-bookie-0?";

/// As [`DISKS`] with a cooldown longer than the test: any second growth would be inside it.
fn slow_disks() -> String {
    DISKS.replace("cooldown: 5s", "cooldown: 120s")
}

fn claim_in_flight(sp: &ScalingPolicy) -> Option<InFlightScale> {
    volume(sp).and_then(|v| v.in_flight)
}

/// The claim's decisions, newest first, as (action, from, to).
fn claim_log(sp: &ScalingPolicy) -> Vec<(String, i64, i64)> {
    sp.status.as_ref().map_or_else(Vec::new, |s| {
        s.decisions
            .iter()
            .filter(|d| d.target == format!("pvc/{LEDGERS}"))
            .map(|d| (d.action.clone(), d.from, d.to))
            .collect()
    })
}

const GI: i64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_expansion_and_its_answer_publishes_its_event_once() {
    let p = Pulsar::start(shape()).await;
    let (mut a, proxy) = controller_via(&p, "a").await;
    wait_leads(&a, "a", 1.0).await;
    // The API server applies the first claim patch; its answer never reaches the controller.
    proxy.add(Rule::new("PATCH", CLAIM_PATCH, Fault::HoldResponse).times(1));
    p.create_policy("disks", &slow_disks()).await;
    eventually("the claim patch is held", 480, || async {
        match proxy.held() {
            1 => Ok(()),
            n => Err(format!("{n} held")),
        }
    })
    .await;
    // Already applied, and recorded before the call, with the expansion named in flight.
    assert_eq!(request(&p).await, "60Gi");
    let sp = p.policy("disks").await;
    assert_eq!(claim_log(&sp), [("Expand".into(), 50 * GI, 60 * GI)]);
    let made = claim_in_flight(&sp).expect("the record names the expansion in flight");
    assert_eq!((made.from, made.to), (50 * GI, 60 * GI));
    a.kill();
    proxy.release();

    // The successor finds the claim at 60Gi: the expansion happened, so its Event and count,
    // lost with a, are published once, and the cooldown counts from it.
    let b = p.controller("b");
    wait_leads(&b, "b", 1.0).await;
    eventually("the in-flight record is settled", 480, || async {
        match claim_in_flight(&p.policy("disks").await) {
            None => Ok(()),
            Some(m) => Err(format!("{m:?}")),
        }
    })
    .await;
    // A few evaluations (every 2 s) later: nothing repeated, nothing grown again.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(request(&p).await, "60Gi", "grown again inside the cooldown");
    let sp = p.policy("disks").await;
    assert_eq!(claim_log(&sp), [("Expand".into(), 50 * GI, 60 * GI)]);
    assert!(claim_in_flight(&sp).is_none());
    let events = p.events("disks").await;
    let expanded: Vec<_> = events.iter().filter(|e| e.0 == "Expanded").collect();
    assert!(
        expanded.len() == 1
            && expanded[0].2 == "b"
            && expanded[0]
                .1
                .contains("made before the previous controller stopped"),
        "{events:?}"
    );
    let text = b.metrics().await;
    let applied = ["action=\"Expand\"", "result=\"applied\""];
    assert_eq!(
        counter(&text, "pulsar_autoscaler_decisions_total", &applied),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_record_and_the_claim_patch_is_corrected_by_the_successor() {
    let p = Pulsar::start(shape()).await;
    let (mut a, proxy) = controller_via(&p, "a").await;
    wait_leads(&a, "a", 1.0).await;
    // The first claim patch never reaches the API server.
    proxy.add(Rule::new("PATCH", CLAIM_PATCH, Fault::Hang).times(1));
    p.create_policy("disks", &slow_disks()).await;
    eventually("the claim patch hangs", 480, || async {
        match proxy.count("PATCH", CLAIM_PATCH, "hang") {
            1 => Ok(()),
            n => Err(format!("{n} hanging")),
        }
    })
    .await;
    // Recorded before the call, which never happened.
    let sp = p.policy("disks").await;
    assert_eq!(claim_log(&sp), [("Expand".into(), 50 * GI, 60 * GI)]);
    let made = claim_in_flight(&sp).expect("the record names the expansion in flight");
    assert_eq!((made.from, made.to), (50 * GI, 60 * GI));
    assert_eq!(request(&p).await, "50Gi");
    a.kill();
    let killed_at = Instant::now();

    // The successor finds the claim at 50Gi: the record is corrected, and the claim grows at
    // once instead of after the 120 s cooldown of an expansion that never happened.
    let b = p.controller("b");
    wait_leads(&b, "b", 1.0).await;
    eventually("the successor grows the claim", 480, || async {
        match request(&p).await.as_str() {
            "60Gi" => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    let acted = killed_at.elapsed().as_secs_f64();
    assert!(acted < 60.0, "the successor waited {acted}s after the kill");
    eprintln!("figure: kill before the claim patch: successor grew it {acted:.1}s after the kill");
    let sp = p.policy("disks").await;
    assert_eq!(
        claim_log(&sp),
        [
            ("Expand".into(), 50 * GI, 60 * GI),
            ("FailedExpand".into(), 50 * GI, 60 * GI)
        ],
        "{:#?}",
        sp.status
    );
    let events = p.events("disks").await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "ActionFailed" && e.1.contains("not carried out") && e.2 == "b"),
        "{events:?}"
    );
    let text = b.metrics().await;
    let failed = ["action=\"Expand\"", "result=\"failed\""];
    assert_eq!(
        counter(&text, "pulsar_autoscaler_decisions_total", &failed),
        1.0,
        "{text}"
    );
}
