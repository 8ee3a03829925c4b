//! Bookie disk usage on a real bookie. BookKeeper judges its 90 % warn and 95 % read-only marks
//! on its own measure of each ledger directory, `1 - usable / total`, which counts the
//! filesystem's reserved blocks as used; the kubelet's `usedBytes / capacityBytes` does not.
//! A claim must grow on whichever figure is closer to the read-only mark.

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use jiff::Timestamp;
use pulsar_autoscaler::decide::{Action, ClaimState, Flags, decide_claim};
use pulsar_autoscaler::metrics::{
    Credentials, DirectSource, KubeletStats, PodEndpoint, Preset, Target, collect,
};

use super::common::{self, NS};
use crate::support::monitoring::scrape_one;
use crate::support::{self, real_pulsar::*};

const BOOKIE: &str = "pulsar-bookie-0";
const CLAIM: &str = "ledgers-pulsar-bookie-0";
const NODE: &str = "node-a";

/// Blocks of a filesystem: (total, free, available to unprivileged writers, block size).
fn statvfs(path: &Path) -> (f64, f64, f64, f64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    assert_eq!(rc, 0, "statvfs {}", path.display());
    (
        s.f_blocks as f64,
        s.f_bfree as f64,
        s.f_bavail as f64,
        s.f_frsize as f64,
    )
}

/// BookKeeper's measure of a directory, percent.
fn bookkeeper_percent(path: &Path) -> f64 {
    let (total, _, avail, _) = statvfs(path);
    100.0 * (1.0 - avail / total)
}

/// The kubelet's `usedBytes / capacityBytes` of the same filesystem, percent.
fn kubelet_percent(path: &Path) -> f64 {
    let (total, free, _, _) = statvfs(path);
    100.0 * (total - free) / total
}

/// A stand-in kubelet behind the API server's node proxy path, reporting the claim on the
/// bookie's real ledger filesystem with the kubelet's own arithmetic. Like a CSI driver that
/// reports no available figure, it gives used and capacity only.
async fn kubelet(ledgers: &Path) -> KubeletStats {
    let dir = ledgers.to_path_buf();
    let route = format!("/api/v1/nodes/{NODE}/proxy/stats/summary");
    let router = Router::new().route(
        &route,
        get(move || {
            let dir = dir.clone();
            async move {
                let (total, free, _, bsize) = statvfs(&dir);
                axum::Json(serde_json::json!({"pods": [{"volume": [{
                    "name": "ledgers",
                    "pvcRef": {"name": CLAIM, "namespace": NS},
                    "time": Timestamp::now().to_string(),
                    "capacityBytes": total * bsize,
                    "usedBytes": (total - free) * bsize,
                }]}]}))
            }
        }),
    );
    let addr = support::monitoring::serve(router).await;
    let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
    let client = kube::Client::try_from(kube::Config::new(uri)).expect("kube client");
    KubeletStats {
        client,
        nodes: vec![NODE.to_string()],
    }
}

