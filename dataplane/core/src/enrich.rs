//! Turns what a browser sent into a [`TrackedEvent`] / [`IdentifyRecord`]: validation with
//! bounded sizes, page URL cleaning, referrer normalisation, channel, user agent, country and
//! clock clamping. Pure: everything it needs comes in [`EnrichContext`].

use std::{net::IpAddr, time::Duration};

use time::OffsetDateTime;

use crate::event::{IdentifyRecord, RawEvent, RawIdentify, TrackedEvent};

/// Tenant-wide settings that shape enrichment.
#[derive(Debug, Clone)]
pub struct EnrichSettings {
    /// Hosts (lower case, with port if not default, `www.`-insensitive) events may come from.
    /// Empty means any host.
    pub allowed_hosts: Vec<String>,
    /// How far in the past a client timestamp may be before it is clamped to receive time.
    pub max_past_skew: Duration,
    /// How far in the future a client timestamp may be before it is clamped to receive time.
    pub max_future_skew: Duration,
    /// Tenant salt for email hashes.
    pub email_salt: String,
}

/// Per-request facts known to ingest.
#[derive(Debug, Clone)]
pub struct EnrichContext<'a> {
    pub received_at: OffsetDateTime,
    /// Used for the country lookup only; never stored.
    pub client_ip: Option<IpAddr>,
    /// The request's `User-Agent` header (wins over the body's `user_agent`).
    pub user_agent: Option<&'a str>,
    pub settings: &'a EnrichSettings,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("placeholder")]
    Placeholder,
}

pub fn enrich_event(_raw: RawEvent, _ctx: &EnrichContext<'_>) -> Result<TrackedEvent, EventError> {
    Err(EventError::Placeholder)
}

pub fn enrich_identify(
    _raw: RawIdentify,
    _ctx: &EnrichContext<'_>,
) -> Result<IdentifyRecord, EventError> {
    Err(EventError::Placeholder)
}
