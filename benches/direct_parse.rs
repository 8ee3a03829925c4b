//! Direct-mode parse throughput on a 50,000-series broker page, against two baselines run in
//! the same process: `prometheus-parse` alone on the whole page, and a plain line split.
//!
//! `cargo bench --bench direct_parse` measures; under `cargo test` one quick pass checks it runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pulsar_autoscaler::emulator::model::BrokerValues;
use pulsar_autoscaler::emulator::page;
use pulsar_autoscaler::metrics::Preset;
use pulsar_autoscaler::metrics::exposition::{parse_page, preset_value};

/// Runs `f` repeatedly for about `budget`; returns the median seconds per run.
fn measure(budget: Duration, mut f: impl FnMut() -> usize) -> f64 {
    let mut runs = Vec::new();
    let start = Instant::now();
    while runs.len() < 3 || start.elapsed() < budget {
        let t = Instant::now();
        black_box(f());
        runs.push(t.elapsed().as_secs_f64());
        if budget.is_zero() {
            break;
        }
    }
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let budget = if bench {
        Duration::from_secs(3)
    } else {
        Duration::ZERO
    };
    let values = BrokerValues {
        throughput_in: 2e7,
        throughput_out: 4e7,
        rate_in: 1e4,
        rate_out: 2e4,
        heap_used: 1e9,
        direct_used: 3e8,
    };
    // Five topic-level series per topic plus the broker-level ones: 50,000 series in all.
    let topics = if bench { 9_997 } else { 200 };
    let text = page::broker(&values, topics, 100.0);
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    let mb = text.len() as f64 / 1e6;

    let split = measure(budget, || {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .count()
    });
    let crate_only = measure(budget, || {
        let lines = text.lines().map(|l| Ok::<_, std::io::Error>(l.to_owned()));
        prometheus_parse::Scrape::parse(lines)
            .map(|s| s.samples.len())
            .unwrap_or(0)
    });
    let ours = measure(budget, || {
        let s = parse_page(&text);
        [
            Preset::Throughput,
            Preset::MessageRate,
            Preset::HeapMemory,
            Preset::DirectMemory,
        ]
        .iter()
        .filter_map(|p| preset_value(*p, &s))
        .count()
    });
    let rate = |secs: f64| mb / secs;
    println!("page: {series} series, {mb:.2} MB");
    println!("line split (baseline)           {:>10.1} MB/s", rate(split));
    println!(
        "prometheus-parse, whole page    {:>10.1} MB/s",
        rate(crate_only)
    );
    println!("ours (filter + parse + presets) {:>10.1} MB/s", rate(ours));
    println!(
        "speed ratio ours : parse-all     {:>10.2}x",
        crate_only / ours
    );
    println!("speed ratio ours : line split    {:>10.2}x", split / ours);
}
