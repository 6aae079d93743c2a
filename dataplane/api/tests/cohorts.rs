//! `GET /api/v1/cohorts`: lifetime value by acquisition month × first-touch channel, against
//! the real services.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{insert_payment, page_view, session, visitor, Harness, GOOGLE, TWITTER};
use serde_json::json;
use time::{Duration, OffsetDateTime};
use zori_core::saas::{add_months, month_of};

#[tokio::test(flavor = "multi_thread")]
async fn cohorts_accumulate_revenue_per_customer() {
    let h = Harness::start().await;
    let now = OffsetDateTime::now_utc();
    // The cohort month: three months before this one. T0 = its 2nd day at noon.
    let mut cohort = month_of(now);
    for _ in 0..3 {
        cohort = month_of((cohort - Duration::days(1)).midnight().assume_utc());
    }
    let t0 = cohort.midnight().assume_utc() + Duration::days(1) + Duration::hours(12);
    let (a, b, c, d) = (visitor(), visitor(), visitor(), visitor());
    for m in [
        page_view(&a, &session(), t0 - Duration::days(1), "/", &TWITTER),
        page_view(&b, &session(), t0 - Duration::days(1), "/", &TWITTER),
        page_view(&c, &session(), t0 - Duration::days(1), "/", &GOOGLE),
        page_view(&d, &session(), t0 - Duration::days(60), "/", &TWITTER),
    ] {
        h.publish(&m, m.id()).await;
    }
    h.drained().await;
    // A: $30 a month for three months; B: $50 once; C: €10 once (another channel and currency);
    // D paid before the cohort month: not a new customer, not in any cohort.
    for k in 0..3 {
        insert_payment(&h.pool, add_months(t0, k), 3000, "usd", 0, Some(&a), None).await;
    }
    insert_payment(
        &h.pool,
        t0 + Duration::days(3),
        5000,
        "usd",
        0,
        Some(&b),
        None,
    )
    .await;
    insert_payment(&h.pool, t0, 1000, "eur", 0, Some(&c), None).await;
    insert_payment(
        &h.pool,
        t0 - Duration::days(40),
        7000,
        "usd",
        0,
        Some(&d),
        None,
    )
    .await;
    insert_payment(
        &h.pool,
        t0 + Duration::days(5),
        7000,
        "usd",
        0,
        Some(&d),
        None,
    )
    .await;

    let report = h
        .report(&format!("/api/v1/cohorts?from={cohort}&to={}", now.date()))
        .await;
    let label = format!("{:04}-{:02}", cohort.year(), cohort.month() as u8);
    assert_eq!(report["from"], label);
    assert_eq!(report["horizons"], json!([1, 3, 6, 12]));
    // After 1 month (before T0 + 1 month): A 3000, B 5000 → 4000 per customer; complete (the
    // month after next has begun). After 3: A 9000, B 5000 → 7000; not complete yet.
    assert_eq!(
        report["cohorts"],
        json!([
            {"month": label, "channel": "organic_search", "currency": "eur", "customers": 1,
             "horizons": [
                {"months": 1, "revenue": 1000, "per_customer": 1000.0, "complete": true},
                {"months": 3, "revenue": 1000, "per_customer": 1000.0, "complete": false},
                {"months": 6, "revenue": 1000, "per_customer": 1000.0, "complete": false},
                {"months": 12, "revenue": 1000, "per_customer": 1000.0, "complete": false}]},
            {"month": label, "channel": "paid_social", "currency": "usd", "customers": 2,
             "horizons": [
                {"months": 1, "revenue": 8000, "per_customer": 4000.0, "complete": true},
                {"months": 3, "revenue": 14000, "per_customer": 7000.0, "complete": false},
                {"months": 6, "revenue": 14000, "per_customer": 7000.0, "complete": false},
                {"months": 12, "revenue": 14000, "per_customer": 7000.0, "complete": false}]}
        ]),
        "{report:#}"
    );
    h.cleanup().await;
}
