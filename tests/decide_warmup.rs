//! Utilization metrics while new brokers are still starting: brokers that do not report yet
//! carry no load, so they must not be counted at the reporting brokers' utilization.

use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::api::MetricType;
use pulsar_autoscaler::decide::{Action, BrokerMemory, Flags, Sample, decide_brokers};
use pulsar_autoscaler::policy::{BrokerPolicy, Direction, MetricPolicy};

fn heap_policy(cooldown: Duration) -> BrokerPolicy {
    BrokerPolicy {
        stateful_set: "pulsar-broker".into(),
        min_replicas: 1,
        max_replicas: 100,
        tolerance: 0.1,
        metrics: vec![MetricPolicy {
            name: "heapmemory".into(),
            kind: MetricType::HeapMemory,
            target: 75.0,
            query: None,
        }],
        scale_up: Direction {
            window: Duration::ZERO,
            cooldown,
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

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

#[test]
fn brokers_not_reporting_yet_count_as_idle() {
    let policy = heap_policy(Duration::ZERO);
    // 14 brokers, 8 of them ready and reporting 100 % heap: the 8 carry all the load, so
    // ceil(8 × 100 / 75) = 11 brokers would do; 14 already run.
    let sample = Sample {
        value: 100.0,
        observed_at: at(0),
        reporting: Some(8),
    };
    let out = decide_brokers(
        &policy,
        Flags::default(),
        Duration::from_secs(120),
        14,
        &[Some(sample)],
        &BrokerMemory::default(),
        at(0),
    );
    assert_eq!(
        out.metrics[0].proposed_replicas,
        Some(11),
        "{:?}",
        out.metrics[0]
    );
    assert_eq!(
        out.decision.action,
        Action::Hold,
        "{}",
        out.decision.reason()
    );
}

#[test]
fn a_scale_up_still_warming_up_does_not_multiply_itself() {
    // Constant load on 8 ready brokers at 100 % heap; the new brokers never get ready within
    // the replay. The engine may add brokers once, but not keep adding for the same load.
    let policy = heap_policy(Duration::ZERO);
    let mut memory = BrokerMemory::default();
    let mut current = 8;
    for step in 0..20 {
        let now = at(step * 15);
        let sample = Sample {
            value: 100.0,
            observed_at: now,
            reporting: Some(8),
        };
        let out = decide_brokers(
            &policy,
            Flags::default(),
            Duration::from_secs(120),
            current,
            &[Some(sample)],
            &memory,
            now,
        );
        memory = out.memory;
        if out.decision.action != Action::Hold {
            memory.note_action(out.decision.action, now);
            current = out.decision.to as u32;
        }
    }
    assert_eq!(current, 11, "ceil(8 × 100 / 75) brokers carry the load");
}
