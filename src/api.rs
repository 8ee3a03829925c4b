//! The `ScalingPolicy` custom resource: spec and status as users and the API server see them.
//!
//! These are wire types: strings for durations and quantities, exactly as written by the user.
//! [`crate::policy`] turns a spec into typed, checked settings; the CEL rules here are the part
//! of that checking the API server can do itself.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Field manager used for every patch the controller makes.
pub const FIELD_MANAGER: &str = "pulsar-autoscaler";

/// CEL rule for positive int-or-string quantities (`50Mi`, `"20000"`, `20000`).
// Not `.sign()`: kube-apiserver declares `sign` as a global function, not a Quantity method,
// and refuses the CRD when it meets `quantity(...).sign()`.
const POSITIVE_QUANTITY: &str =
    "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))";
/// Pattern of a duration the controller accepts: whole units, e.g. `30s`, `10m`, `1h30m`.
const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";

/// Declares how one Pulsar cluster's brokers and bookie volumes are scaled.
// Several printer columns share a type; clippy mistakes that for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pulsar-autoscaler.dev",
    version = "v1alpha1",
    kind = "ScalingPolicy",
    namespaced,
    shortname = "sp",
    status = "Box<ScalingPolicyStatus>",
    derive = "PartialEq",
    doc = "Declares how a Pulsar cluster's brokers are scaled and its bookie volumes grown.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "whether the policy can do its job; the Reason column (-o wide) says why not"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.brokers.statefulSet",
        description = "broker StatefulSet"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.brokers.currentReplicas",
        description = "broker replicas now"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.brokers.desiredReplicas",
        description = "broker replicas the policy wants"
    ),
    printcolumn(
        name = "Metrics",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"MetricsAvailable\")].status",
        description = "whether every metric had fresh data"
    ),
    printcolumn(
        name = "Dry Run",
        type_ = "boolean",
        json_path = ".spec.dryRun",
        description = "decisions are recorded, nothing is changed"
    ),
    printcolumn(
        name = "Last Action",
        type_ = "string",
        json_path = ".status.decisions[0].action",
        description = "newest decision"
    ),
    printcolumn(
        name = "Last Dry Run",
        type_ = "boolean",
        json_path = ".status.decisions[0].dryRun",
        description = "whether the newest decision was only recorded (dry run)",
        priority = "1"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "why the policy is or is not Ready",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.brokers) || has(self.bookies)").message("set at least one of brokers or bookies"),
    // Days are ours, not CEL's: such policies are left to the controller's own check.
    validation = Rule::new("!has(self.metricsSource) || !has(self.metricsSource.timeout) || self.interval.contains('d') || self.metricsSource.timeout.contains('d') || duration(self.metricsSource.timeout) < duration(self.interval)").message("metricsSource.timeout must be shorter than interval"),
)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicySpec {
    /// Evaluation period. Default `15s`.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub interval: String,
    /// Decide and record everything, change nothing. Default `false`.
    #[serde(default)]
    pub dry_run: bool,
    /// Stop evaluating and acting; status says `Suspended`. Default `false`.
    #[serde(default)]
    pub suspend: bool,
    /// Where metrics come from. Default: `Direct` (scrape the pods, no Prometheus needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_source: Option<MetricsSourceSpec>,
    /// Broker StatefulSet scaling. Optional when `bookies` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<BrokerSpec>,
    /// Bookie volume expansion. Optional when `brokers` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookies: Option<Box<BookieSpec>>,
    /// Per-policy limit on changes of any kind. Default 12 per hour with a burst of 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

/// Which kind of server answers metric queries.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SourceType {
    /// Prometheus HTTP API.
    Prometheus,
    /// VictoriaMetrics, single node or cluster (`/select/<tenant>/prometheus`).
    VictoriaMetrics,
    /// Scrape broker and bookie pods directly; volume usage from the kubelet summary API.
    Direct,
}

