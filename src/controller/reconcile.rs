//! One evaluation of one policy: check, observe, decide, guard, act, record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};

use super::status::{self, kind};
use super::{Context, Error};
use crate::actuate;
use crate::api::{
    BookieStatus, BrokerStatus, MetricStatus, ScalingPolicy, ScalingPolicyStatus, VolumeStatus,
};
use crate::decide::forecast::{DEFAULT_HORIZON, NoHistory};
use crate::decide::{
    Action, Ahead, Availability, BrokerInputs, BrokerMemory, BrokerOutcome, Decision, Flags,
    VolumeState, decide_brokers_with, decide_claim,
};
use crate::guard::{self, Verdict};
use crate::metrics::PolicyReadings;
use crate::policy::{self, Policy};
use crate::quantity;
use crate::telemetry::{
    ClaimLabels, DecisionLabels, ErrorLabels, MetricLabels, PolicyLabels, ResultLabels,
};

/// Requeue of a policy that cannot be evaluated until its spec changes.
const INVALID_RETRY: Duration = Duration::from_secs(300);

/// Everything one evaluation needs to carry with it.
struct Run<'a> {
    ctx: &'a Context,
    sp: &'a ScalingPolicy,
    namespace: String,
    name: String,
    generation: Option<i64>,
    now: Timestamp,
    status: ScalingPolicyStatus,
    rate_limited: Option<String>,
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

async fn evaluate(sp: &ScalingPolicy, ctx: &Context) -> Result<Requeue, Error> {
    let namespace = sp.namespace().ok_or(Error::NoNamespace)?;
    let mut run = Run {
        ctx,
        sp,
        name: sp.name_any(),
        namespace,
        generation: sp.meta().generation,
        now: Timestamp::now(),
        status: sp.status.clone().unwrap_or_default(),
        rate_limited: None,
    };
    let spec_changed = run.status.observed_generation != run.generation;
    run.status.observed_generation = run.generation;

    let object = serde_json::to_value(sp).unwrap_or_default();
    let policy = match policy::check_object(&object) {
        Ok((_, p)) => p,
        Err(problems) => {
            let message = problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            let was_invalid = status::is_true(&run.status, kind::INVALID);
            run.condition(kind::INVALID, true, "SpecInvalid", &message);
            run.condition(
                kind::READY,
                false,
                "SpecInvalid",
                "fix the spec; see the Invalid condition",
            );
            if !was_invalid {
                run.event(true, "InvalidSpec", "Validate", message).await;
            }
            run.write_status().await?;
            return Ok(Requeue::requeue(INVALID_RETRY));
        }
    };
    if let Err(refusal) = ctx.admission.check(&policy.source) {
        // Refused by the operator's settings: the source is never called.
        let was_invalid = status::is_true(&run.status, kind::INVALID);
        run.condition(kind::INVALID, true, refusal.reason, &refusal.message);
        run.condition(
            kind::READY,
            false,
            refusal.reason,
            "the controller refuses this policy; see the Invalid condition",
        );
        if !was_invalid {
            run.event(true, refusal.reason, "Validate", refusal.message)
                .await;
        }
        run.write_status().await?;
        return Ok(Requeue::requeue(INVALID_RETRY));
    }
    run.condition(
        kind::INVALID,
        false,
        "SpecValid",
        "the spec passed every check",
    );
    run.insecure_tls(&policy).await;
    run.condition(
        kind::DRY_RUN,
        policy.dry_run,
        if policy.dry_run { "DryRun" } else { "Live" },
        dry_run_text(&policy),
    );
    if policy.suspend {
        run.condition(
            kind::SUSPENDED,
            true,
            "Suspended",
            "spec.suspend is true: nothing is evaluated or changed",
        );
        run.condition(kind::READY, false, "Suspended", "spec.suspend is true");
        run.write_status().await?;
        return Ok(Requeue::requeue(policy.interval));
    }
    run.condition(
        kind::SUSPENDED,
        false,
        "Active",
        "the policy is evaluated every interval",
    );
    let mut actions = Vec::new();
    if policy.brokers.is_some() {
        actions.extend(["ScaleUp", "ScaleDown"]);
    }
    if policy.bookies.is_some() {
        actions.push("Expand");
    }
    ctx.metrics
        .declare_decisions(&run.namespace, &run.name, &actions);
    if !ctx.guard_knows(&run.key()) {
        let past = status::recent_actions(&run.status, run.now);
        ctx.seed_guard(&run.key(), policy.rate_limit, &past);
    }

    if spec_changed {
        // Secrets or source settings may have changed with the spec: build the client anew.
        ctx.sampler.forget(&run.namespace, &policy.source).await;
    }
    let readings = run.readings(&policy).await;
    let mut problems = Vec::new();
    if let Some(brokers) = &policy.brokers
        && let Err(e) = run.brokers(&policy, brokers, &readings).await
    {
        problems.push(e);
    }
    if let Some(bookies) = &policy.bookies
        && let Err(e) = run.bookies(&policy, bookies, &readings).await
    {
        problems.push(e);
    }
    match &run.rate_limited {
        Some(why) => run.condition(kind::RATE_LIMITED, true, "ActionDropped", &why.clone()),
        None => run.condition(
            kind::RATE_LIMITED,
            false,
            "WithinLimit",
            "no action was dropped in the last evaluation",
        ),
    }
    if problems.is_empty() {
        run.condition(kind::READY, true, "Evaluated", "the policy was evaluated");
    } else {
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        for p in &problems {
            tracing::warn!(policy = %run.name, namespace = %run.namespace, error = %p, "evaluation failed");
        }
        run.condition(kind::READY, false, "TargetUnavailable", &message);
    }
    run.write_status().await?;
    Ok(Requeue::requeue(policy.interval))
}

