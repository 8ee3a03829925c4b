//! The Kubernetes HorizontalPodAutoscaler (autoscaling/v2) algorithm with its documented
//! defaults: the baseline a backtest compares a policy with.
//!
//! Written from the Kubernetes documentation, not from `decide`:
//! <https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/>
//! - "Algorithm details": `desiredReplicas = ceil(currentReplicas * currentMetricValue /
//!   desiredMetricValue)`; no change while the ratio is within the tolerance (0.1 by default,
//!   `--horizontal-pod-autoscaler-tolerance`); pods without metrics count as 100 % of the target
//!   on a scale-down and 0 % on a scale-up, not-yet-ready pods as 0 % on a scale-up; with several
//!   metrics the largest proposal wins, and when some metrics cannot be read the HPA still scales
//!   up on the others but never down; with none it does not scale.
//! - "Configurable scaling behavior" / "Stabilization window" / "Scaling policies": the
//!   stabilized recommendation is the highest (down) or lowest (up) recommendation within the
//!   window; policies limit the change within `periodSeconds`, `selectPolicy: Max` picks the
//!   policy that allows the most change.
//! - "Default behavior": scale-down stabilization 300 s and 100 % per 15 s; scale-up no
//!   stabilization and max(4 pods, 100 %) per 15 s; the controller syncs every 15 s
//!   (`--horizontal-pod-autoscaler-sync-period`).
//!
//! Where the documentation leaves arithmetic open, this follows the reference controller
//! (`pkg/controller/podautoscaler`): metric values are milli-units, the average of a Pods metric is
//! an integer division, the change within a period counts scale events strictly after its start,
//! and the scale-down stabilization window starts filled with the replica count the HPA found.
//! External metrics with an `AverageValue` target stand for our cluster totals (throughput,
//! message rate, custom): `desiredReplicas = ceil(total / targetAverageValue)`. Pods metrics
//! with an `AverageValue` target stand for the memory percentages.

use std::time::Duration;

use super::replay::{Autoscaler, Evaluation, Outcome, Record, View};
use crate::decide::{Action, units};
use crate::policy::{BrokerPolicy, MetricPolicy};

/// Default tolerance of the HPA controller.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// Default sync period of the HPA controller.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);

/// How a scaling policy limits change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// At most `value` pods per period.
    Pods,
    /// At most `value` percent of the pods at the period's start.
    Percent,
}

/// One HPA scaling policy (`behavior.scaleUp.policies[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingPolicy {
    /// Pods or Percent.
    pub kind: PolicyKind,
    /// The limit.
    pub value: u32,
    /// The period the limit applies to.
    pub period: Duration,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy that allows the most change (default).
    Max,
    /// The policy that allows the least change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// `behavior.scaleUp` or `behavior.scaleDown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `stabilizationWindowSeconds`.
    pub stabilization_window: Duration,
    /// `selectPolicy`.
    pub select: SelectPolicy,
    /// `policies`.
    pub policies: Vec<ScalingPolicy>,
}

/// `behavior`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    /// Scale-up rules.
    pub scale_up: Rules,
    /// Scale-down rules.
    pub scale_down: Rules,
}

impl Default for Behavior {
    /// The documented default behavior.
    fn default() -> Self {
        let per_15s = |kind, value| ScalingPolicy {
            kind,
            value,
            period: Duration::from_secs(15),
        };
        Behavior {
            scale_down: Rules {
                stabilization_window: Duration::from_secs(300),
                select: SelectPolicy::Max,
                policies: vec![per_15s(PolicyKind::Percent, 100)],
            },
            scale_up: Rules {
                stabilization_window: Duration::ZERO,
                select: SelectPolicy::Max,
                policies: vec![
                    per_15s(PolicyKind::Percent, 100),
                    per_15s(PolicyKind::Pods, 4),
                ],
            },
        }
    }
}

