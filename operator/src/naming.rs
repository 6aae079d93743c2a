//! Names: the tenant id derived from namespace and name, the external names derived from it,
//! and the names of the Kubernetes children.

use sha2::{Digest, Sha256};
pub use zori_core::event::{is_valid_tenant_id, MAX_TENANT_ID};
use zori_core::event::{RedisKeys, Subjects};

/// Hex digits of the hash suffix that keeps long or colliding ids unique.
const HASH_CHARS: usize = 8;
/// Longest ZoriProject name: `<name>-ingest` must be a DNS-1035 label (63 characters).
pub const MAX_PROJECT_NAME: usize = 56;

/// Derives the tenant id of a new project from namespace and name, unique by construction:
/// the sanitised `namespace_name` (lower case, every character other than a-z and 0-9 becomes
/// `_`, cut to 39 characters), `_`, and 8 hex digits of a SHA-256 of `namespace/name`, so
/// `a-b/c` and `a/b-c` differ (`a_b_c_…` with two different hashes).
pub fn derive_tenant_id(namespace: &str, name: &str) -> String {
    hashed_tenant_id(namespace, name)
}

/// The id versions before 0.2 derived (the plain sanitised `namespace_name` when it fits in
/// 48 characters): still accepted when a live project has it pinned in status.
pub fn legacy_tenant_id(namespace: &str, name: &str) -> String {
    let sanitised = sanitise(&format!("{namespace}_{name}"));
    if sanitised.len() <= MAX_TENANT_ID {
        sanitised
    } else {
        hashed_tenant_id(namespace, name)
    }
}

/// Whether `id` is one this project may hold: derived from its own namespace and name, in the
/// current or the legacy form. Anything else in `status.tenantId` was not written by the
/// operator and is refused.
pub fn may_hold(namespace: &str, name: &str, id: &str) -> bool {
    id == derive_tenant_id(namespace, name) || id == legacy_tenant_id(namespace, name)
}

/// The hashed form of the tenant id: the sanitised prefix, `_`, and 8 hex digits of a hash of
/// `namespace/name`.
pub fn hashed_tenant_id(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let suffix = &hex::encode(digest)[..HASH_CHARS];
    let plain = sanitise(&format!("{namespace}_{name}"));
    let keep = MAX_TENANT_ID - HASH_CHARS - 1;
    let prefix: String = plain.chars().take(keep).collect();
    format!("{prefix}_{suffix}")
}

/// Lower case; every character other than a-z and 0-9 becomes `_`.
fn sanitise(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Names of everything provisioned outside Kubernetes for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNames {
    pub tenant_id: String,
    pub subjects: Subjects,
    /// PostgreSQL schema; the login role has the same name.
    pub postgres_schema: String,
    pub postgres_role: String,
    pub clickhouse_database: String,
    /// ClickHouse user made for the tenant where the server supports SQL users.
    pub clickhouse_user: String,
    /// Redis ACL user (`zori-<id>`) and its rules (the tenant's key prefix only).
    pub redis_user: String,
    pub redis_rules: String,
}

impl TenantNames {
    pub fn for_tenant(tenant_id: &str) -> Self {
        let sql = format!("zori_{tenant_id}");
        Self {
            tenant_id: tenant_id.to_owned(),
            subjects: Subjects::for_tenant(tenant_id),
            postgres_schema: sql.clone(),
            postgres_role: sql.clone(),
            clickhouse_database: sql.clone(),
            clickhouse_user: sql,
            redis_user: RedisKeys::acl_user(tenant_id),
            redis_rules: RedisKeys::for_tenant(tenant_id).acl_rules(),
        }
    }
}

/// The two workloads of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Ingest,
    Api,
}

impl Component {
    pub const ALL: [Component; 2] = [Component::Ingest, Component::Api];

