//! Metric rounds on their own clock: one task per metrics source runs a grouped round for every
//! policy reading it, at the shortest interval among them, keeps each policy's newest readings,
//! and wakes only the policies whose values changed. The number of queries per round depends on
//! the metric kinds in use, not on the number of policies or namespaces.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::index::{Index, PolicyKey};
use super::observe;
use crate::api::{ScalingPolicy, SourceType};
use crate::metrics::{
    self, DirectSource, KubeletStats, MetricsError, MetricsSource, PolicyReadings, Reading, Target,
};
use crate::policy::Policy;
use crate::telemetry::Metrics;

/// How long a round waits after a policy joined, so that policies arriving together (a
/// controller start, a relist) share one round instead of starting one each.
const JOIN_BATCH: Duration = Duration::from_millis(200);

/// One policy's newest readings and when they were taken.
#[derive(Debug, Clone)]
pub struct Fresh {
    /// The readings.
    pub readings: PolicyReadings,
    /// When the round ran.
    pub at: Timestamp,
}

struct Task {
    joined: Arc<Notify>,
}

/// Every source's round task and the newest readings of every policy.
pub struct Rounds {
    client: Client,
    index: Arc<RwLock<Index>>,
    metrics: Arc<Metrics>,
    wake: UnboundedSender<ObjectRef<ScalingPolicy>>,
    readings: Mutex<HashMap<PolicyKey, Arc<Fresh>>>,
    tasks: Mutex<HashMap<String, Task>>,
}

impl Rounds {
    /// Rounds reading pods and Secrets through `client`; changed policies are sent to `wake`.
    pub fn new(
        client: Client,
        index: Arc<RwLock<Index>>,
        metrics: Arc<Metrics>,
        wake: UnboundedSender<ObjectRef<ScalingPolicy>>,
    ) -> Self {
        Rounds {
            client,
            index,
            metrics,
            wake,
            readings: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// Makes sure `source` has a running round and that it runs soon for a newly joined policy.
    pub fn joined(self: &Arc<Self>, source: &str) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        if let Some(task) = tasks.get(source) {
            task.joined.notify_one();
            return;
        }
        let joined = Arc::new(Notify::new());
        tasks.insert(
            source.to_string(),
            Task {
                joined: joined.clone(),
            },
        );
        tokio::spawn(run(self.clone(), source.to_string(), joined));
    }

    /// The newest readings of a policy, once its source has run a round for it.
    pub fn readings(&self, key: &PolicyKey) -> Option<Arc<Fresh>> {
        self.readings.lock().ok()?.get(key).cloned()
    }

    /// Drops a deleted policy's readings (its source's task notices the smaller group itself).
    pub fn forget(&self, key: &PolicyKey) {
        if let Ok(mut r) = self.readings.lock() {
            r.remove(key);
        }
    }

    /// Number of running source tasks.
    pub fn sources(&self) -> usize {
        self.tasks.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Removes the task of `source` when no policy reads it any more; says whether it did.
    fn retire_if_unused(&self, source: &str) -> bool {
        let Ok(mut tasks) = self.tasks.lock() else {
            return true;
        };
        let empty = self
            .index
            .read()
            .map(|i| i.group(source).0.is_empty())
            .unwrap_or(true);
        if empty {
            tasks.remove(source);
        }
        empty
    }

    /// Stores a round's readings; wakes the policies whose values differ from the last round.
    fn publish(&self, results: Vec<(PolicyKey, PolicyReadings)>, at: Timestamp) {
        let mut changed = Vec::new();
        if let Ok(mut store) = self.readings.lock() {
            for (key, readings) in results {
                let differs = store
                    .get(&key)
                    .is_none_or(|old| !same_values(&old.readings, &readings));
                if differs {
                    changed.push(key.clone());
                }
                store.insert(key, Arc::new(Fresh { readings, at }));
            }
        }
        for key in changed {
            let _ = self.wake.unbounded_send(key.object_ref());
        }
    }
}

/// Whether two rounds found the same values and problems (measurement times aside: a new scrape
/// of an unchanged value wakes nobody).
pub fn same_values(a: &PolicyReadings, b: &PolicyReadings) -> bool {
    let reading = |x: &Reading, y: &Reading| {
        x.problem == y.problem
            && match (x.sample, y.sample) {
                (Some(s), Some(t)) => s.value == t.value && s.reporting == t.reporting,
                (None, None) => true,
                _ => false,
            }
    };
    a.errors == b.errors
        && a.brokers.len() == b.brokers.len()
        && a.brokers.iter().zip(&b.brokers).all(|(x, y)| reading(x, y))
        && a.claims.len() == b.claims.len()
        && a.claims
            .iter()
            .zip(&b.claims)
            .all(|((n, x), (m, y))| n == m && reading(x, y))
}

/// A source's client, built for one version of its group's settings.
enum SourceClient {
    Query(Arc<dyn MetricsSource>),
    Direct(Box<DirectSource>),
}

async fn build(
    kube: &Client,
    namespace: &str,
    policy: &Policy,
) -> Result<SourceClient, MetricsError> {
    if policy.source.kind == SourceType::Direct {
        let credentials = metrics::Credentials::default();
        return Ok(SourceClient::Direct(Box::new(DirectSource::new(
            Vec::new(),
            None,
            policy.source.timeout,
            &credentials,
        )?)));
    }
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), namespace);
    let credentials = metrics::credentials::resolve(&secrets, &policy.source).await?;
    Ok(SourceClient::Query(metrics::build(
        &policy.source,
        &credentials,
        Vec::new(),
        None,
    )?))
}

