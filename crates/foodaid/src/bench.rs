//! `foodaid bench eventstore`: the event store and the projection engine against raw JetStream,
//! on the same payloads, on a fresh nats-server started for the run.

use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream::{consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::Utc;
use eventcore::{encode_event, AggregateId, CommandMeta, Commit, DomainEvent};
use eventstore::{AggregateRef, EventStore, Expected, StoreConfig};
use futures::stream::{FuturesUnordered, StreamExt};
use projections::{ApplyError, Engine, EngineConfig, Projection, ProjectionStore, RecordedEvent, Tx};
use serde::{Deserialize, Serialize};

use crate::config::Settings;

/// Appends in flight at once, for both the store and the raw baseline.
const WINDOW: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum BenchEvent {
    StockCounted {
        lot: String,
        product: String,
        zone: String,
        quantity: u32,
        grams: u64,
        counted_by: String,
        note: String,
    },
}

impl DomainEvent for BenchEvent {}

/// A realistic small projection: one row per aggregate, read-modify-write per event.
struct CountsProjection;

impl Projection for CountsProjection {
    fn name(&self) -> &'static str {
        "bench_counts"
    }
    fn version(&self) -> u32 {
        1
    }
    fn streams(&self) -> &'static [&'static str] {
        &["stock"]
    }
    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        let BenchEvent::StockCounted { quantity, grams, .. } = event.decode()?;
        let key = event.envelope.aggregate_id.as_bytes();
        let (q, g): (u64, u64) = tx.get_json("lot", key)?.unwrap_or((0, 0));
        tx.put_json("lot", key, &(q + u64::from(quantity), g + grams));
        Ok(())
    }
}

fn event(i: usize, round: usize) -> BenchEvent {
    BenchEvent::StockCounted {
        lot: format!("LOT-{i:06}"),
        product: "Pâtes complètes 500 g".into(),
        zone: "A1".into(),
        quantity: (round % 40 + 1) as u32,
        grams: ((round % 40 + 1) * 500) as u64,
        counted_by: "warehouse:inventaire-lundi".into(),
        note: "comptage tournant, palette entamée, étiquette lisible".into(),
    }
}

#[derive(Serialize)]
struct Figures {
    commits_per_s: f64,
    raw_publish_per_s: f64,
    append_ratio: f64,
    replay_events_per_s: f64,
    raw_read_per_s: f64,
    replay_ratio: f64,
}