/// Connection settings of the metrics source.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.type) && self.type == 'Direct') || !has(self.type) || has(self.url)").message("url is required for Prometheus and VictoriaMetrics sources"))]
#[serde(rename_all = "camelCase")]
pub struct MetricsSourceSpec {
    /// `Prometheus`, `VictoriaMetrics` or `Direct`. Default: `Direct` when `url` is absent, else `Prometheus`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<SourceType>,
    /// Base URL of the query API, e.g. `http://prometheus.monitoring:9090`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("url must start with http:// or https://"),
        validation = Rule::new("!self.matches('^[a-z]+://[^/]*@')").message("url must not carry a user name or password; use auth"),
        validation = Rule::new("!self.contains('?') && !self.contains('#')").message("url must not have a query string or fragment"),
    )]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// Timeout of one query or scrape; must be shorter than `interval`. Default `5s`, or three
    /// quarters of `interval` when that is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub timeout: Option<String>,
    /// A sample older than this counts as missing, never as zero. Default `2m`.
    #[serde(default = "default_max_staleness")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_staleness: String,
    /// Extra HTTP headers sent with every query, e.g. `X-Scope-OrgID`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Credentials, read from Secrets in the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// TLS settings for `https://` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// Credentials for the metrics source; at most one kind.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.bearerTokenSecretRef) && has(self.basicAuthSecretRef))").message("set only one of bearerTokenSecretRef and basicAuthSecretRef"))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret key holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// Secret with `username` and `password` keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_secret_ref: Option<SecretRef>,
}

/// TLS settings of the metrics source.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret key holding a PEM CA bundle that signs the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Accept any server certificate. Default `false`; for tests only.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A key of a Secret in the policy's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A Secret in the policy's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// How the broker StatefulSet is scaled.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"),
    validation = Rule::new("!has(self.scaleUp) || !has(self.scaleUp.drain)").message("drain belongs under scaleDown"),
    validation = Rule::new("!has(self.scaleDown) || !has(self.scaleDown.rebalance)").message("rebalance belongs under scaleUp"),
    validation = Rule::new("has(self.admin) || ((!has(self.scaleDown) || !has(self.scaleDown.drain)) && (!has(self.scaleUp) || !has(self.scaleUp.rebalance)))").message("scaleDown.drain and scaleUp.rebalance need brokers.admin"),
)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// Name of the broker StatefulSet in the policy's namespace.
    #[schemars(length(min = 1))]
    pub stateful_set: String,
    /// Lower bound of replicas. Default `1`.
    #[serde(default = "default_min_replicas")]
    #[x_kube(validation = Rule::new("self >= 1").message("minReplicas must be at least 1"))]
    pub min_replicas: i32,
    /// Upper bound of replicas.
    pub max_replicas: i32,
    /// No change while every metric's ratio to its target is within ±tolerance. Default `0.1`.
    #[serde(default = "default_tolerance")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self < 1.0").message("tolerance must be in [0, 1)"))]
    pub tolerance: f64,
    /// Metrics, each proposing a replica count; the largest proposal wins.
    #[schemars(length(min = 1, max = 16))]
    pub metrics: Vec<BrokerMetric>,
    /// Scale-up behaviour. Default: no stabilization, 1m cooldown, up to max(4 replicas, 100 %) per step.
    #[serde(default = "ScalingRules::default_up")]
    pub scale_up: ScalingRules,
    /// Scale-down behaviour. Default: 10m stabilization, 5m cooldown, 1 replica per step.
    #[serde(default = "ScalingRules::default_down")]
    pub scale_down: ScalingRules,
    /// Predictive scale-up and flap damping. Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastSpec>,
    /// The Pulsar admin API of each broker pod; enables drain before scale-down and rebalance
    /// after scale-up. Without it, scale-downs remove brokers without moving their bundles first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Box<AdminSpec>>,
}

