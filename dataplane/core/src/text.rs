//! Small string helpers shared by the enrichment modules.

/// The longest prefix of `s` with at most `max` characters.
pub fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((idx, _)) => &s[..idx],
        None => s,
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Trimmed, non-empty, truncated to `max` characters.
pub fn clean(s: &str, max: usize) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| truncate_chars(s, max).to_owned())
}

/// `host` without a leading `www.`.
pub fn strip_www(host: &str) -> &str {
    host.strip_prefix("www.").unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        let cases: &[(&str, usize, &str, &str)] = &[
            ("hello", 10, "hello", "hello"),
            ("hello", 3, "hel", "hel"),
            ("héllo", 2, "hé", "h"),
            ("日本語", 2, "日本", ""),
            ("", 0, "", ""),
        ];
        for (input, max, by_chars, by_bytes) in cases {
            assert_eq!(truncate_chars(input, *max), *by_chars, "{input}");
            assert_eq!(truncate_bytes(input, *max), *by_bytes, "{input}");
        }
    }

    #[test]
    fn cleans() {
        assert_eq!(clean("  a b ", 10).as_deref(), Some("a b"));
        assert_eq!(clean("   ", 10), None);
        assert_eq!(clean("abcdef", 3).as_deref(), Some("abc"));
        assert_eq!(strip_www("www.example.com"), "example.com");
        assert_eq!(strip_www("wwwexample.com"), "wwwexample.com");
    }
}
