//! Every broker preset against a real broker under real load, in each source mode: the numbers
//! must be the load actually sent (bytes and messages per second, in + out) and the JVM's own
//! memory figures, not anything the test wrote down beforehand.

use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::metrics::{PodEndpoint, Target, collect};

use super::common::{self, NS};
use crate::support::monitoring::{close, scrape_one};
use crate::support::{self, real_pulsar::*};

const RATE: f64 = 120.0;
const SIZE: u64 = 8192;
const POLICY: &str = "  brokers:
    statefulSet: pulsar-broker
    minReplicas: 1
    maxReplicas: 10
    metrics:
      - {type: Throughput, targetPerBroker: 50Mi}
      - {type: MessageRate, targetPerBroker: \"20000\"}
      - {type: HeapMemory, targetUtilization: 75}
      - {type: DirectMemory, targetUtilization: 80}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_presets_read_the_load_sent_and_the_jvms_own_figures_in_every_mode() {
    support::monitoring::crypto();
    let settings = BrokerSettings::default();
    let pulsar = Standalone::start(settings.clone()).await;
    let web = pulsar.web_url();
    create_namespace(&web, "public/second").await;
    let topics: Vec<String> = [
        "public/default/presets-0",
        "public/default/presets-1",
        "public/second/presets-2",
    ]
    .iter()
    .map(|t| format!("persistent://{t}"))
    .collect();
    let load = Load::start(&pulsar.service_url(), RATE, SIZE, &topics);
    load.wait_acked(100).await;

    let pod = "pulsar-broker-0";
    let broker = format!("{}:{WEB_PORT}", pulsar.ip);
    let (prom, vm) = common::monitoring(&scrape_one(&broker, NS, pod)).await;
    // Two refreshes of the broker's rates at steady load, and scrapes of them.
    tokio::time::sleep(Duration::from_secs(
        2 * settings.stats_period_secs as u64 + 4,
    ))
    .await;

    let policy = support::policy(NS, "presets", POLICY);
    let targets = [Target {
        namespace: NS,
        name: "presets",
        policy: &policy,
    }];
    // The URL the controller builds for a broker pod with this IP.
    let pods = vec![PodEndpoint::broker(NS, pod, &pulsar.ip)];
    let pid = pulsar.jvm.pid().expect("standalone runs");
    let heap_max = (settings.heap_mib << 20) as f64;
    let direct_max = (settings.direct_mib << 20) as f64;
    let mut wrong = Vec::new();
    for source in common::sources(pods, &prom, &vm) {
        let what = source.describe();
        let heap_before = common::jstat_heap_used(pid) as f64;
        let jvm_before = common::broker_jvm_metrics(&web).await;
        let readings = collect(source.as_ref(), &targets, Timestamp::now())
            .await
            .remove(0);
        let heap_after = common::jstat_heap_used(pid) as f64;
        let jvm_after = common::broker_jvm_metrics(&web).await;
        let (acked, received) = load.rates(10.0);
        let value = |i: usize| readings.brokers[i].sample.map(|s| (s.value, s.reporting));
        eprintln!(
            "{what}: load {acked:.1} msg/s in, {received:.1} msg/s out of {SIZE} B; read {:?}",
            readings
                .brokers
                .iter()
                .map(|r| r.sample.map(|s| s.value))
                .collect::<Vec<_>>()
        );

        let bytes = (acked + received) * SIZE as f64;
        match value(0) {
            Some((v, Some(1))) if close(v, bytes, 10.0) => {}
            other => wrong.push(format!(
                "{what} Throughput: {other:?}, load sent {bytes:.0} B/s"
            )),
        }
        let msgs = acked + received;
        match value(1) {
            Some((v, Some(1))) if close(v, msgs, 10.0) => {}
            other => wrong.push(format!(
                "{what} MessageRate: {other:?}, load sent {msgs:.1}/s"
            )),
        }
        // The heap moves with every collection: the reading must fall between the JVM's own
        // figures taken just before and after it (a scraped sample may be a second older).
        let (lo, hi) = (heap_before.min(heap_after), heap_before.max(heap_after));
        let (lo, hi) = (100.0 * lo / heap_max - 8.0, 100.0 * hi / heap_max + 8.0);
        match value(2) {
            Some((v, Some(1))) if (lo..=hi).contains(&v) => {}
            other => wrong.push(format!(
                "{what} HeapMemory: {other:?}, jstat says {lo:.1}..{hi:.1} % of -Xmx"
            )),
        }
        let used = |m: &std::collections::BTreeMap<String, f64>| {
            m.get("jvm_direct_memory_used").copied().unwrap_or(f64::NAN)
        };
        let (dlo, dhi) = (
            100.0 * used(&jvm_before).min(used(&jvm_after)) / direct_max - 3.0,
            100.0 * used(&jvm_before).max(used(&jvm_after)) / direct_max + 3.0,
        );
        match value(3) {
            Some((v, Some(1))) if (dlo..=dhi).contains(&v) => {}
            other => wrong.push(format!(
                "{what} DirectMemory: {other:?}, the broker's admin API says {dlo:.1}..{dhi:.1} % of -XX:MaxDirectMemorySize"
            )),
        }
        assert_eq!(
            jvm_after.get("jvm_max_direct_memory").copied(),
            Some(direct_max),
            "the broker's direct memory limit is the JVM flag"
        );
    }
    let sent = load.stop().await;
    assert!(
        wrong.is_empty(),
        "presets disagree with the real broker:\n{}",
        wrong.join("\n")
    );
    assert_eq!(sent.failed, 0, "the load itself failed: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_reads_a_real_broker_through_its_redirecting_metrics_url() {
    support::monitoring::crypto();
    let settings = BrokerSettings::default();
    let pulsar = Standalone::start(settings.clone()).await;
    let topics = vec!["persistent://public/default/evaluate".to_string()];
    let load = Load::start(&pulsar.service_url(), RATE, SIZE, &topics);
    load.wait_acked(100).await;
    tokio::time::sleep(Duration::from_secs(
        2 * settings.stats_period_secs as u64 + 2,
    ))
    .await;

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: pulsar-autoscaler.dev/v1alpha1\nkind: ScalingPolicy\nmetadata:\n  name: p\n  namespace: {NS}\nspec:\n{POLICY}"
        ),
    )
    .expect("policy file");
    // `/metrics` as people type it: the broker redirects it to `/metrics/`.
    let url = format!("{}/metrics", pulsar.web_url());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .args(["evaluate", "--policy"])
        .arg(&file)
        .args(["--replicas", "1", "--output", "json", "--scrape", &url])
        .output()
        .expect("running evaluate");
    let (acked, received) = load.rates(10.0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("evaluate printed no JSON ({e}): {stdout}"));
    let throughput = json["metrics"][0]["value"].as_f64();
    let want = (acked + received) * SIZE as f64;
    assert!(
        throughput.is_some_and(|v| close(v, want, 10.0)),
        "evaluate read {throughput:?} from {url}, the load sent {want:.0} B/s: {stdout}"
    );
    drop(load);
}
