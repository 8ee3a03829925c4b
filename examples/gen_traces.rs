//! Generates the bundled backtest traces in `examples/traces/` from fixed seeds.
//!
//! `cargo run --example gen_traces` rewrites them; a test checks that the committed files are
//! exactly what this generator produces.

use std::f64::consts::PI;
use std::path::Path;

use pulsar_autoscaler::backtest::trace::{Column, Row, Trace};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;
const DAY: f64 = 86_400.0;
/// Average message size, linking message rate to throughput.
const MESSAGE_BYTES: f64 = 4096.0;

/// SplitMix64: small, seeded and identical on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn signed(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Slowly wandering multiplicative noise around 1 (an AR(1) process).
struct Wander {
    rng: Rng,
    level: f64,
    keep: f64,
    spread: f64,
}

impl Wander {
    fn new(seed: u64, keep: f64, spread: f64) -> Self {
        Wander {
            rng: Rng(seed),
            level: 0.0,
            keep,
            spread,
        }
    }

    fn next(&mut self) -> f64 {
        self.level = self.level * self.keep + self.rng.signed() * self.spread;
        1.0 + self.level
    }
}

/// Broker-side columns for a total throughput recorded on `brokers` brokers: message rate at a
/// fixed message size, heap and direct memory in proportion to load per broker.
fn broker_row(seconds: f64, throughput: f64, brokers: f64) -> Row {
    let per_broker_mib = throughput / brokers / MIB;
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    Row {
        seconds,
        values: vec![
            Some(throughput.round()),
            Some((throughput / MESSAGE_BYTES).round()),
            Some(round1((per_broker_mib * 1.2).min(100.0))),
            Some(round1((per_broker_mib * 1.0).min(100.0))),
            Some(brokers),
        ],
    }
}

fn broker_columns() -> Vec<Column> {
    vec![
        Column::Throughput,
        Column::MessageRate,
        Column::Heap,
        Column::Direct,
        Column::Brokers,
    ]
}

/// Daily cycle: lowest at 04:00, highest at 16:00.
fn daily(seconds: f64, low: f64, high: f64) -> f64 {
    let phase = 2.0 * PI * (seconds - 4.0 * 3600.0) / DAY;
    low + (high - low) * (0.5 - 0.5 * phase.cos())
}

/// One day at 15 s: 150 MiB/s at night to 550 MiB/s in the afternoon, recorded on 12 brokers.
pub fn diurnal() -> Trace {
    diurnal_days(1)
}

/// The diurnal cycle over `days` days at 15 s (the replay-speed bench uses a week).
pub fn diurnal_days(days: u32) -> Trace {
    daily_cycle(1, days, 150.0 * MIB, 550.0 * MIB)
}

/// A daily cycle from `low` to `high` over `days` days at 15 s with noise from `seed`, recorded
/// on 12 brokers.
pub fn daily_cycle(seed: u64, days: u32, low: f64, high: f64) -> Trace {
    let mut noise = Wander::new(seed, 0.97, 0.006);
    let rows = (0..5760 * days)
        .map(|i| {
            let t = f64::from(i) * 15.0;
            broker_row(t, daily(t, low, high) * noise.next(), 12.0)
        })
        .collect();
    Trace {
        columns: broker_columns(),
        rows,
    }
}

/// Two hours at 15 s: 180 MiB/s, then 4× within one minute at 0:30, for 40 minutes, then a
/// ten-minute decline back; recorded on 8 brokers.
pub fn flash_crowd() -> Trace {
    let mut noise = Wander::new(2, 0.9, 0.01);
    let base = 180.0 * MIB;
    let rows = (0..480)
        .map(|i| {
            let t = f64::from(i) * 15.0;
            let m = t / 60.0;
            let factor = if m < 30.0 {
                1.0
            } else if m < 31.0 {
                1.0 + 3.0 * (m - 30.0)
            } else if m < 71.0 {
                4.0
            } else if m < 81.0 {
                4.0 - 3.0 * (m - 71.0) / 10.0
            } else {
                1.0
            };
            broker_row(t, base * factor * noise.next(), 8.0)
        })
        .collect();
    Trace {
        columns: broker_columns(),
        rows,
    }
}

