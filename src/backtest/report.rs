//! Backtest results: the per-policy summary, `decisions.csv`, `summary.json` and the table
//! printed on the terminal.

use std::io;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::replay::{Record, Run};
use super::trace::format_number;
use crate::api::MetricType;
use crate::decide::units;

/// Totals of one replay, as `summary.json` lists them per policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Broker scale-ups carried out.
    pub scale_ups: u32,
    /// Broker scale-downs carried out.
    pub scale_downs: u32,
    /// Scale-ups the forecast made or enlarged (0 without one).
    pub forecast_scale_ups: u32,
    /// Claim expansions carried out.
    pub expansions: u32,
    /// Actions the rate limiter dropped.
    pub dropped_by_rate_limit: u32,
    /// Actions a safety clamp refused (always 0 unless the engine breaks a rule).
    pub refused_unsafe: u32,
    /// Changes recorded but not carried out because the policy is in dry-run.
    pub dry_run_decisions: u32,
    /// Times a carried-out broker change went the other way than the one before.
    pub direction_changes: u32,
    /// Broker pods × hours, ready or not: what the brokers cost.
    pub broker_hours: f64,
    /// Seconds in which some metric per ready broker (or its utilization) was above its target.
    pub overload_seconds: f64,
    /// Seconds in which some metric was above its target by more than the policy's tolerance.
    pub overload_beyond_tolerance_seconds: f64,
    /// Seconds in which no metric of the policy was recorded, so load is unknown.
    pub load_unknown_seconds: f64,
    /// Name of the metric that stands for load (the first throughput, rate or custom one).
    pub load_metric: Option<String>,
    /// Its target per broker.
    pub load_target: Option<f64>,
    /// Highest value of that metric per ready broker.
    pub peak_load_per_broker: Option<f64>,
    /// Highest used percent of the ledger claim; above 100 means the data would not have fit.
    pub max_claim_used_percent: Option<f64>,
    /// Evaluation time in which missing data held back an action the other data asked for.
    pub held_for_missing_data_seconds: f64,
    /// Evaluation time in which flap damping held capacity (0 without the forecast).
    pub holding_for_flapping_seconds: f64,
    /// Time replayed.
    pub duration_seconds: f64,
    /// Most broker pods at once.
    pub peak_replicas: u32,
    /// Broker pods at the end.
    pub final_replicas: u32,
    /// Claim size at the end, in bytes.
    pub final_claim_size: Option<u64>,
}

/// A whole backtest: the policy's replay and, when compared, the HPA baseline's.
#[derive(Debug, Clone)]
pub struct Report {
    /// The policy's `metadata.name`.
    pub policy_name: String,
    /// Where the trace came from (a file or a Prometheus URL).
    pub source: String,
    /// Rows replayed.
    pub rows: usize,
    /// `seconds` of the first row.
    pub start_seconds: f64,
    /// Most common gap between rows, in seconds.
    pub step_seconds: f64,
    /// Broker pods at the start.
    pub initial_replicas: u32,
    /// Time a new broker takes to become ready.
    pub ready_delay: Duration,
    /// Ledger claim size at the start, when claims are replayed.
    pub initial_claim_size: Option<u64>,
    /// Kind of the load metric, for formatting.
    pub load_kind: Option<MetricType>,
    /// The policy's `expandAtUsedPercent`, when it grows claims.
    pub expand_at_used_percent: Option<f64>,
    /// The policy's replay.
    pub policy: Run,
    /// The policy's replay with `forecast.enabled`, when compared.
    pub forecast: Option<Run>,
    /// The HPA baseline's replay, with `--compare hpa`.
    pub hpa: Option<Run>,
    /// Things the reader should know about the replay (assumptions it had to make).
    pub notes: Vec<String>,
}

/// Why results could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// A CSV file could not be written.
    #[error("cannot write {path}: {source}")]
    Csv {
        /// The file.
        path: String,
        /// The cause.
        source: csv::Error,
    },
    /// The chart could not be drawn.
    #[error("cannot draw {path}: {message}")]
    Chart {
        /// The file.
        path: String,
        /// What the plotting library said.
        message: String,
    },
}

