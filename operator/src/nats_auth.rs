//! NATS decentralised auth: the JWTs the operator mints for one NATS account per tenant.
//!
//! A NATS server in operator mode trusts an *operator* JWT; accounts are JWTs signed by the
//! operator (or one of its signing keys) and pushed to the server's account resolver; users
//! are JWTs signed by their account's key. The claims follow the published schema of
//! `github.com/nats-io/jwt` v2 (`ClaimsData` plus a `nats` object per claim type); the header
//! is `{"typ":"JWT","alg":"ed25519-nkey"}` and the signature the ed25519 signature of the
//! nkey over `header.payload`, all base64url without padding.
//!
//! What Zori makes per tenant:
//! - an account (its own subject space, so nothing of another tenant is even addressable)
//!   with JetStream on and a storage quota from the stream limits;
//! - a tenant user (its `.creds` go into the tenant Secret) that may publish only
//!   `zori.<id>.>`, the JetStream API subjects of its own stream and durable consumer and the
//!   acks of that consumer, and subscribe only to its own inbox prefix `_INBOX_<id>`;
//! - short-lived operator users, minted on each reconcile, that manage the tenant stream.

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
pub use nkeys::{KeyPair, KeyPairType};
use serde_json::{json, Value};
use sha2::{Digest, Sha512_256};

/// Durable consumer `zori-api` creates on the tenant stream (its `--consumer-name`); the
/// tenant user may use only this one.
pub const API_CONSUMER: &str = "zori-api";

#[derive(Debug, thiserror::Error)]
pub enum NatsAuthError {
    #[error("invalid {what}: {message}")]
    Key { what: &'static str, message: String },
    #[error("failed to sign a NATS JWT: {0}")]
    Sign(String),
    #[error("malformed NATS JWT: {0}")]
    Malformed(&'static str),
    #[error("NATS JWT signature does not verify against its issuer")]
    Signature,
}

fn key_error(what: &'static str) -> impl FnOnce(nkeys::error::Error) -> NatsAuthError {
    move |e| NatsAuthError::Key {
        what,
        message: e.to_string(),
    }
}

/// A key pair from its seed (`SO…` operator, `SA…` account, `SU…` user), checked to be of
/// `kind`. The error never contains the seed.
pub fn key_from_seed(
    seed: &str,
    kind: KeyPairType,
    what: &'static str,
) -> Result<KeyPair, NatsAuthError> {
    let key = KeyPair::from_seed(seed.trim()).map_err(key_error(what))?;
    if key.key_pair_type() != kind {
        return Err(NatsAuthError::Key {
            what,
            message: format!(
                "expected {} seed, got {} seed",
                kind_name(&kind),
                kind_name(&key.key_pair_type())
            ),
        });
    }
    Ok(key)
}

fn kind_name(kind: &KeyPairType) -> &'static str {
    match kind {
        KeyPairType::Operator => "an operator",
        KeyPairType::Account => "an account",
        KeyPairType::User => "a user",
        _ => "another kind of",
    }
}

/// A new key pair of `kind` from 32 random bytes given as hex (the operator's generator),
/// returned as its seed.
pub fn seed_from_hex(hex_bytes: &str, kind: KeyPairType) -> Result<String, NatsAuthError> {
    let bytes: [u8; 32] = hex::decode(hex_bytes)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(NatsAuthError::Key {
            what: "random seed bytes",
            message: "expected 64 hex digits".to_owned(),
        })?;
    KeyPair::new_from_raw(kind, bytes)
        .and_then(|k| k.seed())
        .map_err(key_error("generated seed"))
}

/// Shortest `--nats-account-key` accepted.
pub const MIN_ACCOUNT_KEY_CHARS: usize = 32;

/// Derives each tenant's account key pair from a secret only the operator holds
/// (`--nats-account-key`): HMAC-SHA256 of the tenant id gives the 32 seed bytes. Nothing per
/// tenant has to be stored, the Delete reclaim finds the account after the tenant Secret is
/// gone, and the signing key can be rotated without moving tenants to new accounts.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountKeys {
    secret: std::sync::Arc<str>,
}

