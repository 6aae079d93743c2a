//! Turns what a browser sent into a [`TrackedEvent`] / [`IdentifyRecord`]: validation with
//! bounded sizes, page URL cleaning, referrer normalisation, channel, user agent, country and
//! clock clamping. Pure: everything it needs comes in [`EnrichContext`].

use std::{collections::BTreeMap, io, net::IpAddr, time::Duration};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use url::Url;

use crate::{
    channel::{self, TouchSignals},
    clock, email,
    event::{
        Click, IdentifyRecord, RawClickElement, RawClickPosition, RawEvent, RawIdentify,
        TrackedEvent, Utm,
    },
    geo,
    identity::IdentityProof,
    pageurl::{self, clean_link, clean_query, looks_like_email, looks_like_secret},
    referrer,
    text::clean,
    useragent,
};

/// Longest visitor id / session id, in bytes.
pub const MAX_VISITOR_ID_LEN: usize = 128;
/// Longest event name, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 128;
/// Longest client-generated event id, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 64;
/// Largest `custom_properties` / `additional_properties`, serialised as JSON.
pub const MAX_PROPERTIES_BYTES: usize = 8192;
/// Longest page title kept (characters).
pub const MAX_TITLE_LEN: usize = 512;
/// Longest `app_id`, in bytes.
pub const MAX_APP_ID_LEN: usize = 256;
/// Longest full name kept (characters).
pub const MAX_FULLNAME_LEN: usize = 256;
/// Longest UTM value kept (characters).
pub const MAX_UTM_LEN: usize = 256;
/// Longest click text kept (characters).
pub const MAX_CLICK_TEXT_LEN: usize = 100;
/// Longest click selector kept (characters).
pub const MAX_CLICK_SELECTOR_LEN: usize = 256;
/// Most `data-*` attributes kept per click.
pub const MAX_DATA_ATTRIBUTES: usize = 20;

/// Tenant-wide settings that shape enrichment.
#[derive(Debug, Clone)]
pub struct EnrichSettings {
    /// Hosts (lower case, with port if not default, `www.`-insensitive) events may come from.
    /// Empty means any host.
    pub allowed_hosts: Vec<String>,
    /// How far in the past a client timestamp may be before it is clamped to receive time.
    pub max_past_skew: Duration,
    /// How far in the future a client timestamp may be before it is clamped to receive time.
    pub max_future_skew: Duration,
    /// Tenant salt for email hashes.
    pub email_salt: String,
}

/// Per-request facts known to ingest.
#[derive(Debug, Clone)]
pub struct EnrichContext<'a> {
    pub received_at: OffsetDateTime,
    /// Used for the country lookup only; never stored.
    pub client_ip: Option<IpAddr>,
    /// The request's `User-Agent` header (wins over the body's `user_agent`).
    pub user_agent: Option<&'a str>,
    pub settings: &'a EnrichSettings,
}

/// Why an event or identify was rejected. Messages name the field and the limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{field} is too long (max {max} bytes)")]
    TooLong { field: &'static str, max: usize },
    #[error("{0} has invalid characters (allowed: letters, digits, '_', '-', '.', ':')")]
    InvalidCharacters(&'static str),
    #[error("{0} is not a valid id")]
    InvalidId(&'static str),
    #[error("missing page host (required when allowed origins are set)")]
    MissingHost,
    #[error("page host {0:?} is not one of the allowed origins")]
    HostNotAllowed(String),
    #[error("{field} too large: {size} bytes (max {max})")]
    TooLarge {
        field: &'static str,
        size: usize,
        max: usize,
    },
    #[error("identify needs app_id or email")]
    NeedsIdentity,
    #[error("invalid email")]
    InvalidEmail,
}

pub fn enrich_event(raw: RawEvent, ctx: &EnrichContext<'_>) -> Result<TrackedEvent, EventError> {
    let settings = ctx.settings;
    let visitor_id = visitor_id(raw.visitor_id.as_deref())?;
    let name = event_name(raw.event_name.as_deref())?;
    let id = event_id(raw.client_generated_event_id.as_deref())?;
    let session_id = session_id(raw.session_id.as_deref())?;
    let mut properties = raw.custom_properties.unwrap_or_default();
    check_size("custom_properties", &properties)?;

    let page_url = with_page_search(raw.page_url.as_deref().unwrap_or_default(), &properties);
    let mut page = pageurl::parse_page(&page_url, raw.host.as_deref().unwrap_or_default());
    check_host(&page.host, &settings.allowed_hosts)?;
    page.title = raw
        .page_title
        .as_deref()
        .or_else(|| properties.get("page_title").and_then(Value::as_str))
        .and_then(|t| clean(t, MAX_TITLE_LEN));
    clean_page_properties(&mut properties);

    let utm = merge_utm(
        utm_from_raw(raw.utm_parameters.as_ref()),
        pageurl::utm_from_query(&page.query),
    );
    let click_ids = pageurl::click_ids_from_query(&page.query);
    let referrer = raw
        .referrer
        .as_deref()
        .and_then(|r| referrer::normalize_referrer(r, &page.host, &settings.allowed_hosts));
    let click_id_names: Vec<&str> = click_ids.keys().map(String::as_str).collect();
    let channel = channel::classify(TouchSignals {
        utm: Some(&utm),
        click_ids: &click_id_names,
        referrer_host: referrer.as_ref().map(|r| r.host.as_str()),
    });

    let user_agent = ctx
        .user_agent
        .filter(|ua| !ua.trim().is_empty())
        .or(raw.user_agent.as_deref())
        .unwrap_or_default();

    Ok(TrackedEvent {
        id,
        name,
        visitor_id,
        session_id,
        occurred_at: occurred_at(raw.client_timestamp_utc.as_deref(), ctx),
        received_at: ctx.received_at,
        page,
        referrer,
        utm,
        click_ids,
        channel,
        client: useragent::parse(user_agent),
        country: ctx.client_ip.and_then(geo::country),
        properties,
        click: click(raw.click_element, raw.click_position),
    })
}

pub fn enrich_identify(
    raw: RawIdentify,
    ctx: &EnrichContext<'_>,
) -> Result<IdentifyRecord, EventError> {
    let settings = ctx.settings;
    let visitor_id = visitor_id(raw.visitor_id.as_deref())?;
    let id = event_id(raw.client_generated_event_id.as_deref())?;
    let session_id = session_id(raw.session_id.as_deref())?;
    // Server-side identifies may carry no page; when one is given it must be allowed.
    let page = pageurl::parse_page(
        raw.page_url.as_deref().unwrap_or_default(),
        raw.host.as_deref().unwrap_or_default(),
    );
    if !page.host.is_empty() {
        check_host(&page.host, &settings.allowed_hosts)?;
    }
    let app_id = match raw.app_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(app_id) if app_id.len() > MAX_APP_ID_LEN => {
            return Err(EventError::TooLong {
                field: "app_id",
                max: MAX_APP_ID_LEN,
            })
        }
        Some(app_id) => Some(app_id.to_owned()),
    };
    let email_hash = match raw.email.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw_email) => {
            let normalized = email::normalize(raw_email).ok_or(EventError::InvalidEmail)?;
            Some(email::hash(&normalized, &settings.email_salt))
        }
    };
    if app_id.is_none() && email_hash.is_none() {
        return Err(EventError::NeedsIdentity);
    }
    let traits = raw.additional_properties.unwrap_or_default();
    check_size("additional_properties", &traits)?;
    let fullname = raw
        .fullname
        .as_deref()
        .and_then(|n| clean(n, MAX_FULLNAME_LEN))
        .or_else(|| {
            raw.full_name
                .as_deref()
                .and_then(|n| clean(n, MAX_FULLNAME_LEN))
        });

    Ok(IdentifyRecord {
        id,
        visitor_id,
        session_id,
        occurred_at: occurred_at(raw.client_timestamp_utc.as_deref(), ctx),
        received_at: ctx.received_at,
        app_id,
        email_hash,
        fullname,
        traits,
        // Set by ingest, which knows the tenant's identity verification setting.
        proof: IdentityProof::Unchecked,
    })
}

