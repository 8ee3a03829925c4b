//! How the engine counts a broker that a scale-up added and that does not carry load yet: it
//! must not cause a second scale-up by itself. Hand-checked cases, then properties.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;
use pulsar_autoscaler::api::{BrokerStatus, MetricType, RebalanceStatus};
use pulsar_autoscaler::decide::{
    Action, BrokerMemory, Flags, SETTLE_AFTER_MOVES, Sample, Settling, decide_brokers,
};
use pulsar_autoscaler::policy::{BrokerPolicy, Direction, MetricPolicy};

const MI: f64 = 1024.0 * 1024.0;
const STALE: Duration = Duration::from_secs(120);

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn policy(kind: MetricType, target: f64) -> BrokerPolicy {
    BrokerPolicy {
        stateful_set: "pulsar-broker".into(),
        min_replicas: 1,
        max_replicas: 20,
        tolerance: 0.1,
        metrics: vec![MetricPolicy {
            name: "m".into(),
            kind,
            target,
            query: None,
        }],
        // No cooldown: the settling rule must hold on its own, not behind a cooldown.
        scale_up: Direction {
            window: Duration::ZERO,
            cooldown: Duration::ZERO,
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

fn reporting(value: f64, n: u32, t: i64) -> Option<Sample> {
    Some(Sample {
        value,
        observed_at: at(t),
        reporting: Some(n),
    })
}

fn memory(settling: Option<Settling>) -> BrokerMemory {
    BrokerMemory {
        settling,
        ..BrokerMemory::default()
    }
}

const MOVING: Option<Settling> = Some(Settling {
    brokers: 1,
    until: None,
});

#[test]
fn an_idle_added_broker_raises_the_utilization_sum_by_itself() {
    // Two brokers at 100 % heap, target 75: ceil(2 × 100 / 75) = 3, scale 2 → 3.
    let p = policy(MetricType::HeapMemory, 75.0);
    let first = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        2,
        &[reporting(100.0, 2, 0)],
        &memory(None),
        at(0),
    );
    assert_eq!(
        (first.decision.action, first.decision.to),
        (Action::ScaleUp, 3)
    );
    // The added broker is up but owns no bundle: its idle JVM reports 55 % heap, the two old
    // ones still 100 %. Average (100 + 100 + 55) / 3 = 85 % (ratio 1.13, beyond the 10 %
    // tolerance): ceil(3 × 85 / 75) = ceil(3.4) = 4.
    // Counted as load, the empty broker asks for a fourth.
    let unsettled = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        3,
        &[reporting(85.0, 3, 30)],
        &memory(None),
        at(30),
    );
    assert_eq!(unsettled.decision.to, 4, "the problem the rule is for");
    // While the rebalance moves bundles onto it, the engine holds at 3 and says why.
    let settling = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        3,
        &[reporting(85.0, 3, 30)],
        &memory(MOVING),
        at(30),
    );
    assert_eq!(settling.decision.action, Action::Hold);
    assert_eq!(settling.desired, 3);
    let reason = settling.decision.reason();
    assert!(
        reason.contains("1 added broker(s) not carrying their share yet")
            && reason.contains("4 wanted, holding 3"),
        "{reason}"
    );
    // The metric still shows what it proposes: the status is not rewritten to look calm.
    assert_eq!(settling.metrics[0].proposed_replicas, Some(4));
}

#[test]
fn a_total_is_not_changed_by_an_empty_broker() {
    // 120 MiB/s against 50 MiB/s per broker: 3 brokers, whether 2 or 3 run now.
    let p = policy(MetricType::Throughput, 50.0 * MI);
    for current in [2, 3] {
        let out = decide_brokers(
            &p,
            Flags::default(),
            STALE,
            current,
            &[reporting(120.0 * MI, current, 0)],
            &memory(None),
            at(0),
        );
        assert_eq!(out.metrics[0].proposed_replicas, Some(3), "{current}");
    }
}

