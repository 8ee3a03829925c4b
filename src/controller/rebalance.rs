//! Rebalance after a scale-up: once the brokers the controller added are Ready and registered,
//! move bundles onto them from the busiest brokers, at `scaleUp.rebalance.maxUnloadsPerSecond`,
//! until each carries its fair share (the planner in `decide::rebalance` says which).
//!
//! Work is bounded per reconcile: one step reads who owns what and makes at most
//! [`STEP`] seconds' worth of unloads, then the policy is requeued after [`AGAIN`]. Progress
//! lives in `status.brokers.rebalance`, so a restarted controller or a new leader carries on.
//! Every failed admin call counts; after [`MAX_FAILURES`], or [`GIVE_UP`] after the scale-up,
//! the rebalance is reported Failed and never retried.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::admin::{AdminClient, AdminSettings, Bundle};
use crate::api::{AdminSpec, RebalanceBroker, RebalanceStatus};
use crate::decide::elapsed;
use crate::decide::rebalance::{self, Holding};
use crate::metrics::round::pod_of;

/// Unloads of one step take at most this long at the configured rate.
pub const STEP: f64 = 2.0;
/// A rebalance in progress is looked at again this soon, whatever the policy's interval.
pub const AGAIN: Duration = Duration::from_secs(1);
/// Failed admin calls before a rebalance is given up and reported.
pub const MAX_FAILURES: i32 = 3;
/// A rebalance not over this long after its scale-up is given up and reported.
pub const GIVE_UP: Duration = Duration::from_secs(900);
/// Bound on one admin call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::decide::rebalance::state;

/// Whether a rebalance in this status still has work to do.
pub fn active(r: &RebalanceStatus) -> bool {
    r.state == state::WAITING || r.state == state::MOVING
}

/// A new rebalance for a scale-up from `from` to `to` made at `now`. A rebalance still active
/// for an earlier scale-up is folded in: its brokers are added brokers too.
pub fn begin(
    previous: Option<&RebalanceStatus>,
    from: u32,
    to: u32,
    now: Timestamp,
) -> RebalanceStatus {
    let from = previous
        .filter(|r| active(r))
        .map_or(from, |r| (r.from_replicas.max(0) as u32).min(from));
    RebalanceStatus {
        state: state::WAITING.into(),
        from_replicas: from as i32,
        to_replicas: to as i32,
        started_at: Time(now),
        finished_at: None,
        fair_share: None,
        added_brokers: Vec::new(),
        bundles_moved: 0,
        failures: 0,
        message: Some("waiting for the added brokers to be Ready and registered".into()),
    }
}

/// Ends an active rebalance with `state` and `why`.
pub fn end(r: &mut RebalanceStatus, state: &str, why: impl Into<String>, now: Timestamp) {
    r.state = state.into();
    r.finished_at = Some(Time(now));
    r.message = Some(why.into());
}

/// What an evaluation found that may end a rebalance.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// `spec.dryRun`.
    pub dry_run: bool,
    /// `brokers.admin` and `scaleUp.rebalance` are both set.
    pub configured: bool,
    /// A scale-down decided in this evaluation, to this many replicas.
    pub scale_down_to: Option<u32>,
    /// The StatefulSet's replicas after this evaluation.
    pub replicas: u32,
}

/// Why an active rebalance must stop now, if it must: dry-run switched on, the settings removed,
/// or a scale-down decided or already made (moving load onto brokers that may go is waste).
pub fn stop_reason(r: &RebalanceStatus, now: Now) -> Option<String> {
    if !active(r) {
        return None;
    }
    if now.dry_run {
        return Some("spec.dryRun was switched on: no bundle is moved".into());
    }
    if !now.configured {
        return Some("scaleUp.rebalance or brokers.admin was removed".into());
    }
    let down_to = now
        .scale_down_to
        .or((now.replicas < r.to_replicas.max(0) as u32).then_some(now.replicas))?;
    Some(format!(
        "a scale-down to {down_to} was decided: load is not moved onto brokers that may go"
    ))
}

