//! From a `ZoriProject` to an attributed dollar: the operator reconciles a project against the
//! real NATS, PostgreSQL and ClickHouse (the Kubernetes API is the in-memory one), the test
//! reads the settings of the ingest and api Deployments it applied, starts the real binaries
//! with exactly those settings, sends a tracked visit and a signed Stripe webhook, and reads the
//! attributed revenue from the report.
//!
//! It runs twice: with the dev defaults (one shared NATS connection), and isolated (NATS in
//! operator mode with an account per tenant, per-tenant Redis ACL users), where the binaries
//! connect with the tenant's own NATS credentials.
//!
//! The only setting changed is the listen address (`ZORI_*_LISTEN`), so tests can run side by
//! side on one machine: in a pod each binary has its own network namespace.

use zori_e2e::{faults::NatsOperatorServer, operator};
use zori_operator::{
    api::{fake::FakeApi, KubeApi, ObjectKey},
    backends::{
        clickhouse::ClickHouseBackend, nats::NatsBackend, postgres::PostgresBackend,
        redis::RedisBackend, LiveBackends,
    },
    config::{ClickHouseUsers, Platform},
    crd::{self, ZoriProject},
    nats_auth::AccountKeys,
    reconcile::{reconcile, Context},
    status::types,
};

async fn journey(ctx: Context<FakeApi, LiveBackends>) {
    let namespace = format!("opj{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    ctx.api
        .insert(operator::stripe_secret(&namespace))
        .expect("stripe secret");
    ctx.api
        .insert(operator::project(&namespace, "shop", "uid-shop"))
        .expect("project");
    let key = ObjectKey::new(crd::API_VERSION, crd::KIND, Some(&namespace), "shop");
    let current: ZoriProject =
        serde_json::from_value(ctx.api.object(&key).expect("project")).expect("project");
    reconcile(&current, &ctx).await.expect("reconcile");
    let current: ZoriProject =
        serde_json::from_value(ctx.api.object(&key).expect("project")).expect("project");
    let isolated = current
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == types::ISOLATED)
        .expect("an Isolated condition");
    let isolated_mode = ctx.platform.nats_accounts.is_some();
    assert_eq!(
        isolated.message.contains("NATS"),
        !isolated_mode,
        "Isolated names NATS exactly when tenants share it: {isolated:?}"
    );

    let env = operator::attributes_a_payment(&ctx.api, &namespace, "shop").await;
    for vars in [&env.ingest, &env.api] {
        assert_eq!(
            vars.iter().any(|(k, _)| k == "ZORI_NATS_CREDS"),
            isolated_mode,
            "the binaries get their own NATS credentials exactly in accounts mode"
        );
    }

    // Delete runs the finalizer with reclaimPolicy Delete: stream, schema and database go.
    ctx.api.delete(&key).await.expect("delete");
    let current: ZoriProject = serde_json::from_value(
        ctx.api
            .object(&key)
            .expect("still there until the finalizer ran"),
    )
    .expect("project");
    reconcile(&current, &ctx)
        .await
        .expect("reconcile the deletion");
    assert!(
        ctx.api.object(&key).is_none(),
        "the finalizer ran and released the project"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconciled_project_attributes_a_payment() {
    let backends = LiveBackends {
        nats: NatsBackend::connect(zori_e2e::NATS_URL)
            .await
            .expect("NATS"),
        postgres: PostgresBackend::connect_lazy(zori_e2e::POSTGRES_URL).expect("postgres url"),
        clickhouse: ClickHouseBackend::new(zori_e2e::CLICKHOUSE_URL, None, None)
            .expect("clickhouse client"),
        redis: None,
    };
    journey(Context::new(FakeApi::new(), backends, Platform::local())).await;
}

/// The platform of an isolated install against `nats` (a test-owned server in operator mode).
pub async fn isolated(nats: &NatsOperatorServer) -> Context<FakeApi, LiveBackends> {
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

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_project_attributes_a_payment() {
    let nats = NatsOperatorServer::start().await;
    journey(isolated(&nats).await).await;
}
