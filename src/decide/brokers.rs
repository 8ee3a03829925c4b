//! Broker replicas: per-metric proposals, tolerance, stabilization windows, step limits,
//! cooldowns and bounds, with HPA semantics where they apply.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::forecast::{self, History};
use super::memory::{AheadMemory, BrokerMemory};
use super::{Action, Decision, Flags, Sample, cooldown_left, elapsed, flap, horizon};
use super::{sample_problem, units};
use crate::policy::{BrokerPolicy, Direction, ForecastPolicy, MetricPolicy};

/// Guards `ceil` against float noise: 3 × target must propose 3, not 4.
const EPSILON: f64 = 1e-9;

/// One metric's evaluation, as shown in status and by `evaluate`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricEvaluation {
    /// Metric name.
    pub name: String,
    /// Observed value, when one was usable.
    pub value: Option<f64>,
    /// Target per broker or target utilization.
    pub target: f64,
    /// Replicas this metric proposes, when it proposes any.
    pub proposed_replicas: Option<u32>,
    /// Load relative to the target, per broker (1 is on target): what the tolerance applies
    /// to, and the one figure comparable across totals and utilizations.
    pub ratio: Option<f64>,
    /// Sample time.
    pub observed_at: Option<Timestamp>,
    /// Why the value is not used, or only used for scaling up.
    pub problem: Option<String>,
    /// The arithmetic, in words.
    pub reason: String,
}

/// How much of the metric data could be used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Availability {
    /// Every metric had fresh, complete data.
    All,
    /// Some metrics were missing or partial: scale-up allowed, scale-down not.
    Partial(Vec<String>),
    /// No metric could be used: replicas hold.
    Unavailable(Vec<String>),
    /// Not evaluated (suspended).
    NotEvaluated,
}

/// Everything the broker engine concluded in one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerOutcome {
    /// The decision to carry out (or only record, in dry-run).
    pub decision: Decision,
    /// Replicas the policy wants after stabilization and bounds, before step limits and cooldowns.
    pub desired: u32,
    /// Per-metric evaluations.
    pub metrics: Vec<MetricEvaluation>,
    /// Data availability, for the MetricsAvailable condition.
    pub availability: Availability,
    /// Why the policy cannot reach what the metrics want, for the ScalingLimited condition.
    pub limited: Option<String>,
    /// Memory to keep; call [`BrokerMemory::note_action`] once the decision is carried out.
    pub memory: BrokerMemory,
    /// Whether the forecast made this a scale-up, or a larger one than the load seen now asks for.
    pub forecast_driven: bool,
    /// Whether flap damping holds capacity (scale-downs wait for the flap window's highest).
    pub holding: bool,
}

/// Decides the broker replica count. `samples[i]` belongs to `policy.metrics[i]`.
pub fn decide_brokers(
    policy: &BrokerPolicy,
    flags: Flags,
    max_staleness: Duration,
    current: u32,
    samples: &[Option<Sample>],
    memory: &BrokerMemory,
    now: Timestamp,
) -> BrokerOutcome {
    let inputs = BrokerInputs {
        policy,
        flags,
        max_staleness,
        current,
        samples,
        memory,
        now,
    };
    decide_brokers_with(&inputs, None)
}

/// Everything one broker evaluation reads.
#[derive(Clone, Copy)]
pub struct BrokerInputs<'a> {
    /// The broker settings.
    pub policy: &'a BrokerPolicy,
    /// Dry-run and suspend.
    pub flags: Flags,
    /// Samples older than this are missing.
    pub max_staleness: Duration,
    /// Replicas now.
    pub current: u32,
    /// `samples[i]` belongs to `policy.metrics[i]`.
    pub samples: &'a [Option<Sample>],
    /// What the previous evaluations remembered.
    pub memory: &'a BrokerMemory,
    /// The evaluation time.
    pub now: Timestamp,
}

/// Forecast settings and inputs, for policies with `forecast.enabled`.
pub struct Ahead<'a> {
    /// The checked settings.
    pub policy: ForecastPolicy,
    /// Past values of the metrics (the daily pattern's input); [`NoHistory`](super::forecast::NoHistory) when none.
    pub history: &'a (dyn History + Sync),
    /// Horizon under `auto` until one is measured.
    pub unmeasured_horizon: Duration,
}

/// Decides the broker replica count, with the forecast and flap damping when `ahead` is given.
/// Without it, the decision is exactly [`decide_brokers`]'s.
///
/// The steps, in order: evaluate each metric, recommend (the largest proposal, held while data
/// is missing, raised by the forecast), bound to `[min, max]`, stabilize (windows and flap
/// damping), limit the step, and apply the cooldowns.
pub fn decide_brokers_with(inputs: &BrokerInputs<'_>, ahead: Option<&Ahead<'_>>) -> BrokerOutcome {
    let target = format!("statefulset/{}", inputs.policy.stateful_set);
    if inputs.flags.suspend {
        return suspended(inputs, target);
    }
    let seen = Evaluated::new(inputs);
    let mut reasons = seen.reasons();
    let (current, min, max) = (
        inputs.current,
        inputs.policy.min_replicas,
        inputs.policy.max_replicas,
    );
    if let Some(why) = hold_without_data(current, seen.usable.is_empty(), min, max) {
        reasons.push(why.clone());
        return BrokerOutcome {
            decision: Decision {
                target,
                action: Action::Hold,
                from: current.into(),
                to: current.into(),
                reasons,
                dry_run: inputs.flags.dry_run,
            },
            desired: current,
            metrics: seen.metrics,
            availability: seen.availability,
            limited: (current < min || current > max).then_some(why),
            memory: inputs.memory.clone(),
            forecast_driven: false,
            holding: false,
        };
    }
    let mut memory = inputs.memory.clone();
    let (raw, forecast_driven) = recommend(inputs, ahead, &seen, &mut memory, &mut reasons);
    let (recommendation, mut limited) = bound(inputs.policy, inputs.current, raw);
    let level = tolerated_level(&seen, inputs.policy.tolerance, inputs.current);
    let (desired, holding) = stabilize(
        inputs,
        ahead,
        (!seen.usable.is_empty()).then_some(level),
        seen.problems.is_empty(),
        recommendation,
        &mut memory,
        &mut reasons,
    );
    let to = limit_step(inputs, desired, &mut reasons, &mut limited);
    let decision = apply_cooldowns(inputs, target, to, reasons, &mut limited);
    BrokerOutcome {
        forecast_driven: forecast_driven && decision.action == Action::ScaleUp,
        holding,
        decision,
        desired,
        metrics: seen.metrics,
        availability: seen.availability,
        limited,
        memory,
    }
}

