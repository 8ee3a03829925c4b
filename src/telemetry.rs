//! The controller's own observability: Prometheus metrics, `/metrics`, `/healthz`, `/readyz`,
//! and tracing setup.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A label value of a per-policy series. The series of a policy (and the policies of a
/// namespace) share one copy of each value through [`Metrics`]' interner: at 10,000 policies
/// with ~20 series each, a string per label per series was a large part of the process's memory.
pub type Label = Arc<str>;

/// Labels of per-policy series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Policy namespace.
    pub namespace: Label,
    /// Policy name.
    pub policy: Label,
}

/// Labels of per-metric series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    /// Policy namespace.
    pub namespace: Label,
    /// Policy name.
    pub policy: Label,
    /// Metric name from the spec.
    pub metric: Label,
}

/// Labels of per-claim series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    /// Policy namespace.
    pub namespace: Label,
    /// Policy name.
    pub policy: Label,
    /// PersistentVolumeClaim name.
    pub claim: Label,
}

/// Labels of decision counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Policy namespace.
    pub namespace: Label,
    /// Policy name.
    pub policy: Label,
    /// ScaleUp, ScaleDown, Expand.
    pub action: Label,
    /// applied, dry_run, rate_limited, unsafe, failed.
    pub result: Label,
}

/// Labels of error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Policy namespace.
    pub namespace: Label,
    /// Policy name.
    pub policy: Label,
    /// Stable error kind.
    pub kind: Label,
}

/// Labels of drain outcome series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DrainLabels {
    /// Policy namespace.
    pub namespace: Label,
    /// Policy name.
    pub policy: Label,
    /// One of [`DRAIN_OUTCOMES`].
    pub outcome: Label,
}

/// Every `outcome` a drain ends with.
pub const DRAIN_OUTCOMES: [&str; 5] =
    ["drained", "timed_out", "unreachable", "cancelled", "failed"];

/// Labels of the reconcile histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok or error.
    pub result: String,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// Every series the controller exports.
pub struct Metrics {
    /// Latest value of each policy metric.
    pub metric_value: Family<MetricLabels, GaugeF>,
    /// Target of each policy metric.
    pub metric_target: Family<MetricLabels, GaugeF>,
    /// Replicas each metric proposes.
    pub metric_proposed_replicas: Family<MetricLabels, Gauge>,
    /// Each metric's load relative to its target (1 is on target).
    pub metric_ratio: Family<MetricLabels, GaugeF>,
    /// Broker replicas now.
    pub current_replicas: Family<PolicyLabels, Gauge>,
    /// Broker replicas wanted.
    pub desired_replicas: Family<PolicyLabels, Gauge>,
    /// Configured bounds.
    pub min_replicas: Family<PolicyLabels, Gauge>,
    /// Configured bounds.
    pub max_replicas: Family<PolicyLabels, Gauge>,
    /// 1 when every metric of the policy had usable data.
    pub metrics_available: Family<PolicyLabels, Gauge>,
    /// 1 when scaling is limited (bounds, steps, cooldowns).
    pub scaling_limited: Family<PolicyLabels, Gauge>,
    /// 1 when the policy can do its job (its `Ready` condition is True).
    pub policy_ready: Family<PolicyLabels, Gauge>,
    /// Used percent of each claim.
    pub claim_used_percent: Family<ClaimLabels, GaugeF>,
    /// Capacity of each claim in bytes.
    pub claim_capacity_bytes: Family<ClaimLabels, GaugeF>,
    /// maxSize of the claim's policy in bytes.
    pub claim_max_size_bytes: Family<ClaimLabels, GaugeF>,
    /// expandAtUsedPercent of the claim's policy.
    pub claim_expand_threshold_percent: Family<ClaimLabels, GaugeF>,
    /// 1 when the claim cannot be expanded although it should (Blocked or AtMaxSize).
    pub claim_blocked: Family<ClaimLabels, Gauge>,
    /// Decisions by action and result.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Metric source errors by kind.
    pub source_errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration.
    pub reconcile_duration: Family<ResultLabels, Histogram>,
    /// 1 while this process holds the leader lease.
    pub leader: Gauge,
    /// Rebalance after scale-up.
    pub rebalance: RebalanceMetrics,
    /// Bundles the leaving brokers still own while a drain runs (absent otherwise).
    pub drain_bundles_left: Family<PolicyLabels, Gauge>,
    /// Time from a drain's start to its end, by outcome.
    pub drain_duration: Family<DrainLabels, Histogram>,
    /// Drains ended, by outcome.
    pub drain_outcomes: Family<DrainLabels, Counter>,
    /// Label values each policy's series were created with, so a deleted policy's go too.
    owned: Mutex<HashMap<(String, String), Owned>>,
    /// One shared copy of each label value in use.
    interned: Mutex<HashSet<Label>>,
}

