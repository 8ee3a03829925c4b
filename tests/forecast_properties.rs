//! Rules of the forecast and of flap damping under generated load: a forecast only ever adds
//! brokers ahead of load (never a scale-down; fewer brokers than without it only where flap
//! damping gives back what the crests did not need, and never below what the load of the moment
//! needs), never acts on missing or partial data, and stays within minReplicas/maxReplicas and
//! maxStep.

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;
use pulsar_autoscaler::api::MetricType;
use pulsar_autoscaler::decide::forecast::{NoHistory, SeriesHistory};
use pulsar_autoscaler::decide::{
    Action, Ahead, BrokerInputs, BrokerMemory, BrokerOutcome, Flags, Sample, decide_brokers,
    decide_brokers_with,
};
use pulsar_autoscaler::policy::{BrokerPolicy, Direction, ForecastPolicy, MetricPolicy};

const STALE: Duration = Duration::from_secs(120);
const STEP: i64 = 15;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn direction() -> impl Strategy<Value = Direction> {
    (
        0u64..900,
        0u64..300,
        proptest::option::of(1u32..6),
        proptest::option::of(1u32..=100),
    )
        .prop_map(|(window, cooldown, max_replicas, max_percent)| Direction {
            window: Duration::from_secs(window),
            cooldown: Duration::from_secs(cooldown),
            max_replicas,
            max_percent,
        })
}

fn broker_policy() -> impl Strategy<Value = BrokerPolicy> {
    (1u32..8, 0u32..24, 0.0f64..0.3, direction(), direction()).prop_map(
        |(min, span, tolerance, up, down)| BrokerPolicy {
            stateful_set: "broker".into(),
            min_replicas: min,
            max_replicas: min + span,
            tolerance,
            metrics: vec![
                MetricPolicy {
                    name: "throughput".into(),
                    kind: MetricType::Throughput,
                    target: 100.0,
                    query: None,
                },
                MetricPolicy {
                    name: "heap".into(),
                    kind: MetricType::HeapMemory,
                    target: 75.0,
                    query: None,
                },
            ],
            scale_up: up,
            scale_down: down,
        },
    )
}

fn forecast_policy() -> impl Strategy<Value = ForecastPolicy> {
    (proptest::option::of(0u64..900), 2u32..8).prop_map(|(horizon, turns)| ForecastPolicy {
        horizon: horizon.map(Duration::from_secs),
        flap_turns_per_hour: turns,
        interval: Duration::from_secs(STEP as u64),
    })
}

/// One evaluation's throughput: a value, or missing / broken / partial.
#[derive(Debug, Clone, Copy)]
enum Reading {
    Value(f64),
    Missing,
    NaN,
    Partial(f64),
}

fn reading() -> impl Strategy<Value = Reading> {
    prop_oneof![
        8 => (0.0f64..4000.0).prop_map(Reading::Value),
        1 => Just(Reading::Missing),
        1 => Just(Reading::NaN),
        1 => (0.0f64..4000.0).prop_map(Reading::Partial),
    ]
}

/// Load that ramps, swings and jumps, with some readings spoiled.
fn readings() -> impl Strategy<Value = Vec<Reading>> {
    (
        0.0f64..2000.0,
        -40.0f64..40.0,
        0.0f64..600.0,
        2.0f64..40.0,
        proptest::collection::vec(reading(), 10..60),
    )
        .prop_map(|(base, slope, amplitude, period, noise)| {
            noise
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let x = i as f64;
                    let shape = (base + slope * x + amplitude * (x / period).sin()).max(0.0);
                    match r {
                        Reading::Value(v) => Reading::Value(shape + v * 0.05),
                        Reading::Partial(_) => Reading::Partial(shape),
                        other => other,
                    }
                })
                .collect()
        })
}

