//! The `crd` and `validate` commands, run as a user runs them.

use std::path::Path;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .args(args)
        .output()
        .expect("run the binary");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn crd_output_matches_the_committed_file() {
    let (code, printed) = cli(&["crd"]);
    assert_eq!(code, 0);
    let committed = std::fs::read_to_string("crds/scalingpolicy.yaml").unwrap();
    assert!(
        printed == committed,
        "crds/scalingpolicy.yaml is out of date: run `make crd`"
    );
}

/// The structural-schema rules the API server enforces on a CRD.
fn assert_structural(path: &str, s: &JSONSchemaProps) {
    let int_or_string = s.x_kubernetes_int_or_string == Some(true);
    assert!(
        s.type_.is_some() || int_or_string || s.x_kubernetes_preserve_unknown_fields == Some(true),
        "{path}: no type"
    );
    assert!(
        s.ref_path.is_none() && s.one_of.is_none() && s.not.is_none(),
        "{path}: $ref/oneOf/not are not structural"
    );
    if let Some(any_of) = &s.any_of {
        assert!(int_or_string, "{path}: anyOf only for int-or-string");
        assert!(
            any_of.iter().all(|b| b.properties.is_none()),
            "{path}: anyOf branches must not declare structure"
        );
    }
    if s.type_.as_deref() == Some("object") {
        assert!(
            s.properties.is_some() || s.additional_properties.is_some(),
            "{path}: object without properties"
        );
    }
    for (name, p) in s.properties.iter().flatten() {
        assert_structural(&format!("{path}.{name}"), p);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) = &s.items {
        assert_structural(&format!("{path}[]"), items);
    }
}

#[test]
fn crd_is_a_structural_v1_definition() {
    let text = std::fs::read_to_string("crds/scalingpolicy.yaml").unwrap();
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("scalingpolicies.pulsar-autoscaler.dev")
    );
    assert_eq!(crd.spec.names.short_names, Some(vec!["sp".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
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
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    assert_structural("", schema);
    let rules = text.matches("x-kubernetes-validations").count();
    assert!(
        rules >= 15,
        "expected the CEL rules in the schema, found {rules}"
    );
}

#[test]
fn every_example_policy_is_valid() {
    let mut files: Vec<String> = std::fs::read_dir("deploy/examples")
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let (code, text) = cli(&args);
    let oks: Vec<String> = files.iter().map(|f| format!("{f}: ok")).collect();
    assert_eq!(
        (code, text.lines().collect::<Vec<_>>()),
        (0, oks.iter().map(String::as_str).collect())
    );
}

#[test]
fn invalid_policies_are_rejected_with_one_clear_line_each() {
    let expected = [
        (
            "min-above-max",
            "spec.brokers: minReplicas must not exceed maxReplicas",
        ),
        (
            "min-zero",
            "spec.brokers.minReplicas: minReplicas must be at least 1",
        ),
        (
            "negative-target",
            "spec.brokers.metrics[0].targetPerBroker: targetPerBroker must be a positive quantity",
        ),
        (
            "zero-target",
            "spec.brokers.metrics[0].targetPerBroker: targetPerBroker must be a positive quantity",
        ),
        (
            "unknown-metric-type",
            "spec.brokers.metrics[0].type: \"Bogus\" is not one of Throughput, MessageRate",
        ),
        ("bad-duration", "spec.interval: \"15x\" is not a duration"),
        (
            "bad-quantity",
            "spec.bookies.maxSize: maxSize must be a positive quantity",
        ),
        (
            "utilization-out-of-range",
            "spec.brokers.metrics[0].targetUtilization: targetUtilization must be in (0, 100]",
        ),
        (
            "expand-at-100",
            "spec.bookies.expandAtUsedPercent: expandAtUsedPercent must be in (0, 100)",
        ),
        (
            "custom-without-query",
            "spec.brokers.metrics[0]: a Custom metric needs both name and query",
        ),
        ("no-target", "spec: set at least one of brokers or bookies"),
        (
            "step-percent-out-of-range",
            "spec.brokers.scaleUp.maxStep.percent: maxStep.percent must be in (0, 100]",
        ),
        (
            "url-with-userinfo",
            "spec.metricsSource.url: url must not carry a user name or password",
        ),
        (
            "url-with-query",
            "spec.metricsSource.url: url must not have a query string or fragment",
        ),
        (
            "timeout-not-below-interval",
            "spec: metricsSource.timeout must be shorter than interval",
        ),
    ];
    for (name, line) in expected {
        let file = format!("tests/fixtures/invalid/{name}.yaml");
        assert!(Path::new(&file).exists(), "{file}");
        let (code, text) = cli(&["validate", &file]);
        assert_ne!(code, 0, "{name} must be rejected");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{name}: one line per problem, got {lines:?}"
        );
        assert_eq!(lines[0], format!("{file}: {}", &lines[0][file.len() + 2..]));
        assert!(
            lines[0].starts_with(&format!("{file}: {line}")),
            "{name}: got {}",
            lines[0]
        );
    }
}

#[test]
fn multi_document_files_report_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.yaml");
    let good = std::fs::read_to_string("deploy/examples/bookies-direct.yaml").unwrap();
    let bad = std::fs::read_to_string("tests/fixtures/invalid/expand-at-100.yaml").unwrap();
    std::fs::write(&file, format!("{good}---\n{bad}")).unwrap();
    let (code, text) = cli(&["validate", file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert_eq!(
        text.trim(),
        format!(
            "{}#2: spec.bookies.expandAtUsedPercent: expandAtUsedPercent must be in (0, 100)",
            file.display()
        )
    );
}

#[test]
fn unreadable_and_malformed_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "spec: [unclosed\n").unwrap();
    let (code, text) = cli(&["validate", broken.to_str().unwrap(), "/nonexistent.yaml"]);
    assert_ne!(code, 0);
    assert!(text.contains("not valid YAML"), "{text}");
    assert!(text.contains("/nonexistent.yaml: cannot read"), "{text}");
}
