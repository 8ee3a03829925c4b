//! A real Pulsar cluster behind a real API server: the broker StatefulSet's pods are the
//! cluster's broker processes. A sync loop stands in for the StatefulSet controller and the
//! kubelet: it starts broker `i` and marks pod `pulsar-broker-<i>` Running and Ready with the
//! broker's own address as its pod IP while `i < replicas`, and stops it with SIGTERM (SIGKILL
//! after the pod's `terminationGracePeriodSeconds`) and deletes the pod once the StatefulSet
//! shrinks below it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tokio::task::JoinHandle;

use super::apiserver::ApiServer;
use super::pulsar::{NS, create, install, statefulset};
use super::real_pulsar::{BrokerSettings, Cluster};

/// Name of the broker StatefulSet.
pub const BROKERS: &str = "pulsar-broker";

/// What the stand-in kubelet did, with when (seconds since the fixture started).
#[derive(Debug, Clone)]
pub struct KubeletEvent {
    /// Seconds since start.
    pub at: f64,
    /// Broker ordinal.
    pub broker: u32,
    /// `started` or `stopped`.
    pub what: &'static str,
    /// How long it took (start until healthy; SIGTERM until exit).
    pub took: Duration,
    /// A stop that needed SIGKILL.
    pub killed: bool,
}

/// The API server, the real brokers and the loop between them.
pub struct RealPulsarOnKube {
    /// The API server.
    pub api: ApiServer,
    /// Admin client (tests only).
    pub admin: Client,
    /// Kubeconfig of the controller's ServiceAccount, bound by `deploy/rbac.yaml`.
    pub controller_kubeconfig: PathBuf,
    /// The real Pulsar.
    pub pulsar: Arc<tokio::sync::Mutex<Cluster>>,
    /// Client service URL naming every broker address.
    pub service_url: String,
    /// Each ordinal's address.
    pub broker_ips: Vec<String>,
    /// What the stand-in kubelet did.
    pub events: Arc<Mutex<Vec<KubeletEvent>>>,
    sync: JoinHandle<()>,
}

impl Drop for RealPulsarOnKube {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

impl RealPulsarOnKube {
    /// Starts the API server (CRD, RBAC), a cluster of at most `max_brokers` brokers with one
    /// bookie, the broker StatefulSet at `replicas` with `grace_secs` of termination grace, and
    /// waits until its pods are Ready.
    pub async fn start(
        max_brokers: u32,
        replicas: u32,
        grace_secs: i64,
        settings: BrokerSettings,
    ) -> RealPulsarOnKube {
        let (api, admin, controller_kubeconfig) = install().await;
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
        create(
            &accounts,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": NS}}),
        )
        .await;
        let cluster = Cluster::start(max_brokers, 0, 1, settings).await;
        let service_url = cluster.service_url();
        let broker_ips = cluster.broker_ips.clone();
        let mut sts = statefulset(BROKERS, replicas, json!([]));
        sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(grace_secs);
        let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), NS);
        create(&sets, sts).await;

        let pulsar = Arc::new(tokio::sync::Mutex::new(cluster));
        let events = Arc::new(Mutex::new(Vec::new()));
        let sync = tokio::spawn(sync_loop(
            admin.clone(),
            pulsar.clone(),
            broker_ips.clone(),
            events.clone(),
        ));
        let fixture = RealPulsarOnKube {
            api,
            admin,
            controller_kubeconfig,
            pulsar,
            service_url,
            broker_ips,
            events,
            sync,
        };
        fixture.wait_ready(replicas).await;
        fixture
    }

    /// The StatefulSet's replicas.
    pub async fn replicas(&self) -> u32 {
        let sets: Api<StatefulSet> = Api::namespaced(self.admin.clone(), NS);
        sets.get(BROKERS)
            .await
            .expect("broker StatefulSet")
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(0) as u32
    }

    /// Waits until exactly `n` broker pods are Ready (and their brokers healthy).
    pub async fn wait_ready(&self, n: u32) {
        super::monitoring::eventually(&format!("{n} Ready broker pods"), 4 * 240, || async {
            let got = ready_pods(&self.admin).await;
            if got == n {
                Ok(())
            } else {
                Err(format!("{got} Ready"))
            }
        })
        .await;
    }

    /// `http://<ip of broker i>:8080`.
    pub fn web_url(&self, i: u32) -> String {
        format!(
            "http://{}:{}",
            self.broker_ips[i as usize],
            super::real_pulsar::WEB_PORT
        )
    }

    /// The stand-in kubelet's actions so far.
    pub fn kubelet_events(&self) -> Vec<KubeletEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn ready_pods(admin: &Client) -> u32 {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let Ok(list) = pods.list(&Default::default()).await else {
        return 0;
    };
    list.items.iter().filter(|p| is_ready(p)).count() as u32
}

/// Whether a pod's Ready condition is True.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn sync_loop(
    admin: Client,
    pulsar: Arc<tokio::sync::Mutex<Cluster>>,
    ips: Vec<String>,
    events: Arc<Mutex<Vec<KubeletEvent>>>,
) {
    let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let start = Instant::now();
    let record = |broker, what, took, killed| {
        events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(KubeletEvent {
                at: start.elapsed().as_secs_f64(),
                broker,
                what,
                took,
                killed,
            });
    };
    loop {
        if let Ok(sts) = sets.get(BROKERS).await {
            let spec = sts.spec.as_ref();
            let replicas = spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32;
            let grace = spec
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64;
            for i in 0..ips.len() as u32 {
                let name = format!("{BROKERS}-{i}");
                let mut cluster = pulsar.lock().await;
                if i < replicas {
                    if !cluster.broker_running(i) {
                        let t = Instant::now();
                        cluster.start_broker(i).await;
                        record(i, "started", t.elapsed(), false);
                    }
                    drop(cluster);
                    ensure_pod(&pods, &name, &ips[i as usize]).await;
                } else if cluster.broker_running(i) {
                    // Stopping: the pod goes unready at once, the process gets its grace period.
                    let _ = pods
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})),
                        )
                        .await;
                    let (took, killed) = tokio::task::block_in_place(|| {
                        cluster.stop_broker(i, Duration::from_secs(grace))
                    });
                    record(i, "stopped", took, killed);
                    drop(cluster);
                    let _ = pods
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                } else {
                    drop(cluster);
                    if pods.get_opt(&name).await.ok().flatten().is_some() {
                        let _ = pods
                            .delete(&name, &DeleteParams::default().grace_period(0))
                            .await;
                    }
                }
            }
            let ready = ready_pods(&admin).await;
            let _ = sets
                .patch_status(
                    BROKERS,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"status": {"replicas": replicas, "readyReplicas": ready,
                        "currentReplicas": replicas, "availableReplicas": ready}}),
                    ),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Creates the pod if needed and marks it Running and Ready at `ip`.
async fn ensure_pod(pods: &Api<Pod>, name: &str, ip: &str) {
    if pods.get_opt(name).await.ok().flatten().is_none() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": BROKERS}},
            "spec": {"nodeName": "node-a",
                     "containers": [{"name": "broker", "image": "apachepulsar/pulsar:4.0.7"}]}
        });
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        if pods.create(&Default::default(), &pod).await.is_err() {
            return;
        }
    }
    let ready = pods.get(name).await.is_ok_and(|p| is_ready(&p));
    if !ready {
        let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}]}});
        let _ = pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await;
    }
}
