//! A Pulsar cluster as the controller sees it, for end-to-end tests: a real API server holding
//! the CRD, the RBAC of `deploy/`, broker and bookie StatefulSets and bound bookie claims; the
//! emulator serving their metrics; real Prometheus scraping it; and a sync loop standing in for
//! the kubelet and the volume resizer (the emulator follows the StatefulSet's replicas and the
//! claims' sizes, and a resize completes once its StorageClass allows expansion).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use kube::{Client, ResourceExt};
use pulsar_autoscaler::api::ScalingPolicy;
use pulsar_autoscaler::emulator::{Config, Running};
use serde_json::json;
use tokio::task::JoinHandle;

use super::apiserver::{ApiServer, Builder, apply_crd, ensure_namespace};
use super::faults::Proxy;
use super::monitoring::{self, Server};

/// Namespace of the Pulsar cluster.
pub const NS: &str = "pulsar";
/// Namespace of the controller (its ServiceAccount and Lease).
pub const CONTROLLER_NS: &str = "pulsar-autoscaler";
const GI: u64 = 1 << 30;

/// Shape of the emulated cluster.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Brokers at start.
    pub brokers: u32,
    /// Bookies.
    pub bookies: u32,
    /// Ledgers claim size in GiB at start.
    pub ledger_gi: u64,
    /// Ledgers used percent at start.
    pub ledger_used: f64,
    /// Journal used percent at start.
    pub journal_used: f64,
    /// Whether the journal claims' StorageClass allows expansion (ledgers' always does).
    pub journal_expandable: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            brokers: 3,
            bookies: 1,
            ledger_gi: 50,
            ledger_used: 40.0,
            journal_used: 5.0,
            journal_expandable: true,
        }
    }
}

/// The whole test cluster; everything stops when it is dropped.
pub struct Pulsar {
    /// The API server.
    pub api: ApiServer,
    /// Admin client (tests only; the controller never uses it).
    pub admin: Client,
    /// Emulated Pulsar metrics.
    pub emu: Running,
    /// Prometheus scraping the emulator every second.
    pub prom: Server,
    /// Prometheus' scrape configuration, to start it again after an outage.
    pub scrape: String,
    /// Kubeconfig of the controller's ServiceAccount, bound by `deploy/rbac.yaml`.
    pub controller_kubeconfig: PathBuf,
    /// While true (the default) the sync loop completes every claim resize, as a CSI resizer
    /// would; a test sets it false to give a claim a capacity of its own.
    pub resizer: Arc<AtomicBool>,
    sync: JoinHandle<()>,
}

impl Drop for Pulsar {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

/// Applies every document of a YAML file with server-side apply, as `kubectl apply` would.
pub async fn apply_yaml(client: &Client, text: &str) {
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc).expect("YAML document");
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value).expect("a Kubernetes object");
        let types = obj.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("group/version/kind");
        let (resource, caps) = pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("discovering {gvk:?}: {e}"));
        let api: Api<DynamicObject> = match (caps.scope, obj.namespace()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), &ns, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &obj.name_any(),
            &PatchParams::apply("pulsar-autoscaler-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {}: {e}", gvk.kind, obj.name_any()));
    }
}

pub async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {:?}: {e}", obj.meta().name))
}

/// Starts an API server with the CRD and the RBAC of `deploy/` installed; returns it, an admin
/// client and the kubeconfig of the controller's ServiceAccount.
pub async fn install() -> (ApiServer, Client, PathBuf) {
    let rbac = std::fs::read_to_string("deploy/rbac.yaml").expect("deploy/rbac.yaml");
    install_with(ApiServer::builder(), &rbac).await
}

/// Like `install`, with API server options and the RBAC manifests to apply.
pub async fn install_with(server: Builder, rbac: &str) -> (ApiServer, Client, PathBuf) {
    monitoring::crypto();
    let api = server.start().await;
    let admin = api.client().await;
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(
        &std::fs::read_to_string("deploy/crd.yaml").expect("deploy/crd.yaml"),
    )
    .expect("CRD");
    apply_crd(&admin, &crd).await;
    ensure_namespace(&admin, CONTROLLER_NS).await;
    // A namespaced install binds Roles in the Pulsar namespace.
    ensure_namespace(&admin, NS).await;
    apply_yaml(&admin, rbac).await;
    let token = api
        .service_account_token(CONTROLLER_NS, "pulsar-autoscaler")
        .await;
    let controller_kubeconfig = api.write_kubeconfig("controller.kubeconfig", &token);
    (api, admin, controller_kubeconfig)
}

