//! Checks a `ScalingPolicy` and turns its spec into typed settings the engine uses.
//!
//! The same checks serve `validate` (offline) and the controller (`Invalid` condition): schema
//! shape through serde, the CRD's CEL rules through kube's client-side CEL evaluator, and the
//! rules a schema cannot express in Rust.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::api::{
    AdminSpec, AuthSpec, BookieSpec, BrokerSpec, ForecastSpec, MetricType, ScalingPolicy,
    ScalingPolicySpec, ScalingRules, SourceType, TlsSpec,
};
use crate::quantity;

/// Longest stabilization window accepted; bounds the recommendation history kept in status.
pub const MAX_WINDOW: Duration = Duration::from_secs(6 * 3600);
/// Largest replica count accepted.
pub const MAX_REPLICAS: u32 = 1000;

/// One thing wrong with a policy, at a field path such as `spec.brokers.minReplicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Typed, checked settings of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Evaluation period.
    pub interval: Duration,
    /// Decide and record, change nothing.
    pub dry_run: bool,
    /// Do nothing at all.
    pub suspend: bool,
    /// Metrics source connection.
    pub source: Source,
    /// Broker scaling, if configured.
    pub brokers: Option<BrokerPolicy>,
    /// Bookie volume growth, if configured.
    pub bookies: Option<Box<BookiePolicy>>,
    /// Per-policy rate limit.
    pub rate_limit: RateLimit,
    /// `brokers.forecast` when enabled (kept here so `BrokerPolicy` literals stay valid).
    pub forecast: Option<ForecastPolicy>,
}

/// Checked `brokers.forecast` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastPolicy {
    /// Fixed horizon, or `None` for `auto` (measured from readiness).
    pub horizon: Option<Duration>,
    /// Direction changes per hour from which the load counts as flapping.
    pub flap_turns_per_hour: u32,
    /// The policy's evaluation period: a decision can act one interval late at most.
    pub interval: Duration,
}

/// Metrics source settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Server kind.
    pub kind: SourceType,
    /// Query API base URL (absent for `Direct`).
    pub url: Option<String>,
    /// Timeout of one query.
    pub timeout: Duration,
    /// Samples older than this are missing.
    pub max_staleness: Duration,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// Credentials.
    pub auth: Option<AuthSpec>,
    /// TLS settings.
    pub tls: Option<TlsSpec>,
}

/// Broker scaling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerPolicy {
    /// StatefulSet name.
    pub stateful_set: String,
    /// Lower bound.
    pub min_replicas: u32,
    /// Upper bound.
    pub max_replicas: u32,
    /// Dead band around each target, as a fraction.
    pub tolerance: f64,
    /// Metrics and targets.
    pub metrics: Vec<MetricPolicy>,
    /// Scale-up behaviour.
    pub scale_up: Direction,
    /// Scale-down behaviour.
    pub scale_down: Direction,
}

/// One metric with its target.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPolicy {
    /// Name shown everywhere.
    pub name: String,
    /// What it measures.
    pub kind: MetricType,
    /// Target per broker (totals) or target utilization percent.
    pub target: f64,
    /// PromQL template for `Custom`.
    pub query: Option<String>,
}

/// Behaviour of one scaling direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Direction {
    /// Stabilization window.
    pub window: Duration,
    /// Time after the previous change before this direction may act.
    pub cooldown: Duration,
    /// Largest step in replicas, if limited.
    pub max_replicas: Option<u32>,
    /// Largest step in percent of current replicas, if limited.
    pub max_percent: Option<u32>,
}

/// Bookie volume settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BookiePolicy {
    /// StatefulSet name.
    pub stateful_set: String,
    /// Watched volumeClaimTemplates (empty: all).
    pub templates: Vec<String>,
    /// Expansion threshold in percent of capacity.
    pub expand_at_used_percent: f64,
    /// Growth per expansion in percent of the request.
    pub increase_percent: f64,
    /// Minimum growth per expansion in bytes.
    pub increase_minimum: u64,
    /// Size cap in bytes.
    pub max_size: u64,
    /// Time between expansions of one claim.
    pub cooldown: Duration,
}

/// Token bucket settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained actions per hour.
    pub actions_per_hour: u32,
    /// Actions allowed back to back.
    pub burst: u32,
}

