//! Administrative commands: status, replay, tokens, the stock audit.
//!
//! They act on the running platform of the data dir or `nats.url` they are given, and never
//! start a nats-server or rebuild projections of their own: with nothing to reach they fail with
//! [`Unreachable`], which says where they looked.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use projections::{ProjectionState, ProjectionStatus};
use runtime::{Collect, NodeStatus, ReplayReply, ReplayRequest, Role, ServiceClient, CTL_REPLAY, CTL_STATUS};
use serde::Serialize;

use crate::config::Settings;
use crate::connect::{connect, shown, Connection, Embed, Unreachable};

/// How long nodes have to say how they are: a node answers at once unless busy.
const STATUS_COLLECT: Collect =
    Collect { within: Duration::from_secs(5), settle: Duration::from_millis(500), expect: None };
/// Digests hash every row of every projection.
const DIGESTS_COLLECT: Collect =
    Collect { within: Duration::from_secs(60), settle: Duration::from_secs(2), expect: None };
/// How long a node has to start a rebuild (stopping the projection, dropping its rows).
const REPLAY_WITHIN: Duration = Duration::from_secs(30);
/// A replay followed with no node answering this long has lost its nodes.
const FOLLOW_SILENCE: Duration = Duration::from_secs(30);

#[derive(Serialize)]
struct StreamStatus {
    name: String,
    messages: u64,
    bytes: u64,
    last_seq: u64,
    consumers: Vec<ConsumerStatus>,
}

#[derive(Serialize)]
struct ConsumerStatus {
    name: String,
    ack_floor: u64,
    pending: u64,
}

#[derive(Serialize)]
struct NodeProjections {
    node: String,
    /// `running` when answered by a live node, `offline` when read from the local store.
    source: String,
    projections: Vec<ProjectionStatus>,
}

#[derive(Serialize)]
struct Status {
    streams: Vec<StreamStatus>,
    nodes: Vec<NodeProjections>,
    /// Why some projections are not shown (no node answered and the local store is held...).
    notes: Vec<String>,
}

async fn stream_statuses(js: &async_nats::jetstream::Context) -> anyhow::Result<Vec<StreamStatus>> {
    let mut out = Vec::new();
    for name in eventstore::SERVICES {
        let Ok(mut stream) = js.get_stream(name).await else {
            continue;
        };
        let info = stream.info().await.with_context(|| format!("stream {name}"))?.clone();
        let mut consumers = Vec::new();
        let mut list = stream.consumers();
        while let Some(consumer) = list.next().await {
            let c = consumer.with_context(|| format!("consumers of {name}"))?;
            consumers.push(ConsumerStatus {
                name: c.name,
                ack_floor: c.ack_floor.stream_sequence,
                pending: c.num_pending,
            });
        }
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        out.push(StreamStatus {
            name: name.to_owned(),
            messages: info.state.messages,
            bytes: info.state.bytes,
            last_seq: info.state.last_sequence,
            consumers,
        });
    }
    Ok(out)
}

/// Projection checkpoints read straight from the local store, when no node is running; only if
/// nothing holds the store (sled locks it), and never creating one.
fn offline_projections(settings: &Settings, digests: bool) -> Result<NodeProjections, String> {
    let dir = settings.projections_dir();
    if !dir.exists() {
        return Err(format!("no node answered, and there is no projection store at {}", shown(&dir)));
    }
    let store = projections::ProjectionStore::open(&dir).map_err(|e| {
        format!(
            "no node answered, and the projection store at {} cannot be read ({e}): is a node holding it?",
            shown(&dir)
        )
    })?;
    let mut list = Vec::new();
    for name in services::projection_names() {
        let checkpoints = store.checkpoints(name).map_err(|e| format!("projection {name}: {e}"))?;
        list.push(ProjectionStatus {
            name: name.to_owned(),
            // What the rows on disk were written by; the running build may differ (and rebuild).
            version: store.version(name).ok().flatten().unwrap_or(0),
            streams: Vec::new(),
            state: ProjectionState::Stopped,
            checkpoints,
            stuck: None,
            digest: if digests { store.digest(name).ok() } else { None },
        });
    }
    Ok(NodeProjections { node: settings.node.name.clone(), source: "offline".into(), projections: list })
}

