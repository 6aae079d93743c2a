//! The tenant's PostgreSQL schema and login role.
//!
//! Isolation model inside one database (the admin URL's):
//! - the role `zori_<id>` is `LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION
//!   NOBYPASSRLS`, with `search_path` set to its schema and a connection limit;
//! - the schema `zori_<id>` is owned by that role (it creates and migrates its own tables) and
//!   grants nothing to `PUBLIC`; schemas never grant `USAGE` to others by default, so another
//!   tenant's role gets "permission denied for schema" on any table in it;
//! - the role is granted `CONNECT` on the database explicitly, so the cluster admin may revoke
//!   `CONNECT` from `PUBLIC` on every database (recommended, not done by the operator, which
//!   never touches databases it does not use);
//! - if the tenant role could `CREATE` in the `public` schema (PostgreSQL before 15), the
//!   operator revokes `CREATE` on `public` from `PUBLIC` (the PostgreSQL 15 default);
//! - catalogs (`pg_class`, …) stay readable, as in any PostgreSQL: a tenant can see the names
//!   of other tenants' tables, never their rows.
//!
//! Passwords never travel as plain text: the operator sends a SCRAM-SHA-256 verifier it
//! computed, and checks the stored verifier against the Secret's password to change it only
//! when they differ.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::{postgres::PgPoolOptions, PgPool, Postgres, Row, Transaction};

use super::{marker_in, Foreign, Owner, Provisioned, Removed};

/// Connections one tenant role may hold.
pub const CONNECTION_LIMIT: i32 = 30;
const SCRAM_ITERATIONS: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("failed to read the PostgreSQL admin URL: {0}")]
    Url(String),
    #[error("failed to {action} for PostgreSQL role {role}: {source}")]
    Sql {
        action: &'static str,
        role: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to provision PostgreSQL role {role}: {name:?} is not a safe identifier")]
    Identifier { role: String, name: String },
    #[error(transparent)]
    Foreign(#[from] Foreign),
}

/// Which of the role and schema need the owner marker stamped (they exist unmarked, or are new).
#[derive(Debug, Clone, Copy, Default)]
struct Stamps {
    role: bool,
    schema: bool,
}

/// Checks the owner markers (comments) of an existing role and schema against `owner`.
async fn check_owner(
    tx: &mut Transaction<'static, Postgres>,
    role: &str,
    schema: &str,
    owner: Owner<'_>,
) -> Result<Stamps, PostgresError> {
    let sql = |action, source| PostgresError::Sql {
        action,
        role: role.to_owned(),
        source,
    };
    let role_comment: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
    )
    .bind(role)
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| sql("read the owner marker of the role", e))?;
    let schema_comment: Option<Option<String>> = sqlx::query_scalar(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1",
    )
    .bind(schema)
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| sql("read the owner marker of the schema", e))?;
    let mut stamps = Stamps::default();
    if let Some(comment) = role_comment {
        stamps.role = owner.check(
            &format!("PostgreSQL role {role}"),
            comment.as_deref().and_then(marker_in),
        )?;
    }
    if let Some(comment) = schema_comment {
        stamps.schema = owner.check(
            &format!("PostgreSQL schema {schema}"),
            comment.as_deref().and_then(marker_in),
        )?;
    }
    Ok(stamps)
}

/// PostgreSQL with the operator's admin connection.
#[derive(Clone, Debug)]
pub struct PostgresBackend {
    pool: PgPool,
}

/// `^[a-z_][a-z0-9_]{0,62}$`: safe to interpolate (quoted) into DDL.
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 with one 32-byte block, as SCRAM-SHA-256 uses it.
fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password.as_bytes(), &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password.as_bytes(), &u);
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out
}

