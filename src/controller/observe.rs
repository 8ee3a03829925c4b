//! Reads what a policy needs from the cluster: bookie claims with their StorageClass, and the
//! broker and bookie pods a Direct round scrapes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

use super::pages;
use crate::actuate::ActuateError;
use crate::api::SourceType;
use crate::decide::ClaimState;
use crate::metrics::{self, PodEndpoint};
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

/// How long a StorageClass's `allowVolumeExpansion` is trusted before it is read again.
const CLASS_TTL: Duration = Duration::from_secs(60);

/// StorageClass verdicts read recently: `allowVolumeExpansion`, or why it could not be read.
pub type ClassCache = Mutex<HashMap<String, (Instant, Result<bool, String>)>>;

/// The cluster objects a reconcile reads from watches instead of the API server.
pub struct Stores<'a> {
    /// StatefulSets (the compact records of what the controller reads).
    pub statefulsets: &'a super::targets::Targets,
    /// PersistentVolumeClaims.
    pub claims: &'a Store<PersistentVolumeClaim>,
    /// Recent StorageClass verdicts.
    pub classes: &'a ClassCache,
}

/// The bookie claims of a policy: `<template>-<statefulset>-<ordinal>` for the watched templates,
/// read from the watches' stores (the API server only for a StatefulSet the store lacks).
pub async fn claims(
    client: &Client,
    stores: &Stores<'_>,
    namespace: &str,
    policy: &BookiePolicy,
) -> Result<Vec<Claim>, ActuateError> {
    let templates: Vec<String> = match stores.statefulsets.get(namespace, &policy.stateful_set) {
        Some(t) => t.templates.into_vec(),
        None => {
            let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            let sts = sts_api.get(&policy.stateful_set).await.map_err(|e| {
                ActuateError::from_kube(format!("get statefulsets/{}", policy.stateful_set), e)
            })?;
            super::targets::Target::of(&sts).templates.into_vec()
        }
    };
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
    let sc_api: Api<StorageClass> = Api::all(client.clone());
    let mut out = Vec::new();
    for pvc in stores.claims.state() {
        let name = pvc.name_any();
        if pvc.namespace().as_deref() != Some(namespace)
            || !metrics::round::claim_of(&name, &policy.stateful_set, &watched)
        {
            continue;
        }
        let class_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let known = stores
            .classes
            .lock()
            .await
            .get(&class_name)
            .and_then(|(at, v)| (at.elapsed() < CLASS_TTL).then(|| v.clone()));
        let class = match known {
            Some(v) => v,
            None => {
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
                stores
                    .classes
                    .lock()
                    .await
                    .insert(class_name.clone(), (Instant::now(), verdict.clone()));
                verdict
            }
        };
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
    let mut infeasible = None;
    if let Some(state) = status
        .and_then(|s| s.allocated_resource_statuses.as_ref())
        .and_then(|m| m.get("storage"))
    {
        if state.ends_with("Infeasible") {
            infeasible = Some(format!("allocatedResourceStatuses.storage is {state}"));
        } else {
            resize.get_or_insert_with(|| format!("allocatedResourceStatuses.storage is {state}"));
        }
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
            resize_infeasible: infeasible,
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

/// Broker and bookie pods of the group's StatefulSets, and the nodes of the bookies.
pub async fn discover(
    client: &Client,
    namespace: &str,
    group: &[&Policy],
) -> (Vec<PodEndpoint>, Vec<String>) {
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut pods = Vec::new();
    let mut nodes = Vec::new();
    for p in group {
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
            let listed = pages::list_all(
                &pod_api,
                &ListParams::default().labels(&selector),
                pages::PAGE,
                pages::MAX_ITEMS,
            )
            .await;
            let list = match listed {
                Ok(list) => list,
                Err(e) => {
                    // Its pods go unread this round: they report nothing, which holds
                    // scale-down.
                    tracing::warn!(statefulset = name, error = %e, "cannot list pods");
                    continue;
                }
            };
            for pod in list {
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
