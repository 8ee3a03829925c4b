//! The Helm chart in `charts/pulsar-autoscaler/` as users install it: `helm lint` passes, what
//! `helm template` renders (default values, namespace-scoped mode with allowed sources and every
//! monitoring object) passes `kubectl apply --dry-run=server` against a real kube-apiserver, and
//! `helm install`, `helm upgrade` and `helm uninstall` work there. Its CRD and alert rules are the
//! repository's own.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::apiserver::{ApiServer, from_test_env};

const CHART: &str = "charts/pulsar-autoscaler";
const HELM_SETUP: &str = "scripts/setup.d/60-helm.sh";
const KUBECTL_SETUP: &str = "scripts/setup.d/30-kubectl.sh";

/// A tool from its environment variable, from `target/test-env` (written by its setup step), or
/// on PATH; a test that cannot find it fails and says how to get it.
fn tool(var: &str, name: &str, setup: &str) -> PathBuf {
    let from_env = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let on_path = || {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    match from_env.or_else(|| from_test_env(var)).or_else(on_path) {
        Some(p) if p.is_file() => p,
        other => panic!(
            "{name} not found ({other:?}); run {setup} (or scripts/test.sh, which runs every \
             setup step), or set {var}"
        ),
    }
}

fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let mut cmd = Command::new(tool("HELM_BIN", "helm", HELM_SETUP));
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    // Helm keeps its caches and repository settings per user; keep the tests' apart.
    let home = std::env::temp_dir().join("pulsar-autoscaler-helm-tests");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running helm {args:?}: {e}"))
}

/// Runs a command and fails the test with its output unless it succeeds; returns stdout.
fn ok(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

fn kubectl(args: &[&str], kubeconfig: &Path, stdin: Option<&str>) -> Output {
    let mut child = Command::new(tool("KUBECTL_BIN", "kubectl", KUBECTL_SETUP))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"));
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing to kubectl");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("waiting for kubectl")
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .filter_map(|d| d["kind"].as_str().map(String::from))
        .collect();
    k.sort();
    k
}

/// Values for namespace-scoped mode with allowed sources and every monitoring object.
const SCOPED: [&str; 10] = [
    "--set",
    "watchNamespace=pulsar",
    "--set",
    "allowedSources={http://prometheus.monitoring:9090,https://vm.monitoring/select/0}",
    "--set",
    "monitoring.serviceMonitor.enabled=true",
    "--set",
    "monitoring.vmServiceScrape.enabled=true",
    "--set",
    "monitoring.prometheusRule.enabled=true",
];

#[test]
fn the_chart_lints_and_carries_the_repositorys_crd_and_rules() {
    ok("helm lint", helm(&["lint", "--strict", CHART], None));
    let mut args = vec!["lint", "--strict", CHART];
    args.extend(SCOPED);
    ok("helm lint (scoped)", helm(&args, None));

    assert_eq!(
        std::fs::read_to_string(format!("{CHART}/crds/scalingpolicy.yaml")).unwrap(),
        std::fs::read_to_string("crds/scalingpolicy.yaml").unwrap(),
        "the chart's CRD differs from crds/scalingpolicy.yaml: run `make crd`"
    );
    let mut args = vec!["template", "pa", CHART];
    args.extend(SCOPED);
    let docs = documents(&ok("helm template", helm(&args, None)));
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let base: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string("deploy/monitoring/prometheusrule.yaml").unwrap(),
    )
    .unwrap();
    assert_eq!(
        rule["spec"], base["spec"],
        "the chart's alert rules differ from deploy/monitoring/prometheusrule.yaml"
    );

    // Two replicas without leader election would both act: refused at render time.
    let refused = helm(
        &[
            "template",
            "pa",
            CHART,
            "--set",
            "leaderElection.enabled=false",
        ],
        None,
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("leaderElection"));
}