impl Pulsar {
    /// Starts the API server, installs `deploy/`, creates the workloads and claims, the
    /// emulator and Prometheus, and waits until Prometheus has the brokers' series.
    pub async fn start(shape: Shape) -> Pulsar {
        let rbac = std::fs::read_to_string("deploy/rbac.yaml").expect("deploy/rbac.yaml");
        Pulsar::start_with(shape, ApiServer::builder(), &rbac).await
    }

    /// Like `start`, with API server options (an audit log, users) and the RBAC manifests that
    /// bind the controller's ServiceAccount.
    pub async fn start_with(shape: Shape, server: Builder, rbac: &str) -> Pulsar {
        let (api, admin, controller_kubeconfig) = install_with(server, rbac).await;

        let classes: Api<StorageClass> = Api::all(admin.clone());
        for (name, expand) in [("expandable", true), ("fixed", false)] {
            create(&classes, json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": name}, "provisioner": "example.com/none", "allowVolumeExpansion": expand}))
            .await;
        }
        let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), NS);
        create(&sts, statefulset("pulsar-broker", shape.brokers, json!([]))).await;
        let journal_class = if shape.journal_expandable {
            "expandable"
        } else {
            "fixed"
        };
        let templates = json!([
            claim_template("ledgers", "expandable", shape.ledger_gi),
            claim_template("journal", journal_class, 10),
        ]);
        create(&sts, statefulset("pulsar-bookie", shape.bookies, templates)).await;
        for i in 0..shape.bookies {
            bind_claim(
                &admin,
                &format!("ledgers-pulsar-bookie-{i}"),
                "expandable",
                shape.ledger_gi,
            )
            .await;
            bind_claim(
                &admin,
                &format!("journal-pulsar-bookie-{i}"),
                journal_class,
                10,
            )
            .await;
        }

