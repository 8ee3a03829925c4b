//! Load forecast for predictive scale-up: a linear trend over recent complete samples (since the
//! last step, which a line would extrapolate as a slope), a daily pattern from the source's
//! history when at least a day of it exists, and an upper band for the noise the trend leaves
//! unexplained.
//!
//! Pure arithmetic on what the caller hands in; the engine decides what a forecast may do (only
//! ever raise a scale-up, see `brokers.rs`).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{elapsed, units};

/// Samples the trend is fitted to, at most (one evaluation adds one).
pub const TREND_SAMPLES: usize = 12;
/// Oldest sample the trend may use.
pub const TREND_WINDOW: Duration = Duration::from_secs(300);
/// Fewest samples a trend is fitted to: with fewer, one noisy sample would decide.
pub const MIN_TREND_SAMPLES: usize = 4;
/// Horizon used under `horizon: auto` until one is measured: a broker pod's start plus the
/// minute Pulsar takes to refresh its broker-level rates.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(120);
/// Standard deviations of the unexplained noise added on top of the point forecast.
pub const BAND: f64 = 1.0;
/// A forecast never expects more than this multiple of the current value: one horizon of an
/// extrapolated burst must not buy brokers for load nobody has seen.
pub const MAX_GROWTH: f64 = 2.0;
/// A change between consecutive trend samples of more than this fraction of the earlier one is
/// a step, not a trend: a line fitted across it extrapolates the step as a slope (after a flash
/// crowd, brokers for a second step nobody saw). The trend starts over from the step.
pub const STEP: f64 = 0.5;
/// Days of history the daily pattern averages over, at most.
pub const MAX_DAYS: u32 = 7;
/// Half-width of the history window averaged around one instant.
pub const HISTORY_HALF_WIDTH: Duration = Duration::from_secs(300);
/// Fewest history points a window needs to count.
pub const MIN_HISTORY_POINTS: usize = 3;

const DAY: i64 = 86_400;

/// Past values of the policy's metrics (e.g. Prometheus range queries over the last days),
/// handed to the engine by the caller; the engine never fetches.
pub trait History {
    /// Mean and count of metric `metric`'s values in `[from, to]`, if it has any there.
    fn mean(&self, metric: usize, from: Timestamp, to: Timestamp) -> Option<(f64, usize)>;
}

/// No history: the forecast uses the trend only.
pub struct NoHistory;

impl History for NoHistory {
    fn mean(&self, _: usize, _: Timestamp, _: Timestamp) -> Option<(f64, usize)> {
        None
    }
}

/// History held as `(time, value)` series, oldest first, one per metric.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesHistory {
    /// One series per policy metric (empty when unknown).
    pub series: Vec<Vec<(Timestamp, f64)>>,
}

impl History for SeriesHistory {
    fn mean(&self, metric: usize, from: Timestamp, to: Timestamp) -> Option<(f64, usize)> {
        let s = self.series.get(metric)?;
        let start = s.partition_point(|(t, _)| *t < from);
        let end = s.partition_point(|(t, _)| *t <= to);
        mean_of(s.get(start..end)?.iter().map(|(_, v)| *v))
    }
}

/// Mean and count of finite, non-negative values.
pub fn mean_of(values: impl Iterator<Item = f64>) -> Option<(f64, usize)> {
    let (sum, n) = values
        .filter(|v| v.is_finite() && *v >= 0.0)
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| (sum / n as f64, n))
}

/// A straight line through recent samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Fitted value at the newest sample's time.
    pub level: f64,
    /// Change per second.
    pub slope: f64,
    /// Standard deviation of the samples around the line.
    pub noise: f64,
    /// Samples fitted.
    pub samples: usize,
    /// Time from the oldest to the newest sample.
    pub span: Duration,
}

/// Least-squares line through `points` (oldest first) no older than [`TREND_WINDOW`] before the
/// newest; `None` with fewer than [`MIN_TREND_SAMPLES`] or values that are not finite.
pub fn trend(points: &[(Timestamp, f64)]) -> Option<Trend> {
    let &(newest, _) = points.last()?;
    let used: Vec<(f64, f64)> = points
        .iter()
        .rev()
        .take(TREND_SAMPLES)
        .take_while(|(t, _)| elapsed(newest, *t) <= TREND_WINDOW)
        .map(|(t, v)| (-elapsed(newest, *t).as_secs_f64(), *v))
        .collect();
    if used.len() < MIN_TREND_SAMPLES || used.iter().any(|(_, v)| !v.is_finite()) {
        return None;
    }
    let n = used.len() as f64;
    let mx = used.iter().map(|p| p.0).sum::<f64>() / n;
    let my = used.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = used.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = used.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let level = my - slope * mx;
    let sse: f64 = used
        .iter()
        .map(|(x, y)| (y - (level + slope * x)).powi(2))
        .sum();
    let noise = (sse / (n - 2.0).max(1.0)).sqrt();
    let span = Duration::from_secs_f64(-used.iter().map(|p| p.0).fold(0.0, f64::min));
    Some(Trend {
        level,
        slope,
        noise,
        samples: used.len(),
        span,
    })
}

