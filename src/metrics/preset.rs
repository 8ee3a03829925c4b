//! Pulsar presets: which numbers each metric kind reads, as grouped PromQL and as the same
//! arithmetic over a scraped page (Direct mode).
//!
//! Every grouped query returns one value per pod (or claim) plus that series' real sample
//! time, tagged by the [`FIELD`] label, so one query serves every policy and staleness is
//! judged on the time the value was measured, not the time it was queried.

use crate::api::MetricType;

/// Label that tells a grouped query's value series from its timestamp series.
pub const FIELD: &str = "autoscaler_field";

/// A metric kind the sources know how to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Preset {
    /// Broker bytes/s in + out.
    Throughput,
    /// Broker messages/s in + out.
    MessageRate,
    /// Broker JVM heap used / max, percent.
    HeapMemory,
    /// Broker JVM direct memory used / max, percent.
    DirectMemory,
    /// Bookie ledger directory usage, percent (fullest directory).
    LedgerUsage,
    /// PersistentVolumeClaim used bytes / capacity, percent.
    ClaimUsage,
}

/// Which pods (or claims) a preset reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Broker pods (`:8080/metrics/`).
    Broker,
    /// Bookie pods (`:8000/metrics`).
    Bookie,
    /// PersistentVolumeClaims (kubelet volume stats).
    Claim,
}

impl Role {
    /// The port a pod of this role serves its metrics on unless annotated otherwise: a
    /// broker's web port (8080), a bookie's Prometheus stats port (8000).
    pub fn default_port(self) -> u16 {
        match self {
            Role::Broker => 8080,
            Role::Bookie | Role::Claim => 8000,
        }
    }
}

/// How per-pod values become one value for a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Cluster total.
    Sum,
    /// Average over pods.
    Mean,
    /// Kept per pod or claim.
    PerObject,
}

impl Preset {
    /// Every preset, in a fixed order.
    pub const ALL: [Preset; 6] = [
        Preset::Throughput,
        Preset::MessageRate,
        Preset::HeapMemory,
        Preset::DirectMemory,
        Preset::LedgerUsage,
        Preset::ClaimUsage,
    ];

    /// The preset behind a broker metric type; `None` for `Custom`.
    pub fn for_metric(kind: MetricType) -> Option<Preset> {
        match kind {
            MetricType::Throughput => Some(Preset::Throughput),
            MetricType::MessageRate => Some(Preset::MessageRate),
            MetricType::HeapMemory => Some(Preset::HeapMemory),
            MetricType::DirectMemory => Some(Preset::DirectMemory),
            MetricType::Custom => None,
        }
    }

