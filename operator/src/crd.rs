//! The `ZoriProject` custom resource (`zoriprojects.zori.dev/v1alpha1`): its Rust types, the
//! schema generated from them, and the YAML committed in `crds/`.
//!
//! The schema says what a plain schema can say (types, enums, ranges, patterns); cross-field
//! rules are CEL (`x-kubernetes-validations`). [`crate::config::validate`] checks the same rules
//! again, so an API server that skipped them (or the in-memory one) still gets a clear condition.

use std::{borrow::Cow, collections::BTreeMap, fmt};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    ValidationRule,
};
use kube::{CustomResource, CustomResourceExt};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::status::Condition;

/// API group of the Zori resources.
pub const GROUP: &str = "zori.dev";
/// Version of the `ZoriProject` API.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of a `ZoriProject`.
pub const API_VERSION: &str = "zori.dev/v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "ZoriProject";
/// Name of the CustomResourceDefinition.
pub const CRD_NAME: &str = "zoriprojects.zori.dev";

/// A Kubernetes duration such as `168h`, `90m`, `30s` or `1h30m` (the units `CEL` understands).
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";
/// A Kubernetes quantity such as `250m`, `1`, `512Mi` or `1Gi`.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
/// An `http(s)` origin: scheme, host and optional port, nothing else.
pub const ORIGIN_PATTERN: &str = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$";
/// A DNS name for an Ingress rule (no wildcard: the tracking endpoint is one host).
pub const HOST_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// The name of a Kubernetes object that is a DNS subdomain.
pub const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// The key of a Secret's data.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// One tenant of Zori: a site whose visits are tracked and whose Stripe revenue is attributed to
/// the traffic sources that first brought its visitors. The operator gives it its own JetStream
/// stream, PostgreSQL schema and role, ClickHouse database, credentials Secret, and the
/// `<name>-ingest` and `<name>-api` workloads.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "zori.dev",
    version = "v1alpha1",
    kind = "ZoriProject",
    plural = "zoriprojects",
    singular = "zoriproject",
    shortname = "zp",
    category = "zori",
    namespaced,
    status = "ZoriProjectStatus",
    derive = "PartialEq",
    doc = "A Zori tenant: its site's tracking endpoint, webhook endpoint, stream and databases.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Tracking","type":"string","jsonPath":".status.endpoints.tracking"}"#,
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".status.tenantId","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.streamLimits) || !has(self.retention) || !has(self.streamLimits.duplicateWindow) || !has(self.retention.streamMaxAge) || duration(self.streamLimits.duplicateWindow) <= duration(self.retention.streamMaxAge)",
        "message": "streamLimits.duplicateWindow must not be longer than retention.streamMaxAge",
        "fieldPath": ".streamLimits.duplicateWindow",
        "reason": "FieldValueInvalid"
    }
]))]
pub struct ZoriProjectSpec {
    /// Origins of the tenant's site, such as `https://shop.example.com`. Only these get CORS
    /// answers from the tracking endpoint, and tracked pages must be on these hosts.
    #[schemars(length(min = 1, max = 32), inner(regex(pattern = ORIGIN_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allowed_origins: Vec<String>,

    /// The tracking endpoint (`zori-ingest`) that browsers send events to.
    #[serde(default)]
    pub ingest: IngestSpec,

    /// The api (`zori-api`): consumes the stream, receives Stripe webhooks, serves reports.
    #[serde(default)]
    pub api: WorkloadSpec,

    /// Stripe settings; without them the webhook endpoint answers 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeSpec>,

    /// How touches and payments are attributed.
    #[serde(default)]
    pub attribution: AttributionSpec,

    /// How long data is kept.
    #[serde(default)]
    pub retention: RetentionSpec,

    /// Bounds of the tenant's JetStream stream.
    #[serde(default)]
    pub stream_limits: StreamLimitsSpec,

    /// Exposes the tracking, reports, webhook and dashboard paths on one host through an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,

    /// What happens to the stream, the PostgreSQL schema and role, and the ClickHouse database
    /// when the ZoriProject is deleted: `Retain` (default) keeps them, `Delete` drops them.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,

    /// Takes the tenant offline: both Deployments are scaled to zero; the stream, schemas,
    /// database and Secret are kept and still reconciled.
    #[serde(default)]
    pub suspend: bool,
}

