//! Referrer normalisation: external referrers only, without query or user info
//! (zori-spec §9.27: the original kept raw referrers, `www.` and self-referrals included).

use url::Url;

use crate::{event::Referrer, text::truncate_chars};

/// Longest `Referrer::url` / `Referrer::path` kept.
pub const MAX_URL_LEN: usize = 512;

/// Suffixes under which every label belongs to a different owner (shared hosting), treated
/// like public suffixes when deciding what is "the same site".
const SHARED_SUFFIXES: &[&str] = &[
    "github.io",
    "gitlab.io",
    "vercel.app",
    "netlify.app",
    "pages.dev",
    "workers.dev",
    "herokuapp.com",
    "web.app",
    "firebaseapp.com",
    "appspot.com",
    "azurewebsites.net",
    "cloudfront.net",
    "blogspot.com",
    "wordpress.com",
    "substack.com",
    "myshopify.com",
    "webflow.io",
    "onrender.com",
    "fly.dev",
    "ngrok.io",
    "ngrok-free.app",
];

/// Second-level labels used under country-code TLDs (`co.uk`, `com.au`, …).
const SECOND_LEVEL: &[&str] = &[
    "co", "com", "net", "org", "gov", "ac", "edu", "ne", "or", "go",
];

/// Parses `raw` (http/https URL, or a bare `host/path`) into an external referrer. `None` when
/// it is empty, unparsable, not http(s), or points at the page's own site or one of
/// `own_hosts` (www-insensitive, subdomains included).
pub fn normalize_referrer(raw: &str, page_host: &str, own_hosts: &[String]) -> Option<Referrer> {
    let url = parse(raw.trim())?;
    let host = url.host_str()?.to_ascii_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host);
    let host = host.trim_end_matches('.').to_owned();
    if host.is_empty() {
        return None;
    }
    let own = std::iter::once(page_host).chain(own_hosts.iter().map(String::as_str));
    if own.into_iter().any(|own| same_site(&host, own)) {
        return None;
    }
    let path = truncate_chars(url.path(), MAX_URL_LEN).to_owned();
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str()?.to_ascii_lowercase()),
        None => url.host_str()?.to_ascii_lowercase(),
    };
    let full = format!("{}://{authority}{}", url.scheme(), url.path());
    Some(Referrer {
        url: truncate_chars(&full, MAX_URL_LEN).to_owned(),
        host,
        path,
    })
}

fn parse(raw: &str) -> Option<Url> {
    if raw.is_empty() || raw.len() > 8192 {
        return None;
    }
    let url = if raw.contains("://") {
        Url::parse(raw).ok()?
    } else if let Some(rest) = raw.strip_prefix("//") {
        Url::parse(&format!("https://{rest}")).ok()?
    } else if looks_like_bare_host(raw) {
        Url::parse(&format!("http://{raw}")).ok()?
    } else {
        return None;
    };
    matches!(url.scheme(), "http" | "https").then_some(url)
}

