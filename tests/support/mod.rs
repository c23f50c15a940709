//! The harness the top-level tests share: `foodaid` as a child process, and an HTTP client.

#![allow(dead_code)] // each test target uses its own part

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_foodaid");

/// A `foodaid` child process, killed on drop.
pub struct Foodaid {
    pub child: Child,
    pub http: String,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

pub fn command(data_dir: &Path, nats_url: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(data_dir).env("FOODAID__LOG__LEVEL", "warn").env("FOODAID__HTTP__TOKEN_CACHE_SECS", "0");
    // The workspace's config/ is not the test's working directory: keep the profile out.
    cmd.env_remove("FOODAID_PROFILE");
    if let Some(url) = nats_url {
        cmd.env("FOODAID__NATS__URL", url);
    }
    cmd
}

impl Foodaid {
    pub fn up(data_dir: &Path, nats_url: Option<&str>, extra: &[&str]) -> Foodaid {
        Foodaid::up_with(data_dir, nats_url, extra, &[])
    }

    /// `foodaid up` with more environment variables (`FOODAID__...` settings).
    pub fn up_with(data_dir: &Path, nats_url: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Foodaid {
        let port = natsd::free_port().unwrap();
        let mut cmd = command(data_dir, nats_url);
        cmd.arg("up").args(["--http", &format!("127.0.0.1:{port}")]).args(extra);
        cmd.envs(env.iter().copied());
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("foodaid starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut foodaid = Foodaid { child, http: format!("http://127.0.0.1:{port}"), stdout };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !foodaid.printed("foodaid is up") {
            assert!(Instant::now() < deadline, "foodaid did not come up: {:?}", foodaid.stdout.lock().unwrap());
            if let Some(status) = foodaid.child.try_wait().unwrap() {
                panic!("foodaid exited ({status}) before it came up: {:?}", foodaid.stdout.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        foodaid
    }

    pub fn printed(&self, needle: &str) -> bool {
        self.stdout.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn line_starting(&self, prefix: &str) -> Option<String> {
        self.stdout.lock().unwrap().iter().find(|l| l.starts_with(prefix)).cloned()
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "foodaid did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status and how long the process took to end (at most 60 s).
    pub fn terminate_timed(mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        signal(self.child.id(), libc::SIGTERM);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "foodaid did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Foodaid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` to a process of this test (foodaid, or its nats-server).
pub fn signal(pid: u32, signal: libc::c_int) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) only sends a signal; the pids are processes this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// The embedded nats-server of the `foodaid up` running on `data_dir`: its pid (`nats.pid`,
/// rewritten at each restart) and URL (`nats.url`).
pub fn embedded_nats(data_dir: &Path) -> Option<(u32, String)> {
    let pid = std::fs::read_to_string(data_dir.join("nats.pid")).ok()?.trim().parse().ok()?;
    let url = std::fs::read_to_string(data_dir.join("nats.url")).ok()?.trim().to_owned();
    Some((pid, url))
}

/// Whether `pid` is still a process of this machine (a zombie counts: it is not reaped yet).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` runs: exists and is not a zombie (an orphan's zombie may wait for a reaper
/// that a container does not have).
pub fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Runs `foodaid args` in `cwd` as a user would in another directory: no `--data-dir`, no
/// NATS URL, no settings from the test's environment but `env`.
pub fn run_in(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).env_remove("FOODAID_PROFILE");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FOODAID__")) {
        cmd.env_remove(key);
    }
    cmd.env("FOODAID__LOG__LEVEL", "warn").envs(env.iter().copied()).args(args).output().expect("foodaid runs")
}

/// Runs a foodaid administration command to completion; returns stdout.
pub fn run(data_dir: &Path, nats_url: Option<&str>, args: &[&str]) -> String {
    let out = command(data_dir, nats_url).args(args).output().expect("foodaid runs");
    assert!(out.status.success(), "foodaid {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn token(data_dir: &Path, nats_url: Option<&str>, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    run(data_dir, nats_url, &all).trim().to_owned()
}

pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api { base: base.to_owned(), token: token.to_owned(), http: reqwest::Client::new() }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Result<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(20));
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await?;
        let status = res.status();
        let value = res.json().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None, None).await.unwrap()
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(key), Some(body)).await.unwrap()
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(key), Some(body)).await.unwrap()
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, Some(key), None).await.unwrap()
    }