/// Long, deep swings (20 to 60 minutes from crest to crest, ±20–50 %, one to two hours), the
/// kind flap damping follows down in one or two steps, with some readings spoiled.
fn long_swings() -> impl Strategy<Value = Vec<Reading>> {
    (
        300.0f64..1500.0,
        0.2f64..0.5,
        80.0f64..240.0,
        proptest::collection::vec(reading(), 240..480),
    )
        .prop_map(|(base, depth, period, noise)| {
            noise
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let phase = std::f64::consts::TAU * i as f64 / period;
                    let shape = base * (1.0 + depth * phase.sin());
                    match r {
                        Reading::Value(v) => Reading::Value(shape + v * 0.01),
                        Reading::Partial(_) => Reading::Partial(shape),
                        other => other,
                    }
                })
                .collect()
        })
}

/// Either kind of generated load.
fn load() -> impl Strategy<Value = Vec<Reading>> {
    prop_oneof![readings(), long_swings()]
}

fn samples(r: Reading, current: u32, now: i64) -> Vec<Option<Sample>> {
    let heap = |reporting| Sample {
        value: 40.0,
        observed_at: at(now),
        reporting,
    };
    let (throughput, reporting) = match r {
        Reading::Value(v) => (Some(v), Some(current)),
        Reading::Missing => (None, Some(current)),
        Reading::NaN => (Some(f64::NAN), Some(current)),
        Reading::Partial(v) => (Some(v), Some(current.saturating_sub(1))),
    };
    vec![
        throughput.map(|value| Sample {
            value,
            observed_at: at(now),
            reporting,
        }),
        Some(heap(reporting)),
    ]
}

/// Fewest brokers that carry throughput `v` and the generated heap (40 % on `current` brokers)
/// within the policy's tolerance.
fn needed_now(p: &BrokerPolicy, current: u32, v: f64) -> u32 {
    let tolerated =
        |brokers_at_target: f64| (brokers_at_target / (1.0 + p.tolerance) - 1e-9).ceil();
    let throughput = tolerated(v / 100.0);
    let heap = tolerated(40.0 / 75.0 * f64::from(current.max(1)));
    throughput.max(heap).max(0.0) as u32
}

/// Largest step the policy allows from `current` (the larger of its limits, at least 1).
fn allowed(d: &Direction, current: u32, up: bool) -> u64 {
    let pct = d.max_percent.map(|p| {
        let v = f64::from(current) * f64::from(p) / 100.0;
        if up {
            v.ceil() as u64
        } else {
            v.floor() as u64
        }
    });
    match (d.max_replicas, pct) {
        (None, None) => u64::MAX,
        (a, b) => u64::from(a.unwrap_or(0)).max(b.unwrap_or(0)).max(1),
    }
}

