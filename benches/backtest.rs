//! Replay speed: a 7-day trace at 15 s steps through the policy engine (with and without the
//! forecast), against the HPA baseline replayed on the same trace in the same run.
//!
//! `cargo bench --bench backtest` measures; under `cargo test` (no `--bench` argument) it replays
//! one hour once per side, to check that the bench still runs.

#[path = "../examples/gen_traces.rs"]
#[allow(dead_code)]
mod gen_traces;

use std::path::Path;
use std::time::{Duration, Instant};

use pulsar_autoscaler::backtest::engine::PolicyScaler;
use pulsar_autoscaler::backtest::hpa::HpaScaler;
use pulsar_autoscaler::backtest::model::Claim;
use pulsar_autoscaler::backtest::replay::{self, Autoscaler, Setup, TRACE_EPOCH};
use pulsar_autoscaler::backtest::trace::Trace;
use pulsar_autoscaler::backtest::{self, DEFAULT_READY_DELAY};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(
    trace: &Trace,
    policy: &pulsar_autoscaler::policy::Policy,
    setup: &Setup,
    make: &dyn Fn() -> Box<dyn Autoscaler>,
    iterations: usize,
) -> Duration {
    let runs = (0..iterations)
        .map(|_| {
            let mut scaler = make();
            let start = Instant::now();
            let run = replay::replay(trace, policy, setup, scaler.as_mut()).expect("replay");
            let took = start.elapsed();
            std::hint::black_box(run);
            took
        })
        .collect();
    median(runs)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let loaded = backtest::load_policy(&root.join("deploy/examples/backtest-diurnal.yaml"))
        .expect("example policy");
    let mut trace = gen_traces::diurnal_days(7);
    let iterations = if bench { 7 } else { 1 };
    if !bench {
        trace.rows.truncate(240);
    }
    let setup = Setup {
        initial_replicas: 12,
        ready_delay: DEFAULT_READY_DELAY,
        drain_delay: std::time::Duration::ZERO,
        epoch: TRACE_EPOCH,
        claim: None::<Claim>,
    };
    let policy = &loaded.policy;
    let Some(brokers) = policy.brokers.clone() else {
        panic!("the diurnal policy scales brokers")
    };
    let staleness = policy.source.max_staleness;
    let ours = time(
        &trace,
        policy,
        &setup,
        &|| Box::new(PolicyScaler::new("diurnal", policy.clone())),
        iterations,
    );
    let hpa = time(
        &trace,
        policy,
        &setup,
        &|| Box::new(HpaScaler::new(&brokers, staleness)),
        iterations,
    );
    // The same policy with `brokers.forecast` on: trend fits, the daily pattern from the
    // trace's own history (after the first day) and flap damping, every evaluation.
    let mut ahead_policy = policy.clone();
    ahead_policy.forecast = Some(backtest::forecast_settings(policy));
    let ahead = time(
        &trace,
        policy,
        &setup,
        &|| {
            Box::new(
                PolicyScaler::new("diurnal", ahead_policy.clone())
                    .with_unmeasured_horizon(DEFAULT_READY_DELAY),
            )
        },
        iterations,
    );
    let rows = trace.rows.len() as f64;
    let speed = |d: Duration| rows / d.as_secs_f64().max(1e-9);
    if bench {
        println!(
            "replay of {} rows (7 days at 15 s, {} columns), median of {iterations}:",
            trace.rows.len(),
            trace.columns.len()
        );
        println!(
            "  policy engine (decide + guard): {:>10.0} samples/s ({:.1} ms)",
            speed(ours),
            ours.as_secs_f64() * 1000.0
        );
        println!(
            "  HPA baseline:                   {:>10.0} samples/s ({:.1} ms)",
            speed(hpa),
            hpa.as_secs_f64() * 1000.0
        );
        println!(
            "  policy engine with forecast:    {:>10.0} samples/s ({:.1} ms)",
            speed(ahead),
            ahead.as_secs_f64() * 1000.0
        );
        println!(
            "  policy / HPA speed ratio: {:.2}",
            speed(ours) / speed(hpa)
        );
        println!(
            "  policy with forecast / policy speed ratio: {:.2}",
            speed(ahead) / speed(ours)
        );
    } else {
        println!(
            "backtest bench: replayed {} rows per side",
            trace.rows.len()
        );
    }
}
