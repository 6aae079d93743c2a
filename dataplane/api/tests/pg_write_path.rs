//! The PostgreSQL side of a batch at the sizes the consumer writes while it drains a backlog
//! (thousands of visitors per batch), against the real database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    str::FromStr,
    time::{Duration, Instant},
};

use common::{days_ago, page_view, random, session, visitor, DIRECT, POSTGRES_URL, TWITTER};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};
use zori_api::{batch, pg};
use zori_core::event::StreamMessage;

const VISITORS: usize = 10_000;

/// A fresh tenant schema, migrated, behind a pool of exactly one connection (so every batch
/// runs on the connection that ran the batches before it, as a busy consumer's connections do).
async fn one_connection(schema: &str) -> PgPool {
    let admin = PgPool::connect(POSTGRES_URL).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let options = PgConnectOptions::from_str(POSTGRES_URL)
        .unwrap()
        .options([("search_path", schema)]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    pg::MIGRATOR.run(&pool).await.unwrap();
    pool
}

async fn drop_schema(schema: &str) {
    let admin = PgPool::connect(POSTGRES_URL).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

async fn write(pool: &PgPool, messages: &[StreamMessage]) -> Duration {
    let started = Instant::now();
    pg::write_batch(pool, &batch::plan(messages)).await.unwrap();
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_batch_after_small_ones_on_the_same_connection_stays_fast() {
    // The visitors' statement triggers compare old and new rows. Planned once per connection
    // for the first (small) statement, that comparison was a nested loop: 10,000 updated
    // visitors then took 100 million comparisons (over ten seconds) instead of well under one.
    let schema = format!("t_{}", random(12));
    let pool = one_connection(&schema).await;
    let people: Vec<(String, String)> = (0..VISITORS).map(|_| (visitor(), session())).collect();
    let (first, _) = &people[0];

    let later: Vec<StreamMessage> = people
        .iter()
        .map(|(v, s)| page_view(v, s, days_ago(1), "/later", &DIRECT))
        .collect();
    write(&pool, &later[..1]).await;
    write(&pool, &later).await;
    let one_earlier = page_view(first, &people[0].1, days_ago(2), "/", &TWITTER);
    write(&pool, std::slice::from_ref(&one_earlier)).await;

    // Every visitor gets an earlier first touch: 10,000 rows updated in one statement.
    let earlier: Vec<StreamMessage> = people
        .iter()
        .map(|(v, s)| page_view(v, s, days_ago(3), "/", &TWITTER))
        .collect();
    let took = write(&pool, &earlier).await;

    let from_twitter: i64 =
        sqlx::query_scalar("SELECT count(*) FROM visitors WHERE ft_source = 'twitter'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    drop_schema(&schema).await;
    assert_eq!(from_twitter, VISITORS as i64, "every first touch moved");
    assert!(
        took < Duration::from_secs(5),
        "a batch of {VISITORS} visitors took {took:?}"
    );
}
