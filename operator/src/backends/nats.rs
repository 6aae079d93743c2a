//! The tenant stream on NATS JetStream: created, or updated only in the settings that differ
//! (see `zori_service::jetstream::ensure_stream`), and deleted by the `Delete` reclaim policy.
//!
//! With `--nats-auth shared` the operator manages every stream over its one connection. With
//! `--nats-auth accounts` each tenant stream lives in the tenant's own NATS account: before
//! touching it the operator pushes the account JWT (JetStream quota from the stream limits) to
//! the server's account resolver over its system account connection, then connects as a
//! short-lived user of that account it mints for the purpose.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream::Config, ErrorCode};
use nkeys::{KeyPair, KeyPairType};
use zori_service::jetstream::{connect, ensure_stream, JetStreamError, StreamOutcome};

use super::{marker_in, Foreign, Owner, Provisioned, Removed};
use crate::{
    buffer::StreamFill,
    nats_auth::{self, AccountKeys, JetStreamQuota, NatsAuthError},
};

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error("failed to delete stream {stream}: {message}")]
    Delete { stream: String, message: String },
    #[error(transparent)]
    Foreign(#[from] Foreign),
    #[error(transparent)]
    Auth(#[from] NatsAuthError),
    #[error("failed to connect to NATS at {url} as the system account user: {message}")]
    System { url: String, message: String },
    #[error("failed to push the account JWT of tenant {tenant} to the NATS resolver: {message}")]
    Claims { tenant: String, message: String },
    #[error("failed to connect to NATS at {url} in the account of tenant {tenant}: {message}")]
    TenantConnect {
        url: String,
        tenant: String,
        message: String,
    },
    #[error("stream {0} is not a tenant stream (ZORI_<TENANT ID>)")]
    NotTenantStream(String),
}

/// JetStream with the operator's connection, or per tenant account.
#[derive(Clone)]
pub struct NatsBackend {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Shared(jetstream::Context),
    Accounts(Arc<Accounts>),
}

struct Accounts {
    url: String,
    signing: KeyPair,
    keys: AccountKeys,
    system: async_nats::Client,
}

/// How long the resolver has to answer a claims request.
const CLAIMS_TIMEOUT: Duration = Duration::from_secs(10);

/// `{"data": {...}}` or `{"error": {"description": ...}}` of a `$SYS.REQ.CLAIMS.*` reply.
fn claims_reply(payload: &[u8]) -> Result<(), String> {
    let reply: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|_| format!("unreadable reply {:?}", String::from_utf8_lossy(payload)))?;
    match reply.get("error") {
        Some(error) if !error.is_null() => Err(error["description"]
            .as_str()
            .unwrap_or("no description")
            .to_owned()),
        _ => Ok(()),
    }
}

/// The tenant id of a tenant stream name (`ZORI_<ID>` with the id upper-cased; ids are
/// lower-case letters, digits and `_`).
fn tenant_of(stream: &str) -> Result<String, NatsError> {
    stream
        .strip_prefix("ZORI_")
        .map(str::to_ascii_lowercase)
        .filter(|id| crate::naming::is_valid_tenant_id(id))
        .ok_or_else(|| NatsError::NotTenantStream(stream.to_owned()))
}

impl Accounts {
    async fn request(&self, subject: &'static str, body: String) -> Result<(), String> {
        let reply = tokio::time::timeout(CLAIMS_TIMEOUT, self.system.request(subject, body.into()))
            .await
            .map_err(|_| format!("no answer to {subject} within {CLAIMS_TIMEOUT:?}"))?
            .map_err(|e| format!("{subject}: {e}"))?;
        claims_reply(&reply.payload)
    }

    /// Pushes the tenant's account JWT (JetStream quota `max_bytes`) to the resolver.
    async fn push_account(&self, tenant: &str, max_bytes: i64) -> Result<KeyPair, NatsError> {
        let account = self.keys.account(tenant)?;
        let jwt = nats_auth::account_jwt(
            &self.signing,
            &account.public_key(),
            &format!("zori-{tenant}"),
            JetStreamQuota::for_stream(max_bytes),
            nats_auth::unix_now(),
        )?;
        self.request("$SYS.REQ.CLAIMS.UPDATE", jwt)
            .await
            .map_err(|message| NatsError::Claims {
                tenant: tenant.to_owned(),
                message,
            })?;
        Ok(account)
    }