/// Three hours at 15 s: 300 MiB/s (six brokers at 50 MiB/s) ± 25 % with a 12-minute period and
/// noise, recorded on 6 brokers.
pub fn oscillating() -> Trace {
    let mut noise = Wander::new(3, 0.8, 0.02);
    let rows = (0..720)
        .map(|i| {
            let t = f64::from(i) * 15.0;
            let wave = 1.0 + 0.25 * (2.0 * PI * t / 720.0).sin();
            broker_row(t, 300.0 * MIB * wave * noise.next(), 6.0)
        })
        .collect();
    Trace {
        columns: broker_columns(),
        rows,
    }
}

/// Start and end (seconds) of the metrics outage in [`outage`].
pub const OUTAGE: (f64, f64) = (17.0 * 3600.0, 17.0 * 3600.0 + 1200.0);

/// The diurnal day with a different seed and a 20-minute metrics outage at 17:00, while the
/// load falls: every cell is empty for the outage.
pub fn outage() -> Trace {
    let mut noise = Wander::new(4, 0.97, 0.006);
    let rows = (0..5760)
        .map(|i| {
            let t = f64::from(i) * 15.0;
            let mut row = broker_row(t, daily(t, 150.0 * MIB, 550.0 * MIB) * noise.next(), 12.0);
            if (OUTAGE.0..OUTAGE.1).contains(&t) {
                row.values.iter_mut().for_each(|v| *v = None);
            }
            row
        })
        .collect();
    Trace {
        columns: broker_columns(),
        rows,
    }
}

/// A week at 5 min of one ledger claim (100 GiB when recorded) filling at about 24 GiB a day
/// with a daily write cycle, compaction reclaiming space every six hours.
pub fn disk_growth() -> Trace {
    let mut rng = Rng(5);
    let step = 300.0;
    let mut used = 55.0 * GIB;
    let mut since_compaction = 0.0;
    let rows = (0..2016)
        .map(|i| {
            let t = f64::from(i) * step;
            let rate =
                24.0 * GIB / DAY * (1.0 + 0.6 * (2.0 * PI * (t - 10.0 * 3600.0) / DAY).sin());
            let written = rate * step * (1.0 + 0.2 * rng.signed());
            used += written;
            since_compaction += written;
            if i % 72 == 71 {
                // Compaction frees a quarter of what was written since the last one.
                used -= since_compaction * 0.25;
                since_compaction = 0.0;
            }
            Row {
                seconds: t,
                values: vec![Some(used.round()), Some(100.0 * GIB)],
            }
        })
        .collect();
    Trace {
        columns: vec![Column::LedgerUsed, Column::LedgerCapacity],
        rows,
    }
}

/// A flash crowd that builds up: `base` (recorded on `brokers`) rising linearly to `peak`× over
/// `ramp_minutes` from `start_minute`, holding `hold_minutes`, then falling back over ten minutes;
/// `minutes` long at 15 s.
pub fn ramp_crowd(
    seed: u64,
    base: f64,
    brokers: f64,
    shape: (f64, f64, f64, f64),
    minutes: u32,
) -> Trace {
    let (start, ramp, hold, peak) = shape;
    let mut noise = Wander::new(seed, 0.9, 0.01);
    let rows = (0..minutes * 4)
        .map(|i| {
            let t = f64::from(i) * 15.0;
            let m = t / 60.0;
            let factor = if m < start {
                1.0
            } else if m < start + ramp {
                1.0 + (peak - 1.0) * (m - start) / ramp
            } else if m < start + ramp + hold {
                peak
            } else if m < start + ramp + hold + 10.0 {
                peak - (peak - 1.0) * (m - start - ramp - hold) / 10.0
            } else {
                1.0
            };
            broker_row(t, base * factor * noise.next(), brokers)
        })
        .collect();
    Trace {
        columns: broker_columns(),
        rows,
    }
}

