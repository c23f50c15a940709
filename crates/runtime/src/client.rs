use std::collections::HashSet;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{RequestErrorKind, StatusCode};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::node::{NodeStatus, ReplayReply, ReplayRequest, StatusRequest, CTL_REPLAY, CTL_STATUS};
use crate::wire::Reply;
use crate::{CommandReply, CommandRequest, QueryRequest, ServiceError};

/// Sends commands and queries to services over NATS.
///
/// While the NATS connection is down (a server restarting, a network cut), every call answers
/// `service_unavailable` at once instead of waiting for its timeout: the client reconnects by
/// itself, and callers (the gateway, reactors, periodic jobs) retry.
#[derive(Clone)]
pub struct ServiceClient {
    client: async_nats::Client,
    timeout: Duration,
}

impl ServiceClient {
    pub fn new(client: async_nats::Client, timeout: Duration) -> Self {
        ServiceClient { client, timeout }
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.client
    }

    pub async fn command(
        &self,
        service: &str,
        name: &str,
        request: &CommandRequest,
    ) -> Result<CommandReply, ServiceError> {
        self.request(&format!("foodaid.cmd.{service}.{name}"), request).await
    }

    pub async fn query<T: DeserializeOwned>(
        &self,
        service: &str,
        name: &str,
        request: &QueryRequest,
    ) -> Result<T, ServiceError> {
        self.request(&format!("foodaid.qry.{service}.{name}"), request).await
    }

