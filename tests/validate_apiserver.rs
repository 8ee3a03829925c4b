//! `validate` against a real kube-apiserver, variant by variant: every policy the API server
//! refuses when created the way `kubectl create`/`kubectl apply` creates it (strict field
//! validation, the committed CRD installed), `validate` refuses too, naming the field, quoting
//! the bad value and suggesting the spelling the server takes; what the server accepts,
//! `validate` accepts.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use serde_json::Value;

use pulsar_autoscaler::policy::check_yaml;
use support::apiserver::{ApiServer, apply_crd, ensure_namespace};

const NAMESPACE: &str = "pulsar";

/// A valid policy with `{...}` slots the variants fill in.
const TEMPLATE: &str = "apiVersion: pulsar-autoscaler.dev/v1alpha1
kind: ScalingPolicy
metadata:
  name: NAME
  namespace: pulsar
METADATA_EXTRA
spec:
  interval: INTERVAL
SPEC_EXTRA
  brokers:
    statefulSet: pulsar-broker
    maxReplicas: MAX
BROKERS_EXTRA
    metrics:
      - {type: TYPE, targetPerBroker: 50Mi}
";

/// One variant: its name, the slot replacements, and for a refused one the field path and a
/// piece of the message `validate` must print (`None` = the server accepts it).
struct Variant {
    name: &'static str,
    slots: Vec<(&'static str, &'static str)>,
    refused: Option<(&'static str, &'static str)>,
    /// The server stores it, but the controller cannot work with it, so `validate` refuses it.
    controller_only: bool,
}

fn render(slots: &[(&str, &str)]) -> String {
    let defaults = [
        ("NAME", "pulsar"),
        ("METADATA_EXTRA", ""),
        ("INTERVAL", "15s"),
        ("SPEC_EXTRA", ""),
        ("MAX", "10"),
        ("BROKERS_EXTRA", ""),
        ("TYPE", "Throughput"),
    ];
    let mut text = TEMPLATE.to_string();
    for (slot, default) in defaults {
        let value = slots
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(default, |(_, v)| *v);
        text = text.replace(slot, value);
    }
    // Empty slots leave blank lines, which YAML ignores.
    text
}

fn variants() -> Vec<Variant> {
    let v = |name, slots, refused| Variant {
        name,
        slots,
        refused,
        controller_only: false,
    };
    vec![
        v("valid", vec![], None),
        v("dotted-name", vec![("NAME", "pulsar.prod-1")], None),
        v("compound-duration", vec![("INTERVAL", "1h30m")], None),
        v(
            "labels",
            vec![(
                "METADATA_EXTRA",
                "  labels: {app.kubernetes.io/name: pulsar}",
            )],
            None,
        ),
        v(
            "dryrun-lowercase",
            vec![("SPEC_EXTRA", "  dryrun: true")],
            Some(("spec.dryrun", "did you mean \"dryRun\"")),
        ),
        v(
            "dry-run-kebab",
            vec![("SPEC_EXTRA", "  dry-run: true")],
            Some(("spec.dry-run", "did you mean \"dryRun\"")),
        ),
        v(
            "min-replica",
            vec![("BROKERS_EXTRA", "    minReplica: 2")],
            Some(("spec.brokers.minReplica", "did you mean \"minReplicas\"")),
        ),
        v(
            "unknown-top-level",
            vec![("METADATA_EXTRA", "specs: {}")],
            Some(("specs", "did you mean \"spec\"")),
        ),
        v(
            "unknown-metadata-field",
            vec![("METADATA_EXTRA", "  label: {a: b}")],
            Some(("metadata.label", "did you mean \"labels\"")),
        ),
        v(
            "interval-5min",
            vec![("INTERVAL", "5min")],
            Some(("spec.interval", "\"5min\" is not a duration")),
        ),
        v(
            "interval-with-space",
            vec![("INTERVAL", "\"1h 30m\"")],
            Some(("spec.interval", "did you mean \"1h30m\"")),
        ),
        v(
            "interval-15sec",
            vec![("INTERVAL", "15sec")],
            Some(("spec.interval", "did you mean \"15s\"")),
        ),
        v(
            "cooldown-minutes",
            vec![("BROKERS_EXTRA", "    scaleDown: {cooldown: 5minutes}")],
            Some(("spec.brokers.scaleDown.cooldown", "did you mean \"5m\"")),
        ),
        v(
            "name-uppercase-underscore",
            vec![("NAME", "Bad_Name")],
            Some(("metadata.name", "did you mean \"bad-name\"")),
        ),
        v(
            "name-trailing-dash",
            vec![("NAME", "pulsar-")],
            Some(("metadata.name", "\"pulsar-\"")),
        ),
        v(
            "bad-label-value",
            vec![("METADATA_EXTRA", "  labels: {team: \"a b\"}")],
            Some(("metadata.labels.team", "\"a b\"")),
        ),
        v(
            "source-type-lowercase",
            vec![(
                "SPEC_EXTRA",
                "  metricsSource: {type: prometheus, url: \"http://prom:9090\"}",
            )],
            Some(("spec.metricsSource.type", "did you mean \"Prometheus\"")),
        ),
        v(
            "metric-type-typo",
            vec![("TYPE", "Througput")],
            Some((
                "spec.brokers.metrics[0].type",
                "did you mean \"Throughput\"",
            )),
        ),
        v(
            "replicas-as-string",
            vec![("MAX", "\"10\"")],
            Some(("spec.brokers.maxReplicas", "\"10\" must be a whole number")),
        ),
        // The API server does not enforce `format: int32`; the controller cannot read the value.
        Variant {
            controller_only: true,
            ..v(
                "replicas-beyond-int32",
                vec![("MAX", "3000000000")],
                Some(("spec.brokers.maxReplicas", "3000000000 is out of range")),
            )
        },
        v(
            "dry-run-as-string",
            vec![("SPEC_EXTRA", "  dryRun: \"yes\"")],
            Some(("spec.dryRun", "\"yes\" must be true or false")),
        ),
        v(
            "header-not-a-string",
            vec![(
                "SPEC_EXTRA",
                "  metricsSource: {url: \"http://prom:9090\", headers: {X-Org: 7}}",
            )],
            Some(("spec.metricsSource.headers.X-Org", "7 must be a string")),
        ),
        v(
            "claims-not-a-list",
            vec![(
                "SPEC_EXTRA",
                "  bookies: {statefulSet: pulsar-bookie, volumeClaimTemplates: ledgers}",
            )],
            Some(("spec.bookies.volumeClaimTemplates", "must be a list")),
        ),
        v(
            "missing-statefulset",
            vec![("SPEC_EXTRA", "  bookies: {maxSize: 1Ti}")],
            Some(("spec.bookies.statefulSet", "Required value")),
        ),
    ]
}

