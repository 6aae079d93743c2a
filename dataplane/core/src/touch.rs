//! Touches: how a visitor arrived. Each session's landing is a touch; the earliest touch of a
//! visitor (or of a user, across all the visitor ids linked to them) is the first touch that
//! revenue is credited to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{channel::Channel, event::TrackedEvent};

/// Dimensions a revenue report can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Channel,
    Source,
    Medium,
    Campaign,
    Referrer,
    LandingPage,
}

impl Dimension {
    pub const ALL: [Dimension; 6] = [
        Dimension::Channel,
        Dimension::Source,
        Dimension::Medium,
        Dimension::Campaign,
        Dimension::Referrer,
        Dimension::LandingPage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Channel => "channel",
            Dimension::Source => "source",
            Dimension::Medium => "medium",
            Dimension::Campaign => "campaign",
            Dimension::Referrer => "referrer",
            Dimension::LandingPage => "landing_page",
        }
    }
}

impl std::str::FromStr for Dimension {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown dimension {s:?}; expected one of channel, source, medium, campaign, referrer, landing_page"
                )
            })
    }
}

/// Label used in reports where a touch has no value for a dimension (e.g. no campaign).
pub const NOT_SET: &str = "(not set)";
/// Label of the source of a touch with neither UTM source nor referrer.
pub const DIRECT: &str = "(direct)";

/// Whether an event describes a page being entered (`page_view`, `session_start`). Only these
/// carry the landing page and referrer of a touch: a `session_end` is sent on the next visit
/// with that page's URL and referrer but the old session's time, and clicks, custom events or
/// page-hidden events happen on a page already entered. Any arrival event is a better touch
/// than any other event, whatever their times.
pub fn is_arrival(event_name: &str) -> bool {
    matches!(event_name, "page_view" | "session_start")
}

/// One arrival of a visitor: the first event of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    pub visitor_id: String,
    pub session_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub channel: Channel,
    /// UTM source, else the referrer host, else [`DIRECT`].
    pub source: String,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub term: Option<String>,
    pub content: Option<String>,
    pub referrer_host: Option<String>,
    /// Path of the landing page.
    pub landing_page: String,
    pub click_ids: BTreeMap<String, String>,
}

impl Touch {
    /// The touch an event represents if it is the first event seen of its session.
    pub fn from_event(event: &TrackedEvent) -> Touch {
        let referrer_host = event.referrer.as_ref().map(|r| r.host.clone());
        let source = event
            .utm
            .source
            .clone()
            .or_else(|| referrer_host.clone())
            .unwrap_or_else(|| DIRECT.to_owned());
        Touch {
            visitor_id: event.visitor_id.clone(),
            session_id: event.session_id.clone(),
            occurred_at: event.occurred_at,
            channel: event.channel,
            source,
            medium: event.utm.medium.clone(),
            campaign: event.utm.campaign.clone(),
            term: event.utm.term.clone(),
            content: event.utm.content.clone(),
            referrer_host,
            landing_page: event.page.path.clone(),
            click_ids: event.click_ids.clone(),
        }
    }

    /// The value of this touch for a report dimension.
    pub fn dimension(&self, dimension: Dimension) -> &str {
        fn or_not_set(v: &Option<String>) -> &str {
            v.as_deref().unwrap_or(NOT_SET)
        }
        match dimension {
            Dimension::Channel => self.channel.as_str(),
            Dimension::Source => &self.source,
            Dimension::Medium => or_not_set(&self.medium),
            Dimension::Campaign => or_not_set(&self.campaign),
            Dimension::Referrer => self.referrer_host.as_deref().unwrap_or(DIRECT),
            Dimension::LandingPage => &self.landing_page,
        }
    }
}
