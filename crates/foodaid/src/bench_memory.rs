//! `foodaid bench memory`: the process's memory with every service projection fed `--events`
//! events, on a fresh nats-server started for the run.
//!
//! The events are the services' own: a day of the collective is run through the four services
//! once (the demo data set, then donations into lots, households assessed, parcels requested,
//! composed into a wave, picked, shipped and collected), and the commits that day left in the
//! streams are copied, each copy under its own ids, until the streams hold `--events` events.
//! The services stop before the copies are written (their reactors would act on them); the
//! projection engine runs throughout, as on a node: it tails the copies as they are written,
//! then every projection is rebuilt from scratch, the longest catch-up a node does.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::consumer;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use runtime::{Actor, CommandReply, CommandRequest, ServiceClient, ServiceError};
use serde::Serialize;
use serde_json::{json, Value};
use std::future::IntoFuture;

use crate::config::Settings;

/// Publishes in flight at once.
const WINDOW: usize = 1024;

#[derive(Serialize)]
struct MemoryFigures {
    /// Events in the streams, read by the projections.
    events: u64,
    commits: u64,
    /// Events of the day run through the services, which the rest copies.
    template_events: u64,
    /// Resident memory once every projection has been rebuilt and has caught up, MB.
    rss_mb: f64,
    /// Resident memory with the services and projections started, before any event, MB.
    rss_start_mb: f64,
    /// Resident memory once the projections had followed the copies as they were written, MB.
    rss_after_load_mb: f64,
    /// The most the process was resident at any time in the run (VmHWM), MB.
    peak_rss_mb: f64,
    /// Writing the copies with the projections following, until every projection had them.
    load_seconds: f64,
    load_events_per_s: f64,
    /// Rebuilding every projection from the streams.
    seconds: f64,
    events_per_s: f64,
    /// The projections' sled directory on disk, MB.
    sled_mb: f64,
    /// `projections.cache_mb`.
    cache_mb: u64,
}

/// One commit read back from a stream.
struct Recorded {
    stream: &'static str,
    commit: Value,
}

