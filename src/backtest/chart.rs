//! `chart.svg`: load per ready broker against the target, replicas over time with the
//! decisions as markers (policy and HPA side by side), and the ledger claim's size and usage.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::replay::{Outcome, Point, Record, Run};
use super::report::Report;
use crate::api::MetricType;
use crate::decide::Action;

/// Legend names, so that readers (and tests) can find each series.
pub mod series {
    /// Load metric per ready broker under the policy.
    pub const LOAD_POLICY: &str = "load per ready broker (policy)";
    /// Load metric per ready broker under the HPA baseline.
    pub const LOAD_HPA: &str = "load per ready broker (HPA)";
    /// The load metric's target per broker.
    pub const TARGET: &str = "target per broker";
    /// Broker replicas under the policy.
    pub const REPLICAS_POLICY: &str = "replicas (policy)";
    /// Broker replicas under the HPA baseline.
    pub const REPLICAS_HPA: &str = "replicas (HPA)";
    /// Scale-ups carried out by the policy.
    pub const SCALE_UP: &str = "scale-up (policy)";
    /// Scale-downs carried out by the policy.
    pub const SCALE_DOWN: &str = "scale-down (policy)";
    /// Changes the rate limiter dropped.
    pub const DROPPED: &str = "dropped by rate limit";
    /// HPA changes.
    pub const HPA_CHANGE: &str = "change (HPA)";
    /// Load metric per ready broker under the policy with forecast.
    pub const LOAD_FORECAST: &str = "load per ready broker (policy + forecast)";
    /// Broker replicas under the policy with forecast.
    pub const REPLICAS_FORECAST: &str = "replicas (policy + forecast)";
    /// Scale-ups the forecast made or enlarged beyond what the load seen then asked for.
    pub const FORECAST_UP: &str = "scale-up by forecast";
    /// Ledger claim size.
    pub const CLAIM_SIZE: &str = "claim size";
    /// Ledger claim used space.
    pub const CLAIM_USED: &str = "claim used";
    /// Used space at which the policy expands.
    pub const CLAIM_THRESHOLD: &str = "expand threshold";
    /// Expansions carried out.
    pub const EXPANSION: &str = "expansion";
    /// Stretches of the trace without load data (a metrics outage).
    pub const OUTAGE: &str = "no data (outage)";
}

/// Points per line at most; longer series are reduced to per-bucket maxima (peaks stay visible).
const MAX_POINTS: usize = 1500;
const WIDTH: u32 = 1400;
const PANEL_HEIGHT: u32 = 340;
/// Height of the title strip naming the policy and the trace.
const TITLE_HEIGHT: u32 = 44;
/// Width kept right of each panel's data for its legend, so the legend never hides data.
const LEGEND_WIDTH: u32 = 330;

const POLICY_COLOR: RGBColor = RGBColor(31, 119, 180);
const HPA_COLOR: RGBColor = RGBColor(255, 127, 14);
const TARGET_COLOR: RGBColor = RGBColor(214, 39, 40);
const UP_COLOR: RGBColor = RGBColor(44, 160, 44);
const DOWN_COLOR: RGBColor = RGBColor(148, 103, 189);
const FORECAST_COLOR: RGBColor = RGBColor(23, 190, 207);
const FORECAST_MARK_COLOR: RGBColor = RGBColor(0, 90, 100);
const GREY: RGBColor = RGBColor(127, 127, 127);

