//! Provisioning against the real NATS JetStream, PostgreSQL and ClickHouse on this machine
//! (see scripts/services.sh). Every test uses random tenant names and cleans up after itself,
//! also when an assertion fails.

use std::{future::Future, panic::AssertUnwindSafe, str::FromStr, time::Duration};

use futures::FutureExt;
use serde_json::Value;
use sqlx::{postgres::PgConnectOptions, Connection, PgConnection};
use zori_operator::{
    api::{fake::FakeApi, KubeApi, ObjectKey},
    backends::{
        clickhouse::ClickHouseBackend,
        nats::NatsBackend,
        postgres::PostgresBackend,
        redis::{tenant_url, RedisBackend, RedisTenant},
        Backends, ChTenant, LiveBackends, Owner, PgTenant, Provisioned, Removed,
    },
    builders::secret::keys,
    config::Platform,
    crd::{self, ReclaimPolicy, ZoriProject},
    naming::TenantNames,
    reconcile::{reconcile, Context, Next, BUFFER_CHECK, RESYNC},
};
use zori_service::jetstream::{desired_config, StreamLimits};

use super::common::{minimal, unique};

const NATS_URL: &str = "nats://127.0.0.1:4222";
const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const CLICKHOUSE_URL: &str = "http://127.0.0.1:8123";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The project that owns what a test provisions.
const OWNER: Owner<'static> = Owner {
    uid: "0b9c2f1e-test-owner",
    adopt_unmarked: false,
};

async fn live() -> LiveBackends {
    let nats = tokio::time::timeout(Duration::from_secs(10), NatsBackend::connect(NATS_URL))
        .await
        .expect("NATS answers on 127.0.0.1:4222 (run scripts/services.sh)")
        .expect("NATS connection");
    LiveBackends {
        nats,
        postgres: PostgresBackend::connect_lazy(POSTGRES_ADMIN_URL).expect("admin URL"),
        clickhouse: ClickHouseBackend::new(CLICKHOUSE_URL, None, None).expect("ClickHouse client"),
        redis: Some(RedisBackend::new(REDIS_URL).expect("Redis admin URL")),
    }
}