async fn gather_status(settings: &Settings, connection: &Connection, digests: bool) -> anyhow::Result<Status> {
    let js = async_nats::jetstream::new(connection.client.clone());
    let streams = stream_statuses(&js).await?;
    let client = ServiceClient::new(connection.client.clone(), Duration::from_secs(5));
    let collect = if digests { DIGESTS_COLLECT } else { STATUS_COLLECT };
    let answers = client.gather_statuses(digests, collect).await?;
    let mut nodes: Vec<NodeProjections> = answers
        .answers
        .into_iter()
        .map(|n| NodeProjections { node: n.node, source: "running".into(), projections: n.projections })
        .collect();
    let mut notes = Vec::new();
    if nodes.is_empty() && answers.nobody_listens {
        match offline_projections(settings, digests) {
            Ok(offline) => nodes.push(offline),
            Err(note) => notes.push(note),
        }
    } else if nodes.is_empty() {
        notes.push(format!(
            "node(s) listen on {CTL_STATUS} at {} but none answered within {} s",
            connection.target,
            collect.within.as_secs()
        ));
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(Status { streams, nodes, notes })
}

pub async fn status(settings: &Settings, json: bool, digests: bool) -> anyhow::Result<()> {
    let connection = connect(settings, Embed::Running).await?;
    let result = gather_status(settings, &connection, digests).await;
    connection.close().await;
    let status = result?;

    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let last: BTreeMap<&str, u64> = status.streams.iter().map(|s| (s.name.as_str(), s.last_seq)).collect();
    println!("{:<14} {:>10} {:>12} {:>10}", "STREAM", "MESSAGES", "BYTES", "LAST SEQ");
    for s in &status.streams {
        println!("{:<14} {:>10} {:>12} {:>10}", s.name, s.messages, s.bytes, s.last_seq);
        for c in &s.consumers {
            println!("  consumer {:<32} ack floor {:>8}  pending {:>8}", c.name, c.ack_floor, c.pending);
        }
    }
    for node in &status.nodes {
        println!("\nnode {} ({})", node.node, node.source);
        println!("  {:<14} {:>7} {:<11} {:<32} LAG", "PROJECTION", "VERSION", "STATE", "CHECKPOINT");
        for p in &node.projections {
            let checkpoints: Vec<String> = p.checkpoints.iter().map(|(s, n)| format!("{s}#{n}")).collect();
            let lag: u64 =
                p.checkpoints.iter().map(|(s, n)| last.get(s.as_str()).copied().unwrap_or(0).saturating_sub(*n)).sum();
            let state = serde_json::to_value(p.state)?.as_str().unwrap_or_default().to_owned();
            // 0: a node of a build that does not report versions, or rows of one on disk.
            let version = if p.version == 0 { "-".to_owned() } else { p.version.to_string() };
            println!("  {:<14} {:>7} {:<11} {:<32} {}", p.name, version, state, checkpoints.join(" "), lag);
            if let Some(stuck) = &p.stuck {
                println!("    STUCK at {}#{}: {}", stuck.stream, stuck.seq, stuck.reason);
            }
        }
    }
    for note in &status.notes {
        println!("\nnote: {note}");
    }
    Ok(())
}

/// Targets for a replay: the last sequence of every stream when it starts.
async fn targets(js: &async_nats::jetstream::Context) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for name in eventstore::SERVICES {
        let mut stream = js.get_stream(name).await.with_context(|| format!("stream {name}"))?;
        out.insert(name.to_owned(), stream.info().await?.state.last_sequence);
    }
    Ok(out)
}

/// Events recorded and to record, over the streams each projection reads.
fn progress(statuses: &[ProjectionStatus], targets: &BTreeMap<String, u64>) -> (u64, u64, Option<String>) {
    let (mut done, mut total, mut stuck) = (0, 0, None);
    for p in statuses {
        for stream in &p.streams {
            let target = targets.get(stream).copied().unwrap_or(0);
            total += target;
            done += p.checkpoints.get(stream).copied().unwrap_or(0).min(target);
        }
        if let Some(s) = &p.stuck {
            stuck = Some(format!("{} stuck at {}#{}: {}", p.name, s.stream, s.seq, s.reason));
        }
    }
    (done, total, stuck)
}