        let config = Config {
            brokers: shape.brokers,
            max_brokers: 12,
            bookies: shape.bookies,
            ledger_claim_bytes: shape.ledger_gi * GI,
            ledger_initial_percent: shape.ledger_used,
            journal_initial_percent: shape.journal_used,
            ..Config::default()
        };
        let emu = monitoring::emulator(config).await;
        let scrape =
            pulsar_autoscaler::emulator::scrape_config(&monitoring::state(&emu).await, "1s");
        let mut prom = monitoring::prometheus(&scrape, None);
        monitoring::ready(&mut prom, "/-/ready", &monitoring::client()).await;
        let resizer = Arc::new(AtomicBool::new(true));
        let sync = tokio::spawn(sync_loop(admin.clone(), emu.control_url(), resizer.clone()));
        let pulsar = Pulsar {
            api,
            admin,
            emu,
            prom,
            scrape,
            controller_kubeconfig,
            resizer,
            sync,
        };
        pulsar.wait_for_series().await;
        pulsar
    }

    /// Waits until Prometheus has a throughput series of a broker.
    pub async fn wait_for_series(&self) {
        let http = monitoring::client();
        let url = format!("{}/api/v1/query", self.prom.url);
        monitoring::eventually("Prometheus has broker series", 240, || async {
            let body: serde_json::Value = http
                .post(&url)
                .form(&[("query", "count(pulsar_broker_throughput_in)")])
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match body["data"]["result"][0]["value"][1].as_str() {
                Some(_) => Ok(()),
                None => Err(body.to_string()),
            }
        })
        .await;
    }

    /// The Throughput preset's value (bytes/s in + out over the brokers) as Prometheus shows it now.
    pub async fn throughput(&self) -> Option<f64> {
        let query = "sum(pulsar_broker_throughput_in{namespace=\"pulsar\"}) + sum(pulsar_broker_throughput_out{namespace=\"pulsar\"})";
        let body: serde_json::Value = monitoring::client()
            .post(format!("{}/api/v1/query", self.prom.url))
            .form(&[("query", query)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Stops Prometheus (an outage).
    pub fn stop_prometheus(&mut self) {
        self.prom.stop();
    }

    /// Starts Prometheus again on the same port, with a fresh database.
    pub async fn restart_prometheus(&mut self) {
        self.prom = monitoring::prometheus_on(&self.scrape, self.prom.port);
        monitoring::ready(&mut self.prom, "/-/ready", &monitoring::client()).await;
        self.wait_for_series().await;
    }

    /// Multiplies the emulated load.
    pub async fn set_load(&self, factor: f64) {
        monitoring::change(&self.emu, json!({"loadFactor": factor})).await;
    }

    /// Creates a policy from YAML (the spec only; Prometheus URL filled in as `{{prometheus}}`).
    pub async fn create_policy(&self, name: &str, spec_yaml: &str) -> ScalingPolicy {
        let spec = spec_yaml.replace("{{prometheus}}", &self.prom.url);
        let spec: serde_json::Value = serde_yaml_ng::from_str(&spec).expect("policy spec");
        let api: Api<ScalingPolicy> = Api::namespaced(self.admin.clone(), NS);
        create(
            &api,
            json!({"apiVersion": "pulsar-autoscaler.dev/v1alpha1", "kind": "ScalingPolicy",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        )
        .await
    }

    /// Replaces a policy's spec fields by a merge patch.
    pub async fn patch_policy(&self, name: &str, patch: serde_json::Value) {
        let api: Api<ScalingPolicy> = Api::namespaced(self.admin.clone(), NS);
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patching the policy");
    }

    /// The policy as stored now.
    pub async fn policy(&self, name: &str) -> ScalingPolicy {
        let api: Api<ScalingPolicy> = Api::namespaced(self.admin.clone(), NS);
        api.get(name).await.expect("reading the policy")
    }

    /// The broker StatefulSet's replicas.
    pub async fn replicas(&self) -> u32 {
        let api: Api<StatefulSet> = Api::namespaced(self.admin.clone(), NS);
        api.get("pulsar-broker")
            .await
            .expect("broker StatefulSet")
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(0) as u32
    }

    /// A claim as stored now.
    pub async fn claim(&self, name: &str) -> PersistentVolumeClaim {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.admin.clone(), NS);
        api.get(name).await.expect("claim")
    }

    /// Events about a policy, as `(reason, note, reporting instance)`, one entry per occurrence
    /// (the API server folds repeats of one reason into a series).
    pub async fn events(&self, policy: &str) -> Vec<(String, String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.admin.clone(), NS);
        let list = api.list(&Default::default()).await.expect("events");
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(policy))
            .flat_map(|e| {
                let count = e.series.as_ref().map_or(1, |s| s.count.max(1)) as usize;
                let entry = (
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                    e.reporting_instance.unwrap_or_default(),
                );
                std::iter::repeat_n(entry, count)
            })
            .collect()
    }

    /// Starts the controller as the ServiceAccount, with leader election in its namespace.
    pub fn controller(&self, identity: &str) -> Controller {
        self.controller_at(identity, monitoring::free_port())
    }

    /// Like `controller`, with `/metrics` on a given port: a scrape configuration written before
    /// the start, or a restarted controller, finds it there.
    pub fn controller_at(&self, identity: &str, port: u16) -> Controller {
        Controller::start(
            &self.controller_kubeconfig,
            identity,
            self.api.dir().join(format!("{identity}.log")),
            port,
        )
    }
}

pub fn statefulset(name: &str, replicas: u32, templates: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "pulsar", "image": "apachepulsar/pulsar:4.0.0"}]}
            },
            "volumeClaimTemplates": templates
        }
    })
}

fn claim_template(name: &str, class: &str, gi: u64) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": format!("{gi}Gi")}}}
    })
}

/// Creates a claim and a volume and binds them, as the volume controller would.
async fn bind_claim(admin: &Client, name: &str, class: &str, gi: u64) {
    let pvs: Api<PersistentVolume> = Api::all(admin.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), NS);
    let size = format!("{gi}Gi");
    create(&pvs, json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("pv-{name}")},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "hostPath": {"path": format!("/tmp/{name}")},
                 "claimRef": {"namespace": NS, "name": name}}}))
    .await;
    create(&pvcs, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class, "volumeName": format!("pv-{name}"),
                 "resources": {"requests": {"storage": size}}}}))
    .await;
    let status = json!({"status": {"phase": "Bound", "capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"]}});
    pvcs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("binding the claim");
    let pv_status = json!({"status": {"phase": "Bound"}});
    pvs.patch_status(
        &format!("pv-{name}"),
        &PatchParams::default(),
        &Patch::Merge(&pv_status),
    )
    .await
    .expect("binding the volume");
}

