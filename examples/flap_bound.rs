//! The fewest broker-hours any autoscaler can reach on an oscillating trace with at most half the
//! HPA's actions and no more overload beyond tolerance than the HPA, knowing the whole future.
//!
//! `cargo run --release --example flap_bound` prints, for the swings shorter than 20 minutes
//! (the `oscillating` example policy's rows of the three-way table in `benches/README.md`) and
//! for swings 33 (the one longer swing whose action target is not met), the HPA's figures from
//! the same replay and this optimum. The HPA's replay reads only the policy's metrics, tolerance
//! and bounds, which both example policies share.
//!
//! The optimum is an exact dynamic programme over replica paths, one decision per trace row, on
//! a relaxation of the replay's model: a broker is ready the moment it is asked for (the replay
//! makes it wait the ready delay), and nothing else limits a path (no bounds, windows, cooldowns
//! or step limits). Every path a real controller takes is also a path here, with the same
//! broker-hours and actions and no more overload (its brokers are ready no later), so the
//! optimum here is a lower bound for any controller. When it is above 1.05x the HPA's
//! broker-hours, no controller meets both targets on that trace.

#[path = "gen_traces.rs"]
#[allow(dead_code)]
mod gen_traces;

use std::path::PathBuf;

use pulsar_autoscaler::backtest::replay::TRACE_EPOCH;
use pulsar_autoscaler::backtest::trace::{Column, Trace};
use pulsar_autoscaler::backtest::{self, DEFAULT_READY_DELAY, Options};

const MIB: f64 = 1024.0 * 1024.0;

/// A replica path: replicas after each row's decision, its broker-steps (replicas summed over
/// rows), actions and overloaded rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// Replicas after the decision at each row.
    pub replicas: Vec<u32>,
    /// Replicas summed over the rows (one row's worth of broker time each).
    pub broker_steps: u64,
    /// Replica changes on the path.
    pub actions: usize,
    /// Rows whose load per ready broker is beyond target × (1 + tolerance).
    pub overloaded_rows: usize,
}

/// The cheapest path (fewest Σ replicas over rows) starting from `initial` with at most
/// `max_actions` changes and at most `max_overloaded` rows on which the replicas (ready at once)
/// are fewer than `needed[row]`. Exact; `None` when no path fits.
pub fn cheapest_path(
    needed: &[u32],
    initial: u32,
    max_actions: usize,
    max_overloaded: usize,
) -> Option<Path> {
    // More replicas than the highest need never lowers overload; one replica is the least.
    let top = needed
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(initial)
        .max(1) as usize;
    let (na, no) = (max_actions + 1, max_overloaded + 1);
    let idx = |r: usize, a: usize, o: usize| (r * na + a) * no + o;
    let size = (top + 1) * na * no;
    const INF: u64 = u64::MAX;
    let mut cost = vec![INF; size];
    cost[idx(initial as usize, 0, 0)] = 0;
    let mut next = vec![INF; size];
    // The replicas each state came from, per row: a and o follow from it.
    let mut came_from: Vec<Vec<u8>> = Vec::with_capacity(needed.len());
    for &need in needed {
        next.fill(INF);
        let mut from_row = vec![0u8; size];
        for a in 0..na {
            for o in 0..no {
                // The two cheapest replica counts of (a, o) before this row, so that "from any
                // other replica count" is O(1).
                let (mut best, mut second) = ((INF, 0), (INF, 0));
                for r in 1..=top {
                    let c = cost[idx(r, a, o)];
                    if c < best.0 {
                        second = best;
                        best = (c, r);
                    } else if c < second.0 {
                        second = (c, r);
                    }
                }
                for r in 1..=top {
                    let o2 = o + usize::from((r as u32) < need);
                    if o2 >= no {
                        continue;
                    }
                    let stay = cost[idx(r, a, o)];
                    if stay != INF && stay + (r as u64) < next[idx(r, a, o2)] {
                        next[idx(r, a, o2)] = stay + r as u64;
                        from_row[idx(r, a, o2)] = r as u8;
                    }
                    let moved = if best.1 != r { best } else { second };
                    if a + 1 < na
                        && moved.0 != INF
                        && moved.0 + (r as u64) < next[idx(r, a + 1, o2)]
                    {
                        next[idx(r, a + 1, o2)] = moved.0 + r as u64;
                        from_row[idx(r, a + 1, o2)] = moved.1 as u8;
                    }
                }
            }
        }
        came_from.push(from_row);
        std::mem::swap(&mut cost, &mut next);
    }
    let (mut r, mut a, mut o) = (0, 0, 0);
    let mut best = INF;
    for rr in 1..=top {
        for aa in 0..na {
            for oo in 0..no {
                if cost[idx(rr, aa, oo)] < best {
                    (best, r, a, o) = (cost[idx(rr, aa, oo)], rr, aa, oo);
                }
            }
        }
    }
    if best == INF {
        return None;
    }
    let (actions, overloaded_rows) = (a, o);
    let mut replicas = vec![0u32; needed.len()];
    for row in (0..needed.len()).rev() {
        replicas[row] = r as u32;
        let prev = came_from[row][idx(r, a, o)] as usize;
        o -= usize::from((r as u32) < needed[row]);
        if prev != r {
            a -= 1;
        }
        r = prev;
    }
    Some(Path {
        replicas,
        broker_steps: best,
        actions,
        overloaded_rows,
    })
}