    /// JetStream in the tenant's account, as a user minted now that expires soon.
    async fn tenant_js(
        &self,
        tenant: &str,
        account: &KeyPair,
    ) -> Result<jetstream::Context, NatsError> {
        let user = KeyPair::new(KeyPairType::User);
        let seed = user
            .seed()
            .map_err(|e| NatsAuthError::Sign(e.to_string()))?;
        let now = nats_auth::unix_now();
        let jwt = nats_auth::user_jwt(
            account,
            &user.public_key(),
            "zori-operator",
            &nats_auth::manager_permissions(),
            Some(now),
            Some(now + nats_auth::MANAGER_USER_LIFETIME.as_secs() as i64),
        )?;
        let connect_error = |message: String| NatsError::TenantConnect {
            url: self.url.clone(),
            tenant: tenant.to_owned(),
            message,
        };
        // A resolver in a cluster may take a moment to hear of a new account.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let options = async_nats::ConnectOptions::new()
                .name("zori-operator")
                .connection_timeout(Duration::from_secs(5))
                .credentials(&nats_auth::creds(&jwt, &seed))
                .map_err(|e| connect_error(e.to_string()))?;
            match options.connect(&self.url).await {
                Ok(client) => return Ok(jetstream::new(client)),
                Err(e) if attempt < 3 => {
                    tracing::debug!(%tenant, error = %e, "retrying the tenant account connection");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(connect_error(e.to_string())),
            }
        }
    }
}

impl Accounts {
    /// Removes the tenant's account from the resolver (`$SYS.REQ.CLAIMS.DELETE`, which the
    /// resolver answers only with `allow_delete: true`); where deleting is not allowed, the
    /// account is disabled instead: a JWT with no connections and no JetStream.
    async fn remove_account(&self, tenant: &str) -> Result<(), NatsError> {
        let account = self.keys.account(tenant)?.public_key();
        let claims_error = |message: String| NatsError::Claims {
            tenant: tenant.to_owned(),
            message,
        };
        let now = nats_auth::unix_now();
        let delete = nats_auth::delete_accounts_jwt(&self.signing, &[&account], now)?;
        match self.request("$SYS.REQ.CLAIMS.DELETE", delete).await {
            Ok(()) => Ok(()),
            Err(message) => {
                tracing::info!(%tenant, %message, "the resolver did not delete the account; disabling it");
                let disabled = nats_auth::disabled_account_jwt(
                    &self.signing,
                    &account,
                    &format!("zori-{tenant}"),
                    now,
                )?;
                self.request("$SYS.REQ.CLAIMS.UPDATE", disabled)
                    .await
                    .map_err(claims_error)
            }
        }
    }
}

impl NatsBackend {
    /// Connects (retrying in the background while the server is down).
    pub async fn connect(url: &str) -> Result<Self, NatsError> {
        let client = connect(url, "zori-operator").await?;
        Ok(Self {
            mode: Mode::Shared(jetstream::new(client)),
        })
    }

    /// `--nats-auth accounts`: connects as the system account user of `system_creds`; tenant
    /// accounts are signed with `signing_key` (an operator signing key seed) and their keys
    /// derived with `keys`.
    pub async fn connect_accounts(
        url: &str,
        system_creds: &str,
        signing_key: &str,
        keys: AccountKeys,
    ) -> Result<Self, NatsError> {
        let signing = nats_auth::key_from_seed(signing_key, KeyPairType::Operator, "signing key")?;
        let system_error = |message: String| NatsError::System {
            url: url.to_owned(),
            message,
        };
        let system = async_nats::ConnectOptions::new()
            .name("zori-operator")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .credentials(system_creds)
            .map_err(|e| system_error(e.to_string()))?
            .connect(url)
            .await
            .map_err(|e| system_error(e.to_string()))?;
        Ok(Self {
            mode: Mode::Accounts(Arc::new(Accounts {
                url: url.to_owned(),
                signing,
                keys,
                system,
            })),
        })
    }

    /// JetStream where `stream` lives (in accounts mode: after pushing the account JWT with
    /// the quota `max_bytes`, or the one the stream has when `None`).
    async fn js_for(
        &self,
        stream: &str,
        max_bytes: Option<i64>,
    ) -> Result<jetstream::Context, NatsError> {
        match &self.mode {
            Mode::Shared(js) => Ok(js.clone()),
            Mode::Accounts(accounts) => {
                let tenant = tenant_of(stream)?;
                let account = match max_bytes {
                    Some(bytes) => accounts.push_account(&tenant, bytes).await?,
                    None => accounts.keys.account(&tenant)?,
                };
                accounts.tenant_js(&tenant, &account).await
            }
        }
    }

