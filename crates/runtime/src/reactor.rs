//! Reactors: how one service acts on another's events (a saga step), e.g. the stock service
//! taking an accepted donation line into stock as a lot.
//!
//! A reactor reads its stream through one durable consumer shared by every instance of the
//! service (`react_<name>`), so each commit is handled once per cluster, by whichever instance
//! pulls it. Its handler issues commands whose ids derive from the events, so a commit handled
//! twice (after a crash before the ack, or a redelivery) commits nothing new. A commit is
//! acknowledged only once its handler succeeded; a failure is retried later with a growing
//! delay and never skipped.
//!
//! Each reactor counts what it did (commits handled, retries, failures, restarts) in a table
//! kept per process, which the node's announcements carry to the gateway's `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use eventcore::{decode_event_raw, Commit, DomainEvent, EventEnvelope};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{ErrorKind, ServiceError};

/// A commit as a reactor sees it.
#[derive(Debug, Clone)]
pub struct Reaction {
    pub stream: String,
    pub seq: u64,
    pub commit: Commit,
}

impl Reaction {
    /// The commit's events decoded (and upcast) as `E`.
    pub fn events<E: DomainEvent>(&self) -> Result<Vec<(&EventEnvelope, E)>, ServiceError> {
        self.commit
            .events
            .iter()
            .map(|e| {
                decode_event_raw(&e.event_type, e.schema_version, &e.data)
                    .map(|event| (e, event))
                    .map_err(|err| ServiceError::internal("decoding an event for a reactor", err))
            })
            .collect()
    }
}

/// What one reactor did since this process started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactorStats {
    pub name: String,
    /// Commits handled and acknowledged.
    pub handled: u64,
    /// Attempts at a commit delivered before: after a failure, or an instance that died.
    pub retries: u64,
    /// Attempts that failed because something was unavailable; retried later.
    pub unavailable: u64,
    /// Attempts the service refused; retried too, though a retry rarely changes a refusal.
    pub refused: u64,
    /// Times the reactor lost its consumer and started again.
    pub restarts: u64,
}

#[derive(Default)]
struct Counters {
    handled: AtomicU64,
    retries: AtomicU64,
    unavailable: AtomicU64,
    refused: AtomicU64,
    restarts: AtomicU64,
}

/// The counters of every reactor that ran in this process. Reactors are built inside the
/// services and cloned into their tasks; a table per process (a node is one process) spares
/// threading a handle through every service, as a metrics recorder would.
static COUNTERS: Mutex<BTreeMap<&'static str, Arc<Counters>>> = Mutex::new(BTreeMap::new());

fn counters(name: &'static str) -> Arc<Counters> {
    COUNTERS.lock().expect("reactor counters lock").entry(name).or_default().clone()
}

/// What every reactor that ran in this process did, by name.
pub fn reactor_stats() -> Vec<ReactorStats> {
    let table = COUNTERS.lock().expect("reactor counters lock");
    table
        .iter()
        .map(|(name, c)| ReactorStats {
            name: (*name).to_owned(),
            handled: c.handled.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            restarts: c.restarts.load(Ordering::Relaxed),
        })
        .collect()
}

pub type ReactorHandler = Arc<dyn Fn(Reaction) -> BoxFuture<'static, Result<(), ServiceError>> + Send + Sync>;

#[derive(Clone)]
pub struct Reactor {
    pub name: &'static str,
    pub stream: &'static str,
    /// Subject filter within the stream, e.g. `donations.donation.>`.
    pub filter: String,
    pub handler: ReactorHandler,
    /// How its consumer redelivers and how many commits it has in hand at once.
    pub settings: ReactorSettings,
}

/// The settings of a reactor's durable consumer, as this build wants them. A consumer an older
/// build created with other settings is brought to these on start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactorSettings {
    /// A commit delivered to an instance that then dies comes back after this.
    pub ack_wait: Duration,
    /// Commits delivered and not yet acknowledged, at most.
    pub max_ack_pending: i64,
}

impl Default for ReactorSettings {
    fn default() -> Self {
        ReactorSettings { ack_wait: Duration::from_secs(10), max_ack_pending: 32 }
    }
}

