//! The dashboard: a static single page (plain HTML, CSS and JavaScript from
//! `dataplane/api/dashboard/`, embedded in the binary, nothing loaded from elsewhere) that renders
//! the reports API, and the session routes that let a browser sign in with the API token.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (`Cache-Control: no-cache`, ETag) |
//! | `GET /assets/{name}` | script, style sheet, icon (versioned URLs, cached for a year) |
//! | `POST /session` | sign in with the token (JSON `{"token": …}` or a form) |
//! | `GET /session` | 200 while the session cookie is valid, else 401 |
//! | `POST /session/logout` | sign out (clears the cookie) |
//!
//! Every response carries a strict Content-Security-Policy (no inline script or style, nothing
//! from another origin) and refuses framing.

pub mod session;

use std::sync::LazyLock;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub use session::Auth;

/// Content-Security-Policy of every dashboard response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// An embedded file with its content type and strong ETag.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Self {
        let digest = Sha256::digest(body);
        Self {
            body,
            content_type,
            etag: format!("\"{}\"", hex::encode(&digest[..12])),
        }
    }

    /// The first 12 hex digits of the digest, for versioned URLs.
    fn version(&self) -> &str {
        &self.etag[1..13]
    }
}

static APP_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../dashboard/app.js"),
        "text/javascript; charset=utf-8",
    )
});
static APP_CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../dashboard/app.css"),
        "text/css; charset=utf-8",
    )
});
static ICON: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../dashboard/favicon.svg"),
        "image/svg+xml",
    )
});
/// `index.html` with its asset URLs versioned by content, so they can be cached for good.
static INDEX: LazyLock<Asset> = LazyLock::new(|| {
    let html = include_str!("../../dashboard/index.html")
        .replace(
            "{{app.js}}",
            &format!("/assets/app.js?v={}", APP_JS.version()),
        )
        .replace(
            "{{app.css}}",
            &format!("/assets/app.css?v={}", APP_CSS.version()),
        )
        .replace(
            "{{favicon.svg}}",
            &format!("/assets/favicon.svg?v={}", ICON.version()),
        );
    Asset::new(
        Box::leak(html.into_boxed_str()).as_bytes(),
        "text/html; charset=utf-8",
    )
});

fn security_headers(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(
        headers,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
}

fn serve(asset: &Asset, request: &HeaderMap, cache_control: &'static str) -> Response {
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim().trim_start_matches("W/") == asset.etag)
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, asset.content_type)],
            Bytes::from_static(asset.body),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    security_headers(headers);
    response
}

async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers, "no-cache")
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let asset = match name.as_str() {
        "app.js" => &*APP_JS,
        "app.css" => &*APP_CSS,
        "favicon.svg" => &*ICON,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    serve(asset, &headers, "public, max-age=31536000, immutable")
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: &'static str,
    message: &'static str,
}

/// Shown when the token is wrong.
pub const WRONG_TOKEN: &str = "That API token is not valid here. Use the token zori-api was \
    started with (--api-token / ZORI_API_TOKEN).";
const CROSS_SITE: &str = "Sign-in refused: the request came from another site.";
const NO_TOKEN: &str = "Enter the API token.";

fn error(status: StatusCode, code: &'static str, message: &'static str, form: bool) -> Response {
    let mut response = if form {
        // A browser without JavaScript posted the form: answer with a page, not JSON.
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>Zori — sign-in failed</title>\
             <link rel=stylesheet href=\"/assets/app.css?v={}\">\
             <main class=signin><div class=card><h1>Sign-in failed</h1><p class=error>{message}</p>\
             <p><a href=\"/\">Try again</a></p></div></main>",
            APP_CSS.version()
        );
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response()
    } else {
        (
            status,
            Json(ErrorBody {
                error: ErrorDetail { code, message },
            }),
        )
            .into_response()
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(response.headers_mut());
    response
}