pub async fn run(settings: &Settings, events: u64, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(events >= 1_000, "--events must be at least 1000");
    let dir = tempfile::tempdir()?;
    let mut options = natsd::ServerOptions::new(dir.path().join("nats"));
    options.binary = settings.nats.server_binary.clone();
    let server = natsd::NatsServer::start(options).await.context("starting nats-server for the benchmark")?;
    let client = async_nats::connect(server.url()).await?;
    let mut settings = settings.clone();
    settings.data_dir = dir.path().to_owned();
    settings.jobs.expiry_interval_minutes = 0;
    settings.jobs.collection_interval_minutes = 0;
    settings.jobs.pickups_interval_minutes = 0;
    let parts = crate::node::build(&settings, &client, &services::SERVICE_NAMES).await?;
    let store = parts.store.clone();
    let js = store.jetstream().clone();
    let engine = parts.engine;
    engine.start();

    // A day through the services.
    let cancel = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    for host in parts.hosts {
        let (client, cancel, inner) = (client.clone(), cancel.clone(), tracker.clone());
        tracker.spawn(async move { Arc::new(host).serve(client, cancel, inner).await });
    }
    let services = ServiceClient::new(client.clone(), Duration::from_secs(60));
    let rss_start_mb = memory("VmRSS")?;
    if !json {
        eprintln!("running a day through the services");
    }
    crate::demo::load(&services, &store, &settings).await.context("loading the demo data")?;
    day(&services).await?;
    reactors_done(&js).await?;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;

    let template = read_all(&js).await?;
    let template_events: u64 = template.iter().map(|r| event_count(&r.commit)).sum();
    anyhow::ensure!(template_events > 0, "the day left no events");
    let ids: HashSet<String> = template
        .iter()
        .filter_map(|r| r.commit["aggregate_id"].as_str().map(str::to_owned))
        .filter(|id| id.len() >= 3)
        .collect();
    let copies = events.saturating_sub(template_events).div_ceil(template_events);
    if !json {
        eprintln!(
            "the day left {} commits, {template_events} events over {} aggregates; writing {copies} copies",
            template.len(),
            ids.len()
        );
    }

    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for copy in 1..=copies {
        let suffix = format!("-c{copy}");
        for recorded in &template {
            let mut commit = recorded.commit.clone();
            rename(&mut commit, &ids, &suffix);
            for event in commit["events"].as_array_mut().into_iter().flatten() {
                event["event_id"] = json!(uuid::Uuid::now_v7());
            }
            let kind = commit["aggregate_kind"].as_str().unwrap_or_default();
            let id = commit["aggregate_id"].as_str().unwrap_or_default();
            anyhow::ensure!(id.len() <= 64, "copied id {id:?} is too long");
            let subject = format!("{}.{kind}.{id}", recorded.stream);
            let mut headers = HeaderMap::new();
            headers.insert(eventstore::COMMIT_FORMAT_HEADER, "1");
            let ack = js.publish_with_headers(subject, headers, Bytes::from(serde_json::to_vec(&commit)?)).await?;
            acks.push(ack.into_future());
            if acks.len() >= WINDOW {
                acks.next().await.expect("pending ack")?;
            }
        }
        if !json && copy % 100 == 0 {
            eprintln!("  {copy}/{copies} copies written");
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let targets = last_sequences(&js).await?;
    caught_up(&engine, &targets).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    let rss_after_load_mb = memory("VmRSS")?;
    let total_events = template_events * (copies + 1);
    let commits = template.len() as u64 * (copies + 1);
    if !json {
        eprintln!(
            "{total_events} events written and projected in {load_seconds:.1} s; {rss_after_load_mb:.0} MB resident; rebuilding every projection"
        );
    }

    let started = Instant::now();
    for handle in engine.handles() {
        engine.replay(handle.name()).await?;
    }
    caught_up(&engine, &targets).await?;
    let seconds = started.elapsed().as_secs_f64();
    let rss_mb = memory("VmRSS")?;
    let peak_rss_mb = memory("VmHWM")?;
    engine.shutdown().await;
    let sled_mb = dir_size(&settings.projections_dir())? as f64 / 1e6;
    server.stop().await;

    let figures = MemoryFigures {
        events: total_events,
        commits,
        template_events,
        rss_mb,
        rss_start_mb,
        rss_after_load_mb,
        peak_rss_mb,
        load_seconds,
        load_events_per_s: (total_events - template_events) as f64 / load_seconds,
        seconds,
        events_per_s: total_events as f64 / seconds,
        sled_mb,
        cache_mb: settings.projections.cache_mb,
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!("events                {:>10}  ({} commits)", figures.events, figures.commits);
        println!("rss_mb                {:>10.0}  (every projection rebuilt and caught up)", figures.rss_mb);
        println!("rss_after_load_mb     {:>10.0}  (projections following the writes)", figures.rss_after_load_mb);
        println!("rss_start_mb          {:>10.0}  (services and projections started)", figures.rss_start_mb);
        println!("peak_rss_mb           {:>10.0}  (VmHWM over the run)", figures.peak_rss_mb);
        println!("load                  {:>10.0} events/s  ({:.1} s)", figures.load_events_per_s, figures.load_seconds);
        println!("rebuild               {:>10.0} events/s  ({:.1} s)", figures.events_per_s, figures.seconds);
        println!("sled_mb               {:>10.0}  (cache {} MB)", figures.sled_mb, figures.cache_mb);
    }
    Ok(())
}

/// The day: donations into lots, households assessed, a parcel each, composed into a wave,
/// picked, shipped, arrived and collected. Builds on the demo data set (site, donors,
/// associations and their relay points, the fleet).
async fn day(services: &ServiceClient) -> anyhow::Result<()> {
    const PRODUCTS: usize = 20;
    const DONATIONS: usize = 4;
    const LINES: usize = 50;
    const HOUSEHOLDS: usize = 24;
    let groups = ["starches", "fruit_vegetables", "dairy", "meat_fish_eggs", "fats", "sugary_salty", "drinks"];
    for p in 0..PRODUCTS {
        let body = json!({"product_id": format!("bm-p{p}"), "name": format!("Produit {p}"),
                          "food_group": groups[p % groups.len()], "storage": "ambient", "date_kind": "ddm"});
        send(services, "donations", "define_product", format!("bm-product-{p}"), body).await?;
    }
    let today = chrono::Utc::now().date_naive();
    for d in 0..DONATIONS {
        let lines: Vec<Value> = (0..LINES)
            .map(|l| {
                let n = d * LINES + l;
                json!({"product_id": format!("bm-p{}", n % PRODUCTS), "quantity": 20, "weight_g": 10_000,
                       "lot_number": format!("L{n}"), "date": today + chrono::Duration::days(30 + (n % 300) as i64)})
            })
            .collect();
        let body = json!({"donation_id": format!("bm-d{d}"), "donor_id": "donor-banque-alimentaire",
                          "site_id": "site-gerland", "lines": lines});
        send(services, "donations", "record_donation", format!("bm-donation-{d}"), body).await?;
    }
    let relays = [
        ("asso-restos-vaulx", "rp-vaulx-centre"),
        ("asso-secours-venissieux", "rp-venissieux-minguettes"),
        ("asso-epicerie-givors", "rp-givors-centre"),
        ("asso-ccas-rillieux", "rp-rillieux-velette"),
    ];
    let date = today + chrono::Duration::days(2);
    let mut parcels = Vec::new();
    for h in 0..HOUSEHOLDS {
        let (association, relay) = relays[h % relays.len()];
        let id = format!("bm-h{h}");
        let body = json!({"household_id": id, "association_id": association, "relay_point_id": relay,
            "composition": {"adults": 1 + h % 2, "teens": h % 3 / 2, "children": h % 4, "infants": u8::from(h % 5 == 0)},
            "diet": {"no_pork": h % 4 == 0}, "consent": true,
            "personal": {"first_name": format!("Prénom {h}"), "last_name": "Martin", "birth_date": "1980-05-17",
                         "phone": "06 12 34 56 78", "address": format!("{h} rue des Lilas, Vaulx-en-Velin")}});
        send(services, "distribution", "register_household", format!("bm-household-{h}"), body).await?;
        let body = json!({"household_id": id, "resources_cents": 90_000, "charges_cents": 70_000});
        send(services, "distribution", "assess_household", format!("bm-assess-{h}"), body).await?;
        let body = json!({"household_id": id, "date": date});
        let reply = send(services, "distribution", "request_parcel", format!("bm-parcel-{h}"), body).await?;
        parcels.push(reply.aggregate_id);
    }
    let body = json!({"site_id": "site-gerland", "date": date});
    send(services, "distribution", "compose_wave", "bm-wave".into(), body).await?;
    for step in ["pick_parcel", "ship_parcel", "parcel_at_relay", "collect_parcel"] {
        for parcel in &parcels {
            let body = json!({"parcel_id": parcel});
            send(services, "distribution", step, format!("bm-{step}-{parcel}"), body).await?;
        }
    }
    Ok(())
}

async fn send(
    services: &ServiceClient,
    service: &'static str,
    name: &'static str,
    key: String,
    body: Value,
) -> anyhow::Result<CommandReply> {
    let request = CommandRequest::new(key, Actor::system("bench"), body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match services.command(service, name, &request).await {
            // Services still starting, or a read model not yet caught up.
            Err(e) if retryable(&e) && Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => return other.with_context(|| format!("{service}.{name}")),
        }
    }
}

fn retryable(e: &ServiceError) -> bool {
    e.kind == runtime::ErrorKind::Unavailable || e.code == "projection_lagging"
}

/// Waits until every reactor has handled every commit of its stream (a reactor's commands may
/// feed another: the streams must also stop growing).
async fn reactors_done(js: &async_nats::jetstream::Context) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut before = last_sequences(js).await?;
    loop {
        let mut idle = true;
        for name in eventstore::SERVICES {
            let stream = js.get_stream(name).await?;
            let mut list = stream.consumers();
            while let Some(info) = list.next().await {
                let info = info?;
                if info.name.starts_with("react_") && (info.num_pending > 0 || info.num_ack_pending > 0) {
                    idle = false;
                }
            }
        }
        let now = last_sequences(js).await?;
        if idle && now == before {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the services' reactors did not finish within 120 s");
        before = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn last_sequences(js: &async_nats::jetstream::Context) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let mut out = Vec::new();
    for name in eventstore::SERVICES {
        let mut stream = js.get_stream(name).await?;
        out.push((name, stream.info().await?.state.last_sequence));
    }
    Ok(out)
}

/// Every commit of every service stream.
async fn read_all(js: &async_nats::jetstream::Context) -> anyhow::Result<Vec<Recorded>> {
    let mut out = Vec::new();
    for (name, last) in last_sequences(js).await? {
        if last == 0 {
            continue;
        }
        let stream = js.get_stream(name).await?;
        let mut messages = stream.create_consumer(consumer::pull::OrderedConfig::default()).await?.messages().await?;
        loop {
            let m = messages.next().await.context("ordered consumer ended")??;
            out.push(Recorded { stream: name, commit: serde_json::from_slice(&m.payload)? });
            if m.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence >= last {
                break;
            }
        }
    }
    Ok(out)
}

fn event_count(commit: &Value) -> u64 {
    commit["events"].as_array().map_or(0, |e| e.len() as u64)
}

/// Gives every aggregate id of the day (as a string or a key) the copy's suffix.
fn rename(value: &mut Value, ids: &HashSet<String>, suffix: &str) {
    match value {
        Value::String(s) if ids.contains(s.as_str()) => s.push_str(suffix),
        Value::Array(items) => items.iter_mut().for_each(|v| rename(v, ids, suffix)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (key, mut v) in old {
                rename(&mut v, ids, suffix);
                let key = if ids.contains(&key) { format!("{key}{suffix}") } else { key };
                map.insert(key, v);
            }
        }
        _ => {}
    }
}

/// Waits until every projection has recorded every stream it reads up to `targets`.
async fn caught_up(engine: &projections::Engine, targets: &[(&'static str, u64)]) -> anyhow::Result<()> {
    for handle in engine.handles() {
        for stream in handle.streams() {
            let target = targets.iter().find(|(s, _)| s == stream).map_or(0, |(_, seq)| *seq);
            handle
                .wait_for(stream, target, Duration::from_secs(3600))
                .await
                .with_context(|| format!("projection {}", handle.name()))?;
        }
    }
    Ok(())
}

/// A line of /proc/self/status, in MB.
fn memory(field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    Ok(kb / 1024.0)
}

fn dir_size(path: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}
