//! One evaluation of one policy: check, observe, decide, guard, act, record.

mod drain;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};

use super::conflict;
use super::index::PolicyKey;
use super::status::{self, kind};
use super::{Context, Error, PolicyState};
use crate::actuate;
use crate::api::{
    BookieStatus, BrokerStatus, InFlightScale, MetricStatus, ScalingPolicy, ScalingPolicyStatus,
    VolumeStatus,
};
use crate::decide::forecast::{DEFAULT_HORIZON, NoHistory};
use crate::decide::{
    Action, Ahead, Availability, BrokerInputs, BrokerMemory, BrokerOutcome, Decision, Flags,
    VolumeState, decide_brokers_with, decide_claim,
};
use crate::guard::{self, Verdict};
use crate::metrics::PolicyReadings;
use crate::metrics::round::COUNT_UNKNOWN;
use crate::policy::{self, Policy};
use crate::quantity;
use crate::telemetry::{ClaimGauges, MetricGauges, PolicyGauges, PolicyLabels, ResultLabels};

/// Requeue of a policy that cannot be evaluated until its spec changes.
const INVALID_RETRY: Duration = Duration::from_secs(300);
/// A status unchanged for this long is written anyway, so the values it shows stay recent.
const HEARTBEAT: Duration = Duration::from_secs(300);
/// How long a `/scale` change may wait for the StatefulSet watch before the store is trusted.
const PENDING_SCALE: Duration = Duration::from_secs(30);
/// Requeue after the memory was read again from a status someone else wrote.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// Everything one evaluation needs to carry with it.
struct Run<'a> {
    ctx: &'a Context,
    sp: &'a ScalingPolicy,
    key: PolicyKey,
    namespace: String,
    name: String,
    generation: Option<i64>,
    now: Timestamp,
    status: ScalingPolicyStatus,
    state: PolicyState,
    rate_limited: Option<String>,
    /// Why the policy cannot do its job although nothing failed: `(reason, message)`.
    not_ready: Vec<(&'static str, String)>,
    /// Evaluate again this soon (a drain or rebalance in progress), rather than after `spec.interval`.
    requeue_soon: Option<Duration>,
    /// Someone else manages a target: `(reason, message)`; nothing is acted on.
    conflict: Option<(&'static str, String)>,
}

/// Reconciles one policy; the requeue follows `spec.interval`.
pub async fn reconcile(sp: Arc<ScalingPolicy>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = evaluate(&sp, &ctx).await;
    let label = ResultLabels {
        result: if result.is_ok() { "ok" } else { "error" }.into(),
    };
    ctx.metrics
        .reconcile_duration
        .get_or_create(&label)
        .observe(started.elapsed().as_secs_f64());
    result
}

/// The in-process memory of a policy, seeded from its status at first sight.
fn state_of(ctx: &Context, key: &PolicyKey, sp: &ScalingPolicy, now: Timestamp) -> PolicyState {
    let known = ctx
        .states
        .lock()
        .ok()
        .and_then(|s| s.get(key).map(|b| PolicyState::clone(b)))
        .filter(|s| s.uid == sp.metadata.uid);
    known.unwrap_or_else(|| PolicyState {
        uid: sp.metadata.uid.clone(),
        current: status::seed(sp.status.as_deref(), now),
        written: sp.status.as_deref().map(status::Written::of),
        resource_version: sp.metadata.resource_version.clone(),
        ..PolicyState::default()
    })
}

/// Whether an error says the status this process holds is not the newest (someone else wrote
/// it: a leader that took over, a person), so memory must be read again before anything else.
fn is_stale(e: &Error) -> bool {
    matches!(e, Error::Actuate(actuate::ActuateError::Stale { what }) if what.contains("/status"))
}

/// Reads the policy afresh and starts its memory over from the status found, after a status
/// write was refused as stale. The rate-limiter bucket is seeded again from that status too, so
/// actions another process took count. Nothing is acted on in this evaluation.
async fn resync(ctx: &Context, key: &PolicyKey, sp: &ScalingPolicy) -> Result<Requeue, Error> {
    let api: Api<ScalingPolicy> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let what = format!("list scalingpolicies/{}", key.name);
    // A list by name needs no `get` permission beyond what the watch has.
    let params = kube::api::ListParams::default().fields(&format!("metadata.name={}", key.name));
    let fresh = api
        .list(&params)
        .await
        .map_err(|e| actuate::ActuateError::from_kube(what, e))?
        .items
        .into_iter()
        .find(|p| p.metadata.uid == sp.metadata.uid);
    let Some(fresh) = fresh else {
        return Ok(Requeue::await_change());
    };
    tracing::info!(policy = %key, "status changed elsewhere: memory read again from it");
    let state = PolicyState {
        uid: fresh.metadata.uid.clone(),
        current: status::seed(fresh.status.as_deref(), Timestamp::now()),
        written: fresh.status.as_deref().map(status::Written::of),
        resource_version: fresh.metadata.resource_version.clone(),
        ..PolicyState::default()
    };
    if let Ok(mut states) = ctx.states.lock() {
        states.insert(key.clone(), Box::new(state));
    }
    ctx.forget_bucket(&key.to_string());
    Ok(Requeue::requeue(RESYNC_RETRY))
}

async fn evaluate(sp: &ScalingPolicy, ctx: &Context) -> Result<Requeue, Error> {
    let namespace = sp.namespace().ok_or(Error::NoNamespace)?;
    let key = PolicyKey::of(sp);
    let now = Timestamp::now();
    let state = state_of(ctx, &key, sp, now);
    let mut run = Run {
        ctx,
        sp,
        name: sp.name_any(),
        namespace,
        generation: sp.meta().generation,
        now,
        status: state.current.clone(),
        state,
        key,
        rate_limited: None,
        not_ready: Vec::new(),
        requeue_soon: None,
        conflict: None,
    };
    let result = run.evaluate().await;
    run.state.current = run.status.clone();
    let stored = run.state.clone();
    if let Ok(mut states) = ctx.states.lock() {
        states.insert(run.key.clone(), Box::new(stored));
    }
    match result {
        Err(e) if is_stale(&e) => resync(ctx, &run.key, sp).await,
        other => other,
    }
}

impl Run<'_> {
    async fn evaluate(&mut self) -> Result<Requeue, Error> {
        let ctx = self.ctx;
        self.status.observed_generation = self.generation;
        let Some(checked) = ctx.checked(self.sp) else {
            return Ok(Requeue::requeue(INVALID_RETRY));
        };
        let policy = match &checked.policy {
            Ok(p) => p.clone(),
            Err(message) => {
                let was_invalid = status::is_true(&self.status, kind::INVALID);
                self.condition(kind::INVALID, true, "SpecInvalid", message);
                self.condition(
                    kind::READY,
                    false,
                    "SpecInvalid",
                    "fix the spec; see the Invalid condition",
                );
                self.export_ready(false);
                if !was_invalid {
                    self.event(true, "InvalidSpec", "Validate", message.clone())
                        .await;
                }
                self.write_status().await?;
                return Ok(Requeue::requeue(INVALID_RETRY));
            }
        };
        let admin = super::index::admin_of(self.sp);
        if let Err(refusal) = ctx.admission.check(&policy.source, admin) {
            // Refused by the operator's settings: the source is never called (the index keeps
            // the policy out of every round).
            let was_invalid = status::is_true(&self.status, kind::INVALID);
            self.condition(kind::INVALID, true, refusal.reason, &refusal.message);
            self.condition(
                kind::READY,
                false,
                refusal.reason,
                "the controller refuses this policy; see the Invalid condition",
            );
            self.export_ready(false);
            if !was_invalid {
                self.event(true, refusal.reason, "Validate", refusal.message)
                    .await;
            }
            self.write_status().await?;
            return Ok(Requeue::requeue(INVALID_RETRY));
        }
        self.condition(
            kind::INVALID,
            false,
            "SpecValid",
            "the spec passed every check",
        );
        self.insecure_tls(&policy).await;
        self.condition(
            kind::DRY_RUN,
            policy.dry_run,
            if policy.dry_run { "DryRun" } else { "Live" },
            dry_run_text(&policy),
        );
        if policy.suspend {
            self.condition(
                kind::SUSPENDED,
                true,
                "Suspended",
                "spec.suspend is true: nothing is evaluated or changed",
            );
            self.condition(kind::READY, false, "Suspended", "spec.suspend is true");
            // Suspended on purpose: no readiness to alert on.
            self.gauges(|g| g.policy_ready = None);
            self.write_status().await?;
            return Ok(Requeue::requeue(policy.interval));
        }
        // Until its source's first round, there is nothing to decide on; the round wakes it.
        let Some(fresh) = ctx.rounds.readings(&self.key) else {
            if let Some(source) = &checked.source {
                ctx.rounds.joined(source);
            }
            return Ok(Requeue::requeue(policy.interval));
        };
        self.condition(
            kind::SUSPENDED,
            false,
            "Active",
            "the policy is evaluated every interval",
        );
        if self.state.declared != self.generation {
            let mut actions = Vec::new();
            if policy.brokers.is_some() {
                actions.extend(["ScaleUp", "ScaleDown"]);
            }
            if policy.bookies.is_some() {
                actions.push("Expand");
            }
            ctx.metrics
                .declare_decisions(&self.namespace, &self.name, &actions);
            self.state.declared = self.generation;
        }
        let key = self.key.to_string();
        if !ctx.guard_knows(&key) {
            let past = status::recent_actions(&self.status, self.now);
            ctx.seed_guard(&key, policy.rate_limit, &past);
        }

        let readings = &fresh.readings;
        for e in &readings.errors {
            tracing::debug!(policy = %self.name, error = %e, "metric source problem");
        }
        let mut problems = Vec::new();
        if let Some(brokers) = &policy.brokers
            && let Err(e) = self.brokers(&policy, brokers, readings).await
        {
            if must_stop(&e) {
                return Err(e);
            }
            problems.push(e);
        }
        if let Some(bookies) = &policy.bookies
            && let Err(e) = self.bookies(&policy, bookies, readings).await
        {
            if must_stop(&e) {
                return Err(e);
            }
            problems.push(e);
        }
        self.conflict_condition().await;
        if let Some((_, message)) = &self.conflict {
            // Not Ready while someone else manages a target: the policy does not act.
            let message = format!("the policy does not act: {message}");
            self.not_ready.push((conflict::READY_REASON, message));
        }
        match &self.rate_limited {
            Some(why) => self.condition(kind::RATE_LIMITED, true, "ActionDropped", &why.clone()),
            None => self.condition(
                kind::RATE_LIMITED,
                false,
                "WithinLimit",
                "no action was dropped in the last evaluation",
            ),
        }
        let ready = problems.is_empty() && self.not_ready.is_empty();
        self.export_ready(ready);
        if ready {
            self.condition(kind::READY, true, "Evaluated", "the policy was evaluated");
        } else {
            for p in &problems {
                tracing::warn!(policy = %self.name, namespace = %self.namespace, error = %crate::telemetry::chain(p), "evaluation failed");
            }
            let (reason, message) = not_ready(&problems, &self.not_ready);
            self.not_ready_event(reason, &message).await;
            self.condition(kind::READY, false, reason, &message);
        }
        self.write_status().await?;
        let after = self
            .requeue_soon
            .map_or(policy.interval, |soon| soon.min(policy.interval));
        Ok(Requeue::requeue(after))
    }
}

