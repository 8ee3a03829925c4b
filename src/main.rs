//! Command line of pulsar-autoscaler.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;

use pulsar_autoscaler::api::ScalingPolicy;
use pulsar_autoscaler::backtest::{self, prometheus, replay, trace::Trace};
use pulsar_autoscaler::{policy, quantity};

#[derive(Parser)]
#[command(
    name = "pulsar-autoscaler",
    version,
    about = "Scales Apache Pulsar brokers and grows bookie volumes from ScalingPolicy resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ScalingPolicy CustomResourceDefinition as YAML (crds/scalingpolicy.yaml holds the same).
    Crd,
    /// Check ScalingPolicy YAML files offline with the rules the API server and controller apply.
    ///
    /// Prints one line per problem as `file: field.path: what is wrong` (`file#N` for the N-th
    /// document of a multi-document file) and exits non-zero when any file has a problem.
    Validate {
        /// YAML files, each holding one or more ScalingPolicy documents.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replay a policy over recorded load and report what it would have done.
    ///
    /// Drives the controller's own decision engine and rate limiter on a simple cluster model:
    /// throughput and message rate spread evenly over the ready brokers, a new broker takes
    /// load after --ready-delay, memory utilization follows load per broker, and the ledger
    /// claim grows by the policy's expansions. Writes decisions.csv, summary.json and chart.svg
    /// to --out and prints a summary. See docs/backtest.md for the trace format.
    #[command(group(clap::ArgGroup::new("input").required(true).args(["trace", "prometheus"])))]
    Backtest(BacktestArgs),
}

#[derive(clap::Args)]
struct BacktestArgs {
    /// ScalingPolicy YAML file (one policy).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Recorded load as CSV: seconds,throughput_bytes,message_rate,heap_percent,direct_percent,ledger_used_bytes
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Fetch the load from this Prometheus or VictoriaMetrics query URL instead of a trace.
    #[arg(long, value_name = "URL", requires_all = ["from", "to"])]
    prometheus: Option<String>,
    /// Start of the range: RFC 3339, unix seconds, `now` or `now-7d`.
    #[arg(long, value_name = "T")]
    from: Option<String>,
    /// End of the range: RFC 3339, unix seconds, `now` or `now-1h`.
    #[arg(long, value_name = "T")]
    to: Option<String>,
    /// Resolution of the fetched range.
    #[arg(long, value_name = "D", default_value = "15s", value_parser = humantime::parse_duration)]
    step: Duration,
    /// Broker pods at the start [default: the trace's first `brokers` value, else minReplicas].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    initial_replicas: Option<u32>,
    /// Time a new broker takes to become ready and take load.
    #[arg(long, value_name = "D", default_value = "60s", value_parser = humantime::parse_duration)]
    ready_delay: Duration,
    /// Ledger claim size at the start, e.g. 100Gi [default: the trace's `ledger_capacity_bytes`].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    initial_claim_size: Option<u64>,
    /// Also replay a baseline on the same trace: `hpa` is the Kubernetes HPA v2 algorithm with
    /// its default behavior, the policy's metrics, targets and bounds.
    #[arg(long, value_name = "BASELINE")]
    compare: Option<Baseline>,
    /// Directory for decisions.csv, summary.json and chart.svg.
    #[arg(long, value_name = "DIR", default_value = "backtest-out")]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Baseline {
    /// Kubernetes HorizontalPodAutoscaler v2 with default behavior.
    Hpa,
}

fn parse_size(text: &str) -> Result<u64, String> {
    quantity::parse_bytes(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    // One process-wide TLS provider before any client exists (kube and reqwest share it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // The cause chain on one line; a backtrace helps nobody who mistyped a file name.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            print!(
                "{}",
                serde_yaml_ng::to_string(&ScalingPolicy::crd()).context("rendering the CRD")?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { files } => validate(&files),
        Command::Backtest(args) => run_backtest(args),
    }
}

fn run_backtest(args: BacktestArgs) -> anyhow::Result<ExitCode> {
    let loaded = backtest::load_policy(&args.policy)?;
    let (trace, epoch, source) = match (&args.trace, &args.prometheus) {
        (Some(path), _) => (
            Trace::read(path).with_context(|| format!("reading {}", path.display()))?,
            replay::TRACE_EPOCH,
            path.display().to_string(),
        ),
        (None, Some(url)) => {
            let now = jiff::Timestamp::now();
            let from = prometheus::parse_time(args.from.as_deref().unwrap_or("now-1d"), now)?;
            let to = prometheus::parse_time(args.to.as_deref().unwrap_or("now"), now)?;
            let range = prometheus::RangeQuery {
                url: url.clone(),
                from,
                to,
                step: args.step,
                headers: loaded.policy.source.headers.clone(),
                chunk_points: prometheus::CHUNK_POINTS,
            };
            (fetch_range(&range, &loaded)?, from, url.clone())
        }
        (None, None) => anyhow::bail!("pass --trace FILE or --prometheus URL"),
    };
    let options = backtest::Options {
        initial_replicas: args.initial_replicas,
        ready_delay: args.ready_delay,
        compare_hpa: args.compare.is_some(),
        initial_claim_size: args.initial_claim_size,
        epoch,
        source,
    };
    let report = backtest::run(&trace, &loaded, &options)?;
    report.write(&args.out)?;
    print!("{}", report.table());
    println!(
        "wrote {dir}/decisions.csv{hpa}, {dir}/summary.json and {dir}/chart.svg",
        dir = args.out.display(),
        hpa = if report.hpa.is_some() {
            format!(", {}/hpa-decisions.csv", args.out.display())
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn fetch_range(
    range: &prometheus::RangeQuery,
    loaded: &backtest::LoadedPolicy,
) -> anyhow::Result<Trace> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60).max(loaded.policy.source.timeout))
        .build()
        .context("building the HTTP client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let queries = prometheus::queries(loaded);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("fetching {bar:40} {pos}/{len} range queries")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let trace = runtime.block_on(prometheus::fetch(&client, range, &queries, &mut progress));
    bar.finish_and_clear();
    Ok(trace?)
}

fn validate(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for file in files {
        let name = file.display();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                println!("{name}: cannot read: {e}");
                failed = true;
                continue;
            }
        };
        let problems = policy::check_yaml(&text);
        let multi = problems.iter().any(|p| p.document > 1);
        for p in &problems {
            if multi {
                println!("{name}#{}: {}", p.document, p.problem);
            } else {
                println!("{name}: {}", p.problem);
            }
        }
        failed |= !problems.is_empty();
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