/// The outcome while `spec.suspend` is true: nothing evaluated, nothing changed.
fn suspended(inputs: &BrokerInputs<'_>, target: String) -> BrokerOutcome {
    let current = inputs.current;
    BrokerOutcome {
        decision: Decision::hold(
            target,
            current.into(),
            "suspended: spec.suspend is true",
            inputs.flags.dry_run,
        ),
        desired: current,
        metrics: Vec::new(),
        availability: Availability::NotEvaluated,
        limited: None,
        memory: inputs.memory.clone(),
        forecast_driven: false,
        holding: false,
    }
}

/// Every metric evaluated, and what that says about the data.
struct Evaluated {
    metrics: Vec<MetricEvaluation>,
    /// `<metric>: <problem>` for each metric whose data is missing or partial.
    problems: Vec<String>,
    /// The proposals of the metrics that made one.
    usable: Vec<u32>,
    availability: Availability,
}

impl Evaluated {
    fn new(inputs: &BrokerInputs<'_>) -> Self {
        let policy = inputs.policy;
        let metrics: Vec<MetricEvaluation> = policy
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| {
                evaluate_metric(
                    m,
                    policy.tolerance,
                    inputs.current,
                    inputs.samples.get(i).and_then(Option::as_ref),
                    inputs.max_staleness,
                    inputs.now,
                )
            })
            .collect();
        let problems: Vec<String> = metrics
            .iter()
            .filter_map(|m| m.problem.as_ref().map(|p| format!("{}: {p}", m.name)))
            .collect();
        let usable: Vec<u32> = metrics.iter().filter_map(|m| m.proposed_replicas).collect();
        let availability = if usable.is_empty() {
            Availability::Unavailable(problems.clone())
        } else if problems.is_empty() {
            Availability::All
        } else {
            Availability::Partial(problems.clone())
        };
        Evaluated {
            metrics,
            problems,
            usable,
            availability,
        }
    }

    /// One reason per metric: its arithmetic and verdict.
    fn reasons(&self) -> Vec<String> {
        self.metrics
            .iter()
            .map(|m| format!("{}: {}", m.name, m.reason))
            .collect()
    }
}

/// The raw recommendation: the largest proposal, never below `current` while data is missing
/// or partial, raised by the forecast when there is one; and whether the forecast raised it
/// beyond both the proposals and `current`.
fn recommend(
    inputs: &BrokerInputs<'_>,
    ahead: Option<&Ahead<'_>>,
    seen: &Evaluated,
    memory: &mut BrokerMemory,
    reasons: &mut Vec<String>,
) -> (u32, bool) {
    let current = inputs.current;
    let mut raw = seen.usable.iter().copied().max().unwrap_or(current);
    if !seen.problems.is_empty() && raw < current {
        reasons.push(format!(
            "no scale-down while data is missing or partial: keeping at least {current}"
        ));
        raw = current;
    }
    let mut forecast_driven = false;
    if let Some(a) = ahead {
        let plain = raw;
        raw = raw.max(forecast_raise(
            inputs,
            a,
            &seen.metrics,
            memory,
            reasons,
            plain,
        ));
        forecast_driven = raw > plain && raw > current;
        // Like the forecast, the flap level is not acted on while data is missing or partial.
        if seen.problems.is_empty() {
            raw = flap_raise(inputs, plain, raw, reasons);
        }
    }
    // Added brokers that carry no share yet are not load a further broker would take.
    if let Some(s) = inputs.memory.settling.filter(|s| s.active(inputs.now))
        && raw > current
    {
        reasons.push(settling_reason(s, raw, current));
        raw = current;
        forecast_driven = false;
    }
    (raw, forecast_driven)
}

/// While flapping, a scale-up goes straight to the flap level (the fewest brokers that kept the
/// flap window's load within tolerance): the swings seen come back, and one action that meets
/// them replaces several that follow each rise.
///
/// When only the forecast asks for more, the jump waits until it asks for more than the swing's
/// low step ([`swing_low`]): on a slow rise from a trough, a jump at its first forecast would
/// pay the crest's brokers through the whole rise; from the low step, where a swing is followed
/// down to, the first forecast jumps, so a swing is one step each way. On a very long swing
/// ([`swing_rise_middle`]) that first jump goes to the middle only. Load already beyond
/// tolerance (`plain` above `current`) jumps to the level at once.
fn flap_raise(inputs: &BrokerInputs<'_>, plain: u32, raw: u32, reasons: &mut Vec<String>) -> u32 {
    let previous = &inputs.memory.ahead;
    let window = flap_window(inputs.policy);
    let current = inputs.current;
    let Some(level) = previous.level_within(inputs.now, window) else {
        return raw;
    };
    if !previous.holding || raw <= current || level <= raw {
        return raw;
    }
    let low = swing_low(inputs.memory, inputs.now, level);
    if plain <= current && raw <= low {
        return raw;
    }
    if plain <= current
        && let Some(middle) = swing_rise_middle(low, level)
        && current < middle
        && raw <= middle
    {
        reasons.push(format!(
            "load is flapping: scaling up a long swing in two steps, first to {middle}, the middle between its low step {low} and the level {level}"
        ));
        return middle;
    }
    reasons.push(format!(
        "load is flapping: scaling up to {level} at once, the fewest brokers that kept the load of the last {} within tolerance",
        units::duration(window)
    ));
    level
}