/// The CRD's openAPIV3Schema as JSON, computed once.
fn crd_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = ScalingPolicy::crd();
        crd.spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null)
    })
}

/// Runs the CRD's CEL rules, compiled once per process (compiling them dominates a check).
fn cel_check(object: &Value) -> Result<(), kube::core::cel::ValidationErrors> {
    static COMPILED: OnceLock<kube::core::cel::CompiledSchema> = OnceLock::new();
    thread_local! {
        static VALIDATOR: kube::core::cel::Validator = kube::core::cel::Validator::new();
    }
    let compiled = COMPILED.get_or_init(|| kube::core::cel::compile_schema(crd_schema()));
    VALIDATOR.with(|v| v.validate_compiled(compiled, object, None))
}

/// Checks one object as the API server and the controller would: shape, CEL rules, Rust rules.
pub fn check_object(object: &Value) -> Result<(ScalingPolicy, Policy), Vec<Problem>> {
    let mut problems = Vec::new();
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != "pulsar-autoscaler.dev/v1alpha1" {
        problems.push(Problem::new(
            "apiVersion",
            format!("must be pulsar-autoscaler.dev/v1alpha1, got {api_version:?}"),
        ));
    }
    if kind != "ScalingPolicy" {
        problems.push(Problem::new(
            "kind",
            format!("must be ScalingPolicy, got {kind:?}"),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    problems.extend(fractional_quantities(object));
    if !problems.is_empty() {
        return Err(problems);
    }
    let resource: ScalingPolicy = match serde_path_to_error::deserialize(object) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            return Err(vec![Problem::new(path, e.into_inner().to_string())]);
        }
    };
    // CEL sees the object with defaults filled in, as the API server's defaulting would.
    let defaulted = serde_json::to_value(&resource).unwrap_or(Value::Null);
    if let Err(errors) = cel_check(&defaulted) {
        for e in errors.into_vec() {
            problems.push(Problem::new(
                e.field_path.trim_start_matches('.'),
                e.message,
            ));
        }
    }
    match Policy::from_spec(&resource.spec) {
        Ok(policy) if problems.is_empty() => Ok((resource, policy)),
        Ok(_) => Err(problems),
        Err(more) => {
            // CEL and Rust may report the same rule; keep one line per problem.
            for p in more {
                if !problems.iter().any(|q| same_problem(q, &p)) {
                    problems.push(p);
                }
            }
            Err(problems)
        }
    }
}

/// Quantity fields written as fractional YAML numbers (`maxSize: 1.5`). The API server takes
/// only integers or strings there (`x-kubernetes-int-or-string`), while serde would accept them.
fn fractional_quantities(object: &Value) -> Vec<Problem> {
    let mut fields = vec![
        (
            "spec.bookies.maxSize".to_string(),
            object.pointer("/spec/bookies/maxSize"),
        ),
        (
            "spec.bookies.increase.minimum".to_string(),
            object.pointer("/spec/bookies/increase/minimum"),
        ),
    ];
    if let Some(metrics) = object
        .pointer("/spec/brokers/metrics")
        .and_then(Value::as_array)
    {
        for (i, m) in metrics.iter().enumerate() {
            let path = format!("spec.brokers.metrics[{i}].targetPerBroker");
            fields.push((path, m.get("targetPerBroker")));
        }
    }
    fields
        .into_iter()
        .filter_map(|(path, value)| match value? {
            // kubectl sends a whole float such as 2.0 as the integer 2, which is accepted.
            Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() != 0.0) => Some(Problem::new(
                path,
                format!("{n} must be quoted, e.g. \"{n}\": quantities are integers or strings"),
            )),
            _ => None,
        })
        .collect()
}

/// Whether a CEL problem already covers a Rust one: same field, or a parent rule naming the field.
fn same_problem(cel: &Problem, rust: &Problem) -> bool {
    if cel.path == rust.path {
        return true;
    }
    let Some(rest) = rust.path.strip_prefix(&cel.path) else {
        return false;
    };
    let field = rest.rsplit('.').next().unwrap_or(rest);
    let field = field.split('[').next().unwrap_or(field);
    !field.is_empty() && cel.message.contains(field)
}