/// The settings every workload has.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Number of pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,

    /// Container image; defaults to the operator's `--default-image-repository` and
    /// `--default-image-tag` (`<repository>/zori-ingest:<tag>`, `<repository>/zori-api:<tag>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy; Kubernetes' default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// CPU and memory of the container.
    #[serde(default)]
    pub resources: ResourcesSpec,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            image: None,
            image_pull_policy: None,
            resources: ResourcesSpec::default(),
        }
    }
}

/// Settings of the tracking endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestSpec {
    #[serde(flatten)]
    pub workload: WorkloadSpec,

    /// Per-window event budgets, answered with 429 when exceeded.
    #[serde(default)]
    pub rate_limits: RateLimitsSpec,

    /// Header carrying the client address. Defaults to `x-forwarded-for` when an ingress is
    /// configured, else the peer address is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub client_ip_header: Option<String>,

    /// How many proxies in front of ingest append to the client address header (a load
    /// balancer and an ingress controller are 2): the client address is the right-most entry
    /// none of them added. 0 ignores the header. Defaults to zori-ingest's default, 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub trusted_proxies: Option<i32>,

    /// Identity verification of `identify()`: `Disabled` trusts every identify; `Ignore` stores an
    /// identify without a valid signature apart, so it never links a visitor to a user (it
    /// cannot move attribution or a user's name); `Refuse` answers it with 403. Identities
    /// signed with the Secret's `identity-secret`, and identifies sent with the API token, are
    /// always trusted.
    #[serde(default)]
    pub identity_verification: IdentityVerification,
}

/// How `zori-ingest` treats an `identify()` without a valid signature.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
/// (Not `Off`: YAML 1.1 parsers, kubectl's among them, read a bare `Off` as false.)
pub enum IdentityVerification {
    #[default]
    Disabled,
    Ignore,
    Refuse,
}

impl IdentityVerification {
    /// As `--identity-verification` reads it.
    pub fn as_flag(self) -> &'static str {
        match self {
            IdentityVerification::Disabled => "off",
            IdentityVerification::Ignore => "ignore",
            IdentityVerification::Refuse => "refuse",
        }
    }
}

/// Rate limits of the tracking endpoint (`0` turns a limit off).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitsSpec {
    /// Events one visitor may send per window.
    #[serde(default = "default_per_visitor")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub per_visitor: i64,

    /// Events one client address may send per window.
    #[serde(default = "default_per_ip")]
    #[schemars(range(min = 0, max = 10_000_000))]
    pub per_ip: i64,

    /// Length of the window, whole seconds (`60s`, `5m`).
    #[serde(default = "default_rate_window")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub window: String,
}

impl Default for RateLimitsSpec {
    fn default() -> Self {
        Self {
            per_visitor: default_per_visitor(),
            per_ip: default_per_ip(),
            window: default_rate_window(),
        }
    }
}

/// CPU and memory of a container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.requests) || !has(self.limits) || !has(self.requests.cpu) || !has(self.limits.cpu) || quantity(string(self.requests.cpu)).compareTo(quantity(string(self.limits.cpu))) <= 0",
        "message": "requests.cpu must not be more than limits.cpu"
    },
    {
        "rule": "!has(self.requests) || !has(self.limits) || !has(self.requests.memory) || !has(self.limits.memory) || quantity(string(self.requests.memory)).compareTo(quantity(string(self.limits.memory))) <= 0",
        "message": "requests.memory must not be more than limits.memory"
    }
]))]
pub struct ResourcesSpec {
    /// What the scheduler reserves (defaults: cpu 50m, memory 64Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceAmounts>,
    /// Upper bounds (default: memory 256Mi for ingest, 512Mi for api; no cpu limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceAmounts>,
}

/// An amount of CPU and memory.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAmounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Quantity")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Quantity")]
    pub memory: Option<Quantity>,
}

/// Where the api finds the Stripe webhook signing secret(s).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StripeSpec {
    /// A Secret in the ZoriProject's namespace whose key holds the webhook signing secret
    /// (`whsec_…`), or several separated by commas during a rotation.
    pub webhook_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
    /// Key in the Secret's data.
    #[serde(default = "default_webhook_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

