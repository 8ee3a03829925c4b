//! Pages from a live real Pulsar: the capture that refreshes `tests/fixtures/real/`, and the
//! check that the committed captures still match what the real components serve.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::real_pulsar::{BrokerSettings, Cluster, Load, create_namespace};
use crate::support::{crypto, eventually};

/// Topics of the captured load: two in one Pulsar namespace, one in another.
const TOPICS: [&str; 3] = [
    "persistent://public/default/shape-0",
    "persistent://public/default/shape-1",
    "persistent://public/orders/shape-2",
];
/// Bytes per message of the captured load.
pub const MESSAGE_BYTES: u64 = 1024;
/// Messages per second of the captured load.
pub const MESSAGES_PER_S: f64 = 60.0;

/// Where the committed captures live.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real")
}

/// A broker and a bookie page of a real cluster under load, and how each answers the metrics
/// paths (status, redirect target, content type).
pub struct RealPages {
    /// The broker's `/metrics/`.
    pub broker: String,
    /// The bookie's `/metrics`.
    pub bookie: String,
    /// `{"broker": {path: answer}, "bookie": {path: answer}}`.
    pub http: Value,
    /// The bookie's ledger disk, used percent as BookKeeper measures it (statvfs: total
    /// blocks less those available to the bookie, so reserved blocks count as used).
    pub disk_percent: f64,
}

/// Used percent of the filesystem holding `path`, counting reserved blocks as used.
pub fn disk_used_percent(path: &std::path::Path) -> f64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: statvfs(3) writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(
        rc,
        0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    100.0 * (1.0 - st.f_bavail as f64 / st.f_blocks as f64)
}

/// What the captures record besides the pages: the load and versions they come from, the
/// bookie disk's own used percent, and the answers to the metrics paths.
pub fn capture_record(pages: &RealPages) -> Value {
    json!({
        "pulsar": "4.0.7",
        "load": {
            "messagesPerSecond": MESSAGES_PER_S,
            "messageBytes": MESSAGE_BYTES,
            "topics": TOPICS,
        },
        "bookieLedgerDiskUsedPercent": pages.disk_percent,
        "http": pages.http,
    })
}

/// How a server answers `GET path`, without following redirects; a redirect's target is kept
/// relative to the server when it points back at it.
async fn answer(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let r = http
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"));
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let location = header("location").map(|l| match l.strip_prefix(base) {
        Some(rest) => rest.to_string(),
        None => l,
    });
    json!({
        "status": r.status().as_u16(),
        "location": location,
        "contentType": header("content-type"),
    })
}

/// Answers of `base` for the metrics paths a scraper may use.
pub async fn answers(base: &str) -> Value {
    crypto();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"));
    let mut out = BTreeMap::new();
    for path in ["/metrics", "/metrics/"] {
        out.insert(path, answer(&http, base, path).await);
    }
    json!(out)
}

async fn get(url: &str) -> Result<String, String> {
    let r = crate::support::client()
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", r.status()));
    }
    r.text().await.map_err(|e| format!("GET {url}: {e}"))
}

fn value_of(page: &str, name: &str) -> Option<f64> {
    crate::shape::samples(page)
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.value)
}

