//! Reaction latency of the controller: from the moment a threshold crossing is visible in
//! Prometheus to the moment the StatefulSet's new replica count is accepted by the API server.
//! Real kube-apiserver, real Prometheus scraping the emulator every second, the controller as a
//! separate process evaluating every 2 s. `cargo bench --bench reaction` measures 20 crossings;
//! under `cargo test` it makes two, to prove it runs.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::pulsar::{Pulsar, Shape};

const MI: f64 = 1024.0 * 1024.0;
const TARGET: f64 = 60.0 * MI;

const POLICY: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 2
  maxReplicas: 8
  metrics: [{type: Throughput, targetPerBroker: 60Mi}]
  scaleUp: {stabilizationWindow: 0s, cooldown: 0s}
  scaleDown: {stabilizationWindow: 0s, cooldown: 0s}
rateLimit: {actionsPerHour: 100000, burst: 1000}
"#;

async fn measure(crossings: usize) -> Vec<Duration> {
    let p = Pulsar::start(Shape::default()).await;
    let _controller = p.controller("bench");
    p.create_policy("reaction", POLICY).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut latencies = Vec::new();
    for i in 0..crossings {
        let up = i % 2 == 0;
        let before = p.replicas().await;
        p.set_load(if up { 2.0 } else { 1.0 }).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let visible = loop {
            let crossed = p.throughput().await.is_some_and(|v| {
                let per_broker = v / f64::from(before);
                if up {
                    per_broker > TARGET * 1.1
                } else {
                    per_broker < TARGET * 0.9
                }
            });
            if crossed {
                break Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never showed crossing {i}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let changed = loop {
            if p.replicas().await != before {
                break Instant::now();
            }
            assert!(Instant::now() < deadline, "no scale after crossing {i}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        latencies.push(changed - visible);
        // Let the emulator and Prometheus settle on the new broker count.
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let crossings = if bench { 20 } else { 2 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut latencies = runtime.block_on(measure(crossings));
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "reaction latency over {crossings} crossings (evaluation interval 2s, scrape interval 1s): p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies[0]),
        ms(latencies[latencies.len() - 1]),
    );
}