/// A SCRAM-SHA-256 verifier for `password`, in PostgreSQL's stored format.
pub fn scram_verifier(password: &str, salt: &[u8]) -> String {
    let salted = salted_password(password, salt, SCRAM_ITERATIONS);
    let stored_key = Sha256::digest(hmac(&salted, b"Client Key"));
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// Whether a stored SCRAM-SHA-256 verifier was made from `password`.
pub fn scram_matches(stored: &str, password: &str) -> bool {
    let parse = || -> Option<bool> {
        let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, _) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok()?;
        let salt = STANDARD.decode(salt).ok()?;
        let stored_key = STANDARD.decode(stored_key).ok()?;
        let salted = salted_password(password, &salt, iterations);
        let computed = Sha256::digest(hmac(&salted, b"Client Key"));
        Some(computed.as_slice() == stored_key.as_slice())
    };
    parse().unwrap_or(false)
}

fn random_salt() -> [u8; 16] {
    use rand::Rng;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    salt
}

impl PostgresBackend {
    /// A pool on the admin URL that connects on first use.
    pub fn connect_lazy(admin_url: &str) -> Result<Self, PostgresError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(admin_url)
            .map_err(|e| PostgresError::Url(e.to_string()))?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn check(role: &str, schema: &str) -> Result<(), PostgresError> {
        for name in [role, schema] {
            if !is_identifier(name) {
                return Err(PostgresError::Identifier {
                    role: role.to_owned(),
                    name: name.to_owned(),
                });
            }
        }
        Ok(())
    }

