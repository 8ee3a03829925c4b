//! Reads what a policy needs from the cluster and its metrics source: broker pods, bookie
//! claims with their StorageClass, and the grouped metric rounds shared by policies.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

use crate::actuate::ActuateError;
use crate::api::{ScalingPolicy, SourceType};
use crate::decide::{ClaimState, elapsed};
use crate::metrics::{
    self, DirectSource, KubeletStats, MetricsError, MetricsSource, PodEndpoint, PolicyReadings,
    Target,
};
use crate::policy::{BookiePolicy, Policy, Source};
use crate::quantity;

/// Annotation giving a pod's metrics port (the Pulsar Helm chart sets it).
pub const PORT_ANNOTATION: &str = "prometheus.io/port";

/// A claim as the API server describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// What the engine needs, without usage and last expansion.
    pub state: ClaimState,
    /// Why the StorageClass could not be read, when it could not.
    pub storage_class_problem: Option<String>,
}

/// The bookie claims of a policy: `<template>-<statefulset>-<ordinal>` for the watched templates.
pub async fn claims(
    client: &Client,
    namespace: &str,
    policy: &BookiePolicy,
) -> Result<Vec<Claim>, ActuateError> {
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let sts = sts_api.get(&policy.stateful_set).await.map_err(|e| {
        ActuateError::from_kube(format!("get statefulsets/{}", policy.stateful_set), e)
    })?;
    let templates: Vec<String> = sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .map(|t| t.iter().map(|c| c.name_any()).collect())
        .unwrap_or_default();
    let watched: Vec<String> = if policy.templates.is_empty() {
        templates
    } else {
        policy
            .templates
            .iter()
            .filter(|t| templates.contains(t))
            .cloned()
            .collect()
    };
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let list = pvc_api
        .list(&ListParams::default())
        .await
        .map_err(|e| ActuateError::from_kube("list persistentvolumeclaims", e))?;
    let sc_api: Api<StorageClass> = Api::all(client.clone());
    let mut classes: HashMap<String, Result<bool, String>> = HashMap::new();
    let mut out = Vec::new();
    for pvc in list.items {
        let name = pvc.name_any();
        if !metrics::round::claim_of(&name, &policy.stateful_set, &watched) {
            continue;
        }
        let class_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        if !classes.contains_key(&class_name) {
            let verdict = if class_name.is_empty() {
                Err("the claim names no StorageClass".to_string())
            } else {
                match sc_api.get(&class_name).await {
                    Ok(sc) => Ok(sc.allow_volume_expansion == Some(true)),
                    Err(e) => Err(ActuateError::from_kube(
                        format!("get storageclasses/{class_name}"),
                        e,
                    )
                    .to_string()),
                }
            };
            classes.insert(class_name.clone(), verdict);
        }
        let class = classes
            .get(&class_name)
            .cloned()
            .unwrap_or(Err("unknown".into()));
        out.push(claim_from(&pvc, class));
    }
    out.sort_by(|a, b| a.state.name.cmp(&b.state.name));
    Ok(out)
}