fn claim(usage: Option<pulsar_autoscaler::decide::Sample>) -> ClaimState {
    ClaimState {
        name: CLAIM.into(),
        requested: 100 << 30,
        capacity: Some(100 << 30),
        usage,
        bound: true,
        resize_in_progress: None,
        resize_infeasible: None,
        expandable: Some(true),
        last_expand: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_usage_is_the_bookies_own_measure_and_claims_grow_on_the_closer_figure() {
    support::monitoring::crypto();
    let cluster = Cluster::start(1, 0, 1, BrokerSettings::default()).await;
    let bookie = &cluster.bookies[0];
    let stats = format!("{}:{BOOKIE_STATS_PORT}", bookie.ip);
    let (prom, vm) = common::monitoring(&scrape_one(&stats, NS, BOOKIE)).await;
    let pods = vec![PodEndpoint::bookie(NS, BOOKIE, &bookie.ip)];

    // The bookie's disk checker publishes its first figure a few seconds after start.
    let direct = DirectSource::new(
        pods.clone(),
        None,
        Duration::from_secs(5),
        &Credentials::default(),
    )
    .expect("Direct source");
    support::monitoring::eventually("the bookie measured its ledger directory", 240, || async {
        use pulsar_autoscaler::metrics::MetricsSource;
        let g = direct.fetch(&[Preset::LedgerUsage], Timestamp::now()).await;
        match g.into_iter().next() {
            Some(Ok(g)) if g.points.values().any(|p| p.value > 0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let want = bookkeeper_percent(&bookie.ledgers);
    let kubelet_view = kubelet_percent(&bookie.ledgers);
    eprintln!(
        "ledger filesystem: BookKeeper's measure {want:.2} %, kubelet's used/capacity {kubelet_view:.2} %"
    );
    let mut wrong = Vec::new();
    for source in common::sources(pods.clone(), &prom, &vm) {
        let what = source.describe();
        let got = source
            .fetch(&[Preset::LedgerUsage], Timestamp::now())
            .await
            .into_iter()
            .next()
            .and_then(Result::ok)
            .and_then(|g| g.points.get(&(NS.to_string(), BOOKIE.to_string())).cloned());
        eprintln!("{what}: LedgerUsage {got:?}");
        match got {
            Some(p) if (p.value - want).abs() < 0.5 => {}
            other => wrong.push(format!(
                "{what}: LedgerUsage {other:?}, statvfs says {want:.2}"
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Expansion threshold just under the bookie's own figure: the claim grows on it even when
    // the kubelet's figure alone would not reach the threshold.
    // (whole percent, as the field takes).
    let threshold = want.floor().clamp(1.0, 99.0);
    let spec = format!(
        "  bookies:\n    statefulSet: pulsar-bookie\n    volumeClaimTemplates: [ledgers]\n    expandAtUsedPercent: {threshold:.0}\n    increase: {{percent: 20, minimum: 1Gi}}\n    maxSize: 2Ti\n    cooldown: 0s\n"
    );
    let policy = support::policy(NS, "disk", &spec);
    let bookies = policy.bookies.clone().expect("bookie policy");
    let targets = [Target {
        namespace: NS,
        name: "disk",
        policy: &policy,
    }];
    let kube = kubelet(&bookie.ledgers).await;
    let decide = |usage| {
        decide_claim(
            &bookies,
            Flags::default(),
            policy.source.max_staleness,
            &claim(usage),
            Timestamp::now(),
        )
    };

    let with_page = DirectSource::new(
        pods,
        Some(kube.clone()),
        Duration::from_secs(5),
        &Credentials::default(),
    )
    .expect("source");
    let r = collect(&with_page, &targets, Timestamp::now())
        .await
        .remove(0);
    let usage = r.claims.get(CLAIM).and_then(|c| c.sample);
    let outcome = decide(usage);
    eprintln!("with the bookie's page: {usage:?} → {:?}", outcome.decision);
    assert!(
        usage.is_some_and(|s| (s.value - want).abs() < 0.5),
        "the claim's usage is the bookie's own figure: {usage:?}, want {want:.2}"
    );
    assert_eq!(outcome.decision.action, Action::Expand, "{outcome:?}");

    let kubelet_only = DirectSource::new(
        Vec::new(),
        Some(kube),
        Duration::from_secs(5),
        &Credentials::default(),
    )
    .expect("source");
    let r = collect(&kubelet_only, &targets, Timestamp::now())
        .await
        .remove(0);
    let usage = r.claims.get(CLAIM).and_then(|c| c.sample);
    assert!(
        usage.is_some_and(|s| (s.value - kubelet_view).abs() < 0.5),
        "without the page, the kubelet's figure: {usage:?}, want {kubelet_view:.2}"
    );
    if kubelet_view < threshold {
        // This filesystem reserves blocks: the kubelet's figure alone stays under the mark.
        assert_eq!(decide(usage).decision.action, Action::Hold);
    } else {
        eprintln!("this filesystem reserves no blocks: both figures agree, nothing to contrast");
    }
}
