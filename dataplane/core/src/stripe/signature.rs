//! `Stripe-Signature` verification (HMAC-SHA256 over `"{t}.{payload}"`), as Stripe specifies:
//! <https://docs.stripe.com/webhooks#verify-manually>.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Stripe's default tolerance between the signed timestamp and now.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing stripe-signature header")]
    MissingHeader,
    #[error("malformed stripe-signature header: {0}")]
    MalformedHeader(&'static str),
    #[error("no v1 signature in stripe-signature header")]
    NoV1Signature,
    #[error("no webhook signing secret configured")]
    NoSecret,
    #[error("no signature matches the payload with any configured signing secret")]
    NoMatch,
    #[error(
        "timestamp outside tolerance: signed {} s {} (tolerance {tolerance_secs} s)",
        skew_secs.unsigned_abs(),
        if *skew_secs > 0 { "in the past" } else { "in the future" }
    )]
    OutsideTolerance {
        /// `now - t`: positive when the signature is older than now.
        skew_secs: i64,
        tolerance_secs: i64,
    },
}

/// Verifies `header` (the `Stripe-Signature` value) for `payload` against any of `secrets`,
/// with `tolerance` around `now` (unix seconds). Only `v1` signatures count; any `v1` matching
/// any secret passes (secret rotation). The timestamp is checked after a signature matched.
pub fn verify(
    header: &str,
    payload: &[u8],
    secrets: &[String],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let parsed = parse_header(header)?;
    let secrets: Vec<&str> = secrets
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let matched = secrets.iter().any(|secret| {
        let Some(expected) = mac(secret, parsed.timestamp, payload) else {
            return false;
        };
        parsed
            .v1
            .iter()
            .any(|candidate| bool::from(candidate.as_slice().ct_eq(expected.as_slice())))
    });
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    let skew_secs = now.saturating_sub(parsed.timestamp);
    let tolerance_secs = tolerance_secs.max(0);
    if skew_secs.unsigned_abs() > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance {
            skew_secs,
            tolerance_secs,
        });
    }
    Ok(())
}

/// A valid `Stripe-Signature` header for `payload` signed with `secret` at `t` (unix seconds).
pub fn sign(payload: &[u8], secret: &str, t: i64) -> String {
    let signature = mac(secret, t, payload).map(hex::encode).unwrap_or_default();
    format!("t={t},v1={signature}")
}

struct Header {
    timestamp: i64,
    /// Decoded `v1` signatures; values that are not hex are skipped.
    v1: Vec<Vec<u8>>,
}

