//! A real Apache Pulsar 4.0.7 for tests, from the jars `scripts/setup.d/40-pulsar.sh` resolves:
//! a standalone (broker + bookie + RocksDB metadata in one JVM) for the fast tests, and a
//! cluster of ZooKeeper, bookies and brokers as separate JVMs. Every broker and bookie binds a
//! loopback address of its own (127.X.Y.Z) with Pulsar's standard ports (web 8080, binary 6650,
//! bookie stats 8000), so the address is what a pod IP is in a cluster and the URLs the
//! controller builds for a pod reach it unchanged. Load comes from the official Python client
//! (`tests/pulsar/load.py`). Every process dies with its owner (drop, or the test process).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::apiserver::{die_with_parent, from_test_env};
use super::monitoring::free_port;

/// Broker web (admin + `/metrics/`) port, as in Pulsar's Helm chart.
pub const WEB_PORT: u16 = 8080;
/// Broker binary protocol port.
pub const BROKER_PORT: u16 = 6650;
/// Bookie Prometheus stats port, as in Pulsar's Helm chart.
pub const BOOKIE_STATS_PORT: u16 = 8000;
/// Cluster name of every test Pulsar.
pub const CLUSTER: &str = "test";

const SETUP: &str = "scripts/setup.d/40-pulsar.sh";

/// A test bookie shares the machine's disk, which may well be past BookKeeper's 90/95 % marks
/// by its own measure (reserved blocks count as used); it must keep accepting writes anyway.
/// Tests read the usage gauge, which these marks do not change.
const BOOKIE_DISK_MARKS: &str =
    "diskUsageThreshold=0.999\ndiskUsageWarnThreshold=0.998\ndiskUsageLwmThreshold=0.998";

/// A location the setup step wrote to `target/test-env` (or the environment overrides).
fn setup_path(var: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| from_test_env(var));
    match path {
        Some(p) if p.exists() => p,
        Some(p) => panic!(
            "{var}={} does not exist; run `bash {SETUP}` (or scripts/test.sh) to install {what}",
            p.display()
        ),
        None => panic!(
            "{what} not found: {var} is unset and target/test-env does not name it; run \
             `bash {SETUP}` (or scripts/test.sh, which runs every setup step)"
        ),
    }
}

/// Directory of Pulsar's jars.
pub fn lib_dir() -> PathBuf {
    setup_path("PULSAR_LIB", "Apache Pulsar's jars (Maven Central)")
}

/// `PYTHONPATH` holding the official Python client.
pub fn python_path() -> PathBuf {
    setup_path(
        "PULSAR_PYTHONPATH",
        "the Pulsar Python client (PyPI pulsar-client)",
    )
}

/// A loopback address nobody else in this process was given, where `ports` are free.
pub fn loopback_ip(ports: &[u16]) -> String {
    static GIVEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = std::process::id() as u64 ^ clock;
    let mut n = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    loop {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ip = format!(
            "127.{}.{}.{}",
            100 + (n >> 33) % 150,
            (n >> 17) % 250 + 1,
            (n >> 7) % 250 + 2
        );
        let free = ports
            .iter()
            .all(|p| TcpListener::bind(format!("{ip}:{p}")).is_ok());
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if free && given.insert(ip.clone()) {
            return ip;
        }
    }
}

/// One JVM of the test Pulsar, with its log in its own directory.
pub struct Jvm {
    /// What it is, for messages.
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    /// When it was started.
    pub started: Instant,
}

