//! A hostile tenant against an isolated install (issue 12's acceptance): the operator (library
//! `reconcile`, in-memory Kubernetes API) provisions two tenants A and B against a test-owned
//! `nats-server` in operator mode (an account per tenant), the machine's Redis (per-tenant ACL
//! users) and PostgreSQL (per-tenant roles). (The machine's ClickHouse 18.16 has no SQL users,
//! so `Isolated` names ClickHouse, and only ClickHouse, as shared.) Then, with **A's credentials read from A's
//! Secret**, every way into B is tried and each refusal asserted: NATS subscribe, publish,
//! stream and consumer info, delete and purge; Redis reads of B's keys; PostgreSQL reads of
//! B's schema. A forged event A publishes lands in A's own stream only, and A's own ingest →
//! api path still attributes a payment end to end with exactly the env the operator applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use async_nats::{jetstream, Event};
use tokio::sync::Mutex;
use zori_e2e::{faults::NatsOperatorServer, operator};
use zori_operator::{
    api::{fake::FakeApi, KubeApi, ObjectKey},
    backends::{
        clickhouse::ClickHouseBackend, nats::NatsBackend, postgres::PostgresBackend,
        redis::RedisBackend, LiveBackends,
    },
    builders::secret::{decode, keys},
    config::{ClickHouseUsers, Platform},
    crd::{self, ZoriProject},
    nats_auth::{self, AccountKeys, KeyPair, KeyPairType, Permission, UserPermissions},
    reconcile::{reconcile, Context},
    status::{types, ConditionStatus},
};

struct Tenant {
    name: &'static str,
    id: String,
    /// The project's uid, as stamped in the backends' owner markers.
    uid: String,
    secret: std::collections::BTreeMap<String, String>,
}

impl Tenant {
    fn stream(&self) -> String {
        format!("ZORI_{}", self.id.to_ascii_uppercase())
    }
}

async fn context(nats: &NatsOperatorServer) -> Context<FakeApi, LiveBackends> {
    let keys = AccountKeys::new(&nats.account_key).expect("account key");
    let backends = LiveBackends {
        nats: NatsBackend::connect_accounts(
            &nats.url(),
            &nats.system_creds,
            &nats.signing_key,
            keys.clone(),
        )
        .await
        .expect("NATS system account"),
        postgres: PostgresBackend::connect_lazy(zori_e2e::POSTGRES_URL).expect("postgres url"),
        clickhouse: ClickHouseBackend::new(zori_e2e::CLICKHOUSE_URL, None, None)
            .expect("clickhouse client"),
        redis: Some(RedisBackend::new(zori_e2e::REDIS_URL).expect("redis admin url")),
    };
    let mut platform = Platform::local();
    platform.nats_url = nats.url();
    platform.nats_tenant_is_admin = false;
    platform.nats_accounts = Some(keys);
    platform.redis_per_tenant = true;
    // The machine's ClickHouse (18.16) has no SQL users: tenants share its user, and
    // `Isolated` says so naming ClickHouse only.
    platform.clickhouse_users = ClickHouseUsers::Shared {
        user: None,
        password: None,
    };
    Context::new(FakeApi::new(), backends, platform)
}

