//! The ScalingPolicy CRD against a real kube-apiserver: it installs, serves the examples,
//! rejects bad policies with our messages (and `validate` agrees), and has the status
//! subresource and printer columns the controller and kubectl rely on.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};

use pulsar_autoscaler::api::{FIELD_MANAGER, ScalingPolicy};
use pulsar_autoscaler::policy::check_yaml;
use support::apiserver::{ApiServer, apply_crd, ensure_namespace};

const NAMESPACE: &str = "pulsar";

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The CRD exactly as committed in crds/, which is what users install.
fn committed_crd() -> CustomResourceDefinition {
    serde_yaml_ng::from_str(&repo_file("crds/scalingpolicy.yaml")).unwrap()
}

/// Starts a server with the committed CRD installed and the `pulsar` namespace created.
async fn server_with_crd() -> (ApiServer, Client) {
    let server = ApiServer::start().await;
    let client = server.client().await;
    apply_crd(&client, &committed_crd()).await;
    ensure_namespace(&client, NAMESPACE).await;
    (server, client)
}

fn policies(client: &Client) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<ScalingPolicy>(&());
    Api::namespaced_with(client.clone(), NAMESPACE, &resource)
}

/// Creates the object as written (no client-side defaults), in our namespace.
async fn create(client: &Client, yaml: &str) -> Result<DynamicObject, kube::Error> {
    let mut value: Value = serde_yaml_ng::from_str(yaml).unwrap();
    value["metadata"]["namespace"] = json!(NAMESPACE);
    let object: DynamicObject = serde_json::from_value(value).unwrap();
    policies(client)
        .create(&PostParams::default(), &object)
        .await
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = serde_yaml_ng::to_string(&ScalingPolicy::crd()).unwrap();
    assert!(
        generated == repo_file("crds/scalingpolicy.yaml"),
        "crds/scalingpolicy.yaml is stale; regenerate it with `make crd`"
    );
}

#[tokio::test]
async fn crd_is_structural_and_established() {
    let server = ApiServer::start().await;
    let crd = apply_crd(&server.client().await, &committed_crd()).await;
    let conditions = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let status_of = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
    };
    assert_eq!(status_of("Established").as_deref(), Some("True"));
    assert_eq!(status_of("NamesAccepted").as_deref(), Some("True"));
    // A v1 CRD with a non-structural schema is refused outright; the condition must not appear.
    assert_eq!(status_of("NonStructuralSchema"), None, "{conditions:?}");
    let accepted = crd.status.and_then(|s| s.accepted_names).unwrap();
    assert_eq!(accepted.kind, "ScalingPolicy");
    assert_eq!(accepted.short_names, Some(vec!["sp".to_string()]));
}

#[tokio::test]
async fn every_example_is_accepted() {
    let (_server, client) = server_with_crd().await;
    let mut dir: Vec<_> =
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
    dir.sort();
    assert!(!dir.is_empty(), "deploy/examples has no YAML files");
    for path in dir {
        let text = std::fs::read_to_string(&path).unwrap();
        let created = create(&client, &text).await;
        assert!(
            created.is_ok(),
            "{}: API server refused it: {:?}",
            path.display(),
            created.err()
        );
        let problems = check_yaml(&text);
        assert!(
            problems.is_empty(),
            "{}: validate disagrees with the API server: {problems:?}",
            path.display()
        );
    }
}

/// A policy around the given `spec:` body (indented by two spaces).
fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: pulsar-autoscaler.dev/v1alpha1\nkind: ScalingPolicy\n\
         metadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// Brokers spec with one metric line replaced, for the metric cases.
fn brokers_with_metric(metric: &str) -> String {
    format!(
        "  brokers:\n    statefulSet: pulsar-broker\n    minReplicas: 1\n    maxReplicas: 5\n    \
         metrics:\n{metric}"
    )
}

const BOOKIES: &str = "  bookies:\n    statefulSet: pulsar-bookie\n    maxSize: 2Ti\n";

