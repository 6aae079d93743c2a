//! Zori's domain logic, free of I/O: the event model, enrichment (channel, referrer, page URL,
//! user agent, country, clock), first touch, attribution models, SaaS metrics, and the reading
//! of Stripe webhooks.
//!
//! Shared by `zori-ingest`, `zori-api` and the operator; exhaustively unit-tested.

pub mod attribution;
pub mod channel;
pub mod clock;
pub mod currency;
pub mod email;
pub mod enrich;
pub mod event;
pub mod geo;
pub mod identity;
pub mod pageurl;
pub mod referrer;
pub mod saas;
pub mod stripe;
pub mod text;
pub mod touch;
pub mod useragent;
