//! One request per preset per round, whatever the number of policies: counted by Prometheus
//! itself (`prometheus_http_requests_total`).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::emulator::Config;
use pulsar_autoscaler::metrics::{Credentials, Flavor, PrometheusSource, Target, collect, round};
use pulsar_autoscaler::policy::Policy;

use crate::support::{self, ALL_BROKER_METRICS, Stack};

/// Sum of a counter's series whose line contains `filter`, read from the server's own
/// `/metrics` page (reading it is not a query, so it does not count itself).
async fn counter(url: &str, name: &str, filter: &str) -> f64 {
    let page = support::client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{url}/metrics: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{url}/metrics: {e}"));
    page.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn round_cost(
    source: &PrometheusSource,
    policies: &[(String, Policy)],
    url: &str,
    name: &str,
    filter: &str,
) -> f64 {
    let targets: Vec<Target<'_>> = policies
        .iter()
        .map(|(ns, p)| Target {
            namespace: ns,
            name: "p",
            policy: p,
        })
        .collect();
    let before = counter(url, name, filter).await;
    let readings = collect(source, &targets, Timestamp::now()).await;
    let after = counter(url, name, filter).await;
    assert_eq!(readings.len(), policies.len());
    // Every policy in the emulator's namespace got all of its values.
    for (r, (ns, _)) in readings.iter().zip(policies) {
        if ns == "pulsar" {
            assert!(r.brokers.iter().all(|m| m.sample.is_some()), "{r:?}");
            assert_eq!(r.claims.len(), 6, "{r:?}");
        }
    }
    after - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_two_hundred_policies_cost_the_same_queries() {
    let stack = Stack::start(Config {
        brokers: 2,
        max_brokers: 2,
        bookies: 3,
        ..Config::default()
    })
    .await;
    let one = vec![(
        "pulsar".to_string(),
        support::policy("pulsar", "p", ALL_BROKER_METRICS),
    )];
    // 200 policies in 200 namespaces (the emulator's among them), same metric kinds.
    let many: Vec<(String, Policy)> = (0..200)
        .map(|i| {
            let ns = if i == 0 {
                "pulsar".to_string()
            } else {
                format!("team-{i}")
            };
            let p = support::policy(&ns, "p", ALL_BROKER_METRICS);
            (ns, p)
        })
        .collect();
    let planned = round::plan(&[Target {
        namespace: "pulsar",
        name: "p",
        policy: &one[0].1,
    }]);
    let kinds = planned.presets.len() as f64;
    assert_eq!(
        kinds, 6.0,
        "four broker presets, claim usage and the bookies' ledger directories"
    );

    let none = BTreeMap::new();
    let prom = PrometheusSource::new(
        Flavor::Prometheus,
        &stack.prom.url,
        Duration::from_secs(5),
        &none,
        &Credentials::default(),
    )
    .unwrap();
    let name = "prometheus_http_requests_total";
    let filter = "handler=\"/api/v1/query\"";
    let cost_one = round_cost(&prom, &one, &stack.prom.url, name, filter).await;
    let cost_many = round_cost(&prom, &many, &stack.prom.url, name, filter).await;
    assert_eq!(cost_one, kinds, "Prometheus queries for 1 policy");
    assert_eq!(cost_many, kinds, "Prometheus queries for 200 policies");
}
