//! Recorded load traces: the CSV format `backtest` replays, parsed strictly and written back.
//!
//! A header names the columns (any order, `seconds` required). Rows give the load from their
//! time until the next row; an empty cell is a missing sample (a metrics outage), not a zero.

use std::fmt;
use std::io;

/// Longest trace accepted: a year, so that times stay exact in milliseconds and timestamps.
pub const MAX_SECONDS: f64 = 366.0 * 24.0 * 3600.0;

/// Prefix of columns that hold the value of a policy's `Custom` metric, e.g. `custom:backlog`.
pub const CUSTOM_PREFIX: &str = "custom:";

/// One value column of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Column {
    /// Bytes per second in + out, summed over brokers.
    Throughput,
    /// Messages per second in + out, summed over brokers.
    MessageRate,
    /// JVM heap used / max in percent, averaged over the brokers of the `brokers` column.
    Heap,
    /// JVM direct memory used / max in percent, averaged like `heap_percent`.
    Direct,
    /// Bytes used on the fullest ledger claim.
    LedgerUsed,
    /// Capacity of that claim when recorded; the replay starts from its first value.
    LedgerCapacity,
    /// Brokers running when the row was recorded.
    Brokers,
    /// Cluster total of a `Custom` metric, by the metric's name.
    Custom(String),
}

impl Column {
    /// Column name as written in the header.
    pub fn name(&self) -> String {
        match self {
            Column::Throughput => "throughput_bytes".into(),
            Column::MessageRate => "message_rate".into(),
            Column::Heap => "heap_percent".into(),
            Column::Direct => "direct_percent".into(),
            Column::LedgerUsed => "ledger_used_bytes".into(),
            Column::LedgerCapacity => "ledger_capacity_bytes".into(),
            Column::Brokers => "brokers".into(),
            Column::Custom(n) => format!("{CUSTOM_PREFIX}{n}"),
        }
    }

    /// Reads a header name; `None` for a name the format does not define.
    pub fn from_name(name: &str) -> Option<Column> {
        Some(match name {
            "throughput_bytes" => Column::Throughput,
            "message_rate" => Column::MessageRate,
            "heap_percent" => Column::Heap,
            "direct_percent" => Column::Direct,
            "ledger_used_bytes" => Column::LedgerUsed,
            "ledger_capacity_bytes" => Column::LedgerCapacity,
            "brokers" => Column::Brokers,
            other => {
                let custom = other.strip_prefix(CUSTOM_PREFIX)?;
                if custom.is_empty() {
                    return None;
                }
                Column::Custom(custom.to_string())
            }
        })
    }

    /// Whether values are percentages, which may not exceed 100.
    fn is_percent(&self) -> bool {
        matches!(self, Column::Heap | Column::Direct)
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// One row: a time and one optional value per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Seconds from the start of the trace.
    pub seconds: f64,
    /// Values in the order of [`Trace::columns`]; `None` is a missing sample.
    pub values: Vec<Option<f64>>,
}

impl Row {
    /// The value of column `i`, `None` when missing (or when the row is shorter).
    pub fn value(&self, i: usize) -> Option<f64> {
        self.values.get(i).copied().flatten()
    }

    /// Time from the start in whole milliseconds.
    pub fn millis(&self) -> i64 {
        (self.seconds * 1000.0).round() as i64
    }
}

/// A parsed trace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    /// Value columns, in header order (without `seconds`).
    pub columns: Vec<Column>,
    /// Rows, strictly increasing in time.
    pub rows: Vec<Row>,
}

/// Why a trace was rejected. Lines are 1-based and count the header as line 1.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read the trace: {0}")]
    Io(#[from] io::Error),
    /// The CSV structure is broken (unbalanced quotes, wrong field count).
    #[error("line {line}: {message}")]
    Csv {
        /// Line of the problem.
        line: u64,
        /// What the CSV reader found.
        message: String,
    },
    /// No header line.
    #[error("the trace is empty: it needs a header line such as `seconds,throughput_bytes,...`")]
    Empty,
    /// A header names a column the format does not define.
    #[error(
        "line 1: unknown column {name:?}; known columns: seconds, throughput_bytes, message_rate, heap_percent, direct_percent, ledger_used_bytes, ledger_capacity_bytes, brokers, custom:<metric name>"
    )]
    UnknownColumn {
        /// The unknown name.
        name: String,
    },
    /// A header names a column twice.
    #[error("line 1: column {name:?} appears twice")]
    DuplicateColumn {
        /// The repeated name.
        name: String,
    },
    /// The header lacks `seconds`.
    #[error("line 1: the header needs a `seconds` column (time from the start of the trace)")]
    NoSeconds,
    /// A cell is not a usable number.
    #[error("line {line}, column {column}: {message}")]
    BadValue {
        /// Line of the cell.
        line: u64,
        /// Column name.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// Time does not increase.
    #[error("line {line}: seconds {seconds} is not after the previous row's {previous}")]
    NotMonotonic {
        /// Line of the row.
        line: u64,
        /// Its time.
        seconds: f64,
        /// The previous row's time.
        previous: f64,
    },
    /// Header but no data.
    #[error("the trace has a header but no rows")]
    NoRows,
}

