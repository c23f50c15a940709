//! What travels over `foodaid.cmd.*` and `foodaid.qry.*`. These are contracts between
//! processes that may run different builds: add fields with defaults, never rename.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Warehouse,
    Association,
    Driver,
    /// The platform itself: sagas, scheduled jobs, demo loading.
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Warehouse => "warehouse",
            Role::Association => "association",
            Role::Driver => "driver",
            Role::System => "system",
        }
    }

    /// Roles that act for one association or driver and must name it.
    pub fn is_scoped(self) -> bool {
        matches!(self, Role::Association | Role::Driver)
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "admin" => Role::Admin,
            "warehouse" => Role::Warehouse,
            "association" => Role::Association,
            "driver" => Role::Driver,
            "system" => Role::System,
            other => return Err(format!("unknown role {other:?} (admin, warehouse, association, driver)")),
        })
    }
}

/// Who is acting: a role, and for scoped roles the association or driver id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Free label for the audit trail (token name, user name).
    #[serde(default)]
    pub name: String,
}

impl Actor {
    pub fn system(name: &str) -> Actor {
        Actor { role: Role::System, scope: None, name: name.to_owned() }
    }

    pub fn admin(name: &str) -> Actor {
        Actor { role: Role::Admin, scope: None, name: name.to_owned() }
    }

    /// True for roles that may act on any association's or driver's data.
    pub fn is_privileged(&self) -> bool {
        matches!(self.role, Role::Admin | Role::System)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Some(scope) => write!(f, "{}:{}", self.role.as_str(), scope),
            None => f.write_str(self.role.as_str()),
        }?;
        if !self.name.is_empty() {
            write!(f, "/{}", self.name)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// Idempotency key: resending the same request with the same key commits it once.
    pub command_id: String,
    pub actor: Actor,
    #[serde(default)]
    pub correlation_id: Option<Uuid>,
    #[serde(default)]
    pub causation_id: Option<Uuid>,
    /// When it happened, if not now (offline work).
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    pub payload: Value,
    /// Who sent it, when the sender knows better than the actor: the API token's id. Idempotency
    /// keys are scoped to it (see [`CommandRequest::caller`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
}

impl CommandRequest {
    pub fn new(command_id: impl Into<String>, actor: Actor, payload: Value) -> Self {
        CommandRequest {
            command_id: command_id.into(),
            actor,
            correlation_id: None,
            causation_id: None,
            occurred_at: None,
            payload,
            caller: None,
        }
    }

    /// Whose idempotency keys this request's key is among: the token that sent it, or else the
    /// actor. Two callers sending the same key send two commands.
    pub fn caller(&self) -> String {
        match &self.caller {
            Some(token) => format!("token:{token}"),
            None => self.actor.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: Value,
}

/// The answer to an accepted command. `stream`/`seq` identify the commit, to pass as `min_seq`
/// to later queries (read-your-writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandReply {
    pub aggregate_id: String,
    pub stream: String,
    pub seq: u64,
    pub version: u64,
    /// True when this command id had already been committed: this is the first answer.
    pub duplicate: bool,
    pub events: Vec<ReplyEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRequest {
    pub actor: Actor,
    /// Wait until the projection has recorded these stream sequences before answering.
    #[serde(default)]
    pub min_seq: BTreeMap<String, u64>,
    #[serde(default)]
    pub params: Value,
    /// The request that asked, for the logs.
    #[serde(default)]
    pub correlation_id: Option<Uuid>,
}

impl QueryRequest {
    pub fn new(actor: Actor, params: Value) -> Self {
        QueryRequest { actor, min_seq: BTreeMap::new(), params, correlation_id: None }
    }
}

/// The reply envelope on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply<T> {
    Ok(T),
    Error(crate::ServiceError),
}
