//! Conditions in the Kubernetes `metav1.Condition` shape, and how a reconcile turns what it saw
//! into them. `lastTransitionTime` changes only when a condition's status flips, so a reconcile
//! that finds everything as it was writes nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// Condition types.
pub mod types {
    /// Summary: true when every other condition is true.
    pub const READY: &str = "Ready";
    pub const SECRET: &str = "SecretReady";
    pub const STREAM: &str = "StreamReady";
    pub const POSTGRES: &str = "PostgresReady";
    pub const CLICKHOUSE: &str = "ClickHouseReady";
    /// Present only with per-tenant Redis users (`--redis-admin-url`).
    pub const REDIS: &str = "RedisReady";
    pub const INGEST: &str = "IngestReady";
    pub const API: &str = "ApiReady";
    /// Present only while `spec.ingress` is set.
    pub const INGRESS: &str = "IngressReady";
    /// Whether every backend gave the tenant a credential of its own (not part of `Ready`
    /// unless the operator runs with `--require-isolation`).
    pub const ISOLATED: &str = "Isolated";
    /// Whether the tenant stream has room: `False` from 80 % of its limits (see
    /// [`crate::buffer`]); not part of `Ready` (the tenant works until the buffer is full).
    pub const STREAM_BUFFER: &str = "StreamBuffer";

    /// Every condition besides `Ready`, in the order they are shown.
    pub const PARTS: [&str; 8] = [
        SECRET, STREAM, POSTGRES, CLICKHOUSE, REDIS, INGEST, API, INGRESS,
    ];
}

/// Condition reasons (CamelCase, stable: they change only with the situation they describe).
pub mod reasons {
    /// Ready: everything is provisioned and available.
    pub const RECONCILED: &str = "Reconciled";
    /// Ready: the spec failed validation; nothing was changed. Waits for a spec change.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Ready: a backend (stream, schema, database) is not provisioned.
    pub const BACKEND_NOT_READY: &str = "BackendNotReady";
    /// Ready: a Kubernetes object could not be applied, or a workload is not available yet.
    pub const WORKLOAD_NOT_READY: &str = "WorkloadNotReady";
    /// Ready and the workloads: `spec.suspend` is true; the Deployments are scaled to zero.
    pub const SUSPENDED: &str = "Suspended";
    /// Ready: the resource is being deleted and its reclaim policy is running.
    pub const DELETING: &str = "Deleting";
    /// Ready: the `Delete` reclaim policy failed; retried with backoff.
    pub const RECLAIM_FAILED: &str = "ReclaimFailed";

    /// Backends and Secret: the object exists and matches the spec.
    pub const PROVISIONED: &str = "Provisioned";
    /// Backends: creating or updating failed (transient; retried with backoff).
    pub const PROVISIONING_FAILED: &str = "ProvisioningFailed";
    /// Secret and Ingress: the object could not be written to the Kubernetes API.
    pub const APPLY_FAILED: &str = "ApplyFailed";

    /// Workloads: every desired replica is updated and available.
    pub const AVAILABLE: &str = "Available";
    /// Workloads: a rollout is under way or replicas are not available yet.
    pub const PROGRESSING: &str = "Progressing";
    /// Api: the Stripe webhook Secret named in the spec does not exist or lacks the key.
    pub const STRIPE_SECRET_NOT_FOUND: &str = "StripeSecretNotFound";

    /// Ingress: applied; the controller named in its class routes the host.
    pub const CONFIGURED: &str = "Configured";