    /// `service_unavailable` unless the connection to NATS is up: a request sent now would only
    /// wait for its timeout.
    fn ensure_connected(&self, subject: &str) -> Result<(), ServiceError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(ServiceError::unavailable(
                "service_unavailable",
                format!("{subject}: NATS is not connected (reconnecting); try again shortly"),
            )),
        }
    }

    async fn request<B: Serialize, T: DeserializeOwned>(&self, subject: &str, body: &B) -> Result<T, ServiceError> {
        self.ensure_connected(subject)?;
        let payload = serde_json::to_vec(body).expect("requests serialise");
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(self.timeout));
        // A request in flight when the connection drops is lost, or its answer is: waiting for
        // its time-out would hold the caller for nothing. It fails at once; the caller retries
        // with the same idempotency key and gets the first answer if the command was done.
        let sent = tokio::select! {
            biased;
            sent = self.client.send_request(subject.to_owned(), request) => sent,
            () = eventstore::connection_lost(&self.client) => {
                return Err(ServiceError::unavailable(
                    "service_unavailable",
                    format!("{subject}: the NATS connection was lost before the answer came; try again shortly"),
                ))
            }
        };
        let message = sent.map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => {
                ServiceError::unavailable("service_unavailable", format!("no instance answers {subject}"))
            }
            RequestErrorKind::TimedOut => {
                ServiceError::unavailable("timeout", format!("{subject} did not answer within {:?}", self.timeout))
            }
            RequestErrorKind::MaxPayloadExceeded => ServiceError::validation("request_too_large", e),
            RequestErrorKind::InvalidSubject => ServiceError::validation("invalid_name", e),
            _ => ServiceError::unavailable("nats_unavailable", e),
        })?;
        match serde_json::from_slice::<Reply<T>>(&message.payload) {
            Ok(Reply::Ok(v)) => Ok(v),
            Ok(Reply::Error(e)) => Err(e),
            Err(e) => Err(ServiceError::internal("reading a service reply", format!("{subject}: {e}"))),
        }
    }

    /// Asks every running node for its status; collects the answers that arrive within `wait`.
    pub async fn node_statuses(&self, wait: Duration) -> Result<Vec<NodeStatus>, ServiceError> {
        Ok(self.broadcast(CTL_STATUS, &StatusRequest { digests: false }, Collect::within(wait)).await?.answers)
    }

    /// Every running node's status (with digests if asked), telling "nobody listens" apart from
    /// "nobody answered in time".
    pub async fn gather_statuses(
        &self,
        digests: bool,
        collect: Collect,
    ) -> Result<Broadcast<NodeStatus>, ServiceError> {
        self.broadcast(CTL_STATUS, &StatusRequest { digests }, collect).await
    }

    /// Asks `nodes` for their status; returns as soon as each has answered, or after `wait`.
    pub async fn node_statuses_on(&self, nodes: &[String], wait: Duration) -> Result<Vec<NodeStatus>, ServiceError> {
        self.broadcast_to(CTL_STATUS, &StatusRequest { digests: false }, nodes, wait).await
    }

    /// Asks every running node that has `projection` (or all, with "all") to rebuild it.
    pub async fn replay(&self, request: &ReplayRequest, wait: Duration) -> Result<Vec<ReplayReply>, ServiceError> {
        Ok(self.broadcast(CTL_REPLAY, request, Collect::within(wait)).await?.answers)
    }

    /// Like [`replay`](Self::replay), returning as soon as each of `nodes` (those known to have
    /// the projection, from their announcements) has answered, or after `wait`.
    pub async fn replay_on(
        &self,
        request: &ReplayRequest,
        nodes: &[String],
        wait: Duration,
    ) -> Result<Vec<ReplayReply>, ServiceError> {
        self.broadcast_to(CTL_REPLAY, request, nodes, wait).await
    }

    /// Sends `body` to every node listening on `subject` and collects their answers as `collect`
    /// says. Returns at once when the server says nobody listens.
    pub async fn broadcast<B: Serialize, T: DeserializeOwned>(
        &self,
        subject: &str,
        body: &B,
        collect: Collect,
    ) -> Result<Broadcast<T>, ServiceError> {
        self.collect_until(subject, body, collect, |_: &T| false).await
    }

    /// Like [`broadcast`](Self::broadcast), stopping as soon as each of `nodes` has answered.
    async fn broadcast_to<B: Serialize, T: DeserializeOwned + FromNode>(
        &self,
        subject: &str,
        body: &B,
        nodes: &[String],
        wait: Duration,
    ) -> Result<Vec<T>, ServiceError> {
        let mut missing: HashSet<&str> = nodes.iter().map(String::as_str).collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let done = |v: &T| {
            missing.remove(v.node());
            missing.is_empty()
        };
        Ok(self.collect_until(subject, body, Collect::within(wait), done).await?.answers)
    }

    /// Collects answers as `collect` says, or until `done` says an answer was the last needed.
    async fn collect_until<B: Serialize, T: DeserializeOwned>(
        &self,
        subject: &str,
        body: &B,
        collect: Collect,
        mut done: impl FnMut(&T) -> bool,
    ) -> Result<Broadcast<T>, ServiceError> {
        self.ensure_connected(subject)?;
        let inbox = self.client.new_inbox();
        let mut sub =
            self.client.subscribe(inbox.clone()).await.map_err(|e| ServiceError::unavailable("nats_unavailable", e))?;
        let payload = serde_json::to_vec(body).expect("requests serialise");
        self.client
            .publish_with_reply(subject.to_owned(), inbox, payload.into())
            .await
            .map_err(|e| ServiceError::unavailable("nats_unavailable", e))?;
        let mut out = Broadcast { answers: Vec::new(), refusals: Vec::new(), nobody_listens: false };
        let end = tokio::time::Instant::now() + collect.within;
        let mut deadline = end;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, sub.next()).await {
            if message.status == Some(StatusCode::NO_RESPONDERS) {
                // The server answers so for a request nobody subscribes to (clients announce
                // that they understand it), and only when nobody does.
                out.nobody_listens = true;
                break;
            }
            match serde_json::from_slice::<Reply<T>>(&message.payload) {
                Ok(Reply::Ok(v)) => {
                    let last = done(&v);
                    out.answers.push(v);
                    if last {
                        break;
                    }
                }
                Ok(Reply::Error(e)) => out.refusals.push(e),
                Err(e) => {
                    out.refusals.push(ServiceError::internal("reading a node's answer", format!("{subject}: {e}")))
                }
            }
            if collect.expect.is_some_and(|n| out.answers.len() + out.refusals.len() >= n) {
                break;
            }
            deadline = end.min(tokio::time::Instant::now() + collect.settle);
        }
        Ok(out)
    }
}

/// How long a [`ServiceClient::broadcast`] collects answers.
#[derive(Debug, Clone, Copy)]
pub struct Collect {
    /// The longest wait in all.
    pub within: Duration,
    /// The longest wait for another answer after one came: nodes answer together unless one is
    /// busy.
    pub settle: Duration,
    /// Stop as soon as this many nodes answered.
    pub expect: Option<usize>,
}

impl Collect {
    /// Everything that arrives within `wait`.
    pub fn within(wait: Duration) -> Collect {
        Collect { within: wait, settle: wait, expect: None }
    }
}

/// What a [`ServiceClient::broadcast`] brought back.
#[derive(Debug)]
pub struct Broadcast<T> {
    pub answers: Vec<T>,
    /// Nodes that answered with an error.
    pub refusals: Vec<ServiceError>,
    /// The server said that no node listens on the subject (not merely that none answered in
    /// time).
    pub nobody_listens: bool,
}

/// An answer that names the node it came from.
trait FromNode {
    fn node(&self) -> &str;
}

impl FromNode for NodeStatus {
    fn node(&self) -> &str {
        &self.node
    }
}

impl FromNode for ReplayReply {
    fn node(&self) -> &str {
        &self.node
    }
}
