//! `brokers.forecast` against a real kube-apiserver with the committed CRD: valid settings are
//! accepted, bad ones rejected with our messages, and `validate` agrees.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

use pulsar_autoscaler::api::ScalingPolicy;
use pulsar_autoscaler::policy::check_yaml;
use support::apiserver::{ApiServer, apply_crd, ensure_namespace};

const NAMESPACE: &str = "pulsar";

async fn server_with_crd() -> (ApiServer, Client) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/scalingpolicy.yaml");
    let crd: CustomResourceDefinition =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let server = ApiServer::start().await;
    let client = server.client().await;
    apply_crd(&client, &crd).await;
    ensure_namespace(&client, NAMESPACE).await;
    (server, client)
}

async fn create(client: &Client, yaml: &str) -> Result<DynamicObject, kube::Error> {
    let mut value: Value = serde_yaml_ng::from_str(yaml).unwrap();
    value["metadata"]["namespace"] = json!(NAMESPACE);
    let object: DynamicObject = serde_json::from_value(value).unwrap();
    let resource = ApiResource::erase::<ScalingPolicy>(&());
    Api::namespaced_with(client.clone(), NAMESPACE, &resource)
        .create(&PostParams::default(), &object)
        .await
}

fn policy(name: &str, forecast: &str) -> String {
    format!(
        "apiVersion: pulsar-autoscaler.dev/v1alpha1\nkind: ScalingPolicy\nmetadata:\n  name: {name}\n\
         spec:\n  brokers:\n    statefulSet: pulsar-broker\n    maxReplicas: 5\n    \
         metrics:\n      - {{type: Throughput, targetPerBroker: 50Mi}}\n    forecast: {forecast}\n"
    )
}

#[tokio::test]
async fn forecast_settings_are_checked_by_the_api_server_and_validate_alike() {
    let (_server, client) = server_with_crd().await;
    let valid = [
        ("enabled", "{enabled: true}"),
        (
            "auto",
            "{enabled: true, horizon: auto, flapTurnsPerHour: 2}",
        ),
        (
            "fixed",
            "{enabled: true, horizon: 2m30s, flapTurnsPerHour: 60}",
        ),
        ("off", "{enabled: false, horizon: 10m}"),
    ];
    for (name, f) in valid {
        let yaml = policy(name, f);
        assert!(
            check_yaml(&yaml).is_empty(),
            "{name}: {:?}",
            check_yaml(&yaml)
        );
        create(&client, &yaml)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let invalid = [
        (
            "few-turns",
            "{enabled: true, flapTurnsPerHour: 1}",
            "flapTurnsPerHour must be in [2, 60]",
        ),
        (
            "many-turns",
            "{enabled: true, flapTurnsPerHour: 61}",
            "flapTurnsPerHour must be in [2, 60]",
        ),
        ("word", "{enabled: true, horizon: soon}", "horizon"),
        ("negative", "{enabled: true, horizon: -1m}", "horizon"),
    ];
    let mut failures = Vec::new();
    for (name, f, expected) in invalid {
        let yaml = policy(name, f);
        match create(&client, &yaml).await {
            Ok(_) => failures.push(format!("{name}: API server accepted it")),
            Err(kube::Error::Api(e)) if e.code == 422 => {
                if !e.message.contains(expected) {
                    failures.push(format!("{name}: message lacks {expected:?}: {}", e.message));
                }
            }
            Err(e) => panic!("{name}: unexpected error: {e}"),
        }
        if check_yaml(&yaml).is_empty() {
            failures.push(format!(
                "{name}: validate accepts what the API server rejects"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
