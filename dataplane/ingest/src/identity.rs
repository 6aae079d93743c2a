//! Identity verification of `identify()` (see [`zori_core::identity`]): which identify
//! records are signed by the site's server, which come from the site's server itself (the API
//! token as `Authorization: Bearer`), and what happens to the others under
//! `--identity-verification`.

use std::str::FromStr;

use axum::http::{header, HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zori_core::{
    event::RawIdentify,
    identity::{self, IdentityProof},
};

use crate::{config::Secret, http::Rejection, metrics::Reason};

/// `--identity-verification`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationMode {
    /// Every identify is trusted as sent (the original product's behaviour).
    Off,
    /// An identify without a valid signature is stored apart and moves nothing.
    Ignore,
    /// An identify without a valid signature is refused.
    Refuse,
}

impl VerificationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationMode::Off => "off",
            VerificationMode::Ignore => "ignore",
            VerificationMode::Refuse => "refuse",
        }
    }
}

impl FromStr for VerificationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(VerificationMode::Off),
            "ignore" => Ok(VerificationMode::Ignore),
            "refuse" => Ok(VerificationMode::Refuse),
            _ => Err(format!("{s:?} is not one of off, ignore, refuse")),
        }
    }
}

/// Who sent a request, as far as identity is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sender {
    /// Anyone holding the publishable key (a browser, or a server that did not authenticate).
    Public,
    /// The site's server, authenticated with the API token.
    Server,
}

/// Why an identify was refused (`--identity-verification refuse`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unverified {
    #[error(
        "identify is not signed: this site requires identity verification; send `signature`, the \
         hex HMAC-SHA256 of the app_id (or of the email when there is no app_id) made with the \
         identity secret"
    )]
    Missing,
    #[error("identify signature does not match the app_id (or the email when there is no app_id)")]
    Mismatch,
}

/// The tenant's identity verification: mode, identity secret and the API token's digest.
pub(crate) struct IdentityCheck {
    mode: VerificationMode,
    secret: Option<Secret>,
    token_digest: Option<[u8; 32]>,
}

impl IdentityCheck {
    pub(crate) fn new(
        mode: VerificationMode,
        secret: Option<Secret>,
        api_token: Option<&Secret>,
    ) -> Self {
        Self {
            mode,
            secret,
            token_digest: api_token.map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        }
    }