/// The per-policy label values a policy has series for: a handful each, so small vectors (a
/// one-element `BTreeSet` allocates a node for eleven).
#[derive(Default)]
struct Owned {
    metrics: Vec<String>,
    claims: Vec<String>,
    actions: Vec<String>,
    errors: Vec<String>,
}

/// Which per-policy family a label value belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Series {
    /// A broker metric name (`metric` label).
    Metric,
    /// A claim name (`claim` label).
    Claim,
    /// A decision action (`action` label).
    Action,
    /// A source error kind (`kind` label).
    Error,
}

impl Metrics {
    /// Creates the series and registers them under the `pulsar_autoscaler` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Metrics {
            metric_value: Family::default(),
            metric_target: Family::default(),
            metric_proposed_replicas: Family::default(),
            metric_ratio: Family::default(),
            current_replicas: Family::default(),
            desired_replicas: Family::default(),
            min_replicas: Family::default(),
            max_replicas: Family::default(),
            metrics_available: Family::default(),
            scaling_limited: Family::default(),
            policy_ready: Family::default(),
            claim_used_percent: Family::default(),
            claim_capacity_bytes: Family::default(),
            claim_max_size_bytes: Family::default(),
            claim_expand_threshold_percent: Family::default(),
            claim_blocked: Family::default(),
            decisions: Family::default(),
            source_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            leader: Gauge::default(),
            rebalance: RebalanceMetrics::default(),
            drain_bundles_left: Family::default(),
            drain_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.25, 2.0, 12))
            }),
            drain_outcomes: Family::default(),
            owned: Mutex::new(HashMap::new()),
            interned: Mutex::new(HashSet::new()),
        };
        let r = registry.sub_registry_with_prefix("pulsar_autoscaler");
        r.register(
            "metric_value",
            "Latest value of a policy metric (cluster total or utilization percent)",
            m.metric_value.clone(),
        );
        r.register(
            "metric_target",
            "Target of a policy metric (per broker or utilization percent)",
            m.metric_target.clone(),
        );
        r.register(
            "metric_proposed_replicas",
            "Broker replicas a metric proposes",
            m.metric_proposed_replicas.clone(),
        );
        r.register(
            "metric_ratio",
            "Load of a policy metric relative to its target, per broker or utilization (1 is on target)",
            m.metric_ratio.clone(),
        );
        r.register(
            "current_replicas",
            "Broker replicas at the last evaluation",
            m.current_replicas.clone(),
        );
        r.register(
            "desired_replicas",
            "Broker replicas the policy wants",
            m.desired_replicas.clone(),
        );
        r.register(
            "min_replicas",
            "minReplicas of the policy",
            m.min_replicas.clone(),
        );
        r.register(
            "max_replicas",
            "maxReplicas of the policy",
            m.max_replicas.clone(),
        );
        r.register(
            "metrics_available",
            "1 when every metric of the policy had usable data",
            m.metrics_available.clone(),
        );
        r.register(
            "policy_ready",
            "1 when the policy can do its job (Ready condition True); 0 names no reason, the condition does",
            m.policy_ready.clone(),
        );
        r.register(
            "scaling_limited",
            "1 when bounds, steps or cooldowns keep the policy from its wish",
            m.scaling_limited.clone(),
        );
        r.register(
            "claim_used_percent",
            "Used space of a bookie claim in percent",
            m.claim_used_percent.clone(),
        );
        r.register(
            "claim_capacity_bytes",
            "Capacity of a bookie claim",
            m.claim_capacity_bytes.clone(),
        );
        r.register(
            "claim_max_size_bytes",
            "maxSize a bookie claim may grow to",
            m.claim_max_size_bytes.clone(),
        );
        r.register(
            "claim_expand_threshold_percent",
            "expandAtUsedPercent of the claim's policy",
            m.claim_expand_threshold_percent.clone(),
        );
        r.register(
            "claim_blocked",
            "1 when a claim should grow but cannot",
            m.claim_blocked.clone(),
        );
        r.register(
            "decisions",
            "Decisions by action and result",
            m.decisions.clone(),
        );
        r.register(
            "source_errors",
            "Metric source errors by kind",
            m.source_errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time of one policy evaluation",
            m.reconcile_duration.clone(),
        );
        r.register(
            "leader",
            "1 while this process holds the leader lease",
            m.leader.clone(),
        );
        m.rebalance.register(r);
        r.register(
            "drain_bundles_left",
            "Bundles the brokers being drained before a scale-down still own",
            m.drain_bundles_left.clone(),
        );
        r.register(
            "drain_duration_seconds",
            "Time from the start of a drain to its end, by outcome",
            m.drain_duration.clone(),
        );
        r.register(
            "drain_outcomes",
            "Drains ended, by outcome",
            m.drain_outcomes.clone(),
        );
        Arc::new(m)
    }
}