/// Errors after which nothing more may be done in this evaluation: the status held is stale,
/// or this process no longer leads.
fn must_stop(e: &Error) -> bool {
    is_stale(e) || matches!(e, Error::Actuate(actuate::ActuateError::NotLeader { .. }))
}

/// A per-policy offset of up to a minute, so heartbeat writes of policies created together spread.
fn jitter(key: &PolicyKey) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    Duration::from_millis(h.finish() % 60_000)
}

/// `statefulset/pulsar-broker 3 → 6` for replicas, `pvc/ledgers-bookie-0 50.0 GiB → 60.0 GiB`
/// for claims: what and how far, so that the Event of every action reads differently.
fn span(decision: &Decision) -> String {
    if decision.action == Action::Expand {
        let bytes = |b: u64| crate::decide::units::bytes(b as f64);
        format!(
            "{} {} → {}",
            decision.target,
            bytes(decision.from),
            bytes(decision.to)
        )
    } else {
        format!("{} {} → {}", decision.target, decision.from, decision.to)
    }
}

/// The Event reason of a carried-out action, from its recorded name (`ScaleUp` → `ScaledUp`).
fn done_reason(action: &str) -> &'static str {
    if action == Action::ScaleUp.to_string() {
        "ScaledUp"
    } else if action == Action::ScaleDown.to_string() {
        "ScaledDown"
    } else {
        "Expanded"
    }
}

