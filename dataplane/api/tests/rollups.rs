//! The daily rollups behind the dashboard reports, against the real services: a message
//! delivered several times counts once, the reports say their counts are estimates (and are
//! exact on request), filters the rollups cannot answer read the events, and the backfill of
//! existing events gives what the consumer wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{days_ago, event, page_view, range, row, session, visitor, Harness, GOOGLE, TWITTER};
use serde_json::Value;
use zori_core::event::StreamMessage;

fn count(report: &Value, key: &str, value: &str, field: &str) -> i64 {
    row(report, key, value)
        .and_then(|r| r[field].as_i64())
        .unwrap_or(-1)
}

/// Two visitors: v1 from Twitter (a page view and a click on day -1), v2 from Google (a page
/// view on day -2).
fn messages() -> Vec<StreamMessage> {
    let (v1, v2) = (visitor(), visitor());
    let (s1, s2) = (session(), session());
    vec![
        page_view(&v1, &s1, days_ago(1), "/", &TWITTER),
        StreamMessage::Event(event(
            "click",
            &v1,
            &s1,
            days_ago(1) + time::Duration::seconds(5),
            "/",
            &TWITTER,
        )),
        page_view(&v2, &s2, days_ago(2), "/pricing", &GOOGLE),
    ]
}

/// What the reports answer for [`messages`], exact or not.
async fn assert_reports(h: &Harness, extra: &str, approximate: bool) {
    let q = format!("{}{extra}", range(7));
    let events = h.report(&format!("/api/v1/events?{q}")).await;
    assert_eq!(events["approximate"], approximate, "{events:#}");
    assert_eq!(
        count(&events, "name", "page_view", "count"),
        2,
        "{events:#}"
    );
    assert_eq!(count(&events, "name", "page_view", "visitors"), 2);
    assert_eq!(count(&events, "name", "click", "count"), 1, "{events:#}");
    let pages = h.report(&format!("/api/v1/pages?{q}")).await;
    assert_eq!(pages["approximate"], approximate);
    assert_eq!(count(&pages, "path", "/", "views"), 1, "{pages:#}");
    assert_eq!(count(&pages, "path", "/pricing", "views"), 1, "{pages:#}");
    assert_eq!(pages["rows"].as_array().unwrap().len(), 2);

    let overview = h.report(&format!("/api/v1/overview?{q}")).await;
    assert_eq!(
        overview["visitors_approximate"], approximate,
        "{overview:#}"
    );
    assert_eq!(overview["visitors"], 2, "{overview:#}");
    let attribution = h
        .report(&format!("/api/v1/attribution?dimension=source&{q}"))
        .await;
    assert_eq!(attribution["visitors_approximate"], approximate);
    assert_eq!(attribution["totals"]["visitors"], 2, "{attribution:#}");
    assert_eq!(count(&attribution, "value", "twitter", "visitors"), 1);
    assert_eq!(count(&attribution, "value", "google.com", "visitors"), 1);
    let landing = h
        .report(&format!("/api/v1/attribution?dimension=landing_page&{q}"))
        .await;
    assert_eq!(
        count(&landing, "value", "/pricing", "visitors"),
        1,
        "{landing:#}"
    );
    let devices = h.report(&format!("/api/v1/devices?{q}")).await;
    assert_eq!(devices["totals"]["visitors"], 2, "{devices:#}");
    let twitter_only = h
        .report(&format!("/api/v1/overview?channel=paid_social&{q}"))
        .await;
    assert_eq!(twitter_only["visitors"], 1, "{twitter_only:#}");
    let timeseries = h.report(&format!("/api/v1/timeseries?{q}")).await;
    assert_eq!(timeseries["visitors_approximate"], approximate);
    let per_day: Vec<i64> = timeseries["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["visitors"].as_i64().unwrap())
        .collect();
    assert_eq!(per_day.iter().sum::<i64>(), 2, "{timeseries:#}");
    assert_eq!(per_day[per_day.len() - 2], 1, "v1 on day -1: {per_day:?}");
    assert_eq!(per_day[per_day.len() - 3], 1, "v2 on day -2: {per_day:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_delivered_three_times_counts_once_in_the_rollups() {
    let h = Harness::start().await;
    let messages = messages();
    for m in &messages {
        h.publish(m, m.id()).await;
    }
    h.until(&format!("/api/v1/events?{}", range(7)), |r| {
        count(r, "name", "page_view", "count") == 2 && count(r, "name", "click", "count") == 1
    })
    .await;
    h.drained().await;
    // Redelivered after the stream's dedup window: new Nats-Msg-Ids, later batches. Every copy
    // goes through the consumer again and into the rollups' feeds.
    for m in &messages {
        h.publish(m, &format!("{}-retry", m.id())).await;
        h.publish(m, &format!("{}-retry-2", m.id())).await;
    }
    h.drained().await;
    let stored: u32 = h
        .clickhouse("SELECT count() FROM events")
        .await
        .parse()
        .unwrap();
    assert!(stored > 3, "the copies reached ClickHouse: {stored}");

    assert_reports(&h, "", true).await;
    assert_reports(&h, "&exact=true", false).await;
    // In the rollups themselves: three events, two visitors.
    assert_eq!(
        h.clickhouse("SELECT uniqHLL12Merge(events) FROM events_daily")
            .await,
        "3"
    );
    assert_eq!(
        h.clickhouse("SELECT uniqMerge(visitors) FROM visitors_daily")
            .await,
        "2"
    );

    // A first-touch filter on a behaviour report reads the events (exact).
    let pages = h
        .report(&format!("/api/v1/pages?channel=paid_social&{}", range(7)))
        .await;
    assert_eq!(pages["approximate"], false, "{pages:#}");
    assert_eq!(pages["rows"].as_array().unwrap().len(), 1, "{pages:#}");
    assert_eq!(pages["rows"][0]["path"], "/");
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backfill_of_existing_events_matches_what_the_consumer_rolled_up() {
    let h = Harness::start().await;
    let messages = messages();
    for m in &messages {
        h.publish(m, m.id()).await;
    }
    h.until(&format!("/api/v1/events?{}", range(7)), |r| {
        count(r, "name", "page_view", "count") == 2
    })
    .await;
    h.drained().await;
    let snapshot = "SELECT day, channel, source, medium, campaign, referrer, landing_page, \
                    country, device, uniqMerge(visitors) FROM visitors_daily \
                    GROUP BY day, channel, source, medium, campaign, referrer, landing_page, \
                    country, device ORDER BY day, source FORMAT TSV";
    let events_snapshot = "SELECT day, name, page_path, country, device, \
                           uniqHLL12Merge(events), uniqHLL12Merge(visitors) FROM events_daily \
                           GROUP BY day, name, page_path, country, device \
                           ORDER BY day, name, page_path FORMAT TSV";
    let fed = h.clickhouse(snapshot).await;
    let fed_events = h.clickhouse(events_snapshot).await;
    assert_eq!(fed.lines().count(), 2, "{fed}");

    // As for a tenant whose events predate the rollups: empty them, run the backfill steps.
    h.clickhouse("TRUNCATE TABLE visitors_daily").await;
    h.clickhouse("TRUNCATE TABLE events_daily").await;
    assert_eq!(h.clickhouse(snapshot).await, "");
    for (_, name, sql) in zori_api::rollup::CH_MIGRATIONS {
        if name.ends_with("_backfill") {
            h.clickhouse(sql).await;
        }
    }
    assert_eq!(h.clickhouse(snapshot).await, fed);
    assert_eq!(h.clickhouse(events_snapshot).await, fed_events);
    assert_reports(&h, "", true).await;
    h.cleanup().await;
}
