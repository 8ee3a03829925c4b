//! Hand-checked cases for every engine rule of DESIGN.md.

use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::api::{MetricType, ScalingPolicy};
use pulsar_autoscaler::decide::{
    Action, Availability, BrokerMemory, ClaimState, Flags, Sample, VolumeState, decide_brokers,
    decide_claim,
};
use pulsar_autoscaler::policy::{BookiePolicy, BrokerPolicy, Direction, MetricPolicy, Policy};

const MI: f64 = 1024.0 * 1024.0;
const GI: u64 = 1 << 30;
const STALE: Duration = Duration::from_secs(120);

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn metric(name: &str, kind: MetricType, target: f64) -> MetricPolicy {
    MetricPolicy {
        name: name.into(),
        kind,
        target,
        query: None,
    }
}

fn brokers(metrics: Vec<MetricPolicy>) -> BrokerPolicy {
    BrokerPolicy {
        stateful_set: "pulsar-broker".into(),
        min_replicas: 2,
        max_replicas: 20,
        tolerance: 0.1,
        metrics,
        scale_up: Direction {
            window: Duration::ZERO,
            cooldown: Duration::from_secs(60),
            max_replicas: Some(4),
            max_percent: Some(100),
        },
        scale_down: Direction {
            window: Duration::from_secs(600),
            cooldown: Duration::from_secs(300),
            max_replicas: Some(1),
            max_percent: None,
        },
    }
}

fn throughput() -> BrokerPolicy {
    brokers(vec![metric(
        "throughput",
        MetricType::Throughput,
        50.0 * MI,
    )])
}

fn fresh(value: f64, now: i64) -> Option<Sample> {
    Some(Sample::new(value, at(now)))
}

