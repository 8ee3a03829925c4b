//! The Prometheus query API's JSON (also spoken by VictoriaMetrics): vector, matrix, scalar.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::error::{MetricsError, error_type, json_problem, query_message, snippet};

/// One value at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The value; NaN and ±Inf are kept as such for the caller to reject.
    pub value: f64,
    /// Time of the value.
    pub at: Timestamp,
}

/// A series of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSeries {
    /// Labels of the series.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub point: Point,
}

/// A series of a range query.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// Labels of the series.
    pub labels: BTreeMap<String, String>,
    /// Its values, oldest first.
    pub points: Vec<Point>,
}

/// What a query returned.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    /// `resultType: vector`.
    Vector(Vec<InstantSeries>),
    /// `resultType: matrix`.
    Matrix(Vec<RangeSeries>),
    /// `resultType: scalar`.
    Scalar(Point),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// VictoriaMetrics: some storage nodes did not answer.
    #[serde(default)]
    is_partial: bool,
    /// Prometheus: the answer may be incomplete (e.g. a remote storage failed).
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Value,
}

#[derive(Deserialize)]
struct RawInstant {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// Parses an answer with its HTTP status; errors say what the server said, and where.
pub fn parse(url: &str, status: u16, body: &str) -> Result<QueryResult, MetricsError> {
    let envelope: Envelope = match serde_json::from_str(body) {
        Ok(e) => e,
        Err(e) => {
            if !(200..300).contains(&status) {
                return Err(MetricsError::Http {
                    url: url.to_string(),
                    status,
                    snippet: snippet(body),
                });
            }
            return Err(MetricsError::Decode {
                url: url.to_string(),
                detail: format!("not JSON: {}", json_problem(&e)),
                snippet: snippet(body),
            });
        }
    };
    if envelope.status != "success" {
        return Err(MetricsError::Query {
            url: url.to_string(),
            status,
            error_type: error_type(envelope.error_type.as_deref()),
            message: query_message(envelope.error.as_deref()),
        });
    }
    if !(200..300).contains(&status) {
        return Err(MetricsError::Http {
            url: url.to_string(),
            status,
            snippet: snippet(body),
        });
    }
    if envelope.is_partial || !envelope.warnings.is_empty() {
        let detail = if envelope.is_partial {
            "isPartial: true".to_string()
        } else {
            format!(
                "warnings: {}",
                query_message(Some(&envelope.warnings.join("; ")))
            )
        };
        return Err(MetricsError::Partial {
            url: url.to_string(),
            detail,
        });
    }
    let decode = |detail: String| MetricsError::Decode {
        url: url.to_string(),
        detail,
        snippet: snippet(body),
    };
    let data = envelope
        .data
        .ok_or_else(|| decode("status success without data".into()))?;
    match data.result_type.as_str() {
        "vector" => {
            let raw: Vec<RawInstant> = serde_json::from_value(data.result)
                .map_err(|e| decode(format!("vector result: {}", json_problem(&e))))?;
            raw.into_iter()
                .map(|r| {
                    Ok(InstantSeries {
                        labels: r.metric,
                        point: point(r.value).map_err(&decode)?,
                    })
                })
                .collect::<Result<_, _>>()
                .map(QueryResult::Vector)
        }
        "matrix" => {
            let raw: Vec<RawRange> = serde_json::from_value(data.result)
                .map_err(|e| decode(format!("matrix result: {}", json_problem(&e))))?;
            raw.into_iter()
                .map(|r| {
                    let points = r
                        .values
                        .into_iter()
                        .map(point)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(&decode)?;
                    Ok(RangeSeries {
                        labels: r.metric,
                        points,
                    })
                })
                .collect::<Result<_, _>>()
                .map(QueryResult::Matrix)
        }
        "scalar" => {
            let raw: (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| decode(format!("scalar result: {}", json_problem(&e))))?;
            Ok(QueryResult::Scalar(point(raw).map_err(&decode)?))
        }
        "string" => Err(decode(
            "result type \"string\"; a numeric query is needed".into(),
        )),
        _ => Err(decode(
            "an unknown result type; a numeric query is needed".into(),
        )),
    }
}

/// `[<unix seconds>, "<value>"]` → a point; Prometheus spells specials `NaN`, `+Inf`, `-Inf`.
fn point((secs, text): (f64, String)) -> Result<Point, String> {
    // The value is the server's text: say what is wrong without repeating it.
    let value = parse_value(&text).ok_or_else(|| "a sample value is not a number".to_string())?;
    let at = timestamp(secs).ok_or_else(|| format!("time {secs} is out of range"))?;
    Ok(Point { value, at })
}

/// Parses a sample value as Prometheus writes it.
pub fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

/// Unix seconds with a fraction → timestamp (millisecond precision, as the servers keep).
pub fn timestamp(secs: f64) -> Option<Timestamp> {
    if !secs.is_finite() {
        return None;
    }
    Timestamp::from_millisecond((secs * 1000.0).round() as i64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://prom:9090/api/v1/query";

    #[test]
    fn parses_vector_with_specials() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1700000000.5,"1.25"]},
            {"metric":{"pod":"b"},"value":[1700000000,"NaN"]},
            {"metric":{"pod":"c"},"value":[1700000000,"+Inf"]}]}}"#;
        let QueryResult::Vector(v) = parse(URL, 200, body).unwrap() else {
            panic!("not a vector")
        };
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].point.value, 1.25);
        assert_eq!(v[0].point.at.as_millisecond(), 1_700_000_000_500);
        assert!(v[1].point.value.is_nan());
        assert!(v[2].point.value.is_infinite());
    }

    #[test]
    fn parses_scalar_and_matrix() {
        let s = r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
        assert!(matches!(parse(URL, 200, s).unwrap(), QueryResult::Scalar(p) if p.value == 3.0));
        let m = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[1700000000,"1"],[1700000015,"2"]]}]}}"#;
        let QueryResult::Matrix(m) = parse(URL, 200, m).unwrap() else {
            panic!("not a matrix")
        };
        assert_eq!(m[0].points.len(), 2);
    }

    #[test]
    fn partial_answers_are_not_used() {
        let vm = r#"{"status":"success","isPartial":true,"data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1700000000,"1"]}]}}"#;
        let e = parse(URL, 200, vm).unwrap_err();
        assert_eq!(e.label(), "partial");
        assert!(e.to_string().contains("isPartial"), "{e}");
        let prom = r#"{"status":"success","warnings":["remote read: store b down"],
            "data":{"resultType":"vector","result":[]}}"#;
        let e = parse(URL, 200, prom).unwrap_err();
        assert!(e.to_string().contains("store b down"), "{e}");
        let whole = r#"{"status":"success","isPartial":false,"warnings":[],
            "data":{"resultType":"vector","result":[]}}"#;
        assert!(parse(URL, 200, whole).is_ok());
    }

    #[test]
    fn maps_errors() {
        let prom = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        let e = parse(URL, 400, prom).unwrap_err();
        assert_eq!(e.label(), "query");
        assert!(e.to_string().contains("bad_data"), "{e}");
        let vm = r#"{"status":"error","errorType":"422","error":"cannot parse query"}"#;
        assert!(matches!(
            parse(URL, 422, vm),
            Err(MetricsError::Query { status: 422, .. })
        ));
        assert!(matches!(
            parse(URL, 502, "<html>bad gateway</html>"),
            Err(MetricsError::Http { status: 502, .. })
        ));
        let e = parse(URL, 200, "<html>login</html>").unwrap_err();
        assert_eq!(e.label(), "decode");
        // The body is described, never repeated into status or Events.
        assert!(!e.to_string().contains("login"), "{e}");
        assert!(e.to_string().contains("18 bytes of HTML or XML"), "{e}");
        let odd = r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        assert_eq!(parse(URL, 200, odd).unwrap_err().label(), "decode");
        let bad = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#;
        assert_eq!(parse(URL, 200, bad).unwrap_err().label(), "decode");
    }
}
