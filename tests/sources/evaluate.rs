//! `pulsar-autoscaler evaluate`: one evaluation against a real source, no cluster.

use std::process::Command;

use pulsar_autoscaler::emulator::Config;

use crate::support::{self, Stack};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running pulsar-autoscaler: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn policy_file(dir: &std::path::Path, source: &str) -> String {
    let text = format!(
        "apiVersion: pulsar-autoscaler.dev/v1alpha1
kind: ScalingPolicy
metadata:
  name: brokers
  namespace: pulsar
spec:
{source}  brokers:
    statefulSet: pulsar-broker
    minReplicas: 1
    maxReplicas: 20
    metrics:
      - type: Throughput
        targetPerBroker: 20Mi
      - type: HeapMemory
        targetUtilization: 75
    scaleUp: {{cooldown: 0s}}
"
    );
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluates_against_prometheus_and_direct() {
    let stack = Stack::start(Config {
        brokers: 3,
        max_brokers: 3,
        bookies: 1,
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let truth = support::truth(&stack.emu).await;
    // 60 MiB/s in + 120 MiB/s out over a 20 MiB/s target: 9 brokers; heap stays below target.
    let want = (truth.throughput / (20.0 * 1024.0 * 1024.0) - 1e-9).ceil() as u64;
    let file = policy_file(
        dir.path(),
        &format!(
            "  metricsSource: {{type: Prometheus, url: '{}'}}\n",
            stack.prom.url
        ),
    );
    let (code, out, err) = run(&[
        "evaluate",
        "--policy",
        &file,
        "--replicas",
        "3",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["metrics"][0]["name"], "throughput");
    let value = v["metrics"][0]["value"].as_f64().unwrap();
    assert!(
        support::close(value, truth.throughput, 1.0),
        "{value} vs {}",
        truth.throughput
    );
    assert_eq!(
        v["metrics"][0]["target"].as_f64(),
        Some(20.0 * 1024.0 * 1024.0)
    );
    assert_eq!(v["metrics"][0]["proposedReplicas"].as_u64(), Some(want));
    assert!(
        v["metrics"][1]["proposedReplicas"].as_u64().is_some(),
        "{out}"
    );
    assert_eq!(v["decision"]["action"], "ScaleUp");
    assert_eq!(v["decision"]["from"], 3);
    // scaleUp without maxStep: no step limit.
    assert_eq!(v["decision"]["to"].as_u64(), Some(want));
    assert!(
        v["decision"]["reasons"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );

    let (code, text, _) = run(&["evaluate", "--policy", &file, "--replicas", "3"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("throughput") && text.contains("decision: ScaleUp"),
        "{text}"
    );

    // Direct mode: --scrape stands in for pod discovery.
    let file = policy_file(dir.path(), "");
    let pods = support::state(&stack.emu).await.pods;
    let mut args = vec![
        "evaluate",
        "--policy",
        &file,
        "--replicas",
        "3",
        "--output",
        "json",
    ];
    let urls: Vec<String> = pods
        .iter()
        .filter(|p| p.role == "broker")
        .map(|p| p.url.clone())
        .collect();
    for u in &urls {
        args.extend(["--scrape", u.as_str()]);
    }
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let value = v["metrics"][0]["value"].as_f64().unwrap();
    assert!(support::close(value, truth.throughput, 1.0), "{value}");
    assert_eq!(v["decision"]["action"], "ScaleUp");
}

#[test]
fn unreachable_source_holds_with_the_reason_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let file = policy_file(
        dir.path(),
        &format!(
            "  metricsSource: {{type: Prometheus, url: 'http://127.0.0.1:{port}', timeout: 2s}}\n"
        ),
    );
    let (code, out, _) = run(&[
        "evaluate",
        "--policy",
        &file,
        "--replicas",
        "4",
        "--output",
        "json",
    ]);
    assert_eq!(code, 2, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"]["action"], "Hold");
    assert_eq!(v["decision"]["from"], 4);
    assert_eq!(v["decision"]["to"], 4);
    assert!(
        v["metrics"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["value"].is_null())),
        "{out}"
    );
    let reasons = v["decision"]["reasons"].to_string();
    assert!(
        reasons.contains("cannot reach") && reasons.contains(&port.to_string()),
        "{reasons}"
    );
    let (code, text, _) = run(&["evaluate", "--policy", &file, "--replicas", "4"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("decision: Hold") && text.contains("cannot reach"),
        "{text}"
    );
}

#[test]
fn invalid_policy_is_refused_like_validate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: pulsar-autoscaler.dev/v1alpha1\nkind: ScalingPolicy\nmetadata: {name: x}\nspec:\n  brokers: {statefulSet: b, minReplicas: 5, maxReplicas: 2, metrics: [{type: Throughput, targetPerBroker: 1Mi}]}\n",
    )
    .unwrap();
    let file = path.display().to_string();
    let (code, out, _) = run(&["evaluate", "--policy", &file, "--replicas", "3"]);
    let (vcode, vout, _) = run(&["validate", &file]);
    assert_eq!(code, 1);
    assert_eq!(vcode, 1);
    assert_eq!(out, vout);
    assert!(out.contains("minReplicas"), "{out}");
}

#[test]
fn scrape_with_a_policy_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = policy_file(
        dir.path(),
        "  metricsSource: {type: Prometheus, url: 'http://prometheus.monitoring:9090'}\n",
    );
    let (code, out, err) = run(&[
        "evaluate",
        "--policy",
        &file,
        "--replicas",
        "3",
        "--scrape",
        "http://127.0.0.1:1/metrics",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "no evaluation is printed: {out}");
    assert!(
        err.contains("--scrape") && err.contains("http://prometheus.monitoring:9090"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_shows_what_was_asked_and_fails() {
    // A real Prometheus that scrapes nothing: every query answers, with no series.
    let mut prom = support::prometheus("scrape_configs: []\n", None);
    support::ready(&mut prom, "/-/ready", &support::client()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = policy_file(
        dir.path(),
        &format!(
            "  metricsSource: {{type: Prometheus, url: '{}'}}\n",
            prom.url
        ),
    );
    let (code, text, err) = run(&["evaluate", "--policy", &file, "--replicas", "3"]);
    assert_eq!(code, 2, "no data is a failure: {text}{err}");
    assert!(text.contains("no data"), "{text}");
    assert!(
        text.contains("pulsar_broker_throughput_in") && text.contains("jvm_memory_bytes_used"),
        "the queries asked are shown: {text}"
    );
    let (code, out, _) = run(&[
        "evaluate",
        "--policy",
        &file,
        "--replicas",
        "3",
        "--output",
        "json",
    ]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["asked"].as_array().map(Vec::len), Some(2), "{out}");

    // Direct mode: the URLs scraped are what was asked.
    let file = policy_file(dir.path(), "");
    let closed = format!("http://127.0.0.1:{}/metrics", support::free_port());
    let (code, text, _) = run(&[
        "evaluate",
        "--policy",
        &file,
        "--replicas",
        "3",
        "--scrape",
        &closed,
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&format!("GET {closed}")), "{text}");
}