/// Invalid policies, each with the text the API server must show the user.
fn invalid_cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "min-above-max",
            "  brokers:\n    statefulSet: pulsar-broker\n    minReplicas: 5\n    maxReplicas: 3\n    \
             metrics:\n      - {type: Throughput, targetPerBroker: 50Mi}\n"
                .to_string(),
            "minReplicas must not exceed maxReplicas",
        ),
        (
            "negative-target",
            brokers_with_metric("      - {type: Throughput, targetPerBroker: -5Mi}\n"),
            "targetPerBroker must be a positive quantity such as 50Mi or 20000",
        ),
        (
            "zero-target",
            brokers_with_metric("      - {type: MessageRate, targetPerBroker: \"0\"}\n"),
            "targetPerBroker must be a positive quantity such as 50Mi or 20000",
        ),
        (
            "utilization-150",
            brokers_with_metric("      - {type: HeapMemory, targetUtilization: 150}\n"),
            "targetUtilization must be in (0, 100]",
        ),
        (
            "custom-without-query",
            brokers_with_metric("      - {type: Custom, name: backlog, targetPerBroker: \"1000\"}\n"),
            "a Custom metric needs both name and query",
        ),
        (
            "expand-at-100",
            format!("{BOOKIES}    expandAtUsedPercent: 100\n"),
            "expandAtUsedPercent must be in (0, 100)",
        ),
        (
            "unknown-metric-type",
            brokers_with_metric("      - {type: Latency, targetPerBroker: \"10\"}\n"),
            "Unsupported value: \"Latency\"",
        ),
        (
            "nothing-to-scale",
            "  interval: 30s\n".to_string(),
            "set at least one of brokers or bookies",
        ),
        (
            "drain-without-admin",
            brokers_with_metric(
                "      - {type: Throughput, targetPerBroker: 50Mi}\n    scaleDown: {drain: {timeout: 5m}}\n",
            ),
            "scaleDown.drain and scaleUp.rebalance need brokers.admin",
        ),
        (
            "drain-under-scale-up",
            brokers_with_metric(
                "      - {type: Throughput, targetPerBroker: 50Mi}\n    admin: {port: 8080}\n    scaleUp: {drain: {}}\n",
            ),
            "drain belongs under scaleDown",
        ),
        (
            "admin-port-zero",
            brokers_with_metric(
                "      - {type: Throughput, targetPerBroker: 50Mi}\n    admin: {port: 0}\n",
            ),
            "admin.port must be in [1, 65535]",
        ),
        (
            "bad-duration",
            format!("  interval: 15x\n{BOOKIES}"),
            "should match '^([0-9]+(ms|s|m|h|d))+$'",
        ),
    ]
}