/// Runs `body`, then `cleanup` whether or not `body` panicked.
async fn with_cleanup<B, C>(body: B, cleanup: C)
where
    B: Future<Output = ()>,
    C: Future<Output = ()>,
{
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    cleanup.await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Drops what a test made for tenant `id`, as the project `owner` (its marker).
async fn drop_tenant(backends: &LiveBackends, id: &str, owner: Owner<'_>) {
    let names = TenantNames::for_tenant(id);
    let _ = backends.delete_stream(&names.subjects.stream, owner).await;
    let _ = backends
        .drop_postgres(PgTenant {
            role: &names.postgres_role,
            schema: &names.postgres_schema,
            owner,
        })
        .await;
    let _ = backends
        .drop_clickhouse(ChTenant {
            database: &names.clickhouse_database,
            user: None,
            owner,
        })
        .await;
}

#[tokio::test]
async fn the_stream_is_created_compared_updated_and_deleted() {
    let backends = live().await;
    let id = unique("t");
    let names = TenantNames::for_tenant(&id);
    let stream = names.subjects.stream.clone();
    with_cleanup(
        async {
            let mut limits = StreamLimits {
                max_bytes: 64 << 20,
                ..StreamLimits::default()
            };
            let marked = |mut config: async_nats::jetstream::stream::Config| {
                config.description = Some(format!("test stream {}", OWNER.marker()));
                config
            };
            let desired = || {
                marked(desired_config(
                    &stream,
                    vec![names.subjects.wildcard.clone()],
                    &limits,
                ))
            };
            assert_eq!(
                backends
                    .ensure_stream(desired(), OWNER)
                    .await
                    .expect("create"),
                Provisioned::Created
            );
            assert_eq!(
                backends
                    .ensure_stream(desired(), OWNER)
                    .await
                    .expect("again"),
                Provisioned::Unchanged
            );
            limits.max_bytes = 128 << 20;
            limits.max_age = Duration::from_secs(3600);
            let desired = marked(desired_config(
                &stream,
                vec![names.subjects.wildcard.clone()],
                &limits,
            ));
            assert_eq!(
                backends
                    .ensure_stream(desired, OWNER)
                    .await
                    .expect("update"),
                Provisioned::Updated(vec!["max_age".to_owned(), "max_bytes".to_owned()])
            );
            let live = backends
                .nats
                .stream_config(&stream)
                .await
                .expect("read")
                .expect("exists");
            assert_eq!(live.max_bytes, 128 << 20);
            assert_eq!(live.subjects, vec![names.subjects.wildcard.clone()]);
            assert_eq!(
                backends
                    .delete_stream(&stream, OWNER)
                    .await
                    .expect("delete"),
                Removed::Removed
            );
            assert_eq!(
                backends.delete_stream(&stream, OWNER).await.expect("again"),
                Removed::AlreadyGone
            );
            assert!(backends
                .nats
                .stream_config(&stream)
                .await
                .expect("read")
                .is_none());
        },
        async {
            let _ = backends.delete_stream(&stream, OWNER).await;
        },
    )
    .await;
}

async fn connect_as(role: &str, password: &str) -> PgConnection {
    let options = PgConnectOptions::from_str("postgres://127.0.0.1:5432/postgres")
        .expect("options")
        .username(role)
        .password(password);
    PgConnection::connect_with(&options)
        .await
        .expect("the tenant role can log in")
}

async fn role_exists(backends: &LiveBackends, role: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(backends.postgres.pool())
        .await
        .expect("query")
}

#[tokio::test]
async fn a_tenant_role_uses_only_its_own_schema() {
    let backends = live().await;
    let a = TenantNames::for_tenant(&unique("ta"));
    let b = TenantNames::for_tenant(&unique("tb"));
    fn tenant(n: &TenantNames) -> PgTenant<'_> {
        PgTenant {
            role: &n.postgres_role,
            schema: &n.postgres_schema,
            owner: OWNER,
        }
    }
    let (ta, tb) = (tenant(&a), tenant(&b));
    with_cleanup(
        async {
            assert_eq!(
                backends
                    .ensure_postgres(ta, "password-of-a-0123")
                    .await
                    .expect("a"),
                Provisioned::Created
            );
            assert_eq!(
                backends
                    .ensure_postgres(ta, "password-of-a-0123")
                    .await
                    .expect("a again"),
                Provisioned::Unchanged,
                "idempotent, including the password check"
            );
            assert_eq!(
                backends
                    .ensure_postgres(tb, "password-of-b-0123")
                    .await
                    .expect("b"),
                Provisioned::Created
            );

            let mut as_b = connect_as(tb.role, "password-of-b-0123").await;
            sqlx::query("CREATE TABLE payments (id int)")
                .execute(&mut as_b)
                .await
                .expect("b creates in its schema");
            sqlx::query("INSERT INTO payments VALUES (42)")
                .execute(&mut as_b)
                .await
                .expect("b inserts");

            let mut as_a = connect_as(ta.role, "password-of-a-0123").await;
            let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
                .fetch_one(&mut as_a)
                .await
                .expect("schema");
            assert_eq!(
                schema, a.postgres_schema,
                "search_path points at the own schema"
            );
            sqlx::query("CREATE TABLE visits (id int)")
                .execute(&mut as_a)
                .await
                .expect("a creates");
            sqlx::query("INSERT INTO visits VALUES (1), (2)")
                .execute(&mut as_a)
                .await
                .expect("a inserts");
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM visits")
                .fetch_one(&mut as_a)
                .await
                .expect("a reads");
            assert_eq!(n, 2);

            let denied = sqlx::query(&format!("SELECT * FROM {}.payments", b.postgres_schema))
                .fetch_all(&mut as_a)
                .await
                .expect_err("a must not read b's schema")
                .to_string();
            assert!(
                denied.contains(&format!(
                    "permission denied for schema {}",
                    b.postgres_schema
                )),
                "{denied}"
            );
            let denied = sqlx::query(&format!(
                "CREATE TABLE {}.sneaky (id int)",
                b.postgres_schema
            ))
            .execute(&mut as_a)
            .await
            .expect_err("a must not write b's schema")
            .to_string();
            assert!(denied.contains("permission denied"), "{denied}");
            let denied = sqlx::query("CREATE TABLE public.sneaky (id int)")
                .execute(&mut as_a)
                .await
                .expect_err("a must not create in public")
                .to_string();
            assert!(
                denied.contains("permission denied for schema public"),
                "{denied}"
            );
            let denied = sqlx::query("CREATE ROLE sneaky")
                .execute(&mut as_a)
                .await
                .expect_err("a must not create roles")
                .to_string();
            assert!(denied.contains("permission denied"), "{denied}");
            as_a.close().await.expect("close");
            as_b.close().await.expect("close");

            // A new password in the Secret is noticed and set, once.
            assert_eq!(
                backends
                    .ensure_postgres(ta, "another-password-0123")
                    .await
                    .expect("rotate"),
                Provisioned::Updated(vec!["password".to_owned()])
            );
            assert_eq!(
                backends
                    .ensure_postgres(ta, "another-password-0123")
                    .await
                    .expect("again"),
                Provisioned::Unchanged
            );

            assert_eq!(
                backends.drop_postgres(ta).await.expect("drop a"),
                Removed::Removed
            );
            assert!(!role_exists(&backends, ta.role).await);
            let schema_left: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(ta.schema)
                    .fetch_one(backends.postgres.pool())
                    .await
                    .expect("query");
            assert!(!schema_left, "the schema and its tables are gone");
            assert_eq!(
                backends.drop_postgres(ta).await.expect("drop a again"),
                Removed::AlreadyGone
            );
            assert!(role_exists(&backends, tb.role).await, "b is untouched");
        },
        async {
            let _ = backends.drop_postgres(ta).await;
            let _ = backends.drop_postgres(tb).await;
        },
    )
    .await;
}

