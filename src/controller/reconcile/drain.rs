//! Drain before scale-down, the calls: each evaluation of a policy with `brokers.admin` and
//! `scaleDown.drain` starts, continues, cancels or abandons the drain its status remembers, and
//! patches `/scale` only once the leaving brokers own no bundle. What to do is decided by
//! `decide::drain`; this file reads the brokers and moves bundles.
//!
//! One evaluation works on a drain for at most [`ROUND_BUDGET`] and then requeues the policy
//! soon after: other policies run in their own reconciles meanwhile, and a restarted or new
//! leader continues from status, where the drain's progress is written after every round.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::Run;
use crate::actuate;
use crate::admin::{self, AdminClient, AdminSettings, Bundle};
use crate::api::{AdminSpec, DrainBroker, DrainStatus};
use crate::controller::Error;
use crate::controller::status;
use crate::decide::drain::{self as plan, Next, Phase, Remembered};
use crate::decide::{Action, Decision};
use crate::guard::{self, Verdict};
use crate::policy::{self, Policy};

/// Condition type: drains can run and a drained broker can close within its grace period.
pub const DRAIN_AVAILABLE: &str = "DrainAvailable";
/// Longest one evaluation works on a drain before it requeues.
const ROUND_BUDGET: Duration = Duration::from_secs(20);
/// How soon a policy with a drain in progress is evaluated again.
pub const DRAIN_REQUEUE: Duration = Duration::from_secs(1);
/// Bound on one admin call.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECS: i64 = 30;
/// An abandoned drain holds new attempts at least this long (or the scale-down cooldown).
const MIN_RETRY: Duration = Duration::from_secs(60);
/// How long after the last unload the leaving brokers must still own nothing before they are
/// removed: an unloaded bundle is placed again at its clients' next lookup, and the load manager
/// may place it on a leaving broker, which then stops with it.
const SETTLE: Duration = Duration::from_secs(3);

/// What an evaluation made of the drain.
#[derive(Debug, Default)]
pub(super) struct DrainRound {
    /// The broker decision was dealt with here; the plain `/scale` path must not run.
    pub handled: bool,
    /// `/scale` was patched to these replicas (the drain finished).
    pub scaled_to: Option<u32>,
    /// What status keeps of the drain.
    pub status: Option<DrainStatus>,
}

/// `brokers.admin` and `scaleDown.drain`, as one evaluation uses them.
struct Setup {
    admin: AdminSpec,
    timeout: Duration,
    per_second: u32,
}

/// One broker pod as the admin API sees it.
#[derive(Debug, Clone)]
struct Broker {
    ordinal: u32,
    pod: String,
    ip: String,
    /// Its id among the cluster's active brokers.
    id: Option<String>,
    /// Why its admin API cannot be used, if so.
    problem: Option<String>,
}

/// The brokers of the StatefulSet, the cluster they form and the pod settings that matter.
struct View {
    /// `None` when `brokers.admin` cannot be turned into a client (every broker then carries
    /// the reason as its problem).
    client: Option<AdminClient>,
    cluster: String,
    active: Vec<String>,
    brokers: Vec<Broker>,
    grace_secs: i64,
    shutdown_ms: Option<i64>,
}

impl View {
    fn broker(&self, ordinal: u32) -> Option<&Broker> {
        self.brokers.iter().find(|b| b.ordinal == ordinal)
    }

    /// Why the drain cannot run for these leaving ordinals, naming the broker and the call.
    fn unusable(&self, leaving: &[u32], current: u32) -> Option<String> {
        for o in leaving {
            match self.broker(*o) {
                None => return Some(format!("broker pod with ordinal {o} not found")),
                Some(b) => {
                    if let Some(p) = &b.problem {
                        return Some(format!("{} ({}): {p}", b.pod, b.ip));
                    }
                }
            }
        }
        let survivors = (0..current)
            .filter(|o| !leaving.contains(o))
            .filter_map(|o| self.broker(o))
            .filter(|b| b.problem.is_none())
            .count();
        (survivors == 0).then(|| "no surviving broker's admin API answers".to_string())
    }
}