/// Whether events from `page_host` are accepted: `allowed_hosts` empty, or one entry equal to
/// it (case- and `www.`-insensitive, port significant). An entry `*.example.com` allows
/// `example.com` and all its subdomains.
pub fn allowed_host(page_host: &str, allowed_hosts: &[String]) -> bool {
    if allowed_hosts.is_empty() {
        return true;
    }
    let page = comparable_host(page_host);
    if page.is_empty() {
        return false;
    }
    allowed_hosts.iter().any(|allowed| {
        let allowed = allowed.trim().to_ascii_lowercase();
        match allowed.strip_prefix("*.") {
            Some(parent) => {
                let parent = comparable_host(parent);
                !parent.is_empty()
                    && (page == parent
                        || page
                            .strip_suffix(parent.as_str())
                            .is_some_and(|rest| rest.ends_with('.')))
            }
            None => comparable_host(&allowed) == page,
        }
    })
}

fn comparable_host(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    host.strip_prefix("www.").unwrap_or(&host).to_owned()
}

/// The host (with port if not default) of an allowed origin: `https://www.example.com:8443`
/// → `www.example.com:8443`, `https://example.com:443/` → `example.com`, `example.com` →
/// `example.com`. `None` for `*`, non-http(s) origins and junk.
pub fn host_of_origin(origin: &str) -> Option<String> {
    let origin = origin.trim();
    if origin.is_empty() || origin == "*" {
        return None;
    }
    let url = if origin.contains("://") {
        Url::parse(origin).ok()?
    } else {
        Url::parse(&format!("https://{origin}")).ok()?
    };
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    pageurl::authority(&url)
}

/// Whether `id` is a valid visitor id: 1..=128 bytes of `[A-Za-z0-9_.:-]`.
pub fn is_valid_visitor_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_VISITOR_ID_LEN && id.bytes().all(is_visitor_id_byte)
}

fn is_visitor_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
}

fn visitor_id(raw: Option<&str>) -> Result<String, EventError> {
    let id = raw.map(str::trim).unwrap_or_default();
    if id.is_empty() {
        return Err(EventError::Missing("visitor_id"));
    }
    if id.len() > MAX_VISITOR_ID_LEN {
        return Err(EventError::TooLong {
            field: "visitor_id",
            max: MAX_VISITOR_ID_LEN,
        });
    }
    if !id.bytes().all(is_visitor_id_byte) {
        return Err(EventError::InvalidCharacters("visitor_id"));
    }
    Ok(id.to_owned())
}

fn event_name(raw: Option<&str>) -> Result<String, EventError> {
    let name = raw.ok_or(EventError::Missing("event_name"))?.trim();
    if name.is_empty() {
        return Err(EventError::Empty("event_name"));
    }
    if name.len() > MAX_EVENT_NAME_LEN {
        return Err(EventError::TooLong {
            field: "event_name",
            max: MAX_EVENT_NAME_LEN,
        });
    }
    Ok(name.to_owned())
}

/// The client's id when valid (1..=64 of `[A-Za-z0-9_-]`), a new UUIDv4 when absent or empty.
fn event_id(raw: Option<&str>) -> Result<String, EventError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(uuid::Uuid::new_v4().to_string()),
        Some(id)
            if id.len() <= MAX_EVENT_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Ok(id.to_owned())
        }
        Some(_) => Err(EventError::InvalidId("client_generated_event_id")),
    }
}

fn session_id(raw: Option<&str>) -> Result<String, EventError> {
    let id = raw.map(str::trim).unwrap_or_default();
    if id.len() > MAX_VISITOR_ID_LEN {
        return Err(EventError::TooLong {
            field: "session_id",
            max: MAX_VISITOR_ID_LEN,
        });
    }
    Ok(id.to_owned())
}

