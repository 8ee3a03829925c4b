//! The policy index, fed by the policy watch: each policy's checked settings, computed once per
//! (uid, generation), and reverse maps from metrics source and from target StatefulSet to the
//! policies they concern, so a round, a reconcile or a StatefulSet/claim event touches only its
//! own policies.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::observe::source_key;
use crate::api::ScalingPolicy;
use crate::metrics::round::claim_of;
use crate::policy::{self, Policy};

/// `namespace/name` of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl PolicyKey {
    /// The key of a policy object (empty namespace for a cluster-scoped object, which never comes).
    pub fn of(sp: &ScalingPolicy) -> Self {
        PolicyKey {
            namespace: sp.namespace().unwrap_or_default(),
            name: sp.name_any(),
        }
    }

    /// The reference kube-runtime schedules reconciles by.
    pub fn object_ref(&self) -> ObjectRef<ScalingPolicy> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A policy's checked settings for one generation.
#[derive(Debug)]
pub struct Checked {
    /// The object's uid: a policy deleted and created again under the same name is new.
    pub uid: Option<String>,
    /// The generation these settings belong to.
    pub generation: Option<i64>,
    /// The settings, or every problem in one line.
    pub policy: Result<Arc<Policy>, String>,
    /// The metrics source's round this policy takes part in (valid and not suspended).
    pub source: Option<String>,
}

/// `spec.brokers.admin` of a policy, if any.
pub(super) fn admin_of(sp: &ScalingPolicy) -> Option<&crate::api::AdminSpec> {
    sp.spec.brokers.as_ref().and_then(|b| b.admin.as_deref())
}

impl Checked {
    fn new(sp: &ScalingPolicy, admission: &policy::Admission) -> Self {
        let namespace = sp.namespace().unwrap_or_default();
        let object = serde_json::to_value(sp).unwrap_or_default();
        let policy = match policy::check_object(&object) {
            Ok((_, p)) => Ok(Arc::new(p)),
            Err(problems) => Err(problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")),
        };
        // A policy the operator refuses never joins a round, even on a shared source.
        let source = match &policy {
            Ok(p) if !p.suspend && admission.check(&p.source, admin_of(sp)).is_ok() => {
                Some(source_key(&namespace, &p.source))
            }
            _ => None,
        };
        Checked {
            uid: sp.metadata.uid.clone(),
            generation: sp.metadata.generation,
            policy,
            source,
        }
    }

    fn targets(&self) -> Vec<String> {
        let Ok(p) = &self.policy else {
            return Vec::new();
        };
        p.brokers
            .iter()
            .map(|b| b.stateful_set.clone())
            .chain(p.bookies.iter().map(|b| b.stateful_set.clone()))
            .collect()
    }
}

/// What an upsert changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upsert {
    /// The same uid and generation: nothing was checked again.
    Unchanged,
    /// A new policy or a new generation; the source it joined, if any.
    Checked {
        /// The source round it now takes part in.
        joined: Option<String>,
    },
}

/// Every known policy, by key, with the reverse maps.
#[derive(Default)]
pub struct Index {
    entries: HashMap<PolicyKey, Arc<Checked>>,
    by_source: HashMap<String, BTreeSet<PolicyKey>>,
    /// Usually one policy per target, so a small vector (a one-element `BTreeSet` allocates a
    /// node for eleven keys).
    by_statefulset: HashMap<(String, String), Vec<PolicyKey>>,
    /// Bumped whenever a member of a source's group gets a new generation (clients rebuilt).
    versions: HashMap<String, u64>,
    checks: u64,
    admission: policy::Admission,
}

impl Index {
    /// An empty index whose policies must pass `admission` to join a round.
    pub fn new(admission: policy::Admission) -> Self {
        Index {
            admission,
            ..Index::default()
        }
    }

    /// Records a policy as the watch delivered it; checks it only for a new uid or generation.
    pub fn upsert(&mut self, sp: &ScalingPolicy) -> Upsert {
        let key = PolicyKey::of(sp);
        if let Some(e) = self.entries.get(&key)
            && e.uid == sp.metadata.uid
            && e.generation == sp.metadata.generation
        {
            return Upsert::Unchanged;
        }
        self.remove(&key);
        let checked = Arc::new(Checked::new(sp, &self.admission));
        self.checks += 1;
        if let Some(source) = &checked.source {
            self.by_source
                .entry(source.clone())
                .or_default()
                .insert(key.clone());
            *self.versions.entry(source.clone()).or_default() += 1;
        }
        for target in checked.targets() {
            let set = self
                .by_statefulset
                .entry((key.namespace.clone(), target))
                .or_default();
            if !set.contains(&key) {
                set.push(key.clone());
                set.sort();
            }
        }
        let joined = checked.source.clone();
        self.entries.insert(key, checked);
        Upsert::Checked { joined }
    }

