use std::collections::HashSet;
use std::time::Duration;

use async_nats::RequestErrorKind;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::node::{NodeStatus, ReplayReply, ReplayRequest, StatusRequest, CTL_REPLAY, CTL_STATUS};
use crate::wire::Reply;
use crate::{CommandReply, CommandRequest, QueryRequest, ServiceError};

/// Sends commands and queries to services over NATS.
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

    async fn request<B: Serialize, T: DeserializeOwned>(&self, subject: &str, body: &B) -> Result<T, ServiceError> {
        let payload = serde_json::to_vec(body).expect("requests serialise");
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(self.timeout));
        let message = self.client.send_request(subject.to_owned(), request).await.map_err(|e| match e.kind() {
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
        self.gather(CTL_STATUS, &StatusRequest { digests: false }, None, wait).await
    }

    /// Asks `nodes` for their status; returns as soon as each has answered, or after `wait`.
    pub async fn node_statuses_on(&self, nodes: &[String], wait: Duration) -> Result<Vec<NodeStatus>, ServiceError> {
        self.gather(CTL_STATUS, &StatusRequest { digests: false }, Some(nodes), wait).await
    }

    /// Like [`node_statuses`](Self::node_statuses), with a digest of every projection's rows.
    pub async fn node_digests(&self, wait: Duration) -> Result<Vec<NodeStatus>, ServiceError> {
        self.gather(CTL_STATUS, &StatusRequest { digests: true }, None, wait).await
    }

    /// Asks every running node that has `projection` (or all, with "all") to rebuild it;
    /// collects the answers that arrive within `wait`.
    pub async fn replay(&self, request: &ReplayRequest, wait: Duration) -> Result<Vec<ReplayReply>, ServiceError> {
        self.gather(CTL_REPLAY, request, None, wait).await
    }

    /// Like [`replay`](Self::replay), returning as soon as each of `nodes` (those known to have
    /// the projection, from their announcements) has answered, or after `wait`.
    pub async fn replay_on(
        &self,
        request: &ReplayRequest,
        nodes: &[String],
        wait: Duration,
    ) -> Result<Vec<ReplayReply>, ServiceError> {
        self.gather(CTL_REPLAY, request, Some(nodes), wait).await
    }

    /// Publishes `body` to every node on `subject` and collects their answers until `wait` has
    /// passed, or until every node of `expected` has answered.
    async fn gather<B: Serialize, T: DeserializeOwned + FromNode>(
        &self,
        subject: &str,
        body: &B,
        expected: Option<&[String]>,
        wait: Duration,
    ) -> Result<Vec<T>, ServiceError> {
        let mut missing: Option<HashSet<&str>> = expected.map(|nodes| nodes.iter().map(String::as_str).collect());
        if missing.as_ref().is_some_and(HashSet::is_empty) {
            return Ok(Vec::new());
        }
        let inbox = self.client.new_inbox();
        let mut sub =
            self.client.subscribe(inbox.clone()).await.map_err(|e| ServiceError::unavailable("nats_unavailable", e))?;
        let payload = serde_json::to_vec(body).expect("requests serialise");
        self.client
            .publish_with_reply(subject.to_owned(), inbox, payload.into())
            .await
            .map_err(|e| ServiceError::unavailable("nats_unavailable", e))?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, sub.next()).await {
            if let Ok(Reply::Ok(v)) = serde_json::from_slice::<Reply<T>>(&message.payload) {
                if let Some(missing) = &mut missing {
                    missing.remove(v.node());
                }
                out.push(v);
                if missing.as_ref().is_some_and(HashSet::is_empty) {
                    break;
                }
            }
        }
        Ok(out)
    }
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
