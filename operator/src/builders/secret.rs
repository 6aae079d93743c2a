//! The tenant Secret `<name>-credentials`: keys generated once and kept, and the connection
//! settings derived from the platform (URLs may carry credentials, so they live here too).

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, ByteString};
use nkeys::KeyPairType;
use sha2::{Digest, Sha256};

use crate::{
    builders::object_meta,
    config::{ClickHouseUsers, Platform, ProjectConfig},
    naming::secret_name,
    nats_auth,
};

/// Keys of the tenant Secret.
pub mod keys {
    /// `zori_pt_<32 hex>`: sent by the tracker; public by nature but tied to the tenant.
    pub const PUBLISHABLE_KEY: &str = "publishable-key";
    /// `zori_at_<48 hex>`: bearer token of the reports API.
    pub const API_TOKEN: &str = "api-token";
    /// Key the site's server signs identities with (HMAC-SHA256 of the user id), for
    /// `spec.ingest.identityVerification`.
    pub const IDENTITY_SECRET: &str = "identity-secret";
    /// Salt of email and IP hashes, shared by ingest and api.
    pub const EMAIL_SALT: &str = "email-salt";
    /// Password of the tenant's PostgreSQL role.
    pub const POSTGRES_PASSWORD: &str = "postgres-password";
    /// `postgres://zori_<id>:<password>@host:port/db`, derived.
    pub const POSTGRES_URL: &str = "postgres-url";
    /// NATS URL of the data plane, derived from the platform.
    pub const NATS_URL: &str = "nats-url";
    /// Redis URL of the rate limits, derived from the platform (with the tenant's ACL user
    /// and password when the operator makes per-tenant Redis users).
    pub const REDIS_URL: &str = "redis-url";
    /// Password of the tenant's Redis ACL user (per-tenant Redis users only).
    pub const REDIS_PASSWORD: &str = "redis-password";
    /// Seed (`SU…`) of the tenant's NATS user (`--nats-auth accounts` only).
    pub const NATS_USER_SEED: &str = "nats-user-seed";
    /// The tenant's NATS `.creds` (user JWT and seed), derived (`--nats-auth accounts`).
    pub const NATS_CREDS: &str = "nats-creds";

    /// Keys a Secret written by an earlier version (or before per-tenant Redis users or NATS
    /// accounts were turned on) lacks without anything being lost.
    pub const ADDED_LATER: [&str; 3] = [IDENTITY_SECRET, REDIS_PASSWORD, NATS_USER_SEED];
    /// Password of the tenant's ClickHouse user (per-tenant users), or the shared one.
    pub const CLICKHOUSE_PASSWORD: &str = "clickhouse-password";
}

/// Source of random hex strings (the operator uses the OS generator; tests a fixed one).
pub trait Randomness: Send + Sync {
    /// `bytes` random bytes as lower-case hex.
    fn hex(&self, bytes: usize) -> String;
}

/// Random values from the thread-local CSPRNG seeded by the OS.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandomness;

impl Randomness for OsRandomness {
    fn hex(&self, bytes: usize) -> String {
        use rand::Rng;
        let mut buf = vec![0u8; bytes];
        rand::rng().fill_bytes(&mut buf);
        hex::encode(buf)
    }
}

/// The data of the Secret, and which keys had to be generated now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretData {
    pub data: BTreeMap<String, String>,
    pub generated: Vec<&'static str>,
}

/// Shortest value the binaries accept for a secret setting.
const MIN_SECRET_CHARS: usize = 16;

fn usable(value: Option<&String>) -> Option<String> {
    value
        .filter(|v| v.chars().count() >= MIN_SECRET_CHARS && !v.chars().any(char::is_control))
        .cloned()
}

