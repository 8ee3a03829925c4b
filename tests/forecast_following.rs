//! Flap damping follows a swing in one step each way: down to the swing's low step (a third of
//! the way from the hour's trough up to the flap level) once the crest has passed and the
//! scale-down window allows that far, and no further (on a long swing in two steps, first to
//! the middle between the level and the low step); up to the flap level from the low step (or
//! at once when the load is already beyond tolerance).

use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::api::MetricType;
use pulsar_autoscaler::decide::forecast::NoHistory;
use pulsar_autoscaler::decide::{
    Action, Ahead, BrokerInputs, BrokerMemory, BrokerOutcome, Flags, Sample, decide_brokers_with,
};
use pulsar_autoscaler::policy::{BrokerPolicy, Direction, ForecastPolicy, MetricPolicy};

const NOW: i64 = 7200;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// Throughput target 100 per broker, tolerance 10 %, a 5-minute scale-down window, and steps
/// of half the brokers each way.
fn policy() -> BrokerPolicy {
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
            max_percent: Some(50),
        },
    }
}

/// Memory of a swinging load, holding: four turns in the last half hour, a trough that asked for
/// `trough` brokers half an hour ago, a crest that needed 10 within tolerance 8 minutes ago, the
/// last scale-up `since_up` seconds ago, and `window_high` recommended a minute ago.
fn swinging(trough: u32, since_up: i64, window_high: u32) -> BrokerMemory {
    let mut m = BrokerMemory {
        recommendations: vec![
            (at(NOW - 1800), trough),
            (at(NOW - 480), 10),
            (at(NOW - 60), window_high),
        ],
        last_scale_up: Some(at(NOW - since_up)),
        ..BrokerMemory::default()
    };
    m.ahead.turns.times = (1..=4).map(|k| at(NOW - k * 400)).collect();
    m.ahead.turns.last_direction = Some(-1);
    m.ahead.turns.extreme = Some(window_high);
    m.ahead.holding = true;
    m.ahead.levels = vec![(at(NOW - 480), 10)];
    m
}

/// One evaluation of throughput `value` on `current` brokers at [`NOW`], with the forecast (and
/// so flap damping) and without.
fn once(memory: &BrokerMemory, current: u32, value: f64) -> (BrokerOutcome, BrokerOutcome) {
    let p = policy();
    let s = vec![Some(Sample {
        value,
        observed_at: at(NOW),
        reporting: Some(current),
    })];
    let inputs = BrokerInputs {
        policy: &p,
        flags: Flags::default(),
        max_staleness: Duration::from_secs(120),
        current,
        samples: &s,
        memory,
        now: at(NOW),
    };
    let ahead = Ahead {
        policy: ForecastPolicy {
            horizon: None,
            flap_turns_per_hour: 4,
            interval: Duration::from_secs(15),
        },
        history: &NoHistory,
        unmeasured_horizon: Duration::from_secs(60),
    };
    (
        decide_brokers_with(&inputs, Some(&ahead)),
        decide_brokers_with(&inputs, None),
    )
}

#[test]
fn once_the_crest_has_passed_the_swing_is_followed_down_in_one_step() {
    // 500 on 10 brokers needs 5 within tolerance, 5 fewer than the crest since the last
    // scale-up; the window's highest is 6, a step of 4 (a third of the swing 10 → 5 is 2).
    let (with, without) = once(&swinging(5, 900, 6), 10, 500.0);
    assert_eq!(
        (without.decision.action, without.decision.to),
        (Action::ScaleDown, 6)
    );
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleDown, 6),
        "{}",
        with.decision.reason()
    );
    assert!(with.holding);
    assert!(
        with.decision
            .reason()
            .contains("crest has passed: following the swing down to its low step, 6, in one step"),
        "{}",
        with.decision.reason()
    );
}

#[test]
fn before_the_crest_has_passed_the_level_is_held() {
    // Scaled up to 10 two and a half minutes ago on the way up: 700 on 10 brokers needs 7, and
    // nothing since the scale-up needed more, so this is not the fall after a crest. Without
    // flap damping the window lets 10 → 7 through.
    let (with, without) = once(&swinging(5, 150, 7), 10, 700.0);
    assert_eq!(
        (without.decision.action, without.decision.to),
        (Action::ScaleDown, 7)
    );
    assert_eq!(
        with.decision.action,
        Action::Hold,
        "{}",
        with.decision.reason()
    );
    assert!(!with.decision.reason().contains("following the swing"));
}

#[test]
fn a_step_that_does_not_reach_the_swings_low_step_is_not_followed() {
    // The hour's troughs asked for 2, so the low step is 2 + 8 / 3 = 4 and the swing's middle
    // 4 + 6 / 2 = 7; the window allows 10 → 8 only, which the next rise would take back.
    let (with, without) = once(&swinging(2, 900, 8), 10, 500.0);
    assert_eq!(
        (without.decision.action, without.decision.to),
        (Action::ScaleDown, 8)
    );
    assert_eq!(
        with.decision.action,
        Action::Hold,
        "{}",
        with.decision.reason()
    );
}