/// Something a person should see as an Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// A Warning rather than Normal.
    pub warning: bool,
    /// Event reason.
    pub reason: &'static str,
    /// Event note.
    pub message: String,
}

/// What one step did, besides updating the status.
#[derive(Debug, Default)]
pub struct Stepped {
    /// Bundles moved in this step.
    pub moved: u32,
    /// Admin calls that failed in this step.
    pub failed: u32,
    /// Events to publish.
    pub notes: Vec<Note>,
}

/// A broker pod as a step sees it.
struct BrokerPod {
    ordinal: u32,
    name: String,
    ip: Option<String>,
    ready: bool,
}

/// One step of an active rebalance of StatefulSet `sts` in `namespace`.
pub async fn step(
    client: &Client,
    namespace: &str,
    sts: &str,
    admin: &AdminSpec,
    per_second: u32,
    r: &mut RebalanceStatus,
    now: Timestamp,
) -> Stepped {
    let mut out = Stepped::default();
    if elapsed(now, r.started_at.0) > GIVE_UP {
        let why = format!(
            "not balanced {} after the scale-up: given up ({})",
            humantime::format_duration(GIVE_UP),
            r.message.clone().unwrap_or_default()
        );
        fail(r, &mut out, why, now);
        return out;
    }
    // Secrets are read on every step, so a rotated token or CA is used from the next one on.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api = match AdminSettings::from_spec(&secrets, admin, CALL_TIMEOUT)
        .await
        .and_then(AdminClient::new)
    {
        Ok(c) => c,
        Err(why) => {
            fail(r, &mut out, why.to_string(), now);
            return out;
        }
    };
    let Some(cluster) = look(client, &api, namespace, sts, r, &mut out, now).await else {
        return out;
    };
    let plan = rebalance::plan(&cluster.holdings, rebalance::budget(per_second, STEP));
    r.fair_share = Some(plan.fair_share as i32);
    if r.state == state::WAITING && !plan.moves.is_empty() {
        r.state = state::MOVING.into();
        out.notes.push(Note {
            warning: false,
            reason: "RebalanceStarted",
            message: format!(
                "moving bundles onto {} at up to {per_second}/s: fair share {} bundles each",
                added_names(&cluster.holdings, &cluster.hosts),
                plan.fair_share
            ),
        });
    }
    let (counts, failed) = carry_out(&api, &cluster, &plan.moves, per_second, r, &mut out).await;
    if let Some(why) = failed {
        // An unload that fails because the StatefulSet shrank under it is the shrink's doing,
        // not the admin API's: the next step stops the rebalance.
        if replicas(client, namespace, sts)
            .await
            .is_some_and(|n| n < r.to_replicas)
        {
            r.message = Some(format!("the StatefulSet shrank while bundles moved: {why}"));
        } else {
            failure(r, &mut out, why, now);
        }
    }
    r.added_brokers = cluster
        .holdings
        .iter()
        .filter(|h| h.added)
        .map(|h| RebalanceBroker {
            pod: cluster
                .hosts
                .get(&h.broker)
                .map(|(_, n)| n.clone())
                .unwrap_or_default(),
            broker: Some(h.broker.clone()),
            bundles: counts.get(&h.broker).copied().unwrap_or(0) as i32,
        })
        .collect();
    if !active(r) || out.failed > 0 {
        return out;
    }
    if plan.balanced && out.moved as usize == plan.moves.len() {
        let carried: Vec<String> = r
            .added_brokers
            .iter()
            .map(|b| format!("{} owns {}", b.pod, b.bundles))
            .collect();
        let why = format!(
            "moved {} bundles; {} (fair share {})",
            r.bundles_moved,
            carried.join(", "),
            plan.fair_share
        );
        end(r, state::DONE, why.clone(), now);
        out.notes.push(Note {
            warning: false,
            reason: "Rebalanced",
            message: why,
        });
    } else {
        r.message = Some(format!(
            "moved {} bundles so far; fair share {}",
            r.bundles_moved, plan.fair_share
        ));
    }
    out
}

