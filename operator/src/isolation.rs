//! The `Isolated` condition: whether every backend gave the tenant a credential of its own,
//! and, with `--require-isolation`, the refusal of tenants that cannot be isolated.

use crate::{
    config::{ClickHouseUsers, Platform},
    status::{reasons, types, Observation},
};

/// The backends that share a credential between tenants under `platform`, each with why.
pub fn shared_backends(platform: &Platform) -> Vec<String> {
    let mut shared = Vec::new();
    if platform.nats_accounts.is_none() {
        shared.push(if platform.nats_tenant_is_admin {
            "NATS: every tenant connects with the operator's own NATS URL (no \
             --nats-tenant-url); run with --nats-auth accounts for per-tenant NATS accounts"
                .to_owned()
        } else {
            "NATS: every tenant connects with the same tenant NATS URL (--nats-tenant-url); run \
             with --nats-auth accounts for per-tenant NATS accounts"
                .to_owned()
        });
    }
    if !platform.redis_per_tenant {
        shared.push(
            "Redis: every tenant connects with the same --redis-url (set --redis-admin-url for \
             per-tenant ACL users)"
                .to_owned(),
        );
    }
    if let ClickHouseUsers::Shared { .. } = platform.clickhouse_users {
        shared.push(
            "ClickHouse: every tenant connects as the shared user (--clickhouse-users shared, or \
             a server without SQL users)"
                .to_owned(),
        );
    }
    shared
}

/// `Isolated`: True only when no backend shares a credential; False naming the backends.
pub fn observation(platform: &Platform) -> Observation {
    let shared = shared_backends(platform);
    if shared.is_empty() {
        Observation::ok(
            types::ISOLATED,
            reasons::ISOLATED,
            "every backend gave the tenant a credential of its own",
        )
    } else {
        Observation::failed(
            types::ISOLATED,
            reasons::SHARED_CREDENTIALS,
            format!("credentials shared between tenants: {}", shared.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_shared_backend() {
        let mut platform = Platform::local();
        let isolated = observation(&platform);
        assert!(!isolated.is_true());
        for backend in ["NATS", "Redis", "ClickHouse"] {
            assert!(isolated.message.contains(backend), "{}", isolated.message);
        }
        platform.redis_per_tenant = true;
        platform.clickhouse_users = ClickHouseUsers::PerTenant;
        let isolated = observation(&platform);
        assert_eq!(isolated.reason, reasons::SHARED_CREDENTIALS);
        assert!(isolated
            .message
            .contains("run with --nats-auth accounts for per-tenant NATS accounts"));
        assert!(isolated.message.contains("the operator's own NATS URL"));
        platform.nats_tenant_is_admin = false;
        assert!(observation(&platform)
            .message
            .contains("the same tenant NATS URL (--nats-tenant-url)"));
        assert!(!isolated.message.contains("Redis"), "{}", isolated.message);
        assert!(
            !isolated.message.contains("ClickHouse"),
            "{}",
            isolated.message
        );
        platform.nats_accounts =
            Some(crate::nats_auth::AccountKeys::new(&"k".repeat(32)).expect("key"));
        let isolated = observation(&platform);
        assert!(isolated.is_true(), "{}", isolated.message);
        assert_eq!(isolated.reason, reasons::ISOLATED);
    }
}
