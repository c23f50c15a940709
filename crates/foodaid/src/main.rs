//! `foodaid`: one binary that runs the platform and administers it.
//!
//! - `foodaid up` — everything in one process, with its own nats-server unless one is configured.
//! - `foodaid serve <service>...` — chosen services against an external NATS (multi-machine).
//! - `foodaid status`, `foodaid replay`, `foodaid token`, `foodaid stock audit` — operations on
//!   the running platform; they never start a nats-server (exit code 3 when there is none).
//! - `foodaid bench eventstore` — the event store benchmark.

mod bench;
mod bench_compose;
mod bench_faults;
mod bench_health;
mod bench_memory;
mod bench_plan;
mod bench_routing;
mod config;
mod connect;
mod demo;
mod node;
mod ops;
mod telemetry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// Buffers are allocated by the NATS reader and freed on the projection threads; mimalloc
/// handles that cross-thread traffic far better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc keeps the pages a thread freed for 10 ms before giving them back to the OS, and
/// whole arenas ten times longer. Projection batches are allocated and freed on many threads many
/// times a second, so the pages never get old enough: a node caught up on a million events held
/// about 540 MB instead of 410 (`foodaid bench memory`). Given back at once, they cost a few more
/// system calls and no measurable speed.
#[allow(unsafe_code)]
fn give_freed_memory_back_at_once() {
    // `mi_option_purge_delay` in mimalloc.h (the same in v2 and v3); libmimalloc-sys names no
    // constant for it.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets one of mimalloc's integer options; called first thing in main.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

#[derive(Parser)]
#[command(name = "foodaid", version, about = "Shared logistics for a collective of food-aid associations")]
struct Cli {
    /// A TOML file overriding config/default.toml (instead of FOODAID_PROFILE).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where data lives (overrides data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: nats-server (unless nats.url is set), the four services,
    /// their projections and the HTTP gateway.
    Up {
        /// Address of the HTTP gateway (overrides http.addr).
        #[arg(long)]
        http: Option<String>,
        /// Load a small realistic data set and print an admin token.
        #[arg(long)]
        demo: bool,
    },
    /// Run some services and/or the HTTP gateway against the configured NATS.
    Serve {
        /// donations, stock, distribution, transport, or all (none: gateway only).
        services: Vec<String>,
        /// Also serve the HTTP gateway on this address.
        #[arg(long)]
        http: Option<String>,
    },
    /// Streams, message counts, consumer lag and projection checkpoints.
    Status {
        #[arg(long)]
        json: bool,
        /// Also hash every projection's rows (to compare two builds).
        #[arg(long)]
        digests: bool,
    },
    /// Ask the running node(s) to drop projections and rebuild them from the streams.
    Replay {
        /// A projection name, or `all`.
        projection: String,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Stock administration.
    Stock {
        #[command(subcommand)]
        command: StockCommand,
    },
    /// Benchmarks that print figures measured in the same run.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token; it is printed once and only its hash is kept.
    Create {
        /// admin, warehouse, association or driver.
        #[arg(long)]
        role: String,
        /// The association or driver id, for those roles.
        #[arg(long)]
        scope: Option<String>,
        /// A label for the audit trail (who holds it).
        #[arg(long, default_value = "")]
        name: String,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum StockCommand {
    /// Recompute every lot's mass balance and reservation holds from the events; exit 1 if
    /// anything does not add up.
    Audit {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Event store append and projection replay against raw JetStream, on a fresh nats-server.
    Eventstore {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 10_000)]
        aggregates: usize,
        #[arg(long)]
        json: bool,
    },
    /// The route planner on CVRPLIB (`.vrp`) and Solomon instances found under a folder, against
    /// the best-known solutions of its `bks.csv` files.
    Routing {
        #[arg(long, default_value = "../shared/bench/instances")]
        instances: std::path::PathBuf,
        /// Seconds per instance.
        #[arg(long, default_value_t = 1.0)]
        time_limit: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Only instances whose name contains this.
        #[arg(long)]
        only: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A synthetic day of pickups and deliveries around Lyon (time windows, chilled loads, a
    /// mixed fleet) planned within a time limit.
    Plan {
        #[arg(long, default_value_t = 200)]
        stops: usize,
        #[arg(long, default_value_t = 10)]
        vehicles: usize,
        #[arg(long, default_value_t = 5.0)]
        time_limit: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Searches at once, each from its own seed; the best plan wins.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// The parcel composer on a synthetic wave, against a first-come baseline.
    Compose {
        #[arg(long, default_value_t = 10_000)]
        households: usize,
        #[arg(long, default_value_t = 50_000)]
        lots: usize,
        /// Share of the needed stock taken away (0.4: 40 % short).
        #[arg(long, default_value_t = 0.0)]
        scarcity: f64,
        #[arg(long)]
        json: bool,
    },
    /// Concurrent callers on /health, against a `foodaid up --demo` it starts or a URL.
    Health {
        /// A running gateway (http://host:port) instead of a platform of its own.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value_t = 100)]
        callers: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
    },
    /// Resident memory with every service projection fed N events (a day through the services,
    /// copied), following the writes and then rebuilt.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long)]
        json: bool,
    },
    /// Phones recording donations and reservations with idempotency keys while the
    /// nats-server and foodaid are killed in turn: acknowledged, lost, duplicated, recovery.
    Faults {
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        #[arg(long, default_value_t = 8)]
        phones: usize,
        /// Kills over the run, the nats-server and foodaid in turn.
        #[arg(long, default_value_t = 4)]
        kills: usize,
        #[arg(long)]
        json: bool,
    },
    /// Donations into lots, then 8-line parcel reservations, through the services.
    Stock {
        #[arg(long, default_value_t = 50_000)]
        lots: usize,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    give_freed_memory_back_at_once();
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut settings = match Settings::load(cli.config.as_deref(), &env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = cli.data_dir {
        settings.data_dir = dir;
    }
    let quiet = match &cli.command {
        Command::Status { json, .. } => *json,
        Command::Stock { command: StockCommand::Audit { json } } => *json,
        Command::Bench {
            command:
                BenchCommand::Eventstore { json, .. }
                | BenchCommand::Stock { json, .. }
                | BenchCommand::Compose { json, .. }
                | BenchCommand::Health { json, .. }
                | BenchCommand::Memory { json, .. },
        } => *json,
        // It tells its own story on stderr; the client's connection notices would drown it.
        Command::Bench { command: BenchCommand::Faults { .. } } => true,
        _ => false,
    };
    telemetry::init(&settings.log, quiet);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up { http, demo } => {
                let http = Some(http.unwrap_or_else(|| settings.http.addr.clone()));
                node::run(settings, services::SERVICE_NAMES.to_vec(), http, demo, true).await
            }
            Command::Serve { services, http } => {
                let names = node::service_list(&services)?;
                anyhow::ensure!(
                    !names.is_empty() || http.is_some(),
                    "name services to run, or --http ADDR for a gateway"
                );
                node::run(settings, names, http, false, false).await
            }
            Command::Status { json, digests } => ops::status(&settings, json, digests).await,
            Command::Replay { projection } => ops::replay(&settings, &projection).await,
            Command::Token { command } => match command {
                TokenCommand::Create { role, scope, name } => ops::token_create(&settings, &role, scope, &name).await,
                TokenCommand::List => ops::token_list(&settings).await,
                TokenCommand::Revoke { id } => ops::token_revoke(&settings, &id).await,
            },
            Command::Stock { command: StockCommand::Audit { json } } => ops::stock_audit(&settings, json).await,
            Command::Bench { command: BenchCommand::Eventstore { events, aggregates, json } } => {
                bench::eventstore(&settings, events, aggregates, json).await
            }
            Command::Bench { command: BenchCommand::Stock { lots, json } } => bench::stock(&settings, lots, json).await,
            Command::Bench { command: BenchCommand::Health { url, callers, seconds, json } } => {
                bench_health::run(url, callers, seconds, json).await
            }
            Command::Bench { command: BenchCommand::Memory { events, json } } => {
                bench_memory::run(&settings, events, json).await
            }
            Command::Bench { command: BenchCommand::Faults { seconds, phones, kills, json } } => {
                bench_faults::run(seconds, phones, kills, json).await
            }
            Command::Bench { command: BenchCommand::Plan { stops, vehicles, time_limit, seed, threads, json } } => {
                bench_plan::run(stops, vehicles, time_limit, seed, threads, json)
            }
            Command::Bench { command: BenchCommand::Routing { instances, time_limit, seed, only, json } } => {
                bench_routing::run(&instances, time_limit, seed, only.as_deref(), json)
            }
            Command::Bench { command: BenchCommand::Compose { households, lots, scarcity, json } } => {
                bench_compose::run(households, lots, scarcity, json)
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // No platform where the command looked: its own shape and exit code, for scripts.
        Err(e) if e.is::<connect::Unreachable>() => {
            eprintln!("error: {e}");
            ExitCode::from(connect::Unreachable::EXIT_CODE)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