impl std::fmt::Debug for AccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountKeys(<redacted>)")
    }
}

impl AccountKeys {
    pub fn new(secret: &str) -> Result<Self, NatsAuthError> {
        let secret = secret.trim();
        if secret.chars().count() < MIN_ACCOUNT_KEY_CHARS {
            return Err(NatsAuthError::Key {
                what: "account key",
                message: format!("give at least {MIN_ACCOUNT_KEY_CHARS} characters"),
            });
        }
        Ok(Self {
            secret: secret.into(),
        })
    }

    /// The account key pair of `tenant_id`.
    pub fn account(&self, tenant_id: &str) -> Result<KeyPair, NatsAuthError> {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes())
            .map_err(|e| NatsAuthError::Sign(e.to_string()))?;
        mac.update(b"zori nats account\0");
        mac.update(tenant_id.as_bytes());
        let seed: [u8; 32] = mac.finalize().into_bytes().into();
        KeyPair::new_from_raw(KeyPairType::Account, seed).map_err(key_error("account key"))
    }
}

/// `{"allow": [...], "deny": [...]}` of a user, for publish or subscribe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permission {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl Permission {
    fn to_json(&self) -> Value {
        let mut o = serde_json::Map::new();
        if !self.allow.is_empty() {
            o.insert("allow".into(), json!(self.allow));
        }
        if !self.deny.is_empty() {
            o.insert("deny".into(), json!(self.deny));
        }
        Value::Object(o)
    }
}

/// What a user may publish and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPermissions {
    pub publish: Permission,
    pub subscribe: Permission,
}

/// The inbox prefix of a tenant's binaries (`ConnectOptions::custom_inbox_prefix`).
pub fn inbox_prefix(tenant_id: &str) -> String {
    format!("_INBOX_{tenant_id}")
}

/// The tenant user's permissions: publish events into `zori.<id>.>`, use only its own
/// stream's info, its durable consumer (create, info, next message) and that consumer's acks;
/// receive only on its own inbox prefix. Deleting or purging even its own stream is not
/// among them: the operator owns the stream.
pub fn tenant_permissions(tenant_id: &str, stream: &str) -> UserPermissions {
    let durable = API_CONSUMER;
    UserPermissions {
        publish: Permission {
            allow: vec![
                format!("zori.{tenant_id}.>"),
                "$JS.API.INFO".to_owned(),
                format!("$JS.API.STREAM.INFO.{stream}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}.>"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}"),
                format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
                format!("$JS.ACK.{stream}.{durable}.>"),
            ],
            deny: Vec::new(),
        },
        subscribe: Permission {
            allow: vec![format!("{}.>", inbox_prefix(tenant_id))],
            deny: Vec::new(),
        },
    }
}

/// The operator's own user in a tenant account: the JetStream API and its inbox only.
pub fn manager_permissions() -> UserPermissions {
    UserPermissions {
        publish: Permission {
            allow: vec!["$JS.API.>".to_owned()],
            deny: Vec::new(),
        },
        subscribe: Permission {
            allow: vec!["_INBOX.>".to_owned()],
            deny: Vec::new(),
        },
    }
}

/// The JetStream quota of a tenant account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JetStreamQuota {
    /// Bytes on disk across the account's streams (the stream's `max_bytes`).
    pub disk_storage: i64,
    /// Streams in the account (the tenant stream only).
    pub streams: i64,
    /// Consumers in the account.
    pub consumers: i64,
}

impl JetStreamQuota {
    /// The quota of one tenant stream of at most `max_bytes`: that stream, a few consumers
    /// (the api's durable one and room for tooling), no memory storage.
    pub fn for_stream(max_bytes: i64) -> Self {
        Self {
            disk_storage: max_bytes,
            streams: 1,
            consumers: 4,
        }
    }
}

