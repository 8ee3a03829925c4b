//! The HTTP client every source uses: timeout, extra headers, credentials and TLS trust.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::credentials::{Auth, Credentials};
use super::error::MetricsError;

/// Installs rustls' ring provider as the process default; reqwest is built without one and
/// would panic otherwise. A provider installed earlier (by `main` or a test) is kept.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Follows a few redirects within one origin (a Pulsar broker answers `/metrics` with a 302 to
/// `/metrics/`) and none elsewhere: a redirect to another host could carry credentials there.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt.previous().last().is_some_and(|from| {
            let to = attempt.url();
            from.scheme() == to.scheme()
                && from.host_str() == to.host_str()
                && from.port_or_known_default() == to.port_or_known_default()
        });
        if same_origin && attempt.previous().len() <= 3 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// A configured client plus the per-request settings reqwest does not keep.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    auth: Option<Auth>,
    timeout: Duration,
}

impl HttpClient {
    /// Builds a client that applies `timeout`, `headers` and `credentials` to every request.
    pub fn new(
        timeout: Duration,
        headers: &BTreeMap<String, String>,
        credentials: &Credentials,
    ) -> Result<Self, MetricsError> {
        ensure_crypto_provider();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| MetricsError::Config(format!("header name {k:?} is not valid")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| MetricsError::Config(format!("value of header {k} is not valid")))?;
            map.insert(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .default_headers(map)
            .redirect(same_origin_redirects());
        if let Some(pem) = &credentials.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                MetricsError::Config(format!("CA bundle is not PEM certificates: {e}"))
            })?;
            if certs.is_empty() {
                return Err(MetricsError::Config(
                    "CA bundle holds no certificate".into(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        if credentials.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| MetricsError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(HttpClient {
            client,
            auth: credentials.auth.clone(),
            timeout,
        })
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A GET request with credentials applied.
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorize(self.client.get(url))
    }

    /// A POST request with credentials applied.
    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorize(self.client.post(url))
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            Some(Auth::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            None => request,
        }
    }

    /// Sends a request and reads the whole body, mapping transport failures and 401/403.
    pub async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, String), MetricsError> {
        let response = request
            .send()
            .await
            .map_err(|e| MetricsError::transport(url, self.timeout, e))?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(MetricsError::Unauthorized {
                url: url.to_string(),
                status,
            });
        }
        let body = read_bounded(url, self.timeout, response, MAX_BODY).await?;
        Ok((status, body))
    }
}

/// Largest answer read from a source or a pod: a query answer or a metrics page beyond this is
/// refused rather than held in memory whole (a broker page with per-topic metrics for many
/// thousand topics stays well below it).
pub const MAX_BODY: usize = 64 << 20;

/// Reads a body chunk by chunk, failing as soon as it passes `limit` bytes.
async fn read_bounded(
    url: &str,
    timeout: Duration,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<String, MetricsError> {
    let too_large = || MetricsError::Decode {
        url: url.to_string(),
        detail: format!(
            "the answer is larger than {}; not read",
            crate::decide::units::bytes(limit as f64)
        ),
        snippet: String::new(),
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| MetricsError::transport(url, timeout, e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod bounded_tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_past_the_limit_is_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let page = "x".repeat(4096);
        let app = axum::Router::new().route("/", axum::routing::get(move || async move { page }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/");
        let client = reqwest::Client::new();
        let read = |limit| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r = client.get(&url).send().await.unwrap();
                read_bounded(&url, Duration::from_secs(5), r, limit).await
            }
        };
        assert_eq!(read(8192).await.unwrap().len(), 4096);
        let e = read(1024).await.unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }
}
