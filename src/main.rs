//! Command line of pulsar-autoscaler.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use pulsar_autoscaler::api::ScalingPolicy;
use pulsar_autoscaler::controller;
use pulsar_autoscaler::policy::{self, RateLimit};

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
