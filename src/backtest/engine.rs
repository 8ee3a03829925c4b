//! Drives the controller's own `decide` and `guard` code in a replay: the same engine, the same
//! memory handling (`note_action` only for what was carried out) and the same rate limiter.

use std::time::Duration;

use jiff::Timestamp;

use super::replay::{Autoscaler, ClaimView, Evaluation, Outcome, Record, View};
use crate::decide::{
    self, Action, Ahead, Availability, BrokerInputs, BrokerMemory, ClaimState, Decision, Flags,
    Sample,
};
use crate::guard::{self, Guard, Verdict};
use crate::policy::{Policy, RateLimit};

/// A `ScalingPolicy` as the controller runs it.
pub struct PolicyScaler {
    name: String,
    policy: Policy,
    memory: BrokerMemory,
    guard: Guard,
    last_expand: Option<Timestamp>,
    unmeasured_horizon: Duration,
}

impl PolicyScaler {
    /// The controller's view of one policy, with fresh memory and a full rate-limit bucket.
    pub fn new(name: impl Into<String>, policy: Policy) -> Self {
        PolicyScaler {
            name: name.into(),
            policy,
            memory: BrokerMemory::default(),
            guard: Guard::new(None),
            last_expand: None,
            unmeasured_horizon: decide::forecast::DEFAULT_HORIZON,
        }
    }

    /// Under `horizon: auto`, the horizon before one is measured: in a replay, the model's
    /// ready delay (the replay then measures it like the controller does).
    pub fn with_unmeasured_horizon(mut self, horizon: Duration) -> Self {
        self.unmeasured_horizon = horizon;
        self
    }

    fn flags(&self) -> Flags {
        Flags {
            dry_run: self.policy.dry_run,
            suspend: self.policy.suspend,
        }
    }

    fn brokers(&mut self, view: &View<'_>, eval: &mut Evaluation) {
        let flags = self.flags();
        let Some(policy) = &self.policy.brokers else {
            return;
        };
        let samples: Vec<Option<Sample>> = policy
            .metrics
            .iter()
            .map(|m| view.metric_sample(m))
            .collect();
        let inputs = BrokerInputs {
            policy,
            flags,
            max_staleness: self.policy.source.max_staleness,
            current: view.replicas,
            samples: &samples,
            memory: &self.memory,
            now: view.now,
        };
        let history = view.history(&policy.metrics);
        let ahead = self.policy.forecast.map(|f| Ahead {
            policy: f,
            history: &history,
            unmeasured_horizon: self.unmeasured_horizon,
        });
        let outcome = decide::decide_brokers_with(&inputs, ahead.as_ref());
        let forecast = outcome.forecast_driven;
        eval.holding_for_flapping = outcome.holding;
        self.memory = outcome.memory;
        let proposals = outcome.metrics.iter().filter_map(|m| m.proposed_replicas);
        eval.held_for_missing_data |= match &outcome.availability {
            Availability::Unavailable(_) => true,
            Availability::Partial(_) => proposals.max().is_some_and(|p| p < view.replicas),
            Availability::All | Availability::NotEvaluated => false,
        };
        let decision = outcome.decision;
        if !decision.is_change() {
            return;
        }
        let safety = guard::check_brokers(policy, &decision);
        let limit = self.policy.rate_limit;
        let mut record = carry_out(
            &mut self.guard,
            &self.name,
            limit,
            &decision,
            safety,
            view.now,
        );
        record.forecast = forecast;
        if record.outcome == Outcome::Carried {
            self.memory.note_action(decision.action, view.now);
            eval.replicas = u32::try_from(decision.to).ok();
        }
        eval.records.push(record);
    }

    fn claim(&mut self, view: &View<'_>, claim: &ClaimView, eval: &mut Evaluation) {
        let flags = self.flags();
        let Some(policy) = &self.policy.bookies else {
            return;
        };
        let resize_in_progress = claim
            .capacity_seen
            .filter(|cap| *cap < claim.requested)
            .map(|cap| {
                format!(
                    "capacity {} is behind the request {}",
                    decide::units::bytes(cap as f64),
                    decide::units::bytes(claim.requested as f64)
                )
            });
        let state = ClaimState {
            name: claim.name.clone(),
            requested: claim.requested,
            capacity: claim.capacity_seen,
            usage: claim.usage,
            bound: true,
            resize_in_progress,
            resize_infeasible: None,
            expandable: Some(true),
            last_expand: self.last_expand,
        };
        let outcome = decide::decide_claim(
            policy,
            flags,
            self.policy.source.max_staleness,
            &state,
            view.now,
        );
        eval.held_for_missing_data |= outcome.state == decide::VolumeState::MetricsMissing;
        let decision = outcome.decision;
        if !decision.is_change() {
            return;
        }
        let safety = guard::check_claim(policy, &decision);
        let limit = self.policy.rate_limit;
        let record = carry_out(
            &mut self.guard,
            &self.name,
            limit,
            &decision,
            safety,
            view.now,
        );
        if record.outcome == Outcome::Carried && decision.action == Action::Expand {
            self.last_expand = Some(view.now);
            eval.claim_size = Some(decision.to);
        }
        eval.records.push(record);
    }
}

/// Carries out (or records) a change through the safety clamp and the policy's rate limiter.
fn carry_out(
    guard: &mut Guard,
    name: &str,
    limit: RateLimit,
    decision: &Decision,
    safety: Verdict,
    now: Timestamp,
) -> Record {
    let mut record = Record {
        seconds: 0.0,
        target: decision.target.clone(),
        action: decision.action,
        outcome: Outcome::Carried,
        from: decision.from,
        to: decision.to,
        reason: decision.reason(),
        forecast: false,
    };
    let wanted = format!("{} {} → {}", decision.action, decision.from, decision.to);
    if decision.dry_run {
        record.outcome = Outcome::DryRun;
        record.reason = format!("{wanted} recorded only (dryRun): {}", record.reason);
        return record;
    }
    let verdict = match safety {
        Verdict::Allowed => guard.admit(name, limit, now),
        refused => refused,
    };
    match verdict {
        Verdict::Allowed => {}
        Verdict::RateLimited(why) => {
            record.outcome = Outcome::Dropped;
            record.reason = format!("{wanted} dropped: {why}; wanted because {}", record.reason);
        }
        Verdict::Unsafe(why) => {
            record.outcome = Outcome::Refused;
            record.reason = format!("{wanted} refused by a safety clamp: {why}");
        }
    }
    record
}

impl Autoscaler for PolicyScaler {
    fn interval(&self) -> Duration {
        self.policy.interval
    }

    fn evaluate(&mut self, view: &View<'_>) -> Evaluation {
        let mut eval = Evaluation::default();
        self.brokers(view, &mut eval);
        if let Some(claim) = &view.claim {
            self.claim(view, claim, &mut eval);
        }
        eval
    }
}
