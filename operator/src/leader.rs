//! Leader election with a `coordination.k8s.io/v1` Lease, so that two operator replicas never
//! reconcile at once. Acquire and renew are optimistic: a replace carries the Lease's
//! resourceVersion, and a conflict means another replica won.

use std::time::Duration;

use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, macros::format_description, OffsetDateTime};

use crate::api::{ApiError, KubeApi, ObjectKey};

/// Where the Lease lives and who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews (and a follower retries).
    pub retry_period: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }

    fn key(&self) -> ObjectKey {
        ObjectKey::new(
            "coordination.k8s.io/v1",
            "Lease",
            Some(&self.namespace),
            &self.name,
        )
    }
}

/// The outcome of one election round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    Leader,
    Follower { holder: Option<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("failed to acquire or renew Lease {lease}: {source}")]
    Api {
        lease: String,
        #[source]
        source: ApiError,
    },
}

/// `metav1.MicroTime`: RFC 3339 with microseconds.
fn micro_time(t: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_owned())
}

fn lease_spec(
    settings: &LeaseSettings,
    now: OffsetDateTime,
    acquire: Option<OffsetDateTime>,
    transitions: i64,
) -> Value {
    let seconds = i64::try_from(settings.lease_duration.as_secs())
        .unwrap_or(15)
        .max(1);
    let mut spec = json!({
        "holderIdentity": settings.identity,
        "leaseDurationSeconds": seconds,
        "renewTime": micro_time(now),
        "leaseTransitions": transitions,
    });
    if let Some(acquired) = acquire {
        spec["acquireTime"] = json!(micro_time(acquired));
    }
    spec
}

/// One round: create the Lease, renew ours, take over an expired one, or stay a follower.
pub async fn try_acquire_or_renew<A: KubeApi>(
    api: &A,
    settings: &LeaseSettings,
    now: OffsetDateTime,
) -> Result<Leadership, LeaderError> {
    let key = settings.key();
    let lease_error = |source| LeaderError::Api {
        lease: key.to_string(),
        source,
    };
    let Some(mut lease) = api.get(&key).await.map_err(lease_error)? else {
        let object = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": settings.name, "namespace": settings.namespace},
            "spec": lease_spec(settings, now, Some(now), 0),
        });
        return match api.create(&object).await {
            Ok(_) => Ok(Leadership::Leader),
            Err(ApiError::AlreadyExists { .. } | ApiError::Conflict { .. }) => {
                Ok(Leadership::Follower { holder: None })
            }
            Err(e) => Err(lease_error(e)),
        };
    };
    let spec = lease.get("spec").cloned().unwrap_or(Value::Null);
    let holder = spec
        .get("holderIdentity")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_owned);
    let transitions = spec
        .get("leaseTransitions")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let duration = spec
        .get("leaseDurationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(15);
    let renewed = spec
        .get("renewTime")
        .and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
    let expired = renewed.is_none_or(|r| r + time::Duration::seconds(duration) < now);

    let new_spec = if holder.as_deref() == Some(settings.identity.as_str()) {
        let acquired = spec
            .get("acquireTime")
            .and_then(Value::as_str)
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .unwrap_or(now);
        lease_spec(settings, now, Some(acquired), transitions)
    } else if holder.is_none() || expired {
        lease_spec(settings, now, Some(now), transitions + 1)
    } else {
        return Ok(Leadership::Follower { holder });
    };
    lease["spec"] = new_spec;
    match api.replace(&lease).await {
        Ok(_) => Ok(Leadership::Leader),
        Err(ApiError::Conflict { .. }) => Ok(Leadership::Follower { holder }),
        Err(e) => Err(lease_error(e)),
    }
}

