//! `GET /api/v1/funnel`: people reaching each step in order, by first-touch channel, and the
//! revenue of those who finished, against the real services with hand-computed expectations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    days_ago, event, identify, insert_payment, page_view, range, session, visitor, Harness, DIRECT,
    GOOGLE, TWITTER,
};
use serde_json::{json, Value};
use zori_core::event::StreamMessage;

fn signup(visitor: &str, days: i64, from: &common::From) -> StreamMessage {
    StreamMessage::Event(event(
        "signup",
        visitor,
        &session(),
        days_ago(days),
        "/signup",
        from,
    ))
}

/// (visitors per step, conversion per step, finished, revenue as (currency, net)).
type Summary = (Vec<u64>, Vec<Value>, u64, Vec<(String, i64)>);

fn summary(row: &Value) -> Summary {
    let steps = row["steps"].as_array().unwrap();
    (
        steps
            .iter()
            .map(|s| s["visitors"].as_u64().unwrap())
            .collect(),
        steps.iter().map(|s| s["conversion"].clone()).collect(),
        row["finished"].as_u64().unwrap(),
        row["revenue"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["currency"].as_str().unwrap().to_owned(),
                    m["net"].as_i64().unwrap(),
                )
            })
            .collect(),
    )
}

fn row<'a>(report: &'a Value, value: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["value"] == value)
        .unwrap_or_else(|| panic!("no row {value}: {report:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn funnel_counts_steps_in_order_by_channel_with_the_revenue_of_finishers() {
    let h = Harness::start().await;
    let [a, b, c, d, e, e2, f, g, k] = std::array::from_fn(|_| visitor());
    let messages = vec![
        // A (paid social): pricing, signup, pays $99: finishes.
        page_view(&a, &session(), days_ago(5), "/pricing", &TWITTER),
        signup(&a, 4, &TWITTER),
        // B (paid social): pricing, signup, never pays: reaches step 2.
        page_view(&b, &session(), days_ago(5), "/pricing", &TWITTER),
        signup(&b, 4, &TWITTER),
        // C (organic search): signed up before seeing pricing, never after: step 1 only (its
        // €50 payment is not a finisher's).
        signup(&c, 6, &GOOGLE),
        page_view(&c, &session(), days_ago(5), "/pricing", &GOOGLE),
        // D: the home page only: not in the funnel.
        page_view(&d, &session(), days_ago(5), "/", &GOOGLE),
        // E and E2 are one user: pricing on E (paid social, the user's first touch), signup
        // and a $20 payment on E2 (direct): the user finishes, credited to paid social.
        page_view(&e, &session(), days_ago(6), "/pricing", &TWITTER),
        identify(&e, Some("user-7"), None, days_ago(6)),
        signup(&e2, 5, &DIRECT),
        identify(&e2, Some("user-7"), None, days_ago(5)),
        // F (paid social): paid ($30) before pricing and signup: reaches step 2.
        page_view(&f, &session(), days_ago(3), "/pricing", &TWITTER),
        signup(&f, 2, &TWITTER),
        // K (direct): signed up before pricing, then again after it, then pays $10: finishes
        // through its second signup.
        page_view(&k, &session(), days_ago(10), "/pricing", &DIRECT),
        signup(&k, 12, &DIRECT),
        signup(&k, 8, &DIRECT),
        // G: pricing before the range: nothing.
        page_view(&g, &session(), days_ago(40), "/pricing", &TWITTER),
        signup(&g, 39, &TWITTER),
    ];
    for m in &messages {
        h.publish(m, m.id()).await;
    }
    h.drained().await;
    insert_payment(&h.pool, days_ago(3), 9900, "usd", 0, Some(&a), None).await;
    insert_payment(&h.pool, days_ago(3), 5000, "eur", 0, Some(&c), None).await;
    insert_payment(&h.pool, days_ago(4), 2000, "usd", 0, Some(&e2), None).await;
    insert_payment(&h.pool, days_ago(4), 3000, "usd", 0, Some(&f), None).await;
    insert_payment(&h.pool, days_ago(38), 7700, "usd", 0, Some(&g), None).await;
    insert_payment(&h.pool, days_ago(7), 1000, "usd", 0, Some(&k), None).await;

    let r = range(30);
    let path = format!("/api/v1/funnel?{r}&steps=page:/pricing,event:signup,paid");
    let report = h
        .until(&path, |v| v["totals"]["steps"][0]["visitors"] == 6)
        .await;
    assert_eq!(
        report["steps"],
        json!([
            {"step": "page:/pricing", "kind": "page", "value": "/pricing"},
            {"step": "event:signup", "kind": "event", "value": "signup"},
            {"step": "paid", "kind": "paid", "value": null}
        ])
    );
    assert_eq!(report["dimension"], "channel");
    // Paid social: A, B, the user E+E2, F at pricing; all four signed up after; A and the user
    // paid after signing up ($99 + $20).
    assert_eq!(
        summary(row(&report, "paid_social")),
        (
            vec![4, 4, 2],
            vec![Value::Null, json!(1.0), json!(0.5)],
            2,
            vec![("usd".to_owned(), 11_900)]
        )
    );
    assert_eq!(
        summary(row(&report, "organic_search")),
        (
            vec![1, 0, 0],
            vec![Value::Null, json!(0.0), Value::Null],
            0,
            vec![]
        )
    );
    assert_eq!(
        summary(row(&report, "direct")),
        (
            vec![1, 1, 1],
            vec![Value::Null, json!(1.0), json!(1.0)],
            1,
            vec![("usd".to_owned(), 1_000)]
        )
    );
    assert_eq!(report["rows"].as_array().unwrap().len(), 3, "{report:#}");
    assert_eq!(report["rows"][0]["value"], "paid_social");
    assert_eq!(
        summary(&report["totals"]),
        (
            vec![6, 5, 3],
            vec![Value::Null, json!(5.0 / 6.0), json!(0.6)],
            3,
            vec![("usd".to_owned(), 12_900)]
        )
    );
    assert_eq!(report["totals"]["steps"][2]["overall"], json!(0.5));

    // Without the paid step, everyone who signed up after pricing finishes, and their revenue
    // of the range counts (A $99, the user $20, F $30).
    let report = h
        .report(&format!(
            "/api/v1/funnel?{r}&steps=page:/pricing,event:signup"
        ))
        .await;
    assert_eq!(
        summary(row(&report, "paid_social")),
        (
            vec![4, 4],
            vec![Value::Null, json!(1.0)],
            4,
            vec![("usd".to_owned(), 14_900)]
        )
    );

    // Only page steps, or only event steps.
    let report = h
        .report(&format!("/api/v1/funnel?{r}&steps=page:/pricing,paid"))
        .await;
    assert_eq!(summary(&report["totals"]).0, vec![6, 4]);
    let report = h
        .report(&format!("/api/v1/funnel?{r}&steps=event:signup,paid"))
        .await;
    // Paid after signing up: A, C (signed up on day 6, paid on day 3), the user and K; B never
    // paid and F paid before signing up.
    assert_eq!(summary(&report["totals"]).0, vec![6, 4]);

    // Filters keep the people whose first touch matches.
    let report = h
        .report(&format!(
            "/api/v1/funnel?{r}&steps=page:/pricing,event:signup,paid&channel=organic_search"
        ))
        .await;
    assert_eq!(report["rows"].as_array().unwrap().len(), 1);
    assert_eq!(summary(&report["totals"]).0, vec![1, 0, 0]);

    // By source instead of channel.
    let report = h
        .report(&format!(
            "/api/v1/funnel?{r}&steps=page:/pricing,event:signup,paid&dimension=source"
        ))
        .await;
    assert_eq!(summary(row(&report, "twitter")).0, vec![4, 4, 2]);
    assert_eq!(summary(row(&report, "google.com")).0, vec![1, 0, 0]);

    for (q, param) in [
        ("", "steps"),
        ("&steps=paid", "steps"),
        ("&steps=page:/,paid,event:x", "steps"),
        ("&steps=pricing", "steps"),
        ("&steps=page:/&dimension=planet", "dimension"),
        ("&steps=page:/&channel=nope", "channel"),
    ] {
        let (status, body) = h
            .get(&format!("/api/v1/funnel?{r}{q}"), Some(&h.token))
            .await;
        assert_eq!(status, 400, "{q}: {body:#}");
        assert_eq!(body["error"]["param"], param, "{q}: {body:#}");
    }
    h.cleanup().await;
}