/// Asks the running node(s) to rebuild `projection` (or `all`) and follows their progress.
/// Projections are rebuilt by the nodes that hold them: a store held by a node is never opened
/// here, and with no node running there is nothing to rebuild on (a node catches up on start).
pub async fn replay(settings: &Settings, projection: &str) -> anyhow::Result<()> {
    let known = services::projection_names();
    if projection != "all" && !known.contains(&projection) {
        bail!("no projection {projection:?}; known: {}, all", known.join(", "));
    }
    let connection = connect(settings, Embed::Running).await?;
    let result = replay_on_nodes(&connection, projection).await;
    connection.close().await;
    result
}

async fn replay_on_nodes(connection: &Connection, projection: &str) -> anyhow::Result<()> {
    let client = ServiceClient::new(connection.client.clone(), Duration::from_secs(5));
    let target = &connection.target;

    // Who runs, with which projections: a node answers a replay only for those it has.
    let statuses = client.gather_statuses(false, STATUS_COLLECT).await?;
    if statuses.nobody_listens {
        return Err(Unreachable::no_node(format!(
            "no foodaid node listens on {CTL_STATUS} at {target}; start `foodaid up` (or `foodaid serve`): a node \
             rebuilds its projections itself"
        ))
        .into());
    }
    if statuses.answers.is_empty() {
        return Err(Unreachable::no_node(format!(
            "node(s) listen on {CTL_STATUS} at {target} but none answered within {} s; try again",
            STATUS_COLLECT.within.as_secs()
        ))
        .into());
    }
    let having: Vec<&NodeStatus> = statuses
        .answers
        .iter()
        .filter(|n| projection == "all" || n.projections.iter().any(|p| p.name == projection))
        .collect();
    if having.is_empty() {
        let nodes: Vec<&str> = statuses.answers.iter().map(|n| n.node.as_str()).collect();
        bail!("no running node has projection {projection:?} (nodes: {})", nodes.join(", "));
    }

    let js = async_nats::jetstream::new(connection.client.clone());
    let targets = targets(&js).await?;
    let request = ReplayRequest { projection: projection.to_owned(), node: None };
    let collect = Collect { within: REPLAY_WITHIN, settle: REPLAY_WITHIN, expect: Some(having.len()) };
    let answers = client.broadcast::<_, ReplayReply>(CTL_REPLAY, &request, collect).await?;
    if let Some(refused) = answers.refusals.first() {
        bail!("a node refused the replay: {refused}");
    }
    if answers.answers.is_empty() {
        return Err(Unreachable::no_node(format!(
            "no node answered {CTL_REPLAY} at {target} within {} s",
            REPLAY_WITHIN.as_secs()
        ))
        .into());
    }
    let names: Vec<String> = answers.answers.iter().flat_map(|a| a.started.clone()).collect();
    eprintln!(
        "rebuilding {} on running node(s) {}",
        names.join(", "),
        answers.answers.iter().map(|a| a.node.as_str()).collect::<Vec<_>>().join(", ")
    );
    let mut heard = std::time::Instant::now();
    follow(
        || {
            let (client, names) = (&client, &names);
            async move {
                let statuses = client.node_statuses(Duration::from_millis(300)).await.unwrap_or_default();
                statuses.into_iter().flat_map(|n| n.projections).filter(|p| names.contains(&p.name)).collect()
            }
        },
        &targets,
        |statuses| {
            if !statuses.is_empty() {
                heard = std::time::Instant::now();
            } else if heard.elapsed() > FOLLOW_SILENCE {
                bail!("no node has said how the replay goes for {} s", FOLLOW_SILENCE.as_secs());
            }
            Ok(())
        },
    )
    .await
}