/// How the controller reaches each broker pod's admin API: `<scheme>://<pod IP>:<port>`, never
/// the shared Service, because bundle lists and health answer only on the broker itself.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdminSpec {
    /// Admin (web service) port of a broker pod. Default `8080`.
    #[serde(default = "default_admin_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("admin.port must be in [1, 65535]"))]
    pub port: i32,
    /// `http` or `https`. Default `http`.
    #[serde(default)]
    pub scheme: AdminScheme,
    /// Credentials for the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AdminAuthSpec>,
    /// TLS settings for `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

fn default_admin_port() -> i32 {
    8080
}

/// Scheme of the broker admin API.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdminScheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTPS, verified against `tls.caSecretRef` or the system roots.
    Https,
}

/// Credentials for the broker admin API.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminAuthSpec {
    /// Secret key holding a Pulsar JWT, sent as a bearer token.
    pub token_secret_ref: SecretKeyRef,
}

/// Drain before scale-down: move the leaving brokers' bundles onto the others first.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// Not drained by then: keep the broker and say why; never remove it blind. Default `5m`.
    #[serde(default = "default_drain_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub timeout: String,
    /// Bundle unloads per second at most, over all draining brokers. Default `10`.
    #[serde(default = "default_unloads_per_second")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("maxUnloadsPerSecond must be in [1, 1000]"))]
    pub max_unloads_per_second: i32,
}

impl Default for DrainSpec {
    fn default() -> Self {
        DrainSpec {
            timeout: default_drain_timeout(),
            max_unloads_per_second: default_unloads_per_second(),
        }
    }
}

/// Rebalance after scale-up: once added brokers are Ready, move bundles onto them.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Bundle unloads per second at most. Default `10`.
    #[serde(default = "default_unloads_per_second")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("maxUnloadsPerSecond must be in [1, 1000]"))]
    pub max_unloads_per_second: i32,
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        RebalanceSpec {
            max_unloads_per_second: default_unloads_per_second(),
        }
    }
}

fn default_drain_timeout() -> String {
    "5m".into()
}
fn default_unloads_per_second() -> i32 {
    10
}

/// Pattern of `forecast.horizon`: `auto` or a duration.
const HORIZON_PATTERN: &str = r"^(auto|([0-9]+(ms|s|m|h|d))+)$";

/// Predictive scale-up: act on the load expected one horizon ahead, and hold capacity when the
/// load swings faster than the scale-down window absorbs.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ForecastSpec {
    /// Scale up on the forecast load (never down on it) and damp flapping. Default `false`.
    #[serde(default)]
    pub enabled: bool,
    /// How far ahead to look: `auto` (measured time from a scale-up until the new brokers
    /// report load) or a duration such as `2m`. Default `auto`.
    #[serde(default = "default_horizon")]
    #[schemars(regex(pattern = HORIZON_PATTERN))]
    pub horizon: String,
    /// Recommendation direction changes within one hour from which the load counts as
    /// flapping and capacity is held for its swings; the hold lasts while one fewer remain.
    /// Default `4`.
    #[serde(default = "default_flap_turns")]
    #[x_kube(validation = Rule::new("self >= 2 && self <= 60").message("flapTurnsPerHour must be in [2, 60]"))]
    pub flap_turns_per_hour: i32,
}

impl Default for ForecastSpec {
    fn default() -> Self {
        ForecastSpec {
            enabled: false,
            horizon: default_horizon(),
            flap_turns_per_hour: default_flap_turns(),
        }
    }
}

fn default_horizon() -> String {
    "auto".into()
}
fn default_flap_turns() -> i32 {
    4
}

/// What a broker metric measures.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum MetricType {
    /// Bytes per second in + out, summed over brokers; target per broker.
    Throughput,
    /// Messages per second in + out, summed over brokers; target per broker.
    MessageRate,
    /// JVM heap used / max, averaged over brokers; target utilization in percent.
    HeapMemory,
    /// JVM direct memory used / max, averaged over brokers; target utilization in percent.
    DirectMemory,
    /// A user PromQL query whose value is a cluster total; target per broker.
    Custom,
}

