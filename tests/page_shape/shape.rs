//! The shape of a Prometheus text page: each metric family's type and label names, read with
//! `prometheus-parse`, and the differences between two pages' shapes, worded for a failing test.

use std::collections::{BTreeMap, BTreeSet};

use prometheus_parse::{LineInfo, Scrape, Value};

/// The family name of every bookie ledger-directory usage gauge, whose real name carries the
/// directory's path (`bookie_ledger_dir__pulsar_data_bookkeeper_ledgers_usage`).
pub const LEDGER_DIR_USAGE: &str = "bookie_ledger_dir_<path>_usage";

/// One sample of a page.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name as on the page.
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`, from the page's `# TYPE` lines.
    pub kind: String,
    /// The `# TYPE` line that covers it (`process_cpu_seconds counter` for
    /// `process_cpu_seconds_total`), if any.
    pub declared: Option<String>,
    /// Labels (without `le`/`quantile` for histograms and summaries).
    pub labels: BTreeMap<String, String>,
    /// Value (NaN for histograms and summaries).
    pub value: f64,
}

/// A sample line with empty braces (`name{} 1`, as BookKeeper writes unlabelled series)
/// without them: the same series, in the form `prometheus-parse` reads.
fn without_empty_braces(line: &str) -> String {
    match line.find('{') {
        Some(i) if !line.starts_with('#') && line[i..].starts_with("{}") => {
            format!("{}{}", &line[..i], &line[i + 2..])
        }
        _ => line.to_string(),
    }
}

/// `# TYPE` declarations of a page: declared name → type.
fn declarations(page: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in page.lines() {
        if let LineInfo::Type {
            metric_name,
            metric_alias,
            sample_type,
        } = LineInfo::parse(line)
        {
            let kind = format!("{sample_type:?}").to_lowercase();
            out.insert(metric_alias.unwrap_or(metric_name), kind);
        }
    }
    out
}

/// The declaration covering sample `name`: its own, or its family's for the suffixes a
/// counter, histogram or summary adds.
fn declaration<'a>(types: &'a BTreeMap<String, String>, name: &str) -> Option<(&'a str, &'a str)> {
    let own = types.get_key_value(name);
    let stem = || {
        ["_total", "_count", "_sum", "_bucket", "_created"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find_map(|stem| types.get_key_value(stem))
    };
    own.or_else(stem).map(|(n, k)| (n.as_str(), k.as_str()))
}

/// Every sample of `page`.
pub fn samples(page: &str) -> Vec<Sample> {
    let types = declarations(page);
    let lines = page
        .lines()
        .map(|l| Ok::<_, std::io::Error>(without_empty_braces(l)));
    let scrape = Scrape::parse(lines).unwrap_or_else(|e| panic!("unreadable page: {e}"));
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let declared = declaration(&types, &s.metric);
            let (kind, value) = match s.value {
                Value::Counter(v) => ("counter", v),
                Value::Gauge(v) => ("gauge", v),
                // `prometheus-parse` only types samples named exactly as declared.
                Value::Untyped(v) => (declared.map_or("untyped", |(_, k)| k), v),
                Value::Histogram(_) => ("histogram", f64::NAN),
                Value::Summary(_) => ("summary", f64::NAN),
            };
            Sample {
                kind: kind.to_string(),
                declared: declared.map(|(n, k)| format!("{n} {k}")),
                name: s.metric,
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                value,
            }
        })
        .collect()
}

/// The family a metric name belongs to: itself, except names that embed a directory path.
pub fn family(name: &str) -> String {
    let (prefix, suffix) = ("bookie_ledger_dir_", "_usage");
    if name.len() > prefix.len() + suffix.len()
        && name.starts_with(prefix)
        && name.ends_with(suffix)
    {
        LEDGER_DIR_USAGE.to_string()
    } else {
        name.to_string()
    }
}

/// What a page says about one family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Family {
    /// Types of its samples (one, on a well-formed page).
    pub kinds: BTreeSet<String>,
    /// `# TYPE` lines covering its samples, as `name type` (path-named families: the type).
    pub declared: BTreeSet<String>,
    /// The distinct sets of label names its samples carry.
    pub label_sets: BTreeSet<BTreeSet<String>>,
}

/// Families of a page by (normalised) name.
pub type Shape = BTreeMap<String, Family>;

/// The shape of `page`.
pub fn shape(page: &str) -> Shape {
    let mut out = Shape::new();
    for s in samples(page) {
        let name = family(&s.name);
        let f = out.entry(name.clone()).or_default();
        f.kinds.insert(s.kind.clone());
        let declared = match s.declared {
            // The declared name carries the path too; only the type is comparable.
            Some(_) if name != s.name => Some(format!("{name} {}", s.kind)),
            Some(d) => Some(d),
            None => None,
        };
        f.declared
            .insert(declared.unwrap_or_else(|| "no # TYPE line".to_string()));
        f.label_sets.insert(s.labels.into_keys().collect());
    }
    out
}