    /// Stable name, used in logs and as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Throughput => "throughput",
            Preset::MessageRate => "message_rate",
            Preset::HeapMemory => "heap_memory",
            Preset::DirectMemory => "direct_memory",
            Preset::LedgerUsage => "ledger_usage",
            Preset::ClaimUsage => "claim_usage",
        }
    }

    /// Which objects it reads.
    pub fn role(self) -> Role {
        match self {
            Preset::Throughput
            | Preset::MessageRate
            | Preset::HeapMemory
            | Preset::DirectMemory => Role::Broker,
            Preset::LedgerUsage => Role::Bookie,
            Preset::ClaimUsage => Role::Claim,
        }
    }

    /// How a policy's value is formed from the per-object values.
    pub fn reduce(self) -> Reduce {
        match self {
            Preset::Throughput | Preset::MessageRate => Reduce::Sum,
            Preset::HeapMemory | Preset::DirectMemory => Reduce::Mean,
            Preset::LedgerUsage | Preset::ClaimUsage => Reduce::PerObject,
        }
    }

    /// Label naming the object a grouped series belongs to.
    pub fn object_label(self) -> &'static str {
        match self.role() {
            Role::Claim => "persistentvolumeclaim",
            Role::Broker | Role::Bookie => "pod",
        }
    }

    /// Per-object value as PromQL, grouped by namespace and object.
    pub fn value_query(self) -> &'static str {
        match self {
            Preset::Throughput => {
                // `in + out` as two sums, not one sum over both names: a broker whose `_out`
                // series is missing drops out (it reports nothing, which holds scale-down)
                // instead of counting as a broker with no outbound traffic.
                r#"sum by (namespace, pod) (pulsar_broker_throughput_in) + sum by (namespace, pod) (pulsar_broker_throughput_out)"#
            }
            Preset::MessageRate => {
                r#"sum by (namespace, pod) (pulsar_broker_rate_in) + sum by (namespace, pod) (pulsar_broker_rate_out)"#
            }
            Preset::HeapMemory => {
                r#"100 * sum by (namespace, pod) (jvm_memory_bytes_used{area="heap"}) / sum by (namespace, pod) (jvm_memory_bytes_max{area="heap"})"#
            }
            Preset::DirectMemory => {
                r#"100 * sum by (namespace, pod) (jvm_memory_direct_bytes_used) / sum by (namespace, pod) (jvm_memory_direct_bytes_max)"#
            }
            Preset::LedgerUsage => {
                r#"max by (namespace, pod) ({__name__=~"bookie_ledger_dir_.+_usage"})"#
            }
            Preset::ClaimUsage => {
                r#"100 * (1 - sum by (namespace, persistentvolumeclaim) (kubelet_volume_stats_available_bytes) / sum by (namespace, persistentvolumeclaim) (kubelet_volume_stats_capacity_bytes))"#
            }
        }
    }

    /// A plain-named series scraped together with the value's inputs, whose sample time is
    /// the value's measurement time (`timestamp()` needs a single-name selector).
    pub fn time_selector(self) -> &'static str {
        match self {
            Preset::Throughput => "pulsar_broker_throughput_in",
            Preset::MessageRate => "pulsar_broker_rate_in",
            Preset::HeapMemory => r#"jvm_memory_bytes_used{area="heap"}"#,
            Preset::DirectMemory => "jvm_memory_direct_bytes_used",
            Preset::LedgerUsage => "bookie_SERVER_STATUS",
            Preset::ClaimUsage => "kubelet_volume_stats_available_bytes",
        }
    }

    /// The one query a source sends per evaluation round for this preset.
    pub fn grouped_query(self) -> String {
        let by = format!("namespace, {}", self.object_label());
        format!(
            r#"label_replace({value}, "{FIELD}", "value", "", "") or label_replace(min by ({by}) (timestamp({time})), "{FIELD}", "time", "", "")"#,
            value = self.value_query(),
            time = self.time_selector(),
        )
    }
}

/// Values substituted into a `Custom` query template.
#[derive(Debug, Clone, Copy)]
pub struct Placeholders<'a> {
    /// The policy's namespace.
    pub namespace: &'a str,
    /// The policy's name.
    pub policy: &'a str,
    /// The broker StatefulSet's name.
    pub statefulset: &'a str,
}

/// A template that cannot be rendered safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query template: {0}")]
pub struct TemplateError(pub String);