/// How revenue is attributed and which events count.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributionSpec {
    /// Attribution model. `FirstTouch`: a payment is credited to the source that first brought
    /// the visitor (or, for identified users, their earliest first touch).
    #[serde(default)]
    pub model: AttributionModel,

    /// Events of known bots and crawlers: `Drop` (default) stores nothing, `Flag` stores them
    /// marked as bots, outside the attribution.
    #[serde(default)]
    pub bot_traffic: BotTraffic,

    /// Client timestamps older than this are replaced by the receive time (default `72h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub max_past_skew: Option<String>,

    /// Client timestamps further in the future than this are replaced by the receive time
    /// (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub max_future_skew: Option<String>,

    /// How far before a payment a touch may be and still be credited (default `2160h`, 90
    /// days). A payment's credit is computed once when it arrives and stored, so changing this
    /// moves only payments that arrive afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub lookback: Option<String>,
}

/// How long data is kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// How long accepted events stay in the JetStream stream (the replay window; the api
    /// consumes them within seconds). Kubernetes duration, default `168h`.
    #[serde(default = "default_stream_max_age")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub stream_max_age: String,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self {
            stream_max_age: default_stream_max_age(),
        }
    }
}

/// Bounds of the tenant's JetStream stream. A full stream refuses new events (503 at the edge)
/// instead of dropping accepted ones.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamLimitsSpec {
    /// Most bytes the stream holds (quantity, default `1Gi`, at least `1Mi`).
    #[serde(default = "default_stream_max_bytes")]
    pub max_bytes: Quantity,

    /// Most messages the stream holds; `-1` for no limit (default).
    #[serde(default = "default_stream_max_messages")]
    #[schemars(range(min = -1))]
    pub max_messages: i64,

    /// Window in which a repeated event id is stored only once (default `2m`, at least `1s`).
    #[serde(default = "default_duplicate_window")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub duplicate_window: String,

    /// JetStream replicas of the stream (1, 3 or 5 on a cluster).
    #[serde(default = "default_stream_replicas")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,
}

impl Default for StreamLimitsSpec {
    fn default() -> Self {
        Self {
            max_bytes: default_stream_max_bytes(),
            max_messages: default_stream_max_messages(),
            duplicate_window: default_duplicate_window(),
            replicas: default_stream_replicas(),
        }
    }
}

/// One host in front of both workloads: the tracking paths (`/ingest`, `/identify`, `/batch`,
/// `/zori.js`, `/v/…`) go to `<name>-ingest`; the reports (`/api/…`), the webhooks
/// (`/webhooks/…`) and the dashboard (`/` exactly, `/assets/…`, `/session…`) to `<name>-api`.
/// `/metrics`, `/readyz` and `/healthz` are not routed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name, such as `t.shop.example.com`.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: String,

    /// IngressClass; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub class_name: Option<String>,

    /// Secret holding the TLS certificate for the host; without it the endpoints are plain
    /// HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub tls_secret_name: Option<String>,

    /// Annotations for the Ingress (for example for cert-manager or the ingress controller).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What deletion of the ZoriProject does to the data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Keep the stream, schema, role and database (default).
    #[default]
    Retain,
    /// Drop them.
    Delete,
}

/// Attribution models.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AttributionModel {
    #[default]
    FirstTouch,
}

/// What happens to bot traffic.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BotTraffic {
    #[default]
    Drop,
    Flag,
}

/// Image pull policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// A Kubernetes quantity, written as a string (`512Mi`) or a number (`1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity(pub String);

impl Quantity {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Text(String),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::Int(n) => Quantity(n.to_string()),
            Raw::Float(n) => Quantity(n.to_string()),
            Raw::Text(s) => Quantity(s),
        })
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "description": "A Kubernetes quantity such as 250m, 1, 512Mi or 1Gi."
        })
    }
}

/// What the operator observed and pinned.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoriProjectStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` summarises; one condition per backend and per workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Tenant id, derived from namespace and name once and never changed afterwards (the API
    /// server refuses a change; the operator refuses an id it could not have derived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "status.tenantId is immutable once pinned"}
    ]))]
    pub tenant_id: Option<String>,

    /// Names of the external objects, derived from the tenant id and pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<PinnedNames>,

    /// Where the tenant's endpoints answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
}

