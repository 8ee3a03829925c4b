//! Real-shaped `/metrics` pages (broker, bookie, kubelet) and the kubelet summary JSON.
//!
//! The broker and bookie pages use the names, `# TYPE` lines, label names and units of a real
//! Apache Pulsar 4.0.7 broker and BookKeeper 4.17 bookie; `tests/page_shape/` compares them with
//! pages captured from those (`tests/fixtures/real/`).

use std::fmt::Write;

use jiff::Timestamp;
use serde_json::json;

use super::model::{BrokerValues, Claim, Cluster, DIRECT_MAX, HEAP_MAX};
use super::topic_detail::FAMILIES;

/// Pulsar namespaces the topic-level series are spread over.
const PULSAR_NAMESPACES: [&str; 2] = ["public/default", "tenant-a/orders"];

/// A broker's page, as Pulsar serves it on `:8080/metrics/`, with five topic-level series per
/// topic. Every series carries the `cluster` label; topic-level series add the Pulsar
/// `namespace` and `topic`.
pub fn broker(v: &BrokerValues, topics: u32, cpu_seconds: f64) -> String {
    broker_page(v, topics, cpu_seconds, false)
}

/// A broker's page; with `detail`, each topic also carries every other topic-level series a
/// real broker publishes for a topic with one producer and one subscription.
pub fn broker_page(v: &BrokerValues, topics: u32, cpu_seconds: f64, detail: bool) -> String {
    let per_topic_bytes = if detail { 12_000 } else { 600 };
    let mut out = String::with_capacity(2048 + topics as usize * per_topic_bytes);
    let gauge = |out: &mut String, name: &str, labels: &str, value: f64| {
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name}{{cluster=\"pulsar\"{labels}}} {value}");
    };
    let _ = writeln!(out, "# TYPE jvm_memory_bytes_used gauge");
    let _ = writeln!(
        out,
        "jvm_memory_bytes_used{{cluster=\"pulsar\",area=\"heap\"}} {}",
        v.heap_used
    );
    let _ = writeln!(
        out,
        "jvm_memory_bytes_used{{cluster=\"pulsar\",area=\"nonheap\"}} 98765432.0"
    );
    let _ = writeln!(out, "# TYPE jvm_memory_bytes_max gauge");
    let _ = writeln!(
        out,
        "jvm_memory_bytes_max{{cluster=\"pulsar\",area=\"heap\"}} {HEAP_MAX}"
    );
    let _ = writeln!(
        out,
        "jvm_memory_bytes_max{{cluster=\"pulsar\",area=\"nonheap\"}} -1.0"
    );
    gauge(&mut out, "jvm_memory_direct_bytes_used", "", v.direct_used);
    gauge(&mut out, "jvm_memory_direct_bytes_max", "", DIRECT_MAX);
    gauge(&mut out, "pulsar_broker_rate_in", "", v.rate_in);
    gauge(&mut out, "pulsar_broker_rate_out", "", v.rate_out);
    gauge(&mut out, "pulsar_broker_throughput_in", "", v.throughput_in);
    gauge(
        &mut out,
        "pulsar_broker_throughput_out",
        "",
        v.throughput_out,
    );
    gauge(
        &mut out,
        "pulsar_broker_topics_count",
        "",
        f64::from(topics),
    );
    gauge(&mut out, "pulsar_broker_msg_backlog", "", 0.0);
    let per_topic = f64::from(topics.max(1));
    for name in [
        "pulsar_rate_in",
        "pulsar_rate_out",
        "pulsar_throughput_in",
        "pulsar_throughput_out",
        "pulsar_storage_backlog_size",
    ] {
        let _ = writeln!(out, "# TYPE {name} gauge");
        let value = match name {
            "pulsar_rate_in" => v.rate_in / per_topic,
            "pulsar_rate_out" => v.rate_out / per_topic,
            "pulsar_throughput_in" => v.throughput_in / per_topic,
            "pulsar_throughput_out" => v.throughput_out / per_topic,
            _ => 0.0,
        };
        for t in 0..topics {
            let ns = PULSAR_NAMESPACES[t as usize % PULSAR_NAMESPACES.len()];
            let _ = writeln!(
                out,
                "{name}{{cluster=\"pulsar\",namespace=\"{ns}\",topic=\"persistent://{ns}/topic-{t}\"}} {value}"
            );
        }
    }
    if detail {
        topic_detail(&mut out, v, topics);
    }
    // The JVM client declares the counter without its `_total` sample suffix.
    let _ = writeln!(out, "# TYPE process_cpu_seconds counter");
    let _ = writeln!(
        out,
        "process_cpu_seconds_total{{cluster=\"pulsar\"}} {cpu_seconds}"
    );
    out
}

