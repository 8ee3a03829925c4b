//! `backtest`: replays recorded load through the controller's own `decide` and `guard` code on a
//! simple cluster model, optionally side by side with the Kubernetes HPA algorithm, and reports
//! what each would have done.

pub mod chart;
pub mod engine;
pub mod hpa;
pub mod model;
pub mod prometheus;
pub mod replay;
pub mod report;
pub mod trace;

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;

use crate::policy::{self, ForecastPolicy, Policy};
use model::Claim;
use replay::{Setup, load_metric, metric_column};
use report::Report;
use trace::{Column, Trace};

/// Default time a new broker takes to become ready.
pub const DEFAULT_READY_DELAY: Duration = Duration::from_secs(60);

/// Default time a broker removed under `scaleDown.drain` keeps serving while its bundles move
/// away. Measured on a real 4.0.7 cluster: each move took 0.2–0.75 s, so a broker with a few
/// dozen bundles drains in about this long at the default 10 unloads per second.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(30);

/// A policy file's checked contents.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
    /// The typed settings.
    pub policy: Policy,
    /// `brokers.scaleDown.drain.timeout`, when the policy drains brokers before removing them.
    pub drain_timeout: Option<Duration>,
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct Options {
    /// Broker pods at the start; default: the trace's first `brokers` value, else minReplicas.
    pub initial_replicas: Option<u32>,
    /// Time a new broker takes to become ready.
    pub ready_delay: Duration,
    /// Time a removed broker keeps serving; default: [`DEFAULT_DRAIN_DELAY`] (at most the drain
    /// timeout) for a policy with `scaleDown.drain`, zero (gone at once) without.
    pub drain_delay: Option<Duration>,
    /// Also replay the HPA baseline.
    pub compare_hpa: bool,
    /// Ledger claim size at the start; default: the trace's first `ledger_capacity_bytes`.
    pub initial_claim_size: Option<u64>,
    /// Wall-clock time of the trace's `seconds = 0`.
    pub epoch: Timestamp,
    /// Where the trace came from, for the report.
    pub source: String,
}

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The policy file could not be read.
    #[error("cannot read the policy {path}: {source}")]
    ReadPolicy {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The policy file holds no valid policy.
    #[error(
        "{path} is not a valid ScalingPolicy (`pulsar-autoscaler validate {path}` lists every problem): {problems}"
    )]
    InvalidPolicy {
        /// The file.
        path: String,
        /// The problems, joined.
        problems: String,
    },
    /// The policy file holds several documents.
    #[error(
        "{path} holds {count} ScalingPolicies; a backtest replays one, put it in a file of its own"
    )]
    SeveralPolicies {
        /// The file.
        path: String,
        /// How many.
        count: usize,
    },
    /// The trace lacks a column the policy reads.
    #[error(
        "the policy's metric {metric:?} ({kind}) reads the trace column `{column}`, which the trace does not have; add the column or remove the metric"
    )]
    MissingColumn {
        /// Metric name.
        metric: String,
        /// Metric type.
        kind: String,
        /// Column it needs.
        column: String,
    },
    /// The policy grows claims but the trace records no ledger usage.
    #[error("the policy only grows bookie claims, but the trace has no `ledger_used_bytes` column")]
    NoLedgerColumn,
    /// The claim's starting size is unknown.
    #[error(
        "the claim's starting size is unknown: pass --initial-claim-size (e.g. 100Gi) or add a `ledger_capacity_bytes` column to the trace"
    )]
    NoClaimSize,
    /// The trace is broken.
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
    /// The replay failed.
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
}

/// The drain timeout of a policy that drains brokers before removing them.
fn drain_timeout(resource: &crate::api::ScalingPolicy) -> Option<Duration> {
    let drain = resource.spec.brokers.as_ref()?.scale_down.drain.as_ref()?;
    humantime::parse_duration(&drain.timeout).ok()
}

