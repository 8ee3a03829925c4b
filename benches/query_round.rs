//! Cost of one evaluation round against a real Prometheus scraping the emulator, for 1, 100
//! and 1,000 policies: wall time per round and queries the server received.
//!
//! `cargo bench --bench query_round` measures; under `cargo test` one quick pass checks it runs.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use pulsar_autoscaler::emulator::{self, Config};
use pulsar_autoscaler::metrics::{Credentials, Flavor, PrometheusSource, Target, collect};

async fn queries(url: &str) -> f64 {
    let page = support::client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{url}/metrics: {e}"))
        .text()
        .await
        .unwrap_or_default();
    page.lines()
        .filter(|l| {
            l.starts_with("prometheus_http_requests_total")
                && l.contains("handler=\"/api/v1/query\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    support::crypto();
    let emu = support::emulator(Config {
        brokers: 5,
        max_brokers: 5,
        bookies: 3,
        ..Config::default()
    })
    .await;
    let scrape = emulator::scrape_config(&support::state(&emu).await, "1s");
    let mut prom = support::prometheus(&scrape, None);
    support::ready(&mut prom, "/-/ready", &support::client()).await;
    let source = PrometheusSource::new(
        Flavor::Prometheus,
        &prom.url,
        Duration::from_secs(5),
        &BTreeMap::new(),
        &Credentials::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let policy = support::policy("pulsar", "p", support::ALL_BROKER_METRICS);
    let one = [Target {
        namespace: "pulsar",
        name: "p",
        policy: &policy,
    }];
    support::eventually("Prometheus has every broker", 160, || async {
        let r = collect(&source, &one, Timestamp::now()).await.remove(0);
        match r.brokers[0].sample {
            Some(s) if s.reporting == Some(5) && r.claims.len() == 6 => Ok(()),
            _ => Err(format!("{r:?}")),
        }
    })
    .await;

    let counts: &[usize] = if bench { &[1, 100, 1000] } else { &[1, 10] };
    let rounds = if bench { 30 } else { 1 };
    println!(
        "{:>9} {:>12} {:>12} {:>16}",
        "policies", "median ms", "p90 ms", "queries/round"
    );
    for &n in counts {
        let namespaces: Vec<String> = (0..n)
            .map(|i| {
                if i == 0 {
                    "pulsar".into()
                } else {
                    format!("team-{i}")
                }
            })
            .collect();
        let targets: Vec<Target<'_>> = namespaces
            .iter()
            .map(|ns| Target {
                namespace: ns,
                name: "p",
                policy: &policy,
            })
            .collect();
        let before = queries(&prom.url).await;
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let r = collect(&source, &targets, Timestamp::now()).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(
                r[0].brokers.iter().all(|m| m.sample.is_some()),
                "{:?}",
                r[0]
            );
        }
        let per_round = (queries(&prom.url).await - before) / rounds as f64;
        times.sort_by(f64::total_cmp);
        let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
        println!(
            "{n:>9} {:>12.2} {p90:>12.2} {per_round:>16.1}",
            times[times.len() / 2]
        );
    }
}