/// Series of the rebalance after scale-up, per policy.
#[derive(Default)]
pub struct RebalanceMetrics {
    /// Bundles moved onto added brokers.
    pub bundles_moved: Family<PolicyLabels, Counter>,
    /// Admin calls of a rebalance that failed (unloads, unreachable brokers).
    pub failures: Family<PolicyLabels, Counter>,
    /// 1 while a rebalance waits for its brokers or moves bundles.
    pub in_progress: Family<PolicyLabels, Gauge>,
    /// Seconds from the scale-up to the end of the last rebalance.
    pub duration: Family<PolicyLabels, GaugeF>,
}

impl RebalanceMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "rebalance_bundles_moved",
            "Bundles moved onto brokers a scale-up added",
            self.bundles_moved.clone(),
        );
        r.register(
            "rebalance_failures",
            "Failed admin calls of rebalances (unloads, unreachable brokers)",
            self.failures.clone(),
        );
        r.register(
            "rebalance_in_progress",
            "1 while a rebalance waits for its brokers or moves bundles",
            self.in_progress.clone(),
        );
        r.register(
            "rebalance_duration_seconds",
            "Seconds from the scale-up to the end of the last rebalance",
            self.duration.clone(),
        );
    }

    fn forget(&self, l: &PolicyLabels) {
        self.bundles_moved.remove(l);
        self.failures.remove(l);
        self.in_progress.remove(l);
        self.duration.remove(l);
    }
}

/// Every `result` a decision counter carries.
pub const DECISION_RESULTS: [&str; 5] = ["applied", "dry_run", "rate_limited", "unsafe", "failed"];

impl Metrics {
    /// Notes that a policy has series with this label value.
    pub fn track(&self, namespace: &str, policy: &str, series: Series, value: &str) {
        let Ok(mut owned) = self.owned.lock() else {
            return;
        };
        let o = owned
            .entry((namespace.to_string(), policy.to_string()))
            .or_default();
        let set = match series {
            Series::Metric => &mut o.metrics,
            Series::Claim => &mut o.claims,
            Series::Action => &mut o.actions,
            Series::Error => &mut o.errors,
        };
        if !set.iter().any(|v| v == value) {
            set.push(value.to_string());
        }
    }

    /// Counts a metrics source error of a policy.
    pub fn count_source_error(&self, namespace: &str, policy: &str, kind: &str) {
        self.track(namespace, policy, Series::Error, kind);
        let labels = ErrorLabels {
            namespace: self.label(namespace),
            policy: self.label(policy),
            kind: self.label(kind),
        };
        self.source_errors.get_or_create(&labels).inc();
    }