/// Collects problems while converting fields.
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn duration(&mut self, path: &str, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(_) => {
                self.problems
                    .push(Problem::new(path, crate::schema::duration_message(text)));
                Duration::ZERO
            }
        }
    }

    fn positive(&mut self, path: &str, text: &str) -> f64 {
        match quantity::parse(text) {
            Ok(v) if v > 0.0 => v,
            Ok(_) => {
                self.problems.push(Problem::new(
                    path,
                    format!("must be greater than zero, got {text}"),
                ));
                0.0
            }
            Err(e) => {
                self.problems.push(Problem::new(path, e.to_string()));
                0.0
            }
        }
    }

    fn bytes(&mut self, path: &str, text: &str) -> u64 {
        match quantity::parse_bytes(text) {
            Ok(v) => v,
            Err(e) => {
                self.problems.push(Problem::new(path, e.to_string()));
                0
            }
        }
    }

    fn percent(&mut self, path: &str, value: i32, allow_hundred: bool) -> f64 {
        let ok = value > 0 && (value < 100 || (allow_hundred && value == 100));
        if !ok {
            let range = if allow_hundred {
                "(0, 100]"
            } else {
                "(0, 100)"
            };
            self.problems.push(Problem::new(
                path,
                format!("must be in {range}, got {value}"),
            ));
        }
        f64::from(value)
    }

    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }
}

impl Policy {
    /// Converts a spec, reporting every problem found rather than the first.
    pub fn from_spec(spec: &ScalingPolicySpec) -> Result<Policy, Vec<Problem>> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        let interval = c.duration("spec.interval", &spec.interval);
        if interval < Duration::from_secs(1) && c.problems.is_empty() {
            c.fail(
                "spec.interval",
                format!("must be at least 1s, got {}", spec.interval),
            );
        }
        let source = source(&mut c, spec);
        let brokers = spec.brokers.as_ref().map(|b| broker_policy(&mut c, b));
        let bookies = spec.bookies.as_ref().map(|b| bookie_policy(&mut c, b));
        if brokers.is_none() && bookies.is_none() {
            c.fail("spec", "set at least one of brokers or bookies");
        }
        let limit = spec.rate_limit.clone().unwrap_or_default();
        if limit.actions_per_hour < 1 {
            c.fail(
                "spec.rateLimit.actionsPerHour",
                format!("must be at least 1, got {}", limit.actions_per_hour),
            );
        }
        if limit.burst < 1 {
            c.fail(
                "spec.rateLimit.burst",
                format!("must be at least 1, got {}", limit.burst),
            );
        }
        let forecast = spec
            .brokers
            .as_ref()
            .and_then(|b| b.forecast.as_ref())
            .filter(|f| f.enabled)
            .map(|f| forecast_policy(&mut c, f, interval));
        if !c.problems.is_empty() {
            return Err(c.problems);
        }
        Ok(Policy {
            forecast,
            interval,
            dry_run: spec.dry_run,
            suspend: spec.suspend,
            source,
            brokers,
            bookies: bookies.map(Box::new),
            rate_limit: RateLimit {
                actions_per_hour: limit.actions_per_hour.max(1) as u32,
                burst: limit.burst.max(1) as u32,
            },
        })
    }
}

fn source(c: &mut Checker, spec: &ScalingPolicySpec) -> Source {
    let Some(s) = &spec.metrics_source else {
        return Source {
            kind: SourceType::Direct,
            url: None,
            timeout: default_timeout(spec_interval(spec)),
            max_staleness: Duration::from_secs(120),
            headers: BTreeMap::new(),
            auth: None,
            tls: None,
        };
    };
    let kind = s.type_.unwrap_or(if s.url.is_some() {
        SourceType::Prometheus
    } else {
        SourceType::Direct
    });
    if kind != SourceType::Direct {
        match s.url.as_deref() {
            None => c.fail(
                "spec.metricsSource.url",
                format!("required for a {kind:?} source"),
            ),
            Some(u) => {
                if let Err(why) = source_url(u) {
                    c.fail("spec.metricsSource.url", why);
                }
            }
        }
    }
    let max_staleness = c.duration("spec.metricsSource.maxStaleness", &s.max_staleness);
    // One source's round is shared by every policy on it: a query that may outlast the interval
    // would hold the others' evaluations too.
    let interval = spec_interval(spec);
    let timeout = match &s.timeout {
        None => default_timeout(interval),
        Some(text) => {
            let t = c.duration("spec.metricsSource.timeout", text);
            if t.is_zero() {
                c.fail("spec.metricsSource.timeout", "must be greater than zero");
            } else if !interval.is_zero() && t >= interval {
                c.fail(
                    "spec.metricsSource.timeout",
                    format!(
                        "must be shorter than spec.interval ({}), got {text}",
                        spec.interval
                    ),
                );
            }
            t
        }
    };
    if let Some(auth) = &s.auth
        && auth.bearer_token_secret_ref.is_some()
        && auth.basic_auth_secret_ref.is_some()
    {
        c.fail(
            "spec.metricsSource.auth",
            "set only one of bearerTokenSecretRef and basicAuthSecretRef",
        );
    }
    Source {
        kind,
        url: s.url.clone(),
        timeout,
        max_staleness,
        headers: s.headers.clone(),
        auth: s.auth.clone(),
        tls: s.tls.clone(),
    }
}