/// Who owns what, as one step found it.
struct Cluster {
    /// Each registered broker's bundles.
    holdings: Vec<Holding>,
    /// Broker id → (pod IP, pod name).
    hosts: BTreeMap<String, (String, String)>,
    /// Ids of the registered brokers: where unload redirects may go.
    registered: Vec<String>,
}

/// Finds the brokers and their bundles; `None` (with the reason in the status) while the added
/// brokers are not Ready or registered, or when an admin call failed.
async fn look(
    client: &Client,
    api: &AdminClient,
    namespace: &str,
    sts: &str,
    r: &mut RebalanceStatus,
    out: &mut Stepped,
    now: Timestamp,
) -> Option<Cluster> {
    let (from, to) = (r.from_replicas.max(0) as u32, r.to_replicas.max(0) as u32);
    let pods = match broker_pods(client, namespace, sts).await {
        Ok(p) => p,
        Err(why) => {
            // The API server, not the brokers: the overall deadline bounds this.
            r.message = Some(why);
            return None;
        }
    };
    let live: Vec<&BrokerPod> = pods.iter().filter(|p| p.ordinal < to).collect();
    let waiting: Vec<String> = (0..to)
        .filter(|i| {
            !live
                .iter()
                .any(|p| p.ordinal == *i && p.ready && p.ip.is_some())
        })
        .map(|i| format!("{sts}-{i}"))
        .collect();
    if !waiting.is_empty() {
        r.message = Some(format!("waiting for {} to be Ready", waiting.join(", ")));
        return None;
    }
    // The cluster name and the registered brokers, asked of a broker that was there before.
    let first = live.iter().find(|p| p.ordinal < from).or(live.first())?;
    let first_ip = first.ip.clone().unwrap_or_default();
    let answer = async {
        let config = api.runtime_config(&first_ip).await?;
        let name = config.get("clusterName").cloned().unwrap_or_default();
        let registered = api.active_brokers(&first_ip, &name).await?;
        Ok::<_, crate::admin::AdminError>((name, registered))
    };
    let (name, registered) = match answer.await {
        Ok(a) => a,
        Err(e) => {
            failure(r, out, e.to_string(), now);
            return None;
        }
    };
    let ids: BTreeMap<u32, String> = live
        .iter()
        .filter_map(|p| {
            Some((
                p.ordinal,
                broker_id(&registered, &p.name, p.ip.as_deref()?)?,
            ))
        })
        .collect();
    let unregistered: Vec<String> = live
        .iter()
        .filter(|p| p.ordinal >= from && !ids.contains_key(&p.ordinal))
        .map(|p| format!("{} ({})", p.name, p.ip.as_deref().unwrap_or_default()))
        .collect();
    if !unregistered.is_empty() {
        let list = unregistered.join(", ");
        if r.state == state::MOVING {
            // It was registered when the moves began: its metadata session is gone (a hung or
            // stopped broker). Moving more onto it is wrong, waiting may be forever.
            let why = format!(
                "{list} no longer registered with the cluster (GET /admin/v2/brokers/{name})"
            );
            failure(r, out, why, now);
        } else {
            r.message = Some(format!(
                "waiting for {list} to register with the cluster (GET /admin/v2/brokers/{name})"
            ));
        }
        return None;
    }
    let mut cluster = Cluster {
        holdings: Vec::new(),
        hosts: BTreeMap::new(),
        registered,
    };
    // An old broker that is not registered (stopping, restarting) neither gives nor counts.
    for p in live.iter().filter(|p| ids.contains_key(&p.ordinal)) {
        let id = ids[&p.ordinal].clone();
        let ip = p.ip.clone().unwrap_or_default();
        match api.owned_bundles(&ip, &name, &id).await {
            Ok(b) => cluster.holdings.push(Holding {
                broker: id.clone(),
                bundles: b.iter().map(ToString::to_string).collect(),
                added: p.ordinal >= from,
            }),
            Err(e) => {
                failure(r, out, e.to_string(), now);
                return None;
            }
        }
        cluster.hosts.insert(id, (ip, p.name.clone()));
    }
    Some(cluster)
}