/// One metric's reading at a sync.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricInput {
    /// An External (or Object) metric with an `AverageValue` target: a total over all pods.
    AverageValue {
        /// Metric name, for reasons.
        name: String,
        /// The total.
        value: f64,
        /// Target value per pod.
        target: f64,
    },
    /// A Pods metric with an `AverageValue` target.
    Pods {
        /// Metric name, for reasons.
        name: String,
        /// Value of each pod that has a metric.
        per_pod: Vec<f64>,
        /// Running pods without a metric.
        missing: u32,
        /// Pods not yet ready (pending).
        unready: u32,
        /// Target average per pod.
        target: f64,
    },
    /// The metric could not be read.
    Invalid {
        /// Metric name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// What one sync decided.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    /// Replicas after the sync (equal to `current` for no change).
    pub replicas: u32,
    /// Why, in words.
    pub reason: String,
    /// Whether unreadable metrics kept the HPA from scaling.
    pub held_for_missing_data: bool,
}

/// The state of one HPA: its spec and the history its windows and policies need.
#[derive(Debug, Clone)]
pub struct Hpa {
    /// `minReplicas`.
    pub min_replicas: u32,
    /// `maxReplicas`.
    pub max_replicas: u32,
    /// Controller tolerance.
    pub tolerance: f64,
    /// `behavior`.
    pub behavior: Behavior,
    recommendations: Option<Vec<(i64, u32)>>,
    up_events: Vec<(i64, u32)>,
    down_events: Vec<(i64, u32)>,
}

/// Metric values travel as milli-units, as in the Kubernetes metrics APIs (rounded up).
fn milli(v: f64) -> i64 {
    (v * 1000.0).ceil() as i64
}

impl Hpa {
    /// An HPA with default behavior and tolerance.
    pub fn new(min_replicas: u32, max_replicas: u32) -> Self {
        Hpa {
            min_replicas,
            max_replicas,
            tolerance: DEFAULT_TOLERANCE,
            behavior: Behavior::default(),
            recommendations: None,
            up_events: Vec::new(),
            down_events: Vec::new(),
        }
    }

    /// One sync at `now_ms` with `current` replicas.
    pub fn sync(&mut self, now_ms: i64, current: u32, metrics: &[MetricInput]) -> SyncResult {
        let result = |replicas, reason: String, held| SyncResult {
            replicas,
            reason,
            held_for_missing_data: held,
        };
        if current == 0 {
            return result(0, "scaled to zero: autoscaling is disabled".into(), false);
        }
        if current > self.max_replicas {
            let to = self.max_replicas;
            self.store_event(now_ms, current, to);
            return result(to, "current replicas above maxReplicas".into(), false);
        }
        if current < self.min_replicas {
            let to = self.min_replicas;
            self.store_event(now_ms, current, to);
            return result(to, "current replicas below minReplicas".into(), false);
        }
        let mut proposals = Vec::new();
        let mut reasons = Vec::new();
        let mut invalid = Vec::new();
        for m in metrics {
            match self.metric_replicas(current, m) {
                Ok((n, why)) => {
                    proposals.push(n);
                    reasons.push(why);
                }
                Err(why) => invalid.push(why),
            }
        }
        let desired = proposals.iter().copied().max().unwrap_or(0);
        if invalid.len() >= metrics.len() || (!invalid.is_empty() && desired < current) {
            let why = if proposals.is_empty() {
                "no metric could be read"
            } else {
                "some metrics could not be read and the others suggest scaling down"
            };
            return result(
                current,
                format!("{why}: {}; keeping {current}", invalid.join("; ")),
                true,
            );
        }
        let mut reason = reasons.join("; ");
        let stabilized = self.stabilize(now_ms, current, desired);
        if stabilized != desired {
            reason.push_str(&format!(
                "; stabilization window: recommendation {stabilized}"
            ));
        }
        let limited = self.limit_rate(now_ms, current, stabilized);
        if limited != stabilized {
            reason.push_str(&format!("; limited to {limited} by policies and bounds"));
        }
        if limited != current {
            self.store_event(now_ms, current, limited);
        }
        result(limited, reason, false)
    }

