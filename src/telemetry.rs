//! The controller's own observability: Prometheus metrics, `/metrics`, `/healthz`, `/readyz`,
//! and tracing setup.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
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
    /// The per-policy gauges and counters, one record per policy (see [`PolicyTable`]).
    series: Arc<PolicyTable>,
    /// Reconcile duration.
    pub reconcile_duration: Family<ResultLabels, Histogram>,
    /// 1 while this process holds the leader lease.
    pub leader: Gauge,
    /// Rebalance after scale-up.
    pub rebalance: RebalanceMetrics,
    /// Time from a drain's start to its end, by outcome.
    pub drain_duration: Family<DrainLabels, Histogram>,
    /// Drains ended, by outcome.
    pub drain_outcomes: Family<DrainLabels, Counter>,
    /// One shared copy of each label value in use.
    interned: Mutex<HashSet<Label>>,
}

impl Metrics {
    /// Creates the series and registers them under the `pulsar_autoscaler` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Metrics {
            series: Arc::default(),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            leader: Gauge::default(),
            rebalance: RebalanceMetrics::default(),
            drain_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.25, 2.0, 12))
            }),
            drain_outcomes: Family::default(),
            interned: Mutex::new(HashSet::new()),
        };
        let r = registry.sub_registry_with_prefix("pulsar_autoscaler");
        r.register_collector(Box::new(m.series.clone()));
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
    /// Sets a policy's own gauges (`None` withdraws one).
    pub fn set_policy(&self, namespace: &str, policy: &str, set: impl FnOnce(&mut PolicyGauges)) {
        let key = self.policy_key(namespace, policy);
        self.series.with(key, |s| set(&mut s.gauges));
    }

    /// Sets the series of one broker metric of a policy.
    pub fn set_metric(&self, namespace: &str, policy: &str, metric: &str, g: MetricGauges) {
        let (key, metric) = (self.policy_key(namespace, policy), self.label(metric));
        self.series
            .with(key, |s| *entry(&mut s.metrics, metric) = g);
    }

    /// Sets the series of one bookie claim of a policy.
    pub fn set_claim(&self, namespace: &str, policy: &str, claim: &str, g: ClaimGauges) {
        let (key, claim) = (self.policy_key(namespace, policy), self.label(claim));
        self.series.with(key, |s| *entry(&mut s.claims, claim) = g);
    }

    /// Counts a decision of a policy; `result` is one of [`DECISION_RESULTS`].
    pub fn count_decision(&self, namespace: &str, policy: &str, action: &str, result: &str) {
        let Some(at) = DECISION_RESULTS.iter().position(|r| *r == result) else {
            return;
        };
        let (key, action) = (self.policy_key(namespace, policy), self.label(action));
        self.series
            .with(key, |s| entry(&mut s.decisions, action)[at] += 1);
    }

    /// Creates a policy's decision counters at zero. A counter born at 1 shows no `increase()`,
    /// so without this the first decision of each kind would be missing from the dashboards'
    /// annotations and from the alerts.
    pub fn declare_decisions(&self, namespace: &str, policy: &str, actions: &[&str]) {
        let key = self.policy_key(namespace, policy);
        let actions: Vec<Label> = actions.iter().map(|a| self.label(a)).collect();
        self.series.with(key, |s| {
            for action in actions {
                entry(&mut s.decisions, action);
            }
        });
    }

    /// Counts a metrics source error of a policy.
    pub fn count_source_error(&self, namespace: &str, policy: &str, kind: &str) {
        let (key, kind) = (self.policy_key(namespace, policy), self.label(kind));
        self.series
            .with(key, |s| *entry(&mut s.source_errors, kind) += 1);
    }

    /// Removes every series of a deleted policy.
    pub fn forget_policy(&self, namespace: &str, policy: &str) {
        let removed = {
            let mut table = self.series.lock();
            let removed = table.get_mut(namespace).and_then(|p| p.remove(policy));
            if table.get(namespace).is_some_and(BTreeMap::is_empty) {
                table.remove(namespace);
            }
            removed
        };
        let (ns, name): (Label, Label) = (namespace.into(), policy.into());
        let l = PolicyLabels {
            namespace: ns.clone(),
            policy: name.clone(),
        };
        self.rebalance.forget(&l);
        for outcome in DRAIN_OUTCOMES {
            let l = DrainLabels {
                namespace: ns.clone(),
                policy: name.clone(),
                outcome: outcome.into(),
            };
            self.drain_outcomes.remove(&l);
            self.drain_duration.remove(&l);
        }
        // Copies, so that the record's own references are gone when the interner counts them.
        let held: Vec<String> = removed
            .map(PolicySeries::labels)
            .unwrap_or_default()
            .iter()
            .map(|l| l.to_string())
            .collect();
        self.release(
            [namespace, policy]
                .into_iter()
                .chain(held.iter().map(String::as_str)),
        );
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

    /// Labels of a drain outcome's series.
    pub fn drain_labels(&self, namespace: &str, policy: &str, outcome: &str) -> DrainLabels {
        DrainLabels {
            namespace: self.label(namespace),
            policy: self.label(policy),
            outcome: self.label(outcome),
        }
    }

    fn policy_key(&self, namespace: &str, policy: &str) -> (Label, Label) {
        (self.label(namespace), self.label(policy))
    }
}