impl Jvm {
    /// Starts `main` from Pulsar's jars with `opts` for the JVM and `args` for the program.
    pub fn start(name: &str, dir: &Path, main: &str, opts: &[String], args: &[String]) -> Jvm {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("log of {name}: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("log of {name}: {e}"));
        let mut cmd = Command::new("java");
        cmd.args(opts)
            .args([
                // What Pulsar's own launch scripts open up on Java 17.
                "--add-opens",
                "java.base/java.nio=ALL-UNNAMED",
                "--add-opens",
                "java.base/jdk.internal.misc=ALL-UNNAMED",
                "--add-opens",
                "java.management/sun.management=ALL-UNNAMED",
                "--add-opens",
                "jdk.management/com.sun.management.internal=ALL-UNNAMED",
                "-Dio.netty.tryReflectionSetAccessible=true",
                // Two cores host every JVM of a test: the quick compiler only.
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
            ])
            .arg(format!("{}/*", lib_dir().display()))
            .arg(main)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} (java {main}): {e}; is Java 17 on PATH?"));
        Jvm {
            name: name.to_string(),
            child: Some(child),
            log,
            started: Instant::now(),
        }
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Resident memory now, from `/proc`.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kb * 1024)
    }

    /// SIGTERM, as the kubelet stops a container; SIGKILL after `grace`. Returns how long the
    /// process took to exit and whether it had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> (Duration, bool) {
        let Some(mut c) = self.child.take() else {
            return (Duration::ZERO, false);
        };
        let start = Instant::now();
        // SAFETY: kill(2) on our own child's pid has no memory-safety requirements.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        while start.elapsed() < grace {
            if let Ok(Some(_)) = c.try_wait() {
                return (start.elapsed(), false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        (start.elapsed(), true)
    }

    /// SIGKILL now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs to completion (a one-shot tool); panics with the log when it fails.
    pub fn wait_success(&mut self, what: &str) {
        let Some(c) = self.child.as_mut() else {
            return;
        };
        let status = c.wait().unwrap_or_else(|e| panic!("{what}: {e}"));
        self.child = None;
        assert!(
            status.success(),
            "{what} failed ({status}); log:\n{}",
            self.log_tail(40)
        );
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Jvm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Broker settings a test may change.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// `statsUpdateFrequencyInSecs`: how often the broker-level rates are refreshed.
    pub stats_period_secs: u32,
    /// `-Xmx`, MiB.
    pub heap_mib: u64,
    /// `-XX:MaxDirectMemorySize`, MiB.
    pub direct_mib: u64,
    /// More `key=value` lines for the broker configuration.
    pub extra: Vec<(String, String)>,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            stats_period_secs: 5,
            heap_mib: 512,
            direct_mib: 256,
            extra: Vec::new(),
        }
    }
}

impl BrokerSettings {
    fn jvm_opts(&self) -> Vec<String> {
        vec![
            format!("-Xms{}m", self.heap_mib.min(128)),
            format!("-Xmx{}m", self.heap_mib),
            format!("-XX:MaxDirectMemorySize={}m", self.direct_mib),
        ]
    }

    fn conf(&self, ip: &str) -> String {
        let mut lines = vec![
            format!("clusterName={CLUSTER}"),
            format!("advertisedAddress={ip}"),
            format!("bindAddress={ip}"),
            format!("brokerServicePort={BROKER_PORT}"),
            format!("webServicePort={WEB_PORT}"),
            "managedLedgerDefaultEnsembleSize=1".into(),
            "managedLedgerDefaultWriteQuorum=1".into(),
            "managedLedgerDefaultAckQuorum=1".into(),
            "functionsWorkerEnabled=false".into(),
            format!("statsUpdateFrequencyInSecs={}", self.stats_period_secs),
            format!("statsUpdateInitialDelayInSecs={}", self.stats_period_secs),
        ];
        // The standalone's bookie reads this file too.
        lines.push(BOOKIE_DISK_MARKS.into());
        lines.extend(self.extra.iter().map(|(k, v)| format!("{k}={v}")));
        lines.join("\n") + "\n"
    }
}

/// Waits until a broker's health check passes; fails early with its log when it exits.
async fn wait_healthy(jvm: &mut Jvm, web: &str) {
    let http = super::monitoring::client();
    let url = format!("{web}/admin/v2/brokers/health");
    let mut last = String::new();
    for _ in 0..(240 * 4) {
        if !jvm.running() {
            panic!("{} exited; log:\n{}", jvm.name, jvm.log_tail(40));
        }
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                eprintln!(
                    "{} healthy after {:.1}s",
                    jvm.name,
                    jvm.started.elapsed().as_secs_f64()
                );
                return;
            }
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{} not healthy at {url}: {last}; log:\n{}",
        jvm.name,
        jvm.log_tail(40)
    );
}