/// Where a rise that only the forecast asks for goes first on a very long swing (the low step
/// at least [`flap::TWO_STEP_RISE`] below the level): the middle between the `low` step and
/// the `level`, as on the way down ([`swing_middle`]); `None` on a shorter swing, which jumps
/// to the level. A jump from the low step at the first forecast pays the crest's brokers
/// through the whole rise; the middle carries the load until the forecast asks for more.
fn swing_rise_middle(low: u32, level: u32) -> Option<u32> {
    let gap = level.checked_sub(low)?;
    (gap >= flap::TWO_STEP_RISE).then(|| low + gap / 2)
}

/// The recommendation clamped to `[min, max]`, and why the policy cannot reach the raw one
/// (for the ScalingLimited condition).
fn bound(policy: &BrokerPolicy, current: u32, raw: u32) -> (u32, Option<String>) {
    let (min, max) = (policy.min_replicas, policy.max_replicas);
    let limited = if raw > max {
        Some(format!(
            "metrics want {raw} brokers, pinned at maxReplicas {max}"
        ))
    } else if raw < min && current <= min {
        Some(format!(
            "metrics want {raw} brokers, held at minReplicas {min}"
        ))
    } else {
        None
    };
    (raw.clamp(min, max), limited)
}

/// Fewest brokers that keep the load seen now within tolerance on every usable metric: the
/// load in brokers at target (ratio × the brokers it is spread over) over 1 + tolerance. `0`
/// when no metric is usable.
fn tolerated_level(seen: &Evaluated, tolerance: f64, current: u32) -> u32 {
    seen.metrics
        .iter()
        .filter(|m| m.proposed_replicas.is_some())
        .filter_map(|m| m.ratio)
        .map(|r| {
            (r * f64::from(current.max(1)) / (1.0 + tolerance) - EPSILON)
                .ceil()
                .clamp(0.0, f64::from(u32::MAX)) as u32
        })
        .max()
        .unwrap_or(0)
}

/// How far back flap damping looks for the load it holds capacity for: the flap window, or the
/// scale-down window when that is longer.
fn flap_window(policy: &BrokerPolicy) -> Duration {
    flap::FLAP_WINDOW.max(policy.scale_down.window)
}

/// The swing's low step: a third of the way from the lowest recommendation of the flap window
/// (the troughs) up to the flap `level` (what the crests need). With one step down and one up
/// per swing, the broker-hours saved are (level − step) × the time the load stays below the
/// step; on a sine that product is largest about a third of the way up (at the middle it is
/// half the time for half the swing, at the trough nothing), and the window's lag before the
/// step favours a low one.
fn swing_low(memory: &BrokerMemory, now: Timestamp, level: u32) -> u32 {
    let trough = memory
        .range_within(now, flap::FLAP_WINDOW)
        .map_or(level, |(lo, _)| lo.min(level));
    trough + (level - trough) / 3
}

/// The middle between the flap `level` and a swing's `low` step, where a long swing (the low
/// step at least [`flap::TWO_STEP_SWING`] below the level) is followed down to first; `None` for
/// a shorter swing, which goes to its low step in one. On a long swing the scale-down window
/// allows half the fall well before it allows the low step, and one step would keep the
/// crest's brokers until then; the second step (to the low step) costs one action more a swing.
fn swing_middle(low: u32, level: u32) -> Option<u32> {
    let gap = level.checked_sub(low)?;
    (gap >= flap::TWO_STEP_SWING).then(|| low + gap / 2)
}

/// Where a swing is followed down to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SwingStep {
    /// The swing's low step ([`swing_low`]).
    Low(u32),
    /// The first of two steps on a long swing ([`swing_middle`]), on the way to `low`.
    Middle {
        /// The replicas of this step.
        to: u32,
        /// The swing's low step, the second step.
        low: u32,
    },
}

impl SwingStep {
    /// The replicas this step goes to.
    fn to(self) -> u32 {
        match self {
            SwingStep::Low(to) | SwingStep::Middle { to, .. } => to,
        }
    }
}

/// While flapping, where a scale-down follows the swing down instead of holding the flap
/// `level`: to the swing's low step ([`swing_low`]), once the crest has passed (the load now
/// needs [`flap::MIN_SWING`] fewer brokers than the highest level since the last scale-up) and
/// the scale-down window allows that far (its ceiling `window_ceiling` is at or below the low
/// step); on a long swing first to its middle ([`swing_middle`]), once the window allows that.
/// `None` otherwise. One step a swing (two on a long one): from the low step the next one is the
/// scale-up that [`flap_raise`] makes straight to the level, and no step down follows from it (a
/// trough below it is held). Following the window further, a few brokers at a time as it
/// allowed, took three steps each way on long swings.
fn follows_swing_down(
    inputs: &BrokerInputs<'_>,
    memory: &BrokerMemory,
    level: u32,
    window_ceiling: u32,
) -> Option<SwingStep> {
    let BrokerInputs {
        policy,
        current,
        now,
        ..
    } = *inputs;
    let &(noted, needed_now) = memory.ahead.levels.last()?;
    if noted != now {
        // No usable load now: nothing says the crest has passed.
        return None;
    }
    let since_up = inputs
        .memory
        .last_scale_up
        .map_or(flap_window(policy), |t| elapsed(now, t));
    let crest = memory.ahead.level_within(now, since_up).unwrap_or(0);
    let past_crest = crest >= needed_now.saturating_add(flap::MIN_SWING);
    let low = swing_low(memory, now, level);
    if !past_crest || low.saturating_add(flap::MIN_SWING) > level {
        return None;
    }
    if window_ceiling <= low && current >= low.saturating_add(flap::MIN_SWING) {
        return Some(SwingStep::Low(low));
    }
    let middle = swing_middle(low, level)?;
    (window_ceiling <= middle && current >= middle.saturating_add(flap::MIN_SWING))
        .then_some(SwingStep::Middle { to: middle, low })
}

