//! `zori-api` against the real services: stream → ClickHouse + PostgreSQL → reports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{
    days_ago, event, identify, insert_payment, net, page_view, range, row, session, visitor,
    Harness, DIRECT, GOOGLE, TWITTER,
};
use serde_json::{json, Value};
use zori_core::event::StreamMessage;

fn count(report: &Value, name: &str, field: &str) -> i64 {
    row(report, "name", name)
        .and_then(|r| r[field].as_i64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn events_land_in_clickhouse_and_visitors_in_postgres() {
    let h = Harness::start().await;
    let (v1, v2) = (visitor(), visitor());
    let (s1, s2) = (session(), session());
    let messages = [
        page_view(&v1, &s1, days_ago(2), "/", &TWITTER),
        page_view(
            &v1,
            &s1,
            days_ago(2) + time::Duration::minutes(1),
            "/pricing",
            &DIRECT,
        ),
        page_view(&v2, &s2, days_ago(1), "/features", &GOOGLE),
    ];
    for m in &messages {
        h.publish(m, m.id()).await;
    }
    let events = h
        .until(&format!("/api/v1/events?{}", range(7)), |r| {
            count(r, "page_view", "count") == 3
        })
        .await;
    assert_eq!(count(&events, "page_view", "visitors"), 2);
    assert_eq!(
        row(&events, "name", "page_view").unwrap()["automatic"],
        true
    );

    // ClickHouse holds every field, no IP, no email.
    let ch = h
        .clickhouse("SELECT event_id, visitor_id, page_path, referrer_host, utm_source, channel, country FROM events ORDER BY occurred_ms FORMAT JSONEachRow")
        .await;
    let rows: Vec<Value> = ch
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["utm_source"], "twitter");
    assert_eq!(rows[0]["channel"], "paid_social");
    assert_eq!(rows[2]["referrer_host"], "google.com");
    let columns = h.clickhouse("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'events' FORMAT TSV").await;
    assert!(
        !columns.lines().any(|c| c == "ip" || c.contains("email")),
        "{columns}"
    );

    // PostgreSQL: visitors with first touch, one touch per session, days.
    let attribution = h
        .until(
            &format!("/api/v1/attribution?dimension=source&{}", range(7)),
            |r| r["totals"]["visitors"] == 2,
        )
        .await;
    assert_eq!(
        row(&attribution, "value", "twitter").unwrap()["visitors"],
        1
    );
    assert_eq!(
        row(&attribution, "value", "google.com").unwrap()["visitors"],
        1
    );
    let (source, landing, ft_session): (String, String, String) = sqlx::query_as(
        "SELECT ft_source, ft_landing_page, ft_session_id FROM visitors WHERE visitor_id = $1",
    )
    .bind(&v1)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!((source.as_str(), landing.as_str()), ("twitter", "/"));
    assert_eq!(ft_session, s1);
    let touches: i64 = sqlx::query_scalar("SELECT count(*) FROM touches")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(touches, 2, "one touch per session");
    let days: i64 = sqlx::query_scalar("SELECT count(*) FROM visitor_days")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(days, 2);

    let pages = h
        .report(&format!("/api/v1/pages?{}&limit=2", range(7)))
        .await;
    assert_eq!(pages["rows"].as_array().unwrap().len(), 2);
    let timeseries = h.report(&format!("/api/v1/timeseries?{}", range(6))).await;
    let days = timeseries["days"].as_array().unwrap();
    assert_eq!(days.len(), 7, "zero-filled");
    let total: i64 = days.iter().map(|d| d["visitors"].as_i64().unwrap()).sum();
    assert_eq!(total, 2);

    let metrics = h.metrics().await;
    assert!(metrics.contains("zori_api_batches_total"), "{metrics}");
    assert!(
        metrics.contains("zori_api_rows_written_total{table=\"visitors\"}"),
        "{metrics}"
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_published_twice_counts_once_everywhere() {
    let h = Harness::auditing_every_round().await;
    let v = visitor();
    let s = session();
    let view = page_view(&v, &s, days_ago(1), "/", &TWITTER);
    let mut click = event(
        "click",
        &v,
        &s,
        days_ago(1) + time::Duration::seconds(5),
        "/",
        &DIRECT,
    );
    click.properties.insert("button".into(), json!("buy"));
    let click = StreamMessage::Event(click);
    for m in [&view, &click] {
        h.publish(m, m.id()).await;
    }
    h.until(&format!("/api/v1/events?{}", range(3)), |r| {
        count(r, "page_view", "count") == 1 && count(r, "click", "count") == 1
    })
    .await;
    // The client retried after the stream's dedup window: same events, new Nats-Msg-Ids, in
    // later batches.
    for m in [&view, &click] {
        h.publish(m, &format!("{}-retry", m.id())).await;
        h.publish(m, &format!("{}-retry-2", m.id())).await;
    }
    h.drained().await;
    // A first delivery is inserted without a look-up: the copies are rows of `events` until
    // merges, counted by the rollup's view until the audit of their day takes them out again.
    let events = h
        .until(&format!("/api/v1/events?{}", range(3)), |r| {
            count(r, "page_view", "count") == 1 && count(r, "click", "count") == 1
        })
        .await;
    assert_eq!(count(&events, "page_view", "count"), 1, "{events:#}");
    assert_eq!(count(&events, "click", "count"), 1, "{events:#}");
    assert_eq!(count(&events, "click", "visitors"), 1);
    let pages = h.report(&format!("/api/v1/pages?{}", range(3))).await;
    assert_eq!(pages["rows"][0]["views"], 1, "{pages:#}");
    let props = h
        .report(&format!(
            "/api/v1/events/click/properties/button?{}",
            range(3)
        ))
        .await;
    assert_eq!(props["rows"][0]["count"], 1, "{props:#}");
    let attribution = h
        .report(&format!(
            "/api/v1/attribution?dimension=source&{}",
            range(3)
        ))
        .await;
    assert_eq!(attribution["totals"]["visitors"], 1);
    let journey = h.report(&format!("/api/v1/visitors/{v}/journey")).await;
    assert_eq!(
        journey["events"].as_array().unwrap().len(),
        2,
        "{journey:#}"
    );
    assert_eq!(journey["touches"].as_array().unwrap().len(), 1);
    assert_eq!(journey["sessions"][0]["events"], 2);
    assert_eq!(journey["sessions"][0]["page_views"], 1);
    let overview = h.report(&format!("/api/v1/overview?{}", range(3))).await;
    assert_eq!(overview["visitors"], 1);
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_earliest_touch_wins_when_a_later_event_arrives_first() {
    let h = Harness::start().await;
    let v = visitor();
    let later = page_view(&v, &session(), days_ago(1), "/features", &GOOGLE);
    h.publish(&later, later.id()).await;
    // Exact counts: the rollup behind the default ones keeps a visitor under the first touch
    // it had on the days already rolled up (tested in rollups.rs).
    let path = format!(
        "/api/v1/attribution?dimension=source&exact=true&{}",
        range(10)
    );
    h.until(&path, |r| row(r, "value", "google.com").is_some())
        .await;

    let earlier = page_view(&v, &session(), days_ago(5), "/", &TWITTER);
    h.publish(&earlier, earlier.id()).await;
    let report = h
        .until(&path, |r| row(r, "value", "twitter").is_some())
        .await;
    assert!(row(&report, "value", "google.com").is_none(), "{report:#}");
    assert_eq!(report["totals"]["visitors"], 1);

    // Redelivering the later event again changes nothing.
    h.publish(&later, &format!("{}-again", later.id())).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let journey = h.report(&format!("/api/v1/visitors/{v}/journey")).await;
    assert_eq!(journey["first_touch"]["source"], "twitter", "{journey:#}");
    assert_eq!(journey["visitor"]["first_touch"]["landing_page"], "/");
    let sources: Vec<&str> = journey["touches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["twitter", "google.com"]);
    let campaigns = h
        .report(&format!(
            "/api/v1/attribution?dimension=campaign&{}",
            range(10)
        ))
        .await;
    assert!(
        row(&campaigns, "value", "launch").is_some(),
        "{campaigns:#}"
    );
    h.cleanup().await;
}

/// The tracker reports a session's end on the next visit: that page's URL and referrer with
/// the old session's time. It must never become the first touch, in either arrival order.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_end_never_becomes_the_first_touch() {
    let h = Harness::start().await;
    // Exact counts: the rollup behind the default ones keeps a visitor under the first touch
    // it had on the days already rolled up (tested in rollups.rs).
    let path = format!(
        "/api/v1/attribution?dimension=source&exact=true&{}",
        range(10)
    );
    for arrival_first in [true, false] {
        let v = visitor();
        let arrival = page_view(&v, &session(), days_ago(1), "/pricing", &TWITTER);
        let StreamMessage::Event(mut end) =
            page_view(&v, &session(), days_ago(3), "/blog", &GOOGLE)
        else {
            unreachable!("page_view builds an event")
        };
        end.name = "session_end".to_owned();
        let end = StreamMessage::Event(end);
        let (first, second) = if arrival_first {
            (&arrival, &end)
        } else {
            (&end, &arrival)
        };
        h.publish(first, first.id()).await;
        h.drained().await;
        h.publish(second, second.id()).await;
        h.drained().await;
        let journey = h.report(&format!("/api/v1/visitors/{v}/journey")).await;
        assert_eq!(
            journey["visitor"]["first_touch"]["source"], "twitter",
            "arrival first: {arrival_first}: {journey:#}"
        );
        assert_eq!(
            journey["visitor"]["first_touch"]["landing_page"],
            "/pricing"
        );
    }
    let report = h.report(&path).await;
    assert!(row(&report, "value", "google.com").is_none(), "{report:#}");
    assert_eq!(
        row(&report, "value", "twitter").map(|r| r["visitors"].clone()),
        Some(json!(2))
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identify_links_visitors_and_the_user_keeps_the_earliest_first_touch() {
    let h = Harness::start().await;
    // Laptop: first came from the Twitter ad. Phone: later, from Google; pays there.
    let (laptop, phone) = (visitor(), visitor());
    let messages = [
        page_view(&laptop, &session(), days_ago(9), "/", &TWITTER),
        page_view(&phone, &session(), days_ago(3), "/features", &GOOGLE),
    ];
    for m in &messages {
        h.publish(m, m.id()).await;
    }
    let email_hash = zori_core::email::hash("jane@example.com", &h.salt);
    for m in [
        identify(&laptop, Some("user-42"), Some(&email_hash), days_ago(9)),
        identify(&phone, Some("user-42"), None, days_ago(2)),
    ] {
        h.publish(&m, m.id()).await;
    }
    let journey_path = format!("/api/v1/visitors/{phone}/journey");
    let journey = h
        .until(&journey_path, |j| {
            j["identity"]["visitor_ids"]
                .as_array()
                .is_some_and(|v| v.len() == 2)
                && j["touches"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    assert_eq!(journey["identity"]["app_id"], "user-42");
    assert_eq!(journey["identity"]["fullname"], "Jane Doe");
    assert_eq!(journey["first_touch"]["source"], "twitter", "{journey:#}");
    assert_eq!(journey["visitor"]["first_touch"]["source"], "google.com");

    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(users, 1);

    // Paid on the phone: credited to the user's earliest first touch (Twitter).
    insert_payment(&h.pool, days_ago(1), 9900, "usd", 0, Some(&phone), None).await;
    // Paid with no visitor id, matched by email: also the user's.
    insert_payment(
        &h.pool,
        days_ago(1),
        1000,
        "usd",
        0,
        None,
        Some(&email_hash),
    )
    .await;
    // Visitor counts come from the rollup, written just after each batch's PostgreSQL side.
    let report = h
        .until(
            &format!("/api/v1/attribution?dimension=source&{}", range(14)),
            |r| row(r, "value", "google.com").is_some_and(|g| g["visitors"] == 1),
        )
        .await;
    assert_eq!(
        net(row(&report, "value", "twitter"), "usd"),
        10900,
        "{report:#}"
    );
    assert_eq!(
        net(row(&report, "value", "google.com"), "usd"),
        0,
        "{report:#}"
    );
    assert_eq!(row(&report, "value", "twitter").unwrap()["customers"], 1);
    assert_eq!(row(&report, "value", "google.com").unwrap()["visitors"], 1);
    assert_eq!(report["unattributed"]["payments"], 0);
    assert_eq!(report["totals"]["customers"], 1);

    let journey = h.report(&journey_path).await;
    let payments = journey["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 2, "{journey:#}");
    assert_eq!(payments[0]["matched_by"], "visitor");

    // Replaying the identifies changes nothing.
    for m in [
        identify(&laptop, Some("user-42"), Some(&email_hash), days_ago(9)),
        identify(&phone, Some("user-42"), None, days_ago(2)),
    ] {
        h.publish(&m, &format!("{}-replay", m.id())).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unverified_identify_is_kept_apart_and_moves_nothing() {
    let h = Harness::start().await;
    // Jane came from Twitter; the attacker's visitor has an older first touch (Google).
    let (laptop, attacker) = (visitor(), visitor());
    for m in [
        page_view(&laptop, &session(), days_ago(3), "/", &TWITTER),
        page_view(&attacker, &session(), days_ago(9), "/", &GOOGLE),
    ] {
        h.publish(&m, m.id()).await;
    }
    let jane = identify(&laptop, Some("user-42"), None, days_ago(3));
    h.publish(&jane, jane.id()).await;
    // What ingest publishes for an identify it could not verify (mode `ignore`).
    let StreamMessage::Identify(mut claim) =
        identify(&attacker, Some("user-42"), None, days_ago(1))
    else {
        unreachable!()
    };
    claim.fullname = Some("Mallory".to_owned());
    claim.proof = zori_core::identity::IdentityProof::Unsigned;
    let claim = StreamMessage::Identify(claim);
    h.publish(&claim, claim.id()).await;
    h.publish(&claim, &format!("{}-redelivered", claim.id()))
        .await;

    let kept = || async {
        sqlx::query_as::<_, (String, Option<String>, Option<String>)>(
            "SELECT visitor_id, app_id, fullname FROM unverified_identifies",
        )
        .fetch_all(&h.pool)
        .await
        .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while kept().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the claim was never kept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let journey_path = format!("/api/v1/visitors/{laptop}/journey");
    let journey = h
        .until(&journey_path, |j| j["identity"]["app_id"] == "user-42")
        .await;
    assert_eq!(
        journey["identity"]["visitor_ids"],
        json!([laptop]),
        "{journey:#}"
    );
    assert_eq!(journey["identity"]["fullname"], "Jane Doe");
    assert_eq!(journey["first_touch"]["source"], "twitter", "{journey:#}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        kept().await,
        [(
            attacker.clone(),
            Some("user-42".to_owned()),
            Some("Mallory".to_owned())
        )],
        "kept once, redelivery included"
    );
    let linked: i64 = sqlx::query_scalar("SELECT count(*) FROM identities WHERE visitor_id = $1")
        .bind(&attacker)
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(linked, 0);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn payments_are_credited_to_first_touch_and_unattributed_stays_separate() {
    let h = Harness::start().await;
    let (ad, direct) = (visitor(), visitor());
    for m in [
        page_view(&ad, &session(), days_ago(6), "/", &TWITTER),
        page_view(&direct, &session(), days_ago(6), "/", &DIRECT),
    ] {
        h.publish(&m, m.id()).await;
    }
    let path = format!("/api/v1/attribution?dimension=channel&{}", range(10));
    h.until(&path, |r| r["totals"]["visitors"] == 2).await;

    insert_payment(&h.pool, days_ago(1), 9900, "usd", 900, Some(&ad), None).await;
    insert_payment(&h.pool, days_ago(1), 2000, "usd", 0, Some(&direct), None).await;
    // No visitor at all, and a visitor id never seen: unattributed, not direct.
    insert_payment(&h.pool, days_ago(1), 5000, "usd", 0, None, None).await;
    insert_payment(
        &h.pool,
        days_ago(1),
        700,
        "usd",
        0,
        Some("vis_unknown"),
        None,
    )
    .await;
    // Outside the range: ignored.
    insert_payment(&h.pool, days_ago(40), 100_000, "usd", 0, Some(&ad), None).await;

    let report = h.report(&path).await;
    let paid_social = row(&report, "value", "paid_social").unwrap();
    assert_eq!(net(Some(paid_social), "usd"), 9000, "{report:#}");
    assert_eq!(paid_social["revenue"][0]["gross"], 9900);
    assert_eq!(paid_social["revenue"][0]["refunded"], 900);
    assert_eq!(paid_social["revenue"][0]["formatted"], "90.00");
    assert_eq!(paid_social["customers"], 1);
    assert_eq!(paid_social["conversion_rate"], 1.0);
    assert_eq!(paid_social["revenue_per_visitor"][0]["formatted"], "90.00");
    assert_eq!(
        net(row(&report, "value", "direct"), "usd"),
        2000,
        "{report:#}"
    );
    let unattributed = &report["unattributed"];
    assert_eq!(unattributed["payments"], 2, "{report:#}");
    assert_eq!(unattributed["customers"], 2);
    assert_eq!(unattributed["revenue"][0]["net"], 5700);
    assert_eq!(report["totals"]["revenue"][0]["net"], 16700);
    assert_eq!(report["totals"]["payments"], 4);
    let share = paid_social["revenue_share"][0]["share"].as_f64().unwrap();
    assert!((share - 9000.0 / 16700.0).abs() < 1e-9);

    let overview = h.report(&format!("/api/v1/overview?{}", range(10))).await;
    assert_eq!(overview["visitors"], 2);
    assert_eq!(overview["customers"], 4);
    assert_eq!(overview["unattributed"]["revenue"][0]["net"], 5700);
    assert_eq!(overview["revenue"][0]["net"], 16700);

    let sources = h
        .report(&format!(
            "/api/v1/attribution?dimension=source&{}",
            range(10)
        ))
        .await;
    assert_eq!(
        net(row(&sources, "value", "(direct)"), "usd"),
        2000,
        "{sources:#}"
    );
    let referrers = h
        .report(&format!(
            "/api/v1/attribution?dimension=referrer&{}",
            range(10)
        ))
        .await;
    assert_eq!(
        net(row(&referrers, "value", "t.co"), "usd"),
        9000,
        "{referrers:#}"
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn currencies_are_never_summed() {
    let h = Harness::start().await;
    let v = visitor();
    let m = page_view(&v, &session(), days_ago(3), "/", &TWITTER);
    h.publish(&m, m.id()).await;
    let path = format!("/api/v1/attribution?dimension=source&{}", range(7));
    h.until(&path, |r| row(r, "value", "twitter").is_some())
        .await;
    insert_payment(&h.pool, days_ago(1), 9900, "usd", 0, Some(&v), None).await;
    insert_payment(&h.pool, days_ago(1), 5000, "eur", 0, Some(&v), None).await;
    insert_payment(&h.pool, days_ago(1), 1200, "jpy", 0, Some(&v), None).await;

    let report = h.report(&path).await;
    let twitter = row(&report, "value", "twitter").unwrap();
    let revenue = twitter["revenue"].as_array().unwrap();
    let by_currency: Vec<(&str, i64, &str)> = revenue
        .iter()
        .map(|m| {
            (
                m["currency"].as_str().unwrap(),
                m["net"].as_i64().unwrap(),
                m["formatted"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_currency,
        [
            ("eur", 5000, "50.00"),
            ("jpy", 1200, "1200"),
            ("usd", 9900, "99.00")
        ],
        "{report:#}"
    );
    assert_eq!(twitter["customers"], 1);
    assert_eq!(twitter["payments"], 3);
    assert_eq!(report["totals"]["revenue"].as_array().unwrap().len(), 3);

    let series = h.report(&format!("/api/v1/timeseries?{}", range(2))).await;
    assert_eq!(series["currencies"], json!(["eur", "jpy", "usd"]));
    for day in series["days"].as_array().unwrap() {
        assert_eq!(
            day["revenue"].as_array().unwrap().len(),
            3,
            "zero-filled currencies"
        );
    }
    let day = &series["days"][1];
    assert_eq!(day["payments"], 3, "{series:#}");
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_message_is_dead_lettered_and_does_not_block_the_stream() {
    let h = Harness::start().await;
    h.publish_raw(Bytes::from_static(b"{not json"), "garbage-1")
        .await;
    let v = visitor();
    let good = page_view(&v, &session(), days_ago(1), "/", &DIRECT);
    h.publish(&good, good.id()).await;
    h.until(&format!("/api/v1/events?{}", range(3)), |r| {
        count(r, "page_view", "count") == 1
    })
    .await;

    let stream = h.js.get_stream(&h.subjects.stream).await.unwrap();
    let dead = stream
        .get_last_raw_message_by_subject(&h.subjects.dead_letter)
        .await
        .expect("a dead letter");
    assert_eq!(dead.payload.as_ref(), b"{not json");
    let headers = dead.headers;
    let reason = headers
        .get("Zori-Dead-Letter-Reason")
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(reason.starts_with("undecodable stream message"), "{reason}");
    assert_eq!(
        headers.get("Zori-Original-Subject").map(|v| v.to_string()),
        Some(h.subjects.ingress.clone())
    );
    assert_eq!(
        headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.to_string()),
        Some("dead-1".to_owned())
    );
    h.drained().await;
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("zori_api_dead_letters_total 1"),
        "{metrics}"
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_failing_alone_is_retried_then_dead_lettered() {
    let h = Harness::start().await;
    let v = visitor();
    let s = session();
    // A visitor id far beyond what a PostgreSQL index entry holds: ClickHouse takes it,
    // PostgreSQL refuses it every time while answering pings.
    let huge: String = common::random(40_000);
    let mut poison = event("poison", &huge, &s, days_ago(1), "/", &DIRECT);
    poison.id = "poison-1".to_owned();
    // Good messages around it, in the same batch.
    for i in 0..4 {
        let good = page_view(
            &v,
            &s,
            days_ago(1) + time::Duration::seconds(i),
            "/",
            &DIRECT,
        );
        h.publish(&good, good.id()).await;
    }
    h.publish(&StreamMessage::Event(poison), "poison-1").await;
    for i in 4..9 {
        let good = page_view(
            &v,
            &s,
            days_ago(1) + time::Duration::seconds(i),
            "/",
            &DIRECT,
        );
        h.publish(&good, good.id()).await;
    }

    // The good messages are written at once (ClickHouse may hold copies of the failed halves'
    // rows; counts stay exact).
    h.until(
        &format!("/api/v1/attribution?dimension=source&{}", range(3)),
        |r| r["totals"]["visitors"] == 1,
    )
    .await;
    // PostgreSQL and ClickHouse are written side by side: the first may commit before the
    // second shows the rows, so wait for ClickHouse too.
    let events = h
        .until(&format!("/api/v1/events?{}", range(3)), |r| {
            count(r, "page_view", "count") >= 9
        })
        .await;
    assert_eq!(count(&events, "page_view", "count"), 9, "{events:#}");
    // NAKed with 2 s then 4 s delays, dead-lettered on its third delivery.
    let stream = h.js.get_stream(&h.subjects.stream).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        if let Ok(dead) = stream
            .get_last_raw_message_by_subject(&h.subjects.dead_letter)
            .await
        {
            break dead;
        }
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let header = |name: &str| dead.headers.get(name).map(|v| v.to_string());
    let reason = header("Zori-Dead-Letter-Reason").unwrap_or_default();
    assert!(reason.contains("PostgreSQL"), "{reason}");
    assert_eq!(header("Zori-Delivered").as_deref(), Some("3"));
    assert_eq!(header("Zori-Original-Msg-Id").as_deref(), Some("poison-1"));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("zori_api_dead_letters_total 1"),
        "{metrics}"
    );
    h.drained().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_outage_holds_the_batch_without_burning_deliveries() {
    let proxy = common::Proxy::start("127.0.0.1:8123").await;
    let h = Harness::start_with(&["--clickhouse-url", &proxy.url, "--ack-wait", "3s"]).await;
    proxy.set_up(false);
    let v = visitor();
    let s = session();
    for i in 0..3 {
        let m = page_view(
            &v,
            &s,
            days_ago(1) + time::Duration::seconds(i),
            "/",
            &DIRECT,
        );
        h.publish(&m, m.id()).await;
    }
    // Held for more than twice the ack wait: the deadline is extended, nothing is redelivered.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (status, body) = h.get("/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.as_str().unwrap_or_default().contains("clickhouse"),
        "{body}"
    );
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM visitors")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(written, 0, "nothing is written while ClickHouse is down");

    proxy.set_up(true);
    h.until(&format!("/api/v1/events?{}", range(3)), |r| {
        count(r, "page_view", "count") == 3
    })
    .await;
    h.drained().await;
    let stream = h.js.get_stream(&h.subjects.stream).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("zori-api").await.unwrap();
    let info = consumer.info().await.unwrap().clone();
    assert_eq!(
        info.delivered.consumer_sequence, 3,
        "each message delivered once: {info:?}"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("zori_api_dead_letters_total 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("outcome=\"nacked\""), "{metrics}");
    assert!(
        !metrics.contains("zori_api_batch_failures_total 0"),
        "{metrics}"
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_reject_a_wrong_token_and_bad_parameters() {
    let h = Harness::start().await;
    let (status, body) = h.get("/api/v1/overview", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = h
        .get("/api/v1/overview", Some("wrong-token-wrong-token"))
        .await;
    assert_eq!(status, 401);
    let almost = format!("{}x", h.token);
    let (status, _) = h.get("/api/v1/attribution", Some(&almost)).await;
    assert_eq!(status, 401);
    let (status, _) = h.get("/api/v1/nope", None).await;
    assert_eq!(status, 401, "unknown reports need the token too");

    let token = h.token.clone();
    let cases: &[(&str, &str)] = &[
        ("/api/v1/attribution?dimension=planet", "dimension"),
        ("/api/v1/attribution?from=2025-02-30", "from"),
        ("/api/v1/overview?to=tomorrow", "to"),
        ("/api/v1/timeseries?from=2025-03-02&to=2025-03-01", "from"),
        ("/api/v1/pages?limit=0", "limit"),
        ("/api/v1/pages?limit=ten", "limit"),
        ("/api/v1/events?from=2025-01-01&from=2025-01-02", "from"),
        ("/api/v1/attribution?livemode=maybe", "livemode"),
        ("/api/v1/timeseries?from=1900-01-01&to=2025-01-01", "to"),
    ];
    for (path, param) in cases {
        let (status, body) = h.get(path, Some(&token)).await;
        assert_eq!(status, 400, "{path}: {body:#}");
        assert_eq!(body["error"]["param"], *param, "{path}: {body:#}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(param),
            "{path}: {body:#}"
        );
    }
    let (status, body) = h
        .get(
            &format!("/api/v1/visitors/{}/journey", "x".repeat(300)),
            Some(&token),
        )
        .await;
    assert_eq!(status, 400, "{body:#}");
    assert_eq!(body["error"]["param"], "visitor_id");
    let (status, body) = h
        .get("/api/v1/visitors/vis_nobody/journey", Some(&token))
        .await;
    assert_eq!(status, 200, "unknown yet is not an error: {body:#}");
    assert_eq!(body["known"], false);
    let (status, _) = h.get("/api/v1/nope", Some(&token)).await;
    assert_eq!(status, 404);
    let (status, _) = h.get("/healthz", None).await;
    assert_eq!(status, 200);
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_properties_are_stored_and_queryable() {
    let h = Harness::start().await;
    let v = visitor();
    let s = session();
    let props = [
        json!({"plan": "pro", "seats": 3}),
        json!({"plan": "pro", "seats": 5}),
        json!({"plan": "free"}),
        json!({"meta": {"plan": "nested, not top-level"}}),
        json!({"plan": "quote \" and \\ backslash"}),
    ];
    for (i, p) in props.iter().enumerate() {
        let mut e = event(
            "signup",
            &v,
            &s,
            days_ago(1) + time::Duration::seconds(i as i64),
            "/signup",
            &DIRECT,
        );
        e.properties = p.as_object().unwrap().clone();
        let m = StreamMessage::Event(e);
        h.publish(&m, m.id()).await;
    }
    let base = format!("/api/v1/events/signup/properties/plan?{}", range(3));
    let report = h
        .until(&base, |r| {
            r["rows"].as_array().is_some_and(|rows| rows.len() == 3)
        })
        .await;
    let rows: Vec<(Value, i64)> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["value"].clone(), r["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [
            (json!("pro"), 2),
            (json!("free"), 1),
            (json!("quote \" and \\ backslash"), 1)
        ],
        "{report:#}"
    );
    let seats = h
        .report(&format!(
            "/api/v1/events/signup/properties/seats?{}",
            range(3)
        ))
        .await;
    let values: Vec<Value> = seats["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].clone())
        .collect();
    assert_eq!(values, [json!(3), json!(5)]);
    // The rollup is written just after the events themselves.
    let events = h
        .until(&format!("/api/v1/events?{}", range(3)), |r| {
            count(r, "signup", "count") >= 5
        })
        .await;
    assert_eq!(count(&events, "signup", "count"), 5, "{events:#}");
    assert_eq!(row(&events, "name", "signup").unwrap()["automatic"], false);
    let journey = h.report(&format!("/api/v1/visitors/{v}/journey")).await;
    assert_eq!(
        journey["events"][0]["properties"]["seats"], 3,
        "{journey:#}"
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_commits_and_acks_the_batch_in_flight() {
    // A long batch wait: the messages sit in the consumer's open batch when shutdown comes.
    let mut h = Harness::start_with(&["--batch-wait", "4s", "--ack-wait", "30s"]).await;
    let v = visitor();
    let s = session();
    for i in 0..5 {
        let m = page_view(
            &v,
            &s,
            days_ago(1) + time::Duration::seconds(i),
            &format!("/p{i}"),
            &DIRECT,
        );
        h.publish(&m, m.id()).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        h.clickhouse("SELECT count() FROM events").await,
        "0",
        "still in flight"
    );
    h.stop().await;

    assert_eq!(h.clickhouse("SELECT count() FROM events").await, "5");
    let visitors: i64 = sqlx::query_scalar("SELECT count(*) FROM visitors")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(visitors, 1);
    let stream = h.js.get_stream(&h.subjects.stream).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("zori-api").await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, 5, "{info:?}");
    h.cleanup().await;
}