impl Trace {
    /// Parses a trace from CSV text.
    pub fn parse<R: io::Read>(input: R) -> Result<Trace, TraceError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(input);
        let mut records = reader.records();
        let header = match records.next() {
            None => return Err(TraceError::Empty),
            Some(r) => r.map_err(csv_error)?,
        };
        let line_of = |r: &csv::StringRecord| r.position().map_or(0, |p| p.line());
        let mut seconds_at = None;
        let mut columns = Vec::new();
        let mut positions = Vec::new();
        for (i, name) in header.iter().enumerate() {
            if name == "seconds" {
                if seconds_at.is_some() {
                    return Err(TraceError::DuplicateColumn { name: name.into() });
                }
                seconds_at = Some(i);
                continue;
            }
            let column = Column::from_name(name).ok_or_else(|| TraceError::UnknownColumn {
                name: name.to_string(),
            })?;
            if columns.contains(&column) {
                return Err(TraceError::DuplicateColumn { name: name.into() });
            }
            columns.push(column);
            positions.push(i);
        }
        let seconds_at = seconds_at.ok_or(TraceError::NoSeconds)?;

        let mut rows: Vec<Row> = Vec::new();
        for record in records {
            let record = record.map_err(csv_error)?;
            let line = line_of(&record);
            let seconds = parse_seconds(record.get(seconds_at).unwrap_or(""), line)?;
            if let Some(prev) = rows.last()
                && seconds <= prev.seconds
            {
                return Err(TraceError::NotMonotonic {
                    line,
                    seconds,
                    previous: prev.seconds,
                });
            }
            let mut values = Vec::with_capacity(columns.len());
            for (column, &pos) in columns.iter().zip(&positions) {
                values.push(parse_value(column, record.get(pos).unwrap_or(""), line)?);
            }
            rows.push(Row { seconds, values });
        }
        if rows.is_empty() {
            return Err(TraceError::NoRows);
        }
        Ok(Trace { columns, rows })
    }

    /// Reads and parses a trace file.
    pub fn read(path: &std::path::Path) -> Result<Trace, TraceError> {
        Trace::parse(std::fs::File::open(path)?)
    }

    /// Writes the trace as CSV in the format [`Trace::parse`] reads.
    pub fn write<W: io::Write>(&self, out: W) -> Result<(), TraceError> {
        let mut w = csv::Writer::from_writer(out);
        let mut header = vec!["seconds".to_string()];
        header.extend(self.columns.iter().map(Column::name));
        w.write_record(&header).map_err(csv_error)?;
        for row in &self.rows {
            let mut record = vec![format_number(row.seconds)];
            record.extend(
                row.values
                    .iter()
                    .map(|v| v.map(format_number).unwrap_or_default()),
            );
            w.write_record(&record).map_err(csv_error)?;
        }
        w.flush()?;
        Ok(())
    }

    /// Position of a column among the value columns.
    pub fn index(&self, column: &Column) -> Option<usize> {
        self.columns.iter().position(|c| c == column)
    }

    /// First non-missing value of a column.
    pub fn first_value(&self, column: &Column) -> Option<f64> {
        let i = self.index(column)?;
        self.rows.iter().find_map(|r| r.value(i))
    }

    /// Time covered, from the first to the last row, in seconds.
    pub fn duration_seconds(&self) -> f64 {
        match (self.rows.first(), self.rows.last()) {
            (Some(a), Some(b)) => b.seconds - a.seconds,
            _ => 0.0,
        }
    }

    /// The most common gap between rows, in seconds (0 for a single row).
    pub fn step_seconds(&self) -> f64 {
        let mut gaps: Vec<i64> = self
            .rows
            .windows(2)
            .map(|w| w[1].millis() - w[0].millis())
            .collect();
        gaps.sort_unstable();
        let mut best = (0i64, 0usize);
        let mut i = 0;
        while i < gaps.len() {
            let j = gaps[i..].iter().take_while(|g| **g == gaps[i]).count();
            if j > best.1 {
                best = (gaps[i], j);
            }
            i += j;
        }
        best.0 as f64 / 1000.0
    }
}