/// For each of `n` broker metrics, whether its reading is a Custom total that names no broker
/// pod (see [`COUNT_UNKNOWN`]).
fn count_unknown(readings: &PolicyReadings, n: usize) -> Vec<bool> {
    (0..n)
        .map(|i| {
            readings
                .brokers
                .get(i)
                .is_some_and(|r| r.problem.as_deref() == Some(COUNT_UNKNOWN))
        })
        .collect()
}

/// The Ready=False reason and message: a failed call names its kind (a missing target is
/// `TargetNotFound`), otherwise the first reason the policy cannot do its job; every message.
fn not_ready(problems: &[Error], not_ready: &[(&'static str, String)]) -> (&'static str, String) {
    let reason = match problems.first() {
        Some(Error::Actuate(actuate::ActuateError::NotFound { .. })) => "TargetNotFound",
        Some(Error::Actuate(actuate::ActuateError::Forbidden { .. })) => "Forbidden",
        Some(_) => "TargetUnavailable",
        None => not_ready.first().map_or("NotReady", |(r, _)| *r),
    };
    let message = problems
        .iter()
        .map(ToString::to_string)
        .chain(not_ready.iter().map(|(_, m)| m.clone()))
        .collect::<Vec<_>>()
        .join("; ");
    (reason, message)
}

fn dry_run_text(policy: &Policy) -> &'static str {
    if policy.dry_run {
        "spec.dryRun is true: decisions are recorded, nothing is changed"
    } else {
        "changes are carried out"
    }
}

impl Run<'_> {
    fn labels(&self) -> PolicyLabels {
        self.ctx.metrics.policy_labels(&self.namespace, &self.name)
    }

    /// Sets this policy's own gauges.
    fn gauges(&self, set: impl FnOnce(&mut PolicyGauges)) {
        self.ctx
            .metrics
            .set_policy(&self.namespace, &self.name, set);
    }

    fn condition(&mut self, type_: &str, value: bool, reason: &str, message: &str) {
        status::set_condition(
            &mut self.status,
            type_,
            value,
            reason,
            message,
            self.generation,
            self.now,
        );
    }

    async fn event(&self, warning: bool, reason: &str, action: &str, note: String) {
        if !self.ctx.leadership.holds_or_confirm().await {
            return;
        }
        let reference = self.sp.object_ref(&());
        actuate::event(
            &self.ctx.recorder,
            &reference,
            warning,
            reason,
            action,
            note,
        )
        .await;
    }

    /// `pulsar_autoscaler_policy_ready`, for the alert on policies that cannot do their job.
    fn export_ready(&self, ready: bool) {
        self.gauges(|g| g.policy_ready = Some(i64::from(ready)));
    }

    /// One Warning Event when Ready turns False or its reason changes (not every interval).
    async fn not_ready_event(&self, reason: &str, message: &str) {
        // A conflict has its own condition and Event already.
        if reason == conflict::READY_REASON {
            return;
        }
        let same = self
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == kind::READY && c.status == "False" && c.reason == reason);
        if !same {
            self.event(true, reason, "Evaluate", message.to_string())
                .await;
        }
    }

    /// Warns, as a condition and one Event, while the source's certificate is not checked.
    async fn insecure_tls(&mut self, policy: &Policy) {
        let admin = super::index::admin_of(self.sp);
        let mut unchecked = Vec::new();
        if policy.source.insecure_skip_verify() {
            unchecked.push(
                "spec.metricsSource.tls.insecureSkipVerify is true: the server's certificate is \
                 not checked, so an impostor could read the queries and any credentials sent \
                 with them; give its CA in tls.caSecretRef",
            );
        }
        if policy::admin_insecure(admin) {
            unchecked.push(
                "spec.brokers.admin.tls.insecureSkipVerify is true: the brokers' certificates \
                 are not checked, so an impostor could take the admin token and be told which \
                 bundles to move; give their CA in brokers.admin.tls.caSecretRef",
            );
        }
        let was = status::is_true(&self.status, kind::INSECURE_TLS);
        if !unchecked.is_empty() {
            let message = unchecked.join("; ");
            self.condition(kind::INSECURE_TLS, true, "InsecureSkipVerify", &message);
            if !was {
                self.event(true, "InsecureSkipVerify", "Validate", message)
                    .await;
            }
        } else if status::has(&self.status, kind::INSECURE_TLS) {
            self.condition(
                kind::INSECURE_TLS,
                false,
                "CertificateVerified",
                "every certificate the controller meets for this policy is checked",
            );
        }
    }

    /// Sets `Conflict` from what this evaluation found (a change of replicas made elsewhere
    /// keeps it set for the policy's longer cooldown), with one Event when it starts.
    async fn conflict_condition(&mut self) {
        if self.conflict.is_none()
            && let Some((at, message, lasts)) = &self.state.external
        {
            if crate::decide::elapsed(self.now, *at) < *lasts {
                self.conflict = Some((conflict::reason::REPLICAS_CHANGED, message.clone()));
            } else {
                self.state.external = None;
            }
        }
        let was = status::is_true(&self.status, kind::CONFLICT);
        match self.conflict.clone() {
            Some((reason, message)) => {
                self.condition(kind::CONFLICT, true, reason, &message);
                if !was {
                    self.event(true, "Conflict", "Evaluate", message).await;
                }
            }
            None => self.condition(
                kind::CONFLICT,
                false,
                conflict::reason::NONE,
                "nothing else manages the targets",
            ),
        }
    }

    /// Whether another policy or an HPA manages the broker StatefulSet; sets `self.conflict`.
    /// HPAs are listed only when an action is wanted (one list per wanted action).
    async fn broker_conflict(&mut self, stateful_set: &str, acting: bool) -> Result<bool, Error> {
        let rivals = self
            .ctx
            .index
            .read()
            .map(|i| i.rivals(&self.key, stateful_set, true))
            .unwrap_or_default();
        if !rivals.is_empty() {
            let names: Vec<String> = rivals.iter().map(|k| k.name.clone()).collect();
            self.conflict = Some((
                conflict::reason::ANOTHER_POLICY,
                format!(
                    "policies {} also scale statefulset/{stateful_set}: none of them acts until \
                     only one is left (delete or suspend the others)",
                    names.join(", ")
                ),
            ));
            return Ok(true);
        }
        if !acting {
            return Ok(false);
        }
        let hpas = conflict::hpas_on(&self.ctx.client, &self.namespace, stateful_set).await?;
        if !hpas.is_empty() {
            self.conflict = Some((
                conflict::reason::HPA,
                format!(
                    "HorizontalPodAutoscaler {} scales statefulset/{stateful_set}: the policy \
                     does not act while it exists",
                    hpas.join(", ")
                ),
            ));
            return Ok(true);
        }
        Ok(false)
    }

    /// Notes a change of replicas made elsewhere: counted as a change for the cooldowns (so
    /// the policy does not undo it at once) and shown as `Conflict` for the longer cooldown.
    fn replicas_changed_elsewhere(
        &mut self,
        brokers: &policy::BrokerPolicy,
        memory: &mut BrokerMemory,
        (before, now): (u32, u32),
    ) {
        let direction = if now > before {
            Action::ScaleUp
        } else {
            Action::ScaleDown
        };
        memory.note_action(direction, self.now);
        let lasts = brokers.scale_up.cooldown.max(brokers.scale_down.cooldown);
        let message = format!(
            "replicas of statefulset/{} changed from {before} to {now} by someone else (a \
             person, an HPA or another controller): the policy waits {} before acting",
            brokers.stateful_set,
            crate::decide::units::duration(lasts)
        );
        self.conflict = Some((conflict::reason::REPLICAS_CHANGED, message.clone()));
        self.state.external = Some((self.now, message, lasts));
    }

    /// Writes the status when a person or a restart would see a difference, or when the last
    /// write is older than the heartbeat.
    async fn write_status(&mut self) -> Result<(), Error> {
        let due = self
            .state
            .written_at
            .is_none_or(|at| at.elapsed() >= HEARTBEAT + jitter(&self.key));
        if !due && !status::needs_write(self.state.written.as_ref(), &self.status) {
            return Ok(());
        }
        self.write().await
    }

    /// Writes the status now, only while leading and only over the version last read or
    /// written (a stale write fails and the memory is read again, see [`resync`]).
    async fn write(&mut self) -> Result<(), Error> {
        let what = format!("patch scalingpolicies/{}/status", self.name);
        if !self.ctx.leadership.holds_or_confirm().await {
            return Err(actuate::ActuateError::NotLeader { what }.into());
        }
        let api: Api<ScalingPolicy> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let rv = self.state.resource_version.clone();
        let new_rv =
            actuate::apply_status_at(&api, &self.name, &self.status, rv.as_deref()).await?;
        self.state.resource_version = new_rv;
        self.state.written = Some(status::Written::of(&self.status));
        self.state.written_at = Some(Instant::now());
        Ok(())
    }

    /// Writes the status right after an action's Event and count, so that the in-flight
    /// marker is gone as soon as they are out: a successor republishes the Event only when this
    /// process stopped in that short span. A failure here is left to the evaluation's own write.
    pub(super) async fn write_settled(&mut self) {
        if let Err(e) = self.write().await {
            tracing::warn!(policy = %self.key, error = %e, "status after an action not written yet");
        }
    }

    /// Replicas of the broker StatefulSet: from the watch's store, a change this controller
    /// made and the watch has not shown yet, or the API server when the store lacks it.
    async fn replicas(&mut self, api: &Api<StatefulSet>, name: &str) -> Result<u32, Error> {
        let stored = self
            .ctx
            .statefulsets
            .get(&self.namespace, name)
            .and_then(|t| t.replicas)
            .map(|r| r.max(0) as u32);
        let stored = match stored {
            Some(r) => r,
            None => actuate::replicas(api, name).await?,
        };
        if let Some((from, to, at)) = self.state.pending_scale {
            if stored == from && at.elapsed() < PENDING_SCALE {
                return Ok(to);
            }
            self.state.pending_scale = None;
        }
        Ok(stored)
    }

    /// Settles an action that a process recorded and then stopped before writing its outcome
    /// (found in the status after a restart or a takeover), given `now`, the replicas or claim
    /// bytes read fresh: if it happened, its Event and count are published now (once); if the
    /// target is still at what it started from, the record is corrected (see
    /// [`status::correct_unmade`]); anything else was someone else's change, which the
    /// conflict check that follows reports.
    async fn settle_in_flight(&mut self, made: &InFlightScale, target: &str, now: i64) {
        let span = if made.action == Action::Expand.to_string() {
            let bytes = |b: i64| crate::decide::units::bytes(b as f64);
            format!("{target} {} → {}", bytes(made.from), bytes(made.to))
        } else {
            format!("{target} {} → {}", made.from, made.to)
        };
        if now == made.to {
            let done = done_reason(&made.action);
            let reason = self
                .status
                .decisions
                .iter()
                .find(|d| d.time == made.time && d.action == made.action)
                .map(|d| d.reason.clone())
                .unwrap_or_default();
            self.event(
                false,
                done,
                &made.action,
                format!("{span}: {reason} (made before the previous controller stopped)"),
            )
            .await;
            self.count_decision(&made.action, "applied");
        } else if now == made.from {
            let why = "not carried out: the controller stopped after recording it and before \
                       its patch reached the API server";
            status::correct_unmade(&mut self.status, made, why);
            self.event(true, "ActionFailed", &made.action, format!("{span}: {why}"))
                .await;
            self.count_decision(&made.action, "failed");
            return;
        }
        status::settle(&mut self.status, made);
    }

    /// Settles the in-flight expansions of the policy's claims (see [`Self::settle_in_flight`]),
    /// each from a fresh read of the claim; a claim that is gone has nothing to settle.
    async fn settle_claims(&mut self) -> Result<(), Error> {
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for (claim, made) in status::in_flight(&self.status) {
            let Some(claim) = claim else { continue };
            match actuate::requested(&api, &claim).await {
                Ok(bytes) => {
                    let now = bytes.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
                    self.settle_in_flight(&made, &format!("pvc/{claim}"), now)
                        .await;
                }
                Err(actuate::ActuateError::NotFound { .. }) => {
                    status::settle(&mut self.status, &made)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn brokers(
        &mut self,
        policy: &Policy,
        brokers: &policy::BrokerPolicy,
        readings: &PolicyReadings,
    ) -> Result<(), Error> {
        let api: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        if let Some(made) = self
            .status
            .brokers
            .as_ref()
            .and_then(|b| b.in_flight.clone())
        {
            let (replicas, _) = actuate::scale_of(&api, &brokers.stateful_set).await?;
            let target = format!("statefulset/{}", brokers.stateful_set);
            self.settle_in_flight(&made, &target, i64::from(replicas))
                .await;
        }
        let current = self.replicas(&api, &brokers.stateful_set).await?;
        let previous = self.status.brokers.clone().unwrap_or_default();
        let mut memory = BrokerMemory::from_status(&previous);
        let last_seen = self
            .status
            .brokers
            .as_ref()
            .map(|b| b.current_replicas.max(0) as u32);
        let own = self.state.pending_scale.is_some();
        if let Some(change) = conflict::changed_elsewhere(last_seen, current, own) {
            self.replicas_changed_elsewhere(brokers, &mut memory, change);
        }
        let mut samples = readings.broker_samples();
        samples.resize(brokers.metrics.len(), None);
        let flags = Flags {
            dry_run: policy.dry_run,
            suspend: false,
        };
        let inputs = BrokerInputs {
            policy: brokers,
            flags,
            max_staleness: policy.source.max_staleness,
            current,
            samples: &samples,
            memory: &memory,
            now: self.now,
        };
        // The daily pattern reads the source's history (range queries, cached for an hour).
        let history =
            crate::metrics::history::for_policy(&self.namespace, &self.name, policy, self.now)
                .await;
        let ahead = policy.forecast.map(|f| Ahead {
            policy: f,
            history: history.as_deref().map_or(&NoHistory as _, |h| h as _),
            unmeasured_horizon: DEFAULT_HORIZON,
        });
        let outcome = decide_brokers_with(&inputs, ahead.as_ref());
        if let Some(note) = self.metrics_condition(&outcome, readings) {
            self.event(true, "MetricsUnavailable", "Evaluate", note)
                .await;
        }
        let flap = policy.forecast.map(|_| status::Flap {
            holding: outcome.holding,
            turns: outcome.memory.ahead.turns.within(self.now),
            message: outcome.memory.ahead.flap_message.as_deref(),
        });
        if let Some(note) = status::set_flapping(&mut self.status, flap, self.generation, self.now)
        {
            self.event(false, "Flapping", "Evaluate", note).await;
        }
        let mut memory = outcome.memory.clone();
        let mut replicas_now = current;
        let decision = &outcome.decision;
        let stateful_set = brokers.stateful_set.clone();
        let conflicted = self
            .broker_conflict(&stateful_set, decision.mutates())
            .await?;
        // Under a conflict nothing moves: a drain is neither started nor continued (one in
        // progress is cancelled, as when the load comes back).
        let held;
        let for_drain = if conflicted {
            held = Decision::hold(
                decision.target.clone(),
                current.into(),
                "another manager of the StatefulSet: see the Conflict condition",
                decision.dry_run,
            );
            &held
        } else {
            decision
        };
        let drain = self
            .drain_round(
                policy,
                brokers,
                for_drain,
                current,
                previous.drain.as_deref(),
                &api,
            )
            .await?;
        // Read replicas fresh before acting; the patch applies only to what was read.
        let mut fresh = None;
        if decision.mutates() && !conflicted && !drain.handled {
            let (now, rv) = actuate::scale_of(&api, &stateful_set).await?;
            if now == current {
                fresh = Some(rv);
            } else {
                self.replicas_changed_elsewhere(brokers, &mut memory, (current, now));
                replicas_now = now;
            }
        }
        if let Some(to) = drain.scaled_to {
            memory.note_action(Action::ScaleDown, self.now);
            replicas_now = to;
            self.state.pending_scale = Some((current, replicas_now, std::time::Instant::now()));
        } else if decision.is_change()
            && !drain.handled
            && !conflicted
            // Dry-run decisions are recorded without a fresh read; they change nothing.
            && (decision.dry_run || fresh.is_some())
        {
            let rv = fresh.unwrap_or_default();
            let verdict = guard::check_brokers(brokers, decision);
            let carried = self
                .carry_out(policy, decision, verdict, || async {
                    actuate::scale_at(&api, &stateful_set, decision.to as u32, &rv).await
                })
                .await?;
            if carried {
                memory.note_action(decision.action, self.now);
                replicas_now = decision.to as u32;
                self.state.pending_scale = Some((current, replicas_now, std::time::Instant::now()));
                self.write_settled().await;
            }
        }
        match &outcome.limited {
            Some(why) => self.condition(kind::SCALING_LIMITED, true, "Limited", why),
            None => self.condition(
                kind::SCALING_LIMITED,
                false,
                "Unlimited",
                "the policy reaches what its metrics want",
            ),
        }
        self.export_brokers(brokers, &outcome, replicas_now);
        let mut status = BrokerStatus {
            current_replicas: replicas_now as i32,
            desired_replicas: outcome.desired as i32,
            metrics: outcome
                .metrics
                .iter()
                .zip(count_unknown(readings, outcome.metrics.len()))
                .map(|(m, unknown)| MetricStatus {
                    name: m.name.clone(),
                    value: m.value,
                    target: m.target,
                    proposed_replicas: m.proposed_replicas.map(|r| r as i32),
                    observed_at: m.observed_at.map(Time),
                    problem: m
                        .problem
                        .clone()
                        .or_else(|| unknown.then(|| COUNT_UNKNOWN.to_string())),
                })
                .collect(),
            ..BrokerStatus::default()
        };
        memory.write_status(&mut status);
        status.drain = drain.status.map(Box::new);
        status.rebalance = self
            .rebalance(
                policy,
                brokers,
                &outcome,
                (current, replicas_now),
                previous.rebalance.map(|r| *r),
            )
            .await
            .map(Box::new);
        self.status.brokers = Some(status);
        Ok(())
    }

    /// Starts, continues or stops the rebalance after a scale-up; returns its new status.
    async fn rebalance(
        &mut self,
        policy: &Policy,
        brokers: &policy::BrokerPolicy,
        outcome: &BrokerOutcome,
        (before, now_replicas): (u32, u32),
        previous: Option<crate::api::RebalanceStatus>,
    ) -> Option<crate::api::RebalanceStatus> {
        use super::rebalance::{self as rb, state};
        let spec = self.sp.spec.brokers.as_ref();
        let admin = spec.and_then(|b| b.admin.clone());
        let settings = spec.and_then(|b| b.scale_up.rebalance.clone());
        let scaled_up = outcome.decision.action == Action::ScaleUp && now_replicas > before;
        let mut r = match (previous, &admin, &settings) {
            (previous, Some(_), Some(_)) if scaled_up => {
                Some(rb::begin(previous.as_ref(), before, now_replicas, self.now))
            }
            (previous, _, _) => previous,
        };
        let rs = r.as_mut()?;
        let now = rb::Now {
            dry_run: policy.dry_run,
            configured: admin.is_some() && settings.is_some(),
            scale_down_to: (outcome.decision.action == Action::ScaleDown)
                .then_some(outcome.decision.to as u32),
            replicas: now_replicas,
        };
        if let Some(why) = rb::stop_reason(rs, now) {
            rb::end(rs, state::STOPPED, why.clone(), self.now);
            self.event(false, "RebalanceStopped", "Rebalance", why)
                .await;
        }
        if let (true, Some(admin), Some(settings)) = (rb::active(rs), &admin, &settings) {
            let per_second = settings.max_unloads_per_second.max(1) as u32;
            let stepped = rb::step(
                &self.ctx.client,
                &self.namespace,
                &brokers.stateful_set,
                admin,
                per_second,
                rs,
                self.now,
            )
            .await;
            self.export_rebalance_step(&stepped);
            for n in stepped.notes {
                self.event(n.warning, n.reason, "Rebalance", n.message)
                    .await;
            }
            if rb::active(rs) {
                self.requeue_soon = Some(rb::AGAIN);
            }
        }
        let labels = self.labels();
        let m = &self.ctx.metrics.rebalance;
        m.in_progress
            .get_or_create(&labels)
            .set(i64::from(rb::active(rs)));
        let end = rs.finished_at.as_ref().map_or(self.now, |t| t.0);
        m.duration
            .get_or_create(&labels)
            .set(crate::decide::elapsed(end, rs.started_at.0).as_secs_f64());
        r
    }

    /// Counts what one rebalance step moved and what failed.
    fn export_rebalance_step(&self, stepped: &super::rebalance::Stepped) {
        let labels = self.labels();
        let m = &self.ctx.metrics.rebalance;
        if stepped.moved > 0 {
            m.bundles_moved
                .get_or_create(&labels)
                .inc_by(u64::from(stepped.moved));
        }
        if stepped.failed > 0 {
            m.failures
                .get_or_create(&labels)
                .inc_by(u64::from(stepped.failed));
        }
    }

    /// Sets MetricsAvailable; returns the Event to publish when data just went missing.
    fn metrics_condition(
        &mut self,
        outcome: &BrokerOutcome,
        readings: &PolicyReadings,
    ) -> Option<String> {
        let was = status::is_true(&self.status, kind::METRICS_AVAILABLE);
        let errors = if readings.errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", readings.errors.join("; "))
        };
        let (value, reason, message) = match &outcome.availability {
            Availability::All => (
                true,
                "MetricsFresh",
                "every metric has fresh data".to_string(),
            ),
            Availability::Partial(p) => (
                false,
                "MetricsPartial",
                format!(
                    "scale-down is held; missing or partial: {}{errors}",
                    p.join("; ")
                ),
            ),
            Availability::Unavailable(p) => (
                false,
                "MetricsUnavailable",
                format!("replicas hold; no usable metric: {}{errors}", p.join("; ")),
            ),
            Availability::NotEvaluated => (false, "NotEvaluated", "not evaluated".to_string()),
        };
        let unknown: Vec<&str> = outcome
            .metrics
            .iter()
            .zip(count_unknown(readings, outcome.metrics.len()))
            .filter(|(m, unknown)| *unknown && m.value.is_some())
            .map(|(m, _)| m.name.as_str())
            .collect();
        let message = if unknown.is_empty() {
            message
        } else {
            format!(
                "{message}; broker count unknown for {} (no pod label in the answer: a missing \
                 broker is not seen; group the query with sum by (pod))",
                unknown.join(", ")
            )
        };
        self.condition(kind::METRICS_AVAILABLE, value, reason, &message);
        self.gauges(|g| g.metrics_available = Some(i64::from(value)));
        if let Availability::Unavailable(_) = &outcome.availability {
            // Without any usable metric the policy cannot scale: not Ready, and why.
            let why = if readings.errors.is_empty() {
                "NoData"
            } else {
                "SourceUnavailable"
            };
            self.not_ready.push((why, message.clone()));
        }
        // Data that was never there is a Ready=False reason with its own Event (NoData); this
        // Event marks data going away.
        (was && !value).then_some(message)
    }

    /// Carries out a changing decision unless dry-run, a safety clamp or a rate limit stops it;
    /// records it in the status log, as an Event and as a metric either way. Returns whether
    /// the cluster was changed.
    async fn carry_out<F, Fut>(
        &mut self,
        policy: &Policy,
        decision: &Decision,
        verdict: Verdict,
        act: F,
    ) -> Result<bool, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), actuate::ActuateError>>,
    {
        let action = decision.action.to_string();
        let reason = decision.reason();
        let span = span(decision);
        let (result, carried) = if decision.dry_run {
            if status::log_decision(&mut self.status, decision, &action, self.now) {
                self.event(
                    false,
                    &format!("DryRun{action}"),
                    &action,
                    format!("{span}: dry run, not carried out: {reason}"),
                )
                .await;
            }
            ("dry_run", false)
        } else if let Verdict::Unsafe(why) = verdict {
            let mut refused = decision.clone();
            refused
                .reasons
                .push(format!("refused by safety check: {why}"));
            status::log_decision(
                &mut self.status,
                &refused,
                &format!("Refused{action}"),
                self.now,
            );
            self.event(
                true,
                "UnsafeActionRefused",
                &action,
                format!("{span}: {}", refused.reason()),
            )
            .await;
            ("unsafe", false)
        } else if let Verdict::RateLimited(why) | Verdict::Unsafe(why) =
            self.ctx
                .admit(&self.key.to_string(), policy.rate_limit, self.now)
        {
            let mut dropped = decision.clone();
            dropped.reasons.push(format!("dropped: {why}"));
            status::log_decision(
                &mut self.status,
                &dropped,
                &format!("Dropped{action}"),
                self.now,
            );
            self.event(
                true,
                "ActionDropped",
                &action,
                format!("{span} not carried out: {why}"),
            )
            .await;
            self.rate_limited = Some(why);
            ("rate_limited", false)
        } else {
            // Act once: confirm leadership from the Lease, then record the action (decision and
            // its time) in the status before the call, with a write that fails if anyone else
            // wrote since. A crash after the call leaves it recorded; a deposed leader or one
            // holding a stale status changes nothing.
            let what = format!("{action} {}", decision.target);
            if !self.ctx.leadership.confirm().await {
                return Err(actuate::ActuateError::NotLeader { what }.into());
            }
            let before = self.status.clone();
            status::log_decision(&mut self.status, decision, &action, self.now);
            let marked = status::mark_action(&mut self.status, decision, self.now);
            if let Err(e) = self.write().await {
                self.status = before;
                return Err(e);
            }
            let outcome = if self.ctx.leadership.holds_or_confirm().await {
                act().await
            } else {
                Err(actuate::ActuateError::NotLeader { what })
            };
            if outcome.is_err() {
                self.status = before;
            } else if let Some(made) = &marked {
                // Settled here: only a process that stops before its next write leaves it.
                status::settle(&mut self.status, made);
            }
            match outcome {
                Ok(()) => {
                    let done = done_reason(&action);
                    self.event(false, done, &action, format!("{span}: {reason}"))
                        .await;
                    ("applied", true)
                }
                Err(e) => {
                    let mut failed = decision.clone();
                    failed.reasons.push(format!("failed: {e}"));
                    status::log_decision(
                        &mut self.status,
                        &failed,
                        &format!("Failed{action}"),
                        self.now,
                    );
                    self.event(true, "ActionFailed", &action, format!("{span}: {e}"))
                        .await;
                    self.count_decision(&action, "failed");
                    return Err(e.into());
                }
            }
        };
        self.count_decision(&action, result);
        Ok(carried)
    }

    fn count_decision(&self, action: &str, result: &str) {
        self.ctx
            .metrics
            .count_decision(&self.namespace, &self.name, action, result);
    }

    fn export_brokers(
        &self,
        brokers: &policy::BrokerPolicy,
        outcome: &BrokerOutcome,
        replicas: u32,
    ) {
        let m = &self.ctx.metrics;
        for e in &outcome.metrics {
            let g = MetricGauges {
                value: e.value,
                target: e.target,
                proposed_replicas: e.proposed_replicas.map(i64::from),
                ratio: e.ratio,
            };
            m.set_metric(&self.namespace, &self.name, &e.name, g);
        }
        self.gauges(|g| {
            g.current_replicas = Some(i64::from(replicas));
            g.desired_replicas = Some(i64::from(outcome.desired));
            g.min_replicas = Some(i64::from(brokers.min_replicas));
            g.max_replicas = Some(i64::from(brokers.max_replicas));
            g.scaling_limited = Some(i64::from(outcome.limited.is_some()));
        });
    }

    async fn bookies(
        &mut self,
        policy: &Policy,
        bookies: &policy::BookiePolicy,
        readings: &PolicyReadings,
    ) -> Result<(), Error> {
        let stores = super::observe::Stores {
            statefulsets: &self.ctx.statefulsets,
            claims: &self.ctx.claims,
            classes: &self.ctx.classes,
        };
        let claims =
            super::observe::claims(&self.ctx.client, &stores, &self.namespace, bookies).await?;
        self.claims_matched(bookies, &claims, readings);
        self.settle_claims().await?;
        let previous: Vec<VolumeStatus> = self.status.bookies.clone().unwrap_or_default().volumes;
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let flags = Flags {
            dry_run: policy.dry_run,
            suspend: false,
        };
        let rivals = self
            .ctx
            .index
            .read()
            .map(|i| i.rivals(&self.key, &bookies.stateful_set, false))
            .unwrap_or_default();
        if !rivals.is_empty() {
            let names: Vec<String> = rivals.iter().map(|k| k.name.clone()).collect();
            self.conflict = Some((
                conflict::reason::ANOTHER_POLICY,
                format!(
                    "policies {} also grow the claims of statefulset/{}: none of them acts \
                     until only one is left (delete or suspend the others)",
                    names.join(", "),
                    bookies.stateful_set
                ),
            ));
        }
        let mut volumes = Vec::new();
        let mut failures = Vec::new();
        for claim in claims {
            let mut state = claim.state;
            let before = previous.iter().find(|v| v.claim == state.name);
            state.usage = readings.claims.get(&state.name).and_then(|r| r.sample);
            state.last_expand = before
                .and_then(|v| v.last_expand_time.as_ref())
                .map(|t| t.0);
            let outcome = decide_claim(
                bookies,
                flags,
                policy.source.max_staleness,
                &state,
                self.now,
            );
            let mut message = outcome.decision.reason();
            if let (VolumeState::Blocked, Some(p)) = (outcome.state, &claim.storage_class_problem) {
                message.push_str(&format!(" ({p})"));
            }
            let mut state_text = outcome.state.as_str();
            let mut last_expand = state.last_expand;
            if outcome.decision.is_change() && rivals.is_empty() {
                let verdict = guard::check_claim(bookies, &outcome.decision);
                let name = state.name.clone();
                let to = outcome.decision.to;
                match self
                    .carry_out(policy, &outcome.decision, verdict, || async {
                        actuate::expand(&api, &name, to).await
                    })
                    .await
                {
                    Ok(true) => {
                        last_expand = Some(self.now);
                        self.write_settled().await;
                    }
                    Ok(false) if outcome.decision.dry_run => {
                        message.push_str(" (dry run: not carried out)")
                    }
                    Ok(false) => {
                        state_text = "Held";
                        message.push_str(" (not carried out: see the decision log)");
                    }
                    Err(e) if must_stop(&e) => return Err(e),
                    Err(e) => {
                        state_text = "Held";
                        message.push_str(&format!(" (failed: {e})"));
                        failures.push(e);
                    }
                }
            }
            let blocked = matches!(
                outcome.state,
                VolumeState::Blocked | VolumeState::AtMaxSize | VolumeState::ResizeInfeasible
            );
            if blocked && before.map(|v| v.state.as_str()) != Some(state_text) {
                let reason = match outcome.state {
                    VolumeState::AtMaxSize => "ClaimAtMaxSize",
                    VolumeState::ResizeInfeasible => "ResizeInfeasible",
                    _ => "ExpansionBlocked",
                };
                self.event(true, reason, "Expand", format!("{}: {message}", state.name))
                    .await;
            }
            self.export_claim(bookies, &state, outcome.used_percent, blocked);
            volumes.push(VolumeStatus {
                claim: state.name.clone(),
                used_percent: outcome.used_percent,
                capacity: state.capacity.map(quantity::format_bytes),
                requested: Some(quantity::format_bytes(if last_expand == Some(self.now) {
                    outcome.decision.to
                } else {
                    state.requested
                })),
                state: state_text.to_string(),
                message: Some(crate::policy::bounded(&message, status::MESSAGE_MAX)),
                last_expand_time: last_expand.map(Time),
                in_flight: None,
            });
        }
        self.status.bookies = Some(BookieStatus { volumes });
        match failures.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Notes, as a reason the policy is not Ready, named templates that match no claim and
    /// claims of which no usage was ever read.
    fn claims_matched(
        &mut self,
        bookies: &policy::BookiePolicy,
        claims: &[super::observe::Claim],
        readings: &PolicyReadings,
    ) {
        let sts = &bookies.stateful_set;
        let unmatched: Vec<&str> = bookies
            .templates
            .iter()
            .filter(|t| {
                let prefix = format!("{t}-{sts}-");
                !claims.iter().any(|c| c.state.name.starts_with(&prefix))
            })
            .map(String::as_str)
            .collect();
        if !unmatched.is_empty() || claims.is_empty() {
            let found: Vec<&str> = claims.iter().map(|c| c.state.name.as_str()).collect();
            let message = if unmatched.is_empty() {
                format!(
                    "statefulset/{sts} has no claims to watch: it has no volumeClaimTemplates, or \
                     none of its claims exists"
                )
            } else {
                format!(
                    "volumeClaimTemplates [{}] match no claim of statefulset/{sts} (claims are \
                     named <template>-{sts}-<ordinal>; found: [{}])",
                    unmatched.join(", "),
                    found.join(", ")
                )
            };
            self.not_ready.push(("ClaimsNotFound", message));
            return;
        }
        let no_usage = claims.iter().all(|c| {
            readings
                .claims
                .get(&c.state.name)
                .and_then(|r| r.sample)
                .is_none()
        });
        if no_usage {
            let (reason, why) = if readings.errors.is_empty() {
                ("NoData", "the source has no usage for them".to_string())
            } else {
                ("SourceUnavailable", readings.errors.join("; "))
            };
            self.not_ready.push((
                reason,
                format!("no claim of statefulset/{sts} has usage data: {why}"),
            ));
        }
    }

    fn export_claim(
        &self,
        bookies: &policy::BookiePolicy,
        state: &crate::decide::ClaimState,
        used: Option<f64>,
        blocked: bool,
    ) {
        let g = ClaimGauges {
            used_percent: used,
            capacity_bytes: state.capacity.unwrap_or(state.requested) as f64,
            max_size_bytes: bookies.max_size as f64,
            expand_threshold_percent: bookies.expand_at_used_percent,
            blocked: i64::from(blocked),
        };
        self.ctx
            .metrics
            .set_claim(&self.namespace, &self.name, &state.name, g);
    }
}
