//! Who may read the reports: the API token (bearer, for scripts) or a dashboard session cookie
//! (browsers, GET only).
//!
//! Signing in (`POST /session`) compares the token in constant time and sets an HttpOnly,
//! SameSite=Strict cookie (Secure behind https) holding `v1.<expiry>.<nonce>.<signature>`: an
//! HMAC-SHA256 over the rest, keyed by a key derived from the API token. The token itself never
//! leaves the sign-in request, and rotating it ends every session.

use std::{sync::Arc, time::Duration};

use axum::http::{header, HeaderMap};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Name of the dashboard session cookie.
pub const COOKIE: &str = "zori_session";
/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

const VERSION: &str = "v1";

/// The API token's digest and the session signing key derived from it.
#[derive(Clone)]
pub struct Auth {
    token_digest: Arc<[u8; 32]>,
    key: Arc<[u8; 32]>,
    ttl: Duration,
}

impl Auth {
    pub fn new(api_token: &Secret) -> Self {
        let token = api_token.expose().as_bytes();
        let key = HmacSha256::new_from_slice(token)
            .expect("HMAC takes keys of any length")
            .chain_update(b"zori dashboard session key v1")
            .finalize()
            .into_bytes()
            .into();
        Self {
            token_digest: Arc::new(Sha256::digest(token).into()),
            key: Arc::new(key),
            ttl: SESSION_TTL,
        }
    }

    /// Compares digests, so neither the token nor its length leaks through timing.
    pub fn token_matches(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        digest.ct_eq(self.token_digest.as_slice()).into()
    }

    /// `Authorization: Bearer <token>` with the right token.
    pub fn bearer_matches(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && self.token_matches(token)
    }

    fn sign(&self, payload: &str) -> HmacSha256 {
        HmacSha256::new_from_slice(self.key.as_slice())
            .expect("HMAC takes keys of any length")
            .chain_update(payload.as_bytes())
    }

    /// A new session value expiring `ttl` after `now`, and that expiry.
    pub fn issue(&self, now: OffsetDateTime) -> (String, OffsetDateTime) {
        let expires = now + self.ttl;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let payload = format!("{VERSION}.{}.{nonce}", expires.unix_timestamp());
        let signature = hex::encode(self.sign(&payload).finalize().into_bytes());
        (format!("{payload}.{signature}"), expires)
    }

    /// The expiry of a session value when it is authentic and not expired at `now`.
    pub fn verify(&self, value: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let (payload, signature) = value.rsplit_once('.')?;
        let signature = hex::decode(signature).ok()?;
        self.sign(payload).verify_slice(&signature).ok()?;
        let mut parts = payload.split('.');
        if parts.next()? != VERSION {
            return None;
        }
        let expires = OffsetDateTime::from_unix_timestamp(parts.next()?.parse().ok()?).ok()?;
        // Never longer than a session lasts, whatever a (validly signed) value claims.
        (expires > now && expires <= now + self.ttl).then_some(expires)
    }

    /// The expiry of the request's session cookie, when it carries a valid one.
    pub fn session(&self, headers: &HeaderMap, now: OffsetDateTime) -> Option<OffsetDateTime> {
        cookies(headers, COOKIE).find_map(|value| self.verify(value, now))
    }
}

/// Values of every cookie named `name` in the request's `Cookie` headers.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// True when the request reached us over https (directly or as a proxy says).
pub fn is_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split([';', ','])
                .any(|p| p.trim().eq_ignore_ascii_case("proto=https"))
        });
    forwarded_proto || forwarded
}

/// `Set-Cookie` value for a new session.
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use time::macros::datetime;

    use super::*;

    fn auth(token: &str) -> Auth {
        Auth::new(&Secret::new(token))
    }

    #[test]
    fn tokens_and_bearers() {
        let a = auth("0123456789abcdef");
        assert!(a.token_matches("0123456789abcdef"));
        assert!(!a.token_matches("0123456789abcdeF"));
        assert!(!a.token_matches(""));
        let check = |value: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            a.bearer_matches(&headers)
        };
        assert!(check(Some("Bearer 0123456789abcdef")));
        assert!(check(Some("bearer 0123456789abcdef")));
        assert!(!check(Some("Bearer 0123456789abcde")));
        assert!(!check(Some("Basic 0123456789abcdef")));
        assert!(!check(Some("0123456789abcdef")));
        assert!(!check(None));
    }

    #[test]
    fn sessions_are_signed_and_expire() {
        let a = auth("0123456789abcdef");
        let now = datetime!(2025-03-01 10:00 UTC);
        let (value, expires) = a.issue(now);
        assert!(!value.contains("0123456789abcdef"), "never the raw token");
        assert_eq!(a.verify(&value, now), Some(expires));
        assert_eq!(
            a.verify(&value, now + SESSION_TTL - Duration::from_secs(1)),
            Some(expires)
        );
        assert_eq!(a.verify(&value, expires), None, "expired");
        // Another token (rotation) invalidates every session.
        assert_eq!(auth("fedcba9876543210").verify(&value, now), None);
        // Tampering with any part breaks the signature.
        let (payload, signature) = value.rsplit_once('.').unwrap();
        let later = payload.replace(
            &expires.unix_timestamp().to_string(),
            &(expires.unix_timestamp() + 1).to_string(),
        );
        assert_eq!(a.verify(&format!("{later}.{signature}"), now), None);
        assert_eq!(a.verify(&format!("{payload}.00"), now), None);
        assert_eq!(a.verify("", now), None);
        assert_eq!(a.verify("v1.1.2", now), None);
        // Two sign-ins never share a value.
        assert_ne!(a.issue(now).0, value);
    }

    #[test]
    fn cookie_headers() {
        let a = auth("0123456789abcdef");
        let now = OffsetDateTime::now_utc();
        let (value, _) = a.issue(now);
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark"));
        assert_eq!(a.session(&headers, now), None);
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=1; {COOKIE}=bogus; {COOKIE}={value}")).unwrap(),
        );
        assert!(a.session(&headers, now).is_some());

        let cookie = set_cookie(&value, false);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("Secure"));
        assert!(set_cookie(&value, true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));

        let mut headers = HeaderMap::new();
        assert!(!is_https(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(is_https(&headers));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=1.2.3.4;proto=https"),
        );
        assert!(is_https(&headers));
    }
}
