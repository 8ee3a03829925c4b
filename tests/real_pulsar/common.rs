//! What several real-Pulsar tests share: sources, policies and the JVM's own memory figures.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use pulsar_autoscaler::metrics::{
    Credentials, DirectSource, Flavor, MetricsSource, PodEndpoint, PrometheusSource,
};

use crate::support::monitoring::{self, Server};

/// Namespace the broker and bookie pods are said to run in.
pub const NS: &str = "pulsar";

/// Prometheus and VictoriaMetrics scraping `scrape`, both ready.
pub async fn monitoring(scrape: &str) -> (Server, Server) {
    let http = monitoring::client();
    let mut prom = monitoring::prometheus(scrape, None);
    let mut vm = monitoring::victoria_metrics(scrape);
    monitoring::ready(&mut prom, "/-/ready", &http).await;
    monitoring::ready(&mut vm, "/health", &http).await;
    (prom, vm)
}

/// The three source modes over the same pods: Direct with the URLs the controller builds,
/// Prometheus and VictoriaMetrics.
pub fn sources(pods: Vec<PodEndpoint>, prom: &Server, vm: &Server) -> Vec<Box<dyn MetricsSource>> {
    let t = Duration::from_secs(5);
    let none = BTreeMap::new();
    let creds = Credentials::default();
    vec![
        Box::new(DirectSource::new(pods, None, t, &creds).expect("Direct source")),
        Box::new(
            PrometheusSource::new(Flavor::Prometheus, &prom.url, t, &none, &creds)
                .expect("Prometheus source"),
        ),
        Box::new(
            PrometheusSource::new(Flavor::VictoriaMetrics, &vm.url, t, &none, &creds)
                .expect("VictoriaMetrics source"),
        ),
    ]
}

/// Heap in use as the JVM itself reports it (`jstat -gc`: survivors + eden + old), bytes.
pub fn jstat_heap_used(pid: u32) -> u64 {
    let out = Command::new("jstat")
        .args(["-gc", &pid.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("jstat (from the JDK) could not run: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let head: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let vals: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let kb: f64 = ["S0U", "S1U", "EU", "OU"]
        .iter()
        .map(|col| {
            let i = head
                .iter()
                .position(|h| h == col)
                .unwrap_or_else(|| panic!("jstat -gc has no {col}: {text}"));
            vals[i]
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("jstat {col}: {e}"))
        })
        .sum();
    (kb * 1024.0) as u64
}

/// The broker's own JVM figures from its admin API (`/admin/v2/broker-stats/metrics`).
pub async fn broker_jvm_metrics(web: &str) -> BTreeMap<String, f64> {
    let body: serde_json::Value = monitoring::client()
        .get(format!("{web}/admin/v2/broker-stats/metrics"))
        .send()
        .await
        .expect("broker-stats/metrics")
        .json()
        .await
        .expect("broker-stats/metrics JSON");
    body.as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["dimensions"]["metric"] == "jvm_metrics")
        .flat_map(|m| m["metrics"].as_object().cloned().unwrap_or_default())
        .filter_map(|(k, v)| v.as_f64().map(|v| (k, v)))
        .collect()
}

/// Waits (up to `secs`) until the controller has scaled the brokers 2 → 3, showing the tail of
/// its log while it has not.
pub async fn scaled_up_to_three(
    k: &crate::support::real_kube::RealPulsarOnKube,
    controller: &crate::support::pulsar::Controller,
    secs: u32,
) {
    monitoring::eventually(
        "the controller scales 2 → 3 under load",
        4 * secs,
        || async {
            match k.replicas().await {
                3 => Ok(()),
                n => Err(format!(
                    "{n} replicas; controller log tail: {}",
                    controller
                        .log_text()
                        .lines()
                        .rev()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" | ")
                )),
            }
        },
    )
    .await;
}
