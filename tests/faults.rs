//! Faults under load, on one machine (`foodaid up` with its embedded nats-server): volunteers'
//! phones record donations and reserve, pick, ship and release parcels with idempotency keys,
//! retrying whatever was not acknowledged with the same key, while the nats-server is killed
//! (kill -9), then foodaid itself. Calls during the outage answer `503` at once, the platform
//! comes back by itself, every acknowledged command is in the streams exactly once, a retry
//! gets its first answer, the stock audit passes and every projection equals a fresh replay.
//!
//! `foodaid bench faults` runs the same scenario longer, with more kills, and prints the
//! figures (BENCHMARKS.md).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use support::{embedded_nats, in_days, process_exists, settled, signal, token, wait_for, Api, Foodaid};

/// Volunteers sending at once.
const CLIENTS: usize = 4;
/// A `503 service_unavailable` answers at once: the gateway does not wait on a NATS that is
/// down. Generous for a debug build on a busy machine.
const FAST: Duration = Duration::from_secs(2);
/// How long a phone waits for an answer before it gives up on the attempt (and retries).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Units of each product in the donation the test starts from: reservations never run short.
const SEED_UNITS: u64 = 5_000;

/// One command, as a phone keeps it until acknowledged: the same key and body at every attempt.
#[derive(Clone, Debug)]
struct Command {
    /// `donation`, `reserve`, `pick`, `ship` or `release`.
    kind: &'static str,
    /// The donation or reservation it is about.
    id: String,
    method: Method,
    path: String,
    key: String,
    body: Value,
}

impl Command {
    fn donation(name: &str) -> Command {
        let id = format!("don-{name}");
        let body = json!({"donation_id": id, "donor_id": "lidl", "site_id": "gerland", "lines": [
            {"product_id": "rice", "quantity": 5, "weight_g": 5000, "date": in_days(200)},
            {"product_id": "beans", "quantity": 3, "weight_g": 1200, "date": in_days(100)}]});
        Command { kind: "donation", key: id.clone(), id, method: Method::POST, path: "/api/donations".into(), body }
    }

    fn reserve(name: &str) -> Command {
        let id = format!("res-{name}");
        let body = json!({"reservation_id": id, "site_id": "gerland",
            "lines": [{"product_id": "rice", "quantity": 2}, {"product_id": "beans", "quantity": 1}]});
        Command { kind: "reserve", key: id.clone(), id, method: Method::POST, path: "/api/reservations".into(), body }
    }

    /// `pick`, `ship` or `release` of reservation `id`.
    fn step(id: &str, step: &'static str) -> Command {
        let body = match step {
            "ship" => {
                json!({"destination": {"kind": "parcel", "reference": format!("colis-{id}"), "household": "hh-1"}})
            }
            _ => json!({}),
        };
        Command {
            kind: step,
            id: id.to_owned(),
            method: Method::POST,
            path: format!("/api/reservations/{id}/{step}"),
            key: format!("{step}-{id}"),
            body,
        }
    }
}

/// A command and the answer that acknowledged it.
#[derive(Clone, Debug)]
struct Acked {
    command: Command,
    status: StatusCode,
    answer: Value,
}

/// One attempt at a command: when it left, how long its answer took, what it was.
#[derive(Clone, Debug)]
struct Attempt {
    phone: usize,
    sent: Instant,
    took: Duration,
    /// The HTTP status and error code, or `None` when no answer came (refused connection,
    /// connection reset, time-out).
    answer: Option<(StatusCode, String)>,
    timed_out: bool,
}

/// What the phones share with the test: where the platform is, and what they saw.
struct Load {
    base: RwLock<String>,
    token: String,
    stop: AtomicBool,
    acked: Mutex<Vec<Acked>>,
    attempts: Mutex<Vec<Attempt>>,
    /// Answers no retry can turn into an acknowledgement: each is a failure of the test.
    unexpected: Mutex<Vec<String>>,
}

impl Load {
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Whether a command sent after `since` was acknowledged: the platform works again.
    fn acked_since(&self, since: Instant) -> Option<Instant> {
        let attempts = self.attempts.lock().unwrap();
        attempts
            .iter()
            .filter(|a| a.sent > since && a.answer.as_ref().is_some_and(|(s, _)| s.is_success()))
            .map(|a| a.sent + a.took)
            .min()
    }