/// Longest URL accepted for a metrics source.
pub const MAX_URL_LEN: usize = 2048;

/// Checks a metrics source URL and returns it parsed: http(s) only, and nothing a request could
/// carry besides the address (no user name or password, query or fragment: credentials belong in
/// Secrets, and the query API's parameters are the controller's).
pub fn source_url(text: &str) -> Result<reqwest::Url, String> {
    if text.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err(format!(
            "must start with http:// or https://, got {:?}",
            bounded(text, 80)
        ));
    }
    let url = reqwest::Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password; use spec.metricsSource.auth".into());
    }
    if url.query().is_some() {
        return Err("must not have a query string (?...)".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment (#...)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(url)
}

/// At most `max` characters of `text`, ending with `…` when cut. Every message the controller
/// stores (conditions, Events, the decision log) goes through this.
pub fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// What the operator lets policies do, from `run` flags; checked on top of the policy's own
/// rules, by the controller only (a policy file cannot know the flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// URL prefixes a metrics source must start with; empty: any URL.
    pub allowed_sources: Vec<AllowedSource>,
    /// Refuse `tls.insecureSkipVerify: true`.
    pub forbid_insecure_skip_verify: bool,
}

/// One `--allow-source` prefix, parsed so that it is compared by scheme, host, port and path
/// segments rather than by text (`http://prom:9090` must not allow `http://prom:90901` or
/// `http://prom:9090.evil.example`, and `..` must not climb out of a path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedSource {
    text: String,
    url: reqwest::Url,
}

impl AllowedSource {
    /// Parses a prefix as given on the command line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = source_url(text).map_err(|why| format!("--allow-source {text:?} {why}"))?;
        Ok(AllowedSource {
            text: text.to_string(),
            url,
        })
    }

    /// Whether `url` lies under this prefix.
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        if url.scheme() != self.url.scheme()
            || url.host_str() != self.url.host_str()
            || url.port_or_known_default() != self.url.port_or_known_default()
        {
            return false;
        }
        let prefix = self.url.path().trim_end_matches('/');
        let path = url.path();
        prefix.is_empty()
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The prefix as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Why the operator's settings refuse a policy: a condition reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Condition reason: `SourceNotAllowed` or `InsecureSkipVerifyForbidden`.
    pub reason: &'static str,
    /// What to do about it.
    pub message: String,
}

impl Admission {
    /// Checks a policy's source and broker admin API settings against the operator's settings.
    pub fn check(&self, source: &Source, admin: Option<&AdminSpec>) -> Result<(), Refusal> {
        if let (false, Some(text)) = (self.allowed_sources.is_empty(), source.url.as_deref()) {
            let allowed = source_url(text)
                .map(|url| self.allowed_sources.iter().any(|a| a.allows(&url)))
                .unwrap_or(false);
            if !allowed {
                let list: Vec<&str> = self.allowed_sources.iter().map(|a| a.as_str()).collect();
                return Err(Refusal {
                    reason: "SourceNotAllowed",
                    message: format!(
                        "spec.metricsSource.url {:?} is not under a source this controller may \
                         call; allowed: {}",
                        bounded(text, 200),
                        list.join(", ")
                    ),
                });
            }
        }
        if self.forbid_insecure_skip_verify && source.insecure_skip_verify() {
            return Err(Refusal {
                reason: "InsecureSkipVerifyForbidden",
                message: "spec.metricsSource.tls.insecureSkipVerify is true, which this \
                          controller forbids: give the server's CA in tls.caSecretRef instead"
                    .into(),
            });
        }
        if self.forbid_insecure_skip_verify && admin_insecure(admin) {
            return Err(Refusal {
                reason: "InsecureSkipVerifyForbidden",
                message: "spec.brokers.admin.tls.insecureSkipVerify is true, which this \
                          controller forbids: give the brokers' CA in brokers.admin.tls.caSecretRef \
                          instead"
                    .into(),
            });
        }
        Ok(())
    }
}

