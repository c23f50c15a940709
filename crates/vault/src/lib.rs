//! Keys kept outside the event streams, so that personal data can be erased from an append-only
//! history.
//!
//! Each owner (a household) gets its own random 256-bit key, stored as the last message of
//! `vault.key.<owner>` in a stream of its own (`vault`, one message per subject). Personal data
//! is sealed with XChaCha20-Poly1305 under that key before it goes into any event; erasure
//! purges the key, after which every copy of the ciphertext — in the streams, in projections, in
//! a replay — is noise.
//!
//! Duplicate detection across associations uses a keyed hash (HMAC-SHA-256 under a platform
//! secret kept in the same stream) of a normalised identity, indexed as
//! `vault.identity.<hash>.<owner>`: the platform can tell that two owners share an identity
//! without anyone reading the other's record, and erasure purges the owner's index entries too.

use async_nats::jetstream::{self, stream};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const STREAM: &str = "vault";
const SECRET_SUBJECT: &str = "vault.secret.identity";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault unavailable: {0}")]
    Unavailable(String),
    #[error("vault data is corrupt: {0}")]
    Corrupt(String),
    #[error("owner ids are 1 to 64 of A-Z a-z 0-9 - _")]
    InvalidOwner,
}

/// Ciphertext and nonce, base64, as events carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: String,
    pub ciphertext: String,
}

/// What makes two identities the same person: lower case, letters and digits only.
pub fn normalise_identity(identity: &str) -> String {
    identity.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

#[derive(Clone)]
pub struct Vault {
    js: jetstream::Context,
    stream: stream::Stream,
}

fn unavailable(e: impl std::fmt::Display) -> VaultError {
    VaultError::Unavailable(e.to_string())
}

fn check_owner(owner: &str) -> Result<(), VaultError> {
    if owner.is_empty()
        || owner.len() > 64
        || !owner.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(VaultError::InvalidOwner);
    }
    Ok(())
}

