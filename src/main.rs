//! Command line of pulsar-autoscaler.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use serde::Deserialize;

use pulsar_autoscaler::api::{ScalingPolicy, SourceType};
use pulsar_autoscaler::backtest::{self, prometheus, replay, trace::Trace};
use pulsar_autoscaler::controller;
use pulsar_autoscaler::evaluate;
use pulsar_autoscaler::metrics::{self, Credentials, PodEndpoint, Role};
use pulsar_autoscaler::policy::{self, RateLimit};
use pulsar_autoscaler::quantity;
use pulsar_autoscaler::telemetry;

/// jemalloc instead of glibc's malloc: with glibc the controller's resident memory was about
/// twice its live heap (freed memory held by the allocator); jemalloc returns freed pages to the
/// system after a short decay. Measured in `benches/README.md` (fleet section).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `print!` that ends the program quietly when the reader has gone (`backtest ... | head`)
/// instead of panicking on the closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        write_stdout(&format!($($arg)*))
    };
}

/// `println!` with the same closed-pipe handling as [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {
        write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout; a closed pipe means nobody reads any more, so the program stops with
/// success (everything it writes to files was written before). Any other failure to write
/// stops it with an error.
fn write_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

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
    /// Applies what the API server applies (the CRD's schema with strict unknown fields, its CEL
    /// rules, the object's metadata) and the controller's own rules. Prints one line per problem
    /// as `file: field.path: what is wrong` (`file#N` for the N-th document of a multi-document
    /// file), `file: ok` for a file without any, and exits non-zero when any file has a problem.
    Validate {
        /// YAML files, each holding one or more ScalingPolicy documents.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the controller: watch ScalingPolicies, scale brokers, grow bookie claims.
    ///
    /// Uses the in-cluster configuration, or `--kubeconfig`. With `--leader-election`, only the
    /// holder of the Lease acts; the others serve health and metrics and wait.
    Run(RunArgs),
    /// Evaluate a policy once against its metrics source, without a cluster; changes nothing.
    ///
    /// Prints each metric's value, target and proposed replicas, then the decision and its
    /// reasons. Exits 1 for an invalid policy file (or `--scrape` with a policy that names a
    /// source URL) and 2 when the source could not be read or returned no data at all (the
    /// decision is then a hold; the queries or URLs asked are printed).
    Evaluate {
        /// ScalingPolicy YAML file (the first document is used).
        #[arg(long)]
        policy: PathBuf,
        /// Current broker replicas.
        #[arg(long)]
        replicas: u32,
        /// Broker `/metrics` URLs to scrape in Direct mode (stands in for pod discovery).
        #[arg(long = "scrape")]
        scrape: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
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
struct RunArgs {
    /// Kubeconfig file (default: in-cluster, then $KUBECONFIG / ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// Evaluate only the ScalingPolicies matching this label selector (one shard of a fleet,
    /// e.g. `pulsar-autoscaler.dev/shard=a`; give each shard its own `--lease-name`).
    #[arg(long)]
    policy_selector: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Act only while holding a coordination.k8s.io Lease (run two replicas safely).
    #[arg(long)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "pulsar-autoscaler")]
    lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease (default: $POD_NAME, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal; a standby takes over after this.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Controller-wide limit on changes per hour, over all policies (default: none).
    #[arg(long)]
    max_actions_per_hour: Option<u32>,
    /// Changes allowed back to back under `--max-actions-per-hour`.
    #[arg(long, default_value_t = 10)]
    max_actions_burst: u32,
    /// Only metrics sources under this URL prefix may be called (repeatable); a policy naming
    /// another is Invalid with reason SourceNotAllowed. Default: any http(s) URL.
    #[arg(long = "allow-source", value_name = "URL_PREFIX", value_parser = parse_allowed_source)]
    allow_source: Vec<policy::AllowedSource>,
    /// Refuse policies with `tls.insecureSkipVerify: true` (Invalid, reason
    /// InsecureSkipVerifyForbidden) instead of only warning about them.
    #[arg(long)]
    forbid_insecure_skip_verify: bool,
    /// Log lines on stderr: `text` (coloured only on a terminal; `NO_COLOR` turns colour off)
    /// or `json` (one object per line). `RUST_LOG` sets the level (default `info`).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_allowed_source(text: &str) -> Result<policy::AllowedSource, String> {
    policy::AllowedSource::parse(text)
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
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
    /// Time a removed broker keeps serving while drained [default: 30s (at most the drain
    /// timeout) for a policy with `scaleDown.drain`, 0s without].
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    drain_delay: Option<Duration>,
    /// Ledger claim size at the start, e.g. 100Gi [default: the trace's `ledger_capacity_bytes`].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    initial_claim_size: Option<u64>,
    /// Also replay a baseline on the same trace: `hpa` is the Kubernetes HPA v2 algorithm with
    /// its default behavior, the policy's metrics, targets and bounds; `forecast` is the policy
    /// with `brokers.forecast` enabled. Repeat or separate with commas: `--compare hpa,forecast`.
    #[arg(long, value_name = "BASELINE", value_delimiter = ',')]
    compare: Vec<Baseline>,
    /// Directory for decisions.csv, summary.json and chart.svg.
    #[arg(long, value_name = "DIR", default_value = "backtest-out")]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Baseline {
    /// Kubernetes HorizontalPodAutoscaler v2 with default behavior.
    Hpa,
    /// The policy with `brokers.forecast` enabled.
    Forecast,
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
            // The cause chain on one line, each cause once; a backtrace helps nobody who
            // mistyped a file name.
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An `anyhow` error's context and causes on one line, skipping a cause the text already holds.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace(['\n', '\r'], " ")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_controller(args),
        Command::Crd => {
            out!(
                "{}",
                serde_yaml_ng::to_string(&ScalingPolicy::crd()).context("rendering the CRD")?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { files } => validate(&files),
        Command::Evaluate {
            policy,
            replicas,
            scrape,
            output,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(evaluate_once(&policy, replicas, &scrape, output)),
        Command::Backtest(args) => run_backtest(args),
    }
}

fn run_controller(args: RunArgs) -> anyhow::Result<ExitCode> {
    pulsar_autoscaler::telemetry::init_tracing(match args.log_format {
        LogFormat::Text => telemetry::LogFormat::Text,
        LogFormat::Json => telemetry::LogFormat::Json,
    });
    let identity = args.identity.unwrap_or_else(|| {
        let host =
            std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "pulsar-autoscaler".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let settings = controller::Settings {
        kubeconfig: args.kubeconfig,
        namespace: args.namespace,
        policy_selector: args.policy_selector,
        metrics_addr: args.metrics_addr,
        leader_election: args.leader_election,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        identity,
        lease_seconds: args.lease_duration.max(2),
        global_rate_limit: args.max_actions_per_hour.map(|n| RateLimit {
            actions_per_hour: n.max(1),
            burst: args.max_actions_burst.max(1),
        }),
        admission: policy::Admission {
            allowed_sources: args.allow_source,
            forbid_insecure_skip_verify: args.forbid_insecure_skip_verify,
        },
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(controller::run(settings))?;
    Ok(ExitCode::SUCCESS)
}

async fn evaluate_once(
    file: &std::path::Path,
    replicas: u32,
    scrape: &[String],
    output: Output,
) -> anyhow::Result<ExitCode> {
    let name = file.display();
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?;
    // The same checks and messages as `validate`.
    let problems = policy::check_yaml(&text);
    if !problems.is_empty() {
        for p in &problems {
            outln!("{name}: {}", p.problem);
        }
        return Ok(ExitCode::FAILURE);
    }
    let first = serde_yaml_ng::Deserializer::from_str(&text)
        .map(serde_json::Value::deserialize)
        .find(|v| !matches!(v, Ok(serde_json::Value::Null)))
        .context("the file holds no ScalingPolicy")?
        .context("parsing YAML")?;
    let (resource, checked) = match policy::check_object(&first) {
        Ok(ok) => ok,
        Err(problems) => {
            for p in &problems {
                outln!("{name}: {p}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    if !scrape.is_empty()
        && let Some(url) = &checked.source.url
    {
        // Reading one source while the user believes another is read is worse than no answer.
        eprintln!(
            "{name}: --scrape reads broker pods directly (Direct mode), but the policy reads its \
             metrics from {url}; drop --scrape to evaluate against that source, or remove \
             spec.metricsSource.url to evaluate in Direct mode"
        );
        return Ok(ExitCode::FAILURE);
    }
    let namespace = resource.metadata.namespace.as_deref().unwrap_or("default");
    let policy_name = resource.metadata.name.as_deref().unwrap_or("unnamed");
    let statefulset = checked
        .brokers
        .as_ref()
        .map_or("pulsar-broker", |b| b.stateful_set.as_str());
    let pods: Vec<PodEndpoint> = scrape
        .iter()
        .enumerate()
        .map(|(i, url)| {
            PodEndpoint::at(
                namespace,
                &format!("{statefulset}-{i}"),
                Role::Broker,
                url.clone(),
            )
        })
        .collect();
    if checked.source.kind == SourceType::Direct && pods.is_empty() && checked.brokers.is_some() {
        eprintln!("note: Direct mode without --scrape URLs has no broker pods to read");
    }
    let credentials = match credentials(&checked.source, namespace).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(unreachable(
                output,
                &name.to_string(),
                &e.to_string(),
                replicas,
            ));
        }
    };
    let source = match metrics::build(&checked.source, &credentials, pods, None) {
        Ok(s) => s,
        Err(e) => {
            return Ok(unreachable(
                output,
                &name.to_string(),
                &e.to_string(),
                replicas,
            ));
        }
    };
    let mut report = evaluate::evaluate(
        source.as_ref(),
        namespace,
        policy_name,
        &checked,
        replicas,
        jiff::Timestamp::now(),
    )
    .await;
    if checked.source.kind == SourceType::Direct {
        report.asked = scrape.iter().map(|u| format!("GET {u}")).collect();
    }
    match output {
        Output::Text => out!("{}", evaluate::text(&report)),
        Output::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.errors.is_empty() && !report.no_data() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Credentials need the Secrets, which need a cluster; without references none is contacted.
async fn credentials(
    source: &policy::Source,
    namespace: &str,
) -> Result<Credentials, metrics::MetricsError> {
    let needs_secrets = source.auth.is_some()
        || source
            .tls
            .as_ref()
            .is_some_and(|t| t.ca_secret_ref.is_some());
    if !needs_secrets {
        return Ok(Credentials {
            insecure_skip_verify: source.tls.as_ref().is_some_and(|t| t.insecure_skip_verify),
            ..Credentials::default()
        });
    }
    let client = kube::Client::try_default().await.map_err(|e| {
        metrics::MetricsError::Config(format!(
            "the policy refers to Secrets, which need cluster access: {e}"
        ))
    })?;
    let secrets = kube::Api::namespaced(client, namespace);
    metrics::credentials::resolve(&secrets, source).await
}

/// The hold a source failure before any request yields, printed like a normal evaluation.
fn unreachable(output: Output, file: &str, why: &str, replicas: u32) -> ExitCode {
    let reason = format!("metrics source unavailable: {why}; holding {replicas} replicas");
    match output {
        Output::Text => outln!("{file}: decision: Hold {replicas} -> {replicas}\n  - {reason}"),
        Output::Json => outln!(
            "{}",
            serde_json::json!({
                "metrics": [],
                "decision": {"action": "Hold", "from": replicas, "to": replicas, "reasons": [reason]},
                "errors": [why],
                "asked": [],
            })
        ),
    }
    ExitCode::from(2)
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
        drain_delay: args.drain_delay,
        compare_hpa: args.compare.contains(&Baseline::Hpa),
        initial_claim_size: args.initial_claim_size,
        epoch,
        source,
    };
    let forecast = args.compare.contains(&Baseline::Forecast);
    let report = backtest::run_compared(&trace, &loaded, &options, forecast)?;
    report.write(&args.out)?;
    out!("{}", report.table());
    outln!(
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
                outln!("{name}: cannot read: {e}");
                failed = true;
                continue;
            }
        };
        let problems = policy::check_yaml(&text);
        let multi = problems.iter().any(|p| p.document > 1);
        for p in &problems {
            if multi {
                outln!("{name}#{}: {}", p.document, p.problem);
            } else {
                outln!("{name}: {}", p.problem);
            }
        }
        if problems.is_empty() {
            outln!("{name}: ok");
        }
        failed |= !problems.is_empty();
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