impl MetricType {
    /// Whether the metric is a utilization percentage (as opposed to a cluster total).
    pub fn is_utilization(self) -> bool {
        matches!(self, MetricType::HeapMemory | MetricType::DirectMemory)
    }
}

/// One broker metric and its target.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.type == 'Custom' ? (has(self.name) && has(self.query)) : true").message("a Custom metric needs both name and query"),
    validation = Rule::new("(self.type == 'HeapMemory' || self.type == 'DirectMemory') ? has(self.targetUtilization) : has(self.targetPerBroker)").message("HeapMemory and DirectMemory need targetUtilization; Throughput, MessageRate and Custom need targetPerBroker"),
)]
#[serde(rename_all = "camelCase")]
pub struct BrokerMetric {
    /// `Throughput`, `MessageRate`, `HeapMemory`, `DirectMemory` or `Custom`.
    #[serde(rename = "type")]
    pub type_: MetricType,
    /// Name shown in status, events and metrics. Default: the type in lower case; required for `Custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$')").message("name must be lower-case letters, digits, '-' or '_'"))]
    pub name: Option<String>,
    /// PromQL for `Custom`; `{{namespace}}` is replaced by the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub query: Option<String>,
    /// Target value per broker for totals (`50Mi` bytes/s, `"20000"` msgs/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Bounds the CEL rule's estimated cost: unbounded strings in a list exceed the CRD budget.
    #[schemars(extend("maxLength" = 64))]
    #[x_kube(validation = Rule::new(POSITIVE_QUANTITY).message("targetPerBroker must be a positive quantity such as 50Mi or 20000"))]
    pub target_per_broker: Option<Quantity>,
    /// Target average utilization in percent, in (0, 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0 && self <= 100").message("targetUtilization must be in (0, 100]"))]
    pub target_utilization: Option<i32>,
}

/// Behaviour of one scaling direction.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// Scale up to the lowest (down: highest) recommendation seen in this window.
    #[serde(default = "zero_duration")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub stabilization_window: String,
    /// Minimum time after the previous change before this direction acts again.
    #[serde(default = "zero_duration")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub cooldown: String,
    /// Largest change per action: the larger of the two limits when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step: Option<MaxStep>,
    /// Scale-down only, with `admin`: drain the leaving brokers before removing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainSpec>,
    /// Scale-up only, with `admin`: move load onto added brokers once they are Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceSpec>,
}

impl ScalingRules {
    fn default_up() -> Self {
        ScalingRules {
            stabilization_window: "0s".into(),
            cooldown: "1m".into(),
            max_step: Some(MaxStep {
                replicas: Some(4),
                percent: Some(100),
            }),
            drain: None,
            rebalance: None,
        }
    }

    fn default_down() -> Self {
        ScalingRules {
            stabilization_window: "10m".into(),
            cooldown: "5m".into(),
            max_step: Some(MaxStep {
                replicas: Some(1),
                percent: None,
            }),
            drain: None,
            rebalance: None,
        }
    }
}

/// Largest change of one action.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.replicas) || has(self.percent)").message("maxStep needs replicas, percent or both"))]
pub struct MaxStep {
    /// Replicas added or removed at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxStep.replicas must be at least 1"))]
    pub replicas: Option<i32>,
    /// Percent of the current replicas added or removed at most, in (0, 100] (up may exceed 100 via replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0 && self <= 100").message("maxStep.percent must be in (0, 100]"))]
    pub percent: Option<i32>,
}

