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
        /// `errorType` of the answer.
        error_type: String,
        /// `error` of the answer.
        message: String,
    },
    /// An HTTP error status without the query API's error JSON.
    #[error("{url} answered HTTP {status}: {snippet}")]
    Http {
        /// Where the request went.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        snippet: String,
    },
    /// A body that is not the JSON the API documents.
    #[error("{url} answered with something that is not a query API response ({detail}): {snippet}")]
    Decode {
        /// Where the request went.
        url: String,
        /// What did not fit.
        detail: String,
        /// Start of the body.
        snippet: String,
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

/// The first `max` characters of a body, on one line, for error messages.
pub(crate) fn snippet(body: &str) -> String {
    const MAX: usize = 200;
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    if body.chars().count() > MAX {
        format!("{}…", one_line.trim_end())
    } else {
        one_line.trim().to_string()
    }
}