/// While flapping, on complete data: the brokers most crests of the flap window needed within
/// tolerance ([`typical_crest`]), or what the load needed within the last horizon when that is
/// more. A crest above the typical one is met by a scale-up ([`flap_raise`]) and its brokers are
/// given back once it has passed: the scale-down window's highest recommendation is not what
/// the swings need, since a recommendation within tolerance only repeats the replicas of that
/// moment ("keep 8" at a crest 7 brokers carry), and holding the hour's highest crest pays it
/// through every swing.
fn crest_hold(memory: &BrokerMemory, recent: Duration, now: Timestamp, level: u32) -> u32 {
    let typical = typical_crest(&memory.ahead, now, level);
    let needed = memory.ahead.level_within(now, recent).unwrap_or(level);
    typical.max(needed)
}

/// How far back "the load of now" reaches for giving brokers back while the load swings: one
/// horizon and one interval (the time a broker asked for again would take to carry load, so a
/// rise that began within it is still covered), at most the scale-down window.
fn recent_window(a: &Ahead<'_>, memory: &BrokerMemory, policy: &BrokerPolicy) -> Duration {
    let (horizon, _) = horizon::horizon(&a.policy, &memory.ahead, a.unmeasured_horizon);
    (horizon + a.policy.interval).min(policy.scale_down.window)
}

/// A trough [`follows_trough`] follows down.
struct Trough {
    /// Replicas it goes down to.
    to: u32,
    /// Crests of the flap window.
    crests: usize,
    /// Mean time between them: the swing's period.
    period: Duration,
    /// How far back the load's need was taken.
    recent: Duration,
}

/// When the level swings regularly ([`flap::MIN_CRESTS`] crests or more in the flap window,
/// flapping or not), where a scale-down follows one of its troughs below what the scale-down
/// window or the crests' hold keeps: to the fewest brokers that kept the load of the last
/// [`recent_window`] within tolerance, never fewer than this evaluation recommends, once no
/// action was taken for [`flap::TROUGH_EVERY_SWINGS`] swing periods, and only within a third of
/// a period after the last crest was left (the level fell [`flap::MIN_SWING`] below it). A
/// window as long as the swing keeps the crest's brokers through every trough; following each
/// trough would cost about the HPA's actions, one every few swings costs a fraction of them and
/// gives back a broker for most of a trough. The way back up is the scale-up the forecast (or
/// the load) asks for as the next crest comes.
fn follows_trough(
    inputs: &BrokerInputs<'_>,
    memory: &BrokerMemory,
    recent: Duration,
    recommendation: u32,
) -> Option<Trough> {
    let now = inputs.now;
    let crests = memory.ahead.crests.within(now);
    if crests < flap::MIN_CRESTS {
        return None;
    }
    let period = flap::FLAP_WINDOW / u32::try_from(crests).ok()?;
    let quiet = inputs
        .memory
        .last_change()
        .is_none_or(|t| elapsed(now, t) >= period * flap::TROUGH_EVERY_SWINGS);
    let to = memory.ahead.level_within(now, recent)?.max(recommendation);
    // Later in the trough the load is on its way back up, and a broker given back is asked for
    // again within a sample or two.
    let young = memory
        .ahead
        .crests
        .peaks
        .last()
        .is_some_and(|(t, _)| elapsed(now, *t) <= period / 3);
    (quiet && young && to < inputs.current).then_some(Trough {
        to,
        crests,
        period,
        recent,
    })
}

/// What most crests of the flap window needed ([`flap::Crests::typical`]), at most the flap
/// `level`; the `level` itself before three crests were seen.
fn typical_crest(ahead: &AheadMemory, now: Timestamp, level: u32) -> u32 {
    ahead.crests.typical(now).unwrap_or(level).min(level)
}

/// Why the crests' level is held, in words.
fn crest_message(turns: usize, held: u32, highest: u32, window: Duration) -> String {
    format!(
        "load is flapping: the recommendation changed direction {turns} times in the last {}; holding {held} brokers, what most crests of the last {} needed within tolerance (the highest needed {highest}: a crest beyond tolerance on {held} is met by a scale-up, given back once it has passed)",
        units::duration(flap::FLAP_WINDOW),
        units::duration(window)
    )
}