/// A policy's own gauges; `None` is a series not exported.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PolicyGauges {
    /// Broker replicas at the last evaluation.
    pub current_replicas: Option<i64>,
    /// Broker replicas the policy wants.
    pub desired_replicas: Option<i64>,
    /// `minReplicas`.
    pub min_replicas: Option<i64>,
    /// `maxReplicas`.
    pub max_replicas: Option<i64>,
    /// 1 when every metric had usable data.
    pub metrics_available: Option<i64>,
    /// 1 when bounds, steps or cooldowns keep the policy from its wish.
    pub scaling_limited: Option<i64>,
    /// 1 when the Ready condition is True.
    pub policy_ready: Option<i64>,
    /// Bundles the brokers being drained still own.
    pub drain_bundles_left: Option<i64>,
}

/// The series of one broker metric of a policy.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct MetricGauges {
    /// Latest value (`None`: no usable data, the series is withdrawn).
    pub value: Option<f64>,
    /// Target per broker or utilization percent.
    pub target: f64,
    /// Replicas the metric proposes.
    pub proposed_replicas: Option<i64>,
    /// Load relative to the target.
    pub ratio: Option<f64>,
}

/// The series of one bookie claim of a policy.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ClaimGauges {
    /// Used space in percent (`None`: no usage value this round).
    pub used_percent: Option<f64>,
    /// Capacity in bytes.
    pub capacity_bytes: f64,
    /// `maxSize` in bytes.
    pub max_size_bytes: f64,
    /// `expandAtUsedPercent`.
    pub expand_threshold_percent: f64,
    /// 1 when the claim should grow but cannot.
    pub blocked: i64,
}

/// Every per-policy series of one policy as plain values. A `Family` entry per series (label
/// set, hash slot, shared cell) cost ~150 bytes, ~3 KiB for a policy's ~21 series; here the
/// policy's labels are its key, once, and each series is a number.
#[derive(Debug, Default)]
struct PolicySeries {
    gauges: PolicyGauges,
    metrics: Vec<(Label, MetricGauges)>,
    claims: Vec<(Label, ClaimGauges)>,
    decisions: Vec<(Label, [u64; DECISION_RESULTS.len()])>,
    source_errors: Vec<(Label, u64)>,
}

impl PolicySeries {
    /// The label values the record holds, to release from the interner once it is gone.
    fn labels(self) -> Vec<Label> {
        let mut held: Vec<Label> = self.metrics.into_iter().map(|(l, _)| l).collect();
        held.extend(self.claims.into_iter().map(|(l, _)| l));
        held.extend(self.decisions.into_iter().map(|(l, _)| l));
        held.extend(self.source_errors.into_iter().map(|(l, _)| l));
        held
    }
}

/// The value under `label`, created at its default if missing. The lists hold a few entries
/// that rarely change, so they grow by one: doubling left most of 10,000 policies' lists half
/// empty.
fn entry<V: Default>(list: &mut Vec<(Label, V)>, label: Label) -> &mut V {
    let at = match list.iter().position(|(l, _)| *l == label) {
        Some(at) => at,
        None => {
            list.reserve_exact(1);
            list.push((label, V::default()));
            list.len() - 1
        }
    };
    &mut list[at].1
}

/// The per-policy series of every policy, by namespace and name; encoded on each scrape in that
/// order, under the same names, labels and types a `Family` per series would have.
#[derive(Debug, Default)]
pub struct PolicyTable(Mutex<BTreeMap<Label, BTreeMap<Label, PolicySeries>>>);