/// Renders a `Custom` query: each `{{name}}` must sit inside a PromQL string literal, and its
/// value is escaped for that literal (and for the regex of `=~`/`!~`), so a label value can
/// never end the string and add PromQL of its own.
pub fn render(template: &str, values: Placeholders<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut quote: Option<char> = None;
    let mut regex = false;
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '{' && template[i..].starts_with("{{") {
            let rest = &template[i + 2..];
            let end = rest
                .find("}}")
                .ok_or_else(|| TemplateError("unclosed {{".into()))?;
            let name = rest[..end].trim();
            let value = match name {
                "namespace" => values.namespace,
                "policy" => values.policy,
                "statefulset" => values.statefulset,
                other => {
                    return Err(TemplateError(format!(
                        "unknown placeholder {{{{{other}}}}}"
                    )));
                }
            };
            let Some(q) = quote else {
                return Err(TemplateError(format!(
                    "{{{{{name}}}}} must be inside a quoted string, e.g. namespace=\"{{{{{name}}}}}\""
                )));
            };
            out.push_str(&escape(value, q, regex)?);
            // Skip the placeholder's remaining characters.
            let skip_to = i + 2 + end + 2;
            while chars.peek().is_some_and(|(j, _)| *j < skip_to) {
                chars.next();
            }
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some('`') => {}
            Some(_) if c == '\\' => {
                // Keep an escaped character as written, whatever it is.
                out.push(c);
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
                continue;
            }
            Some(_) => {}
            None if matches!(c, '"' | '\'' | '`') => {
                quote = Some(c);
                let before = out.trim_end();
                regex = before.ends_with("=~") || before.ends_with("!~");
            }
            None => {}
        }
        out.push(c);
    }
    if quote.is_some() {
        return Err(TemplateError("unterminated string literal".into()));
    }
    Ok(out)
}

/// Escapes `value` for a PromQL string delimited by `quote`.
fn escape(value: &str, quote: char, regex: bool) -> Result<String, TemplateError> {
    let mut v = String::with_capacity(value.len());
    for c in value.chars() {
        // Regex metacharacters first: the value is matched literally, not as a pattern.
        if regex && "\\.+*?()|[]{}^$".contains(c) {
            v.push('\\');
        }
        v.push(c);
    }
    if quote == '`' {
        if v.contains('`') {
            return Err(TemplateError(
                "a value containing ` cannot be placed in a raw string".into(),
            ));
        }
        return Ok(v);
    }
    let mut out = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(namespace: &'a str) -> Placeholders<'a> {
        Placeholders {
            namespace,
            policy: "pol",
            statefulset: "pulsar-broker",
        }
    }

    #[test]
    fn substitutes_inside_strings() {
        let q = render(
            r#"sum(pulsar_msg_backlog{namespace="{{namespace}}", pod=~"{{ statefulset }}-[0-9]+"})"#,
            values("pulsar"),
        )
        .unwrap();
        assert_eq!(
            q,
            r#"sum(pulsar_msg_backlog{namespace="pulsar", pod=~"pulsar-broker-[0-9]+"})"#
        );
    }

    #[test]
    fn values_cannot_break_out() {
        let evil = r#"x"} or vector(1e9) or foo{a=""#;
        let q = render(r#"sum(m{namespace="{{namespace}}"})"#, values(evil)).unwrap();
        assert_eq!(q, r#"sum(m{namespace="x\"} or vector(1e9) or foo{a=\""})"#);
        let q = render("sum(m{namespace='{{namespace}}'})", values("a'b\\")).unwrap();
        assert_eq!(q, r"sum(m{namespace='a\'b\\'})");
        let q = render(r#"sum(m{pod=~"{{namespace}}"})"#, values("a.b|c")).unwrap();
        assert_eq!(q, r#"sum(m{pod=~"a\\.b\\|c"})"#);
        assert!(render("sum(m{a=`{{namespace}}`})", values("x`y")).is_err());
    }

    #[test]
    fn refuses_bare_and_unknown_placeholders() {
        assert!(render("sum(m) * {{namespace}}", values("p")).is_err());
        assert!(render(r#"m{a="{{nope}}"}"#, values("p")).is_err());
        assert!(render(r#"m{a="{{namespace"}"#, values("p")).is_err());
    }

    #[test]
    fn escaped_quotes_in_template_are_kept() {
        let q = render(r#"m{a="x\"{{policy}}"}"#, values("p")).unwrap();
        assert_eq!(q, r#"m{a="x\"pol"}"#);
    }

    #[test]
    fn grouped_queries_name_their_fields() {
        for p in Preset::ALL {
            let q = p.grouped_query();
            assert!(q.contains(FIELD) && q.contains(p.object_label()), "{q}");
        }
    }
}