/// Stabilization (HPA): up to the lowest recommendation in the up window, down to the highest
/// in the down window, counting the one made now. While flapping, scale-downs go no lower than
/// the flap level: the fewest brokers that kept every load of the flap window within tolerance
/// (so the next swing like those seen needs no scale-up), except for one large step down (two on
/// a long swing) that follows a swing once its crest has passed ([`follows_swing_down`]), and
/// except that on `complete` data, when no scale-up is asked for, they go down to what most
/// crests needed ([`crest_hold`]) even below the window's ceiling. With `ahead`, flapping or
/// not, one trough in a few regular swings is followed below all that ([`follows_trough`]).
/// Records the recommendation and, with `ahead`, the level, its crests (complete data only) and
/// direction changes in `memory` (only when `level` is given, i.e. some metric was usable).
/// Returns the desired replicas (within bounds) and whether flap damping holds capacity.
fn stabilize(
    inputs: &BrokerInputs<'_>,
    ahead: Option<&Ahead<'_>>,
    level: Option<u32>,
    complete: bool,
    recommendation: u32,
    memory: &mut BrokerMemory,
    reasons: &mut Vec<String>,
) -> (u32, bool) {
    let BrokerInputs {
        policy,
        current,
        now,
        ..
    } = *inputs;
    let mut keep = policy.scale_up.window.max(policy.scale_down.window);
    if ahead.is_some() {
        keep = keep.max(flap::FLAP_WINDOW);
    }
    if let Some(level) = level {
        if let Some(a) = ahead {
            let previous = inputs.memory.recommendations.last().map(|r| r.1);
            let turns = &mut memory.ahead.turns;
            turns.note(previous, recommendation, now);
            memory.ahead.holding = turns.flapping(
                now,
                a.policy.flap_turns_per_hour,
                inputs.memory.ahead.holding,
            );
            memory.ahead.note_level(now, level, flap_window(policy));
            // A level from partial data understates the load: it marks no crest.
            if complete {
                memory.ahead.crests.note(level, now);
            }
        }
        memory.record(now, recommendation, keep);
    }
    let in_window = |window: Duration| {
        let (lo, hi) = memory
            .range_within(now, window)
            .unwrap_or((recommendation, recommendation));
        (lo.min(recommendation), hi.max(recommendation))
    };
    let (up_floor, _) = in_window(policy.scale_up.window);
    let (_, window_ceiling) = in_window(policy.scale_down.window);
    let (min, max) = (policy.min_replicas, policy.max_replicas);
    let holding = ahead.is_some() && memory.ahead.holding;
    // Where brokers may be given back below the window (the crests' hold, a trough): with the
    // forecast, on complete data, and only where no scale-up is asked for (never refusing one);
    // with how far back "the load of now" reaches.
    let giving_back = ahead
        .filter(|_| complete && recommendation <= current)
        .map(|a| recent_window(a, memory, policy));
    let mut down_ceiling = window_ceiling;
    let mut flap_message = None;
    let mut following = false;
    if holding {
        let level = memory
            .ahead
            .level_within(now, flap_window(policy))
            .unwrap_or(recommendation)
            .clamp(min, max);
        let turns = memory.ahead.turns.within(now);
        flap_message = Some(flap_message_for(turns, level, flap_window(policy)));
        // Not the highest recommendation of the hour: a crest's recommendation aims at the
        // target, and one made within tolerance is just the replicas of that moment; the level
        // is what the swings need.
        down_ceiling = window_ceiling.max(level);
        if let Some(recent) = giving_back
            && let held = crest_hold(memory, recent, now, level)
            && held < down_ceiling
        {
            down_ceiling = held;
            flap_message = Some(crest_message(turns, held, level, flap_window(policy)));
        }
        if let Some(step) = follows_swing_down(inputs, memory, level, window_ceiling) {
            down_ceiling = step.to();
            following = true;
            reasons.push(match step {
                SwingStep::Low(low) => format!(
                    "load is flapping and its crest has passed: following the swing down to its low step, {low}, in one step (the scale-down window allows {window_ceiling}; {level} held otherwise)"
                ),
                SwingStep::Middle { to, low } => format!(
                    "load is flapping and its crest has passed: following a long swing down in two steps, first to {to}, the middle between the level {level} and its low step {low} (the scale-down window allows {window_ceiling}; {level} held otherwise)"
                ),
            });
        }
    }
    if !following
        && let Some(recent) = giving_back
        && let Some(trough) = follows_trough(inputs, memory, recent, recommendation)
        && trough.to < down_ceiling
    {
        reasons.push(format!(
            "the load swings ({} crests in the last {}, one every {}) and the load of the last {} needs only {} brokers within tolerance: following this trough down, at most one every {} swings ({down_ceiling} held otherwise)",
            trough.crests,
            units::duration(flap::FLAP_WINDOW),
            units::duration(trough.period),
            units::duration(trough.recent),
            trough.to,
            flap::TROUGH_EVERY_SWINGS,
        ));
        down_ceiling = trough.to;
        following = true;
    }
    if ahead.is_some() {
        memory.ahead.flap_message.clone_from(&flap_message);
    }
    let stabilized = current.max(up_floor).min(down_ceiling);
    // Below what the window alone allows: only flap damping's hold of the crests did that.
    let below_window = stabilized < current.max(up_floor).min(window_ceiling);
    if stabilized != recommendation || below_window {
        if recommendation > current {
            reasons.push(format!(
                "scale-up stabilization window {}: lowest recommendation in it is {up_floor}",
                units::duration(policy.scale_up.window)
            ));
        } else {
            reasons.push(format!(
                "scale-down stabilization window {}: highest recommendation in it is {window_ceiling}",
                units::duration(policy.scale_down.window)
            ));
            if let Some(message) = flap_message
                .filter(|_| (down_ceiling > window_ceiling || below_window) && !following)
            {
                reasons.push(message);
            }
        }
    }
    let desired = stabilized.clamp(min, max);
    if desired != stabilized {
        reasons.push(format!("bounded to [{min}, {max}]"));
    }
    (desired, holding)
}

/// The replicas one action may go to: `desired`, limited by `maxStep` in its direction, and
/// within bounds (a user-declared range is never left or stayed out of, whatever the step).
fn limit_step(
    inputs: &BrokerInputs<'_>,
    desired: u32,
    reasons: &mut Vec<String>,
    limited: &mut Option<String>,
) -> u32 {
    let (policy, current) = (inputs.policy, inputs.current);
    let mut to = desired;
    if to > current {
        let step = allowed_step(&policy.scale_up, current, true);
        if to - current > step {
            to = current + step;
            reasons.push(format!("limited to +{step} by scaleUp.maxStep"));
            limited
                .get_or_insert_with(|| format!("scale-up to {desired} limited to {to} per step"));
        }
    } else if to < current {
        let step = allowed_step(&policy.scale_down, current, false);
        if current - to > step {
            to = current - step;
            reasons.push(format!("limited to -{step} by scaleDown.maxStep"));
        }
    }
    to.clamp(policy.min_replicas, policy.max_replicas)
}

/// The decision to go to `to`, or to hold while a cooldown runs.
fn apply_cooldowns(
    inputs: &BrokerInputs<'_>,
    target: String,
    to: u32,
    mut reasons: Vec<String>,
    limited: &mut Option<String>,
) -> Decision {
    let BrokerInputs {
        policy,
        flags,
        current,
        memory,
        now,
        ..
    } = *inputs;
    let action = match to.cmp(&current) {
        std::cmp::Ordering::Greater => Action::ScaleUp,
        std::cmp::Ordering::Less => Action::ScaleDown,
        std::cmp::Ordering::Equal => Action::Hold,
    };
    let blocked = match action {
        Action::ScaleUp => cooldown_block("scale-up", &policy.scale_up, memory.last_scale_up, now),
        Action::ScaleDown => {
            cooldown_block("scale-down", &policy.scale_down, memory.last_change(), now)
        }
        _ => None,
    };
    let (action, to) = if let Some(why) = blocked {
        reasons.push(format!("{to} wanted, but {why}"));
        limited.get_or_insert(why);
        (Action::Hold, current)
    } else {
        (action, to)
    };
    Decision {
        target,
        action,
        from: current.into(),
        to: to.into(),
        reasons,
        dry_run: flags.dry_run,
    }
}

