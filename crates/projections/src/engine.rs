use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::stream::{select_all, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::store::{
    Pending, Projection, ProjectionStore, RecordedEvent, RowCache, StoreError, StoredCommitRef, Tx, VersionCheck,
};

pub type Checkpoints = HashMap<String, u64>;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's name: each node keeps its own projections, so consumers are named per node.
    pub node: String,
    /// Most events applied in one sled write.
    pub batch_size: usize,
    /// Most bytes of messages one projection receives ahead of what it has applied. Bounds what
    /// a projection catching up holds: the server sends faster than the projection applies.
    pub read_ahead_bytes: usize,
    /// Most projections catching up at once. Each holds its read-ahead and two large batches, so
    /// nine projections rebuilding together would hold nine times that, for no more speed: one
    /// catch-up keeps a core busy, and nats-server and sled's writes take the other. The others
    /// wait their turn (`/health` shows their lag).
    pub catch_up_concurrency: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { node: "local".into(), batch_size: 2048, read_ahead_bytes: 8 << 20, catch_up_concurrency: 1 }
    }
}

/// Where a projection stopped and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stuck {
    pub stream: String,
    pub seq: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionState {
    Starting,
    Running,
    Stuck,
    Rebuilding,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// The version of what it writes ([`Projection::version`]); 0 when answered by a build that
    /// did not report versions.
    #[serde(default)]
    pub version: u32,
    /// The streams it reads.
    #[serde(default)]
    pub streams: Vec<String>,
    pub state: ProjectionState,
    pub checkpoints: Checkpoints,
    pub stuck: Option<Stuck>,
    /// Hash of the projection's rows, when asked for (to compare two builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("projection {name} has not reached {stream}#{seq} within {timeout_ms} ms")]
    Timeout { name: String, stream: String, seq: u64, timeout_ms: u64 },
    #[error("projection {name} is stuck at {}#{}: {}", .stuck.stream, .stuck.seq, .stuck.reason)]
    Stuck { name: String, stuck: Stuck },
}

#[derive(Debug, Clone, Default)]
struct Progress {
    checkpoints: Checkpoints,
    stuck: Option<Stuck>,
    state: Option<ProjectionState>,
    /// A rebuild under way: the projection is `rebuilding` until it reaches these.
    rebuild: Option<Rebuild>,
}

#[derive(Debug, Clone)]
struct Rebuild {
    /// The last sequence of each stream when the rebuild began (empty until the runner has
    /// read them).
    targets: Checkpoints,
    started: Instant,
}

impl Progress {
    /// Events recorded and to record until the rebuild's targets.
    fn rebuilt(&self) -> (u64, u64) {
        let Some(rebuild) = &self.rebuild else { return (0, 0) };
        rebuild.targets.iter().fold((0, 0), |(done, total), (stream, target)| {
            (done + self.checkpoints.get(stream).copied().unwrap_or(0).min(*target), total + target)
        })
    }

    /// Running, unless a rebuild has not reached its targets yet. Answers the rebuild when this
    /// is the moment it ends.
    fn settle(&mut self) -> Option<Rebuild> {
        let (done, total) = self.rebuilt();
        if self.rebuild.as_ref().is_some_and(|r| r.targets.is_empty() || done < total) {
            self.state = Some(ProjectionState::Rebuilding);
            return None;
        }
        self.state = Some(ProjectionState::Running);
        self.rebuild.take()
    }
}

struct HandleInner {
    projection: Arc<dyn Projection>,
    progress: watch::Sender<Progress>,
    runner: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

/// A registered projection: its progress, for queries that wait and for status reports.
#[derive(Clone)]
pub struct ProjectionHandle {
    inner: Arc<HandleInner>,
}

impl ProjectionHandle {
    pub fn name(&self) -> &'static str {
        self.inner.projection.name()
    }

