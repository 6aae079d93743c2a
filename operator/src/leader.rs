//! Leader election with a `coordination.k8s.io/v1` Lease, so that two operator replicas never
//! reconcile at once. The algorithm is client-go's:
//!
//! - a candidate takes the Lease over only when it has not seen the Lease record change for
//!   `lease_duration`, measured on its *own* monotonic clock from when it observed the
//!   record; it never compares another replica's `renewTime` with its own wall clock, so
//!   clock skew between nodes cannot shorten a Lease;
//! - the leader renews every `retry_period` and must succeed within `renew_deadline` (shorter
//!   than `lease_duration`) of its last renewal; a renewal that fails or hangs past it makes
//!   the leader stop its work *before* any other replica can consider the Lease expired.
//!
//! Writes are optimistic: a replace carries the Lease's resourceVersion, and a conflict means
//! another replica won.

use std::{future::Future, time::Duration};

use serde_json::{json, Value};
use time::{macros::format_description, OffsetDateTime};
use tokio::time::{sleep, timeout_at, Instant};
use tracing::{info, warn};

use crate::api::{ApiError, KubeApi, ObjectKey};

/// Where the Lease lives, who we are, and the timing (client-go's defaults for controllers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    /// How long a follower waits, after it last saw the Lease change, before taking it.
    pub lease_duration: Duration,
    /// How long the leader keeps working without a successful renewal.
    pub renew_deadline: Duration,
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
            renew_deadline: Duration::from_secs(10),
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

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    #[error("Lease {lease} is now held by {holder}")]
    TakenOver { lease: String, holder: String },
    #[error("Lease {lease} was not renewed within {deadline:?}")]
    NotRenewed { lease: String, deadline: Duration },
}

/// `metav1.MicroTime`: RFC 3339 with microseconds.
fn micro_time(t: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_owned())
}

/// The Lease record as last seen, and when (on this replica's monotonic clock).
#[derive(Debug, Clone)]
struct Observed {
    record: Value,
    at: Instant,
}

/// One replica's side of the election.
pub struct Elector<A> {
    api: A,
    settings: LeaseSettings,
    /// The wall clock written into `renewTime`/`acquireTime` (informational only).
    wall_clock: Box<dyn Fn() -> OffsetDateTime + Send + Sync>,
    observed: Option<Observed>,
}

impl<A: KubeApi> Elector<A> {
    pub fn new(api: A, settings: LeaseSettings) -> Self {
        Self {
            api,
            settings,
            wall_clock: Box::new(OffsetDateTime::now_utc),
            observed: None,
        }
    }

