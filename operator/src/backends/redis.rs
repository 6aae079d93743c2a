//! The tenant's Redis ACL user (Redis 6 and later): `ACL SETUSER zori-<id> reset on >password`
//! with the rules of [`zori_core::event::RedisKeys::acl_rules`]: only the tenant's key prefix,
//! no Pub/Sub channel, only the commands the rate limiter runs. The operator's own connection
//! (`--redis-admin-url`) needs the `ACL` command; tenants never see it.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{Provisioned, Removed};

/// How long one ACL call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("failed to read the Redis admin URL: {0}")]
    Url(String),
    #[error("failed to {action} Redis ACL user {user}: {message}")]
    Command {
        action: &'static str,
        user: String,
        message: String,
    },
}

/// Redis with the operator's admin connection.
#[derive(Clone, Debug)]
pub struct RedisBackend {
    client: redis::Client,
}

/// The tenant's ACL user.
#[derive(Debug, Clone, Copy)]
pub struct RedisTenant<'a> {
    pub user: &'a str,
    /// Rules after `reset on >password`, space separated.
    pub rules: &'a str,
    pub password: &'a str,
}

impl RedisBackend {
    /// A client on the admin URL that connects on each call.
    pub fn new(admin_url: &str) -> Result<Self, RedisError> {
        let client = redis::Client::open(admin_url).map_err(|e| RedisError::Url(e.to_string()))?;
        Ok(Self { client })
    }

    async fn connection(
        &self,
        action: &'static str,
        user: &str,
    ) -> Result<MultiplexedConnection, RedisError> {
        let error = |message: String| RedisError::Command {
            action,
            user: user.to_owned(),
            message,
        };
        tokio::time::timeout(TIMEOUT, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| error("timed out connecting".to_owned()))?
            .map_err(|e| error(e.to_string()))
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        action: &'static str,
        user: &str,
        command: redis::Cmd,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection(action, user).await?;
        let error = |message: String| RedisError::Command {
            action,
            user: user.to_owned(),
            message,
        };
        tokio::time::timeout(TIMEOUT, command.query_async(&mut connection))
            .await
            .map_err(|_| error("timed out".to_owned()))?
            .map_err(|e| error(e.to_string()))
    }

    /// Whether the user exists.
    pub async fn exists(&self, user: &str) -> Result<bool, RedisError> {
        let found: redis::Value = self
            .run(
                "look up",
                user,
                redis::cmd("ACL").arg("GETUSER").arg(user).clone(),
            )
            .await?;
        Ok(!matches!(found, redis::Value::Nil))
    }

    /// Creates the user or sets it again to exactly the tenant's rules and password.
    pub async fn ensure(&self, tenant: RedisTenant<'_>) -> Result<Provisioned, RedisError> {
        let existed = self.exists(tenant.user).await?;
        let mut command = redis::cmd("ACL");
        command
            .arg("SETUSER")
            .arg(tenant.user)
            .arg("reset")
            .arg("on")
            .arg(format!(">{}", tenant.password));
        for rule in tenant.rules.split_whitespace() {
            command.arg(rule);
        }
        let _: () = self.run("set", tenant.user, command).await?;
        Ok(if existed {
            Provisioned::Unchanged
        } else {
            Provisioned::Created
        })
    }

    /// Deletes the user; already gone is fine.
    pub async fn drop(&self, user: &str) -> Result<Removed, RedisError> {
        let deleted: i64 = self
            .run(
                "delete",
                user,
                redis::cmd("ACL").arg("DELUSER").arg(user).clone(),
            )
            .await?;
        Ok(if deleted > 0 {
            Removed::Removed
        } else {
            Removed::AlreadyGone
        })
    }
}

/// The tenant's Redis URL: the tenant-facing `base` with the ACL user and password in it.
pub fn tenant_url(base: &str, user: &str, password: &str) -> Option<String> {
    let mut url = url::Url::parse(base).ok()?;
    url.set_username(user).ok()?;
    url.set_password(Some(password)).ok()?;
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_urls_carry_the_user() {
        assert_eq!(
            tenant_url("redis://redis.redis.svc:6379/0", "zori-a_b", "pw").as_deref(),
            Some("redis://zori-a_b:pw@redis.redis.svc:6379/0")
        );
        assert_eq!(
            tenant_url("redis://:shared@127.0.0.1:6379", "zori-a", "own").as_deref(),
            Some("redis://zori-a:own@127.0.0.1:6379")
        );
    }
}
