//! Zori's Kubernetes operator: each `ZoriProject` is reconciled into its own JetStream stream,
//! PostgreSQL schema and role, ClickHouse database, credentials Secret, and the `zori-ingest`
//! and `zori-api` workloads, with an honest status.
//!
//! The reconcile is a pipeline (see [`reconcile`]): [`config`] validates the spec, [`builders`]
//! build the desired objects with pure functions, [`api`] applies them (server-side apply
//! through a trait with a real and an in-memory implementation), [`backends`] provision the
//! stream and databases, and [`status`] turns what happened into conditions.

pub mod api;
pub mod backends;
pub mod buffer;
pub mod builders;
pub mod cli;
pub mod config;
pub mod controller;
pub mod crd;
pub mod isolation;
pub mod leader;
pub mod metrics;
pub mod naming;
pub mod nats_auth;
pub mod provision;
pub mod reclaim;
pub mod reconcile;
pub mod status;