/// Draws the chart of `report` into `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let mut svg = String::new();
    render(report, &mut svg).map_err(|e| e.to_string())?;
    std::fs::write(path, svg).map_err(|e| e.to_string())
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Renders the chart as SVG text.
pub fn render(report: &Report, out: &mut String) -> DrawResult {
    let brokers = report.policy.summary.load_metric.is_some();
    let claims = report.policy.points.iter().any(|p| p.claim_size.is_some());
    let panels = usize::from(brokers) * 2 + usize::from(claims);
    let panels = panels.max(1);
    let height = TITLE_HEIGHT + PANEL_HEIGHT * panels as u32;
    {
        let root = SVGBackend::with_string(out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(TITLE_HEIGHT);
        title.draw_text(
            &title_text(report),
            &("sans-serif", 22).into_text_style(&title),
            (12, 12),
        )?;
        let areas = body.split_evenly((panels, 1));
        let (scale, unit) = time_scale(report.policy.summary.duration_seconds);
        let mut next = areas.iter();
        if brokers {
            if let Some(area) = next.next() {
                load_panel(report, area, scale, unit)?;
            }
            if let Some(area) = next.next() {
                replica_panel(report, area, scale, unit)?;
            }
        }
        if claims && let Some(area) = next.next() {
            claim_panel(report, area, scale, unit)?;
        }
        root.present()?;
    }
    Ok(())
}

/// `backtest of policy <name> on <trace>` with the HPA/forecast comparison when drawn.
pub fn title_text(report: &Report) -> String {
    let mut compared = Vec::new();
    if report.hpa.is_some() {
        compared.push("HPA");
    }
    if report.forecast.is_some() {
        compared.push("forecast");
    }
    let against = if compared.is_empty() {
        String::new()
    } else {
        format!(", compared with {}", compared.join(" and "))
    };
    format!(
        "backtest of policy {} on {}{against}",
        report.policy_name, report.source
    )
}

/// Stretches `[from, to]` (chart units) where the policy's replay had no load data.
fn outages(report: &Report, scale: f64) -> Vec<(f64, f64)> {
    let points = &report.policy.points;
    let mut out = Vec::new();
    let mut start: Option<f64> = None;
    for (i, p) in points.iter().enumerate() {
        match (p.load_per_broker.is_none(), start) {
            (true, None) => start = Some(p.seconds),
            (false, Some(from)) => {
                out.push((from / scale, p.seconds / scale));
                start = None;
            }
            _ => {}
        }
        if i + 1 == points.len()
            && let Some(from) = start
        {
            out.push((from / scale, p.seconds / scale));
        }
    }
    out
}

/// Shades the outages over the full height `[0, top]`, labelled once.
fn shade_outages<'a>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    stretches: &[(f64, f64)],
    top: f64,
) -> DrawResult {
    if stretches.is_empty() {
        return Ok(());
    }
    let shade = GREY.mix(0.25).filled();
    chart
        .draw_series(
            stretches
                .iter()
                .map(|(a, b)| Rectangle::new([(*a, 0.0), (*b, top)], shade)),
        )?
        .label(series::OUTAGE)
        .legend(|(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], GREY.mix(0.25).stroke_width(10))
        });
    Ok(())
}

/// Puts the legend right of the plotting area, in the room the panel keeps for it.
fn legend_outside<'a>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> DrawResult {
    let x = chart.plotting_area().dim_in_pixel().0 as i32 + 12;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::Coordinate(x, 0))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// How many y labels make every label a whole number on `[0, top]` (one per step of a whole
/// size such as 1, 2, 5 or 10).
fn integer_labels(top: f64) -> usize {
    let top = top.max(1.0).round() as usize;
    let step = [1, 2, 5, 10, 20, 50, 100, 200, 500]
        .into_iter()
        .find(|s| top / s <= 10)
        .unwrap_or(1000);
    top / step + 1
}

/// Seconds per x unit and the unit's name.
fn time_scale(duration: f64) -> (f64, &'static str) {
    if duration > 3.0 * 86400.0 {
        (86400.0, "days")
    } else if duration > 3.0 * 3600.0 {
        (3600.0, "hours")
    } else {
        (60.0, "minutes")
    }
}

/// Divisor and unit name for the load metric's values.
fn value_scale(kind: Option<MetricType>) -> (f64, &'static str) {
    match kind {
        Some(MetricType::Throughput) => (1024.0 * 1024.0, "MiB/s per broker"),
        Some(MetricType::MessageRate) => (1.0, "msg/s per broker"),
        Some(MetricType::HeapMemory | MetricType::DirectMemory) => (1.0, "percent"),
        _ => (1.0, "per broker"),
    }
}

/// Reduces `(x, y)` pairs to at most [`MAX_POINTS`] by taking each bucket's highest `y`.
fn reduce(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let per = points.len().div_ceil(MAX_POINTS);
    points
        .chunks(per)
        .filter_map(|c| {
            c.iter()
                .copied()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(_, y)| (c[0].0, y))
        })
        .collect()
}

