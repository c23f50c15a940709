//! `foodaid bench faults`: what the platform keeps of its promises on one machine when its
//! processes are killed under load, counted in one run.
//!
//! It starts `foodaid up` (with its embedded nats-server) on a fresh data directory, then
//! phones — concurrent clients — record donations and reserve, pick, ship and release parcels,
//! each command with an `Idempotency-Key`, and each retried with the same key and body until it
//! is acknowledged (a `2xx`), as the web app's outbox does. Meanwhile the nats-server and
//! foodaid itself are killed with SIGKILL in turn, evenly over the run; foodaid is started
//! again at once on the same data directory and HTTP address (as a service manager would),
//! the nats-server by foodaid's own supervisor.
//!
//! Then every phone finishes what it started, the platform settles, and the run counts, from
//! the streams read straight from JetStream: acknowledged commands whose events are missing
//! (lost), present more than once (duplicated), or commits nobody got an acknowledgement for;
//! retries answered otherwise than with their first answer; the stock audit; and whether every
//! projection equals a fresh replay (`status --digests` before and after `replay all`). Calls
//! answered during the outages are timed, and so is the recovery after each kill (from the kill
//! to the first command sent after it and acknowledged).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

/// A `503` answered later than this is not "at once".
const FAST: Duration = Duration::from_secs(2);
/// How long a phone waits for an answer before it gives the attempt up and retries.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Units of each product in the first donation: reservations never run short.
const SEED_UNITS: u64 = 1_000_000;

#[derive(Serialize)]
struct Figures {
    seconds: f64,
    phones: usize,
    /// Commands the phones made (each with its own key).
    commands: usize,
    /// HTTP requests sent, retries included.
    attempts: usize,
    acknowledged: usize,
    /// Acknowledged, and some event it must have committed is not in the streams.
    lost: usize,
    /// Acknowledged, and some event it committed is in the streams more than once (or a lot
    /// recorded one reservation's step twice).
    duplicated: usize,
    /// Donations or reservations in the streams that no phone got an acknowledgement for.
    unacknowledged_commits: usize,
    /// Acknowledged commands whose first acknowledgement came from a retry whose earlier attempt
    /// had committed (the answer says `duplicate: true`).
    acknowledged_by_a_retry: usize,
    /// Acknowledged commands sent again at the end whose answer was not their first one.
    retries_not_first_answer: usize,
    /// Answers no retry turns into an acknowledgement (any status but 2xx and 503).
    unexpected_answers: Vec<String>,
    /// Attempts left without any answer for the phone's time-out.
    hung_attempts: usize,
    /// Attempts refused without an HTTP answer (connection refused or reset: foodaid down).
    no_answer: usize,
    kills: Vec<Kill>,
    /// `503` answers to attempts sent while NATS was away, after the platform had noticed.
    outage_503: usize,
    outage_503_p50_ms: f64,
    outage_503_p99_ms: f64,
    outage_503_max_ms: f64,
    /// Such answers slower than 2 s.
    outage_503_slow: usize,
    /// The longest an attempt in flight when a nats-server was killed waited for its answer.
    in_flight_at_kill_max_ms: f64,
    audit_passed: bool,
    audit_problems: Vec<String>,
    open_reservations: u64,
    /// Units received in the audit equal the units of the acknowledged donations.
    audit_received_matches: bool,
    projections: usize,
    digests_equal: bool,
}

#[derive(Serialize, Clone)]
struct Kill {
    /// `nats-server` or `foodaid`.
    what: &'static str,
    at_s: f64,
    /// From the kill to the answer of the first command sent after it and acknowledged.
    recovery_s: f64,
}

/// One command as a phone keeps it: the same key and body at every attempt.
#[derive(Clone)]
struct Cmd {
    kind: &'static str,
    id: String,
    path: String,
    key: String,
    body: Value,
}

impl Cmd {
    fn donation(name: &str, today: chrono::NaiveDate) -> Cmd {
        let id = format!("don-{name}");
        let body = json!({"donation_id": id, "donor_id": "lidl", "site_id": "gerland", "lines": [
            {"product_id": "rice", "quantity": 5, "weight_g": 5000, "date": today + chrono::Duration::days(200)},
            {"product_id": "beans", "quantity": 3, "weight_g": 1200, "date": today + chrono::Duration::days(100)}]});
        Cmd { kind: "donation", key: id.clone(), id, path: "/api/donations".into(), body }
    }