#[tokio::test]
async fn the_clickhouse_database_is_created_and_dropped() {
    let backends = live().await;
    let names = TenantNames::for_tenant(&unique("t"));
    let tenant = ChTenant {
        database: &names.clickhouse_database,
        user: None,
        owner: OWNER,
    };
    with_cleanup(
        async {
            let version = backends
                .clickhouse
                .version()
                .await
                .expect("ClickHouse answers on 127.0.0.1:8123");
            assert!(version.0 >= 18, "{version:?}");
            assert_eq!(
                backends.ensure_clickhouse(tenant).await.expect("create"),
                Provisioned::Created
            );
            assert_eq!(
                backends.ensure_clickhouse(tenant).await.expect("again"),
                Provisioned::Unchanged
            );
            assert!(backends
                .clickhouse
                .database_exists(tenant.database)
                .await
                .expect("exists"));
            assert_eq!(
                backends.drop_clickhouse(tenant).await.expect("drop"),
                Removed::Removed
            );
            assert!(!backends
                .clickhouse
                .database_exists(tenant.database)
                .await
                .expect("exists"));
            assert_eq!(
                backends.drop_clickhouse(tenant).await.expect("again"),
                Removed::AlreadyGone
            );
        },
        async {
            let _ = backends.drop_clickhouse(tenant).await;
        },
    )
    .await;
}

fn project_in(namespace: &str, policy: ReclaimPolicy) -> ZoriProject {
    let mut project = minimal();
    project.metadata.namespace = Some(namespace.to_owned());
    project.metadata.uid = None;
    project.metadata.generation = None;
    project.spec.reclaim_policy = policy;
    project
}

async fn reconcile_current(ctx: &Context<FakeApi, LiveBackends>, key: &ObjectKey) {
    let project: ZoriProject =
        serde_json::from_value(ctx.api.object(key).expect("exists")).expect("project");
    reconcile(&project, ctx).await.expect("reconcile");
}

