//! Command line of pulsar-autoscaler.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use serde::Deserialize;

use pulsar_autoscaler::api::{ScalingPolicy, SourceType};
use pulsar_autoscaler::controller;
use pulsar_autoscaler::metrics::{self, Credentials, PodEndpoint, Role};
use pulsar_autoscaler::policy::{self, RateLimit};
use pulsar_autoscaler::evaluate;

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
    /// Run the controller: watch ScalingPolicies, scale brokers, grow bookie claims.
    ///
    /// Uses the in-cluster configuration, or `--kubeconfig`. With `--leader-election`, only the
    /// holder of the Lease acts; the others serve health and metrics and wait.
    Run(RunArgs),
    /// Evaluate a policy once against its metrics source, without a cluster; changes nothing.
    ///
    /// Prints each metric's value, target and proposed replicas, then the decision and its
    /// reasons. Exits 1 for an invalid policy file and 2 when the source could not be read
    /// (the decision is then a hold).
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
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig file (default: in-cluster, then $KUBECONFIG / ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
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
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> anyhow::Result<ExitCode> {
    // kube and reqwest share rustls; pick its crypto provider before either builds a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Crd => {
            print!(
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
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    pulsar_autoscaler::telemetry::init_tracing();
    let identity = args.identity.unwrap_or_else(|| {
        let host =
            std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "pulsar-autoscaler".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let settings = controller::Settings {
        kubeconfig: args.kubeconfig,
        namespace: args.namespace,
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
            println!("{name}: {}", p.problem);
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
                println!("{name}: {p}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
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
    let report = evaluate::evaluate(
        source.as_ref(),
        namespace,
        policy_name,
        &checked,
        replicas,
        jiff::Timestamp::now(),
    )
    .await;
    match output {
        Output::Text => print!("{}", evaluate::text(&report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.errors.is_empty() {
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
        Output::Text => println!("{file}: decision: Hold {replicas} -> {replicas}\n  - {reason}"),
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "metrics": [],
                "decision": {"action": "Hold", "from": replicas, "to": replicas, "reasons": [reason]},
                "errors": [why],
            })
        ),
    }
    ExitCode::from(2)
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