/// Replicas the StatefulSet `sts` asks for now, if it can be read.
async fn replicas(client: &Client, namespace: &str, sts: &str) -> Option<i32> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    api.get_scale(sts).await.ok()?.spec?.replicas
}

/// Makes the planned moves at `per_second`, stopping at the first failure; returns each
/// broker's bundle count afterwards and the failure, if any.
async fn carry_out(
    api: &AdminClient,
    cluster: &Cluster,
    moves: &[rebalance::Move],
    per_second: u32,
    r: &mut RebalanceStatus,
    out: &mut Stepped,
) -> (BTreeMap<String, usize>, Option<String>) {
    let mut counts: BTreeMap<String, usize> = cluster
        .holdings
        .iter()
        .map(|h| (h.broker.clone(), h.bundles.len()))
        .collect();
    let pause = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
    for (i, m) in moves.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        let (Some(bundle), Some((host, _))) =
            (Bundle::parse(&m.bundle), cluster.hosts.get(&m.from))
        else {
            continue;
        };
        match api
            .unload(host, &bundle, Some(&m.to), &cluster.registered)
            .await
        {
            Ok(()) => {
                r.bundles_moved += 1;
                out.moved += 1;
                *counts.entry(m.from.clone()).or_default() -= 1;
                *counts.entry(m.to.clone()).or_default() += 1;
            }
            Err(e) => return (counts, Some(e.to_string())),
        }
    }
    (counts, None)
}