/// A single-broker standalone Pulsar (broker, bookie and metadata in one JVM).
pub struct Standalone {
    /// The JVM.
    pub jvm: Jvm,
    /// Its own loopback address.
    pub ip: String,
    /// The settings it was started with.
    pub settings: BrokerSettings,
    dir: TempDir,
}

impl Standalone {
    /// Starts it and waits until the broker's health check passes.
    pub async fn start(settings: BrokerSettings) -> Standalone {
        let ip = loopback_ip(&[WEB_PORT, BROKER_PORT]);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let conf = dir.path().join("standalone.conf");
        std::fs::write(&conf, settings.conf(&ip)).unwrap_or_else(|e| panic!("config: {e}"));
        let args: Vec<String> = vec![
            "--config".into(),
            conf.display().to_string(),
            "--no-functions-worker".into(),
            "--no-stream-storage".into(),
            "--wipe-data".into(),
            "--bookkeeper-dir".into(),
            dir.path().join("bookkeeper").display().to_string(),
            "--metadata-dir".into(),
            dir.path().join("metadata").display().to_string(),
            "--bookkeeper-port".into(),
            free_port().to_string(),
            "--zookeeper-port".into(),
            free_port().to_string(),
        ];
        let mut jvm = Jvm::start(
            "standalone",
            dir.path(),
            "org.apache.pulsar.PulsarStandaloneStarter",
            &settings.jvm_opts(),
            &args,
        );
        wait_healthy(&mut jvm, &format!("http://{ip}:{WEB_PORT}")).await;
        Standalone {
            jvm,
            ip,
            settings,
            dir,
        }
    }

    /// `http://<ip>:8080`.
    pub fn web_url(&self) -> String {
        format!("http://{}:{WEB_PORT}", self.ip)
    }

    /// `pulsar://<ip>:6650`.
    pub fn service_url(&self) -> String {
        format!("pulsar://{}:{BROKER_PORT}", self.ip)
    }

    /// Its data directory (bookie ledgers, metadata).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A bookie of a cluster.
pub struct Bookie {
    /// The JVM.
    pub jvm: Jvm,
    /// Its own loopback address (stats on `:8000/metrics`).
    pub ip: String,
    /// Its ledger directory.
    pub ledgers: PathBuf,
    /// Its journal directory.
    pub journal: PathBuf,
}

/// ZooKeeper, bookies and brokers as separate JVMs. Brokers are started and stopped by ordinal.
pub struct Cluster {
    /// Broker settings (each broker's configuration file is written from them).
    pub settings: BrokerSettings,
    /// Each ordinal's loopback address (fixed for the cluster's life, as a pod's would be).
    pub broker_ips: Vec<String>,
    brokers: Vec<Option<Jvm>>,
    /// The bookies.
    pub bookies: Vec<Bookie>,
    zk: Jvm,
    zk_port: u16,
    dir: TempDir,
    /// This cluster's turn: released last, after every process above is gone.
    _turn: tokio::sync::SemaphorePermit<'static>,
}

/// One multi-broker cluster at a time in a test process: on a 2-core machine two of them (five
/// JVMs each, under load) starve each other, and the timings the tests report and the admin
/// calls they wait on would measure that instead. Standalone brokers run beside a cluster.
static CLUSTER_TURN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

impl Cluster {
    /// Starts ZooKeeper, initialises the cluster's metadata, starts `bookies` bookies and the
    /// brokers with ordinals `0..running` (of at most `max_brokers`).
    pub async fn start(
        max_brokers: u32,
        running: u32,
        bookies: u32,
        settings: BrokerSettings,
    ) -> Cluster {
        let turn = CLUSTER_TURN
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("cluster turn: {e}"));
        let start = Instant::now();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let zk_port = free_port();
        let zk_conf = dir.path().join("zoo.cfg");
        std::fs::write(
            &zk_conf,
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\nmaxClientCnxns=0\n",
                dir.path().join("zookeeper").display()
            ),
        )
        .unwrap_or_else(|e| panic!("zoo.cfg: {e}"));
        let mut zk = Jvm::start(
            "zookeeper",
            dir.path(),
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            &["-Xmx128m".to_string()],
            &[zk_conf.display().to_string()],
        );
        wait_port(&mut zk, "127.0.0.1", zk_port).await;

