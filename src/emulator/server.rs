//! The emulator's HTTP servers on loopback: one port per broker and bookie pod, one for the
//! kubelet, and a control port (state, changes, ground truth, kubelet summary via the
//! API-server node-proxy path).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::model::{Cluster, Config, Truth};
use super::page;

/// Shared cluster and clock.
struct Shared {
    cluster: Mutex<Cluster>,
    started: Instant,
    brokers: Vec<SocketAddr>,
    bookies: Vec<SocketAddr>,
    kubelet: SocketAddr,
}

type App = Arc<Shared>;

impl Shared {
    /// The cluster advanced to now, and the time in seconds since start.
    fn now(&self) -> (MutexGuard<'_, Cluster>, f64) {
        let t = self.started.elapsed().as_secs_f64();
        // A poisoned lock only means a handler panicked mid-update; the numbers are still whole.
        let mut c = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
        c.advance(t);
        (c, t)
    }
}

/// A pod as the control endpoint lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// `broker` or `bookie`.
    pub role: String,
    /// Its metrics URL.
    pub url: String,
    /// Whether it runs now (brokers beyond the count answer 503).
    pub running: bool,
}

/// Everything tests and tools need to know about a running emulator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StateView {
    /// Brokers running.
    pub brokers: u32,
    /// Broker pods that exist (ports).
    pub max_brokers: u32,
    /// Bookies.
    pub bookies: u32,
    /// Multiplier on the load profile.
    pub load_factor: f64,
    /// Capacity in bytes per claim.
    pub claims: BTreeMap<String, u64>,
    /// Every pod.
    pub pods: Vec<PodView>,
    /// Kubelet `/metrics` URL (volume stats).
    pub kubelet_url: String,
    /// Node name for the summary API.
    pub node: String,
}

/// A change posted to `/state`; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateChange {
    /// New broker count (at most `maxBrokers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<u32>,
    /// New load multiplier (≥ 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_factor: Option<f64>,
    /// New capacities in bytes; claims only grow, as in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<BTreeMap<String, u64>>,
}

/// A running emulator; dropping it stops every server.
pub struct Running {
    /// Control endpoint address.
    pub control: SocketAddr,
    /// Broker pod addresses, by ordinal.
    pub brokers: Vec<SocketAddr>,
    /// Bookie pod addresses, by ordinal.
    pub bookies: Vec<SocketAddr>,
    /// Kubelet address.
    pub kubelet: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Running {
    /// Base URL of the control endpoint.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control)
    }

    /// Stops every server.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn bind(ip: IpAddr, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(ip, port)).await
}

fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let shutdown = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
    });
}

/// Starts every server on `ip`; the control endpoint on `control_port` (0: any free port).
pub async fn start(config: Config, ip: IpAddr, control_port: u16) -> std::io::Result<Running> {
    let control = bind(ip, control_port).await?;
    let mut broker_listeners = Vec::new();
    for _ in 0..config.max_brokers {
        broker_listeners.push(bind(ip, 0).await?);
    }
    let mut bookie_listeners = Vec::new();
    for _ in 0..config.bookies {
        bookie_listeners.push(bind(ip, 0).await?);
    }
    let kubelet = bind(ip, 0).await?;
    let addr = |l: &TcpListener| l.local_addr();
    let shared = Arc::new(Shared {
        brokers: broker_listeners
            .iter()
            .map(addr)
            .collect::<Result<_, _>>()?,
        bookies: bookie_listeners
            .iter()
            .map(addr)
            .collect::<Result<_, _>>()?,
        kubelet: kubelet.local_addr()?,
        cluster: Mutex::new(Cluster::new(config)),
        started: Instant::now(),
    });
    let (stop, watch_stop) = watch::channel(false);
    for (i, l) in broker_listeners.into_iter().enumerate() {
        // A real broker serves its page at `/metrics/` and redirects `/metrics` there.
        let r = Router::new()
            .route("/metrics/", get(broker_metrics))
            .route(
                "/metrics",
                get(|| async {
                    (
                        axum::http::StatusCode::FOUND,
                        [(axum::http::header::LOCATION, "/metrics/")],
                    )
                }),
            )
            .with_state((shared.clone(), i as u32));
        serve(l, r, watch_stop.clone());
    }
    for (i, l) in bookie_listeners.into_iter().enumerate() {
        let r = Router::new()
            .route("/metrics", get(bookie_metrics))
            .with_state((shared.clone(), i as u32));
        serve(l, r, watch_stop.clone());
    }
    let k = Router::new()
        .route("/metrics", get(kubelet_metrics))
        .route("/stats/summary", get(summary))
        .with_state(shared.clone());
    serve(kubelet, k, watch_stop.clone());
    let running = Running {
        control: control.local_addr()?,
        brokers: shared.brokers.clone(),
        bookies: shared.bookies.clone(),
        kubelet: shared.kubelet,
        stop,
    };
    let c = Router::new()
        .route("/state", get(get_state).post(post_state))
        .route("/truth", get(truth))
        .route("/scrape-config", get(scrape_config))
        .route(
            "/api/v1/nodes/{node}/proxy/stats/summary",
            get(node_summary),
        )
        .with_state(shared);
    serve(control, c, watch_stop);
    Ok(running)
}