/// Walks `readings` with the forecast on, checking each decision against the same evaluation
/// without the forecast; carries out what the forecast engine decides.
fn walk(
    p: &BrokerPolicy,
    f: ForecastPolicy,
    start: u32,
    readings: &[Reading],
    mut check: impl FnMut(u32, Reading, &BrokerOutcome, &BrokerOutcome) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut memory = BrokerMemory::default();
    let mut current = start;
    for (i, r) in readings.iter().enumerate() {
        let now = i as i64 * STEP;
        let s = samples(*r, current, now);
        let inputs = BrokerInputs {
            policy: p,
            flags: Flags::default(),
            max_staleness: STALE,
            current,
            samples: &s,
            memory: &memory,
            now: at(now),
        };
        let ahead = Ahead {
            policy: f,
            history: &NoHistory,
            unmeasured_horizon: Duration::from_secs(60),
        };
        let with = decide_brokers_with(&inputs, Some(&ahead));
        let without = decide_brokers_with(&inputs, None);
        check(current, *r, &with, &without)?;
        memory = with.memory.clone();
        if with.decision.is_change() {
            memory.note_action(with.decision.action, at(now));
            current = with.decision.to as u32;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// The forecast raises a recommendation or leaves it: never a scale-down of its own. Fewer
    /// brokers than without it only on complete data, where flap damping holds what the swings'
    /// crests needed rather than a recommendation that repeated the replicas within tolerance,
    /// or follows one trough of a regular swing; and never fewer than carry the load of the
    /// moment within tolerance.
    #[test]
    fn a_forecast_never_scales_down_on_its_own(
        p in broker_policy(), f in forecast_policy(), start in 1u32..30, rs in load(),
    ) {
        walk(&p, f, start, &rs, |current, r, with, without| {
            if with.decision.action == Action::ScaleDown {
                prop_assert!(!with.forecast_driven);
            }
            if with.decision.to < without.decision.to
                || (with.decision.action == Action::ScaleDown
                    && without.decision.action != Action::ScaleDown)
            {
                let Reading::Value(v) = r else {
                    return Err(TestCaseError::fail(format!(
                        "fewer brokers than without the forecast on {r:?}: {}",
                        with.decision.reason()
                    )));
                };
                let reason = with.decision.reason();
                let trough = reason.contains("following this trough down");
                prop_assert!(with.holding || trough, "{} (without: {})",
                    reason, without.decision.reason());
                prop_assert_eq!(with.decision.action, Action::ScaleDown);
                let needed = needed_now(&p, current, v).min(p.max_replicas);
                prop_assert!(with.decision.to >= u64::from(needed),
                    "{} brokers left, the load of now needs {needed}: {reason}",
                    with.decision.to);
                prop_assert!(trough || reason.contains("what most crests of the last"),
                    "{reason}");
            }
            if with.forecast_driven {
                prop_assert_eq!(with.decision.action, Action::ScaleUp);
                prop_assert!(with.decision.to > u64::from(current));
                prop_assert!(with.decision.reason().contains("forecast: throughput: "),
                    "{}", with.decision.reason());
            }
            Ok(())
        })?;
    }

    /// Missing, broken or partial data: the forecast adds nothing, so the decision is the one
    /// without it.
    #[test]
    fn a_forecast_never_acts_on_missing_or_partial_data(
        p in broker_policy(), f in forecast_policy(), seed in 0u32..1000, rs in load(),
    ) {
        let start = p.min_replicas + seed % (p.max_replicas - p.min_replicas + 1);
        walk(&p, f, start, &rs, |_, r, with, without| {
            if !matches!(r, Reading::Value(_)) {
                prop_assert!(!with.forecast_driven);
                prop_assert_eq!(with.decision.to, without.decision.to, "{}", with.decision.reason());
                prop_assert_ne!(with.decision.action, Action::ScaleDown);
            }
            Ok(())
        })?;
    }

    /// Within [minReplicas, maxReplicas] and maxStep, forecast or not.
    #[test]
    fn a_forecast_stays_within_bounds_and_steps(
        p in broker_policy(), f in forecast_policy(), seed in 0u32..1000, rs in load(),
    ) {
        let start = p.min_replicas + seed % (p.max_replicas - p.min_replicas + 1);
        walk(&p, f, start, &rs, |current, _, with, _| {
            let d = &with.decision;
            prop_assert!((u64::from(p.min_replicas)..=u64::from(p.max_replicas)).contains(&d.to));
            match d.action {
                Action::ScaleUp => prop_assert!(d.to - u64::from(current) <= allowed(&p.scale_up, current, true)),
                Action::ScaleDown => prop_assert!(u64::from(current) - d.to <= allowed(&p.scale_down, current, false)),
                _ => prop_assert_eq!(d.to, u64::from(current)),
            }
            Ok(())
        })?;
    }

    /// Without the forecast the engine is exactly `decide_brokers`.
    #[test]
    fn without_a_forecast_nothing_changes(
        p in broker_policy(), start in 1u32..30, rs in load(),
    ) {
        let mut memory = BrokerMemory::default();
        let mut current = start;
        for (i, r) in rs.iter().enumerate() {
            let now = i as i64 * STEP;
            let s = samples(*r, current, now);
            let inputs = BrokerInputs {
                policy: &p, flags: Flags::default(), max_staleness: STALE, current,
                samples: &s, memory: &memory, now: at(now),
            };
            let with = decide_brokers_with(&inputs, None);
            let plain = decide_brokers(&p, Flags::default(), STALE, current, &s, &memory, at(now));
            prop_assert_eq!(&with, &plain);
            prop_assert_eq!(&with.memory.ahead, &Default::default());
            memory = with.memory;
            if with.decision.is_change() {
                memory.note_action(with.decision.action, at(now));
                current = with.decision.to as u32;
            }
        }
    }
}

fn throughput_policy() -> BrokerPolicy {
    BrokerPolicy {
        stateful_set: "broker".into(),
        min_replicas: 2,
        max_replicas: 40,
        tolerance: 0.1,
        metrics: vec![MetricPolicy {
            name: "throughput".into(),
            kind: MetricType::Throughput,
            target: 100.0,
            query: None,
        }],
        scale_up: Direction {
            window: Duration::ZERO,
            cooldown: Duration::from_secs(60),
            max_replicas: Some(4),
            max_percent: Some(100),
        },
        scale_down: Direction {
            window: Duration::from_secs(300),
            cooldown: Duration::from_secs(120),
            max_replicas: Some(2),
            max_percent: None,
        },
    }
}

fn auto() -> ForecastPolicy {
    ForecastPolicy {
        horizon: None,
        flap_turns_per_hour: 4,
        interval: Duration::from_secs(15),
    }
}

/// Runs throughput `values` (one per 15 s) on a fixed replica count with the forecast; returns
/// the outcomes.
fn run_fixed(
    values: &[f64],
    current: u32,
    history: &SeriesHistory,
    start: i64,
) -> Vec<BrokerOutcome> {
    let p = throughput_policy();
    let mut memory = BrokerMemory::default();
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let now = start + i as i64 * STEP;
        let s = vec![Some(Sample {
            value: *v,
            observed_at: at(now),
            reporting: Some(current),
        })];
        let inputs = BrokerInputs {
            policy: &p,
            flags: Flags::default(),
            max_staleness: STALE,
            current,
            samples: &s,
            memory: &memory,
            now: at(now),
        };
        let ahead = Ahead {
            policy: auto(),
            history,
            unmeasured_horizon: Duration::from_secs(60),
        };
        let o = decide_brokers_with(&inputs, Some(&ahead));
        memory = o.memory.clone();
        out.push(o);
    }
    out
}

#[test]
fn a_steady_ramp_is_met_before_it_crosses_the_tolerance() {
    // 10 brokers at 100 each; load rising 20 per 15 s from 800: it crosses 1100 (target +
    // tolerance) at the 16th sample. The forecast looks 1m 15s (5 samples) ahead.
    let values: Vec<f64> = (0..16).map(|i| 800.0 + 20.0 * f64::from(i)).collect();
    let out = run_fixed(&values, 10, &SeriesHistory::default(), 0);
    let first = out
        .iter()
        .position(|o| o.decision.action == Action::ScaleUp)
        .unwrap();
    assert!(out[first].forecast_driven);
    // 800 + 20·i + 100 (five samples ahead) > 1100 from i = 10 on; the plain engine waits for i = 16.
    assert!(first <= 11, "first scale-up at sample {first}");
    let reason = out[first].decision.reason();
    assert!(
        reason.contains("expected in 1m 15s (horizon 1m (not measured yet))"),
        "{reason}"
    );
    assert!(reason.contains("trend +80 B/s per min"), "{reason}");
}

#[test]
fn falling_or_flat_load_gives_no_forecast_scale_up() {
    let falling: Vec<f64> = (0..20).map(|i| 1050.0 - 10.0 * f64::from(i)).collect();
    let flat = vec![1000.0; 20];
    for values in [falling, flat] {
        let out = run_fixed(&values, 10, &SeriesHistory::default(), 0);
        assert!(out.iter().all(|o| o.decision.action != Action::ScaleUp));
    }
}

#[test]
fn yesterdays_rise_is_expected_today() {
    // Flat now; a day ago the load doubled over the next hour. With a fixed 1h horizon the
    // daily pattern asks for twice the brokers before anything rises (maxStep allows +100 %).
    let day = 86_400;
    let now = 2 * day;
    let series: Vec<(Timestamp, f64)> = (-40..=300)
        .map(|i| {
            let t = day + i * STEP;
            (at(t), if t < day + 1800 { 1000.0 } else { 2000.0 })
        })
        .collect();
    let history = SeriesHistory {
        series: vec![series],
    };
    let p = throughput_policy();
    let mut memory = BrokerMemory::default();
    let mut last = None;
    for i in 0..6 {
        let t = now - 75 + i * STEP;
        let s = vec![Some(Sample {
            value: 1000.0,
            observed_at: at(t),
            reporting: Some(10),
        })];
        let inputs = BrokerInputs {
            policy: &p,
            flags: Flags::default(),
            max_staleness: STALE,
            current: 10,
            samples: &s,
            memory: &memory,
            now: at(t),
        };
        let f = ForecastPolicy {
            horizon: Some(Duration::from_secs(3600)),
            ..auto()
        };
        let ahead = Ahead {
            policy: f,
            history: &history,
            unmeasured_horizon: Duration::from_secs(60),
        };
        let o = decide_brokers_with(&inputs, Some(&ahead));
        memory = o.memory.clone();
        last = Some(o);
    }
    let o = last.unwrap();
    assert_eq!(
        o.decision.action,
        Action::ScaleUp,
        "{}",
        o.decision.reason()
    );
    assert!(o.forecast_driven);
    assert_eq!(o.decision.to, 20, "{}", o.decision.reason());
    assert!(
        o.decision.reason().contains("daily pattern ×2 from 1 day"),
        "{}",
        o.decision.reason()
    );
}

#[test]
fn flapping_load_holds_capacity_and_says_so() {
    // Load swinging between 500 and 1000 every 4 minutes on a policy whose 5-minute down
    // window lets it follow: after four turns, capacity is held at the flap level, the fewest
    // brokers that keep 1000 within the 10 % tolerance of 100 per broker (ceil(9.09) = 10).
    let p = throughput_policy();
    let mut memory = BrokerMemory::default();
    let mut current = 6u32;
    let mut changes_after_hold = 0;
    let mut last_trough = None;
    let mut held = false;
    for i in 0..240 {
        let now = i * STEP;
        let v = if (now / 240) % 2 == 0 { 1000.0 } else { 500.0 };
        let s = vec![Some(Sample {
            value: v,
            observed_at: at(now),
            reporting: Some(current),
        })];
        let inputs = BrokerInputs {
            policy: &p,
            flags: Flags::default(),
            max_staleness: STALE,
            current,
            samples: &s,
            memory: &memory,
            now: at(now),
        };
        let ahead = Ahead {
            policy: auto(),
            history: &NoHistory,
            unmeasured_horizon: Duration::from_secs(60),
        };
        let o = decide_brokers_with(&inputs, Some(&ahead));
        if o.holding {
            held = true;
            assert!(
                o.memory.ahead.flap_message.as_deref().is_some_and(|m| m
                    .starts_with("load is flapping")
                    && m.contains("holding 10 brokers")),
                "{:?}",
                o.memory.ahead
            );
        }
        if held && o.decision.is_change() {
            changes_after_hold += 1;
            // Below the level only to follow a trough, at most one every three swings (24
            // minutes without an action here); back up straight to the level.
            if o.decision.to < 10 {
                assert!(
                    o.decision.reason().contains("following this trough down"),
                    "{}",
                    o.decision.reason()
                );
                if let Some(t) = last_trough {
                    assert!(now - t >= 3 * 480, "troughs at {t} s and {now} s");
                }
                last_trough = Some(now);
            } else {
                assert_eq!(o.decision.to, 10, "{}", o.decision.reason());
            }
        }
        memory = o.memory.clone();
        if o.decision.is_change() {
            memory.note_action(o.decision.action, at(now));
            current = o.decision.to as u32;
        }
    }
    assert!(held, "never noticed the flapping");
    // The one step down to the level (from a forecast's crest), then two for each trough
    // followed: far fewer than the two a swing of following every one (30 swings here).
    assert!(last_trough.is_some(), "no trough followed");
    assert!(
        changes_after_hold <= 1 + 2 * 6,
        "{changes_after_hold} changes while holding"
    );
    assert_eq!(current, 10);
    // The status carries it.
    let mut status = pulsar_autoscaler::api::BrokerStatus::default();
    memory.write_status(&mut status);
    let flapping = status.flapping.clone().unwrap();
    assert!(flapping.holding);
    assert!(flapping.turns_last_hour >= 4, "{flapping:?}");
    let back = BrokerMemory::from_status(&status);
    assert_eq!(back.ahead.turns.times, memory.ahead.turns.times);
    assert!(back.ahead.holding);
    assert_eq!(back.ahead.levels, memory.ahead.levels);
    assert_eq!(back.ahead.levels.first().map(|l| l.1), Some(10));
}

/// Memory of a policy that has seen the load flap: four turns in the last half hour, holding,
/// the flap level `level` (noted 10 minutes ago) and the recommendation `window_high` one
/// minute ago.
fn flapping_memory(now: i64, level: u32, window_high: u32) -> BrokerMemory {
    let mut m = BrokerMemory {
        recommendations: vec![(at(now - 60), window_high)],
        ..BrokerMemory::default()
    };
    m.ahead.turns.times = (1..=4).map(|k| at(now - k * 300)).collect();
    m.ahead.turns.last_direction = Some(-1);
    m.ahead.turns.extreme = Some(window_high);
    m.ahead.holding = true;
    m.ahead.levels = vec![(at(now - 600), level)];
    m
}

/// One evaluation of throughput `value` on `current` brokers, with and without the forecast
/// (and so flap damping).
fn once(
    memory: &BrokerMemory,
    current: u32,
    value: f64,
    now: i64,
) -> (BrokerOutcome, BrokerOutcome) {
    once_reporting(memory, current, current, value, now)
}

/// [`once`] with `reporting` of the `current` brokers in the sample.
fn once_reporting(
    memory: &BrokerMemory,
    current: u32,
    reporting: u32,
    value: f64,
    now: i64,
) -> (BrokerOutcome, BrokerOutcome) {
    let p = throughput_policy();
    let s = vec![Some(Sample {
        value,
        observed_at: at(now),
        reporting: Some(reporting),
    })];
    let inputs = BrokerInputs {
        policy: &p,
        flags: Flags::default(),
        max_staleness: STALE,
        current,
        samples: &s,
        memory,
        now: at(now),
    };
    let ahead = Ahead {
        policy: auto(),
        history: &NoHistory,
        unmeasured_horizon: Duration::from_secs(60),
    };
    (
        decide_brokers_with(&inputs, Some(&ahead)),
        decide_brokers_with(&inputs, None),
    )
}

#[test]
fn flapping_holds_the_level_a_small_scale_down_would_leave() {
    // 11 brokers, the 5-minute window's highest is 10, the last hour's load needed 11 within
    // tolerance: the scale-down the window allows would be the next swing's scale-up, so 11
    // are held.
    let now = 7200;
    let (with, without) = once(&flapping_memory(now, 11, 10), 11, 500.0, now);
    assert_eq!(
        (without.decision.action, without.decision.to),
        (Action::ScaleDown, 10)
    );
    assert_eq!(
        with.decision.action,
        Action::Hold,
        "{}",
        with.decision.reason()
    );
    assert!(with.holding);
    assert!(
        with.decision.reason().contains(
            "holding 11 brokers, the fewest that kept the load of the last 1h within tolerance"
        ),
        "{}",
        with.decision.reason()
    );
}

#[test]
fn flapping_holds_the_level_not_the_crests_recommendation() {
    // 12 brokers (a crest's recommendation at the target); the window's highest has fallen to
    // 10, and the last hour's load needed only 11 within tolerance: the scale-down goes to 11,
    // not to 10 (the next swing's scale-up) nor held at 12 (the hour's highest recommendation).
    let now = 7200;
    let (with, without) = once(&flapping_memory(now, 11, 10), 12, 500.0, now);
    assert_eq!(
        (without.decision.action, without.decision.to),
        (Action::ScaleDown, 10)
    );
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleDown, 11),
        "{}",
        with.decision.reason()
    );
    // With the window's highest at 12 (a recommendation within tolerance repeats the replicas
    // of its moment), the policy alone removes nothing; flap damping still holds the 11 the
    // hour's load needed, not 12.
    let (with, without) = once(&flapping_memory(now, 11, 12), 12, 500.0, now);
    assert_eq!(without.decision.action, Action::Hold);
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleDown, 11),
        "{}",
        with.decision.reason()
    );
    assert!(
        with.decision
            .reason()
            .contains("holding 11 brokers, what most crests of the last 1h needed"),
        "{}",
        with.decision.reason()
    );
    // Never below what the load of the moment needs: 1250 needs 12 within tolerance, though
    // the hour's level says 11.
    let (with, _) = once(&flapping_memory(now, 11, 12), 12, 1250.0, now);
    assert_eq!(
        with.decision.action,
        Action::Hold,
        "{}",
        with.decision.reason()
    );
}

