//! A shared cluster, end to end on a real kube-apiserver with RBAC and an audit log: a tenant's
//! policy naming a source the operator did not allow is refused and never called; a Secret
//! without the consent label never leaves the API server; nothing secret reaches status, Events,
//! `/metrics` or the log; insecure TLS is refused by the flag and warned about without it; and
//! the (verb, resource, scope) set the controller used, read from the audit log, is exactly what
//! `deploy/rbac.yaml` grants — and, for `deploy/namespaced/`, within a namespace's Role.

mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use pulsar_autoscaler::api::ScalingPolicy;
use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::monitoring::{self, eventually};
use support::pulsar::{CONTROLLER_NS, NS, Pulsar, Shape, apply_yaml};

const SA_USER: &str = "system:serviceaccount:pulsar-autoscaler:pulsar-autoscaler";
const PLAIN_SECRET: &str = "plain-secret-value-0d9f41c2";
const CONSENTED_SECRET: &str = "consented-secret-value-7c1a55e8";

/// Audit policy: every request of the controller's ServiceAccount at Metadata level (no bodies,
/// so no Secret data in the log), nothing else.
fn audit_args(dir: &Path) -> (Vec<String>, PathBuf) {
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
             - level: Metadata\n  users: [\"{SA_USER}\"]\n- level: None\n"
        ),
    )
    .expect("audit policy");
    let log = dir.join("audit.log");
    let args = vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
        "--audit-log-mode=blocking".to_string(),
    ];
    (args, log)
}

/// One authorization-relevant request: verb, API group, resource[/subresource], namespace
/// (empty for cluster-scoped or all-namespace requests), HTTP status, request URI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    verb: String,
    group: String,
    resource: String,
    namespace: String,
    code: i64,
    uri: String,
}

fn audit_calls(log: &Path) -> Vec<Call> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["user"]["username"] == SA_USER)
        .filter_map(|e| {
            let o = e.get("objectRef")?;
            let resource = o["resource"].as_str()?.to_string();
            let resource = match o["subresource"].as_str() {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource,
            };
            Some(Call {
                verb: e["verb"].as_str()?.to_string(),
                group: o["apiGroup"].as_str().unwrap_or("").to_string(),
                resource,
                namespace: o["namespace"].as_str().unwrap_or("").to_string(),
                code: e["responseStatus"]["code"].as_i64().unwrap_or(0),
                uri: e["requestURI"].as_str().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// One granted permission: verb, group, resource, and the namespace a Role limits it to
/// (empty for a ClusterRole bound cluster-wide).
type Grant = (String, String, String, String);

/// The grants of every Role and ClusterRole bound to the controller's ServiceAccount.
fn grants(rbac: &str) -> BTreeSet<Grant> {
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(rbac)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect();
    let bound = |kind: &str, name: &str, namespace: &str| {
        docs.iter().any(|d| {
            let binding_kind = if kind == "ClusterRole" {
                "ClusterRoleBinding"
            } else {
                "RoleBinding"
            };
            d["kind"] == binding_kind
                && d["roleRef"]["kind"] == kind
                && d["roleRef"]["name"] == name
                && (kind == "ClusterRole" || d["metadata"]["namespace"] == namespace)
                && d["subjects"].as_array().is_some_and(|s| {
                    s.iter().any(|s| {
                        s["kind"] == "ServiceAccount"
                            && s["name"] == "pulsar-autoscaler"
                            && s["namespace"] == CONTROLLER_NS
                    })
                })
        })
    };
    let mut out = BTreeSet::new();
    for d in &docs {
        let kind = d["kind"].as_str().unwrap_or("");
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        let namespace = d["metadata"]["namespace"].as_str().unwrap_or("");
        assert!(
            bound(kind, name, namespace),
            "{kind} {name} is bound to nobody"
        );
        let scope = if kind == "Role" { namespace } else { "" };
        for rule in d["rules"].as_array().into_iter().flatten() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        out.insert((verb, group.clone(), resource.clone(), scope.to_string()));
                    }
                }
            }
        }
    }
    out
}

