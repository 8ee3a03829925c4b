//! A broker recomputes its broker-level rates only every `statsUpdateFrequencyInSecs`; between
//! refreshes every scrape returns the same, ageing number. Direct mode dates each rate by the
//! scrape that first showed it, so `maxStaleness` judges the number's real age.

use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::metrics::{
    Credentials, DirectSource, MetricsSource, PodEndpoint, Preset, Target, collect,
};

use super::common::NS;
use crate::support::{self, real_pulsar::*};

const PERIOD: u32 = 20;
const POD: &str = "pulsar-broker-0";
const POLICY: &str = "  metricsSource: {maxStaleness: 10s}
  brokers:
    statefulSet: pulsar-broker
    minReplicas: 1
    maxReplicas: 10
    metrics:
      - {type: Throughput, targetPerBroker: 50Mi}
      - {type: HeapMemory, targetUtilization: 75}
";

fn secs(later: Timestamp, earlier: Timestamp) -> f64 {
    (later.as_millisecond() - earlier.as_millisecond()) as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_rates_are_dated_by_the_brokers_refresh_not_by_the_scrape() {
    support::monitoring::crypto();
    let settings = BrokerSettings {
        stats_period_secs: PERIOD,
        ..BrokerSettings::default()
    };
    let pulsar = Standalone::start(settings).await;
    let topics = vec!["persistent://public/default/freshness".to_string()];
    let load = Load::start(&pulsar.service_url(), 100.0, 4096, &topics);
    load.wait_acked(50).await;
    let direct = DirectSource::new(
        vec![PodEndpoint::broker(NS, POD, &pulsar.ip)],
        None,
        Duration::from_secs(5),
        &Credentials::default(),
    )
    .expect("Direct source");
    let policy = support::policy(NS, "fresh", POLICY);
    let targets = [Target {
        namespace: NS,
        name: "fresh",
        policy: &policy,
    }];

    // (scraped at, value, measured at), and what a policy with maxStaleness 10s got.
    let mut seen = Vec::new();
    let (mut fresh, mut stale) = (0, 0);
    let key = (NS.to_string(), POD.to_string());
    for _ in 0..(3 * PERIOD) {
        let now = Timestamp::now();
        let g = direct.fetch(&[Preset::Throughput], now).await.remove(0);
        if let Some(p) = g.ok().and_then(|g| g.points.get(&key).cloned()) {
            seen.push((now, p.value, p.at));
        }
        let r = collect(&direct, &targets, Timestamp::now()).await.remove(0);
        assert!(
            r.brokers[1].sample.is_some(),
            "heap is read fresh every time"
        );
        match (&r.brokers[0].sample, &r.brokers[0].problem) {
            (Some(_), _) => fresh += 1,
            (None, Some(why)) if why.contains("maxStaleness") => stale += 1,
            other => panic!("unexpected Throughput reading: {other:?}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let changes: Vec<Timestamp> = seen
        .windows(2)
        .filter(|w| w[0].1 != w[1].1)
        .map(|w| w[1].0)
        .collect();
    let gaps: Vec<f64> = changes.windows(2).map(|w| secs(w[1], w[0])).collect();
    let oldest = seen
        .iter()
        .map(|(scraped, _, at)| secs(*scraped, *at))
        .fold(0.0, f64::max);
    eprintln!(
        "{} scrapes, value changed at {changes:?} (gaps {gaps:?} s), oldest number {oldest:.1} s; \
         maxStaleness 10s: {fresh} fresh, {stale} stale",
        seen.len()
    );
    assert!(
        !gaps.is_empty(),
        "the rate changed at most once in {}s",
        3 * PERIOD
    );
    let period = PERIOD as f64;
    // Refreshes follow the period; under load a refresh sometimes comes early, never late.
    let longest = gaps.iter().copied().fold(0.0, f64::max);
    assert!(
        gaps.iter().all(|g| *g <= period + 3.0) && longest >= period - 3.0,
        "the broker refreshed about every {PERIOD}s: gaps {gaps:?}"
    );
    assert!(
        (period - 5.0..=period + 3.0).contains(&oldest),
        "a number is dated by the refresh that made it: oldest {oldest:.1}s"
    );
    assert!(
        fresh > 0 && stale > 0,
        "maxStaleness 10s under a {PERIOD}s refresh holds part of the time: {fresh} fresh, {stale} stale"
    );
    drop(load);
}
