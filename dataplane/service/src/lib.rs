//! Plumbing shared by the Zori binaries: logging, metrics, health endpoints, graceful shutdown,
//! and the JetStream stream every tenant's data flows through.

pub mod clickhouse;
pub mod jetstream;
pub mod ops;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