#[test]
fn a_long_swing_is_followed_down_to_its_middle_first() {
    // Low step 4, 6 below the level 10: the middle is 7. The window allows 10 → 6, short of
    // the low step: the first of two steps goes to the middle, not to the window's 6 (one more
    // broker than without flap damping, none fewer).
    let (with, without) = once(&swinging(2, 900, 6), 10, 500.0);
    assert_eq!(
        (without.decision.action, without.decision.to),
        (Action::ScaleDown, 6)
    );
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleDown, 7),
        "{}",
        with.decision.reason()
    );
    assert!(
        with.decision.reason().contains(
            "following a long swing down in two steps, first to 7, the middle between the level 10 and its low step 4"
        ),
        "{}",
        with.decision.reason()
    );
}

#[test]
fn from_the_middle_the_second_step_goes_to_the_low_step() {
    // On the middle (7 brokers), 400 needs 4 and the window allows 4, the low step: 7 → 4 in
    // one action (maxStep allows 3 from 7).
    let (with, without) = once(&swinging(2, 900, 4), 7, 400.0);
    assert_eq!(
        (without.decision.action, without.decision.to),
        (Action::ScaleDown, 4)
    );
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleDown, 4),
        "{}",
        with.decision.reason()
    );
    assert!(
        with.decision
            .reason()
            .contains("following the swing down to its low step, 4, in one step"),
        "{}",
        with.decision.reason()
    );
    // The window at 5 allows neither the low step nor (on the middle already) a step to it.
    let (with, without) = once(&swinging(2, 900, 5), 7, 400.0);
    assert_eq!(without.decision.to, 5);
    assert_eq!(
        with.decision.action,
        Action::Hold,
        "{}",
        with.decision.reason()
    );
}

#[test]
fn a_step_below_the_swings_low_step_is_held_not_followed() {
    // The low step is 6 (trough 5, level 10). On 7 brokers the load now needs 5 and the window
    // allows 7 → 5: below the low step, so it is held (a step to the trough would be followed
    // by steps up below the low step, three actions or more a swing); 7 → 6 removes one broker,
    // not a swing's worth.
    let (with, without) = once(&swinging(5, 900, 5), 7, 500.0);
    assert_eq!(
        (without.decision.action, without.decision.to),
        (Action::ScaleDown, 5)
    );
    assert_eq!(
        with.decision.action,
        Action::Hold,
        "{}",
        with.decision.reason()
    );
    assert!(with.holding);
}

/// [`swinging`] at a trough of 5 brokers after a scale-down, with four earlier samples rising by `per_step` every
/// 15 s up to `value` now.
fn rising_from_trough(value: f64, per_step: f64) -> BrokerMemory {
    rising_from(5, value, per_step)
}

/// [`rising_from_trough`] with the hour's troughs having asked for `trough`.
fn rising_from(trough: u32, value: f64, per_step: f64) -> BrokerMemory {
    let mut m = swinging(trough, 900, trough);
    // The last change was the scale-down into this trough (no scale-up to measure a horizon
    // from: it is the unmeasured minute).
    m.last_scale_up = None;
    m.last_scale_down = Some(at(NOW - 300));
    for k in (1..=4).rev() {
        m.ahead
            .push_sample("throughput", at(NOW - k * 15), value - k as f64 * per_step);
    }
    m
}

#[test]
fn a_forecast_below_the_swings_middle_is_followed_not_jumped() {
    // 520 on 5 brokers is within tolerance (104 per broker); rising 40 a minute, 570 is expected
    // in 1m 15s: 6 brokers. The swing's middle is 5 + (10 - 5) / 2 = 7, so the scale-up goes to
    // 6, not to the level 10.
    let (with, without) = once(&rising_from_trough(520.0, 10.0), 5, 520.0);
    assert_eq!(without.decision.action, Action::Hold);
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleUp, 6),
        "{}",
        with.decision.reason()
    );
    assert!(with.forecast_driven);
    assert!(!with.decision.reason().contains("at once"));
}

#[test]
fn a_forecast_at_the_swings_middle_jumps_to_the_level() {
    // Rising 80 a minute: 620 expected, 7 brokers, the swing's middle: straight to 10.
    let (with, without) = once(&rising_from_trough(520.0, 20.0), 5, 520.0);
    assert_eq!(without.decision.action, Action::Hold);
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleUp, 10),
        "{}",
        with.decision.reason()
    );
    assert!(
        with.decision.reason().contains("scaling up to 10 at once"),
        "{}",
        with.decision.reason()
    );
}

#[test]
fn a_very_long_swing_rises_to_its_middle_first() {
    // Trough 2, level 10: low step 4, 6 below the level, so the middle is 7. On the low step,
    // 420 is within tolerance; rising 40 a minute, 5 brokers are expected: the scale-up goes
    // to the middle, not to the level.
    let (with, without) = once(&rising_from(2, 420.0, 10.0), 4, 420.0);
    assert_eq!(without.decision.action, Action::Hold);
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleUp, 7),
        "{}",
        with.decision.reason()
    );
    assert!(with.forecast_driven);
    assert!(
        with.decision.reason().contains(
            "scaling up a long swing in two steps, first to 7, the middle between its low step 4 and the level 10"
        ),
        "{}",
        with.decision.reason()
    );
    // On the middle (7 brokers, 750 within tolerance), the next forecast goes to the level.
    let (with, without) = once(&rising_from(2, 750.0, 20.0), 7, 750.0);
    assert_eq!(without.decision.action, Action::Hold);
    assert_eq!(
        (with.decision.action, with.decision.to),
        (Action::ScaleUp, 10),
        "{}",
        with.decision.reason()
    );
    assert!(
        with.decision.reason().contains("scaling up to 10 at once"),
        "{}",
        with.decision.reason()
    );
}