/// Why nothing may change whatever the bounds say: replicas at 0 are a cluster someone paused,
/// and with no usable metric the promise is that replicas hold (bounds are enforced only on
/// evidence, so an outage never moves a StatefulSet that sits outside them).
fn hold_without_data(current: u32, no_data: bool, min: u32, max: u32) -> Option<String> {
    if current == 0 {
        return Some(
            "replicas are 0: the StatefulSet is paused; nothing changes until it is scaled up"
                .into(),
        );
    }
    if !no_data {
        return None;
    }
    Some(if current < min {
        format!("no usable metrics: holding {current} replicas, below minReplicas {min}")
    } else if current > max {
        format!("no usable metrics: holding {current} replicas, above maxReplicas {max}")
    } else {
        format!("no usable metrics: holding {current} replicas")
    })
}

/// Replicas the forecast asks for, capped while flapping: the flap level already keeps the swings
/// seen this hour within tolerance, and a trend extrapolated on the rise of a swing must not buy
/// brokers beyond it.
fn forecast_raise(
    inputs: &BrokerInputs<'_>,
    a: &Ahead<'_>,
    metrics: &[MetricEvaluation],
    memory: &mut BrokerMemory,
    reasons: &mut Vec<String>,
    plain: u32,
) -> u32 {
    let wanted = look_ahead(inputs, a, metrics, memory, reasons);
    let previous = &inputs.memory.ahead;
    let window = flap_window(inputs.policy);
    if previous.holding
        && let Some(level) = previous.level_within(inputs.now, window)
        && let typical = typical_crest(previous, inputs.now, level)
        && wanted > typical.max(plain)
    {
        let cap = typical.max(plain);
        reasons.push(format!(
            "forecast capped at {cap} while flapping: what most crests of the last {} needed within tolerance",
            units::duration(window)
        ));
        return cap;
    }
    wanted
}

/// Why no further scale-up is made while added brokers settle, in words.
///
/// An added broker that carries no bundles yet still reports its idle heap, so summing
/// utilization over brokers (HPA semantics) counts it as load and asks for one more broker; and
/// while bundles move, the broker that lost one reports its old rate until its next stats
/// refresh, so a cluster total counts the bundle twice. Neither is load that a broker more would
/// carry.
fn settling_reason(s: super::Settling, wanted: u32, current: u32) -> String {
    let until = match s.until {
        None => "the rebalance is moving bundles onto them".to_string(),
        Some(t) => format!("their rates settle until {t}"),
    };
    format!(
        "{} added broker(s) not carrying their share yet ({until}): {wanted} wanted, holding \
         {current} until then",
        s.brokers
    )
}

/// Why capacity is held, in words: the turns per hour and the held capacity.
fn flap_message_for(turns: usize, level: u32, window: Duration) -> String {
    format!(
        "load is flapping: the recommendation changed direction {turns} times in the last {}; holding {level} brokers, the fewest that kept the load of the last {} within tolerance (scale-downs go no lower but for one large step once a crest has passed, two on a long swing; scale-ups above the swing's low step straight to it, by way of the middle on a very long swing)",
        units::duration(flap::FLAP_WINDOW),
        units::duration(window)
    )
}

/// Replicas the forecast asks for (`0` when it asks for nothing); notes samples and readiness in
/// `memory` and explains itself in `reasons`. Only cluster totals are forecast (a utilization
/// falls as brokers are added, so its trend is not the load's), only from a complete, fresh
/// sample, and a proposal only counts beyond the tolerance, like any other.
fn look_ahead(
    inputs: &BrokerInputs<'_>,
    a: &Ahead<'_>,
    metrics: &[MetricEvaluation],
    memory: &mut BrokerMemory,
    reasons: &mut Vec<String>,
) -> u32 {
    let BrokerInputs {
        policy,
        current,
        samples,
        now,
        ..
    } = *inputs;
    horizon::observe(
        &mut memory.ahead,
        memory.last_scale_up,
        current,
        samples,
        now,
    );
    let (horizon, horizon_text) = horizon::horizon(&a.policy, &memory.ahead, a.unmeasured_horizon);
    let look = horizon + a.policy.interval;
    let mut best = 0;
    let mut notes = Vec::new();
    for (i, (m, e)) in policy.metrics.iter().zip(metrics).enumerate() {
        if m.kind.is_utilization() {
            continue;
        }
        let sample = samples.get(i).and_then(Option::as_ref);
        let (Some(s), Some(value)) = (sample, e.value) else {
            // Missing, stale or broken: the trend starts over once data returns.
            memory.ahead.clear_samples(&m.name);
            notes.push(format!("{}: no forecast without data", m.name));
            continue;
        };
        let complete = s.reporting.is_none_or(|n| n >= current);
        if !complete {
            notes.push(format!("{}: no forecast from partial data", m.name));
            continue;
        }
        memory.ahead.push_sample(&m.name, s.observed_at, value);
        let fmt = |v: f64| units::metric_value(m.kind, v);
        let series = memory.ahead.series(&m.name);
        let f = match forecast::forecast(series, value, a.history, i, now, look, &fmt) {
            Ok(f) => f,
            Err(none) => {
                notes.push(none.describe(&m.name));
                continue;
            }
        };
        let per_broker = f.value / f64::from(current.max(1));
        let ratio = per_broker / m.target;
        // Only a rise beyond the tolerance counts: a forecast adds brokers ahead of load, it
        // never holds back (or causes) a scale-down.
        let proposal = if ratio - 1.0 > policy.tolerance || current == 0 {
            (f.value / m.target - EPSILON)
                .ceil()
                .clamp(0.0, f64::from(u32::MAX)) as u32
        } else {
            0
        };
        best = best.max(proposal);
        notes.push(format!(
            "{}: {} expected in {} ({}) from {} → {}",
            m.name,
            fmt(f.value),
            units::duration(look),
            horizon_text,
            f.from,
            if proposal > current {
                format!("propose {proposal}")
            } else {
                "no more brokers needed".into()
            }
        ));
    }
    let text = format!("forecast: {}", notes.join("; "));
    reasons.push(text.clone());
    memory.ahead.last = Some(text);
    best
}