/// How bookie volumes grow.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BookieSpec {
    /// Name of the bookie StatefulSet in the policy's namespace.
    #[schemars(length(min = 1))]
    pub stateful_set: String,
    /// Which of its volumeClaimTemplates to watch. Default: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub volume_claim_templates: Vec<String>,
    /// Expand a claim when its used space reaches this percent, in (0, 100). Default `80`.
    #[serde(default = "default_expand_at")]
    #[x_kube(validation = Rule::new("self > 0 && self < 100").message("expandAtUsedPercent must be in (0, 100)"))]
    pub expand_at_used_percent: i32,
    /// How much one expansion adds. Default: 20 % of the claim, at least 10Gi.
    #[serde(default)]
    pub increase: VolumeIncrease,
    /// A claim never grows past this size.
    #[x_kube(validation = Rule::new(POSITIVE_QUANTITY).message("maxSize must be a positive quantity such as 2Ti"))]
    pub max_size: Quantity,
    /// Minimum time between two expansions of the same claim. Default `1h`.
    #[serde(default = "default_bookie_cooldown")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub cooldown: String,
}

/// Size added by one expansion: the larger of `percent` of the claim and `minimum`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct VolumeIncrease {
    /// Percent of the current request, in (0, 100]. Default `20`.
    #[serde(default = "default_increase_percent")]
    #[x_kube(validation = Rule::new("self > 0 && self <= 100").message("increase.percent must be in (0, 100]"))]
    pub percent: i32,
    /// At least this much per expansion. Default `10Gi`.
    #[serde(default = "default_increase_minimum")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))").message("increase.minimum must be a quantity such as 10Gi"))]
    pub minimum: Quantity,
}

impl Default for VolumeIncrease {
    fn default() -> Self {
        VolumeIncrease {
            percent: default_increase_percent(),
            minimum: default_increase_minimum(),
        }
    }
}

/// Token bucket over every change the policy makes.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained changes per hour. Default `12`.
    #[serde(default = "default_actions_per_hour")]
    #[x_kube(validation = Rule::new("self >= 1").message("rateLimit.actionsPerHour must be at least 1"))]
    pub actions_per_hour: i32,
    /// Changes allowed back to back. Default `4`.
    #[serde(default = "default_burst")]
    #[x_kube(validation = Rule::new("self >= 1").message("rateLimit.burst must be at least 1"))]
    pub burst: i32,
}

impl Default for RateLimitSpec {
    fn default() -> Self {
        RateLimitSpec {
            actions_per_hour: default_actions_per_hour(),
            burst: default_burst(),
        }
    }
}

fn default_interval() -> String {
    "15s".into()
}
fn default_max_staleness() -> String {
    "2m".into()
}
fn zero_duration() -> String {
    "0s".into()
}
fn default_min_replicas() -> i32 {
    1
}
fn default_tolerance() -> f64 {
    0.1
}
fn default_expand_at() -> i32 {
    80
}
fn default_increase_percent() -> i32 {
    20
}
fn default_increase_minimum() -> Quantity {
    Quantity("10Gi".into())
}
fn default_bookie_cooldown() -> String {
    "1h".into()
}
fn default_actions_per_hour() -> i32 {
    12
}
fn default_burst() -> i32 {
    4
}

/// Observed state, written by the controller only.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicyStatus {
    /// Generation of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, MetricsAvailable, ScalingLimited, RateLimited, Suspended, DryRun, Invalid.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Broker scaling state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<BrokerStatus>,
    /// Bookie volume state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookies: Option<BookieStatus>,
    /// Recent decisions, newest first, bounded.
    #[serde(default)]
    pub decisions: Vec<DecisionRecord>,
}