    fn reserve(name: &str) -> Cmd {
        let id = format!("res-{name}");
        let body = json!({"reservation_id": id, "site_id": "gerland",
            "lines": [{"product_id": "rice", "quantity": 2}, {"product_id": "beans", "quantity": 1}]});
        Cmd { kind: "reserve", key: id.clone(), id, path: "/api/reservations".into(), body }
    }

    fn step(id: &str, step: &'static str) -> Cmd {
        let body = match step {
            "ship" => {
                json!({"destination": {"kind": "parcel", "reference": format!("colis-{id}"), "household": "hh-1"}})
            }
            _ => json!({}),
        };
        Cmd {
            kind: step,
            id: id.to_owned(),
            path: format!("/api/reservations/{id}/{step}"),
            key: format!("{step}-{id}"),
            body,
        }
    }

    /// The events its acknowledgement promises, each exactly once: (aggregate kind, id, event).
    fn promised(&self) -> Vec<(&'static str, String, &'static str)> {
        let id = &self.id;
        match self.kind {
            "donation" => vec![
                ("donation", id.clone(), "donation_recorded"),
                ("lot", format!("{id}-l1"), "lot_received"),
                ("lot", format!("{id}-l2"), "lot_received"),
            ],
            "reserve" => {
                vec![
                    ("reservation", id.clone(), "reservation_planned"),
                    ("reservation", id.clone(), "reservation_confirmed"),
                ]
            }
            "pick" => vec![("reservation", id.clone(), "reservation_picked")],
            "ship" => vec![("reservation", id.clone(), "reservation_shipped")],
            _ => vec![("reservation", id.clone(), "reservation_released")],
        }
    }
}

struct Acked {
    cmd: Cmd,
    status: StatusCode,
    answer: Value,
}

#[derive(Clone)]
struct Attempt {
    sent: Instant,
    took: Duration,
    /// Status and error code, or `None` without an HTTP answer.
    answer: Option<(StatusCode, String)>,
    timed_out: bool,
}

struct Load {
    base: String,
    token: String,
    stop: AtomicBool,
    today: chrono::NaiveDate,
    commands: Mutex<usize>,
    acked: Mutex<Vec<Acked>>,
    attempts: Mutex<Vec<Attempt>>,
    unexpected: Mutex<Vec<String>>,
}

impl Load {
    fn acked_since(&self, since: Instant) -> Option<Instant> {
        let attempts = self.attempts.lock().expect("attempts");
        attempts
            .iter()
            .filter(|a| a.sent > since && a.answer.as_ref().is_some_and(|(s, _)| s.is_success()))
            .map(|a| a.sent + a.took)
            .min()
    }

    /// Sends `cmd` until it is acknowledged; a `503` or no answer is retried after 100 ms.
    async fn deliver(&self, http: &reqwest::Client, cmd: Cmd) -> bool {
        *self.commands.lock().expect("commands") += 1;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let sent = Instant::now();
            let result = http
                .post(format!("{}{}", self.base, cmd.path))
                .bearer_auth(&self.token)
                .header("Idempotency-Key", &cmd.key)
                .json(&cmd.body)
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
                    sent,
                    took,
                    answer: Some((*status, body["code"].as_str().unwrap_or("").to_owned())),
                    timed_out: false,
                },
                Err(e) => Attempt { sent, took, answer: None, timed_out: e.is_timeout() },
            };
            self.attempts.lock().expect("attempts").push(attempt);
            match answer {
                Ok((status, body)) if status.is_success() => {
                    self.acked.lock().expect("acked").push(Acked { cmd, status, answer: body });
                    return true;
                }
                Ok((StatusCode::SERVICE_UNAVAILABLE, _)) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok((status, body)) => {
                    self.unexpected
                        .lock()
                        .expect("unexpected")
                        .push(format!("POST {} ({}): {status} {body}", cmd.path, cmd.key));
                    return false;
                }
                Err(e) => {
                    self.unexpected
                        .lock()
                        .expect("unexpected")
                        .push(format!("POST {} ({}): no answer: {e}", cmd.path, cmd.key));
                    return false;
                }
            }
        }
    }

    async fn phone(self: Arc<Self>, phone: usize) {
        let http = reqwest::Client::new();
        for i in 0.. {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let name = format!("p{phone}-{i}");
            if !self.deliver(&http, Cmd::donation(&name, self.today)).await {
                continue;
            }
            let reserve = Cmd::reserve(&name);
            let id = reserve.id.clone();
            if !self.deliver(&http, reserve).await {
                continue;
            }
            let steps: &[&'static str] = match i % 3 {
                0 => &["release"],
                1 => &["pick"],
                _ => &["pick", "ship"],
            };
            for step in steps {
                if !self.deliver(&http, Cmd::step(&id, step)).await {
                    break;
                }
            }
        }
    }
}

