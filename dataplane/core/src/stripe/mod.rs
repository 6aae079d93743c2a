//! Reading Stripe webhooks without I/O: signature verification and the extraction of payment
//! facts from the event types that describe money coming in or going back.

pub mod payment;
pub mod signature;

pub use payment::{extract, PaymentChange, PaymentFacts, PaymentIds, StripeEventError};
pub use signature::{verify, SignatureError};