    /// A GET answered with a document: status, content type, text.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let content_type =
            res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        (status, content_type, res.text().await.unwrap())
    }
}

/// Polls `path` until `done` holds for its answer: reactors and projections are asynchronous,
/// and some steps have no sequence to wait on.
pub async fn wait_for(api: &Api, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, value) = api.get(path).await;
        if status == StatusCode::OK && done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {status} {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `min_seq=<stream>:<seq>` from a command's answer: read your own write.
pub fn min_seq(reply: &Value) -> String {
    format!("{}:{}", reply["stream"].as_str().unwrap(), reply["seq"])
}

/// A date `days` from today: what a volunteer receives today carries dates ahead of it.
pub fn in_days(days: i64) -> String {
    in_days_at(&values::Calendar::default(), days)
}

/// A date `days` from today in `calendar` (the platform's time zone).
pub fn in_days_at(calendar: &values::Calendar, days: i64) -> String {
    (calendar.day_of(chrono::Utc::now()) + chrono::Duration::days(days)).to_string()
}

/// A time zone where it is mid-morning now (09:00 to 09:59 when asked), for tests that plan and drive
/// today's routes within working hours whatever the hour the suite runs at, and the calendar
/// of it. Set it with `FOODAID__TIME_ZONE`.
pub fn morning_zone() -> (String, values::Calendar) {
    use chrono::Timelike;
    let hour = i64::from(chrono::Utc::now().hour());
    // Etc/GMT-N is N hours ahead of UTC (POSIX signs); offsets run from -12 to +14.
    let ahead = (9 - hour).rem_euclid(24);
    let ahead = if ahead > 14 { ahead - 24 } else { ahead };
    let name = match ahead {
        0 => "Etc/UTC".to_owned(),
        n if n > 0 => format!("Etc/GMT-{n}"),
        n => format!("Etc/GMT+{}", -n),
    };
    let calendar = name.parse().expect("an Etc/GMT zone");
    (name, calendar)
}

/// Registers household `id` of `asso-a` at `rp-a`, consenting, and assesses it eligible.
pub async fn eligible_household(a: &Api, id: &str, composition: Value, diet: Value) {
    let body = json!({"household_id": id, "association_id": "asso-a", "relay_point_id": "rp-a",
        "composition": composition, "diet": diet, "consent": true,
        "personal": {"first_name": id, "last_name": "Famille", "birth_date": "1980-05-05"}});
    assert_eq!(a.post("/api/households", id, body).await.0, StatusCode::CREATED);
    let assess = json!({"resources_cents": 90000, "charges_cents": 70000});
    assert_eq!(
        a.post(&format!("/api/households/{id}/assessments"), &format!("as-{id}"), assess).await.0,
        StatusCode::OK
    );
}

/// The last sequence of every stream on the server: events, answers, tokens, vault.
pub async fn stream_heads(js: &async_nats::jetstream::Context) -> BTreeMap<String, u64> {
    let mut heads = BTreeMap::new();
    let mut names = js.stream_names();
    while let Some(name) = names.next().await {
        let name = name.unwrap();
        let info = js.get_stream(&name).await.unwrap().info().await.unwrap().state.last_sequence;
        heads.insert(name, info);
    }
    heads
}

/// Waits until every saga has handled what it was given and the streams stop moving, so that
/// what a retry writes (nothing, it should be) is not mistaken for a saga's work.
pub async fn settled(js: &async_nats::jetstream::Context) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before = stream_heads(js).await;
    loop {
        let mut busy = Vec::new();
        for name in before.keys() {
            let stream = js.get_stream(name).await.unwrap();
            let mut consumers = stream.consumers();
            while let Some(c) = consumers.next().await {
                let c = c.unwrap();
                if c.name.starts_with("react_") && (c.num_pending > 0 || c.num_ack_pending > 0) {
                    busy.push(c.name);
                }
            }
        }
        let now = stream_heads(js).await;
        if busy.is_empty() && now == before {
            return now;
        }
        assert!(Instant::now() < deadline, "the platform never settled: {busy:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        before = now;
    }
}
