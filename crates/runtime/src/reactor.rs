//! Reactors: how one service acts on another's events (a saga step), e.g. the stock service
//! taking an accepted donation line into stock as a lot.
//!
//! A reactor reads its stream through one durable consumer shared by every instance of the
//! service (`react_<name>`), so each commit is handled once per cluster, by whichever instance
//! pulls it. Its handler issues commands whose ids derive from the events, so a commit handled
//! twice (after a crash before the ack, or a redelivery) commits nothing new. A commit is
//! acknowledged only once its handler succeeded; a failure is retried later with a growing
//! delay and never skipped.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, AckKind};
use eventcore::{decode_event_raw, Commit, DomainEvent, EventEnvelope};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
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

pub type ReactorHandler = Arc<dyn Fn(Reaction) -> BoxFuture<'static, Result<(), ServiceError>> + Send + Sync>;

#[derive(Clone)]
pub struct Reactor {
    pub name: &'static str,
    pub stream: &'static str,
    /// Subject filter within the stream, e.g. `donations.donation.>`.
    pub filter: String,
    pub handler: ReactorHandler,
}

impl Reactor {
    pub fn new<F, Fut>(name: &'static str, stream: &'static str, filter: impl Into<String>, handler: F) -> Reactor
    where
        F: Fn(Reaction) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), ServiceError>> + Send + 'static,
    {
        Reactor { name, stream, filter: filter.into(), handler: Arc::new(move |r| handler(r).boxed()) }
    }

    /// Handles commits until `cancel`, reconnecting after errors.
    pub async fn run(self, js: jetstream::Context, cancel: CancellationToken) {
        loop {
            match self.run_once(&js, &cancel).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(reactor = self.name, error = %e, "reactor interrupted, restarting");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn run_once(&self, js: &jetstream::Context, cancel: &CancellationToken) -> Result<(), String> {
        let stream = js.get_stream(self.stream).await.map_err(|e| format!("stream {}: {e}", self.stream))?;
        let durable = format!("react_{}", self.name);
        let consumer = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: self.filter.clone(),
                    ack_policy: AckPolicy::Explicit,
                    // A commit delivered to an instance that then dies comes back after this.
                    ack_wait: Duration::from_secs(10),
                    max_ack_pending: 32,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("consumer {durable}: {e}"))?;
        let mut messages = consumer.messages().await.map_err(|e| format!("consumer {durable}: {e}"))?;
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
                Ok(()) => message.ack().await.map_err(|e| format!("ack: {e}"))?,
                Err(e) => {
                    // Retried later; a rejection that no retry will change is logged as an error
                    // each time, so it is seen, and the consumer's pending count shows it.
                    let delay = Duration::from_secs(2u64.saturating_pow(delivered.clamp(1, 8) as u32).min(300));
                    if matches!(e.kind, ErrorKind::Unavailable) {
                        tracing::warn!(reactor = self.name, seq, error = %e, ?delay, "reaction failed, will retry");
                    } else {
                        tracing::error!(reactor = self.name, seq, error = %e, ?delay, "reaction refused, will retry");
                    }
                    message.ack_with(AckKind::Nak(Some(delay))).await.map_err(|e| format!("nak: {e}"))?;
                }
            }
        }
    }
}