/// Reconciles a project against the real backends, checks what exists, deletes it, and
/// returns whether the stream, the role and the database still exist.
async fn provision_and_delete(policy: ReclaimPolicy) -> (String, [bool; 3]) {
    let namespace = unique("ns");
    let ctx = Context::new(FakeApi::new(), live().await, Platform::local());
    let project = project_in(&namespace, policy);
    let inserted = ctx
        .api
        .insert(serde_json::to_value(&project).expect("json"))
        .expect("insert");
    let uid = inserted
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .expect("uid")
        .to_owned();
    let key = ObjectKey::new(crd::API_VERSION, crd::KIND, Some(&namespace), "acme");
    let id = zori_operator::naming::derive_tenant_id(&namespace, "acme");
    let names = TenantNames::for_tenant(&id);
    let exists = |ctx: &Context<FakeApi, LiveBackends>| {
        let names = names.clone();
        let backends = ctx.backends.clone();
        async move {
            [
                backends
                    .nats
                    .stream_config(&names.subjects.stream)
                    .await
                    .expect("nats")
                    .is_some(),
                role_exists(&backends, &names.postgres_role).await,
                backends
                    .clickhouse
                    .database_exists(&names.clickhouse_database)
                    .await
                    .expect("clickhouse"),
            ]
        }
    };
    let mut after = [false; 3];
    let backends = ctx.backends.clone();
    with_cleanup(
        async {
            reconcile_current(&ctx, &key).await;
            assert_eq!(
                exists(&ctx).await,
                [true, true, true],
                "everything was provisioned: {:?}",
                ctx.api
                    .object(&key)
                    .and_then(|p| p.pointer("/status/conditions").cloned())
            );
            let secret = ctx
                .api
                .object(&ObjectKey::new(
                    "v1",
                    "Secret",
                    Some(&namespace),
                    "acme-credentials",
                ))
                .expect("secret");
            assert!(secret
                .pointer(&format!("/data/{}", keys::POSTGRES_URL))
                .and_then(Value::as_str)
                .is_some());

            // Idempotent against the real backends too.
            ctx.api.clear_log();
            reconcile_current(&ctx, &key).await;
            assert!(ctx.api.changes().is_empty(), "{:?}", ctx.api.changes());

            ctx.api.delete(&key).await.expect("delete");
            reconcile_current(&ctx, &key).await;
            assert!(ctx.api.object(&key).is_none(), "the finalizer ran");
            after = exists(&ctx).await;
        },
        // As the project: its objects carry its marker.
        drop_tenant(
            &backends,
            &id,
            Owner {
                uid: &uid,
                adopt_unmarked: true,
            },
        ),
    )
    .await;
    (id, after)
}

#[tokio::test]
async fn retain_keeps_and_delete_drops_the_real_data() {
    let (_, kept) = provision_and_delete(ReclaimPolicy::Retain).await;
    assert_eq!(
        kept,
        [true, true, true],
        "Retain keeps stream, role and database"
    );
    let (_, dropped) = provision_and_delete(ReclaimPolicy::Delete).await;
    assert_eq!(
        dropped,
        [false, false, false],
        "Delete drops stream, role and database"
    );
}