    /// Whether every phone had a command sent after `since` acknowledged: none is stuck.
    fn every_phone_since(&self, since: Instant) -> Option<()> {
        let attempts = self.attempts.lock().unwrap();
        let phones: BTreeSet<usize> = attempts
            .iter()
            .filter(|a| a.sent > since && a.answer.as_ref().is_some_and(|(s, _)| s.is_success()))
            .map(|a| a.phone)
            .collect();
        (phones.len() == CLIENTS).then_some(())
    }

    /// Sends `command` until it is acknowledged (2xx), with the same key every time, as a phone
    /// does: a `503` or no answer at all is tried again shortly; any other answer is final.
    async fn deliver(&self, phone: usize, http: &reqwest::Client, command: Command) -> bool {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let base = self.base.read().unwrap().clone();
            let sent = Instant::now();
            let result = http
                .request(command.method.clone(), format!("{base}{}", command.path))
                .bearer_auth(&self.token)
                .header("Idempotency-Key", &command.key)
                .json(&command.body)
                .timeout(ATTEMPT_TIMEOUT)
                .send()
                .await;
            let answer = match result {
                Ok(res) => {
                    let status = res.status();
                    Ok((status, res.json::<Value>().await.unwrap_or(Value::Null)))
                }
                Err(e) => Err(e),
            };
            let took = sent.elapsed();
            let attempt = match &answer {
                Ok((status, body)) => Attempt {
                    phone,
                    sent,
                    took,
                    answer: Some((*status, body["code"].as_str().unwrap_or("").to_owned())),
                    timed_out: false,
                },
                Err(e) => Attempt { phone, sent, took, answer: None, timed_out: e.is_timeout() },
            };
            self.attempts.lock().unwrap().push(attempt);
            match answer {
                Ok((status, body)) if status.is_success() => {
                    self.acked.lock().unwrap().push(Acked { command, status, answer: body });
                    return true;
                }
                Ok((StatusCode::SERVICE_UNAVAILABLE, _)) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok((status, body)) => {
                    let what = format!("{} {} (key {}): {status} {body}", command.method, command.path, command.key);
                    self.unexpected.lock().unwrap().push(what);
                    return false;
                }
                Err(e) => {
                    let what =
                        format!("{} {} (key {}): never answered: {e}", command.method, command.path, command.key);
                    self.unexpected.lock().unwrap().push(what);
                    return false;
                }
            }
        }
    }

    /// One phone: a donation, a reservation, then its steps, again and again until stopped.
    async fn phone(self: Arc<Self>, phone: usize) {
        let http = reqwest::Client::new();
        for i in 0.. {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let name = format!("p{phone}-{i}");
            if !self.deliver(phone, &http, Command::donation(&name)).await {
                continue;
            }
            let reserve = Command::reserve(&name);
            let id = reserve.id.clone();
            if !self.deliver(phone, &http, reserve).await {
                continue;
            }
            let steps: &[&'static str] = match i % 3 {
                0 => &["release"],
                1 => &["pick"],
                _ => &["pick", "ship"],
            };
            for step in steps {
                if !self.deliver(phone, &http, Command::step(&id, step)).await {
                    break;
                }
            }
        }
    }
}

/// Polls `probe` until it gives a value, for at most `limit` (fit for a busy machine).
async fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every commit of `stream`, read straight from JetStream.
async fn commits(js: &async_nats::jetstream::Context, stream: &str) -> Vec<eventstore::StoredCommit> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let mut handle = js.get_stream(stream).await.unwrap();
    let last = handle.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let mut messages = handle.create_consumer(OrderedConfig::default()).await.unwrap().messages().await.unwrap();
    let empty = async_nats::HeaderMap::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let seq = message.info().unwrap().stream_sequence;
        let headers = message.headers.as_ref().unwrap_or(&empty);
        out.push(eventstore::decode_commit(stream, seq, headers, &message.payload).unwrap());
        if seq >= last {
            break;
        }
    }
    out
}

