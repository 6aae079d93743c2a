//! `identify()` in real headless Chromium links the visitor to the user in PostgreSQL; commands
//! queued before the script has loaded run in order once it has, with the automatic page view
//! first and a queued `getVisitorId` callback answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zori_e2e::{
    tracker::{
        events_until, named, page, properties, tracker_tag, Browser, BrowserOptions, PageServer,
    },
    Stack, StackOptions, POSTGRES_URL,
};

#[tokio::test(flavor = "multi_thread")]
async fn identify_links_the_visitor_to_the_user() {
    let site = PageServer::start().await;
    let stack = Stack::start_with(
        "tracker_identify",
        StackOptions {
            allowed_origins: vec![site.origin()],
        },
    )
    .await;
    // The documented install: the queue exists before the script, which loads async.
    let queue = "<script>window.ZoriHQ = window.ZoriHQ || [];\
        ZoriHQ.push(['track', 'signup_started', {plan: 'pro', step: 1}]);\
        ZoriHQ.push(['getVisitorId', function (id) { window.queuedVisitor = id; }]);\
        ZoriHQ.push(['identify', {app_id: 42, email: ' Jane.Doe@Example.com ', full_name: 'Jane Doe', plan: 'pro'}]);\
        </script>";
    site.add(
        "/signup",
        page("Sign up", queue, "", &tracker_tag(&stack, "")),
    );
    let browser = Browser::launch(BrowserOptions::default()).await;
    browser.goto(&site.url("/signup")).await;
    let visitor = browser
        .wait_for("window.queuedVisitor", Duration::from_secs(10))
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        browser.visitor_id().await.as_deref(),
        Some(visitor.as_str())
    );

    // A direct call, too: resolves true once queued for delivery.
    let direct = browser
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             ZoriHQ.identify({app_id: 42, company: 'Acme'}).then(done);",
            vec![],
        )
        .await;
    assert_eq!(direct, json!(true));
    let refused = browser
        .execute_async(
            "const done = arguments[arguments.length - 1]; ZoriHQ.identify({plan: 'x'}).then(done);",
            vec![],
        )
        .await;
    assert_eq!(
        refused,
        json!(false),
        "identify needs an app_id or an email"
    );

    // PostgreSQL: the user, and the visitor linked to it.
    let pool = sqlx::PgPool::connect(POSTGRES_URL).await.unwrap();
    let schema = stack.tenant.schema();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (user_id, app_id, fullname, traits, email_hash): (
        i64,
        Option<String>,
        Option<String>,
        Value,
        Option<String>,
    ) = loop {
        let row = sqlx::query_as(&format!(
            "SELECT u.user_id, u.app_id, u.fullname, u.traits, u.email_hash
             FROM {schema}.identities i JOIN {schema}.users u ON u.user_id = i.user_id
             WHERE i.visitor_id = $1"
        ))
        .bind(&visitor)
        .fetch_optional(&pool)
        .await;
        if let Ok(Some(row)) = row {
            let row: (i64, Option<String>, Option<String>, Value, Option<String>) = row;
            if row.3.get("company").is_some() {
                break row;
            }
        }
        assert!(
            Instant::now() < deadline,
            "visitor {visitor} never linked to a user"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(app_id.as_deref(), Some("42"));
    assert_eq!(fullname.as_deref(), Some("Jane Doe"));
    assert_eq!(traits["plan"], "pro", "{traits}");
    let email_hash = email_hash.expect("the email is kept as a salted hash");
    assert_eq!(email_hash.len(), 64);
    let users: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.users"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1, "both identifies are the same user");
    let linked: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.identities WHERE user_id = $1"
    ))
    .bind(user_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(linked, 1);
    // No email in clear anywhere in the tenant's schema.
    let clear: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.users WHERE traits::text ILIKE '%example.com%' \
         OR fullname ILIKE '%example.com%'"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(clear, 0);

    // The queued track ran after the automatic page view, with its properties.
    let events = events_until(&stack, &visitor, Duration::from_secs(30), |e| {
        !named(e, "signup_started").is_empty()
    })
    .await;
    let order: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["session_start", "page_view", "signup_started"]);
    assert_eq!(
        properties(named(&events, "signup_started")[0]),
        json!({"plan": "pro", "step": 1})
    );

    // The journey report shows the identity.
    let journey = stack
        .report(&format!("/api/v1/visitors/{visitor}/journey"))
        .await;
    assert_eq!(journey["identity"]["app_id"], "42", "{journey:#}");
    assert_eq!(journey["identity"]["visitor_ids"], json!([visitor]));

    browser.close().await;
    pool.close().await;
    stack.tenant.cleanup().await;
}
