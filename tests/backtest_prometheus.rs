//! `backtest --prometheus` against a real Prometheus and a real VictoriaMetrics: known series
//! are backfilled (`promtool tsdb create-blocks-from openmetrics`, VictoriaMetrics' import API),
//! the servers answer on loopback ports, and the range fetch must return exactly them.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use pulsar_autoscaler::backtest::prometheus::{self, FetchError, RangeQuery};
use pulsar_autoscaler::backtest::trace::Column;
use pulsar_autoscaler::backtest::{self, DEFAULT_READY_DELAY, Options};

const START: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z
const END: i64 = START + 7200;
const GAP: (i64, i64) = (START + 3600, START + 4500);
const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Finds a Debian-packaged binary or fails with the install command.
fn binary(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not installed; run `apt-get install {package}` (scripts/setup.d/10-prometheus.sh does)")
    })
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn throughput_in(pod: usize, t: i64) -> f64 {
    (10.0 + 5.0 * pod as f64) * MIB * (1.0 + (t - START) as f64 / 7200.0)
}

/// A series: its labels and its value at each time (`None`: no sample).
type Series = (String, Box<dyn Fn(i64) -> Option<f64>>);

fn in_gap(t: i64) -> bool {
    (GAP.0..GAP.1).contains(&t)
}