/// `example.com`, `example.com:8080/path`, `localhost:3000`.
fn looks_like_bare_host(raw: &str) -> bool {
    let authority = raw.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.split(':').next().unwrap_or_default();
    !host.is_empty()
        && (host.contains('.') || host.eq_ignore_ascii_case("localhost"))
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

/// Whether `referrer_host` (lower case, no `www.`) is the same site as `own` (any case, may
/// carry `www.` and a port).
fn same_site(referrer_host: &str, own: &str) -> bool {
    let own = bare_host(own);
    let referrer_host = bare_host(referrer_host);
    let referrer_host = referrer_host.as_str();
    if own.is_empty() {
        return false;
    }
    referrer_host == own
        || referrer_host
            .strip_suffix(own.as_str())
            .is_some_and(|rest| rest.ends_with('.'))
        || registrable(referrer_host).is_some_and(|r| registrable(&own) == Some(r))
}

/// Lower case, without port, trailing dot and `www.`.
fn bare_host(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    let host = match host.strip_prefix('[') {
        // IPv6 literal: `[::1]:8080`.
        Some(rest) => rest.split(']').next().unwrap_or_default().to_owned(),
        None => host.split(':').next().unwrap_or_default().to_owned(),
    };
    let host = host.trim_end_matches('.');
    host.strip_prefix("www.").unwrap_or(host).to_owned()
}

/// The registrable-ish part of a host: `shop.example.co.uk` → `example.co.uk`,
/// `a.b.example.com` → `example.com`, `me.github.io` → `me.github.io`. `None` for IP
/// addresses, single labels and bare suffixes.
fn registrable(host: &str) -> Option<&str> {
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    if host.is_empty() || host.split('.').any(str::is_empty) {
        return None;
    }
    // Labels from the right: no allocation, this runs for every event with a referrer.
    let mut labels = host.rsplit('.');
    let (Some(tld), Some(second)) = (labels.next(), labels.next()) else {
        return None;
    };
    let shared = SHARED_SUFFIXES
        .iter()
        .any(|s| host == *s || host.strip_suffix(s).is_some_and(|rest| rest.ends_with('.')));
    let country_second_level = tld.len() == 2 && SECOND_LEVEL.contains(&second);
    let suffix_labels = if shared || country_second_level { 2 } else { 1 };
    // The registrable domain is the suffix plus one label: find where that label starts.
    let keep = suffix_labels + 1;
    let dots: Vec<usize> = host
        .rmatch_indices('.')
        .take(keep)
        .map(|(i, _)| i)
        .collect();
    match dots.len() {
        n if n == keep => Some(&host[dots[keep - 1] + 1..]),
        n if n == keep - 1 => Some(host),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(hosts: &[&str]) -> Vec<String> {
        hosts.iter().map(|h| (*h).to_owned()).collect()
    }

    #[test]
    fn normalizes_table() {
        // (raw, page host, own hosts, expected (url, host, path))
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [&'a str],
            Option<(&'a str, &'a str, &'a str)>,
        );
        let cases: &[Case] = &[
            (
                "https://www.Google.com/search?q=secret",
                "shop.example.com",
                &[],
                Some(("https://www.google.com/search", "google.com", "/search")),
            ),
            (
                "https://t.co/abc123",
                "example.com",
                &[],
                Some(("https://t.co/abc123", "t.co", "/abc123")),
            ),
            (
                "http://blog.other.org:8080/post#frag",
                "example.com",
                &[],
                Some(("http://blog.other.org:8080/post", "blog.other.org", "/post")),
            ),
            (
                "https://user:pw@news.ycombinator.com/item?id=1",
                "example.com",
                &[],
                Some((
                    "https://news.ycombinator.com/item",
                    "news.ycombinator.com",
                    "/item",
                )),
            ),
            (
                "https://example.org",
                "example.com",
                &[],
                Some(("https://example.org/", "example.org", "/")),
            ),
            (
                "duckduckgo.com/",
                "example.com",
                &[],
                Some(("http://duckduckgo.com/", "duckduckgo.com", "/")),
            ),
            (
                "//bing.com/search",
                "example.com",
                &[],
                Some(("https://bing.com/search", "bing.com", "/search")),
            ),
            (
                "https://friend.github.io/post",
                "me.github.io",
                &[],
                Some(("https://friend.github.io/post", "friend.github.io", "/post")),
            ),
            (
                "http://10.0.0.2/",
                "127.0.0.1:8080",
                &["localhost"],
                Some(("http://10.0.0.2/", "10.0.0.2", "/")),
            ),
            (
                "https://other.co.uk/",
                "example.co.uk",
                &[],
                Some(("https://other.co.uk/", "other.co.uk", "/")),
            ),
            (
                "https://example.com.evil.net/",
                "example.com",
                &["example.com"],
                Some(("https://example.com.evil.net/", "example.com.evil.net", "/")),
            ),
            (
                "https://notexample.com/",
                "example.com",
                &[],
                Some(("https://notexample.com/", "notexample.com", "/")),
            ),
            // Self-referrals.
            ("https://example.com/pricing", "example.com", &[], None),
            ("https://www.example.com/pricing", "example.com", &[], None),
            ("https://example.com/", "www.example.com:8443", &[], None),
            ("https://EXAMPLE.com./", "example.com", &[], None),
            ("https://app.example.com/", "example.com", &[], None),
            ("https://example.com/", "app.example.com", &[], None),
            ("https://blog.example.com/", "shop.example.com", &[], None),
            (
                "https://checkout.example.co.uk/",
                "www.example.co.uk",
                &[],
                None,
            ),
            (
                "https://app.example.com/login",
                "shop.other.io",
                &["www.example.com"],
                None,
            ),
            (
                "https://example.com/",
                "shop.other.io",
                &["app.example.com:8443"],
                None,
            ),
            ("http://localhost:3000/a", "localhost:3000", &[], None),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080", &[], None),
            ("http://app.localhost:3000/", "localhost:3000", &[], None),
            ("http://[::1]:3000/", "[::1]:3000", &[], None),
            ("https://me.github.io/other", "me.github.io", &[], None),
            // Junk.
            ("", "example.com", &[], None),
            ("   ", "example.com", &[], None),
            ("not a url", "example.com", &[], None),
            (
                "android-app://com.google.android.gm",
                "example.com",
                &[],
                None,
            ),
            ("javascript:alert(1)", "example.com", &[], None),
            ("about:blank", "example.com", &[], None),
            ("mailto:jane@example.org", "example.com", &[], None),
            ("ftp://files.example.org/", "example.com", &[], None),
            ("https://", "example.com", &[], None),
            ("https://www./", "example.com", &[], None),
        ];
        for (raw, page_host, own_hosts, expected) in cases {
            let got = normalize_referrer(raw, page_host, &own(own_hosts));
            let got = got
                .as_ref()
                .map(|r| (r.url.as_str(), r.host.as_str(), r.path.as_str()));
            assert_eq!(got, *expected, "{raw:?} on {page_host:?} own={own_hosts:?}");
        }
    }

    #[test]
    fn bounds_url_length() {
        let raw = format!("https://blog.other.org/{}", "a".repeat(2000));
        let r = normalize_referrer(&raw, "example.com", &[]).unwrap();
        assert_eq!(r.url.len(), MAX_URL_LEN);
        assert_eq!(r.path.len(), MAX_URL_LEN);
        assert_eq!(r.host, "blog.other.org");
    }

    #[test]
    fn registrable_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("example.com", Some("example.com")),
            ("a.b.example.com", Some("example.com")),
            ("shop.example.co.uk", Some("example.co.uk")),
            ("example.co.uk", Some("example.co.uk")),
            ("co.uk", None),
            ("me.github.io", Some("me.github.io")),
            ("x.me.github.io", Some("me.github.io")),
            ("github.io", None),
            ("localhost", None),
            ("127.0.0.1", None),
            ("com", None),
        ];
        for (host, expected) in cases {
            assert_eq!(registrable(host), *expected, "{host}");
        }
    }
}
