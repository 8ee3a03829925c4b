//! The forecast's history against a real Prometheus: two days of broker throughput are
//! backfilled (`promtool tsdb create-blocks-from openmetrics`), the range fetch must return them,
//! and the engine must read yesterday's morning rise from them.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::backtest::LoadedPolicy;
use pulsar_autoscaler::decide::forecast::{History, daily_factor};
use pulsar_autoscaler::metrics::history;
use pulsar_autoscaler::policy::Policy;

const START: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z
const DAY: i64 = 86_400;
const MIB: f64 = 1024.0 * 1024.0;

/// Cluster throughput in + out: 100 MiB/s at night, 200 MiB/s from 08:00 to 20:00.
fn throughput(t: i64) -> f64 {
    let hour = (t - START).rem_euclid(DAY) / 3600;
    if (8..20).contains(&hour) {
        200.0 * MIB
    } else {
        100.0 * MIB
    }
}

fn binary(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed; run `apt-get install prometheus` (scripts/setup.d/10-prometheus.sh does)")
        })
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two brokers, each carrying half, in and out split evenly; one sample a minute for two days.
fn openmetrics() -> String {
    let mut out = String::new();
    for direction in ["in", "out"] {
        let _ = writeln!(out, "# TYPE pulsar_broker_throughput_{direction} gauge");
        for pod in 0..2 {
            for t in (START..START + 2 * DAY).step_by(60) {
                let _ = writeln!(
                    out,
                    "pulsar_broker_throughput_{direction}{{namespace=\"pulsar\",pod=\"pulsar-broker-{pod}\"}} {} {t}",
                    throughput(t) / 4.0
                );
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

async fn start_prometheus(dir: &Path) -> (Server, String) {
    let input = dir.join("series.om");
    std::fs::write(&input, openmetrics()).unwrap();
    let data = dir.join("data");
    let backfill = Command::new(binary("promtool"))
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        backfill.status.success(),
        "promtool backfill failed: {}",
        String::from_utf8_lossy(&backfill.stderr)
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join("prometheus.log");
    let child = Command::new(binary("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=100y")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Server(child);
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..240 {
        if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
            && r.status().is_success()
        {
            return (server, url);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "Prometheus did not get ready:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

fn policy(url: &str) -> LoadedPolicy {
    let yaml = format!(
        r#"
apiVersion: pulsar-autoscaler.dev/v1alpha1
kind: ScalingPolicy
metadata: {{name: daily, namespace: pulsar}}
spec:
  metricsSource: {{type: Prometheus, url: "{url}"}}
  brokers:
    statefulSet: pulsar-broker
    minReplicas: 2
    maxReplicas: 20
    metrics:
      - type: HeapMemory
        targetUtilization: 75
      - type: Throughput
        targetPerBroker: 50Mi
    forecast: {{enabled: true, horizon: 1h}}
"#
    );
    let value: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let (resource, policy): (_, Policy) = pulsar_autoscaler::policy::check_object(&value).unwrap();
    let _ = resource;
    LoadedPolicy {
        name: "daily".into(),
        namespace: "pulsar".into(),
        policy,
        drain_timeout: None,
    }
}

fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test]
async fn the_daily_pattern_comes_from_prometheus_history() {
    crypto();
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_prometheus(dir.path()).await;
    let loaded = policy(&url);
    // 07:30 on the second day: yesterday the load doubled at 08:00.
    let now = Timestamp::from_second(START + DAY + 7 * 3600 + 1800).unwrap();
    let client = reqwest::Client::new();
    let h = history::fetch(&client, &loaded, now).await.unwrap();
    assert_eq!(h.series.len(), 2, "one series per policy metric");
    assert!(h.series[0].is_empty(), "utilizations are not fetched");
    let throughput_series = &h.series[1];
    // From the start of the data (a day and 7h30m before now is before it) to now, at 2 minutes.
    let expected = ((DAY + 7 * 3600 + 1800) / 120 + 1) as usize;
    assert_eq!(throughput_series.len(), expected);
    for (t, v) in throughput_series {
        let want = throughput(t.as_second());
        assert!((v - want).abs() < 1.0, "at {t}: {v} vs {want}");
    }
    let (mean, n) = h
        .mean(
            1,
            Timestamp::from_second(START + 9 * 3600).unwrap(),
            Timestamp::from_second(START + 10 * 3600).unwrap(),
        )
        .unwrap();
    assert_eq!(n, 31);
    assert!((mean - 200.0 * MIB).abs() < 1.0);
    let (factor, days) = daily_factor(&h, 1, now, Duration::from_secs(3600)).unwrap();
    assert_eq!(days, 1);
    assert!((factor - 2.0).abs() < 1e-9, "{factor}");

    // The controller's cached path gives the same series.
    let cached = history::for_policy("pulsar", "daily", &loaded.policy, now)
        .await
        .unwrap();
    assert_eq!(cached.series, h.series);
}

#[tokio::test]
async fn an_unreachable_source_gives_an_error_not_a_pattern() {
    crypto();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let loaded = policy(&format!("http://127.0.0.1:{port}"));
    let now = Timestamp::from_second(START + DAY).unwrap();
    let client = reqwest::Client::new();
    let err = history::fetch(&client, &loaded, now).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("query for throughput_bytes failed"),
        "{err}"
    );
    assert!(
        history::for_policy("pulsar", "unreachable", &loaded.policy, now)
            .await
            .is_none()
    );
}
