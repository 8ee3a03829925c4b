//! `backtest` as a reader meets it: `chart.svg` names the policy and the trace, keeps its legends
//! beside the data instead of over it, labels the replica axis with whole numbers and shades the
//! stretches without data; and `backtest ... | head` ends quietly instead of panicking.

use std::path::Path;
use std::process::{Command, Stdio};

fn backtest(out: &Path, trace: &str, policy: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .args([
            "backtest",
            "--policy",
            policy,
            "--trace",
            trace,
            "--compare",
            "hpa",
        ])
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .expect("running backtest");
    assert!(status.success());
}

/// `(x, y, text)` of every `<text>` element.
fn texts(svg: &str) -> Vec<(f64, f64, String)> {
    let doc = roxmltree::Document::parse(svg).expect("chart.svg is XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| {
            let num = |a: &str| n.attribute(a).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (
                num("x"),
                num("y"),
                n.text().unwrap_or("").trim().to_string(),
            )
        })
        .collect()
}

/// Every x coordinate of the data lines (polylines with more than two points).
fn data_xs(svg: &str) -> Vec<f64> {
    let doc = roxmltree::Document::parse(svg).expect("chart.svg is XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter_map(|n| n.attribute("points"))
        .map(|p| {
            p.split_whitespace()
                .filter_map(|xy| xy.split(',').next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|xs| xs.len() > 2)
        .flatten()
        .collect()
}

#[test]
fn the_chart_reads_at_a_glance() {
    let dir = tempfile::tempdir().unwrap();
    backtest(
        dir.path(),
        "examples/traces/outage.csv",
        "deploy/examples/backtest-outage.yaml",
    );
    let svg = std::fs::read_to_string(dir.path().join("chart.svg")).unwrap();
    let texts = texts(&svg);

    // The title says which policy ran on which trace.
    let title = texts
        .iter()
        .find(|t| t.2.starts_with("backtest of policy"))
        .unwrap_or_else(|| panic!("no title: {texts:?}"));
    assert!(
        title.2.contains("outage") && title.2.contains("examples/traces/outage.csv"),
        "{}",
        title.2
    );

    // Legends sit right of every data point.
    let right_of_data = data_xs(&svg).into_iter().fold(0.0, f64::max);
    for label in ["replicas (policy)", "replicas (HPA)", "target per broker"] {
        let t = texts
            .iter()
            .find(|t| t.2 == label)
            .unwrap_or_else(|| panic!("no legend entry {label}"));
        assert!(
            t.0 > right_of_data,
            "legend {label} at x={} overlaps data reaching x={right_of_data}",
            t.0
        );
    }

    // The replica panel's axis labels (left of its plotting area) are whole numbers.
    let panel_top = texts
        .iter()
        .find(|t| t.2 == "broker replicas and decisions")
        .map(|t| t.1)
        .unwrap();
    let axis: Vec<&String> = texts
        .iter()
        .filter(|t| t.1 > panel_top && t.1 < panel_top + 300.0 && t.0 < 80.0)
        .map(|t| &t.2)
        .filter(|t| t.parse::<f64>().is_ok())
        .collect();
    assert!(axis.len() >= 3, "{axis:?}");
    assert!(axis.iter().all(|t| !t.contains('.')), "{axis:?}");

    // The 20-minute outage is shaded and named in the legend.
    assert!(texts.iter().any(|t| t.2 == "no data (outage)"), "{texts:?}");
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let shaded = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("opacity") == Some("0.25"))
        .filter(|n| {
            n.attribute("width")
                .and_then(|w| w.parse::<f64>().ok())
                .is_some_and(|w| w > 0.0)
        })
        .count();
    assert!(shaded >= 2, "one shaded stretch per broker panel: {shaded}");
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // The reading end is closed before anything is written, like `| head` that has had enough.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .args([
            "backtest",
            "--policy",
            "deploy/examples/backtest-diurnal.yaml",
            "--trace",
            "examples/traces/diurnal.csv",
        ])
        .arg("--out")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running backtest");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("waiting for backtest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(dir.path().join("chart.svg").exists());
}
