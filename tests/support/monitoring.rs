//! Real monitoring servers for tests: Prometheus and VictoriaMetrics from Debian's packages, started on
//! free loopback ports with temporary data directories, and killed when dropped (also when a
//! test fails). The emulator runs in-process.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use pulsar_autoscaler::emulator::{self, Config, Running, StateView, Truth};
use tempfile::TempDir;

/// Installs the process-wide rustls provider (kube and reqwest both need one).
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A port nobody listens on right now, never the same twice in this process: the OS may hand
/// out a port again before the server it was meant for has bound it.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free loopback port: {e}"));
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
}

/// A server binary; a missing one fails the test with the way to install it.
pub fn binary(env: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{} not found (set {env} to override). Install it with \
         `apt-get update && apt-get install -y {package}` or run scripts/setup.d/10-monitoring.sh",
        path.display()
    );
    path
}

/// A child process with its own directory; killed and reaped on drop.
pub struct Server {
    /// What it is, for messages.
    pub name: &'static str,
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Port it listens on.
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl Server {
    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server now (a server stopping mid-test).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(
    name: &'static str,
    program: &Path,
    args: &[String],
    dir: TempDir,
    port: u16,
    scheme: &str,
) -> Server {
    let log =
        File::create(dir.path().join("log")).unwrap_or_else(|e| panic!("log file for {name}: {e}"));
    let err = log
        .try_clone()
        .unwrap_or_else(|e| panic!("log file for {name}: {e}"));
    let child = Command::new(program)
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    Server {
        name,
        url: format!("{scheme}://127.0.0.1:{port}"),
        port,
        child: Some(child),
        dir,
    }
}

/// Starts Prometheus with `scrape_config`, optionally with a `--web.config.file` (TLS/auth).
pub fn prometheus(scrape_config: &str, web_config: Option<&str>) -> Server {
    prometheus_at(scrape_config, web_config, free_port())
}

/// Starts Prometheus without TLS or auth on a given port (again, after an outage).
pub fn prometheus_on(scrape_config: &str, port: u16) -> Server {
    prometheus_at(scrape_config, None, port)
}

fn prometheus_at(scrape_config: &str, web_config: Option<&str>, port: u16) -> Server {
    let program = binary("PROMETHEUS_BIN", "/usr/bin/prometheus", "prometheus");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, scrape_config).unwrap_or_else(|e| panic!("writing config: {e}"));
    let mut args = vec![
        format!("--config.file={}", config.display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        "--log.level=warn".to_string(),
    ];
    let mut scheme = "http";
    if let Some(web) = web_config {
        let file = dir.path().join("web.yml");
        std::fs::write(&file, web).unwrap_or_else(|e| panic!("writing web config: {e}"));
        args.push(format!("--web.config.file={}", file.display()));
        if web.contains("tls_server_config") {
            scheme = "https";
        }
    }
    spawn("prometheus", &program, &args, dir, port, scheme)
}

/// Starts single-node VictoriaMetrics scraping with `scrape_config`.
pub fn victoria_metrics(scrape_config: &str) -> Server {
    let program = binary(
        "VICTORIA_METRICS_BIN",
        "/usr/bin/victoria-metrics",
        "victoria-metrics",
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let config = dir.path().join("scrape.yml");
    std::fs::write(&config, scrape_config).unwrap_or_else(|e| panic!("writing config: {e}"));
    let port = free_port();
    let args = vec![
        format!("-httpListenAddr=127.0.0.1:{port}"),
        format!("-storageDataPath={}", dir.path().join("data").display()),
        format!("-promscrape.config={}", config.display()),
        // Instant queries near "now" must see the latest scrape.
        "-search.latencyOffset=1s".to_string(),
        "-search.disableCache".to_string(),
        "-loggerLevel=WARN".to_string(),
    ];
    spawn("victoria-metrics", &program, &args, dir, port, "http")
}

/// A plain client for readiness checks and control calls.
pub fn client() -> reqwest::Client {
    crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"))
}

/// Polls `check` every 250 ms until it returns `Some`, for at most `tries` attempts.
pub async fn eventually<T, F, Fut>(what: &str, tries: u32, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for _ in 0..tries {
        match check().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what} did not happen; last: {last}");
}

/// Waits until `server` answers `path` with success; fails early when it exits.
pub async fn ready(server: &mut Server, path: &str, client: &reqwest::Client) {
    let url = format!("{}{path}", server.url);
    let mut last = String::new();
    for _ in 0..160 {
        if !server.running() {
            panic!("{} exited; log:\n{}", server.name, server.log_tail());
        }
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{} not ready at {url}: {last}; log:\n{}",
        server.name,
        server.log_tail()
    );
}

/// An emulator with `config`, on loopback.
pub async fn emulator(config: Config) -> Running {
    emulator::start(config, IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
        .await
        .unwrap_or_else(|e| panic!("emulator: {e}"))
}

/// The emulator's state.
pub async fn state(emu: &Running) -> StateView {
    client()
        .get(format!("{}/state", emu.control_url()))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("emulator state: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("emulator state: {e}"))
}

/// The emulator's ground truth now.
pub async fn truth(emu: &Running) -> Truth {
    client()
        .get(format!("{}/truth", emu.control_url()))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("emulator truth: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("emulator truth: {e}"))
}

/// Posts a change to the emulator.
pub async fn change(emu: &Running, body: serde_json::Value) {
    client()
        .post(format!("{}/state", emu.control_url()))
        .json(&body)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("emulator change {body}: {e}"));
}

/// Whether `got` is within `pct` percent of `want`.
pub fn close(got: f64, want: f64, pct: f64) -> bool {
    (got - want).abs() <= want.abs() * pct / 100.0
}

/// An emulator with Prometheus and VictoriaMetrics scraping it every second, both with data.
pub struct Stack {
    /// The emulated cluster.
    pub emu: Running,
    /// Prometheus.
    pub prom: Server,
    /// VictoriaMetrics.
    pub vm: Server,
}

impl Stack {
    /// Starts everything and waits until both servers have every pod's and claim's series.
    pub async fn start(config: Config) -> Stack {
        crypto();
        let brokers = config.brokers as usize;
        let bookies = config.bookies as usize;
        let emu = emulator(config).await;
        let scrape = emulator::scrape_config(&state(&emu).await, "1s");
        let mut prom = prometheus(&scrape, None);
        let mut vm = victoria_metrics(&scrape);
        let http = client();
        ready(&mut prom, "/-/ready", &http).await;
        ready(&mut vm, "/health", &http).await;
        for server in [&prom, &vm] {
            let url = format!("{}/api/v1/query", server.url);
            // Every series the presets read, counted: brokers × 4 + bookies × 2 + claims.
            let want = brokers + bookies + bookies * 2;
            let query = r#"count(pulsar_broker_throughput_in) + count(bookie_SERVER_STATUS) + count(kubelet_volume_stats_used_bytes)"#;
            eventually(&format!("{} has data", server.name), 240, || async {
                let now = format!(
                    "{:.3}",
                    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
                );
                let body: serde_json::Value = http
                    .post(&url)
                    .form(&[("query", query), ("time", now.as_str())])
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                let got = body["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok());
                match got {
                    Some(n) if n as usize == want => Ok(()),
                    other => Err(format!("{other:?} of {want} series")),
                }
            })
            .await;
        }
        Stack { emu, prom, vm }
    }
}

/// Broker and bookie pods of a running emulator as Direct-mode endpoints.
pub async fn pods(emu: &Running) -> Vec<pulsar_autoscaler::metrics::PodEndpoint> {
    use pulsar_autoscaler::metrics::{PodEndpoint, Role};
    state(emu)
        .await
        .pods
        .into_iter()
        .filter(|p| p.running)
        .map(|p| {
            let role = if p.role == "broker" {
                Role::Broker
            } else {
                Role::Bookie
            };
            PodEndpoint::at(&p.namespace, &p.pod, role, p.url)
        })
        .collect()
}

/// A kube client whose "API server" is the emulator's control port, which serves the node
/// proxy path of the kubelet summary API.
pub async fn kubelet(emu: &Running) -> pulsar_autoscaler::metrics::KubeletStats {
    crypto();
    let uri: http::Uri = emu
        .control_url()
        .parse()
        .unwrap_or_else(|e| panic!("control url: {e}"));
    let client = kube::Client::try_from(kube::Config::new(uri))
        .unwrap_or_else(|e| panic!("kube client: {e}"));
    pulsar_autoscaler::metrics::KubeletStats {
        client,
        nodes: vec![state(emu).await.node],
    }
}

/// A checked policy from a spec fragment (YAML lines under `spec:`).
pub fn policy(namespace: &str, name: &str, spec: &str) -> pulsar_autoscaler::policy::Policy {
    let text = format!(
        "apiVersion: pulsar-autoscaler.dev/v1alpha1\nkind: ScalingPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}"
    );
    let value: serde_json::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("policy yaml: {e}\n{text}"));
    match pulsar_autoscaler::policy::check_object(&value) {
        Ok((_, p)) => p,
        Err(problems) => panic!("policy refused: {problems:?}\n{text}"),
    }
}

/// The broker part of a policy using every preset, under `spec:`.
pub const ALL_BROKER_METRICS: &str = "  brokers:
    statefulSet: pulsar-broker
    minReplicas: 1
    maxReplicas: 10
    metrics:
      - type: Throughput
        targetPerBroker: 50Mi
      - type: MessageRate
        targetPerBroker: \"20000\"
      - type: HeapMemory
        targetUtilization: 75
      - type: DirectMemory
        targetUtilization: 80
  bookies:
    statefulSet: pulsar-bookie
    maxSize: 2Ti
";

/// Serves `router` on a free loopback port; for answers no real server gives on demand
/// (HTTP 500, non-JSON bodies, slow responses, NaN pages).
pub async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// A scrape configuration for one target with Kubernetes-style labels.
pub fn scrape_one(host: &str, namespace: &str, pod: &str) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: one\n    static_configs:\n      - targets: ['{host}']\n        labels: {{namespace: '{namespace}', pod: '{pod}'}}\n"
    )
}