/// Continuous stretches of a series that has gaps (missing data breaks the line).
fn segments(
    points: &[Point],
    value: impl Fn(&Point) -> Option<f64>,
    scale: f64,
    div: f64,
) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for p in points {
        match value(p) {
            Some(v) => current.push((p.seconds / scale, v / div)),
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter().map(reduce).collect()
}

/// A step line of replicas (or bytes) over `[from, to]` seconds, from the start value and the
/// changes carried out.
fn steps(
    run: &Run,
    start: f64,
    (from, to): (f64, f64),
    broker: bool,
    scale: f64,
    div: f64,
) -> Vec<(f64, f64)> {
    let end = to;
    let mut v = start;
    let mut out = vec![(from / scale, v / div)];
    for r in carried(&run.records, broker) {
        let x = r.seconds / scale;
        out.push((x, v / div));
        v = r.to as f64;
        out.push((x, v / div));
    }
    out.push((end / scale, v / div));
    out
}

/// First and last trace second.
fn seconds_range(report: &Report) -> (f64, f64) {
    let start = report.start_seconds;
    (start, start + report.policy.summary.duration_seconds)
}

/// The x axis in chart units.
fn x_range(report: &Report, scale: f64) -> (f64, f64) {
    let (from, to) = seconds_range(report);
    (from / scale, to / scale)
}

fn carried(records: &[Record], broker: bool) -> impl Iterator<Item = &Record> {
    records
        .iter()
        .filter(move |r| r.outcome == Outcome::Carried && (r.action == Action::Expand) != broker)
}

fn load_panel(
    report: &Report,
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    scale: f64,
    unit: &str,
) -> DrawResult {
    let s = &report.policy.summary;
    let (div, value_unit) = value_scale(report.load_kind);
    let (x0, end) = x_range(report, scale);
    let ours = segments(&report.policy.points, |p| p.load_per_broker, scale, div);
    let theirs = report
        .hpa
        .as_ref()
        .map(|h| segments(&h.points, |p| p.load_per_broker, scale, div))
        .unwrap_or_default();
    let ahead = report
        .forecast
        .as_ref()
        .map(|f| segments(&f.points, |p| p.load_per_broker, scale, div))
        .unwrap_or_default();
    let target = s.load_target.unwrap_or(0.0) / div;
    let peak = ours
        .iter()
        .chain(&theirs)
        .chain(&ahead)
        .flatten()
        .map(|p| p.1)
        .fold(target, f64::max);
    let name = s.load_metric.as_deref().unwrap_or("load");
    let y_top = (peak * 1.1).max(1e-9);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{name} per ready broker against the target"),
            ("sans-serif", 18),
        )
        .margin(10)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..end.max(x0 + 1e-9), 0f64..y_top)?;
    chart
        .configure_mesh()
        .x_desc(unit)
        .y_desc(value_unit)
        .draw()?;
    shade_outages(&mut chart, &outages(report, scale), y_top)?;
    let mut first = true;
    for seg in &theirs {
        let drawn = chart.draw_series(LineSeries::new(seg.iter().copied(), HPA_COLOR))?;
        if std::mem::take(&mut first) {
            drawn
                .label(series::LOAD_HPA)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], HPA_COLOR));
        }
    }
    let mut first = true;
    for seg in &ahead {
        let drawn = chart.draw_series(LineSeries::new(seg.iter().copied(), FORECAST_COLOR))?;
        if std::mem::take(&mut first) {
            drawn
                .label(series::LOAD_FORECAST)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], FORECAST_COLOR));
        }
    }
    let mut first = true;
    for seg in &ours {
        let drawn = chart.draw_series(LineSeries::new(seg.iter().copied(), POLICY_COLOR))?;
        if std::mem::take(&mut first) {
            drawn
                .label(series::LOAD_POLICY)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], POLICY_COLOR));
        }
    }
    chart
        .draw_series(LineSeries::new(
            [(x0, target), (end, target)],
            TARGET_COLOR.stroke_width(2),
        ))?
        .label(series::TARGET)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TARGET_COLOR));
    legend_outside(&mut chart)?;
    Ok(())
}

