//! Every call that changes the cluster: StatefulSet `/scale`, claim expansion, policy status,
//! Events. Each is a patch with the field manager `pulsar-autoscaler`.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};

use crate::recorder::Recorder;
use serde_json::json;

use crate::api::{FIELD_MANAGER, ScalingPolicy, ScalingPolicyStatus};
use crate::quantity;

/// A failed call to the API server, with what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    /// RBAC refused the call; the message names the missing permission.
    #[error("not allowed to {what}: {message}")]
    Forbidden {
        /// What was attempted.
        what: String,
        /// The API server's message (names user, verb and resource).
        message: String,
    },
    /// The object is gone.
    #[error("cannot {what}: not found")]
    NotFound {
        /// What was attempted.
        what: String,
    },
    /// The object changed since it was read (HTTP 409): someone else wrote it; read it again.
    #[error("cannot {what}: the object changed since it was read")]
    Stale {
        /// What was attempted.
        what: String,
    },
    /// This process no longer holds the leader Lease, so it changes nothing.
    #[error("not leading: refused to {what}")]
    NotLeader {
        /// What was refused.
        what: String,
    },
    /// Any other failure.
    #[error("cannot {what}: {source}")]
    Api {
        /// What was attempted.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

impl ActuateError {
    /// Classifies a kube error for `what`.
    pub fn from_kube(what: impl Into<String>, e: kube::Error) -> Self {
        let what = what.into();
        match e {
            kube::Error::Api(s) if s.code == 403 => ActuateError::Forbidden {
                what,
                message: s.message.clone(),
            },
            kube::Error::Api(s) if s.code == 404 => ActuateError::NotFound { what },
            kube::Error::Api(s) if s.code == 409 => ActuateError::Stale { what },
            source => ActuateError::Api { what, source },
        }
    }

    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ActuateError::Forbidden { .. } => "forbidden",
            ActuateError::NotFound { .. } => "not_found",
            ActuateError::Stale { .. } => "stale",
            ActuateError::NotLeader { .. } => "not_leader",
            ActuateError::Api { .. } => "api",
        }
    }
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Current `spec.replicas` of a StatefulSet, read through its `/scale` subresource.
pub async fn replicas(api: &Api<StatefulSet>, name: &str) -> Result<u32, ActuateError> {
    let what = format!("get statefulsets/{name}/scale");
    let scale = api
        .get_scale(name)
        .await
        .map_err(|e| ActuateError::from_kube(&what, e))?;
    Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32)
}

/// Sets `spec.replicas` through the `/scale` subresource.
pub async fn scale(api: &Api<StatefulSet>, name: &str, replicas: u32) -> Result<(), ActuateError> {
    let what = format!("patch statefulsets/{name}/scale");
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch_scale(name, &params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| ActuateError::from_kube(what, e))?;
    Ok(())
}

/// `spec.replicas` and the resourceVersion of a StatefulSet, read fresh through `/scale`.
pub async fn scale_of(api: &Api<StatefulSet>, name: &str) -> Result<(u32, String), ActuateError> {
    let what = format!("get statefulsets/{name}/scale");
    let scale = api
        .get_scale(name)
        .await
        .map_err(|e| ActuateError::from_kube(&what, e))?;
    let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32;
    Ok((
        replicas,
        scale.metadata.resource_version.unwrap_or_default(),
    ))
}

/// Sets `spec.replicas` through `/scale` only if the StatefulSet is still at `resource_version`
/// (else [`ActuateError::Stale`]): a change made by someone since the read is never overwritten.
pub async fn scale_at(
    api: &Api<StatefulSet>,
    name: &str,
    replicas: u32,
    resource_version: &str,
) -> Result<(), ActuateError> {
    let what = format!("patch statefulsets/{name}/scale");
    let patch = json!({
        "metadata": {"resourceVersion": resource_version},
        "spec": {"replicas": replicas},
    });
    api.patch_scale(name, &params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| ActuateError::from_kube(what, e))?;
    Ok(())
}

/// Raises a claim's storage request to `bytes`.
pub async fn expand(
    api: &Api<PersistentVolumeClaim>,
    name: &str,
    bytes: u64,
) -> Result<(), ActuateError> {
    let what = format!("patch persistentvolumeclaims/{name}");
    let size = quantity::format_bytes(bytes);
    let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
    api.patch(name, &params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| ActuateError::from_kube(what, e))?;
    Ok(())
}

/// A claim's `spec.resources.requests.storage` in bytes, read fresh from the API server
/// (`None` when absent or not a quantity). A list by name: the role has no `get` on claims.
pub async fn requested(
    api: &Api<PersistentVolumeClaim>,
    name: &str,
) -> Result<Option<u64>, ActuateError> {
    let what = format!("list persistentvolumeclaims/{name}");
    let params = kube::api::ListParams::default().fields(&format!("metadata.name={name}"));
    let claim = api
        .list(&params)
        .await
        .map_err(|e| ActuateError::from_kube(&what, e))?
        .items
        .into_iter()
        .next()
        .ok_or(ActuateError::NotFound { what })?;
    Ok(claim
        .spec
        .and_then(|s| s.resources)
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned())
        .and_then(|q| quantity::parse_bytes(&q.0).ok()))
}

/// Writes the whole status by server-side apply; the controller owns every status field.
pub async fn apply_status(
    api: &Api<ScalingPolicy>,
    name: &str,
    status: &ScalingPolicyStatus,
) -> Result<(), ActuateError> {
    let what = format!("patch scalingpolicies/{name}/status");
    let body = json!({
        "apiVersion": "pulsar-autoscaler.dev/v1alpha1",
        "kind": "ScalingPolicy",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| ActuateError::from_kube(what, e))?;
    Ok(())
}

/// Writes the whole status by server-side apply only if the policy is still at
/// `resource_version` (else [`ActuateError::Stale`]); returns the new resourceVersion. A writer
/// that missed someone else's write (a deposed leader, a stale cache) cannot erase it.
pub async fn apply_status_at(
    api: &Api<ScalingPolicy>,
    name: &str,
    status: &ScalingPolicyStatus,
    resource_version: Option<&str>,
) -> Result<Option<String>, ActuateError> {
    let what = format!("patch scalingpolicies/{name}/status");
    let mut body = json!({
        "apiVersion": "pulsar-autoscaler.dev/v1alpha1",
        "kind": "ScalingPolicy",
        "status": status,
    });
    if let Some(rv) = resource_version {
        body["metadata"] = json!({"resourceVersion": rv});
    }
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| ActuateError::from_kube(what, e))?;
    Ok(written.metadata.resource_version)
}

/// Publishes an Event on the policy; failures are logged, never fatal (Events are best effort).
/// The note says what first and why after the first `": "`; what identifies the Event, so a
/// repeat joins its series and another action is an Event of its own (`crate::recorder`).
pub async fn event(
    recorder: &Recorder,
    policy: &ObjectReference,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        // The API server rejects notes over 1 kB.
        note: Some(crate::policy::bounded(&note, 1000)),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, policy).await {
        tracing::warn!(reason, error = %e, "cannot publish event");
    }
}
