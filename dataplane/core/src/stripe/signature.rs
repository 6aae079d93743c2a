//! `Stripe-Signature` verification (HMAC-SHA256 over `"{t}.{payload}"`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("placeholder")]
    Placeholder,
}

/// Verifies `header` (the `Stripe-Signature` value) for `payload` against any of `secrets`,
/// with `tolerance` around `now` (unix seconds).
pub fn verify(
    _header: &str,
    _payload: &[u8],
    _secrets: &[String],
    _now: i64,
    _tolerance_secs: i64,
) -> Result<(), SignatureError> {
    Err(SignatureError::Placeholder)
}
