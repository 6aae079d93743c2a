//! Emails: normalised, then kept only as a salted SHA-256 (zori-spec §9.22).

use sha2::{Digest, Sha256};

/// Longest email accepted (RFC 5321 path limit).
pub const MAX_LEN: usize = 254;

/// Trimmed and lower-cased; `None` unless it has exactly one `@` with non-empty parts, no
/// whitespace or control characters, and at most [`MAX_LEN`] bytes.
pub fn normalize(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    if email.is_empty() || email.len() > MAX_LEN {
        return None;
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = email.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    Some(email)
}

/// Hex SHA-256 of `salt:email`. Pass an already [`normalize`]d email.
pub fn hash(email_normalized: &str, salt: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(b":");
    hasher.update(email_normalized.as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_table() {
        let long = format!("{}@example.com", "a".repeat(250));
        let cases: &[(&str, Option<&str>)] = &[
            ("Jane@Example.COM", Some("jane@example.com")),
            (
                "  jane.doe+shop@example.com \n",
                Some("jane.doe+shop@example.com"),
            ),
            ("user@localhost", Some("user@localhost")),
            ("ÉLODIE@exemple.fr", Some("élodie@exemple.fr")),
            ("", None),
            ("   ", None),
            ("jane", None),
            ("@example.com", None),
            ("jane@", None),
            ("jane@@example.com", None),
            ("a@b@example.com", None),
            ("jane doe@example.com", None),
            ("jane\u{0}@example.com", None),
            (long.as_str(), None),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input).as_deref(), *expected, "{input:?}");
        }
    }

    #[test]
    fn hashes_with_salt() {
        let a = hash("jane@example.com", "salt-1");
        assert_eq!(a.len(), 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(a, hash("jane@example.com", "salt-1"));
        assert_ne!(a, hash("jane@example.com", "salt-2"));
        assert_ne!(a, hash("john@example.com", "salt-1"));
        // Known value: sha256("salt:jane@example.com").
        let mut h = Sha256::new();
        h.update(b"salt:jane@example.com");
        assert_eq!(hash("jane@example.com", "salt"), hex::encode(h.finalize()));
        // Unsalted SHA-256 (what the original stored) is never produced.
        let mut plain = Sha256::new();
        plain.update(b"jane@example.com");
        assert_ne!(hash("jane@example.com", ""), hex::encode(plain.finalize()));
    }

    #[test]
    fn normalized_variants_hash_alike() {
        let a = normalize(" Jane@Example.com").map(|e| hash(&e, "s"));
        let b = normalize("jane@example.COM ").map(|e| hash(&e, "s"));
        assert!(a.is_some());
        assert_eq!(a, b);
    }
}