impl Run<'_> {
    fn drain_setup(&self) -> Option<Setup> {
        let spec = self.sp.spec.brokers.as_ref()?;
        let admin = spec.admin.as_deref()?.clone();
        let drain = spec.scale_down.drain.as_ref()?;
        Some(Setup {
            admin,
            timeout: humantime::parse_duration(&drain.timeout).unwrap_or(Duration::from_secs(300)),
            per_second: drain.max_unloads_per_second.max(1) as u32,
        })
    }

    /// Handles a drain for this evaluation's broker decision: starts one for an admitted
    /// scale-down, continues or ends the one in status, and sets `DrainAvailable`.
    pub(super) async fn drain_round(
        &mut self,
        policy: &Policy,
        brokers: &policy::BrokerPolicy,
        decision: &Decision,
        current: u32,
        previous: Option<&DrainStatus>,
        api: &Api<StatefulSet>,
    ) -> Result<DrainRound, Error> {
        let Some(setup) = self.drain_setup() else {
            self.not_drained();
            if let Some(d) = previous.filter(|d| d.phase == Phase::Draining.as_str()) {
                let why = "brokers.admin or scaleDown.drain was removed from the spec";
                self.log(decision, d, "DrainCancelled", why);
                self.event(
                    false,
                    "DrainCancelled",
                    "Drain",
                    format!("{}: {why}", names(d)),
                )
                .await;
                self.drain_ended(d, "cancelled");
            }
            return Ok(DrainRound::default());
        };
        let view = self
            .view(&setup.admin, &brokers.stateful_set, current)
            .await;
        self.availability(&view, current);
        let wanted = (decision.action == Action::ScaleDown)
            .then_some((decision.from as u32, decision.to as u32));
        let remembered = previous.and_then(|d| {
            Some(Remembered {
                phase: Phase::parse(&d.phase)?,
                from: d.from.max(0) as u32,
                to: d.to.max(0) as u32,
                started_at: d.started_at.0,
                finished_at: d.finished_at.as_ref().map(|t| t.0),
            })
        });
        let retry = brokers.scale_down.cooldown.max(MIN_RETRY);
        let next = plan::next(
            wanted,
            current,
            remembered.as_ref(),
            self.now,
            setup.timeout,
            retry,
        );
        let handled = wanted.is_some();
        match next {
            Next::Nothing | Next::Clear => {
                self.drain_gauge(None);
                Ok(DrainRound::default())
            }
            Next::Wait(why) => {
                let mut kept = previous.cloned();
                if let Some(d) = kept.as_mut() {
                    d.message = Some(why);
                }
                Ok(DrainRound {
                    handled,
                    status: kept,
                    scaled_to: None,
                })
            }
            Next::Cancel(why) => {
                let d = previous.cloned();
                if let Some(d) = &d {
                    self.log(decision, d, "DrainCancelled", &why);
                    self.event(
                        false,
                        "DrainCancelled",
                        "Drain",
                        format!("{}: {why}", names(d)),
                    )
                    .await;
                    self.drain_ended(d, "cancelled");
                }
                self.drain_gauge(None);
                Ok(DrainRound {
                    handled,
                    status: None,
                    scaled_to: None,
                })
            }
            Next::TimedOut(why) => match previous.cloned() {
                Some(d) => self.abandoned(d, decision, why, "timed_out").await,
                None => Ok(DrainRound::default()),
            },
            Next::Start { from, to } => {
                self.start(policy, brokers, decision, &setup, view, from, to, api)
                    .await
            }
            Next::Continue => match previous.cloned() {
                Some(d) => self.work(decision, &setup, view, d, brokers, api).await,
                None => Ok(DrainRound::default()),
            },
        }
    }

    /// Without `admin` or `drain`, scale-downs go as before; status says they are not drained.
    fn not_drained(&mut self) {
        let spec = self.sp.spec.brokers.as_ref();
        let (reason, message) = if spec.is_some_and(|b| b.admin.is_some()) {
            (
                "DrainNotConfigured",
                "brokers.scaleDown.drain is not set: scale-downs remove brokers without moving \
                 their bundles first",
            )
        } else {
            (
                "AdminNotConfigured",
                "brokers.admin is not set: scale-downs remove brokers without moving their \
                 bundles first (set brokers.admin and brokers.scaleDown.drain to drain them)",
            )
        };
        self.condition(DRAIN_AVAILABLE, false, reason, message);
        self.drain_gauge(None);
    }

    /// Reads the StatefulSet, its pods and each broker's admin API.
    async fn view(&self, spec: &AdminSpec, stateful_set: &str, current: u32) -> View {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let settings = AdminSettings::from_spec(&secrets, spec, ADMIN_TIMEOUT).await;
        let (client, setup_problem) = match settings.and_then(AdminClient::new) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let sts = self.stateful_set(stateful_set).await;
        let grace_secs = sts
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_SECS);
        let mut brokers = self.pods(sts.as_ref(), stateful_set, current).await;
        if let Some(p) = &setup_problem {
            for b in &mut brokers {
                b.problem = Some(p.clone());
            }
        }
        if let Some(client) = &client {
            for b in brokers.iter_mut().filter(|b| b.problem.is_none()) {
                if let Err(e) = client.health(&b.ip).await {
                    b.problem = Some(e.to_string());
                }
            }
        }
        let mut view = View {
            client,
            cluster: String::new(),
            active: Vec::new(),
            brokers,
            grace_secs,
            shutdown_ms: None,
        };
        let healthy: Vec<String> = view
            .brokers
            .iter()
            .filter(|b| b.problem.is_none())
            .map(|b| b.ip.clone())
            .collect();
        let Some(client) = view.client.clone() else {
            return view;
        };
        for ip in healthy {
            let Ok(config) = client.runtime_config(&ip).await else {
                continue;
            };
            view.shutdown_ms = config
                .get("brokerShutdownTimeoutMs")
                .and_then(|v| v.parse().ok());
            view.cluster = config.get("clusterName").cloned().unwrap_or_default();
            if let Ok(active) = client.active_brokers(&ip, &view.cluster).await {
                view.active = active;
                break;
            }
        }
        for b in &mut view.brokers {
            b.id = admin::broker_id(&view.active, &b.pod, &b.ip);
            if b.problem.is_none() && b.id.is_none() {
                b.problem = Some(if view.active.is_empty() {
                    "cannot read the cluster's active brokers".into()
                } else {
                    format!(
                        "not among the cluster's active brokers ({})",
                        view.active.join(", ")
                    )
                });
            }
        }
        view
    }

    /// The StatefulSet from the API server: the watch's store strips the pod template, which
    /// holds the grace period.
    async fn stateful_set(&self, name: &str) -> Option<StatefulSet> {
        let api: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        api.get(name).await.ok()
    }

    /// Pods `<set>-0 .. <set>-<current-1>` with their IPs (pods without one carry a problem).
    async fn pods(&self, sts: Option<&StatefulSet>, name: &str, current: u32) -> Vec<Broker> {
        let selector = sts
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.selector.match_labels.as_ref())
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let listed = api.list(&ListParams::default().labels(&selector)).await;
        let ips: BTreeMap<String, String> = match &listed {
            Ok(list) => list
                .items
                .iter()
                .filter_map(|p| {
                    let ip = p.status.as_ref()?.pod_ip.clone()?;
                    Some((p.name_any(), ip))
                })
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        (0..current)
            .map(|ordinal| {
                let pod = format!("{name}-{ordinal}");
                let ip = ips.get(&pod).cloned().unwrap_or_default();
                let problem = match &listed {
                    Err(e) => Some(format!("cannot list pods: {e}")),
                    Ok(_) if ip.is_empty() => Some("the pod has no IP".to_string()),
                    Ok(_) => None,
                };
                Broker {
                    ordinal,
                    pod,
                    ip,
                    id: None,
                    problem,
                }
            })
            .collect()
    }

    /// `DrainAvailable`: the admin API of every broker answers, and the grace period covers the
    /// broker's own shutdown timeout.
    fn availability(&mut self, view: &View, current: u32) {
        let broken: Vec<String> = view
            .brokers
            .iter()
            .filter_map(|b| b.problem.as_ref().map(|p| format!("{}: {p}", b.pod)))
            .collect();
        if !broken.is_empty() {
            let message = format!(
                "admin API of {} of {current} brokers not usable, so they cannot be drained: {}",
                broken.len(),
                broken.join("; ")
            );
            self.condition(DRAIN_AVAILABLE, false, "AdminUnreachable", &message);
            return;
        }
        match plan::grace_check(view.grace_secs, view.shutdown_ms) {
            Err(message) => {
                self.condition(DRAIN_AVAILABLE, false, "GracePeriodTooShort", &message);
            }
            Ok(grace) => {
                let message = format!("the admin API of all {current} brokers answers; {grace}");
                self.condition(DRAIN_AVAILABLE, true, "DrainReady", &message);
            }
        }
    }

    /// The bundles each leaving broker owns, by broker id.
    async fn owned(
        &self,
        view: &View,
        ordinals: &[u32],
    ) -> Result<Vec<(Broker, Vec<Bundle>)>, String> {
        let client = view.client.as_ref().ok_or("brokers.admin cannot be used")?;
        let mut out = Vec::new();
        for o in ordinals {
            let b = view
                .broker(*o)
                .ok_or_else(|| format!("broker pod with ordinal {o} not found"))?;
            let id =
                b.id.as_deref()
                    .ok_or_else(|| format!("{}: not among the active brokers", b.pod))?;
            let bundles = client
                .owned_bundles(&b.ip, &view.cluster, id)
                .await
                .map_err(|e| format!("{}: {e}", b.pod))?;
            out.push((b.clone(), bundles));
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn start(
        &mut self,
        policy: &Policy,
        brokers: &policy::BrokerPolicy,
        decision: &Decision,
        setup: &Setup,
        view: View,
        from: u32,
        to: u32,
        api: &Api<StatefulSet>,
    ) -> Result<DrainRound, Error> {
        let leaving = plan::leaving(from, to);
        let listed = match view.unusable(&leaving, from) {
            Some(problem) => Err(problem),
            None => self.owned(&view, &leaving).await,
        };
        let verdict = guard::check_brokers(brokers, decision);
        if decision.dry_run || matches!(verdict, Verdict::Unsafe(_)) {
            // Recorded by the plain path, which never acts in these cases; the reason says
            // what the drain would have moved.
            let mut noted = decision.clone();
            noted.reasons.push(match &listed {
                Ok(owned) => format!("would first drain {}", describe(owned)),
                Err(e) => format!("could not drain: {e}"),
            });
            self.carry_out(policy, &noted, verdict, || async { Ok(()) })
                .await?;
            return Ok(DrainRound {
                handled: true,
                ..DrainRound::default()
            });
        }
        let mut drain = DrainStatus {
            phase: Phase::Draining.as_str().into(),
            from: from as i32,
            to: to as i32,
            brokers: leaving
                .iter()
                .map(|o| DrainBroker {
                    broker: format!("{}-{o}", brokers.stateful_set),
                    bundles_left: 0,
                })
                .collect(),
            bundles_left: 0,
            bundles_moved: 0,
            started_at: Time(self.now),
            finished_at: None,
            message: None,
        };
        let owned = match listed {
            Ok(owned) => owned,
            Err(problem) => {
                let why = format!("cannot drain: {problem}");
                let d = self.abandon(drain, decision, why, "unreachable").await;
                return Ok(DrainRound {
                    handled: true,
                    status: Some(d),
                    scaled_to: None,
                });
            }
        };
        if let Verdict::RateLimited(why) | Verdict::Unsafe(why) =
            self.ctx
                .admit(&self.key.to_string(), policy.rate_limit, self.now)
        {
            let mut dropped = decision.clone();
            dropped.reasons.push(format!("dropped: {why}"));
            status::log_decision(&mut self.status, &dropped, "DroppedScaleDown", self.now);
            self.event(
                true,
                "ActionDropped",
                "ScaleDown",
                format!("{} → {} not carried out: {why}", decision.from, decision.to),
            )
            .await;
            self.rate_limited = Some(why);
            self.count_decision("ScaleDown", "rate_limited");
            return Ok(DrainRound {
                handled: true,
                ..DrainRound::default()
            });
        }
        note_owned(&mut drain, &owned);
        let what = describe(&owned);
        self.log(
            decision,
            &drain,
            "DrainStarted",
            &format!("draining {what}"),
        );
        self.event(
            false,
            "DrainStarted",
            "Drain",
            format!("{from} → {to}: draining {what} first"),
        )
        .await;
        // Written before any bundle moves: a controller that dies now resumes this drain.
        self.status.brokers.get_or_insert_default().drain = Some(Box::new(drain.clone()));
        self.write_status().await?;
        self.work(decision, setup, view, drain, brokers, api).await
    }

    /// Moves bundles for up to one round's budget; patches `/scale` once none is left.
    async fn work(
        &mut self,
        decision: &Decision,
        setup: &Setup,
        view: View,
        mut drain: DrainStatus,
        brokers: &policy::BrokerPolicy,
        api: &Api<StatefulSet>,
    ) -> Result<DrainRound, Error> {
        let from = drain.from.max(0) as u32;
        let to = drain.to.max(0) as u32;
        let leaving = plan::leaving(from, to);
        let round = Instant::now();
        let mut unloads = 0u32;
        let mut last_unload: Option<Instant> = None;
        let mut last_error = None;
        loop {
            if let Some(problem) = view.unusable(&leaving, from) {
                return self
                    .abandoned(
                        drain,
                        decision,
                        format!("cannot drain: {problem}"),
                        "unreachable",
                    )
                    .await;
            }
            let owned = match self.owned(&view, &leaving).await {
                Ok(o) => o,
                Err(problem) => {
                    let why = format!("cannot drain: {problem}");
                    return self.abandoned(drain, decision, why, "unreachable").await;
                }
            };
            note_owned(&mut drain, &owned);
            self.drain_gauge(Some(drain.bundles_left));
            if drain.bundles_left == 0 {
                let settling =
                    last_unload.map_or(Duration::ZERO, |t| SETTLE.saturating_sub(t.elapsed()));
                if !settling.is_zero() {
                    // Look again once the moved bundles have been placed.
                    tokio::time::sleep(settling).await;
                    continue;
                }
                return self.finish(decision, drain, brokers, api).await;
            }
            let took = self.elapsed(&drain);
            if took >= setup.timeout {
                let why = format!(
                    "not drained within drain.timeout {}: {} bundles left",
                    humantime::format_duration(setup.timeout),
                    drain.bundles_left
                );
                return self.abandoned(drain, decision, why, "timed_out").await;
            }
            if round.elapsed() >= ROUND_BUDGET {
                break;
            }
            let survivors = self.survivor_load(&view, &leaving, from).await;
            let leaving_ids: Vec<(String, Vec<Bundle>)> = owned
                .iter()
                .filter_map(|(b, bundles)| Some((b.id.clone()?, bundles.clone())))
                .collect();
            // Re-list after a second's worth of unloads: new bundles may land on a leaving broker.
            let moves = plan::plan_moves(&leaving_ids, &survivors, setup.per_second as usize);
            if moves.is_empty() {
                return self
                    .abandoned(
                        drain,
                        decision,
                        "no surviving broker to move bundles to".into(),
                        "unreachable",
                    )
                    .await;
            }
            for m in moves {
                let wait = plan::pause(setup.per_second, unloads, round.elapsed());
                tokio::time::sleep(wait).await;
                let host = leaving
                    .iter()
                    .filter_map(|o| view.broker(*o))
                    .find(|b| b.id.as_deref() == Some(m.from.as_str()))
                    .map(|b| b.ip.clone())
                    .unwrap_or_default();
                unloads += 1;
                let Some(client) = &view.client else { break };
                last_unload = Some(Instant::now());
                match client
                    .unload(&host, &m.bundle, Some(&m.to), &view.active)
                    .await
                {
                    Ok(()) => drain.bundles_moved += 1,
                    Err(e) => {
                        tracing::info!(policy = %self.name, error = %e, "unload failed; re-listing");
                        last_error = Some(e.to_string());
                    }
                }
                if self.elapsed(&drain) >= setup.timeout {
                    break;
                }
            }
        }
        drain.message = Some(match last_error {
            Some(e) => format!(
                "{} bundles left; last unload error: {e}",
                drain.bundles_left
            ),
            None => format!("{} bundles left", drain.bundles_left),
        });
        self.requeue_soon = Some(DRAIN_REQUEUE);
        Ok(DrainRound {
            handled: true,
            status: Some(drain),
            scaled_to: None,
        })
    }

    /// Bundles each reachable surviving broker owns now, by id.
    async fn survivor_load(
        &self,
        view: &View,
        leaving: &[u32],
        current: u32,
    ) -> BTreeMap<String, usize> {
        let mut load = BTreeMap::new();
        let Some(client) = &view.client else {
            return load;
        };
        for o in (0..current).filter(|o| !leaving.contains(o)) {
            let Some(b) = view.broker(o).filter(|b| b.problem.is_none()) else {
                continue;
            };
            let Some(id) = &b.id else { continue };
            if let Ok(bundles) = client.owned_bundles(&b.ip, &view.cluster, id).await {
                load.insert(id.clone(), bundles.len());
            }
        }
        load
    }

    /// The leaving brokers are empty: remove them.
    async fn finish(
        &mut self,
        decision: &Decision,
        drain: DrainStatus,
        brokers: &policy::BrokerPolicy,
        api: &Api<StatefulSet>,
    ) -> Result<DrainRound, Error> {
        let to = drain.to.max(0) as u32;
        let mut done = decision.clone();
        done.from = drain.from.max(0) as u64;
        done.to = u64::from(to);
        let took = self.elapsed(&drain);
        // First, so the bounded reason in the decision log always keeps it.
        done.reasons.insert(
            0,
            format!(
                "after draining {} ({} bundles moved in {:.1} s)",
                names(&drain),
                drain.bundles_moved,
                took.as_secs_f64()
            ),
        );
        // Act once, as every other action: leadership proven from the Lease, replicas read fresh
        // (the patch applies only to what was read), and the scale-down recorded in the status
        // before the call, so a crash after it cannot repeat it.
        let what = format!("ScaleDown {}", done.target);
        if !self.ctx.leadership.confirm().await {
            return Err(actuate::ActuateError::NotLeader { what }.into());
        }
        let (replicas, version) = actuate::scale_of(api, &brokers.stateful_set).await?;
        if replicas != drain.from.max(0) as u32 {
            // Someone else changed replicas since this round looked: the next round cancels.
            return Ok(DrainRound {
                handled: true,
                scaled_to: None,
                status: Some(drain),
            });
        }
        let before = self.status.clone();
        status::log_decision(&mut self.status, &done, "ScaleDown", self.now);
        status::mark_action(&mut self.status, &done, self.now);
        if let Err(e) = self.write().await {
            self.status = before;
            return Err(e);
        }
        let patched = if self.ctx.leadership.holds_or_confirm().await {
            actuate::scale_at(api, &brokers.stateful_set, to, &version).await
        } else {
            Err(actuate::ActuateError::NotLeader { what })
        };
        if patched.is_err() {
            self.status = before;
        } else if let Some(b) = self.status.brokers.as_mut() {
            b.in_flight = None;
        }
        match patched {
            Ok(()) => {
                self.event(
                    false,
                    "ScaledDown",
                    "ScaleDown",
                    format!("{} → {to}: {}", done.from, done.reason()),
                )
                .await;
                self.count_decision("ScaleDown", "applied");
                self.write_settled().await;
                self.drain_ended(&drain, "drained");
                self.drain_gauge(None);
                Ok(DrainRound {
                    handled: true,
                    scaled_to: Some(to),
                    status: None,
                })
            }
            Err(e) => {
                // The drain stays in status: the next round re-lists and tries the patch again.
                let mut failed = done.clone();
                failed.reasons.push(format!("failed: {e}"));
                status::log_decision(&mut self.status, &failed, "FailedScaleDown", self.now);
                self.event(true, "ActionFailed", "ScaleDown", e.to_string())
                    .await;
                self.count_decision("ScaleDown", "failed");
                Err(e.into())
            }
        }
    }

    async fn abandoned(
        &mut self,
        drain: DrainStatus,
        decision: &Decision,
        why: String,
        outcome: &str,
    ) -> Result<DrainRound, Error> {
        let d = self.abandon(drain, decision, why, outcome).await;
        Ok(DrainRound {
            handled: true,
            status: Some(d),
            scaled_to: None,
        })
    }

    /// Keeps every broker and says why, in status, an Event and the outcome counter.
    async fn abandon(
        &mut self,
        mut drain: DrainStatus,
        decision: &Decision,
        why: String,
        outcome: &str,
    ) -> DrainStatus {
        drain.phase = Phase::Abandoned.as_str().into();
        drain.finished_at = Some(Time(self.now));
        let why = format!("{why}; the brokers are kept, /scale is not changed");
        drain.message = Some(policy::bounded(&why, status::MESSAGE_MAX));
        self.log(decision, &drain, "DrainAbandoned", &why);
        let reason = if outcome == "timed_out" {
            "DrainTimedOut"
        } else {
            "DrainFailed"
        };
        self.event(true, reason, "Drain", format!("{}: {why}", names(&drain)))
            .await;
        self.drain_ended(&drain, outcome);
        self.drain_gauge(None);
        drain
    }

    fn elapsed(&self, drain: &DrainStatus) -> Duration {
        Timestamp::now()
            .duration_since(drain.started_at.0)
            .try_into()
            .unwrap_or(Duration::ZERO)
    }

    fn log(&mut self, decision: &Decision, drain: &DrainStatus, action: &str, why: &str) {
        let mut d = decision.clone();
        d.from = drain.from.max(0) as u64;
        d.to = drain.to.max(0) as u64;
        d.reasons = vec![why.to_string()];
        status::log_decision(&mut self.status, &d, action, self.now);
    }

    fn drain_gauge(&self, left: Option<i32>) {
        self.gauges(|g| g.drain_bundles_left = left.map(i64::from));
    }

    fn drain_ended(&self, drain: &DrainStatus, outcome: &str) {
        let m = &self.ctx.metrics;
        let labels = m.drain_labels(&self.namespace, &self.name, outcome);
        m.drain_outcomes.get_or_create(&labels).inc();
        m.drain_duration
            .get_or_create(&labels)
            .observe(self.elapsed(drain).as_secs_f64());
    }
}

/// Records what each leaving broker owns.
fn note_owned(drain: &mut DrainStatus, owned: &[(Broker, Vec<Bundle>)]) {
    drain.brokers = owned
        .iter()
        .map(|(b, bundles)| DrainBroker {
            broker: b.pod.clone(),
            bundles_left: bundles.len() as i32,
        })
        .collect();
    drain.bundles_left = owned.iter().map(|(_, b)| b.len() as i32).sum();
}

/// `pulsar-broker-2 (5 bundles)`.
fn describe(owned: &[(Broker, Vec<Bundle>)]) -> String {
    owned
        .iter()
        .map(|(b, bundles)| format!("{} ({} bundles)", b.pod, bundles.len()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(drain: &DrainStatus) -> String {
    drain
        .brokers
        .iter()
        .map(|b| b.broker.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
