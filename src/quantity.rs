//! Kubernetes quantities (`50Mi`, `1.5G`, `20000`, `100m`, `1e3`) as numbers, and back.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A string that is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{input:?} is not a quantity (expected a number with an optional suffix such as Ki, Mi, Gi, Ti, k, M, G, m or e3)"
)]
pub struct QuantityError {
    /// The text that failed to parse.
    pub input: String,
}

/// Parses a quantity into its numeric value (`"50Mi"` → 52428800.0).
pub fn parse(text: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError {
        input: text.to_string(),
    };
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty()
        || digits == "."
        || digits.contains(['+', '-'])
        || number.len() - digits.len() > 1
    {
        return Err(err());
    }
    let value: f64 = number.parse().map_err(|_| err())?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exp if exp.starts_with(['e', 'E']) => {
            let power: i32 = exp[1..].parse().map_err(|_| err())?;
            10f64.powi(power)
        }
        _ => return Err(err()),
    };
    let result = value * multiplier;
    if result.is_finite() {
        Ok(result)
    } else {
        Err(err())
    }
}

/// Parses a quantity of bytes, rounding fractions up (`"1.5Ki"` → 1536).
pub fn parse_bytes(text: &str) -> Result<u64, QuantityError> {
    let value = parse(text)?;
    if value < 0.0 || value > u64::MAX as f64 {
        return Err(QuantityError {
            input: text.to_string(),
        });
    }
    Ok(value.ceil() as u64)
}

/// Numeric value of a `Quantity`.
pub fn value(q: &Quantity) -> Result<f64, QuantityError> {
    parse(&q.0)
}

/// Formats bytes as the shortest exact binary quantity (`10737418240` → `"10Gi"`).
pub fn format_bytes(bytes: u64) -> Quantity {
    const SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut value = bytes;
    let mut suffix = "";
    for s in SUFFIXES {
        if value == 0 || !value.is_multiple_of(1024) {
            break;
        }
        value /= 1024;
        suffix = s;
    }
    Quantity(format!("{value}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_suffix_kind() {
        assert_eq!(parse("50Mi").unwrap(), 52_428_800.0);
        assert_eq!(parse("20000").unwrap(), 20_000.0);
        assert_eq!(parse("1.5G").unwrap(), 1.5e9);
        assert_eq!(parse("100m").unwrap(), 0.1);
        assert_eq!(parse("1e3").unwrap(), 1000.0);
        assert_eq!(parse("2Ti").unwrap(), 2.0 * 1024f64.powi(4));
        assert_eq!(parse("-1k").unwrap(), -1000.0);
        assert_eq!(parse(".5Ki").unwrap(), 512.0);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "Mi", "50MiB", "1..2", "abc", "1e", "--1", "1+2", "5 Gi", "1e999",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn bytes_round_trip() {
        assert_eq!(format_bytes(10 * 1024 * 1024 * 1024).0, "10Gi");
        assert_eq!(format_bytes(1536).0, "1536");
        assert_eq!(format_bytes(0).0, "0");
        assert_eq!(parse_bytes("1.5Ki").unwrap(), 1536);
        assert!(parse_bytes("-1Gi").is_err());
        for b in [1u64, 1023, 1024, 5 << 30, 3 << 40] {
            assert_eq!(parse_bytes(&format_bytes(b).0).unwrap(), b);
        }
    }
}