/// The loop of one source: a round, then sleep until the next tick or a newly joined policy.
async fn run(rounds: Arc<Rounds>, source: String, joined: Arc<Notify>) {
    let mut client: Option<(u64, SourceClient)> = None;
    // When the query client was built, and whether its last round failed anywhere.
    let mut built_at = Instant::now();
    let mut failing = false;
    let mut next = Instant::now() + JOIN_BATCH;
    loop {
        // The controller this round served has stopped (lease lost, shutdown).
        if rounds.wake.is_closed() {
            if let Ok(mut t) = rounds.tasks.lock() {
                t.remove(&source);
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {},
            _ = joined.notified() => tokio::time::sleep(JOIN_BATCH).await,
        }
        let (group, version) = match rounds.index.read() {
            Ok(i) => i.group(&source),
            Err(_) => return,
        };
        if group.is_empty() {
            if rounds.retire_if_unused(&source) {
                return;
            }
            continue;
        }
        let period = group
            .iter()
            .map(|(_, p)| p.interval)
            .min()
            .unwrap_or(Duration::from_secs(15));
        let started = Instant::now();
        next = started + period;
        let now = Timestamp::now();
        let (key0, policy0) = &group[0];
        if client.as_ref().is_none_or(|(v, c)| {
            *v != version || matches!(c, SourceClient::Query(_)) && stale(built_at, failing)
        }) {
            built_at = Instant::now();
            // Secrets or settings may have changed with a spec: build the client anew.
            client = match build(&rounds.client, &key0.namespace, policy0).await {
                Ok(c) => Some((version, c)),
                Err(e) => {
                    let failed = group
                        .iter()
                        .map(|(k, _)| {
                            count_error(&rounds.metrics, k, e.label());
                            let mut r = PolicyReadings::default();
                            r.errors.push(e.to_string());
                            (k.clone(), r)
                        })
                        .collect();
                    rounds.publish(failed, now);
                    continue;
                }
            };
        }
        let Some((_, c)) = client.as_mut() else {
            continue;
        };
        let targets: Vec<Target<'_>> = group
            .iter()
            .map(|(k, p)| Target {
                namespace: &k.namespace,
                name: &k.name,
                policy: p,
            })
            .collect();
        let results = match c {
            SourceClient::Query(q) => metrics::collect(q.as_ref(), &targets, now).await,
            SourceClient::Direct(d) => {
                let policies: Vec<&Policy> = group.iter().map(|(_, p)| p.as_ref()).collect();
                let (pods, nodes) =
                    observe::discover(&rounds.client, &key0.namespace, &policies).await;
                d.set_pods(pods);
                d.set_kubelet((!nodes.is_empty()).then(|| KubeletStats {
                    client: rounds.client.clone(),
                    nodes,
                }));
                metrics::collect(d.as_ref(), &targets, now).await
            }
        };
        let results: Vec<(PolicyKey, PolicyReadings)> =
            group.iter().map(|(k, _)| k.clone()).zip(results).collect();
        failing = results.iter().any(|(_, r)| !r.errors.is_empty());
        for (k, r) in &results {
            for kind in &r.error_kinds {
                count_error(&rounds.metrics, k, kind);
            }
        }
        rounds.publish(results, now);
    }
}

/// Credentials are read again (Secrets listed anew) this often, so a rotated Secret is used
/// without a restart...
const CREDENTIALS_TTL: Duration = Duration::from_secs(300);
/// ...and this soon after a round failed (a 401 after a rotation freezes nothing for long).
const CREDENTIALS_RETRY: Duration = Duration::from_secs(15);

/// Whether a query client's credentials are due to be read again.
fn stale(built_at: Instant, failing: bool) -> bool {
    let age = built_at.elapsed();
    age >= CREDENTIALS_TTL || failing && age >= CREDENTIALS_RETRY
}

fn count_error(metrics: &Metrics, key: &PolicyKey, kind: &str) {
    metrics.count_source_error(&key.namespace, &key.name, kind);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Sample;

    fn readings(value: f64, at: i64, problem: Option<&str>) -> PolicyReadings {
        PolicyReadings {
            brokers: vec![Reading {
                sample: Some(Sample {
                    value,
                    observed_at: Timestamp::from_second(1_700_000_000 + at).unwrap(),
                    reporting: Some(3),
                }),
                problem: problem.map(String::from),
            }],
            ..PolicyReadings::default()
        }
    }

    #[test]
    fn a_new_scrape_of_the_same_value_wakes_nobody() {
        assert!(same_values(
            &readings(10.0, 0, None),
            &readings(10.0, 15, None)
        ));
        assert!(!same_values(
            &readings(10.0, 0, None),
            &readings(11.0, 15, None)
        ));
        assert!(!same_values(
            &readings(10.0, 0, None),
            &readings(10.0, 15, Some("pulsar-broker-2: sample is 3m old"))
        ));
        let mut missing = readings(10.0, 0, None);
        missing.brokers[0].sample = None;
        assert!(!same_values(&readings(10.0, 0, None), &missing));
        let mut failed = readings(10.0, 0, None);
        failed.errors.push("throughput: connection refused".into());
        assert!(!same_values(&readings(10.0, 0, None), &failed));
    }
}