/// A condition in the style of `metav1.Condition`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `MetricsAvailable`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// What happened and what to do about it.
    pub message: String,
    /// When the status last changed.
    pub last_transition_time: Time,
    /// Generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Broker part of the status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// Replicas of the StatefulSet at the last evaluation.
    pub current_replicas: i32,
    /// Replicas the policy wants after stabilization, limits and clamps.
    pub desired_replicas: i32,
    /// Last scale-up actually made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up_time: Option<Time>,
    /// Last scale-down actually made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down_time: Option<Time>,
    /// Recommendation history the stabilization windows read; bounded by the longest window.
    #[serde(default)]
    pub recommendations: Vec<Recommendation>,
    /// Each metric's latest value and proposal.
    #[serde(default)]
    pub metrics: Vec<MetricStatus>,
    /// What the forecast remembers and last concluded; present when `forecast.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Box<ForecastStatus>>,
    /// Flap damping: recent direction changes of the recommendation and whether capacity is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flapping: Option<Box<FlapStatus>>,
    /// The rebalance after the last scale-up; present when `scaleUp.rebalance` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<Box<RebalanceStatus>>,
    /// The drain before a scale-down: in progress, or the last one abandoned (kept while a new
    /// attempt waits). The controller's only memory of it, so it survives restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Box<DrainStatus>>,
    /// A scale action recorded before its `/scale` patch and not yet settled: present only in
    /// the status written right before the patch. A controller that finds it (after a crash or
    /// a takeover) reads the StatefulSet and either publishes the action's missing Event or
    /// corrects the record of an action that never happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlightScale>,
}

/// A scale action or claim expansion between its record and its outcome.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlightScale {
    /// `ScaleUp`, `ScaleDown` or `Expand`.
    pub action: String,
    /// Replicas (or the claim's requested bytes) before.
    pub from: i64,
    /// Replicas (or the claim's requested bytes) after.
    pub to: i64,
    /// When it was decided: the time of its decision record.
    pub time: Time,
    /// The scale time of the same direction (or the claim's last expansion time) that the
    /// record replaced, put back if the action turns out not to have happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_time: Option<Time>,
}

/// Progress of moving bundles onto the brokers a scale-up added. Lives in the status so that a
/// restarted controller, or a new leader, carries on (or knows it is over).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    /// `Waiting` (added brokers not Ready or registered yet), `Moving`, `Done`, `Failed`
    /// (unloads kept failing or brokers never came up; see `message`) or `Stopped` (a
    /// scale-down started, or rebalance was switched off).
    pub state: String,
    /// Replicas before the scale-up.
    pub from_replicas: i32,
    /// Replicas the scale-up made; ordinals `fromReplicas..toReplicas` are the added brokers.
    pub to_replicas: i32,
    /// When the scale-up was carried out.
    pub started_at: Time,
    /// When the rebalance ended (Done, Failed or Stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Bundles each added broker should carry at least (floor of the mean), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair_share: Option<i32>,
    /// Bundles the added brokers owned at the last look, by broker id.
    #[serde(default)]
    pub added_brokers: Vec<RebalanceBroker>,
    /// Bundles moved so far.
    #[serde(default)]
    pub bundles_moved: i32,
    /// Failed admin calls so far (unloads, or an added broker that did not answer).
    #[serde(default)]
    pub failures: i32,
    /// What happened last, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A drain of the brokers a scale-down removes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainStatus {
    /// `Draining` while bundles move; `Abandoned` when it timed out or a broker was unreachable.
    pub phase: String,
    /// Replicas before the scale-down.
    pub from: i32,
    /// Replicas once the drained brokers are removed.
    pub to: i32,
    /// The leaving brokers, highest ordinals, with what each still owns.
    #[serde(default)]
    pub brokers: Vec<DrainBroker>,
    /// Bundles still owned by the leaving brokers at the last look.
    pub bundles_left: i32,
    /// Bundles moved off the leaving brokers so far.
    #[serde(default)]
    pub bundles_moved: i32,
    /// When the drain began.
    pub started_at: Time,
    /// When it was abandoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Why it is where it is, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One added broker as the rebalance last saw it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceBroker {
    /// Pod name.
    pub pod: String,
    /// Broker id, `<advertised address>:<web port>`, once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Bundles it owns (heartbeat namespaces left out).
    pub bundles: i32,
}