    /// Forgets a policy; returns what was known of it.
    pub fn remove(&mut self, key: &PolicyKey) -> Option<Arc<Checked>> {
        let old = self.entries.remove(key)?;
        if let Some(source) = &old.source
            && let Some(set) = self.by_source.get_mut(source)
        {
            set.remove(key);
            if set.is_empty() {
                self.by_source.remove(source);
                self.versions.remove(source);
            }
        }
        for target in old.targets() {
            let t = (key.namespace.clone(), target);
            if let Some(set) = self.by_statefulset.get_mut(&t) {
                set.retain(|k| k != key);
                if set.is_empty() {
                    self.by_statefulset.remove(&t);
                }
            }
        }
        Some(old)
    }

    /// The checked settings of a policy.
    pub fn get(&self, key: &PolicyKey) -> Option<Arc<Checked>> {
        self.entries.get(key).cloned()
    }

    /// Every key, for a relist that must drop what is gone.
    pub fn keys(&self) -> Vec<PolicyKey> {
        self.entries.keys().cloned().collect()
    }

    /// Number of policies known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no policy is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many times a policy was checked (once per uid and generation).
    pub fn checks(&self) -> u64 {
        self.checks
    }

    /// The valid, active policies reading one source, and the source's settings version.
    pub fn group(&self, source: &str) -> (Vec<(PolicyKey, Arc<Policy>)>, u64) {
        let members = self
            .by_source
            .get(source)
            .into_iter()
            .flatten()
            .filter_map(|k| {
                let p = self.entries.get(k)?.policy.as_ref().ok()?;
                Some((k.clone(), p.clone()))
            })
            .collect();
        (members, self.versions.get(source).copied().unwrap_or(0))
    }

