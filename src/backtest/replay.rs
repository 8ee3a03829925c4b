//! The replay loop: walks a trace through time, feeds an autoscaler the samples its metrics
//! source would have returned, applies what it carries out to the cluster model, and accounts
//! for cost and overload.
//!
//! Events at one instant run in a fixed order: pods becoming ready, then trace rows (samples are
//! measured), then the evaluation. Cost and overload are integrated over the time between events.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::model::{self, Brokers, Claim};
use super::report::Summary;
use super::trace::{Column, Trace};
use crate::api::MetricType;
use crate::decide::forecast::{History, mean_of};
use crate::decide::{Action, Sample};
use crate::policy::{MetricPolicy, Policy};

/// Fixed start of a CSV trace's clock: traces carry seconds from the start, not dates.
pub const TRACE_EPOCH: Timestamp = Timestamp::constant(1_704_067_200, 0);

/// Cluster and clock the replay starts from.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Broker pods at the start, all ready.
    pub initial_replicas: u32,
    /// Time a new broker takes to become ready and take load.
    pub ready_delay: Duration,
    /// Time a removed broker keeps serving while its bundles move away (zero: gone at once).
    pub drain_delay: Duration,
    /// Wall-clock time of the trace's `seconds = 0`.
    pub epoch: Timestamp,
    /// The ledger claim at the start, when the policy grows claims and the trace records usage.
    pub claim: Option<Claim>,
}

/// What the replay hands an autoscaler at an evaluation.
#[derive(Debug)]
pub struct View<'a> {
    /// Simulation time in milliseconds from the start.
    pub now_ms: i64,
    /// The same instant as a timestamp.
    pub now: Timestamp,
    /// Broker pods that exist (the StatefulSet's replicas).
    pub replicas: u32,
    /// Broker pods that are ready.
    pub ready: u32,
    /// The newest sample of each trace column, as the metrics source would return it.
    samples: &'a [Option<Sample>],
    columns: &'a [Column],
    trace: &'a Trace,
    /// The ledger claim, when one is replayed.
    pub claim: Option<ClaimView>,
}

/// The trace's past values of some columns up to the current instant: what range queries over
/// the metrics source's history would return at that time.
pub struct TraceHistory<'a> {
    trace: &'a Trace,
    columns: Vec<Option<usize>>,
    epoch: Timestamp,
    until_ms: i64,
}

impl History for TraceHistory<'_> {
    fn mean(&self, metric: usize, from: Timestamp, to: Timestamp) -> Option<(f64, usize)> {
        let column = (*self.columns.get(metric)?)?;
        let ms = |t: Timestamp| t.duration_since(self.epoch).as_millis() as i64;
        let (from, to) = (ms(from), ms(to).min(self.until_ms));
        let rows = &self.trace.rows;
        let start = rows.partition_point(|r| r.millis() < from);
        let end = rows.partition_point(|r| r.millis() <= to);
        mean_of(rows.get(start..end)?.iter().filter_map(|r| r.value(column)))
    }
}

impl View<'_> {
    /// The newest sample of a column, if the trace has the column and it had a value.
    pub fn sample(&self, column: &Column) -> Option<Sample> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.samples.get(i).copied().flatten()
    }

    /// The newest sample for a policy metric.
    pub fn metric_sample(&self, metric: &MetricPolicy) -> Option<Sample> {
        self.sample(&metric_column(metric))
    }

    /// The recorded past of `metrics` up to now, one series per metric.
    pub fn history(&self, metrics: &[MetricPolicy]) -> TraceHistory<'_> {
        TraceHistory {
            trace: self.trace,
            columns: metrics
                .iter()
                .map(|m| self.trace.index(&metric_column(m)))
                .collect(),
            epoch: self
                .now
                .checked_sub(SignedDuration::from_millis(self.now_ms))
                .unwrap_or(self.now),
            until_ms: self.now_ms,
        }
    }
}

/// The claim as the controller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimView {
    /// Claim name.
    pub name: String,
    /// Requested size in bytes.
    pub requested: u64,
    /// Capacity the newest usage sample was measured against.
    pub capacity_seen: Option<u64>,
    /// Used percent of that capacity.
    pub usage: Option<Sample>,
}

/// The trace column a policy metric reads.
pub fn metric_column(metric: &MetricPolicy) -> Column {
    match metric.kind {
        MetricType::Throughput => Column::Throughput,
        MetricType::MessageRate => Column::MessageRate,
        MetricType::HeapMemory => Column::Heap,
        MetricType::DirectMemory => Column::Direct,
        MetricType::Custom => Column::Custom(metric.name.clone()),
    }
}