/// Largest change one action may make from `current`: the larger of the configured limits.
fn allowed_step(d: &Direction, current: u32, up: bool) -> u32 {
    let by_percent = d.max_percent.map(|p| {
        let v = f64::from(current) * f64::from(p) / 100.0;
        if up {
            v.ceil() as u32
        } else {
            v.floor() as u32
        }
    });
    match (d.max_replicas, by_percent) {
        (None, None) => u32::MAX,
        (a, b) => a.unwrap_or(0).max(b.unwrap_or(0)).max(1),
    }
}

fn cooldown_block(
    what: &str,
    d: &Direction,
    last: Option<Timestamp>,
    now: Timestamp,
) -> Option<String> {
    let last = last?;
    let since = elapsed(now, last);
    (since < d.cooldown).then(|| {
        format!(
            "{what} cooldown {}: last change {} ago ({} left)",
            units::duration(d.cooldown),
            units::duration(since),
            cooldown_left(d.cooldown, since)
        )
    })
}

fn evaluate_metric(
    m: &MetricPolicy,
    tolerance: f64,
    current: u32,
    sample: Option<&Sample>,
    max_staleness: Duration,
    now: Timestamp,
) -> MetricEvaluation {
    let target_text = units::metric_value(m.kind, m.target);
    let mut eval = MetricEvaluation {
        name: m.name.clone(),
        value: None,
        target: m.target,
        proposed_replicas: None,
        ratio: None,
        observed_at: sample.map(|s| s.observed_at),
        problem: None,
        reason: String::new(),
    };
    if let Some(problem) = sample_problem(sample, max_staleness, now) {
        eval.reason = format!("{problem}, not used");
        eval.problem = Some(problem);
        return eval;
    }
    let Some(s) = sample else { return eval };
    let value = s.value;
    eval.value = Some(value);
    let value_text = units::metric_value(m.kind, value);

    let (ratio, proposal, arithmetic) = if m.kind.is_utilization() {
        if current == 0 {
            eval.problem = Some("no brokers running to average over".into());
            eval.reason = format!("{value_text} with 0 brokers, not used");
            return eval;
        }
        // Brokers that do not report yet (just started) carry no load. Counting them at the
        // reporting brokers' utilization would make a scale-up still warming up ask for more,
        // again and again; like the HPA, count them as idle (scale-down is blocked anyway).
        let base = s.reporting.map_or(current, |n| n.min(current));
        if base == 0 {
            eval.problem = Some("no broker reported".into());
            eval.reason = format!("{value_text} from 0 of {current} brokers, not used");
            return eval;
        }
        let proposal = (f64::from(base) * value / m.target - EPSILON).ceil();
        let ratio = f64::from(base) * value / (f64::from(current) * m.target);
        let over = if base < current {
            format!("{base} of {current}")
        } else {
            current.to_string()
        };
        (
            ratio,
            proposal,
            format!("{value_text} average over {over} brokers vs target {target_text}"),
        )
    } else {
        let per_broker = value / f64::from(current.max(1));
        let ratio = per_broker / m.target;
        let proposal = (value / m.target - EPSILON).ceil();
        let per_text = units::metric_value(m.kind, per_broker);
        (
            ratio,
            proposal,
            format!(
                "{value_text} over {current} brokers = {per_text} per broker vs target {target_text}"
            ),
        )
    };
    eval.ratio = Some(ratio);
    let proposal = proposal.clamp(0.0, f64::from(u32::MAX)) as u32;
    let within = (ratio - 1.0).abs() <= tolerance && current > 0;
    let proposed = if within { current } else { proposal };
    eval.proposed_replicas = Some(proposed);
    let verdict = if within {
        format!(
            "within tolerance {}% → keep {current}",
            units::number(tolerance * 100.0)
        )
    } else if ratio > 1.0 {
        format!("above target → propose {proposed}")
    } else {
        format!("below target → propose {proposed}")
    };
    eval.reason = format!("{arithmetic}, {verdict}");
    if let Some(n) = s.reporting
        && n < current
    {
        eval.problem = Some(format!("only {n} of {current} brokers reported"));
        eval.reason.push_str(&format!(
            " (only {n} of {current} brokers reported: scale-up only)"
        ));
    }
    eval
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MetricType;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn policy() -> BrokerPolicy {
        let direction = |window| Direction {
            window: Duration::from_secs(window),
            cooldown: Duration::ZERO,
            max_replicas: None,
            max_percent: None,
        };
        BrokerPolicy {
            stateful_set: "broker".into(),
            min_replicas: 1,
            max_replicas: 40,
            tolerance: 0.1,
            metrics: vec![MetricPolicy {
                name: "throughput".into(),
                kind: MetricType::Throughput,
                target: 100.0,
                query: None,
            }],
            scale_up: direction(0),
            scale_down: direction(150),
        }
    }

    /// The memory after a crest that needed `level` 10 minutes ago, a trough that asked for
    /// `trough` 40 minutes ago, the last scale-up 15 minutes ago, and a load needing `now_needs`
    /// noted now (at 3600).
    fn after_crest(trough: u32, level: u32, now_needs: u32) -> BrokerMemory {
        let mut m = BrokerMemory {
            recommendations: vec![(at(1200), trough), (at(3000), level)],
            last_scale_up: Some(at(2700)),
            ..BrokerMemory::default()
        };
        m.ahead.levels = vec![(at(3000), level), (at(3600), now_needs)];
        m
    }

    /// The engine's inputs for `current` brokers with `memory`, an hour in.
    fn inputs<'a>(p: &'a BrokerPolicy, memory: &'a BrokerMemory, current: u32) -> BrokerInputs<'a> {
        BrokerInputs {
            policy: p,
            flags: Flags::default(),
            max_staleness: Duration::from_secs(120),
            current,
            samples: &[],
            memory,
            now: at(3600),
        }
    }

    fn step(
        memory: &BrokerMemory,
        current: u32,
        level: u32,
        window_ceiling: u32,
    ) -> Option<SwingStep> {
        let p = policy();
        follows_swing_down(&inputs(&p, memory, current), memory, level, window_ceiling)
    }

    #[test]
    fn the_middle_is_only_for_swings_of_four_brokers_or_more() {
        assert_eq!(swing_middle(6, 9), None);
        assert_eq!(swing_middle(6, 10), Some(8));
        assert_eq!(swing_middle(6, 11), Some(8));
        assert_eq!(swing_middle(12, 19), Some(15));
        assert_eq!(swing_middle(u32::MAX - 1, u32::MAX), None);
    }

    #[test]
    fn a_long_swing_is_followed_down_to_its_middle_then_to_its_low_step() {
        // Trough 7, level 19: low step 7 + 12 / 3 = 11, middle 11 + 8 / 2 = 15.
        let m = after_crest(7, 19, 12);
        // The window allows 16 only: held.
        assert_eq!(step(&m, 19, 19, 16), None);
        // It allows the middle: the first step.
        assert_eq!(
            step(&m, 19, 19, 15),
            Some(SwingStep::Middle { to: 15, low: 11 })
        );
        assert_eq!(
            step(&m, 19, 19, 13),
            Some(SwingStep::Middle { to: 15, low: 11 })
        );
        // On the middle, nothing more until the window allows the low step.
        assert_eq!(step(&m, 15, 19, 13), None);
        assert_eq!(step(&m, 15, 19, 11), Some(SwingStep::Low(11)));
        // A window that allows the low step at once skips the middle.
        assert_eq!(step(&m, 19, 19, 10), Some(SwingStep::Low(11)));
    }

    #[test]
    fn two_steps_from_four_brokers_between_the_low_step_and_the_level() {
        // Trough 7, level 12: low step 7 + 5 / 3 = 8, 4 below the level: middle 10.
        let m = after_crest(7, 12, 8);
        assert_eq!(swing_low(&m, at(3600), 12), 8);
        assert_eq!(
            step(&m, 12, 12, 10),
            Some(SwingStep::Middle { to: 10, low: 8 })
        );
        // Trough 7, level 11: low step 8, 3 below the level: one step, once the window allows it.
        let m = after_crest(7, 11, 8);
        assert_eq!(step(&m, 11, 11, 9), None);
        assert_eq!(step(&m, 11, 11, 8), Some(SwingStep::Low(8)));
    }

    /// Flapping memory with a trough that asked for `trough` 40 minutes ago and a level of
    /// `level` 10 minutes ago.
    fn flapping(trough: u32, level: u32) -> BrokerMemory {
        let mut m = BrokerMemory {
            recommendations: vec![(at(1200), trough), (at(3000), level)],
            ..BrokerMemory::default()
        };
        m.ahead.holding = true;
        m.ahead.levels = vec![(at(3000), level)];
        m
    }

    /// [`flap_raise`] on `current` brokers with the load asking for `plain` and the forecast
    /// for `raw`.
    fn raise(memory: &BrokerMemory, current: u32, plain: u32, raw: u32) -> u32 {
        let p = policy();
        flap_raise(&inputs(&p, memory, current), plain, raw, &mut Vec::new())
    }

    #[test]
    fn the_rise_middle_is_only_for_swings_of_six_brokers_or_more() {
        assert_eq!(swing_rise_middle(10, 15), None);
        assert_eq!(swing_rise_middle(10, 16), Some(13));
        assert_eq!(swing_rise_middle(11, 19), Some(15));
        assert_eq!(swing_rise_middle(u32::MAX - 5, u32::MAX), None);
    }

    #[test]
    fn a_very_long_swing_rises_to_its_middle_then_to_the_level() {
        // Trough 7, level 19: low step 11, 8 below the level: middle 15.
        let m = flapping(7, 19);
        // From the low step, a forecast of 13 goes to the middle; one beyond it to the level.
        assert_eq!(raise(&m, 11, 11, 13), 15);
        assert_eq!(raise(&m, 11, 11, 15), 15);
        assert_eq!(raise(&m, 11, 11, 16), 19);
        // From the middle, the next forecast goes to the level.
        assert_eq!(raise(&m, 15, 15, 16), 19);
        // Load already beyond tolerance goes to the level at once.
        assert_eq!(raise(&m, 11, 13, 13), 19);
        // Below the low step the forecast is followed.
        assert_eq!(raise(&m, 9, 9, 11), 11);
        // Not flapping: the forecast alone.
        let mut calm = m.clone();
        calm.ahead.holding = false;
        assert_eq!(raise(&calm, 11, 11, 13), 13);
    }

    #[test]
    fn a_shorter_swing_rises_to_the_level_in_one_step() {
        // Trough 8, level 15: low step 10, 5 below the level.
        let m = flapping(8, 15);
        assert_eq!(raise(&m, 10, 10, 11), 15);
        // Trough 7, level 16: low step 10, 6 below: middle 13.
        let m = flapping(7, 16);
        assert_eq!(raise(&m, 10, 10, 11), 13);
    }

    #[test]
    fn no_step_before_the_crest_has_passed_or_without_load_now() {
        // The load now needs 18, one below the crest's 19: not past it.
        let m = after_crest(7, 19, 18);
        assert_eq!(step(&m, 19, 19, 15), None);
        // No level noted now (no usable load): nothing says the crest has passed.
        let mut m = after_crest(7, 19, 12);
        m.ahead.levels.pop();
        assert_eq!(step(&m, 19, 19, 15), None);
    }
}