#[test]
fn a_bundle_counted_on_both_brokers_between_their_refreshes_does_not_scale_up() {
    // 140 MiB/s on 3 brokers is within tolerance (ceil(140/50) = 3). A moved 35 MiB/s bundle
    // reported by its new owner before its old owner refreshes reads as 175 MiB/s (ratio 1.17):
    // ceil(175/50) = 4 brokers.
    let p = policy(MetricType::Throughput, 50.0 * MI);
    let double = [reporting(175.0 * MI, 3, 100)];
    let plain = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        3,
        &double,
        &memory(None),
        at(100),
    );
    assert_eq!(plain.decision.to, 4);
    // The rebalance finished at 90 s: its rates settle until 90 + 60 s.
    let after = Some(Settling {
        brokers: 1,
        until: Some(at(90 + SETTLE_AFTER_MOVES.as_secs() as i64)),
    });
    let out = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        3,
        &double,
        &memory(after),
        at(100),
    );
    assert_eq!(out.decision.action, Action::Hold);
    assert!(out.decision.reason().contains("rates settle until"));
    // Once settled, a real rise scales up again.
    let later = decide_brokers(
        &p,
        Flags::default(),
        STALE,
        3,
        &[reporting(175.0 * MI, 3, 200)],
        &memory(after),
        at(200),
    );
    assert_eq!(
        (later.decision.action, later.decision.to),
        (Action::ScaleUp, 4)
    );
}

#[test]
fn settling_never_holds_back_a_scale_down_decision_or_invents_one() {
    // Load fell: the decision is the same with or without settling brokers.
    let p = policy(MetricType::Throughput, 50.0 * MI);
    let samples = [reporting(40.0 * MI, 3, 0)];
    let mut m = memory(MOVING);
    m.recommendations = vec![(at(-700), 3)];
    let a = decide_brokers(&p, Flags::default(), STALE, 3, &samples, &m, at(0));
    m.settling = None;
    let b = decide_brokers(&p, Flags::default(), STALE, 3, &samples, &m, at(0));
    assert_eq!(a.decision, b.decision);
}

fn rebalance(state: &str, moved: i32, finished: Option<i64>) -> BrokerStatus {
    BrokerStatus {
        rebalance: Some(Box::new(RebalanceStatus {
            state: state.into(),
            from_replicas: 2,
            to_replicas: 3,
            started_at: Time(at(0)),
            finished_at: finished.map(|s| Time(at(s))),
            fair_share: None,
            added_brokers: Vec::new(),
            bundles_moved: moved,
            failures: 0,
            message: None,
        })),
        ..BrokerStatus::default()
    }
}

#[test]
fn settling_is_read_from_the_rebalance_status_so_it_survives_a_restart() {
    let read = |s: &BrokerStatus| BrokerMemory::from_status(s).settling;
    assert_eq!(read(&rebalance("Waiting", 0, None)), MOVING);
    assert_eq!(read(&rebalance("Moving", 2, None)), MOVING);
    assert_eq!(
        read(&rebalance("Done", 2, Some(50))),
        Some(Settling {
            brokers: 1,
            until: Some(at(110)),
        })
    );
    // Nothing moved: no rate can count a bundle twice; failed or stopped: nothing moves any more.
    assert_eq!(read(&rebalance("Done", 0, Some(50))), None);
    assert_eq!(read(&rebalance("Failed", 2, Some(50))), None);
    assert_eq!(read(&rebalance("Stopped", 2, Some(50))), None);
    assert_eq!(read(&BrokerStatus::default()), None);
}

proptest! {
    /// While added brokers settle, no evaluation scales up; everything else is decided exactly
    /// as without them.
    #[test]
    fn settling_only_ever_turns_a_scale_up_into_a_hold(
        heap in 0.0f64..200.0,
        throughput in 0.0f64..1000.0,
        current in 1u32..12,
        utilization in proptest::bool::ANY,
        last_up in proptest::option::of(-900i64..0),
    ) {
        let p = if utilization {
            policy(MetricType::HeapMemory, 75.0)
        } else {
            policy(MetricType::Throughput, 50.0 * MI)
        };
        let value = if utilization { heap } else { throughput * MI };
        let samples = [reporting(value, current, 0)];
        let mut base = memory(None);
        base.last_scale_up = last_up.map(at);
        let mut settling = base.clone();
        settling.settling = MOVING;
        let plain = decide_brokers(&p, Flags::default(), STALE, current, &samples, &base, at(0));
        let held = decide_brokers(&p, Flags::default(), STALE, current, &samples, &settling, at(0));
        prop_assert_ne!(held.decision.action, Action::ScaleUp);
        if plain.decision.action == Action::ScaleUp {
            prop_assert_eq!(held.decision.action, Action::Hold);
            prop_assert_eq!(held.decision.to, u64::from(current));
        } else {
            prop_assert_eq!(&held.decision, &plain.decision);
        }
        prop_assert_eq!(&held.metrics, &plain.metrics);
    }
}