/// Creates the object as `kubectl create` does (POST, strict field validation), as a dry run.
/// `None` when the server accepts it, else its message.
async fn server_verdict(client: &Client, yaml: &str) -> Option<String> {
    let value: Value = serde_yaml_ng::from_str(yaml).expect("variant is YAML");
    let body = serde_json::to_vec(&value).expect("JSON");
    let request = http::Request::post(format!(
        "/apis/pulsar-autoscaler.dev/v1alpha1/namespaces/{NAMESPACE}/scalingpolicies\
         ?dryRun=All&fieldValidation=Strict"
    ))
    .header("content-type", "application/json")
    .body(body)
    .expect("request");
    match client.request_text(request).await {
        Ok(_) => None,
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => Some(e.message.clone()),
        Err(e) => panic!("unexpected error from the API server: {e}"),
    }
}

#[tokio::test]
async fn validate_refuses_every_variant_the_api_server_refuses() {
    let server = ApiServer::start().await;
    let client = server.client().await;
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/scalingpolicy.yaml"),
        )
        .expect("committed CRD"),
    )
    .expect("CRD YAML");
    apply_crd(&client, &crd).await;
    ensure_namespace(&client, NAMESPACE).await;

    let mut failures = Vec::new();
    let mut refused = 0;
    for variant in variants() {
        let yaml = render(&variant.slots);
        let server = server_verdict(&client, &yaml).await;
        let ours: Vec<String> = check_yaml(&yaml)
            .into_iter()
            .map(|p| p.problem.to_string())
            .collect();
        let name = variant.name;
        let server_refuses = variant.refused.is_some() && !variant.controller_only;
        match (server_refuses, &server) {
            (false, Some(message)) => failures.push(format!(
                "{name}: expected the server to accept it: {message}"
            )),
            (true, None) => failures.push(format!("{name}: expected the server to refuse it")),
            _ => {}
        }
        if server.is_some() {
            refused += 1;
        }
        match (&server, ours.is_empty()) {
            (Some(message), true) => failures.push(format!(
                "{name}: the API server refuses it ({message}) but validate accepts it"
            )),
            (None, false) if !variant.controller_only => failures.push(format!(
                "{name}: the API server accepts it but validate says {ours:?}"
            )),
            _ => {}
        }
        if let Some((path, words)) = variant.refused {
            let line = ours
                .iter()
                .find(|l| l.starts_with(&format!("{path}: ")) && l.contains(words));
            if line.is_none() {
                failures.push(format!(
                    "{name}: expected a line at {path} containing {words:?}, got {ours:?}"
                ));
            }
            let suggestions = ours
                .iter()
                .filter_map(|l| l.split_once("did you mean ").map(|(_, s)| s));
            if suggestions
                .clone()
                .any(|s| s.contains("sec\"") || s.contains("min\""))
            {
                failures.push(format!(
                    "{name}: suggests a spelling the server refuses: {ours:?}"
                ));
            }
        }
    }
    assert!(refused >= 15, "only {refused} variants were refused");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