async fn provision(
    ctx: &Context<FakeApi, LiveBackends>,
    namespace: &str,
    name: &'static str,
) -> Tenant {
    let mut project = operator::project(namespace, name, &format!("uid-{name}-{namespace}"));
    if name == "retained" {
        project["spec"]["reclaimPolicy"] = "Retain".into();
    }
    ctx.api.insert(project).expect("project");
    let key = ObjectKey::new(crd::API_VERSION, crd::KIND, Some(namespace), name);
    let current: ZoriProject =
        serde_json::from_value(ctx.api.object(&key).expect("project")).expect("project");
    reconcile(&current, ctx).await.expect("reconcile");
    let current: ZoriProject =
        serde_json::from_value(ctx.api.object(&key).expect("project")).expect("project");
    let status = current.status.expect("a status");
    let isolated = status
        .conditions
        .iter()
        .find(|c| c.type_ == types::ISOLATED)
        .expect("an Isolated condition");
    assert!(
        isolated.message.contains("ClickHouse")
            && !isolated.message.contains("NATS")
            && !isolated.message.contains("Redis"),
        "NATS and Redis isolate the tenant: {isolated:?}"
    );
    for type_ in [
        types::STREAM,
        types::POSTGRES,
        types::REDIS,
        types::CLICKHOUSE,
    ] {
        let condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition: {:#?}", status.conditions));
        assert_eq!(condition.status, ConditionStatus::True, "{condition:?}");
    }
    let secret = ctx
        .api
        .object(&ObjectKey::new(
            "v1",
            "Secret",
            Some(namespace),
            &format!("{name}-credentials"),
        ))
        .expect("the tenant Secret");
    Tenant {
        name,
        id: status.tenant_id.expect("a pinned tenant id"),
        uid: current.metadata.uid.clone().expect("a uid"),
        secret: decode(&serde_json::from_value(secret).expect("a Secret")),
    }
}

async fn delete(ctx: &Context<FakeApi, LiveBackends>, namespace: &str, name: &str) {
    let key = ObjectKey::new(crd::API_VERSION, crd::KIND, Some(namespace), name);
    ctx.api.delete(&key).await.expect("delete");
    if let Some(current) = ctx.api.object(&key) {
        let current: ZoriProject = serde_json::from_value(current).expect("project");
        reconcile(&current, ctx)
            .await
            .expect("reconcile the deletion");
    }
    assert!(
        ctx.api.object(&key).is_none(),
        "the finalizer released {name}"
    );
}

/// A NATS connection with the `.creds` of a tenant Secret, recording the server's errors.
struct Attacker {
    client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Attacker {
    async fn connect(url: &str, creds: &str, inbox_prefix: &str) -> Attacker {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        let client = async_nats::ConnectOptions::new()
            .credentials(creds)
            .expect("the Secret holds NATS credentials")
            .custom_inbox_prefix(inbox_prefix)
            .request_timeout(Some(Duration::from_secs(1)))
            .event_callback(move |event| {
                let sink = sink.clone();
                async move {
                    if let Event::ServerError(error) = event {
                        sink.lock()
                            .await
                            .push(error.to_string().to_ascii_lowercase());
                    }
                }
            })
            .connect(url)
            .await
            .expect("A's credentials log in");
        Attacker { client, errors }
    }

    /// Waits for the server's `Permissions Violation for <what> to "<subject>"`.
    async fn refused(&self, what: &str, subject: &str) {
        let expected =
            format!("permissions violation for {what} to \"{subject}\"").to_ascii_lowercase();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if self
                .errors
                .lock()
                .await
                .iter()
                .any(|e| e.contains(&expected))
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {expected:?} from the server; its errors: {:?}",
                self.errors.lock().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn js(&self) -> jetstream::Context {
        let mut js = jetstream::new(self.client.clone());
        js.set_timeout(Duration::from_secs(1));
        js
    }
}

/// A user of `tenant`'s account with every permission (what the account key could mint):
/// the account boundary alone must keep B out of reach.
async fn account_superuser(nats: &NatsOperatorServer, tenant: &str) -> async_nats::Client {
    let account = AccountKeys::new(&nats.account_key)
        .expect("key")
        .account(tenant)
        .expect("account key");
    let user = KeyPair::new(KeyPairType::User);
    let jwt = nats_auth::user_jwt(
        &account,
        &user.public_key(),
        "superuser",
        &UserPermissions {
            publish: Permission {
                allow: vec![">".to_owned()],
                deny: Vec::new(),
            },
            subscribe: Permission {
                allow: vec![">".to_owned()],
                deny: Vec::new(),
            },
        },
        Some(nats_auth::unix_now()),
        None,
    )
    .expect("user JWT");
    async_nats::ConnectOptions::new()
        .credentials(&nats_auth::creds(&jwt, &user.seed().expect("seed")))
        .expect("creds")
        .connect(nats.url())
        .await
        .expect("a user of the account logs in")
}

async fn messages_in(client: &async_nats::Client, stream: &str) -> u64 {
    jetstream::new(client.clone())
        .get_stream(stream)
        .await
        .expect("the stream exists")
        .info()
        .await
        .expect("stream info")
        .state
        .messages
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_reach_tenant_b() {
    let nats = NatsOperatorServer::start().await;
    let ctx = context(&nats).await;
    let namespace = format!("iso{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    ctx.api
        .insert(operator::stripe_secret(&namespace))
        .expect("stripe secret");
    let a = provision(&ctx, &namespace, "a").await;
    let b = provision(&ctx, &namespace, "b").await;
    assert_ne!(a.id, b.id);
    assert_ne!(a.secret[keys::NATS_CREDS], b.secret[keys::NATS_CREDS]);

    // B's stream holds one event of B's (published by a user of B's account).
    let b_owner = account_superuser(&nats, &b.id).await;
    let b_js = jetstream::new(b_owner.clone());
    b_js.publish(format!("zori.{}.ingress", b.id), "b's event".into())
        .await
        .expect("publish")
        .await
        .expect("B's stream acknowledges");
    assert_eq!(messages_in(&b_owner, &b.stream()).await, 1);

    // ---- NATS, with A's .creds from A's Secret ----
    let attacker = Attacker::connect(
        &nats.url(),
        &a.secret[keys::NATS_CREDS],
        &format!("_INBOX_{}", a.id),
    )
    .await;
    let a_js = attacker.js();

    for subject in [
        format!("zori.{}.>", b.id),
        "zori.>".to_owned(),
        ">".to_owned(),
    ] {
        let _subscription = attacker
            .client
            .subscribe(subject.clone())
            .await
            .expect("sent");
        attacker.client.flush().await.expect("flush");
        attacker.refused("subscription", &subject).await;
    }

    let b_ingress = format!("zori.{}.ingress", b.id);
    attacker
        .client
        .publish(b_ingress.clone(), "forged into B".into())
        .await
        .expect("sent");
    attacker.client.flush().await.expect("flush");
    attacker.refused("publish", &b_ingress).await;

    let error = a_js
        .get_stream(b.stream())
        .await
        .expect_err("B's stream info");
    assert!(error.to_string().contains("timed out"), "{error}");
    attacker
        .refused("publish", &format!("$JS.API.STREAM.INFO.{}", b.stream()))
        .await;

    let error = a_js
        .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
            nats_auth::API_CONSUMER,
            b.stream(),
        )
        .await
        .expect_err("B's consumer info");
    assert!(error.to_string().contains("timed out"), "{error}");
    attacker
        .refused(
            "publish",
            &format!(
                "$JS.API.CONSUMER.INFO.{}.{}",
                b.stream(),
                nats_auth::API_CONSUMER
            ),
        )
        .await;

    let error = a_js
        .delete_stream(b.stream())
        .await
        .err()
        .expect("deleting B's stream is refused");
    assert!(error.to_string().contains("timed out"), "{error}");
    attacker
        .refused("publish", &format!("$JS.API.STREAM.DELETE.{}", b.stream()))
        .await;

    for stream in [b.stream(), a.stream()] {
        let subject = format!("$JS.API.STREAM.PURGE.{stream}");
        let error = attacker
            .client
            .request(subject.clone(), "".into())
            .await
            .expect_err("purge");
        assert_eq!(
            error.kind(),
            async_nats::RequestErrorKind::TimedOut,
            "purge {stream}: {error}"
        );
        attacker.refused("publish", &subject).await;
    }
    // Not even its own stream can A delete: the operator owns it.
    let error = a_js
        .delete_stream(a.stream())
        .await
        .err()
        .expect("deleting A's own stream is refused");
    assert!(error.to_string().contains("timed out"), "{error}");

    // The account boundary holds without the user permissions too: a user of A's account
    // allowed everything does not even see B's stream or B's traffic.
    let a_superuser = account_superuser(&nats, &a.id).await;
    let mut everything = a_superuser.subscribe(">").await.expect("subscribe");
    a_superuser.flush().await.expect("flush");
    let error = jetstream::new(a_superuser.clone())
        .get_stream(b.stream())
        .await
        .expect_err("B's stream is not in A's account");
    assert!(error.to_string().contains("stream not found"), "{error}");
    b_js.publish(b_ingress.clone(), "b's second event".into())
        .await
        .expect("publish")
        .await
        .expect("B's stream acknowledges");
    while let Ok(Some(message)) = tokio::time::timeout(
        Duration::from_millis(500),
        futures::StreamExt::next(&mut everything),
    )
    .await
    {
        assert!(
            !message.subject.as_str().contains(&b.id),
            "A's account saw B's message on {}",
            message.subject
        );
    }

    // A forged event into A's own subject lands in A's stream only.
    let ack = a_js
        .publish(
            format!("zori.{}.ingress", a.id),
            r#"{"forged":true}"#.into(),
        )
        .await
        .expect("publish")
        .await
        .expect("A's stream acknowledges");
    assert_eq!(ack.stream, a.stream());
    assert_eq!(
        messages_in(&b_owner, &b.stream()).await,
        2,
        "B has only B's two events"
    );

    // ---- Redis, with A's URL from A's Secret ----
    let mut admin = redis::Client::open(zori_e2e::REDIS_URL)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let b_key = format!("zori:{{{}}}:rl:probe", b.id);
    let _: () = redis::cmd("SET")
        .arg(&b_key)
        .arg("7")
        .query_async(&mut admin)
        .await
        .expect("SET");
    let mut as_a = redis::Client::open(a.secret[keys::REDIS_URL].as_str())
        .expect("A's Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("A's ACL user logs in");
    for cmd in [
        redis::cmd("GET").arg(&b_key).clone(),
        redis::cmd("INCRBY").arg(&b_key).arg(1).clone(),
        redis::cmd("KEYS").arg("*").clone(),
    ] {
        let error = cmd
            .query_async::<redis::Value>(&mut as_a)
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("NOPERM"), "{error}");
    }
    let _: () = redis::cmd("DEL")
        .arg(&b_key)
        .query_async(&mut admin)
        .await
        .expect("DEL");

    // ---- PostgreSQL, with A's URL from A's Secret ----
    let b_schema = format!("zori_{}", b.id);
    let admin_pg = sqlx::PgPool::connect(zori_e2e::POSTGRES_URL)
        .await
        .expect("admin");
    sqlx::query(&format!(
        "CREATE TABLE \"{b_schema}\".secrets (visitor text)"
    ))
    .execute(&admin_pg)
    .await
    .expect("a table of B's");
    let a_pg = sqlx::PgPool::connect(&a.secret[keys::POSTGRES_URL])
        .await
        .expect("A's role logs in");
    let error = sqlx::query(&format!("SELECT * FROM \"{b_schema}\".secrets"))
        .fetch_all(&a_pg)
        .await
        .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains(&format!("permission denied for schema {b_schema}")),
        "{error}"
    );
    let mut conn = a_pg.acquire().await.expect("connection");
    sqlx::query(&format!("SET search_path TO \"{b_schema}\""))
        .execute(&mut *conn)
        .await
        .expect("search_path itself is no grant");
    let error = sqlx::query("SELECT * FROM secrets")
        .fetch_all(&mut *conn)
        .await
        .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("relation \"secrets\" does not exist"),
        "{error}"
    );
    let error = sqlx::query(&format!("SET ROLE \"{b_schema}\""))
        .execute(&mut *conn)
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("permission denied"), "{error}");
    drop(conn);
    a_pg.close().await;

    // ---- A's own path still works, with exactly the env the operator applied ----
    operator::attributes_a_payment(&ctx.api, &namespace, a.name).await;
    assert_eq!(
        messages_in(&b_owner, &b.stream()).await,
        2,
        "nothing of A's reached B"
    );

    delete(&ctx, &namespace, a.name).await;
    delete(&ctx, &namespace, b.name).await;
    let error = account_superuser_connect_error(&nats, &b.id).await;
    assert!(error.contains("authorization"), "{error}");
}

/// Connecting as a user of a deleted tenant's account is refused.
async fn account_superuser_connect_error(nats: &NatsOperatorServer, tenant: &str) -> String {
    let account = AccountKeys::new(&nats.account_key)
        .expect("key")
        .account(tenant)
        .expect("account key");
    let user = KeyPair::new(KeyPairType::User);
    let jwt = nats_auth::user_jwt(
        &account,
        &user.public_key(),
        "late",
        &UserPermissions::default(),
        Some(nats_auth::unix_now()),
        None,
    )
    .expect("user JWT");
    async_nats::ConnectOptions::new()
        .credentials(&nats_auth::creds(&jwt, &user.seed().expect("seed")))
        .expect("creds")
        .connect(nats.url())
        .await
        .err()
        .map(|e| e.to_string().to_ascii_lowercase())
        .unwrap_or_else(|| "connected".to_owned())
}

/// `reclaimPolicy: Retain` keeps the tenant's account and stream (and its events).
#[tokio::test(flavor = "multi_thread")]
async fn retain_keeps_the_account_and_the_stream() {
    use zori_operator::backends::{Backends, ChTenant, Owner, PgTenant};
    let nats = NatsOperatorServer::start().await;
    let ctx = context(&nats).await;
    let namespace = format!("ret{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    ctx.api
        .insert(operator::stripe_secret(&namespace))
        .expect("stripe secret");
    let tenant = provision(&ctx, &namespace, "retained").await;
    let user = account_superuser(&nats, &tenant.id).await;
    jetstream::new(user.clone())
        .publish(format!("zori.{}.ingress", tenant.id), "kept".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    drop(user);
    delete(&ctx, &namespace, tenant.name).await;

    let kept = ctx.backends.nats.stream_config(&tenant.stream()).await;
    let user = account_superuser(&nats, &tenant.id).await;
    let messages = messages_in(&user, &tenant.stream()).await;

    // Clean the machine's shared backends before asserting.
    let owner = Owner {
        uid: &tenant.uid,
        adopt_unmarked: false,
    };
    let names = zori_operator::naming::TenantNames::for_tenant(&tenant.id);
    let dropped = [
        ctx.backends
            .drop_postgres(PgTenant {
                role: &names.postgres_role,
                schema: &names.postgres_schema,
                owner,
            })
            .await,
        ctx.backends
            .drop_clickhouse(ChTenant {
                database: &names.clickhouse_database,
                user: None,
                owner,
            })
            .await,
        ctx.backends.drop_redis(&names.redis_user).await,
    ];
    for result in dropped {
        result.expect("cleanup");
    }
    assert!(
        kept.expect("the stream is readable").is_some(),
        "Retain keeps the stream in the tenant's account"
    );
    assert_eq!(messages, 1, "and its events");
}

/// A resolver that does not allow deleting accounts: `reclaimPolicy: Delete` still completes,
/// and the tenant's account is left disabled (no connection is accepted).
#[tokio::test(flavor = "multi_thread")]
async fn delete_disables_the_account_where_the_resolver_keeps_it() {
    let nats = NatsOperatorServer::start_with(false).await;
    let ctx = context(&nats).await;
    let namespace = format!("dis{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    ctx.api
        .insert(operator::stripe_secret(&namespace))
        .expect("stripe secret");
    let tenant = provision(&ctx, &namespace, "a").await;
    assert_eq!(
        account_superuser_connect_error(&nats, &tenant.id).await,
        "connected",
        "the account takes connections while the tenant lives"
    );
    delete(&ctx, &namespace, tenant.name).await;
    let error = account_superuser_connect_error(&nats, &tenant.id).await;
    assert!(error.contains("maximum"), "{error}");
}