fn names(set: &BTreeSet<String>) -> String {
    format!("{{{}}}", set.iter().cloned().collect::<Vec<_>>().join(", "))
}

fn sets(sets: &BTreeSet<BTreeSet<String>>) -> String {
    sets.iter().map(names).collect::<Vec<_>>().join(" or ")
}

fn kinds(k: &BTreeSet<String>) -> String {
    k.iter().cloned().collect::<Vec<_>>().join("+")
}

fn declared(d: &BTreeSet<String>) -> String {
    d.iter()
        .map(|l| format!("`# TYPE {l}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How `ours` (the page under test) differs from `reference` for every family `ours` serves:
/// a family the reference lacks, another type, or a set of label names the reference never
/// uses for it. `what` names the pages in the messages.
pub fn not_in_reference(what: &str, ours: &Shape, reference: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    for (name, f) in ours {
        let Some(r) = reference.get(name) else {
            out.push(format!("{what}: `{name}` is not on the reference page"));
            continue;
        };
        if f.kinds != r.kinds {
            out.push(format!(
                "{what}: `{name}` is {} here but {} on the reference page",
                kinds(&f.kinds),
                kinds(&r.kinds)
            ));
        }
        if f.declared != r.declared {
            out.push(format!(
                "{what}: `{name}` is declared {} here but {} on the reference page",
                declared(&f.declared),
                declared(&r.declared)
            ));
        }
        for labels in f.label_sets.difference(&r.label_sets) {
            out.push(format!(
                "{what}: `{name}` has labels {} here; the reference page has {}",
                names(labels),
                sets(&r.label_sets)
            ));
        }
    }
    out
}

/// How two pages differ on the families `wanted`: missing on either side, another type, or
/// other sets of label names.
pub fn same_families(what: &str, wanted: &BTreeSet<String>, a: &Shape, b: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    for name in wanted {
        match (a.get(name), b.get(name)) {
            (None, None) => out.push(format!("{what}: `{name}` is on neither page")),
            (Some(_), None) => out.push(format!("{what}: `{name}` is gone from the live page")),
            (None, Some(_)) => out.push(format!("{what}: `{name}` is new on the live page")),
            (Some(x), Some(y)) => {
                if x.kinds != y.kinds {
                    out.push(format!(
                        "{what}: `{name}` was {} and is {} now",
                        kinds(&x.kinds),
                        kinds(&y.kinds)
                    ));
                }
                if x.declared != y.declared {
                    out.push(format!(
                        "{what}: `{name}` was declared {} and is declared {} now",
                        declared(&x.declared),
                        declared(&y.declared)
                    ));
                }
                if x.label_sets != y.label_sets {
                    out.push(format!(
                        "{what}: `{name}` had labels {} and has {} now",
                        sets(&x.label_sets),
                        sets(&y.label_sets)
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn shapes_and_differences() {
    let a = shape(
        "# TYPE m gauge\nm{cluster=\"x\",area=\"heap\"} 1\n# TYPE c counter\nc_total 2\n\
         # TYPE bookie_ledger_dir__a_b_usage gauge\nbookie_ledger_dir__a_b_usage 3\n",
    );
    let b = shape(
        "# TYPE m gauge\nm{cluster=\"y\"} 1\n# TYPE c_total counter\nc_total 2\n\
         # TYPE bookie_ledger_dir__c_usage gauge\nbookie_ledger_dir__c_usage 4\n",
    );
    // Path-named families compare as one; values and label values never matter.
    assert!(a.contains_key(LEDGER_DIR_USAGE) && b.contains_key(LEDGER_DIR_USAGE));
    let d = not_in_reference("broker", &a, &b);
    assert_eq!(d.len(), 2, "{d:#?}");
    // A counter's `_total` sample is typed by its family's declaration, whichever name it has.
    assert_eq!(a["c_total"].kinds, b["c_total"].kinds);
    assert_eq!(
        d[0],
        "broker: `c_total` is declared `# TYPE c counter` here but `# TYPE c_total counter` on \
         the reference page"
    );
    assert_eq!(
        d[1],
        "broker: `m` has labels {area, cluster} here; the reference page has {cluster}"
    );
    // Empty braces are an unlabelled series, not a line to drop.
    let braces = samples("# TYPE x gauge\nx{} 7\n");
    assert_eq!((braces.len(), braces[0].value), (1, 7.0));
    assert!(braces[0].labels.is_empty());
    let retyped = shape("# TYPE m counter\nm{cluster=\"y\"} 1\n");
    assert!(not_in_reference("broker", &retyped, &b)[0].contains("is counter here but gauge"));
    let extra = shape("# TYPE n gauge\nn 1\n");
    assert_eq!(
        not_in_reference("bookie", &extra, &b),
        ["bookie: `n` is not on the reference page"]
    );
    assert!(not_in_reference("x", &b, &b).is_empty());
    let wanted: BTreeSet<String> = ["m".to_string(), "gone".to_string()].into();
    let d = same_families("broker", &wanted, &a, &b);
    assert_eq!(d.len(), 2, "{d:#?}");
}
