//! The emulator as a tool: its control endpoint changes what its pages serve, read back through
//! Direct mode (pod pages and the kubelet summary through a kube client).

use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::emulator::Config;
use pulsar_autoscaler::metrics::{
    Credentials, DirectSource, MetricsSource, Preset, Target, collect,
};

use crate::support::{self, ALL_BROKER_METRICS, close};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_changes_reach_the_pages() {
    support::crypto();
    let emu = support::emulator(Config {
        brokers: 2,
        max_brokers: 4,
        bookies: 2,
        disk_write_ratio: 1.0,
        ledger_claim_bytes: 20 << 30,
        ..Config::default()
    })
    .await;
    let policy = support::policy("pulsar", "p", ALL_BROKER_METRICS);
    let targets = [Target {
        namespace: "pulsar",
        name: "p",
        policy: &policy,
    }];
    let kubelet = support::kubelet(&emu).await;
    let direct = |pods| {
        DirectSource::new(
            pods,
            Some(kubelet.clone()),
            Duration::from_secs(5),
            &Credentials::default(),
        )
        .unwrap()
    };

    let before = collect(
        &direct(support::pods(&emu).await),
        &targets,
        Timestamp::now(),
    )
    .await
    .remove(0);
    let per_broker_before = before.brokers[0].sample.unwrap().value / 2.0;
    support::change(&emu, serde_json::json!({"brokers": 4})).await;
    let after = collect(
        &direct(support::pods(&emu).await),
        &targets,
        Timestamp::now(),
    )
    .await
    .remove(0);
    let s = after.brokers[0].sample.unwrap();
    assert_eq!(s.reporting, Some(4));
    // Same cluster total, split over twice the brokers.
    assert!(
        close(s.value / 4.0, per_broker_before / 2.0, 0.1),
        "{s:?} vs {per_broker_before}"
    );

    // Writes grow the ledger claims; an expansion lowers the used percent.
    let claim = "ledgers-pulsar-bookie-0";
    let first = after.claims[claim].sample.unwrap().value;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = collect(
        &direct(support::pods(&emu).await),
        &targets,
        Timestamp::now(),
    )
    .await
    .remove(0);
    let grown = later.claims[claim].sample.unwrap().value;
    assert!(grown > first, "{first} -> {grown}");
    support::change(&emu, serde_json::json!({"claims": {claim: 40u64 << 30}})).await;
    let g = direct(support::pods(&emu).await)
        .fetch(&[Preset::ClaimUsage], Timestamp::now())
        .await
        .remove(0)
        .unwrap();
    let expanded = g.points[&("pulsar".to_string(), claim.to_string())].value;
    assert!(expanded < grown * 0.6, "{grown} -> {expanded}");
    let truth = support::truth(&emu).await;
    assert!(
        close(expanded, truth.claim_usage[claim], 1.0),
        "{expanded} vs {}",
        truth.claim_usage[claim]
    );

    // Invalid changes are refused and change nothing.
    let http = support::client();
    for bad in [
        serde_json::json!({"brokers": 5}),
        serde_json::json!({"claims": {claim: 1}}),
        serde_json::json!({"claims": {"nope": 1}}),
        serde_json::json!({"loadFactor": -1.0}),
        serde_json::json!({"replicas": 3}),
    ] {
        let r = http
            .post(format!("{}/state", emu.control_url()))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{bad}: {}", r.status());
    }
    assert_eq!(support::state(&emu).await.brokers, 4);
    // A broker beyond the count is not running: its port answers 503.
    support::change(&emu, serde_json::json!({"brokers": 1})).await;
    let r = http
        .get(format!("http://{}/metrics", emu.brokers[3]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
}