/// `foodaid <args> --json` against the platform of `data`, parsed whatever its exit code (the
/// audit exits 1 when it finds a problem, and the report says which).
fn json_of(data: &Path, args: &[&str]) -> Value {
    let out = support::command(data, None).args(args).output().expect("foodaid runs");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("foodaid {args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Every projection's digest, as the running node computes it.
fn digests(data: &Path) -> BTreeMap<String, String> {
    let status = json_of(data, &["status", "--json", "--digests"]);
    let node = &status["nodes"][0];
    assert_eq!(node["source"], "running", "{status}");
    node["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["digest"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_nats_then_foodaid_under_load_loses_and_repeats_no_acknowledged_command() {
    let tmp = tempfile::tempdir().unwrap();
    let data: PathBuf = tmp.path().join("platform");
    // Tokens stay checked for the whole test, so that calls during the outage go as far as the
    // service client, which must answer at once that NATS is away.
    const ENV: [(&str, &str); 1] = [("FOODAID__HTTP__TOKEN_CACHE_SECS", "3600")];
    let foodaid = Foodaid::up_with(&data, None, &[], &ENV);
    let admin = Api::new(&foodaid.http, &token(&data, None, &["--role", "admin"]));
    let wh_token = token(&data, None, &["--role", "warehouse"]);
    let site = json!({"site_id": "gerland", "name": "Gerland", "zones": [{"code": "A1", "storage": "ambient"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    let donor = json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl"});
    assert_eq!(admin.post("/api/donors", "donor", donor).await.0, StatusCode::CREATED);
    for p in ["rice", "beans"] {
        let body =
            json!({"product_id": p, "name": p, "food_group": "starches", "storage": "ambient", "date_kind": "ddm"});
        assert_eq!(admin.post("/api/products", p, body).await.0, StatusCode::CREATED);
    }
    let seed = json!({"donation_id": "seed", "donor_id": "lidl", "site_id": "gerland", "lines": [
        {"product_id": "rice", "quantity": SEED_UNITS, "weight_g": SEED_UNITS * 1000, "date": in_days(300)},
        {"product_id": "beans", "quantity": SEED_UNITS, "weight_g": SEED_UNITS * 400, "date": in_days(300)}]});
    assert_eq!(admin.post("/api/donations", "seed", seed).await.0, StatusCode::CREATED);
    wait_for(&admin, "/api/lots/seed-l2", |lot| lot["on_hand"] == SEED_UNITS).await;

    let load = Arc::new(Load {
        base: RwLock::new(foodaid.http.clone()),
        token: wh_token,
        stop: AtomicBool::new(false),
        acked: Mutex::new(Vec::new()),
        attempts: Mutex::new(Vec::new()),
        unexpected: Mutex::new(Vec::new()),
    });
    let phones: Vec<_> = (0..CLIENTS).map(|p| tokio::spawn(load.clone().phone(p))).collect();
    let progress = |at_least: usize| {
        let load = load.clone();
        move || (load.acked() >= at_least).then_some(())
    };
    eventually("the load gets going", Duration::from_secs(60), progress(60)).await;

    // 1. kill -9 the nats-server: the supervisor starts it again on its port and store, and
    // the platform carries on by itself.
    let (nats_pid, _) = embedded_nats(&data).unwrap();
    let nats_killed = Instant::now();
    signal(nats_pid, libc::SIGKILL);
    // The kernel ends the process a moment after the signal: commands sent until then may
    // still be acknowledged by it.
    let nats_dead = eventually("the nats-server ends", Duration::from_secs(10), || {
        (!support::process_running(nats_pid)).then(Instant::now)
    })
    .await;
    eventually("a new nats-server", Duration::from_secs(30), || {
        embedded_nats(&data).filter(|(pid, _)| *pid != nats_pid && process_exists(*pid))
    })
    .await;
    let nats_back =
        eventually("commands acknowledged again after the nats-server's death", Duration::from_secs(60), || {
            load.acked_since(nats_dead)
        })
        .await;
    let now = load.acked();
    eventually("the load goes on", Duration::from_secs(60), progress(now + 60)).await;
    eventually("every phone acknowledged again", Duration::from_secs(60), || load.every_phone_since(nats_dead)).await;

    // 2. kill -9 foodaid under load, and start it again on the same data directory (a new
    // HTTP port: the phones are told, as a DNS name or a proxy would).
    let foodaid_killed = Instant::now();
    foodaid.kill9();
    let foodaid_dead = Instant::now();
    let foodaid = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || Foodaid::up_with(&data, None, &[], &ENV)).await.unwrap()
    };
    *load.base.write().unwrap() = foodaid.http.clone();
    let foodaid_restarted = Instant::now();
    let foodaid_back = eventually("commands acknowledged again after foodaid's death", Duration::from_secs(60), || {
        load.acked_since(foodaid_dead)
    })
    .await;
    let now = load.acked();
    eventually("the load goes on", Duration::from_secs(60), progress(now + 60)).await;

    // Every phone finishes what it had started: whatever is unacknowledged is retried until it
    // is acknowledged.
    load.stop.store(true, Ordering::Relaxed);
    for phone in phones {
        tokio::time::timeout(Duration::from_secs(150), phone).await.expect("phones finish").unwrap();
    }
    let unexpected = load.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "answers no retry turns into an acknowledgement: {unexpected:#?}");
    let acked = load.acked.lock().unwrap().clone();
    let attempts = load.attempts.lock().unwrap().clone();

    // No hang: every attempt was answered, and every 503 at once, the attempts in flight at
    // the kill included (their answer would never come: they are not left to their time-out).
    let hung: Vec<&Attempt> = attempts.iter().filter(|a| a.timed_out).collect();
    assert!(hung.is_empty(), "attempts left without an answer for {ATTEMPT_TIMEOUT:?}: {hung:?}");
    let unavailable: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.answer.as_ref().is_some_and(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE))
        .collect();
    let slow: Vec<&&Attempt> = unavailable.iter().filter(|a| a.took >= FAST).collect();
    assert!(slow.is_empty(), "503s that took {FAST:?} or more: {slow:?}");
    let in_flight = unavailable.iter().filter(|a| a.sent < nats_dead).count();
    let outage = unavailable.iter().filter(|a| a.sent >= nats_dead && a.sent <= nats_back).count();
    assert!(outage > 0, "the phones saw the outage");
    let stalled: Vec<&Attempt> =
        attempts.iter().filter(|a| a.sent + a.took >= nats_killed && a.sent <= nats_back && a.took >= FAST).collect();
    assert!(stalled.is_empty(), "calls held {FAST:?} or more by the nats-server's death: {stalled:?}");
    assert!(
        unavailable.iter().all(|a| a.sent + a.took >= nats_killed && a.sent <= nats_back),
        "503s only while NATS was away: {unavailable:?}"
    );
    // Calls went unanswered only while foodaid itself was down.
    let refused: Vec<&Attempt> = attempts.iter().filter(|a| a.answer.is_none()).collect();
    assert!(
        refused.iter().all(|a| a.sent + a.took >= foodaid_killed && a.sent <= foodaid_restarted),
        "calls without an answer while foodaid ran: {refused:?}"
    );

    // What the streams hold: every acknowledged command exactly once, nothing else.
    let url = std::fs::read_to_string(data.join("nats.url")).unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(url.trim()).await.unwrap());
    let heads = settled(&js).await;
    let mut events: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut lot_steps: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for stream in ["donations", "stock"] {
        for stored in commits(&js, stream).await {
            let commit = stored.commit;
            for e in &commit.events {
                let key = (commit.aggregate_kind.clone(), commit.aggregate_id.clone());
                events.entry(key).or_default().push(e.event_type.clone());
                if commit.aggregate_kind == "lot" && e.event_type != "lot_received" {
                    let data: Value = serde_json::from_str(e.data.get()).unwrap();
                    let reservation = data["reservation_id"].as_str().unwrap_or_default().to_owned();
                    *lot_steps.entry((commit.aggregate_id.clone(), reservation, e.event_type.clone())).or_default() +=
                        1;
                }
            }
        }
    }
    let count = |kind: &str, id: &str, event: &str| {
        events.get(&(kind.to_owned(), id.to_owned())).map_or(0, |list| list.iter().filter(|e| *e == event).count())
    };
    let mut seen = BTreeSet::new();
    for a in &acked {
        let (kind, id) = (a.command.kind, a.command.id.as_str());
        assert!(seen.insert((kind, id)), "{kind} {id} acknowledged twice under two keys");
        let exactly_once: Vec<(&str, String, &str)> = match kind {
            "donation" => vec![
                ("donation", id.to_owned(), "donation_recorded"),
                ("lot", format!("{id}-l1"), "lot_received"),
                ("lot", format!("{id}-l2"), "lot_received"),
            ],
            "reserve" => vec![
                ("reservation", id.to_owned(), "reservation_planned"),
                ("reservation", id.to_owned(), "reservation_confirmed"),
            ],
            "pick" => vec![("reservation", id.to_owned(), "reservation_picked")],
            "ship" => vec![("reservation", id.to_owned(), "reservation_shipped")],
            _ => vec![("reservation", id.to_owned(), "reservation_released")],
        };
        for (kind, id, event) in exactly_once {
            assert_eq!(
                count(kind, &id, event),
                1,
                "{event} of acknowledged {kind} {id}: {:?}",
                events.get(&(kind.to_owned(), id.clone()))
            );
        }
        if kind == "reserve" {
            assert_eq!(count("reservation", id, "reservation_failed"), 0, "{id}");
        }
    }
    let acked_ids = |kind: &str| -> BTreeSet<String> {
        acked.iter().filter(|a| a.command.kind == kind).map(|a| a.command.id.clone()).collect()
    };
    let stored_ids = |kind: &str| -> BTreeSet<String> {
        events.keys().filter(|(k, id)| k == kind && id != "seed").map(|(_, id)| id.clone()).collect()
    };
    assert_eq!(stored_ids("donation"), acked_ids("donation"), "donations in the stream and acknowledged");
    assert_eq!(stored_ids("reservation"), acked_ids("reserve"), "reservations in the stream and acknowledged");
    let twice: Vec<_> = lot_steps.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "a lot recorded a reservation's step twice: {twice:?}");

    // A retry of any acknowledged command, now, gets its first answer and writes nothing.
    let phone = Api::new(&foodaid.http, &load.token);
    for a in &acked {
        let c = &a.command;
        let (status, again) = phone.send(c.method.clone(), &c.path, Some(&c.key), Some(c.body.clone())).await.unwrap();
        let mut first = a.answer.clone();
        first["duplicate"] = json!(true);
        assert_eq!((status, &again), (a.status, &first), "{} {} (key {})", c.method, c.path, c.key);
    }
    assert_eq!(settled(&js).await, heads, "retries wrote nothing");

    // The stock adds up, with nothing left half-reserved.
    let audit = json_of(&data, &["stock", "audit", "--json"]);
    assert_eq!((&audit["problems"], &audit["open_reservations"]), (&json!([]), &json!(0)), "{audit}");
    let donations = acked_ids("donation").len() as u64;
    assert_eq!(audit["received"], json!(2 * SEED_UNITS + 8 * donations), "{audit}");

    // Every projection built along the way, through both kills, equals a fresh replay.
    let incremental = digests(&data);
    support::run(&data, None, &["replay", "all"]);
    assert_eq!(digests(&data), incremental, "a replay rebuilds the same projections");

    let retried = acked.iter().filter(|a| a.answer["duplicate"] == true).count();
    eprintln!(
        "attempts {}, acknowledged {}, first acknowledged by a retry of an earlier commit {retried}, 503 {} \
         ({in_flight} in flight at the nats-server kill, {outage} during the outage, slowest {} ms), no answer \
         (foodaid down) {}, recovery after the nats-server kill {} ms, after the foodaid kill {} ms",
        attempts.len(),
        acked.len(),
        unavailable.len(),
        unavailable.iter().map(|a| a.took).max().unwrap_or_default().as_millis(),
        refused.len(),
        (nats_back - nats_killed).as_millis(),
        (foodaid_back - foodaid_killed).as_millis(),
    );
    assert!(foodaid.terminate().success());
}
