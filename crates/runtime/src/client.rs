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
        self.gather(CTL_STATUS, &StatusRequest { digests: false }, wait).await
    }

    /// Like [`node_statuses`](Self::node_statuses), with a digest of every projection's rows.
    pub async fn node_digests(&self, wait: Duration) -> Result<Vec<NodeStatus>, ServiceError> {
        self.gather(CTL_STATUS, &StatusRequest { digests: true }, wait).await
    }

    /// Asks every running node that has `projection` (or all, with "all") to rebuild it.
    pub async fn replay(&self, request: &ReplayRequest, wait: Duration) -> Result<Vec<ReplayReply>, ServiceError> {
        self.gather(CTL_REPLAY, request, wait).await
    }

    async fn gather<B: Serialize, T: DeserializeOwned>(
        &self,
        subject: &str,
        body: &B,
        wait: Duration,
    ) -> Result<Vec<T>, ServiceError> {
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
                out.push(v);
            }
        }
        Ok(out)
    }
}