fn added_names(holdings: &[Holding], hosts: &BTreeMap<String, (String, String)>) -> String {
    holdings
        .iter()
        .filter(|h| h.added)
        .map(|h| {
            hosts
                .get(&h.broker)
                .map_or(h.broker.clone(), |(_, n)| format!("{n} ({})", h.broker))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts a failed admin call; the last allowed one fails the rebalance.
fn failure(r: &mut RebalanceStatus, out: &mut Stepped, why: String, now: Timestamp) {
    r.failures += 1;
    out.failed += 1;
    if r.failures >= MAX_FAILURES {
        let why = format!(
            "{} admin calls or checks failed, given up after moving {} bundles; last: {why}",
            r.failures, r.bundles_moved
        );
        fail(r, out, why, now);
    } else {
        r.message = Some(format!(
            "admin call failed ({} of {MAX_FAILURES} allowed), retrying: {why}",
            r.failures
        ));
    }
}

/// Ends the rebalance as Failed, with a Warning.
fn fail(r: &mut RebalanceStatus, out: &mut Stepped, why: String, now: Timestamp) {
    end(r, state::FAILED, why.clone(), now);
    out.notes.push(Note {
        warning: true,
        reason: "RebalanceFailed",
        message: why,
    });
}

/// The broker id in `active` of the pod `name` at `ip`: `<ip>:<port>`, or an advertised
/// address that is the pod's name or starts with it (`<pod>.<service>...`).
fn broker_id(active: &[String], name: &str, ip: &str) -> Option<String> {
    active
        .iter()
        .find(|id| {
            let host = id.rsplit_once(':').map_or(id.as_str(), |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host == ip || host == name || host.starts_with(&format!("{name}."))
        })
        .cloned()
}

/// The StatefulSet's ordinal pods, with address and readiness.
async fn broker_pods(
    client: &Client,
    namespace: &str,
    sts: &str,
) -> Result<Vec<BrokerPod>, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list pods in {namespace}: {e}"))?;
    let mut pods: Vec<BrokerPod> = list
        .items
        .iter()
        .filter(|p| pod_of(&p.name_any(), sts))
        .filter_map(|p| {
            let name = p.name_any();
            let ordinal = name.rsplit_once('-')?.1.parse().ok()?;
            let status = p.status.as_ref();
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let deleting = p.metadata.deletion_timestamp.is_some();
            Some(BrokerPod {
                ordinal,
                ip: status.and_then(|s| s.pod_ip.clone()),
                ready: ready && !deleting,
                name,
            })
        })
        .collect();
    pods.sort_by_key(|p| p.ordinal);
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn pods_are_matched_to_broker_ids_by_address_or_name() {
        let active = vec![
            "10.0.0.5:8080".to_string(),
            "pulsar-broker-2.pulsar-broker.pulsar.svc.cluster.local:8080".to_string(),
        ];
        assert_eq!(
            broker_id(&active, "pulsar-broker-0", "10.0.0.5").as_deref(),
            Some("10.0.0.5:8080")
        );
        assert_eq!(
            broker_id(&active, "pulsar-broker-2", "10.0.0.7").as_deref(),
            Some("pulsar-broker-2.pulsar-broker.pulsar.svc.cluster.local:8080")
        );
        // pulsar-broker-2 must not match pulsar-broker-20.
        assert_eq!(broker_id(&active, "pulsar-broker-20", "10.0.0.9"), None);
        assert_eq!(broker_id(&active, "pulsar-broker-1", "10.0.0.50"), None);
    }

    #[test]
    fn a_second_scale_up_folds_in_the_brokers_of_an_unfinished_one() {
        let first = begin(None, 2, 3, at(0));
        assert_eq!((first.from_replicas, first.to_replicas), (2, 3));
        let second = begin(Some(&first), 3, 5, at(10));
        assert_eq!((second.from_replicas, second.to_replicas), (2, 5));
        let mut done = first.clone();
        end(&mut done, state::DONE, "ok", at(5));
        let third = begin(Some(&done), 3, 5, at(10));
        assert_eq!(third.from_replicas, 3);
        assert!(active(&third) && !active(&done));
    }

    #[test]
    fn a_scale_down_dry_run_or_removed_settings_stop_it() {
        let r = begin(None, 2, 3, at(0));
        let now = Now {
            dry_run: false,
            configured: true,
            scale_down_to: None,
            replicas: 3,
        };
        assert_eq!(stop_reason(&r, now), None);
        let down = Now {
            scale_down_to: Some(2),
            ..now
        };
        assert!(stop_reason(&r, down).unwrap().contains("scale-down to 2"));
        // Someone else shrank the StatefulSet.
        let shrunk = Now { replicas: 2, ..now };
        assert!(stop_reason(&r, shrunk).unwrap().contains("scale-down to 2"));
        let dry = Now {
            dry_run: true,
            ..now
        };
        assert!(stop_reason(&r, dry).unwrap().contains("dryRun"));
        let removed = Now {
            configured: false,
            ..now
        };
        assert!(stop_reason(&r, removed).unwrap().contains("removed"));
        // An ended rebalance stays as it ended.
        let mut done = r.clone();
        end(&mut done, state::DONE, "ok", at(5));
        assert_eq!(stop_reason(&done, down), None);
    }

    #[test]
    fn failures_are_bounded_then_reported_once() {
        let mut r = begin(None, 2, 3, at(0));
        let mut out = Stepped::default();
        for i in 1..MAX_FAILURES {
            failure(&mut r, &mut out, format!("boom {i}"), at(i as i64));
            assert!(active(&r));
            assert!(out.notes.is_empty());
        }
        failure(
            &mut r,
            &mut out,
            "broker 10.0.0.7: cannot connect".into(),
            at(9),
        );
        assert_eq!(r.state, state::FAILED);
        assert_eq!(out.notes.len(), 1);
        assert!(out.notes[0].warning);
        let msg = r.message.clone().unwrap();
        assert!(
            msg.contains("3 admin calls or checks failed") && msg.contains("10.0.0.7"),
            "{msg}"
        );
        assert_eq!(r.finished_at, Some(Time(at(9))));
    }
}