/// Calls no grant covers, and grants no call used.
fn compare(calls: &[Call], grants: &BTreeSet<Grant>) -> (Vec<String>, Vec<String>) {
    let covers = |g: &Grant, c: &Call| {
        g.0 == c.verb
            && g.1 == c.group
            && g.2 == c.resource
            && (g.3.is_empty() || g.3 == c.namespace)
    };
    let mut missing = BTreeSet::new();
    for c in calls {
        if c.code == 403 || !grants.iter().any(|g| covers(g, c)) {
            missing.insert(format!(
                "{} {}/{} in {:?} (HTTP {})",
                c.verb, c.group, c.resource, c.namespace, c.code
            ));
        }
    }
    let extra = grants
        .iter()
        .filter(|g| !calls.iter().any(|c| c.code != 403 && covers(g, c)))
        .map(|g| format!("{} {}/{} in {:?}", g.0, g.1, g.2, g.3))
        .collect();
    (missing.into_iter().collect(), extra)
}

/// A `pulsar-autoscaler run` process as the ServiceAccount; killed when dropped.
struct Run {
    child: Child,
    metrics_url: String,
    log: PathBuf,
}

impl Run {
    fn start(p: &Pulsar, name: &str, extra: &[String]) -> Run {
        let log = p.api.dir().join(format!("{name}.log"));
        let out = File::create(&log).expect("controller log");
        let err = out.try_clone().expect("controller log");
        let port = monitoring::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
            .args(["run", "--kubeconfig"])
            .arg(&p.controller_kubeconfig)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--leader-election", "--lease-namespace", CONTROLLER_NS])
            .args(["--lease-duration", "6", "--identity", name])
            .args(extra)
            // Debug logs too: nothing secret may appear at any level.
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting pulsar-autoscaler run");
        Run {
            child,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            log,
        }
    }

    async fn metrics(&self) -> String {
        match monitoring::client().get(&self.metrics_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety requirements.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP listener that only counts connections: a source no policy may make the controller call.
async fn trap() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("trap listener");
    let url = format!("http://{}", listener.local_addr().expect("trap address"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, hits)
}

fn condition(sp: &ScalingPolicy, type_: &str) -> Option<(String, String, String)> {
    sp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_condition(
    api: &Api<ScalingPolicy>,
    policy: &str,
    type_: &str,
    want: (&str, &str),
) -> String {
    eventually(&format!("{policy}: {type_}={want:?}"), 480, || async {
        let sp = api.get(policy).await.map_err(|e| e.to_string())?;
        match condition(&sp, type_) {
            Some((s, r, m)) if s == want.0 && r == want.1 => Ok(m),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Creates a policy in the Pulsar namespace as `client` (a tenant).
async fn create_policy(client: &kube::Client, name: &str, spec: Value) {
    let api: Api<ScalingPolicy> = Api::namespaced(client.clone(), NS);
    let sp: ScalingPolicy = serde_json::from_value(json!({
        "apiVersion": "pulsar-autoscaler.dev/v1alpha1", "kind": "ScalingPolicy",
        "metadata": {"name": name, "namespace": NS}, "spec": spec}))
    .expect("policy");
    api.create(&PostParams::default(), &sp)
        .await
        .unwrap_or_else(|e| panic!("tenant creating policy {name}: {e}"));
}

fn dry_brokers(source: Value) -> Value {
    json!({"interval": "2s", "dryRun": true, "metricsSource": source,
           "brokers": {"statefulSet": "pulsar-broker", "minReplicas": 1, "maxReplicas": 8,
                       "metrics": [{"type": "Throughput", "targetPerBroker": "60Mi"}]}})
}

/// Gives the user `tenant` what a team owning namespace `pulsar` has: policies and Secrets there.
async fn tenant_role(admin: &kube::Client) {
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: tenant, namespace: {NS}}}\n\
         rules:\n- apiGroups: [pulsar-autoscaler.dev]\n  resources: [scalingpolicies]\n  verbs: [get, list, create, patch]\n\
         - apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [get, create, patch]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: tenant, namespace: {NS}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: tenant}}\n\
         subjects: [{{kind: User, name: tenant, apiGroup: rbac.authorization.k8s.io}}]\n"
    );
    apply_yaml(admin, &rbac).await;
}

async fn secret(client: &kube::Client, name: &str, value: &str, consent: bool) {
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    let labels = if consent {
        json!({"pulsar-autoscaler.dev/consent": "true"})
    } else {
        json!({})
    };
    let s: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "stringData": {"token": value}}))
    .expect("secret");
    api.create(&PostParams::default(), &s)
        .await
        .unwrap_or_else(|e| panic!("creating secret {name}: {e}"));
}

