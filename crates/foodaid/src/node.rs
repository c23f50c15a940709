//! Running a node: some or all services, their projections, the control subjects and
//! optionally the HTTP gateway, until Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use eventstore::EventStore;
use projections::{Engine, EngineConfig, ProjectionStore};
use runtime::{serve_control, NodeInfo, RunnerConfig, ServiceClient};
use services::ServiceContext;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::connect::{connect, Embed};

pub fn service_list(names: &[String]) -> anyhow::Result<Vec<&'static str>> {
    let mut out = Vec::new();
    for name in names {
        if name == "all" {
            return Ok(services::SERVICE_NAMES.to_vec());
        }
        match services::SERVICE_NAMES.iter().find(|s| **s == name) {
            Some(s) if !out.contains(s) => out.push(*s),
            Some(_) => {}
            None => bail!("unknown service {name:?}: choose among {} or all", services::SERVICE_NAMES.join(", ")),
        }
    }
    Ok(out)
}

/// Everything a node needs, built from settings; shared by `up` and `serve`.
pub struct Parts {
    pub store: EventStore,
    pub engine: Engine,
    /// The engine's sled store, flushed directly if the engine does not stop in time.
    pub projections: ProjectionStore,
    pub hosts: Vec<runtime::ServiceHost>,
}

pub async fn build(settings: &Settings, client: &async_nats::Client, names: &[&'static str]) -> anyhow::Result<Parts> {
    let store = EventStore::open(client.clone(), &eventstore::SERVICES, &settings.store_config())
        .await
        .context("opening the event streams")?;
    let (dir, cache) = (settings.projections_dir(), settings.projections.cache_mb * 1024 * 1024);
    let projections = tokio::task::spawn_blocking(move || ProjectionStore::open_with_cache(&dir, cache))
        .await?
        .context("opening the projection store (is another foodaid using this data dir?)")?;
    let mut engine = Engine::new(
        projections.clone(),
        store.jetstream().clone(),
        EngineConfig {
            node: settings.node.name.clone(),
            batch_size: settings.projections.batch_size,
            ..EngineConfig::default()
        },
    );
    let ctx = ServiceContext {
        events: store.clone(),
        projections: projections.clone(),
        runner: RunnerConfig { max_retries: settings.commands.max_retries, cache_size: settings.commands.cache_size },
        query_wait: Duration::from_millis(settings.projections.query_wait_ms),
        policies: settings.policies.clone(),
        vault: vault::Vault::open(store.jetstream().clone(), settings.nats.replicas)
            .await
            .context("opening the vault of personal-data keys")?,
        client: ServiceClient::new(client.clone(), Duration::from_millis(settings.nats.request_timeout_ms)),
        calendar: settings.time_zone,
    };
    let journal = runtime::AnswerJournal::open(
        store.jetstream(),
        settings.nats.replicas,
        settings.answer_retention(),
        Duration::from_secs(settings.nats.duplicate_window_secs),
    )
    .await
    .context("opening the answer journal")?;
    let hosts = names
        .iter()
        .map(|n| {
            let mut host = services::build(n, &ctx, &mut engine).expect("known service");
            host.remember_answers(journal.clone());
            host
        })
        .collect();
    Ok(Parts { store, engine, projections, hosts })
}

pub async fn run(
    settings: Settings,
    names: Vec<&'static str>,
    http: Option<String>,
    demo: bool,
    embedded: bool,
) -> anyhow::Result<()> {
    let embed = if embedded { Embed::Own } else { Embed::Running };
    if !embedded && settings.nats_urls().is_empty() {
        bail!("`foodaid serve` needs nats.url (or FOODAID__NATS__URL); use `foodaid up` for a single machine");
    }
    std::fs::create_dir_all(&settings.data_dir).with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let connection = connect(&settings, embed).await?;
    let client = connection.client.clone();
    let Parts { store, engine, projections, hosts } = build(&settings, &client, &names).await?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    engine.start();
    let engine = Arc::new(engine);
    for host in hosts {
        let (client, shutdown, inner) = (client.clone(), shutdown.clone(), tracker.clone());
        tracker.spawn(async move {
            let service = host.service();
            if let Err(e) = Arc::new(host).serve(client, shutdown, inner).await {
                tracing::error!(service, error = %e, "service stopped with an error");
            }
        });
    }
    let info = NodeInfo {
        node: settings.node.name.clone(),
        services: names.iter().map(|s| (*s).to_owned()).collect(),
        started_at: chrono::Utc::now(),
    };
    tracker.spawn({
        let (client, engine, shutdown) = (client.clone(), engine.clone(), shutdown.clone());
        async move {
            if let Err(e) = serve_control(client, engine, info, shutdown).await {
                tracing::error!(error = %e, "control subjects stopped with an error");
            }
        }
    });

    let service_client = ServiceClient::new(client.clone(), Duration::from_millis(settings.nats.request_timeout_ms));
    let mut http_addr = None;
    if let Some(addr) = http {
        let tokens = Arc::new(
            gateway::TokenStore::open(store.jetstream(), settings.nats.replicas, settings.token_cache())
                .await
                .context("opening the token store")?,
        );
        let mut state = gateway::AppState::new(service_client.clone(), tokens, store.jetstream().clone());
        state.time_zone = settings.time_zone.name().to_owned();
        state.request_timeout = Duration::from_secs(settings.http.request_timeout_secs);
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
        http_addr = Some(listener.local_addr()?);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = gateway::serve(listener, state, shutdown).await {
                tracing::error!(error = %e, "http gateway stopped with an error");
            }
        });
    }

    if names.contains(&"stock") && settings.jobs.expiry_interval_minutes > 0 {
        let every = Duration::from_secs(60 * settings.jobs.expiry_interval_minutes);
        tracker.spawn(expiry_job(service_client.clone(), every, settings.time_zone, shutdown.clone()));
    }

    if names.contains(&"stock") && settings.jobs.reservations_interval_secs > 0 {
        let every = Duration::from_secs(settings.jobs.reservations_interval_secs);
        tracker.spawn(reservations_job(service_client.clone(), every, shutdown.clone()));
    }

    if names.contains(&"distribution") && settings.jobs.collection_interval_minutes > 0 {
        let every = Duration::from_secs(60 * settings.jobs.collection_interval_minutes);
        let days = settings.policies.collection_days;
        tracker.spawn(collection_job(service_client.clone(), every, days, settings.time_zone, shutdown.clone()));
    }

    if names.contains(&"transport") && settings.jobs.pickups_interval_minutes > 0 {
        let every = Duration::from_secs(60 * settings.jobs.pickups_interval_minutes);
        let ahead = settings.policies.transport.pickup_days_ahead;
        tracker.spawn(pickups_job(service_client.clone(), every, ahead, settings.time_zone, shutdown.clone()));
    }

    if demo {
        let loaded = crate::demo::load(&service_client, &store, &settings).await.context("loading demo data")?;
        println!("{}", loaded.summary(http_addr.map(|a| format!("http://{a}")).as_deref()));
    }
    match http_addr {
        Some(addr) => {
            println!("foodaid is up: http://{addr} (node {}, services {})", settings.node.name, names.join(", "))
        }
        None => println!("foodaid is up (node {}, services {})", settings.node.name, names.join(", ")),
    }

    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight work");
    shutdown.cancel();
    tracker.close();
    // Bounded whatever state NATS is in (30 s in all, see below): work that waits on a server
    // that is down is abandoned, not waited for.
    if tokio::time::timeout(WORK_STOPS_WITHIN, tracker.wait()).await.is_err() {
        tracing::warn!(within_secs = WORK_STOPS_WITHIN.as_secs(), "some work did not finish in time");
    }
    if tokio::time::timeout(PROJECTIONS_STOP_WITHIN, engine.shutdown()).await.is_err() {
        // Rows and checkpoints are written together, so what is flushed is consistent, and
        // what is not is read again from the consumers at the next start.
        tracing::warn!(within_secs = PROJECTIONS_STOP_WITHIN.as_secs(), "projections did not stop in time");
        if let Err(e) = projections.flush().await {
            tracing::warn!(error = %e, "flushing projections failed");
        }
    }
    connection.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// A SIGTERM ends the process within 30 s: in-flight work gets 15 s, projections 8 s, and the