fn occurred_at(client: Option<&str>, ctx: &EnrichContext<'_>) -> OffsetDateTime {
    clock::clamp(
        client.and_then(clock::parse_client_timestamp),
        ctx.received_at,
        ctx.settings.max_past_skew,
        ctx.settings.max_future_skew,
    )
}

fn check_host(page_host: &str, allowed_hosts: &[String]) -> Result<(), EventError> {
    if allowed_hosts.is_empty() {
        return Ok(());
    }
    if page_host.is_empty() {
        return Err(EventError::MissingHost);
    }
    if !allowed_host(page_host, allowed_hosts) {
        return Err(EventError::HostNotAllowed(page_host.to_owned()));
    }
    Ok(())
}

fn check_size(field: &'static str, map: &Map<String, Value>) -> Result<(), EventError> {
    let size = json_size(map);
    if size > MAX_PROPERTIES_BYTES {
        return Err(EventError::TooLarge {
            field,
            size,
            max: MAX_PROPERTIES_BYTES,
        });
    }
    Ok(())
}

/// Bytes of the compact JSON serialisation, counted without allocating it.
fn json_size(map: &Map<String, Value>) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, map) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// The original script sends the path only and the query as `page_search`: put them together
/// so click ids and UTM of the landing URL are not lost (zori-spec §9.24).
fn with_page_search(page_url: &str, properties: &Map<String, Value>) -> String {
    let search = properties.get("page_search").and_then(Value::as_str);
    match search.map(str::trim) {
        Some(search)
            if search.len() > 1 && search.starts_with('?') && !page_url.contains(['?', '#']) =>
        {
            format!("{page_url}{search}")
        }
        _ => page_url.to_owned(),
    }
}

/// `page_search` / `page_hash` properties get the same personal-data cleaning as the page URL.
fn clean_page_properties(properties: &mut Map<String, Value>) {
    if let Some(Value::String(search)) = properties.get_mut("page_search") {
        let cleaned = clean_query(search.trim());
        *search = if cleaned.is_empty() {
            String::new()
        } else {
            format!("?{cleaned}")
        };
    }
    if let Some(Value::String(hash)) = properties.get_mut("page_hash") {
        let fragment = hash.trim().trim_start_matches('#');
        let cleaned = if fragment.contains('=') {
            clean_query(fragment)
        } else if looks_like_secret(fragment) || looks_like_email(fragment) {
            String::new()
        } else {
            fragment.to_owned()
        };
        *hash = if cleaned.is_empty() {
            String::new()
        } else {
            format!("#{cleaned}")
        };
    }
}

fn utm_from_raw(raw: Option<&BTreeMap<String, Value>>) -> Utm {
    let mut utm = Utm::default();
    for (key, value) in raw.into_iter().flatten() {
        let slot = match key.trim().to_ascii_lowercase().as_str() {
            "utm_source" => &mut utm.source,
            "utm_medium" => &mut utm.medium,
            "utm_campaign" => &mut utm.campaign,
            "utm_term" => &mut utm.term,
            "utm_content" => &mut utm.content,
            _ => continue,
        };
        if let Some(value) = value.as_str().filter(|v| !looks_like_email(v)) {
            if slot.is_none() {
                *slot = clean(value, MAX_UTM_LEN);
            }
        }
    }
    utm
}

/// Field by field, `primary` wins.
fn merge_utm(primary: Utm, fallback: Utm) -> Utm {
    Utm {
        source: primary.source.or(fallback.source),
        medium: primary.medium.or(fallback.medium),
        campaign: primary.campaign.or(fallback.campaign),
        term: primary.term.or(fallback.term),
        content: primary.content.or(fallback.content),
    }
}

