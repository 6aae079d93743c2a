//! Request plumbing shared by the ingest routes: origin and key checks, bounded body reading,
//! JSON parsing, client address, and the JSON error answers.

use std::{borrow::Cow, net::IpAddr, net::SocketAddr};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{
        header::{self, HeaderMap, HeaderName, HeaderValue},
        request::Parts,
        StatusCode,
    },
    response::{IntoResponse, Response},
    Json,
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zori_core::enrich::EventError;

use crate::metrics::Reason;

pub(crate) const KEY_HEADER: HeaderName = HeaderName::from_static("x-zori-pt");
/// Seconds a client should wait before retrying when the stream is unavailable.
pub(crate) const UNAVAILABLE_RETRY_AFTER: u64 = 5;
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("POST, GET, OPTIONS");
const ALLOW_HEADERS: HeaderValue =
    HeaderValue::from_static("Content-Type, X-Zori-PT, X-Zori-Version");
const MAX_AGE: HeaderValue = HeaderValue::from_static("86400");
const EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static("Retry-After");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
/// Longest time a client may take to send its body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Longest part of a client-supplied value echoed in an error message.
const MAX_ECHO: usize = 120;

/// A request that is not accepted: status, a lower-case message naming the problem, the metric
/// reason and how many events it concerns.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) reason: Reason,
    pub(crate) message: Cow<'static, str>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) events: u64,
}

impl Rejection {
    pub(crate) fn new(
        status: StatusCode,
        reason: Reason,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            retry_after: None,
            events: 1,
        }
    }

    pub(crate) fn events(mut self, events: usize) -> Self {
        self.events = events.max(1) as u64;
        self
    }

    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(crate) fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Status and metric reason of an enrichment error. A page host outside the allowed origins
/// is 403; every other problem with the event is 400.
pub(crate) fn classify_event_error(error: &EventError) -> (StatusCode, Reason) {
    match error {
        EventError::HostNotAllowed(_) => (StatusCode::FORBIDDEN, Reason::HostNotAllowed),
        _ => (StatusCode::BAD_REQUEST, Reason::Invalid),
    }
}

pub(crate) fn event_rejection(error: &EventError) -> Rejection {
    let (status, reason) = classify_event_error(error);
    Rejection::new(status, reason, error.to_string())
}

/// The allowed origins, as header values for exact comparison with `Origin`.
pub(crate) struct Origins {
    allowed: Vec<HeaderValue>,
}

/// What the `Origin` header of a request says.
pub(crate) enum OriginCheck<'a> {
    /// No `Origin`: a server-side sender; no CORS headers.
    Absent,
    Allowed(&'a HeaderValue),
    Denied(&'a HeaderValue),
}

impl Origins {
    pub(crate) fn new(origins: &[String]) -> Self {
        Self {
            allowed: origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        }
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.allowed
            .iter()
            .any(|a| a.as_bytes() == origin.as_bytes())
    }

    pub(crate) fn check<'a>(&self, headers: &'a HeaderMap) -> OriginCheck<'a> {
        match headers.get(header::ORIGIN) {
            None => OriginCheck::Absent,
            Some(origin) if self.allows(origin) => OriginCheck::Allowed(origin),
            Some(origin) => OriginCheck::Denied(origin),
        }
    }

    /// Fails with 403 when the request comes from a page on another origin.
    pub(crate) fn require(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        match self.check(headers) {
            OriginCheck::Denied(origin) => Err(Rejection::new(
                StatusCode::FORBIDDEN,
                Reason::OriginNotAllowed,
                format!("origin {} is not allowed", echo(origin.as_bytes())),
            )),
            _ => Ok(()),
        }
    }

    /// Adds the CORS headers of an actual (non-preflight) response.
    pub(crate) fn decorate(&self, origin: Option<HeaderValue>, response: &mut Response) {
        let headers = response.headers_mut();
        headers.append(header::VARY, VARY_ORIGIN);
        if let Some(origin) = origin.filter(|o| self.allows(o)) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
        }
    }

    /// Answer to a CORS preflight: 204, with CORS headers only for an allowed origin.
    pub(crate) fn preflight(&self, request_headers: &HeaderMap) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(header::VARY, VARY_ORIGIN);
        if let OriginCheck::Allowed(origin) = self.check(request_headers) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        }
        response
    }
}

/// The publishable key, kept as a digest so that checks compare in constant time whatever the
/// length of what was sent.
pub(crate) struct KeyCheck {
    digest: [u8; 32],
}

impl KeyCheck {
    pub(crate) fn new(key: &str) -> Self {
        Self {
            digest: Sha256::digest(key.as_bytes()).into(),
        }
    }

