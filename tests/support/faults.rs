//! A fault-injecting HTTP proxy between a process under test and a real server (the API
//! server over TLS, Prometheus or VictoriaMetrics over HTTP). Rules pick requests by method and
//! path and answer them with a status of their choice, delay them, hold them until released
//! (before or after the server saw them), hang them, or rewrite the server's answer; every
//! streaming answer (watches) can be cut at once. Everything else passes through unchanged.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use futures::StreamExt;
use tokio::sync::watch;

/// What a rule does to the requests it matches.
#[derive(Clone)]
pub enum Fault {
    /// Answer with this status and a body; the server never sees the request.
    Respond(u16, &'static str),
    /// Wait, then forward.
    Delay(Duration),
    /// Hold the request until [`Proxy::release`], then forward it (a late write).
    HoldRequest,
    /// Forward the request, then hold its answer until [`Proxy::release`] (the server acted,
    /// the caller does not know yet).
    HoldResponse,
    /// Never answer.
    Hang,
    /// Forward, and rewrite the answer's body.
    Rewrite(Arc<dyn Fn(&str) -> String + Send + Sync>),
    /// Answer 401 unless the `Authorization` header is exactly this; forward when it is.
    RequireAuthorization(String),
    /// Answer 200 with a JSON opening followed by spaces that never end; the server never
    /// sees the request.
    Endless,
}

/// One rule: a method (any when empty), a path fragment, the fault, and how many requests it
/// may still catch (`None`: every one).
#[derive(Clone)]
pub struct Rule {
    /// `GET`, `PATCH`, ...; empty for any.
    pub method: &'static str,
    /// A fragment of the path and query.
    pub path: String,
    /// What to do.
    pub fault: Fault,
    /// Remaining requests to catch.
    pub times: Option<usize>,
}

impl Rule {
    /// A rule for every matching request.
    pub fn new(method: &'static str, path: &str, fault: Fault) -> Rule {
        Rule {
            method,
            path: path.to_string(),
            fault,
            times: None,
        }
    }

