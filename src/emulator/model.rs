//! The emulated cluster: broker count, bookie claims and load, advanced in time, with the
//! ground truth every preset should read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::profile::Profile;

/// Heap size of every emulated broker (`-Xmx`).
pub const HEAP_MAX: f64 = 2.0 * 1024.0 * 1024.0 * 1024.0;
/// Direct memory limit of every emulated broker.
pub const DIRECT_MAX: f64 = 1024.0 * 1024.0 * 1024.0;
/// Inbound bytes/s per broker at which heap use reaches its load-driven maximum.
const HEAP_REFERENCE: f64 = 100.0 * 1024.0 * 1024.0;
/// Copies of each entry written to bookies (write quorum).
const WRITE_QUORUM: f64 = 2.0;
/// Journal bytes per ledger byte kept on disk (the rest is trimmed after checkpoints).
const JOURNAL_RATIO: f64 = 0.1;

/// Fixed settings of an emulated cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kubernetes namespace of the pods and claims.
    pub namespace: String,
    /// Broker StatefulSet name.
    pub broker_statefulset: String,
    /// Bookie StatefulSet name.
    pub bookie_statefulset: String,
    /// Brokers running at start.
    pub brokers: u32,
    /// Broker pods that can ever run (one port each).
    pub max_brokers: u32,
    /// Bookies.
    pub bookies: u32,
    /// Load over time.
    pub profile: Profile,
    /// Outbound bytes per inbound byte (consumers per message).
    pub fanout: f64,
    /// Initial size of each ledgers claim in bytes.
    pub ledger_claim_bytes: u64,
    /// Initial size of each journal claim in bytes.
    pub journal_claim_bytes: u64,
    /// Used share of the ledgers claims at start, percent.
    pub ledger_initial_percent: f64,
    /// Used share of the journal claims at start, percent.
    pub journal_initial_percent: f64,
    /// Share of written bytes that stays on the ledger disks (retention, compaction), 0..=1.
    pub disk_write_ratio: f64,
    /// Topics per broker page, for page size.
    pub topics: u32,
    /// Whether each topic carries every topic-level series a real broker publishes for a topic
    /// with one producer and one subscription (95, a real page's weight) instead of five.
    pub topic_detail: bool,
    /// Node name the bookie pods run on (kubelet summary).
    pub node: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: "pulsar".into(),
            broker_statefulset: "pulsar-broker".into(),
            bookie_statefulset: "pulsar-bookie".into(),
            brokers: 3,
            max_brokers: 10,
            bookies: 3,
            profile: Profile::Constant(super::profile::Load {
                bytes_in: 60.0 * 1024.0 * 1024.0,
                messages_in: 30_000.0,
            }),
            fanout: 2.0,
            ledger_claim_bytes: 50 << 30,
            journal_claim_bytes: 10 << 30,
            ledger_initial_percent: 40.0,
            journal_initial_percent: 5.0,
            disk_write_ratio: 0.001,
            topics: 4,
            topic_detail: false,
            node: "node-a".into(),
        }
    }
}

/// One bookie claim.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// Filesystem capacity in bytes.
    pub capacity_bytes: f64,
    /// Used bytes.
    pub used_bytes: f64,
}

impl Claim {
    /// Used percent of capacity.
    pub fn used_percent(&self) -> f64 {
        100.0 * self.used_bytes / self.capacity_bytes
    }
}

/// What one broker serves at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerValues {
    /// Bytes/s in.
    pub throughput_in: f64,
    /// Bytes/s out.
    pub throughput_out: f64,
    /// Messages/s in.
    pub rate_in: f64,
    /// Messages/s out.
    pub rate_out: f64,
    /// Heap used bytes.
    pub heap_used: f64,
    /// Direct memory used bytes.
    pub direct_used: f64,
}

/// The mutable cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Fixed settings.
    pub config: Config,
    /// Brokers running now.
    pub brokers: u32,
    /// Multiplier on the profile's load.
    pub load_factor: f64,
    /// Claims by name.
    pub claims: BTreeMap<String, Claim>,
    /// Seconds since start up to which disk usage has been integrated.
    advanced_to: f64,
}

impl Cluster {
    /// A cluster at time zero.
    pub fn new(config: Config) -> Self {
        let mut claims = BTreeMap::new();
        for i in 0..config.bookies {
            let sts = &config.bookie_statefulset;
            let ledger = config.ledger_claim_bytes as f64;
            let journal = config.journal_claim_bytes as f64;
            claims.insert(
                format!("ledgers-{sts}-{i}"),
                Claim {
                    capacity_bytes: ledger,
                    used_bytes: ledger * config.ledger_initial_percent / 100.0,
                },
            );
            claims.insert(
                format!("journal-{sts}-{i}"),
                Claim {
                    capacity_bytes: journal,
                    used_bytes: journal * config.journal_initial_percent / 100.0,
                },
            );
        }
        Cluster {
            brokers: config.brokers.min(config.max_brokers),
            load_factor: 1.0,
            claims,
            advanced_to: 0.0,
            config,
        }
    }

    /// Pod name of broker `i`.
    pub fn broker_pod(&self, i: u32) -> String {
        format!("{}-{i}", self.config.broker_statefulset)
    }

    /// Pod name of bookie `i`.
    pub fn bookie_pod(&self, i: u32) -> String {
        format!("{}-{i}", self.config.bookie_statefulset)
    }