/// Keeps the emulator in step with the API server: broker count from the StatefulSet, claim
/// capacity from completed resizes (which it completes itself, as a CSI resizer would).
async fn sync_loop(admin: Client, control: String, resizer: Arc<AtomicBool>) {
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), NS);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), NS);
    let http = monitoring::client();
    let post = |body: serde_json::Value| {
        let (http, url) = (http.clone(), format!("{control}/state"));
        async move {
            let _ = http.post(url).json(&body).send().await;
        }
    };
    loop {
        if let Ok(s) = sts.get("pulsar-broker").await {
            let replicas = s.spec.and_then(|s| s.replicas).unwrap_or(0);
            post(json!({"brokers": replicas})).await;
        }
        if let Ok(list) = pvcs.list(&Default::default()).await {
            let mut sizes = BTreeMap::new();
            for pvc in list.items {
                let want = pvc
                    .spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
                    .cloned();
                let have = pvc
                    .status
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage"))
                    .cloned();
                let (Some(want), Some(have)) = (want, have) else {
                    continue;
                };
                let bytes = pulsar_autoscaler::quantity::parse_bytes(&want.0).unwrap_or(0);
                if want != have && resizer.load(Ordering::SeqCst) {
                    let status = json!({"status": {"capacity": {"storage": want}}});
                    let _ = pvcs
                        .patch_status(
                            &pvc.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&status),
                        )
                        .await;
                }
                sizes.insert(pvc.name_any(), bytes);
            }
            post(json!({"claims": sizes})).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A controller process; killed when dropped.
pub struct Controller {
    child: Option<Child>,
    /// Its `/metrics` base URL.
    pub metrics_url: String,
    /// Its log file.
    pub log: PathBuf,
}

impl Controller {
    /// Starts `pulsar-autoscaler run` with `kubeconfig`, leader election and `/metrics` on `port`.
    pub fn start(
        kubeconfig: &std::path::Path,
        identity: &str,
        log: PathBuf,
        port: u16,
    ) -> Controller {
        let out = File::create(&log).expect("controller log");
        let err = out.try_clone().expect("controller log");
        let child = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args([
                "--leader-election",
                "--lease-namespace",
                CONTROLLER_NS,
                "--lease-duration",
                "6",
            ])
            .args(["--identity", identity])
            .env("RUST_LOG", "info,pulsar_autoscaler=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting pulsar-autoscaler run");
        Controller {
            child: Some(child),
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            log,
        }
    }

    /// Kills the process at once (SIGKILL): no chance to release the Lease.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks the process to stop (SIGTERM) and waits for it.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid has no memory-safety requirements.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A line of `/proc/<pid>/status` such as `VmHWM` (peak resident memory), when running.
    pub fn proc_status(&self, field: &str) -> Option<String> {
        let pid = self.child.as_ref()?.id();
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        text.lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
    }

    /// The controller's own `/metrics` text, empty when unreachable.
    pub async fn metrics(&self) -> String {
        match monitoring::client().get(&self.metrics_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The controller's `pulsar_autoscaler_leader` gauge.
pub async fn leads(c: &Controller) -> Option<f64> {
    let text = c.metrics().await;
    text.lines()
        .find(|l| l.starts_with("pulsar_autoscaler_leader "))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Waits until the controller's leader gauge is `want`.
pub async fn wait_leads(c: &Controller, who: &str, want: f64) {
    monitoring::eventually(&format!("{who} leader={want}"), 480, || async {
        match leads(c).await {
            Some(v) if v == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The controller's kubeconfig with the API server's address replaced by `url` (plain HTTP to
/// the proxy, which speaks TLS to the API server).
fn kubeconfig_via(p: &Pulsar, url: &str, file: &str) -> PathBuf {
    let text = std::fs::read_to_string(&p.controller_kubeconfig).expect("controller kubeconfig");
    let rewritten: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("certificate-authority"))
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                format!("    server: {url}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = p.api.dir().join(file);
    std::fs::write(&path, rewritten).expect("writing kubeconfig");
    path
}

/// A controller whose every API call goes through `proxy`.
pub async fn controller_via(p: &Pulsar, identity: &str) -> (Controller, Proxy) {
    let proxy = Proxy::start(p.api.url(), Some(&p.api.dir().join("ca.crt"))).await;
    let kubeconfig = kubeconfig_via(p, &proxy.url, &format!("{identity}-proxy.kubeconfig"));
    let c = Controller::start(
        &kubeconfig,
        identity,
        p.api.dir().join(format!("{identity}.log")),
        monitoring::free_port(),
    );
    (c, proxy)
}

/// The sum of a counter's series whose labels include all of `labels`.
pub fn counter(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
