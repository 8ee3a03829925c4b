//! The controller: watches ScalingPolicies (and the StatefulSets and claims they target),
//! evaluates each every `spec.interval` and as soon as its source's round finds new values, and
//! runs only while it holds the leader Lease. `docs/design.md` shows how the parts fit.

mod conflict;
pub mod index;
pub mod leader;
mod observe;
pub mod pages;
mod rebalance;
mod reconcile;
pub mod rounds;
pub mod status;
pub mod targets;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use observe::{Claim, PORT_ANNOTATION, claim_from, source_key};

use crate::actuate::ActuateError;
use crate::api::{ScalingPolicy, ScalingPolicyStatus};
use crate::guard::{Guard, Verdict};
use crate::policy::{self, RateLimit};
use crate::recorder::Recorder;
use crate::telemetry::{self, Endpoints, Metrics};
use index::{Index, PolicyKey, Upsert};
use leader::Leadership;
use rounds::Rounds;
use targets::Targets;

/// Reconciles running at once: bounds the requests in flight towards the API server.
const CONCURRENCY: u16 = 16;

/// Failures of the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error(transparent)]
    Actuate(#[from] ActuateError),
    /// A ScalingPolicy without a namespace (never happens for a namespaced kind).
    #[error("the ScalingPolicy has no namespace")]
    NoNamespace,
    /// The kubeconfig or in-cluster config could not be loaded.
    #[error("cannot load the Kubernetes client configuration: {0}")]
    Config(String),
    /// The metrics endpoint could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(String),
}

impl Error {
    /// Stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Actuate(e) => e.label(),
            Error::NoNamespace => "no_namespace",
            Error::Config(_) => "config",
            Error::Listen { .. } => "listen",
            Error::Lease(_) => "lease",
        }
    }
}

/// Settings of `pulsar-autoscaler run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kubeconfig file; in-cluster or default config when absent.
    pub kubeconfig: Option<PathBuf>,
    /// Watch one namespace instead of all.
    pub namespace: Option<String>,
    /// Label selector on ScalingPolicies: this process's shard of the fleet.
    pub policy_selector: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub metrics_addr: SocketAddr,
    /// Act only while holding the Lease.
    pub leader_election: bool,
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace.
    pub lease_namespace: String,
    /// This process's identity in the Lease.
    pub identity: String,
    /// Lease duration in seconds.
    pub lease_seconds: u64,
    /// Controller-wide limit on actions, over all policies.
    pub global_rate_limit: Option<RateLimit>,
    /// What the operator lets policies do (allowed sources, insecure TLS).
    pub admission: policy::Admission,
}

/// What the controller remembers of one policy between evaluations.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    /// The object's uid: a policy created again under the same name starts afresh.
    uid: Option<String>,
    /// The status as of the last evaluation, written or not.
    current: ScalingPolicyStatus,
    /// What the status last written (or found on the object at first sight) showed.
    written: Option<status::Written>,
    /// When it was written.
    written_at: Option<std::time::Instant>,
    /// A `/scale` change not yet seen by the StatefulSet watch: `(from, to, when)`.
    pending_scale: Option<(u32, u32, std::time::Instant)>,
    /// The generation whose series were declared.
    declared: Option<i64>,
    /// The policy's resourceVersion after the last status read or write: the next write must
    /// match it, so a write that missed someone else's is refused instead of erasing it.
    resource_version: Option<String>,
    /// A change of replicas made elsewhere: when, what `Conflict` says, and for how long.
    external: Option<(Timestamp, String, Duration)>,
}

/// Shared state of every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event publisher: one Event per distinct note.
    pub recorder: Recorder,
    /// Exported series.
    pub metrics: Arc<Metrics>,
    guard: Mutex<Guard>,
    index: Arc<RwLock<Index>>,
    rounds: Arc<Rounds>,
    statefulsets: Arc<Targets>,
    claims: Store<PersistentVolumeClaim>,
    classes: observe::ClassCache,
    /// Boxed: a `PolicyState` is almost 1 KiB, and a table of them inline would reserve that
    /// for every empty slot too.
    states: Mutex<HashMap<PolicyKey, Box<PolicyState>>>,
    /// Keys seen during a relist, to drop the policies deleted while the watch was down.
    relist: Mutex<Option<HashSet<PolicyKey>>>,
    /// What the operator lets policies do (allowed sources, insecure TLS).
    admission: policy::Admission,
    /// Checked right before every call that changes the cluster.
    leadership: Arc<Leadership>,
}