    /// Checks the owner marker in the description of a live stream; `Ok(true)` when the
    /// stream exists unmarked and may be adopted.
    async fn check_owner(
        js: &jetstream::Context,
        stream: &str,
        owner: Owner<'_>,
    ) -> Result<bool, NatsError> {
        match Self::config_in(js, stream).await? {
            None => Ok(false),
            Some(live) => Ok(owner.check(
                &format!("stream {stream}"),
                live.description.as_deref().and_then(marker_in),
            )?),
        }
    }

    /// Creates the stream or updates what differs from `desired` (whose description carries
    /// the owner marker); an existing stream is used only when it carries `owner`'s marker.
    pub async fn ensure(
        &self,
        desired: Config,
        owner: Owner<'_>,
    ) -> Result<Provisioned, NatsError> {
        // Each replica of the stream counts against the account's storage.
        let replicas = i64::try_from(desired.num_replicas.max(1)).unwrap_or(1);
        let quota = desired.max_bytes.saturating_mul(replicas);
        let js = self.js_for(&desired.name, Some(quota)).await?;
        let stamp = Self::check_owner(&js, &desired.name, owner).await?;
        let outcome = ensure_stream(&js, desired.clone()).await?;
        if stamp {
            let name = desired.name.clone();
            js.update_stream(desired)
                .await
                .map_err(|e| JetStreamError::Update {
                    stream: name,
                    message: format!("stamping the owner marker: {e}"),
                })?;
        }
        Ok(match outcome {
            StreamOutcome::Created => Provisioned::Created,
            StreamOutcome::Updated(changed) => {
                Provisioned::Updated(changed.into_iter().map(str::to_owned).collect())
            }
            StreamOutcome::Unchanged => Provisioned::Unchanged,
        })
    }

    /// Deletes the stream and its messages; a stream already gone is fine, a stream marked
    /// for another project is refused.
    pub async fn delete(&self, stream: &str, owner: Owner<'_>) -> Result<Removed, NatsError> {
        let js = match self.js_for(stream, None).await {
            Ok(js) => js,
            // An earlier attempt may have removed the account already: bring it back (with
            // a token quota, as no stream of it can exist then) to look.
            Err(NatsError::TenantConnect { .. }) => self.js_for(stream, Some(1 << 20)).await?,
            Err(e) => return Err(e),
        };
        Self::check_owner(&js, stream, owner).await?;
        let removed = match js.delete_stream(stream).await {
            Ok(_) => Removed::Removed,
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
                Removed::AlreadyGone
            }
            Err(e) => {
                return Err(NatsError::Delete {
                    stream: stream.to_owned(),
                    message: e.to_string(),
                })
            }
        };
        if let Mode::Accounts(accounts) = &self.mode {
            accounts.remove_account(&tenant_of(stream)?).await?;
        }
        Ok(removed)
    }

    /// What a stream holds against its limits, if it exists.
    pub async fn fill(&self, stream: &str) -> Result<Option<StreamFill>, NatsError> {
        let js = self.js_for(stream, None).await?;
        match js.get_stream(stream).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| JetStreamError::Read {
                    stream: stream.to_owned(),
                    message: e.to_string(),
                })?;
                Ok(Some(StreamFill {
                    bytes: info.state.bytes,
                    messages: info.state.messages,
                    max_bytes: info.config.max_bytes,
                    max_messages: info.config.max_messages,
                }))
            }
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
                Ok(None)
            }
            Err(e) => Err(NatsError::JetStream(JetStreamError::Read {
                stream: stream.to_owned(),
                message: e.to_string(),
            })),
        }
    }

    /// The live configuration of a stream, if it exists (for tests and diagnostics).
    pub async fn stream_config(&self, stream: &str) -> Result<Option<Config>, NatsError> {
        let js = self.js_for(stream, None).await?;
        Self::config_in(&js, stream).await
    }

    async fn config_in(js: &jetstream::Context, stream: &str) -> Result<Option<Config>, NatsError> {
        match js.get_stream(stream).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| JetStreamError::Read {
                    stream: stream.to_owned(),
                    message: e.to_string(),
                })?;
                Ok(Some(info.config.clone()))
            }
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
                Ok(None)
            }
            Err(e) => Err(NatsError::JetStream(JetStreamError::Read {
                stream: stream.to_owned(),
                message: e.to_string(),
            })),
        }
    }
}
