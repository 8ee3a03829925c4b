//! Pure helpers that build the policy status: conditions with stable transition times, the
//! bounded decision log, and the rule that decides when a new status is worth a write.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{Condition, DecisionRecord, InFlightScale, ScalingPolicyStatus, VolumeStatus};
use crate::decide::{Action, Decision};

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
    /// The broker recommendation turns too often: flap damping holds capacity.
    pub const FLAPPING: &str = "Flapping";
    /// Another policy, an HPA or someone else manages a target; the policy does not act.
    pub const CONFLICT: &str = "Conflict";
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

/// Appends a decision to the log (newest first, bounded). A decision not carried out (dry run,
/// refused, dropped, failed) identical to the newest one for its target is not repeated every
/// interval: the log keeps the actions, which a restart reads to seed the rate limiter, instead
/// of scrolling them out with copies of one non-action. Returns whether it was added.
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
    let carried = !decision.dry_run && record.action == decision.action.to_string();
    if !carried
        && let Some(last) = status.decisions.iter().find(|d| d.target == record.target)
        && last.action == record.action
        && (last.from, last.to, last.dry_run) == (record.from, record.to, record.dry_run)
    {
        return false;
    }
    status.decisions.insert(0, record);
    status.decisions.truncate(DECISION_LOG);
    true
}

/// Records in the status the time of an action about to be carried out, where a restarted
/// controller reads its cooldown from: the broker scale times or the claim's last expansion.
/// Returns the in-flight record it wrote.
pub fn mark_action(
    status: &mut ScalingPolicyStatus,
    decision: &Decision,
    now: Timestamp,
) -> Option<InFlightScale> {
    match decision.action {
        Action::ScaleUp | Action::ScaleDown => {
            let b = status.brokers.get_or_insert_with(Default::default);
            let last = if decision.action == Action::ScaleUp {
                &mut b.last_scale_up_time
            } else {
                &mut b.last_scale_down_time
            };
            let previous_time = last.replace(Time(now));
            // Settled by whoever evaluates next: its Event, or a correction (see
            // `reconcile.rs`), should this process stop before the outcome is written.
            b.in_flight = Some(InFlightScale {
                action: decision.action.to_string(),
                from: decision.from as i64,
                to: decision.to as i64,
                time: Time(now),
                previous_time,
            });
            // What a restarted controller compares with the StatefulSet: its own change is
            // not someone else's.
            b.current_replicas = decision.to as i32;
            b.in_flight.clone()
        }
        Action::Expand => {
            let claim = decision
                .target
                .strip_prefix("pvc/")
                .unwrap_or(&decision.target);
            let volumes = &mut status.bookies.get_or_insert_with(Default::default).volumes;
            let at = match volumes.iter().position(|v| v.claim == claim) {
                Some(at) => at,
                None => {
                    volumes.push(VolumeStatus {
                        claim: claim.to_string(),
                        used_percent: None,
                        capacity: None,
                        requested: None,
                        state: "Expanding".into(),
                        message: None,
                        last_expand_time: None,
                        in_flight: None,
                    });
                    volumes.len() - 1
                }
            };
            let v = &mut volumes[at];
            let previous_time = v.last_expand_time.replace(Time(now));
            v.requested = Some(crate::quantity::format_bytes(decision.to));
            // The same settlement as a scale action's, should this process stop before its
            // claim patch is answered and the outcome written.
            v.in_flight = Some(InFlightScale {
                action: decision.action.to_string(),
                from: i64::try_from(decision.from).unwrap_or(i64::MAX),
                to: i64::try_from(decision.to).unwrap_or(i64::MAX),
                time: Time(now),
                previous_time,
            });
            v.in_flight.clone()
        }
        Action::Hold => None,
    }
}