        let broker_ips: Vec<String> = (0..max_brokers)
            .map(|_| loopback_ip(&[WEB_PORT, BROKER_PORT]))
            .collect();
        let store = format!("zk:127.0.0.1:{zk_port}");
        let mut setup = Jvm::start(
            "metadata-setup",
            dir.path(),
            "org.apache.pulsar.PulsarClusterMetadataSetup",
            &["-Xmx128m".to_string()],
            &[
                "--cluster".into(),
                CLUSTER.into(),
                "--metadata-store".into(),
                store.clone(),
                "--configuration-metadata-store".into(),
                store.clone(),
                "--web-service-url".into(),
                format!("http://{}:{WEB_PORT}", broker_ips[0]),
                "--broker-service-url".into(),
                format!("pulsar://{}:{BROKER_PORT}", broker_ips[0]),
            ],
        );
        setup.wait_success("PulsarClusterMetadataSetup");

        let mut cluster = Cluster {
            settings,
            broker_ips,
            brokers: (0..max_brokers).map(|_| None).collect(),
            bookies: Vec::new(),
            zk,
            zk_port,
            dir,
            _turn: turn,
        };
        for i in 0..bookies {
            let bookie = cluster.start_bookie(i).await;
            cluster.bookies.push(bookie);
        }
        for i in 0..running {
            cluster.start_broker(i).await;
        }
        eprintln!(
            "cluster of {running} broker(s), {bookies} bookie(s) up in {:.1}s",
            start.elapsed().as_secs_f64()
        );
        cluster
    }

    async fn start_bookie(&mut self, i: u32) -> Bookie {
        let ip = loopback_ip(&[BOOKIE_STATS_PORT]);
        let home = self.dir.path().join(format!("bookie-{i}"));
        let (ledgers, journal) = (home.join("ledgers"), home.join("journal"));
        std::fs::create_dir_all(&ledgers).unwrap_or_else(|e| panic!("bookie dir: {e}"));
        std::fs::create_dir_all(&journal).unwrap_or_else(|e| panic!("bookie dir: {e}"));
        let port = free_port();
        let conf = home.join("bookkeeper.conf");
        std::fs::write(
            &conf,
            format!(
                "bookiePort={port}\nadvertisedAddress=127.0.0.1\nallowLoopback=true\n\
                 metadataServiceUri=zk+hierarchical://127.0.0.1:{}/ledgers\n\
                 journalDirectories={}\nledgerDirectories={}\n\
                 statsProviderClass=org.apache.bookkeeper.stats.prometheus.PrometheusMetricsProvider\n\
                 prometheusStatsHttpAddress={ip}\nprometheusStatsHttpPort={BOOKIE_STATS_PORT}\n\
                 httpServerEnabled=false\njournalSyncData=false\n{BOOKIE_DISK_MARKS}\n",
                self.zk_port,
                journal.display(),
                ledgers.display()
            ),
        )
        .unwrap_or_else(|e| panic!("bookkeeper.conf: {e}"));
        let mut jvm = Jvm::start(
            &format!("bookie-{i}"),
            &home,
            "org.apache.bookkeeper.server.Main",
            &[
                "-Xmx256m".to_string(),
                "-XX:MaxDirectMemorySize=256m".to_string(),
            ],
            &["--conf".into(), conf.display().to_string()],
        );
        wait_port(&mut jvm, "127.0.0.1", port).await;
        wait_port(&mut jvm, &ip, BOOKIE_STATS_PORT).await;
        Bookie {
            jvm,
            ip,
            ledgers,
            journal,
        }
    }

    /// Starts broker `i` (if it is not running) and waits until it is healthy.
    pub async fn start_broker(&mut self, i: u32) {
        let idx = i as usize;
        if self.brokers[idx].as_mut().is_some_and(Jvm::running) {
            return;
        }
        let ip = self.broker_ips[idx].clone();
        let home = self.dir.path().join(format!("broker-{i}"));
        std::fs::create_dir_all(&home).unwrap_or_else(|e| panic!("broker dir: {e}"));
        let store = format!("zk:127.0.0.1:{}", self.zk_port);
        let mut conf = self.settings.conf(&ip);
        conf.push_str(&format!(
            "metadataStoreUrl={store}\nconfigurationMetadataStoreUrl={store}\n"
        ));
        let file = home.join("broker.conf");
        std::fs::write(&file, conf).unwrap_or_else(|e| panic!("broker.conf: {e}"));
        let mut jvm = Jvm::start(
            &format!("broker-{i}"),
            &home,
            "org.apache.pulsar.PulsarBrokerStarter",
            &self.settings.jvm_opts(),
            &["--broker-conf".into(), file.display().to_string()],
        );
        wait_healthy(&mut jvm, &self.web_url(i)).await;
        self.brokers[idx] = Some(jvm);
    }

    /// Stops broker `i` as the kubelet would: SIGTERM, SIGKILL after `grace`.
    pub fn stop_broker(&mut self, i: u32, grace: Duration) -> (Duration, bool) {
        match self.brokers[i as usize].take() {
            Some(mut jvm) => jvm.terminate(grace),
            None => (Duration::ZERO, false),
        }
    }

    /// Whether broker `i` runs.
    pub fn broker_running(&mut self, i: u32) -> bool {
        self.brokers[i as usize].as_mut().is_some_and(Jvm::running)
    }

    /// The JVM of broker `i`, while it runs.
    pub fn broker(&self, i: u32) -> Option<&Jvm> {
        self.brokers[i as usize].as_ref()
    }

    /// `http://<ip of broker i>:8080`.
    pub fn web_url(&self, i: u32) -> String {
        format!("http://{}:{WEB_PORT}", self.broker_ips[i as usize])
    }

    /// A service URL naming every broker address (the client finds the owner of each topic).
    pub fn service_url(&self) -> String {
        let hosts: Vec<String> = self
            .broker_ips
            .iter()
            .map(|ip| format!("{ip}:{BROKER_PORT}"))
            .collect();
        format!("pulsar://{}", hosts.join(","))
    }

    /// The cluster's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes the cluster's data (ZooKeeper, bookie journals and ledgers, broker logs) holds.
    pub fn disk_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => std::fs::read_dir(p)
                    .map(|d| d.flatten().map(|e| walk(&e.path())).sum())
                    .unwrap_or(0),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        }
        walk(self.dir.path())
    }

    /// Resident memory of every JVM of the cluster now.
    pub fn rss_bytes(&self) -> u64 {
        let brokers = self.brokers.iter().flatten();
        let bookies = self.bookies.iter().map(|b| &b.jvm);
        std::iter::once(&self.zk)
            .chain(brokers)
            .chain(bookies)
            .filter_map(Jvm::rss_bytes)
            .sum()
    }
}

