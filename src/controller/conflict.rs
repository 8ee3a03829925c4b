//! Who else manages a policy's target: another policy, a HorizontalPodAutoscaler, or someone
//! changing replicas by hand. Under any of them the policy shows `Conflict` and does not act,
//! so two controllers never take turns undoing each other.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::actuate::ActuateError;

/// `Ready`'s reason while a conflict holds the policy.
pub const READY_REASON: &str = "Conflict";

/// Condition reasons.
pub mod reason {
    /// Another policy scales the same StatefulSet or grows the same claims.
    pub const ANOTHER_POLICY: &str = "AnotherPolicy";
    /// A HorizontalPodAutoscaler scales the same StatefulSet.
    pub const HPA: &str = "HorizontalPodAutoscaler";
    /// Replicas were changed by someone else.
    pub const REPLICAS_CHANGED: &str = "ReplicasChangedElsewhere";
    /// Nothing else manages the targets.
    pub const NONE: &str = "NoConflict";
}

/// Names of the HorizontalPodAutoscalers in `namespace` whose target is the StatefulSet.
pub async fn hpas_on(
    client: &Client,
    namespace: &str,
    stateful_set: &str,
) -> Result<Vec<String>, ActuateError> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    let what = format!("list horizontalpodautoscalers in {namespace}");
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| ActuateError::from_kube(what, e))?;
    Ok(list
        .items
        .into_iter()
        .filter(|h| {
            h.spec.as_ref().is_some_and(|s| {
                s.scale_target_ref.kind == "StatefulSet" && s.scale_target_ref.name == stateful_set
            })
        })
        .filter_map(|h| h.metadata.name)
        .collect())
}

/// A change of replicas this controller did not make: the replicas it saw last (the status's
/// `currentReplicas`) differ from what the StatefulSet has now, and no change of its own is
/// waiting for the watch. Returns `(before, now)`.
pub fn changed_elsewhere(
    last_seen: Option<u32>,
    now: u32,
    own_change_pending: bool,
) -> Option<(u32, u32)> {
    match last_seen {
        Some(before) if before != now && !own_change_pending => Some((before, now)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_this_controller_did_not_make_count() {
        assert_eq!(changed_elsewhere(Some(3), 10, false), Some((3, 10)));
        assert_eq!(changed_elsewhere(Some(3), 0, false), Some((3, 0)));
        assert_eq!(changed_elsewhere(Some(3), 3, false), None);
        assert_eq!(changed_elsewhere(Some(3), 6, true), None, "our own change");
        assert_eq!(changed_elsewhere(None, 6, false), None, "first sight");
    }
}