impl Vault {
    /// Creates (or updates) the `vault` stream.
    pub async fn open(js: jetstream::Context, replicas: usize) -> Result<Vault, VaultError> {
        let config = stream::Config {
            name: STREAM.into(),
            subjects: vec!["vault.>".into()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_messages_per_subject: 1,
            allow_direct: true,
            ..Default::default()
        };
        let stream = match js.get_stream(STREAM).await {
            Ok(_) => {
                js.update_stream(config).await.map_err(unavailable)?;
                js.get_stream(STREAM).await.map_err(unavailable)?
            }
            Err(_) => js.create_stream(config).await.map_err(unavailable)?,
        };
        Ok(Vault { js, stream })
    }

    async fn read(&self, subject: &str) -> Result<Option<Vec<u8>>, VaultError> {
        match self.stream.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(Some(message.payload.to_vec())),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(format!("reading {subject}: {e}"))),
        }
    }

    /// The 32 bytes stored at `subject`, created at random if there are none. Two callers racing
    /// agree: only the first write is accepted (expected subject sequence 0), the other reads it.
    async fn get_or_create(&self, subject: &str) -> Result<[u8; 32], VaultError> {
        for _ in 0..3 {
            if let Some(bytes) = self.read(subject).await? {
                return bytes.try_into().map_err(|_| VaultError::Corrupt(format!("{subject} is not 32 bytes")));
            }
            let fresh: [u8; 32] = rand::random();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
            let sent = self
                .js
                .publish_with_headers(subject.to_owned(), headers, bytes::Bytes::copy_from_slice(&fresh))
                .await
                .map_err(unavailable)?
                .await;
            match sent {
                Ok(_) => return Ok(fresh),
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(VaultError::Unavailable(format!("could not settle {subject}")))
    }

    /// Seals `plaintext` under `owner`'s key, creating the key on first use.
    pub async fn seal(&self, owner: &str, plaintext: &[u8]) -> Result<Sealed, VaultError> {
        check_owner(owner)?;
        let key = self.get_or_create(&format!("vault.key.{owner}")).await?;
        let cipher = XChaCha20Poly1305::new((&key).into());
        let nonce: [u8; 24] = rand::random();
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .map_err(|_| VaultError::Corrupt("encryption failed".into()))?;
        Ok(Sealed { nonce: B64.encode(nonce), ciphertext: B64.encode(ciphertext) })
    }

    /// Opens what was sealed for `owner`; `None` once the owner's key is destroyed.
    pub async fn unseal(&self, owner: &str, sealed: &Sealed) -> Result<Option<Vec<u8>>, VaultError> {
        check_owner(owner)?;
        let Some(key) = self.read(&format!("vault.key.{owner}")).await? else {
            return Ok(None);
        };
        let key: [u8; 32] =
            key.try_into().map_err(|_| VaultError::Corrupt(format!("key of {owner} is not 32 bytes")))?;
        let nonce = B64.decode(&sealed.nonce).map_err(|e| VaultError::Corrupt(e.to_string()))?;
        let ciphertext = B64.decode(&sealed.ciphertext).map_err(|e| VaultError::Corrupt(e.to_string()))?;
        if nonce.len() != 24 {
            return Err(VaultError::Corrupt("a nonce is 24 bytes".into()));
        }
        let cipher = XChaCha20Poly1305::new((&key).into());
        cipher
            .decrypt(XNonce::from_slice(&nonce), ciphertext.as_slice())
            .map(Some)
            .map_err(|_| VaultError::Corrupt(format!("sealed data of {owner} does not open with its key")))
    }

    /// The keyed hash of a [normalised](normalise_identity) identity.
    pub async fn identity_hash(&self, identity: &str) -> Result<String, VaultError> {
        let secret = self.get_or_create(SECRET_SUBJECT).await?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret).expect("any key length");
        mac.update(normalise_identity(identity).as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// Records that `owner` has this identity (replacing what it had), and returns the other
    /// owners that share it.
    pub async fn index_identity(&self, owner: &str, identity: &str) -> Result<Vec<String>, VaultError> {
        check_owner(owner)?;
        let hash = self.identity_hash(identity).await?;
        self.stream.purge().filter(format!("vault.identity.*.{owner}")).await.map_err(unavailable)?;
        self.js
            .publish(format!("vault.identity.{hash}.{owner}"), bytes::Bytes::new())
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(self.owners_of(&hash).await?.into_iter().filter(|o| o != owner).collect())
    }

    /// The owners other than `owner` that share its identity.
    pub async fn others_with_identity_of(&self, owner: &str) -> Result<Vec<String>, VaultError> {
        check_owner(owner)?;
        let mut hashes = Vec::new();
        let mut subjects =
            self.stream.info_with_subjects(format!("vault.identity.*.{owner}")).await.map_err(unavailable)?;
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(unavailable)?;
            if let Some(hash) = subject.split('.').nth(2) {
                hashes.push(hash.to_owned());
            }
        }
        let mut others = Vec::new();
        for hash in hashes {
            others.extend(self.owners_of(&hash).await?.into_iter().filter(|o| o != owner));
        }
        Ok(others)
    }

    async fn owners_of(&self, hash: &str) -> Result<Vec<String>, VaultError> {
        let mut owners = Vec::new();
        let mut subjects =
            self.stream.info_with_subjects(format!("vault.identity.{hash}.*")).await.map_err(unavailable)?;
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(unavailable)?;
            if let Some(owner) = subject.rsplit('.').next() {
                owners.push(owner.to_owned());
            }
        }
        owners.sort();
        Ok(owners)
    }

    /// Crypto-erasure: destroys `owner`'s key and identity entries. What was sealed for it can
    /// never be opened again.
    pub async fn destroy(&self, owner: &str) -> Result<(), VaultError> {
        check_owner(owner)?;
        self.stream.purge().filter(format!("vault.key.{owner}")).await.map_err(unavailable)?;
        self.stream.purge().filter(format!("vault.identity.*.{owner}")).await.map_err(unavailable)?;
        Ok(())
    }
}