    /// `ingest` or `api`: the container name and the `app.kubernetes.io/component` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Ingest => "ingest",
            Component::Api => "api",
        }
    }

    /// `<project>-ingest` or `<project>-api`: Deployment, Service and PodDisruptionBudget.
    pub fn object_name(self, project: &str) -> String {
        format!("{project}-{}", self.as_str())
    }

    /// Port the binary listens on (its default).
    pub fn port(self) -> i32 {
        match self {
            Component::Ingest => 1324,
            Component::Api => 1323,
        }
    }

    /// Name of the binary and of its image.
    pub fn binary(self) -> &'static str {
        match self {
            Component::Ingest => "zori-ingest",
            Component::Api => "zori-api",
        }
    }
}

/// Name of the tenant's Secret.
pub fn secret_name(project: &str) -> String {
    format!("{project}-credentials")
}

/// Name of the tenant's Ingress.
pub fn ingress_name(project: &str) -> String {
    project.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_tenant_ids() {
        let cases: &[(&str, &str, &str)] = &[
            ("default", "acme", "default_acme_"),
            ("shops", "acme-shop", "shops_acme_shop_"),
            ("team.a", "Web.Site", "team_a_web_site_"),
            ("a", "b", "a_b_"),
        ];
        for (namespace, name, prefix) in cases {
            let id = derive_tenant_id(namespace, name);
            assert!(id.starts_with(prefix), "{id}");
            assert_eq!(id.len(), prefix.len() + HASH_CHARS, "{id}");
            assert!(is_valid_tenant_id(&id));
            assert!(may_hold(namespace, name, &id));
            assert_eq!(
                legacy_tenant_id(namespace, name),
                prefix.trim_end_matches('_')
            );
        }
    }

    #[test]
    fn only_own_ids_may_be_held() {
        assert!(may_hold("a-b", "c", "a_b_c"), "the legacy form stays valid");
        assert!(may_hold("a-b", "c", &derive_tenant_id("a-b", "c")));
        assert!(!may_hold("a", "b-c", &derive_tenant_id("a-b", "c")));
        assert!(!may_hold("a", "evil", "shops_acme"));
        assert!(!may_hold("a", "evil", ""));
    }

    #[test]
    fn long_ids_are_cut_with_a_hash() {
        let namespace = "a-very-long-namespace-name-for-a-team";
        let name = "and-an-even-longer-project-name-for-the-shop";
        let id = derive_tenant_id(namespace, name);
        assert_eq!(id.len(), MAX_TENANT_ID);
        assert!(is_valid_tenant_id(&id), "{id}");
        assert!(
            id.starts_with("a_very_long_namespace_name_for_a_team_a"),
            "{id}"
        );
        // Stable, and different for a different name with the same prefix.
        assert_eq!(id, derive_tenant_id(namespace, name));
        assert_ne!(
            id,
            derive_tenant_id(namespace, "and-an-even-longer-project-name-for-the-sho")
        );
    }

    #[test]
    fn hashed_ids_separate_names_that_sanitise_alike() {
        assert_eq!(legacy_tenant_id("a-b", "c"), legacy_tenant_id("a", "b-c"));
        assert_ne!(derive_tenant_id("a-b", "c"), derive_tenant_id("a", "b-c"));
        let first = hashed_tenant_id("a-b", "c");
        let second = hashed_tenant_id("a", "b-c");
        assert_ne!(first, second);
        assert!(is_valid_tenant_id(&first) && is_valid_tenant_id(&second));
        assert!(first.starts_with("a_b_c_"));
    }

    #[test]
    fn names_follow_the_tenant_id() {
        let names = TenantNames::for_tenant("shops_acme");
        assert_eq!(names.subjects.stream, "ZORI_SHOPS_ACME");
        assert_eq!(names.subjects.wildcard, "zori.shops_acme.>");
        assert_eq!(names.postgres_schema, "zori_shops_acme");
        assert_eq!(names.postgres_role, "zori_shops_acme");
        assert_eq!(names.clickhouse_database, "zori_shops_acme");
        assert_eq!(Component::Ingest.object_name("acme"), "acme-ingest");
        assert_eq!(secret_name("acme"), "acme-credentials");
    }

    #[test]
    fn rejects_bad_tenant_ids() {
        for id in ["", "A", "a-b", &"a".repeat(49)] {
            assert!(!is_valid_tenant_id(id), "{id}");
        }
    }
}
