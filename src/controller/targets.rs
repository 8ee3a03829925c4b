//! What the controller keeps of each watched StatefulSet: its replicas and the names of its
//! claim templates, nothing else. A k8s-openapi `StatefulSet` in a reflector store costs a few
//! KiB even stripped (its structs are large when empty); this record costs a few dozen bytes.

use std::collections::HashMap;
use std::sync::RwLock;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::runtime::watcher;

/// The fields of a StatefulSet the controller reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `spec.replicas` (absent: the API server's default of 1 applies).
    pub replicas: Option<i32>,
    /// Names of `spec.volumeClaimTemplates`.
    pub templates: Box<[String]>,
}

impl Target {
    /// The record of a StatefulSet.
    pub fn of(sts: &StatefulSet) -> Self {
        let spec = sts.spec.as_ref();
        Target {
            replicas: spec.and_then(|s| s.replicas),
            templates: spec
                .and_then(|s| s.volume_claim_templates.as_ref())
                .map(|t| t.iter().map(|c| c.name_any()).collect())
                .unwrap_or_default(),
        }
    }
}

type Key = (String, String);

/// Every watched StatefulSet's record by (namespace, name), kept in step with the watch.
#[derive(Debug, Default)]
pub struct Targets {
    known: RwLock<HashMap<Key, Target>>,
    /// Records of a relist in progress: they replace `known` once the relist is complete, so
    /// readers keep the previous view meanwhile and a StatefulSet deleted while the watch was
    /// down disappears.
    relist: RwLock<Option<HashMap<Key, Target>>>,
}

fn key_of(sts: &StatefulSet) -> Key {
    (sts.namespace().unwrap_or_default(), sts.name_any())
}

impl Targets {
    /// The record of a StatefulSet, if the watch has delivered it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Target> {
        let known = self.known.read().ok()?;
        known
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Number of StatefulSets known.
    pub fn len(&self) -> usize {
        self.known.read().map(|k| k.len()).unwrap_or(0)
    }

    /// Whether no StatefulSet is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one event of the StatefulSet watch; returns the StatefulSets whose record is new
    /// or changed, whose policies are evaluated again. A change elsewhere (status, labels, the
    /// pod template) changes no record and wakes nobody, so no per-object cache of generations
    /// is kept beside the records.
    pub fn apply(&self, event: watcher::Event<StatefulSet>) -> Vec<StatefulSet> {
        match event {
            watcher::Event::Apply(sts) => {
                let target = Target::of(&sts);
                let Ok(mut k) = self.known.write() else {
                    return Vec::new();
                };
                match k.insert(key_of(&sts), target.clone()) {
                    Some(old) if old == target => Vec::new(),
                    _ => vec![sts],
                }
            }
            watcher::Event::Delete(sts) => {
                if let Ok(mut k) = self.known.write() {
                    k.remove(&key_of(&sts));
                }
                Vec::new()
            }
            watcher::Event::Init => {
                if let Ok(mut r) = self.relist.write() {
                    *r = Some(HashMap::new());
                }
                Vec::new()
            }
            watcher::Event::InitApply(sts) => {
                let (key, target) = (key_of(&sts), Target::of(&sts));
                let changed = self
                    .known
                    .read()
                    .map(|k| k.get(&key) != Some(&target))
                    .unwrap_or(true);
                if let Ok(mut r) = self.relist.write()
                    && let Some(fresh) = r.as_mut()
                {
                    fresh.insert(key, target);
                }
                if changed { vec![sts] } else { Vec::new() }
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.write().ok().and_then(|mut r| r.take());
                if let (Some(mut fresh), Ok(mut k)) = (fresh, self.known.write()) {
                    fresh.shrink_to_fit();
                    *k = fresh;
                }
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(ns: &str, name: &str, replicas: i32, templates: &[&str]) -> StatefulSet {
        let templates: Vec<String> = templates
            .iter()
            .map(|t| format!("{{metadata: {{name: {t}}}}}"))
            .collect();
        serde_yaml_ng::from_str(&format!(
            "metadata: {{name: {name}, namespace: {ns}}}\nspec: {{replicas: {replicas}, serviceName: x, selector: {{}}, template: {{}}, volumeClaimTemplates: [{}]}}",
            templates.join(", ")
        ))
        .unwrap()
    }

    #[test]
    fn keeps_replicas_and_templates_and_follows_deletes_and_relists() {
        let t = Targets::default();
        t.apply(watcher::Event::Init);
        t.apply(watcher::Event::InitApply(sts(
            "a",
            "bookie",
            3,
            &["ledgers", "journal"],
        )));
        assert!(t.get("a", "bookie").is_none(), "not before the list ends");
        t.apply(watcher::Event::InitDone);
        assert_eq!(
            t.get("a", "bookie"),
            Some(Target {
                replicas: Some(3),
                templates: vec!["ledgers".to_string(), "journal".to_string()].into()
            })
        );
        t.apply(watcher::Event::Apply(sts("a", "broker", 2, &[])));
        assert_eq!(t.get("a", "broker").and_then(|b| b.replicas), Some(2));
        assert!(t.get("b", "broker").is_none(), "namespaced");
        let woken = t.apply(watcher::Event::Apply(sts("a", "broker", 5, &[])));
        assert_eq!(
            woken.len(),
            1,
            "replicas changed: its policies are evaluated"
        );
        assert_eq!(t.get("a", "broker").and_then(|b| b.replicas), Some(5));
        let mut labelled = sts("a", "broker", 5, &[]);
        labelled.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        assert!(
            t.apply(watcher::Event::Apply(labelled)).is_empty(),
            "nothing the controller reads changed: nobody is woken"
        );
        t.apply(watcher::Event::Delete(sts("a", "broker", 5, &[])));
        assert!(t.get("a", "broker").is_none());

        // A relist that no longer lists `bookie` drops it once complete.
        t.apply(watcher::Event::Init);
        assert_eq!(
            t.apply(watcher::Event::InitApply(sts("a", "broker", 4, &[])))
                .len(),
            1,
            "new to the view"
        );
        assert!(t.get("a", "bookie").is_some(), "old view until InitDone");
        t.apply(watcher::Event::InitDone);
        assert!(t.get("a", "bookie").is_none());
        assert_eq!(t.get("a", "broker").and_then(|b| b.replicas), Some(4));
        assert_eq!(t.len(), 1);
    }
}