    /// Integrates disk growth up to `t` seconds after start, in steps of at most one second.
    pub fn advance(&mut self, t: f64) {
        while self.advanced_to < t {
            let step = (t - self.advanced_to).min(1.0);
            let mid = self.advanced_to + step / 2.0;
            let written = self.config.profile.at(mid).bytes_in * self.load_factor * step;
            let per_bookie = written * WRITE_QUORUM / f64::from(self.config.bookies.max(1))
                * self.config.disk_write_ratio;
            for (name, claim) in self.claims.iter_mut() {
                let add = if name.starts_with("journal-") {
                    per_bookie * JOURNAL_RATIO
                } else {
                    per_bookie
                };
                claim.used_bytes = (claim.used_bytes + add).min(claim.capacity_bytes);
            }
            self.advanced_to += step;
        }
    }

    /// Broker `i`'s values at `t`; `None` when that broker is not running.
    pub fn broker(&self, i: u32, t: f64) -> Option<BrokerValues> {
        if i >= self.brokers {
            return None;
        }
        let n = f64::from(self.brokers);
        let load = self.config.profile.at(t);
        let bytes_in = load.bytes_in * self.load_factor / n;
        let messages_in = load.messages_in * self.load_factor / n;
        // A little spread between brokers, so that an average differs from any one broker.
        let skew = 0.01 * f64::from(i % 5);
        let heap = (0.25 + 0.5 * bytes_in / HEAP_REFERENCE + skew).clamp(0.0, 0.98);
        let direct = (0.10 + 0.6 * bytes_in / HEAP_REFERENCE + skew / 2.0).clamp(0.0, 0.98);
        Some(BrokerValues {
            throughput_in: bytes_in,
            throughput_out: bytes_in * self.config.fanout,
            rate_in: messages_in,
            rate_out: messages_in * self.config.fanout,
            heap_used: (HEAP_MAX * heap).round(),
            direct_used: (DIRECT_MAX * direct).round(),
        })
    }

    /// The ledgers and journal claims of bookie `i`.
    pub fn bookie_claims(&self, i: u32) -> (Option<&Claim>, Option<&Claim>) {
        let sts = &self.config.bookie_statefulset;
        (
            self.claims.get(&format!("ledgers-{sts}-{i}")),
            self.claims.get(&format!("journal-{sts}-{i}")),
        )
    }

    /// What every preset should read at `t` (call [`Cluster::advance`] first).
    pub fn truth(&self, t: f64) -> Truth {
        let brokers: Vec<(String, BrokerValues)> = (0..self.brokers)
            .filter_map(|i| self.broker(i, t).map(|v| (self.broker_pod(i), v)))
            .collect();
        let n = brokers.len().max(1) as f64;
        let sum = |f: fn(&BrokerValues) -> f64| brokers.iter().map(|(_, v)| f(v)).sum::<f64>();
        let mut ledger_usage = BTreeMap::new();
        for i in 0..self.config.bookies {
            if let (Some(c), _) = self.bookie_claims(i) {
                ledger_usage.insert(self.bookie_pod(i), c.used_percent());
            }
        }
        Truth {
            seconds: t,
            brokers: self.brokers,
            load_factor: self.load_factor,
            throughput: sum(|v| v.throughput_in + v.throughput_out),
            message_rate: sum(|v| v.rate_in + v.rate_out),
            heap_memory: sum(|v| 100.0 * v.heap_used / HEAP_MAX) / n,
            direct_memory: sum(|v| 100.0 * v.direct_used / DIRECT_MAX) / n,
            per_broker: brokers.into_iter().collect(),
            ledger_usage,
            claim_usage: self
                .claims
                .iter()
                .map(|(k, c)| (k.clone(), c.used_percent()))
                .collect(),
        }
    }
}

/// The emulator's ground truth: what each preset must return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Truth {
    /// Seconds since the emulator started.
    pub seconds: f64,
    /// Brokers running.
    pub brokers: u32,
    /// Current load multiplier.
    pub load_factor: f64,
    /// Bytes/s in + out, summed over brokers.
    pub throughput: f64,
    /// Messages/s in + out, summed over brokers.
    pub message_rate: f64,
    /// Heap used / max in percent, averaged over brokers.
    pub heap_memory: f64,
    /// Direct memory used / max in percent, averaged over brokers.
    pub direct_memory: f64,
    /// Each broker's raw values.
    pub per_broker: BTreeMap<String, BrokerValues>,
    /// Ledger directory usage percent per bookie pod.
    pub ledger_usage: BTreeMap<String, f64>,
    /// Used percent per claim.
    pub claim_usage: BTreeMap<String, f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_splits_evenly_and_disks_grow() {
        let mut c = Cluster::new(Config {
            disk_write_ratio: 1.0,
            ..Config::default()
        });
        let t3 = c.truth(0.0);
        c.brokers = 6;
        let t6 = c.truth(0.0);
        assert!((t3.throughput - t6.throughput).abs() < 1e-6);
        let b = c.broker(0, 0.0).unwrap();
        assert!((b.throughput_in * 6.0 - 60.0 * 1024.0 * 1024.0).abs() < 1e-6);
        assert!(c.broker(6, 0.0).is_none());
        let before = c.truth(0.0).claim_usage["ledgers-pulsar-bookie-0"];
        c.advance(10.0);
        let after = c.truth(10.0).claim_usage["ledgers-pulsar-bookie-0"];
        // 60 MiB/s × 2 copies / 3 bookies × 10 s = 400 MiB on a 50 GiB claim.
        assert!((after - before - 100.0 * 400.0 / (50.0 * 1024.0)).abs() < 1e-6);
    }
}
