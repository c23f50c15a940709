use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{OwnedMutexGuard, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::bounds;
use crate::journal::{fingerprint, Answer, AnswerJournal, AnswerKey};
use crate::reactor::Reactor;
use crate::wire::Reply;
use crate::{CommandReply, CommandRequest, QueryRequest, Role, ServiceError};

pub type CommandHandler =
    Arc<dyn Fn(CommandRequest) -> BoxFuture<'static, Result<CommandReply, ServiceError>> + Send + Sync>;
pub type QueryHandler = Arc<dyn Fn(QueryRequest) -> BoxFuture<'static, Result<Value, ServiceError>> + Send + Sync>;

/// Turns a JSON payload into a typed request body, or a `validation` error naming the problem.
pub fn parse_payload<P: DeserializeOwned>(payload: &Value) -> Result<P, ServiceError> {
    P::deserialize(payload).map_err(|e| ServiceError::validation("invalid_payload", e))
}

/// The commands and queries of one service, served over NATS request/reply.
///
/// Commands and queries take their own slots: a query waiting for its projection (`min_seq`)
/// never holds up a command.
pub struct ServiceHost {
    service: &'static str,
    commands: HashMap<String, CommandHandler>,
    queries: HashMap<String, QueryHandler>,
    reactors: Vec<Reactor>,
    max_in_flight: usize,
    journal: Option<AnswerJournal>,
    keys: KeyLocks,
}

impl ServiceHost {
    pub fn new(service: &'static str) -> Self {
        ServiceHost {
            service,
            commands: HashMap::new(),
            queries: HashMap::new(),
            reactors: Vec::new(),
            max_in_flight: 256,
            journal: None,
            keys: KeyLocks::default(),
        }
    }

    /// Remembers the first answer of every command from a caller (see [`crate::journal`]), so
    /// that a retry with the same idempotency key gets it back before any handler runs.
    pub fn remember_answers(&mut self, journal: AnswerJournal) -> &mut Self {
        self.journal = Some(journal);
        self
    }

    /// The names of its commands and queries, for checks that every operation has a handler.
    pub fn command_names(&self) -> impl Iterator<Item = &str> {
        self.commands.keys().map(String::as_str)
    }

    pub fn query_names(&self) -> impl Iterator<Item = &str> {
        self.queries.keys().map(String::as_str)
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    pub fn command<F, Fut>(&mut self, name: &str, handler: F) -> &mut Self
    where
        F: Fn(CommandRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<CommandReply, ServiceError>> + Send + 'static,
    {
        self.commands.insert(name.to_owned(), Arc::new(move |r| handler(r).boxed()));
        self
    }

    pub fn query<F, Fut, T>(&mut self, name: &str, handler: F) -> &mut Self
    where
        F: Fn(QueryRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, ServiceError>> + Send + 'static,
        T: Serialize,
    {
        let handler = Arc::new(handler);
        self.queries.insert(
            name.to_owned(),
            Arc::new(move |r| {
                let handler = handler.clone();
                async move {
                    let value = handler(r).await?;
                    serde_json::to_value(value).map_err(|e| ServiceError::internal("encoding a query answer", e))
                }
                .boxed()
            }),
        );
        self
    }

    /// Acts on another stream's commits while serving (see [`Reactor`]).
    pub fn reactor(&mut self, reactor: Reactor) -> &mut Self {
        self.reactors.push(reactor);
        self
    }

    /// Serves requests (and runs the reactors) until `cancel`; each request runs as a task of `tracker`, so the caller
    /// can wait for in-flight work after cancelling.
    pub async fn serve(
        self: Arc<Self>,
        client: async_nats::Client,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<(), async_nats::Error> {
        let group = format!("foodaid.{}", self.service);
        let commands = client.queue_subscribe(format!("foodaid.cmd.{}.*", self.service), group.clone()).await?;
        let queries = client.queue_subscribe(format!("foodaid.qry.{}.*", self.service), group).await?;
        let js = async_nats::jetstream::new(client.clone());
        for reactor in &self.reactors {
            tracker.spawn(reactor.clone().run(js.clone(), cancel.clone()));
        }
        tracing::info!(service = self.service, "service listening");
        tokio::join!(
            self.clone().take(commands, client.clone(), cancel.clone(), tracker.clone()),
            self.clone().take(queries, client, cancel, tracker),
        );
        tracing::info!(service = self.service, "service stopped listening");
        Ok(())
    }

    /// Takes requests of one kind, each as a task of `tracker`, at most `max_in_flight` at once.
    async fn take(
        self: Arc<Self>,
        mut requests: async_nats::Subscriber,
        client: async_nats::Client,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) {
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        loop {
            let message = tokio::select! {
                _ = cancel.cancelled() => break,
                m = requests.next() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = permits.clone().acquire_owned() => p.expect("semaphore open"),
            };
            let (host, client) = (self.clone(), client.clone());
            tracker.spawn(async move {
                host.handle(client, message).await;
                drop(permit);
            });
        }
        // Stop taking new work; requests already taken finish in their tasks.
        let _ = requests.unsubscribe().await;
    }

    async fn handle(&self, client: async_nats::Client, message: async_nats::Message) {
        let Some(reply_to) = message.reply.clone() else {
            return;
        };
        let mut tokens = message.subject.split('.');
        let (kind, name) = (tokens.nth(1).unwrap_or(""), tokens.nth(1).unwrap_or("").to_owned());
        // The gateway's request id travels as the correlation id, so the service's log lines
        // can be matched with the HTTP request that caused them.
        let span = tracing::info_span!("request", service = self.service, kind, name = %name, request_id = tracing::field::Empty);
        let max = client.server_info().max_payload;
        let work = async {
            match kind {
                "cmd" => encode(self.run_command(&name, &message.payload).await, max),
                _ => encode(self.run_query(&name, &message.payload).await, max),
            }
        };
        // A handler that panics (a bug) answers `internal` at once, rather than leaving its
        // caller to wait for its timeout. Nothing it half-did is committed: commits are atomic.
        let body: Bytes = match AssertUnwindSafe(work).catch_unwind().instrument(span).await {
            Ok(body) => body,
            Err(panic) => {
                encode::<Value>(Err(ServiceError::internal("handling a request", panic_message(&*panic))), max)
            }
        };
        // Flushed at once: the answer must leave before a shutdown drops the connection.
        if let Err(e) = client.publish(reply_to, body).await {
            tracing::warn!(service = self.service, error = %e, "reply failed");
        } else if let Err(e) = client.flush().await {
            tracing::warn!(service = self.service, error = %e, "reply flush failed");
        }
    }

    async fn run_command(&self, name: &str, payload: &[u8]) -> Result<CommandReply, ServiceError> {
        let handler = self.commands.get(name).ok_or_else(|| {
            ServiceError::not_found("unknown_command", format!("{} has no command {name}", self.service))
        })?;
        let request: CommandRequest =
            serde_json::from_slice(payload).map_err(|e| ServiceError::validation("malformed_request", e))?;
        if let Some(id) = request.correlation_id {
            tracing::Span::current().record("request_id", tracing::field::display(id));
        }
        if request.command_id.is_empty()
            || request.command_id.len() > 128
            || request.command_id.contains(char::is_whitespace)
        {
            return Err(ServiceError::validation(
                "invalid_command_id",
                "the idempotency key must be 1 to 128 characters without spaces",
            ));
        }
        bounds::check_request(&request.payload, request.occurred_at)?;
        let result = match &self.journal {
            // The platform's own jobs and sagas are idempotent by the ids they derive.
            Some(journal) if request.actor.role != Role::System => {
                self.answer_once(journal, name, handler, request).await
            }
            _ => handler(request).await,
        };
        match &result {
            Ok(reply) => tracing::info!(seq = reply.seq, duplicate = reply.duplicate, "command committed"),
            Err(e) => tracing::info!(code = %e.code, "command refused"),
        }
        result
    }

    /// Runs a caller's command once per idempotency key: a key already answered gets that
    /// answer back, marked `duplicate`, before any check against the current state.
    async fn answer_once(
        &self,
        journal: &AnswerJournal,
        name: &str,
        handler: &CommandHandler,
        mut request: CommandRequest,
    ) -> Result<CommandReply, ServiceError> {
        let key = AnswerKey::new(self.service, name, &request);
        let fingerprint = fingerprint(&request);
        // A double tap reaching this instance twice waits for the first to finish.
        let _serial = self.keys.lock(key.subject()).await;
        if let Some(first) = journal.get(&key).await? {
            return repeat(first, &fingerprint);
        }
        // The key is the caller's: the same key from someone else is another command, on
        // aggregates and in ids derived from it alike.
        request.command_id = format!("{}:{name}:{}", request.caller(), request.command_id);
        let reply = handler(request).await?;
        let answer = Answer { fingerprint, reply, answered_at: chrono::Utc::now() };
        match journal.put(&key, &answer).await {
            Ok(Some(first)) if first.fingerprint == answer.fingerprint => repeat(first, &answer.fingerprint),
            Ok(_) => Ok(answer.reply),
            Err(e) => {
                // Committed all the same: a retry is decided again, and the runner's command
                // ids answer it for single-aggregate commands.
                tracing::warn!(service = self.service, command = name, error = %e, "answer not remembered");
                Ok(answer.reply)
            }
        }
    }

    async fn run_query(&self, name: &str, payload: &[u8]) -> Result<Value, ServiceError> {
        let handler = self
            .queries
            .get(name)
            .ok_or_else(|| ServiceError::not_found("unknown_query", format!("{} has no query {name}", self.service)))?;
        let request: QueryRequest =
            serde_json::from_slice(payload).map_err(|e| ServiceError::validation("malformed_request", e))?;
        if let Some(id) = request.correlation_id {
            tracing::Span::current().record("request_id", tracing::field::display(id));
        }
        bounds::check_request(&request.params, None)?;
        handler(request).await
    }
}

/// The first answer, for a repeat of the same request; the same key with another body is refused.
fn repeat(first: Answer, fingerprint: &str) -> Result<CommandReply, ServiceError> {
    if first.fingerprint != fingerprint {
        return Err(ServiceError::validation(
            "idempotency_key_reused",
            "this idempotency key was already used for another request; use a new key for a new request",
        ));
    }
    Ok(CommandReply { duplicate: true, ..first.reply })
}

/// In-process locks on idempotency keys in use, dropped when nobody holds or waits for them.
#[derive(Default)]
struct KeyLocks {
    held: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: String,
    _held: OwnedMutexGuard<()>,
}

impl KeyLocks {
    async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let lock = self.held.lock().expect("key locks").entry(key.to_owned()).or_default().clone();
        KeyGuard { locks: self, key: key.to_owned(), _held: lock.lock_owned().await }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().expect("key locks");
        // The map's copy and this guard's: nobody else waits.
        if held.get(&self.key).is_some_and(|l| Arc::strong_count(l) <= 2) {
            held.remove(&self.key);
        }
    }
}

/// What a panic said, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s,
        (_, Some(s)) => s,
        _ => "a panic without a message",
    }
}

/// Longest error message sent back: messages may quote what was sent (a serde error quotes a
/// whole string), and a reply larger than the server's `max_payload` could not be published —
/// its caller would wait for its timeout.
const MAX_MESSAGE_CHARS: usize = 1_000;

/// The reply to send, at most `max` bytes: a longer error message is cut, and an answer that
/// still does not fit becomes `answer_too_large`.
fn encode<T: Serialize>(result: Result<T, ServiceError>, max: usize) -> Bytes {
    let reply = match result {
        Ok(v) => Reply::Ok(v),
        Err(mut e) => {
            if let Some((cut, _)) = e.message.char_indices().nth(MAX_MESSAGE_CHARS) {
                e.message.truncate(cut);
                e.message.push('…');
            }
            Reply::Error(e)
        }
    };
    let bytes = serde_json::to_vec(&reply).expect("replies serialise");
    if bytes.len() <= max {
        return bytes.into();
    }
    let too_large = ServiceError::validation(
        "answer_too_large",
        format!("the answer ({} bytes) is larger than a message may be: ask for less (filters)", bytes.len()),
    );
    serde_json::to_vec(&Reply::<Value>::Error(too_large)).expect("replies serialise").into()
}