/// Corrects the record of an action that never reached its target (the process stopped
/// between recording it and its `/scale` or claim patch): its decision becomes
/// `Failed<Action>` saying why, and the scale or expansion time it replaced and the replicas
/// (or request) before come back, so no cooldown counts from it and the unchanged replicas are
/// no one else's doing.
pub fn correct_unmade(status: &mut ScalingPolicyStatus, made: &InFlightScale, why: &str) {
    let restore = |last: &mut Option<Time>| {
        if last.as_ref() == Some(&made.time) {
            *last = made.previous_time.clone();
        }
    };
    if made.action == Action::Expand.to_string() {
        if let Some(v) = status.bookies.as_mut().and_then(|b| {
            b.volumes
                .iter_mut()
                .find(|v| v.in_flight.as_ref() == Some(made))
        }) {
            restore(&mut v.last_expand_time);
            v.requested = u64::try_from(made.from)
                .ok()
                .map(crate::quantity::format_bytes);
            v.in_flight = None;
        }
    } else if let Some(b) = status.brokers.as_mut() {
        if made.action == Action::ScaleUp.to_string() {
            restore(&mut b.last_scale_up_time);
        } else {
            restore(&mut b.last_scale_down_time);
        }
        b.current_replicas = made.from as i32;
        b.in_flight = None;
    }
    if let Some(d) = status.decisions.iter_mut().find(|d| {
        d.time == made.time && d.action == made.action && (d.from, d.to) == (made.from, made.to)
    }) {
        d.action = format!("Failed{}", made.action);
        d.reason = crate::policy::bounded(&format!("{}; failed: {why}", d.reason), MESSAGE_MAX);
    }
}

/// Every action recorded in flight: the brokers' and each claim's, with the claim's name.
pub fn in_flight(status: &ScalingPolicyStatus) -> Vec<(Option<String>, InFlightScale)> {
    let brokers = status
        .brokers
        .as_ref()
        .and_then(|b| b.in_flight.clone())
        .map(|m| (None, m));
    let claims = status.bookies.iter().flat_map(|b| {
        b.volumes
            .iter()
            .filter_map(|v| Some((Some(v.claim.clone()), v.in_flight.clone()?)))
    });
    brokers.into_iter().chain(claims).collect()
}

/// Forgets the in-flight record of `made` (its outcome is known and published).
pub fn settle(status: &mut ScalingPolicyStatus, made: &InFlightScale) {
    if let Some(b) = status.brokers.as_mut()
        && b.in_flight.as_ref() == Some(made)
    {
        b.in_flight = None;
    }
    for v in status.bookies.iter_mut().flat_map(|b| b.volumes.iter_mut()) {
        if v.in_flight.as_ref() == Some(made) {
            v.in_flight = None;
        }
    }
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

/// Relative change of a metric value that is worth a status write on its own.
pub const VALUE_CHANGE: f64 = 0.05;

/// What is kept of a written status to decide whether the next one is worth a write: a
/// fingerprint of what must match exactly, and the metric values (compared with a tolerance).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    fingerprint: u64,
    values: Vec<Option<f64>>,
}

impl Written {
    /// The record of a status as written.
    pub fn of(status: &ScalingPolicyStatus) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&normalized(status))
            .unwrap_or_default()
            .hash(&mut h);
        Written {
            fingerprint: h.finish(),
            values: status
                .brokers
                .as_ref()
                .map(|b| b.metrics.iter().map(|m| m.value).collect())
                .unwrap_or_default(),
        }
    }
}

/// Whether `new` differs from the status last written in something a person or a restarted
/// controller would see: conditions, decisions, replicas, proposals, recommendation values and
/// change times, claim states, or a metric value moved by more than [`VALUE_CHANGE`]. Not worth a
/// write on their own: measurement times, the newest recommendation's time (a restart reads it as
/// lasting until the restart, see [`seed`]), small value moves, claim messages.
pub fn needs_write(written: Option<&Written>, new: &ScalingPolicyStatus) -> bool {
    let Some(old) = written else {
        return true;
    };
    let new = Written::of(new);
    if old.fingerprint != new.fingerprint || old.values.len() != new.values.len() {
        return true;
    }
    old.values.iter().zip(&new.values).any(|pair| match pair {
        (Some(a), Some(b)) => (a - b).abs() > VALUE_CHANGE * a.abs().max(b.abs()),
        (None, None) => false,
        _ => true,
    })
}