/// `foodaid up` as a child process on `dir`, its stderr appended to `log`.
struct Platform {
    dir: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Platform {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn command(&self) -> anyhow::Result<Command> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--data-dir").arg(&self.dir).env("FOODAID__LOG__LEVEL", "warn").env_remove("FOODAID_PROFILE");
        Ok(cmd)
    }

    /// Starts `foodaid up` and waits until it says it is up (blocking).
    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut child = self
            .command()?
            .args(["up", "--http", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting foodaid up")?;
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("foodaid is up") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(120)).context("foodaid up did not come up within 120 s")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn nats_pid(&self) -> anyhow::Result<u32> {
        let pid = std::fs::read_to_string(self.dir.join("nats.pid")).context("reading nats.pid")?;
        Ok(pid.trim().parse()?)
    }

    /// `foodaid <args>`: its stdout, and whether it succeeded.
    fn run(&self, args: &[&str]) -> anyhow::Result<(String, bool)> {
        let out = self.command()?.args(args).stderr(Stdio::null()).output()?;
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), out.status.success()))
    }

    fn digests(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let (out, _) = self.run(&["status", "--json", "--digests"])?;
        let status: Value = serde_json::from_str(&out).context("foodaid status --json --digests")?;
        let mut digests = BTreeMap::new();
        for node in status["nodes"].as_array().into_iter().flatten() {
            for p in node["projections"].as_array().into_iter().flatten() {
                let (name, digest) = (p["name"].as_str().unwrap_or(""), p["digest"].as_str().unwrap_or(""));
                digests.insert(format!("{}/{name}", node["node"].as_str().unwrap_or("")), digest.to_owned());
            }
        }
        Ok(digests)
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) only sends a signal, to the nats-server this run's foodaid started.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Whether `pid` runs: exists and is not a zombie waiting to be reaped.
fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `probe` until it gives a value, for at most `limit`.
async fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