    /// Removes every series of a deleted policy.
    pub fn forget_policy(&self, namespace: &str, policy: &str) {
        let owned = self
            .owned
            .lock()
            .ok()
            .and_then(|mut o| o.remove(&(namespace.to_string(), policy.to_string())))
            .unwrap_or_default();
        let (ns, name): (Label, Label) = (namespace.into(), policy.into());
        for metric in &owned.metrics {
            let l = MetricLabels {
                namespace: ns.clone(),
                policy: name.clone(),
                metric: metric.as_str().into(),
            };
            self.metric_value.remove(&l);
            self.metric_target.remove(&l);
            self.metric_proposed_replicas.remove(&l);
            self.metric_ratio.remove(&l);
        }
        let l = PolicyLabels {
            namespace: ns.clone(),
            policy: name.clone(),
        };
        self.rebalance.forget(&l);
        for family in [
            &self.current_replicas,
            &self.desired_replicas,
            &self.min_replicas,
            &self.max_replicas,
            &self.metrics_available,
            &self.scaling_limited,
            &self.drain_bundles_left,
            &self.policy_ready,
        ] {
            family.remove(&l);
        }
        for outcome in DRAIN_OUTCOMES {
            let l = DrainLabels {
                namespace: ns.clone(),
                policy: name.clone(),
                outcome: outcome.into(),
            };
            self.drain_outcomes.remove(&l);
            self.drain_duration.remove(&l);
        }
        for claim in &owned.claims {
            let l = ClaimLabels {
                namespace: ns.clone(),
                policy: name.clone(),
                claim: claim.as_str().into(),
            };
            self.claim_used_percent.remove(&l);
            self.claim_capacity_bytes.remove(&l);
            self.claim_max_size_bytes.remove(&l);
            self.claim_expand_threshold_percent.remove(&l);
            self.claim_blocked.remove(&l);
        }
        for action in &owned.actions {
            for result in DECISION_RESULTS {
                self.decisions.remove(&DecisionLabels {
                    namespace: ns.clone(),
                    policy: name.clone(),
                    action: action.as_str().into(),
                    result: result.into(),
                });
            }
        }
        for kind in &owned.errors {
            self.source_errors.remove(&ErrorLabels {
                namespace: ns.clone(),
                policy: name.clone(),
                kind: kind.as_str().into(),
            });
        }
        let values = [namespace, policy].into_iter().chain(
            [&owned.metrics, &owned.claims, &owned.actions, &owned.errors]
                .into_iter()
                .flatten()
                .map(String::as_str),
        );
        self.release(values);
    }

    /// The shared copy of a label value.
    pub fn label(&self, value: &str) -> Label {
        let Ok(mut interned) = self.interned.lock() else {
            return value.into();
        };
        if let Some(v) = interned.get(value) {
            return v.clone();
        }
        let v: Label = value.into();
        interned.insert(v.clone());
        v
    }

    /// Drops the shared copies no series uses any more.
    fn release<'a>(&self, values: impl IntoIterator<Item = &'a str>) {
        let Ok(mut interned) = self.interned.lock() else {
            return;
        };
        for value in values {
            if interned
                .get(value)
                .is_some_and(|v| Arc::strong_count(v) == 1)
            {
                interned.remove(value);
            }
        }
    }

    /// Label values in the interner (for tests of their release).
    pub fn labels_held(&self) -> usize {
        self.interned.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Labels of a policy's series.
    pub fn policy_labels(&self, namespace: &str, policy: &str) -> PolicyLabels {
        PolicyLabels {
            namespace: self.label(namespace),
            policy: self.label(policy),
        }
    }

    /// Labels of a policy metric's series.
    pub fn metric_labels(&self, namespace: &str, policy: &str, metric: &str) -> MetricLabels {
        MetricLabels {
            namespace: self.label(namespace),
            policy: self.label(policy),
            metric: self.label(metric),
        }
    }

    /// Labels of a claim's series.
    pub fn claim_labels(&self, namespace: &str, policy: &str, claim: &str) -> ClaimLabels {
        ClaimLabels {
            namespace: self.label(namespace),
            policy: self.label(policy),
            claim: self.label(claim),
        }
    }

    /// Labels of a decision counter.
    pub fn decision_labels(
        &self,
        namespace: &str,
        policy: &str,
        action: &str,
        result: &str,
    ) -> DecisionLabels {
        DecisionLabels {
            namespace: self.label(namespace),
            policy: self.label(policy),
            action: self.label(action),
            result: self.label(result),
        }
    }

    /// Labels of a drain outcome's series.
    pub fn drain_labels(&self, namespace: &str, policy: &str, outcome: &str) -> DrainLabels {
        DrainLabels {
            namespace: self.label(namespace),
            policy: self.label(policy),
            outcome: self.label(outcome),
        }
    }

    /// Creates a policy's decision counters at zero. A counter born at 1 shows no `increase()`,
    /// so without this the first decision of each kind would be missing from the dashboards'
    /// annotations and from the alerts.
    pub fn declare_decisions(&self, namespace: &str, policy: &str, actions: &[&str]) {
        for action in actions {
            self.track(namespace, policy, Series::Action, action);
            for result in DECISION_RESULTS {
                let _ = self
                    .decisions
                    .get_or_create(&self.decision_labels(namespace, policy, action, result));
            }
        }
    }
}