/// One leaving broker.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainBroker {
    /// Pod name, e.g. `pulsar-broker-2`.
    pub broker: String,
    /// Bundles it still owned at the last look (heartbeat namespaces left out).
    pub bundles_left: i32,
}

/// The forecast's bounded memory and its last conclusion.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForecastStatus {
    /// Measured time from the last scale-up until every new broker reported, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_horizon_seconds: Option<i64>,
    /// When that measurement was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<Time>,
    /// A scale-up whose new brokers have not all reported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_scale_up: Option<Recommendation>,
    /// The newest scale-up already taken into account (measured, pending or given up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_scale_up: Option<Time>,
    /// Recent complete samples per metric, the trend's input; bounded.
    #[serde(default)]
    pub samples: Vec<ForecastSeries>,
    /// The last forecast, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

/// Recent samples of one metric.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ForecastSeries {
    /// Metric name.
    pub metric: String,
    /// Sample times, oldest first.
    pub times: Vec<Time>,
    /// Values, one per time.
    pub values: Vec<f64>,
}

/// Flap damping state.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlapStatus {
    /// Whether scale-downs currently go no lower than the level the last hour's load needs.
    pub holding: bool,
    /// Direction changes of the recommendation within the last hour.
    pub turns_last_hour: i32,
    /// Times of those direction changes, oldest first; bounded.
    #[serde(default)]
    pub turns: Vec<Time>,
    /// Direction of the current run of recommendations: 1 up, -1 down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_direction: Option<i32>,
    /// Highest (up) or lowest (down) recommendation of the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extreme: Option<i32>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Fewest brokers that kept the load within tolerance, as a running maximum over the last
    /// hour (each entry is the highest since its time): what capacity is held at while flapping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<Recommendation>,
    /// Crests of those levels within the last hour, oldest first (each at the time the level
    /// fell from it); bounded. What most crests needed is what is held while flapping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crests: Vec<Recommendation>,
    /// Whether the level is in a rising run (`true`) or a falling one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_rising: Option<bool>,
    /// Highest (rising) or lowest (falling) level of the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_extreme: Option<i32>,
}

/// One remembered recommendation.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Recommendation {
    /// When it was last made.
    pub time: Time,
    /// Replicas recommended.
    pub replicas: i32,
}

/// One metric's latest evaluation.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// Metric name.
    pub name: String,
    /// Observed value (cluster total or average utilization); absent when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Target per broker, or target utilization.
    pub target: f64,
    /// Replicas this metric proposes; absent when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_replicas: Option<i32>,
    /// Timestamp of the sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
    /// Why no value is used, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Bookie part of the status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BookieStatus {
    /// Every watched claim.
    #[serde(default)]
    pub volumes: Vec<VolumeStatus>,
}

/// One bookie claim.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// PersistentVolumeClaim name.
    pub claim: String,
    /// Used space in percent of capacity; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_percent: Option<f64>,
    /// Capacity reported by the claim's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Quantity>,
    /// Size requested in the claim's spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<Quantity>,
    /// Healthy, Expanding, Resizing, CoolingDown, AtMaxSize, Blocked, MetricsMissing.
    pub state: String,
    /// Why the claim is in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Last expansion actually made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_expand_time: Option<Time>,
    /// An expansion recorded before its claim patch and not yet settled (`from`/`to` in
    /// bytes); settled by whoever evaluates next as for `brokers.inFlight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlightScale>,
}

/// One decision, as kept in the status log.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    /// When it was made.
    pub time: Time,
    /// `statefulset/<name>` or `pvc/<name>`.
    pub target: String,
    /// ScaleUp, ScaleDown, Expand, or Dropped… for limited ones.
    pub action: String,
    /// Replicas or bytes before.
    pub from: i64,
    /// Replicas or bytes after.
    pub to: i64,
    /// Why, in words.
    pub reason: String,
    /// Whether it was only recorded.
    #[serde(default)]
    pub dry_run: bool,
}
