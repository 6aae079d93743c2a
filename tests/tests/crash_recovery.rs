//! `zori-api` is killed with SIGKILL while events stream in, then restarted; every event is
//! also sent twice. The reports must still count each event and each visitor exactly once.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use zori_e2e::{page_view, session_id, visitor_id, Stack, SITE_ORIGIN};

const VISITORS: usize = 40;
const VIEWS_PER_VISITOR: usize = 10;

fn count_of(report: &Value, name: &str, field: &str) -> i64 {
    report["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .and_then(|r| r[field].as_i64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_stay_exact_across_a_crash_and_duplicates() {
    let mut stack = Stack::start("crash").await;
    let now = OffsetDateTime::now_utc();
    let visitors: Vec<(String, String)> = (0..VISITORS)
        .map(|_| (visitor_id(), session_id()))
        .collect();
    let events: Vec<Value> = (0..VIEWS_PER_VISITOR)
        .flat_map(|i| {
            visitors.iter().map(move |(visitor, session)| {
                page_view(
                    visitor,
                    session,
                    &format!("{SITE_ORIGIN}/page/{i}"),
                    None,
                    now - time::Duration::seconds(i as i64),
                )
            })
        })
        .collect();

    let total = events.len();
    for (n, event) in events.iter().enumerate() {
        for _attempt in 0..2 {
            let response = stack.track(event).await;
            assert_eq!(
                response.status(),
                200,
                "{}",
                response.text().await.unwrap_or_default()
            );
        }
        if n == total / 3 {
            stack.restart_api_hard().await;
        }
        if n == 2 * total / 3 {
            stack.api.kill();
        }
    }
    // Restart after the last kill: everything accepted while it was down must arrive.
    stack.restart_api_hard().await;

    // Exact counts from the events themselves (`exact=true`); the daily rollup's counts after
    // redeliveries are tested in dataplane/api/tests/rollups.rs.
    let range = format!(
        "from={}&to={}&exact=true",
        now.date() - time::Duration::days(1),
        now.date()
    );
    let report = stack
        .report_until(
            &format!("/api/v1/events?{range}"),
            Duration::from_secs(60),
            |r| count_of(r, "page_view", "count") >= total as i64,
        )
        .await;
    assert_eq!(
        count_of(&report, "page_view", "count"),
        total as i64,
        "{report:#}"
    );
    assert_eq!(
        count_of(&report, "page_view", "visitors"),
        VISITORS as i64,
        "{report:#}"
    );

    // Still exact a moment later (no late duplicates from redelivery).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let again = stack.report(&format!("/api/v1/events?{range}")).await;
    assert_eq!(
        count_of(&again, "page_view", "count"),
        total as i64,
        "{again:#}"
    );

    let channels = stack
        .report(&format!("/api/v1/attribution?dimension=channel&{range}"))
        .await;
    let direct_visitors = channels["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["value"] == "direct"))
        .and_then(|r| r["visitors"].as_i64());
    assert_eq!(direct_visitors, Some(VISITORS as i64), "{channels:#}");

    stack.tenant.cleanup().await;
}
