//! Attribution models over stored touch history: `GET /api/v1/attribution?model=…` and
//! `/api/v1/attribution/compare`, against the real services.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    days_ago, identify, insert_payment, net, page_view, range, row, session, visitor, From,
    Harness, DIRECT, GOOGLE, TWITTER,
};
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use zori_core::{channel::Channel, event::StreamMessage};

const EMAIL: From = From {
    utm_source: Some("newsletter"),
    utm_medium: Some("email"),
    utm_campaign: Some("march"),
    referrer: None,
    channel: Some(Channel::Email),
};

async fn publish_all(h: &Harness, messages: &[StreamMessage]) {
    for m in messages {
        h.publish(m, m.id()).await;
    }
    h.drained().await;
}

/// (value, currency, credited net) of every row of a model report, sorted.
fn credits(report: &Value) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for r in report["rows"].as_array().unwrap() {
        for m in r["revenue"].as_array().unwrap() {
            let net = m["net"].as_i64().unwrap();
            if net != 0 {
                out.push((
                    r["value"].as_str().unwrap().to_owned(),
                    m["currency"].as_str().unwrap().to_owned(),
                    net,
                ));
            }
        }
    }
    out.sort();
    out
}

fn expect(list: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), *c))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn every_model_credits_the_stored_journeys() {
    let h = Harness::start().await;
    let base: OffsetDateTime = days_ago(1);
    let paid_at = base + Duration::hours(1);
    let (a, b, c) = (visitor(), visitor(), visitor());
    let (u1, u2) = (visitor(), visitor());
    publish_all(
        &h,
        &[
            // A (usd 90.00): organic search 14 days before, paid social 7 days before, email
            // at `base`; pays an hour later.
            page_view(&a, &session(), base - Duration::days(14), "/", &GOOGLE),
            page_view(&a, &session(), base - Duration::days(7), "/", &TWITTER),
            page_view(&a, &session(), base, "/pricing", &EMAIL),
            // B (eur 10.00): one direct visit.
            page_view(&b, &session(), base - Duration::days(1), "/", &DIRECT),
            // C (usd 7.00): one visit 40 days ago, outside the 30-day lookback asked below.
            page_view(&c, &session(), days_ago(40), "/", &TWITTER),
            // A user on two devices (jpy 3001): organic 10 days before on one, direct 3 days
            // before on the other; pays with the second visitor id.
            page_view(&u1, &session(), base - Duration::days(10), "/", &GOOGLE),
            page_view(&u2, &session(), base - Duration::days(3), "/", &DIRECT),
            identify(&u1, Some("app-user-1"), None, base - Duration::days(10)),
            identify(&u2, Some("app-user-1"), None, base - Duration::days(3)),
        ],
    )
    .await;
    insert_payment(&h.pool, paid_at, 9000, "usd", 0, Some(&a), None).await;
    insert_payment(&h.pool, paid_at, 1000, "eur", 0, Some(&b), None).await;
    insert_payment(&h.pool, paid_at, 700, "usd", 0, Some(&c), None).await;
    insert_payment(&h.pool, paid_at, 500, "usd", 0, None, None).await;
    insert_payment(&h.pool, paid_at, 3001, "jpy", 0, Some(&u2), None).await;

    let q = format!("lookback_days=30&{}", range(10));
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str, i64)]);
    let cases: &[Case] = &[
        (
            "first_touch",
            &[
                ("organic_search", "usd", 9000),
                ("organic_search", "jpy", 3001),
                ("direct", "eur", 1000),
            ],
        ),
        (
            // A's latest non-direct touch is email; the user's is organic (direct skipped).
            "last_non_direct",
            &[
                ("email", "usd", 9000),
                ("organic_search", "jpy", 3001),
                ("direct", "eur", 1000),
            ],
        ),
        (
            // A: 3000 each. The user: 1500.5 each, the unit to the earlier touch.
            "linear",
            &[
                ("organic_search", "usd", 3000),
                ("paid_social", "usd", 3000),
                ("email", "usd", 3000),
                ("organic_search", "jpy", 1501),
                ("direct", "jpy", 1500),
                ("direct", "eur", 1000),
            ],
        ),
        (
            // A: 40/20/40. The user (two touches): 50/50.
            "position_based",
            &[
                ("organic_search", "usd", 3600),
                ("paid_social", "usd", 1800),
                ("email", "usd", 3600),
                ("organic_search", "jpy", 1501),
                ("direct", "jpy", 1500),
                ("direct", "eur", 1000),
            ],
        ),
        (
            // Half-life 7 days. A: ages 14, 7, 0 days → 1/4, 1/2, 1 of 7/4 → 1285.71,
            // 2571.43, 5142.86 → 1286, 2571, 5143. The user: ages 7 and 0 → 1/2, 1 of 3/2 →
            // 1000.33, 2000.67 → 1000, 2001.
            "time_decay",
            &[
                ("organic_search", "usd", 1286),
                ("paid_social", "usd", 2571),
                ("email", "usd", 5143),
                ("organic_search", "jpy", 1000),
                ("direct", "jpy", 2001),
                ("direct", "eur", 1000),
            ],
        ),
    ];
    for (model, expected) in cases {
        let report = h
            .report(&format!("/api/v1/attribution?model={model}&{q}"))
            .await;
        assert_eq!(report["model"], *model);
        assert_eq!(report["lookback_days"], 30);
        assert_eq!(credits(&report), expect(expected), "{model}: {report:#}");
        // C's only touch is older than the lookback; the payment without visitor has none.
        assert_eq!(report["unattributed"]["payments"], 2, "{model}");
        assert_eq!(net(Some(&report["unattributed"]), "usd"), 1200, "{model}");
        assert_eq!(report["totals"]["payments"], 5);
        assert_eq!(report["totals"]["customers"], 5);
        assert_eq!(net(Some(&report["totals"]), "usd"), 10_200);
        assert_eq!(net(Some(&report["totals"]), "jpy"), 3001);
    }
    let linear = h
        .report(&format!("/api/v1/attribution?model=linear&{q}"))
        .await;
    let email = row(&linear, "value", "email").unwrap();
    assert!((email["conversions"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-6);
    assert_eq!(email["revenue"][0]["formatted"], "30.00");

    // Filters apply to the payer's first-touch visitor, as in every revenue report: every
    // visitor here is a desktop in DE.
    let de = h
        .report(&format!("/api/v1/attribution?model=linear&country=DE&{q}"))
        .await;
    assert_eq!(credits(&de), credits(&linear));
    let mobile = h
        .report(&format!(
            "/api/v1/attribution/compare?models=linear,data_driven&device=mobile&{q}"
        ))
        .await;
    assert_eq!(mobile["models"][0]["totals"]["payments"], 0, "{mobile:#}");
    assert_eq!(mobile["models"][1]["not_enough_data"]["journeys"], 0);

    // The default lookback (90 days) reaches C's visit: paid social gets C's 700.
    let wide = h
        .report(&format!(
            "/api/v1/attribution?model=first_touch&{}",
            range(10)
        ))
        .await;
    assert_eq!(
        net(row(&wide, "value", "paid_social"), "usd"),
        700,
        "{wide:#}"
    );

    // Side by side, in the order asked; too few journeys for the data-driven model.
    let compared = h
        .report(&format!(
            "/api/v1/attribution/compare?models=linear,first_touch,data_driven&{q}"
        ))
        .await;
    let models = compared["models"].as_array().unwrap();
    let names: Vec<&str> = models
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["linear", "first_touch", "data_driven"]);
    assert_eq!(credits(&models[0]), credits(&linear));
    let missing = &models[2]["not_enough_data"];
    assert_eq!(missing["converting"], 3, "{compared:#}");
    assert_eq!(missing["minimum"]["journeys"], 100);
    assert!(missing["message"]
        .as_str()
        .unwrap()
        .contains("not enough data"));

    let (status, body) = h
        .get(
            &format!("/api/v1/attribution?model=data_driven&{q}"),
            Some(&h.token),
        )
        .await;
    assert_eq!(status, 422, "{body:#}");
    assert_eq!(body["error"]["code"], "not_enough_data");

    for bad in [
        "model=last_touch",
        "model=",
        "model=linear&lookback_days=0",
        "model=linear&dimension=planet",
    ] {
        let (status, body) = h
            .get(&format!("/api/v1/attribution?{bad}"), Some(&h.token))
            .await;
        assert_eq!(status, 400, "{bad}: {body:#}");
    }
    let (status, body) = h
        .get(
            "/api/v1/attribution/compare?models=linear,nope",
            Some(&h.token),
        )
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("models"))
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_driven_model_credits_by_removal_effect() {
    let h = Harness::start().await;
    let base = days_ago(1);
    let mut messages = Vec::new();
    let mut payers = Vec::new();
    // 40 journeys organic search → email that pay, 40 organic search alone and 40 email alone
    // that do not: start→organic 2/3, start→email 1/3; organic→email 1/2, organic→null 1/2;
    // email→conversion 1/2, email→null 1/2. P(conversion) = 1/3; without organic search 1/6
    // (removal effect 1/2); without email 0 (removal effect 1).
    for _ in 0..40 {
        let v = visitor();
        messages.push(page_view(
            &v,
            &session(),
            base - Duration::days(5),
            "/",
            &GOOGLE,
        ));
        messages.push(page_view(
            &v,
            &session(),
            base - Duration::days(2),
            "/",
            &EMAIL,
        ));
        payers.push(v);
    }
    for _ in 0..40 {
        messages.push(page_view(
            &visitor(),
            &session(),
            base - Duration::days(4),
            "/",
            &GOOGLE,
        ));
        messages.push(page_view(
            &visitor(),
            &session(),
            base - Duration::days(3),
            "/",
            &EMAIL,
        ));
    }
    publish_all(&h, &messages).await;
    for v in &payers {
        insert_payment(&h.pool, base, 9000, "usd", 0, Some(v), None).await;
    }
    let report = h
        .report(&format!(
            "/api/v1/attribution?model=data_driven&{}",
            range(10)
        ))
        .await;
    let fit = &report["data_driven"];
    assert_eq!(
        (&fit["journeys"], &fit["converting"], &fit["non_converting"]),
        (&Value::from(120), &Value::from(40), &Value::from(80)),
        "{report:#}"
    );
    let effect = |state: &str| fit["removal_effects"][state].as_f64().unwrap();
    assert!((effect("organic_search") - 0.5).abs() < 1e-9, "{fit:#}");
    assert!((effect("email") - 1.0).abs() < 1e-9, "{fit:#}");
    assert!((fit["conversion_probability"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    // Each payment: organic 1/2, email 1 of 3/2 → 3000 and 6000.
    assert_eq!(
        credits(&report),
        expect(&[
            ("organic_search", "usd", 120_000),
            ("email", "usd", 240_000)
        ])
    );
    let organic = row(&report, "value", "organic_search").unwrap();
    assert!((organic["conversions"].as_f64().unwrap() - 40.0 / 3.0).abs() < 1e-4);
    assert_eq!(organic["customers"], 40);
    h.cleanup().await;
}