/// The content type real brokers and bookies give their pages.
const TEXT: [(&str, &str); 1] = [("content-type", "text/plain; version=0.0.4; charset=utf-8")];

async fn broker_metrics(State((app, i)): State<(App, u32)>) -> Response {
    let (c, t) = app.now();
    match c.broker(i, t) {
        Some(v) => {
            let text = page::broker_page(&v, c.config.topics, 100.0 + t, c.config.topic_detail);
            (TEXT, text).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "pod not running\n").into_response(),
    }
}

async fn bookie_metrics(State((app, i)): State<(App, u32)>) -> Response {
    let (c, _) = app.now();
    let (ledgers, _) = c.bookie_claims(i);
    (TEXT, page::bookie(ledgers)).into_response()
}

async fn kubelet_metrics(State(app): State<App>) -> Response {
    let (c, _) = app.now();
    (TEXT, page::kubelet(&c)).into_response()
}

async fn summary(State(app): State<App>) -> Response {
    let (c, _) = app.now();
    Json(page::summary(&c, jiff::Timestamp::now())).into_response()
}

async fn node_summary(State(app): State<App>, Path(node): Path<String>) -> Response {
    let (c, _) = app.now();
    if node != c.config.node {
        return (StatusCode::NOT_FOUND, format!("node {node:?} not found\n")).into_response();
    }
    Json(page::summary(&c, jiff::Timestamp::now())).into_response()
}

fn view(app: &Shared, c: &Cluster) -> StateView {
    let ns = &c.config.namespace;
    let mut pods = Vec::new();
    for (i, a) in app.brokers.iter().enumerate() {
        pods.push(PodView {
            namespace: ns.clone(),
            pod: c.broker_pod(i as u32),
            role: "broker".into(),
            url: format!("http://{a}/metrics/"),
            running: (i as u32) < c.brokers,
        });
    }
    for (i, a) in app.bookies.iter().enumerate() {
        pods.push(PodView {
            namespace: ns.clone(),
            pod: c.bookie_pod(i as u32),
            role: "bookie".into(),
            url: format!("http://{a}/metrics"),
            running: true,
        });
    }
    StateView {
        brokers: c.brokers,
        max_brokers: c.config.max_brokers,
        bookies: c.config.bookies,
        load_factor: c.load_factor,
        claims: c
            .claims
            .iter()
            .map(|(k, v)| (k.clone(), v.capacity_bytes.round() as u64))
            .collect(),
        pods,
        kubelet_url: format!("http://{}/metrics", app.kubelet),
        node: c.config.node.clone(),
    }
}

async fn get_state(State(app): State<App>) -> Json<StateView> {
    let (c, _) = app.now();
    Json(view(&app, &c))
}

async fn post_state(State(app): State<App>, Json(change): Json<StateChange>) -> Response {
    let (mut c, _) = app.now();
    if let Err(why) = apply(&mut c, &change) {
        return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response();
    }
    Json(view(&app, &c)).into_response()
}

/// Applies a change, all or nothing.
pub fn apply(c: &mut Cluster, change: &StateChange) -> Result<(), String> {
    if let Some(n) = change.brokers
        && n > c.config.max_brokers
    {
        return Err(format!(
            "brokers {n} exceeds maxBrokers {}",
            c.config.max_brokers
        ));
    }
    if let Some(f) = change.load_factor
        && !(f.is_finite() && f >= 0.0)
    {
        return Err(format!("loadFactor {f} must be a finite number ≥ 0"));
    }
    for (name, bytes) in change.claims.iter().flatten() {
        let Some(claim) = c.claims.get(name) else {
            return Err(format!("no claim {name:?}"));
        };
        if (*bytes as f64) < claim.capacity_bytes {
            return Err(format!(
                "claim {name} cannot shrink below {}",
                claim.capacity_bytes
            ));
        }
    }
    if let Some(n) = change.brokers {
        c.brokers = n;
    }
    if let Some(f) = change.load_factor {
        c.load_factor = f;
    }
    for (name, bytes) in change.claims.iter().flatten() {
        if let Some(claim) = c.claims.get_mut(name) {
            claim.capacity_bytes = *bytes as f64;
        }
    }
    Ok(())
}

async fn truth(State(app): State<App>) -> Json<Truth> {
    let (c, t) = app.now();
    Json(c.truth(t))
}

#[derive(Deserialize)]
struct ScrapeParams {
    #[serde(default)]
    interval: Option<String>,
}

async fn scrape_config(State(app): State<App>, Query(p): Query<ScrapeParams>) -> Response {
    let (c, _) = app.now();
    let v = view(&app, &c);
    (
        TEXT,
        super::scrape_config(&v, p.interval.as_deref().unwrap_or("1s")),
    )
        .into_response()
}
