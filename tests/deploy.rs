//! `deploy/` as users install it: `kubectl kustomize` renders it, and every manifest, then the
//! whole base, passes `kubectl apply --dry-run=server` against a real API server that has the
//! monitoring operators' published CRDs (tests/fixtures/crds/).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::apiserver::ApiServer;

const SETUP: &str = "scripts/setup.d/30-kubectl.sh";

/// kubectl from `KUBECTL_BIN`, from `target/test-env` (written by the setup step), or on PATH.
fn kubectl() -> PathBuf {
    let from_env = std::env::var_os("KUBECTL_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let from_file = || {
        let text = std::fs::read_to_string("target/test-env").ok()?;
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("KUBECTL_BIN="))
            .map(PathBuf::from)
    };
    let on_path = || {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join("kubectl"))
            .find(|p| p.is_file())
    };
    match from_env.or_else(from_file).or_else(on_path) {
        Some(p) if p.is_file() => p,
        other => panic!(
            "kubectl not found ({other:?}); run {SETUP} (or scripts/test.sh, which runs every \
             setup step), or set KUBECTL_BIN"
        ),
    }
}

fn run(args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let mut cmd = Command::new(kubectl());
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"))
}

/// Runs kubectl and fails the test with its output unless it succeeds; returns stdout and stderr.
fn ok(args: &[&str], kubeconfig: Option<&Path>) -> (String, String) {
    let out = run(args, kubeconfig);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the rendered base"))
}

/// The overlays with the monitoring objects, applied after the base where an operator runs.
const MONITORING: [&str; 2] = ["deploy/monitoring/", "deploy/monitoring/victoriametrics/"];

