//! The tracker's delivery loop without a browser (dataplane/tracker/src/zori.js, "delivery"),
//! for fault tests that need many tabs' worth of traffic: every event waits in a queue until
//! the server acknowledged it. Enqueueing schedules a flush in 1 s, or flushes at once when 20
//! events wait; a flush sends the first 20 unless a request is on its way; a `2xx` (or a `4xx`
//! no retry can fix) removes that batch and flushes again; a network error, `429` or `5xx`
//! keeps it and retries after 2 s, 4 s, … 60 s (sooner if 20 events wait again). A retry
//! re-sends the same events, with the same ids.

use std::{future::Future, pin::Pin, time::Duration};

use serde_json::Value;
use tokio::time::{sleep_until, Instant};

use crate::Sender;

/// Events per request (`queue.slice(0, 20)`).
pub const BATCH: usize = 20;
/// Delay of a flush scheduled by an enqueue (`schedule(1e3)`).
const SCHEDULED_FLUSH: Duration = Duration::from_secs(1);

/// The backoff after `failures` failures in a row: `min(60 s, 2^failures s)`.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

type Request = Pin<Box<dyn Future<Output = Result<reqwest::Response, reqwest::Error>> + Send>>;

/// One tab running the tracker: creates `events` one every `every`, and delivers them the way
/// the tracker does until all are acknowledged (panics after `limit`). Returns every answer
/// that was not a `2xx`, as `(status or 0 for a network error, Retry-After)`.
pub async fn deliver(
    sender: Sender,
    events: Vec<Value>,
    every: Duration,
    limit: Duration,
) -> Vec<(u16, Option<String>)> {
    let started = Instant::now();
    let mut pending = events.into_iter().peekable();
    let mut next_event = started;
    let mut queue: Vec<Value> = Vec::new();
    let mut timer: Option<Instant> = None;
    let mut failures = 0u32;
    let mut in_flight: Option<(usize, Request)> = None;
    let mut answers = Vec::new();
    let mut flush_now = false;
    loop {
        if flush_now {
            // `flush()`: clears the timer; sends unless a request is on its way.
            flush_now = false;
            timer = None;
            if in_flight.is_none() && !queue.is_empty() {
                let batch: Vec<Value> = queue.iter().take(BATCH).cloned().collect();
                let sender = sender.clone();
                let size = batch.len();
                in_flight = Some((
                    size,
                    Box::pin(async move { sender.send_batch(&batch).await }),
                ));
            }
        }
        if pending.peek().is_none() && queue.is_empty() && in_flight.is_none() {
            return answers;
        }
        assert!(
            started.elapsed() < limit,
            "{} events still queued after {limit:?}; answers: {answers:?}",
            queue.len()
        );
        let has_request = in_flight.is_some();
        tokio::select! {
            result = async {
                match in_flight.as_mut() {
                    Some((_, request)) => request.await,
                    None => std::future::pending().await,
                }
            }, if has_request => {
                let Some((size, _)) = in_flight.take() else { continue };
                let status = result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                if status == 0 || status == 429 || status > 499 {
                    let retry_after = result.ok().and_then(|r| {
                        r.headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    });
                    answers.push((status, retry_after));
                    failures += 1;
                    timer = Some(Instant::now() + backoff(failures));
                } else {
                    if !(200..300).contains(&status) {
                        answers.push((status, None));
                    }
                    failures = 0;
                    queue.drain(..size);
                    flush_now = true;
                }
            }
            () = sleep_until(next_event), if pending.peek().is_some() => {
                if let Some(event) = pending.next() {
                    queue.push(event);
                }
                next_event += every;
                if queue.len() >= BATCH {
                    flush_now = true;
                } else if timer.is_none() {
                    timer = Some(Instant::now() + SCHEDULED_FLUSH);
                }
            }
            () = sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                flush_now = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_like_the_tracker() {
        let secs: Vec<u64> = (1..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