    /// Replicas one metric asks for, or why it cannot be used.
    fn metric_replicas(&self, current: u32, m: &MetricInput) -> Result<(u32, String), String> {
        let tol = self.tolerance;
        match m {
            MetricInput::Invalid { name, reason } => Err(format!("{name}: {reason}")),
            MetricInput::AverageValue {
                name,
                value,
                target,
            } => {
                let (usage, target_m) = (milli(*value), milli(*target).max(1));
                let ratio = usage as f64 / (target_m as f64 * f64::from(current));
                let n = if (1.0 - ratio).abs() > tol {
                    (usage as f64 / target_m as f64).ceil() as u32
                } else {
                    current
                };
                Ok((n, format!("{name}: ratio {ratio:.2} → {n}")))
            }
            MetricInput::Pods {
                name,
                per_pod,
                missing,
                unready,
                target,
            } => {
                let target_m = milli(*target).max(1);
                let mut values: Vec<i64> = per_pod.iter().map(|v| milli(*v)).collect();
                if values.is_empty() {
                    return Err(format!(
                        "{name}: did not receive metrics for targeted pods (pods might be unready)"
                    ));
                }
                let ready = values.len() as u32;
                let usage_ratio = ratio(&values, target_m);
                let scale_up_with_unready = *unready > 0 && usage_ratio > 1.0;
                if !scale_up_with_unready && *missing == 0 {
                    if (1.0 - usage_ratio).abs() <= tol {
                        return Ok((
                            current,
                            format!("{name}: ratio {usage_ratio:.2}, within tolerance"),
                        ));
                    }
                    let n = (usage_ratio * f64::from(ready)).ceil() as u32;
                    return Ok((n, format!("{name}: ratio {usage_ratio:.2} → {n}")));
                }
                // Missing pods: target on a scale-down, 0 on a scale-up; unready pods: 0.
                let fill = if usage_ratio < 1.0 { target_m } else { 0 };
                values.extend(std::iter::repeat_n(fill, *missing as usize));
                if scale_up_with_unready {
                    values.extend(std::iter::repeat_n(0, *unready as usize));
                }
                let new_ratio = ratio(&values, target_m);
                if (1.0 - new_ratio).abs() <= tol
                    || (usage_ratio < 1.0 && new_ratio > 1.0)
                    || (usage_ratio > 1.0 && new_ratio < 1.0)
                {
                    return Ok((
                        current,
                        format!(
                            "{name}: ratio {new_ratio:.2} counting pods without metrics, no change"
                        ),
                    ));
                }
                let n = (new_ratio * values.len() as f64).ceil() as u32;
                if (new_ratio < 1.0 && n > current) || (new_ratio > 1.0 && n < current) {
                    return Ok((current, format!("{name}: ratio {new_ratio:.2}, no change")));
                }
                Ok((
                    n,
                    format!("{name}: ratio {new_ratio:.2} counting pods without metrics → {n}"),
                ))
            }
        }
    }

    /// Stabilization: the recommendation the windows allow, storing the raw one.
    fn stabilize(&mut self, now_ms: i64, current: u32, desired: u32) -> u32 {
        let up_cutoff = now_ms - self.behavior.scale_up.stabilization_window.as_millis() as i64;
        let down_cutoff = now_ms - self.behavior.scale_down.stabilization_window.as_millis() as i64;
        // The scale-down window starts filled with the replicas found when the HPA starts.
        let recs = self.recommendations.get_or_insert_with(|| {
            if down_cutoff < now_ms {
                vec![(now_ms, current)]
            } else {
                Vec::new()
            }
        });
        let (mut up, mut down) = (desired, desired);
        let mut old = None;
        for (i, (t, r)) in recs.iter().enumerate() {
            if *t > up_cutoff {
                up = up.min(*r);
            }
            if *t > down_cutoff {
                down = down.max(*r);
            }
            if *t < up_cutoff && *t < down_cutoff {
                old = Some(i);
            }
        }
        let mut recommendation = current;
        if recommendation < up {
            recommendation = up;
        }
        if recommendation > down {
            recommendation = down;
        }
        match old {
            Some(i) => recs[i] = (now_ms, desired),
            None => recs.push((now_ms, desired)),
        }
        recommendation
    }

