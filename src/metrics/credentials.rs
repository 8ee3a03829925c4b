//! Credentials of a metrics source: read from Secrets once, then handed to the HTTP client as
//! plain values, so the client side is testable without a cluster.
//!
//! A Secret is read only with its owner's consent: it must carry the label
//! [`CONSENT_LABEL`]`=true`. The controller asks the API server only for Secrets with that label
//! (a list by name and label), so the contents of any other Secret never leave the API server,
//! whatever a policy names.

use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;

use super::error::MetricsError;
use crate::policy::Source;

/// Label that lets the controller read a Secret for the policies of its namespace.
pub const CONSENT_LABEL: &str = "pulsar-autoscaler.dev/consent";

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// HTTP basic auth.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

// Secrets never appear in logs or error messages.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

/// Resolved credentials and trust settings of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Authentication, if any.
    pub auth: Option<Auth>,
    /// PEM CA bundle that signs the server's certificate; replaces the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
}

/// Reads the Secrets a source refers to from `secrets` (an `Api` in the policy's namespace).
pub async fn resolve(secrets: &Api<Secret>, source: &Source) -> Result<Credentials, MetricsError> {
    let namespace = secrets.namespace().unwrap_or("default").to_string();
    let mut out = Credentials {
        insecure_skip_verify: source.tls.as_ref().is_some_and(|t| t.insecure_skip_verify),
        ..Credentials::default()
    };
    if let Some(auth) = &source.auth {
        if let Some(r) = &auth.bearer_token_secret_ref {
            let secret = fetch(secrets, &namespace, &r.name).await?;
            let token = key(&secret, &namespace, &r.name, &r.key)?;
            out.auth = Some(Auth::Bearer(text(&token, &namespace, &r.name, &r.key)?));
        } else if let Some(r) = &auth.basic_auth_secret_ref {
            let secret = fetch(secrets, &namespace, &r.name).await?;
            out.auth = Some(basic_from_secret(&secret, &namespace, &r.name)?);
        }
    }
    if let Some(r) = source.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
        let secret = fetch(secrets, &namespace, &r.name).await?;
        out.ca_pem = Some(key(&secret, &namespace, &r.name, &r.key)?);
    }
    Ok(out)
}

/// Basic auth from a Secret's `username` and `password` keys.
pub fn basic_from_secret(
    secret: &Secret,
    namespace: &str,
    name: &str,
) -> Result<Auth, MetricsError> {
    let user = key(secret, namespace, name, "username")?;
    let pass = key(secret, namespace, name, "password")?;
    Ok(Auth::Basic {
        username: text(&user, namespace, name, "username")?,
        password: text(&pass, namespace, name, "password")?,
    })
}

/// The Secret `name`, asked for only with the consent label: a Secret without it is never sent.
pub async fn fetch(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
) -> Result<Secret, MetricsError> {
    let params = ListParams::default()
        .labels(&format!("{CONSENT_LABEL}=true"))
        .fields(&format!("metadata.name={name}"));
    let list = secrets
        .list(&params)
        .await
        .map_err(|e| MetricsError::Secret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            problem: format!(
                "cannot read it: {}",
                crate::policy::bounded(&e.to_string(), 300)
            ),
        })?;
    list.items
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| MetricsError::Secret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            problem: format!(
                "not found with the label {CONSENT_LABEL}=true; the controller reads only Secrets \
                 their owner marked for it: kubectl -n {namespace} label secret {name} \
                 {CONSENT_LABEL}=true"
            ),
        })
}

/// The bytes of one key, from `data` or `stringData`.
pub fn key(
    secret: &Secret,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Vec<u8>, MetricsError> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone());
    let from_string = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|s| s.clone().into_bytes())
    };
    match from_data.or_else(from_string) {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(MetricsError::Secret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            problem: format!("key {key:?} is empty"),
        }),
        None => Err(MetricsError::Secret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            problem: format!("has no key {key:?}"),
        }),
    }
}

/// A key's bytes as text, without the trailing newline `echo` leaves.
pub fn text(bytes: &[u8], namespace: &str, name: &str, key: &str) -> Result<String, MetricsError> {
    let s = std::str::from_utf8(bytes).map_err(|_| MetricsError::Secret {
        namespace: namespace.to_string(),
        name: name.to_string(),
        problem: format!("key {key:?} is not UTF-8 text"),
    })?;
    // Secrets created with `echo` often carry a trailing newline that would break the header.
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let data: BTreeMap<String, ByteString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect();
        Secret {
            data: Some(data),
            ..Secret::default()
        }
    }

    #[test]
    fn reads_basic_auth_and_trims_newline() {
        let s = secret(&[("username", "admin"), ("password", "s3cret\n")]);
        let auth = basic_from_secret(&s, "pulsar", "prom").unwrap();
        assert_eq!(
            auth,
            Auth::Basic {
                username: "admin".into(),
                password: "s3cret".into()
            }
        );
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn names_the_missing_key() {
        let s = secret(&[("username", "admin")]);
        let err = basic_from_secret(&s, "pulsar", "prom").unwrap_err();
        assert_eq!(err.label(), "secret");
        assert_eq!(
            err.to_string(),
            "secret pulsar/prom: has no key \"password\""
        );
    }
}
