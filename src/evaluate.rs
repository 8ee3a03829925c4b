//! One evaluation of a policy against its metrics source, without a cluster: what
//! `pulsar-autoscaler evaluate` prints. Reads, proposes and decides; changes nothing.

use std::fmt::Write;

use jiff::Timestamp;
use serde::Serialize;

use crate::decide::{self, Action, BrokerMemory, Flags, MetricEvaluation, units};
use crate::metrics::round::plan;
use crate::metrics::{MetricsSource, Target, collect};
use crate::policy::Policy;

/// One metric as `evaluate` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricReport {
    /// Metric name.
    pub name: String,
    /// Observed value; absent when missing.
    pub value: Option<f64>,
    /// Target per broker or target utilization.
    pub target: f64,
    /// Replicas this metric proposes; absent when missing.
    pub proposed_replicas: Option<u32>,
    /// When the value was measured.
    pub observed_at: Option<Timestamp>,
    /// Why the value is missing or partial.
    pub problem: Option<String>,
    /// The arithmetic, in words.
    pub reason: String,
}

/// The decision part of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionReport {
    /// `statefulset/<name>`.
    pub target: String,
    /// Hold, ScaleUp or ScaleDown.
    pub action: Action,
    /// Replicas now.
    pub from: u64,
    /// Replicas after the action.
    pub to: u64,
    /// Why.
    pub reasons: Vec<String>,
}

/// One bookie claim's usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimReport {
    /// Claim name.
    pub claim: String,
    /// Used percent of capacity; absent when missing.
    pub used_percent: Option<f64>,
    /// Why it is missing.
    pub problem: Option<String>,
}

/// Everything one evaluation found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// The source asked.
    pub source: String,
    /// Broker metrics, in spec order.
    pub metrics: Vec<MetricReport>,
    /// The broker decision, when the policy scales brokers.
    pub decision: Option<DecisionReport>,
    /// Bookie claims, when the policy grows them.
    pub claims: Vec<ClaimReport>,
    /// Source failures; non-empty means the source could not (fully) be read.
    pub errors: Vec<String>,
    /// What was asked: the PromQL sent, or the URLs scraped in Direct mode.
    pub asked: Vec<String>,
}

impl Report {
    /// Whether there was something to read and none of it came back: no metric value and no
    /// claim usage. The caller then shows what it asked and fails.
    pub fn no_data(&self) -> bool {
        let wanted = !self.metrics.is_empty() || self.decision.is_none();
        wanted
            && self.metrics.iter().all(|m| m.value.is_none())
            && self.claims.iter().all(|c| c.used_percent.is_none())
    }
}

/// Reads `source` once for `policy` and decides with no remembered state.
pub async fn evaluate(
    source: &dyn MetricsSource,
    namespace: &str,
    name: &str,
    policy: &Policy,
    replicas: u32,
    now: Timestamp,
) -> Report {
    let target = Target {
        namespace,
        name,
        policy,
    };
    let requests = plan(std::slice::from_ref(&target));
    let asked = requests
        .presets
        .iter()
        .map(|p| p.grouped_query())
        .chain(requests.custom.iter().cloned())
        .collect();
    let readings = collect(source, &[target], now)
        .await
        .pop()
        .unwrap_or_default();
    let mut errors = readings.errors.clone();
    let (metrics, decision) = match &policy.brokers {
        Some(b) => {
            let flags = Flags {
                dry_run: policy.dry_run,
                suspend: policy.suspend,
            };
            let outcome = decide::decide_brokers(
                b,
                flags,
                policy.source.max_staleness,
                replicas,
                &readings.broker_samples(),
                &BrokerMemory::default(),
                now,
            );
            let metrics = outcome
                .metrics
                .iter()
                .zip(readings.brokers.iter().map(|r| r.problem.clone()))
                .map(|(m, p)| metric_report(m, p))
                .collect();
            let mut reasons = outcome.decision.reasons.clone();
            for e in &errors {
                reasons.push(format!("metrics source: {e}"));
            }
            let decision = DecisionReport {
                target: outcome.decision.target.clone(),
                action: outcome.decision.action,
                from: outcome.decision.from,
                to: outcome.decision.to,
                reasons,
            };
            (metrics, Some(decision))
        }
        None => (Vec::new(), None),
    };
    let claims = readings
        .claims
        .iter()
        .map(|(claim, r)| ClaimReport {
            claim: claim.clone(),
            used_percent: r.sample.map(|s| s.value),
            problem: r.problem.clone(),
        })
        .collect();
    errors.dedup();
    Report {
        policy: format!("{namespace}/{name}"),
        source: source.describe(),
        metrics,
        decision,
        claims,
        errors,
        asked,
    }
}

fn metric_report(m: &MetricEvaluation, source_problem: Option<String>) -> MetricReport {
    MetricReport {
        name: m.name.clone(),
        value: m.value,
        target: m.target,
        proposed_replicas: m.proposed_replicas,
        observed_at: m.observed_at,
        problem: m.problem.clone().or(source_problem),
        reason: m.reason.clone(),
    }
}

/// The report as text for a person.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "policy {} via {}", r.policy, r.source);
    for m in &r.metrics {
        let value = m.value.map_or("missing".to_string(), units::number);
        let proposed = m
            .proposed_replicas
            .map_or("-".to_string(), |p| p.to_string());
        let _ = writeln!(
            out,
            "  {:<14} value {:>14}  target {:>12}  proposes {:>3}  {}",
            m.name,
            value,
            units::number(m.target),
            proposed,
            m.reason
        );
        if let Some(p) = &m.problem {
            let _ = writeln!(out, "  {:<14} problem: {p}", "");
        }
    }
    for c in &r.claims {
        let used = c
            .used_percent
            .map_or("missing".to_string(), |v| format!("{v:.1}%"));
        let _ = writeln!(out, "  claim {:<30} used {used}", c.claim);
    }
    if let Some(d) = &r.decision {
        let _ = writeln!(
            out,
            "decision: {} {} {} -> {}",
            d.action, d.target, d.from, d.to
        );
        for reason in &d.reasons {
            let _ = writeln!(out, "  - {reason}");
        }
    }
    for e in &r.errors {
        let _ = writeln!(out, "error: {e}");
    }
    if r.no_data() {
        let _ = writeln!(
            out,
            "no data: nothing usable came back from {}; asked:",
            r.source
        );
        for a in &r.asked {
            let _ = writeln!(out, "  {a}");
        }
        if r.asked.is_empty() {
            let _ = writeln!(out, "  nothing (Direct mode needs --scrape URLs)");
        }
    }
    out
}
