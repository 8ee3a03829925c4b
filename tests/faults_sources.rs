//! Faults of a metrics source, injected by a proxy in front of a real Prometheus: credentials
//! rotated while the controller runs (the proxy admits only the new token), and an answer that
//! never ends. Assertions read the StatefulSet and the policy's status from the API server.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use pulsar_autoscaler::api::ScalingPolicy;
use serde_json::json;
use support::faults::{Fault, Proxy, Rule};
use support::monitoring::eventually;
use support::pulsar::{NS, Pulsar, Shape};

/// 180 MiB/s at load 1 over 60 MiB/s is 3 brokers; quick in both directions, so any hold is
/// the fault's doing.
const QUICK: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{url}}", maxStaleness: 30s{{auth}}}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 1
  maxReplicas: 8
  metrics: [{type: Throughput, targetPerBroker: 60Mi}]
  scaleUp: {stabilizationWindow: 0s, cooldown: 2s, maxStep: {replicas: 4}}
  scaleDown: {stabilizationWindow: 0s, cooldown: 2s, maxStep: {replicas: 1}}
rateLimit: {actionsPerHour: 1000, burst: 100}
"#;

fn spec(url: &str, auth: &str) -> String {
    QUICK.replace("{{url}}", url).replace("{{auth}}", auth)
}

fn condition(sp: &ScalingPolicy, type_: &str) -> Option<(String, String)> {
    let c = sp
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.message.clone()))
}

async fn wait_metrics(p: &Pulsar, status: &str, says: &str) -> String {
    eventually(&format!("MetricsAvailable={status}"), 480, || async {
        match condition(&p.policy("brokers").await, "MetricsAvailable") {
            Some((s, m)) if s == status && m.contains(says) => Ok(m),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

fn token_secret(token: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": "prom-token", "labels": {"pulsar-autoscaler.dev/consent": "true"}},
        "stringData": {"token": token}
    }))
    .unwrap()
}

fn scale_downs(sp: &ScalingPolicy) -> usize {
    sp.status.as_ref().map_or(0, |s| {
        s.decisions
            .iter()
            .filter(|d| d.action == "ScaleDown")
            .count()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_credentials_are_read_again_without_a_restart() {
    let p = Pulsar::start(Shape::default()).await;
    let proxy = Proxy::start(&p.prom.url, None).await;
    // The source now wants the new token; the Secret still holds the old one.
    proxy.add(Rule::new(
        "",
        "/api/v1/",
        Fault::RequireAuthorization("Bearer new-token".into()),
    ));
    let secrets: Api<Secret> = Api::namespaced(p.admin.clone(), NS);
    secrets
        .create(&PostParams::default(), &token_secret("old-token"))
        .await
        .expect("creating the Secret");
    let mut c = p.controller("a");
    let auth = ", auth: {bearerTokenSecretRef: {name: prom-token, key: token}}";
    p.create_policy("brokers", &spec(&proxy.url, auth)).await;
    p.set_load(2.0).await;
    wait_metrics(&p, "False", "401").await;
    // Load that wants 6 brokers, but no usable data: replicas hold.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(p.replicas().await, 3);

    // Rotated: the running controller reads the Secret again and scaling resumes.
    let rotated = Instant::now();
    let patch = json!({"stringData": {"token": "new-token"}});
    secrets
        .patch("prom-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("rotating the Secret");
    eventually("scaling resumes", 480, || async {
        match p.replicas().await {
            3 => Err("3 replicas".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    let took = rotated.elapsed().as_secs_f64();
    wait_metrics(&p, "True", "").await;
    assert!(c.running(), "the controller restarted");
    assert!(proxy.count("POST", "/api/v1/query", "require_authorization") > 0);
    eprintln!("figure: credential rotation: scaling resumed {took:.1}s after the Secret changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_is_cut_at_the_limit_and_holds() {
    let p = Pulsar::start(Shape::default()).await;
    let proxy = Proxy::start(&p.prom.url, None).await;
    let mut c = p.controller("a");
    p.create_policy("brokers", &spec(&proxy.url, "")).await;
    wait_metrics(&p, "True", "").await;
    assert_eq!(p.replicas().await, 3);

    let peak_before = c.proc_status("VmHWM").unwrap_or_default();
    // Every query answered with a body that never ends, at a load that would remove brokers.
    proxy.add(Rule::new("", "/api/v1/query", Fault::Endless));
    p.set_load(0.3).await;
    let message = wait_metrics(&p, "False", "larger than").await;
    assert!(message.contains("64"), "{message}");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(p.replicas().await, 3, "scaled down without data");
    assert_eq!(scale_downs(&p.policy("brokers").await), 0);
    assert!(c.running(), "the controller died reading an endless answer");
    let text = c.metrics().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("pulsar_autoscaler_source_errors_total{")
                && l.contains("kind=\"decode\"")),
        "{text}"
    );
    let endless = proxy.count("POST", "/api/v1/query", "endless");
    let peak = c.proc_status("VmHWM").unwrap_or_default();
    eprintln!(
        "figure: endless answers: {endless} refused at the limit, controller alive, peak RSS {peak_before} before, {peak} after"
    );

    // Whole answers again: the same load scales down.
    proxy.clear();
    eventually("the policy scales down", 480, || async {
        match p.replicas().await {
            3 => Err("3 replicas".to_string()),
            _ => Ok(()),
        }
    })
    .await;
}