/// A POST from another origin (when the browser says where it came from) is refused: the
/// session cookie is SameSite=Strict, and this covers sign-in and sign-out themselves and the
/// dashboard's writes to the API (with the session cookie, see `reports::authorize`).
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if origin == "null" {
        return true;
    }
    let origin_host = url::Url::parse(origin).ok().and_then(|u| {
        let host = u.host_str()?.to_owned();
        Some(match u.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    });
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .map(|h| h.split(',').next().unwrap_or(h).trim());
    match (origin_host, host) {
        (Some(o), Some(h)) => {
            let strip = |s: &str| {
                s.strip_suffix(":443")
                    .or_else(|| s.strip_suffix(":80"))
                    .unwrap_or(s)
                    .to_ascii_lowercase()
            };
            strip(&o) != strip(h)
        }
        _ => true,
    }
}

#[derive(Deserialize)]
struct SignIn {
    token: Option<String>,
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

#[derive(Serialize)]
struct SessionInfo {
    signed_in: bool,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

async fn sign_in(State(auth): State<Auth>, headers: HeaderMap, body: Bytes) -> Response {
    let form = is_form(&headers);
    if cross_site(&headers) {
        return error(StatusCode::FORBIDDEN, "forbidden", CROSS_SITE, form);
    }
    let token = if form {
        url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    } else {
        serde_json::from_slice::<SignIn>(&body)
            .ok()
            .and_then(|s| s.token)
    };
    let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "bad_request", NO_TOKEN, form);
    };
    if !auth.token_matches(&token) {
        tracing::info!("dashboard sign-in with a wrong token");
        return error(StatusCode::UNAUTHORIZED, "unauthorized", WRONG_TOKEN, form);
    }
    let (value, expires_at) = auth.issue(OffsetDateTime::now_utc());
    let cookie = session::set_cookie(&value, session::is_https(&headers));
    let mut response = if form {
        (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
    } else {
        Json(SessionInfo {
            signed_in: true,
            expires_at: expires_at.replace_nanosecond(0).unwrap_or(expires_at),
        })
        .into_response()
    };
    let headers_out = response.headers_mut();
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        headers_out.insert(header::SET_COOKIE, cookie);
    }
    headers_out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(headers_out);
    response
}

async fn current(State(auth): State<Auth>, headers: HeaderMap) -> Response {
    let mut response = match auth.session(&headers, OffsetDateTime::now_utc()) {
        Some(expires_at) => Json(SessionInfo {
            signed_in: true,
            expires_at,
        })
        .into_response(),
        None => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Not signed in.",
            false,
        ),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn sign_out(headers: HeaderMap) -> Response {
    let form = is_form(&headers);
    if cross_site(&headers) {
        return error(StatusCode::FORBIDDEN, "forbidden", CROSS_SITE, form);
    }
    let cookie = session::clear_cookie(session::is_https(&headers));
    let mut response = if form {
        (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `/`, `/assets/…` and `/session…`.
pub fn router(auth: Auth) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
        .route("/session", post(sign_in).get(current))
        .route("/session/logout", post(sign_out))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_checks() {
        assert!(!cross_site(&headers(&[("host", "zori.example")])));
        assert!(!cross_site(&headers(&[
            ("host", "127.0.0.1:1323"),
            ("origin", "http://127.0.0.1:1323")
        ])));
        assert!(!cross_site(&headers(&[
            ("host", "zori.example"),
            ("origin", "https://zori.example")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "zori.example"),
            ("origin", "https://evil.example")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:1323"),
            ("origin", "http://127.0.0.1:9999")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "zori.example"),
            ("origin", "null")
        ])));
    }

    #[test]
    fn assets_are_versioned_and_linked() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        assert!(html.contains(&format!("/assets/app.js?v={}", APP_JS.version())));
        assert!(html.contains(&format!("/assets/app.css?v={}", APP_CSS.version())));
        assert!(!html.contains("{{"), "every placeholder is replaced");
        assert!(!html.contains("<script>"), "no inline script (CSP)");
        assert!(!html.contains("style="), "no inline style (CSP)");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing from elsewhere"
        );
        // The SVG namespace is a name, not something loaded.
        let js = std::str::from_utf8(APP_JS.body)
            .unwrap()
            .replace("'http://www.w3.org/2000/svg'", "");
        assert!(
            !js.contains("https://") && !js.contains("http://"),
            "no CDN"
        );
        assert_eq!(APP_JS.etag.len(), 26);
    }
}