/// What happened to one decision that changes something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Carried out.
    Carried,
    /// Recorded only: the policy is in dry-run.
    DryRun,
    /// Dropped by the rate limiter.
    Dropped,
    /// Refused by a safety clamp.
    Refused,
}

/// One decision as `decisions.csv` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Seconds from the start of the trace.
    pub seconds: f64,
    /// `statefulset/<name>` or `pvc/<name>`.
    pub target: String,
    /// What the decision wanted.
    pub action: Action,
    /// What became of it.
    pub outcome: Outcome,
    /// Replicas or bytes before.
    pub from: u64,
    /// Replicas or bytes wanted.
    pub to: u64,
    /// Why, in words.
    pub reason: String,
    /// Whether the forecast made it a scale-up, or a larger one than the load seen then asked for.
    pub forecast: bool,
}

impl Record {
    /// The `action` column: the action when carried out, else what stopped it.
    pub fn action_label(&self) -> String {
        match self.outcome {
            Outcome::Carried => self.action.to_string(),
            Outcome::DryRun => "DryRun".into(),
            Outcome::Dropped => "Dropped".into(),
            Outcome::Refused => "Refused".into(),
        }
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// Decisions that change something (carried out or not); holds are not listed.
    pub records: Vec<Record>,
    /// New replica count, when a broker change was carried out.
    pub replicas: Option<u32>,
    /// New claim size, when an expansion was carried out.
    pub claim_size: Option<u64>,
    /// Whether missing data kept the autoscaler from acting as its other data suggested.
    pub held_for_missing_data: bool,
    /// Whether flap damping held capacity (scale-downs wait for the hour's highest).
    pub holding_for_flapping: bool,
}

/// An autoscaler the replay can drive: the policy engine or a baseline.
pub trait Autoscaler {
    /// Time between evaluations.
    fn interval(&self) -> Duration;
    /// Evaluates once; records carry `seconds = 0`, the replay fills them in.
    fn evaluate(&mut self, view: &View<'_>) -> Evaluation;
}

/// State of the cluster at one trace row, for the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Seconds from the start.
    pub seconds: f64,
    /// Broker pods.
    pub replicas: u32,
    /// Ready broker pods.
    pub ready: u32,
    /// The load metric per ready broker, when recorded.
    pub load_per_broker: Option<f64>,
    /// Claim size in bytes.
    pub claim_size: Option<u64>,
    /// Claim used percent, when recorded.
    pub claim_used_percent: Option<f64>,
}

/// Everything one replay produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// Decisions that change something, oldest first.
    pub records: Vec<Record>,
    /// One point per trace row.
    pub points: Vec<Point>,
    /// Totals.
    pub summary: Summary,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace's times do not fit on the clock.
    #[error("trace time {seconds} s from {epoch} is not a valid timestamp")]
    Time {
        /// The offending offset.
        seconds: f64,
        /// The start.
        epoch: Timestamp,
    },
}

/// The metric that stands for "load" in summaries and charts: the first additive one
/// (throughput, message rate, custom), else the first metric.
pub fn load_metric(policy: &Policy) -> Option<&MetricPolicy> {
    let metrics = &policy.brokers.as_ref()?.metrics;
    metrics
        .iter()
        .find(|m| !m.kind.is_utilization())
        .or(metrics.first())
}

/// Replays `trace` through `scaler` on the cluster model.
pub fn replay(
    trace: &Trace,
    policy: &Policy,
    setup: &Setup,
    scaler: &mut dyn Autoscaler,
) -> Result<Run, ReplayError> {
    let mut state = State::new(trace, policy, setup);
    let rows = &trace.rows;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(state.finish(0));
    };
    let (start, end) = (first.millis(), last.millis());
    let interval_ms = (scaler.interval().as_millis() as i64).max(1);
    let mut next_eval = start;
    let mut next_row = 0;
    let mut t = start;
    loop {
        let mut row_seen = false;
        while next_row < rows.len() && rows[next_row].millis() <= t {
            state.ingest(next_row, t, setup.epoch)?;
            next_row += 1;
            row_seen = true;
        }
        if next_eval <= t {
            let now = at(setup.epoch, t)?;
            let eval = {
                let view = state.view(t, now);
                scaler.evaluate(&view)
            };
            let weight = interval_ms.min(end - t).max(0);
            state.apply(eval, t, weight);
            next_eval = t + interval_ms;
        }
        if row_seen {
            state.point(t);
        }
        if t >= end {
            break;
        }
        let mut next = next_eval.min(end);
        if let Some(r) = rows.get(next_row) {
            next = next.min(r.millis());
        }
        if let Some(r) = state.brokers.next_ready_after(t) {
            next = next.min(r);
        }
        state.accumulate(t, next);
        t = next;
    }
    Ok(state.finish(end - start))
}