    pub fn streams(&self) -> &'static [&'static str] {
        self.inner.projection.streams()
    }

    pub fn version(&self) -> u32 {
        self.inner.projection.version()
    }

    pub fn status(&self) -> ProjectionStatus {
        let p = self.inner.progress.borrow();
        ProjectionStatus {
            name: self.name().to_owned(),
            version: self.version(),
            streams: self.streams().iter().map(|s| (*s).to_owned()).collect(),
            state: p.state.unwrap_or(ProjectionState::Stopped),
            checkpoints: p.checkpoints.clone(),
            stuck: p.stuck.clone(),
            digest: None,
        }
    }

    /// Whether the projection has recorded `stream` up to `seq` already.
    pub fn reached(&self, stream: &str, seq: u64) -> bool {
        self.inner.progress.borrow().checkpoints.get(stream).copied().unwrap_or(0) >= seq
    }

    /// Waits until the projection has recorded `stream` up to `seq` (read-your-writes).
    pub async fn wait_for(&self, stream: &str, seq: u64, timeout: Duration) -> Result<(), WaitError> {
        let mut rx = self.inner.progress.subscribe();
        let reached = |p: &Progress| {
            p.checkpoints.get(stream).copied().unwrap_or(0) >= seq
                || p.stuck.as_ref().is_some_and(|s| s.stream == stream && s.seq <= seq)
        };
        let outcome = match tokio::time::timeout(timeout, rx.wait_for(reached)).await {
            Ok(Ok(p)) => Some(p.clone()),
            _ => None,
        };
        match outcome {
            Some(p) => match p.stuck {
                Some(stuck) if p.checkpoints.get(stream).copied().unwrap_or(0) < seq => {
                    Err(WaitError::Stuck { name: self.name().to_owned(), stuck })
                }
                _ => Ok(()),
            },
            None => Err(WaitError::Timeout {
                name: self.name().to_owned(),
                stream: stream.to_owned(),
                seq,
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    fn set(&self, f: impl FnOnce(&mut Progress)) {
        self.inner.progress.send_modify(f);
    }
}

/// Runs projections: one task per projection, each reading its streams through durable pull
/// consumers named `proj_<projection>_<node>`.
pub struct Engine {
    store: ProjectionStore,
    js: jetstream::Context,
    config: EngineConfig,
    handles: Vec<ProjectionHandle>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    catch_ups: Arc<Semaphore>,
}

enum RunEnd {
    Cancelled,
    Stuck,
}

impl Engine {
    pub fn new(store: ProjectionStore, js: jetstream::Context, config: EngineConfig) -> Engine {
        let catch_ups = Arc::new(Semaphore::new(config.catch_up_concurrency.max(1)));
        Engine {
            store,
            js,
            config,
            handles: Vec::new(),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            catch_ups,
        }
    }

    pub fn register(&mut self, projection: impl Projection) -> ProjectionHandle {
        let handle = ProjectionHandle {
            inner: Arc::new(HandleInner {
                projection: Arc::new(projection),
                progress: watch::Sender::new(Progress::default()),
                runner: Mutex::new(None),
            }),
        };
        self.handles.push(handle.clone());
        handle
    }

    pub fn handles(&self) -> &[ProjectionHandle] {
        &self.handles
    }

    pub fn handle(&self, name: &str) -> Option<&ProjectionHandle> {
        self.handles.iter().find(|h| h.name() == name)
    }

    pub fn statuses(&self) -> Vec<ProjectionStatus> {
        self.handles.iter().map(|h| h.status()).collect()
    }

    /// Statuses with the digest of each projection's rows (reads every row: not for hot paths).
    pub async fn statuses_with_digests(&self) -> Vec<ProjectionStatus> {
        let mut out = self.statuses();
        for status in &mut out {
            let (store, name) = (self.store.clone(), status.name.clone());
            status.digest = tokio::task::spawn_blocking(move || store.digest(&name).ok()).await.ok().flatten();
        }
        out
    }

    /// Starts every registered projection.
    pub fn start(&self) {
        for handle in &self.handles {
            self.spawn(handle);
        }
    }

    fn spawn(&self, handle: &ProjectionHandle) {
        let token = self.shutdown.child_token();
        let task = Runner {
            handle: handle.clone(),
            store: self.store.clone(),
            js: self.js.clone(),
            config: self.config.clone(),
            cancel: token.clone(),
            logged: Mutex::new(Instant::now()),
            catch_ups: self.catch_ups.clone(),
        };
        let join = self.tracker.spawn(task.run());
        *handle.inner.runner.lock().expect("runner lock") = Some((token, join));
    }

    async fn stop(&self, handle: &ProjectionHandle) {
        let runner = handle.inner.runner.lock().expect("runner lock").take();
        if let Some((token, join)) = runner {
            token.cancel();
            let _ = join.await;
        }
    }

    /// Drops a projection's rows and consumers and rebuilds it from the start of its streams.
    /// Returns once the rebuild has started; follow it with [`ProjectionHandle::wait_for`].
    pub async fn replay(&self, name: &str) -> Result<(), StoreError> {
        let Some(handle) = self.handle(name).cloned() else {
            return Err(StoreError::UnknownProjection(name.to_owned()));
        };
        self.stop(&handle).await;
        for stream in handle.streams() {
            if let Ok(s) = self.js.get_stream(*stream).await {
                let _ = s.delete_consumer(&consumer_name(name, &self.config.node)).await;
            }
        }
        let store = self.store.clone();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || store.clear(&owned))
            .await
            .map_err(|e| StoreError::Corrupt { tree: name.to_owned(), reason: e.to_string() })??;
        handle.set(|p| {
            *p = Progress {
                state: Some(ProjectionState::Rebuilding),
                rebuild: Some(Rebuild { targets: Checkpoints::new(), started: Instant::now() }),
                ..Progress::default()
            }
        });
        tracing::info!(projection = name, version = handle.version(), "projection rebuild started");
        self.spawn(&handle);
        Ok(())
    }

    /// Stops every projection, waits for in-flight batches, and flushes sled.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        if let Err(e) = self.store.flush().await {
            tracing::warn!(error = %e, "flushing projections failed");
        }
    }
}