/// The samples from the last [`STEP`] on (all of them without one).
pub fn since_step(points: &[(Timestamp, f64)]) -> &[(Timestamp, f64)] {
    let start = points
        .windows(2)
        .rposition(|w| (w[1].1 - w[0].1).abs() > STEP * w[0].1.abs())
        .map_or(0, |i| i + 1);
    &points[start..]
}

/// The daily pattern: how the load changed from the same time of day to `look` later, averaged
/// over up to [`MAX_DAYS`] past days, as a factor; with the number of days it rests on.
pub fn daily_factor(
    history: &dyn History,
    metric: usize,
    now: Timestamp,
    look: Duration,
) -> Option<(f64, u32)> {
    let half = SignedDuration::try_from(HISTORY_HALF_WIDTH).ok()?;
    let look = SignedDuration::try_from(look).ok()?;
    let window = |at: Timestamp| {
        let (m, n) = history.mean(
            metric,
            at.checked_sub(half).ok()?,
            at.checked_add(half).ok()?,
        )?;
        (n >= MIN_HISTORY_POINTS).then_some(m)
    };
    let mut factors = Vec::new();
    for d in 1..=i64::from(MAX_DAYS) {
        let Ok(then) = now.checked_sub(SignedDuration::from_secs(d * DAY)) else {
            break;
        };
        let (Some(before), Some(after)) =
            (window(then), then.checked_add(look).ok().and_then(window))
        else {
            continue;
        };
        if before > 0.0 {
            factors.push(after / before);
        }
    }
    let days = factors.len() as u32;
    (days > 0).then(|| (factors.iter().sum::<f64>() / f64::from(days), days))
}

/// What one metric is expected to be one look-ahead from now, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// Expected value (upper band), never above [`MAX_GROWTH`] × the current value.
    pub value: f64,
    /// How it was reached, in words.
    pub from: String,
}

/// Why no forecast was made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoForecast {
    /// Fewer than [`MIN_TREND_SAMPLES`] usable recent samples.
    TooFew,
    /// The load stepped by more than [`STEP`], and only `since` samples follow the step.
    AfterStep {
        /// Samples from the step on.
        since: usize,
    },
}

impl NoForecast {
    /// The reason, in words, for `metric`.
    pub fn describe(self, metric: &str) -> String {
        match self {
            NoForecast::TooFew => format!("{metric}: too few recent samples to forecast"),
            NoForecast::AfterStep { since } => format!(
                "{metric}: the load stepped by more than {:.0} % between two samples; the trend starts over from the step ({since} sample{} since, {MIN_TREND_SAMPLES} needed)",
                STEP * 100.0,
                if since == 1 { "" } else { "s" },
            ),
        }
    }
}