/// `3 → 6` for replicas, `50.0 GiB → 60.0 GiB` for claims.
fn span(decision: &Decision) -> String {
    if decision.action == Action::Expand {
        let bytes = |b: u64| crate::decide::units::bytes(b as f64);
        format!("{} → {}", bytes(decision.from), bytes(decision.to))
    } else {
        format!("{} → {}", decision.from, decision.to)
    }
}

fn dry_run_text(policy: &Policy) -> &'static str {
    if policy.dry_run {
        "spec.dryRun is true: decisions are recorded, nothing is changed"
    } else {
        "changes are carried out"
    }
}

impl Run<'_> {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn labels(&self) -> PolicyLabels {
        PolicyLabels {
            namespace: self.namespace.clone(),
            policy: self.name.clone(),
        }
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

    /// Warns, as a condition and one Event, while the source's certificate is not checked.
    async fn insecure_tls(&mut self, policy: &Policy) {
        let insecure = policy.source.insecure_skip_verify();
        let was = status::is_true(&self.status, kind::INSECURE_TLS);
        if insecure {
            let message = "spec.metricsSource.tls.insecureSkipVerify is true: the server's \
                           certificate is not checked, so an impostor could read the queries \
                           and any credentials sent with them; give its CA in tls.caSecretRef";
            self.condition(kind::INSECURE_TLS, true, "InsecureSkipVerify", message);
            if !was {
                self.event(true, "InsecureSkipVerify", "Validate", message.into())
                    .await;
            }
        } else if status::has(&self.status, kind::INSECURE_TLS) {
            self.condition(
                kind::INSECURE_TLS,
                false,
                "CertificateVerified",
                "the source's certificate is checked",
            );
        }
    }

    async fn write_status(&self) -> Result<(), Error> {
        let api: Api<ScalingPolicy> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        actuate::apply_status(&api, &self.name, &self.status)
            .await
            .map_err(Error::from)
    }

    /// Readings of this policy from its source's grouped round; a source failure becomes
    /// missing data for every metric, never a number.
    async fn readings(&mut self, policy: &Policy) -> PolicyReadings {
        let group = self.ctx.group_of(&self.namespace, policy);
        match self
            .ctx
            .sampler
            .readings((&self.namespace, &self.name), policy, &group, self.now)
            .await
        {
            Ok(r) => {
                for e in &r.errors {
                    self.count_source_error("query");
                    tracing::debug!(policy = %self.name, error = %e, "metric source problem");
                }
                r
            }
            Err(e) => {
                self.count_source_error(e.label());
                let mut r = PolicyReadings::default();
                r.errors.push(e.to_string());
                r
            }
        }
    }

    fn count_source_error(&self, kind: &str) {
        let labels = ErrorLabels {
            namespace: self.namespace.clone(),
            policy: self.name.clone(),
            kind: kind.into(),
        };
        self.ctx.metrics.source_errors.get_or_create(&labels).inc();
    }

    async fn brokers(
        &mut self,
        policy: &Policy,
        brokers: &policy::BrokerPolicy,
        readings: &PolicyReadings,
    ) -> Result<(), Error> {
        let api: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let current = actuate::replicas(&api, &brokers.stateful_set).await?;
        let previous = self.status.brokers.clone().unwrap_or_default();
        let memory = BrokerMemory::from_status(&previous);
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
        let mut memory = outcome.memory.clone();
        let mut replicas_now = current;
        let decision = &outcome.decision;
        if decision.is_change() {
            let verdict = guard::check_brokers(brokers, decision);
            let stateful_set = brokers.stateful_set.clone();
            let carried = self
                .carry_out(policy, decision, verdict, || async {
                    actuate::scale(&api, &stateful_set, decision.to as u32).await
                })
                .await?;
            if carried {
                memory.note_action(decision.action, self.now);
                replicas_now = decision.to as u32;
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
                .map(|m| MetricStatus {
                    name: m.name.clone(),
                    value: m.value,
                    target: m.target,
                    proposed_replicas: m.proposed_replicas.map(|r| r as i32),
                    observed_at: m.observed_at.map(Time),
                    problem: m.problem.clone(),
                })
                .collect(),
            ..BrokerStatus::default()
        };
        memory.write_status(&mut status);
        self.status.brokers = Some(status);
        Ok(())
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
        self.condition(kind::METRICS_AVAILABLE, value, reason, &message);
        self.ctx
            .metrics
            .metrics_available
            .get_or_create(&self.labels())
            .set(i64::from(value));
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
                    format!(
                        "dry run, not carried out: {} → {}: {reason}",
                        decision.from, decision.to
                    ),
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
            self.event(true, "UnsafeActionRefused", &action, refused.reason())
                .await;
            ("unsafe", false)
        } else if let Verdict::RateLimited(why) | Verdict::Unsafe(why) =
            self.ctx.admit(&self.key(), policy.rate_limit, self.now)
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
            match act().await {
                Ok(()) => {
                    status::log_decision(&mut self.status, decision, &action, self.now);
                    let done = match decision.action {
                        Action::ScaleUp => "ScaledUp",
                        Action::ScaleDown => "ScaledDown",
                        _ => "Expanded",
                    };
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
                    self.event(true, "ActionFailed", &action, e.to_string())
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
        let labels = DecisionLabels {
            namespace: self.namespace.clone(),
            policy: self.name.clone(),
            action: action.into(),
            result: result.into(),
        };
        self.ctx.metrics.decisions.get_or_create(&labels).inc();
    }

    fn export_brokers(
        &self,
        brokers: &policy::BrokerPolicy,
        outcome: &BrokerOutcome,
        replicas: u32,
    ) {
        let m = &self.ctx.metrics;
        for e in &outcome.metrics {
            let labels = MetricLabels {
                namespace: self.namespace.clone(),
                policy: self.name.clone(),
                metric: e.name.clone(),
            };
            m.metric_target.get_or_create(&labels).set(e.target);
            match e.value {
                Some(v) => {
                    m.metric_value.get_or_create(&labels).set(v);
                }
                None => {
                    m.metric_value.remove(&labels);
                }
            }
            match e.ratio {
                Some(r) => {
                    m.metric_ratio.get_or_create(&labels).set(r);
                }
                None => {
                    m.metric_ratio.remove(&labels);
                }
            }
            match e.proposed_replicas {
                Some(r) => {
                    m.metric_proposed_replicas
                        .get_or_create(&labels)
                        .set(i64::from(r));
                }
                None => {
                    m.metric_proposed_replicas.remove(&labels);
                }
            }
        }
        let labels = self.labels();
        m.current_replicas
            .get_or_create(&labels)
            .set(i64::from(replicas));
        m.desired_replicas
            .get_or_create(&labels)
            .set(i64::from(outcome.desired));
        m.min_replicas
            .get_or_create(&labels)
            .set(i64::from(brokers.min_replicas));
        m.max_replicas
            .get_or_create(&labels)
            .set(i64::from(brokers.max_replicas));
        m.scaling_limited
            .get_or_create(&labels)
            .set(i64::from(outcome.limited.is_some()));
    }

    async fn bookies(
        &mut self,
        policy: &Policy,
        bookies: &policy::BookiePolicy,
        readings: &PolicyReadings,
    ) -> Result<(), Error> {
        let claims = super::observe::claims(&self.ctx.client, &self.namespace, bookies).await?;
        let previous: Vec<VolumeStatus> = self.status.bookies.clone().unwrap_or_default().volumes;
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let flags = Flags {
            dry_run: policy.dry_run,
            suspend: false,
        };
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
            if outcome.decision.is_change() {
                let verdict = guard::check_claim(bookies, &outcome.decision);
                let name = state.name.clone();
                let to = outcome.decision.to;
                match self
                    .carry_out(policy, &outcome.decision, verdict, || async {
                        actuate::expand(&api, &name, to).await
                    })
                    .await
                {
                    Ok(true) => last_expand = Some(self.now),
                    Ok(false) if outcome.decision.dry_run => {
                        message.push_str(" (dry run: not carried out)")
                    }
                    Ok(false) => {
                        state_text = "Held";
                        message.push_str(" (not carried out: see the decision log)");
                    }
                    Err(e) => {
                        state_text = "Held";
                        message.push_str(&format!(" (failed: {e})"));
                        failures.push(e);
                    }
                }
            }
            let blocked = matches!(outcome.state, VolumeState::Blocked | VolumeState::AtMaxSize);
            if blocked && before.map(|v| v.state.as_str()) != Some(state_text) {
                let reason = if outcome.state == VolumeState::AtMaxSize {
                    "ClaimAtMaxSize"
                } else {
                    "ExpansionBlocked"
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
            });
        }
        self.status.bookies = Some(BookieStatus { volumes });
        match failures.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn export_claim(
        &self,
        bookies: &policy::BookiePolicy,
        state: &crate::decide::ClaimState,
        used: Option<f64>,
        blocked: bool,
    ) {
        let m = &self.ctx.metrics;
        let labels = ClaimLabels {
            namespace: self.namespace.clone(),
            policy: self.name.clone(),
            claim: state.name.clone(),
        };
        match used {
            Some(u) => {
                m.claim_used_percent.get_or_create(&labels).set(u);
            }
            None => {
                m.claim_used_percent.remove(&labels);
            }
        }
        m.claim_capacity_bytes
            .get_or_create(&labels)
            .set(state.capacity.unwrap_or(state.requested) as f64);
        m.claim_max_size_bytes
            .get_or_create(&labels)
            .set(bookies.max_size as f64);
        m.claim_expand_threshold_percent
            .get_or_create(&labels)
            .set(bookies.expand_at_used_percent);
        m.claim_blocked
            .get_or_create(&labels)
            .set(i64::from(blocked));
    }
}