/// Shared state of the HTTP endpoints.
#[derive(Clone)]
pub struct Endpoints {
    /// The registry `/metrics` encodes.
    pub registry: Arc<Registry>,
    /// Set once the controller's watches are running.
    pub ready: Arc<AtomicBool>,
}

async fn metrics(State(e): State<Endpoints>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &e.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            err.to_string(),
        ),
    }
}

async fn ready(State(e): State<Endpoints>) -> impl IntoResponse {
    if e.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, endpoints: Endpoints) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(endpoints);
    axum::serve(listener, app).await
}

/// Binds the endpoints' address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event; coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Sets up tracing from `RUST_LOG` (default `info`), writing to stderr. Colour codes only when
/// stderr is a terminal and `NO_COLOR` is unset: a file or `kubectl logs` gets plain text.
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init(),
    };
}

/// An error and its causes on one line, each cause once: a cause whose text the message
/// already carries (many errors print their source) is not repeated.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    // Multi-line causes (some servers answer with several lines) stay on one log line.
    line.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Hides(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner\nsecond line")]
    struct Inner;

    #[test]
    fn a_cause_chain_is_one_line_with_each_cause_once() {
        assert_eq!(chain(&Repeats(Inner)), "outer: inner second line");
        assert_eq!(chain(&Hides(Inner)), "outer: inner second line");
    }

    #[test]
    fn declared_decision_counters_are_exported_at_zero() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.declare_decisions("pulsar", "brokers", &["ScaleUp", "ScaleDown"]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let zeros: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("pulsar_autoscaler_decisions_total{") && l.ends_with(" 0"))
            .collect();
        assert_eq!(zeros.len(), 2 * DECISION_RESULTS.len(), "{text}");
        assert!(zeros.iter().any(|l| l.contains("action=\"ScaleUp\"")
            && l.contains("result=\"rate_limited\"")
            && l.contains("policy=\"brokers\"")));

        // Declaring again keeps counted values.
        m.decisions
            .get_or_create(&DecisionLabels {
                namespace: "pulsar".into(),
                policy: "brokers".into(),
                action: "ScaleUp".into(),
                result: "applied".into(),
            })
            .inc();
        m.declare_decisions("pulsar", "brokers", &["ScaleUp"]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.lines().any(|l| l.contains("action=\"ScaleUp\"")
            && l.contains("result=\"applied\"")
            && l.ends_with(" 1")));
    }

    #[test]
    fn a_forgotten_policy_leaves_no_series() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        for policy in ["gone", "kept"] {
            m.declare_decisions("pulsar", policy, &["ScaleUp", "Expand"]);
            m.track("pulsar", policy, Series::Metric, "throughput");
            let l = m.metric_labels("pulsar", policy, "throughput");
            m.metric_value.get_or_create(&l).set(1.0);
            m.metric_ratio.get_or_create(&l).set(1.0);
            let p = m.policy_labels("pulsar", policy);
            m.current_replicas.get_or_create(&p).set(3);
            m.track("pulsar", policy, Series::Claim, "ledgers-b-0");
            m.claim_blocked
                .get_or_create(&m.claim_labels("pulsar", policy, "ledgers-b-0"))
                .set(0);
            m.count_source_error("pulsar", policy, "connect");
        }
        // Label values are shared: each held once, whatever the number of series (namespace,
        // two policies, two actions, metric, claim, error kind, the results).
        let held = m.labels_held();
        assert_eq!(held, 1 + 2 + 2 + 1 + 1 + 1 + DECISION_RESULTS.len());
        m.forget_policy("pulsar", "gone");
        assert_eq!(m.labels_held(), held - 1, "only the policy's own name goes");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("policy=\"gone\""), "{text}");
        for family in [
            "metric_value",
            "metric_ratio",
            "current_replicas",
            "claim_blocked",
            "source_errors_total",
            "decisions_total",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("pulsar_autoscaler_{family}{{"))
                        && l.contains("policy=\"kept\"")),
                "{family} of the kept policy is missing:\n{text}"
            );
        }
        m.forget_policy("pulsar", "kept");
        assert_eq!(
            m.labels_held(),
            DECISION_RESULTS.len(),
            "only the fixed results stay"
        );
    }
}
