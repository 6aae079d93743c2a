//! A hostile tenant against the machine's Redis: two tenants each get the ACL user the
//! operator creates (docs/operator-guide.md, "Security model"): their own key prefix and only
//! the commands the rate limiter sends ([`zori_core::event::RedisKeys::acl_rules`]). With tenant
//! A's credential, every way of reading, writing, listing or deleting tenant B's keys is
//! refused, while A's own ingest rate-limits through Redis without a single error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{event, random_tenant, visitor, TestServer, REDIS_URL};
use redis::{aio::MultiplexedConnection, Value};
use zori_core::event::RedisKeys;

/// One tenant's Redis ACL user, deleted when dropped.
struct AclUser {
    name: String,
    password: String,
    tenant: String,
}

impl AclUser {
    /// `ACL SETUSER` exactly as documented for the operator.
    async fn create(admin: &mut MultiplexedConnection, tenant: &str) -> AclUser {
        let user = AclUser {
            name: RedisKeys::acl_user(tenant),
            password: uuid::Uuid::new_v4().simple().to_string(),
            tenant: tenant.to_owned(),
        };
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(&user.name)
            .arg("reset")
            .arg("on")
            .arg(format!(">{}", user.password));
        for rule in RedisKeys::for_tenant(tenant).acl_rules().split_whitespace() {
            cmd.arg(rule);
        }
        let _: () = cmd.query_async(admin).await.expect("ACL SETUSER");
        user
    }

    fn prefix_pattern(&self) -> String {
        format!("{}*", RedisKeys::for_tenant(&self.tenant).prefix)
    }

    fn url(&self) -> String {
        format!("redis://{}:{}@127.0.0.1:6379", self.name, self.password)
    }

    async fn connect(&self) -> MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("the ACL user can log in")
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(REDIS_URL) {
            if let Ok(mut conn) = client.get_connection() {
                let _: Result<Value, _> = redis::cmd("ACL")
                    .arg("DELUSER")
                    .arg(&self.name)
                    .query(&mut conn);
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(self.prefix_pattern())
                    .query(&mut conn)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<Value, _> = redis::cmd("DEL").arg(&keys).query(&mut conn);
                }
            }
        }
    }
}

/// Runs `cmd` as the given connection's user and returns Redis' refusal, failing the test if it
/// was not refused for lack of permission.
async fn refused(conn: &mut MultiplexedConnection, what: &str, cmd: &redis::Cmd) -> String {
    match cmd.query_async::<Value>(conn).await {
        Ok(value) => panic!("{what}: allowed, answered {value:?}"),
        Err(error) => {
            let text = error.to_string();
            assert!(
                text.contains("NOPERM") || text.contains("no permissions"),
                "{what}: refused for another reason: {text}"
            );
            text
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_redis_user_cannot_touch_another_tenants_keys() {
    let mut admin = redis::Client::open(REDIS_URL)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis is up");
    let (tenant_a, tenant_b) = (random_tenant(), random_tenant());
    let user_a = AclUser::create(&mut admin, &tenant_a).await;
    let user_b = AclUser::create(&mut admin, &tenant_b).await;

    // B's counter, written with B's own credential the way the limiter writes it.
    let b_key = format!("zori:{{{tenant_b}}}:rl:1:v:0123456789abcdef0123456789abcdef");
    let mut as_b = user_b.connect().await;
    let script = redis::Script::new(
        "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) redis.call('EXPIRE', KEYS[1], 3600) return n",
    );
    let n: i64 = script
        .key(&b_key)
        .arg(5)
        .invoke_async(&mut as_b)
        .await
        .expect("B writes its own prefix");
    assert_eq!(n, 5);

    let mut as_a = user_a.connect().await;
    let cmd = |name: &str| redis::cmd(name);
    let attacks: Vec<(&str, redis::Cmd)> = vec![
        ("GET B's key", cmd("GET").arg(&b_key).clone()),
        ("SET B's key", cmd("SET").arg(&b_key).arg(0).clone()),
        (
            "INCRBY B's key",
            cmd("INCRBY").arg(&b_key).arg(1000).clone(),
        ),
        ("DEL B's key", cmd("DEL").arg(&b_key).clone()),
        ("EXPIRE B's key", cmd("EXPIRE").arg(&b_key).arg(1).clone()),
        ("KEYS", cmd("KEYS").arg("*").clone()),
        ("SCAN", cmd("SCAN").arg(0).clone()),
        ("TYPE B's key", cmd("TYPE").arg(&b_key).clone()),
        ("FLUSHALL", cmd("FLUSHALL").clone()),
        ("ACL LIST", cmd("ACL").arg("LIST").clone()),
        ("CONFIG GET", cmd("CONFIG").arg("GET").arg("*").clone()),
        (
            "EVAL (not needed by the limiter)",
            cmd("EVAL").arg("return 1").arg(0).clone(),
        ),
        ("PUBLISH", cmd("PUBLISH").arg("zori").arg("x").clone()),
    ];
    for (what, attack) in &attacks {
        refused(&mut as_a, what, attack).await;
    }
    // The limiter's own script, aimed at B's key: refused on the declared key.
    let aimed = script
        .key(&b_key)
        .arg(1000)
        .invoke_async::<i64>(&mut as_a)
        .await;
    let error = aimed.expect_err("A's script on B's key").to_string();
    assert!(
        error.contains("NOPERM") || error.contains("no permissions"),
        "{error}"
    );
    // A script reaching B's key without declaring it: refused inside the script.
    let sneaky = redis::Script::new(&format!("return redis.call('INCRBY', '{b_key}', 1000)"));
    let error = sneaky
        .key(format!("zori:{{{tenant_a}}}:rl:decoy"))
        .invoke_async::<i64>(&mut as_a)
        .await
        .expect_err("A's script reaching B's key")
        .to_string();
    assert!(
        error.contains("can't access at least one of the keys"),
        "{error}"
    );

    // Nothing A tried changed B's counter.
    let b_value: i64 = redis::cmd("GET")
        .arg(&b_key)
        .query_async(&mut admin)
        .await
        .expect("get");
    assert_eq!(b_value, 5);

    // Meanwhile A's ingest, connected as A, rate-limits through Redis with no error.
    let server = TestServer::start_with(
        &tenant_a,
        &[
            "--redis-url",
            &user_a.url(),
            "--rate-limit-per-visitor",
            "2",
            "--rate-limit-window",
            "3600s",
        ],
    )
    .await;
    let visitor = visitor();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            server
                .track(&event("click", &visitor))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429]);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("zori_ingest_rate_limiter_errors_total 0"),
        "{metrics}"
    );
    let ready = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "PING is allowed: readiness sees redis");
    let a_keys: Vec<String> = redis::cmd("KEYS")
        .arg(user_a.prefix_pattern())
        .query_async(&mut admin)
        .await
        .expect("keys");
    assert!(!a_keys.is_empty(), "A's counters are under A's prefix");
    server.stop().await;
    drop((user_a, user_b));
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut admin)
        .await
        .expect("users");
    assert!(
        !users
            .iter()
            .any(|u| u.contains(&tenant_a) || u.contains(&tenant_b)),
        "the test's ACL users are deleted: {users:?}"
    );
}
