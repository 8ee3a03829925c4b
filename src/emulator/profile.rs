//! Cluster load over time: a built-in profile or a recorded trace.

use std::f64::consts::PI;
use std::path::Path;

/// Cluster-wide inbound load at one moment (outbound is derived with the fan-out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Bytes per second published.
    pub bytes_in: f64,
    /// Messages per second published.
    pub messages_in: f64,
}

/// How load changes with time.
#[derive(Debug, Clone, PartialEq)]
pub enum Profile {
    /// The base load, always.
    Constant(Load),
    /// The base load ±50 % on a sine of the given period in seconds (a day, compressed).
    Diurnal {
        /// Mean load.
        base: Load,
        /// Period in seconds.
        period: f64,
    },
    /// The base load growing linearly: twice the base after `period` seconds.
    Ramp {
        /// Load at time zero.
        base: Load,
        /// Seconds to double.
        period: f64,
    },
    /// Points `(seconds, load)` interpolated linearly; the last value holds afterwards.
    Trace(Vec<(f64, Load)>),
}

/// A trace file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read trace {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `seconds,bytes_in,messages_in`.
    #[error("trace line {line}: {problem}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

impl Profile {
    /// The load `t` seconds after start.
    pub fn at(&self, t: f64) -> Load {
        let scale = |base: Load, k: f64| Load {
            bytes_in: base.bytes_in * k,
            messages_in: base.messages_in * k,
        };
        match self {
            Profile::Constant(l) => *l,
            Profile::Diurnal { base, period } => {
                scale(*base, 1.0 + 0.5 * (2.0 * PI * t / period.max(1.0)).sin())
            }
            Profile::Ramp { base, period } => scale(*base, 1.0 + t.max(0.0) / period.max(1.0)),
            Profile::Trace(points) => interpolate(points, t),
        }
    }

    /// Reads a CSV trace: `seconds,bytes_in,messages_in` per line, an optional header,
    /// `#` comments; times must increase.
    pub fn from_trace_file(path: &Path) -> Result<Profile, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_trace(&text)
    }

    /// Parses a CSV trace (see [`Profile::from_trace_file`]).
    pub fn from_trace(text: &str) -> Result<Profile, TraceError> {
        let mut points: Vec<(f64, Load)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty()
                || line.starts_with('#')
                || (i == 0 && line.starts_with(char::is_alphabetic))
            {
                continue;
            }
            let bad = |problem: String| TraceError::Line {
                line: i + 1,
                problem,
            };
            let cols: Vec<f64> = line
                .split(',')
                .map(|c| c.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("{line:?}: {e}")))?;
            let [t, bytes_in, messages_in] = cols[..] else {
                return Err(bad(format!("expected 3 columns, got {}", cols.len())));
            };
            if cols.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(bad("values must be finite and not negative".into()));
            }
            if points.last().is_some_and(|(prev, _)| *prev >= t) {
                return Err(bad("times must increase".into()));
            }
            points.push((
                t,
                Load {
                    bytes_in,
                    messages_in,
                },
            ));
        }
        if points.is_empty() {
            return Err(TraceError::Line {
                line: 0,
                problem: "trace has no data lines".into(),
            });
        }
        Ok(Profile::Trace(points))
    }
}

fn interpolate(points: &[(f64, Load)], t: f64) -> Load {
    let Some(first) = points.first() else {
        return Load {
            bytes_in: 0.0,
            messages_in: 0.0,
        };
    };
    if t <= first.0 {
        return first.1;
    }
    for w in points.windows(2) {
        let ((t0, a), (t1, b)) = (w[0], w[1]);
        if t <= t1 {
            let f = (t - t0) / (t1 - t0);
            return Load {
                bytes_in: a.bytes_in + f * (b.bytes_in - a.bytes_in),
                messages_in: a.messages_in + f * (b.messages_in - a.messages_in),
            };
        }
    }
    points.last().map_or(first.1, |p| p.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_interpolates_and_holds() {
        let p = Profile::from_trace("seconds,bytes_in,messages_in\n0,100,10\n10,200,20\n").unwrap();
        assert_eq!(p.at(5.0).bytes_in, 150.0);
        assert_eq!(p.at(50.0).messages_in, 20.0);
        assert!(Profile::from_trace("0,1,1\n0,2,2\n").is_err());
        assert!(Profile::from_trace("0,1\n").is_err());
        assert!(Profile::from_trace("").is_err());
    }

    #[test]
    fn builtin_profiles() {
        let base = Load {
            bytes_in: 100.0,
            messages_in: 10.0,
        };
        assert_eq!(Profile::Constant(base).at(99.0), base);
        let r = Profile::Ramp { base, period: 10.0 }.at(10.0);
        assert_eq!(r.bytes_in, 200.0);
        let d = Profile::Diurnal { base, period: 40.0 }.at(10.0);
        assert!((d.bytes_in - 150.0).abs() < 1e-9);
    }
}
