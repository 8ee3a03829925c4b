//! Command line of pulsar-autoscaler.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use pulsar_autoscaler::api::ScalingPolicy;
use pulsar_autoscaler::policy;

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
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
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
