//! The one error type of the metrics sources: what failed, where, and a stable label for metrics.

use std::time::Duration;

/// Why a metrics query or scrape gave no number.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The server could not be reached (refused, reset, DNS, TLS handshake).
    #[error("cannot reach {url}: {detail}")]
    Connect {
        /// Where the request went.
        url: String,
        /// The transport error, with its causes.
        detail: String,
    },
    /// No complete answer within the configured timeout.
    #[error("no answer from {url} within {}", humantime::format_duration(*.after))]
    Timeout {
        /// Where the request went.
        url: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The server refused the credentials (401/403).
    #[error("{url} refused the credentials (HTTP {status}); check the auth Secret")]
    Unauthorized {
        /// Where the request went.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The query API answered with its own error JSON (bad PromQL, execution error, …).
    #[error("{url} rejected the query (HTTP {status}, {error_type}): {message}")]
    Query {
        /// Where the request went.
        url: String,
        /// HTTP status (Prometheus uses 400/422/503, VictoriaMetrics 422 for bad PromQL).
        status: u16,
        /// `errorType` of the answer, when it is a documented one ([`error_type`]).
        error_type: String,
        /// `error` of the answer, bounded ([`query_message`]).
        message: String,
    },
    /// An HTTP error status without the query API's error JSON.
    #[error("{url} answered HTTP {status} ({snippet})")]
    Http {
        /// Where the request went.
        url: String,
        /// HTTP status.
        status: u16,
        /// The body described in our words ([`snippet`]), never quoted.
        snippet: String,
    },
    /// A body that is not the JSON the API documents.
    #[error("{url} answered with something that is not a query API response ({detail}; {snippet})")]
    Decode {
        /// Where the request went.
        url: String,
        /// What did not fit, in our words.
        detail: String,
        /// The body described in our words ([`snippet`]), never quoted.
        snippet: String,
    },
    /// The server answered, but said the answer may be incomplete: VictoriaMetrics'
    /// `isPartial` (a vmstorage node did not answer) or Prometheus' `warnings`. Such an answer
    /// is not used: a sum missing some brokers looks like low load.
    #[error("{url} answered with partial data ({detail}); not used")]
    Partial {
        /// Where the request went.
        url: String,
        /// What the server said, bounded.
        detail: String,
    },
    /// A settings problem found before any request (bad URL, header, CA bundle).
    #[error("metrics source settings: {0}")]
    Config(String),
    /// A referenced Secret or key is missing or unusable.
    #[error("secret {namespace}/{name}: {problem}")]
    Secret {
        /// Namespace of the Secret.
        namespace: String,
        /// Secret name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The kubelet summary API through the API server failed.
    #[error("kubelet stats of node {node}: {detail}")]
    Kubelet {
        /// Node name.
        node: String,
        /// What failed.
        detail: String,
    },
    /// The source cannot answer this kind of question at all.
    #[error("{0}")]
    Unsupported(String),
}

impl MetricsError {
    /// Stable, low-cardinality label for the controller's own error metrics.
    pub fn label(&self) -> &'static str {
        match self {
            MetricsError::Connect { .. } => "connect",
            MetricsError::Timeout { .. } => "timeout",
            MetricsError::Unauthorized { .. } => "unauthorized",
            MetricsError::Query { .. } => "query",
            MetricsError::Http { .. } => "http_status",
            MetricsError::Decode { .. } => "decode",
            MetricsError::Partial { .. } => "partial",
            MetricsError::Config(_) => "config",
            MetricsError::Secret { .. } => "secret",
            MetricsError::Kubelet { .. } => "kubelet",
            MetricsError::Unsupported(_) => "unsupported",
        }
    }

    /// Maps a transport error of a request to `url`.
    pub(crate) fn transport(url: &str, timeout: Duration, e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return MetricsError::Timeout {
                url: url.to_string(),
                after: timeout,
            };
        }
        MetricsError::Connect {
            url: url.to_string(),
            detail: chain(&e),
        }
    }
}

/// An error and its causes on one line: reqwest hides the useful part in `source()`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// Our own words for a body we will not repeat: its size and what it looks like. A server's
/// answer reaches status and Events only this way, so a policy cannot use the controller to read
/// what a server it may name (but not reach itself) returns.
pub(crate) fn snippet(body: &str) -> String {
    let start = body.trim_start();
    let kind = if start.starts_with('<') {
        "HTML or XML"
    } else if start.starts_with('{') || start.starts_with('[') {
        "JSON"
    } else if start.is_empty() {
        "nothing"
    } else {
        "text"
    };
    if kind == "nothing" {
        "an empty body".to_string()
    } else {
        format!("{} bytes of {kind}, not shown", body.len())
    }
}

/// Known `errorType` values of the Prometheus and VictoriaMetrics query APIs; anything else is
/// shown as `unknown` rather than repeated.
const ERROR_TYPES: [&str; 10] = [
    "bad_data",
    "execution",
    "timeout",
    "canceled",
    "internal",
    "unavailable",
    "not_found",
    "not_acceptable",
    "422",
    "503",
];

/// `errorType` of a query API answer, when it is one the APIs document.
pub(crate) fn error_type(raw: Option<&str>) -> String {
    match raw {
        Some(t) if ERROR_TYPES.contains(&t) => t.to_string(),
        _ => "unknown".to_string(),
    }
}

/// Longest piece of a query API's own error text kept (PromQL parse errors fit).
pub const QUERY_MESSAGE_MAX: usize = 160;

/// A query API's error text, on one line of printable characters and at most
/// [`QUERY_MESSAGE_MAX`] characters: enough to fix a Custom query, too little to carry a page.
pub(crate) fn query_message(raw: Option<&str>) -> String {
    let Some(raw) = raw else {
        return "no message".to_string();
    };
    crate::policy::bounded(
        &raw.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>(),
        QUERY_MESSAGE_MAX,
    )
}

/// What did not fit in a JSON body, without quoting it (serde's messages repeat values).
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Eof => "truncated JSON",
        serde_json::error::Category::Data => "JSON of another shape",
        serde_json::error::Category::Io => "unreadable JSON",
    };
    if e.line() == 0 {
        what.to_string()
    } else {
        format!("{what} at line {} column {}", e.line(), e.column())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_described_never_repeated() {
        let page = "<html>secret admin page</html>";
        let s = snippet(page);
        assert_eq!(s, "30 bytes of HTML or XML, not shown");
        assert!(!s.contains("secret"));
        assert_eq!(snippet("  "), "an empty body");
        assert_eq!(snippet("{\"token\":\"x\"}"), "13 bytes of JSON, not shown");
    }

    #[test]
    fn query_messages_are_bounded_and_error_types_known() {
        let long = "x".repeat(1000);
        let m = query_message(Some(&long));
        assert!(m.chars().count() <= QUERY_MESSAGE_MAX, "{}", m.len());
        assert_eq!(query_message(Some("a\nb")), "a b");
        assert_eq!(error_type(Some("bad_data")), "bad_data");
        assert_eq!(error_type(Some("<script>")), "unknown");
    }

    #[test]
    fn json_problems_do_not_quote_the_body() {
        let e = serde_json::from_str::<f64>("\"hunter2\"").unwrap_err();
        let text = json_problem(&e);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.starts_with("JSON of another shape"), "{text}");
    }
}
