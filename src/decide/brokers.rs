//! Broker replicas: per-metric proposals, tolerance, stabilization windows, step limits,
//! cooldowns and bounds, with HPA semantics where they apply.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::forecast::{self, History};
use super::memory::BrokerMemory;
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
pub fn decide_brokers_with(inputs: &BrokerInputs<'_>, ahead: Option<&Ahead<'_>>) -> BrokerOutcome {
    let BrokerInputs {
        policy,
        flags,
        max_staleness,
        current,
        samples,
        memory,
        now,
    } = *inputs;
    let target = format!("statefulset/{}", policy.stateful_set);
    if flags.suspend {
        return BrokerOutcome {
            decision: Decision::hold(
                target,
                current.into(),
                "suspended: spec.suspend is true",
                flags.dry_run,
            ),
            desired: current,
            metrics: Vec::new(),
            availability: Availability::NotEvaluated,
            limited: None,
            memory: memory.clone(),
            forecast_driven: false,
            holding: false,
        };
    }

    let metrics: Vec<MetricEvaluation> = policy
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            evaluate_metric(
                m,
                policy.tolerance,
                current,
                samples.get(i).and_then(Option::as_ref),
                max_staleness,
                now,
            )
        })
        .collect();
    let problems: Vec<String> = metrics
        .iter()
        .filter_map(|m| m.problem.as_ref().map(|p| format!("{}: {p}", m.name)))
        .collect();
    let usable: Vec<u32> = metrics.iter().filter_map(|m| m.proposed_replicas).collect();
    let mut reasons: Vec<String> = metrics
        .iter()
        .map(|m| format!("{}: {}", m.name, m.reason))
        .collect();

    let availability = if usable.is_empty() {
        Availability::Unavailable(problems.clone())
    } else if problems.is_empty() {
        Availability::All
    } else {
        Availability::Partial(problems.clone())
    };

    let (min, max) = (policy.min_replicas, policy.max_replicas);
    if let Some(why) = hold_without_data(current, usable.is_empty(), min, max) {
        reasons.push(why.clone());
        return BrokerOutcome {
            decision: Decision {
                target,
                action: Action::Hold,
                from: current.into(),
                to: current.into(),
                reasons,
                dry_run: flags.dry_run,
            },
            desired: current,
            metrics,
            availability,
            limited: (current < min || current > max).then_some(why),
            memory: memory.clone(),
            forecast_driven: false,
            holding: false,
        };
    }
    let mut raw = usable.iter().copied().max().unwrap_or(current);
    if !problems.is_empty() && raw < current {
        reasons.push(format!(
            "no scale-down while data is missing or partial: keeping at least {current}"
        ));
        raw = current;
    }
    let mut new_memory = memory.clone();
    let mut forecast_driven = false;
    if let Some(a) = ahead {
        let plain = raw;
        raw = raw.max(forecast_raise(
            inputs,
            a,
            &metrics,
            &mut new_memory,
            &mut reasons,
            plain,
        ));
        forecast_driven = raw > plain && raw > current;
    }
    let mut limited = None;
    if raw > max {
        limited = Some(format!(
            "metrics want {raw} brokers, pinned at maxReplicas {max}"
        ));
    } else if raw < min && current <= min {
        limited = Some(format!(
            "metrics want {raw} brokers, held at minReplicas {min}"
        ));
    }
    let recommendation = raw.clamp(min, max);

    // Stabilization (HPA): up to the lowest recommendation in the up window, down to the highest
    // in the down window, counting the one made now.
    let mut keep = policy.scale_up.window.max(policy.scale_down.window);
    if ahead.is_some() {
        keep = keep.max(flap::FLAP_WINDOW);
    }
    if !usable.is_empty() {
        if let Some(a) = ahead {
            let previous = memory.recommendations.last().map(|r| r.1);
            let turns = &mut new_memory.ahead.turns;
            turns.note(previous, recommendation, now);
            new_memory.ahead.holding = turns.flapping(now, a.policy.flap_turns_per_hour);
        }
        new_memory.record(now, recommendation, keep);
    }
    let in_window = |window: Duration| {
        let (lo, hi) = new_memory
            .range_within(now, window)
            .unwrap_or((recommendation, recommendation));
        (lo.min(recommendation), hi.max(recommendation))
    };
    let (up_floor, _) = in_window(policy.scale_up.window);
    let (_, mut down_ceiling) = in_window(policy.scale_down.window);
    let holding = ahead.is_some() && new_memory.ahead.holding;
    let mut flap_message = None;
    if holding {
        // Scale-downs wait for the highest recommendation of the whole flap window.
        let (_, hour_high) = in_window(flap::FLAP_WINDOW);
        let message = flap_message_for(new_memory.ahead.turns.within(now), hour_high);
        if hour_high > down_ceiling && current > recommendation {
            reasons.push(message.clone());
        }
        flap_message = Some(message);
        down_ceiling = down_ceiling.max(hour_high);
    }
    if ahead.is_some() {
        new_memory.ahead.flap_message = flap_message;
    }
    let mut stabilized = current;
    if stabilized < up_floor {
        stabilized = up_floor;
    }
    if stabilized > down_ceiling {
        stabilized = down_ceiling;
    }
    if stabilized != recommendation {
        if recommendation > current {
            reasons.push(format!(
                "scale-up stabilization window {}: lowest recommendation in it is {up_floor}",
                units::duration(policy.scale_up.window)
            ));
        } else {
            reasons.push(format!(
                "scale-down stabilization window {}: highest recommendation in it is {down_ceiling}",
                units::duration(policy.scale_down.window)
            ));
        }
    }
    let desired = stabilized.clamp(min, max);
    if desired != stabilized {
        reasons.push(format!("bounded to [{min}, {max}]"));
    }

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
    // Bounds win over step limits: a user-declared range is never left or stayed out of.
    to = to.clamp(min, max);

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
    let decision = if let Some(why) = blocked {
        reasons.push(format!("{to} wanted, but {why}"));
        limited.get_or_insert(why);
        Decision {
            target,
            action: Action::Hold,
            from: current.into(),
            to: current.into(),
            reasons,
            dry_run: flags.dry_run,
        }
    } else {
        Decision {
            target,
            action,
            from: current.into(),
            to: to.into(),
            reasons,
            dry_run: flags.dry_run,
        }
    };
    BrokerOutcome {
        forecast_driven: forecast_driven && decision.action == Action::ScaleUp,
        holding,
        decision,
        desired,
        metrics,
        availability,
        limited,
        memory: new_memory,
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

/// Replicas the forecast asks for, capped while flapping: the held capacity already covers the
/// swing seen this hour, and a trend extrapolated at the top of a swing must not buy brokers
/// beyond it.
fn forecast_raise(
    inputs: &BrokerInputs<'_>,
    a: &Ahead<'_>,
    metrics: &[MetricEvaluation],
    memory: &mut BrokerMemory,
    reasons: &mut Vec<String>,
    plain: u32,
) -> u32 {
    let wanted = look_ahead(inputs, a, metrics, memory, reasons);
    let previous = inputs.memory;
    if previous.ahead.holding
        && let Some((_, hour_high)) = previous.range_within(inputs.now, flap::FLAP_WINDOW)
        && wanted > hour_high.max(plain)
    {
        let cap = hour_high.max(plain);
        reasons.push(format!(
            "forecast capped at {cap} while flapping: the highest recommendation of the last {}",
            units::duration(flap::FLAP_WINDOW)
        ));
        return cap;
    }
    wanted
}

/// Why capacity is held, in words.
fn flap_message_for(turns: usize, hour_high: u32) -> String {
    format!(
        "load is flapping: the recommendation changed direction {turns} times in the last {}; scale-downs wait for the highest recommendation in it ({hour_high})",
        units::duration(flap::FLAP_WINDOW)
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
        let Some(f) = forecast::forecast(
            memory.ahead.series(&m.name),
            value,
            a.history,
            i,
            now,
            look,
            &fmt,
        ) else {
            notes.push(format!("{}: too few recent samples to forecast", m.name));
            continue;
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