/// A bookie pod on a node, as the scheduler and kubelet would leave it, for Direct discovery.
async fn bookie_pod(admin: &kube::Client) {
    // No controller-manager here: the namespace's default ServiceAccount that admission wants.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), NS);
    let account = serde_json::from_value(json!({"metadata": {"name": "default", "namespace": NS}}))
        .expect("service account");
    let _ = accounts.create(&PostParams::default(), &account).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pulsar-bookie-0", "namespace": NS, "labels": {"app": "pulsar-bookie"},
                     "annotations": {"prometheus.io/port": "9"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "bookie", "image": "apachepulsar/pulsar:4.0.0"}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("creating the bookie pod");
    let status = json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}});
    pods.patch_status(
        "pulsar-bookie-0",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .expect("pod status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_confined_and_the_controller_uses_exactly_its_rbac() {
    let audit_dir = tempfile::tempdir().expect("temp dir");
    let (args, audit_log) = audit_args(audit_dir.path());
    let mut server = ApiServer::builder().user("tenant", &[]);
    for a in &args {
        server = server.arg(a);
    }
    let rbac = std::fs::read_to_string("deploy/rbac.yaml").expect("deploy/rbac.yaml");
    let shape = Shape {
        ledger_used: 85.0,
        ..Shape::default()
    };
    let p = Pulsar::start_with(shape, server, &rbac).await;
    tenant_role(&p.admin).await;
    let tenant = p.api.user_client("tenant").await;
    let (trap_url, trap_hits) = trap().await;
    secret(&tenant, "plain", PLAIN_SECRET, false).await;
    secret(&tenant, "token", CONSENTED_SECRET, true).await;
    bookie_pod(&p.admin).await;

    let prom = json!({"type": "Prometheus", "url": p.prom.url, "maxStaleness": "30s"});
    let live = json!({"interval": "2s", "metricsSource": prom,
        "brokers": {"statefulSet": "pulsar-broker", "minReplicas": 2, "maxReplicas": 8,
                    "metrics": [{"type": "Throughput", "targetPerBroker": "60Mi"}],
                    "scaleUp": {"stabilizationWindow": "0s", "cooldown": "2s", "maxStep": {"replicas": 4}},
                    "scaleDown": {"stabilizationWindow": "0s", "cooldown": "2s", "maxStep": {"replicas": 1}}},
        "bookies": {"statefulSet": "pulsar-bookie", "volumeClaimTemplates": ["ledgers"],
                    "expandAtUsedPercent": 80, "increase": {"percent": 20, "minimum": "1Gi"},
                    "maxSize": "1Ti", "cooldown": "1h"},
        "rateLimit": {"actionsPerHour": 1000, "burst": 100}});
    create_policy(&tenant, "live", live).await;
    let mut forbidden = dry_brokers(json!({"type": "Prometheus", "url": trap_url}));
    forbidden["metricsSource"]["headers"] = json!({"X-Scope-OrgID": "other-team"});
    create_policy(&tenant, "forbidden-source", forbidden).await;
    create_policy(
        &tenant,
        "no-consent",
        dry_brokers(json!({"type": "Prometheus", "url": p.prom.url,
            "auth": {"bearerTokenSecretRef": {"name": "plain", "key": "token"}}})),
    )
    .await;
    create_policy(
        &tenant,
        "consented",
        dry_brokers(
            json!({"type": "Prometheus", "url": p.prom.url, "maxStaleness": "30s",
            "auth": {"bearerTokenSecretRef": {"name": "token", "key": "token"}}}),
        ),
    )
    .await;
    create_policy(
        &tenant,
        "insecure",
        dry_brokers(
            json!({"type": "Prometheus", "url": p.prom.url, "maxStaleness": "30s",
            "tls": {"insecureSkipVerify": true}}),
        ),
    )
    .await;
    // A StatefulSet the watch has not seen (here: not created yet) is read through the API
    // server's /scale: the one path that uses `get statefulsets/scale`.
    let mut ahead = dry_brokers(prom.clone());
    ahead["brokers"]["statefulSet"] = json!("pulsar-broker-next");
    create_policy(&tenant, "ahead-of-its-statefulset", ahead).await;
    create_policy(
        &tenant,
        "direct",
        json!({"interval": "2s", "dryRun": true,
               "bookies": {"statefulSet": "pulsar-bookie", "maxSize": "1Ti"}}),
    )
    .await;
    // Wants 5 brokers of its own StatefulSet, one step at a time, with one action allowed an hour:
    // the second step is dropped every evaluation, the same Event again, so its series is
    // patched (a different action would be an Event of its own).
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(p.admin.clone(), NS);
    support::pulsar::create(
        &sts,
        support::pulsar::statefulset("limited-broker", 1, json!([])),
    )
    .await;
    create_policy(
        &tenant,
        "limited",
        json!({"interval": "2s", "metricsSource": prom,
            "brokers": {"statefulSet": "limited-broker", "minReplicas": 1, "maxReplicas": 8,
                        "metrics": [{"type": "Custom", "name": "constant", "query": "vector(500)",
                                     "targetPerBroker": "100"}],
                        "scaleUp": {"stabilizationWindow": "0s", "cooldown": "0s",
                                    "maxStep": {"replicas": 1}}},
            "rateLimit": {"actionsPerHour": 1, "burst": 1}}),
    )
    .await;

    let strict = vec![
        format!("--allow-source={}", p.prom.url),
        "--forbid-insecure-skip-verify".to_string(),
    ];
    let mut c = Run::start(&p, "strict", &strict);
    let policies: Api<ScalingPolicy> = Api::namespaced(p.admin.clone(), NS);

    // Refused by the operator's settings, with the reason a tenant can act on.
    let m = wait_condition(
        &policies,
        "forbidden-source",
        "Invalid",
        ("True", "SourceNotAllowed"),
    )
    .await;
    assert!(m.contains(&p.prom.url), "names what is allowed: {m}");
    wait_condition(
        &policies,
        "insecure",
        "Invalid",
        ("True", "InsecureSkipVerifyForbidden"),
    )
    .await;
    // A Secret without consent: a clear condition, and its value is never sent.
    let m = wait_condition(
        &policies,
        "no-consent",
        "MetricsAvailable",
        ("False", "MetricsUnavailable"),
    )
    .await;
    assert!(m.contains("pulsar-autoscaler.dev/consent=true"), "{m}");
    wait_condition(
        &policies,
        "consented",
        "MetricsAvailable",
        ("True", "MetricsFresh"),
    )
    .await;

    // The rate-limited policy's dropped step repeats as one Event with a count.
    eventually("a dropped action repeated as one Event", 480, || async {
        let drops: Vec<_> = p
            .events("limited")
            .await
            .into_iter()
            .filter(|e| e.0 == "ActionDropped")
            .collect();
        let subjects: BTreeSet<&str> = drops
            .iter()
            .map(|e| e.1.split(" not carried out").next().unwrap_or_default())
            .collect();
        if drops.len() >= 2 && subjects.len() == 1 {
            Ok(())
        } else {
            Err(format!("{drops:?}"))
        }
    })
    .await;

    // The live policy scales up, down (twice: two Events, one per action) and grows a claim.
    p.set_load(2.0).await;
    eventually("brokers scale up", 480, || async {
        match p.replicas().await {
            n if n >= 6 => Ok(()),
            n => Err(format!("{n}")),
        }
    })
    .await;
    p.set_load(0.5).await;
    eventually("two scale-downs", 480, || async {
        let downs = p
            .events("live")
            .await
            .into_iter()
            .filter(|e| e.0 == "ScaledDown")
            .count();
        if downs >= 2 {
            Ok(())
        } else {
            Err(format!("{downs}"))
        }
    })
    .await;
    eventually("the ledger claim grows", 480, || async {
        let sp = policies.get("live").await.map_err(|e| e.to_string())?;
        let expanded = sp
            .status
            .as_ref()
            .is_some_and(|s| s.decisions.iter().any(|d| d.action == "Expand"));
        if expanded {
            Ok(())
        } else {
            Err("no Expand yet".to_string())
        }
    })
    .await;
    // Direct mode reached the bookie's node through the API server's proxy.
    eventually("Direct asks the kubelet", 480, || async {
        let calls = audit_calls(&audit_log);
        if calls.iter().any(|c| c.resource == "nodes/proxy") {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;

    // Without the flag, insecure TLS is allowed but visible: a warning condition and an Event.
    c.stop();
    let relaxed = vec![format!("--allow-source={}", p.prom.url)];
    let c2 = Run::start(&p, "relaxed", &relaxed);
    let m = wait_condition(
        &policies,
        "insecure",
        "InsecureTLS",
        ("True", "InsecureSkipVerify"),
    )
    .await;
    assert!(m.contains("caSecretRef"), "{m}");
    wait_condition(&policies, "insecure", "Invalid", ("False", "SpecValid")).await;
    eventually("an InsecureSkipVerify Event", 240, || async {
        let events = p.events("insecure").await;
        if events.iter().any(|e| e.0 == "InsecureSkipVerify") {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    let forbidden_events = p.events("forbidden-source").await;
    assert!(
        forbidden_events.iter().any(|e| e.0 == "SourceNotAllowed"),
        "{forbidden_events:?}"
    );

    // The forbidden source never saw a connection.
    assert_eq!(
        trap_hits.load(Ordering::SeqCst),
        0,
        "the controller called a forbidden source"
    );

    // Nothing secret anywhere a tenant or an operator looks.
    let mut seen = Vec::new();
    for sp in policies
        .list(&Default::default())
        .await
        .expect("policies")
        .items
    {
        seen.push((
            format!("status of {}", sp.metadata.name.clone().unwrap_or_default()),
            serde_json::to_string(&sp.status).unwrap_or_default(),
        ));
    }
    for name in [
        "live",
        "forbidden-source",
        "no-consent",
        "consented",
        "insecure",
        "direct",
    ] {
        seen.push((
            format!("events of {name}"),
            format!("{:?}", p.events(name).await),
        ));
    }
    seen.push(("/metrics".into(), c2.metrics().await));
    seen.push(("log of the first run".into(), c.log_text()));
    seen.push(("log of the second run".into(), c2.log_text()));
    for (place, text) in &seen {
        for value in [PLAIN_SECRET, CONSENTED_SECRET] {
            assert!(!text.contains(value), "a Secret's value is in the {place}");
        }
    }
    drop(c2);

    // The audit log: Secrets only ever asked for with the consent label; never `get`.
    let calls = audit_calls(&audit_log);
    for call in calls.iter().filter(|c| c.resource == "secrets") {
        let uri = call.uri.replace("%2F", "/").replace("%3D", "=");
        assert_eq!(call.verb, "list", "{call:?}");
        assert!(
            uri.contains("labelSelector=pulsar-autoscaler.dev/consent=true"),
            "{call:?}"
        );
    }
    assert!(
        calls.iter().any(|c| c.resource == "secrets"),
        "the consented Secret was read"
    );

    // And the permissions used are exactly the permissions granted.
    let (missing, extra) = compare(&calls, &grants(&rbac));
    let used: BTreeSet<String> = calls
        .iter()
        .map(|c| {
            format!(
                "{} {}/{} {}",
                c.verb,
                c.group,
                c.resource,
                if c.namespace.is_empty() {
                    "(cluster)"
                } else {
                    &c.namespace
                }
            )
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "deploy/rbac.yaml is not the controller's exact permission set\nmissing: {missing:#?}\nextra: {extra:#?}\nused: {used:#?}"
    );
}

/// kubectl from `KUBECTL_BIN` or `target/test-env` (scripts/setup.d/30-kubectl.sh writes it).
fn kubectl(args: &[&str], kubeconfig: Option<&Path>) -> String {
    let bin = std::env::var_os("KUBECTL_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let text = std::fs::read_to_string("target/test-env").ok()?;
            text.lines()
                .rev()
                .find_map(|l| l.strip_prefix("KUBECTL_BIN="))
                .map(PathBuf::from)
        })
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("kubectl not found; run scripts/setup.d/30-kubectl.sh or set KUBECTL_BIN")
        });
    let mut cmd = Command::new(bin);
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    let out = cmd.args(args).output().expect("running kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// A live broker policy for the namespaced install: 180 MiB/s at load 1 over 60 MiB/s per broker.
const NAMESPACED_BROKERS: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 2
  maxReplicas: 8
  metrics: [{type: Throughput, targetPerBroker: 60Mi}]
  scaleUp: {stabilizationWindow: 0s, cooldown: 2s, maxStep: {replicas: 4}}
rateLimit: {actionsPerHour: 1000, burst: 100}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_install_needs_only_namespace_permissions() {
    let rendered = yaml_documents(&kubectl(&["kustomize", "deploy/namespaced"], None));
    let kinds: Vec<&str> = rendered.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(
        !kinds.iter().any(|k| k.starts_with("Cluster")),
        "cluster-wide grants in deploy/namespaced: {kinds:?}"
    );
    // The overlay's Deployment is the base's plus `--namespace`, nothing else.
    let base: Value = yaml_documents(&std::fs::read_to_string("deploy/deployment.yaml").unwrap())
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("base Deployment");
    let mut overlay: Value =
        yaml_documents(&std::fs::read_to_string("deploy/namespaced/deployment.yaml").unwrap())
            .into_iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("overlay Deployment");
    let args = overlay["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array_mut()
        .expect("args");
    let at = args
        .iter()
        .position(|a| a.as_str().is_some_and(|a| a.starts_with("--namespace=")))
        .expect("the overlay passes --namespace");
    let watched = args
        .remove(at)
        .as_str()
        .unwrap_or("")
        .trim_start_matches("--namespace=")
        .to_string();
    assert_eq!(watched, NS);
    assert_eq!(
        overlay, base,
        "deploy/namespaced/deployment.yaml drifted from deploy/deployment.yaml"
    );

    let rbac: String = rendered
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("ServiceAccount" | "Role" | "RoleBinding")
            )
        })
        .map(|d| serde_yaml_ng::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    let audit_dir = tempfile::tempdir().expect("temp dir");
    let (args, audit_log) = audit_args(audit_dir.path());
    let mut server = ApiServer::builder();
    for a in &args {
        server = server.arg(a);
    }
    let p = Pulsar::start_with(Shape::default(), server, &rbac).await;

    // The whole overlay passes a server-side dry run (the monitoring CRDs are not needed: it
    // has no monitoring objects).
    let kc = Some(p.api.kubeconfig());
    let out = kubectl(
        &["apply", "--dry-run=server", "-k", "deploy/namespaced"],
        kc,
    );
    assert!(out.contains("deployment.apps/pulsar-autoscaler"), "{out}");
    assert!(out.contains("(server dry run)"), "{out}");

    // A policy in another namespace is out of the controller's reach and stays untouched.
    support::apiserver::ensure_namespace(&p.admin, "elsewhere").await;
    let elsewhere: Api<ScalingPolicy> = Api::namespaced(p.admin.clone(), "elsewhere");
    let other: ScalingPolicy = serde_json::from_value(json!({
        "apiVersion": "pulsar-autoscaler.dev/v1alpha1", "kind": "ScalingPolicy",
        "metadata": {"name": "other", "namespace": "elsewhere"},
        "spec": dry_brokers(json!({"type": "Prometheus", "url": p.prom.url}))}))
    .expect("policy");
    elsewhere
        .create(&PostParams::default(), &other)
        .await
        .expect("policy elsewhere");
    p.create_policy("brokers", NAMESPACED_BROKERS).await;
    let c = Run::start(&p, "namespaced", &[format!("--namespace={NS}")]);
    p.set_load(2.0).await;
    eventually("brokers scale up", 480, || async {
        match p.replicas().await {
            n if n >= 6 => Ok(()),
            n => Err(format!("{n}")),
        }
    })
    .await;
    let events = p.events("brokers").await;
    assert!(events.iter().any(|e| e.0 == "ScaledUp"), "{events:?}");
    drop(c);
    let untouched = elsewhere.get("other").await.expect("policy elsewhere");
    assert!(untouched.status.is_none(), "{:?}", untouched.status);

    // Every call stayed in the two namespaces, and the Roles covered each one.
    let calls = audit_calls(&audit_log);
    assert!(!calls.is_empty(), "no audit events");
    for call in &calls {
        assert!(
            call.namespace == NS || call.namespace == CONTROLLER_NS,
            "a call outside the namespaces: {call:?}"
        );
    }
    let (missing, _) = compare(&calls, &grants(&rbac));
    assert!(
        missing.is_empty(),
        "not granted by deploy/namespaced: {missing:#?}"
    );
}