#[derive(Serialize)]
struct SummaryFile<'a> {
    trace: TraceInfo<'a>,
    model: ModelInfo,
    policy: Named<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forecast: Option<Named<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hpa: Option<Named<'a>>,
    notes: &'a [String],
}

#[derive(Serialize)]
struct TraceInfo<'a> {
    source: &'a str,
    rows: usize,
    duration_seconds: f64,
    step_seconds: f64,
}

#[derive(Serialize)]
struct ModelInfo {
    initial_replicas: u32,
    ready_delay_seconds: f64,
    initial_claim_size_bytes: Option<u64>,
}

#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
    #[serde(flatten)]
    summary: &'a Summary,
}

/// Name under which the HPA baseline appears in outputs.
pub const HPA_NAME: &str = "hpa-v2-defaults";

impl Report {
    /// `summary.json` contents.
    pub fn summary_json(&self) -> String {
        let file = SummaryFile {
            trace: TraceInfo {
                source: &self.source,
                rows: self.rows,
                duration_seconds: self.policy.summary.duration_seconds,
                step_seconds: self.step_seconds,
            },
            model: ModelInfo {
                initial_replicas: self.initial_replicas,
                ready_delay_seconds: self.ready_delay.as_secs_f64(),
                initial_claim_size_bytes: self.initial_claim_size,
            },
            policy: Named {
                name: &self.policy_name,
                summary: &self.policy.summary,
            },
            forecast: self.forecast.as_ref().map(|f| Named {
                name: &self.policy_name,
                summary: &f.summary,
            }),
            hpa: self.hpa.as_ref().map(|h| Named {
                name: HPA_NAME,
                summary: &h.summary,
            }),
            notes: &self.notes,
        };
        // Serializing plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default() + "\n"
    }