/// `path` with each rise made `delay` rows earlier (the highest replicas of the next `delay`
/// rows), evaluated as the replay does: a broker asked for at row i is ready at row i + `delay`,
/// so the ready brokers at row i are the fewest replicas of rows i − `delay` ..= i (the
/// `initial` ones before the start). From row `delay` on, its brokers ready at every row are at
/// least the path's replicas there, so it is overloaded there on no more rows; a rise within the
/// first `delay` rows cannot come earlier.
pub fn with_ready_delay(path: &Path, needed: &[u32], initial: u32, delay: usize) -> Path {
    let n = path.replicas.len();
    let replicas: Vec<u32> = (0..n)
        .map(|i| {
            path.replicas[i..(i + delay + 1).min(n)]
                .iter()
                .copied()
                .max()
                .unwrap_or(initial)
        })
        .collect();
    let at = |j: isize| if j < 0 { initial } else { replicas[j as usize] };
    let ready = |i: usize| {
        (i as isize - delay as isize..=i as isize)
            .map(at)
            .min()
            .unwrap_or(initial)
    };
    let mut previous = initial;
    let mut actions = 0;
    for &r in &replicas {
        actions += usize::from(r != previous);
        previous = r;
    }
    Path {
        broker_steps: replicas.iter().map(|r| u64::from(*r)).sum(),
        overloaded_rows: (0..n).filter(|&i| ready(i) < needed[i]).count(),
        actions,
        replicas,
    }
}

/// Brokers each row needs so that its load per broker is within target × (1 + tolerance).
pub fn needed_brokers(trace: &Trace, target: f64, tolerance: f64) -> Vec<u32> {
    let column = trace.index(&Column::Throughput);
    trace
        .rows
        .iter()
        .map(|row| {
            let load = column.and_then(|c| row.value(c)).unwrap_or(0.0);
            // Smallest r with load / r <= target × (1 + tolerance), as the replay counts it.
            let limit = target * (1.0 + tolerance);
            let mut r = (load / limit).ceil().max(1.0) as u32;
            while r > 1 && load / f64::from(r - 1) <= limit {
                r -= 1;
            }
            while load / f64::from(r) > limit {
                r += 1;
            }
            r
        })
        .collect()
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bundled = |name: &str| {
        Trace::read(&root.join(format!("examples/traces/{name}.csv")))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let cases = [
        ("oscillating (±25 %, 12 min)", bundled("oscillating")),
        (
            "swings 26 (±15 %, 16 min)",
            gen_traces::swings(26, 250.0 * MIB, 5.0, 0.15, 16.0, 180),
        ),
        (
            "swings 28 (±20 %, 8 min)",
            gen_traces::swings(28, 500.0 * MIB, 10.0, 0.20, 8.0, 180),
        ),
        (
            "swings 30 (±20 %, 14 min)",
            gen_traces::swings(30, 450.0 * MIB, 9.0, 0.20, 14.0, 180),
        ),
        (
            "swings 33 (±25 %, 60 min)",
            gen_traces::swings(33, 300.0 * MIB, 6.0, 0.25, 60.0, 360),
        ),
    ];
    let policy = backtest::load_policy(&root.join("deploy/examples/backtest-oscillating.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let brokers = policy.policy.brokers.clone().expect("a brokers section");
    let target = brokers.metrics[0].target;
    let options = Options {
        initial_replicas: None,
        ready_delay: DEFAULT_READY_DELAY,
        drain_delay: None,
        compare_hpa: true,
        initial_claim_size: None,
        epoch: TRACE_EPOCH,
        source: "flap_bound".into(),
    };
    let delay = (DEFAULT_READY_DELAY.as_secs_f64() / 15.0).round() as usize;
    println!(
        "| trace | HPA: broker-hours | overload | actions | overload allowed | lower bound: broker-hours | × HPA | a path with the ready delay: broker-hours | × HPA | actions | overload |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, trace) in cases {
        let report = backtest::run_compared(&trace, &policy, &options, false)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let hpa = report.hpa.expect("compared with the HPA").summary;
        let step = trace.step_seconds();
        let actions = (hpa.scale_ups + hpa.scale_downs) as usize;
        let needed = needed_brokers(&trace, target, brokers.tolerance);
        let initial = report.initial_replicas;
        for (share, label) in [(1.0, "the HPA's"), (0.5, "half the HPA's"), (0.0, "none")] {
            let overloaded =
                (share * hpa.overload_beyond_tolerance_seconds / step + 1e-9).floor() as usize;
            let Some(best) = cheapest_path(&needed, initial, actions / 2, overloaded) else {
                println!("| {name} | no path with {label} overload |");
                continue;
            };
            let real = with_ready_delay(&best, &needed, initial, delay);
            let hours = |p: &Path| p.broker_steps as f64 * step / 3600.0;
            println!(
                "| {name} | {:.1} | {:.0}s | {actions} | {label} | {:.2} | {:.3} | {:.2} | {:.3} | {} | {:.0}s |",
                hpa.broker_hours,
                hpa.overload_beyond_tolerance_seconds,
                hours(&best),
                hours(&best) / hpa.broker_hours,
                hours(&real),
                hours(&real) / hpa.broker_hours,
                real.actions,
                real.overloaded_rows as f64 * step,
            );
        }
    }
}
