//! The simple cluster a replay acts on: broker pods that become ready after a delay, load that
//! spreads evenly over the ready ones, memory that follows load per broker, and one ledger claim
//! whose size follows the expansions.

/// Broker pods of the StatefulSet, oldest (lowest ordinal) first.
///
/// Pods are created in parallel (`podManagementPolicy: Parallel`, as Pulsar charts set for
/// brokers) and removed from the highest ordinal, so a scale-down removes the newest pods first.
/// With a drain time, a ready pod that a scale-down removes keeps serving (and costing) until its
/// bundles have moved away: it leaves the replica count at once but counts as ready capacity
/// until the drain time has passed, the mirror of a new pod's ready delay.
#[derive(Debug, Clone, PartialEq)]
pub struct Brokers {
    /// Time each pod becomes ready, in milliseconds from the start.
    ready_at: Vec<i64>,
    ready_delay_ms: i64,
    /// Time each draining pod is gone, in milliseconds from the start.
    gone_at: Vec<i64>,
    drain_ms: i64,
}

impl Brokers {
    /// `replicas` pods, all ready from the start; removed pods go at once.
    pub fn new(replicas: u32, ready_delay_ms: i64) -> Self {
        Brokers {
            ready_at: vec![i64::MIN; replicas as usize],
            ready_delay_ms: ready_delay_ms.max(0),
            gone_at: Vec::new(),
            drain_ms: 0,
        }
    }

    /// Ready pods removed by a scale-down keep serving for `drain_ms` first.
    pub fn with_drain(mut self, drain_ms: i64) -> Self {
        self.drain_ms = drain_ms.max(0);
        self
    }

    /// Pods that exist (the StatefulSet's replicas).
    pub fn replicas(&self) -> u32 {
        self.ready_at.len() as u32
    }

    /// Pods ready at `now_ms`, draining ones included.
    pub fn ready(&self, now_ms: i64) -> u32 {
        let ready = self.ready_at.iter().filter(|t| **t <= now_ms).count();
        (ready + self.draining(now_ms) as usize) as u32
    }

    /// Removed pods still draining at `now_ms`.
    pub fn draining(&self, now_ms: i64) -> u32 {
        self.gone_at.iter().filter(|t| **t > now_ms).count() as u32
    }

    /// Pods running (and paid for) at `now_ms`: the replicas and the draining ones.
    pub fn running(&self, now_ms: i64) -> u32 {
        self.replicas() + self.draining(now_ms)
    }

    /// The next time after `now_ms` at which a pod becomes ready or a draining one goes.
    pub fn next_ready_after(&self, now_ms: i64) -> Option<i64> {
        self.ready_at
            .iter()
            .chain(&self.gone_at)
            .copied()
            .filter(|t| *t > now_ms)
            .min()
    }

    /// Sets the replica count at `now_ms`: new pods get ready after the delay; removed pods that
    /// were ready drain for the drain time, unready ones go at once.
    pub fn scale_to(&mut self, replicas: u32, now_ms: i64) {
        self.gone_at.retain(|t| *t > now_ms);
        let keep = replicas as usize;
        if self.drain_ms > 0 && keep < self.ready_at.len() {
            let gone = now_ms.saturating_add(self.drain_ms);
            let leaving = self.ready_at[keep..]
                .iter()
                .filter(|t| **t <= now_ms)
                .count();
            self.gone_at.extend(std::iter::repeat_n(gone, leaving));
        }
        let ready_at = now_ms.saturating_add(self.ready_delay_ms);
        self.ready_at.resize(keep, ready_at);
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
    fn removed_pods_serve_until_drained_like_new_ones_wait_to_be_ready() {
        let mut b = Brokers::new(4, 60_000).with_drain(30_000);
        b.scale_to(2, 10_000);
        // The StatefulSet shrinks at once; the two leaving brokers carry load until 40 s.
        assert_eq!(
            (b.replicas(), b.ready(10_000), b.running(10_000)),
            (2, 4, 4)
        );
        assert_eq!(b.next_ready_after(10_000), Some(40_000));
        assert_eq!((b.ready(39_999), b.ready(40_000)), (4, 2));
        assert_eq!(b.running(40_000), 2);
        // A pod removed before it was ready never carried load: it goes at once.
        b.scale_to(3, 50_000);
        b.scale_to(2, 60_000);
        assert_eq!((b.ready(60_000), b.draining(60_000)), (2, 0));
        // Without a drain time, removal is immediate as before.
        let mut plain = Brokers::new(3, 0);
        plain.scale_to(1, 0);
        assert_eq!((plain.ready(0), plain.next_ready_after(0)), (1, None));
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