/// How long a removed broker keeps serving in the replay of `loaded` (see [`Options::drain_delay`]).
pub fn drain_delay(options: &Options, loaded: &LoadedPolicy) -> Duration {
    match (options.drain_delay, loaded.drain_timeout) {
        (Some(d), Some(t)) => d.min(t),
        (Some(d), None) => d,
        (None, Some(t)) => DEFAULT_DRAIN_DELAY.min(t),
        (None, None) => Duration::ZERO,
    }
}

/// Reads and checks a policy file that holds exactly one ScalingPolicy.
pub fn load_policy(path: &Path) -> Result<LoadedPolicy, BacktestError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| BacktestError::ReadPolicy {
        path: shown.clone(),
        source,
    })?;
    let invalid = |problems: String| BacktestError::InvalidPolicy {
        path: shown.clone(),
        problems,
    };
    let problems = policy::check_yaml(&text);
    if !problems.is_empty() {
        let joined: Vec<String> = problems.iter().map(|p| p.problem.to_string()).collect();
        return Err(invalid(joined.join("; ")));
    }
    let mut documents = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        match serde_json::Value::deserialize(doc) {
            Ok(serde_json::Value::Null) => {}
            Ok(v) => documents.push(v),
            Err(e) => return Err(invalid(e.to_string())),
        }
    }
    let object = match documents.as_slice() {
        [one] => one,
        [] => return Err(invalid("the file holds no document".into())),
        many => {
            return Err(BacktestError::SeveralPolicies {
                path: shown,
                count: many.len(),
            });
        }
    };
    let (resource, policy) = policy::check_object(object).map_err(|problems| {
        let joined: Vec<String> = problems.iter().map(ToString::to_string).collect();
        invalid(joined.join("; "))
    })?;
    let drain_timeout = drain_timeout(&resource);
    Ok(LoadedPolicy {
        name: resource
            .metadata
            .name
            .unwrap_or_else(|| "scalingpolicy".into()),
        namespace: resource
            .metadata
            .namespace
            .unwrap_or_else(|| "default".into()),
        drain_timeout,
        policy,
    })
}

/// The ledger claim a policy's replay grows: the first watched template with "ledger" in its
/// name (else the first, else `ledgers`) of the bookie StatefulSet's first pod.
pub fn claim_name(policy: &policy::BookiePolicy) -> String {
    let template = policy
        .templates
        .iter()
        .find(|t| t.contains("ledger"))
        .or(policy.templates.first())
        .map_or("ledgers", String::as_str);
    format!("{template}-{}-0", policy.stateful_set)
}

/// Replays `trace` under `loaded` (and the HPA baseline when asked) and gathers the report.
pub fn run(
    trace: &Trace,
    loaded: &LoadedPolicy,
    options: &Options,
) -> Result<Report, BacktestError> {
    run_compared(trace, loaded, options, false)
}

/// The policy's forecast settings, or the defaults (`horizon: auto`) when it has none.
pub fn forecast_settings(policy: &Policy) -> ForecastPolicy {
    policy.forecast.unwrap_or(ForecastPolicy {
        horizon: None,
        flap_turns_per_hour: 4,
        interval: policy.interval,
    })
}