/// Names of what the operator provisioned for the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinnedNames {
    /// JetStream stream (`ZORI_<ID>`).
    pub stream: String,
    /// Subjects of the stream (`zori.<id>.>`).
    pub subjects: String,
    /// PostgreSQL schema (`zori_<id>`).
    pub postgres_schema: String,
    /// PostgreSQL login role that can use only that schema (`zori_<id>`).
    pub postgres_role: String,
    /// ClickHouse database (`zori_<id>`).
    pub clickhouse_database: String,
    /// Secret with the tenant's keys and credentials.
    pub secret: String,
}

/// The tenant's endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// Base URL browsers send events to.
    pub tracking: String,
    /// URL of the tracker script for the site's `<script>` tag.
    pub tracker_script: String,
    /// Base URL of the reports API (`…/api/v1`, bearer token from the Secret's `api-token`).
    pub api: String,
    /// URL to register as the Stripe webhook endpoint.
    pub stripe_webhook: String,
}

fn default_replicas() -> i32 {
    1
}
fn default_per_visitor() -> i64 {
    600
}
fn default_per_ip() -> i64 {
    3000
}
fn default_rate_window() -> String {
    "60s".to_owned()
}
fn default_webhook_key() -> String {
    "webhook-secret".to_owned()
}
fn default_stream_max_age() -> String {
    "168h".to_owned()
}
fn default_stream_max_bytes() -> Quantity {
    Quantity::new("1Gi")
}
fn default_stream_max_messages() -> i64 {
    -1
}
fn default_duplicate_window() -> String {
    "2m".to_owned()
}
fn default_stream_replicas() -> i32 {
    1
}

#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("failed to render the ZoriProject CRD as YAML: {0}")]
    Render(#[from] serde_yaml::Error),
}

/// Rule on the object's name: it names the `<name>-ingest` and `<name>-api` Services, which must
/// be DNS-1035 labels of at most 63 characters.
pub const NAME_RULE: &str =
    "size(self.metadata.name) <= 56 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";

/// Undoes two rewrites kube's structural-schema pass (kube 4+) makes to [`Quantity`] fields,
/// so that they read as the API server's own int-or-string fields: it strips the types from
/// the `anyOf` branches (leaving `anyOf: [{}, {}]`), and marks optional ones `nullable`, which
/// would keep a `cpu: null` (pruned otherwise) for the CEL rules on requests and limits to
/// trip over.
fn restore_int_or_string(props: &mut JSONSchemaProps) {
    if props.x_kubernetes_int_or_string == Some(true) {
        props.nullable = None;
        let typed = |type_: &str| JSONSchemaProps {
            type_: Some(type_.to_owned()),
            ..JSONSchemaProps::default()
        };
        props.any_of = Some(vec![typed("integer"), typed("string")]);
    }
    for child in props.properties.iter_mut().flat_map(BTreeMap::values_mut) {
        restore_int_or_string(child);
    }
    match &mut props.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => restore_int_or_string(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            items.iter_mut().for_each(restore_int_or_string)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &mut props.additional_properties {
        restore_int_or_string(values);
    }
}

/// The CustomResourceDefinition: the derived one plus the root-level rule on the name.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = ZoriProject::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            restore_int_or_string(schema);
            schema.x_kubernetes_validations = Some(vec![ValidationRule {
                rule: NAME_RULE.to_owned(),
                message: Some(
                    "metadata.name must be at most 56 characters of a-z, 0-9 and -, starting with a letter \
                     (it names the <name>-ingest and <name>-api Services)"
                        .to_owned(),
                ),
                field_path: None,
                message_expression: None,
                reason: None,
                optional_old_self: None,
            }]);
        }
    }
    crd
}

/// The CustomResourceDefinition as YAML, exactly as committed in `crds/zoriprojects.zori.dev.yaml`.
pub fn crd_yaml() -> Result<String, CrdError> {
    let body = serde_yaml::to_string(&crd())?;
    Ok(format!(
        "# Generated by `zori-operator crd` from operator/src/crd.rs. Do not edit by hand.\n{body}"
    ))
}
