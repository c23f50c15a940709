use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use eventcore::{decode_event_raw, encode_event, Aggregate, AggregateId, CommandMeta, Commit};
use eventstore::{AggregateRef, EventStore, Expected, StoreError, StoredCommit};
use lru::LruCache;

use crate::{CommandReply, ReplyEvent, ServiceError};

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Reloads and retries after a concurrency conflict before giving up.
    pub max_retries: u32,
    /// Aggregates kept decoded in memory.
    pub cache_size: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig { max_retries: 8, cache_size: 10_000 }
    }
}

#[derive(Clone)]
struct Loaded<A> {
    state: A,
    version: u64,
    last_seq: u64,
    /// Command ids already committed on this aggregate, with their commit's sequence.
    commands: HashMap<String, u64>,
}

impl<A: Aggregate> Loaded<A> {
    fn new() -> Self {
        Loaded { state: A::default(), version: 0, last_seq: 0, commands: HashMap::new() }
    }

    fn fold(&mut self, stored: &StoredCommit) -> Result<(), ServiceError> {
        for envelope in &stored.commit.events {
            let event: A::Event = decode_event_raw(&envelope.event_type, envelope.schema_version, &envelope.data)
                .map_err(|e| {
                    ServiceError::internal("loading an aggregate", format!("{}#{}: {e}", stored.stream, stored.seq))
                })?;
            self.state.apply(&event);
            self.version = envelope.aggregate_version;
        }
        self.last_seq = stored.seq;
        self.commands.insert(stored.commit.command_id.clone(), stored.seq);
        Ok(())
    }
}

/// Runs commands against aggregates of type `A` stored in one service stream.
///
/// The last states are cached: a command on a cached aggregate is decided without reading the
/// store, and the concurrency check on append catches a stale cache (another instance wrote),
/// after which the runner reads what it missed and decides again.
pub struct CommandRunner<A: Aggregate> {
    store: EventStore,
    service: &'static str,
    config: RunnerConfig,
    cache: Mutex<LruCache<AggregateId, Loaded<A>>>,
    /// Serialises commands on the same aggregate inside this process, so conflicts only come
    /// from other instances.
    stripes: Vec<tokio::sync::Mutex<()>>,
}

fn store_error(e: StoreError) -> ServiceError {
    match e {
        StoreError::Unavailable(m) => ServiceError::unavailable("event_store_unavailable", m),
        other => ServiceError::internal("using the event store", other),
    }
}