async fn wait_port(jvm: &mut Jvm, host: &str, port: u16) {
    for _ in 0..(180 * 4) {
        if !jvm.running() {
            panic!("{} exited; log:\n{}", jvm.name, jvm.log_tail(40));
        }
        if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
            eprintln!(
                "{} listening on {host}:{port} after {:.1}s",
                jvm.name,
                jvm.started.elapsed().as_secs_f64()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{} never listened on {host}:{port}; log:\n{}",
        jvm.name,
        jvm.log_tail(40)
    );
}

/// Creates a namespace (`tenant/name`) through a broker's admin API.
pub async fn create_namespace(web: &str, namespace: &str) {
    let r = super::monitoring::client()
        .put(format!("{web}/admin/v2/namespaces/{namespace}"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating namespace {namespace}: {e}"));
    assert!(
        r.status().is_success() || r.status().as_u16() == 409,
        "creating namespace {namespace}: HTTP {}",
        r.status()
    );
}

/// Counts reported by the load generator.
#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    /// Messages handed to the client.
    pub sent: u64,
    /// Sends the broker acknowledged.
    pub acked: u64,
    /// Sends that failed (timeout, broker error).
    pub failed: u64,
    /// Messages the consumers received.
    pub received: u64,
    /// Median publish latency, ms.
    pub p50_ms: f64,
    /// 99th percentile publish latency, ms.
    pub p99_ms: f64,
    /// Longest publish latency (the longest stall), ms.
    pub max_ms: f64,
    /// Failures by client error.
    pub errors: Value,
}

impl LoadStats {
    fn from_json(v: &Value) -> LoadStats {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let ms = |k: &str| v["latency_ms"][k].as_f64().unwrap_or(0.0);
        LoadStats {
            sent: n("sent"),
            acked: n("acked"),
            failed: n("failed"),
            received: n("received"),
            p50_ms: ms("p50"),
            p99_ms: ms("p99"),
            max_ms: ms("max"),
            errors: v["errors"].clone(),
        }
    }
}

/// Producers and consumers from the official Python client at a set rate.
pub struct Load {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
    /// Bytes per message.
    pub size: u64,
}

impl Load {
    /// Publishes `rate` messages/s of `size` bytes over `topics` and consumes them.
    pub fn start(service_url: &str, rate: f64, size: u64, topics: &[String]) -> Load {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pulsar/load.py");
        let mut cmd = Command::new("python3");
        cmd.arg("-u")
            .arg(script)
            .arg(service_url)
            .arg(rate.to_string())
            .arg(size.to_string())
            .args(topics)
            .env("PYTHONPATH", python_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting the load generator (python3): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
            }
        });
        Load {
            child: Some(child),
            stdin,
            lines,
            size,
        }
    }

    /// Changes the publish rate (messages/s; 0 pauses).
    pub fn set_rate(&mut self, rate: f64) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "rate {rate}");
            let _ = stdin.flush();
        }
    }

    /// Forgets the publish latencies so far: percentiles and the longest stall then cover
    /// only what follows (counts stay cumulative).
    pub fn reset_latencies(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "reset");
            let _ = stdin.flush();
        }
    }

    /// The newest counts.
    pub fn latest(&self) -> LoadStats {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.last().map(LoadStats::from_json).unwrap_or_default()
    }

    /// Acknowledged and received messages per second over about the last `secs` seconds.
    pub fn rates(&self, secs: f64) -> (f64, f64) {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let Some(last) = lines.last() else {
            return (0.0, 0.0);
        };
        let t = |v: &Value| v["t"].as_f64().unwrap_or(0.0);
        let first = lines
            .iter()
            .rev()
            .find(|v| t(last) - t(v) >= secs)
            .unwrap_or(&lines[0]);
        let dt = t(last) - t(first);
        if dt <= 0.0 {
            return (0.0, 0.0);
        }
        let n = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        (
            (n(last, "acked") - n(first, "acked")) / dt,
            (n(last, "received") - n(first, "received")) / dt,
        )
    }

    /// Waits until the broker has acknowledged `n` messages.
    pub async fn wait_acked(&self, n: u64) {
        for _ in 0..(120 * 4) {
            if self.latest().acked >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "load never reached {n} acknowledged sends: {:?}",
            self.latest()
        );
    }

    /// Stops publishing, waits for the last receipts and returns the final counts.
    pub async fn stop(mut self) -> LoadStats {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "stop");
        }
        for _ in 0..(60 * 4) {
            let done = {
                let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
                lines
                    .last()
                    .filter(|v| v["final"] == Value::Bool(true))
                    .cloned()
            };
            if let Some(v) = done {
                if let Some(mut c) = self.child.take() {
                    let _ = c.wait();
                }
                return LoadStats::from_json(&v);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the load generator did not finish: {:?}", self.latest());
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