/// A projection further behind than this reads with an ordered consumer first.
const CATCH_UP_THRESHOLD: u64 = 1000;

/// While catching up, a batch holds this many times `batch_size` events: latency does not
/// matter then, and the more events a batch holds, the more writes to the same rows collapse
/// into one.
const CATCH_UP_BATCHES: usize = 8;

/// ... and at most about this many bytes of messages: commits range from a few hundred bytes to
/// tens of kilobytes (a donation of fifty lines).
const CATCH_UP_BATCH_BYTES: usize = 8 << 20;

pub(crate) fn consumer_name(projection: &str, node: &str) -> String {
    format!("proj_{projection}_{node}")
}

/// How often a rebuild logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

struct Runner {
    handle: ProjectionHandle,
    store: ProjectionStore,
    js: jetstream::Context,
    config: EngineConfig,
    cancel: CancellationToken,
    /// When a rebuild's progress was last logged.
    logged: Mutex<Instant>,
    /// Turns to catch up, shared by the engine's projections.
    catch_ups: Arc<Semaphore>,
}

impl Runner {
    async fn run(self) {
        let name = self.handle.name();
        loop {
            match self.run_once().await {
                Ok(RunEnd::Cancelled) => break,
                Ok(RunEnd::Stuck) => {
                    self.cancel.cancelled().await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(projection = name, error = %e, "projection interrupted, restarting");
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        self.handle.set(|p| {
            if p.state != Some(ProjectionState::Stuck) {
                p.state = Some(ProjectionState::Stopped)
            }
        });
    }

    async fn run_once(&self) -> Result<RunEnd, String> {
        let name = self.handle.name();
        let projection = self.handle.inner.projection.clone();
        self.check_version().await?;
        let mut checkpoints = self.load_checkpoints().await?;
        let durable = consumer_name(name, &self.config.node);

        let mut streams = Vec::new();
        for &stream_name in projection.streams() {
            let stream = self.js.get_stream(stream_name).await.map_err(|e| format!("stream {stream_name}: {e}"))?;
            let last = stream.cached_info().state.last_sequence;
            streams.push((stream_name, stream, last));
        }
        // A rebuild (a replay asked for, a new version) lasts until every stream is recorded up
        // to where it stood when the rebuild began.
        self.handle.set(|p| {
            if let Some(rebuild) = p.rebuild.as_mut().filter(|r| r.targets.is_empty()) {
                rebuild.targets = streams.iter().map(|(s, _, last)| ((*s).to_owned(), *last)).collect();
            }
        });

        let mut sources = Vec::new();
        for (stream_name, stream, last) in streams {
            let mut checkpoint = checkpoints.get(stream_name).copied().unwrap_or(0);
            if checkpoint > last {
                // The stream was recreated under us: the projection describes another history.
                tracing::warn!(
                    projection = name,
                    stream = stream_name,
                    checkpoint,
                    last,
                    "checkpoint ahead of stream, rebuilding"
                );
                let (store, version) = (self.store.clone(), projection.version());
                tokio::task::spawn_blocking(move || store.reset(name, version))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                checkpoints.clear();
                checkpoint = 0;
            }
            self.handle.set(|p| p.checkpoints = checkpoints.clone());
            if last > checkpoint + CATCH_UP_THRESHOLD {
                // Far behind (a replay, a new node): read at the speed of a plain ordered
                // consumer first, then tail with the durable consumer.
                let turn = match self.catch_ups.clone().try_acquire_owned() {
                    Ok(turn) => turn,
                    Err(_) => {
                        tracing::info!(projection = name, stream = stream_name, "waiting for a turn to catch up");
                        tokio::select! {
                            _ = self.cancel.cancelled() => return Ok(RunEnd::Cancelled),
                            turn = self.catch_ups.clone().acquire_owned() => turn.map_err(|e| e.to_string())?,
                        }
                    }
                };
                tracing::info!(
                    projection = name,
                    stream = stream_name,
                    from = checkpoint + 1,
                    to = last,
                    "catching up"
                );
                let messages = stream
                    .create_consumer(pull::OrderedConfig {
                        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: checkpoint + 1 },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("catching up on {stream_name}: {e}"))?
                    .messages()
                    .await
                    .map_err(|e| format!("catching up on {stream_name}: {e}"))?;
                let deliveries = messages.map(move |m| (stream_name, m.map_err(|e| e.to_string())));
                let consumed =
                    self.consume(&projection, &mut checkpoints, deliveries, false, Some((stream_name, last))).await?;
                drop(turn);
                match consumed {
                    Consumed::Reached => checkpoint = checkpoints.get(stream_name).copied().unwrap_or(0),
                    Consumed::Ended(end) => return Ok(end),
                }
            }
            let consumer = ensure_consumer(&stream, &durable, checkpoint, self.config.batch_size).await?;
            let messages = consumer
                .stream()
                .max_messages_per_batch(self.config.batch_size)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| format!("consuming {stream_name}: {e}"))?;
            sources.push(messages.map(move |m| (stream_name, m.map_err(|e| e.to_string()))).boxed());
        }
        let mut ended = None;
        self.handle.set(|p| {
            p.checkpoints = checkpoints.clone();
            p.stuck = None;
            ended = p.settle();
        });
        self.log_rebuild_end(ended);
        tracing::debug!(projection = name, ?checkpoints, "projection running");
        match self.consume(&projection, &mut checkpoints, select_all(sources), true, None).await? {
            Consumed::Ended(end) => Ok(end),
            Consumed::Reached => Err("live consumer ended".into()),
        }
    }

    /// Clears the projection when its rows were written by another version of its code, and
    /// marks it `rebuilding`.
    async fn check_version(&self) -> Result<(), String> {
        let (store, name, version) = (self.store.clone(), self.handle.name(), self.handle.version());
        let check = tokio::task::spawn_blocking(move || store.ensure_version(name, version))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if let VersionCheck::Rebuild { from } = check {
            match from {
                Some(from) => {
                    tracing::info!(projection = name, from, to = version, "projection version changed, rebuilding")
                }
                None => tracing::info!(projection = name, to = version, "projection rows have no version, rebuilding"),
            }
            self.handle.set(|p| {
                *p = Progress {
                    state: Some(ProjectionState::Rebuilding),
                    rebuild: Some(Rebuild { targets: Checkpoints::new(), started: Instant::now() }),
                    ..Progress::default()
                }
            });
        }
        Ok(())
    }

    /// Logs a rebuild's progress, every [`PROGRESS_EVERY`] at most.
    fn log_rebuild_progress(&self, done: u64, total: u64) {
        let mut logged = self.logged.lock().expect("log lock");
        if logged.elapsed() < PROGRESS_EVERY {
            return;
        }
        *logged = Instant::now();
        let pct = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
        tracing::info!(projection = self.handle.name(), done, total, pct = format!("{pct:.0}"), "rebuilding");
    }

    fn log_rebuild_end(&self, ended: Option<Rebuild>) {
        if let Some(rebuild) = ended {
            tracing::info!(
                projection = self.handle.name(),
                version = self.handle.version(),
                events = rebuild.targets.values().sum::<u64>(),
                seconds = format!("{:.1}", rebuild.started.elapsed().as_secs_f64()),
                "projection rebuilt"
            );
        }
    }

    async fn load_checkpoints(&self) -> Result<Checkpoints, String> {
        let store = self.store.clone();
        let name = self.handle.name();
        tokio::task::spawn_blocking(move || store.checkpoints(name))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Applies chunks of messages until cancelled, stuck, or (`until`) a stream position is
    /// recorded. Two batches are in the pipeline: while one is written to sled (with its
    /// checkpoints, in one atomic batch), the next is decoded and applied, reading through the
    /// writes still in flight. A batch is acknowledged, and its progress published, only once
    /// written.
    async fn consume<S>(
        &self,
        projection: &Arc<dyn Projection>,
        checkpoints: &mut Checkpoints,
        deliveries: S,
        ack: bool,
        until: Option<(&str, u64)>,
    ) -> Result<Consumed, String>
    where
        S: futures::Stream<Item = Delivery> + Unpin + Send + 'static,
    {
        let name = self.handle.name();
        // While catching up, batches are larger: latency does not matter then.
        let limit = self.config.batch_size * if until.is_some() { CATCH_UP_BATCHES } else { 1 };
        let budget = self.config.read_ahead_bytes.clamp(MIN_READ_AHEAD, u32::MAX as usize);
        let (mut deliveries, _reader) = read_ahead(deliveries, self.config.batch_size * CATCH_UP_BATCHES, budget);
        let mut prepared_to = checkpoints.clone();
        let mut in_flight: Option<InFlight> = None;
        let mut cache = Some(RowCache::default());
        let outcome = loop {
            if let Some((stream, last)) = until {
                if prepared_to.get(stream).copied().unwrap_or(0) >= last {
                    break Ok(Consumed::Reached);
                }
            }
            let mut chunk = Vec::with_capacity(limit);
            tokio::select! {
                _ = self.cancel.cancelled() => break Ok(Consumed::Ended(RunEnd::Cancelled)),
                // Nothing new to read: land the batch in flight so its progress shows.
                written = async { (&mut in_flight.as_mut().expect("guarded").write).await }, if in_flight.is_some() => {
                    let batch = in_flight.take().expect("guarded");
                    self.acknowledge(batch, written.map_err(|e| e.to_string())?, ack, checkpoints, &mut cache).await?;
                    continue;
                }
                received = deliveries.recv_many(&mut chunk, limit) => if received == 0 {
                    break Err("consumer closed".to_owned());
                },
            };
            // Taken into a batch, the messages leave the read-ahead budget: the reader goes on
            // while the batch fills and is applied.
            let mut bytes = release(&mut chunk);
            if let Some((stream, last)) = until {
                // Catching up: fill large batches, fewer and larger sled writes.
                while chunk.len() < limit && bytes < CATCH_UP_BATCH_BYTES && !reaches(&chunk, stream, last) {
                    let room = limit - chunk.len();
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        received = deliveries.recv_many(&mut chunk, room) => if received == 0 {
                            break;
                        } else {
                            let start = chunk.len() - received;
                            bytes += release(&mut chunk[start..]);
                        },
                    }
                }
            }
            let mut messages = Vec::with_capacity(chunk.len());
            let mut failed = None;
            for Received { stream, message, .. } in chunk {
                match message {
                    Ok(m) => messages.push((stream, m)),
                    Err(e) => failed = Some(format!("receiving from {stream}: {e}")),
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
            let base = in_flight.as_ref().map(|f| f.pending.clone());
            let (store, projection, from) = (self.store.clone(), projection.clone(), prepared_to.clone());
            let rows = cache.take().unwrap_or_default();
            let mut prepared =
                tokio::task::spawn_blocking(move || prepare(&store, name, &*projection, base, rows, &from, messages))
                    .await
                    .map_err(|e| e.to_string())??;
            cache = prepared.cache.take();
            // The batch before must land first: the same keys may be written by both.
            if let Some(previous) = in_flight.take() {
                self.land(previous, ack, checkpoints, &mut cache).await?;
            }
            prepared_to = prepared.checkpoints.clone();
            let pending = Arc::new(prepared.pending);
            let write = {
                let (store, pending, to) = (self.store.clone(), pending.clone(), prepared.checkpoints.clone());
                tokio::task::spawn_blocking(move || store.write_pending(name, &pending, &to).map_err(|e| e.to_string()))
            };
            in_flight = Some(InFlight { write, pending, checkpoints: prepared.checkpoints, acks: prepared.acks });
            if let Some(stuck) = prepared.stuck {
                if let Some(last) = in_flight.take() {
                    self.land(last, ack, checkpoints, &mut cache).await?;
                }
                tracing::error!(projection = name, stream = %stuck.stream, seq = stuck.seq, reason = %stuck.reason, "projection stuck");
                self.handle.set(|p| {
                    p.stuck = Some(stuck);
                    p.state = Some(ProjectionState::Stuck);
                });
                return Ok(Consumed::Ended(RunEnd::Stuck));
            }
        };
        if let Some(last) = in_flight.take() {
            self.land(last, ack, checkpoints, &mut cache).await?;
        }
        outcome
    }

    /// Waits for a batch's write, then acknowledges it and publishes the progress.
    async fn land(
        &self,
        mut batch: InFlight,
        ack: bool,
        checkpoints: &mut Checkpoints,
        cache: &mut Option<RowCache>,
    ) -> Result<(), String> {
        let written = (&mut batch.write).await.map_err(|e| e.to_string())?;
        self.acknowledge(batch, written, ack, checkpoints, cache).await
    }

    async fn acknowledge(
        &self,
        batch: InFlight,
        written: Result<(), String>,
        ack: bool,
        checkpoints: &mut Checkpoints,
        cache: &mut Option<RowCache>,
    ) -> Result<(), String> {
        written?;
        // The rows are in sled now: keep them at hand for the batches that follow. Nothing
        // else holds the batch's writes any more, so they move rather than copy.
        let pending = Arc::try_unwrap(batch.pending).unwrap_or_else(|shared| (*shared).clone());
        cache.get_or_insert_with(RowCache::default).absorb(pending);
        if ack {
            for message in &batch.acks {
                message.ack().await.map_err(|e| format!("ack: {e}"))?;
            }
        }
        *checkpoints = batch.checkpoints;
        let reached = checkpoints.clone();
        let (mut ended, mut rebuilt) = (None, None);
        self.handle.set(|p| {
            p.checkpoints = reached;
            ended = p.settle();
            if p.rebuild.is_some() {
                rebuilt = Some(p.rebuilt());
            }
        });
        if let Some((done, total)) = rebuilt {
            self.log_rebuild_progress(done, total);
        }
        self.log_rebuild_end(ended);
        Ok(())
    }
}

/// A message as received from one of a projection's streams.
type Delivery = (&'static str, Result<jetstream::Message, String>);

/// A message received ahead, holding its share of the read-ahead budget until it is taken
/// into a batch.
struct Received {
    stream: &'static str,
    message: Result<jetstream::Message, String>,
    bytes: usize,
    budget: Option<OwnedSemaphorePermit>,
}

/// Gives the messages' share of the read-ahead budget back; answers their size.
fn release(received: &mut [Received]) -> usize {
    received.iter_mut().map(|r| r.budget.take().map_or(0, |_| r.bytes)).sum()
}

/// The smallest read-ahead budget: a few large commits.
const MIN_READ_AHEAD: usize = 1 << 20;

/// Receives `deliveries` on a task of its own into a channel of at most `capacity` messages and
/// `budget` bytes, so that messages keep arriving while a batch is prepared or written (the pull
/// consumers only ask the server for more when polled), without holding a stream in memory when
/// the projection is slower than the server. The task ends when the receiver or the returned
/// handle is dropped.
fn read_ahead<S>(mut deliveries: S, capacity: usize, budget: usize) -> (mpsc::Receiver<Received>, AbortOnDropHandle<()>)
where
    S: futures::Stream<Item = Delivery> + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity);
    let permits = Arc::new(Semaphore::new(budget));
    let reader = tokio::spawn(async move {
        loop {
            let delivery = tokio::select! {
                _ = tx.closed() => break,
                delivery = deliveries.next() => delivery,
            };
            let Some((stream, message)) = delivery else { break };
            let bytes = message.as_ref().map_or(0, |m| m.length.max(m.payload.len()));
            // A message larger than the whole budget takes all of it, alone.
            let share = bytes.clamp(1, budget) as u32;
            let Ok(permit) = permits.clone().acquire_many_owned(share).await else { break };
            let received = Received { stream, message, bytes, budget: Some(permit) };
            if tx.send(received).await.is_err() {
                break;
            }
        }
    });
    (rx, AbortOnDropHandle::new(reader))
}

/// Whether a chunk ends at or past `last` on `stream` (or with an error, which ends it too).
fn reaches(chunk: &[Received], stream: &str, last: u64) -> bool {
    match chunk.last() {
        None => false,
        Some(Received { stream: s, message: Ok(m), .. }) => {
            *s == stream && m.info().map(|i| i.stream_sequence >= last).unwrap_or(true)
        }
        Some(Received { message: Err(_), .. }) => true,
    }
}

enum Consumed {
    /// The `until` position was recorded.
    Reached,
    Ended(RunEnd),
}

/// A batch being written to sled.
struct InFlight {
    write: JoinHandle<Result<(), String>>,
    pending: Arc<Pending>,
    checkpoints: Checkpoints,
    /// The last message of each stream: acknowledging it acknowledges the batch (ack policy all).
    acks: Vec<jetstream::Message>,
}

/// A batch decoded and applied, not yet written.
struct Prepared {
    pending: Pending,
    cache: Option<RowCache>,
    checkpoints: Checkpoints,
    stuck: Option<Stuck>,
    acks: Vec<jetstream::Message>,
}

/// Applies messages to a new batch (blocking work: decoding, sled reads). Stops at the first
/// event that cannot be applied; a commit is all-or-nothing for projections too, so the batch
/// is then rebuilt without the failing message.
fn prepare(
    store: &ProjectionStore,
    name: &str,
    projection: &dyn Projection,
    base: Option<Arc<Pending>>,
    cache: RowCache,
    from: &Checkpoints,
    messages: Vec<(&'static str, jetstream::Message)>,
) -> Result<Prepared, String> {
    let mut tx = store.begin_after(name, base.clone()).map_err(|e| e.to_string())?.with_cache(cache);
    let mut next = from.clone();
    let mut stuck = None;
    let mut applied = 0;
    for (i, (stream, message)) in messages.iter().enumerate() {
        let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
        if seq <= next.get(*stream).copied().unwrap_or(0) {
            applied = i + 1;
            continue; // redelivered: already recorded
        }
        if let Err(reason) = apply_message(projection, &mut tx, stream, seq, message) {
            stuck = Some(Stuck { stream: (*stream).to_owned(), seq, reason });
            break;
        }
        next.insert((*stream).to_owned(), seq);
        applied = i + 1;
    }
    if stuck.is_some() {
        // The cache may hold writes of the discarded attempt: start from an empty one.
        tx = store.begin_after(name, base).map_err(|e| e.to_string())?;
        next = from.clone();
        for (stream, message) in &messages[..applied] {
            let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
            if seq > next.get(*stream).copied().unwrap_or(0) {
                apply_message(projection, &mut tx, stream, seq, message)?;
                next.insert((*stream).to_owned(), seq);
            }
        }
    }
    let mut last_per_stream: HashMap<&str, jetstream::Message> = HashMap::new();
    for (stream, message) in messages.into_iter().take(applied) {
        last_per_stream.insert(stream, message);
    }
    let (pending, cache) = tx.into_parts();
    Ok(Prepared {
        pending,
        cache: Some(cache),
        checkpoints: next,
        stuck,
        acks: last_per_stream.into_values().collect(),
    })
}

fn apply_message(
    projection: &dyn Projection,
    tx: &mut Tx,
    stream: &str,
    seq: u64,
    message: &jetstream::Message,
) -> Result<(), String> {
    eventstore::check_format_header(message.headers.as_ref())?;
    let commit: StoredCommitRef<'_> =
        serde_json::from_slice(&message.payload).map_err(|e| format!("not a readable commit: {e}"))?;
    eventstore::check_format(commit.format)?;
    for envelope in &commit.events {
        let event = RecordedEvent { stream, seq, aggregate_kind: &commit.aggregate_kind, envelope };
        projection.apply(tx, &event).map_err(|e| {
            format!("event {} ({} v{}): {e}", envelope.event_id, envelope.event_type, envelope.schema_version)
        })?;
    }
    Ok(())
}

/// Binds the durable consumer, recreating it when its position disagrees with the checkpoint
/// (sled lost its last writes in a crash, or the consumer ran ahead of what was recorded).
async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    durable: &str,
    checkpoint: u64,
    batch_size: usize,
) -> Result<jetstream::consumer::PullConsumer, String> {
    if let Ok(info) = stream.consumer_info(durable).await {
        let in_step = info.delivered.stream_sequence == checkpoint
            && info.ack_floor.stream_sequence == checkpoint
            && info.num_ack_pending == 0;
        if in_step {
            return stream.get_consumer(durable).await.map_err(|e| format!("consumer {durable}: {e}"));
        }
        tracing::debug!(
            consumer = durable,
            checkpoint,
            delivered = info.delivered.stream_sequence,
            "repositioning consumer"
        );
        stream.delete_consumer(durable).await.map_err(|e| format!("deleting consumer {durable}: {e}"))?;
    }
    let deliver_policy = if checkpoint == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence { start_sequence: checkpoint + 1 }
    };
    stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.to_owned()),
            description: Some("foodaid projection".into()),
            ack_policy: AckPolicy::All,
            deliver_policy,
            max_ack_pending: (batch_size * 16) as i64,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating consumer {durable}: {e}"))
}