impl Context {
    fn guard_knows(&self, policy: &str) -> bool {
        self.guard.lock().map(|g| g.knows(policy)).unwrap_or(false)
    }

    fn seed_guard(&self, policy: &str, limit: RateLimit, past: &[Timestamp]) {
        if let Ok(mut g) = self.guard.lock() {
            g.seed(policy, limit, past);
        }
    }

    fn admit(&self, policy: &str, limit: RateLimit, now: Timestamp) -> Verdict {
        match self.guard.lock() {
            Ok(mut g) => g.admit(policy, limit, now),
            Err(_) => Verdict::Unsafe("rate limiter state is poisoned".into()),
        }
    }

    /// The checked settings of a policy for its current generation (checked now if the watch
    /// has not delivered it to the index yet).
    fn checked(&self, sp: &ScalingPolicy) -> Option<Arc<index::Checked>> {
        let key = PolicyKey::of(sp);
        let known = self.index.read().ok()?.get(&key);
        match known {
            Some(c) if c.generation == sp.metadata.generation && c.uid == sp.metadata.uid => {
                Some(c)
            }
            _ => {
                self.admit_policy(sp);
                self.index.read().ok()?.get(&key)
            }
        }
    }

    /// Indexes a policy as the watch delivered it and starts its source's round if needed.
    fn admit_policy(&self, sp: &ScalingPolicy) {
        let upsert = match self.index.write() {
            Ok(mut i) => i.upsert(sp),
            Err(_) => return,
        };
        if let Upsert::Checked {
            joined: Some(source),
        } = upsert
        {
            self.rounds.joined(&source);
        }
    }

    /// Drops a policy's rate-limiter bucket so that it is seeded again from the status.
    fn forget_bucket(&self, policy: &str) {
        if let Ok(mut g) = self.guard.lock() {
            g.forget(policy);
        }
    }

    /// Everything the controller holds for a deleted policy goes: index entry, memory,
    /// readings, rate-limiter bucket, exported series.
    fn forget(&self, key: &PolicyKey) {
        if let Ok(mut i) = self.index.write() {
            i.remove(key);
        }
        if let Ok(mut s) = self.states.lock() {
            s.remove(key);
        }
        self.rounds.forget(key);
        if let Ok(mut g) = self.guard.lock() {
            g.forget(&key.to_string());
        }
        self.metrics.forget_policy(&key.namespace, &key.name);
    }

    /// Seeds a policy's memory from its status the first time this process sees it (the store
    /// keeps no status: the in-process copy is newer).
    fn seed_state(&self, sp: &ScalingPolicy) {
        let Ok(mut states) = self.states.lock() else {
            return;
        };
        let key = PolicyKey::of(sp);
        if states.get(&key).is_some_and(|s| s.uid == sp.metadata.uid) {
            return;
        }
        states.insert(
            key,
            Box::new(PolicyState {
                uid: sp.metadata.uid.clone(),
                current: status::seed(sp.status.as_deref(), Timestamp::now()),
                written: sp.status.as_deref().map(status::Written::of),
                resource_version: sp.metadata.resource_version.clone(),
                ..PolicyState::default()
            }),
        );
    }

    /// Keeps the index in step with the policy watch, including deletions and relists.
    fn on_policy_event(&self, event: &watcher::Event<ScalingPolicy>) {
        match event {
            watcher::Event::Apply(sp) => {
                self.seed_state(sp);
                self.admit_policy(sp);
            }
            watcher::Event::Delete(sp) => self.forget(&PolicyKey::of(sp)),
            watcher::Event::Init => {
                if let Ok(mut r) = self.relist.lock() {
                    *r = Some(HashSet::new());
                }
            }
            watcher::Event::InitApply(sp) => {
                self.seed_state(sp);
                self.admit_policy(sp);
                if let Ok(mut r) = self.relist.lock()
                    && let Some(seen) = r.as_mut()
                {
                    seen.insert(PolicyKey::of(sp));
                }
            }
            watcher::Event::InitDone => {
                let seen = self.relist.lock().ok().and_then(|mut r| r.take());
                let known = self.index.read().map(|i| i.keys()).unwrap_or_default();
                if let Some(seen) = seen {
                    for key in known.iter().filter(|k| !seen.contains(*k)) {
                        self.forget(key);
                    }
                }
            }
        }
    }