    /// The table printed on the terminal: the policy, then the policy with forecast and the
    /// HPA when they were replayed.
    pub fn table(&self) -> String {
        let mut out = format!(
            "backtest of {} on {} ({} rows, {} steps, {})\n",
            self.policy_name,
            self.source,
            self.rows,
            units::duration(seconds(self.step_seconds)),
            units::duration(seconds(self.policy.summary.duration_seconds)),
        );
        let mut columns: Vec<(&str, &Summary, bool)> = vec![("policy", &self.policy.summary, true)];
        if let Some(f) = &self.forecast {
            columns.push(("+forecast", &f.summary, true));
        }
        if let Some(h) = &self.hpa {
            columns.push(("HPA", &h.summary, false));
        }
        let load = |v: Option<f64>| match (v, self.load_kind) {
            (Some(v), Some(kind)) => units::metric_value(kind, v),
            _ => "-".into(),
        };
        let secs = |v: f64| units::duration(seconds(v));
        let brokers = self.load_kind.is_some();
        let claims = self.initial_claim_size.is_some();
        type Cell<'a> = Box<dyn Fn(&Summary, bool) -> String + 'a>;
        let mut rows: Vec<(&str, Cell<'_>)> = Vec::new();
        if brokers {
            rows.push(("scale-ups", Box::new(|s, _| s.scale_ups.to_string())));
            if self.forecast.is_some() {
                rows.push((
                    "  of them by forecast",
                    Box::new(|s, ours| {
                        if ours {
                            s.forecast_scale_ups.to_string()
                        } else {
                            "-".into()
                        }
                    }),
                ));
            }
            rows.push(("scale-downs", Box::new(|s, _| s.scale_downs.to_string())));
            rows.push((
                "direction changes",
                Box::new(|s, _| s.direction_changes.to_string()),
            ));
            rows.push((
                "broker-hours",
                Box::new(|s, _| format!("{:.1}", s.broker_hours)),
            ));
            rows.push((
                "over target",
                Box::new(move |s, _| secs(s.overload_seconds)),
            ));
            rows.push((
                "over target+tolerance",
                Box::new(move |s, _| secs(s.overload_beyond_tolerance_seconds)),
            ));
            rows.push((
                "peak load per broker",
                Box::new(move |s, _| load(s.peak_load_per_broker)),
            ));
            rows.push((
                "peak replicas",
                Box::new(|s, _| s.peak_replicas.to_string()),
            ));
        }
        let ours_only = |f: fn(&Summary) -> String| -> Cell<'_> {
            Box::new(move |s, ours| if ours { f(s) } else { "-".into() })
        };
        if claims {
            rows.push(("expansions", ours_only(|s| s.expansions.to_string())));
            rows.push((
                "max claim used",
                ours_only(|s| {
                    s.max_claim_used_percent
                        .map_or("-".into(), |v| format!("{}%", units::number(v)))
                }),
            ));
        }
        rows.push((
            "dropped by rate limit",
            ours_only(|s| s.dropped_by_rate_limit.to_string()),
        ));
        rows.push((
            "held for missing data",
            Box::new(move |s, _| secs(s.held_for_missing_data_seconds)),
        ));
        if self.forecast.is_some() || self.policy.summary.holding_for_flapping_seconds > 0.0 {
            rows.push((
                "holding for flapping",
                Box::new(move |s, ours| {
                    if ours {
                        secs(s.holding_for_flapping_seconds)
                    } else {
                        "-".into()
                    }
                }),
            ));
        }
        let p = &self.policy.summary;
        if p.dry_run_decisions > 0 {
            rows.push((
                "dry-run decisions",
                ours_only(|s| s.dry_run_decisions.to_string()),
            ));
        }
        if p.load_unknown_seconds > 0.0 {
            rows.push((
                "load unknown (no data)",
                Box::new(move |s, _| secs(s.load_unknown_seconds)),
            ));
        }
        let cells: Vec<(&str, Vec<String>)> = rows
            .iter()
            .map(|(name, cell)| {
                (
                    *name,
                    columns.iter().map(|(_, s, ours)| cell(s, *ours)).collect(),
                )
            })
            .collect();
        let w = cells
            .iter()
            .flat_map(|(_, c)| c.iter().map(String::len))
            .chain(columns.iter().map(|(h, _, _)| h.len()))
            .max()
            .unwrap_or(0)
            .max(6);
        out.push_str(&format!("{:<24}", ""));
        for (i, (header, _, _)) in columns.iter().enumerate() {
            let gap = if i == 0 { "" } else { "  " };
            out.push_str(&format!("{gap}{header:>w$}"));
        }
        out.push('\n');
        for (name, values) in cells {
            out.push_str(&format!("{name:<24}"));
            for (i, v) in values.iter().enumerate() {
                let gap = if i == 0 { "" } else { "  " };
                out.push_str(&format!("{gap}{v:>w$}"));
            }
            out.push('\n');
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }

    /// Writes `decisions.csv`, `hpa-decisions.csv` (when compared), `summary.json` and
    /// `chart.svg` into `dir`, creating it.
    pub fn write(&self, dir: &Path) -> Result<(), ReportError> {
        let write_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| ReportError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        write_decisions(&dir.join("decisions.csv"), &self.policy.records)?;
        if let Some(f) = &self.forecast {
            write_decisions(&dir.join("forecast-decisions.csv"), &f.records)?;
        }
        if let Some(h) = &self.hpa {
            write_decisions(&dir.join("hpa-decisions.csv"), &h.records)?;
        }
        let summary = dir.join("summary.json");
        std::fs::write(&summary, self.summary_json()).map_err(write_err(&summary))?;
        let chart = dir.join("chart.svg");
        super::chart::draw(self, &chart).map_err(|message| ReportError::Chart {
            path: chart.display().to_string(),
            message,
        })?;
        Ok(())
    }
}

/// A duration from seconds; zero for anything negative or not finite.
fn seconds(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or_default()
}

/// Writes records as `seconds,target,action,from,to,reason`.
pub fn write_decisions(path: &Path, records: &[Record]) -> Result<(), ReportError> {
    let csv_err = |source| ReportError::Csv {
        path: path.display().to_string(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(csv_err)?;
    w.write_record(["seconds", "target", "action", "from", "to", "reason"])
        .map_err(csv_err)?;
    for r in records {
        w.write_record([
            format_number(r.seconds),
            r.target.clone(),
            r.action_label(),
            r.from.to_string(),
            r.to.to_string(),
            r.reason.clone(),
        ])
        .map_err(csv_err)?;
    }
    w.flush().map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}