/// Computes the Secret's data: generated keys are kept from `existing` when usable, generated
/// otherwise; derived keys are recomputed from the platform (and the kept password).
pub fn secret_data(
    config: &ProjectConfig,
    platform: &Platform,
    existing: Option<&BTreeMap<String, String>>,
    random: &dyn Randomness,
) -> SecretData {
    let existing = existing.cloned().unwrap_or_default();
    let mut generated = Vec::new();
    let mut keep_or_make = |key: &'static str, make: &dyn Fn() -> String| -> String {
        match usable(existing.get(key)) {
            Some(v) => v,
            None => {
                generated.push(key);
                make()
            }
        }
    };
    let publishable_key = keep_or_make(keys::PUBLISHABLE_KEY, &|| {
        format!("zori_pt_{}", random.hex(16))
    });
    let api_token = keep_or_make(keys::API_TOKEN, &|| format!("zori_at_{}", random.hex(24)));
    let email_salt = keep_or_make(keys::EMAIL_SALT, &|| random.hex(32));
    let identity_secret = keep_or_make(keys::IDENTITY_SECRET, &|| {
        format!("zori_is_{}", random.hex(24))
    });
    let postgres_password = keep_or_make(keys::POSTGRES_PASSWORD, &|| random.hex(24));
    let clickhouse_password = match &platform.clickhouse_users {
        ClickHouseUsers::PerTenant => {
            Some(keep_or_make(keys::CLICKHOUSE_PASSWORD, &|| random.hex(24)))
        }
        ClickHouseUsers::Shared { password, .. } => password.clone(),
    };
    let redis_password = platform
        .redis_per_tenant
        .then(|| keep_or_make(keys::REDIS_PASSWORD, &|| random.hex(24)));
    let redis_url = match &redis_password {
        Some(password) => crate::backends::redis::tenant_url(
            &platform.redis_url,
            &config.names.redis_user,
            password,
        )
        // The flags were validated as URLs; never fall back to the shared URL.
        .unwrap_or_default(),
        None => platform.redis_url.clone(),
    };

    let nats_creds = platform.nats_accounts.as_ref().map(|accounts| {
        let kept = existing.get(keys::NATS_USER_SEED).filter(|seed| {
            nats_auth::key_from_seed(seed, KeyPairType::User, "tenant user seed").is_ok()
        });
        let seed = match kept {
            Some(seed) => seed.trim().to_owned(),
            None => {
                generated.push(keys::NATS_USER_SEED);
                // 32 random bytes always make a seed; an empty one would fail loudly at
                // connect rather than share anything.
                nats_auth::seed_from_hex(&random.hex(32), KeyPairType::User).unwrap_or_default()
            }
        };
        let creds = tenant_creds(accounts, &config.names, &seed).unwrap_or_default();
        (seed, creds)
    });

    let mut data = BTreeMap::from([
        (keys::PUBLISHABLE_KEY.to_owned(), publishable_key),
        (keys::API_TOKEN.to_owned(), api_token),
        (keys::EMAIL_SALT.to_owned(), email_salt),
        (keys::IDENTITY_SECRET.to_owned(), identity_secret),
        (
            keys::POSTGRES_URL.to_owned(),
            postgres_url(config, platform, &postgres_password),
        ),
        (keys::POSTGRES_PASSWORD.to_owned(), postgres_password),
        (keys::NATS_URL.to_owned(), platform.nats_url.clone()),
        (keys::REDIS_URL.to_owned(), redis_url),
    ]);
    if let Some(p) = redis_password {
        data.insert(keys::REDIS_PASSWORD.to_owned(), p);
    }
    if let Some((seed, creds)) = nats_creds {
        data.insert(keys::NATS_USER_SEED.to_owned(), seed);
        data.insert(keys::NATS_CREDS.to_owned(), creds);
    }
    if let Some(p) = clickhouse_password {
        data.insert(keys::CLICKHOUSE_PASSWORD.to_owned(), p);
    }
    SecretData { data, generated }
}

/// The tenant user's `.creds`: a JWT signed by the tenant's account key (no issue time, so
/// the same seed gives the same credentials on every reconcile) with the permissions of
/// [`nats_auth::tenant_permissions`].
pub fn tenant_creds(
    accounts: &nats_auth::AccountKeys,
    names: &crate::naming::TenantNames,
    user_seed: &str,
) -> Result<String, nats_auth::NatsAuthError> {
    let account = accounts.account(&names.tenant_id)?;
    let user = nats_auth::key_from_seed(user_seed, KeyPairType::User, "tenant user seed")?;
    let jwt = nats_auth::user_jwt(
        &account,
        &user.public_key(),
        &format!("zori-{}", names.tenant_id),
        &nats_auth::tenant_permissions(&names.tenant_id, &names.subjects.stream),
        None,
        None,
    )?;
    Ok(nats_auth::creds(&jwt, user_seed))
}

/// The tenant role's URL: `postgres://zori_<id>:<password>@<host>:<port>/<database>`.
pub fn postgres_url(config: &ProjectConfig, platform: &Platform, password: &str) -> String {
    let target = &platform.postgres;
    let base = format!(
        "postgres://{}:{}/{}",
        target.host, target.port, target.database
    );
    let mut url = match url::Url::parse(&base) {
        Ok(url) => url,
        // Hosts come from validated flags; fall back to plain formatting if one still fails.
        Err(_) => {
            return format!(
                "postgres://{}:{password}@{}:{}/{}",
                config.names.postgres_role, target.host, target.port, target.database
            )
        }
    };
    // Setting user-info only fails for URLs without a host, which `base` always has.
    let _ = url.set_username(&config.names.postgres_role);
    let _ = url.set_password(Some(password));
    url.set_query(target.params.as_deref());
    url.to_string()
}

/// The Secret object.
pub fn build_secret(config: &ProjectConfig, data: &BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: object_meta(config, secret_name(&config.name), None),
        type_: Some("Opaque".to_owned()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// Decodes a live Secret's data into text values (values that are not UTF-8 are skipped).
pub fn decode(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| String::from_utf8(v.0.clone()).ok().map(|v| (k.clone(), v)))
        .chain(
            secret
                .string_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone())),
        )
        .collect()
}

/// A hash of everything the pods read from Secrets; put on the pod template so that a change
/// of a credential or of the Stripe secret rolls the pods.
pub fn config_hash(data: &BTreeMap<String, String>, stripe_secret_hash: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in data {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    if let Some(s) = stripe_secret_hash {
        hasher.update(b"stripe\0");
        hasher.update(s.as_bytes());
    }
    hex::encode(hasher.finalize())[..16].to_owned()
}

/// Hash of a secret value (never the value itself in an annotation).
pub fn value_hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))[..16].to_owned()
}