/// connection 7 s (2 s to flush, 5 s for the embedded nats-server to stop before it is killed).
const WORK_STOPS_WITHIN: Duration = Duration::from_secs(15);
const PROJECTIONS_STOP_WITHIN: Duration = Duration::from_secs(8);

/// Runs `tick` every `every` (the first time after `first`, if sooner) until shutdown.
async fn periodically<F, Fut>(first: Duration, every: Duration, shutdown: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut wait = first.min(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = every;
        tick().await;
    }
}

/// The daily expiry run: asked every `every` (the first time a minute after start). The run is
/// idempotent per day (its lot commands have day-based ids), so several nodes asking, or asking
/// every hour, writes each lot off once.
async fn expiry_job(client: ServiceClient, every: Duration, calendar: values::Calendar, shutdown: CancellationToken) {
    periodically(Duration::from_secs(60), every, shutdown, || async {
        let today = calendar.day_of(chrono::Utc::now());
        let request = runtime::CommandRequest::new(
            format!("expiry/{today}"),
            runtime::Actor::system("expiry"),
            serde_json::json!({ "today": today }),
        );
        match client.command("stock", "run_expiry", &request).await {
            Ok(reply) => tracing::info!(events = reply.events.len(), %today, "expiry run done"),
            Err(e) => tracing::warn!(error = %e, "expiry run failed; will try again"),
        }
    })
    .await
}