/// OpenMetrics text: two brokers and one bookie in namespace `pulsar`, a broker of another
/// namespace, and three claims; broker series pause for 15 minutes. Timestamps are seconds
/// times `unit` (1 for OpenMetrics, 1000 for the Prometheus text VictoriaMetrics imports).
fn openmetrics(unit: i64) -> String {
    let mut out = String::new();
    let times = || (START..=END).step_by(15);
    let brokers = [
        ("pulsar", "pulsar-broker-0"),
        ("pulsar", "pulsar-broker-1"),
        ("other", "pulsar-broker-0"),
    ];
    let gauge = |out: &mut String, name: &str, series: &[Series]| {
        writeln!(out, "# TYPE {name} gauge").unwrap();
        for (labels, value) in series {
            for t in times() {
                if let Some(v) = value(t) {
                    writeln!(out, "{name}{{{labels}}} {v} {}", t * unit).unwrap();
                }
            }
        }
    };
    let per_broker = |f: fn(usize, i64) -> f64, extra: &str| -> Vec<Series> {
        brokers
            .iter()
            .enumerate()
            .map(|(i, (ns, pod))| {
                let labels = format!(r#"{extra}namespace="{ns}",pod="{pod}""#);
                let value: Box<dyn Fn(i64) -> Option<f64>> =
                    Box::new(move |t| (!in_gap(t)).then(|| f(i, t)));
                (labels, value)
            })
            .collect()
    };
    gauge(
        &mut out,
        "pulsar_broker_throughput_in",
        &per_broker(throughput_in, ""),
    );
    gauge(
        &mut out,
        "pulsar_broker_throughput_out",
        &per_broker(|p, t| 2.0 * throughput_in(p, t), ""),
    );
    gauge(
        &mut out,
        "pulsar_broker_rate_in",
        &per_broker(|p, t| throughput_in(p, t) / 4096.0, ""),
    );
    gauge(
        &mut out,
        "pulsar_broker_rate_out",
        &per_broker(|p, t| throughput_in(p, t) / 2048.0, ""),
    );
    let mut heap_used = per_broker(|p, _| [0.4, 0.6, 0.99][p] * GIB, r#"area="heap","#);
    heap_used.push((
        r#"area="heap",namespace="pulsar",pod="pulsar-bookie-0""#.into(),
        Box::new(|_| Some(0.95 * GIB)),
    ));
    gauge(&mut out, "jvm_memory_bytes_used", &heap_used);
    let mut heap_max = per_broker(|_, _| GIB, r#"area="heap","#);
    heap_max.push((
        r#"area="heap",namespace="pulsar",pod="pulsar-bookie-0""#.into(),
        Box::new(|_| Some(GIB)),
    ));
    gauge(&mut out, "jvm_memory_bytes_max", &heap_max);
    let claim = |name: &str, used: fn(i64) -> f64| -> Series {
        (
            format!(r#"namespace="pulsar",persistentvolumeclaim="{name}""#),
            Box::new(move |t| Some(used(t))),
        )
    };
    gauge(
        &mut out,
        "kubelet_volume_stats_used_bytes",
        &[
            claim("ledgers-pulsar-bookie-0", |t| {
                50.0 * GIB + (t - START) as f64 * MIB
            }),
            claim("ledgers-pulsar-bookie-1", |_| 40.0 * GIB),
            claim("journal-pulsar-bookie-0", |_| 99.0 * GIB),
        ],
    );
    gauge(
        &mut out,
        "kubelet_volume_stats_capacity_bytes",
        &[
            claim("ledgers-pulsar-bookie-0", |_| 100.0 * GIB),
            claim("ledgers-pulsar-bookie-1", |_| 100.0 * GIB),
            claim("journal-pulsar-bookie-0", |_| 200.0 * GIB),
        ],
    );
    out.push_str("# EOF\n");
    out
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn start_prometheus(dir: &Path) -> Server {
    let prometheus = binary("prometheus", "prometheus");
    let promtool = binary("promtool", "prometheus");
    let input = dir.join("series.om");
    std::fs::write(&input, openmetrics(1)).unwrap();
    let data = dir.join("data");
    let backfill = Command::new(&promtool)
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
    let port = free_port();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=100y")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(server, "/-/ready", &dir.join("prometheus.log")).await
}

async fn wait_ready(server: Server, path: &str, log: &Path) -> Server {
    let client = reqwest::Client::new();
    for _ in 0..240 {
        if let Ok(r) = client.get(format!("{}{path}", server.url)).send().await
            && r.status().is_success()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("the server did not get ready:\n{log}");
}

async fn start_victoriametrics(dir: &Path) -> Server {
    let port = free_port();
    let log = dir.join("vm.log");
    let child = Command::new(binary("victoria-metrics", "victoria-metrics"))
        .arg(format!(
            "-storageDataPath={}",
            dir.join("vm-data").display()
        ))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-retentionPeriod=100y")
        .arg("-search.latencyOffset=0s")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let server = wait_ready(server, "/health", &log).await;
    let client = reqwest::Client::new();
    let imported = client
        .post(format!("{}/api/v1/import/prometheus", server.url))
        .body(openmetrics(1000))
        .send()
        .await
        .unwrap();
    assert!(
        imported.status().is_success(),
        "{:?}",
        imported.text().await
    );
    let flushed = client
        .get(format!("{}/internal/force_flush", server.url))
        .send()
        .await
        .unwrap();
    assert!(flushed.status().is_success());
    server
}

const POLICY: &str = r#"
apiVersion: pulsar-autoscaler.dev/v1alpha1
kind: ScalingPolicy
metadata: {name: fetched, namespace: pulsar}
spec:
  interval: 15s
  metricsSource: {url: "http://unused:9090"}
  brokers:
    statefulSet: pulsar-broker
    minReplicas: 1
    maxReplicas: 10
    metrics:
      - {type: Throughput, targetPerBroker: 20Mi}
      - {type: MessageRate, targetPerBroker: "20000"}
      - {type: HeapMemory, targetUtilization: 75}
  bookies:
    statefulSet: pulsar-bookie
    volumeClaimTemplates: [ledgers, journal]
    maxSize: 1Ti
"#;

fn range(url: &str) -> RangeQuery {
    RangeQuery {
        url: url.into(),
        from: Timestamp::from_second(START).unwrap(),
        to: Timestamp::from_second(END).unwrap(),
        step: Duration::from_secs(15),
        headers: Default::default(),
        chunk_points: 100,
    }
}

#[tokio::test]
async fn fetches_known_series_in_chunks_and_replays_them() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let server = start_prometheus(dir.path()).await;
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&policy_file, POLICY).unwrap();
    let loaded = backtest::load_policy(&policy_file).unwrap();
    let queries = prometheus::queries(&loaded);
    let client = reqwest::Client::new();

    let mut calls = Vec::new();
    let trace = prometheus::fetch(&client, &range(&server.url), &queries, &mut |d, t| {
        calls.push((d, t))
    })
    .await
    .unwrap();
    // 481 points in chunks of 100 → 5 queries per column.
    let total = 5 * queries.len() as u64;
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert_eq!(trace.rows.len(), 481);

    let col = |c: Column| trace.index(&c).unwrap();
    let value = |t: i64, c: Column| trace.rows[((t - START) / 15) as usize].values[col(c)];
    for t in [START, START + 1800, START + 3585, END] {
        let want: f64 = (0..2).map(|p| 3.0 * throughput_in(p, t)).sum();
        let got = value(t, Column::Throughput).unwrap();
        assert!(
            (got - want).abs() < 1.0,
            "throughput at {t}: {got} vs {want}"
        );
        let rate: f64 = (0..2).map(|p| throughput_in(p, t) * 3.0 / 4096.0).sum();
        assert!((value(t, Column::MessageRate).unwrap() - rate).abs() < 1e-6);
        assert_eq!(
            value(t, Column::Brokers),
            Some(2.0),
            "the other namespace is not counted"
        );
        let heap = value(t, Column::Heap).unwrap();
        assert!(
            (heap - 50.0).abs() < 1e-9,
            "brokers only, bookie excluded: {heap}"
        );
        let used = value(t, Column::LedgerUsed).unwrap();
        assert_eq!(
            used,
            50.0 * GIB + (t - START) as f64 * MIB,
            "fullest ledger claim, not the journal"
        );
        assert_eq!(value(t, Column::LedgerCapacity), Some(100.0 * GIB));
    }
    // Prometheus fills a gap from the last sample for its 5-minute lookback, then reports nothing.
    assert!(value(GAP.0 + 270, Column::Throughput).is_some());
    for t in (GAP.0 + 300..GAP.1).step_by(15) {
        assert_eq!(value(t, Column::Throughput), None, "at {t}");
        assert_eq!(value(t, Column::Heap), None, "at {t}");
    }
    assert!(value(GAP.0 + 300, Column::LedgerUsed).is_some());

    let options = Options {
        initial_replicas: None,
        ready_delay: DEFAULT_READY_DELAY,
        drain_delay: None,
        compare_hpa: true,
        initial_claim_size: None,
        epoch: Timestamp::from_second(START).unwrap(),
        source: server.url.clone(),
    };
    let report = backtest::run(&trace, &loaded, &options).unwrap();
    assert_eq!(report.initial_replicas, 2);
    assert_eq!(report.initial_claim_size, Some(100 * (1 << 30)));
    assert!(report.policy.summary.scale_ups > 0);
    assert!(report.policy.summary.held_for_missing_data_seconds > 0.0);

    // Server errors come back with the server's words.
    let bad = [(Column::Throughput, "sum(".to_string())];
    match prometheus::fetch(&client, &range(&server.url), &bad, &mut |_, _| {}).await {
        Err(FetchError::Server {
            status, message, ..
        }) => {
            assert_eq!(status, 400);
            assert!(message.contains("parse error"), "{message}");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    let unaggregated = [(
        Column::Throughput,
        "pulsar_broker_throughput_in".to_string(),
    )];
    match prometheus::fetch(&client, &range(&server.url), &unaggregated, &mut |_, _| {}).await {
        Err(FetchError::NotAggregated { series, .. }) => assert_eq!(series, 3),
        other => panic!("expected NotAggregated, got {other:?}"),
    }

    // The command line does the same end to end.
    let out_dir = dir.path().join("out");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .args(["backtest", "--policy"])
        .arg(&policy_file)
        .args([
            "--prometheus",
            &server.url,
            "--from",
            "2024-01-01T00:00:00Z",
        ])
        .args([
            "--to",
            "2024-01-01T02:00:00Z",
            "--step",
            "15s",
            "--compare",
            "hpa",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        summary["policy"]["scale_ups"].as_u64(),
        Some(u64::from(report.policy.summary.scale_ups))
    );
    assert_eq!(summary["trace"]["rows"], 481);
}

#[tokio::test]
async fn fetches_the_same_series_from_victoriametrics() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let server = start_victoriametrics(dir.path()).await;
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&policy_file, POLICY).unwrap();
    let loaded = backtest::load_policy(&policy_file).unwrap();
    let queries = prometheus::queries(&loaded);
    let client = reqwest::Client::new();
    let trace = prometheus::fetch(&client, &range(&server.url), &queries, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(trace.rows.len(), 481);
    let col = |c: Column| trace.index(&c).unwrap();
    let value = |t: i64, c: Column| trace.rows[((t - START) / 15) as usize].values[col(c)];
    for t in [START, START + 1800, START + 3570, END] {
        let want: f64 = (0..2).map(|p| 3.0 * throughput_in(p, t)).sum();
        let got = value(t, Column::Throughput).unwrap();
        assert!(
            (got - want).abs() < 1.0,
            "throughput at {t}: {got} vs {want}"
        );
        assert_eq!(value(t, Column::Brokers), Some(2.0));
        let heap = value(t, Column::Heap).unwrap();
        assert!((heap - 50.0).abs() < 1e-9, "{heap}");
        let used = value(t, Column::LedgerUsed).unwrap();
        assert_eq!(used, 50.0 * GIB + (t - START) as f64 * MIB);
    }
    // VictoriaMetrics bridges only short gaps; the middle of a 15-minute pause is missing.
    for t in (GAP.0 + 300..GAP.1 - 60).step_by(15) {
        assert_eq!(value(t, Column::Throughput), None, "at {t}");
    }
    let bad = [(Column::Throughput, "sum(".to_string())];
    match prometheus::fetch(&client, &range(&server.url), &bad, &mut |_, _| {}).await {
        Err(FetchError::Server { status, .. }) => assert_eq!(status, 422),
        other => panic!("expected a server error, got {other:?}"),
    }
}