/// Signs `claims` (a `ClaimsData` object with its `nats` part) with `signer`: sets `iss`,
/// `jti` (a hash of the claims without it, so two JWTs of different content never share an
/// id, which the resolver would take for the same JWT) and the signature.
fn sign(
    mut claims: serde_json::Map<String, Value>,
    signer: &KeyPair,
) -> Result<String, NatsAuthError> {
    claims.insert("iss".into(), Value::String(signer.public_key()));
    claims.remove("jti");
    let unsigned = serde_json::to_vec(&claims).map_err(|e| NatsAuthError::Sign(e.to_string()))?;
    let id = data_encoding::BASE32_NOPAD.encode(&Sha512_256::digest(&unsigned));
    claims.insert("jti".into(), Value::String(id));
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).map_err(|e| NatsAuthError::Sign(e.to_string()))?);
    let to_sign = format!("{header}.{payload}");
    let signature = signer
        .sign(to_sign.as_bytes())
        .map_err(|e| NatsAuthError::Sign(e.to_string()))?;
    Ok(format!("{to_sign}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

fn base_claims(
    subject: &str,
    name: &str,
    issued_at: Option<i64>,
    expires: Option<i64>,
) -> serde_json::Map<String, Value> {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), Value::String(subject.to_owned()));
    claims.insert("name".into(), Value::String(name.to_owned()));
    if let Some(iat) = issued_at {
        claims.insert("iat".into(), json!(iat));
    }
    if let Some(exp) = expires {
        claims.insert("exp".into(), json!(exp));
    }
    claims
}

/// An account JWT for `account` (public key `A…`), signed by the operator or one of its
/// signing keys: JetStream on with `quota`, unlimited connections and subscriptions, no
/// imports, exports or leaf nodes. `issued_at` (seconds) must grow between updates: the
/// resolver ignores a JWT older than the one it has.
pub fn account_jwt(
    signer: &KeyPair,
    account: &str,
    name: &str,
    quota: JetStreamQuota,
    issued_at: i64,
) -> Result<String, NatsAuthError> {
    let mut claims = base_claims(account, name, Some(issued_at), None);
    claims.insert(
        "nats".into(),
        json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1,
                "imports": 0, "exports": 0, "conn": -1, "leaf": 0,
                "mem_storage": 0,
                "disk_storage": quota.disk_storage,
                "streams": quota.streams,
                "consumer": quota.consumers,
            },
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        }),
    );
    sign(claims, signer)
}

/// An account JWT that disables the account: no connections, no JetStream (where the
/// resolver does not allow deleting accounts).
pub fn disabled_account_jwt(
    signer: &KeyPair,
    account: &str,
    name: &str,
    issued_at: i64,
) -> Result<String, NatsAuthError> {
    let mut claims = base_claims(account, name, Some(issued_at), None);
    claims.insert(
        "nats".into(),
        json!({
            "limits": {"subs": 0, "data": 0, "payload": 0, "imports": 0, "exports": 0,
                       "conn": 0, "leaf": 0, "mem_storage": 0, "disk_storage": 0},
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        }),
    );
    sign(claims, signer)
}

/// A user JWT for `user` (public key `U…`) signed by its account's key. `issued_at` may be
/// left out so that the same inputs give the same JWT (ed25519 signatures are deterministic):
/// the tenant Secret then changes only when the permissions do, and pods do not roll on every
/// reconcile.
pub fn user_jwt(
    account: &KeyPair,
    user: &str,
    name: &str,
    permissions: &UserPermissions,
    issued_at: Option<i64>,
    expires: Option<i64>,
) -> Result<String, NatsAuthError> {
    let mut claims = base_claims(user, name, issued_at, expires);
    claims.insert(
        "nats".into(),
        json!({
            "pub": permissions.publish.to_json(),
            "sub": permissions.subscribe.to_json(),
            "subs": -1, "data": -1, "payload": -1,
            "type": "user",
            "version": 2,
        }),
    );
    sign(claims, account)
}

/// An operator JWT (self-signed by the operator's identity key) trusting `signing_keys`, with
/// `system_account`: what a NATS server in operator mode is configured with. Zori never needs
/// the operator identity key; this is for test servers and first-time setups.
pub fn operator_jwt(
    operator: &KeyPair,
    name: &str,
    signing_keys: &[String],
    system_account: &str,
    issued_at: i64,
) -> Result<String, NatsAuthError> {
    let mut claims = base_claims(&operator.public_key(), name, Some(issued_at), None);
    claims.insert(
        "nats".into(),
        json!({
            "signing_keys": signing_keys,
            "system_account": system_account,
            "type": "operator",
            "version": 2,
        }),
    );
    sign(claims, operator)
}