    /// Uses `clock` for the times written into the Lease (tests skew it).
    pub fn with_wall_clock(
        mut self,
        clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static,
    ) -> Self {
        self.wall_clock = Box::new(clock);
        self
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn lease_error(&self, source: ApiError) -> LeaderError {
        LeaderError::Api {
            lease: self.settings.key().to_string(),
            source,
        }
    }

    fn record(&self, acquired: &str, transitions: i64) -> Value {
        let seconds = i64::try_from(self.settings.lease_duration.as_secs())
            .unwrap_or(15)
            .max(1);
        json!({
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": seconds,
            "acquireTime": acquired,
            "renewTime": micro_time((self.wall_clock)()),
            "leaseTransitions": transitions,
        })
    }

    /// One round: create the Lease, renew ours, take over one nobody renewed for
    /// `lease_duration` of our own time, or stay a follower.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Leadership, LeaderError> {
        let key = self.settings.key();
        let Some(mut lease) = self.api.get(&key).await.map_err(|e| self.lease_error(e))? else {
            let record = self.record(&micro_time((self.wall_clock)()), 0);
            let object = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
                "spec": record,
            });
            return match self.api.create(&object).await {
                Ok(_) => {
                    self.observed = Some(Observed {
                        record,
                        at: Instant::now(),
                    });
                    Ok(Leadership::Leader)
                }
                Err(ApiError::AlreadyExists { .. } | ApiError::Conflict { .. }) => {
                    Ok(Leadership::Follower { holder: None })
                }
                Err(e) => Err(self.lease_error(e)),
            };
        };
        let record = lease.get("spec").cloned().unwrap_or(Value::Null);
        let now = Instant::now();
        if self.observed.as_ref().map(|o| &o.record) != Some(&record) {
            self.observed = Some(Observed {
                record: record.clone(),
                at: now,
            });
        }
        let observed_at = self.observed.as_ref().map_or(now, |o| o.at);
        let holder = record
            .get("holderIdentity")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .map(str::to_owned);
        let ours = holder.as_deref() == Some(self.settings.identity.as_str());
        let expired = observed_at + self.settings.lease_duration <= now;
        if holder.is_some() && !ours && !expired {
            return Ok(Leadership::Follower { holder });
        }
        let transitions = record
            .get("leaseTransitions")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let next = if ours {
            let acquired = record
                .get("acquireTime")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| micro_time((self.wall_clock)()));
            self.record(&acquired, transitions)
        } else {
            self.record(&micro_time((self.wall_clock)()), transitions + 1)
        };
        lease["spec"] = next.clone();
        match self.api.replace(&lease).await {
            Ok(_) => {
                self.observed = Some(Observed {
                    record: next,
                    at: Instant::now(),
                });
                Ok(Leadership::Leader)
            }
            Err(ApiError::Conflict { .. }) => Ok(Leadership::Follower { holder }),
            Err(e) => Err(self.lease_error(e)),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Leadership::Leader) => return,
                Ok(Leadership::Follower { holder }) => info!(
                    holder = holder.as_deref().unwrap_or("nobody"),
                    "waiting for the leader Lease"
                ),
                Err(error) => warn!(%error, "failed to take part in the leader election"),
            }
            sleep(self.settings.retry_period).await;
        }
    }

    /// Runs `work` while renewing the Lease (just acquired). Returns its output when it ends,
    /// or [`LeaseLost`] (having dropped `work`, which stops it) when another replica took the
    /// Lease or no renewal succeeded within `renew_deadline`: always before a follower can
    /// judge the Lease expired.
    pub async fn lead<F: Future>(&mut self, work: F) -> Result<F::Output, LeaseLost> {
        let lease = self.settings.key().to_string();
        let renew_deadline = self.settings.renew_deadline;
        let retry_period = self.settings.retry_period;
        let renewing = async {
            let mut last_renewal = Instant::now();
            loop {
                sleep(retry_period).await;
                let deadline = last_renewal + renew_deadline;
                match timeout_at(deadline, self.try_acquire_or_renew()).await {
                    Ok(Ok(Leadership::Leader)) => last_renewal = Instant::now(),
                    Ok(Ok(Leadership::Follower { holder })) => {
                        return LeaseLost::TakenOver {
                            lease,
                            holder: holder.unwrap_or_else(|| "nobody".to_owned()),
                        }
                    }
                    Ok(Err(error)) => warn!(%error, "failed to renew the leader Lease"),
                    Err(_) => {
                        return LeaseLost::NotRenewed {
                            lease,
                            deadline: renew_deadline,
                        }
                    }
                }
                if Instant::now() >= deadline {
                    return LeaseLost::NotRenewed {
                        lease,
                        deadline: renew_deadline,
                    };
                }
            }
        };
        // Renewal first: a replica resumed after a pause (a stopped process, a frozen node)
        // notices the missed deadline before its controllers get another turn.
        tokio::select! {
            biased;
            lost = renewing => Err(lost),
            output = work => Ok(output),
        }
    }

    /// Gives the Lease up (if we hold it) so that another replica takes over at once.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let key = self.settings.key();
        let Some(mut lease) = self.api.get(&key).await.map_err(|e| self.lease_error(e))? else {
            return Ok(());
        };
        if lease
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            != Some(self.settings.identity.as_str())
        {
            return Ok(());
        }
        lease["spec"]["holderIdentity"] = Value::Null;
        lease["spec"]["leaseDurationSeconds"] = json!(1);
        match self.api.replace(&lease).await {
            Ok(_) | Err(ApiError::Conflict { .. }) => Ok(()),
            Err(e) => Err(self.lease_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    };

    use super::*;
    use crate::api::fake::FakeApi;

    fn elector(api: &FakeApi, identity: &str) -> Elector<FakeApi> {
        Elector::new(
            api.handle(),
            LeaseSettings::new("zori-system", "zori-operator", identity),
        )
    }

    fn holder(api: &FakeApi) -> Option<String> {
        api.object(&LeaseSettings::new("zori-system", "zori-operator", "x").key())
            .and_then(|l| {
                l.pointer("/spec/holderIdentity")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
    }

    #[tokio::test(start_paused = true)]
    async fn acquires_renews_and_takes_over_after_a_lease_duration_unchanged() {
        let api = FakeApi::new();
        let mut a = elector(&api, "pod-a");
        let mut b = elector(&api, "pod-b");
        assert_eq!(
            a.try_acquire_or_renew().await.expect("a"),
            Leadership::Leader
        );
        assert_eq!(
            b.try_acquire_or_renew().await.expect("b"),
            Leadership::Follower {
                holder: Some("pod-a".to_owned())
            }
        );
        sleep(Duration::from_secs(10)).await;
        assert_eq!(
            a.try_acquire_or_renew().await.expect("a renews"),
            Leadership::Leader
        );
        // b sees the renewal at 11 s, by its own clock: the Lease holds until 26 s.
        sleep(Duration::from_secs(1)).await;
        assert!(matches!(
            b.try_acquire_or_renew().await.expect("b"),
            Leadership::Follower { .. }
        ));
        sleep(Duration::from_secs(14)).await;
        assert!(matches!(
            b.try_acquire_or_renew().await.expect("b"),
            Leadership::Follower { .. }
        ));
        // 15 s after b last saw it change: b takes over, the transitions count goes up.
        sleep(Duration::from_secs(1)).await;
        assert_eq!(
            b.try_acquire_or_renew().await.expect("b"),
            Leadership::Leader
        );
        assert_eq!(holder(&api).as_deref(), Some("pod-b"));
        let lease = api.object(&a.settings().key()).expect("lease");
        assert_eq!(lease.pointer("/spec/leaseTransitions"), Some(&json!(1)));
        assert!(matches!(
            a.try_acquire_or_renew().await.expect("a"),
            Leadership::Follower { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_skewed_clock_does_not_shorten_the_lease() {
        let api = FakeApi::new();
        // a's node clock is an hour behind: every renewTime it writes looks long expired.
        let mut a = elector(&api, "pod-a")
            .with_wall_clock(|| OffsetDateTime::now_utc() - time::Duration::hours(1));
        let mut b = elector(&api, "pod-b");
        assert_eq!(
            a.try_acquire_or_renew().await.expect("a"),
            Leadership::Leader
        );
        for _ in 0..20 {
            sleep(Duration::from_secs(2)).await;
            assert_eq!(
                a.try_acquire_or_renew().await.expect("a"),
                Leadership::Leader
            );
            assert!(
                matches!(
                    b.try_acquire_or_renew().await.expect("b"),
                    Leadership::Follower { .. }
                ),
                "b must not take a Lease that is being renewed"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn release_hands_over_at_once() {
        let api = FakeApi::new();
        let mut a = elector(&api, "pod-a");
        let mut b = elector(&api, "pod-b");
        assert_eq!(
            a.try_acquire_or_renew().await.expect("a"),
            Leadership::Leader
        );
        b.release().await.expect("b releases nothing");
        assert!(matches!(
            b.try_acquire_or_renew().await.expect("b"),
            Leadership::Follower { .. }
        ));
        a.release().await.expect("a releases");
        assert_eq!(
            b.try_acquire_or_renew().await.expect("b"),
            Leadership::Leader
        );
    }

    /// Sets a flag while alive: "this replica is reconciling".
    struct Reconciling {
        flag: Arc<AtomicBool>,
        stopped_at: Arc<Mutex<Option<Instant>>>,
    }

    impl Drop for Reconciling {
        fn drop(&mut self) {
            self.flag.store(false, Ordering::SeqCst);
            *self.stopped_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_leader_stops_before_the_other_replica_takes_over() {
        let api = FakeApi::new();
        let a_api = api.handle();
        let a_reconciling = Arc::new(AtomicBool::new(false));
        let a_stopped_at = Arc::new(Mutex::new(None));

        let mut a = Elector::new(
            a_api.clone(),
            LeaseSettings::new("zori-system", "zori-operator", "pod-a"),
        );
        let (flag, stopped_at) = (a_reconciling.clone(), a_stopped_at.clone());
        let replica_a = tokio::spawn(async move {
            a.acquire().await;
            a.lead(async move {
                flag.store(true, Ordering::SeqCst);
                let _guard = Reconciling { flag, stopped_at };
                std::future::pending::<()>().await;
            })
            .await
        });
        sleep(Duration::from_secs(1)).await;
        assert!(a_reconciling.load(Ordering::SeqCst));

        let mut b = elector(&api, "pod-b");
        let a_flag = a_reconciling.clone();
        let replica_b = tokio::spawn(async move {
            b.acquire().await;
            // The moment b starts reconciling, a must have stopped.
            (Instant::now(), a_flag.load(Ordering::SeqCst))
        });

        sleep(Duration::from_secs(4)).await;
        let hung_at = Instant::now();
        a_api.hang_everything();

        let (b_started, a_still_reconciling) = replica_b.await.expect("b runs");
        assert!(!a_still_reconciling, "two leaders at once");
        let lost = replica_a
            .await
            .expect("a runs")
            .expect_err("a loses the lease");
        assert!(matches!(lost, LeaseLost::NotRenewed { .. }), "{lost:?}");
        let a_stopped = a_stopped_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expect("a stopped");
        assert!(a_stopped < b_started);
        // a stopped within the renew deadline of its last renewal (at most a retry period
        // before the hang); b took over a Lease duration after it last saw a renewal.
        assert!(
            a_stopped <= hung_at + Duration::from_secs(10),
            "{:?}",
            a_stopped - hung_at
        );
        assert!(
            b_started <= hung_at + Duration::from_secs(15 + 2 * 2),
            "{:?}",
            b_started - hung_at
        );
        assert_eq!(holder(&api).as_deref(), Some("pod-b"));
    }

    #[test]
    fn formats_micro_time() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        assert_eq!(micro_time(t), "2023-11-14T22:13:20.000000Z");
    }
}