    /// Reads `Authorization: Bearer <API token>`. Without a bearer token the sender is public;
    /// a bearer token that is not the API token is refused (401) rather than silently treated
    /// as public.
    pub(crate) fn sender(&self, headers: &HeaderMap) -> Result<Sender, Rejection> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .map(|value| value.as_bytes())
            .and_then(|value| {
                let scheme = value.get(..7)?;
                scheme
                    .eq_ignore_ascii_case(b"bearer ")
                    .then(|| value[7..].trim_ascii())
            });
        let Some(token) = bearer else {
            return Ok(Sender::Public);
        };
        let Some(expected) = &self.token_digest else {
            return Err(Rejection::new(
                StatusCode::UNAUTHORIZED,
                Reason::InvalidToken,
                "this tracking endpoint has no api token configured (ZORI_API_TOKEN): send no \
                 authorization header, or configure it to trust server-side identifies",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(token).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(Sender::Server)
        } else {
            Err(Rejection::new(
                StatusCode::UNAUTHORIZED,
                Reason::InvalidToken,
                "invalid api token in the authorization header (send Authorization: Bearer \
                 <ZORI_API_TOKEN>, or no authorization header at all)",
            ))
        }
    }

    /// What is proven about `raw`'s identity claim, or why it is refused.
    pub(crate) fn judge(
        &self,
        raw: &RawIdentify,
        sender: Sender,
    ) -> Result<IdentityProof, Unverified> {
        if sender == Sender::Server {
            return Ok(IdentityProof::Token);
        }
        if self.mode == VerificationMode::Off {
            return Ok(IdentityProof::Unchecked);
        }
        let signature = raw
            .signature
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let verified = match (signature, &self.secret) {
            (None, _) => Err(Unverified::Missing),
            (Some(signature), Some(secret)) => {
                match identity::signed_value(raw.app_id.as_deref(), raw.email.as_deref()) {
                    Some(value) if identity::verify(secret.expose(), value, signature) => Ok(()),
                    _ => Err(Unverified::Mismatch),
                }
            }
            // Verification without an identity secret: only the API token identifies.
            (Some(_), None) => Err(Unverified::Mismatch),
        };
        match (verified, self.mode) {
            (Ok(()), _) => Ok(IdentityProof::Signed),
            (Err(why), VerificationMode::Refuse) => Err(why),
            (Err(_), _) => Ok(IdentityProof::Unsigned),
        }
    }
}

impl Unverified {
    pub(crate) fn rejection(&self) -> Rejection {
        Rejection::new(StatusCode::FORBIDDEN, Reason::Unverified, self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const SECRET: &str = "identity-secret-0123456789";
    const TOKEN: &str = "zori_at_0123456789abcdef";

    fn check(mode: VerificationMode) -> IdentityCheck {
        IdentityCheck::new(
            mode,
            Some(Secret::new(SECRET.to_owned())),
            Some(&Secret::new(TOKEN.to_owned())),
        )
    }

    fn raw(app_id: Option<&str>, email: Option<&str>, signature: Option<&str>) -> RawIdentify {
        RawIdentify {
            app_id: app_id.map(str::to_owned),
            email: email.map(str::to_owned),
            signature: signature.map(str::to_owned),
            ..RawIdentify::default()
        }
    }

    #[test]
    fn judges_each_claim_by_mode() {
        use IdentityProof::*;
        let good = identity::sign(SECRET, "user-42");
        let by_email = identity::sign(SECRET, "jane@example.com");
        let unsigned = raw(Some("user-42"), None, None);
        let signed = raw(Some("user-42"), Some("jane@example.com"), Some(&good));
        let email_signed = raw(None, Some("jane@example.com"), Some(&by_email));
        let wrong = raw(Some("user-43"), None, Some(&good));
        let cases: &[(
            VerificationMode,
            &RawIdentify,
            Result<IdentityProof, Unverified>,
        )] = &[
            (VerificationMode::Off, &unsigned, Ok(Unchecked)),
            (VerificationMode::Off, &wrong, Ok(Unchecked)),
            (VerificationMode::Ignore, &signed, Ok(Signed)),
            (VerificationMode::Ignore, &email_signed, Ok(Signed)),
            (VerificationMode::Ignore, &unsigned, Ok(Unsigned)),
            (VerificationMode::Ignore, &wrong, Ok(Unsigned)),
            (VerificationMode::Refuse, &signed, Ok(Signed)),
            (
                VerificationMode::Refuse,
                &unsigned,
                Err(Unverified::Missing),
            ),
            (VerificationMode::Refuse, &wrong, Err(Unverified::Mismatch)),
        ];
        for (mode, raw, expected) in cases {
            assert_eq!(
                check(*mode).judge(raw, Sender::Public),
                *expected,
                "{mode:?} {raw:?}"
            );
            // The site's server, authenticated, is trusted whatever it sends.
            assert_eq!(
                check(*mode).judge(raw, Sender::Server),
                Ok(Token),
                "{mode:?}"
            );
        }
        // Without an identity secret, no signature can be valid.
        let no_secret = IdentityCheck::new(VerificationMode::Refuse, None, None);
        assert_eq!(
            no_secret.judge(&signed, Sender::Public),
            Err(Unverified::Mismatch)
        );
    }

    #[test]
    fn reads_the_api_token() {
        let with = |value: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(value).expect("header"),
                );
            }
            check(VerificationMode::Refuse)
                .sender(&headers)
                .map_err(|r| (r.status, r.reason))
        };
        assert_eq!(with(None), Ok(Sender::Public));
        assert_eq!(with(Some(&format!("Basic {TOKEN}"))), Ok(Sender::Public));
        assert_eq!(with(Some(&format!("Bearer {TOKEN}"))), Ok(Sender::Server));
        assert_eq!(with(Some(&format!("bearer  {TOKEN} "))), Ok(Sender::Server));
        for wrong in [
            format!("Bearer {TOKEN}x"),
            "Bearer ".to_owned(),
            "Bearer zori_at_guess".to_owned(),
        ] {
            assert_eq!(
                with(Some(&wrong)),
                Err((StatusCode::UNAUTHORIZED, Reason::InvalidToken)),
                "{wrong}"
            );
        }
        // An ingest without the API token trusts no bearer.
        let none = IdentityCheck::new(VerificationMode::Refuse, None, None);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("header"),
        );
        assert!(none.sender(&headers).is_err());
    }
}
