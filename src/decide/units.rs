//! Human-readable numbers for reasons: bytes, rates, durations.

use std::time::Duration;

use crate::api::MetricType;

/// Bytes in binary units with one decimal (`432013312` → `412.0 MiB`).
pub fn bytes(value: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = value;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A plain number with at most one decimal and thousands kept readable (`20000` → `20000`).
pub fn number(value: f64) -> String {
    if (value - value.round()).abs() < 0.05 {
        format!("{:.0}", value.round())
    } else {
        format!("{value:.1}")
    }
}

/// A metric value in its natural unit.
pub fn metric_value(kind: MetricType, value: f64) -> String {
    match kind {
        MetricType::Throughput => format!("{}/s", bytes(value)),
        MetricType::MessageRate => format!("{} msg/s", number(value)),
        MetricType::HeapMemory | MetricType::DirectMemory => format!("{}%", number(value)),
        MetricType::Custom => number(value),
    }
}

/// A duration rounded to seconds (`90s` → `1m 30s`).
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 && d.subsec_millis() > 0 {
        return format!("{}ms", d.subsec_millis());
    }
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_values() {
        assert_eq!(bytes(412.0 * 1024.0 * 1024.0), "412.0 MiB");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(number(20000.0), "20000");
        assert_eq!(number(68.66), "68.7");
        assert_eq!(duration(Duration::from_secs(90)), "1m 30s");
        assert_eq!(metric_value(MetricType::HeapMemory, 81.25), "81.2%");
    }
}
