//! The controller: watches ScalingPolicies (and the StatefulSets and claims they target),
//! evaluates each every `spec.interval`, and runs only while it holds the leader Lease.

mod observe;
mod reconcile;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use observe::{Claim, PORT_ANNOTATION, claim_from, source_key};

use crate::actuate::ActuateError;
use crate::api::ScalingPolicy;
use crate::guard::{Guard, Verdict};
use crate::metrics;
use crate::policy::{self, Policy, RateLimit};
use crate::telemetry::{self, Endpoints, Metrics};

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

/// Shared state of every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event publisher.
    pub recorder: Recorder,
    /// Exported series.
    pub metrics: Arc<Metrics>,
    guard: Mutex<Guard>,
    sampler: observe::Sampler,
    store: Store<ScalingPolicy>,
    admission: policy::Admission,
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

    /// Valid policies that share this policy's metrics source.
    fn group_of(&self, namespace: &str, policy: &Policy) -> Vec<(Arc<ScalingPolicy>, Policy)> {
        let key = source_key(namespace, &policy.source);
        self.store
            .state()
            .into_iter()
            .filter_map(|sp| {
                let value = serde_json::to_value(&*sp).ok()?;
                let (_, p) = policy::check_object(&value).ok()?;
                let ns = sp.namespace()?;
                // A policy the operator refuses never joins a round, even on a shared source.
                let admitted = self.admission.check(&p.source).is_ok();
                (admitted && !p.suspend && source_key(&ns, &p.source) == key).then_some((sp, p))
            })
            .collect()
    }
}

fn error_policy(sp: Arc<ScalingPolicy>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!(policy = %sp.name_any(), kind = error.label(), error = %error, "reconcile failed");
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

/// Policies that target a StatefulSet.
fn policies_for_statefulset(
    store: &Store<ScalingPolicy>,
    sts: &StatefulSet,
) -> Vec<ObjectRef<ScalingPolicy>> {
    let (ns, name) = (sts.namespace(), sts.name_any());
    store
        .state()
        .iter()
        .filter(|sp| sp.namespace() == ns)
        .filter(|sp| {
            sp.spec
                .brokers
                .as_ref()
                .is_some_and(|b| b.stateful_set == name)
                || sp
                    .spec
                    .bookies
                    .as_ref()
                    .is_some_and(|b| b.stateful_set == name)
        })
        .map(|sp| ObjectRef::from_obj(&**sp))
        .collect()
}

/// Policies whose bookie claims include a claim.
fn policies_for_claim(
    store: &Store<ScalingPolicy>,
    pvc: &PersistentVolumeClaim,
) -> Vec<ObjectRef<ScalingPolicy>> {
    let (ns, name) = (pvc.namespace(), pvc.name_any());
    store
        .state()
        .iter()
        .filter(|sp| sp.namespace() == ns)
        .filter(|sp| {
            sp.spec.bookies.as_ref().is_some_and(|b| {
                metrics::round::claim_of(&name, &b.stateful_set, &b.volume_claim_templates)
            })
        })
        .map(|sp| ObjectRef::from_obj(&**sp))
        .collect()
}

/// Runs the controller until `shutdown` resolves.
async fn control(
    client: Client,
    settings: &Settings,
    metrics: Arc<Metrics>,
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
    let (reader, writer) = reflector::store();
    let stream = watcher(policies, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let reporter = Reporter {
        controller: "pulsar-autoscaler".into(),
        instance: Some(settings.identity.clone()),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        guard: Mutex::new(Guard::new(settings.global_rate_limit)),
        sampler: observe::Sampler::new(client),
        store: reader.clone(),
        admission: settings.admission.clone(),
    });
    let (for_sts, for_pvc) = (reader.clone(), reader.clone());
    let mut stop = shutdown.clone();
    Controller::for_stream(stream, reader)
        .watches(statefulsets, watcher::Config::default(), move |sts| {
            policies_for_statefulset(&for_sts, &sts)
        })
        .watches(claims, watcher::Config::default(), move |pvc| {
            policies_for_claim(&for_pvc, &pvc)
        })
        .with_config(ControllerConfig::default().debounce(Duration::from_secs(1)))
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
        control(client, &settings, metrics, stop_rx).await;
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
    let mut stop = stop_rx.clone();
    loop {
        tracing::info!(identity = %settings.identity, "waiting for the leader lease");
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
        }
        tracing::info!(identity = %settings.identity, "leading");
        metrics.leader.set(1);
        // Stop controlling as soon as the lease is lost or shutdown is asked for.
        let (lost_tx, lost_rx) = watch::channel(false);
        let mut watch_leading = leading.clone();
        let mut watch_stop = stop_rx.clone();
        let watcher = tokio::spawn(async move {
            tokio::select! {
                _ = watch_leading.wait_for(|l| !*l) => {},
                _ = watch_stop.wait_for(|s| *s) => {},
            }
            let _ = lost_tx.send(true);
        });
        control(client.clone(), &settings, metrics.clone(), lost_rx).await;
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
