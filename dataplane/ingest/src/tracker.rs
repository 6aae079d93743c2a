//! The browser tracker, served from the binary: `/zori.js` (short cache, always the running
//! version) and `/v/<version>/zori.js` (immutable), with a strong ETag.

use std::sync::LazyLock;

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use sha2::{Digest, Sha256};

/// The tracker source, built into the binary.
pub const SOURCE: &str = include_str!("../../tracker/zori.js");

/// Path of the immutable, versioned tracker URL.
pub fn versioned_path() -> String {
    format!("/v/{}/zori.js", env!("CARGO_PKG_VERSION"))
}

/// Strong ETag of [`SOURCE`]: `"<first 16 bytes of its SHA-256, hex>"`.
pub static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    let digest = Sha256::digest(SOURCE.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"zori\""))
});

const CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/javascript; charset=utf-8");
const SHORT_CACHE: HeaderValue = HeaderValue::from_static("public, max-age=300");
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const CROSS_ORIGIN: HeaderValue = HeaderValue::from_static("cross-origin");

/// Answers a GET for the tracker: 304 when `If-None-Match` matches, else the script.
pub(crate) fn serve(request_headers: &HeaderMap, immutable: bool) -> Response {
    let not_modified = request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| etag_matches(v, ETAG.as_bytes()));
    let mut response = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(SOURCE));
        r.headers_mut().insert(header::CONTENT_TYPE, CONTENT_TYPE);
        r
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, ETAG.clone());
    headers.insert(
        header::CACHE_CONTROL,
        if immutable { IMMUTABLE } else { SHORT_CACHE },
    );
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY_ORIGIN);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    headers.insert("cross-origin-resource-policy", CROSS_ORIGIN);
    response
}

/// `If-None-Match` uses the weak comparison: `W/` prefixes are ignored; `*` matches.
fn etag_matches(if_none_match: &str, etag: &[u8]) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/").as_bytes() == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_strong_and_stable() {
        let etag = ETAG.to_str().expect("text");
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34,
            "{etag}"
        );
        assert!(!etag.starts_with("W/"));
    }

    #[test]
    fn matches_if_none_match_lists() {
        let etag = b"\"abc\"";
        for (header, expected) in [
            ("\"abc\"", true),
            ("W/\"abc\"", true),
            ("\"x\", \"abc\"", true),
            ("*", true),
            ("\"abd\"", false),
            ("abc", false),
            ("", false),
        ] {
            assert_eq!(etag_matches(header, etag), expected, "{header:?}");
        }
    }

    #[test]
    fn serves_with_cache_headers() {
        let response = serve(&HeaderMap::new(), false);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "public, max-age=300"
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, ETAG.clone());
        let response = serve(&headers, true);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }
}