fn parse_header(header: &str) -> Result<Header, SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let mut timestamp = None;
    let mut v1 = Vec::new();
    let mut any_v1 = false;
    for item in header.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => {
                let t = value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| SignatureError::MalformedHeader("timestamp is not an integer"))?;
                timestamp = Some(t);
            }
            "v1" => {
                any_v1 = true;
                if let Ok(bytes) = hex::decode(value.trim()) {
                    v1.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MalformedHeader("no timestamp (t=)"))?;
    if !any_v1 {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(Header { timestamp, v1 })
}

fn mac(secret: &str, t: i64, payload: &[u8]) -> Option<Vec<u8>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    Some(mac.finalize().into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_730_000_000;
    const PAYLOAD: &[u8] = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    const OLD: &str = "whsec_old_secret";
    const NEW: &str = "whsec_new_secret";

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn v1(secret: &str, t: i64, payload: &[u8]) -> String {
        hex::encode(mac(secret, t, payload).unwrap())
    }

    #[test]
    fn matches_stripe_reference_vector() {
        // Computed independently (Python `hmac`): HMAC-SHA256("whsec_test", "1700000000.{}").
        let header = sign(b"{}", "whsec_test", 1_700_000_000);
        assert_eq!(
            header,
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
        assert!(verify(
            &header,
            b"{}",
            &secrets(&["whsec_test"]),
            1_700_000_000,
            300
        )
        .is_ok());
    }

    #[test]
    fn verifies_table() {
        let good_new = v1(NEW, NOW, PAYLOAD);
        let good_old = v1(OLD, NOW, PAYLOAD);
        let other = v1("whsec_other", NOW, PAYLOAD);
        let v0 = v1(NEW, NOW, PAYLOAD);
        type Case = (String, Vec<String>, i64, Result<(), SignatureError>);
        let cases: Vec<Case> = vec![
            (sign(PAYLOAD, NEW, NOW), secrets(&[NEW]), NOW, Ok(())),
            // Rotation: old and new secrets both accepted.
            (sign(PAYLOAD, OLD, NOW), secrets(&[NEW, OLD]), NOW, Ok(())),
            (sign(PAYLOAD, NEW, NOW), secrets(&[NEW, OLD]), NOW, Ok(())),
            // Stripe sends one v1 per active secret during its own rotation.
            (
                format!("t={NOW},v1={other},v1={good_new}"),
                secrets(&[NEW]),
                NOW,
                Ok(()),
            ),
            (
                format!("t={NOW},v1={good_old},v1={other}"),
                secrets(&[NEW, OLD]),
                NOW,
                Ok(()),
            ),
            // Unknown schemes and spaces are ignored.
            (
                format!("t={NOW}, v1={good_new}, v0=abc, x=1"),
                secrets(&[NEW]),
                NOW,
                Ok(()),
            ),
            (
                format!("v1={good_new},t={NOW}"),
                secrets(&[NEW]),
                NOW,
                Ok(()),
            ),
            // Within tolerance either side.
            (sign(PAYLOAD, NEW, NOW - 300), secrets(&[NEW]), NOW, Ok(())),
            (sign(PAYLOAD, NEW, NOW + 300), secrets(&[NEW]), NOW, Ok(())),
            // Failures.
            (
                String::new(),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::MissingHeader),
            ),
            (
                "  ".into(),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::MissingHeader),
            ),
            (
                format!("v1={good_new}"),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::MalformedHeader("no timestamp (t=)")),
            ),
            (
                format!("t=abc,v1={good_new}"),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::MalformedHeader(
                    "timestamp is not an integer",
                )),
            ),
            (
                format!("t={NOW}"),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::NoV1Signature),
            ),
            (
                format!("t={NOW},v0={v0}"),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::NoV1Signature),
            ),
            (
                "garbage".into(),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::MalformedHeader("no timestamp (t=)")),
            ),
            (
                sign(PAYLOAD, NEW, NOW),
                secrets(&[]),
                NOW,
                Err(SignatureError::NoSecret),
            ),
            (
                sign(PAYLOAD, NEW, NOW),
                secrets(&[" "]),
                NOW,
                Err(SignatureError::NoSecret),
            ),
            (
                sign(PAYLOAD, OLD, NOW),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::NoMatch),
            ),
            (
                format!("t={NOW},v1=nothex"),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::NoMatch),
            ),
            (
                format!("t={NOW},v1={}", &good_new[..32]),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::NoMatch),
            ),
            // Signature made for another timestamp than the one in the header.
            (
                format!("t={},v1={good_new}", NOW + 1),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::NoMatch),
            ),
            (
                sign(PAYLOAD, NEW, NOW - 301),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::OutsideTolerance {
                    skew_secs: 301,
                    tolerance_secs: 300,
                }),
            ),
            (
                sign(PAYLOAD, NEW, NOW + 3600),
                secrets(&[NEW]),
                NOW,
                Err(SignatureError::OutsideTolerance {
                    skew_secs: -3600,
                    tolerance_secs: 300,
                }),
            ),
        ];
        for (header, secrets, now, expected) in cases {
            assert_eq!(
                verify(&header, PAYLOAD, &secrets, now, 300),
                expected,
                "{header}"
            );
        }
    }

    #[test]
    fn rejects_tampered_payload() {
        let header = sign(PAYLOAD, NEW, NOW);
        let tampered = br#"{"id":"evt_1","type":"charge.succeeded","amount":1}"#;
        assert_eq!(
            verify(&header, tampered, &secrets(&[NEW]), NOW, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&header, b"", &secrets(&[NEW]), NOW, 300),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn forged_signature_never_reports_tolerance() {
        // A bad signature with a stale timestamp is reported as a mismatch.
        let header = sign(PAYLOAD, "whsec_attacker", NOW - 10_000);
        assert_eq!(
            verify(&header, PAYLOAD, &secrets(&[NEW]), NOW, 300),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn messages() {
        let cases: &[(SignatureError, &str)] = &[
            (
                SignatureError::MissingHeader,
                "missing stripe-signature header",
            ),
            (
                SignatureError::NoV1Signature,
                "no v1 signature in stripe-signature header",
            ),
            (
                SignatureError::OutsideTolerance {
                    skew_secs: 301,
                    tolerance_secs: 300,
                },
                "timestamp outside tolerance: signed 301 s in the past (tolerance 300 s)",
            ),
            (
                SignatureError::OutsideTolerance {
                    skew_secs: -3600,
                    tolerance_secs: 300,
                },
                "timestamp outside tolerance: signed 3600 s in the future (tolerance 300 s)",
            ),
        ];
        for (err, msg) in cases {
            assert_eq!(err.to_string(), *msg);
        }
    }
}
