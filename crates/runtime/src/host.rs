use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::reactor::Reactor;
use crate::wire::Reply;
use crate::{CommandReply, CommandRequest, QueryRequest, ServiceError};

pub type CommandHandler =
    Arc<dyn Fn(CommandRequest) -> BoxFuture<'static, Result<CommandReply, ServiceError>> + Send + Sync>;
pub type QueryHandler = Arc<dyn Fn(QueryRequest) -> BoxFuture<'static, Result<Value, ServiceError>> + Send + Sync>;

/// Turns a JSON payload into a typed request body, or a `validation` error naming the problem.
pub fn parse_payload<P: DeserializeOwned>(payload: &Value) -> Result<P, ServiceError> {
    P::deserialize(payload).map_err(|e| ServiceError::validation("invalid_payload", e))
}

/// The commands and queries of one service, served over NATS request/reply.
pub struct ServiceHost {
    service: &'static str,
    commands: HashMap<String, CommandHandler>,
    queries: HashMap<String, QueryHandler>,
    reactors: Vec<Reactor>,
    max_in_flight: usize,
}

impl ServiceHost {
    pub fn new(service: &'static str) -> Self {
        ServiceHost {
            service,
            commands: HashMap::new(),
            queries: HashMap::new(),
            reactors: Vec::new(),
            max_in_flight: 256,
        }
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
        let mut commands = client.queue_subscribe(format!("foodaid.cmd.{}.*", self.service), group.clone()).await?;
        let mut queries = client.queue_subscribe(format!("foodaid.qry.{}.*", self.service), group).await?;
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let js = async_nats::jetstream::new(client.clone());
        for reactor in &self.reactors {
            tracker.spawn(reactor.clone().run(js.clone(), cancel.clone()));
        }
        tracing::info!(service = self.service, "service listening");
        loop {
            let message = tokio::select! {
                _ = cancel.cancelled() => break,
                Some(m) = commands.next() => m,
                Some(m) = queries.next() => m,
                else => break,
            };
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = permits.clone().acquire_owned() => p.expect("semaphore open"),
            };
            let host = self.clone();
            let client = client.clone();
            tracker.spawn(async move {
                host.handle(client, message).await;
                drop(permit);
            });
        }
        // Stop taking new work; requests already taken finish in their tasks.
        let _ = commands.unsubscribe().await;
        let _ = queries.unsubscribe().await;
        tracing::info!(service = self.service, "service stopped listening");
        Ok(())
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
        let body: Bytes = match kind {
            "cmd" => encode(self.run_command(&name, &message.payload).instrument(span).await),
            _ => encode(self.run_query(&name, &message.payload).instrument(span).await),
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
        let result = handler(request).await;
        match &result {
            Ok(reply) => tracing::info!(seq = reply.seq, duplicate = reply.duplicate, "command committed"),
            Err(e) => tracing::info!(code = %e.code, "command refused"),
        }
        result
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
        handler(request).await
    }
}

fn encode<T: Serialize>(result: Result<T, ServiceError>) -> Bytes {
    let reply = match result {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Error(e),
    };
    serde_json::to_vec(&reply).expect("replies serialise").into()
}
