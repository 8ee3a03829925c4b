//! Invariants of the engine under generated inputs.

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;
use pulsar_autoscaler::api::MetricType;
use pulsar_autoscaler::decide::{
    Action, BrokerMemory, ClaimState, Flags, Sample, decide_brokers, decide_claim, elapsed,
};
use pulsar_autoscaler::policy::{BookiePolicy, BrokerPolicy, Direction, MetricPolicy};

const STALE: Duration = Duration::from_secs(120);
const GI: u64 = 1 << 30;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn direction() -> impl Strategy<Value = Direction> {
    (
        0u64..1200,
        0u64..900,
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
    (1u32..10, 0u32..30, 0.0f64..0.5, direction(), direction()).prop_map(
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

/// A sample that may be fine, stale, NaN, infinite, negative or absent.
fn sample(now: i64) -> impl Strategy<Value = Option<Sample>> {
    prop_oneof![
        4 => (0.0f64..5000.0, 0i64..60).prop_map(move |(v, age)| Some(Sample::new(v, at(now - age)))),
        1 => Just(None),
        1 => Just(Some(Sample::new(f64::NAN, at(now)))),
        1 => Just(Some(Sample::new(f64::INFINITY, at(now)))),
        1 => (121i64..10_000).prop_map(move |age| Some(Sample::new(10.0, at(now - age)))),
        1 => Just(Some(Sample::new(-5.0, at(now)))),
    ]
}

fn usable(s: &Option<Sample>, now: i64) -> bool {
    s.is_some_and(|s| {
        s.value.is_finite() && s.value >= 0.0 && elapsed(at(now), s.observed_at) <= STALE
    })
}

/// Memory with a few past recommendations and last-change times.
fn memory(now: i64) -> impl Strategy<Value = BrokerMemory> {
    (
        proptest::collection::vec((0i64..1200, 1u32..40), 0..8),
        proptest::option::of(0i64..1200),
        proptest::option::of(0i64..1200),
    )
        .prop_map(move |(recs, up, down)| {
            let mut m = BrokerMemory::default();
            let mut recs = recs;
            recs.sort_by_key(|(ago, _)| -ago);
            for (ago, r) in recs {
                m.record(at(now - ago), r, Duration::from_secs(7200));
            }
            m.last_scale_up = up.map(|ago| at(now - ago));
            m.last_scale_down = down.map(|ago| at(now - ago));
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_change_lands_within_bounds(
        p in broker_policy(), current in 0u32..60, s1 in sample(5000), s2 in sample(5000), m in memory(5000),
    ) {
        let no_data = !usable(&s1, 5000) && !usable(&s2, 5000);
        let out = decide_brokers(&p, Flags::default(), STALE, current, &[s1, s2], &m, at(5000));
        if no_data || current == 0 {
            // Without evidence, or paused at 0, nothing moves, bounds or not.
            prop_assert!(!out.decision.is_change(), "{}", out.decision.reason());
            prop_assert_eq!(out.desired, current);
        } else {
            prop_assert!((p.min_replicas..=p.max_replicas).contains(&out.desired));
        }
        if out.decision.is_change() {
            prop_assert!((u64::from(p.min_replicas)..=u64::from(p.max_replicas)).contains(&out.decision.to));
        } else {
            prop_assert_eq!(out.decision.to, u64::from(current));
        }
    }

    #[test]
    fn no_scale_down_when_any_metric_is_unusable(
        p in broker_policy(), seed in 0u32..1000, s1 in sample(5000), s2 in sample(5000), m in memory(5000),
    ) {
        let current = 1 + seed % p.max_replicas;
        prop_assume!(!usable(&s1, 5000) || !usable(&s2, 5000));
        let out = decide_brokers(&p, Flags::default(), STALE, current, &[s1, s2], &m, at(5000));
        prop_assert_ne!(out.decision.action, Action::ScaleDown, "{}", out.decision.reason());
        prop_assert!(out.decision.to >= u64::from(current));
    }

    #[test]
    fn no_action_inside_its_cooldown(
        p in broker_policy(), current in 1u32..60, s1 in sample(5000), s2 in sample(5000), m in memory(5000),
    ) {
        let now = at(5000);
        let out = decide_brokers(&p, Flags::default(), STALE, current, &[s1, s2], &m, now);
        match out.decision.action {
            Action::ScaleUp => if let Some(t) = m.last_scale_up {
                prop_assert!(elapsed(now, t) >= p.scale_up.cooldown);
            },
            Action::ScaleDown => if let Some(t) = m.last_change() {
                prop_assert!(elapsed(now, t) >= p.scale_down.cooldown);
            },
            _ => {}
        }
    }

    #[test]
    fn dry_run_and_suspend_never_mutate(
        p in broker_policy(), current in 0u32..60, s1 in sample(5000), s2 in sample(5000), m in memory(5000),
        dry_run in any::<bool>(),
    ) {
        let flags = if dry_run { Flags { dry_run: true, suspend: false } } else { Flags { dry_run: false, suspend: true } };
        let out = decide_brokers(&p, flags, STALE, current, &[s1, s2], &m, at(5000));
        prop_assert!(!out.decision.mutates());
        if !dry_run {
            prop_assert_eq!(out.decision.action, Action::Hold);
            prop_assert_eq!(&out.memory, &m);
        }
    }

    #[test]
    fn claims_never_shrink_nor_pass_max_size(
        requested_gi in 1u64..4096, max_gi in 1u64..4096, used in 0.0f64..100.0, percent in 1u32..=100,
        minimum_gi in 0u64..100, last in proptest::option::of(0i64..20_000), bound in any::<bool>(),
        expandable in proptest::option::of(any::<bool>()), resizing in any::<bool>(),
    ) {
        let policy = BookiePolicy {
            stateful_set: "bookie".into(),
            templates: vec![],
            expand_at_used_percent: 80.0,
            increase_percent: f64::from(percent),
            increase_minimum: minimum_gi * GI,
            max_size: max_gi * GI,
            cooldown: Duration::from_secs(3600),
        };
        let claim = ClaimState {
            name: "c".into(),
            requested: requested_gi * GI,
            capacity: Some(requested_gi * GI),
            usage: Some(Sample::new(used, at(20_000))),
            bound,
            resize_in_progress: resizing.then(|| "Resizing".to_string()),
            resize_infeasible: None,
            expandable,
            last_expand: last.map(at),
        };
        let now = at(20_000);
        let out = decide_claim(&policy, Flags::default(), STALE, &claim, now);
        if out.decision.action == Action::Expand {
            prop_assert!(out.decision.to > claim.requested);
            prop_assert!(out.decision.to <= policy.max_size);
            prop_assert!(bound && !resizing && expandable == Some(true) && used >= 80.0);
            if let Some(t) = claim.last_expand {
                prop_assert!(elapsed(now, t) >= policy.cooldown);
            }
        } else {
            prop_assert_eq!(out.decision.to, claim.requested);
        }
    }

    /// Load oscillating around the target: direction changes are bounded by the down window and
    /// cooldown, whatever the amplitude and period.
    #[test]
    fn oscillation_changes_direction_a_bounded_number_of_times(
        p in broker_policy(), amplitude in 0.0f64..1.5, period in 2u32..40, start in 1u32..20,
    ) {
        let interval = 15i64;
        let steps = 480; // two hours
        let mut current = start.clamp(p.min_replicas, p.max_replicas);
        let mut memory = BrokerMemory::default();
        let mut last_direction = None;
        let mut changes = 0u32;
        let base = f64::from(p.min_replicas + p.max_replicas) / 2.0 * 100.0;
        for i in 0..steps {
            let now = i * interval;
            let phase = f64::from(i as u32 % period) / f64::from(period) * std::f64::consts::TAU;
            let load = base * (1.0 + amplitude * phase.sin()).max(0.0);
            let samples = [Some(Sample::new(load, at(now))), Some(Sample::new(50.0, at(now)))];
            let out = decide_brokers(&p, Flags::default(), STALE, current, &samples, &memory, at(now));
            memory = out.memory;
            if out.decision.is_change() {
                memory.note_action(out.decision.action, at(now));
                current = out.decision.to as u32;
                if last_direction.is_some_and(|d| d != out.decision.action) {
                    changes += 1;
                }
                last_direction = Some(out.decision.action);
            }
        }
        // Every up→down change needs the down window and cooldown to pass since the scale-up
        // (an interval at least); down→up changes alternate with those.
        let span = (steps * interval) as u64;
        let gap = p.scale_down.window.as_secs().max(p.scale_down.cooldown.as_secs()).max(interval as u64);
        let bound = 2 * (span / gap + 1) as u32;
        prop_assert!(changes <= bound, "{changes} direction changes, bound {bound}");
    }
}
