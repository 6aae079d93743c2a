//! Page URLs: full URLs (our script) or path + `host` (the original script), cleaned of query
//! parameters that look like personal data and of the fragment (zori-spec §9.24).

use std::collections::BTreeMap;

use url::{form_urlencoded, Url};

use crate::{
    channel::CLICK_IDS,
    event::{Page, Utm},
    text::{clean, truncate_bytes},
};

/// Longest `Page::url` kept, and longest cleaned link.
pub const MAX_URL_LEN: usize = 2048;
/// Longest `Page::path` kept.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest cleaned query kept; parameters that do not fit are left out whole.
pub const MAX_QUERY_LEN: usize = 1024;
/// Longest UTM or click-id value kept.
pub const MAX_PARAM_VALUE_LEN: usize = 256;

/// Parameter names dropped when they are the whole name.
const SENSITIVE_NAMES: &[&str] = &[
    "email",
    "e_mail",
    "mail",
    "token",
    "access_token",
    "auth",
    "password",
    "pass",
    "pwd",
    "secret",
    "key",
    "api_key",
    "session",
    "sid",
    "code",
    "phone",
    "tel",
    "name",
    "first_name",
    "last_name",
    "fullname",
    "full_name",
    "firstname",
    "lastname",
    "username",
    "user_name",
    "address",
    "ssn",
    "card",
    "jwt",
    "otp",
    "pin",
    "cvv",
    "cvc",
    "iban",
    "dob",
];

/// Parameter names dropped when they contain one of these (`user_email`, `refresh_token`).
const SENSITIVE_PARTS: &[&str] = &[
    "email",
    "password",
    "passwd",
    "token",
    "secret",
    "apikey",
    "api_key",
    "access_key",
    "private_key",
    "sessionid",
    "sessid",
    "session_id",
    "phone",
    "first_name",
    "last_name",
    "firstname",
    "lastname",
    "fullname",
    "full_name",
    "username",
    "user_name",
    "card_number",
    "cardnumber",
    "credit_card",
];

/// Parameter names dropped when one of their `_`-separated words is one of these.
const SENSITIVE_WORDS: &[&str] = &["ssn", "otp", "jwt", "pwd", "cvv", "cvc", "iban"];

/// Cleans a page URL. `page_url` is a full http(s) URL, or a path (with optional query) that
/// is combined with `host` (`location.host`). The URL's own host wins over `host`.
pub fn parse_page(page_url: &str, host: &str) -> Page {
    let raw = page_url.trim();
    let (scheme, host, path, query) = match full_url(raw) {
        Some(url) => (
            url.scheme().to_owned(),
            authority(&url).unwrap_or_default(),
            url.path().to_owned(),
            url.query().unwrap_or_default().to_owned(),
        ),
        None => {
            let (path, query) = split_path(raw);
            (
                "https".to_owned(),
                normalize_host(host).unwrap_or_default(),
                path,
                query,
            )
        }
    };
    let path = match truncate_bytes(&path, MAX_PATH_LEN) {
        "" => "/".to_owned(),
        p => p.to_owned(),
    };
    let query = clean_query(&query);
    let mut url = if host.is_empty() {
        path.clone()
    } else {
        format!("{scheme}://{host}{path}")
    };
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    let url = truncate_bytes(&url, MAX_URL_LEN).to_owned();
    Page {
        url,
        host,
        path,
        query,
        title: None,
    }
}

fn full_url(raw: &str) -> Option<Url> {
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    let url = if lower.starts_with("http://") || lower.starts_with("https://") {
        Url::parse(raw).ok()?
    } else if raw.starts_with("//") {
        Url::parse(&format!("https:{raw}")).ok()?
    } else {
        return None;
    };
    url.host_str().filter(|h| !h.is_empty())?;
    Some(url)
}

/// Path and raw query of a path-only page URL (fragment dropped, percent-encoding normalised).
fn split_path(raw: &str) -> (String, String) {
    const BASE_HOST: &str = "page.invalid";
    let Ok(base) = Url::parse(&format!("https://{BASE_HOST}/")) else {
        return ("/".to_owned(), String::new());
    };
    let relative = if raw.starts_with('/') || raw.starts_with('?') {
        raw.to_owned()
    } else {
        format!("/{raw}")
    };
    match base.join(&relative) {
        // A path like `/\evil.com` can turn into another host: keep nothing of it.
        Ok(url) if url.host_str() == Some(BASE_HOST) => (
            url.path().to_owned(),
            url.query().unwrap_or_default().to_owned(),
        ),
        _ => ("/".to_owned(), String::new()),
    }
}