pub async fn eventstore(settings: &Settings, events: usize, aggregates: usize, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(events > 0 && aggregates > 0, "--events and --aggregates must be positive");
    let aggregates = aggregates.min(events);
    let rounds = events.div_ceil(aggregates);
    let total = rounds * aggregates;

    let dir = tempfile::tempdir()?;
    let mut options = natsd::ServerOptions::new(dir.path().join("nats"));
    options.binary = settings.nats.server_binary.clone();
    let server = natsd::NatsServer::start(options).await.context("starting nats-server for the benchmark")?;
    let client = async_nats::connect(server.url()).await?;
    let store = EventStore::open(client.clone(), &eventstore::SERVICES, &StoreConfig::default()).await?;
    let js = store.jetstream().clone();
    js.create_stream(stream::Config {
        name: "rawbench".into(),
        subjects: vec!["rawbench.>".into()],
        storage: stream::StorageType::File,
        duplicate_window: StoreConfig::default().duplicate_window,
        allow_direct: true,
        ..Default::default()
    })
    .await?;

    let ids: Vec<AggregateId> =
        (0..aggregates).map(|i| AggregateId::from_str(&format!("lot-{i:06}")).expect("valid id")).collect();
    let meta = |i: usize, r: usize| CommandMeta::new(format!("bench-{i}-{r}"), "bench");
    let commit = |i: usize, r: usize, version: u64| {
        Commit::new(&meta(i, r), "lot", ids[i].as_str(), version, vec![encode_event(&event(i, r))], Utc::now())
    };
    let payload_bytes = serde_json::to_vec(&commit(0, 0, 0))?.len();
    let event_bytes = serde_json::to_vec(&encode_event(&event(0, 0)).data)?.len();
    if !json {
        eprintln!("event store benchmark: {total} commits of one event (~{event_bytes} B event, {payload_bytes} B message) over {aggregates} aggregates");
    }

    // Raw baseline: the same commits, serialised beforehand, published pipelined with the same
    // headers (message id and expected last subject sequence).
    let raw_payloads: Vec<Vec<Bytes>> = (0..rounds)
        .map(|r| {
            (0..aggregates).map(|i| Bytes::from(serde_json::to_vec(&commit(i, r, r as u64)).expect("json"))).collect()
        })
        .collect();
    let mut last_seq = vec![0u64; aggregates];
    let started = Instant::now();
    for (r, payloads) in raw_payloads.iter().enumerate() {
        let mut acks = FuturesUnordered::new();
        for (i, payload) in payloads.iter().enumerate() {
            let subject = format!("rawbench.lot.{}", ids[i]);
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{subject}/bench-{i}-{r}").as_str());
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, last_seq[i].to_string().as_str());
            headers.insert(eventstore::COMMIT_FORMAT_HEADER, "1");
            let ack = js.publish_with_headers(subject, headers, payload.clone()).await?;
            acks.push(async move { (i, ack.await) });
            if acks.len() >= WINDOW {
                let (i, ack) = acks.next().await.expect("pending ack");
                last_seq[i] = ack?.sequence;
            }
        }
        while let Some((i, ack)) = acks.next().await {
            last_seq[i] = ack?.sequence;
        }
    }
    let raw_publish_per_s = total as f64 / started.elapsed().as_secs_f64();
    drop(raw_payloads);

    // Through the event store: build the commit, append with the concurrency check, await the ack.
    let mut expected = vec![Expected::default(); aggregates];
    let started = Instant::now();
    for r in 0..rounds {
        let before = expected.clone();
        let mut appends = futures::stream::iter((0..aggregates).map(|i| {
            let target = AggregateRef::new("stock", "lot", ids[i].clone());
            let c = commit(i, r, before[i].version);
            let (store, exp) = (store.clone(), before[i]);
            async move { (i, store.append(&target, exp, &c).await, c.last_version()) }
        }))
        .buffer_unordered(WINDOW);
        while let Some((i, appended, version)) = appends.next().await {
            let appended = appended?;
            anyhow::ensure!(!appended.duplicate, "unexpected duplicate");
            expected[i] = Expected { version, last_seq: appended.seq };
        }
    }
    let commits_per_s = total as f64 / started.elapsed().as_secs_f64();

    // Reading back is measured three times, each time a raw read then a projection replay into
    // a fresh sled directory; the run reports the median pair, since a shared machine's noise
    // moves single measurements by ±20 %.
    let stock = js.get_stream("stock").await?;
    let last = expected.iter().map(|e| e.last_seq).max().unwrap_or(0);
    let expected_quantity: u64 = (0..rounds).map(|r| (r % 40 + 1) as u64).sum();
    let mut pairs = Vec::new();
    for rep in 0..3 {
        // Raw read: an ordered consumer over the same stream.
        let started = Instant::now();
        let mut messages =
            stock.create_consumer(consumer::pull::OrderedConfig { ..Default::default() }).await?.messages().await?;
        let mut read = 0usize;
        while read < total {
            let m = messages.next().await.context("ordered consumer ended")??;
            std::hint::black_box(&m.payload);
            read += 1;
        }
        let raw_read_per_s = total as f64 / started.elapsed().as_secs_f64();
        drop(messages);

        // Projection replay into sled: decode, upcast, apply, write batches with checkpoints.
        let projections = ProjectionStore::open(&dir.path().join(format!("sled-{rep}")))?;
        let mut engine = Engine::new(
            projections.clone(),
            js.clone(),
            EngineConfig {
                node: format!("bench{rep}"),
                batch_size: settings.projections.batch_size,
                ..EngineConfig::default()
            },
        );
        let handle = engine.register(CountsProjection);
        let started = Instant::now();
        engine.start();
        handle.wait_for("stock", last, std::time::Duration::from_secs(600)).await?;
        let replay_events_per_s = total as f64 / started.elapsed().as_secs_f64();
        engine.shutdown().await;
        let check: Option<(u64, u64)> =
            projections.view("bench_counts")?.get_json("lot", ids[0].as_str().as_bytes())?;
        anyhow::ensure!(check.map(|c| c.0) == Some(expected_quantity), "projection result is wrong: {check:?}");
        if !json {
            eprintln!(
                "  read-back {}: raw {raw_read_per_s:.0}/s, replay {replay_events_per_s:.0}/s, ratio {:.2}",
                rep + 1,
                replay_events_per_s / raw_read_per_s
            );
        }
        pairs.push((replay_events_per_s / raw_read_per_s, replay_events_per_s, raw_read_per_s));
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (_, replay_events_per_s, raw_read_per_s) = pairs[pairs.len() / 2];

    let figures = Figures {
        commits_per_s,
        raw_publish_per_s,
        append_ratio: commits_per_s / raw_publish_per_s,
        replay_events_per_s,
        raw_read_per_s,
        replay_ratio: replay_events_per_s / raw_read_per_s,
    };
    server.stop().await;
    if json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!(
            "append   {:>10.0} commits/s through the event store (concurrency check, message id, ack awaited)",
            figures.commits_per_s
        );
        println!(
            "raw      {:>10.0} publish/s, async-nats pipelined, same payloads and headers",
            figures.raw_publish_per_s
        );
        println!("append_ratio {:.2}", figures.append_ratio);
        println!(
            "replay   {:>10.0} events/s into sled (batches of {}, checkpoint per batch)",
            figures.replay_events_per_s, settings.projections.batch_size
        );
        println!("raw read {:>10.0} messages/s, ordered consumer", figures.raw_read_per_s);
        println!("replay_ratio {:.2}", figures.replay_ratio);
    }
    Ok(())
}

