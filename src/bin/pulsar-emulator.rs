//! pulsar-emulator: serves real-shaped Pulsar broker/bookie `/metrics` and kubelet volume stats
//! on loopback ports, with load from a profile or trace, controllable over HTTP.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

use pulsar_autoscaler::emulator::{self, Config, Load, Profile};
use pulsar_autoscaler::quantity;

#[derive(Clone, Copy, ValueEnum)]
enum ProfileKind {
    Constant,
    Diurnal,
    Ramp,
}

#[derive(Parser)]
#[command(
    name = "pulsar-emulator",
    version,
    about = "Emulates a Pulsar cluster's metrics: brokers, bookies and their volume claims"
)]
struct Args {
    /// Address to bind every port to.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Port of the control endpoint (GET/POST /state, GET /truth, GET /scrape-config).
    #[arg(long, default_value_t = 0)]
    control_port: u16,
    /// Kubernetes namespace of the emulated pods.
    #[arg(long, default_value = "pulsar")]
    namespace: String,
    /// Brokers running at start.
    #[arg(long, default_value_t = 3)]
    brokers: u32,
    /// Broker pods that can run (one port each); scale-ups beyond this are refused.
    #[arg(long, default_value_t = 10)]
    max_brokers: u32,
    /// Bookies.
    #[arg(long, default_value_t = 3)]
    bookies: u32,
    /// Built-in load profile.
    #[arg(long, value_enum, default_value = "constant")]
    profile: ProfileKind,
    /// Period of the diurnal and ramp profiles.
    #[arg(long, default_value = "10m")]
    period: humantime::Duration,
    /// Cluster inbound bytes/s of the profile (a quantity such as 60Mi).
    #[arg(long, default_value = "60Mi")]
    throughput_in: String,
    /// Cluster inbound messages/s of the profile.
    #[arg(long, default_value = "30000")]
    messages_in: String,
    /// CSV trace `seconds,bytes_in,messages_in` instead of a built-in profile.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Size of each ledgers claim.
    #[arg(long, default_value = "50Gi")]
    ledger_size: String,
    /// Size of each journal claim.
    #[arg(long, default_value = "10Gi")]
    journal_size: String,
    /// Used percent of the ledgers claims at start.
    #[arg(long, default_value_t = 40.0)]
    ledger_used: f64,
    /// Share of published bytes that stays on the ledger disks (0..=1).
    #[arg(long, default_value_t = 0.001)]
    disk_write_ratio: f64,
    /// Topics per broker page (five topic-level series each).
    #[arg(long, default_value_t = 4)]
    topics: u32,
    /// Give each topic every topic-level series a real broker publishes for a topic with one
    /// producer and one subscription (95 instead of five): a real page's weight.
    #[arg(long)]
    topic_detail: bool,
    /// Write a Prometheus scrape configuration for every pod to this file.
    #[arg(long)]
    write_scrape_config: Option<PathBuf>,
    /// Scrape interval written into that configuration.
    #[arg(long, default_value = "1s")]
    scrape_interval: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let base = Load {
        bytes_in: quantity::parse(&a.throughput_in).context("--throughput-in")?,
        messages_in: quantity::parse(&a.messages_in).context("--messages-in")?,
    };
    let period = a.period.as_secs_f64();
    let profile = match (&a.trace, a.profile) {
        (Some(path), _) => Profile::from_trace_file(path)?,
        (None, ProfileKind::Constant) => Profile::Constant(base),
        (None, ProfileKind::Diurnal) => Profile::Diurnal { base, period },
        (None, ProfileKind::Ramp) => Profile::Ramp { base, period },
    };
    if a.brokers > a.max_brokers {
        bail!(
            "--brokers {} exceeds --max-brokers {}",
            a.brokers,
            a.max_brokers
        );
    }
    if !(0.0..=1.0).contains(&a.disk_write_ratio) {
        bail!("--disk-write-ratio must be within 0..=1");
    }
    let config = Config {
        namespace: a.namespace,
        brokers: a.brokers,
        max_brokers: a.max_brokers,
        bookies: a.bookies,
        profile,
        ledger_claim_bytes: quantity::parse_bytes(&a.ledger_size).context("--ledger-size")?,
        journal_claim_bytes: quantity::parse_bytes(&a.journal_size).context("--journal-size")?,
        ledger_initial_percent: a.ledger_used.clamp(0.0, 100.0),
        disk_write_ratio: a.disk_write_ratio,
        topics: a.topics,
        topic_detail: a.topic_detail,
        ..Config::default()
    };
    let running = emulator::start(config, a.bind, a.control_port)
        .await
        .context("starting the emulator's servers")?;
    let state: emulator::StateView = reqwest_state(&running.control_url()).await?;
    if let Some(path) = &a.write_scrape_config {
        std::fs::write(path, emulator::scrape_config(&state, &a.scrape_interval))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", serde_json::to_string(&state)?);
    eprintln!(
        "control: {} (GET/POST /state, GET /truth, GET /scrape-config); Ctrl-C stops",
        running.control_url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    running.stop();
    Ok(())
}

/// Reads the state back through the control endpoint, as any client would.
async fn reqwest_state(control: &str) -> anyhow::Result<emulator::StateView> {
    pulsar_autoscaler::metrics::http::ensure_crypto_provider();
    let state = reqwest::get(format!("{control}/state"))
        .await
        .context("reading the emulator state")?
        .json()
        .await
        .context("decoding the emulator state")?;
    Ok(state)
}
