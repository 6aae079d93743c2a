//! Several batches written at once (`--batches-in-flight`) against the real stores: batches
//! that share visitors commit in any order, and every event still counts once, every first
//! touch is still the earliest, and nothing is dead-lettered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{days_ago, page_view, range, row, session, visitor, Harness, DIRECT, TWITTER};

const VISITORS: usize = 30;
const VIEWS: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_batches_sharing_visitors_count_each_event_once() {
    // Batches of 20, four at once: every batch holds events of visitors the others hold too.
    let h = Harness::start_with(&["--batch-size", "20", "--batches-in-flight", "4"]).await;
    let people: Vec<(String, String)> = (0..VISITORS).map(|_| (visitor(), session())).collect();
    let mut messages = Vec::new();
    for i in 0..VIEWS {
        for (v, s) in &people {
            let at = days_ago(1) + time::Duration::minutes(i as i64);
            let from = if i == 0 { &TWITTER } else { &DIRECT };
            messages.push(page_view(v, s, at, &format!("/p/{i}"), from));
        }
    }
    // Latest first: the first touch arrives in the last batches.
    for m in messages.iter().rev() {
        h.publish(m, m.id()).await;
    }
    let total = (VISITORS * VIEWS) as i64;
    let events = h
        .until(&format!("/api/v1/events?{}", range(7)), |r| {
            row(r, "name", "page_view").and_then(|r| r["count"].as_i64()) >= Some(total)
        })
        .await;
    let page_views = row(&events, "name", "page_view").unwrap();
    assert_eq!(page_views["count"], total);
    assert_eq!(page_views["visitors"], VISITORS);
    h.drained().await;

    let twitter: i64 =
        sqlx::query_scalar("SELECT count(*) FROM visitors WHERE ft_source = 'twitter'")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(
        twitter, VISITORS as i64,
        "every first touch is the earliest"
    );
    let touches: i64 = sqlx::query_scalar("SELECT count(*) FROM touches")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(touches, VISITORS as i64, "one touch per session");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("zori_api_dead_letters_total 0"),
        "{metrics}"
    );
    let batches = metrics
        .lines()
        .find_map(|l| l.strip_prefix("zori_api_batches_total "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(batches >= (total / 20) as f64, "{batches} batches");
    h.cleanup().await;
}