fn storage(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Option<u64> {
    map.and_then(|m| m.get("storage"))
        .and_then(|q| quantity::parse_bytes(&q.0).ok())
}

/// Reads one claim's size, binding and resize state.
pub fn claim_from(pvc: &PersistentVolumeClaim, class: Result<bool, String>) -> Claim {
    let requested = storage(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
    .unwrap_or(0);
    let status = pvc.status.as_ref();
    let capacity = storage(status.and_then(|s| s.capacity.as_ref()));
    let bound = status.and_then(|s| s.phase.as_deref()) == Some("Bound");
    let mut resize = None;
    for c in status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if (c.type_ == "Resizing" || c.type_ == "FileSystemResizePending") && c.status == "True" {
            resize = Some(format!("condition {} is True", c.type_));
        }
    }
    if let Some(state) = status
        .and_then(|s| s.allocated_resource_statuses.as_ref())
        .and_then(|m| m.get("storage"))
    {
        resize.get_or_insert_with(|| format!("allocatedResourceStatuses.storage is {state}"));
    }
    if let Some(cap) = capacity
        && cap < requested
    {
        resize.get_or_insert_with(|| {
            format!(
                "capacity {} is behind the request {}",
                quantity::format_bytes(cap).0,
                quantity::format_bytes(requested).0
            )
        });
    }
    let (expandable, storage_class_problem) = match class {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    Claim {
        state: ClaimState {
            name: pvc.name_any(),
            requested,
            capacity,
            usage: None,
            bound,
            resize_in_progress: resize,
            expandable,
            last_expand: None,
        },
        storage_class_problem,
    }
}

/// Identifies a metrics source so that policies sharing it share one round.
pub fn source_key(namespace: &str, source: &Source) -> String {
    match source.kind {
        // Direct rounds scrape the pods of one namespace.
        SourceType::Direct => format!("Direct|{namespace}"),
        kind => {
            // Credentials come from Secrets of the policy's namespace, so they split groups.
            let secrets = if source.auth.is_some() || source.tls.is_some() {
                namespace
            } else {
                ""
            };
            format!(
                "{kind:?}|{}|{:?}|{:?}|{:?}|{:?}|{secrets}",
                source.url.as_deref().unwrap_or(""),
                source.headers,
                source.timeout,
                source.auth,
                source.tls
            )
        }
    }
}

/// Readings of one round per `(namespace, policy)`.
type RoundReadings = HashMap<(String, String), PolicyReadings>;

/// One source's latest round and the client it used.
#[derive(Default)]
struct Slot {
    prometheus: Option<Arc<dyn MetricsSource>>,
    direct: Option<DirectSource>,
    last: Option<(Timestamp, RoundReadings)>,
}

/// Runs grouped rounds: one per source per period, shared by every policy using the source.
pub struct Sampler {
    client: Client,
    slots: Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
}

impl Sampler {
    /// A sampler reading pods and Secrets through `client`.
    pub fn new(client: Client) -> Self {
        Sampler {
            client,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// This policy's readings from the newest round of its source, running a round over every
    /// policy in `group` (those sharing the source) when the last one is older than half the
    /// shortest interval among them.
    pub async fn readings(
        &self,
        me: (&str, &str),
        policy: &Policy,
        group: &[(Arc<ScalingPolicy>, Policy)],
        now: Timestamp,
    ) -> Result<PolicyReadings, MetricsError> {
        let key = source_key(me.0, &policy.source);
        let slot = self.slots.lock().await.entry(key).or_default().clone();
        let mut slot = slot.lock().await;
        let me_key = (me.0.to_string(), me.1.to_string());
        let shortest = group
            .iter()
            .map(|(_, p)| p.interval)
            .min()
            .unwrap_or(policy.interval);
        let ttl = (shortest / 2).max(Duration::from_secs(1));
        if let Some((at, readings)) = &slot.last
            && elapsed(now, *at) < ttl
            && let Some(r) = readings.get(&me_key)
        {
            return Ok(r.clone());
        }
        let names: Vec<(String, String)> = group
            .iter()
            .map(|(sp, _)| (sp.namespace().unwrap_or_default(), sp.name_any()))
            .collect();
        let targets: Vec<Target<'_>> = group
            .iter()
            .zip(&names)
            .map(|((_, p), (ns, name))| Target {
                namespace: ns,
                name,
                policy: p,
            })
            .collect();
        let results = if policy.source.kind == SourceType::Direct {
            let (pods, nodes) = discover(&self.client, me.0, group).await;
            let kubelet = (!nodes.is_empty()).then(|| KubeletStats {
                client: self.client.clone(),
                nodes,
            });
            if slot.direct.is_none() {
                let credentials = metrics::Credentials::default();
                slot.direct = Some(DirectSource::new(
                    Vec::new(),
                    None,
                    policy.source.timeout,
                    &credentials,
                )?);
            }
            let direct = slot
                .direct
                .as_mut()
                .ok_or_else(|| MetricsError::Config("direct source missing".into()))?;
            direct.set_pods(pods);
            direct.set_kubelet(kubelet);
            metrics::collect(&*direct, &targets, now).await
        } else {
            if slot.prometheus.is_none() {
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), me.0);
                let credentials = metrics::credentials::resolve(&secrets, &policy.source).await?;
                slot.prometheus = Some(metrics::build(
                    &policy.source,
                    &credentials,
                    Vec::new(),
                    None,
                )?);
            }
            let source = slot
                .prometheus
                .clone()
                .ok_or_else(|| MetricsError::Config("source missing".into()))?;
            metrics::collect(source.as_ref(), &targets, now).await
        };
        let map: HashMap<(String, String), PolicyReadings> =
            names.into_iter().zip(results).collect();
        let mine = map.get(&me_key).cloned().unwrap_or_default();
        slot.last = Some((now, map));
        Ok(mine)
    }

    /// Drops cached clients so changed Secrets or settings are read again.
    pub async fn forget(&self, namespace: &str, source: &Source) {
        self.slots
            .lock()
            .await
            .remove(&source_key(namespace, source));
    }
}

/// Broker and bookie pods of the group's StatefulSets, and the nodes of the bookies.
async fn discover(
    client: &Client,
    namespace: &str,
    group: &[(Arc<ScalingPolicy>, Policy)],
) -> (Vec<PodEndpoint>, Vec<String>) {
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut pods = Vec::new();
    let mut nodes = Vec::new();
    for (_, p) in group {
        let sets = p
            .brokers
            .iter()
            .map(|b| (b.stateful_set.as_str(), metrics::Role::Broker))
            .chain(
                p.bookies
                    .iter()
                    .map(|b| (b.stateful_set.as_str(), metrics::Role::Bookie)),
            );
        for (name, role) in sets {
            let Ok(sts) = sts_api.get(name).await else {
                continue;
            };
            let Some(labels) = sts
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref())
            else {
                continue;
            };
            let selector = labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let Ok(list) = pod_api.list(&ListParams::default().labels(&selector)).await else {
                continue;
            };
            for pod in list.items {
                let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
                    continue;
                };
                let port = pod
                    .annotations()
                    .get(PORT_ANNOTATION)
                    .and_then(|p| p.parse::<u16>().ok())
                    .unwrap_or(role.default_port());
                pods.push(PodEndpoint::for_pod(
                    namespace,
                    &pod.name_any(),
                    role,
                    &ip,
                    port,
                ));
                if role == metrics::Role::Bookie
                    && let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone())
                    && !nodes.contains(&node)
                {
                    nodes.push(node);
                }
            }
        }
    }
    (pods, nodes)
}
