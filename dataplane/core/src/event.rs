//! The event model: what browsers send (tolerant wire types) and what travels through the
//! stream once enriched (strict, versioned types shared by ingest and api).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::{channel::Channel, identity::IdentityProof};

/// Subject suffix carrying everything ingest accepted; the api consumes it.
pub const INGRESS_SUBJECT_SUFFIX: &str = "ingress";
/// Subject suffix of the dead-letter queue for messages that kept failing.
pub const DEAD_LETTER_SUBJECT_SUFFIX: &str = "dead";

/// Longest tenant id: `zori_` + 48 characters stays within PostgreSQL's 63-byte identifiers.
pub const MAX_TENANT_ID: usize = 48;

/// A tenant id names the tenant's stream, subjects, schema and database: `^[a-z0-9_]{1,48}$`.
pub fn is_valid_tenant_id(id: &str) -> bool {
    (1..=MAX_TENANT_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The stream subjects of one tenant, derived from its id (`acme_shop` → `zori.acme_shop.>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    pub stream: String,
    pub wildcard: String,
    pub ingress: String,
    pub dead_letter: String,
}

impl Subjects {
    pub fn for_tenant(tenant_id: &str) -> Self {
        Self {
            stream: format!("ZORI_{}", tenant_id.to_ascii_uppercase()),
            wildcard: format!("zori.{tenant_id}.>"),
            ingress: format!("zori.{tenant_id}.{INGRESS_SUBJECT_SUFFIX}"),
            dead_letter: format!("zori.{tenant_id}.{DEAD_LETTER_SUBJECT_SUFFIX}"),
        }
    }
}

/// The commands a tenant's data plane sends to Redis (the rate limiter's script and readiness
/// `PING`), as ACL rules.
pub const REDIS_ACL_COMMANDS: &str = "+evalsha +script|load +ping +incrby +expire";

/// One tenant's place in Redis: every key starts with `zori:{<id>}:` (the braces are the Redis
/// Cluster hash tag keeping a tenant's keys on one slot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    pub prefix: String,
}

impl RedisKeys {
    pub fn for_tenant(tenant_id: &str) -> Self {
        Self {
            prefix: format!("zori:{{{tenant_id}}}:"),
        }
    }

    /// The ACL user name of the tenant: `zori-<id>`.
    pub fn acl_user(tenant_id: &str) -> String {
        format!("zori-{tenant_id}")
    }

    /// The rules after `ACL SETUSER <user> reset on ><password>`: this prefix only, no Pub/Sub
    /// channel, only [`REDIS_ACL_COMMANDS`].
    pub fn acl_rules(&self) -> String {
        format!("~{}* resetchannels -@all {REDIS_ACL_COMMANDS}", self.prefix)
    }
}

// ---------------------------------------------------------------------------------------------
// Wire types: what the browser script (original and ours) sends. Tolerant: unknown fields are
// ignored, every field is optional, sizes are bounded during enrichment.
// ---------------------------------------------------------------------------------------------

/// Body of `POST /ingest` (the original script's format, see zori-spec §1.3) and one element of
/// the `events` array of `POST /batch`.
///
/// The fields our tracker (dataplane/tracker) sends also have one-letter aliases (`n`, `i`, `v`,
/// `s`, `t`, `r`, `u`, `p`, `e`, `c`): compact keys keep it within its size budget
/// (docs/tracker.md lists them). The long names stay accepted for the original script.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawEvent {
    #[serde(alias = "n")]
    pub event_name: Option<String>,
    #[serde(alias = "i")]
    pub client_generated_event_id: Option<String>,
    #[serde(alias = "v")]
    pub visitor_id: Option<String>,
    #[serde(alias = "s")]
    pub session_id: Option<String>,
    #[serde(alias = "t")]
    pub client_timestamp_utc: Option<String>,
    pub user_agent: Option<String>,
    #[serde(alias = "r")]
    pub referrer: Option<String>,
    /// The original sends the path only; ours sends the full URL. Both are accepted.
    #[serde(alias = "u")]
    pub page_url: Option<String>,
    pub host: Option<String>,
    pub page_title: Option<String>,
    pub utm_parameters: Option<BTreeMap<String, Value>>,
    #[serde(alias = "p")]
    pub custom_properties: Option<Map<String, Value>>,
    #[serde(alias = "e")]
    pub click_element: Option<RawClickElement>,
    #[serde(alias = "c")]
    pub click_position: Option<RawClickPosition>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawClickElement {
    pub tag: Option<String>,
    pub selector: Option<String>,
    pub text: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub href: Option<String>,
    pub target: Option<String>,
    #[serde(alias = "d")]
    pub data_attributes: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawClickPosition {
    pub x: Option<f64>,
    pub y: Option<f64>,
    #[serde(alias = "w")]
    pub screen_width: Option<f64>,
    #[serde(alias = "h")]
    pub screen_height: Option<f64>,
}

/// Body of `POST /identify` (zori-spec §1.5) and one element of the `identifies` array of
/// `POST /batch`. Compact aliases as in [`RawEvent`], and `a` for `additional_properties`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawIdentify {
    #[serde(alias = "i")]
    pub client_generated_event_id: Option<String>,
    #[serde(alias = "v")]
    pub visitor_id: Option<String>,
    #[serde(alias = "s")]
    pub session_id: Option<String>,
    #[serde(alias = "t")]
    pub client_timestamp_utc: Option<String>,
    #[serde(alias = "u")]
    pub page_url: Option<String>,
    pub host: Option<String>,
    pub app_id: Option<String>,
    pub email: Option<String>,
    pub fullname: Option<String>,
    pub full_name: Option<String>,
    #[serde(alias = "a")]
    pub additional_properties: Option<Map<String, Value>>,
    /// Identity verification: hex HMAC-SHA256 of `app_id` (else of `email`) with the tenant's
    /// identity secret, computed by the site's server (see [`crate::identity`]).
    pub signature: Option<String>,
}

/// Body of `POST /batch`: our batched form, one request for many events.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawBatch {
    pub events: Vec<RawEvent>,
    pub identifies: Vec<RawIdentify>,
}

// ---------------------------------------------------------------------------------------------
// Stream types: enriched by ingest, published with `Nats-Msg-Id` = `id`, consumed by api.
// ---------------------------------------------------------------------------------------------

/// One message on the tenant's ingress subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// Short-lived (built, serialised, dropped): the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum StreamMessage {
    Event(TrackedEvent),
    Identify(IdentifyRecord),
}

impl StreamMessage {
    /// The id used as `Nats-Msg-Id` and as the dedup key downstream.
    pub fn id(&self) -> &str {
        match self {
            StreamMessage::Event(e) => &e.id,
            StreamMessage::Identify(i) => &i.id,
        }
    }
}

/// A tracked event after validation and enrichment. Contains no raw IP and no email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedEvent {
    /// Client-made id (or one made by ingest when the client sent none).
    pub id: String,
    pub name: String,
    pub visitor_id: String,
    pub session_id: String,
    /// When it happened: the client's clock, clamped into the allowed skew around `received_at`.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub page: Page,
    pub referrer: Option<Referrer>,
    pub utm: Utm,
    /// Advertising click ids found in the page URL (`gclid`, `fbclid`, …), name → value.
    pub click_ids: BTreeMap<String, String>,
    /// Channel of this touch, from UTM, click ids and referrer.
    pub channel: Channel,
    pub client: ClientInfo,
    /// ISO 3166-1 alpha-2 country of the client IP, when known.
    pub country: Option<String>,
    /// Custom properties (`track(name, props)`, page title, durations, …), kept whole.
    pub properties: Map<String, Value>,
    pub click: Option<Click>,
}

/// The page an event happened on. `url` keeps the query string minus parameters that look like
/// personal data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub url: String,
    pub host: String,
    pub path: String,
    pub query: String,
    pub title: Option<String>,
}

/// A normalised external referrer (self-referrals are dropped before this exists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referrer {
    pub url: String,
    /// Host without `www.` and port, lower case.
    pub host: String,
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Utm {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub term: Option<String>,
    pub content: Option<String>,
}

impl Utm {
    pub fn is_empty(&self) -> bool {
        self.source.is_none()
            && self.medium.is_none()
            && self.campaign.is_none()
            && self.term.is_none()
            && self.content.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub browser: String,
    pub os: String,
    pub device: DeviceType,
    pub is_bot: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    Desktop,
    Mobile,
    Tablet,
    Bot,
    #[default]
    Unknown,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Desktop => "desktop",
            DeviceType::Mobile => "mobile",
            DeviceType::Tablet => "tablet",
            DeviceType::Bot => "bot",
            DeviceType::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Click {
    pub tag: String,
    pub selector: String,
    pub text: String,
    pub kind: String,
    pub href: Option<String>,
    pub target: Option<String>,
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub viewport_width: Option<f64>,
    pub viewport_height: Option<f64>,
    pub data_attributes: BTreeMap<String, String>,
}

/// `identify()`: links a visitor to a user of the site. The email is kept only as a salted hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentifyRecord {
    pub id: String,
    pub visitor_id: String,
    pub session_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// The site's own user id.
    pub app_id: Option<String>,
    /// Salted SHA-256 of the normalised email, hex (see [`crate::email`]).
    pub email_hash: Option<String>,
    pub fullname: Option<String>,
    pub traits: Map<String, Value>,
    /// What ingest could verify about the claimed identity; absent means
    /// [`IdentityProof::Unchecked`] (verification off).
    #[serde(default, skip_serializing_if = "IdentityProof::is_unchecked")]
    pub proof: IdentityProof,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn redis_names_follow_the_tenant_id() {
        let keys = RedisKeys::for_tenant("acme_shop");
        assert_eq!(keys.prefix, "zori:{acme_shop}:");
        assert_eq!(RedisKeys::acl_user("acme_shop"), "zori-acme_shop");
        assert_eq!(
            keys.acl_rules(),
            "~zori:{acme_shop}:* resetchannels -@all +evalsha +script|load +ping +incrby +expire"
        );
    }

    #[test]
    fn compact_keys_read_like_the_long_ones() {
        let compact: RawBatch = serde_json::from_value(json!({
            "events": [{
                "n": "click", "i": "id1", "v": "vis_1", "s": "ses_1", "t": "2025-11-02T09:30:00Z",
                "r": "https://t.co/", "u": "https://shop.example/?a=1", "p": {"k": 1},
                "e": {"tag": "a", "selector": "a.cta", "text": "Buy", "type": "link",
                      "href": "https://shop.example/buy", "d": {"plan": "pro"}},
                "c": {"x": 1.0, "y": 2.0, "w": 1280.0, "h": 720.0}
            }],
            "identifies": [{
                "i": "id2", "v": "vis_1", "s": "ses_1", "t": "2025-11-02T09:31:00Z",
                "u": "https://shop.example/account", "app_id": "u1", "a": {"plan": "pro"},
                "n": "identify", "r": null, "p": {}
            }]
        }))
        .expect("compact batch");
        let long: RawBatch = serde_json::from_value(json!({
            "events": [{
                "event_name": "click", "client_generated_event_id": "id1", "visitor_id": "vis_1",
                "session_id": "ses_1", "client_timestamp_utc": "2025-11-02T09:30:00Z",
                "referrer": "https://t.co/", "page_url": "https://shop.example/?a=1",
                "custom_properties": {"k": 1},
                "click_element": {"tag": "a", "selector": "a.cta", "text": "Buy", "type": "link",
                      "href": "https://shop.example/buy", "data_attributes": {"plan": "pro"}},
                "click_position": {"x": 1.0, "y": 2.0, "screen_width": 1280.0, "screen_height": 720.0}
            }],
            "identifies": [{
                "client_generated_event_id": "id2", "visitor_id": "vis_1", "session_id": "ses_1",
                "client_timestamp_utc": "2025-11-02T09:31:00Z",
                "page_url": "https://shop.example/account", "app_id": "u1",
                "additional_properties": {"plan": "pro"}
            }]
        }))
        .expect("long batch");
        assert_eq!(
            serde_json::to_value(&compact).expect("json"),
            serde_json::to_value(&long).expect("json")
        );
    }
}