impl<A: Aggregate> CommandRunner<A> {
    pub fn new(store: EventStore, service: &'static str, config: RunnerConfig) -> Self {
        let size = NonZeroUsize::new(config.cache_size.max(1)).expect("non-zero");
        CommandRunner {
            store,
            service,
            config,
            cache: Mutex::new(LruCache::new(size)),
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    fn stripe(&self, id: &AggregateId) -> &tokio::sync::Mutex<()> {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        &self.stripes[(h.finish() as usize) % self.stripes.len()]
    }

    /// The current state of an aggregate, read from the store past the cached state.
    pub async fn load(&self, id: &AggregateId) -> Result<(A, u64), ServiceError> {
        let loaded = self.refreshed(id, None).await?;
        Ok((loaded.state, loaded.version))
    }

    /// The first answer of `command_id` if it was committed on aggregate `id` already. A handler
    /// that checks the current state before deciding asks this first, so that a retry the answer
    /// journal missed (its write failed, two instances raced) still gets its first commit rather
    /// than a refusal from what changed since.
    pub async fn answered(&self, id: &AggregateId, command_id: &str) -> Result<Option<CommandReply>, ServiceError> {
        let loaded = self.refreshed(id, None).await?;
        match loaded.commands.get(command_id) {
            Some(&seq) => Ok(Some(self.first_answer(seq).await?)),
            None => Ok(None),
        }
    }

    /// The cached state if the aggregate is cached with at least one event, else loaded: for
    /// aggregates whose answer to the question asked cannot go stale once they exist (a site,
    /// once created, stays).
    pub async fn load_cached(&self, id: &AggregateId) -> Result<A, ServiceError> {
        let hit = self.cache.lock().expect("cache lock").get(id).filter(|l| l.version > 0).map(|l| l.state.clone());
        match hit {
            Some(state) => Ok(state),
            None => Ok(self.load(id).await?.0),
        }
    }

    async fn refreshed(&self, id: &AggregateId, cached: Option<Loaded<A>>) -> Result<Loaded<A>, ServiceError> {
        let mut loaded = match cached {
            Some(c) => c,
            None => {
                let hit = self.cache.lock().expect("cache lock").get(id).cloned();
                hit.unwrap_or_else(Loaded::new)
            }
        };
        let target = AggregateRef::new(self.service, A::KIND, id.clone());
        for stored in self.store.load(&target, loaded.last_seq).await.map_err(store_error)? {
            loaded.fold(&stored)?;
        }
        self.cache.lock().expect("cache lock").put(id.clone(), loaded.clone());
        Ok(loaded)
    }

    /// Decides `command` on aggregate `id` and commits the events.
    pub async fn execute(
        &self,
        id: AggregateId,
        command: A::Command,
        meta: CommandMeta,
    ) -> Result<CommandReply, ServiceError> {
        self.execute_with_state(id, command, meta).await.map(|(reply, _)| reply)
    }

    /// Like [`execute`](Self::execute), and also returns the aggregate's state once the command
    /// is in (for processes that go on from what the aggregate granted).
    pub async fn execute_with_state(
        &self,
        id: AggregateId,
        command: A::Command,
        meta: CommandMeta,
    ) -> Result<(CommandReply, A), ServiceError> {
        let _serial = self.stripe(&id).lock().await;
        let target = AggregateRef::new(self.service, A::KIND, id.clone());
        let cached = self.cache.lock().expect("cache lock").get(&id).cloned();
        let mut loaded = match cached {
            Some(cached) => cached,
            None => self.refreshed(&id, Some(Loaded::new())).await?,
        };
        for attempt in 0..=self.config.max_retries {
            if let Some(&seq) = loaded.commands.get(&meta.command_id) {
                return Ok((self.first_answer(seq).await?, loaded.state));
            }
            let events = loaded.state.decide(&command)?;
            if events.is_empty() {
                let reply = CommandReply {
                    aggregate_id: id.to_string(),
                    stream: self.service.to_owned(),
                    seq: loaded.last_seq,
                    version: loaded.version,
                    duplicate: false,
                    events: Vec::new(),
                };
                return Ok((reply, loaded.state));
            }
            let encoded = events.iter().map(encode_event).collect();
            let commit = Commit::new(&meta, A::KIND, id.as_str(), loaded.version, encoded, Utc::now());
            let expected = Expected { version: loaded.version, last_seq: loaded.last_seq };
            match self.store.append(&target, expected, &commit).await {
                Ok(appended) if appended.duplicate => {
                    // Another instance committed this command meanwhile: answer with its commit.
                    self.cache.lock().expect("cache lock").pop(&id);
                    let state = self.refreshed(&id, None).await?.state;
                    return Ok((self.first_answer(appended.seq).await?, state));
                }
                Ok(appended) => {
                    for event in &events {
                        loaded.state.apply(event);
                    }
                    loaded.version = commit.last_version();
                    loaded.last_seq = appended.seq;
                    loaded.commands.insert(meta.command_id.clone(), appended.seq);
                    self.cache.lock().expect("cache lock").put(id.clone(), loaded.clone());
                    return Ok((reply(&commit, &appended.stream, appended.seq, false), loaded.state));
                }
                Err(StoreError::Conflict { .. }) => {
                    tracing::debug!(subject = %target.subject(), attempt, "concurrency conflict, reloading");
                    loaded = self.refreshed(&id, Some(loaded)).await?;
                    if attempt > 1 {
                        tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                    }
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ServiceError::conflict(
            "too_many_conflicts",
            format!("{} is being changed by others; try again", target.subject()),
        ))
    }

    /// The answer to a command already committed at `seq`, for a repeated command.
    async fn first_answer(&self, seq: u64) -> Result<CommandReply, ServiceError> {
        let stored = self.store.commit_at(self.service, seq).await.map_err(store_error)?;
        Ok(reply(&stored.commit, &stored.stream, stored.seq, true))
    }
}

fn reply(commit: &Commit, stream: &str, seq: u64, duplicate: bool) -> CommandReply {
    CommandReply {
        aggregate_id: commit.aggregate_id.clone(),
        stream: stream.to_owned(),
        seq,
        version: commit.last_version(),
        duplicate,
        events: commit
            .events
            .iter()
            .map(|e| ReplyEvent {
                event_type: e.event_type.clone(),
                data: serde_json::from_str(e.data.get()).unwrap_or(serde_json::Value::Null),
            })
            .collect(),
    }
}