/// Like [`run`]; with `compare_forecast` the policy also runs with `forecast.enabled` (its own
/// forecast settings or the defaults) and the policy column runs with the forecast off, so the
/// report compares policy, policy with forecast and (when asked) the HPA.
pub fn run_compared(
    trace: &Trace,
    loaded: &LoadedPolicy,
    options: &Options,
    compare_forecast: bool,
) -> Result<Report, BacktestError> {
    let policy = &loaded.policy;
    let mut notes = Vec::new();
    if let Some(b) = &policy.brokers {
        for m in &b.metrics {
            let column = metric_column(m);
            if trace.index(&column).is_none() {
                return Err(BacktestError::MissingColumn {
                    metric: m.name.clone(),
                    kind: format!("{:?}", m.kind),
                    column: column.name(),
                });
            }
        }
    }
    for c in &trace.columns {
        if let Column::Custom(name) = c {
            let used = policy
                .brokers
                .iter()
                .flat_map(|b| &b.metrics)
                .any(|m| metric_column(m) == *c);
            if !used {
                notes.push(format!(
                    "column custom:{name} is not a Custom metric of the policy and is ignored"
                ));
            }
        }
    }
    let claim = match &policy.bookies {
        None => None,
        Some(_) if trace.index(&Column::LedgerUsed).is_none() => {
            if policy.brokers.is_none() {
                return Err(BacktestError::NoLedgerColumn);
            }
            notes.push(
                "the trace has no ledger_used_bytes column: bookie claims are not replayed".into(),
            );
            None
        }
        Some(b) => {
            let size = options
                .initial_claim_size
                .or_else(|| {
                    trace
                        .first_value(&Column::LedgerCapacity)
                        .map(|v| v.ceil() as u64)
                })
                .ok_or(BacktestError::NoClaimSize)?;
            Some(Claim {
                name: claim_name(b),
                size,
            })
        }
    };
    // Without a brokers section no broker is modelled (and none is paid for).
    let initial_replicas = match &policy.brokers {
        None => 0,
        Some(b) => options
            .initial_replicas
            .or_else(|| trace.first_value(&Column::Brokers).map(|v| v as u32))
            .unwrap_or(b.min_replicas)
            .max(1),
    };
    if policy.suspend {
        notes.push("the policy is suspended: it evaluates nothing and changes nothing".into());
    }
    if policy.dry_run {
        notes.push("the policy is in dryRun: decisions are recorded, nothing changes".into());
    }
    let drain = drain_delay(options, loaded);
    if !drain.is_zero() && policy.brokers.is_some() {
        notes.push(format!(
            "a removed broker keeps serving for {} while it is drained",
            humantime::format_duration(drain)
        ));
    }
    let setup = Setup {
        initial_replicas,
        ready_delay: options.ready_delay,
        drain_delay: drain,
        epoch: options.epoch,
        claim: claim.clone(),
    };
    let mut plain = policy.clone();
    if compare_forecast {
        plain.forecast = None;
    }
    let mut ours = engine::PolicyScaler::new(loaded.name.clone(), plain)
        .with_unmeasured_horizon(options.ready_delay);
    let policy_run = replay::replay(trace, policy, &setup, &mut ours)?;
    let forecast_run = match (&policy.brokers, compare_forecast) {
        (Some(_), true) => {
            let mut ahead = policy.clone();
            ahead.forecast = Some(forecast_settings(policy));
            let mut scaler = engine::PolicyScaler::new(loaded.name.clone(), ahead)
                .with_unmeasured_horizon(options.ready_delay);
            Some(replay::replay(trace, policy, &setup, &mut scaler)?)
        }
        (None, true) => {
            notes.push("the policy scales no brokers: there is nothing to forecast".into());
            None
        }
        _ => None,
    };
    let hpa_run = match (&policy.brokers, options.compare_hpa) {
        (Some(b), true) => {
            let mut baseline = hpa::HpaScaler::new(b, policy.source.max_staleness);
            // The HPA only patches `/scale`: its pods are removed without a drain.
            let plain = Setup {
                drain_delay: Duration::ZERO,
                ..setup.clone()
            };
            Some(replay::replay(trace, policy, &plain, &mut baseline)?)
        }
        (None, true) => {
            notes.push("the policy scales no brokers: nothing to compare with the HPA".into());
            None
        }
        _ => None,
    };
    Ok(Report {
        policy_name: loaded.name.clone(),
        source: options.source.clone(),
        rows: trace.rows.len(),
        start_seconds: trace.rows.first().map_or(0.0, |r| r.seconds),
        step_seconds: trace.step_seconds(),
        initial_replicas,
        ready_delay: options.ready_delay,
        initial_claim_size: claim.map(|c| c.size),
        load_kind: load_metric(policy).map(|m| m.kind),
        expand_at_used_percent: policy.bookies.as_ref().map(|b| b.expand_at_used_percent),
        policy: policy_run,
        forecast: forecast_run,
        hpa: hpa_run,
        notes,
    })
}