    /// Reads the key from `X-Zori-PT` or the `key` query parameter (sendBeacon cannot set
    /// headers) and checks it.
    pub(crate) fn require(&self, parts: &Parts) -> Result<(), Rejection> {
        let sent: Option<Cow<'_, [u8]>> = match parts.headers.get(KEY_HEADER) {
            Some(value) => Some(Cow::Borrowed(value.as_bytes())),
            None => parts.uri.query().and_then(|query| {
                url::form_urlencoded::parse(query.as_bytes())
                    .find(|(name, _)| name == "key")
                    .map(|(_, value)| Cow::Owned(value.into_owned().into_bytes()))
            }),
        };
        match sent {
            None => Err(Rejection::new(
                StatusCode::UNAUTHORIZED,
                Reason::MissingKey,
                "missing publishable key: send it in the X-Zori-PT header or the key query parameter",
            )),
            Some(sent) => {
                let digest: [u8; 32] = Sha256::digest(sent.trim_ascii()).into();
                if bool::from(digest.ct_eq(&self.digest)) {
                    Ok(())
                } else {
                    Err(Rejection::new(
                        StatusCode::UNAUTHORIZED,
                        Reason::InvalidKey,
                        "invalid publishable key",
                    ))
                }
            }
        }
    }
}

/// Reads the whole body, refusing (413) anything over `limit` bytes, announced or not.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, Rejection> {
    let too_large = || {
        Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::BodyTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read_error = |error: axum::Error| {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            Reason::UnreadableBody,
            format!("failed to read the request body: {error}"),
        )
    };
    let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    let mut stream = body.into_data_stream();
    // Most bodies arrive in one chunk: keep it without copying.
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut total = 0usize;
    loop {
        // Ready chunks are taken without touching the timer; only a slow body arms it.
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(next) => next,
            Err(_) => {
                return Err(Rejection::new(
                    StatusCode::REQUEST_TIMEOUT,
                    Reason::UnreadableBody,
                    format!(
                        "timed out reading the request body (limit {} seconds)",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                ))
            }
        };
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(read_error)?;
        total += chunk.len();
        if total > limit {
            return Err(too_large());
        }
        match (&mut first, &mut rest) {
            (None, _) => first = Some(chunk),
            (Some(head), None) => {
                let capacity = announced.map_or(total, |n| n as usize).clamp(total, limit);
                let mut buffer = BytesMut::with_capacity(capacity);
                buffer.extend_from_slice(head);
                buffer.extend_from_slice(&chunk);
                rest = Some(buffer);
            }
            (Some(_), Some(buffer)) => buffer.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, rest) {
        (_, Some(buffer)) => buffer.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    })
}

/// Parses a JSON body (whatever its Content-Type: sendBeacon sends text/plain); the error names
/// serde's line and column.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Rejection> {
    serde_json::from_slice(body).map_err(|error| {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            Reason::MalformedJson,
            format!("malformed json body: {error}"),
        )
    })
}

/// The client address. Behind `trusted_proxies` proxies that each append to `client_ip_header`
/// (X-Forwarded-For style), the address the outermost proxy saw is the `trusted_proxies`-th entry
/// from the right: entries further left were sent by the client and prove nothing. With fewer
/// entries than proxies the left-most is used. Without the header (or with 0 trusted proxies),
/// or when the chosen entry is not an address, the peer address is used.
pub(crate) fn client_ip(
    parts: &Parts,
    client_ip_header: Option<&HeaderName>,
    trusted_proxies: usize,
) -> Option<IpAddr> {
    if let Some(name) = client_ip_header.filter(|_| trusted_proxies > 0) {
        let mut hops: Vec<&str> = Vec::new();
        for value in parts.headers.get_all(name) {
            // A header that is not text is ignored as a whole.
            let Ok(value) = value.to_str() else {
                hops.clear();
                break;
            };
            hops.extend(value.split(',').map(str::trim));
        }
        if !hops.is_empty() {
            let index = hops.len().saturating_sub(trusted_proxies);
            if let Some(ip) = hops.get(index).and_then(|hop| parse_address(hop)) {
                return Some(ip);
            }
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_canonical())
}

/// One hop of a list such as `X-Forwarded-For: 203.0.113.7, 10.0.0.1`; accepts `ip:port` and
/// `[v6]:port` forms.
fn parse_address(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>()
        .ok()
        .map(|addr| addr.ip().to_canonical())
}

/// The `User-Agent` header, when it is text.
pub(crate) fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
}

