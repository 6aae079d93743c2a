//! Fixed-window rate limits in Redis, per visitor id and per client IP, weighted by the number
//! of events in a request. One round trip per request (a small Lua script that increments every
//! counter and sets its expiry on first use; concurrent requests share a call). Visitor ids and
//! client IPs are hashed with the tenant salt before they become part of a key: neither is ever
//! stored in Redis in clear.
//!
//! Every key starts with `zori:{<tenant>}:`, and the limiter needs only `EVALSHA`,
//! `SCRIPT LOAD` and `PING` (plus `INCRBY` and `EXPIRE` inside the script), so it runs under a
//! Redis ACL user restricted to the tenant's prefix ([`zori_core::event::RedisKeys::acl_rules`]).
//!
//! When Redis cannot be reached, `--rate-limit-failure-mode` decides. `open` (the default): the
//! request goes through, a metric counts it and a warning is logged at most once a minute;
//! losing data because the limiter is down would be worse than letting a burst through.
//! `closed`: the request is answered 503 with Retry-After, so nothing passes unchecked and the
//! client retries once Redis is back.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Script,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use zori_core::event::RedisKeys;

use crate::{
    config::{FailureMode, RateLimits},
    metrics::Metrics,
};

/// Increments `KEYS[i]` by `ARGV[i + 1]`, gives a new counter the expiry `ARGV[1]` seconds,
/// returns every new value. Atomic, and works on every Redis with Lua (2.6+).
const SCRIPT: &str = r"
local ttl = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local weight = tonumber(ARGV[i + 1])
  local n = redis.call('INCRBY', key, weight)
  if n == weight then
    redis.call('EXPIRE', key, ttl)
  end
  out[i] = n
end
return out
";

/// How long one rate-limit check may take before the request goes through unchecked.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_EVERY: Duration = Duration::from_secs(5);
const LOG_EVERY_SECS: u64 = 60;
/// Checks waiting for Redis; beyond this the limiter is overloaded and lets requests through.
const QUEUE_CAPACITY: usize = 8192;
/// Most checks sent to Redis in one script call.
const MAX_CHECKS_PER_CALL: usize = 256;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RateLimitError {
    #[error("redis is not connected yet")]
    NotConnected,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("too many rate-limit checks are waiting for redis")]
    Overloaded,
    #[error("redis command failed: {0}")]
    Redis(String),
}

impl From<redis::RedisError> for RateLimitError {
    fn from(error: redis::RedisError) -> Self {
        RateLimitError::Redis(error.to_string())
    }
}

/// Outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    /// Over a limit; retry after this many seconds (the end of the window).
    Limit {
        retry_after: u64,
    },
    /// Redis could not be asked and the limiter fails closed.
    Unavailable,
}

/// One request's counters, waiting for the next script call.
struct Check {
    keys: Vec<String>,
    weights: Vec<u64>,
    reply: oneshot::Sender<Result<Vec<u64>, RateLimitError>>,
}

/// The limiter. Concurrent checks are coalesced: whatever is waiting when Redis becomes free
/// goes in one script call (one write, one read), so each request still waits for exactly one
/// round trip while Redis and the kernel see far fewer calls under load.
pub(crate) struct RateLimiter {
    limits: RateLimits,
    window_secs: u64,
    /// `zori:{<tenant>}:rl:` — the hash tag keeps a tenant's counters on one cluster slot.
    prefix: String,
    salt: Vec<u8>,
    conn: Arc<OnceLock<ConnectionManager>>,
    queue: mpsc::Sender<Check>,
    metrics: Metrics,
    last_warning: AtomicU64,
}

