//! A fleet of policies in one controller: N ScalingPolicies on a real kube-apiserver, spread over
//! namespaces (ten per namespace, each with its own broker StatefulSet), one shared Prometheus
//! scraping an emulated exposition of every broker pod, and the release controller as a separate
//! process acting as the `deploy/` ServiceAccount with leader election.
//!
//! Measured per run: first-pass time (every policy has a status for its generation), steady CPU
//! and RSS of the controller and of kube-apiserver (from /proc), status writes/s and all API
//! requests/s (kube-apiserver's own `apiserver_request_total`), Prometheus queries/s
//! (Prometheus' own `prometheus_http_requests_total`), evaluations/s against N/interval, and the
//! reaction time from a crossing visible in Prometheus to the accepted `/scale` change.
//!
//! `cargo bench --bench fleet` runs 100, 1,000 and 10,000 policies at `interval: 15s` and 1,000
//! at `interval: 1s`; `FLEET_RUNS=1000@1s,100@15s` picks others, `FLEET_CONTROLLER_BIN` runs
//! another build of the controller (the baseline), `FLEET_FIRST_PASS_LIMIT` (seconds, default
//! 300) bounds the wait for the first pass. Under `cargo test` it makes one small run to prove
//! it works.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use pulsar_autoscaler::api::ScalingPolicy;
use serde_json::json;
use support::apiserver::{ApiServer, apply_crd, ensure_namespace};
use support::monitoring::{self, Server};

const MI: f64 = 1024.0 * 1024.0;
/// Target per broker of every policy.
const TARGET: f64 = 60.0 * MI;
/// Broker pods each StatefulSet starts with (and the exposition serves).
const PODS: u32 = 2;
/// Policies (and broker StatefulSets) per namespace.
const PER_NAMESPACE: usize = 10;
const CONTROLLER_NS: &str = "pulsar-autoscaler";

/// One benchmark run.
#[derive(Debug, Clone, Copy)]
struct Run {
    policies: usize,
    interval: Duration,
    crossings: usize,
    first_pass_limit: Duration,
}

/// Everything one run measured.
#[derive(Debug, Default)]
struct Row {
    policies: usize,
    interval: Duration,
    created: Duration,
    first_pass: Option<Duration>,
    with_status: usize,
    window: Duration,
    controller_cpu: f64,
    apiserver_cpu: f64,
    controller_rss_mib: f64,
    controller_peak_mib: f64,
    status_writes: f64,
    api_requests: f64,
    prom_queries: f64,
    evaluations: f64,
    reactions: Vec<Duration>,
    missed: usize,
}

/// The emulated brokers of every StatefulSet: `(namespace, statefulset) → load factor`.
#[derive(Default)]
struct Fleet {
    sets: Vec<(String, String)>,
    load: HashMap<(String, String), f64>,
}

/// Every broker pod's throughput, labelled as Kubernetes discovery would (`honor_labels`).
async fn page(State(fleet): State<Arc<Mutex<Fleet>>>) -> String {
    let fleet = fleet.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::with_capacity(fleet.sets.len() * PODS as usize * 160);
    out.push_str(
        "# TYPE pulsar_broker_throughput_in gauge\n# TYPE pulsar_broker_throughput_out gauge\n",
    );
    for key in &fleet.sets {
        let load = fleet.load.get(key).copied().unwrap_or(1.0);
        // 2 pods × 60 MiB/s in + out: exactly on a 60 MiB/s target at load 1.
        let half = TARGET / 2.0 * load;
        for i in 0..PODS {
            for name in [
                "pulsar_broker_throughput_in",
                "pulsar_broker_throughput_out",
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\",pod=\"{}-{i}\"}} {half}",
                    key.0, key.1
                );
            }
        }
    }
    out
}

