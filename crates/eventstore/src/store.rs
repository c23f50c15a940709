use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, stream::DirectGetErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use eventcore::{AggregateId, Commit, COMMIT_FORMAT};

/// The four services, each with its stream.
pub const SERVICES: [&str; 4] = ["donations", "stock", "distribution", "transport"];

/// Header carrying the [`Commit`] wire format version, so a reader can refuse a newer one
/// without parsing it.
pub const COMMIT_FORMAT_HEADER: &str = "Foodaid-Commit-Format";

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// 1 on one machine, 3 on a cluster.
    pub replicas: usize,
    /// How long JetStream remembers `Nats-Msg-Id`s.
    pub duplicate_window: Duration,
    /// How long start-up keeps retrying while a cluster elects its leaders.
    pub startup_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            replicas: 1,
            duplicate_window: Duration::from_secs(24 * 3600),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// Where an aggregate lives: `<service>.<kind>.<id>` in the service's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AggregateRef {
    pub service: &'static str,
    pub kind: &'static str,
    pub id: AggregateId,
}

impl AggregateRef {
    pub fn new(service: &'static str, kind: &'static str, id: AggregateId) -> Self {
        AggregateRef { service, kind, id }
    }

    pub fn subject(&self) -> String {
        format!("{}.{}.{}", self.service, self.kind, self.id)
    }
}

/// What the writer believes the aggregate looks like: its version (events so far) and the
/// stream sequence of its last commit (0 for a new aggregate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expected {
    pub version: u64,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub stream: String,
    pub seq: u64,
    /// The same command had already been committed; `seq` is that first commit.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredCommit {
    pub stream: String,
    pub seq: u64,
    pub commit: Commit,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{subject} changed since sequence {expected_seq}")]
    Conflict { subject: String, expected_seq: u64 },
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    #[error("message {seq} of stream {stream} is not a readable commit: {reason}")]
    Corrupt { stream: String, seq: u64, reason: String },
    #[error("no stream for service {0:?}")]
    UnknownService(String),
}