/// Shortest text that reads back as the same number, without exponent for readability.
pub fn format_number(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn csv_error(e: csv::Error) -> TraceError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(io) => TraceError::Io(io),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => TraceError::Csv {
            line,
            message: format!("{len} fields, but the header has {expected_len}"),
        },
        csv::ErrorKind::Utf8 { err, .. } => TraceError::Csv {
            line,
            message: format!("not UTF-8: {err}"),
        },
        other => TraceError::Csv {
            line,
            message: format!("{other:?}"),
        },
    }
}

fn parse_seconds(text: &str, line: u64) -> Result<f64, TraceError> {
    let bad = |message: String| TraceError::BadValue {
        line,
        column: "seconds".into(),
        message,
    };
    if text.is_empty() {
        return Err(bad("seconds is required on every row".into()));
    }
    let v: f64 = text
        .parse()
        .map_err(|_| bad(format!("{text:?} is not a number")))?;
    if !v.is_finite() || !(0.0..=MAX_SECONDS).contains(&v) {
        return Err(bad(format!(
            "{text} is outside 0..={MAX_SECONDS} (a trace covers at most a year)"
        )));
    }
    Ok(v)
}

fn parse_value(column: &Column, text: &str, line: u64) -> Result<Option<f64>, TraceError> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = |message: String| TraceError::BadValue {
        line,
        column: column.name(),
        message,
    };
    let v: f64 = text.parse().map_err(|_| {
        bad(format!(
            "{text:?} is not a number (leave the cell empty for a missing sample)"
        ))
    })?;
    if !v.is_finite() {
        return Err(bad(format!(
            "{text} is not finite (leave the cell empty for a missing sample)"
        )));
    }
    if v < 0.0 {
        return Err(bad(format!("{text} is negative")));
    }
    if column.is_percent() && v > 100.0 {
        return Err(bad(format!("{text} is above 100 percent")));
    }
    if *column == Column::Brokers && (v < 1.0 || v.fract() != 0.0) {
        return Err(bad(format!("{text} is not a whole number of brokers ≥ 1")));
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Trace, TraceError> {
        Trace::parse(text.as_bytes())
    }

    #[test]
    fn reads_columns_in_any_order_and_missing_cells() {
        let t = parse(
            "heap_percent,seconds,throughput_bytes\n\
             50,0,100\n\
             ,15,200\n\
             60.5,30,\n",
        )
        .unwrap();
        assert_eq!(t.columns, vec![Column::Heap, Column::Throughput]);
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[1].values, vec![None, Some(200.0)]);
        assert_eq!(t.rows[2].values, vec![Some(60.5), None]);
        assert_eq!(t.step_seconds(), 15.0);
        assert_eq!(t.first_value(&Column::Heap), Some(50.0));
    }

    #[test]
    fn rejects_with_line_numbers() {
        let cases = [
            ("seconds,bogus\n0,1\n", "line 1: unknown column \"bogus\""),
            (
                "throughput_bytes\n1\n",
                "line 1: the header needs a `seconds`",
            ),
            (
                "seconds,heap_percent\n0,50\n15,abc\n",
                "line 3, column heap_percent",
            ),
            ("seconds,heap_percent\n0,50\n15,120\n", "above 100"),
            (
                "seconds,message_rate\n0,1\n15,-3\n",
                "line 3, column message_rate: -3 is negative",
            ),
            (
                "seconds,message_rate\n0,1\n30,1\n15,1\n",
                "line 4: seconds 15 is not after",
            ),
            (
                "seconds,message_rate\n0,1\n0,1\n",
                "line 3: seconds 0 is not after",
            ),
            ("seconds,message_rate\n0,1\n15,1,2\n", "line 3: 3 fields"),
            ("seconds,message_rate\n0,1\n,1\n", "line 3, column seconds"),
            (
                "seconds,message_rate\n0,NaN\n",
                "line 2, column message_rate",
            ),
            ("seconds,message_rate\n0,inf\n", "not finite"),
            ("seconds,brokers\n0,2.5\n", "whole number"),
            ("seconds,message_rate,message_rate\n", "appears twice"),
            ("seconds,message_rate\n", "no rows"),
            ("", "empty"),
            ("seconds,custom:\n0,1\n", "unknown column"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.contains(want),
                "{text:?}: {err:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn comment_lines_keep_line_numbers_true() {
        let err = parse("# a comment\nseconds,message_rate\n0,1\nx,1\n")
            .expect_err("bad seconds")
            .to_string();
        assert!(err.starts_with("line 4"), "{err}");
    }

    #[test]
    fn round_trips() {
        let text = "seconds,throughput_bytes,custom:backlog\n0,1048576,\n15,1.5,7\n";
        let t = parse(text).unwrap();
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }
}