/// Forecasts a cluster total `look` ahead from the trend of `recent` (which ends with the
/// current sample) and, when history has it, the daily pattern.
pub fn forecast(
    recent: &[(Timestamp, f64)],
    current: f64,
    history: &dyn History,
    metric: usize,
    now: Timestamp,
    look: Duration,
    fmt: &dyn Fn(f64) -> String,
) -> Result<Forecast, NoForecast> {
    let all = recent.len();
    let recent = since_step(recent);
    let none = || {
        if recent.len() < all {
            NoForecast::AfterStep {
                since: recent.len(),
            }
        } else {
            NoForecast::TooFew
        }
    };
    let mut t = trend(recent).ok_or_else(none)?;
    // The newest few samples decide whether a rise goes on: a ramp that has ended stops
    // being extrapolated within a minute, while a long fit alone would carry it on for minutes.
    if let Some(short) = recent
        .len()
        .checked_sub(MIN_TREND_SAMPLES)
        .and_then(|from| trend(&recent[from..]))
    {
        t.slope = t.slope.min(short.slope);
    }
    let ahead = look.as_secs_f64();
    let by_trend = t.level + t.slope * ahead;
    let mut from = format!(
        "trend {}{} per min over {} samples in {}",
        if t.slope >= 0.0 { "+" } else { "-" },
        fmt(t.slope.abs() * 60.0),
        t.samples,
        units::duration(t.span)
    );
    let mut point = by_trend;
    if let Some((factor, days)) = daily_factor(history, metric, now, look) {
        let by_day = t.level * factor;
        from.push_str(&format!(
            ", daily pattern ×{} from {days} day{}",
            units::number((factor * 100.0).round() / 100.0),
            if days == 1 { "" } else { "s" }
        ));
        point = point.max(by_day);
    }
    let band = BAND * t.noise;
    from.push_str(&format!(", noise band +{}", fmt(band)));
    let value = (point + band).max(0.0).min(current * MAX_GROWTH);
    value
        .is_finite()
        .then_some(Forecast { value, from })
        .ok_or_else(none)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn plain(v: f64) -> String {
        units::number(v)
    }

    #[test]
    fn a_straight_line_is_fitted_exactly() {
        let pts: Vec<_> = (0..6)
            .map(|i| (at(i * 15), 100.0 + 2.0 * i as f64))
            .collect();
        let t = trend(&pts).unwrap();
        assert!((t.slope - 2.0 / 15.0).abs() < 1e-9, "{t:?}");
        assert!((t.level - 110.0).abs() < 1e-9);
        assert!(t.noise < 1e-9);
        assert_eq!((t.samples, t.span), (6, Duration::from_secs(75)));
    }

    #[test]
    fn too_few_or_too_old_samples_give_no_trend() {
        let pts: Vec<_> = (0..3).map(|i| (at(i * 15), 100.0)).collect();
        assert_eq!(trend(&pts), None);
        // Four samples, but the first three are older than the window.
        let pts = vec![(at(0), 1.0), (at(15), 1.0), (at(30), 1.0), (at(1000), 5.0)];
        assert_eq!(trend(&pts), None);
    }

    #[test]
    fn a_step_starts_the_trend_over() {
        // Flat at 100, then 175 and 400 after a gap of partial samples: a line through all of
        // them would extrapolate the step.
        let mut pts: Vec<_> = (0..8).map(|i| (at(i * 15), 100.0)).collect();
        pts.extend([(at(120), 175.0), (at(240), 400.0), (at(255), 402.0)]);
        assert_eq!(since_step(&pts), &pts[9..]);
        let f = |pts: &[(Timestamp, f64)]| {
            let now = pts.last().unwrap().0;
            forecast(
                pts,
                400.0,
                &NoHistory,
                0,
                now,
                Duration::from_secs(60),
                &plain,
            )
            .ok()
        };
        assert_eq!(f(&pts), None, "two samples since the step");
        for i in 0..2 {
            pts.push((at(270 + i * 15), 401.0 + i as f64));
        }
        let after = f(&pts).unwrap();
        assert!(after.value < 420.0, "{after:?}");
        assert!(after.from.contains("over 4 samples"), "{}", after.from);
        // A ramp of 40 % a sample is no step: all of it is fitted.
        let ramp: Vec<_> = (0..6)
            .map(|i| (at(i * 15), 100.0 * 1.4f64.powi(i as i32)))
            .collect();
        assert_eq!(since_step(&ramp).len(), 6);
        // A fall by more than half is one too.
        let fall = [(at(0), 100.0), (at(15), 40.0), (at(30), 41.0)];
        assert_eq!(since_step(&fall).len(), 2);
    }

    #[test]
    fn rising_load_is_forecast_ahead_and_capped() {
        let pts: Vec<_> = (0..6)
            .map(|i| (at(i * 15), 100.0 + 10.0 * i as f64))
            .collect();
        let f = forecast(
            &pts,
            150.0,
            &NoHistory,
            0,
            at(75),
            Duration::from_secs(60),
            &plain,
        )
        .unwrap();
        assert!((f.value - 190.0).abs() < 1e-6, "{f:?}");
        assert!(
            f.from
                .contains("trend +40 per min over 6 samples in 1m 15s"),
            "{}",
            f.from
        );
        let f = forecast(
            &pts,
            150.0,
            &NoHistory,
            0,
            at(75),
            Duration::from_secs(3600),
            &plain,
        )
        .unwrap();
        assert_eq!(f.value, 300.0);
    }

    #[test]
    fn the_daily_pattern_comes_from_the_same_time_yesterday() {
        // Yesterday the load doubled from now-1d to now-1d+1h.
        let now = at(2 * DAY);
        let mut series = Vec::new();
        for i in -40..=300 {
            let t = DAY + i * 15;
            let v = if t < DAY + 1800 { 100.0 } else { 200.0 };
            series.push((at(t), v));
        }
        let h = SeriesHistory {
            series: vec![series],
        };
        let (factor, days) = daily_factor(&h, 0, now, Duration::from_secs(3600)).unwrap();
        assert_eq!((factor, days), (2.0, 1));
        assert_eq!(daily_factor(&h, 1, now, Duration::from_secs(3600)), None);
        assert_eq!(
            daily_factor(&NoHistory, 0, now, Duration::from_secs(3600)),
            None
        );
        let flat: Vec<_> = (0..6)
            .map(|i| (now - SignedDuration::from_secs(75 - i * 15), 100.0))
            .collect();
        let f = forecast(&flat, 100.0, &h, 0, now, Duration::from_secs(3600), &plain).unwrap();
        assert_eq!(f.value, 200.0);
        assert!(f.from.contains("daily pattern ×2 from 1 day"), "{}", f.from);
    }
}