/// A client-supplied value, shortened and made printable, for an error message.
fn echo(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ECHO)
        .collect();
    if text.chars().count() > MAX_ECHO {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn parses_one_hop() {
        let cases: &[(&str, Option<&str>)] = &[
            ("203.0.113.7", Some("203.0.113.7")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("203.0.113.7:5123", Some("203.0.113.7")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("::ffff:203.0.113.7", Some("203.0.113.7")),
            ("unknown", None),
            ("", None),
        ];
        for (value, expected) in cases {
            let expected = expected.map(|s| s.parse::<IpAddr>().expect("ip"));
            assert_eq!(parse_address(value), expected, "{value:?}");
        }
    }

    #[test]
    fn takes_the_right_most_hop_no_trusted_proxy_added() {
        let header = HeaderName::from_static("x-forwarded-for");
        let peer = "192.0.2.1";
        let ip = |values: &[&str], proxies: usize| {
            let headers: Vec<(&str, &str)> =
                values.iter().map(|v| ("x-forwarded-for", *v)).collect();
            let mut p = parts("/ingest", &headers);
            p.extensions.insert(ConnectInfo(
                format!("{peer}:4000").parse::<SocketAddr>().expect("addr"),
            ));
            client_ip(&p, Some(&header), proxies).map(|ip| ip.to_string())
        };
        let cases: &[(&[&str], usize, &str)] = &[
            // One proxy (an ingress controller) appends the address it saw.
            (&["198.51.100.2"], 1, "198.51.100.2"),
            // A client sending its own X-Forwarded-For cannot choose its address.
            (&["1.2.3.4, 198.51.100.2"], 1, "198.51.100.2"),
            (&["1.2.3.4", "198.51.100.2"], 1, "198.51.100.2"),
            (&["1.2.3.4, 5.6.7.8, 198.51.100.2"], 1, "198.51.100.2"),
            // Two proxies (a load balancer, then the ingress): the second entry from the right.
            (&["1.2.3.4, 198.51.100.2, 10.0.0.5"], 2, "198.51.100.2"),
            (&["198.51.100.2, 10.0.0.5"], 2, "198.51.100.2"),
            // Fewer entries than proxies: the left-most, which a proxy wrote.
            (&["198.51.100.2"], 2, "198.51.100.2"),
            // 0 proxies: the header is ignored.
            (&["1.2.3.4"], 0, peer),
            // The chosen hop is garbage: the peer, never another (client-written) hop.
            (&["1.2.3.4, garbage"], 1, peer),
            (&["garbage"], 1, peer),
            (&[""], 1, peer),
            (&[], 1, peer),
        ];
        for (values, proxies, expected) in cases {
            assert_eq!(
                ip(values, *proxies).as_deref(),
                Some(*expected),
                "{values:?} with {proxies} proxies"
            );
        }
        let p = parts("/ingest", &[("x-forwarded-for", "198.51.100.2")]);
        assert_eq!(
            client_ip(&p, None, 1),
            None,
            "no header configured, no peer"
        );
    }

    #[test]
    fn checks_the_key_from_header_or_query() {
        let check = KeyCheck::new("zori_pt_0123456789abcdef");
        let ok = |p: Parts| check.require(&p).is_ok();
        let reason = |p: Parts| check.require(&p).err().map(|r| r.reason);
        assert!(ok(parts(
            "/ingest",
            &[("x-zori-pt", "zori_pt_0123456789abcdef")]
        )));
        assert!(ok(parts("/batch?key=zori_pt_0123456789abcdef", &[])));
        assert!(ok(parts("/batch?a=1&key=zori_pt_0123456789abcdef", &[])));
        assert_eq!(reason(parts("/ingest", &[])), Some(Reason::MissingKey));
        assert_eq!(
            reason(parts("/ingest?kee=x", &[])),
            Some(Reason::MissingKey)
        );
        assert_eq!(
            reason(parts(
                "/ingest",
                &[("x-zori-pt", "zori_pt_0123456789abcdeX")]
            )),
            Some(Reason::InvalidKey)
        );
        assert_eq!(reason(parts("/ingest?key=", &[])), Some(Reason::InvalidKey));
    }

    #[test]
    fn origins_match_exactly() {
        let origins = Origins::new(&["https://shop.example.com".to_owned()]);
        let headers = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::ORIGIN,
                HeaderValue::from_str(origin).expect("value"),
            );
            h
        };
        assert!(matches!(
            origins.check(&HeaderMap::new()),
            OriginCheck::Absent
        ));
        assert!(matches!(
            origins.check(&headers("https://shop.example.com")),
            OriginCheck::Allowed(_)
        ));
        for denied in [
            "http://shop.example.com",
            "https://shop.example.com:8443",
            "https://evil.example",
            "null",
        ] {
            assert!(
                matches!(origins.check(&headers(denied)), OriginCheck::Denied(_)),
                "{denied}"
            );
        }
        let rejection = origins
            .require(&headers("https://evil.example"))
            .expect_err("denied");
        assert_eq!(rejection.status, StatusCode::FORBIDDEN);
        assert_eq!(
            rejection.message,
            "origin https://evil.example is not allowed"
        );
    }

    #[test]
    fn echo_is_bounded_and_printable() {
        assert_eq!(echo(b"a\nb"), "ab");
        assert_eq!(
            echo("x".repeat(500).as_bytes()).chars().count(),
            MAX_ECHO + 1
        );
    }
}