#[tokio::test]
async fn invalid_policies_are_rejected_with_our_messages_and_validate_agrees() {
    let (_server, client) = server_with_crd().await;
    // The cases differ from this valid policy in one place each; it must pass both checks.
    let valid = policy(
        "valid",
        &format!(
            "{}{BOOKIES}",
            brokers_with_metric("      - {type: Throughput, targetPerBroker: 50Mi}\n")
        ),
    );
    assert!(check_yaml(&valid).is_empty(), "{:?}", check_yaml(&valid));
    create(&client, &valid).await.unwrap();

    let mut failures = Vec::new();
    for (name, spec, expected) in invalid_cases() {
        let yaml = policy(name, &spec);
        let server_says = match create(&client, &yaml).await {
            Ok(_) => None,
            Err(kube::Error::Api(e)) if e.code == 422 => Some(e.message.clone()),
            Err(e) => panic!("{name}: unexpected error: {e}"),
        };
        let validate_says: Vec<String> = check_yaml(&yaml)
            .into_iter()
            .map(|p| p.problem.to_string())
            .collect();
        match &server_says {
            None => failures.push(format!("{name}: API server accepted it")),
            Some(message) if !message.contains(expected) => failures.push(format!(
                "{name}: API server message lacks {expected:?}: {message}"
            )),
            Some(_) => {}
        }
        if validate_says.is_empty() {
            failures.push(format!(
                "{name}: validate accepts what the API server rejects: {server_says:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Edge cases beyond the messages above: `validate` must accept exactly what the API server
/// accepts (true) and refuse what it refuses (false).
fn agreement_cases() -> Vec<(&'static str, String, bool)> {
    let brokers = |extra: &str| {
        format!(
            "  brokers:\n    statefulSet: pulsar-broker\n    maxReplicas: 5\n{extra}    \
             metrics:\n      - {{type: Throughput, targetPerBroker: 50Mi}}\n"
        )
    };
    vec![
        (
            "integer-target",
            brokers_with_metric("      - {type: MessageRate, targetPerBroker: 20000}\n"),
            true,
        ),
        (
            "fraction-target",
            brokers_with_metric("      - {type: MessageRate, targetPerBroker: \"0.5\"}\n"),
            true,
        ),
        (
            "milli-target",
            brokers_with_metric("      - {type: MessageRate, targetPerBroker: 100m}\n"),
            true,
        ),
        (
            "word-target",
            brokers_with_metric("      - {type: MessageRate, targetPerBroker: lots}\n"),
            false,
        ),
        (
            "unquoted-fraction",
            brokers_with_metric("      - {type: MessageRate, targetPerBroker: 0.5}\n"),
            false,
        ),
        (
            "unquoted-fraction-max-size",
            "  bookies:\n    statefulSet: pulsar-bookie\n    maxSize: 1.5\n".into(),
            false,
        ),
        (
            "zero-max-size",
            "  bookies:\n    statefulSet: pulsar-bookie\n    maxSize: \"0\"\n".into(),
            false,
        ),
        (
            "negative-increase",
            format!("{BOOKIES}    increase: {{minimum: -1Gi}}\n"),
            false,
        ),
        (
            "zero-increase",
            format!("{BOOKIES}    increase: {{minimum: \"0\"}}\n"),
            true,
        ),
        (
            "interval-in-days",
            format!("  interval: 1d\n{BOOKIES}"),
            true,
        ),
        ("min-replicas-zero", brokers("    minReplicas: 0\n"), false),
        ("tolerance-one", brokers("    tolerance: 1.0\n"), false),
        (
            "ftp-url",
            format!("  metricsSource: {{url: ftp://prometheus}}\n{BOOKIES}"),
            false,
        ),
        (
            "victoriametrics-without-url",
            format!("  metricsSource: {{type: VictoriaMetrics}}\n{BOOKIES}"),
            false,
        ),
        (
            "both-auth-kinds",
            format!(
                "  metricsSource:\n    url: http://prometheus:9090\n    auth:\n      \
             bearerTokenSecretRef: {{name: s, key: token}}\n      basicAuthSecretRef: {{name: s}}\n{BOOKIES}"
            ),
            false,
        ),
        (
            "no-metrics",
            "  brokers:\n    statefulSet: pulsar-broker\n    maxReplicas: 5\n    metrics: []\n"
                .into(),
            false,
        ),
        (
            "utilization-on-throughput",
            brokers_with_metric("      - {type: Throughput, targetUtilization: 50}\n"),
            false,
        ),
        (
            "custom-without-name",
            brokers_with_metric("      - {type: Custom, query: sum(x), targetPerBroker: \"1\"}\n"),
            false,
        ),
        (
            "empty-max-step",
            brokers("    scaleUp: {maxStep: {}}\n"),
            false,
        ),
        (
            "zero-rate",
            format!("{BOOKIES}  rateLimit: {{actionsPerHour: 0}}\n"),
            false,
        ),
    ]
}

#[tokio::test]
async fn validate_agrees_with_the_api_server_on_edge_cases() {
    let (_server, client) = server_with_crd().await;
    let mut failures = Vec::new();
    for (name, spec, valid) in agreement_cases() {
        let yaml = policy(name, &spec);
        let server_says = match create(&client, &yaml).await {
            Ok(_) => None,
            Err(kube::Error::Api(e)) if e.code == 422 => Some(e.message.clone()),
            Err(e) => panic!("{name}: unexpected error: {e}"),
        };
        let validate_says: Vec<String> = check_yaml(&yaml)
            .into_iter()
            .map(|p| p.problem.to_string())
            .collect();
        if server_says.is_none() != valid {
            failures.push(format!(
                "{name}: API server: {server_says:?}, expected valid={valid}"
            ));
        }
        if validate_says.is_empty() != valid {
            failures.push(format!(
                "{name}: validate: {validate_says:?}, expected valid={valid}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn status_subresource_and_printer_columns() {
    let (_server, client) = server_with_crd().await;
    let yaml = policy(
        "brokers",
        &brokers_with_metric("      - {type: Throughput, targetPerBroker: 50Mi}\n"),
    );
    create(&client, &yaml).await.unwrap();
    let api: Api<ScalingPolicy> = Api::namespaced(client.clone(), NAMESPACE);

    let status = json!({
        "apiVersion": "pulsar-autoscaler.dev/v1alpha1",
        "kind": "ScalingPolicy",
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "NoData",
                 "message": "no usable metric", "lastTransitionTime": "2026-01-02T03:04:05Z"},
                {"type": "MetricsAvailable", "status": "False", "reason": "MetricsUnavailable",
                 "message": "no usable metric", "lastTransitionTime": "2026-01-02T03:04:05Z"}
            ],
            "brokers": {"currentReplicas": 3, "desiredReplicas": 5},
            "decisions": [{
                "time": "2026-01-02T03:04:05Z",
                "target": "statefulset/pulsar-broker",
                "action": "ScaleUp",
                "from": 3,
                "to": 5,
                "reason": "throughput 230Mi/s over 50Mi per broker",
                "dryRun": true
            }]
        }
    });
    let params = PatchParams::apply(FIELD_MANAGER);
    api.patch_status("brokers", &params, &Patch::Apply(&status))
        .await
        .unwrap();

    let read = api.get("brokers").await.unwrap();
    let got = read.status.clone().unwrap();
    let brokers = got.brokers.unwrap();
    assert_eq!((brokers.current_replicas, brokers.desired_replicas), (3, 5));
    assert_eq!(got.decisions[0].action, "ScaleUp");
    assert_eq!(got.observed_generation, Some(1));
    let managers = read.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.subresource.as_deref() == Some("status")),
        "{FIELD_MANAGER} does not own the status: {managers:?}"
    );

    // With the subresource, a status change through the main resource is ignored.
    let mut changed = read.clone();
    changed.metadata.managed_fields = None;
    if let Some(b) = changed.status.as_mut().and_then(|s| s.brokers.as_mut()) {
        b.desired_replicas = 9;
    }
    let replaced = api
        .replace("brokers", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(
        replaced.status.unwrap().brokers.unwrap().desired_replicas,
        5
    );

    // The table kubectl prints: our columns, filled from spec and status.
    let request = http::Request::get(format!(
        "/apis/pulsar-autoscaler.dev/v1alpha1/namespaces/{NAMESPACE}/scalingpolicies/brokers"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: Value = serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Ready",
            "Target",
            "Current",
            "Desired",
            "Metrics",
            "Dry Run",
            "Last Action",
            "Last Dry Run",
            "Reason",
            "Age"
        ]
    );
    // Readiness, metrics and dry-run at a glance; the reason and the newest decision's dry-run
    // flag only with `-o wide` (priority 1).
    let wide: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) > 0)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(wide, ["Last Dry Run", "Reason"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "brokers");
    assert_eq!(cells[1], "False");
    assert_eq!(cells[2], "pulsar-broker");
    assert_eq!(cells[3], 3);
    assert_eq!(cells[4], 5);
    assert_eq!(cells[5], "False");
    assert_eq!(cells[6], false);
    assert_eq!(cells[7], "ScaleUp");
    assert_eq!(cells[8], true);
    assert_eq!(cells[9], "NoData");
}