    /// The same rule for the first `n` matching requests only.
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
}

struct Shared {
    upstream: String,
    /// A path prefix replaced before forwarding (`/select/0/prometheus` → ``).
    prefix: Option<(String, String)>,
    http: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    /// Requests or answers held right now.
    held: AtomicUsize,
    /// Bumped by `release`: held requests go on.
    release: watch::Sender<u64>,
    /// Bumped by `cut_streams`: streaming answers end with an error.
    cut: watch::Sender<u64>,
    /// Requests seen per (method, path) with the fault applied, for assertions.
    log: Mutex<Vec<(String, String, &'static str)>>,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// Base URL to give the process under test.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`https://...` is checked against `ca`).
    pub async fn start(upstream: &str, ca: Option<&Path>) -> Proxy {
        Proxy::start_mapped(upstream, ca, None).await
    }

    /// Like `start`, replacing the path prefix `from` by `to` before forwarding.
    pub async fn start_mapped(
        upstream: &str,
        ca: Option<&Path>,
        prefix: Option<(&str, &str)>,
    ) -> Proxy {
        super::monitoring::crypto();
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).expect("CA file");
            let cert = reqwest::Certificate::from_pem(&pem).expect("CA certificate");
            http = http.tls_certs_only([cert]);
        }
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            prefix: prefix.map(|(a, b)| (a.to_string(), b.to_string())),
            http: http.build().expect("proxy client"),
            rules: Mutex::new(Vec::new()),
            held: AtomicUsize::new(0),
            release: watch::channel(0).0,
            cut: watch::channel(0).0,
            log: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Proxy {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Adds a rule; the first matching rule applies.
    pub fn add(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(rule);
    }

    /// Removes every rule (held requests stay held until released).
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Lets every held request or answer go on.
    pub fn release(&self) {
        self.shared.release.send_modify(|g| *g += 1);
    }

    /// Ends every streaming answer (watches) now, as a dropped connection would.
    pub fn cut_streams(&self) {
        self.shared.cut.send_modify(|g| *g += 1);
    }

    /// Requests or answers held right now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// How many requests matched `method` and `path` and got `fault` (a [`Fault`] name).
    pub fn count(&self, method: &str, path: &str, fault: &str) -> usize {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, f)| m == method && p.contains(path) && *f == fault)
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn name(f: Option<&Fault>) -> &'static str {
    match f {
        None => "pass",
        Some(Fault::Respond(..)) => "respond",
        Some(Fault::Delay(_)) => "delay",
        Some(Fault::HoldRequest) => "hold_request",
        Some(Fault::HoldResponse) => "hold_response",
        Some(Fault::Hang) => "hang",
        Some(Fault::Rewrite(_)) => "rewrite",
        Some(Fault::RequireAuthorization(_)) => "require_authorization",
        Some(Fault::Endless) => "endless",
    }
}

fn pick(shared: &Shared, method: &str, path: &str) -> Option<Fault> {
    let mut rules = shared.rules.lock().unwrap();
    let i = rules.iter().position(|r| {
        (r.method.is_empty() || r.method == method) && path.contains(&r.path) && r.times != Some(0)
    })?;
    let rule = &mut rules[i];
    if let Some(n) = rule.times.as_mut() {
        *n -= 1;
    }
    Some(rule.fault.clone())
}

async fn held(shared: &Shared) {
    let mut release = shared.release.subscribe();
    shared.held.fetch_add(1, Ordering::SeqCst);
    let _ = release.changed().await;
    shared.held.fetch_sub(1, Ordering::SeqCst);
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let fault = pick(&shared, method.as_str(), &path);
    shared
        .log
        .lock()
        .unwrap()
        .push((method.to_string(), path.clone(), name(fault.as_ref())));
    match &fault {
        Some(Fault::Respond(code, body)) => {
            return Response::builder()
                .status(*code)
                .header("content-type", "application/json")
                .body(Body::from(*body))
                .unwrap();
        }
        Some(Fault::RequireAuthorization(want)) => {
            let got = request.headers().get("authorization");
            if got.and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
                return Response::builder()
                    .status(401)
                    .body(Body::from("unauthorized"))
                    .unwrap();
            }
        }
        Some(Fault::Endless) => {
            let opening = Bytes::from_static(
                br#"{"status":"success","data":{"resultType":"vector","result":["#,
            );
            let spaces = Bytes::from(vec![b' '; 1 << 20]);
            let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(opening) })
                .chain(futures::stream::repeat_with(move || Ok(spaces.clone())));
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap();
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        Some(Fault::HoldRequest) => held(&shared).await,
        Some(Fault::Hang) => std::future::pending::<()>().await,
        _ => {}
    }
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let target = match &shared.prefix {
        Some((from, to)) if path.starts_with(from.as_str()) => {
            format!("{to}{}", &path[from.len()..])
        }
        _ => path.clone(),
    };
    let mut out = shared
        .http
        .request(method, format!("{}{target}", shared.upstream))
        .body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            return Response::builder()
                .status(502)
                .body(Body::from(format!("proxy: {e}")))
                .unwrap();
        }
    };
    if matches!(fault, Some(Fault::HoldResponse)) {
        held(&shared).await;
    }
    let mut response = Response::builder().status(answer.status().as_u16());
    for (k, v) in answer.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            response = response.header(k, v);
        }
    }
    if let Some(Fault::Rewrite(f)) = &fault {
        let text = answer.text().await.unwrap_or_default();
        return response.body(Body::from(f(&text))).unwrap();
    }
    // Stream the answer (watches stay open) until it ends or the streams are cut.
    let mut cut = shared.cut.subscribe();
    let was_cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = was_cut.clone();
    let stream = futures::stream::unfold(Some(answer), |state| async move {
        let mut a = state?;
        match a.chunk().await {
            Ok(Some(b)) => Some((Ok(b), Some(a))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    let stream = stream
        .take_until(async move {
            let _ = cut.changed().await;
            flag.store(true, Ordering::SeqCst);
        })
        .chain(futures::stream::once(async move {
            if was_cut.load(Ordering::SeqCst) {
                // An error mid-body makes the server drop the connection.
                Err(std::io::Error::other("connection cut"))
            } else {
                Ok(Bytes::new())
            }
        }));
    response.body(Body::from_stream(stream)).unwrap()
}