#[test]
fn flapping_holds_what_most_crests_needed_and_gives_back_a_high_one() {
    // Crests that needed 7, 7, 8, 7 (the third beyond tolerance on 7 brokers): after the high
    // crest has passed, 7 are held, not the hour's highest 8.
    let now = 7200;
    let mut m = flapping_memory(now, 8, 8);
    m.ahead.crests.peaks = [(3000, 7), (3700, 7), (5000, 8), (6900, 7)]
        .map(|(t, l)| (at(t), l))
        .to_vec();
    m.ahead.levels = vec![(at(5000), 8), (at(now - 30), 6)];
    // The high crest's scale-up came 10 minutes ago: too soon to follow this trough.
    m.last_scale_up = Some(at(now - 600));
    let (with, without) = once(&m, 8, 600.0, now);
    assert_eq!(
        without.decision.action,
        Action::Hold,
        "{}",
        without.decision.reason()
    );
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleDown, 7),
        "{}",
        with.decision.reason()
    );
    assert!(
        with.decision.reason().contains("the highest needed 8"),
        "{}",
        with.decision.reason()
    );
    // Not while the load of the last horizon still needed 8.
    m.ahead.levels = vec![(at(now - 30), 8)];
    let (with, _) = once(&m, 8, 600.0, now);
    assert_eq!(
        with.decision.action,
        Action::Hold,
        "{}",
        with.decision.reason()
    );
    // Not on partial data: a level from part of the brokers understates the load.
    m.ahead.levels = vec![(at(5000), 8), (at(now - 30), 6)];
    let (with, without) = once_reporting(&m, 8, 7, 600.0, now);
    assert_eq!(
        with.decision.to,
        without.decision.to,
        "{}",
        with.decision.reason()
    );
    // Three crests in the hour, one every 20 minutes: after an hour (three swings) without an
    // action, this trough is followed down to the 6 the last horizon's load needs.
    m.last_scale_up = Some(at(now - 3600));
    let (with, _) = once(&m, 8, 600.0, now);
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleDown, 6),
        "{}",
        with.decision.reason()
    );
    assert!(
        with.decision
            .reason()
            .contains("3 crests in the last 1h, one every 20m"),
        "{}",
        with.decision.reason()
    );
    // Not a minute sooner.
    m.last_scale_up = Some(at(now - 3540));
    let (with, _) = once(&m, 8, 600.0, now);
    assert_eq!(with.decision.to, 7, "{}", with.decision.reason());
    // Nor late in the trough: the last crest was left more than a third of a swing ago.
    m.last_scale_up = Some(at(now - 3600));
    m.ahead.crests.peaks.last_mut().unwrap().0 = at(now - 420);
    let (with, _) = once(&m, 8, 600.0, now);
    assert_eq!(with.decision.to, 7, "{}", with.decision.reason());
}