fn click(element: Option<RawClickElement>, position: Option<RawClickPosition>) -> Option<Click> {
    if element.is_none() && position.is_none() {
        return None;
    }
    let el = element.unwrap_or_default();
    let pos = position.unwrap_or_default();
    let text = el
        .text
        .as_deref()
        .and_then(|t| clean(t, MAX_CLICK_TEXT_LEN))
        .filter(|t| !looks_like_email(t))
        .unwrap_or_default();
    let data_attributes = el
        .data_attributes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, value)| {
            let key = clean(&key, 64)?;
            let value = match value {
                Value::Null => return None,
                Value::String(s) => s,
                other => other.to_string(),
            };
            let value = crate::text::truncate_chars(value.trim(), 256).to_owned();
            pageurl::keep_param(&key, &value).then_some((key, value))
        })
        .take(MAX_DATA_ATTRIBUTES)
        .collect();
    Some(Click {
        tag: el
            .tag
            .as_deref()
            .and_then(|t| clean(t, 64))
            .map(|t| t.to_ascii_lowercase())
            .unwrap_or_default(),
        selector: el
            .selector
            .as_deref()
            .and_then(|s| clean(s, MAX_CLICK_SELECTOR_LEN))
            .unwrap_or_default(),
        text,
        kind: el
            .kind
            .as_deref()
            .and_then(|k| clean(k, 32))
            .unwrap_or_default(),
        href: el.href.as_deref().map(clean_link).filter(|h| !h.is_empty()),
        target: el.target.as_deref().and_then(|t| clean(t, 64)),
        x: pos.x.filter(|v| v.is_finite()),
        y: pos.y.filter(|v| v.is_finite()),
        viewport_width: pos.screen_width.filter(|v| v.is_finite()),
        viewport_height: pos.screen_height.filter(|v| v.is_finite()),
        data_attributes,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::{channel::Channel, event::DeviceType};

    const RECEIVED: OffsetDateTime = datetime!(2025-11-02 10:00:00 UTC);
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

    fn settings(allowed: &[&str]) -> EnrichSettings {
        EnrichSettings {
            allowed_hosts: allowed.iter().map(|h| (*h).to_owned()).collect(),
            max_past_skew: Duration::from_secs(24 * 3600),
            max_future_skew: Duration::from_secs(300),
            email_salt: "tenant-salt".to_owned(),
        }
    }

    fn ctx(settings: &EnrichSettings) -> EnrichContext<'_> {
        EnrichContext {
            received_at: RECEIVED,
            client_ip: "8.8.8.8".parse().ok(),
            user_agent: Some(CHROME),
            settings,
        }
    }

    fn event(value: Value) -> RawEvent {
        serde_json::from_value(value).unwrap()
    }

    fn identify(value: Value) -> RawIdentify {
        serde_json::from_value(value).unwrap()
    }

    /// What the original script (v1.2.10) sends for a page view.
    fn original_page_view() -> Value {
        json!({
            "event_name": "page_view",
            "client_generated_event_id": "3b241101-e2bb-4255-8caf-4136c566a962",
            "visitor_id": "vis_1f0e3dad-9990-4c5a-8a63-6b4e0f1d2c3b",
            "session_id": "ses_m3k2j1_abc1234",
            "client_timestamp_utc": "2025-11-02T09:59:58.123Z",
            "user_agent": "curl/8.0 (ignored, header wins)",
            "referrer": "https://www.google.com/search?q=secret+stuff",
            "page_url": "/pricing",
            "host": "www.example.com",
            "utm_parameters": null,
            "custom_properties": {
                "page_title": "Pricing — Example",
                "page_path": "/pricing",
                "page_search": "?gclid=abc123&email=jane%40example.com",
                "page_hash": ""
            }
        })
    }

    #[test]
    fn enriches_original_page_view() {
        let s = settings(&["example.com"]);
        let e = enrich_event(event(original_page_view()), &ctx(&s)).unwrap();
        assert_eq!(e.id, "3b241101-e2bb-4255-8caf-4136c566a962");
        assert_eq!(e.name, "page_view");
        assert_eq!(e.visitor_id, "vis_1f0e3dad-9990-4c5a-8a63-6b4e0f1d2c3b");
        assert_eq!(e.session_id, "ses_m3k2j1_abc1234");
        assert_eq!(e.occurred_at, datetime!(2025-11-02 09:59:58.123 UTC));
        assert_eq!(e.received_at, RECEIVED);
        assert_eq!(e.page.url, "https://www.example.com/pricing?gclid=abc123");
        assert_eq!(e.page.host, "www.example.com");
        assert_eq!(e.page.path, "/pricing");
        assert_eq!(e.page.query, "gclid=abc123");
        assert_eq!(e.page.title.as_deref(), Some("Pricing — Example"));
        let referrer = e.referrer.unwrap();
        assert_eq!(referrer.host, "google.com");
        assert_eq!(referrer.url, "https://www.google.com/search");
        assert_eq!(e.click_ids.get("gclid").map(String::as_str), Some("abc123"));
        assert_eq!(e.channel, Channel::PaidSearch);
        assert_eq!(e.client.browser, "Chrome");
        assert_eq!(e.client.device, DeviceType::Desktop);
        assert!(!e.client.is_bot);
        assert_eq!(e.country.as_deref(), Some("US"));
        assert_eq!(e.properties["page_search"], json!("?gclid=abc123"));
        assert_eq!(e.properties["page_path"], json!("/pricing"));
        assert!(e.click.is_none());
    }

    #[test]
    fn enriches_our_full_url_event() {
        let s = settings(&[]);
        let raw = event(json!({
            "event_name": "  signup  ",
            "visitor_id": "vis_abc",
            "page_url": "https://App.Example.com:8443/start?utm_source=newsletter&utm_medium=email&token=x#top",
            "referrer": "https://app.example.com/other",
            "utm_parameters": {"utm_source": " Launch ", "utm_campaign": 5, "other": "x"},
            "custom_properties": {"plan": "pro", "n": 3}
        }));
        let e = enrich_event(raw, &ctx(&s)).unwrap();
        assert_eq!(e.name, "signup");
        assert!(
            uuid::Uuid::parse_str(&e.id).is_ok(),
            "generated id {}",
            e.id
        );
        assert_eq!(e.session_id, "");
        assert_eq!(e.occurred_at, RECEIVED);
        assert_eq!(e.page.host, "app.example.com:8443");
        assert_eq!(
            e.page.url,
            "https://app.example.com:8443/start?utm_source=newsletter&utm_medium=email"
        );
        assert_eq!(e.referrer, None, "self-referral dropped");
        assert_eq!(e.utm.source.as_deref(), Some("Launch"), "raw UTM wins");
        assert_eq!(
            e.utm.medium.as_deref(),
            Some("email"),
            "query fills the gaps"
        );
        assert_eq!(e.utm.campaign, None, "non-string values ignored");
        assert_eq!(e.channel, Channel::Email);
        assert_eq!(
            e.properties,
            json!({"plan": "pro", "n": 3}).as_object().cloned().unwrap()
        );
        assert_eq!(e.page.title, None);
    }

    #[test]
    fn rejects_table() {
        let s = settings(&["example.com", "shop.example.org"]);
        let big = "x".repeat(9000);
        let cases: Vec<(Value, EventError, &str)> = vec![
            (
                json!({"event_name": "a"}),
                EventError::Missing("visitor_id"),
                "missing visitor_id",
            ),
            (
                json!({"event_name": "a", "visitor_id": "  "}),
                EventError::Missing("visitor_id"),
                "missing visitor_id",
            ),
            (
                json!({"event_name": "a", "visitor_id": "v".repeat(129)}),
                EventError::TooLong {
                    field: "visitor_id",
                    max: 128,
                },
                "visitor_id is too long (max 128 bytes)",
            ),
            (
                json!({"event_name": "a", "visitor_id": "vis 1"}),
                EventError::InvalidCharacters("visitor_id"),
                "visitor_id has invalid characters (allowed: letters, digits, '_', '-', '.', ':')",
            ),
            (
                json!({"event_name": "a", "visitor_id": "vis_<script>"}),
                EventError::InvalidCharacters("visitor_id"),
                "visitor_id has invalid characters (allowed: letters, digits, '_', '-', '.', ':')",
            ),
            (
                json!({"visitor_id": "v"}),
                EventError::Missing("event_name"),
                "missing event_name",
            ),
            (
                json!({"visitor_id": "v", "event_name": "   "}),
                EventError::Empty("event_name"),
                "event_name is empty",
            ),
            (
                json!({"visitor_id": "v", "event_name": "e".repeat(129)}),
                EventError::TooLong {
                    field: "event_name",
                    max: 128,
                },
                "event_name is too long (max 128 bytes)",
            ),
            (
                json!({"visitor_id": "v", "event_name": "a", "client_generated_event_id": "not valid!"}),
                EventError::InvalidId("client_generated_event_id"),
                "client_generated_event_id is not a valid id",
            ),
            (
                json!({"visitor_id": "v", "event_name": "a", "client_generated_event_id": "a".repeat(65)}),
                EventError::InvalidId("client_generated_event_id"),
                "client_generated_event_id is not a valid id",
            ),
            (
                json!({"visitor_id": "v", "event_name": "a", "session_id": "s".repeat(129), "host": "example.com"}),
                EventError::TooLong {
                    field: "session_id",
                    max: 128,
                },
                "session_id is too long (max 128 bytes)",
            ),
            (
                json!({"visitor_id": "v", "event_name": "a", "page_url": "/"}),
                EventError::MissingHost,
                "missing page host (required when allowed origins are set)",
            ),
            (
                json!({"visitor_id": "v", "event_name": "a", "page_url": "/", "host": "evil.com"}),
                EventError::HostNotAllowed("evil.com".into()),
                "page host \"evil.com\" is not one of the allowed origins",
            ),
            (
                json!({"visitor_id": "v", "event_name": "a", "page_url": "https://example.com.evil.com/"}),
                EventError::HostNotAllowed("example.com.evil.com".into()),
                "page host \"example.com.evil.com\" is not one of the allowed origins",
            ),
            (
                json!({"visitor_id": "v", "event_name": "a", "host": "example.com:8080"}),
                EventError::HostNotAllowed("example.com:8080".into()),
                "page host \"example.com:8080\" is not one of the allowed origins",
            ),
            (
                json!({"visitor_id": "v", "event_name": "a", "host": "example.com", "custom_properties": {"k": big}}),
                EventError::TooLarge {
                    field: "custom_properties",
                    size: 9008,
                    max: 8192,
                },
                "custom_properties too large: 9008 bytes (max 8192)",
            ),
        ];
        for (raw, expected, message) in cases {
            let got = enrich_event(event(raw.clone()), &ctx(&s)).unwrap_err();
            assert_eq!(got, expected, "{raw}");
            assert_eq!(got.to_string(), message, "{raw}");
        }
    }

    #[test]
    fn accepts_allowed_hosts() {
        let s = settings(&["example.com", "shop.example.org", "localhost:3000"]);
        for host in [
            "example.com",
            "www.example.com",
            "EXAMPLE.com",
            "shop.example.org",
            "localhost:3000",
        ] {
            let raw =
                event(json!({"visitor_id": "v", "event_name": "a", "host": host, "page_url": "/"}));
            assert!(enrich_event(raw, &ctx(&s)).is_ok(), "{host}");
        }
        // Empty list: anything goes, even without a host.
        let open = settings(&[]);
        let raw = event(json!({"visitor_id": "v", "event_name": "a"}));
        let e = enrich_event(raw, &ctx(&open)).unwrap();
        assert_eq!(e.page.url, "/");
        assert_eq!(e.page.host, "");
    }

    #[test]
    fn properties_at_limit_pass() {
        let s = settings(&[]);
        // {"k":"…"} is 8 bytes plus the value.
        let ok = "x".repeat(MAX_PROPERTIES_BYTES - 8);
        let raw =
            event(json!({"visitor_id": "v", "event_name": "a", "custom_properties": {"k": ok}}));
        assert!(enrich_event(raw, &ctx(&s)).is_ok());
        let over = "x".repeat(MAX_PROPERTIES_BYTES - 7);
        let raw =
            event(json!({"visitor_id": "v", "event_name": "a", "custom_properties": {"k": over}}));
        assert!(matches!(
            enrich_event(raw, &ctx(&s)),
            Err(EventError::TooLarge { size: 8193, .. })
        ));
    }

    #[test]
    fn ids_table() {
        let cases: &[(Option<&str>, Result<&str, ()>)] = &[
            (
                Some("3b241101-e2bb-4255-8caf-4136c566a962"),
                Ok("3b241101-e2bb-4255-8caf-4136c566a962"),
            ),
            (Some("evt_01HZX"), Ok("evt_01HZX")),
            (Some(" abc "), Ok("abc")),
            (Some("a.b"), Err(())),
            (Some("a b"), Err(())),
            (Some("ü"), Err(())),
        ];
        for (raw, expected) in cases {
            let got = event_id(*raw).map_err(|_| ());
            assert_eq!(got.as_deref(), expected.as_deref(), "{raw:?}");
        }
        for raw in [None, Some(""), Some("  ")] {
            let id = event_id(raw).unwrap();
            assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        }
        assert_ne!(event_id(None).unwrap(), event_id(None).unwrap());
    }

    #[test]
    fn visitor_ids_table() {
        let long = "v".repeat(128);
        let cases: &[(&str, bool)] = &[
            ("vis_1f0e3dad-9990-4c5a-8a63-6b4e0f1d2c3b", true),
            ("user:42", true),
            ("a.b_c-d", true),
            (long.as_str(), true),
            ("", false),
            ("vis 1", false),
            ("vis/1", false),
            ("vis_ü", false),
        ];
        for (id, ok) in cases {
            assert_eq!(is_valid_visitor_id(id), *ok, "{id}");
        }
        assert!(!is_valid_visitor_id(&"v".repeat(129)));
    }

    #[test]
    fn clamps_client_clock() {
        let s = settings(&[]);
        let cases: &[(&str, OffsetDateTime)] = &[
            ("2025-11-02T09:00:00Z", datetime!(2025-11-02 09:00:00 UTC)),
            ("2025-11-02T12:00:00+02:00", RECEIVED),
            ("2025-11-02T10:04:00Z", datetime!(2025-11-02 10:04:00 UTC)),
            ("2025-11-02T10:06:00Z", RECEIVED),
            ("2019-01-01T00:00:00Z", RECEIVED),
            ("2099-01-01T00:00:00Z", RECEIVED),
            ("garbage", RECEIVED),
        ];
        for (ts, expected) in cases {
            let raw =
                event(json!({"visitor_id": "v", "event_name": "a", "client_timestamp_utc": ts}));
            assert_eq!(
                enrich_event(raw, &ctx(&s)).unwrap().occurred_at,
                *expected,
                "{ts}"
            );
        }
    }

    #[test]
    fn user_agent_header_wins_then_body() {
        let s = settings(&[]);
        let raw =
            || event(json!({"visitor_id": "v", "event_name": "a", "user_agent": "Googlebot/2.1"}));
        let mut c = ctx(&s);
        assert!(!enrich_event(raw(), &c).unwrap().client.is_bot);
        c.user_agent = None;
        assert!(enrich_event(raw(), &c).unwrap().client.is_bot);
        c.user_agent = Some("");
        assert!(enrich_event(raw(), &c).unwrap().client.is_bot);
        c.client_ip = None;
        assert_eq!(enrich_event(raw(), &c).unwrap().country, None);
        c.client_ip = "10.1.2.3".parse().ok();
        assert_eq!(enrich_event(raw(), &c).unwrap().country, None);
    }

    #[test]
    fn title_sources() {
        let s = settings(&[]);
        let cases: Vec<(Value, Option<String>)> = vec![
            (json!({"page_title": " Own "}), Some("Own".into())),
            (
                json!({"page_title": "Own", "custom_properties": {"page_title": "Prop"}}),
                Some("Own".into()),
            ),
            (
                json!({"custom_properties": {"page_title": "Prop"}}),
                Some("Prop".into()),
            ),
            (json!({"custom_properties": {"page_title": 3}}), None),
            (json!({"page_title": "  "}), None),
            (
                json!({"page_title": "t".repeat(600)}),
                Some("t".repeat(512)),
            ),
        ];
        for (extra, expected) in cases {
            let mut value = json!({"visitor_id": "v", "event_name": "a"});
            if let (Some(obj), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
                obj.extend(extra.clone());
            }
            let e = enrich_event(event(value), &ctx(&s)).unwrap();
            assert_eq!(e.page.title, expected, "{extra}");
        }
    }

    #[test]
    fn channels_from_signals() {
        let s = settings(&["example.com"]);
        let cases: Vec<(Value, Channel, Option<&str>)> = vec![
            (json!({}), Channel::Direct, None),
            (
                json!({"referrer": "https://www.example.com/blog"}),
                Channel::Direct,
                None,
            ),
            (
                json!({"referrer": "https://blog.example.com/"}),
                Channel::Direct,
                None,
            ),
            (
                json!({"referrer": "https://t.co/x"}),
                Channel::OrganicSocial,
                Some("t.co"),
            ),
            (
                json!({"referrer": "https://partner.io/review"}),
                Channel::Referral,
                Some("partner.io"),
            ),
            (
                json!({"referrer": "https://t.co/x", "utm_parameters": {"utm_source": "twitter", "utm_medium": "cpc"}}),
                Channel::PaidSocial,
                Some("t.co"),
            ),
            (
                json!({"page_url": "https://example.com/?fbclid=1"}),
                Channel::PaidSocial,
                None,
            ),
            (
                json!({"page_url": "https://example.com/?utm_source=google&utm_medium=cpc"}),
                Channel::PaidSearch,
                None,
            ),
            // AI assistants: ChatGPT's cited links carry utm_source=chatgpt.com, often without
            // a referrer; Perplexity and Claude send their host as referrer.
            (
                json!({"page_url": "https://example.com/pricing?utm_source=chatgpt.com"}),
                Channel::AiAssistant,
                None,
            ),
            (
                json!({"referrer": "https://www.perplexity.ai/search/abc"}),
                Channel::AiAssistant,
                Some("perplexity.ai"),
            ),
            (
                json!({"referrer": "https://claude.ai/referral/2025-05-01"}),
                Channel::AiAssistant,
                Some("claude.ai"),
            ),
            (
                json!({"referrer": "https://gemini.google.com/app"}),
                Channel::AiAssistant,
                Some("gemini.google.com"),
            ),
        ];
        for (extra, channel, referrer_host) in cases {
            let mut value = json!({"visitor_id": "v", "event_name": "a", "host": "example.com", "page_url": "/"});
            if let (Some(obj), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
                obj.extend(extra.clone());
            }
            let e = enrich_event(event(value), &ctx(&s)).unwrap();
            assert_eq!(e.channel, channel, "{extra}");
            assert_eq!(
                e.referrer.as_ref().map(|r| r.host.as_str()),
                referrer_host,
                "{extra}"
            );
        }
    }

    #[test]
    fn utm_from_raw_table() {
        let raw: BTreeMap<String, Value> = serde_json::from_value(json!({
            "utm_source": " google ",
            "UTM_MEDIUM": "cpc",
            "utm_campaign": "",
            "utm_term": "jane@example.com",
            "utm_content": "c".repeat(300),
            "utm_id": "ignored",
            "source": "ignored"
        }))
        .unwrap();
        let utm = utm_from_raw(Some(&raw));
        assert_eq!(utm.source.as_deref(), Some("google"));
        assert_eq!(utm.medium.as_deref(), Some("cpc"));
        assert_eq!(utm.campaign, None);
        assert_eq!(utm.term, None, "emails are never kept");
        assert_eq!(utm.content.map(|c| c.len()), Some(MAX_UTM_LEN));
        assert!(utm_from_raw(None).is_empty());
    }

    #[test]
    fn cleans_page_properties() {
        let mut props = json!({
            "page_search": "?utm_source=x&token=abc",
            "page_hash": "#access_token=eyJhbGciOi.eyJzdWIi.sig&state=1",
            "other": "?token=kept-as-is"
        })
        .as_object()
        .cloned()
        .unwrap();
        clean_page_properties(&mut props);
        assert_eq!(props["page_search"], json!("?utm_source=x"));
        assert_eq!(props["page_hash"], json!("#state=1"));
        assert_eq!(props["other"], json!("?token=kept-as-is"));

        let cases: &[(&str, &str)] = &[
            ("#pricing", "#pricing"),
            ("", ""),
            ("#jane@example.com", ""),
            ("#9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", ""),
        ];
        for (hash, expected) in cases {
            let mut props = Map::new();
            props.insert("page_hash".into(), json!(hash));
            clean_page_properties(&mut props);
            assert_eq!(props["page_hash"], json!(expected), "{hash}");
        }
    }

    #[test]
    fn page_search_joins_path_only_urls() {
        let props = |s: &str| json!({"page_search": s}).as_object().cloned().unwrap();
        let cases: &[(&str, &str, &str)] = &[
            ("/p", "?a=1", "/p?a=1"),
            ("/p", "", "/p"),
            ("/p", "?", "/p"),
            ("/p?b=2", "?a=1", "/p?b=2"),
            ("/p#x", "?a=1", "/p#x"),
            ("/p", "a=1", "/p"),
        ];
        for (url, search, expected) in cases {
            assert_eq!(
                with_page_search(url, &props(search)),
                *expected,
                "{url} {search}"
            );
        }
        assert_eq!(with_page_search("/p", &Map::new()), "/p");
    }

    #[test]
    fn clicks() {
        let s = settings(&[]);
        let mut data = serde_json::Map::new();
        for i in 0..30 {
            data.insert(format!("k{i:02}"), json!(i));
        }
        data.insert("email".into(), json!("jane@example.com"));
        data.insert("flag".into(), json!(true));
        data.insert("none".into(), Value::Null);
        let raw = event(json!({
            "visitor_id": "v",
            "event_name": "click",
            "click_element": {
                "tag": "A",
                "selector": "#nav > a.cta",
                "text": format!("  {}  ", "t".repeat(150)),
                "type": "link",
                "href": "https://example.com/signup?plan=pro&email=jane%40example.com#top",
                "target": "_blank",
                "data_attributes": data
            },
            "click_position": {"x": 10.5, "y": 20.0, "screen_width": 1280, "screen_height": 720}
        }));
        let click = enrich_event(raw, &ctx(&s)).unwrap().click.unwrap();
        assert_eq!(click.tag, "a");
        assert_eq!(click.selector, "#nav > a.cta");
        assert_eq!(click.text, "t".repeat(100));
        assert_eq!(click.kind, "link");
        assert_eq!(
            click.href.as_deref(),
            Some("https://example.com/signup?plan=pro")
        );
        assert_eq!(click.target.as_deref(), Some("_blank"));
        assert_eq!((click.x, click.y), (Some(10.5), Some(20.0)));
        assert_eq!(
            (click.viewport_width, click.viewport_height),
            (Some(1280.0), Some(720.0))
        );
        assert_eq!(click.data_attributes.len(), MAX_DATA_ATTRIBUTES);
        assert!(!click.data_attributes.contains_key("email"));
        assert_eq!(click.data_attributes["k00"], "0");
        assert!(!click.data_attributes.contains_key("none"));

        let raw = event(json!({
            "visitor_id": "v",
            "event_name": "click",
            "click_element": {"tag": "a", "text": "jane@example.com", "href": "mailto:jane@example.com",
                "selector": "s".repeat(300)}
        }));
        let click = enrich_event(raw, &ctx(&s)).unwrap().click.unwrap();
        assert_eq!(click.text, "", "emails in link text are not kept");
        assert_eq!(click.href.as_deref(), Some("mailto:"));
        assert_eq!(click.selector.len(), MAX_CLICK_SELECTOR_LEN);
        assert_eq!(click.x, None);

        let raw =
            event(json!({"visitor_id": "v", "event_name": "click", "click_position": {"x": 1}}));
        let click = enrich_event(raw, &ctx(&s)).unwrap().click.unwrap();
        assert_eq!(click.x, Some(1.0));
        assert_eq!(click.tag, "");
    }

    #[test]
    fn identifies() {
        let s = settings(&["example.com"]);
        let raw = identify(json!({
            "client_generated_event_id": "id-1",
            "visitor_id": "vis_abc",
            "session_id": "ses_1",
            "client_timestamp_utc": "2025-11-02T09:30:00Z",
            "page_url": "/account",
            "host": "www.example.com",
            "app_id": " user_42 ",
            "email": " Jane@Example.com ",
            "full_name": " Jane Doe ",
            "additional_properties": {"plan": "pro"}
        }));
        let r = enrich_identify(raw, &ctx(&s)).unwrap();
        assert_eq!(r.id, "id-1");
        assert_eq!(r.visitor_id, "vis_abc");
        assert_eq!(r.session_id, "ses_1");
        assert_eq!(r.occurred_at, datetime!(2025-11-02 09:30:00 UTC));
        assert_eq!(r.received_at, RECEIVED);
        assert_eq!(r.app_id.as_deref(), Some("user_42"));
        assert_eq!(
            r.email_hash.as_deref(),
            Some(email::hash("jane@example.com", "tenant-salt").as_str())
        );
        assert_eq!(r.fullname.as_deref(), Some("Jane Doe"));
        assert_eq!(
            r.traits,
            json!({"plan": "pro"}).as_object().cloned().unwrap()
        );
        let serialized = serde_json::to_string(&r).unwrap();
        assert!(!serialized.to_lowercase().contains("jane@example.com"));

        // Email only, no page (server-side identify), fullname wins over full_name.
        let raw = identify(
            json!({"visitor_id": "v", "email": "a@b.co", "fullname": "A", "full_name": "B"}),
        );
        let r = enrich_identify(raw, &ctx(&s)).unwrap();
        assert_eq!(r.app_id, None);
        assert!(r.email_hash.is_some());
        assert_eq!(r.fullname.as_deref(), Some("A"));
        assert!(uuid::Uuid::parse_str(&r.id).is_ok());

        // App id only; empty email counts as absent.
        let raw = identify(json!({"visitor_id": "v", "app_id": "u1", "email": ""}));
        let r = enrich_identify(raw, &ctx(&s)).unwrap();
        assert_eq!((r.app_id.as_deref(), r.email_hash), (Some("u1"), None));
    }

    #[test]
    fn identify_rejects_table() {
        let s = settings(&["example.com"]);
        let cases: Vec<(Value, EventError, &str)> = vec![
            (
                json!({"app_id": "u"}),
                EventError::Missing("visitor_id"),
                "missing visitor_id",
            ),
            (
                json!({"visitor_id": "v"}),
                EventError::NeedsIdentity,
                "identify needs app_id or email",
            ),
            (
                json!({"visitor_id": "v", "app_id": " ", "email": null}),
                EventError::NeedsIdentity,
                "identify needs app_id or email",
            ),
            (
                json!({"visitor_id": "v", "email": "not-an-email"}),
                EventError::InvalidEmail,
                "invalid email",
            ),
            (
                json!({"visitor_id": "v", "app_id": "u", "email": "a@@b"}),
                EventError::InvalidEmail,
                "invalid email",
            ),
            (
                json!({"visitor_id": "v", "app_id": "u".repeat(257)}),
                EventError::TooLong {
                    field: "app_id",
                    max: 256,
                },
                "app_id is too long (max 256 bytes)",
            ),
            (
                json!({"visitor_id": "v", "app_id": "u", "host": "evil.com"}),
                EventError::HostNotAllowed("evil.com".into()),
                "page host \"evil.com\" is not one of the allowed origins",
            ),
            (
                json!({"visitor_id": "v", "app_id": "u", "client_generated_event_id": "bad id"}),
                EventError::InvalidId("client_generated_event_id"),
                "client_generated_event_id is not a valid id",
            ),
            (
                json!({"visitor_id": "v", "app_id": "u", "additional_properties": {"k": "x".repeat(9000)}}),
                EventError::TooLarge {
                    field: "additional_properties",
                    size: 9008,
                    max: 8192,
                },
                "additional_properties too large: 9008 bytes (max 8192)",
            ),
        ];
        for (raw, expected, message) in cases {
            let got = enrich_identify(identify(raw.clone()), &ctx(&s)).unwrap_err();
            assert_eq!(got, expected, "{raw}");
            assert_eq!(got.to_string(), message, "{raw}");
        }
    }

    #[test]
    fn allowed_host_table() {
        let list = |hosts: &[&str]| hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
        let cases: &[(&str, &[&str], bool)] = &[
            ("example.com", &[], true),
            ("", &[], true),
            ("example.com", &["example.com"], true),
            ("www.example.com", &["example.com"], true),
            ("example.com", &["www.example.com"], true),
            ("Example.COM", &["example.com"], true),
            ("example.com:8443", &["example.com:8443"], true),
            ("example.com:8443", &["example.com"], false),
            ("example.com", &["example.com:8443"], false),
            ("app.example.com", &["example.com"], false),
            ("app.example.com", &["*.example.com"], true),
            ("example.com", &["*.example.com"], true),
            ("a.b.example.com", &["*.example.com"], true),
            ("badexample.com", &["*.example.com"], false),
            ("example.com.evil.com", &["example.com"], false),
            ("", &["example.com"], false),
            ("evil.com", &["example.com", "evil.org"], false),
            ("localhost:3000", &["localhost:3000"], true),
        ];
        for (host, allowed, expected) in cases {
            assert_eq!(
                allowed_host(host, &list(allowed)),
                *expected,
                "{host} in {allowed:?}"
            );
        }
    }

    #[test]
    fn host_of_origin_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://www.example.com:8443", Some("www.example.com:8443")),
            ("https://Example.com", Some("example.com")),
            ("https://example.com/", Some("example.com")),
            ("https://example.com:443", Some("example.com")),
            ("http://example.com:80", Some("example.com")),
            ("http://example.com:443", Some("example.com:443")),
            ("http://localhost:3000", Some("localhost:3000")),
            ("example.com", Some("example.com")),
            ("example.com:8080", Some("example.com:8080")),
            (" https://shop.example.org ", Some("shop.example.org")),
            ("*", None),
            ("", None),
            ("ftp://example.com", None),
            ("https://", None),
        ];
        for (origin, expected) in cases {
            assert_eq!(host_of_origin(origin).as_deref(), *expected, "{origin:?}");
        }
    }

    #[test]
    fn origins_feed_allowed_hosts() {
        let hosts: Vec<String> = ["https://www.example.com", "http://localhost:3000"]
            .iter()
            .filter_map(|o| host_of_origin(o))
            .collect();
        assert!(allowed_host("example.com", &hosts));
        assert!(allowed_host("localhost:3000", &hosts));
        assert!(!allowed_host("localhost:3001", &hosts));
    }
}
