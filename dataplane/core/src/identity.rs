//! Identity verification for `identify()`, like the "identity verification" of support-chat
//! widgets: the site's server, which knows who is signed in, signs the user's id with the
//! tenant's identity secret, and the page passes that signature along with the id. Anyone can
//! read the publishable key from a page, so without a signature an `identify()` is only a claim.
//!
//! The signature is the lower-case hex HMAC-SHA256, keyed with the identity secret, of the
//! signed value: the `app_id` when one is given, else the email, both exactly as sent with
//! surrounding white space removed. What the verification concluded travels with the record as
//! an [`IdentityProof`].

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// What ingest established about who an identify record belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityProof {
    /// Identity verification is off (and every record written before it existed): the record
    /// is trusted as sent.
    #[default]
    Unchecked,
    /// Sent by the site's server with the tenant's API token: trusted.
    Token,
    /// Carries a valid signature of its signed value (see [`signed_value`]).
    Signed,
    /// Verification is on and the signature was missing or wrong: the record is kept for the
    /// site owner to see but links no visitor, creates no user and changes no user.
    Unsigned,
}

impl IdentityProof {
    pub fn is_unchecked(&self) -> bool {
        *self == IdentityProof::Unchecked
    }

    /// Whether the record may link its visitor to a user and change users at all.
    pub fn links(&self) -> bool {
        *self != IdentityProof::Unsigned
    }

    /// Whether the record's email may find an existing user. Not when only the `app_id` was
    /// signed: the email beside it is then the page's claim, not the site's.
    pub fn email_finds_user(&self, has_app_id: bool) -> bool {
        match self {
            IdentityProof::Unchecked | IdentityProof::Token => true,
            IdentityProof::Signed => !has_app_id,
            IdentityProof::Unsigned => false,
        }
    }
}

/// The value a signature covers: the trimmed `app_id` when non-empty, else the trimmed email.
pub fn signed_value<'a>(app_id: Option<&'a str>, email: Option<&'a str>) -> Option<&'a str> {
    let present = |s: Option<&'a str>| s.map(str::trim).filter(|s| !s.is_empty());
    present(app_id).or_else(|| present(email))
}

/// The signature of `value` with `secret`: lower-case hex HMAC-SHA256.
pub fn sign(secret: &str, value: &str) -> String {
    hex::encode(mac(secret, value))
}

/// Whether `signature` (hex, either case, surrounding white space ignored) is the signature of
/// `value` with `secret`. Compares in constant time.
pub fn verify(secret: &str, value: &str, signature: &str) -> bool {
    let Ok(sent) = hex::decode(signature.trim()) else {
        return false;
    };
    bool::from(sent.as_slice().ct_eq(mac(secret, value).as_slice()))
}

fn mac(secret: &str, value: &str) -> Vec<u8> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "zori_is_0123456789abcdef0123456789";

    #[test]
    fn signs_like_any_hmac_sha256_library() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verifies_only_the_right_signature() {
        let good = sign(SECRET, "user-42");
        let cases: &[(&str, &str, bool)] = &[
            ("user-42", &good, true),
            ("user-42", &good.to_ascii_uppercase(), true),
            ("user-42", &format!(" {good}\n"), true),
            ("user-43", &good, false),
            ("user-42", &good[..62], false),
            ("user-42", "", false),
            ("user-42", "not hex at all", false),
            (
                "user-42",
                &sign("another-secret-0123456789", "user-42"),
                false,
            ),
        ];
        for (value, signature, expected) in cases {
            assert_eq!(
                verify(SECRET, value, signature),
                *expected,
                "{value} {signature}"
            );
        }
    }

    #[test]
    fn the_app_id_is_signed_else_the_email() {
        let cases: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
            (Some("user-42"), Some("jane@example.com"), Some("user-42")),
            (Some(" user-42 "), None, Some("user-42")),
            (
                Some("  "),
                Some(" jane@example.com"),
                Some("jane@example.com"),
            ),
            (None, Some("jane@example.com"), Some("jane@example.com")),
            (None, None, None),
            (Some(""), Some(""), None),
        ];
        for (app_id, email, expected) in cases {
            assert_eq!(
                signed_value(*app_id, *email),
                *expected,
                "{app_id:?} {email:?}"
            );
        }
    }

    #[test]
    fn what_each_proof_may_do() {
        use IdentityProof::*;
        let cases = [
            (Unchecked, true, true, true),
            (Token, true, true, true),
            (Signed, true, false, true),
            (Unsigned, false, false, false),
        ];
        for (proof, links, email_beside_app_id, email_alone) in cases {
            assert_eq!(proof.links(), links, "{proof:?}");
            assert_eq!(
                proof.email_finds_user(true),
                email_beside_app_id,
                "{proof:?}"
            );
            assert_eq!(proof.email_finds_user(false), email_alone, "{proof:?}");
        }
    }

    #[test]
    fn records_without_a_proof_read_as_unchecked() {
        #[derive(Deserialize, Serialize)]
        struct R {
            #[serde(default, skip_serializing_if = "IdentityProof::is_unchecked")]
            proof: IdentityProof,
        }
        let r: R = serde_json::from_str("{}").expect("parses");
        assert_eq!(r.proof, IdentityProof::Unchecked);
        assert_eq!(serde_json::to_string(&r).expect("json"), "{}");
        let r: R = serde_json::from_str(r#"{"proof":"unsigned"}"#).expect("parses");
        assert_eq!(r.proof, IdentityProof::Unsigned);
    }
}