fn replica_panel(
    report: &Report,
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    scale: f64,
    unit: &str,
) -> DrawResult {
    let start = f64::from(report.initial_replicas);
    let span = seconds_range(report);
    let ours = steps(&report.policy, start, span, true, scale, 1.0);
    let theirs = report
        .hpa
        .as_ref()
        .map(|h| steps(h, start, span, true, scale, 1.0));
    let ahead = report
        .forecast
        .as_ref()
        .map(|f| steps(f, start, span, true, scale, 1.0));
    let top = ours
        .iter()
        .chain(theirs.iter().flatten())
        .chain(ahead.iter().flatten())
        .map(|p| p.1)
        .chain(report.policy.records.iter().map(|r| r.to as f64))
        .fold(1.0, f64::max);
    let (x0, end) = x_range(report, scale);
    let y_top = (top * 1.15).ceil();
    let mut chart = ChartBuilder::on(area)
        .caption("broker replicas and decisions", ("sans-serif", 18))
        .margin(10)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..end.max(x0 + 1e-9), 0f64..y_top)?;
    // Replicas are whole: labels at whole numbers only, written without decimals.
    let whole = |v: &f64| {
        if (v - v.round()).abs() < 1e-6 {
            format!("{}", v.round() as i64)
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(unit)
        .y_desc("brokers")
        .y_labels(integer_labels(y_top))
        .y_label_formatter(&whole)
        .draw()?;
    shade_outages(&mut chart, &outages(report, scale), y_top)?;
    if let Some(theirs) = theirs {
        chart
            .draw_series(LineSeries::new(theirs, HPA_COLOR))?
            .label(series::REPLICAS_HPA)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], HPA_COLOR));
        if let Some(h) = &report.hpa {
            chart
                .draw_series(
                    carried(&h.records, true)
                        .map(|r| Circle::new((r.seconds / scale, r.to as f64), 3, HPA_COLOR)),
                )?
                .label(series::HPA_CHANGE)
                .legend(|(x, y)| Circle::new((x + 10, y), 3, HPA_COLOR));
        }
    }
    if let Some(ahead) = ahead {
        chart
            .draw_series(LineSeries::new(ahead, FORECAST_COLOR.stroke_width(2)))?
            .label(series::REPLICAS_FORECAST)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], FORECAST_COLOR));
    }
    chart
        .draw_series(LineSeries::new(ours, POLICY_COLOR.stroke_width(2)))?
        .label(series::REPLICAS_POLICY)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], POLICY_COLOR));
    let marks = |action: Action| {
        carried(&report.policy.records, true)
            .filter(move |r| r.action == action)
            .map(move |r| (r.seconds / scale, r.to as f64))
    };
    chart
        .draw_series(marks(Action::ScaleUp).map(|p| TriangleMarker::new(p, 6, UP_COLOR.filled())))?
        .label(series::SCALE_UP)
        .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, UP_COLOR.filled()));
    chart
        .draw_series(marks(Action::ScaleDown).map(|p| Circle::new(p, 5, DOWN_COLOR.filled())))?
        .label(series::SCALE_DOWN)
        .legend(|(x, y)| Circle::new((x + 10, y), 5, DOWN_COLOR.filled()));
    // Forecast-driven scale-ups: of the forecast run when compared, else of the policy itself.
    let by_forecast: Vec<(f64, f64)> = carried(
        &report.forecast.as_ref().unwrap_or(&report.policy).records,
        true,
    )
    .filter(|r| r.forecast)
    .map(|r| (r.seconds / scale, r.to as f64))
    .collect();
    if !by_forecast.is_empty() {
        chart
            .draw_series(
                by_forecast
                    .into_iter()
                    .map(|p| TriangleMarker::new(p, 7, FORECAST_MARK_COLOR.stroke_width(2))),
            )?
            .label(series::FORECAST_UP)
            .legend(|(x, y)| {
                TriangleMarker::new((x + 10, y), 7, FORECAST_MARK_COLOR.stroke_width(2))
            });
    }
    let dropped: Vec<(f64, f64)> = report
        .policy
        .records
        .iter()
        .filter(|r| r.outcome == Outcome::Dropped)
        .map(|r| (r.seconds / scale, r.to as f64))
        .collect();
    if !dropped.is_empty() {
        chart
            .draw_series(dropped.into_iter().map(|p| Cross::new(p, 5, TARGET_COLOR)))?
            .label(series::DROPPED)
            .legend(|(x, y)| Cross::new((x + 10, y), 5, TARGET_COLOR));
    }
    legend_outside(&mut chart)?;
    Ok(())
}

fn claim_panel(
    report: &Report,
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    scale: f64,
    unit: &str,
) -> DrawResult {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    let start = report.initial_claim_size.unwrap_or(0) as f64;
    let size = steps(
        &report.policy,
        start,
        seconds_range(report),
        false,
        scale,
        GIB,
    );
    let used = segments(
        &report.policy.points,
        |p| Some(p.claim_used_percent? / 100.0 * p.claim_size? as f64),
        scale,
        GIB,
    );
    let top = size
        .iter()
        .chain(used.iter().flatten())
        .map(|p| p.1)
        .fold(1.0, f64::max);
    let (x0, end) = x_range(report, scale);
    let mut chart = ChartBuilder::on(area)
        .caption("ledger claim size and usage", ("sans-serif", 18))
        .margin(10)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..end.max(x0 + 1e-9), 0f64..top * 1.1)?;
    chart.configure_mesh().x_desc(unit).y_desc("GiB").draw()?;
    if let Some(threshold) = report.expand_at_used_percent {
        let line: Vec<(f64, f64)> = size
            .iter()
            .map(|(x, y)| (*x, y * threshold / 100.0))
            .collect();
        chart
            .draw_series(LineSeries::new(line, GREY))?
            .label(series::CLAIM_THRESHOLD)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREY));
    }
    chart
        .draw_series(LineSeries::new(size, POLICY_COLOR.stroke_width(2)))?
        .label(series::CLAIM_SIZE)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], POLICY_COLOR));
    let mut first = true;
    for seg in used {
        let drawn = chart.draw_series(LineSeries::new(seg, HPA_COLOR))?;
        if std::mem::take(&mut first) {
            drawn
                .label(series::CLAIM_USED)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], HPA_COLOR));
        }
    }
    chart
        .draw_series(carried(&report.policy.records, false).map(|r| {
            TriangleMarker::new((r.seconds / scale, r.to as f64 / GIB), 6, UP_COLOR.filled())
        }))?
        .label(series::EXPANSION)
        .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, UP_COLOR.filled()));
    legend_outside(&mut chart)?;
    Ok(())
}