/// Handle on the service streams; cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    js: jetstream::Context,
    /// The connection under `js`, watched while waiting on the server.
    client: async_nats::Client,
    streams: Arc<HashMap<&'static str, jetstream::stream::Stream>>,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EventStore {
    /// Creates or updates the streams of `services` (idempotent), retrying while JetStream is
    /// not ready yet (a cluster electing its meta leader).
    pub async fn open(
        client: async_nats::Client,
        services: &[&'static str],
        config: &StoreConfig,
    ) -> Result<EventStore, StoreError> {
        let js = jetstream::new(client.clone());
        let mut streams = HashMap::new();
        let deadline = Instant::now() + config.startup_timeout;
        for &service in services {
            let stream_config = jetstream::stream::Config {
                name: service.to_owned(),
                subjects: vec![format!("{service}.>")],
                storage: jetstream::stream::StorageType::File,
                num_replicas: config.replicas,
                duplicate_window: config.duplicate_window,
                allow_direct: true,
                description: Some(format!("foodaid {service} events: one message per commit")),
                ..Default::default()
            };
            loop {
                match js.create_or_update_stream(stream_config.clone()).await {
                    Ok(_) => break,
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(stream = service, error = %e, "stream not ready, retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => return Err(unavailable(format!("creating stream {service}: {e}"))),
                }
            }
            let stream = js.get_stream(service).await.map_err(unavailable)?;
            streams.insert(service, stream);
        }
        Ok(EventStore { js, client, streams: Arc::new(streams) })
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    fn stream(&self, service: &str) -> Result<&jetstream::stream::Stream, StoreError> {
        self.streams.get(service).ok_or_else(|| StoreError::UnknownService(service.to_owned()))
    }

    /// Appends `commit` to `target` if its last commit is still `expected.last_seq`.
    ///
    /// The command id is the message id, so a retried command (same id) is reported as
    /// `duplicate` with the sequence of the first commit instead of being stored twice.
    pub async fn append(
        &self,
        target: &AggregateRef,
        expected: Expected,
        commit: &Commit,
    ) -> Result<Appended, StoreError> {
        let payload = serde_json::to_vec(commit).expect("commits serialise");
        self.unless_disconnected(|| format!("publishing to {}", target.subject()), async {
            let ack_future = self.send(target, expected, &commit.command_id, payload.into()).await?;
            match ack_future.await {
                Ok(ack) => Ok(Appended { stream: ack.stream, seq: ack.sequence, duplicate: ack.duplicate }),
                Err(e) => Err(publish_error(target, expected, e)),
            }
        })
        .await
    }

    /// `work`, unless the connection to NATS drops first: then `Unavailable` at once rather than
    /// after the time-out of an answer that will never come. Whether a commit sent just before
    /// was stored is unknown then; its retry (same command id, so same message id) finds out.
    async fn unless_disconnected<T>(
        &self,
        what: impl FnOnce() -> String,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::select! {
            biased;
            done = work => done,
            () = connection_lost(&self.client) => Err(unavailable(format!("{}: the NATS connection is lost", what()))),
        }
    }

    /// Sends a commit without waiting for its acknowledgement (the first of the two awaits of a
    /// JetStream publish), for callers that pipeline many appends.
    pub async fn send(
        &self,
        target: &AggregateRef,
        expected: Expected,
        command_id: &str,
        payload: Bytes,
    ) -> Result<jetstream::context::PublishAckFuture, StoreError> {
        self.stream(target.service)?;
        let subject = target.subject();
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{subject}/{command_id}").as_str());
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.last_seq.to_string().as_str());
        headers.insert(COMMIT_FORMAT_HEADER, COMMIT_FORMAT.to_string().as_str());
        self.js.publish_with_headers(subject, headers, payload).await.map_err(|e| publish_error(target, expected, e))
    }

    /// Reads the commits of `target` stored after stream sequence `after_seq`, oldest first.
    pub async fn load(&self, target: &AggregateRef, after_seq: u64) -> Result<Vec<StoredCommit>, StoreError> {
        let stream = self.stream(target.service)?;
        let subject = target.subject();
        self.unless_disconnected(|| format!("reading {subject}"), async {
            let mut commits = Vec::new();
            let mut next = after_seq + 1;
            loop {
                match stream.direct_get_next_for_subject(subject.as_str(), Some(next)).await {
                    Ok(message) => {
                        next = message.sequence + 1;
                        commits.push(decode_commit(
                            target.service,
                            message.sequence,
                            &message.headers,
                            &message.payload,
                        )?);
                    }
                    Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(commits),
                    Err(e) => return Err(unavailable(format!("reading {subject}: {e}"))),
                }
            }
        })
        .await
    }

    /// Reads the commit stored at `seq` in the stream of `service`.
    pub async fn commit_at(&self, service: &str, seq: u64) -> Result<StoredCommit, StoreError> {
        let stream = self.stream(service)?;
        let message = self
            .unless_disconnected(|| format!("reading {service}#{seq}"), async {
                stream.direct_get(seq).await.map_err(|e| unavailable(format!("reading {service}#{seq}: {e}")))
            })
            .await?;
        decode_commit(service, message.sequence, &message.headers, &message.payload)
    }

    /// Last sequence of one service's stream.
    pub async fn last_sequence(&self, service: &str) -> Result<u64, StoreError> {
        let mut stream = self.stream(service)?.clone();
        Ok(stream.info().await.map_err(unavailable)?.state.last_sequence)
    }

    /// Last sequence of each stream, for status and catch-up checks.
    pub async fn last_sequences(&self) -> Result<HashMap<String, u64>, StoreError> {
        let mut out = HashMap::new();
        for (name, stream) in self.streams.iter() {
            let mut stream = stream.clone();
            let info = stream.info().await.map_err(unavailable)?;
            out.insert((*name).to_owned(), info.state.last_sequence);
        }
        Ok(out)
    }
}

/// Parses a stored message as a [`Commit`], refusing formats newer than this build.
pub fn decode_commit(stream: &str, seq: u64, headers: &HeaderMap, payload: &[u8]) -> Result<StoredCommit, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { stream: stream.to_owned(), seq, reason };
    check_format_header(Some(headers)).map_err(corrupt)?;
    let commit: Commit = serde_json::from_slice(payload).map_err(|e| corrupt(e.to_string()))?;
    check_format(commit.format).map_err(corrupt)?;
    Ok(StoredCommit { stream: stream.to_owned(), seq, commit })
}

/// Refuses a message whose format header announces a commit format newer than this build's,
/// before its body is parsed. A message without the header is checked by its body alone.
pub fn check_format_header(headers: Option<&HeaderMap>) -> Result<(), String> {
    match headers.and_then(|h| h.get(COMMIT_FORMAT_HEADER)) {
        None => Ok(()),
        Some(value) => check_format(value.as_str().parse().map_err(|_| format!("bad {COMMIT_FORMAT_HEADER} header"))?),
    }
}

/// Refuses a commit format newer than this build's.
pub fn check_format(format: u32) -> Result<(), String> {
    if format > COMMIT_FORMAT {
        return Err(format!("commit format {format} is newer than {COMMIT_FORMAT}"));
    }
    Ok(())
}

fn publish_error(
    target: &AggregateRef,
    expected: Expected,
    e: impl Into<jetstream::context::PublishError>,
) -> StoreError {
    let e: jetstream::context::PublishError = e.into();
    match e.kind() {
        PublishErrorKind::WrongLastSequence => {
            StoreError::Conflict { subject: target.subject(), expected_seq: expected.last_seq }
        }
        _ => unavailable(format!("publishing to {}: {e}", target.subject())),
    }
}

/// Resolves when `client` is not connected, checking at once and then every 50 ms: raced
/// against a request or a publish acknowledgement, it ends the wait as soon as the connection
/// drops, since an answer owed by a server that died never comes (async-nats would wait for the
/// time-out, 5 to 10 s). Most waits end before the first timer fires, so it costs them one timer.
pub async fn connection_lost(client: &async_nats::Client) {
    let mut every = tokio::time::interval(Duration::from_millis(50));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
    }
}