async fn admin_call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    key: &str,
    body: Value,
) -> anyhow::Result<()> {
    let res =
        http.post(format!("{base}{path}")).bearer_auth(token).header("Idempotency-Key", key).json(&body).send().await?;
    let status = res.status();
    if !status.is_success() {
        bail!("POST {path}: {status} {}", res.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Every commit of `stream`, read straight from JetStream.
async fn commits(js: &async_nats::jetstream::Context, stream: &str) -> anyhow::Result<Vec<eventstore::StoredCommit>> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let mut handle = js.get_stream(stream).await?;
    let last = handle.info().await?.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let mut messages = handle.create_consumer(OrderedConfig::default()).await?.messages().await?;
    let empty = async_nats::HeaderMap::new();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let seq = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        out.push(eventstore::decode_commit(stream, seq, message.headers.as_ref().unwrap_or(&empty), &message.payload)?);
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

/// Waits until the reactors have nothing pending and the streams stop moving.
async fn settle(js: &async_nats::jetstream::Context) -> anyhow::Result<BTreeMap<String, u64>> {
    let heads = |js: async_nats::jetstream::Context| async move {
        let mut heads = BTreeMap::new();
        let mut busy = false;
        for name in eventstore::SERVICES.iter().chain(&["answers"]) {
            let mut stream = js.get_stream(*name).await?;
            heads.insert((*name).to_owned(), stream.info().await?.state.last_sequence);
            let mut consumers = stream.consumers();
            while let Some(c) = consumers.next().await {
                let c = c?;
                busy |= c.name.starts_with("react_") && (c.num_pending > 0 || c.num_ack_pending > 0);
            }
        }
        anyhow::Ok((heads, busy))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut before, _) = heads(js.clone()).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (now, busy) = heads(js.clone()).await?;
        if !busy && now == before {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("the platform did not settle within 120 s");
        }
        before = now;
    }
}

pub async fn run(seconds: f64, phones: usize, kills: usize, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(seconds >= 5.0, "--seconds must be at least 5");
    anyhow::ensure!(phones >= 1, "--phones must be at least 1");
    let tmp = tempfile::tempdir()?;
    let mut platform = Platform {
        dir: tmp.path().join("data"),
        log: tmp.path().join("foodaid.log"),
        port: natsd::free_port()?,
        child: None,
    };
    let say = |line: String| {
        if !json {
            eprintln!("{line}");
        }
    };
    say(format!("starting foodaid up on {} (log: {})", platform.dir.display(), platform.log.display()));
    let mut platform = tokio::task::spawn_blocking(move || platform.start().map(|()| platform)).await??;
    let token = |role: &str| -> anyhow::Result<String> {
        let (out, ok) = platform.run(&["token", "create", "--role", role])?;
        anyhow::ensure!(ok, "foodaid token create --role {role} failed");
        Ok(out.trim().to_owned())
    };
    let (admin, warehouse) = (token("admin")?, token("warehouse")?);
    let base = platform.base();
    let http = reqwest::Client::new();
    let site = json!({"site_id": "gerland", "name": "Gerland", "zones": [{"code": "A1", "storage": "ambient"}]});
    admin_call(&http, &base, &admin, "/api/sites", "site", site).await?;
    let donor = json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl"});
    admin_call(&http, &base, &admin, "/api/donors", "donor", donor).await?;
    for p in ["rice", "beans"] {
        let body =
            json!({"product_id": p, "name": p, "food_group": "starches", "storage": "ambient", "date_kind": "ddm"});
        admin_call(&http, &base, &admin, "/api/products", p, body).await?;
    }
    let today = values::Calendar::default().day_of(chrono::Utc::now());
    let far = today + chrono::Duration::days(300);
    let seed = json!({"donation_id": "seed", "donor_id": "lidl", "site_id": "gerland", "lines": [
        {"product_id": "rice", "quantity": SEED_UNITS, "weight_g": SEED_UNITS * 1000, "date": far},
        {"product_id": "beans", "quantity": SEED_UNITS, "weight_g": SEED_UNITS * 400, "date": far}]});
    admin_call(&http, &base, &admin, "/api/donations", "seed", seed).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lot: Value = http
            .get(format!("{base}/api/lots/seed-l2"))
            .bearer_auth(&admin)
            .send()
            .await?
            .json()
            .await
            .unwrap_or_default();
        if lot["on_hand"] == SEED_UNITS {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the first donation's lots did not appear within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let load = Arc::new(Load {
        base: base.clone(),
        token: warehouse.clone(),
        stop: AtomicBool::new(false),
        today,
        commands: Mutex::new(0),
        acked: Mutex::new(Vec::new()),
        attempts: Mutex::new(Vec::new()),
        unexpected: Mutex::new(Vec::new()),
    });
    say(format!("{phones} phones for {seconds} s, {kills} kills (nats-server and foodaid in turn)"));
    let started = Instant::now();
    let tasks: Vec<_> = (0..phones).map(|p| tokio::spawn(load.clone().phone(p))).collect();
    let mut done_kills: Vec<Kill> = Vec::new();
    // (sent after, answered before): attempts made while NATS was away.
    let mut outages: Vec<(Instant, Instant)> = Vec::new();
    for k in 0..kills {
        let at = started + Duration::from_secs_f64(seconds * (k + 1) as f64 / (kills + 1) as f64);
        tokio::time::sleep_until(at.into()).await;
        // Commands count as sent after the kill once the process is gone: the kernel ends it
        // a moment after the signal, and it may still answer until then.
        let (what, killed, dead) = if k % 2 == 0 {
            let pid = platform.nats_pid()?;
            let killed = Instant::now();
            signal(pid, libc::SIGKILL);
            let dead = eventually("the nats-server ends", Duration::from_secs(10), || {
                (!process_running(pid)).then(Instant::now)
            })
            .await?;
            ("nats-server", killed, dead)
        } else {
            let killed = Instant::now();
            platform.kill();
            let dead = Instant::now();
            platform = tokio::task::spawn_blocking(move || platform.start().map(|()| platform)).await??;
            ("foodaid", killed, dead)
        };
        let back =
            eventually(&format!("commands acknowledged after the {what} kill"), Duration::from_secs(120), || {
                load.acked_since(dead)
            })
            .await?;
        if what == "nats-server" {
            outages.push((killed, back));
        }
        let kill = Kill { what, at_s: (killed - started).as_secs_f64(), recovery_s: (back - killed).as_secs_f64() };
        say(format!("killed {what} at {:.1} s: commands acknowledged again {:.2} s later", kill.at_s, kill.recovery_s));
        done_kills.push(kill);
    }
    tokio::time::sleep_until((started + Duration::from_secs_f64(seconds)).into()).await;
    load.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(600), task).await.context("phones did not finish")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    say(format!("load stopped after {elapsed:.1} s; checking"));

    let url = std::fs::read_to_string(platform.dir.join("nats.url")).context("reading nats.url")?;
    let js = async_nats::jetstream::new(async_nats::connect(url.trim()).await?);
    let heads = settle(&js).await?;

    let attempts = load.attempts.lock().expect("attempts").clone();
    let acked = std::mem::take(&mut *load.acked.lock().expect("acked"));
    let unexpected = load.unexpected.lock().expect("unexpected").clone();

    // What the streams hold.
    let mut events: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut lot_steps: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for stream in ["donations", "stock"] {
        for stored in commits(&js, stream).await? {
            let commit = stored.commit;
            for e in &commit.events {
                events
                    .entry((commit.aggregate_kind.clone(), commit.aggregate_id.clone()))
                    .or_default()
                    .push(e.event_type.clone());
                if commit.aggregate_kind == "lot" && e.event_type != "lot_received" {
                    let data: Value = serde_json::from_str(e.data.get())?;
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
    let (mut lost, mut duplicated) = (0, 0);
    let twice_on_lots: BTreeSet<&str> =
        lot_steps.iter().filter(|(_, n)| **n > 1).map(|((_, reservation, _), _)| reservation.as_str()).collect();
    for a in &acked {
        let counts: Vec<usize> = a.cmd.promised().iter().map(|(kind, id, event)| count(kind, id, event)).collect();
        if counts.contains(&0) || (a.cmd.kind == "reserve" && count("reservation", &a.cmd.id, "reservation_failed") > 0)
        {
            lost += 1;
        }
        if counts.iter().any(|n| *n > 1) || (a.cmd.kind != "donation" && twice_on_lots.contains(a.cmd.id.as_str())) {
            duplicated += 1;
        }
    }
    let acked_ids: BTreeSet<(&str, &str)> = acked
        .iter()
        .filter(|a| matches!(a.cmd.kind, "donation" | "reserve"))
        .map(|a| (if a.cmd.kind == "reserve" { "reservation" } else { "donation" }, a.cmd.id.as_str()))
        .collect();
    let unacknowledged_commits = events
        .keys()
        .filter(|(kind, id)| matches!(kind.as_str(), "donation" | "reservation") && id != "seed")
        .filter(|(kind, id)| !acked_ids.contains(&(kind.as_str(), id.as_str())))
        .count();

    // Every acknowledged command once more, with its key: the first answer, nothing written.
    let mut retries_not_first_answer = 0;
    for a in &acked {
        let res = http
            .post(format!("{base}{}", a.cmd.path))
            .bearer_auth(&warehouse)
            .header("Idempotency-Key", &a.cmd.key)
            .json(&a.cmd.body)
            .send()
            .await?;
        let status = res.status();
        let again: Value = res.json().await.unwrap_or_default();
        let mut first = a.answer.clone();
        first["duplicate"] = json!(true);
        if (status, &again) != (a.status, &first) {
            retries_not_first_answer += 1;
        }
    }
    if settle(&js).await? != heads {
        retries_not_first_answer += 1;
        say("retries wrote to the streams".into());
    }

    let (audit_out, _) = platform.run(&["stock", "audit", "--json"])?;
    let audit: Value = serde_json::from_str(&audit_out).context("foodaid stock audit --json")?;
    let donations = acked.iter().filter(|a| a.cmd.kind == "donation").count() as u64;
    let incremental = platform.digests()?;
    let (_, replayed) = platform.run(&["replay", "all"])?;
    anyhow::ensure!(replayed, "foodaid replay all failed");
    let rebuilt = platform.digests()?;
    drop(js);

    let mut outage_503: Vec<Duration> = Vec::new();
    let mut in_flight = Duration::ZERO;
    for (killed, back) in &outages {
        let during: Vec<&Attempt> = attempts.iter().filter(|a| a.sent >= *killed && a.sent + a.took <= *back).collect();
        let noticed = during
            .iter()
            .filter(|a| a.answer.as_ref().is_some_and(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE))
            .map(|a| a.sent + a.took)
            .min();
        for a in &during {
            match noticed {
                Some(noticed) if a.sent >= noticed => {
                    if a.answer.as_ref().is_some_and(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE) {
                        outage_503.push(a.took);
                    }
                }
                _ => in_flight = in_flight.max(a.took),
            }
        }
    }
    outage_503.sort();
    let figures = Figures {
        seconds: elapsed,
        phones,
        commands: *load.commands.lock().expect("commands"),
        attempts: attempts.len(),
        acknowledged: acked.len(),
        lost,
        duplicated,
        unacknowledged_commits,
        acknowledged_by_a_retry: acked.iter().filter(|a| a.answer["duplicate"] == true).count(),
        retries_not_first_answer,
        unexpected_answers: unexpected,
        hung_attempts: attempts.iter().filter(|a| a.timed_out).count(),
        no_answer: attempts.iter().filter(|a| a.answer.is_none()).count(),
        kills: done_kills,
        outage_503: outage_503.len(),
        outage_503_p50_ms: percentile(&outage_503, 50.0),
        outage_503_p99_ms: percentile(&outage_503, 99.0),
        outage_503_max_ms: outage_503.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        outage_503_slow: outage_503.iter().filter(|d| **d >= FAST).count(),
        in_flight_at_kill_max_ms: in_flight.as_secs_f64() * 1000.0,
        audit_passed: audit["problems"].as_array().is_some_and(Vec::is_empty),
        audit_problems: audit["problems"].as_array().into_iter().flatten().map(|p| p.to_string()).collect(),
        open_reservations: audit["open_reservations"].as_u64().unwrap_or(u64::MAX),
        audit_received_matches: audit["received"].as_u64() == Some(2 * SEED_UNITS + 8 * donations),
        projections: incremental.len(),
        digests_equal: !incremental.is_empty() && incremental == rebuilt,
    };
    platform.kill();

    if json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        let f = &figures;
        println!("phones              {:>8}  for {:.1} s", f.phones, f.seconds);
        println!("commands            {:>8}  ({} attempts)", f.commands, f.attempts);
        println!(
            "acknowledged        {:>8}  ({} first by a retry of an earlier commit)",
            f.acknowledged, f.acknowledged_by_a_retry
        );
        println!("lost                {:>8}", f.lost);
        println!("duplicated          {:>8}", f.duplicated);
        println!("unacknowledged      {:>8}  (commits nobody was told of)", f.unacknowledged_commits);
        println!("retry ≠ first answer{:>8}", f.retries_not_first_answer);
        println!("unexpected answers  {:>8}", f.unexpected_answers.len());
        println!("hung attempts       {:>8}  (no answer within {} s)", f.hung_attempts, ATTEMPT_TIMEOUT.as_secs());
        println!("refused connections {:>8}  (foodaid down)", f.no_answer);
        for k in &f.kills {
            println!("kill {:<12} at {:>6.1} s: recovered in {:.2} s", k.what, k.at_s, k.recovery_s);
        }
        println!(
            "503 during outages  {:>8}  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} over 2 s)",
            f.outage_503, f.outage_503_p50_ms, f.outage_503_p99_ms, f.outage_503_max_ms, f.outage_503_slow
        );
        println!("in flight at a kill: longest wait {:.0} ms", f.in_flight_at_kill_max_ms);
        println!(
            "stock audit         {:>8}  ({} open reservations, received {})",
            if f.audit_passed { "passed" } else { "FAILED" },
            f.open_reservations,
            if f.audit_received_matches { "as acknowledged" } else { "DIFFERS" }
        );
        println!(
            "projections         {:>8}  {}",
            f.projections,
            if f.digests_equal { "equal a fresh replay" } else { "DIFFER from a replay" }
        );
    }
    let kept = figures.lost == 0
        && figures.duplicated == 0
        && figures.unacknowledged_commits == 0
        && figures.retries_not_first_answer == 0
        && figures.unexpected_answers.is_empty()
        && figures.hung_attempts == 0
        && figures.outage_503_slow == 0
        && figures.audit_passed
        && figures.open_reservations == 0
        && figures.audit_received_matches
        && figures.digests_equal;
    if !kept {
        for line in std::fs::read_to_string(&platform.log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            eprintln!("  log: {line}");
        }
        for problem in figures.unexpected_answers.iter().chain(&figures.audit_problems).take(20) {
            eprintln!("  {problem}");
        }
        bail!("a promise was broken under faults (see the figures)");
    }
    Ok(())
}