fn at(epoch: Timestamp, ms: i64) -> Result<Timestamp, ReplayError> {
    epoch
        .checked_add(SignedDuration::from_millis(ms))
        .map_err(|_| ReplayError::Time {
            seconds: ms as f64 / 1000.0,
            epoch,
        })
}

/// Overload and load accounting for one metric.
struct Watched {
    column: Option<usize>,
    kind: MetricType,
    target: f64,
    tolerance: f64,
}

struct State<'a> {
    trace: &'a Trace,
    brokers: Brokers,
    claim: Option<Claim>,
    samples: Vec<Option<Sample>>,
    claim_sample: Option<(Sample, u64)>,
    current_row: Option<usize>,
    recorded_brokers: f64,
    brokers_column: Option<usize>,
    ledger_column: Option<usize>,
    watched: Vec<Watched>,
    load: Option<Watched>,
    records: Vec<Record>,
    points: Vec<Point>,
    summary: Summary,
    last_direction: Option<Action>,
    replica_ms: i128,
}

impl<'a> State<'a> {
    fn new(trace: &'a Trace, policy: &Policy, setup: &Setup) -> Self {
        let tolerance = policy.brokers.as_ref().map_or(0.0, |b| b.tolerance);
        let watch = |m: &MetricPolicy| Watched {
            column: trace.index(&metric_column(m)),
            kind: m.kind,
            target: m.target,
            tolerance,
        };
        let watched = policy
            .brokers
            .iter()
            .flat_map(|b| b.metrics.iter())
            .map(watch)
            .collect();
        let load = load_metric(policy).map(watch);
        let mut summary = Summary {
            peak_replicas: setup.initial_replicas,
            ..Summary::default()
        };
        if let Some(m) = load_metric(policy) {
            summary.load_metric = Some(m.name.clone());
            summary.load_target = Some(m.target);
        }
        State {
            trace,
            brokers: Brokers::new(setup.initial_replicas, setup.ready_delay.as_millis() as i64)
                .with_drain(setup.drain_delay.as_millis() as i64),
            claim: setup.claim.clone(),
            samples: vec![None; trace.columns.len()],
            claim_sample: None,
            current_row: None,
            recorded_brokers: f64::from(setup.initial_replicas),
            brokers_column: trace.index(&Column::Brokers),
            ledger_column: trace.index(&Column::LedgerUsed),
            watched,
            load,
            records: Vec::new(),
            points: Vec::new(),
            summary,
            last_direction: None,
            replica_ms: 0,
        }
    }

    /// Takes the samples of row `i`, measured on the cluster as it is at `t`.
    fn ingest(&mut self, i: usize, t: i64, epoch: Timestamp) -> Result<(), ReplayError> {
        let row = &self.trace.rows[i];
        let observed_at = at(epoch, t)?;
        if let Some(b) = self.brokers_column.and_then(|c| row.value(c)) {
            self.recorded_brokers = b;
        }
        let ready = self.brokers.ready(t);
        for (c, column) in self.trace.columns.iter().enumerate() {
            let Some(v) = row.value(c) else { continue };
            let value = match column {
                Column::Heap | Column::Direct => {
                    model::utilization(v, self.recorded_brokers, ready)
                }
                Column::LedgerUsed => {
                    if let Some(claim) = &self.claim {
                        let s = Sample::new(claim.used_percent(v), observed_at);
                        self.claim_sample = Some((s, claim.size));
                        let used = claim.used_percent(v);
                        let peak = self.summary.max_claim_used_percent.get_or_insert(used);
                        *peak = peak.max(used);
                    }
                    v
                }
                _ => v,
            };
            self.samples[c] = Some(Sample {
                value,
                observed_at,
                reporting: Some(ready),
            });
        }
        self.current_row = Some(i);
        Ok(())
    }