#[test]
fn flapping_scales_up_straight_to_the_level() {
    // 700 on 6 brokers is beyond tolerance (117 per broker): the load alone asks for 7, the
    // last hour's swings needed 10, so the scale-up goes to 10 in one step (maxStep 4).
    let now = 7200;
    let (with, without) = once(&flapping_memory(now, 10, 7), 6, 700.0, now);
    assert_eq!(
        (without.decision.action, without.decision.to),
        (Action::ScaleUp, 7)
    );
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleUp, 10),
        "{}",
        with.decision.reason()
    );
    assert!(!with.forecast_driven, "the flap level is not a forecast");
    assert!(with.decision.reason().contains("scaling up to 10 at once"));
    // Not while the load is within tolerance: flap damping never starts a scale-up itself.
    let (with, _) = once(&flapping_memory(now, 10, 7), 7, 700.0, now);
    assert_eq!(
        with.decision.action,
        Action::Hold,
        "{}",
        with.decision.reason()
    );
}

#[test]
fn flapping_never_jumps_to_the_level_on_partial_data() {
    // As above, but one of the 6 brokers is not reporting: the scale-up the load asks for is
    // allowed, the jump to the flap level is not.
    let now = 7200;
    let (with, without) = once_reporting(&flapping_memory(now, 10, 7), 6, 5, 700.0, now);
    assert_eq!(
        (without.decision.action, without.decision.to),
        (Action::ScaleUp, 7)
    );
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleUp, 7),
        "{}",
        with.decision.reason()
    );
    assert!(!with.decision.reason().contains("at once"));
}