/// `host[:port]` of a URL, lower case, the port only when it is not the scheme's default.
pub fn authority(url: &Url) -> Option<String> {
    let host = url.host_str()?.to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// A `location.host` value, lower case and validated (`Example.COM:8443` → `example.com:8443`,
/// `example.com:443` → `example.com`). `None` when it is not a plain host.
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim();
    if host.is_empty() || host.len() > 260 || host.contains(['/', '\\', '@', '?', '#', ' ', '%']) {
        return None;
    }
    authority(&Url::parse(&format!("https://{host}/")).ok()?)
}

/// Keeps the query parameters that do not look like personal data, in order and with their
/// original encoding, within [`MAX_QUERY_LEN`].
pub fn clean_query(query: &str) -> String {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut out = String::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = form_urlencoded::parse(part.as_bytes()).next() else {
            continue;
        };
        if !keep_param(&name, &value) {
            continue;
        }
        let extra = part.len() + usize::from(!out.is_empty());
        if out.len() + extra > MAX_QUERY_LEN {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(part);
    }
    out
}

/// Whether a (decoded) query parameter may be kept.
pub fn keep_param(name: &str, value: &str) -> bool {
    let name = normalize_name(name);
    if name.is_empty() || looks_like_email(value) {
        return false;
    }
    if name.starts_with("utm_") || CLICK_IDS.iter().any(|(id, _)| *id == name) {
        return true;
    }
    !is_sensitive_name(&name) && !looks_like_secret(value)
}

fn normalize_name(name: &str) -> String {
    name.trim()
        .to_ascii_lowercase()
        .replace(['-', '.', ' ', '[', ']'], "_")
        .trim_matches('_')
        .to_owned()
}

/// Whether a parameter name (as returned by `normalize_name`) suggests personal data.
fn is_sensitive_name(name: &str) -> bool {
    SENSITIVE_NAMES.contains(&name)
        || SENSITIVE_PARTS.iter().any(|part| name.contains(part))
        || name.split('_').any(|word| SENSITIVE_WORDS.contains(&word))
}

/// `jane@example.com`, also inside a longer value (`mailto:jane@example.com`).
pub fn looks_like_email(value: &str) -> bool {
    let Some((local, domain)) = value.trim().rsplit_once('@') else {
        return false;
    };
    let local_ok = local.chars().last().is_some_and(|c| !c.is_whitespace());
    let domain = domain.trim();
    local_ok
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains(char::is_whitespace)
}

/// A JWT, or a hex / base64 token of at least 32 characters.
pub fn looks_like_secret(value: &str) -> bool {
    let v = value.trim();
    looks_like_jwt(v) || looks_like_hex_token(v) || looks_like_base64_token(v)
}

fn looks_like_jwt(v: &str) -> bool {
    let segments: Vec<&str> = v.split('.').collect();
    segments.len() == 3
        && v.starts_with("eyJ")
        && segments[..2].iter().all(|s| !s.is_empty())
        && segments.iter().all(|s| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
        })
}

/// 32+ hex digits, optionally grouped with `-` (UUIDs, SHA digests, API keys).
fn looks_like_hex_token(v: &str) -> bool {
    let digits = v.bytes().filter(u8::is_ascii_hexdigit).count();
    digits >= 32 && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// 32+ base64(url) characters with digits and mixed case (slugs are lower case).
fn looks_like_base64_token(v: &str) -> bool {
    v.len() >= 32
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
        && v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes().any(|b| b.is_ascii_uppercase())
        && v.bytes().any(|b| b.is_ascii_lowercase())
}

/// A clicked link's `href`, safe to store: `mailto:`/`tel:` and other non-web schemes keep
/// only the scheme, user info and fragments are dropped (a bare `#anchor` is kept), the query
/// is cleaned like a page's.
pub fn clean_link(href: &str) -> String {
    let href = href.trim();
    if href.is_empty() {
        return String::new();
    }
    if let Some(anchor) = href.strip_prefix('#') {
        return if anchor.contains(['=', '&']) || anchor.len() > 128 {
            "#".to_owned()
        } else {
            truncate_bytes(href, MAX_URL_LEN).to_owned()
        };
    }
    let cleaned = match Url::parse(href) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            let query = clean_query(url.query().unwrap_or_default());
            let mut out = format!(
                "{}://{}{}",
                url.scheme(),
                authority(&url).unwrap_or_default(),
                url.path()
            );
            if !query.is_empty() {
                out.push('?');
                out.push_str(&query);
            }
            out
        }
        Ok(url) => format!("{}:", url.scheme()),
        Err(_) => {
            let without_fragment = href.split('#').next().unwrap_or_default();
            match without_fragment.split_once('?') {
                Some((base, query)) => match clean_query(query) {
                    q if q.is_empty() => base.to_owned(),
                    q => format!("{base}?{q}"),
                },
                None => without_fragment.to_owned(),
            }
        }
    };
    truncate_bytes(&cleaned, MAX_URL_LEN).to_owned()
}