#[test]
fn throughput_proposal_reads_like_the_arithmetic() {
    let out = decide_brokers(
        &throughput(),
        Flags::default(),
        STALE,
        6,
        &[fresh(412.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(out.decision.action, Action::ScaleUp);
    assert_eq!((out.decision.from, out.decision.to), (6, 9));
    assert_eq!(out.metrics[0].proposed_replicas, Some(9));
    let reason = out.decision.reason();
    assert!(
        reason.contains("412.0 MiB/s over 6 brokers = 68.7 MiB/s per broker vs target 50.0 MiB/s"),
        "{reason}"
    );
    assert!(reason.contains("propose 9"), "{reason}");
    assert_eq!(out.availability, Availability::All);
}

#[test]
fn exact_multiple_of_the_target_does_not_round_up() {
    let out = decide_brokers(
        &throughput(),
        Flags::default(),
        STALE,
        2,
        &[fresh(150.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(out.metrics[0].proposed_replicas, Some(3));
}

#[test]
fn within_tolerance_nothing_changes() {
    // 315 MiB/s over 6 = 52.5 MiB/s per broker: ratio 1.05, inside ±10 %.
    let out = decide_brokers(
        &throughput(),
        Flags::default(),
        STALE,
        6,
        &[fresh(315.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(out.decision.action, Action::Hold);
    assert_eq!(out.metrics[0].proposed_replicas, Some(6));
    // 336 MiB/s = 56 MiB/s per broker: ratio 1.12, outside: ceil(336/50) = 7.
    let out = decide_brokers(
        &throughput(),
        Flags::default(),
        STALE,
        6,
        &[fresh(336.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!((out.decision.action, out.decision.to), (Action::ScaleUp, 7));
}

#[test]
fn utilization_scales_current_replicas() {
    let p = brokers(vec![metric("heap", MetricType::HeapMemory, 75.0)]);
    // ceil(4 × 90 / 75) = ceil(4.8) = 5
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        4,
        &[fresh(90.0, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!((out.decision.action, out.decision.to), (Action::ScaleUp, 5));
}

#[test]
fn the_largest_proposal_wins() {
    let p = brokers(vec![
        metric("throughput", MetricType::Throughput, 50.0 * MI),
        metric("rate", MetricType::MessageRate, 20_000.0),
        metric("heap", MetricType::HeapMemory, 75.0),
    ]);
    // throughput → 3, rate 150k → 8, heap 90% over 4 → ceil(4.8) = 5
    let samples = [fresh(150.0 * MI, 0), fresh(150_000.0, 0), fresh(90.0, 0)];
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        4,
        &samples,
        &BrokerMemory::default(),
        at(0),
    );
    let proposals: Vec<_> = out.metrics.iter().map(|m| m.proposed_replicas).collect();
    assert_eq!(proposals, vec![Some(3), Some(8), Some(5)]);
    assert_eq!(out.decision.to, 8);
}

#[test]
fn a_missing_metric_blocks_scale_down_but_not_scale_up() {
    let p = brokers(vec![
        metric("throughput", MetricType::Throughput, 50.0 * MI),
        metric("heap", MetricType::HeapMemory, 75.0),
    ]);
    let mut down = p.clone();
    down.scale_down.window = Duration::ZERO;
    let low = decide_brokers(
        &down,
        Flags::default(),
        STALE,
        6,
        &[fresh(60.0 * MI, 0), None],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(low.decision.action, Action::Hold);
    assert!(matches!(low.availability, Availability::Partial(_)));
    assert!(
        low.decision
            .reason()
            .contains("no scale-down while data is missing")
    );
    let high = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        6,
        &[fresh(600.0 * MI, 0), None],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(
        (high.decision.action, high.decision.to),
        (Action::ScaleUp, 12)
    );
}

#[test]
fn stale_nan_infinite_and_negative_samples_are_missing() {
    let mut p = throughput();
    p.scale_down.window = Duration::ZERO;
    let now = 1000;
    for (sample, words) in [
        (fresh(10.0 * MI, now - 121), "older than maxStaleness"),
        (fresh(f64::NAN, now), "NaN"),
        (fresh(f64::INFINITY, now), "infinite"),
        (fresh(-1.0, now), "negative"),
        (None, "no data"),
    ] {
        let out = decide_brokers(
            &p,
            Flags::default(),
            STALE,
            6,
            &[sample],
            &BrokerMemory::default(),
            at(now),
        );
        assert_eq!(out.decision.action, Action::Hold, "{words}");
        assert!(
            matches!(out.availability, Availability::Unavailable(_)),
            "{words}"
        );
        assert!(
            out.metrics[0]
                .problem
                .as_deref()
                .unwrap_or("")
                .contains(words),
            "{words}: {:?}",
            out.metrics[0].problem
        );
        assert!(
            out.decision.reason().contains("no usable metrics"),
            "{}",
            out.decision.reason()
        );
        assert!(
            out.memory.recommendations.is_empty(),
            "an outage records no recommendation"
        );
    }
}

#[test]
fn partial_reporting_allows_only_scale_up() {
    let mut p = throughput();
    p.scale_down.window = Duration::ZERO;
    let partial = |v: f64| {
        Some(Sample {
            value: v,
            observed_at: at(0),
            reporting: Some(4),
        })
    };
    let low = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        6,
        &[partial(50.0 * MI)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(low.decision.action, Action::Hold);
    let high = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        6,
        &[partial(500.0 * MI)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(
        (high.decision.action, high.decision.to),
        (Action::ScaleUp, 10)
    );
}

#[test]
fn scale_down_waits_for_its_stabilization_window() {
    let p = throughput();
    let mut memory = BrokerMemory::default();
    memory.record(at(0), 8, Duration::from_secs(600));
    // At 300 s the load wants 4, but 8 was recommended 5 minutes ago: hold at 8.
    let held = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        8,
        &[fresh(200.0 * MI, 300)],
        &memory,
        at(300),
    );
    assert_eq!(held.decision.action, Action::Hold);
    assert_eq!(held.desired, 8);
    assert!(
        held.decision
            .reason()
            .contains("scale-down stabilization window 10m: highest recommendation in it is 8"),
        "{}",
        held.decision.reason()
    );
    // At 601 s the 8 has left the window; the highest left is 4 (from 300 s): one step down.
    let down = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        8,
        &[fresh(200.0 * MI, 601)],
        &held.memory,
        at(601),
    );
    assert_eq!(
        (down.decision.action, down.decision.to),
        (Action::ScaleDown, 7)
    );
    assert!(
        down.decision
            .reason()
            .contains("limited to -1 by scaleDown.maxStep")
    );
}

#[test]
fn scale_up_uses_the_lowest_recommendation_in_its_window() {
    let mut p = throughput();
    p.scale_up.window = Duration::from_secs(60);
    let mut memory = BrokerMemory::default();
    memory.record(at(0), 5, Duration::from_secs(600));
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        4,
        &[fresh(500.0 * MI, 30)],
        &memory,
        at(30),
    );
    assert_eq!((out.decision.action, out.decision.to), (Action::ScaleUp, 5));
}

#[test]
fn scale_up_cooldown_holds_and_says_how_long() {
    let p = throughput();
    let mut memory = BrokerMemory::default();
    memory.note_action(Action::ScaleUp, at(0));
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        4,
        &[fresh(400.0 * MI, 40)],
        &memory,
        at(40),
    );
    assert_eq!(out.decision.action, Action::Hold);
    assert_eq!(out.desired, 8);
    let reason = out.decision.reason();
    assert!(
        reason.contains("scale-up cooldown 1m: last change 40s ago (20s left)"),
        "{reason}"
    );
    assert!(out.limited.is_some());
    let later = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        4,
        &[fresh(400.0 * MI, 60)],
        &memory,
        at(60),
    );
    assert_eq!(later.decision.action, Action::ScaleUp);
}

#[test]
fn scale_down_cooldown_counts_from_any_change() {
    let mut p = throughput();
    p.scale_down.window = Duration::ZERO;
    let mut memory = BrokerMemory::default();
    memory.note_action(Action::ScaleUp, at(0));
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        8,
        &[fresh(100.0 * MI, 200)],
        &memory,
        at(200),
    );
    assert_eq!(out.decision.action, Action::Hold);
    assert!(out.decision.reason().contains("scale-down cooldown 5m"));
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        8,
        &[fresh(100.0 * MI, 300)],
        &memory,
        at(300),
    );
    assert_eq!(
        (out.decision.action, out.decision.to),
        (Action::ScaleDown, 7)
    );
}

#[test]
fn max_step_takes_the_larger_limit() {
    let p = throughput();
    // From 2: max(4 replicas, 100 % = 2) = 4 → 6.
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        2,
        &[fresh(1000.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(out.decision.to, 6);
    // From 10: max(4, 100 % = 10) = 10 → 20 (and 20 is the max).
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        10,
        &[fresh(2000.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(out.decision.to, 20);
}

#[test]
fn bounds_clamp_and_report_limits() {
    let p = throughput();
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        20,
        &[fresh(1250.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(out.decision.action, Action::Hold);
    assert_eq!(
        out.limited.as_deref(),
        Some("metrics want 25 brokers, pinned at maxReplicas 20")
    );
    // Below minReplicas with data: the declared minimum is restored.
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        1,
        &[fresh(10.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!((out.decision.action, out.decision.to), (Action::ScaleUp, 2));
}

#[test]
fn no_usable_metric_holds_even_outside_the_bounds() {
    let p = throughput();
    // 1 is below minReplicas 2, 25 above maxReplicas 20: without evidence neither moves.
    for current in [1, 25] {
        let out = decide_brokers(
            &p,
            Flags::default(),
            STALE,
            current,
            &[None],
            &BrokerMemory::default(),
            at(0),
        );
        assert_eq!(out.decision.action, Action::Hold, "{current}");
        assert_eq!(out.desired, current);
        assert!(matches!(out.availability, Availability::Unavailable(_)));
        let reason = out.decision.reason();
        assert!(reason.contains("no usable metrics: holding"), "{reason}");
        assert!(
            out.limited.is_some(),
            "outside the bounds is shown as limited"
        );
    }
}

#[test]
fn replicas_at_zero_are_a_pause_not_a_target() {
    // A person set replicas to 0; heavy load and minReplicas 2 would otherwise scale up.
    let out = decide_brokers(
        &throughput(),
        Flags::default(),
        STALE,
        0,
        &[fresh(412.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!((out.decision.action, out.decision.to), (Action::Hold, 0));
    assert!(
        out.decision.reason().contains("paused"),
        "{:?}",
        out.decision
    );
}

#[test]
fn dry_run_decides_but_does_not_mutate() {
    let flags = Flags {
        dry_run: true,
        suspend: false,
    };
    let out = decide_brokers(
        &throughput(),
        flags,
        STALE,
        6,
        &[fresh(412.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(out.decision.action, Action::ScaleUp);
    assert!(out.decision.dry_run && !out.decision.mutates());
}

#[test]
fn suspend_evaluates_nothing() {
    let flags = Flags {
        dry_run: false,
        suspend: true,
    };
    let out = decide_brokers(
        &throughput(),
        flags,
        STALE,
        6,
        &[fresh(412.0 * MI, 0)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(out.decision.action, Action::Hold);
    assert_eq!(out.availability, Availability::NotEvaluated);
    assert!(out.metrics.is_empty());
}

fn bookies() -> BookiePolicy {
    BookiePolicy {
        stateful_set: "pulsar-bookie".into(),
        templates: vec![],
        expand_at_used_percent: 80.0,
        increase_percent: 20.0,
        increase_minimum: 10 * GI,
        max_size: 2048 * GI,
        cooldown: Duration::from_secs(3600),
    }
}

fn claim(requested: u64, used_percent: Option<f64>) -> ClaimState {
    ClaimState {
        name: "ledgers-pulsar-bookie-0".into(),
        requested,
        capacity: Some(requested),
        usage: used_percent.map(|v| Sample::new(v, at(0))),
        bound: true,
        resize_in_progress: None,
        resize_infeasible: None,
        expandable: Some(true),
        last_expand: None,
    }
}

#[test]
fn claim_grows_by_percent_or_minimum() {
    let out = decide_claim(
        &bookies(),
        Flags::default(),
        STALE,
        &claim(100 * GI, Some(85.0)),
        at(0),
    );
    assert_eq!(
        (out.decision.action, out.decision.to),
        (Action::Expand, 120 * GI)
    );
    assert_eq!(out.state, VolumeState::Expanding);
    assert!(
        out.decision.reason().contains(
            "85% used of 100.0 GiB ≥ expandAtUsedPercent 80% → grow 100.0 GiB to 120.0 GiB"
        ),
        "{}",
        out.decision.reason()
    );
    // 20 % of 10Gi is 2Gi, below the 10Gi minimum.
    let out = decide_claim(
        &bookies(),
        Flags::default(),
        STALE,
        &claim(10 * GI, Some(90.0)),
        at(0),
    );
    assert_eq!(out.decision.to, 20 * GI);
    // 20 % of 7.5Gi is 1.5Gi < 10Gi → 17.5Gi, rounded up to 18Gi.
    let out = decide_claim(
        &bookies(),
        Flags::default(),
        STALE,
        &claim(15 * GI / 2, Some(90.0)),
        at(0),
    );
    assert_eq!(out.decision.to, 18 * GI);
}

#[test]
fn claim_is_capped_at_max_size_and_then_stops() {
    let out = decide_claim(
        &bookies(),
        Flags::default(),
        STALE,
        &claim(1900 * GI, Some(85.0)),
        at(0),
    );
    assert_eq!(out.decision.to, 2048 * GI);
    assert!(out.decision.reason().contains("capped at maxSize"));
    let out = decide_claim(
        &bookies(),
        Flags::default(),
        STALE,
        &claim(2048 * GI, Some(85.0)),
        at(0),
    );
    assert_eq!(
        (out.decision.action, out.state),
        (Action::Hold, VolumeState::AtMaxSize)
    );
}

#[test]
fn claim_expansion_is_blocked_for_stated_reasons() {
    let p = bookies();
    let cases: Vec<(ClaimState, VolumeState, &str)> = vec![
        (
            claim(100 * GI, Some(50.0)),
            VolumeState::Healthy,
            "< expandAtUsedPercent",
        ),
        (
            ClaimState {
                expandable: Some(false),
                ..claim(100 * GI, Some(85.0))
            },
            VolumeState::Blocked,
            "allowVolumeExpansion",
        ),
        (
            ClaimState {
                expandable: None,
                ..claim(100 * GI, Some(85.0))
            },
            VolumeState::Blocked,
            "could not be read",
        ),
        (
            ClaimState {
                bound: false,
                ..claim(100 * GI, Some(85.0))
            },
            VolumeState::Blocked,
            "not Bound",
        ),
        (
            ClaimState {
                resize_in_progress: Some("FileSystemResizePending".into()),
                resize_infeasible: None,
                ..claim(100 * GI, Some(85.0))
            },
            VolumeState::Resizing,
            "FileSystemResizePending",
        ),
        (
            ClaimState {
                last_expand: Some(at(-600)),
                ..claim(100 * GI, Some(85.0))
            },
            VolumeState::CoolingDown,
            "50m left",
        ),
        (
            claim(100 * GI, None),
            VolumeState::MetricsMissing,
            "no data",
        ),
    ];
    for (c, state, words) in cases {
        let out = decide_claim(&p, Flags::default(), STALE, &c, at(0));
        assert_eq!(out.decision.action, Action::Hold, "{words}");
        assert_eq!(out.state, state, "{words}");
        assert!(
            out.decision.reason().contains(words),
            "{words}: {}",
            out.decision.reason()
        );
    }
}

#[test]
fn example_policies_convert_to_engine_settings() {
    let text = std::fs::read_to_string("deploy/examples/brokers-prometheus.yaml").unwrap();
    let value: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let (resource, policy): (ScalingPolicy, Policy) =
        pulsar_autoscaler::policy::check_object(&value).unwrap();
    assert_eq!(resource.spec.interval, "15s");
    let b = policy.brokers.unwrap();
    assert_eq!((b.min_replicas, b.max_replicas), (3, 20));
    assert_eq!(b.metrics[0].target, 50.0 * MI);
    assert_eq!(b.metrics[1].target, 20_000.0);
    assert_eq!(b.scale_down.window, Duration::from_secs(600));
}

#[test]
fn each_metric_reports_its_load_relative_to_the_target() {
    let policy = brokers(vec![
        metric("throughput", MetricType::Throughput, 50.0 * MI),
        metric("heap", MetricType::HeapMemory, 75.0),
        metric("direct", MetricType::DirectMemory, 80.0),
    ]);
    // 300 MiB/s over 4 brokers is 75 MiB/s each: 1.5 × the target; heap 60 % of a 75 % target.
    let out = decide_brokers(
        &policy,
        Flags::default(),
        STALE,
        4,
        &[fresh(300.0 * MI, 0), fresh(60.0, 0), None],
        &BrokerMemory::default(),
        at(0),
    );
    let ratio = |i: usize| out.metrics[i].ratio;
    assert!((ratio(0).unwrap() - 1.5).abs() < 1e-9, "{:?}", ratio(0));
    assert!((ratio(1).unwrap() - 0.8).abs() < 1e-9, "{:?}", ratio(1));
    assert_eq!(ratio(2), None, "no sample, no ratio");
}

#[test]
fn claim_growth_starts_from_the_capacity_when_it_is_larger() {
    // The provider rounded 100Gi up to 110Gi: 20 % of 110Gi is 22Gi → 132Gi, not 120Gi.
    let mut c = claim(100 * GI, Some(85.0));
    c.capacity = Some(110 * GI);
    let out = decide_claim(&bookies(), Flags::default(), STALE, &c, at(0));
    assert_eq!(
        (out.decision.action, out.decision.from, out.decision.to),
        (Action::Expand, 100 * GI, 132 * GI)
    );
}

#[test]
fn an_infeasible_resize_stops_growth_and_says_so() {
    let mut c = claim(100 * GI, Some(95.0));
    c.resize_infeasible =
        Some("allocatedResourceStatuses.storage is ControllerResizeInfeasible".into());
    let out = decide_claim(&bookies(), Flags::default(), STALE, &c, at(0));
    assert_eq!(out.decision.action, Action::Hold);
    assert_eq!(out.state, VolumeState::ResizeInfeasible);
    assert!(out.decision.reason().contains("ControllerResizeInfeasible"));
}

#[test]
fn a_usage_sample_older_than_the_last_expansion_never_grows_again() {
    let mut p = bookies();
    p.cooldown = Duration::from_secs(10);
    let mut c = claim(120 * GI, Some(90.0)); // sampled at 0, still the old fill
    c.last_expand = Some(at(0));
    let out = decide_claim(&p, Flags::default(), STALE, &c, at(60));
    assert_eq!(out.decision.action, Action::Hold, "{:?}", out.decision);
    assert!(
        out.decision
            .reason()
            .contains("predates the last expansion")
    );
    // A sample taken after the expansion is used.
    c.usage = Some(Sample::new(90.0, at(30)));
    let out = decide_claim(&p, Flags::default(), STALE, &c, at(60));
    assert_eq!(out.decision.action, Action::Expand);
}