/// The system account's JWT (no JetStream), for test servers and first-time setups.
pub fn system_account_jwt(
    signer: &KeyPair,
    account: &str,
    issued_at: i64,
) -> Result<String, NatsAuthError> {
    let mut claims = base_claims(account, "SYS", Some(issued_at), None);
    claims.insert(
        "nats".into(),
        json!({
            "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                       "wildcards": true, "conn": -1, "leaf": -1},
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        }),
    );
    sign(claims, signer)
}

/// The request body of `$SYS.REQ.CLAIMS.DELETE`: a generic JWT self-signed by an operator
/// (signing) key listing the accounts to remove from the resolver.
pub fn delete_accounts_jwt(
    signer: &KeyPair,
    accounts: &[&str],
    issued_at: i64,
) -> Result<String, NatsAuthError> {
    let mut claims = base_claims(
        &signer.public_key(),
        "delete accounts",
        Some(issued_at),
        None,
    );
    claims.insert("nats".into(), json!({"accounts": accounts}));
    sign(claims, signer)
}

/// A `.creds` file: the user JWT and its seed in the decorated format of `nsc` and the NATS
/// clients (`ConnectOptions::credentials`).
pub fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The user JWT and the seed of a `.creds` file.
pub fn parse_creds(creds: &str) -> Result<(String, String), NatsAuthError> {
    let section = |begin: &str| {
        let start = creds.find(begin)? + begin.len();
        let rest = &creds[start..];
        let end = rest.find("------END")?;
        Some(rest[..end].trim().to_owned()).filter(|s| !s.is_empty())
    };
    let jwt = section("-----BEGIN NATS USER JWT-----")
        .ok_or(NatsAuthError::Malformed("no user JWT in the credentials"))?;
    let seed = section("-----BEGIN USER NKEY SEED-----")
        .ok_or(NatsAuthError::Malformed("no user seed in the credentials"))?;
    Ok((jwt, seed))
}

/// The claims of a JWT after checking its signature against its `iss`.
pub fn verified_claims(jwt: &str) -> Result<Value, NatsAuthError> {
    let mut parts = jwt.trim().split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(NatsAuthError::Malformed(
            "expected three dot-separated parts",
        ));
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| NatsAuthError::Malformed("a part is not base64url"))
    };
    let header: Value = serde_json::from_slice(&decode(header)?)
        .map_err(|_| NatsAuthError::Malformed("the header is not JSON"))?;
    if header["alg"] != "ed25519-nkey" {
        return Err(NatsAuthError::Malformed(
            "the algorithm is not ed25519-nkey",
        ));
    }
    let claims: Value = serde_json::from_slice(&decode(payload)?)
        .map_err(|_| NatsAuthError::Malformed("the claims are not JSON"))?;
    let issuer = claims["iss"]
        .as_str()
        .ok_or(NatsAuthError::Malformed("no issuer"))?;
    let key = KeyPair::from_public_key(issuer).map_err(key_error("issuer"))?;
    let signed = jwt
        .trim()
        .rsplit_once('.')
        .map(|(s, _)| s)
        .unwrap_or_default();
    key.verify(signed.as_bytes(), &decode(signature)?)
        .map_err(|_| NatsAuthError::Signature)?;
    Ok(claims)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// How long the operator's own users in tenant accounts live.
