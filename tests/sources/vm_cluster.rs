//! The VictoriaMetrics cluster path `/select/<tenant>/prometheus`. Debian packages only the
//! single-node server, so a loopback proxy plays vmselect's routing (tenant from the path,
//! the rest forwarded) in front of a real single-node VictoriaMetrics.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use jiff::Timestamp;
use pulsar_autoscaler::emulator::Config;
use pulsar_autoscaler::metrics::{Credentials, Flavor, PrometheusSource, Target, collect};

use crate::support::{self, ALL_BROKER_METRICS, Stack, close};

async fn forward(
    State(vm): State<String>,
    Path((tenant, api)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    if tenant != "0" {
        return (StatusCode::BAD_REQUEST, format!("unknown tenant {tenant}"));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_string();
    let r = support::client()
        .post(format!("{vm}/api/v1/{api}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await;
    match r {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_select_path_is_used_as_the_api_base() {
    let stack = Stack::start(Config {
        brokers: 2,
        max_brokers: 2,
        bookies: 1,
        ..Config::default()
    })
    .await;
    let proxy = Router::new()
        .route("/select/{tenant}/prometheus/api/v1/{api}", post(forward))
        .with_state(stack.vm.url.clone());
    let addr = support::serve(proxy).await;
    let url = format!("http://{addr}/select/0/prometheus/");
    let s = PrometheusSource::new(
        Flavor::VictoriaMetrics,
        &url,
        Duration::from_secs(5),
        &BTreeMap::new(),
        &Credentials::default(),
    )
    .unwrap();
    let policy = support::policy("pulsar", "p", ALL_BROKER_METRICS);
    let targets = [Target {
        namespace: "pulsar",
        name: "p",
        policy: &policy,
    }];
    let truth = support::truth(&stack.emu).await;
    let r = collect(&s, &targets, Timestamp::now()).await.remove(0);
    let got = r.brokers[0].sample.map(|s| s.value);
    assert!(
        got.is_some_and(|v| close(v, truth.throughput, 1.0)),
        "{r:?} vs {}",
        truth.throughput
    );
    // Bad PromQL through the cluster path is still VictoriaMetrics' 422.
    let e = s.query("sum((", Timestamp::now()).await.unwrap_err();
    assert!(e.to_string().contains("HTTP 422"), "{e}");
    // Time was sent explicitly: a query at a past time sees that time, not now − latencyOffset.
    let past = Timestamp::now() - jiff::SignedDuration::from_secs(3600);
    let res = s.query("vector(time())", past).await.unwrap();
    let pulsar_autoscaler::metrics::QueryResult::Vector(v) = res else {
        panic!("{res:?}")
    };
    assert!(
        (v[0].point.value - past.as_second() as f64).abs() < 2.0,
        "{v:?}"
    );
}
