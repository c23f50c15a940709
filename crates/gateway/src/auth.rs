//! Bearer tokens. A token is `fa_<id>_<secret>`; the platform keeps only the SHA-256 of the
//! secret, in the JetStream stream `tokens`, one subject per token (`tokens.<id>`, last message
//! wins). Revoking writes a new record with `revoked_at`, so issuing and revoking stay on record.
//! Secrets are 256 random bits, so a fast hash is enough (no password stretching) and comparison
//! is constant-time.
//!
//! A plain stream rather than a JetStream key-value bucket: the client's bucket set-up needs
//! account information in a shape nats-server 2.9 does not send.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::RngCore;
use runtime::{Actor, Role};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const STREAM: &str = "tokens";

/// Tokens kept checked in memory at most.
const MAX_CACHED: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub role: Role,
    pub scope: Option<String>,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub secret_sha256: String,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenRecord {
    pub fn actor(&self) -> Actor {
        Actor { role: self.role, scope: self.scope.clone(), name: self.name.clone() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no token {0}")]
    NotFound(String),
}

fn unavailable(e: impl std::fmt::Display) -> TokenError {
    TokenError::Unavailable(e.to_string())
}

/// The token stream, with a short in-memory cache so that a request costs no round trip.
pub struct TokenStore {
    js: jetstream::Context,
    stream: stream::Stream,
    cache: Mutex<HashMap<String, (TokenRecord, Instant)>>,
    ttl: Duration,
}

impl TokenStore {
    /// Opens (creating if needed) the token stream. A token's record is cached for `cache_ttl`:
    /// a revocation takes up to that long to reach every gateway.
    pub async fn open(js: &jetstream::Context, replicas: usize, cache_ttl: Duration) -> Result<TokenStore, TokenError> {
        js.create_or_update_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{STREAM}.*")],
            description: Some("foodaid API tokens (hashed), one subject per token".into()),
            max_messages_per_subject: 10,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
        let stream = js.get_stream(STREAM).await.map_err(unavailable)?;
        Ok(TokenStore { js: js.clone(), stream, cache: Mutex::new(HashMap::new()), ttl: cache_ttl })
    }

    async fn put(&self, record: &TokenRecord, expected_last: Option<u64>) -> Result<(), TokenError> {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(seq) = expected_last {
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, seq.to_string().as_str());
        }
        let value = serde_json::to_vec(record).expect("records serialise");
        self.js
            .publish_with_headers(format!("{STREAM}.{}", record.id), headers, value.into())
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        self.cache.lock().expect("cache lock").remove(&record.id);
        Ok(())
    }

    /// Issues a new token; the clear token is returned once and never stored.
    pub async fn create(
        &self,
        role: Role,
        scope: Option<String>,
        name: &str,
    ) -> Result<(String, TokenRecord), TokenError> {
        if role == Role::System {
            return Err(TokenError::Invalid("the system role cannot be given to a token".into()));
        }
        match (&scope, role.is_scoped()) {
            (None, true) => {
                return Err(TokenError::Invalid(format!("role {} needs --scope <id>", role.as_str())));
            }
            (Some(_), false) => {
                return Err(TokenError::Invalid(format!("role {} takes no scope", role.as_str())));
            }
            _ => {}
        }
        let mut id_bytes = [0u8; 6];
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut id_bytes);
        rand::rng().fill_bytes(&mut secret);
        let id = hex::encode(id_bytes);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let record = TokenRecord {
            id: id.clone(),
            role,
            scope,
            name: name.to_owned(),
            created_at: Utc::now(),
            secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            revoked_at: None,
        };
        self.put(&record, Some(0)).await?;
        Ok((format!("fa_{id}_{secret}"), record))
    }

    /// Every token ever issued, revoked ones included.
    pub async fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        let mut out = Vec::new();
        let last = self.stream.clone().info().await.map_err(unavailable)?.state.last_sequence;
        if last > 0 {
            let mut messages = self
                .stream
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                    filter_subject: format!("{STREAM}.*"),
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?
                .messages()
                .await
                .map_err(unavailable)?;
            while let Some(message) = messages.next().await {
                let message = message.map_err(unavailable)?;
                out.push(serde_json::from_slice::<TokenRecord>(&message.payload).map_err(unavailable)?);
                if message.info().map_err(unavailable)?.pending == 0 {
                    break;
                }
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    pub async fn revoke(&self, id: &str) -> Result<(), TokenError> {
        let Some((mut record, seq)) = self.fetch_any(id).await? else {
            return Err(TokenError::NotFound(id.to_owned()));
        };
        if record.revoked_at.is_none() {
            record.revoked_at = Some(Utc::now());
            self.put(&record, Some(seq)).await?;
        }
        Ok(())
    }

    async fn fetch_any(&self, id: &str) -> Result<Option<(TokenRecord, u64)>, TokenError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        match self.stream.direct_get_last_for_subject(format!("{STREAM}.{id}")).await {
            Ok(message) => {
                let record = serde_json::from_slice(&message.payload).map_err(unavailable)?;
                Ok(Some((record, message.sequence)))
            }
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The live (not revoked) record of a token id.
    async fn fetch(&self, id: &str) -> Result<Option<TokenRecord>, TokenError> {
        Ok(self.fetch_any(id).await?.map(|(r, _)| r).filter(|r| r.revoked_at.is_none()))
    }

    /// The actor a bearer token stands for, or `None` for an unknown or revoked token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Actor>, TokenError> {
        let Some((id, secret)) = token.strip_prefix("fa_").and_then(|t| t.split_once('_')) else {
            return Ok(None);
        };
        let cached = self.cache.lock().expect("cache lock").get(id).cloned();
        let record = match cached {
            Some((record, at)) if at.elapsed() < self.ttl => Some(record),
            _ => {
                // Reading the token stream while NATS is down would only wait for a timeout.
                if self.js.client().connection_state() != async_nats::connection::State::Connected {
                    return Err(TokenError::Unavailable(
                        "NATS is not connected (reconnecting); try again shortly".into(),
                    ));
                }
                let record = self.fetch(id).await?;
                // Only real tokens are cached: unknown ids come from anyone on the network and
                // must not grow the cache.
                let mut cache = self.cache.lock().expect("cache lock");
                match &record {
                    Some(r) => {
                        if cache.len() >= MAX_CACHED {
                            cache.clear();
                        }
                        cache.insert(id.to_owned(), (r.clone(), Instant::now()));
                    }
                    None => {
                        cache.remove(id);
                    }
                }
                record
            }
        };
        let Some(record) = record else {
            return Ok(None);
        };
        let presented = hex::encode(Sha256::digest(secret.as_bytes()));
        if constant_time_eq(presented.as_bytes(), record.secret_sha256.as_bytes()) {
            Ok(Some(record.actor()))
        } else {
            Ok(None)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
