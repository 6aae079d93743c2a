//! Reading Stripe webhooks without I/O: signature verification and the extraction of payment
//! facts from the event types that describe money coming in or going back.

#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
pub mod payment;
pub mod signature;
pub mod subscription;

pub use payment::{
    extract, DisputeState, PaymentChange, PaymentFacts, PaymentIds, RefundStatus, StripeEventError,
};
pub use signature::{verify, SignatureError};
pub use subscription::{SubscriptionError, SubscriptionState};
