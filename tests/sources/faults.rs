//! Faults give a typed error or "missing", never a number and never a panic.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use jiff::Timestamp;
use pulsar_autoscaler::emulator::Config;
use pulsar_autoscaler::metrics::{
    Credentials, DirectSource, Flavor, MetricsError, MetricsSource, PodEndpoint, Preset,
    PrometheusSource, QueryResult, Role, Target, collect,
};

use crate::support::{self, ALL_BROKER_METRICS};

fn source(url: &str, timeout: Duration) -> PrometheusSource {
    PrometheusSource::new(
        Flavor::Prometheus,
        url,
        timeout,
        &BTreeMap::new(),
        &Credentials::default(),
    )
    .unwrap()
}

const NAN_PAGE: &str = "# TYPE jvm_memory_bytes_used gauge
jvm_memory_bytes_used{area=\"heap\"} NaN
# TYPE jvm_memory_bytes_max gauge
jvm_memory_bytes_max{area=\"heap\"} 1073741824
# TYPE pulsar_broker_throughput_in gauge
pulsar_broker_throughput_in +Inf
# TYPE pulsar_broker_throughput_out gauge
pulsar_broker_throughput_out 1
";

/// Answers no real Prometheus gives on demand.
fn faulty() -> Router {
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#
    };
    Router::new()
        .route("/down/api/v1/query", post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded") }))
        .route(
            "/error/api/v1/query",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#,
                )
            }),
        )
        .route("/html/api/v1/query", post(|| async { "<html><body>Sign in</body></html>" }))
        .route("/slow/api/v1/query", post(slow))
        .route("/slow/metrics", get(slow))
        .route("/nan/metrics", get(|| async { NAN_PAGE }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_non_json_and_slow_answers_are_typed_errors() {
    support::crypto();
    let addr = support::serve(faulty()).await;
    let at = Timestamp::now();
    let timeout = Duration::from_millis(500);
    let e = source(&format!("http://{addr}/down"), timeout)
        .query("up", at)
        .await
        .unwrap_err();
    assert!(matches!(e, MetricsError::Http { status: 500, .. }), "{e}");
    // The server's words are described, never repeated: they would reach status and Events.
    assert!(
        !e.to_string().contains("upstream exploded") && e.to_string().contains(&addr.to_string()),
        "{e}"
    );
    assert!(e.to_string().contains("17 bytes of text, not shown"), "{e}");
    let e = source(&format!("http://{addr}/error"), timeout)
        .query("up", at)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, MetricsError::Query { status: 503, error_type, .. } if error_type == "timeout"),
        "{e}"
    );
    let e = source(&format!("http://{addr}/html"), timeout)
        .query("up", at)
        .await
        .unwrap_err();
    assert_eq!(e.label(), "decode", "{e}");
    assert!(!e.to_string().contains("Sign in"), "{e}");
    assert!(
        e.to_string().contains("bytes of HTML or XML, not shown"),
        "{e}"
    );
    let e = source(&format!("http://{addr}/slow"), timeout)
        .query("up", at)
        .await
        .unwrap_err();
    assert!(matches!(e, MetricsError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("500ms"), "{e}");

    // Through a round every metric is missing and the error is reported, nothing else.
    let policy = support::policy("pulsar", "p", ALL_BROKER_METRICS);
    let targets = [Target {
        namespace: "pulsar",
        name: "p",
        policy: &policy,
    }];
    for path in ["down", "error", "html", "slow"] {
        let s = source(&format!("http://{addr}/{path}"), timeout);
        let r = collect(&s, &targets, Timestamp::now()).await.remove(0);
        assert!(
            r.brokers
                .iter()
                .all(|m| m.sample.is_none() && m.problem.is_some()),
            "{path}: {r:?}"
        );
        assert!(r.claims.is_empty(), "{path}: {r:?}");
        assert!(!r.errors.is_empty(), "{path}: {r:?}");
    }

    // Direct mode: a pod slower than the timeout and a page of NaN/Inf give no number.
    let pods = vec![
        PodEndpoint::at(
            "pulsar",
            "pulsar-broker-0",
            Role::Broker,
            format!("http://{addr}/slow/metrics"),
        ),
        PodEndpoint::at(
            "pulsar",
            "pulsar-broker-1",
            Role::Broker,
            format!("http://{addr}/nan/metrics"),
        ),
    ];
    let direct = DirectSource::new(pods, None, timeout, &Credentials::default()).unwrap();
    let r = collect(&direct, &targets, Timestamp::now()).await.remove(0);
    let heap = &r.brokers[2];
    assert!(heap.sample.is_none(), "{r:?}");
    let why = heap.problem.clone().unwrap_or_default();
    assert!(
        why.contains("pulsar-broker-1: value is NaN") && why.contains("pulsar-broker-0"),
        "{why}"
    );
    assert!(
        r.brokers[0].sample.is_none(),
        "Inf throughput must be missing: {r:?}"
    );
    // Claims need kubelet access, which this source lacks: reported, not invented.
    assert!(r.errors.iter().any(|e| e.contains("claim_usage")), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_mid_test_gives_a_connect_error() {
    support::crypto();
    let emu = support::emulator(Config {
        brokers: 1,
        max_brokers: 1,
        bookies: 1,
        ..Config::default()
    })
    .await;
    let scrape = pulsar_autoscaler::emulator::scrape_config(&support::state(&emu).await, "1s");
    let mut prom = support::prometheus(&scrape, None);
    support::ready(&mut prom, "/-/ready", &support::client()).await;
    let s = source(&prom.url, Duration::from_secs(2));
    let policy = support::policy("pulsar", "p", ALL_BROKER_METRICS);
    let targets = [Target {
        namespace: "pulsar",
        name: "p",
        policy: &policy,
    }];
    support::eventually("Prometheus has broker data", 120, || async {
        let r = collect(&s, &targets, Timestamp::now()).await.remove(0);
        r.brokers[0]
            .sample
            .map(|_| ())
            .ok_or_else(|| format!("{r:?}"))
    })
    .await;
    prom.stop();
    let e = s.query("up", Timestamp::now()).await.unwrap_err();
    assert!(matches!(e, MetricsError::Connect { .. }), "{e}");
    let r = collect(&s, &targets, Timestamp::now()).await.remove(0);
    assert!(r.brokers.iter().all(|m| m.sample.is_none()), "{r:?}");
    assert!(r.errors.iter().all(|e| e.contains("cannot reach")), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_results_and_nan_samples_are_missing_never_zero() {
    support::crypto();
    let addr = support::serve(faulty()).await;
    let mut scrape = support::scrape_one(&addr.to_string(), "nan", "pulsar-broker-0");
    scrape.push_str("    metrics_path: /nan/metrics\n");
    let mut prom = support::prometheus(&scrape, None);
    support::ready(&mut prom, "/-/ready", &support::client()).await;
    let s = source(&prom.url, Duration::from_secs(5));
    let nan = support::policy("nan", "p", ALL_BROKER_METRICS);
    let empty = support::policy("empty", "p", ALL_BROKER_METRICS);
    let custom = support::policy(
        "nan",
        "c",
        "  brokers:
    statefulSet: pulsar-broker
    maxReplicas: 5
    metrics:
      - type: Custom
        name: none
        query: sum(no_such_metric{namespace=\"{{namespace}}\"})
        targetPerBroker: \"1\"
      - type: Custom
        name: nan
        query: sum(jvm_memory_bytes_used{namespace=\"{{namespace}}\"})
        targetPerBroker: \"1\"
      - type: Custom
        name: ratio
        query: sum(vector(0) / 0)
        targetPerBroker: \"1\"
",
    );
    let targets = [
        Target {
            namespace: "nan",
            name: "p",
            policy: &nan,
        },
        Target {
            namespace: "empty",
            name: "p",
            policy: &empty,
        },
        Target {
            namespace: "nan",
            name: "c",
            policy: &custom,
        },
    ];
    // One round, once Prometheus has committed a scrape of the page. A round that overlaps
    // the first scrape can see it in one query and not yet in the next (a scrape's samples
    // carry its start time but become visible when it ends), so throughput would read
    // "no series" while heap already reads NaN: wait on the page's four series in one query.
    let page =
        r#"count({namespace="nan", __name__=~"jvm_memory_bytes_.+|pulsar_broker_throughput_.+"})"#;
    support::eventually("Prometheus scraped the NaN page", 120, || async {
        match s.query(page, Timestamp::now()).await {
            Ok(QueryResult::Vector(v)) if v.first().is_some_and(|x| x.point.value == 4.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let rounds = collect(&s, &targets, Timestamp::now()).await;
    // The direct-memory series is absent from the page; heap's NaN shows the page was read.
    assert!(
        rounds[0].brokers[2]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("NaN")),
        "{:?}",
        rounds[0]
    );
    let (nan, empty, custom) = (&rounds[0], &rounds[1], &rounds[2]);
    assert!(nan.brokers.iter().all(|m| m.sample.is_none()), "{nan:?}");
    assert!(
        nan.brokers[0]
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("infinite"),
        "{nan:?}"
    );
    assert!(
        empty.brokers.iter().all(|m| m.sample.is_none()),
        "{empty:?}"
    );
    assert!(
        empty.brokers[0]
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("no throughput series"),
        "{empty:?}"
    );
    assert!(
        custom.brokers.iter().all(|m| m.sample.is_none()),
        "{custom:?}"
    );
    assert!(
        custom.brokers[0]
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("returned no series"),
        "{custom:?}"
    );
    assert!(
        custom.brokers[1]
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("NaN"),
        "{custom:?}"
    );
    assert!(
        custom.brokers[2]
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("NaN"),
        "{custom:?}"
    );
    // The same through the raw grouped read: NaN is kept as NaN for the caller, never 0.
    let g = s
        .fetch(&[Preset::HeapMemory], Timestamp::now())
        .await
        .remove(0)
        .unwrap();
    let p = g
        .points
        .get(&("nan".to_string(), "pulsar-broker-0".to_string()))
        .copied();
    assert!(p.is_some_and(|p| p.value.is_nan()), "{g:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_promql_is_a_query_error_on_both_servers() {
    support::crypto();
    let scrape = "global:\n  scrape_interval: 1s\nscrape_configs: []\n";
    let mut prom = support::prometheus(scrape, None);
    let mut vm = support::victoria_metrics(scrape);
    let http = support::client();
    support::ready(&mut prom, "/-/ready", &http).await;
    support::ready(&mut vm, "/health", &http).await;
    let at = Timestamp::now();
    let p = source(&prom.url, Duration::from_secs(5));
    let e = p.query("sum((", at).await.unwrap_err();
    assert!(
        matches!(&e, MetricsError::Query { status: 400, error_type, .. } if error_type == "bad_data"),
        "{e}"
    );
    let v = PrometheusSource::new(
        Flavor::VictoriaMetrics,
        &vm.url,
        Duration::from_secs(5),
        &BTreeMap::new(),
        &Credentials::default(),
    )
    .unwrap();
    let e = v.query("sum((", at).await.unwrap_err();
    assert!(
        matches!(&e, MetricsError::Query { status: 422, error_type, .. } if error_type == "422"),
        "{e}"
    );
    assert_eq!(e.label(), "query");
    // An empty database: an empty vector, which a round turns into "missing".
    let g = v.fetch(&[Preset::Throughput], at).await.remove(0).unwrap();
    assert!(g.points.is_empty());
}