type Table = BTreeMap<Label, BTreeMap<Label, PolicySeries>>;

impl PolicyTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<R>(&self, (ns, policy): (Label, Label), f: impl FnOnce(&mut PolicySeries) -> R) -> R {
        f(self
            .lock()
            .entry(ns)
            .or_default()
            .entry(policy)
            .or_default())
    }
}

/// Encodes one family from `(labels, metric)` pairs; nothing for none, like an empty `Family`.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (L, M)>,
) -> std::fmt::Result {
    let mut series = series.peekable();
    let Some((_, first)) = series.peek() else {
        return Ok(());
    };
    let mut e = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, metric) in series {
        metric.encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for PolicyTable {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let table = self.lock();
        let policies = || {
            table.iter().flat_map(|(ns, p)| {
                p.iter()
                    .map(move |(name, s)| ([("namespace", &**ns), ("policy", &**name)], s))
            })
        };
        let gauge = |pick: fn(&PolicyGauges) -> Option<i64>| {
            policies().filter_map(move |(l, s)| pick(&s.gauges).map(|v| (l, ConstGauge::new(v))))
        };
        let metric = |pick: fn(&MetricGauges) -> Option<f64>| {
            policies().flat_map(move |([ns, p], s)| {
                s.metrics.iter().filter_map(move |(m, g)| {
                    pick(g).map(|v| ([ns, p, ("metric", &**m)], ConstGauge::new(v)))
                })
            })
        };
        let claim = |pick: fn(&ClaimGauges) -> Option<f64>| {
            policies().flat_map(move |([ns, p], s)| {
                s.claims.iter().filter_map(move |(c, g)| {
                    pick(g).map(|v| ([ns, p, ("claim", &**c)], ConstGauge::new(v)))
                })
            })
        };
        let e = &mut encoder;
        family(
            e,
            "metric_value",
            "Latest value of a policy metric (cluster total or utilization percent)",
            metric(|g| g.value),
        )?;
        family(
            e,
            "metric_target",
            "Target of a policy metric (per broker or utilization percent)",
            metric(|g| Some(g.target)),
        )?;
        family(
            e,
            "metric_proposed_replicas",
            "Broker replicas a metric proposes",
            policies().flat_map(|([ns, p], s)| {
                s.metrics.iter().filter_map(move |(m, g)| {
                    g.proposed_replicas
                        .map(|v| ([ns, p, ("metric", &**m)], ConstGauge::new(v)))
                })
            }),
        )?;
        family(
            e,
            "metric_ratio",
            "Load of a policy metric relative to its target, per broker or utilization (1 is on target)",
            metric(|g| g.ratio),
        )?;
        family(
            e,
            "current_replicas",
            "Broker replicas at the last evaluation",
            gauge(|g| g.current_replicas),
        )?;
        family(
            e,
            "desired_replicas",
            "Broker replicas the policy wants",
            gauge(|g| g.desired_replicas),
        )?;
        family(
            e,
            "min_replicas",
            "minReplicas of the policy",
            gauge(|g| g.min_replicas),
        )?;
        family(
            e,
            "max_replicas",
            "maxReplicas of the policy",
            gauge(|g| g.max_replicas),
        )?;
        family(
            e,
            "metrics_available",
            "1 when every metric of the policy had usable data",
            gauge(|g| g.metrics_available),
        )?;
        family(
            e,
            "policy_ready",
            "1 when the policy can do its job (Ready condition True); 0 names no reason, the condition does",
            gauge(|g| g.policy_ready),
        )?;
        family(
            e,
            "scaling_limited",
            "1 when bounds, steps or cooldowns keep the policy from its wish",
            gauge(|g| g.scaling_limited),
        )?;
        family(
            e,
            "drain_bundles_left",
            "Bundles the brokers being drained before a scale-down still own",
            gauge(|g| g.drain_bundles_left),
        )?;
        family(
            e,
            "claim_used_percent",
            "Used space of a bookie claim in percent",
            claim(|g| g.used_percent),
        )?;
        family(
            e,
            "claim_capacity_bytes",
            "Capacity of a bookie claim",
            claim(|g| Some(g.capacity_bytes)),
        )?;
        family(
            e,
            "claim_max_size_bytes",
            "maxSize a bookie claim may grow to",
            claim(|g| Some(g.max_size_bytes)),
        )?;
        family(
            e,
            "claim_expand_threshold_percent",
            "expandAtUsedPercent of the claim's policy",
            claim(|g| Some(g.expand_threshold_percent)),
        )?;
        family(
            e,
            "claim_blocked",
            "1 when a claim should grow but cannot",
            policies().flat_map(|([ns, p], s)| {
                s.claims
                    .iter()
                    .map(move |(c, g)| ([ns, p, ("claim", &**c)], ConstGauge::new(g.blocked)))
            }),
        )?;
        family(
            e,
            "decisions",
            "Decisions by action and result",
            policies().flat_map(|([ns, p], s)| {
                s.decisions.iter().flat_map(move |(a, counts)| {
                    DECISION_RESULTS.iter().zip(counts).map(move |(r, n)| {
                        (
                            [ns, p, ("action", &**a), ("result", *r)],
                            ConstCounter::new(*n),
                        )
                    })
                })
            }),
        )?;
        family(
            e,
            "source_errors",
            "Metric source errors by kind",
            policies().flat_map(|([ns, p], s)| {
                s.source_errors
                    .iter()
                    .map(move |(k, n)| ([ns, p, ("kind", &**k)], ConstCounter::new(*n)))
            }),
        )
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
        m.count_decision("pulsar", "brokers", "ScaleUp", "applied");
        m.declare_decisions("pulsar", "brokers", &["ScaleUp"]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.lines().any(|l| l.contains("action=\"ScaleUp\"")
            && l.contains("result=\"applied\"")
            && l.ends_with(" 1")));
    }

    #[test]
    fn per_policy_series_keep_their_names_labels_and_types() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.set_policy("pulsar", "brokers", |g| {
            g.current_replicas = Some(3);
            g.policy_ready = Some(1);
        });
        let g = MetricGauges {
            value: None,
            target: 52428800.0,
            proposed_replicas: Some(4),
            ratio: None,
        };
        m.set_metric("pulsar", "brokers", "throughput", g);
        m.count_decision("pulsar", "brokers", "ScaleUp", "applied");
        m.count_source_error("pulsar", "brokers", "timeout");
        m.set_policy("pulsar", "brokers", |g| g.policy_ready = None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE pulsar_autoscaler_current_replicas gauge",
            "pulsar_autoscaler_current_replicas{namespace=\"pulsar\",policy=\"brokers\"} 3",
            "pulsar_autoscaler_metric_target{namespace=\"pulsar\",policy=\"brokers\",metric=\"throughput\"} 52428800.0",
            "pulsar_autoscaler_metric_proposed_replicas{namespace=\"pulsar\",policy=\"brokers\",metric=\"throughput\"} 4",
            "# TYPE pulsar_autoscaler_decisions counter",
            "pulsar_autoscaler_decisions_total{namespace=\"pulsar\",policy=\"brokers\",action=\"ScaleUp\",result=\"applied\"} 1",
            "pulsar_autoscaler_source_errors_total{namespace=\"pulsar\",policy=\"brokers\",kind=\"timeout\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Withdrawn or never set: no sample and no empty family.
        for absent in ["policy_ready", "metric_value", "metric_ratio", "claim_"] {
            assert!(
                !text.contains(&format!("pulsar_autoscaler_{absent}")),
                "{absent}:\n{text}"
            );
        }
    }

    #[test]
    fn a_forgotten_policy_leaves_no_series() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        for policy in ["gone", "kept"] {
            m.declare_decisions("pulsar", policy, &["ScaleUp", "Expand"]);
            let g = MetricGauges {
                value: Some(1.0),
                target: 1.0,
                proposed_replicas: None,
                ratio: Some(1.0),
            };
            m.set_metric("pulsar", policy, "throughput", g);
            m.set_policy("pulsar", policy, |g| g.current_replicas = Some(3));
            m.set_claim("pulsar", policy, "ledgers-b-0", ClaimGauges::default());
            m.count_source_error("pulsar", policy, "connect");
        }
        // Label values are shared: each held once, whatever the number of series (namespace,
        // two policies, two actions, metric, claim, error kind).
        let held = m.labels_held();
        assert_eq!(held, 1 + 2 + 2 + 1 + 1 + 1);
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
        assert_eq!(m.labels_held(), 0, "no label value outlives its series");
    }
}