#[test]
fn the_flap_level_is_the_fewest_brokers_within_tolerance() {
    // 1000 with a target of 100 and 10 % tolerance: 9.09 brokers → 10; 990: exactly 9.
    for (value, level) in [(1000.0, 10), (990.0, 9), (450.0, 5)] {
        let (with, _) = once(&BrokerMemory::default(), 8, value, 0);
        assert_eq!(with.memory.ahead.levels, vec![(at(0), level)], "{value}");
    }
    // No usable data: no level is noted.
    let p = throughput_policy();
    let s = vec![None];
    let inputs = BrokerInputs {
        policy: &p,
        flags: Flags::default(),
        max_staleness: STALE,
        current: 8,
        samples: &s,
        memory: &BrokerMemory::default(),
        now: at(0),
    };
    let ahead = Ahead {
        policy: auto(),
        history: &NoHistory,
        unmeasured_horizon: Duration::from_secs(60),
    };
    let o = decide_brokers_with(&inputs, Some(&ahead));
    assert!(o.memory.ahead.levels.is_empty());
    assert_eq!(o.decision.action, Action::Hold);
}

/// Walks a clean swing of ±`depth` around `mean` every `period` samples for `rows` samples with
/// a 2m 30s scale-down window, steps of half the brokers, flapping at 2 turns an hour; returns
/// the reasons of the changes made, checking with ≥ without at each.
fn long_swing_changes(mean: f64, depth: f64, period: f64, rows: u32) -> Vec<String> {
    let mut p = throughput_policy();
    p.scale_down.window = Duration::from_secs(150);
    p.scale_down.max_percent = Some(50);
    let f = ForecastPolicy {
        flap_turns_per_hour: 2,
        ..auto()
    };
    let readings: Vec<Reading> = (0..rows)
        .map(|i| {
            let phase = std::f64::consts::TAU * f64::from(i) / period;
            Reading::Value(mean * (1.0 + depth * phase.sin()))
        })
        .collect();
    let mut changes = Vec::new();
    walk(&p, f, 10, &readings, |_, _, with, without| {
        assert!(with.decision.to >= without.decision.to);
        if with.decision.is_change() {
            changes.push(with.decision.reason());
        }
        Ok(())
    })
    .unwrap();
    changes
}

#[test]
fn a_long_generated_swing_is_followed_down_in_two_steps() {
    // What `long_swings` generates reaches the two-step rules, so the properties above check
    // them. ±40 % around 1000 every 40 minutes: down in two steps, up in one.
    let changes = long_swing_changes(1000.0, 0.4, 160.0, 480);
    let count = |text: &str| changes.iter().filter(|r| r.contains(text)).count();
    let (middles, lows) = (
        count("down in two steps, first to"),
        count("down to its low step"),
    );
    assert!(
        middles >= 1 && lows >= 1,
        "{middles} middle steps, {lows} low steps"
    );
    assert_eq!(
        count("scaling up a long swing in two steps"),
        0,
        "{changes:#?}"
    );
    // ±50 % around 1200 every 45 minutes: up in two steps too.
    let changes = long_swing_changes(1200.0, 0.5, 180.0, 600);
    let count = |text: &str| changes.iter().filter(|r| r.contains(text)).count();
    assert!(
        count("scaling up a long swing in two steps, first to") >= 1,
        "{changes:#?}"
    );
    assert!(count("down in two steps, first to") >= 1, "{changes:#?}");
}