impl Reactor {
    pub fn new<F, Fut>(name: &'static str, stream: &'static str, filter: impl Into<String>, handler: F) -> Reactor
    where
        F: Fn(Reaction) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), ServiceError>> + Send + 'static,
    {
        Reactor {
            name,
            stream,
            filter: filter.into(),
            handler: Arc::new(move |r| handler(r).boxed()),
            settings: ReactorSettings::default(),
        }
    }

    /// The consumer this build wants, from the start of the stream (or `from`).
    fn consumer_config(&self, from: Option<u64>) -> pull::Config {
        let durable = format!("react_{}", self.name);
        pull::Config {
            durable_name: Some(durable),
            description: Some(format!("foodaid reactor {}", self.name)),
            filter_subject: self.filter.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            max_ack_pending: self.settings.max_ack_pending,
            deliver_policy: match from {
                Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
                None => DeliverPolicy::All,
            },
            ..Default::default()
        }
    }

    /// Binds the reactor's durable consumer with this build's settings. A missing one is
    /// created; one an older build made with other settings is updated in place, or, when the
    /// server cannot change them in place (its filter), made again from its acknowledged floor,
    /// so that no commit is skipped (one in hand when it changed may come again, which a
    /// reactor's derived command ids make harmless).
    async fn bind(&self, stream: &jetstream::stream::Stream) -> Result<PullConsumer, String> {
        let wanted = self.consumer_config(None);
        let durable = wanted.durable_name.clone().expect("named");
        let info = match stream.consumer_info(&durable).await {
            Ok(info) => info.clone(),
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                return stream.create_consumer(wanted).await.map_err(|e| format!("consumer {durable}: {e}"));
            }
            Err(e) => return Err(format!("consumer {durable}: {e}")),
        };
        let have = &info.config;
        if have.filter_subject == wanted.filter_subject
            && have.ack_wait == wanted.ack_wait
            && have.max_ack_pending == wanted.max_ack_pending
            && have.ack_policy == wanted.ack_policy
        {
            return stream.get_consumer(&durable).await.map_err(|e| format!("consumer {durable}: {e}"));
        }
        tracing::info!(
            reactor = self.name,
            filter = %have.filter_subject,
            ack_wait = ?have.ack_wait,
            max_ack_pending = have.max_ack_pending,
            "reactor consumer has other settings: bringing it to this build's"
        );
        if have.filter_subject == wanted.filter_subject {
            let mut update = wanted.clone();
            update.deliver_policy = have.deliver_policy;
            match stream.create_consumer(update).await {
                Ok(consumer) => return Ok(consumer),
                Err(e) => {
                    tracing::warn!(reactor = self.name, error = %e, "consumer not updated in place: recreating it")
                }
            }
        }
        let from = info.ack_floor.stream_sequence + 1;
        stream.delete_consumer(&durable).await.map_err(|e| format!("deleting consumer {durable}: {e}"))?;
        stream.create_consumer(self.consumer_config(Some(from))).await.map_err(|e| format!("consumer {durable}: {e}"))
    }

    /// Handles commits until `cancel`, reconnecting after errors.
    pub async fn run(self, js: jetstream::Context, cancel: CancellationToken) {
        let counters = counters(self.name);
        loop {
            match self.run_once(&js, &cancel, &counters).await {
                Ok(()) => break,
                Err(e) => {
                    counters.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(reactor = self.name, error = %e, "reactor interrupted, restarting");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn run_once(
        &self,
        js: &jetstream::Context,
        cancel: &CancellationToken,
        counters: &Counters,
    ) -> Result<(), String> {
        let stream = js.get_stream(self.stream).await.map_err(|e| format!("stream {}: {e}", self.stream))?;
        let consumer = self.bind(&stream).await?;
        let mut messages = consumer.messages().await.map_err(|e| format!("reactor {}: {e}", self.name))?;
        tracing::debug!(reactor = self.name, "reactor running");
        loop {
            let message = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                m = messages.next() => match m {
                    Some(m) => m.map_err(|e| e.to_string())?,
                    None => return Err("consumer closed".into()),
                },
            };
            let info = message.info().map_err(|e| e.to_string())?;
            let (seq, delivered) = (info.stream_sequence, info.delivered);
            if delivered > 1 {
                counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let empty = async_nats::HeaderMap::new();
            let outcome = match eventstore::decode_commit(
                self.stream,
                seq,
                message.headers.as_ref().unwrap_or(&empty),
                &message.payload,
            ) {
                Ok(stored) => {
                    (self.handler)(Reaction { stream: stored.stream, seq: stored.seq, commit: stored.commit }).await
                }
                Err(e) => Err(ServiceError::internal("decoding a commit for a reactor", e)),
            };
            match outcome {
                Ok(()) => {
                    message.ack().await.map_err(|e| format!("ack: {e}"))?;
                    counters.handled.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // Retried later; a rejection that no retry will change is logged as an error
                    // each time, so it is seen, and the consumer's pending count shows it.
                    let delay = Duration::from_secs(2u64.saturating_pow(delivered.clamp(1, 8) as u32).min(300));
                    if matches!(e.kind, ErrorKind::Unavailable) {
                        counters.unavailable.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(reactor = self.name, seq, error = %e, ?delay, "reaction failed, will retry");
                    } else {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(reactor = self.name, seq, error = %e, ?delay, "reaction refused, will retry");
                    }
                    message.ack_with(AckKind::Nak(Some(delay))).await.map_err(|e| format!("nak: {e}"))?;
                }
            }
        }
    }
}
