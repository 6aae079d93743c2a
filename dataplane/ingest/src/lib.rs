//! `zori-ingest`: the tracking endpoint of one Zori tenant.
//!
//! The hot path does little, in the manner of PostHog's capture: check origin and key, read a
//! bounded body, parse, enrich cheaply ([`zori_core::enrich`]), rate-limit (Redis, failing
//! open), publish to the tenant's JetStream stream with `Nats-Msg-Id` = event id, and answer 2xx
//! only once JetStream has acknowledged. When the stream cannot take the event the answer is
//! 503 with `Retry-After`, never a silent drop.
//!
//! Routes: `POST /ingest` (original wire format, answers `ACCEPTED <bytes>`), `POST /identify`
//! (`IDENTIFIED <bytes>`), `POST /batch` (`{"events": [...], "identifies": [...]}`, answers
//! `{"accepted": n, "rejected": [...]}`), `GET /zori.js` and `GET /v/<version>/zori.js` (the
//! tracker), `GET /health`, and the shared `/healthz`, `/readyz`, `/metrics`.
//!
//! Nothing a visitor sends is trusted further than it can be checked: bodies are bounded before
//! and while they are parsed (`/batch` elements are counted as they are read, and at most
//! `--max-inflight-bodies` bodies are in flight), the client address behind proxies is the
//! right-most hop no trusted proxy added, and with identity verification an `identify` counts
//! only when signed by the site's server or sent with the API token
//! ([`zori_core::identity`]).

mod batch;
pub mod config;
mod http;
mod identity;
mod metrics;
pub mod publish;
pub mod ratelimit;
mod server;
pub mod tracker;

pub use config::{
    BotTraffic, Config, ConfigError, LogFormat, RateLimits, Secret, Settings, VerificationMode,
};
pub use server::{run, Error};