/// Expires the reservations planned and never settled for longer than the timeout (their
/// request died with its process). Each is expired once, whichever node asks.
async fn reservations_job(client: ServiceClient, every: Duration, shutdown: CancellationToken) {
    periodically(every, every, shutdown, || async {
        let now = chrono::Utc::now();
        let request = runtime::CommandRequest::new(
            format!("expire-reservations/{}", now.format("%Y-%m-%dT%H:%M:%S")),
            runtime::Actor::system("reservations"),
            serde_json::json!({}),
        );
        match client.command("stock", "expire_reservations", &request).await {
            Ok(reply) if !reply.events.is_empty() => {
                tracing::warn!(events = reply.events.len(), "reservations never settled were expired")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring stale reservations failed; will try again"),
        }
    })
    .await
}

/// Closes past distribution days: parcels still shipped or at their relay point
/// `collection_days` after their day are not collected. The last week is looked at each time, so
/// a node that was down catches up; each parcel is marked once (its command id says so).
async fn collection_job(
    client: ServiceClient,
    every: Duration,
    collection_days: u32,
    calendar: values::Calendar,
    shutdown: CancellationToken,
) {
    periodically(Duration::from_secs(90), every, shutdown, || async {
        let last = calendar.day_of(chrono::Utc::now()) - chrono::Duration::days(i64::from(collection_days));
        for back in (0..7).rev() {
            let date = last - chrono::Duration::days(back);
            let request = runtime::CommandRequest::new(
                format!("close-day/{date}"),
                runtime::Actor::system("collection"),
                serde_json::json!({ "date": date }),
            );
            match client.command("distribution", "close_distribution_day", &request).await {
                Ok(reply) if !reply.events.is_empty() => {
                    tracing::info!(parcels = reply.events.len(), %date, "not collected by the deadline")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, %date, "closing a distribution day failed; will try again"),
            }
        }
    })
    .await
}

/// Makes donors' weekly collections into pickup jobs for today and the `ahead` days after. Each
/// job is made once (its id derives from donor, day and window), whichever node asks and however
/// often.
async fn pickups_job(
    client: ServiceClient,
    every: Duration,
    ahead: u32,
    calendar: values::Calendar,
    shutdown: CancellationToken,
) {
    periodically(Duration::from_secs(75), every, shutdown, || async {
        let now = chrono::Utc::now();
        for day in 0..=i64::from(ahead) {
            let date = calendar.day_of(now) + chrono::Duration::days(day);
            let request = runtime::CommandRequest::new(
                format!("pickups/{date}/{}", now.format("%Y-%m-%dT%H:%M")),
                runtime::Actor::system("pickups"),
                serde_json::json!({ "date": date }),
            );
            match client.command("transport", "schedule_pickups", &request).await {
                Ok(reply) if !reply.events.is_empty() => {
                    tracing::info!(jobs = reply.events.len(), %date, "pickups scheduled from donors' collections")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, %date, "scheduling pickups failed; will try again"),
            }
        }
    })
    .await
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