/// The topic-level series of [`FAMILIES`] for `topics` topics: one producer, one consumer and
/// one subscription each, the average message size from the broker's rates, the rest zero.
fn topic_detail(out: &mut String, v: &BrokerValues, topics: u32) {
    let msg_size = if v.rate_in > 0.0 {
        v.throughput_in / v.rate_in
    } else {
        0.0
    };
    for (name, series) in FAMILIES {
        let value = match *name {
            "pulsar_producers_count"
            | "pulsar_consumers_count"
            | "pulsar_subscriptions_count"
            | "pulsar_subscription_consumers_count" => 1.0,
            "pulsar_average_msg_size" => msg_size,
            _ => 0.0,
        };
        let _ = writeln!(out, "# TYPE {name} gauge");
        for t in 0..topics {
            let ns = PULSAR_NAMESPACES[t as usize % PULSAR_NAMESPACES.len()];
            for extra in *series {
                let mut labels = format!(
                    "cluster=\"pulsar\",namespace=\"{ns}\",topic=\"persistent://{ns}/topic-{t}\""
                );
                for (k, val) in *extra {
                    let _ = write!(labels, ",{k}=\"{val}\"");
                }
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    }
}

/// A bookie's page, as BookKeeper serves it on `:8000/metrics`: no `cluster` label, the
/// ledger directory's path mangled into the usage gauge's name, usage in percent of the disk.
/// BookKeeper publishes no journal-directory usage.
pub fn bookie(ledgers: Option<&Claim>) -> String {
    let mut out = String::with_capacity(1024);
    let ledger_pct = ledgers.map_or(0.0, Claim::used_percent);
    // BookKeeper turns a bookie read-only at 95 % disk usage.
    let writable = if ledger_pct < 95.0 { 1 } else { 0 };
    // The path of the Helm chart's ledger volume, `/pulsar/data/bookkeeper/ledgers`.
    let usage = "bookie_ledger_dir__pulsar_data_bookkeeper_ledgers_usage";
    let _ = writeln!(out, "# TYPE {usage} gauge");
    let _ = writeln!(out, "{usage} {ledger_pct}");
    let _ = writeln!(out, "# TYPE bookie_ledger_writable_dirs gauge");
    let _ = writeln!(out, "bookie_ledger_writable_dirs {writable}");
    let _ = writeln!(out, "# TYPE bookie_SERVER_STATUS gauge");
    let _ = writeln!(out, "bookie_SERVER_STATUS {writable}");
    let _ = writeln!(out, "# TYPE jvm_memory_bytes_used gauge");
    let _ = writeln!(out, "jvm_memory_bytes_used{{area=\"heap\"}} 123456789.0");
    let _ = writeln!(out, "jvm_memory_bytes_used{{area=\"nonheap\"}} 45678901.0");
    out
}

/// The kubelet's volume statistics for every claim, as on the kubelet's `/metrics`.
pub fn kubelet(cluster: &Cluster) -> String {
    let ns = &cluster.config.namespace;
    let mut out = String::with_capacity(256 * cluster.claims.len() + 256);
    for (name, pick) in [
        ("kubelet_volume_stats_capacity_bytes", 0),
        ("kubelet_volume_stats_used_bytes", 1),
        ("kubelet_volume_stats_available_bytes", 2),
    ] {
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (claim, c) in &cluster.claims {
            let value = match pick {
                0 => c.capacity_bytes,
                1 => c.used_bytes,
                _ => c.capacity_bytes - c.used_bytes,
            };
            let _ = writeln!(
                out,
                "{name}{{namespace=\"{ns}\",persistentvolumeclaim=\"{claim}\"}} {value}"
            );
        }
    }
    out
}

/// The kubelet summary API answer for the bookie pods.
pub fn summary(cluster: &Cluster, now: Timestamp) -> serde_json::Value {
    let ns = &cluster.config.namespace;
    let pods: Vec<serde_json::Value> = (0..cluster.config.bookies)
        .map(|i| {
            let pod = cluster.bookie_pod(i);
            let (ledgers, journal) = cluster.bookie_claims(i);
            let volumes: Vec<serde_json::Value> = [("ledgers", ledgers), ("journal", journal)]
                .into_iter()
                .filter_map(|(template, c)| {
                    let c = c?;
                    Some(json!({
                        "name": template,
                        "pvcRef": {"name": format!("{template}-{pod}"), "namespace": ns},
                        "time": now.to_string(),
                        "availableBytes": (c.capacity_bytes - c.used_bytes).round() as u64,
                        "capacityBytes": c.capacity_bytes.round() as u64,
                        "usedBytes": c.used_bytes.round() as u64,
                    }))
                })
                .collect();
            json!({
                "podRef": {"name": pod, "namespace": ns, "uid": format!("uid-{pod}")},
                "volume": volumes,
            })
        })
        .collect();
    json!({"node": {"nodeName": cluster.config.node}, "pods": pods})
}