    /// Ready: `status.tenantId` is not an id this project may hold (written by someone else,
    /// or held by another ZoriProject); nothing is provisioned. Waits for a change.
    pub const TENANT_ID_REFUSED: &str = "TenantIdRefused";
    /// Backends: the stream, role, schema or database exists but carries another project's
    /// owner marker (or none, for a project that never pinned it): never adopted.
    pub const NOT_OWNED: &str = "NotOwned";
    /// Isolated: every backend gave the tenant a credential of its own.
    pub const ISOLATED: &str = "Isolated";
    /// Isolated: at least one backend shares a credential between tenants (named in the message).
    pub const SHARED_CREDENTIALS: &str = "SharedCredentials";
    /// Ready: `--require-isolation` is on and the tenant cannot be isolated; no workloads run.
    pub const ISOLATION_REQUIRED: &str = "IsolationRequired";
    /// StreamBuffer: the stream holds less than 80 % of its limits.
    pub const BUFFER_AVAILABLE: &str = "BufferAvailable";
    /// StreamBuffer: the stream holds 80 % of its limits or more: the consumer is stopped or
    /// behind, and ingest refuses events once the stream is full.
    pub const BUFFER_FILLING: &str = "BufferFilling";
    /// StreamBuffer (`Unknown`): the stream's state could not be read.
    pub const STREAM_UNREADABLE: &str = "StreamUnreadable";
}

/// `True`, `False` or `Unknown`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// A condition in the shape of `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, such as `Ready` or `StreamReady`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    pub status: ConditionStatus,
    /// CamelCase reason for the last transition.
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    )]
    pub reason: String,
    /// Human-readable details.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// What a reconcile found for one condition type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
}