pub const MANAGER_USER_LIFETIME: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_jwt_verifies_and_carries_the_quota() {
        let signer = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let jwt = account_jwt(
            &signer,
            &account.public_key(),
            "zori-t1",
            JetStreamQuota::for_stream(1 << 20),
            1_700_000_000,
        )
        .expect("signs");
        let claims = verified_claims(&jwt).expect("verifies");
        assert_eq!(claims["iss"], signer.public_key());
        assert_eq!(claims["sub"], account.public_key());
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["nats"]["type"], "account");
        assert_eq!(claims["nats"]["limits"]["disk_storage"], 1 << 20);
        assert_eq!(claims["nats"]["limits"]["mem_storage"], 0);
        assert_eq!(claims["nats"]["limits"]["streams"], 1);
        // A tampered payload no longer verifies.
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let other = account_jwt(
            &signer,
            &account.public_key(),
            "zori-t1",
            JetStreamQuota::for_stream(1 << 30),
            1_700_000_000,
        )
        .expect("signs");
        let other_payload = other.split('.').nth(1).unwrap_or_default().to_owned();
        assert_ne!(parts[1], other_payload, "different quota, different claims");
        parts[1] = &other_payload;
        assert!(matches!(
            verified_claims(&parts.join(".")),
            Err(NatsAuthError::Signature)
        ));
        // Different content, different jti (the resolver skips a JWT whose jti it has).
        assert_ne!(
            verified_claims(&other).expect("verifies")["jti"],
            claims["jti"]
        );
    }

    #[test]
    fn a_tenant_user_is_deterministic_and_confined() {
        let account = KeyPair::new_account();
        let user_seed = seed_from_hex(&"ab".repeat(32), KeyPairType::User).expect("seed");
        let user = key_from_seed(&user_seed, KeyPairType::User, "user seed").expect("user");
        let permissions = tenant_permissions("shop_1234abcd", "ZORI_SHOP_1234ABCD");
        let jwt =
            user_jwt(&account, &user.public_key(), "t", &permissions, None, None).expect("signs");
        let again =
            user_jwt(&account, &user.public_key(), "t", &permissions, None, None).expect("signs");
        assert_eq!(
            jwt, again,
            "same inputs, same JWT: no pod roll per reconcile"
        );
        let claims = verified_claims(&jwt).expect("verifies");
        assert_eq!(claims["iss"], account.public_key());
        assert_eq!(
            claims["nats"]["sub"]["allow"],
            json!(["_INBOX_shop_1234abcd.>"])
        );
        let publish = claims["nats"]["pub"]["allow"]
            .as_array()
            .expect("publish allow list");
        assert!(publish.contains(&json!("zori.shop_1234abcd.>")));
        assert!(publish.iter().all(|s| {
            let s = s.as_str().unwrap_or_default();
            !s.contains("DELETE") && !s.contains("PURGE") && s != ">" && !s.starts_with("zori.*")
        }));

        let file = creds(&jwt, &user_seed);
        assert_eq!(parse_creds(&file).expect("parses"), (jwt, user_seed));
        assert!(async_nats::ConnectOptions::new().credentials(&file).is_ok());
    }

    #[test]
    fn account_keys_are_stable_per_tenant_and_secret() {
        let keys = AccountKeys::new(&"k".repeat(40)).expect("long enough");
        let a = keys.account("shop_1").expect("key").public_key();
        assert_eq!(a, keys.account("shop_1").expect("key").public_key());
        assert!(a.starts_with('A'));
        assert_ne!(a, keys.account("shop_2").expect("key").public_key());
        let other = AccountKeys::new(&"j".repeat(40)).expect("long enough");
        assert_ne!(a, other.account("shop_1").expect("key").public_key());
        assert!(AccountKeys::new("short").is_err());
        assert_eq!(format!("{keys:?}"), "AccountKeys(<redacted>)");
    }

    #[test]
    fn refuses_a_seed_of_the_wrong_kind_without_echoing_it() {
        let account_seed = KeyPair::new_account().seed().expect("seed");
        let error = key_from_seed(&account_seed, KeyPairType::Operator, "signing key")
            .expect_err("an account seed is not an operator seed");
        let message = error.to_string();
        assert!(
            message
                .starts_with("invalid signing key: expected an operator seed, got an account seed"),
            "{message}"
        );
        assert!(!message.contains(&account_seed));
        let error =
            key_from_seed("SOnotaseed", KeyPairType::Operator, "signing key").expect_err("garbage");
        assert!(!error.to_string().contains("SOnotaseed"));
    }
}