    /// Scaling policies and bounds.
    fn limit_rate(&self, now_ms: i64, current: u32, desired: u32) -> u32 {
        let (cur, want) = (i64::from(current), i64::from(desired));
        if want > cur {
            let limit = self
                .period_limit(now_ms, cur, &self.behavior.scale_up, true)
                .max(cur);
            let max_allowed = i64::from(self.max_replicas).min(limit);
            want.min(max_allowed) as u32
        } else if want < cur {
            let limit = self
                .period_limit(now_ms, cur, &self.behavior.scale_down, false)
                .min(cur);
            let min_allowed = i64::from(self.min_replicas).max(limit);
            want.max(min_allowed) as u32
        } else {
            desired
        }
    }

    /// The furthest the rules let replicas go from `current` within their periods.
    fn period_limit(&self, now_ms: i64, current: i64, rules: &Rules, up: bool) -> i64 {
        let max_change = rules.select == SelectPolicy::Max;
        let mut result: Option<i64> = None;
        if rules.select == SelectPolicy::Disabled {
            return current;
        }
        for p in &rules.policies {
            let cutoff = now_ms - p.period.as_millis() as i64;
            let added = changes_after(&self.up_events, cutoff);
            let deleted = changes_after(&self.down_events, cutoff);
            let start = current - added + deleted;
            let value = i64::from(p.value);
            let proposed = match (p.kind, up) {
                (PolicyKind::Pods, true) => start + value,
                (PolicyKind::Percent, true) => {
                    (start as f64 * (1.0 + value as f64 / 100.0)).ceil() as i64
                }
                (PolicyKind::Pods, false) => start - value,
                (PolicyKind::Percent, false) => {
                    (start as f64 * (1.0 - value as f64 / 100.0)) as i64
                }
            };
            // Up: Max takes the highest proposal; down: Max takes the lowest.
            let pick_high = max_change == up;
            result = Some(match result {
                None => proposed,
                Some(r) if pick_high => r.max(proposed),
                Some(r) => r.min(proposed),
            });
        }
        result.unwrap_or(if up { i64::MAX } else { i64::MIN })
    }

    fn store_event(&mut self, now_ms: i64, from: u32, to: u32) {
        let (events, change, rules) = if to > from {
            (&mut self.up_events, to - from, &self.behavior.scale_up)
        } else if to < from {
            (&mut self.down_events, from - to, &self.behavior.scale_down)
        } else {
            return;
        };
        // Forget what no policy period can see any more.
        let longest = rules
            .policies
            .iter()
            .map(|p| p.period.as_millis() as i64)
            .max()
            .unwrap_or(0);
        events.retain(|(t, _)| *t > now_ms - longest);
        events.push((now_ms, change));
    }
}

fn ratio(values: &[i64], target_m: i64) -> f64 {
    let total: i64 = values.iter().sum();
    let average = total / values.len().max(1) as i64;
    average as f64 / target_m as f64
}

fn changes_after(events: &[(i64, u32)], cutoff: i64) -> i64 {
    events
        .iter()
        .filter(|(t, _)| *t > cutoff)
        .map(|(_, c)| i64::from(*c))
        .sum()
}

/// An HPA with default behavior driven by a policy's metrics, targets and bounds.
pub struct HpaScaler {
    hpa: Hpa,
    metrics: Vec<MetricPolicy>,
    max_staleness: Duration,
    target: String,
}

impl HpaScaler {
    /// The HPA an operator would write for `brokers`: same metrics, targets and bounds, with
    /// Kubernetes' default tolerance and behavior. Samples older than `max_staleness` count as
    /// unreadable, as the policy's metrics source would treat them.
    pub fn new(brokers: &BrokerPolicy, max_staleness: Duration) -> Self {
        HpaScaler {
            hpa: Hpa::new(brokers.min_replicas, brokers.max_replicas),
            metrics: brokers.metrics.clone(),
            max_staleness,
            target: format!("statefulset/{}", brokers.stateful_set),
        }
    }

