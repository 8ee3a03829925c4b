//! The decision engine: samples + policy + remembered state + `now` → decisions with reasons.
//!
//! Pure by construction: no async, no I/O, no clock reads. The controller, `evaluate` and
//! `backtest` all drive these functions, so what a backtest shows is what the controller does.

mod bookies;
mod brokers;
pub mod drain;
pub mod flap;
pub mod forecast;
pub mod horizon;
mod memory;
pub mod rebalance;
pub mod units;

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

pub use bookies::{ClaimOutcome, ClaimState, VolumeState, decide_claim};
pub use brokers::{
    Ahead, Availability, BrokerInputs, BrokerOutcome, MetricEvaluation, decide_brokers,
    decide_brokers_with,
};
pub use memory::{AheadMemory, BrokerMemory, SETTLE_AFTER_MOVES, Settling};

/// One observed value with the time it was measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// The value: a cluster total, an average utilization in percent, or a claim's used percent.
    pub value: f64,
    /// When the value was measured (not when it was fetched).
    pub observed_at: Timestamp,
    /// How many pods contributed, when the source knows; fewer than the replicas means partial.
    pub reporting: Option<u32>,
}

impl Sample {
    /// A sample with no pod count.
    pub fn new(value: f64, observed_at: Timestamp) -> Self {
        Sample {
            value,
            observed_at,
            reporting: None,
        }
    }
}

/// Evaluation switches from the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// Decide and record, change nothing.
    pub dry_run: bool,
    /// Evaluate nothing, change nothing.
    pub suspend: bool,
}

/// What a decision does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    /// No change.
    Hold,
    /// Add brokers.
    ScaleUp,
    /// Remove brokers.
    ScaleDown,
    /// Grow a claim.
    Expand,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Hold => "Hold",
            Action::ScaleUp => "ScaleUp",
            Action::ScaleDown => "ScaleDown",
            Action::Expand => "Expand",
        })
    }
}

/// One decision about one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// `statefulset/<name>` or `pvc/<name>`.
    pub target: String,
    /// What to do.
    pub action: Action,
    /// Replicas (or bytes) now.
    pub from: u64,
    /// Replicas (or bytes) after the action; equal to `from` for `Hold`.
    pub to: u64,
    /// Why, in words a person can check.
    pub reasons: Vec<String>,
    /// Recorded only, not carried out.
    pub dry_run: bool,
}

impl Decision {
    /// A hold with one reason.
    pub fn hold(target: String, at: u64, reason: impl Into<String>, dry_run: bool) -> Self {
        Decision {
            target,
            action: Action::Hold,
            from: at,
            to: at,
            reasons: vec![reason.into()],
            dry_run,
        }
    }

    /// Whether the decision changes something (possibly only on paper in dry-run).
    pub fn is_change(&self) -> bool {
        self.action != Action::Hold
    }

    /// Whether carrying it out needs a mutating API call.
    pub fn mutates(&self) -> bool {
        self.is_change() && !self.dry_run
    }

    /// Reasons joined into one line.
    pub fn reason(&self) -> String {
        self.reasons.join("; ")
    }
}

/// Time from `earlier` to `now`, zero if `earlier` is in the future.
pub fn elapsed(now: Timestamp, earlier: Timestamp) -> Duration {
    let d = now.duration_since(earlier);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Why a sample cannot be used, if it cannot.
pub fn sample_problem(
    sample: Option<&Sample>,
    max_staleness: Duration,
    now: Timestamp,
) -> Option<String> {
    let Some(s) = sample else {
        return Some("no data".into());
    };
    if s.value.is_nan() {
        return Some("value is NaN".into());
    }
    if s.value.is_infinite() {
        return Some("value is infinite".into());
    }
    if s.value < 0.0 {
        return Some(format!("value {} is negative", s.value));
    }
    let age = elapsed(now, s.observed_at);
    if age > max_staleness {
        return Some(format!(
            "sample is {} old, older than maxStaleness {}",
            units::duration(age),
            units::duration(max_staleness)
        ));
    }
    None
}

/// `remaining` of a cooldown as words, e.g. "1m 30s left".
fn cooldown_left(cooldown: Duration, since: Duration) -> String {
    units::duration(cooldown.saturating_sub(since))
}
