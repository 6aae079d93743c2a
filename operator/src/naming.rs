//! Names: the tenant id derived from namespace and name, the external names derived from it,
//! and the names of the Kubernetes children.

use sha2::{Digest, Sha256};
use zori_core::event::Subjects;
pub use zori_core::event::{is_valid_tenant_id, MAX_TENANT_ID};

/// Hex digits of the hash suffix that keeps long or colliding ids unique.
const HASH_CHARS: usize = 8;
/// Longest ZoriProject name: `<name>-ingest` must be a DNS-1035 label (63 characters).
pub const MAX_PROJECT_NAME: usize = 56;

/// Derives the tenant id from namespace and name: lower case, every character other than a-z
/// and 0-9 becomes `_`, joined by `_`; ids longer than 48 characters are cut and end with `_`
/// and 8 hex digits of a hash of `namespace/name`.
pub fn derive_tenant_id(namespace: &str, name: &str) -> String {
    let sanitised = sanitise(&format!("{namespace}_{name}"));
    if sanitised.len() <= MAX_TENANT_ID {
        sanitised
    } else {
        hashed_tenant_id(namespace, name)
    }
}

/// The hashed form of the tenant id: the sanitised prefix, `_`, and 8 hex digits of a hash of
/// `namespace/name`. Used for long ids, and when the plain id is already pinned by another
/// ZoriProject (`a-b/c` and `a/b-c` both sanitise to `a_b_c`).
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
            ("default", "acme", "default_acme"),
            ("shops", "acme-shop", "shops_acme_shop"),
            ("team.a", "Web.Site", "team_a_web_site"),
            ("a", "b", "a_b"),
        ];
        for (namespace, name, expected) in cases {
            let id = derive_tenant_id(namespace, name);
            assert_eq!(&id, expected);
            assert!(is_valid_tenant_id(&id));
        }
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
        assert_eq!(derive_tenant_id("a-b", "c"), derive_tenant_id("a", "b-c"));
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