/// Starts a one-broker, one-bookie cluster, drives load over [`TOPICS`] and reads both pages
/// once the broker's rates count the load, every topic is on the page and the bookie's disk
/// checker has measured its ledger directory.
pub async fn real_pages() -> RealPages {
    let cluster = Cluster::start(1, 1, 1, BrokerSettings::default()).await;
    let web = cluster.web_url(0);
    create_namespace(&web, "public/orders").await;
    let topics: Vec<String> = TOPICS.iter().map(|t| t.to_string()).collect();
    let load = Load::start(
        &cluster.service_url(),
        MESSAGES_PER_S,
        MESSAGE_BYTES,
        &topics,
    );
    load.wait_acked(100).await;
    let broker_url = format!("{web}/metrics/");
    let broker = eventually("the broker's rates count the load", 240, || async {
        let page = get(&broker_url).await?;
        let rate = value_of(&page, "pulsar_broker_rate_in").unwrap_or(0.0);
        let missing: Vec<&str> = TOPICS
            .iter()
            .copied()
            .filter(|t| !page.contains(t))
            .collect();
        if rate > MESSAGES_PER_S / 2.0 && missing.is_empty() {
            Ok(page)
        } else {
            Err(format!(
                "pulsar_broker_rate_in {rate}, topics not on the page: {missing:?}"
            ))
        }
    })
    .await;
    let bookie_base = format!(
        "http://{}:{}",
        cluster.bookies[0].ip,
        crate::support::real_pulsar::BOOKIE_STATS_PORT
    );
    let bookie_url = format!("{bookie_base}/metrics");
    let bookie = eventually(
        "the bookie's disk checker measures its ledger directory",
        240,
        || async {
            let page = get(&bookie_url).await?;
            let usage = crate::shape::samples(&page)
                .into_iter()
                .find(|s| crate::shape::family(&s.name) == crate::shape::LEDGER_DIR_USAGE)
                .map(|s| s.value);
            match usage {
                Some(u) if u > 0.0 => Ok(page),
                other => Err(format!("ledger directory usage {other:?}")),
            }
        },
    )
    .await;
    let disk_percent = disk_used_percent(&cluster.bookies[0].ledgers);
    let http = json!({
        "broker": answers(&web).await,
        "bookie": answers(&bookie_base).await,
    });
    let stats = load.stop().await;
    assert!(stats.acked > 0 && stats.failed == 0, "load: {stats:?}");
    RealPages {
        broker,
        bookie,
        http,
        disk_percent,
    }
}

/// Refreshes `tests/fixtures/real/` from a live real Pulsar (see docs/testing.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "rewrites the committed captures; run explicitly after a Pulsar upgrade"]
async fn capture_real_pages() {
    let pages = real_pages().await;
    let dir = fixture_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("wrote {} ({} bytes)", path.display(), text.len());
    };
    write("broker.prom", &pages.broker);
    write("bookie.prom", &pages.bookie);
    let record = serde_json::to_string_pretty(&capture_record(&pages)).unwrap_or_default() + "\n";
    write("capture.json", &record);
}

/// The committed captures still describe a live real Pulsar: every family the emulator serves
/// (with topic detail) or Direct mode reads has the same type, `# TYPE` line and label names on a live broker and
/// bookie, the metrics paths answer alike, and the live values obey the same unit rules. A
/// Pulsar upgrade that renames or retypes a series fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_match_a_live_real_pulsar() {
    use crate::emulator::{
        answers_differ, bookie_units, broker_units, emulator_pages, fixture, preset_values,
    };
    use crate::shape::{same_families, shape};
    use pulsar_autoscaler::metrics::exposition::wanted;

    let live = real_pages().await;
    let (emu_broker, emu_bookie, _) = emulator_pages(true).await;
    let (broker, bookie) = (fixture("broker.prom"), fixture("bookie.prom"));
    let record = crate::emulator::record();
    let families = |emulated: &str, captured: &str| {
        let mut names: std::collections::BTreeSet<String> = shape(emulated).into_keys().collect();
        names.extend(
            crate::shape::samples(captured)
                .into_iter()
                .filter(|s| wanted(&s.name))
                .map(|s| crate::shape::family(&s.name)),
        );
        names
    };
    let mut problems = same_families(
        "broker",
        &families(&emu_broker, &broker),
        &shape(&broker),
        &shape(&live.broker),
    );
    problems.extend(same_families(
        "bookie",
        &families(&emu_bookie, &bookie),
        &shape(&bookie),
        &shape(&live.bookie),
    ));
    problems.extend(answers_differ(&live.http, &record["http"]));
    problems.extend(broker_units(&live.broker));
    problems.extend(bookie_units(&live.bookie, Some(live.disk_percent)));
    for (preset, value) in preset_values(&live.broker, &live.bookie) {
        if value.is_none() {
            problems.push(format!("preset {preset} reads nothing from the live pages"));
        }
    }
    assert!(
        problems.is_empty(),
        "tests/fixtures/real/ no longer matches a live Pulsar; fix the emulator and presets, \
         then refresh the captures (docs/testing.md):\n  {}",
        problems.join("\n  ")
    );
}