/// Manifests of the base: every YAML file directly in deploy/ except the kustomization.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("deploy")
        .expect("deploy/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_base_renders_every_manifest_and_no_example() {
    let (rendered, _) = ok(&["kustomize", "deploy/"], None);
    let docs = documents(&rendered);
    let mut kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Namespace",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    );
    // Every file of the base is in the kustomization (examples/ is a directory, left out).
    let kustomization: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string("deploy/kustomization.yaml").unwrap())
            .unwrap();
    let mut listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    listed.sort();
    let files: Vec<String> = manifests()
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        listed, files,
        "deploy/*.yaml and the kustomization's resources"
    );
    assert!(
        !docs.iter().any(|d| d["kind"] == "ScalingPolicy"),
        "examples/ must stay out of the base"
    );
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        let cluster_scoped = matches!(
            kind,
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        if !cluster_scoped {
            assert_eq!(d["metadata"]["namespace"], "pulsar-autoscaler", "{kind}");
        }
    }
    assert_eq!(
        std::fs::read_to_string("deploy/crd.yaml").unwrap(),
        std::fs::read_to_string("crds/scalingpolicy.yaml").unwrap(),
        "deploy/crd.yaml differs from crds/scalingpolicy.yaml: run `make crd`"
    );

    let deployment = find(&docs, "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "pulsar-autoscaler");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--leader-election"), "{args:?}");
    assert!(args.contains(&"--metrics-addr=0.0.0.0:8080"), "{args:?}");
    let env = c["env"].as_array().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        assert!(
            env.iter()
                .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == field),
            "{name} from the downward API"
        );
    }
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource}"
            );
        }
    }
    assert_eq!(c["ports"][0]["name"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");

    // The Service selects the pods; both scrape objects (in the monitoring overlays) select the
    // Service and its port, and keep the controller's own `namespace` label.
    let pod_labels = &spec["template"]["metadata"]["labels"];
    let service = find(&docs, "Service");
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "Service selector {k}");
    }
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    let mut monitoring = Vec::new();
    for overlay in MONITORING {
        let (rendered, _) = ok(&["kustomize", overlay], None);
        monitoring.extend(documents(&rendered));
    }
    let mut kinds: Vec<&str> = monitoring
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["PrometheusRule", "ServiceMonitor", "VMServiceScrape"]
    );
    for d in &monitoring {
        assert_eq!(d["metadata"]["namespace"], "pulsar-autoscaler");
    }
    for kind in ["ServiceMonitor", "VMServiceScrape"] {
        let scrape = find(&monitoring, kind);
        for (k, v) in scrape["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(&service["metadata"]["labels"][k], v, "{kind} selector {k}");
        }
        assert_eq!(scrape["spec"]["endpoints"][0]["port"], "metrics", "{kind}");
        assert_eq!(
            scrape["spec"]["endpoints"][0]["honorLabels"], true,
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manifest_and_the_base_pass_a_server_side_dry_run() {
    let server = ApiServer::start().await;
    let kc = Some(server.kubeconfig());
    // A cluster without the Prometheus operator: the README's install command works as it is,
    // twice (upgrades re-apply the same base), and only the monitoring overlays need the CRDs.
    let (first, _) = ok(&["apply", "-k", "deploy/"], kc);
    assert!(
        first.contains("deployment.apps/pulsar-autoscaler created"),
        "{first}"
    );
    let (again, _) = ok(&["apply", "-k", "deploy/"], kc);
    assert!(
        again.contains("unchanged") && !again.contains("created"),
        "{again}"
    );
    for overlay in MONITORING {
        let out = run(&["apply", "-k", overlay], kc);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("no matches for kind"),
            "{overlay} needs its operator's CRDs: {stderr}"
        );
    }

    // The operators' CRDs, as a cluster running prometheus-operator and vm-operator has them.
    ok(
        &["apply", "--server-side", "-f", "tests/fixtures/crds/"],
        kc,
    );
    ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ],
        kc,
    );
    // The namespace exists from the install above; a dry run would create nothing.

    for file in manifests() {
        let path = file.to_string_lossy().into_owned();
        let (stdout, stderr) = ok(&["apply", "--dry-run=server", "-f", &path], kc);
        // The namespace enforces and warns on the restricted Pod Security level; a warning means
        // the pod template stopped meeting it.
        assert!(
            !stderr.contains("Warning"),
            "{path} applies with warnings:\n{stderr}"
        );
        assert!(stdout.contains("(server dry run)"), "{path}: {stdout}");
    }

    let (stdout, stderr) = ok(&["apply", "-k", "deploy/", "--dry-run=server"], kc);
    assert!(!stderr.contains("Warning"), "{stderr}");
    assert!(
        stdout.contains("deployment.apps/pulsar-autoscaler"),
        "{stdout}"
    );

    // And for real: the base, then one more command per operator for its objects.
    ok(&["apply", "-k", "deploy/"], kc);
    let (again, _) = ok(&["apply", "-k", "deploy/"], kc);
    assert!(again.contains("unchanged"), "{again}");
    let mut applied = String::new();
    for overlay in MONITORING {
        applied.push_str(&ok(&["apply", "-k", overlay], kc).0);
    }
    for object in [
        "servicemonitor.monitoring.coreos.com/pulsar-autoscaler",
        "vmservicescrape.operator.victoriametrics.com/pulsar-autoscaler",
        "prometheusrule.monitoring.coreos.com/pulsar-autoscaler",
    ] {
        assert!(applied.contains(object), "{object} not applied:\n{applied}");
    }
    let (json, _) = ok(
        &[
            "-n",
            "pulsar-autoscaler",
            "get",
            "deployment/pulsar-autoscaler",
            "-o",
            "json",
        ],
        kc,
    );
    let deployment: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "pulsar-autoscaler:0.1.0"
    );
    // The ServiceAccount may take the Lease in its own namespace, as leader election needs.
    let (can, _) = ok(
        &[
            "auth",
            "can-i",
            "patch",
            "leases.coordination.k8s.io",
            "-n",
            "pulsar-autoscaler",
            "--as=system:serviceaccount:pulsar-autoscaler:pulsar-autoscaler",
        ],
        kc,
    );
    assert_eq!(can.trim(), "yes");
}