    fn view(&self, t: i64, now: Timestamp) -> View<'_> {
        View {
            now_ms: t,
            now,
            replicas: self.brokers.replicas(),
            ready: self.brokers.ready(t),
            samples: &self.samples,
            columns: &self.trace.columns,
            trace: self.trace,
            claim: self.claim.as_ref().map(|c| ClaimView {
                name: c.name.clone(),
                requested: c.size,
                capacity_seen: self.claim_sample.map(|(_, cap)| cap),
                usage: self.claim_sample.map(|(s, _)| s),
            }),
        }
    }

    fn apply(&mut self, eval: Evaluation, t: i64, weight_ms: i64) {
        let s = &mut self.summary;
        if eval.held_for_missing_data {
            s.held_for_missing_data_seconds += weight_ms as f64 / 1000.0;
        }
        if eval.holding_for_flapping {
            s.holding_for_flapping_seconds += weight_ms as f64 / 1000.0;
        }
        for mut r in eval.records {
            r.seconds = t as f64 / 1000.0;
            match (r.outcome, r.action) {
                (Outcome::Carried, Action::ScaleUp) => s.scale_ups += 1,
                (Outcome::Carried, Action::ScaleDown) => s.scale_downs += 1,
                (Outcome::Carried, Action::Expand) => s.expansions += 1,
                (Outcome::Dropped, _) => s.dropped_by_rate_limit += 1,
                (Outcome::Refused, _) => s.refused_unsafe += 1,
                (Outcome::DryRun, _) => s.dry_run_decisions += 1,
                _ => {}
            }
            if r.forecast && r.outcome == Outcome::Carried {
                s.forecast_scale_ups += 1;
            }
            if r.outcome == Outcome::Carried
                && matches!(r.action, Action::ScaleUp | Action::ScaleDown)
            {
                if self.last_direction.is_some_and(|d| d != r.action) {
                    s.direction_changes += 1;
                }
                self.last_direction = Some(r.action);
            }
            self.records.push(r);
        }
        if let Some(n) = eval.replicas {
            self.brokers.scale_to(n, t);
            s.peak_replicas = s.peak_replicas.max(n);
        }
        if let (Some(size), Some(claim)) = (eval.claim_size, self.claim.as_mut()) {
            claim.size = size;
        }
    }

    /// Value of a watched metric per ready broker (or utilization) at row `row`.
    fn per_broker(&self, w: &Watched, ready: u32) -> Option<f64> {
        let row = self.trace.rows.get(self.current_row?)?;
        let v = row.value(w.column?)?;
        Some(if w.kind.is_utilization() {
            model::utilization(v, self.recorded_brokers, ready)
        } else {
            model::per_broker(v, ready)
        })
    }

    fn accumulate(&mut self, from: i64, to: i64) {
        let dt = to - from;
        if dt <= 0 {
            return;
        }
        let secs = dt as f64 / 1000.0;
        self.replica_ms += i128::from(self.brokers.running(from)) * i128::from(dt);
        let ready = self.brokers.ready(from);
        let mut known = false;
        let (mut over, mut far_over) = (false, false);
        for w in &self.watched {
            if let Some(v) = self.per_broker(w, ready) {
                known = true;
                over |= v > w.target;
                far_over |= v > w.target * (1.0 + w.tolerance);
            }
        }
        if far_over {
            self.summary.overload_beyond_tolerance_seconds += secs;
        }
        if over {
            self.summary.overload_seconds += secs;
        } else if !known && !self.watched.is_empty() {
            self.summary.load_unknown_seconds += secs;
        }
        self.note_peak(ready);
    }

    fn note_peak(&mut self, ready: u32) {
        if let Some(v) = self.load.as_ref().and_then(|w| self.per_broker(w, ready)) {
            let peak = self.summary.peak_load_per_broker.get_or_insert(v);
            *peak = peak.max(v);
        }
    }

    fn point(&mut self, t: i64) {
        let ready = self.brokers.ready(t);
        self.note_peak(ready);
        let used = self.current_row.and_then(|i| {
            let v = self.trace.rows.get(i)?.value(self.ledger_column?)?;
            Some(self.claim.as_ref()?.used_percent(v))
        });
        self.points.push(Point {
            seconds: t as f64 / 1000.0,
            replicas: self.brokers.replicas(),
            ready,
            load_per_broker: self.load.as_ref().and_then(|w| self.per_broker(w, ready)),
            claim_size: self.claim.as_ref().map(|c| c.size),
            claim_used_percent: used,
        });
    }

    fn finish(mut self, duration_ms: i64) -> Run {
        let s = &mut self.summary;
        s.duration_seconds = duration_ms as f64 / 1000.0;
        s.broker_hours = self.replica_ms as f64 / 3_600_000.0;
        s.final_replicas = self.brokers.replicas();
        s.peak_replicas = s.peak_replicas.max(self.brokers.replicas());
        s.final_claim_size = self.claim.as_ref().map(|c| c.size);
        Run {
            records: self.records,
            points: self.points,
            summary: self.summary,
        }
    }
}