    fn input(&self, view: &View<'_>, m: &MetricPolicy) -> MetricInput {
        let invalid = |reason: String| MetricInput::Invalid {
            name: m.name.clone(),
            reason,
        };
        let Some(s) = view.metric_sample(m) else {
            return invalid("no data".into());
        };
        if !s.value.is_finite() || s.value < 0.0 {
            return invalid(format!("unusable value {}", s.value));
        }
        let age = Duration::try_from(view.now.duration_since(s.observed_at)).unwrap_or_default();
        if age > self.max_staleness {
            return invalid(format!("sample is {} old", units::duration(age)));
        }
        if m.kind.is_utilization() {
            let reporting = s.reporting.unwrap_or(view.replicas).min(view.replicas);
            MetricInput::Pods {
                name: m.name.clone(),
                per_pod: vec![s.value; reporting as usize],
                missing: view.replicas - reporting,
                unready: 0,
                target: m.target,
            }
        } else {
            MetricInput::AverageValue {
                name: m.name.clone(),
                value: s.value,
                target: m.target,
            }
        }
    }
}

impl Autoscaler for HpaScaler {
    fn interval(&self) -> Duration {
        SYNC_PERIOD
    }

    fn evaluate(&mut self, view: &View<'_>) -> Evaluation {
        let inputs: Vec<MetricInput> = self.metrics.iter().map(|m| self.input(view, m)).collect();
        let sync = self.hpa.sync(view.now_ms, view.replicas, &inputs);
        let mut eval = Evaluation {
            held_for_missing_data: sync.held_for_missing_data,
            ..Evaluation::default()
        };
        if sync.replicas != view.replicas {
            let action = if sync.replicas > view.replicas {
                Action::ScaleUp
            } else {
                Action::ScaleDown
            };
            eval.records.push(Record {
                seconds: 0.0,
                target: self.target.clone(),
                action,
                outcome: Outcome::Carried,
                from: view.replicas.into(),
                to: sync.replicas.into(),
                reason: sync.reason,
                forecast: false,
            });
            eval.replicas = Some(sync.replicas);
        }
        eval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(per_pod: &[f64], target: f64) -> MetricInput {
        MetricInput::Pods {
            name: "m".into(),
            per_pod: per_pod.to_vec(),
            missing: 0,
            unready: 0,
            target,
        }
    }

    fn total(value: f64, target: f64) -> MetricInput {
        MetricInput::AverageValue {
            name: "t".into(),
            value,
            target,
        }
    }

    const S: i64 = 1000;

    // "if the current metric value is 200m, and the desired value is 100m, the number of
    // replicas will be doubled, since 200.0 / 100.0 == 2.0"
    #[test]
    fn doubles_at_twice_the_target() {
        let mut h = Hpa::new(1, 10);
        assert_eq!(h.sync(0, 1, &[pods(&[0.2], 0.1)]).replicas, 2);
        let mut h = Hpa::new(1, 10);
        assert_eq!(h.sync(0, 3, &[pods(&[0.2; 3], 0.1)]).replicas, 6);
    }

    // "If the current value is instead 50m, you'll scale down by half" — after the default
    // 300 s scale-down stabilization window.
    #[test]
    fn halves_at_half_the_target_after_the_window() {
        let mut h = Hpa::new(1, 10);
        let m = [pods(&[0.05; 4], 0.1)];
        assert_eq!(h.sync(0, 4, &m).replicas, 4, "window starts filled with 4");
        for t in (15..300).step_by(15) {
            assert_eq!(
                h.sync(t * S, 4, &m).replicas,
                4,
                "inside the window at {t} s"
            );
        }
        // The 4 recorded at 0 s is no longer after the window's start.
        assert_eq!(h.sync(300 * S, 4, &m).replicas, 2);
    }

    // "the control plane skips any scaling action if the ratio is sufficiently close to 1.0
    // (within a globally-configurable tolerance, 0.1 by default)"
    #[test]
    fn tolerance_holds_near_the_target() {
        let mut h = Hpa::new(1, 100);
        assert_eq!(h.sync(0, 10, &[pods(&[108.0; 10], 100.0)]).replicas, 10);
        assert_eq!(h.sync(0, 10, &[total(1090.0, 100.0)]).replicas, 10);
        assert_eq!(h.sync(15 * S, 10, &[total(1120.0, 100.0)]).replicas, 12);
    }

    // Default scale-up: "max(4 pods, 100 %) per 15 s".
    #[test]
    fn default_scale_up_policy_is_max_of_4_pods_and_100_percent() {
        let mut h = Hpa::new(1, 1000);
        assert_eq!(
            h.sync(0, 2, &[total(10_000.0, 1.0)]).replicas,
            6,
            "2 + 4 > 2 × 2"
        );
        let mut h = Hpa::new(1, 1000);
        assert_eq!(
            h.sync(0, 10, &[total(10_000.0, 1.0)]).replicas,
            20,
            "2 × 10 > 10 + 4"
        );
        // Within the same 15 s period the change already made counts against the limit.
        let mut h = Hpa::new(1, 1000);
        assert_eq!(h.sync(0, 2, &[total(10_000.0, 1.0)]).replicas, 6);
        assert_eq!(h.sync(10 * S, 6, &[total(10_000.0, 1.0)]).replicas, 6);
        assert_eq!(h.sync(15 * S, 6, &[total(10_000.0, 1.0)]).replicas, 12);
    }

    // "the highest recommendation within the window is used" for scale-down.
    #[test]
    fn scale_down_follows_the_highest_recommendation_in_the_window() {
        let mut h = Hpa::new(1, 100);
        let at = |n: f64| [total(n, 1.0)];
        assert_eq!(h.sync(0, 10, &at(10.0)).replicas, 10);
        assert_eq!(h.sync(60 * S, 10, &at(8.0)).replicas, 10);
        assert_eq!(h.sync(120 * S, 10, &at(5.0)).replicas, 10);
        // At 301 s the initial 10 has left the window; 8 (from 60 s) is the highest.
        assert_eq!(h.sync(301 * S, 10, &at(5.0)).replicas, 8);
        assert_eq!(h.sync(361 * S, 8, &at(5.0)).replicas, 5);
    }

    #[test]
    fn missing_metrics_scale_up_but_never_down() {
        let gone = MetricInput::Invalid {
            name: "heap".into(),
            reason: "no data".into(),
        };
        let mut h = Hpa::new(1, 100);
        let r = h.sync(0, 10, &[total(20.0, 1.0), gone.clone()]);
        assert_eq!(r.replicas, 20);
        let r = h.sync(900 * S, 20, &[total(2.0, 1.0), gone.clone()]);
        assert_eq!((r.replicas, r.held_for_missing_data), (20, true));
        let r = h.sync(1800 * S, 20, std::slice::from_ref(&gone));
        assert_eq!((r.replicas, r.held_for_missing_data), (20, true));
    }

    // "If there were any missing metrics, the control plane recomputes the average more
    // conservatively, assuming those pods were consuming 100% of the desired value in case of
    // a scale down, and 0% in case of a scale up."
    #[test]
    fn pods_without_metrics_dampen_the_change() {
        let h = Hpa::new(1, 100);
        let m = MetricInput::Pods {
            name: "heap".into(),
            per_pod: vec![150.0; 3],
            missing: 3,
            unready: 0,
            target: 100.0,
        };
        // Plain: ceil(1.5 × 3) = 5; with three pods at 0: average 75 → ratio < 1 flips, no change.
        assert_eq!(h.metric_replicas(6, &m).map(|r| r.0), Ok(6));
        let m = MetricInput::Pods {
            name: "heap".into(),
            per_pod: vec![50.0; 4],
            missing: 2,
            unready: 0,
            target: 100.0,
        };
        // Plain: ceil(0.5 × 4) = 2; with two pods at the target: ratio 0.66 → ceil(0.66 × 6) = 4.
        assert_eq!(h.metric_replicas(6, &m).map(|r| r.0), Ok(4));
    }

    #[test]
    fn bounds_and_scale_down_policy() {
        let mut h = Hpa::new(3, 8);
        assert_eq!(h.sync(0, 4, &[total(100.0, 1.0)]).replicas, 8);
        let mut h = Hpa::new(3, 8);
        h.behavior.scale_down.stabilization_window = Duration::ZERO;
        assert_eq!(h.sync(0, 8, &[total(1.0, 1.0)]).replicas, 3);
        assert_eq!(h.sync(0, 12, &[total(9.0, 1.0)]).replicas, 8);
    }
}