impl RateLimiter {
    /// Connects to Redis and starts the task that talks to it. If Redis cannot be reached now,
    /// keeps trying in the background (the returned task) while requests go through unchecked.
    pub(crate) async fn connect(
        redis_url: &str,
        tenant_id: &str,
        salt: &str,
        limits: RateLimits,
        metrics: Metrics,
    ) -> Result<(Self, Option<tokio::task::JoinHandle<()>>), RateLimitError> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(CHECK_TIMEOUT)
            // Fail fast: a request never waits for Redis to come back (the manager reconnects
            // on its own, and `connect` keeps trying in the background).
            .set_number_of_retries(1)
            .set_max_delay(200);
        let conn = Arc::new(OnceLock::new());
        let (queue, checks) = mpsc::channel(QUEUE_CAPACITY);
        let window_secs = limits.window.as_secs().max(1);
        tokio::spawn(send_checks(checks, conn.clone(), window_secs + 1));
        let limiter = Self {
            limits,
            window_secs,
            prefix: format!("{}rl:", RedisKeys::for_tenant(tenant_id).prefix),
            salt: salt.as_bytes().to_vec(),
            conn: conn.clone(),
            queue,
            metrics,
            last_warning: AtomicU64::new(0),
        };
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(manager) => {
                let _ = conn.set(manager);
                Ok((limiter, None))
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    failure_mode = ?limiter.limits.failure_mode,
                    "redis is unavailable; until it answers, requests are let through unchecked \
                     (failure mode open) or answered 503 (failure mode closed)"
                );
                let task = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(RECONNECT_EVERY).await;
                        match ConnectionManager::new_with_config(client.clone(), config.clone())
                            .await
                        {
                            Ok(manager) => {
                                let _ = conn.set(manager);
                                tracing::info!("connected to redis; rate limits are enforced");
                                return;
                            }
                            Err(error) => tracing::debug!(%error, "redis still unavailable"),
                        }
                    }
                });
                Ok((limiter, Some(task)))
            }
        }
    }

    /// Counts `ip_weight` events for the client IP and, for each `(visitor id, weight)`, the
    /// visitor's events; decides whether the request is over a limit. When Redis cannot be
    /// asked, fails open or closed as configured.
    pub(crate) async fn check(
        &self,
        ip: Option<IpAddr>,
        ip_weight: u64,
        visitors: &[(&str, u64)],
    ) -> Decision {
        let now = unix_now();
        match self.count(ip, ip_weight, visitors, now).await {
            Ok(decision) => decision,
            Err(error) => {
                self.metrics.rate_limiter_errors.inc();
                self.warn_throttled(now, &error);
                match self.limits.failure_mode {
                    FailureMode::Open => Decision::Allow,
                    FailureMode::Closed => Decision::Unavailable,
                }
            }
        }
    }

    async fn count(
        &self,
        ip: Option<IpAddr>,
        ip_weight: u64,
        visitors: &[(&str, u64)],
        now: u64,
    ) -> Result<Decision, RateLimitError> {
        let window = now / self.window_secs;
        let mut keys: Vec<String> = Vec::with_capacity(visitors.len() + 1);
        let mut weights: Vec<u64> = Vec::with_capacity(visitors.len() + 1);
        let mut limits: Vec<u64> = Vec::with_capacity(visitors.len() + 1);
        if let Some(limit) = self.limits.per_visitor {
            for (visitor, weight) in visitors.iter().filter(|(_, weight)| *weight > 0) {
                keys.push(self.visitor_key(visitor, window));
                weights.push(*weight);
                limits.push(limit);
            }
        }
        if let (Some(limit), Some(ip)) = (self.limits.per_ip, ip) {
            if ip_weight > 0 {
                keys.push(self.ip_key(ip, window));
                weights.push(ip_weight);
                limits.push(limit);
            }
        }
        if keys.is_empty() {
            return Ok(Decision::Allow);
        }
        if self.conn.get().is_none() {
            return Err(RateLimitError::NotConnected);
        }

        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Check {
                keys,
                weights,
                reply,
            })
            .map_err(|_| RateLimitError::Overloaded)?;
        let counts = match tokio::time::timeout(CHECK_TIMEOUT, answer).await {
            Ok(Ok(counts)) => counts?,
            Ok(Err(_)) => return Err(RateLimitError::NotConnected),
            Err(_) => return Err(RateLimitError::Timeout(CHECK_TIMEOUT)),
        };

        if counts
            .iter()
            .zip(&limits)
            .any(|(count, limit)| count > limit)
        {
            self.metrics.rate_limited.inc();
            let window_end = (window + 1) * self.window_secs;
            return Ok(Decision::Limit {
                retry_after: window_end.saturating_sub(now).max(1),
            });
        }
        Ok(Decision::Allow)
    }

    fn visitor_key(&self, visitor: &str, window: u64) -> String {
        visitor_key(&self.prefix, &self.salt, visitor, window)
    }

    fn ip_key(&self, ip: IpAddr, window: u64) -> String {
        ip_key(&self.prefix, &self.salt, ip, window)
    }

    fn warn_throttled(&self, now: u64, error: &RateLimitError) {
        let last = self.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= LOG_EVERY_SECS
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let action = match self.limits.failure_mode {
                FailureMode::Open => "letting requests through unchecked",
                FailureMode::Closed => "answering 503",
            };
            tracing::warn!(
                %error,
                "rate limiter unavailable; {action} (logged at most once a minute)"
            );
        }
    }

    /// Whether readiness depends on Redis: only when failing closed (failing open, the pod
    /// serves well without it).
    pub(crate) fn fails_closed(&self) -> bool {
        self.limits.failure_mode == FailureMode::Closed
    }

    /// `PING`, for readiness.
    pub(crate) async fn ping(&self) -> Result<(), RateLimitError> {
        let Some(conn) = self.conn.get() else {
            return Err(RateLimitError::NotConnected);
        };
        let mut conn = conn.clone();
        tokio::time::timeout(
            CHECK_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map_err(|_| RateLimitError::Timeout(CHECK_TIMEOUT))??;
        Ok(())
    }
}