/// Whether the brokers' admin API certificates are accepted unchecked.
pub fn admin_insecure(admin: Option<&AdminSpec>) -> bool {
    admin
        .and_then(|a| a.tls.as_ref())
        .is_some_and(|t| t.insecure_skip_verify)
}

impl Source {
    /// Whether the server's certificate is accepted unchecked.
    pub fn insecure_skip_verify(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.insecure_skip_verify)
    }
}

/// Timeout of a source that sets none: 5 s, or three quarters of the interval when shorter.
pub fn default_timeout(interval: Duration) -> Duration {
    let cap = interval * 3 / 4;
    if cap.is_zero() {
        DEFAULT_TIMEOUT
    } else {
        DEFAULT_TIMEOUT.min(cap)
    }
}

/// Timeout of a source that sets none, before the interval caps it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The interval as a duration; zero when it does not parse (reported elsewhere).
fn spec_interval(spec: &ScalingPolicySpec) -> Duration {
    humantime::parse_duration(&spec.interval).unwrap_or_default()
}

fn broker_policy(c: &mut Checker, b: &BrokerSpec) -> BrokerPolicy {
    let p = "spec.brokers";
    if b.stateful_set.is_empty() {
        c.fail(
            format!("{p}.statefulSet"),
            "must name the broker StatefulSet",
        );
    }
    if b.min_replicas < 1 {
        c.fail(
            format!("{p}.minReplicas"),
            format!("must be at least 1, got {}", b.min_replicas),
        );
    }
    if b.max_replicas < b.min_replicas {
        c.fail(
            format!("{p}.maxReplicas"),
            format!(
                "must not be below minReplicas ({} < {})",
                b.max_replicas, b.min_replicas
            ),
        );
    }
    if b.max_replicas > MAX_REPLICAS as i32 {
        c.fail(
            format!("{p}.maxReplicas"),
            format!("must be at most {MAX_REPLICAS}, got {}", b.max_replicas),
        );
    }
    if !(0.0..1.0).contains(&b.tolerance) {
        c.fail(
            format!("{p}.tolerance"),
            format!("must be in [0, 1), got {}", b.tolerance),
        );
    }
    if b.metrics.is_empty() {
        c.fail(format!("{p}.metrics"), "needs at least one metric");
    }
    let mut names = BTreeSet::new();
    let mut metrics = Vec::new();
    for (i, m) in b.metrics.iter().enumerate() {
        let mp = format!("{p}.metrics[{i}]");
        let name = m
            .name
            .clone()
            .unwrap_or_else(|| format!("{:?}", m.type_).to_lowercase());
        if !names.insert(name.clone()) {
            c.fail(
                format!("{mp}.name"),
                format!("{name:?} is used by two metrics; give each a distinct name"),
            );
        }
        let target = if m.type_.is_utilization() {
            match m.target_utilization {
                Some(t) => c.percent(&format!("{mp}.targetUtilization"), t, true),
                None => {
                    c.fail(
                        format!("{mp}.targetUtilization"),
                        format!("required for {:?}", m.type_),
                    );
                    0.0
                }
            }
        } else {
            match &m.target_per_broker {
                Some(t) => c.positive(&format!("{mp}.targetPerBroker"), &t.0),
                None => {
                    c.fail(
                        format!("{mp}.targetPerBroker"),
                        format!("required for {:?}", m.type_),
                    );
                    0.0
                }
            }
        };
        if m.type_ == MetricType::Custom {
            if m.name.is_none() {
                c.fail(format!("{mp}.name"), "required for a Custom metric");
            }
            match m.query.as_deref() {
                None | Some("") => c.fail(format!("{mp}.query"), "required for a Custom metric"),
                Some(q) => check_placeholders(c, &format!("{mp}.query"), q),
            }
        }
        metrics.push(MetricPolicy {
            name,
            kind: m.type_,
            target,
            query: m.query.clone(),
        });
    }
    BrokerPolicy {
        stateful_set: b.stateful_set.clone(),
        min_replicas: b.min_replicas.max(1) as u32,
        max_replicas: b.max_replicas.max(b.min_replicas).max(1) as u32,
        tolerance: b.tolerance,
        metrics,
        scale_up: direction(c, &format!("{p}.scaleUp"), &b.scale_up),
        scale_down: direction(c, &format!("{p}.scaleDown"), &b.scale_down),
    }
}