    /// Number of policies the controller holds memory for (index entries and states).
    pub fn held(&self) -> (usize, usize) {
        (
            self.index.read().map(|i| i.len()).unwrap_or(0),
            self.states.lock().map(|s| s.len()).unwrap_or(0),
        )
    }
}

fn error_policy(sp: Arc<ScalingPolicy>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!(policy = %sp.name_any(), kind = error.label(), error = %telemetry::chain(error), "reconcile failed");
    Requeue::requeue(Duration::from_secs(30))
}

async fn client(settings: &Settings) -> Result<Client, Error> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| Error::Config(e.to_string()))
}

/// Drops what the stored policy is never read for: its status (the in-process memory is newer,
/// seeded from the status before this runs), managed fields and annotations.
fn strip_policy(sp: &mut ScalingPolicy) {
    sp.status = None;
    sp.metadata.managed_fields = None;
    sp.metadata.annotations = None;
}

/// Drops what the controller never reads from a watched claim.
fn strip_claim(pvc: &mut PersistentVolumeClaim) {
    pvc.metadata.managed_fields = None;
    pvc.metadata.annotations = None;
    pvc.metadata.labels = None;
}

/// Runs the controller until `shutdown` resolves.
async fn control(
    client: Client,
    settings: &Settings,
    metrics: Arc<Metrics>,
    leadership: Arc<Leadership>,
    shutdown: watch::Receiver<bool>,
) {
    let scoped = |c: Client| -> (
        Api<ScalingPolicy>,
        Api<StatefulSet>,
        Api<PersistentVolumeClaim>,
    ) {
        match &settings.namespace {
            Some(ns) => (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c, ns),
            ),
            None => (Api::all(c.clone()), Api::all(c.clone()), Api::all(c)),
        }
    };
    let (policies, statefulsets, claims) = scoped(client.clone());
    let index = Arc::new(RwLock::new(Index::new(settings.admission.clone())));
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let rounds = Arc::new(Rounds::new(
        client.clone(),
        index.clone(),
        metrics.clone(),
        wake_tx,
    ));
    // StatefulSets are kept as compact records (replicas, claim template names), not objects.
    let targets = Arc::new(Targets::default());
    let for_targets = targets.clone();
    let sts_stream = watcher(statefulsets, watcher::Config::default().any_semantic())
        .default_backoff()
        .map_ok(move |event| futures::stream::iter(for_targets.apply(event).into_iter().map(Ok)))
        .try_flatten();
    let (pvc_reader, pvc_writer) = reflector::store();
    let pvc_stream = watcher(claims, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(strip_claim)
        .reflect(pvc_writer)
        .touched_objects();
    let reporter = Reporter {
        controller: "pulsar-autoscaler".into(),
        instance: Some(settings.identity.clone()),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        guard: Mutex::new(Guard::new(settings.global_rate_limit)),
        index: index.clone(),
        rounds,
        statefulsets: targets,
        claims: pvc_reader,
        classes: Default::default(),
        states: Mutex::new(HashMap::new()),
        relist: Mutex::new(None),
        admission: settings.admission.clone(),
        leadership,
    });
    let (reader, writer) = reflector::store();
    let for_index = ctx.clone();
    let mut policy_watch = watcher::Config::default();
    if let Some(selector) = &settings.policy_selector {
        policy_watch = policy_watch.labels(selector);
    }
    let stream = watcher(policies, policy_watch)
        .default_backoff()
        .inspect_ok(move |event| for_index.on_policy_event(event))
        .modify(strip_policy)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let (for_sts, for_pvc) = (index.clone(), index);
    let mut stop = shutdown.clone();
    Controller::for_stream(stream, reader)
        .watches_stream(sts_stream, move |sts: StatefulSet| {
            let (ns, name) = (sts.namespace().unwrap_or_default(), sts.name_any());
            for_sts
                .read()
                .map(|i| i.for_statefulset(&ns, &name))
                .unwrap_or_default()
                .into_iter()
                .map(|k| k.object_ref())
        })
        .watches_stream(pvc_stream, move |pvc: PersistentVolumeClaim| {
            let (ns, name) = (pvc.namespace().unwrap_or_default(), pvc.name_any());
            for_pvc
                .read()
                .map(|i| i.for_claim(&ns, &name))
                .unwrap_or_default()
                .into_iter()
                .map(|k| k.object_ref())
        })
        .reconcile_on(wake_rx)
        .with_config(ControllerConfig::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// `pulsar-autoscaler run`: serves health and metrics, and controls while leader.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let client = client(&settings).await?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let listener = telemetry::bind(settings.metrics_addr)
        .await
        .map_err(|source| Error::Listen {
            addr: settings.metrics_addr,
            source,
        })?;
    tracing::info!(addr = %settings.metrics_addr, "serving /metrics, /healthz, /readyz");
    let endpoints = Endpoints {
        registry: Arc::new(registry),
        ready: ready.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = telemetry::serve(listener, endpoints).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    ready.store(true, Ordering::Relaxed);

    if !settings.leader_election {
        metrics.leader.set(1);
        control(
            client,
            &settings,
            metrics,
            Arc::new(Leadership::always()),
            stop_rx,
        )
        .await;
        return Ok(());
    }
    let manager =
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
            .with_namespace(&settings.lease_namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.lease_seconds)
            .with_grace((settings.lease_seconds / 3).max(1))
            .with_field_manager(crate::api::FIELD_MANAGER)
            .build()
            .await
            .map_err(|e| Error::Lease(e.to_string()))?;
    let (mut leading, task) = manager.watch().await;
    let leadership = Arc::new(Leadership::lease(
        client.clone(),
        &settings.lease_namespace,
        &settings.lease_name,
        &settings.identity,
        Duration::from_secs(settings.lease_seconds),
        Duration::from_secs((settings.lease_seconds / 3).max(1)),
    ));
    let mut stop = stop_rx.clone();
    loop {
        tracing::info!(identity = %settings.identity, "waiting for the leader lease");
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
        }
        // The manager may still say "leading" after its renewals failed: lead only once the
        // Lease itself shows a live renewal by this process.
        if !leadership.confirm().await {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(CONFIRM_EVERY) => continue,
            }
        }
        tracing::info!(identity = %settings.identity, "leading");
        metrics.leader.set(1);
        // Stop controlling as soon as the lease is lost or shutdown is asked for.
        let (lost_tx, lost_rx) = watch::channel(false);
        let mut watch_leading = leading.clone();
        let mut watch_stop = stop_rx.clone();
        let renewals = leadership.clone();
        let shown = metrics.clone();
        let watcher = tokio::spawn(async move {
            tokio::select! {
                _ = watch_leading.wait_for(|l| !*l) => {},
                _ = watch_stop.wait_for(|s| *s) => {},
                _ = lapsed(&renewals) => {},
            }
            shown.leader.set(0);
            let _ = lost_tx.send(true);
        });
        let mut stopping = lost_rx.clone();
        let controlling = control(
            client.clone(),
            &settings,
            metrics.clone(),
            leadership.clone(),
            lost_rx,
        );
        // Reconciles stuck on an unreachable API server must not keep the old term alive:
        // they change nothing (leadership is checked before every mutating call), and after a
        // grace period they are dropped.
        tokio::select! {
            _ = controlling => {},
            _ = async {
                let _ = stopping.wait_for(|l| *l).await;
                tokio::time::sleep(STOP_GRACE).await;
            } => tracing::warn!("reconciles did not finish after the lease was lost: dropped"),
        }
        watcher.abort();
        metrics.leader.set(0);
        if *stop_rx.borrow() {
            break;
        }
        tracing::warn!(identity = %settings.identity, "lost the leader lease");
    }
    // Closing the channel makes the manager release the Lease so a standby takes over at once;
    // wait for that, but not forever.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the leader lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "lease task failed"),
        Err(_) => tracing::warn!("releasing the leader lease timed out"),
    }
    Ok(())
}

/// How long reconciles may take to finish once leadership is lost.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often a leader re-reads the Lease to prove it still leads.
const CONFIRM_EVERY: Duration = Duration::from_millis(500);

/// Resolves once the Lease no longer proves this process the leader (renewals failed or
/// another holds it): the deadline is watched every 100 ms, the Lease read every
/// [`CONFIRM_EVERY`] and whenever the deadline has passed.
async fn lapsed(leadership: &Leadership) {
    let mut read_at = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if leadership.holds() && read_at.elapsed() < CONFIRM_EVERY {
            continue;
        }
        read_at = std::time::Instant::now();
        if !leadership.confirm().await {
            tracing::warn!("the leader Lease was not renewed in time: stepping down");
            return;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c().map(|_| ());
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