/// Polls the projections being rebuilt until they reach `targets`; `check` may end the wait.
async fn follow<F, Fut>(
    mut poll: F,
    targets: &BTreeMap<String, u64>,
    mut check: impl FnMut(&[ProjectionStatus]) -> anyhow::Result<()>,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<ProjectionStatus>>,
{
    let started = std::time::Instant::now();
    loop {
        let statuses = poll().await;
        if let Err(e) = check(&statuses) {
            eprintln!();
            return Err(e);
        }
        let (done, total, stuck) = progress(&statuses, targets);
        let pct = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
        eprint!("\r  {done}/{total} events ({pct:.0}%)   ");
        let _ = std::io::stderr().flush();
        if let Some(stuck) = stuck {
            eprintln!();
            bail!("replay stopped: {stuck}");
        }
        let rebuilding =
            statuses.iter().any(|p| p.state == ProjectionState::Rebuilding && p.checkpoints.is_empty() && done < total);
        let caught_up = !statuses.is_empty() && done >= total && !rebuilding;
        if caught_up {
            eprintln!("\nreplay done in {:.1} s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn token_store(settings: &Settings) -> anyhow::Result<(gateway::TokenStore, crate::connect::Connection)> {
    let connection = connect(settings, Embed::Running).await?;
    let js = async_nats::jetstream::new(connection.client.clone());
    let store = gateway::TokenStore::open(&js, settings.nats.replicas, settings.token_cache()).await?;
    Ok((store, connection))
}

pub async fn token_create(settings: &Settings, role: &str, scope: Option<String>, name: &str) -> anyhow::Result<()> {
    let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let (store, connection) = token_store(settings).await?;
    let result = store.create(role, scope, name).await;
    connection.close().await;
    let (token, record) = result?;
    eprintln!("token {} for {} created; keep it safe, it is shown only once:", record.id, record.actor());
    println!("{token}");
    Ok(())
}

pub async fn token_list(settings: &Settings) -> anyhow::Result<()> {
    let (store, connection) = token_store(settings).await?;
    let result = store.list().await;
    connection.close().await;
    println!("{:<14} {:<12} {:<38} {:<20} CREATED", "ID", "ROLE", "SCOPE", "NAME");
    for t in result? {
        println!(
            "{:<14} {:<12} {:<38} {:<20} {}",
            t.id,
            t.role.as_str(),
            t.scope.as_deref().unwrap_or("-"),
            t.name,
            t.created_at.format("%Y-%m-%d %H:%M")
        );
    }
    Ok(())
}

pub async fn token_revoke(settings: &Settings, id: &str) -> anyhow::Result<()> {
    let (store, connection) = token_store(settings).await?;
    let result = store.revoke(id).await;
    connection.close().await;
    result?;
    eprintln!("token {id} revoked");
    Ok(())
}

/// `foodaid stock audit`: recomputes every lot's mass balance and every reservation's holds from
/// the stock stream, and fails if anything does not add up.
pub async fn stock_audit(settings: &Settings, json: bool) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;

    let connection = connect(settings, Embed::Running).await?;
    let js = async_nats::jetstream::new(connection.client.clone());
    let mut stream = js.get_stream("stock").await.context("the stock stream")?;
    let last = stream.info().await.context("the stock stream")?.state.last_sequence;
    let mut auditor = services::stock::Auditor::default();
    if last > 0 {
        let mut messages = stream
            .create_consumer(OrderedConfig::default())
            .await
            .context("reading the stock stream")?
            .messages()
            .await
            .context("reading the stock stream")?;
        while let Some(message) = messages.next().await {
            let message = message.context("reading the stock stream")?;
            let seq = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
            let empty = async_nats::HeaderMap::new();
            let stored =
                eventstore::decode_commit("stock", seq, message.headers.as_ref().unwrap_or(&empty), &message.payload)?;
            auditor.add(seq, &stored.commit);
            if seq >= last {
                break;
            }
        }
    }
    connection.close().await;
    let report = auditor.finish();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} commits, {} lots, {} reservations ({} open)",
            report.commits, report.lots, report.reservations, report.open_reservations
        );
        println!(
            "units: received {}, on hand {}, shipped {}, written off {}, transferred out {}, in transit {}",
            report.received,
            report.on_hand,
            report.shipped,
            report.written_off,
            report.transferred_out,
            report.in_transit
        );
        for problem in &report.problems {
            println!("PROBLEM {problem}");
        }
        println!("{}", if report.passed() { "audit passed" } else { "audit FAILED" });
    }
    anyhow::ensure!(report.passed(), "the stock audit found {} problem(s)", report.problems.len());
    Ok(())
}