/// Sends waiting checks to Redis, as many as are queued (up to [`MAX_CHECKS_PER_CALL`]) in one
/// script call, one call at a time. Ends when the limiter is dropped.
async fn send_checks(
    mut queue: mpsc::Receiver<Check>,
    conn: Arc<OnceLock<ConnectionManager>>,
    ttl: u64,
) {
    let script = Script::new(SCRIPT);
    let mut checks: Vec<Check> = Vec::with_capacity(MAX_CHECKS_PER_CALL);
    while queue.recv_many(&mut checks, MAX_CHECKS_PER_CALL).await > 0 {
        let result = match conn.get() {
            None => Err(RateLimitError::NotConnected),
            Some(conn) => {
                let mut invocation = script.prepare_invoke();
                for check in &checks {
                    for key in &check.keys {
                        invocation.key(key);
                    }
                }
                invocation.arg(ttl);
                for check in &checks {
                    for weight in &check.weights {
                        invocation.arg(*weight);
                    }
                }
                let mut conn = conn.clone();
                match tokio::time::timeout(
                    CHECK_TIMEOUT,
                    invocation.invoke_async::<Vec<u64>>(&mut conn),
                )
                .await
                {
                    Ok(Ok(counts)) => Ok(counts),
                    Ok(Err(error)) => Err(RateLimitError::from(error)),
                    Err(_) => Err(RateLimitError::Timeout(CHECK_TIMEOUT)),
                }
            }
        };
        match result {
            Ok(counts) => {
                let mut rest = counts.as_slice();
                for check in checks.drain(..) {
                    let n = check.keys.len().min(rest.len());
                    let (mine, others) = rest.split_at(n);
                    rest = others;
                    let _ = check.reply.send(if mine.len() == check.keys.len() {
                        Ok(mine.to_vec())
                    } else {
                        Err(RateLimitError::Redis(
                            "the rate-limit script returned too few counts".to_owned(),
                        ))
                    });
                }
            }
            Err(error) => {
                for check in checks.drain(..) {
                    let _ = check.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// `<prefix><window>:v:<salted hash>`: the visitor id itself never reaches Redis.
fn visitor_key(prefix: &str, salt: &[u8], visitor: &str, window: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(b":v:");
    hasher.update(visitor.as_bytes());
    format!("{prefix}{window}:v:{}", hex16(&hasher.finalize()))
}

/// `<prefix><window>:ip:<salted hash>`: the address itself never reaches Redis.
fn ip_key(prefix: &str, salt: &[u8], ip: IpAddr, window: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(b":ip:");
    match ip.to_canonical() {
        IpAddr::V4(v4) => hasher.update(v4.octets()),
        IpAddr::V6(v6) => hasher.update(v6.octets()),
    }
    format!("{prefix}{window}:ip:{}", hex16(&hasher.finalize()))
}

fn hex16(digest: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(32);
    for byte in digest.iter().take(16) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_keys_hold_a_salted_hash_not_the_address() {
        let prefix = "zori:{acme}:rl:";
        let v4: IpAddr = "203.0.113.7".parse().expect("ip");
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().expect("ip");
        let key = ip_key(prefix, b"salt-1", v4, 42);
        assert!(key.starts_with("zori:{acme}:rl:42:ip:"), "{key}");
        assert!(
            !key.contains("203.0.113.7") && !key.contains("cb007107"),
            "{key}"
        );
        assert_eq!(key.len(), "zori:{acme}:rl:42:ip:".len() + 32);
        assert_eq!(key, ip_key(prefix, b"salt-1", mapped, 42));
        assert_ne!(key, ip_key(prefix, b"salt-2", v4, 42));
        assert_ne!(key, ip_key(prefix, b"salt-1", v4, 43));
    }

    #[test]
    fn visitor_keys_hold_a_salted_hash_not_the_id() {
        let prefix = "zori:{acme}:rl:";
        let key = visitor_key(prefix, b"salt-1", "vis_1234", 7);
        assert!(key.starts_with("zori:{acme}:rl:7:v:"), "{key}");
        assert!(!key.contains("vis_1234"), "{key}");
        assert_eq!(key.len(), "zori:{acme}:rl:7:v:".len() + 32);
        assert_eq!(key, visitor_key(prefix, b"salt-1", "vis_1234", 7));
        assert_ne!(key, visitor_key(prefix, b"salt-2", "vis_1234", 7));
        assert_ne!(key, visitor_key(prefix, b"salt-1", "vis_1235", 7));
        assert_ne!(key, visitor_key(prefix, b"salt-1", "vis_1234", 8));
        let long = visitor_key(prefix, b"salt-1", &"v".repeat(4096), 7);
        assert_eq!(long.len(), key.len(), "bounded whatever the id's length");
    }
}
