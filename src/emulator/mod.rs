//! A Pulsar cluster emulator for tests and demos: real-shaped `/metrics` pages for N brokers
//! and M bookies (one loopback port per pod), kubelet volume statistics for the bookie claims,
//! load from a profile or trace, and its own ground truth.
//!
//! The broker count, claim sizes and load factor come from flags and the control endpoint
//! (`GET`/`POST /state`); [`server::apply`] is the single place a change lands, so another
//! driver (e.g. watching a StatefulSet) can feed it later.

pub mod model;
pub mod page;
pub mod profile;
pub mod server;
pub mod topic_detail;

pub use model::{Cluster, Config, Truth};
pub use profile::{Load, Profile};
pub use server::{Running, StateChange, StateView, start};

use std::fmt::Write;

/// A Prometheus/VictoriaMetrics scrape configuration for every pod and the kubelet of a
/// running emulator, with the `namespace`/`pod` target labels Kubernetes discovery would add.
pub fn scrape_config(state: &StateView, interval: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\nscrape_configs:"
    );
    for p in &state.pods {
        let rest = p.url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, "metrics"));
        let _ = writeln!(
            out,
            "  - job_name: {pod}\n    metrics_path: '/{path}'\n    static_configs:\n      - targets: ['{host}']\n        labels: {{namespace: '{ns}', pod: '{pod}', role: '{role}'}}",
            pod = p.pod,
            ns = p.namespace,
            role = p.role,
        );
    }
    let host = state
        .kubelet_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    // The kubelet's own namespace/persistentvolumeclaim labels are kept: no target label clashes.
    let _ = writeln!(
        out,
        "  - job_name: kubelet\n    static_configs:\n      - targets: ['{host}']\n        labels: {{node: '{}'}}",
        state.node
    );
    out
}