fn normalized(s: &ScalingPolicyStatus) -> ScalingPolicyStatus {
    let mut s = s.clone();
    if let Some(b) = &mut s.brokers {
        for m in &mut b.metrics {
            m.value = None;
            m.observed_at = None;
        }
        if let Some(last) = b.recommendations.last_mut() {
            last.time = Time(Timestamp::UNIX_EPOCH);
        }
    }
    if let Some(b) = &mut s.bookies {
        for v in &mut b.volumes {
            v.used_percent = v.used_percent.map(f64::floor);
            v.message = None;
        }
    }
    s
}

/// The status a controller starts from when it first sees a policy. The newest recommendation
/// was recommended until the previous controller stopped (a different one would have been
/// written), so it is taken as lasting until `now`: a stabilization window then never ends early
/// after a restart, it may only last the downtime longer.
pub fn seed(status: Option<&ScalingPolicyStatus>, now: Timestamp) -> ScalingPolicyStatus {
    let mut s = status.cloned().unwrap_or_default();
    if let Some(last) = s
        .brokers
        .as_mut()
        .and_then(|b| b.recommendations.last_mut())
        && last.time.0 < now
    {
        last.time = Time(now);
    }
    s
}

/// Flap damping's state after one evaluation (policies with `brokers.forecast.enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flap<'a> {
    /// Whether capacity is held.
    pub holding: bool,
    /// Direction changes of the recommendation in the last hour.
    pub turns: usize,
    /// The engine's words while holding: turns per hour and the held capacity.
    pub message: Option<&'a str>,
}