/// Placeholders a Custom query may use; values are escaped when substituted.
pub const PLACEHOLDERS: [&str; 3] = ["namespace", "policy", "statefulset"];

fn check_placeholders(c: &mut Checker, path: &str, query: &str) {
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            c.fail(path, "unclosed {{ in query");
            return;
        };
        let name = after[..end].trim();
        if !PLACEHOLDERS.contains(&name) {
            c.fail(
                path,
                format!(
                    "unknown placeholder {{{{{name}}}}}; known: {}",
                    PLACEHOLDERS.join(", ")
                ),
            );
        }
        rest = &after[end + 2..];
    }
}

fn direction(c: &mut Checker, path: &str, r: &ScalingRules) -> Direction {
    let window = c.duration(
        &format!("{path}.stabilizationWindow"),
        &r.stabilization_window,
    );
    if window > MAX_WINDOW {
        c.fail(
            format!("{path}.stabilizationWindow"),
            format!("must be at most 6h, got {}", r.stabilization_window),
        );
    }
    let cooldown = c.duration(&format!("{path}.cooldown"), &r.cooldown);
    let (mut max_replicas, mut max_percent) = (None, None);
    if let Some(step) = &r.max_step {
        if step.replicas.is_none() && step.percent.is_none() {
            c.fail(format!("{path}.maxStep"), "needs replicas, percent or both");
        }
        if let Some(n) = step.replicas {
            if n < 1 {
                c.fail(
                    format!("{path}.maxStep.replicas"),
                    format!("must be at least 1, got {n}"),
                );
            }
            max_replicas = Some(n.max(1) as u32);
        }
        if let Some(pct) = step.percent {
            c.percent(&format!("{path}.maxStep.percent"), pct, true);
            max_percent = Some(pct.clamp(1, 100) as u32);
        }
    }
    Direction {
        window,
        cooldown,
        max_replicas,
        max_percent,
    }
}

fn forecast_policy(c: &mut Checker, f: &ForecastSpec, interval: Duration) -> ForecastPolicy {
    let p = "spec.brokers.forecast";
    let horizon = (f.horizon != "auto").then(|| c.duration(&format!("{p}.horizon"), &f.horizon));
    if horizon.is_some_and(|h| h > MAX_WINDOW) {
        c.fail(
            format!("{p}.horizon"),
            format!("must be at most 6h, got {}", f.horizon),
        );
    }
    if !(2..=60).contains(&f.flap_turns_per_hour) {
        c.fail(
            format!("{p}.flapTurnsPerHour"),
            format!("must be in [2, 60], got {}", f.flap_turns_per_hour),
        );
    }
    ForecastPolicy {
        horizon,
        flap_turns_per_hour: f.flap_turns_per_hour.clamp(2, 60) as u32,
        interval,
    }
}

fn bookie_policy(c: &mut Checker, b: &BookieSpec) -> BookiePolicy {
    let p = "spec.bookies";
    if b.stateful_set.is_empty() {
        c.fail(
            format!("{p}.statefulSet"),
            "must name the bookie StatefulSet",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, t) in b.volume_claim_templates.iter().enumerate() {
        if !seen.insert(t) {
            c.fail(
                format!("{p}.volumeClaimTemplates[{i}]"),
                format!("{t:?} is listed twice"),
            );
        }
    }
    let expand_at = c.percent(
        &format!("{p}.expandAtUsedPercent"),
        b.expand_at_used_percent,
        false,
    );
    let increase_percent = c.percent(&format!("{p}.increase.percent"), b.increase.percent, true);
    let increase_minimum = c.bytes(&format!("{p}.increase.minimum"), &b.increase.minimum.0);
    let max_size = c.positive(&format!("{p}.maxSize"), &b.max_size.0).ceil() as u64;
    BookiePolicy {
        stateful_set: b.stateful_set.clone(),
        templates: b.volume_claim_templates.clone(),
        expand_at_used_percent: expand_at,
        increase_percent,
        increase_minimum,
        max_size,
        cooldown: c.duration(&format!("{p}.cooldown"), &b.cooldown),
    }
}

/// A problem found in one document of a YAML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentProblem {
    /// 1-based document index within the file.
    pub document: usize,
    /// The problem.
    pub problem: Problem,
}