impl Observation {
    pub fn ok(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: ConditionStatus::True,
            reason,
            message: message.into(),
        }
    }

    pub fn failed(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: ConditionStatus::False,
            reason,
            message: message.into(),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// Formats a time as Kubernetes does for `metav1.Time` (RFC 3339, whole seconds, UTC).
pub fn timestamp(time: OffsetDateTime) -> String {
    let whole = time
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(time);
    whole
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Sets one condition in `conditions`, keeping `lastTransitionTime` unless the status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    observation: &Observation,
    now: &str,
    generation: Option<i64>,
) {
    let fresh = |time: String| Condition {
        type_: observation.type_.to_owned(),
        status: observation.status,
        reason: observation.reason.to_owned(),
        message: observation.message.clone(),
        last_transition_time: time,
        observed_generation: generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == observation.type_) {
        Some(existing) => {
            let time = if existing.status == observation.status {
                existing.last_transition_time.clone()
            } else {
                now.to_owned()
            };
            *existing = fresh(time);
        }
        None => conditions.push(fresh(now.to_owned())),
    }
}

/// Removes a condition type that no longer applies (for example `IngressReady` once the
/// ingress is removed from the spec).
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Orders conditions: `Ready` first, then the parts in [`types::PARTS`] order, then others.
pub fn sort_conditions(conditions: &mut [Condition]) {
    let rank = |t: &str| {
        if t == types::READY {
            0
        } else {
            types::PARTS
                .iter()
                .position(|p| *p == t)
                .map_or(usize::MAX, |i| i + 1)
        }
    };
    conditions.sort_by_key(|c| rank(&c.type_));
}

/// The `Ready` summary of the parts. While suspended, the workloads' `Suspended` conditions are
/// expected and `Ready` says `Suspended` unless something else fails.
pub fn summarise(parts: &[Observation], suspended: bool) -> Observation {
    let backend_types = [
        types::SECRET,
        types::STREAM,
        types::POSTGRES,
        types::CLICKHOUSE,
        types::REDIS,
    ];
    let failing: Vec<&Observation> = parts
        .iter()
        .filter(|o| !o.is_true() && o.reason != reasons::SUSPENDED)
        .collect();
    if failing.is_empty() {
        return if suspended {
            Observation::failed(
                types::READY,
                reasons::SUSPENDED,
                "spec.suspend is true: the workloads are scaled to zero; data is kept",
            )
        } else {
            Observation::ok(
                types::READY,
                reasons::RECONCILED,
                "stream, schema, database and workloads are ready",
            )
        };
    }
    let reason = if failing.iter().any(|o| backend_types.contains(&o.type_)) {
        reasons::BACKEND_NOT_READY
    } else {
        reasons::WORKLOAD_NOT_READY
    };
    let message = failing
        .iter()
        .map(|o| format!("{}: {}", o.type_, o.message))
        .collect::<Vec<_>>()
        .join("; ");
    Observation::failed(types::READY, reason, message)
}

/// Whether `observation` is news compared with `previous` (a new failure, or a failure whose
/// reason or message changed): such observations become Warning events, once.
pub fn is_new_failure(previous: &[Condition], observation: &Observation) -> bool {
    if observation.is_true() {
        return false;
    }
    !previous.iter().any(|c| {
        c.type_ == observation.type_
            && c.status == observation.status
            && c.reason == observation.reason
            && c.message == observation.message
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2025-01-01T00:00:00Z";
    const T1: &str = "2025-01-01T00:05:00Z";

    #[test]
    fn keeps_transition_time_while_status_is_unchanged() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            &Observation::failed(types::STREAM, reasons::PROVISIONING_FAILED, "down"),
            T0,
            Some(1),
        );
        set_condition(
            &mut conditions,
            &Observation::failed(types::STREAM, reasons::PROVISIONING_FAILED, "still down"),
            T1,
            Some(2),
        );
        assert_eq!(conditions[0].last_transition_time, T0);
        assert_eq!(conditions[0].message, "still down");
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_condition(
            &mut conditions,
            &Observation::ok(types::STREAM, reasons::PROVISIONED, "ok"),
            T1,
            Some(2),
        );
        assert_eq!(conditions[0].last_transition_time, T1);
        assert_eq!(conditions[0].status, ConditionStatus::True);
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn summary_names_the_failing_parts() {
        let parts = vec![
            Observation::ok(types::STREAM, reasons::PROVISIONED, "ok"),
            Observation::failed(types::POSTGRES, reasons::PROVISIONING_FAILED, "refused"),
            Observation::failed(types::INGEST, reasons::PROGRESSING, "0/1 available"),
        ];
        let ready = summarise(&parts, false);
        assert_eq!(ready.status, ConditionStatus::False);
        assert_eq!(ready.reason, reasons::BACKEND_NOT_READY);
        assert_eq!(
            ready.message,
            "PostgresReady: refused; IngestReady: 0/1 available"
        );
        let only_workload = &parts[2..];
        assert_eq!(
            summarise(only_workload, false).reason,
            reasons::WORKLOAD_NOT_READY
        );
        assert_eq!(summarise(&parts[..1], false).reason, reasons::RECONCILED);
        assert_eq!(summarise(&parts[..1], true).reason, reasons::SUSPENDED);
    }

    #[test]
    fn a_repeated_failure_is_not_news() {
        let mut previous = Vec::new();
        let failure = Observation::failed(types::STREAM, reasons::PROVISIONING_FAILED, "down");
        assert!(is_new_failure(&previous, &failure));
        set_condition(&mut previous, &failure, T0, Some(1));
        assert!(!is_new_failure(&previous, &failure));
        let other = Observation::failed(types::STREAM, reasons::PROVISIONING_FAILED, "other");
        assert!(is_new_failure(&previous, &other));
        assert!(!is_new_failure(
            &previous,
            &Observation::ok(types::STREAM, reasons::PROVISIONED, "ok")
        ));
    }

    #[test]
    fn sorts_ready_first() {
        let mut conditions = Vec::new();
        for t in [types::API, types::READY, types::STREAM] {
            set_condition(
                &mut conditions,
                &Observation::ok(t, reasons::PROVISIONED, ""),
                T0,
                None,
            );
        }
        sort_conditions(&mut conditions);
        let order: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(order, vec![types::READY, types::STREAM, types::API]);
    }

    #[test]
    fn timestamps_have_whole_seconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789)
            .expect("valid time");
        assert_eq!(timestamp(t), "2023-11-14T22:13:20Z");
    }
}