/// Sets the Flapping condition next to `status.brokers.flapping`; returns the Event note when
/// it has just turned True. `None` (no flap damping) only clears a condition left from before.
pub fn set_flapping(
    status: &mut ScalingPolicyStatus,
    flap: Option<Flap<'_>>,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<String> {
    let was = is_true(status, kind::FLAPPING);
    match flap {
        Some(Flap {
            holding: true,
            turns,
            message,
        }) => {
            let fallback =
                format!("the recommendation changed direction {turns} times in the last hour");
            let message = message.map_or(fallback, str::to_string);
            set_condition(
                status,
                kind::FLAPPING,
                true,
                "HoldingCapacity",
                &message,
                generation,
                now,
            );
            (!was).then_some(message)
        }
        Some(Flap { turns, .. }) => {
            let message = format!(
                "the recommendation changed direction {turns} times in the last hour, fewer than brokers.forecast.flapTurnsPerHour"
            );
            set_condition(
                status,
                kind::FLAPPING,
                false,
                "Steady",
                message,
                generation,
                now,
            );
            None
        }
        None if has(status, kind::FLAPPING) => {
            let message = "flap damping is off: brokers.forecast.enabled is false";
            set_condition(
                status,
                kind::FLAPPING,
                false,
                "Disabled",
                message,
                generation,
                now,
            );
            None
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_scale_that_never_happened_is_corrected_to_a_failure() {
        let mut s = ScalingPolicyStatus::default();
        let up = |from: u64, to: u64| Decision {
            target: "statefulset/pulsar-broker".into(),
            action: Action::ScaleUp,
            from,
            to,
            reasons: vec!["load wants more".into()],
            dry_run: false,
        };
        for (d, t) in [(up(2, 3), 0), (up(3, 4), 100)] {
            log_decision(&mut s, &d, "ScaleUp", at(t));
            mark_action(&mut s, &d, at(t));
        }
        let made = s.brokers.as_ref().unwrap().in_flight.clone().unwrap();
        assert_eq!(
            (made.action.as_str(), made.from, made.to),
            ("ScaleUp", 3, 4)
        );
        assert_eq!(made.previous_time, Some(Time(at(0))));
        assert_eq!(s.brokers.as_ref().unwrap().current_replicas, 4);
        correct_unmade(&mut s, &made, "not carried out");
        let b = s.brokers.as_ref().unwrap();
        // The cooldown counts from the scale-up that happened; replicas are as before.
        assert_eq!(b.last_scale_up_time, Some(Time(at(0))));
        assert_eq!((b.current_replicas, b.in_flight.is_none()), (3, true));
        let actions: Vec<&str> = s.decisions.iter().map(|d| d.action.as_str()).collect();
        assert_eq!(actions, ["FailedScaleUp", "ScaleUp"]);
        assert!(s.decisions[0].reason.ends_with("; failed: not carried out"));
        // The rate limiter no longer counts it either.
        assert_eq!(recent_actions(&s, at(200)).len(), 1);
    }

    #[test]
    fn flapping_turns_true_once_and_says_what_is_held() {
        let mut s = ScalingPolicyStatus::default();
        // Without flap damping nothing is added.
        assert_eq!(set_flapping(&mut s, None, Some(1), at(0)), None);
        assert!(!has(&s, kind::FLAPPING));
        let steady = Flap {
            holding: false,
            turns: 2,
            message: None,
        };
        assert_eq!(set_flapping(&mut s, Some(steady), Some(1), at(0)), None);
        assert!(has(&s, kind::FLAPPING) && !is_true(&s, kind::FLAPPING));
        let text = "load is flapping: the recommendation changed direction 5 times in the last 1h; holding 8 brokers";
        let holding = Flap {
            holding: true,
            turns: 5,
            message: Some(text),
        };
        // The Event goes out when it turns True, not on every evaluation while it stays so.
        assert_eq!(
            set_flapping(&mut s, Some(holding), Some(1), at(15)),
            Some(text.to_string())
        );
        assert_eq!(set_flapping(&mut s, Some(holding), Some(1), at(30)), None);
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == kind::FLAPPING)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "HoldingCapacity")
        );
        assert_eq!(c.message, text);
        assert_eq!(c.last_transition_time, Time(at(15)));
        // Back to steady, then the forecast switched off.
        set_flapping(&mut s, Some(steady), Some(1), at(45));
        assert!(!is_true(&s, kind::FLAPPING));
        set_flapping(&mut s, None, Some(2), at(60));
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == kind::FLAPPING)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Disabled")
        );
    }

    #[test]
    fn a_recorded_expansion_is_in_flight_until_settled_or_corrected() {
        const GI: u64 = 1 << 30;
        let mut s = ScalingPolicyStatus::default();
        let grow = |from: u64, to: u64| Decision {
            target: "pvc/ledgers-pulsar-bookie-0".into(),
            action: Action::Expand,
            from: from * GI,
            to: to * GI,
            reasons: vec!["used above threshold".into()],
            dry_run: false,
        };
        let first = grow(50, 60);
        log_decision(&mut s, &first, "Expand", at(0));
        let made = mark_action(&mut s, &first, at(0)).unwrap();
        assert_eq!(
            in_flight(&s),
            [(Some("ledgers-pulsar-bookie-0".into()), made.clone())]
        );
        // Settled once its outcome is known: nothing left in flight, the expansion stays.
        settle(&mut s, &made);
        assert!(in_flight(&s).is_empty());
        let second = grow(60, 72);
        log_decision(&mut s, &second, "Expand", at(100));
        let made = mark_action(&mut s, &second, at(100)).unwrap();
        assert_eq!(
            (made.from, made.to, made.previous_time.clone()),
            ((60 * GI) as i64, (72 * GI) as i64, Some(Time(at(0))))
        );
        correct_unmade(&mut s, &made, "not carried out");
        let v = &s.bookies.as_ref().unwrap().volumes[0];
        // The cooldown counts from the expansion that happened; the request is as before.
        assert_eq!(v.last_expand_time, Some(Time(at(0))));
        assert_eq!(v.requested, Some(crate::quantity::format_bytes(60 * GI)));
        assert!(v.in_flight.is_none());
        let actions: Vec<&str> = s.decisions.iter().map(|d| d.action.as_str()).collect();
        assert_eq!(actions, ["FailedExpand", "Expand"]);
    }

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
        // A dropped action is logged once while it repeats; an action carried out every time.
        let mut t = ScalingPolicyStatus::default();
        assert!(log_decision(
            &mut t,
            &decision(false),
            "DroppedScaleUp",
            at(0)
        ));
        assert!(!log_decision(
            &mut t,
            &decision(false),
            "DroppedScaleUp",
            at(15)
        ));
        assert!(log_decision(&mut t, &decision(false), "ScaleUp", at(30)));
        assert!(log_decision(&mut t, &decision(false), "ScaleUp", at(45)));
        assert!(log_decision(
            &mut t,
            &decision(false),
            "DroppedScaleUp",
            at(60)
        ));
        for i in 0..30 {
            log_decision(&mut s, &decision(false), "ScaleUp", at(i));
        }
        assert_eq!(s.decisions.len(), DECISION_LOG);
        assert_eq!(s.decisions[0].time, Time(at(29)));
        assert_eq!(recent_actions(&s, at(100)).len(), DECISION_LOG);
        assert!(recent_actions(&s, at(5000)).is_empty());
    }

    fn evaluated(value: f64, observed: i64, recommended: (i64, i32)) -> ScalingPolicyStatus {
        let mut s = ScalingPolicyStatus::default();
        set_condition(&mut s, kind::READY, true, "Evaluated", "ok", Some(1), at(0));
        s.brokers = Some(crate::api::BrokerStatus {
            current_replicas: 3,
            desired_replicas: 3,
            metrics: vec![crate::api::MetricStatus {
                name: "throughput".into(),
                value: Some(value),
                target: 10.0,
                proposed_replicas: Some(3),
                observed_at: Some(Time(at(observed))),
                problem: None,
            }],
            recommendations: vec![crate::api::Recommendation {
                time: Time(at(recommended.0)),
                replicas: recommended.1,
            }],
            ..Default::default()
        });
        s
    }

    #[test]
    fn only_visible_changes_are_written() {
        let first = evaluated(100.0, 0, (0, 3));
        assert!(needs_write(None, &first), "the first status is written");
        let written = Written::of(&first);
        // A later evaluation of the same state: new measurement and recommendation times,
        // a value 2 % off.
        assert!(!needs_write(Some(&written), &evaluated(102.0, 15, (15, 3))));
        // A value 10 % off, a new recommendation value, a changed condition: written.
        assert!(needs_write(Some(&written), &evaluated(110.0, 15, (15, 3))));
        assert!(needs_write(Some(&written), &evaluated(100.0, 15, (15, 4))));
        let mut failed = evaluated(100.0, 15, (15, 3));
        set_condition(
            &mut failed,
            kind::READY,
            false,
            "Failed",
            "no",
            Some(1),
            at(15),
        );
        assert!(needs_write(Some(&written), &failed));
        let mut logged = evaluated(100.0, 15, (15, 3));
        log_decision(&mut logged, &decision(false), "ScaleUp", at(15));
        assert!(needs_write(Some(&written), &logged));
    }

    #[test]
    fn a_restart_takes_the_newest_recommendation_as_lasting_until_now() {
        let s = seed(Some(&evaluated(100.0, 0, (10, 6))), at(100));
        let r = &s.brokers.unwrap().recommendations;
        assert_eq!((r[0].time.clone(), r[0].replicas), (Time(at(100)), 6));
        assert_eq!(seed(None, at(0)), ScalingPolicyStatus::default());
    }
}