fn policy_spec(prometheus: &str, statefulset: &str, interval: Duration) -> serde_json::Value {
    json!({
        "interval": humantime::format_duration(interval).to_string(),
        "metricsSource": {"type": "Prometheus", "url": prometheus, "maxStaleness": "30s"},
        "brokers": {
            "statefulSet": statefulset,
            "minReplicas": 1,
            "maxReplicas": 8,
            "metrics": [{"type": "Throughput", "targetPerBroker": "60Mi"}],
            "scaleUp": {"stabilizationWindow": "0s", "cooldown": "0s"},
            "scaleDown": {"stabilizationWindow": "10m", "cooldown": "10m"}
        },
        "rateLimit": {"actionsPerHour": 1000, "burst": 100}
    })
}

fn statefulset(ns: &str, name: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": PODS, "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "pulsar", "image": "apachepulsar/pulsar:4.0.0"}]}}
        }
    }))
    .expect("statefulset")
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no memory-safety requirements.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// `VmRSS` and `VmHWM` of a process in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// Sum of the samples of `name` whose labels contain every fragment.
fn counter(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn apiserver_metrics(admin: &Client) -> String {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    match admin.request_text(request).await {
        Ok(text) => text,
        Err(e) => {
            eprintln!("kube-apiserver /metrics: {e}");
            String::new()
        }
    }
}

async fn http_text(url: &str) -> String {
    match monitoring::client().get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Counters read at the start and the end of the steady window.
struct Counters {
    at: Instant,
    controller_cpu: f64,
    apiserver_cpu: f64,
    status_writes: f64,
    api_requests: f64,
    prom_queries: f64,
    evaluations: f64,
}

async fn counters(
    admin: &Client,
    controller: u32,
    apiserver: u32,
    prom: &str,
    metrics: &str,
) -> Counters {
    let api = apiserver_metrics(admin).await;
    let own = http_text(metrics).await;
    let prom_text = http_text(&format!("{prom}/metrics")).await;
    Counters {
        at: Instant::now(),
        controller_cpu: cpu_seconds(controller),
        apiserver_cpu: cpu_seconds(apiserver),
        status_writes: counter(
            &api,
            "apiserver_request_total{",
            &["resource=\"scalingpolicies\"", "subresource=\"status\""],
        ) - counter(
            &api,
            "apiserver_request_total{",
            &[
                "resource=\"scalingpolicies\"",
                "subresource=\"status\"",
                "verb=\"GET\"",
            ],
        ),
        api_requests: counter(&api, "apiserver_request_total{", &[]),
        prom_queries: counter(
            &prom_text,
            "prometheus_http_requests_total{",
            &["handler=\"/api/v1/query\""],
        ),
        evaluations: counter(
            &own,
            "pulsar_autoscaler_reconcile_duration_seconds_count",
            &[],
        ),
    }
}

fn start_controller(kubeconfig: &Path, port: u16, log: PathBuf) -> Child {
    let out = std::fs::File::create(&log).expect("controller log");
    let err = out.try_clone().expect("controller log");
    // FLEET_CONTROLLER_BIN runs another build (e.g. an older commit's) for a baseline row.
    let bin = std::env::var_os("FLEET_CONTROLLER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pulsar-autoscaler")));
    Command::new(bin)
        .args(["run", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--leader-election", "--lease-namespace", CONTROLLER_NS])
        .args(["--identity", "fleet"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("starting pulsar-autoscaler run")
}

/// Installs the CRD and `deploy/rbac.yaml`, returns the controller's kubeconfig.
async fn install(api: &ApiServer, admin: &Client) -> PathBuf {
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(
        &std::fs::read_to_string("deploy/crd.yaml").expect("deploy/crd.yaml"),
    )
    .expect("CRD");
    apply_crd(admin, &crd).await;
    ensure_namespace(admin, CONTROLLER_NS).await;
    support::pulsar::apply_yaml(
        admin,
        &std::fs::read_to_string("deploy/rbac.yaml").expect("deploy/rbac.yaml"),
    )
    .await;
    let token = api
        .service_account_token(CONTROLLER_NS, "pulsar-autoscaler")
        .await;
    api.write_kubeconfig("controller.kubeconfig", &token)
}

/// Creates the namespaces, StatefulSets and policies, 32 requests at a time.
async fn create_fleet(admin: &Client, sets: &[(String, String)], prom: &str, interval: Duration) {
    let namespaces: Vec<String> = {
        let mut v: Vec<String> = sets.iter().map(|(ns, _)| ns.clone()).collect();
        v.dedup();
        v
    };
    let ns_api: Api<Namespace> = Api::all(admin.clone());
    futures::stream::iter(namespaces)
        .map(|ns| {
            let api = ns_api.clone();
            async move {
                let obj: Namespace =
                    serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
                api.create(&PostParams::default(), &obj).await.map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("creating namespaces");
    futures::stream::iter(sets.iter().cloned())
        .map(|(ns, name)| {
            let client = admin.clone();
            let prom = prom.to_string();
            async move {
                let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
                sts.create(&PostParams::default(), &statefulset(&ns, &name))
                    .await?;
                let policies: Api<ScalingPolicy> = Api::namespaced(client, &ns);
                let sp: ScalingPolicy = serde_json::from_value(json!({
                    "apiVersion": "pulsar-autoscaler.dev/v1alpha1", "kind": "ScalingPolicy",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": policy_spec(&prom, &name, interval)
                }))
                .expect("policy");
                policies
                    .create(&PostParams::default(), &sp)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("creating statefulsets and policies");
}

/// Policies whose status answers their current generation, from a watch of them all.
fn status_counter(admin: &Client) -> (Arc<Mutex<usize>>, tokio::task::JoinHandle<()>) {
    let done = Arc::new(Mutex::new(0usize));
    let count = done.clone();
    let api: Api<ScalingPolicy> = Api::all(admin.clone());
    let task = tokio::spawn(async move {
        let mut seen: HashMap<(String, String), bool> = HashMap::new();
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(sp)) = stream.next().await {
            let ok = sp
                .status
                .as_ref()
                .is_some_and(|s| s.observed_generation == sp.metadata.generation);
            seen.insert((sp.namespace().unwrap_or_default(), sp.name_any()), ok);
            let n = seen.values().filter(|v| **v).count();
            *count.lock().unwrap_or_else(|e| e.into_inner()) = n;
        }
    });
    (done, task)
}

/// Raises the load of `chosen` StatefulSets one after another (spread over `spread`), and times
/// each from the crossing visible in Prometheus to the changed replicas.
async fn reactions(
    admin: &Client,
    fleet: &Arc<Mutex<Fleet>>,
    prom: &str,
    chosen: &[(String, String)],
    spread: Duration,
    limit: Duration,
) -> (Vec<Duration>, usize) {
    let mut tasks = Vec::new();
    let step = spread / chosen.len().max(1) as u32;
    for (i, (ns, name)) in chosen.iter().cloned().enumerate() {
        let (admin, fleet, prom) = (admin.clone(), fleet.clone(), prom.to_string());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(step * i as u32).await;
            let sts: Api<StatefulSet> = Api::namespaced(admin, &ns);
            let replicas = |s: &StatefulSet| s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            // Watch the one StatefulSet before the load moves, so no change is missed.
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let changed = Arc::new(Mutex::new(None::<Instant>));
            let mark = changed.clone();
            let watch = tokio::spawn(async move {
                let mut stream = watcher(sts, config).default_backoff().applied_objects().boxed();
                while let Some(Ok(s)) = stream.next().await {
                    if replicas(&s) != PODS as i32 {
                        mark.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(Instant::now());
                    }
                }
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            fleet
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .load
                .insert((ns.clone(), name.clone()), 2.0);
            let query = format!(
                "sum({{__name__=~\"pulsar_broker_throughput_in|pulsar_broker_throughput_out\",namespace=\"{ns}\",pod=~\"{name}-[0-9]+\"}})"
            );
            let started = Instant::now();
            let http = monitoring::client();
            let visible = loop {
                if started.elapsed() > limit {
                    watch.abort();
                    return None;
                }
                let body: Option<serde_json::Value> = match http
                    .post(format!("{prom}/api/v1/query"))
                    .form(&[("query", query.as_str())])
                    .send()
                    .await
                {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
                let value = body.as_ref().and_then(|b| {
                    b["data"]["result"][0]["value"][1]
                        .as_str()?
                        .parse::<f64>()
                        .ok()
                });
                if value.is_some_and(|v| v / f64::from(PODS) > TARGET * 1.1) {
                    break Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let done = loop {
                if let Some(at) = *changed.lock().unwrap_or_else(|e| e.into_inner()) {
                    break Some(at);
                }
                if started.elapsed() > limit {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            watch.abort();
            done.map(|at| at.saturating_duration_since(visible))
        }));
    }
    let mut got = Vec::new();
    let mut missed = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(d) => got.push(d),
            None => missed += 1,
        }
    }
    got.sort();
    (got, missed)
}

async fn measure(run: Run) -> Row {
    monitoring::crypto();
    let api = ApiServer::builder()
        .arg("--max-requests-inflight=800")
        .arg("--max-mutating-requests-inflight=400")
        .start()
        .await;
    let admin = api.client().await;
    let kubeconfig = install(&api, &admin).await;

    let namespaces = run.policies.div_ceil(PER_NAMESPACE);
    let sets: Vec<(String, String)> = (0..run.policies)
        .map(|i| {
            (
                format!("fleet-{:05}", i / PER_NAMESPACE),
                format!("broker-{}", i % PER_NAMESPACE),
            )
        })
        .collect();
    assert_eq!(
        sets.iter()
            .map(|s| &s.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        namespaces
    );
    let fleet = Arc::new(Mutex::new(Fleet {
        sets: sets.clone(),
        load: HashMap::new(),
    }));
    let addr = monitoring::serve(
        Router::new()
            .route("/metrics", get(page))
            .with_state(fleet.clone()),
    )
    .await;
    let scrape_every = if run.policies > 1000 { "5s" } else { "1s" };
    let scrape = format!(
        "global:\n  scrape_interval: {scrape_every}\n  scrape_timeout: {scrape_every}\nscrape_configs:\n  - job_name: fleet\n    honor_labels: true\n    static_configs:\n      - targets: ['{addr}']\n"
    );
    let mut prom: Server = monitoring::prometheus(&scrape, None);
    monitoring::ready(&mut prom, "/-/ready", &monitoring::client()).await;

    let created_at = Instant::now();
    create_fleet(&admin, &sets, &prom.url, run.interval).await;
    let created = created_at.elapsed();
    // Prometheus has every broker's series before the controller starts.
    let want = run.policies * PODS as usize;
    monitoring::eventually("Prometheus has every broker", 480, || async {
        let body: serde_json::Value = monitoring::client()
            .post(format!("{}/api/v1/query", prom.url))
            .form(&[("query", "count(pulsar_broker_throughput_in)")])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(n) if n == want => Ok(()),
            other => Err(format!("{other:?} of {want}")),
        }
    })
    .await;

    let (with_status, watch) = status_counter(&admin);
    let port = monitoring::free_port();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let started = Instant::now();
    let mut controller = start_controller(&kubeconfig, port, api.dir().join("controller.log"));
    let pid = controller.id();
    let (apiserver_pid, _) = api.pids();
    let first_pass = loop {
        let n = *with_status.lock().unwrap_or_else(|e| e.into_inner());
        if n >= run.policies {
            break Some(started.elapsed());
        }
        if started.elapsed() > run.first_pass_limit {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let start-up work settle, then a steady window of several intervals.
    tokio::time::sleep(run.interval.max(Duration::from_secs(2))).await;
    let window = (run.interval * 4).max(Duration::from_secs(30));
    let a = counters(&admin, pid, apiserver_pid, &prom.url, &metrics_url).await;
    tokio::time::sleep(window).await;
    let b = counters(&admin, pid, apiserver_pid, &prom.url, &metrics_url).await;
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let (rss, peak) = rss_mib(pid);
    let with_status_now = *with_status.lock().unwrap_or_else(|e| e.into_inner());

    // Reaction: StatefulSets spread over the fleet, crossings spread over one interval.
    let stride = (run.policies / run.crossings.max(1)).max(1);
    let chosen: Vec<(String, String)> = sets
        .iter()
        .step_by(stride)
        .take(run.crossings)
        .cloned()
        .collect();
    let limit = (run.interval * 4).max(Duration::from_secs(60));
    let (reactions, missed) = reactions(
        &admin,
        &fleet,
        &prom.url,
        &chosen,
        run.interval.min(Duration::from_secs(15)),
        limit,
    )
    .await;

    watch.abort();
    let _ = controller.kill();
    let _ = controller.wait();
    Row {
        policies: run.policies,
        interval: run.interval,
        created,
        first_pass,
        with_status: with_status_now,
        window: Duration::from_secs_f64(secs),
        controller_cpu: (b.controller_cpu - a.controller_cpu) / secs,
        apiserver_cpu: (b.apiserver_cpu - a.apiserver_cpu) / secs,
        controller_rss_mib: rss,
        controller_peak_mib: peak,
        status_writes: (b.status_writes - a.status_writes) / secs,
        api_requests: (b.api_requests - a.api_requests) / secs,
        prom_queries: (b.prom_queries - a.prom_queries) / secs,
        evaluations: (b.evaluations - a.evaluations) / secs,
        reactions,
        missed,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn print(rows: &[Row]) {
    let ms = |d: Option<Duration>| {
        d.map_or("–".to_string(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        })
    };
    println!(
        "| policies | interval | created in | first pass | controller CPU | apiserver CPU | controller RSS (peak) | status writes/s | API requests/s | Prometheus queries/s | evaluations/s (N/interval) | reaction p50 | p99 | crossings |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let first = match r.first_pass {
            Some(d) => format!("{:.1} s", d.as_secs_f64()),
            None => format!("not done: {} of {} with status", r.with_status, r.policies),
        };
        println!(
            "| {} | {} | {:.0} s | {first} | {:.1} % | {:.1} % | {:.0} MiB ({:.0}) | {:.1} | {:.1} | {:.2} | {:.0} ({:.0}) | {} | {} | {} of {} |",
            r.policies,
            humantime::format_duration(r.interval),
            r.created.as_secs_f64(),
            r.controller_cpu * 100.0,
            r.apiserver_cpu * 100.0,
            r.controller_rss_mib,
            r.controller_peak_mib,
            r.status_writes,
            r.api_requests,
            r.prom_queries,
            r.evaluations,
            r.policies as f64 / r.interval.as_secs_f64(),
            ms(percentile(&r.reactions, 50.0)),
            ms(percentile(&r.reactions, 99.0)),
            r.reactions.len(),
            r.reactions.len() + r.missed,
        );
    }
    println!(
        "(steady window {:.0} s; load average {})",
        rows.first().map_or(0.0, |r| r.window.as_secs_f64()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

fn runs(bench: bool) -> Vec<Run> {
    let first_pass_limit = Duration::from_secs(
        std::env::var("FLEET_FIRST_PASS_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let crossings = std::env::var("FLEET_CROSSINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    if !bench {
        return vec![Run {
            policies: 20,
            interval: Duration::from_secs(2),
            crossings: 2,
            first_pass_limit,
        }];
    }
    let spec =
        std::env::var("FLEET_RUNS").unwrap_or_else(|_| "100@15s,1000@15s,10000@15s,1000@1s".into());
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (n, interval) = s.trim().split_once('@').unwrap_or((s.trim(), "15s"));
            Run {
                policies: n
                    .parse()
                    .expect("FLEET_RUNS: policies@interval, e.g. 1000@1s"),
                interval: humantime::parse_duration(interval).expect("FLEET_RUNS interval"),
                crossings,
                first_pass_limit,
            }
        })
        .collect()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for run in runs(bench) {
        eprintln!(
            "fleet: {} policies at interval {:?}",
            run.policies, run.interval
        );
        let row = runtime.block_on(measure(run));
        print(std::slice::from_ref(&row));
        rows.push(row);
    }
    println!("\nall runs:");
    print(&rows);
}