#[derive(Serialize)]
struct StockFigures {
    lots: usize,
    /// Donation lines recorded per second through the donations service (50 lines per donation,
    /// each judged by the reception rules, acknowledged once stored).
    donation_lines_per_s: f64,
    /// Accepted lines taken into stock as lots per second by the stock service's reactor,
    /// measured from the first donation to the last lot.
    lots_received_per_s: f64,
    /// Parcel-sized reservations (8 lines, FEFO across lots) per second through the stock
    /// service, events stored.
    reservations_per_s: f64,
    /// Commits a reservation made on average (plan, lots, settlement).
    commits_per_reservation: f64,
    /// The same number of commits per second, published raw with async-nats: the baseline.
    raw_publish_per_s: f64,
    /// reservations_per_s × commits_per_reservation / raw_publish_per_s.
    reservation_commit_ratio: f64,
}

/// `foodaid bench stock`: donations into lots, then parcel reservations, through the services
/// over NATS, on a fresh nats-server and sled directory.
pub async fn stock(settings: &Settings, lots: usize, json: bool) -> anyhow::Result<()> {
    use runtime::{Actor, CommandRequest, ServiceClient};
    use serde_json::json;

    anyhow::ensure!(lots >= 1_000, "--lots must be at least 1000");
    const PRODUCTS: usize = 200;
    const LINES: usize = 50;
    const CONCURRENCY: usize = 32;
    let dir = tempfile::tempdir()?;
    let mut options = natsd::ServerOptions::new(dir.path().join("nats"));
    options.binary = settings.nats.server_binary.clone();
    let server = natsd::NatsServer::start(options).await.context("starting nats-server for the benchmark")?;
    let client = async_nats::connect(server.url()).await?;
    let mut settings = settings.clone();
    settings.data_dir = dir.path().to_owned();
    settings.jobs.expiry_interval_minutes = 0;
    settings.jobs.collection_interval_minutes = 0;
    let parts = crate::node::build(&settings, &client, &services::SERVICE_NAMES).await?;
    let store = parts.store.clone();
    let cancel = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    parts.engine.start();
    for host in parts.hosts {
        let (client, cancel, inner) = (client.clone(), cancel.clone(), tracker.clone());
        tracker.spawn(async move { std::sync::Arc::new(host).serve(client, cancel, inner).await });
    }
    let services = ServiceClient::new(client.clone(), std::time::Duration::from_secs(60));
    let send = |service: &'static str, name: &'static str, key: String, body: serde_json::Value| {
        let services = services.clone();
        async move {
            let request = CommandRequest::new(key, Actor::system("bench"), body);
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match services.command(service, name, &request).await {
                    Err(e) if e.kind == runtime::ErrorKind::Unavailable && Instant::now() < deadline => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await
                    }
                    other => return other,
                }
            }
        }
    };
    send("stock", "create_site", "site".into(), json!({"site_id": "gerland", "name": "Gerland"})).await?;
    send(
        "donations",
        "register_donor",
        "donor".into(),
        json!({"donor_id": "donor", "kind": "retailer", "name": "Donor"}),
    )
    .await?;
    for p in 0..PRODUCTS {
        let body = json!({"product_id": format!("p{p}"), "name": format!("Product {p}"), "food_group": "starches",
                          "storage": "ambient", "date_kind": "ddm"});
        send("donations", "define_product", format!("product-{p}"), body).await?;
    }

    // Donations: `lots` accepted lines, 50 per donation, 20 units each, spread over the products
    // and over a year of best-before dates.
    let donations = lots.div_ceil(LINES);
    if !json {
        eprintln!("recording {donations} donations of {LINES} lines");
    }
    let started = Instant::now();
    let mut recorded = futures::stream::iter(0..donations)
        .map(|d| {
            let lines: Vec<serde_json::Value> = (0..LINES)
                .map(|l| {
                    let n = d * LINES + l;
                    let date = Utc::now().date_naive() + chrono::Duration::days(30 + (n % 365) as i64);
                    json!({"product_id": format!("p{}", n % PRODUCTS), "quantity": 20, "weight_g": 10_000,
                           "lot_number": format!("L{n}"), "date": date})
                })
                .collect();
            let body =
                json!({"donation_id": format!("d{d}"), "donor_id": "donor", "site_id": "gerland", "lines": lines});
            send("donations", "record_donation", format!("donation-{d}"), body)
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(reply) = recorded.next().await {
        reply?;
    }
    let donation_lines_per_s = (donations * LINES) as f64 / started.elapsed().as_secs_f64();
    let lots_view = store.jetstream().get_stream("stock").await?;
    // Every lot is one commit on the stock stream (after the site's).
    let expected = (donations * LINES) as u64;
    loop {
        let mut info = lots_view.clone();
        let messages = info.info().await?.state.messages;
        if messages > expected {
            break;
        }
        anyhow::ensure!(started.elapsed() < std::time::Duration::from_secs(1800), "lots never all arrived");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let lots_received_per_s = expected as f64 / started.elapsed().as_secs_f64();
    let before = lots_view.clone().info().await?.state.last_sequence;

    // Reservations: parcels of 8 products, 1 to 3 units each, FEFO across lots. The lots
    // projection must have caught up for the plans to see every lot.
    loop {
        let mut query = runtime::QueryRequest::new(Actor::system("bench"), json!({"lot_id": "d0-l1"}));
        query.min_seq.insert("stock".into(), before);
        match services.query::<serde_json::Value>("stock", "get_lot", &query).await {
            Ok(_) => break,
            Err(e) if e.code == "projection_lagging" => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let parcels = (lots / 10).max(100);
    if !json {
        eprintln!("{expected} lots in stock; reserving {parcels} parcels");
    }
    let started = Instant::now();
    let mut reserved = futures::stream::iter(0..parcels)
        .map(|i| {
            let lines: Vec<serde_json::Value> = (0..8)
                .map(
                    |k| json!({"product_id": format!("p{}", (i * 8 + k * 25) % PRODUCTS), "quantity": 1 + (i + k) % 3}),
                )
                .collect();
            let body = json!({"reservation_id": format!("parcel-{i}"), "site_id": "gerland", "lines": lines});
            send("stock", "reserve_stock", format!("parcel-{i}"), body)
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(reply) = reserved.next().await {
        reply?;
    }
    let reservations_per_s = parcels as f64 / started.elapsed().as_secs_f64();
    let after = lots_view.clone().info().await?.state.last_sequence;
    let commits_per_reservation = (after - before) as f64 / parcels as f64;

    // Baseline: as many commits, raw, same size as the reservations' on average.
    let js = store.jetstream().clone();
    js.create_stream(stream::Config {
        name: "rawstock".into(),
        subjects: vec!["rawstock.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let bytes = lots_view.clone().info().await?.state.bytes as usize / after.max(1) as usize;
    let payload = Bytes::from(vec![b'x'; bytes.max(64)]);
    let count = (after - before) as usize;
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..count {
        let ack = js.publish(format!("rawstock.lot.{}", i % 10_000), payload.clone()).await?;
        acks.push(async move { ack.await });
        if acks.len() >= WINDOW {
            acks.next().await.expect("pending ack")?;
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let raw_publish_per_s = count as f64 / started.elapsed().as_secs_f64();

    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    parts.engine.shutdown().await;
    server.stop().await;
    let figures = StockFigures {
        lots: donations * LINES,
        donation_lines_per_s,
        lots_received_per_s,
        reservations_per_s,
        commits_per_reservation,
        raw_publish_per_s,
        reservation_commit_ratio: reservations_per_s * commits_per_reservation / raw_publish_per_s,
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!("lots                      {:>10}", figures.lots);
        println!(
            "donation lines/s          {:>10.0}  (recorded and judged, 50 per donation)",
            figures.donation_lines_per_s
        );
        println!("lots received/s           {:>10.0}  (through to stock by the reactor)", figures.lots_received_per_s);
        println!("reservations/s            {:>10.0}  (8 lines, FEFO across lots)", figures.reservations_per_s);
        println!("commits per reservation   {:>10.1}", figures.commits_per_reservation);
        println!("raw publish/s             {:>10.0}  (async-nats, same commit size)", figures.raw_publish_per_s);
        println!("reservation_commit_ratio  {:>10.2}", figures.reservation_commit_ratio);
    }
    Ok(())
}