#[test]
fn values_select_scope_sources_and_monitoring() {
    let defaults = documents(&ok(
        "helm template",
        helm(&["template", "pa", CHART, "-n", "pulsar-autoscaler"], None),
    ));
    assert_eq!(
        kinds(&defaults),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ],
        "no monitoring object unless asked for"
    );
    let deployment = defaults.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(c["image"], "pulsar-autoscaler:0.1.0");
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--leader-election"), "{args:?}");
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "{args:?}"
    );

    let mut a = vec!["template", "pa", CHART, "-n", "pulsar-autoscaler"];
    a.extend(SCOPED);
    let scoped = documents(&ok("helm template", helm(&a, None)));
    let k = kinds(&scoped);
    assert!(!k.iter().any(|k| k.starts_with("Cluster")), "{k:?}");
    for kind in ["ServiceMonitor", "VMServiceScrape", "PrometheusRule"] {
        assert!(k.iter().any(|x| x == kind), "{kind} missing: {k:?}");
    }
    let role = scoped
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "pulsar")
        .expect("a Role in the watched namespace");
    assert!(!role["rules"].to_string().contains("nodes/proxy"));
    let deployment = scoped.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "--namespace=pulsar",
        "--allow-source=http://prometheus.monitoring:9090",
        "--allow-source=https://vm.monitoring/select/0",
    ] {
        assert!(args.contains(&want), "{want} missing: {args:?}");
    }
    let monitor = scoped
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .unwrap();
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    // The alerts match job="pulsar-autoscaler" whatever the release is called.
    assert_eq!(monitor["spec"]["jobLabel"], "app.kubernetes.io/name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_apply_and_the_release_installs_upgrades_and_uninstalls() {
    let server = ApiServer::start().await;
    let kc = server.kubeconfig();
    // The operators' CRDs, as a cluster running prometheus-operator and vm-operator has them.
    ok(
        "kubectl apply CRDs",
        kubectl(
            &["apply", "--server-side", "-f", "tests/fixtures/crds/"],
            kc,
            None,
        ),
    );
    ok(
        "kubectl wait",
        kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                "--all",
            ],
            kc,
            None,
        ),
    );
    for ns in ["pulsar-autoscaler", "pulsar"] {
        ok("namespace", kubectl(&["create", "namespace", ns], kc, None));
    }
    // The chart's CRD (helm installs crds/ first), then every rendering with a server dry run.
    ok(
        "kubectl apply CRD",
        kubectl(&["apply", "-f", &format!("{CHART}/crds/")], kc, None),
    );
    for values in [&[][..], &SCOPED[..]] {
        let mut a = vec!["template", "pa", CHART, "-n", "pulsar-autoscaler"];
        a.extend(values);
        let rendered = ok("helm template", helm(&a, None));
        let out = kubectl(
            &["apply", "--dry-run=server", "-f", "-"],
            kc,
            Some(&rendered),
        );
        let stdout = ok("kubectl apply --dry-run=server", out);
        assert!(
            stdout.contains("deployment.apps/pa-pulsar-autoscaler created (server dry run)"),
            "{stdout}"
        );
    }

    // Install, namespace-scoped with monitoring; the release and its objects are there.
    let mut a = vec!["install", "pa", CHART, "-n", "pulsar-autoscaler"];
    a.extend(SCOPED);
    ok("helm install", helm(&a, Some(kc)));
    let get = |what: &str, ns: &str| -> Value {
        let out = kubectl(&["-n", ns, "get", what, "-o", "json"], kc, None);
        serde_json::from_str(&ok(&format!("get {what}"), out)).unwrap()
    };
    let deployment = get("deployment/pa-pulsar-autoscaler", "pulsar-autoscaler");
    assert_eq!(deployment["spec"]["replicas"], 2);
    get("role/pa-pulsar-autoscaler", "pulsar");
    get("servicemonitor/pa-pulsar-autoscaler", "pulsar-autoscaler");
    get("prometheusrule/pa-pulsar-autoscaler", "pulsar-autoscaler");
    let status = ok(
        "helm status",
        helm(&["status", "pa", "-n", "pulsar-autoscaler"], Some(kc)),
    );
    assert!(status.contains("STATUS: deployed"), "{status}");

    // Upgrade: one more allowed source, three replicas, JSON logs, the monitoring objects off.
    ok(
        "helm upgrade",
        helm(
            &[
                "upgrade",
                "pa",
                CHART,
                "-n",
                "pulsar-autoscaler",
                "--set",
                "watchNamespace=pulsar",
                "--set",
                "replicaCount=3",
                "--set",
                "logFormat=json",
                "--set",
                "allowedSources={http://prometheus.monitoring:9090}",
            ],
            Some(kc),
        ),
    );
    let deployment = get("deployment/pa-pulsar-autoscaler", "pulsar-autoscaler");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--log-format=json"), "{args}");
    assert!(!args.contains("https://vm.monitoring"), "{args}");
    let gone = kubectl(
        &[
            "-n",
            "pulsar-autoscaler",
            "get",
            "servicemonitor/pa-pulsar-autoscaler",
        ],
        kc,
        None,
    );
    assert!(
        !gone.status.success(),
        "disabled ServiceMonitor removed on upgrade"
    );
    let history = ok(
        "helm history",
        helm(&["history", "pa", "-n", "pulsar-autoscaler"], Some(kc)),
    );
    assert!(history.lines().count() >= 3, "two revisions: {history}");

    // Uninstall: the release's objects go; the CRD (and so every policy) stays.
    ok(
        "helm uninstall",
        helm(
            &["uninstall", "pa", "-n", "pulsar-autoscaler", "--wait"],
            Some(kc),
        ),
    );
    for (what, ns) in [
        ("deployment/pa-pulsar-autoscaler", "pulsar-autoscaler"),
        ("role/pa-pulsar-autoscaler", "pulsar"),
        ("serviceaccount/pa-pulsar-autoscaler", "pulsar-autoscaler"),
    ] {
        let out = kubectl(&["-n", ns, "get", what], kc, None);
        assert!(!out.status.success(), "{what} left after uninstall");
    }
    let list = ok(
        "helm list",
        helm(&["list", "-n", "pulsar-autoscaler", "-q"], Some(kc)),
    );
    assert!(list.trim().is_empty(), "{list}");
    ok(
        "CRD kept",
        kubectl(
            &["get", "crd", "scalingpolicies.pulsar-autoscaler.dev"],
            kc,
            None,
        ),
    );
}