/// Two hours at 15 s: 180 MiB/s on 8 brokers, rising to 4× over ten minutes from 0:30, for 40
/// minutes, then a ten-minute decline back.
pub fn flash_crowd_ramp() -> Trace {
    ramp_crowd(6, 180.0 * MIB, 8.0, (30.0, 10.0, 40.0, 4.0), 120)
}

/// A working-day shape: quiet nights, a steep morning rise at 08:00, a lunch dip, an evening
/// fall; `level` scales the day (weekends are lower).
fn working_day(seconds: f64, low: f64, high: f64, level: f64) -> f64 {
    let h = (seconds % DAY) / 3600.0;
    let smooth = |x: f64| {
        let x = x.clamp(0.0, 1.0);
        x * x * (3.0 - 2.0 * x)
    };
    let rise = smooth((h - 7.5) / 2.0);
    let fall = smooth((h - 18.0) / 3.0);
    let lunch = 0.12 * (-((h - 12.5) / 0.6).powi(2)).exp();
    let shape = (rise - fall - lunch).max(0.0);
    low + (high - low) * level * shape
}

/// A week at 1 min with a daily pattern: 120 MiB/s at night to 600 MiB/s on working days
/// (weekends peak lower), `seed` for the noise, recorded on 12 brokers.
pub fn week_with_seed(seed: u64, days: u32) -> Trace {
    let mut noise = Wander::new(seed, 0.97, 0.006);
    let rows = (0..1440 * days)
        .map(|i| {
            let t = f64::from(i) * 60.0;
            let day = (t / DAY) as u32 % 7;
            let level = if day >= 5 {
                0.55
            } else {
                1.0 - 0.03 * f64::from(day)
            };
            let v = working_day(t, 120.0 * MIB, 600.0 * MIB, level);
            broker_row(t, v * noise.next(), 12.0)
        })
        .collect();
    Trace {
        columns: broker_columns(),
        rows,
    }
}

/// The bundled week.
pub fn week() -> Trace {
    week_with_seed(7, 7)
}

/// `minutes` at 15 s of `mean` (recorded on `brokers`) swinging ±`amplitude` with `period_minutes`.
pub fn swings(
    seed: u64,
    mean: f64,
    brokers: f64,
    amplitude: f64,
    period_minutes: f64,
    minutes: u32,
) -> Trace {
    let mut noise = Wander::new(seed, 0.8, 0.02);
    let rows = (0..minutes * 4)
        .map(|i| {
            let t = f64::from(i) * 15.0;
            let wave = 1.0 + amplitude * (2.0 * PI * t / (period_minutes * 60.0)).sin();
            broker_row(t, mean * wave * noise.next(), brokers)
        })
        .collect();
    Trace {
        columns: broker_columns(),
        rows,
    }
}

/// Three hours at 15 s: 300 MiB/s ± 30 % every 20 minutes, slower than a 5-minute scale-down
/// window absorbs, recorded on 6 brokers.
pub fn fast_oscillation() -> Trace {
    swings(8, 300.0 * MIB, 6.0, 0.3, 20.0, 180)
}

/// Every bundled trace with its file name.
pub fn all() -> Vec<(&'static str, Trace)> {
    vec![
        ("diurnal.csv", diurnal()),
        ("flash-crowd.csv", flash_crowd()),
        ("oscillating.csv", oscillating()),
        ("outage.csv", outage()),
        ("disk-growth.csv", disk_growth()),
        ("flash-crowd-ramp.csv", flash_crowd_ramp()),
        ("week.csv", week()),
        ("fast-oscillation.csv", fast_oscillation()),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/traces");
    std::fs::create_dir_all(&dir)?;
    for (name, trace) in all() {
        let path = dir.join(name);
        trace.write(std::fs::File::create(&path)?)?;
        println!("wrote {} ({} rows)", path.display(), trace.rows.len());
    }
    Ok(())
}