    /// Policies scaling or growing a StatefulSet.
    pub fn for_statefulset(&self, namespace: &str, name: &str) -> Vec<PolicyKey> {
        self.by_statefulset
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Other policies that may act on the same broker StatefulSet (`brokers`) or the claims of
    /// the same bookie StatefulSet as `key`: valid, admitted, not suspended and not in dry run
    /// (a dry-run policy beside a live one changes nothing, so it is no rival). Two such
    /// policies would fight, so neither acts while the other exists.
    pub fn rivals(&self, key: &PolicyKey, stateful_set: &str, brokers: bool) -> Vec<PolicyKey> {
        self.for_statefulset(&key.namespace, stateful_set)
            .into_iter()
            .filter(|k| k != key)
            .filter(|k| {
                let Some(e) = self.entries.get(k) else {
                    return false;
                };
                let Ok(p) = e.policy.as_ref() else {
                    return false;
                };
                e.source.is_some()
                    && !p.suspend
                    && !p.dry_run
                    && if brokers {
                        p.brokers
                            .as_ref()
                            .is_some_and(|b| b.stateful_set == stateful_set)
                    } else {
                        p.bookies
                            .as_ref()
                            .is_some_and(|b| b.stateful_set == stateful_set)
                    }
            })
            .collect()
    }

    /// Policies whose bookie claims include `claim` (`<template>-<statefulset>-<ordinal>`).
    pub fn for_claim(&self, namespace: &str, claim: &str) -> Vec<PolicyKey> {
        let Some((head, _)) = claim.rsplit_once('-') else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // Every suffix of `head` after a '-' may be the StatefulSet's name.
        for (i, _) in head.match_indices('-') {
            let sts = &head[i + 1..];
            for key in self.for_statefulset(namespace, sts) {
                let Some(Ok(p)) = self.entries.get(&key).map(|e| e.policy.as_ref()) else {
                    continue;
                };
                if p.bookies.as_ref().is_some_and(|b| {
                    b.stateful_set == sts && claim_of(claim, &b.stateful_set, &b.templates)
                }) && !out.contains(&key)
                {
                    out.push(key);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(ns: &str, name: &str, generation: i64, spec: &str) -> ScalingPolicy {
        let text = format!(
            "apiVersion: pulsar-autoscaler.dev/v1alpha1\nkind: ScalingPolicy\nmetadata: {{name: {name}, namespace: {ns}, uid: u-{name}, generation: {generation}}}\nspec:\n{spec}"
        );
        serde_yaml_ng::from_str(&text).unwrap()
    }

    const BROKERS: &str = "  metricsSource: {type: Prometheus, url: 'http://prom:9090'}\n  brokers: {statefulSet: pulsar-broker, maxReplicas: 5, metrics: [{type: Throughput, targetPerBroker: 50Mi}]}\n";
    const BOTH: &str = "  metricsSource: {type: Prometheus, url: 'http://prom:9090'}\n  brokers: {statefulSet: broker, maxReplicas: 5, metrics: [{type: Throughput, targetPerBroker: 50Mi}]}\n  bookies: {statefulSet: pulsar-bookie, volumeClaimTemplates: [ledgers], maxSize: 1Ti}\n";

    #[test]
    fn two_policies_on_one_target_are_rivals_until_one_is_suspended() {
        let mut index = Index::default();
        let a = sp("ns", "a", 1, BROKERS);
        let b = sp("ns", "b", 1, BROKERS);
        let other_ns = sp("ns2", "c", 1, BROKERS);
        for p in [&a, &b, &other_ns] {
            index.upsert(p);
        }
        let (ka, kb) = (PolicyKey::of(&a), PolicyKey::of(&b));
        assert_eq!(index.rivals(&ka, "pulsar-broker", true), vec![kb.clone()]);
        assert_eq!(index.rivals(&kb, "pulsar-broker", true), vec![ka.clone()]);
        assert!(
            index.rivals(&ka, "pulsar-broker", false).is_empty(),
            "no bookies"
        );
        let suspended = sp("ns", "b", 2, &format!("  suspend: true\n{BROKERS}"));
        index.upsert(&suspended);
        assert!(index.rivals(&ka, "pulsar-broker", true).is_empty());
        let shadow = sp("ns", "b", 3, &format!("  dryRun: true\n{BROKERS}"));
        index.upsert(&shadow);
        assert!(
            index.rivals(&ka, "pulsar-broker", true).is_empty(),
            "dry run"
        );
    }

    #[test]
    fn checks_once_per_generation_and_indexes_by_source_and_target() {
        let mut index = Index::default();
        let a = sp("team-a", "a", 1, BROKERS);
        let b = sp("team-b", "b", 1, BOTH);
        assert!(matches!(
            index.upsert(&a),
            Upsert::Checked { joined: Some(_) }
        ));
        assert_eq!(index.upsert(&a), Upsert::Unchanged);
        index.upsert(&b);
        assert_eq!(index.checks(), 2);
        // Both read the same Prometheus: one group, one round.
        let source = index
            .get(&PolicyKey::of(&a))
            .unwrap()
            .source
            .clone()
            .unwrap();
        let (group, version) = index.group(&source);
        assert_eq!(group.len(), 2);
        assert_eq!(version, 2);
        assert_eq!(
            index.for_statefulset("team-a", "pulsar-broker"),
            vec![PolicyKey::of(&a)]
        );
        assert!(index.for_statefulset("team-b", "pulsar-broker").is_empty());
        assert_eq!(
            index.for_claim("team-b", "ledgers-pulsar-bookie-0"),
            vec![PolicyKey::of(&b)]
        );
        assert!(
            index
                .for_claim("team-b", "journal-pulsar-bookie-0")
                .is_empty()
        );
        assert!(
            index
                .for_claim("team-a", "ledgers-pulsar-bookie-0")
                .is_empty()
        );

        // A new generation is checked again; a removal leaves no trace in the maps.
        index.upsert(&sp("team-a", "a", 2, BROKERS));
        assert_eq!(index.checks(), 3);
        assert!(index.remove(&PolicyKey::of(&a)).is_some());
        assert!(index.remove(&PolicyKey::of(&b)).is_some());
        assert!(index.is_empty());
        assert!(index.by_source.is_empty() && index.by_statefulset.is_empty());
        assert!(index.versions.is_empty());
    }

    #[test]
    fn invalid_and_suspended_policies_join_no_round() {
        let mut index = Index::default();
        let bad = sp(
            "ns",
            "bad",
            1,
            "  brokers: {statefulSet: b, minReplicas: 5, maxReplicas: 2, metrics: [{type: Throughput, targetPerBroker: 50Mi}]}\n",
        );
        assert_eq!(index.upsert(&bad), Upsert::Checked { joined: None });
        assert!(index.get(&PolicyKey::of(&bad)).unwrap().policy.is_err());
        let suspended = sp("ns", "s", 1, &format!("  suspend: true\n{BROKERS}"));
        assert_eq!(index.upsert(&suspended), Upsert::Checked { joined: None });
    }
}