/// Checks one object from a file as `kubectl apply` would have the API server check it: the
/// schema with strict unknown fields and the object's metadata first, then `check_object`'s CEL
/// and Rust rules, without repeating a field the schema already refused.
pub fn check_file_object(object: &Value) -> Vec<Problem> {
    let mut problems: Vec<Problem> = match check_object(object) {
        Ok(_) => Vec::new(),
        Err(p) => p,
    };
    let header = problems
        .iter()
        .any(|p| p.path == "apiVersion" || p.path == "kind");
    if header {
        return problems;
    }
    let schema: Vec<Problem> = crate::schema::check(object, crd_schema())
        .into_iter()
        .map(|(path, message)| Problem::new(path, message))
        .collect();
    if schema.is_empty() {
        return problems;
    }
    // A field the schema refused is often refused again by serde or a rule, in other words.
    problems.retain(|p| {
        !schema.iter().any(|s| {
            p.path == s.path
                || p.path.starts_with(&format!("{}.", s.path))
                || p.path.starts_with(&format!("{}[", s.path))
        })
    });
    let mut all = schema;
    all.extend(problems);
    all
}

/// Checks every document of a (multi-document) YAML text; empty documents are skipped.
pub fn check_yaml(text: &str) -> Vec<DocumentProblem> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = match Value::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                let at = e
                    .location()
                    .map(|l| format!("line {} column {}", l.line(), l.column()));
                let problem = Problem::new(
                    at.unwrap_or_else(|| "yaml".into()),
                    format!("not valid YAML: {e}"),
                );
                out.push(DocumentProblem { document, problem });
                // The rest of the stream cannot be trusted after a syntax error.
                break;
            }
        };
        out.extend(
            check_file_object(&value)
                .into_iter()
                .map(|problem| DocumentProblem { document, problem }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        check_yaml(yaml)
            .into_iter()
            .map(|p| p.problem.to_string())
            .collect()
    }

    fn bookies(max_size: &str) -> String {
        format!(
            "apiVersion: pulsar-autoscaler.dev/v1alpha1\nkind: ScalingPolicy\n\
             metadata: {{name: p}}\nspec:\n  bookies: {{statefulSet: b, maxSize: {max_size}}}\n"
        )
    }

    fn source_with(url: &str, insecure: bool) -> Source {
        Source {
            kind: SourceType::Prometheus,
            url: Some(url.into()),
            timeout: Duration::from_secs(5),
            max_staleness: Duration::from_secs(120),
            headers: BTreeMap::new(),
            auth: None,
            tls: Some(TlsSpec {
                ca_secret_ref: None,
                insecure_skip_verify: insecure,
            }),
        }
    }

    #[test]
    fn source_urls_carry_only_an_address() {
        assert!(source_url("http://prom.monitoring:9090/select/0/prometheus").is_ok());
        for (url, why) in [
            ("http://user:pw@prom:9090", "user name or password"),
            ("http://user@prom:9090", "user name or password"),
            ("http://prom:9090/?x=1", "query string"),
            ("http://prom:9090/#top", "fragment"),
            ("ftp://prom", "http:// or https://"),
            ("http://", "not a URL"),
        ] {
            let e = source_url(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
        assert!(source_url(&format!("http://p/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn allowed_sources_match_by_host_port_and_path_segment() {
        let a = AllowedSource::parse("http://prom.monitoring:9090").unwrap();
        let vm = AllowedSource::parse("https://vm.monitoring/select/1/").unwrap();
        let ok = |a: &AllowedSource, u: &str| a.allows(&source_url(u).unwrap());
        assert!(ok(&a, "http://prom.monitoring:9090"));
        assert!(ok(&a, "http://PROM.monitoring:9090/"));
        assert!(ok(&a, "http://prom.monitoring:9090/prometheus"));
        let short = AllowedSource::parse("http://prom.monitoring:90").unwrap();
        assert!(!ok(&short, "http://prom.monitoring:9090"));
        let host = AllowedSource::parse("http://prom.monitoring").unwrap();
        assert!(!ok(&host, "http://prom.monitoring.evil.example/"));
        assert!(!ok(&host, "http://prom.monitoring:8080/"));
        assert!(!ok(&a, "https://prom.monitoring:9090"));
        assert!(!ok(&a, "http://prom.monitoring"));
        assert!(ok(&vm, "https://vm.monitoring:443/select/1/prometheus"));
        assert!(ok(&vm, "https://vm.monitoring/select/1"));
        assert!(!ok(&vm, "https://vm.monitoring/select/10/prometheus"));
        assert!(!ok(&vm, "https://vm.monitoring/select/1/../2/prometheus"));
        assert!(AllowedSource::parse("http://u:p@prom").is_err());
        assert!(AllowedSource::parse("prom:9090").is_err());
    }

    #[test]
    fn admission_refuses_sources_outside_the_list_and_forbidden_tls() {
        let open = Admission::default();
        assert_eq!(
            open.check(&source_with("http://anything:1", true), None),
            Ok(())
        );
        let strict = Admission {
            allowed_sources: vec![AllowedSource::parse("http://prom:9090").unwrap()],
            forbid_insecure_skip_verify: true,
        };
        assert_eq!(
            strict.check(&source_with("http://prom:9090", false), None),
            Ok(())
        );
        let e = strict
            .check(&source_with("http://169.254.169.254/latest", false), None)
            .unwrap_err();
        assert_eq!(e.reason, "SourceNotAllowed");
        assert!(e.message.contains("http://prom:9090"), "{}", e.message);
        let e = strict
            .check(&source_with("http://prom:9090", true), None)
            .unwrap_err();
        assert_eq!(e.reason, "InsecureSkipVerifyForbidden");
        // Direct sources have no URL and are not refused by the list.
        let direct = Source {
            kind: SourceType::Direct,
            url: None,
            tls: None,
            ..source_with("http://x", false)
        };
        assert_eq!(strict.check(&direct, None), Ok(()));
        // The brokers' admin API is held to the same rule.
        let admin: AdminSpec = serde_json::from_value(serde_json::json!({
            "scheme": "https", "tls": {"insecureSkipVerify": true}}))
        .unwrap();
        assert!(admin_insecure(Some(&admin)));
        assert_eq!(open.check(&direct, Some(&admin)), Ok(()));
        let e = strict.check(&direct, Some(&admin)).unwrap_err();
        assert_eq!(e.reason, "InsecureSkipVerifyForbidden");
        assert!(e.message.contains("brokers.admin.tls"), "{}", e.message);
    }

    #[test]
    fn timeout_must_be_shorter_than_the_interval() {
        let yaml = |interval: &str, timeout: &str| {
            format!(
                "apiVersion: pulsar-autoscaler.dev/v1alpha1\nkind: ScalingPolicy\n\
                 metadata: {{name: p}}\nspec:\n  interval: {interval}\n  metricsSource: \
                 {{url: \"http://prom:9090\", timeout: {timeout}}}\n  \
                 bookies: {{statefulSet: b, maxSize: 2Ti}}\n"
            )
        };
        assert!(problems(&yaml("15s", "5s")).is_empty());
        assert_eq!(
            default_timeout(Duration::from_secs(2)),
            Duration::from_millis(1500)
        );
        assert_eq!(default_timeout(Duration::from_secs(15)), DEFAULT_TIMEOUT);
        assert_eq!(
            problems(&yaml("10s", "10s")),
            ["spec: metricsSource.timeout must be shorter than interval"]
        );
        // Days are beyond CEL's durations: the Rust rule still holds.
        assert_eq!(
            problems(&yaml("1d", "2d")),
            ["spec.metricsSource.timeout: must be shorter than spec.interval (1d), got 2d"]
        );
    }

    #[test]
    fn bounded_cuts_on_characters() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("ééééé", 3), "éé…");
        assert_eq!(bounded("abc", 0), "…");
    }

    #[test]
    fn fractional_number_quantities_must_be_quoted() {
        assert_eq!(
            problems(&bookies("1.5")),
            [
                "spec.bookies.maxSize: 1.5 must be quoted, e.g. \"1.5\": quantities are integers or strings"
            ]
        );
        assert!(problems(&bookies("\"1.5\"")).is_empty());
        assert!(problems(&bookies("2000000")).is_empty());
        assert!(problems(&bookies("2.0")).is_empty());
    }
}
