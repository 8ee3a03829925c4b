//! Pure helpers that build the policy status: conditions with stable transition times and the
//! bounded decision log.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{Condition, DecisionRecord, ScalingPolicyStatus};
use crate::decide::Decision;

/// Decisions kept in the status log.
pub const DECISION_LOG: usize = 20;

/// Condition types the controller maintains.
pub mod kind {
    /// The policy is evaluated and its targets found.
    pub const READY: &str = "Ready";
    /// Every metric had usable data.
    pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
    /// Bounds, steps or cooldowns keep the policy from what the metrics want.
    pub const SCALING_LIMITED: &str = "ScalingLimited";
    /// The last wanted action was dropped by a rate limit.
    pub const RATE_LIMITED: &str = "RateLimited";
    /// `spec.suspend` is set.
    pub const SUSPENDED: &str = "Suspended";
    /// `spec.dryRun` is set.
    pub const DRY_RUN: &str = "DryRun";
    /// The spec breaks a rule the schema could not check, or the operator's settings refuse it.
    pub const INVALID: &str = "Invalid";
    /// The metrics source's certificate is not checked (`tls.insecureSkipVerify`).
    pub const INSECURE_TLS: &str = "InsecureTLS";
}

/// Longest condition message or decision reason stored; the status stays small and a source's
/// words cannot fill it.
pub const MESSAGE_MAX: usize = 1024;

/// Sets a condition, keeping `lastTransitionTime` when the status did not change.
pub fn set_condition(
    status: &mut ScalingPolicyStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let text = if value { "True" } else { "False" };
    let message = crate::policy::bounded(&message.into(), MESSAGE_MAX);
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != text {
                c.last_transition_time = Time(now);
            }
            c.status = text.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => status.conditions.push(Condition {
            type_: type_.into(),
            status: text.into(),
            reason: reason.into(),
            message,
            last_transition_time: Time(now),
            observed_generation: generation,
        }),
    }
}

/// Whether a condition of this type is present at all.
pub fn has(status: &ScalingPolicyStatus, type_: &str) -> bool {
    status.conditions.iter().any(|c| c.type_ == type_)
}

/// Whether a condition is currently `True`.
pub fn is_true(status: &ScalingPolicyStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Appends a decision to the log (newest first, bounded). A dry-run decision identical to the
/// newest one for its target is not repeated every interval. Returns whether it was added.
pub fn log_decision(
    status: &mut ScalingPolicyStatus,
    decision: &Decision,
    action: &str,
    now: Timestamp,
) -> bool {
    let record = DecisionRecord {
        time: Time(now),
        target: decision.target.clone(),
        action: action.to_string(),
        from: decision.from as i64,
        to: decision.to as i64,
        reason: crate::policy::bounded(&decision.reason(), MESSAGE_MAX),
        dry_run: decision.dry_run,
    };
    if decision.dry_run
        && let Some(last) = status.decisions.iter().find(|d| d.target == record.target)
        && last.action == record.action
        && (last.from, last.to, last.dry_run) == (record.from, record.to, true)
    {
        return false;
    }
    status.decisions.insert(0, record);
    status.decisions.truncate(DECISION_LOG);
    true
}

/// Times of actions carried out within the last hour, oldest first, for rate-limit seeding.
pub fn recent_actions(status: &ScalingPolicyStatus, now: Timestamp) -> Vec<Timestamp> {
    let hour = jiff::SignedDuration::from_hours(1);
    let mut times: Vec<Timestamp> = status
        .decisions
        .iter()
        .filter(|d| !d.dry_run && matches!(d.action.as_str(), "ScaleUp" | "ScaleDown" | "Expand"))
        .map(|d| d.time.0)
        .filter(|t| now.duration_since(*t) <= hour)
        .collect();
    times.sort();
    times
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Action;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn decision(dry_run: bool) -> Decision {
        Decision {
            target: "statefulset/b".into(),
            action: Action::ScaleUp,
            from: 3,
            to: 5,
            reasons: vec!["x".into()],
            dry_run,
        }
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let mut s = ScalingPolicyStatus::default();
        set_condition(&mut s, kind::READY, true, "Evaluated", "ok", Some(1), at(0));
        set_condition(
            &mut s,
            kind::READY,
            true,
            "Evaluated",
            "still ok",
            Some(1),
            at(10),
        );
        assert_eq!(s.conditions[0].last_transition_time, Time(at(0)));
        set_condition(&mut s, kind::READY, false, "Failed", "no", Some(1), at(20));
        assert_eq!(s.conditions[0].last_transition_time, Time(at(20)));
        assert!(!is_true(&s, kind::READY));
    }

    #[test]
    fn stored_messages_are_cut_to_the_bound() {
        let mut s = ScalingPolicyStatus::default();
        let long = "é".repeat(5000);
        set_condition(&mut s, kind::READY, false, "X", long.clone(), None, at(0));
        assert_eq!(s.conditions[0].message.chars().count(), MESSAGE_MAX);
        assert!(s.conditions[0].message.ends_with('…'));
        let mut d = decision(false);
        d.reasons = vec![long];
        log_decision(&mut s, &d, "ScaleUp", at(0));
        assert_eq!(s.decisions[0].reason.chars().count(), MESSAGE_MAX);
    }

    #[test]
    fn log_is_bounded_and_dry_runs_are_not_repeated() {
        let mut s = ScalingPolicyStatus::default();
        assert!(log_decision(&mut s, &decision(true), "ScaleUp", at(0)));
        assert!(!log_decision(&mut s, &decision(true), "ScaleUp", at(15)));
        for i in 0..30 {
            log_decision(&mut s, &decision(false), "ScaleUp", at(i));
        }
        assert_eq!(s.decisions.len(), DECISION_LOG);
        assert_eq!(s.decisions[0].time, Time(at(29)));
        assert_eq!(recent_actions(&s, at(100)).len(), DECISION_LOG);
        assert!(recent_actions(&s, at(5000)).is_empty());
    }
}