    async fn begin(&self, role: &str) -> Result<Transaction<'static, Postgres>, PostgresError> {
        let sql = |action, source| PostgresError::Sql {
            action,
            role: role.to_owned(),
            source,
        };
        let mut tx = self.pool.begin().await.map_err(|e| sql("connect", e))?;
        // Serialises concurrent provisioning of the same tenant (two operator replicas).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('zori-operator:' || $1))")
            .bind(role)
            .execute(&mut *tx)
            .await
            .map_err(|e| sql("take the provisioning lock", e))?;
        Ok(tx)
    }

    /// Creates the role and schema, or repairs what differs; reports what it did. A catalog
    /// row updated by another session at the same moment ("tuple concurrently updated", such
    /// as a GRANT on the database by another operator or tool) is tried again, twice.
    pub async fn ensure(
        &self,
        role: &str,
        schema: &str,
        password: &str,
        owner: Owner<'_>,
    ) -> Result<Provisioned, PostgresError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.ensure_once(role, schema, password, owner).await {
                Err(PostgresError::Sql { source, .. })
                    if attempt < 3 && source.to_string().contains("tuple concurrently updated") =>
                {
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn ensure_once(
        &self,
        role: &str,
        schema: &str,
        password: &str,
        owner: Owner<'_>,
    ) -> Result<Provisioned, PostgresError> {
        Self::check(role, schema)?;
        let err = |action: &'static str| {
            let role = role.to_owned();
            move |source| PostgresError::Sql {
                action,
                role,
                source,
            }
        };
        let mut tx = self.begin(role).await?;
        let mut stamps = check_owner(&mut tx, role, schema, owner).await?;
        let marker = quote_literal(&owner.marker());
        let mut created = false;
        let mut changes: Vec<String> = Vec::new();
        let (r, s) = (quote_ident(role), quote_ident(schema));
        let attributes = format!(
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {CONNECTION_LIMIT}"
        );

        let existing = sqlx::query(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication, \
             rolbypassrls, rolconnlimit, COALESCE(array_to_string(rolconfig, ','), '') AS config \
             FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("read the role"))?;
        let verifier = quote_literal(&scram_verifier(password, &random_salt()));
        match existing {
            None => {
                sqlx::query(&format!("CREATE ROLE {r} {attributes} PASSWORD {verifier}"))
                    .execute(&mut *tx)
                    .await
                    .map_err(err("create the role"))?;
                created = true;
                stamps.role = true;
            }
            Some(row) => {
                let expected = (
                    true,
                    false,
                    false,
                    false,
                    false,
                    false,
                    false,
                    CONNECTION_LIMIT,
                );
                let actual = (
                    row.try_get::<bool, _>("rolcanlogin")
                        .map_err(err("read the role"))?,
                    row.try_get::<bool, _>("rolsuper")
                        .map_err(err("read the role"))?,
                    row.try_get::<bool, _>("rolcreatedb")
                        .map_err(err("read the role"))?,
                    row.try_get::<bool, _>("rolcreaterole")
                        .map_err(err("read the role"))?,
                    row.try_get::<bool, _>("rolinherit")
                        .map_err(err("read the role"))?,
                    row.try_get::<bool, _>("rolreplication")
                        .map_err(err("read the role"))?,
                    row.try_get::<bool, _>("rolbypassrls")
                        .map_err(err("read the role"))?,
                    row.try_get::<i32, _>("rolconnlimit")
                        .map_err(err("read the role"))?,
                );
                if actual != expected {
                    sqlx::query(&format!("ALTER ROLE {r} {attributes}"))
                        .execute(&mut *tx)
                        .await
                        .map_err(err("reset the role's attributes"))?;
                    changes.push("role attributes".to_owned());
                }
                // Reading pg_authid needs superuser; without it the verifier is set each time.
                let stored: Option<Option<String>> = match sqlx::query_scalar(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                )
                .bind(role)
                .fetch_optional(&mut *tx)
                .await
                {
                    Ok(v) => v,
                    Err(_) => {
                        // The failed statement aborted the transaction: start again.
                        drop(tx);
                        tx = self.begin(role).await?;
                        None
                    }
                };
                let readable = stored.is_some();
                let matches = stored
                    .flatten()
                    .is_some_and(|s| scram_matches(&s, password));
                if !matches {
                    sqlx::query(&format!("ALTER ROLE {r} PASSWORD {verifier}"))
                        .execute(&mut *tx)
                        .await
                        .map_err(err("set the role's password"))?;
                    if readable {
                        changes.push("password".to_owned());
                    }
                }
            }
        }

        let config: String = sqlx::query_scalar(
            "SELECT COALESCE(array_to_string(rolconfig, ','), '') FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_one(&mut *tx)
        .await
        .map_err(err("read the role's settings"))?;
        if !config
            .split(',')
            .any(|c| c == format!("search_path={schema}"))
        {
            sqlx::query(&format!("ALTER ROLE {r} SET search_path TO {s}"))
                .execute(&mut *tx)
                .await
                .map_err(err("set the role's search_path"))?;
            if !created {
                changes.push("search_path".to_owned());
            }
        }

        let owner: Option<String> = sqlx::query_scalar(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1",
        )
        .bind(schema)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("read the schema"))?;
        match owner {
            None => {
                sqlx::query(&format!("CREATE SCHEMA {s} AUTHORIZATION {r}"))
                    .execute(&mut *tx)
                    .await
                    .map_err(err("create the schema"))?;
                created = true;
                stamps.schema = true;
            }
            Some(owner) if owner != role => {
                sqlx::query(&format!("ALTER SCHEMA {s} OWNER TO {r}"))
                    .execute(&mut *tx)
                    .await
                    .map_err(err("give the schema to the role"))?;
                changes.push("schema owner".to_owned());
            }
            Some(_) => {}
        }

        let public_grant: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace n, \
             aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a \
             WHERE n.nspname = $1 AND a.grantee = 0)",
        )
        .bind(schema)
        .fetch_one(&mut *tx)
        .await
        .map_err(err("read the schema's privileges"))?;
        if public_grant {
            sqlx::query(&format!("REVOKE ALL ON SCHEMA {s} FROM PUBLIC"))
                .execute(&mut *tx)
                .await
                .map_err(err("revoke the schema from PUBLIC"))?;
            changes.push("schema privileges".to_owned());
        }

        let database: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&mut *tx)
            .await
            .map_err(err("read the database name"))?;
        let connect: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database d, \
             aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a \
             WHERE d.datname = current_database() AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1) AND a.privilege_type = 'CONNECT')",
        )
        .bind(role)
        .fetch_one(&mut *tx)
        .await
        .map_err(err("read the database's privileges"))?;
        if !connect {
            // GRANT rewrites the database's one pg_database row: two tenants granted at once
            // fail with "tuple concurrently updated". Serialise the grants.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('zori-operator:grant-connect'))")
                .execute(&mut *tx)
                .await
                .map_err(err("take the database grant lock"))?;
            sqlx::query(&format!(
                "GRANT CONNECT ON DATABASE {} TO {r}",
                quote_ident(&database)
            ))
            .execute(&mut *tx)
            .await
            .map_err(err("grant CONNECT on the database"))?;
            if !created {
                changes.push("database privileges".to_owned());
            }
        }

        let public_create: Option<bool> = sqlx::query_scalar(
            "SELECT has_schema_privilege($1, n.oid, 'CREATE') FROM pg_namespace n WHERE n.nspname = 'public'",
        )
        .bind(role)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("read the public schema's privileges"))?;
        if public_create == Some(true) {
            sqlx::query("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
                .execute(&mut *tx)
                .await
                .map_err(err("revoke CREATE on the public schema"))?;
            sqlx::query(&format!("REVOKE CREATE ON SCHEMA public FROM {r}"))
                .execute(&mut *tx)
                .await
                .map_err(err("revoke CREATE on the public schema"))?;
            changes.push("public schema privileges".to_owned());
        }

        if stamps.role {
            sqlx::query(&format!("COMMENT ON ROLE {r} IS {marker}"))
                .execute(&mut *tx)
                .await
                .map_err(err("stamp the owner marker on the role"))?;
        }
        if stamps.schema {
            sqlx::query(&format!("COMMENT ON SCHEMA {s} IS {marker}"))
                .execute(&mut *tx)
                .await
                .map_err(err("stamp the owner marker on the schema"))?;
        }
        if (stamps.role || stamps.schema) && !created {
            changes.push("owner marker".to_owned());
        }

        tx.commit().await.map_err(err("commit"))?;
        Ok(if created {
            Provisioned::Created
        } else if changes.is_empty() {
            Provisioned::Unchanged
        } else {
            Provisioned::Updated(changes)
        })
    }

    /// Drops the schema (with every table) and the role; both already gone is fine; either
    /// marked for another project is refused.
    pub async fn drop(
        &self,
        role: &str,
        schema: &str,
        owner: Owner<'_>,
    ) -> Result<Removed, PostgresError> {
        Self::check(role, schema)?;
        let err = |action: &'static str| {
            let role = role.to_owned();
            move |source| PostgresError::Sql {
                action,
                role,
                source,
            }
        };
        {
            let mut tx = self.begin(role).await?;
            check_owner(&mut tx, role, schema, owner).await?;
        }
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(role)
            .execute(&self.pool)
            .await
            .map_err(err("end the role's sessions"))?;
        let mut tx = self.begin(role).await?;
        let role_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(role)
                .fetch_one(&mut *tx)
                .await
                .map_err(err("read the role"))?;
        let schema_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&mut *tx)
                .await
                .map_err(err("read the schema"))?;
        if schema_exists {
            sqlx::query(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(schema)
            ))
            .execute(&mut *tx)
            .await
            .map_err(err("drop the schema"))?;
        }
        if role_exists {
            let r = quote_ident(role);
            sqlx::query(&format!("DROP OWNED BY {r}"))
                .execute(&mut *tx)
                .await
                .map_err(err("drop what the role owns"))?;
            sqlx::query(&format!("DROP ROLE {r}"))
                .execute(&mut *tx)
                .await
                .map_err(err("drop the role"))?;
        }
        tx.commit().await.map_err(err("commit"))?;
        Ok(if role_exists || schema_exists {
            Removed::Removed
        } else {
            Removed::AlreadyGone
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_verifiers_round_trip() {
        let v = scram_verifier("pencil", b"0123456789abcdef");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(scram_matches(&v, "pencil"));
        assert!(!scram_matches(&v, "pencil2"));
        assert!(!scram_matches("md5abc", "pencil"));
        assert!(!scram_matches("SCRAM-SHA-256$x", "pencil"));
    }

    #[test]
    fn checks_identifiers() {
        for ok in ["zori_acme", "_x", "a1"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "1a", "Zori", "a-b", "a\"b", &"a".repeat(64)] {
            assert!(!is_identifier(bad), "{bad}");
        }
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