/// Gives the Lease up (if we hold it) so that another replica takes over at once.
pub async fn release<A: KubeApi>(api: &A, settings: &LeaseSettings) -> Result<(), LeaderError> {
    let key = settings.key();
    let lease_error = |source| LeaderError::Api {
        lease: key.to_string(),
        source,
    };
    let Some(mut lease) = api.get(&key).await.map_err(lease_error)? else {
        return Ok(());
    };
    if lease
        .pointer("/spec/holderIdentity")
        .and_then(Value::as_str)
        != Some(settings.identity.as_str())
    {
        return Ok(());
    }
    lease["spec"]["holderIdentity"] = Value::Null;
    lease["spec"]["leaseDurationSeconds"] = json!(1);
    match api.replace(&lease).await {
        Ok(_) | Err(ApiError::Conflict { .. }) => Ok(()),
        Err(e) => Err(lease_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).expect("valid time")
    }

    #[tokio::test]
    async fn acquires_renews_and_takes_over_an_expired_lease() {
        let api = FakeApi::new();
        let a = LeaseSettings::new("zori-system", "zori-operator", "pod-a");
        let b = LeaseSettings::new("zori-system", "zori-operator", "pod-b");

        assert_eq!(
            try_acquire_or_renew(&api, &a, at(0)).await.expect("a"),
            Leadership::Leader
        );
        assert_eq!(
            try_acquire_or_renew(&api, &b, at(1)).await.expect("b"),
            Leadership::Follower {
                holder: Some("pod-a".to_owned())
            }
        );
        assert_eq!(
            try_acquire_or_renew(&api, &a, at(10))
                .await
                .expect("a renews"),
            Leadership::Leader
        );
        // Renewed at 10 for 15 s: still held at 20.
        assert!(matches!(
            try_acquire_or_renew(&api, &b, at(20)).await.expect("b"),
            Leadership::Follower { .. }
        ));
        // Expired at 26: b takes over and the transitions count goes up.
        assert_eq!(
            try_acquire_or_renew(&api, &b, at(26)).await.expect("b"),
            Leadership::Leader
        );
        let key = a.key();
        let lease = api.object(&key).expect("lease");
        assert_eq!(lease.pointer("/spec/holderIdentity"), Some(&json!("pod-b")));
        assert_eq!(lease.pointer("/spec/leaseTransitions"), Some(&json!(1)));
        assert!(matches!(
            try_acquire_or_renew(&api, &a, at(27)).await.expect("a"),
            Leadership::Follower { .. }
        ));
    }

    #[tokio::test]
    async fn release_hands_over_at_once() {
        let api = FakeApi::new();
        let a = LeaseSettings::new("ns", "lease", "pod-a");
        let b = LeaseSettings::new("ns", "lease", "pod-b");
        assert_eq!(
            try_acquire_or_renew(&api, &a, at(0)).await.expect("a"),
            Leadership::Leader
        );
        release(&api, &b).await.expect("b releases nothing");
        assert!(matches!(
            try_acquire_or_renew(&api, &b, at(1)).await.expect("b"),
            Leadership::Follower { .. }
        ));
        release(&api, &a).await.expect("a releases");
        assert_eq!(
            try_acquire_or_renew(&api, &b, at(2)).await.expect("b"),
            Leadership::Leader
        );
    }

    #[tokio::test]
    async fn a_concurrent_writer_wins_the_race() {
        let api = FakeApi::new();
        let a = LeaseSettings::new("ns", "lease", "pod-a");
        try_acquire_or_renew(&api, &a, at(0)).await.expect("a");
        // Simulate b reading the expired lease, then a renewing first: b's replace conflicts.
        let key = a.key();
        let stale = api.object(&key).expect("lease");
        try_acquire_or_renew(&api, &a, at(1))
            .await
            .expect("a renews");
        let mut taken = stale;
        taken["spec"]["holderIdentity"] = json!("pod-b");
        assert!(matches!(
            api.replace(&taken).await,
            Err(ApiError::Conflict { .. })
        ));
    }

    #[test]
    fn formats_micro_time() {
        assert_eq!(micro_time(at(0)), "2023-11-14T22:13:20.000000Z");
    }
}