#[tokio::test]
async fn objects_marked_for_another_project_are_neither_adopted_nor_dropped() {
    let backends = live().await;
    let names = TenantNames::for_tenant(&unique("tm"));
    let newcomer = Owner {
        uid: "7f3e-newcomer",
        adopt_unmarked: true,
    };
    let pg = |owner| PgTenant {
        role: &names.postgres_role,
        schema: &names.postgres_schema,
        owner,
    };
    let ch = |owner| ChTenant {
        database: &names.clickhouse_database,
        user: None,
        owner,
    };
    let stream = || {
        let mut config = desired_config(
            &names.subjects.stream,
            vec![names.subjects.wildcard.clone()],
            &StreamLimits::default(),
        );
        config.description = Some(format!("test {}", OWNER.marker()));
        config
    };
    with_cleanup(
        async {
            backends
                .ensure_stream(stream(), OWNER)
                .await
                .expect("stream");
            backends
                .ensure_postgres(pg(OWNER), "password-of-owner-0123")
                .await
                .expect("postgres");
            backends
                .ensure_clickhouse(ch(OWNER))
                .await
                .expect("clickhouse");

            let refused = [
                backends.ensure_stream(stream(), newcomer).await.err(),
                backends
                    .ensure_postgres(pg(newcomer), "password-of-newcomer")
                    .await
                    .err(),
                backends.ensure_clickhouse(ch(newcomer)).await.err(),
                backends
                    .delete_stream(&names.subjects.stream, newcomer)
                    .await
                    .err(),
                backends.drop_postgres(pg(newcomer)).await.err(),
                backends.drop_clickhouse(ch(newcomer)).await.err(),
            ];
            for error in refused {
                let error = error.expect("refused");
                assert!(error.is_foreign(), "{error}");
                assert!(
                    error
                        .to_string()
                        .contains("belongs to another ZoriProject (uid 0b9c2f1e-test-owner)"),
                    "{error}"
                );
            }
            // The owner's password still works: the newcomer reset nothing.
            connect_as(&names.postgres_role, "password-of-owner-0123").await;
            assert!(role_exists(&backends, &names.postgres_role).await);
            assert!(backends
                .clickhouse
                .database_exists(&names.clickhouse_database)
                .await
                .expect("exists"));

            // An unmarked role (from before markers) is adopted only when allowed.
            sqlx::query(&format!("COMMENT ON ROLE {} IS NULL", names.postgres_role))
                .execute(backends.postgres.pool())
                .await
                .expect("unmark role");
            sqlx::query(&format!(
                "COMMENT ON SCHEMA {} IS NULL",
                names.postgres_schema
            ))
            .execute(backends.postgres.pool())
            .await
            .expect("unmark schema");
            let stranger = Owner {
                uid: "1a2b-stranger",
                adopt_unmarked: false,
            };
            let error = backends
                .ensure_postgres(pg(stranger), "password-of-stranger")
                .await
                .expect_err("a newcomer never adopts an unmarked role");
            assert!(
                error.to_string().contains("without an owner marker"),
                "{error}"
            );
            assert_eq!(
                backends
                    .ensure_postgres(
                        pg(Owner {
                            adopt_unmarked: true,
                            ..OWNER
                        }),
                        "password-of-owner-0123"
                    )
                    .await
                    .expect("the pinned owner adopts and stamps it"),
                Provisioned::Updated(vec!["owner marker".to_owned()])
            );
            let comment: Option<String> = sqlx::query_scalar(
                "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            )
            .bind(&names.postgres_role)
            .fetch_one(backends.postgres.pool())
            .await
            .expect("comment");
            assert_eq!(comment, Some(OWNER.marker()));
        },
        drop_tenant(&backends, &names.tenant_id, OWNER),
    )
    .await;
}

/// Runs one command as a tenant; the error text when Redis refuses it.
async fn as_tenant(url: &str, command: &mut redis::Cmd) -> Result<redis::Value, String> {
    let client = redis::Client::open(url).expect("tenant URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    command
        .query_async(&mut connection)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_tenant_redis_user_reaches_only_its_own_keys() {
    let backends = live().await;
    let a = TenantNames::for_tenant(&unique("ra"));
    let b = TenantNames::for_tenant(&unique("rb"));
    let url_a = tenant_url(REDIS_URL, &a.redis_user, "password-of-a-0123").expect("url");
    let own_key = format!(
        "{}rate",
        zori_core::event::RedisKeys::for_tenant(&a.tenant_id).prefix
    );
    let other_key = format!(
        "{}rate",
        zori_core::event::RedisKeys::for_tenant(&b.tenant_id).prefix
    );
    with_cleanup(
        async {
            for (names, password) in [(&a, "password-of-a-0123"), (&b, "password-of-b-0123")] {
                let tenant = RedisTenant {
                    user: &names.redis_user,
                    rules: &names.redis_rules,
                    password,
                };
                assert_eq!(
                    backends.ensure_redis(tenant).await.expect("create"),
                    Provisioned::Created
                );
                assert_eq!(
                    backends.ensure_redis(tenant).await.expect("again"),
                    Provisioned::Unchanged
                );
            }
            assert_eq!(
                as_tenant(&url_a, redis::cmd("INCRBY").arg(&own_key).arg(1)).await,
                Ok(redis::Value::Int(1)),
                "the rate limiter's command on its own prefix works"
            );
            as_tenant(&url_a, redis::cmd("EXPIRE").arg(&own_key).arg(60))
                .await
                .expect("EXPIRE on its own key");
            for (what, mut command) in [
                (
                    "INCRBY on B's key",
                    redis::cmd("INCRBY").arg(&other_key).arg(1).clone(),
                ),
                ("GET of B's key", redis::cmd("GET").arg(&other_key).clone()),
                (
                    "GET of its own key",
                    redis::cmd("GET").arg(&own_key).clone(),
                ),
                ("KEYS", redis::cmd("KEYS").arg("*").clone()),
                ("FLUSHALL", redis::cmd("FLUSHALL").clone()),
                (
                    "SUBSCRIBE",
                    redis::cmd("PUBLISH").arg("zori").arg("x").clone(),
                ),
                ("ACL", redis::cmd("ACL").arg("LIST").clone()),
            ] {
                let refused = as_tenant(&url_a, &mut command).await;
                let error = refused.expect_err(what);
                assert!(
                    error.contains("NOPERM") || error.contains("no permissions"),
                    "{what}: {error}"
                );
            }
            let wrong = tenant_url(REDIS_URL, &a.redis_user, "not-the-password").expect("url");
            let error = as_tenant(&wrong, &mut redis::cmd("PING"))
                .await
                .expect_err("a wrong password is refused");
            assert!(
                error.to_lowercase().contains("authentication failed"),
                "{error}"
            );
        },
        async {
            let admin = redis::Client::open(REDIS_URL).expect("admin");
            if let Ok(mut c) = admin.get_multiplexed_async_connection().await {
                let _: Result<i64, _> = redis::cmd("DEL").arg(&own_key).query_async(&mut c).await;
            }
            for names in [&a, &b] {
                let _ = backends.drop_redis(&names.redis_user).await;
            }
        },
    )
    .await;
    for names in [&a, &b] {
        assert!(
            !backends
                .redis
                .as_ref()
                .expect("redis")
                .exists(&names.redis_user)
                .await
                .expect("ACL GETUSER"),
            "the users were deleted"
        );
    }
}

/// The `StreamBuffer` condition of the project at `key`: `(status, reason, message)`.
fn buffer_condition(
    ctx: &Context<FakeApi, LiveBackends>,
    key: &ObjectKey,
) -> (String, String, String) {
    let project = ctx.api.object(key).expect("project");
    let condition = project
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|all| all.iter().find(|c| c["type"] == "StreamBuffer"))
        .cloned()
        .unwrap_or_else(|| panic!("no StreamBuffer condition: {project:#}"));
    let text = |field: &str| condition[field].as_str().unwrap_or_default().to_owned();
    (text("status"), text("reason"), text("message"))
}

#[tokio::test]
async fn a_filling_stream_buffer_is_seen_in_the_status_and_the_gauge() {
    let namespace = unique("ns");
    let ctx = Context::new(FakeApi::new(), live().await, Platform::local());
    let mut project = project_in(&namespace, ReclaimPolicy::Delete);
    // A buffer of 100 events: the consumer (zori-api) never runs in this test.
    project.spec.stream_limits.max_messages = 100;
    let inserted = ctx
        .api
        .insert(serde_json::to_value(&project).expect("json"))
        .expect("insert");
    let uid = inserted
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .expect("uid")
        .to_owned();
    let key = ObjectKey::new(crd::API_VERSION, crd::KIND, Some(&namespace), "acme");
    let id = zori_operator::naming::derive_tenant_id(&namespace, "acme");
    let names = TenantNames::for_tenant(&id);
    let stream = names.subjects.stream.clone();
    let gauge =
        |ctx: &Context<FakeApi, LiveBackends>| ctx.stream_fill.get(&namespace, "acme", &stream);
    let js = async_nats::jetstream::new(async_nats::connect(NATS_URL).await.expect("NATS answers"));
    let publish = |count: usize| {
        let js = js.clone();
        let subject = format!("zori.{id}.ingress");
        async move {
            for i in 0..count {
                js.publish(subject.clone(), format!("{{\"event\":{i}}}").into())
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
            }
        }
    };
    with_cleanup(
        async {
            reconcile_current(&ctx, &key).await;
            for component in ["ingest", "api"] {
                ctx.api
                    .roll_out(&ObjectKey::new(
                        "apps/v1",
                        "Deployment",
                        Some(&namespace),
                        &format!("acme-{component}"),
                    ))
                    .expect("roll out");
            }
            let project: ZoriProject =
                serde_json::from_value(ctx.api.object(&key).expect("exists")).expect("project");
            assert_eq!(
                reconcile(&project, &ctx).await.expect("reconcile"),
                Next::Requeue(RESYNC),
                "ready, with an empty buffer: looked at again at the resync"
            );
            let (status, reason, message) = buffer_condition(&ctx, &key);
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("True", "BufferAvailable")
            );
            assert_eq!(
                message,
                format!(
                    "stream {stream} holds under 10 % of max_bytes 1073741824 and max_messages 100"
                )
            );
            assert_eq!(gauge(&ctx), Some(0.0));

            // 70 events wait: not yet a warning, but the project is looked at every 30 s.
            publish(70).await;
            let project: ZoriProject =
                serde_json::from_value(ctx.api.object(&key).expect("exists")).expect("project");
            let next = reconcile(&project, &ctx).await.expect("reconcile");
            assert_eq!(next, Next::Requeue(BUFFER_CHECK));
            assert_eq!(buffer_condition(&ctx, &key).0, "True");
            assert_eq!(gauge(&ctx), Some(0.7));

            // 85: the warning, in the status, the gauge and one Warning event.
            publish(15).await;
            reconcile_current(&ctx, &key).await;
            let (status, reason, message) = buffer_condition(&ctx, &key);
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "BufferFilling")
            );
            assert!(
                message.starts_with(&format!("stream {stream} is at least 80 % full")),
                "{message}"
            );
            assert_eq!(gauge(&ctx), Some(0.85));
            let warnings = |ctx: &Context<FakeApi, LiveBackends>| {
                ctx.api
                    .events()
                    .into_iter()
                    .filter(|e| e.reason == "BufferFilling")
                    .count()
            };
            assert_eq!(warnings(&ctx), 1);
            // Not part of Ready: the tenant still takes events.
            let ready = ctx
                .api
                .object(&key)
                .and_then(|p| p.pointer("/status/conditions/0/type").cloned());
            assert_eq!(ready, Some(Value::from("Ready")));
            // The same fill again: nothing new written or sent.
            ctx.api.clear_log();
            reconcile_current(&ctx, &key).await;
            assert!(ctx.api.changes().is_empty(), "{:?}", ctx.api.changes());
            assert_eq!(warnings(&ctx), 0, "no second Warning for the same fill");

            // Full: ingest would refuse now (discard new), and the condition says so.
            publish(15).await;
            reconcile_current(&ctx, &key).await;
            let (_, _, message) = buffer_condition(&ctx, &key);
            assert!(message.contains("is full: ingest answers 503"), "{message}");
            assert_eq!(gauge(&ctx), Some(1.0));

            // The consumer is back and drains the stream: the condition clears.
            js.get_stream(&stream)
                .await
                .expect("stream")
                .purge()
                .await
                .expect("purge the stream");
            reconcile_current(&ctx, &key).await;
            let (status, reason, _) = buffer_condition(&ctx, &key);
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("True", "BufferAvailable")
            );
            assert_eq!(gauge(&ctx), Some(0.0));

            ctx.api.delete(&key).await.expect("delete");
            reconcile_current(&ctx, &key).await;
            assert_eq!(
                gauge(&ctx),
                None,
                "the series of a deleted project is dropped"
            );
        },
        drop_tenant(
            &ctx.backends,
            &id,
            Owner {
                uid: &uid,
                adopt_unmarked: true,
            },
        ),
    )
    .await;
}
