//! The simple cluster a replay acts on: broker pods that become ready after a delay, load that
//! spreads evenly over the ready ones, memory that follows load per broker, and one ledger claim
//! whose size follows the expansions.

/// Broker pods of the StatefulSet, oldest (lowest ordinal) first.
///
/// Pods are created in parallel (`podManagementPolicy: Parallel`, as Pulsar charts set for
/// brokers) and removed from the highest ordinal, so a scale-down removes the newest pods first.
#[derive(Debug, Clone, PartialEq)]
pub struct Brokers {
    /// Time each pod becomes ready, in milliseconds from the start.
    ready_at: Vec<i64>,
    ready_delay_ms: i64,
}

impl Brokers {
    /// `replicas` pods, all ready from the start.
    pub fn new(replicas: u32, ready_delay_ms: i64) -> Self {
        Brokers {
            ready_at: vec![i64::MIN; replicas as usize],
            ready_delay_ms: ready_delay_ms.max(0),
        }
    }

    /// Pods that exist (the StatefulSet's replicas).
    pub fn replicas(&self) -> u32 {
        self.ready_at.len() as u32
    }

    /// Pods ready at `now_ms`.
    pub fn ready(&self, now_ms: i64) -> u32 {
        self.ready_at.iter().filter(|t| **t <= now_ms).count() as u32
    }

    /// The next time after `now_ms` at which a pod becomes ready.
    pub fn next_ready_after(&self, now_ms: i64) -> Option<i64> {
        self.ready_at.iter().copied().filter(|t| *t > now_ms).min()
    }

    /// Sets the replica count at `now_ms`: new pods get ready after the delay.
    pub fn scale_to(&mut self, replicas: u32, now_ms: i64) {
        let ready_at = now_ms.saturating_add(self.ready_delay_ms);
        self.ready_at.resize(replicas as usize, ready_at);
    }
}

/// Heap or direct memory utilization of the ready brokers, from a value recorded while
/// `recorded_brokers` carried the same load: utilization follows load per broker, and a JVM
/// cannot use more than all of its memory.
pub fn utilization(recorded_percent: f64, recorded_brokers: f64, ready: u32) -> f64 {
    if ready == 0 {
        return 100.0;
    }
    (recorded_percent * recorded_brokers / f64::from(ready)).min(100.0)
}

/// Per-broker share of a cluster total over the ready brokers (all of it on one when none is).
pub fn per_broker(total: f64, ready: u32) -> f64 {
    total / f64::from(ready.max(1))
}

/// The ledger claim the replay grows: its request and the capacity the filesystem shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Claim name, `<template>-<statefulset>-0`.
    pub name: String,
    /// Requested (and, since a resize completes at once in this model, actual) size in bytes.
    pub size: u64,
}

impl Claim {
    /// Used percent of the claim for `used` bytes; above 100 when the data would not fit.
    pub fn used_percent(&self, used: f64) -> f64 {
        if self.size == 0 {
            return 100.0;
        }
        used / self.size as f64 * 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_pods_get_ready_after_the_delay_and_newest_go_first() {
        let mut b = Brokers::new(3, 60_000);
        assert_eq!((b.replicas(), b.ready(0)), (3, 3));
        b.scale_to(5, 10_000);
        assert_eq!((b.replicas(), b.ready(69_999)), (5, 3));
        assert_eq!(b.next_ready_after(10_000), Some(70_000));
        assert_eq!(b.ready(70_000), 5);
        b.scale_to(7, 80_000);
        b.scale_to(6, 90_000);
        assert_eq!((b.replicas(), b.ready(90_000)), (6, 5));
        b.scale_to(4, 90_000);
        assert_eq!((b.replicas(), b.ready(90_000)), (4, 4));
        assert_eq!(b.next_ready_after(90_000), None);
    }

    #[test]
    fn memory_follows_load_per_broker() {
        assert_eq!(utilization(60.0, 3.0, 3), 60.0);
        assert_eq!(utilization(60.0, 3.0, 6), 30.0);
        assert_eq!(utilization(60.0, 3.0, 1), 100.0);
        assert_eq!(per_broker(300.0, 3), 100.0);
        assert_eq!(per_broker(300.0, 0), 300.0);
    }
}