/// The five UTM parameters of a query (first occurrence wins; values trimmed, ≤ 256 chars).
pub fn utm_from_query(query: &str) -> Utm {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut utm = Utm::default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.trim().to_ascii_lowercase().as_str() {
            "utm_source" => &mut utm.source,
            "utm_medium" => &mut utm.medium,
            "utm_campaign" => &mut utm.campaign,
            "utm_term" => &mut utm.term,
            "utm_content" => &mut utm.content,
            _ => continue,
        };
        if slot.is_none() {
            *slot = clean(&value, MAX_PARAM_VALUE_LEN);
        }
    }
    utm
}

/// Advertising click ids of a query ([`CLICK_IDS`] names, case-insensitive; first occurrence
/// wins; values trimmed, ≤ 256 chars).
pub fn click_ids_from_query(query: &str) -> BTreeMap<String, String> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut ids = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let name = name.trim().to_ascii_lowercase();
        let Some((id, _)) = CLICK_IDS.iter().find(|(id, _)| *id == name) else {
            continue;
        };
        if ids.contains_key(*id) {
            continue;
        }
        if let Some(value) = clean(&value, MAX_PARAM_VALUE_LEN) {
            ids.insert((*id).to_owned(), value);
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pages_table() {
        // (page_url, host) → (url, host, path, query)
        type Case<'a> = (&'a str, &'a str, (&'a str, &'a str, &'a str, &'a str));
        let cases: &[Case] = &[
            (
                "https://Shop.Example.com/pricing?plan=pro#faq",
                "",
                (
                    "https://shop.example.com/pricing?plan=pro",
                    "shop.example.com",
                    "/pricing",
                    "plan=pro",
                ),
            ),
            (
                "https://example.com",
                "",
                ("https://example.com/", "example.com", "/", ""),
            ),
            (
                "http://localhost:3000/a/b",
                "",
                ("http://localhost:3000/a/b", "localhost:3000", "/a/b", ""),
            ),
            (
                "https://example.com:443/x",
                "",
                ("https://example.com/x", "example.com", "/x", ""),
            ),
            (
                "https://example.com:8443/x",
                "",
                ("https://example.com:8443/x", "example.com:8443", "/x", ""),
            ),
            (
                "HTTPS://example.com/x?",
                "other.com",
                ("https://example.com/x", "example.com", "/x", ""),
            ),
            (
                "/pricing",
                "www.Example.com",
                (
                    "https://www.example.com/pricing",
                    "www.example.com",
                    "/pricing",
                    "",
                ),
            ),
            (
                "/",
                "localhost:8080",
                ("https://localhost:8080/", "localhost:8080", "/", ""),
            ),
            (
                "",
                "example.com",
                ("https://example.com/", "example.com", "/", ""),
            ),
            (
                "pricing",
                "example.com",
                ("https://example.com/pricing", "example.com", "/pricing", ""),
            ),
            (
                "/p?utm_source=x&email=a%40b.com#top",
                "example.com",
                (
                    "https://example.com/p?utm_source=x",
                    "example.com",
                    "/p",
                    "utm_source=x",
                ),
            ),
            (
                "/caf\u{e9} menu",
                "example.com",
                (
                    "https://example.com/caf%C3%A9%20menu",
                    "example.com",
                    "/caf%C3%A9%20menu",
                    "",
                ),
            ),
            ("/p", "", ("/p", "", "/p", "")),
            ("/p", "evil.com/x", ("/p", "", "/p", "")),
            ("/p", "a@evil.com", ("/p", "", "/p", "")),
            (
                "/\\evil.com/x",
                "example.com",
                ("https://example.com/", "example.com", "/", ""),
            ),
            (
                "//cdn.example.com/a",
                "",
                ("https://cdn.example.com/a", "cdn.example.com", "/a", ""),
            ),
            (
                "https://user:pw@example.com/a",
                "",
                ("https://example.com/a", "example.com", "/a", ""),
            ),
            (
                "https://[::1]:8080/a",
                "",
                ("https://[::1]:8080/a", "[::1]:8080", "/a", ""),
            ),
        ];
        for (page_url, host, (url, h, path, query)) in cases {
            let page = parse_page(page_url, host);
            assert_eq!(
                (
                    page.url.as_str(),
                    page.host.as_str(),
                    page.path.as_str(),
                    page.query.as_str()
                ),
                (*url, *h, *path, *query),
                "{page_url:?} + {host:?}"
            );
            assert_eq!(page.title, None);
        }
    }

    #[test]
    fn bounds_lengths() {
        let long_path = format!("/{}", "a".repeat(5000));
        let page = parse_page(&format!("https://example.com{long_path}?x=1"), "");
        assert_eq!(page.path.len(), MAX_PATH_LEN);
        assert!(page.url.len() <= MAX_URL_LEN);

        let many: Vec<String> = (0..500).map(|i| format!("p{i}=v{i}")).collect();
        let page = parse_page(&format!("/?{}", many.join("&")), "example.com");
        assert!(page.query.len() <= MAX_QUERY_LEN);
        assert!(page.query.starts_with("p0=v0&p1=v1"));
        assert!(page.url.len() <= MAX_URL_LEN);

        // A parameter too long to fit is skipped, later ones still kept.
        let query = format!("a=1&big={}&utm_source=x", "b".repeat(2000));
        assert_eq!(clean_query(&query), "a=1&utm_source=x");
    }

    #[test]
    fn cleans_queries_table() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let gclid = "Cj0KCQjw4Oe4BhCcARIsADQ0csmtlwqA3-X8cHyZ8jKqWm5qx8y1f2B9gHX1fjwZgS9r_3RCXFjhIaAmDqEALw_wcB";
        let cases: Vec<(String, String)> = vec![
            ("a=1&b=2".into(), "a=1&b=2".into()),
            ("?a=1".into(), "a=1".into()),
            ("".into(), "".into()),
            ("&&a=1&&".into(), "a=1".into()),
            (
                "utm_source=google&utm_medium=cpc&utm_campaign=spring".into(),
                "utm_source=google&utm_medium=cpc&utm_campaign=spring".into(),
            ),
            (
                format!("gclid={gclid}&fbclid=IwAR3xYz"),
                format!("gclid={gclid}&fbclid=IwAR3xYz"),
            ),
            (
                "ref=producthunt&page=2&q=running+shoes".into(),
                "ref=producthunt&page=2&q=running+shoes".into(),
            ),
            (
                "coupon=SUMMER2024&promo_code=X1".into(),
                "coupon=SUMMER2024&promo_code=X1".into(),
            ),
            ("email=jane%40example.com&x=1".into(), "x=1".into()),
            ("E-Mail=foo&x=1".into(), "x=1".into()),
            ("mail=a&tel=1&phone=2&phone_number=3".into(), "".into()),
            (
                "token=abc&access_token=abc&refresh_token=abc&id_token=x".into(),
                "".into(),
            ),
            (
                "auth=1&password=x&pass=x&pwd=x&secret=s&client_secret=s".into(),
                "".into(),
            ),
            ("key=k&api_key=k&apiKey=k&x-api-key=k".into(), "".into()),
            (
                "session=s&sid=s&sessionid=s&PHPSESSID=s&JSESSIONID=s".into(),
                "".into(),
            ),
            ("code=abc&state=xyz".into(), "state=xyz".into()),
            (
                "name=Jane&first_name=J&last_name=D&fullname=JD&firstName=J".into(),
                "".into(),
            ),
            (
                "address=x&ssn=1&card=4111&user_ssn=1&jwt=x&otp=1".into(),
                "".into(),
            ),
            (
                "campaign_name=spring&product=shoe".into(),
                "campaign_name=spring&product=shoe".into(),
            ),
            ("user[email]=a&x=1".into(), "x=1".into()),
            ("e=jane@example.com&x=1".into(), "x=1".into()),
            (
                "contact=mailto%3Ajane%40example.com&x=1".into(),
                "x=1".into(),
            ),
            ("handle=%40jane&x=1".into(), "handle=%40jane&x=1".into()),
            (
                "utm_term=jane%40example.com&utm_source=x".into(),
                "utm_source=x".into(),
            ),
            (format!("next={jwt}&x=1"), "x=1".into()),
            (
                "invite=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b&x=1".into(),
                "x=1".into(),
            ),
            (
                "id=123e4567-e89b-12d3-a456-426614174000&x=1".into(),
                "x=1".into(),
            ),
            (
                "k2=QWxhZGRpbjpvcGVuIHNlc2FtZQ0KQWxhZGRpbjpvcGVu&x=1".into(),
                "x=1".into(),
            ),
            (
                "slug=spring-sale-2024-for-all-new-customers-only".into(),
                "slug=spring-sale-2024-for-all-new-customers-only".into(),
            ),
            ("short=9f86d081&x=1".into(), "short=9f86d081&x=1".into()),
            ("=orphan&x=1".into(), "x=1".into()),
            ("flag&x=1".into(), "flag&x=1".into()),
        ];
        for (query, expected) in &cases {
            assert_eq!(clean_query(query), *expected, "{query:?}");
        }
    }

    #[test]
    fn cleans_links_table() {
        let cases: &[(&str, &str)] = &[
            (
                "https://example.com/a?utm_source=x&token=y#frag",
                "https://example.com/a?utm_source=x",
            ),
            ("https://user:pw@Example.com:443/a", "https://example.com/a"),
            ("/pricing?plan=pro&email=a%40b.co", "/pricing?plan=pro"),
            ("/pricing#faq", "/pricing"),
            ("#faq", "#faq"),
            ("#access_token=abc&x=1", "#"),
            ("mailto:jane@example.com", "mailto:"),
            ("tel:+15551234567", "tel:"),
            ("javascript:void(0)", "javascript:"),
            ("  ", ""),
            ("docs/intro?code=1", "docs/intro"),
        ];
        for (href, expected) in cases {
            assert_eq!(clean_link(href), *expected, "{href:?}");
        }
        assert!(
            clean_link(&format!("https://example.com/{}", "a".repeat(5000))).len() <= MAX_URL_LEN
        );
    }

    #[test]
    fn utm_from_query_table() {
        let long = "x".repeat(300);
        let q = format!(
            "utm_source=Google&UTM_MEDIUM=cpc&utm_campaign=spring+sale&utm_term=%20shoes%20&utm_content={long}&utm_source=other&utm_id=1"
        );
        let utm = utm_from_query(&q);
        assert_eq!(utm.source.as_deref(), Some("Google"));
        assert_eq!(utm.medium.as_deref(), Some("cpc"));
        assert_eq!(utm.campaign.as_deref(), Some("spring sale"));
        assert_eq!(utm.term.as_deref(), Some("shoes"));
        assert_eq!(
            utm.content.as_deref().map(str::len),
            Some(MAX_PARAM_VALUE_LEN)
        );

        assert!(utm_from_query("").is_empty());
        assert!(utm_from_query("?a=1&utm_source=").is_empty());
        assert_eq!(utm_from_query("?utm_source=").source, None);
        assert_eq!(
            utm_from_query("?utm_source=&utm_source=b")
                .source
                .as_deref(),
            Some("b")
        );
    }

    #[test]
    fn click_ids_from_query_table() {
        let long = "y".repeat(400);
        let q =
            format!("gclid=abc&FBCLID=def&msclkid=&ttclid={long}&gclid=second&other=1&li_fat_id=l");
        let ids = click_ids_from_query(&q);
        let keys: Vec<&str> = ids.keys().map(String::as_str).collect();
        assert_eq!(keys, ["fbclid", "gclid", "li_fat_id", "ttclid"]);
        assert_eq!(ids["gclid"], "abc");
        assert_eq!(ids["fbclid"], "def");
        assert_eq!(ids["ttclid"].len(), MAX_PARAM_VALUE_LEN);
        assert!(click_ids_from_query("a=1").is_empty());
    }

    #[test]
    fn normalizes_hosts() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Example.COM", Some("example.com")),
            ("www.example.com:8443", Some("www.example.com:8443")),
            ("example.com:443", Some("example.com")),
            ("localhost:3000", Some("localhost:3000")),
            ("[::1]:8080", Some("[::1]:8080")),
            ("", None),
            ("example.com/x", None),
            ("user@example.com", None),
            ("exa mple.com", None),
            ("example.com:99999", None),
        ];
        for (host, expected) in cases {
            assert_eq!(normalize_host(host).as_deref(), *expected, "{host:?}");
        }
    }
}
