//! `foodaid bench health`: concurrent callers on `/health`, against a platform this program
//! starts (`foodaid up --demo` as a child process, on a fresh data directory) or against a URL.
//!
//! Each caller sends its next request as soon as the previous one is answered; every latency is
//! kept, and the percentiles are computed over the whole run. An answer that is not `200` with
//! at least one node listed counts as a failure: a fast `/health` that no longer knows its nodes
//! is not a result.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

#[derive(Serialize)]
struct Figures {
    callers: usize,
    seconds: f64,
    calls: usize,
    calls_per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    failures: usize,
    /// Nodes the last answer listed.
    nodes: usize,
}

/// The platform under test, stopped (SIGKILL, then its data directory removed) on drop.
struct Platform {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `foodaid up --demo` on a fresh data directory and a free port; returns its URL.
fn start_platform() -> anyhow::Result<(Platform, String)> {
    let dir = tempfile::tempdir()?;
    let port = natsd::free_port()?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["up", "--demo", "--http", &format!("127.0.0.1:{port}")])
        .env("FOODAID__LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting foodaid up")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let platform = Platform { child, _dir: dir };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("foodaid is up") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120)).context("foodaid up did not come up within 120 s")?;
    Ok((platform, format!("http://127.0.0.1:{port}")))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// One call: its latency, and whether it was a `200` listing at least one node (with how many).
async fn call(http: &reqwest::Client, url: &str) -> (Duration, Option<usize>) {
    let started = Instant::now();
    let answer = match http.get(url).send().await {
        Ok(res) if res.status() == reqwest::StatusCode::OK => res.json::<serde_json::Value>().await.ok(),
        _ => None,
    };
    let nodes = answer.and_then(|v| v["nodes"].as_array().map(Vec::len)).filter(|n| *n > 0);
    (started.elapsed(), nodes)
}

pub async fn run(url: Option<String>, callers: usize, seconds: f64, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(callers >= 1, "--callers must be at least 1");
    anyhow::ensure!(seconds > 0.0, "--seconds must be positive");
    let (_platform, base) = match url {
        Some(url) => (None, url.trim_end_matches('/').to_owned()),
        None => {
            if !json {
                eprintln!("starting foodaid up --demo on a fresh data directory");
            }
            let (platform, url) = start_platform()?;
            (Some(platform), url)
        }
    };
    let target = format!("{base}/health");
    let http = reqwest::Client::builder().pool_max_idle_per_host(callers).timeout(Duration::from_secs(30)).build()?;
    // Warm-up: every caller's connection is open, and the gateway has seen its nodes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let warm = futures::future::join_all((0..callers).map(|_| call(&http, &target))).await;
        if warm.iter().all(|(_, nodes)| nodes.is_some()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("{target} did not answer 200 with its nodes within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    if !json {
        eprintln!("{callers} callers on {target} for {seconds} s");
    }
    let run_for = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (http, target) = (http.clone(), target.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut failures, mut last_nodes) = (0, 0);
                while started.elapsed() < run_for {
                    let (latency, nodes) = call(&http, &target).await;
                    latencies.push(latency);
                    match nodes {
                        Some(n) => last_nodes = n,
                        None => failures += 1,
                    }
                }
                (latencies, failures, last_nodes)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut failures, mut nodes) = (0, 0);
    for task in tasks {
        let (l, f, n) = task.await?;
        latencies.extend(l);
        failures += f;
        nodes = nodes.max(n);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let figures = Figures {
        callers,
        seconds: elapsed,
        calls: latencies.len(),
        calls_per_s: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p90_ms: percentile(&latencies, 90.0),
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
        failures,
        nodes,
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!("calls        {:>10}  in {:.1} s, {} callers", figures.calls, figures.seconds, figures.callers);
        println!("calls/s      {:>10.0}", figures.calls_per_s);
        println!("p50          {:>10.2} ms", figures.p50_ms);
        println!("p90          {:>10.2} ms", figures.p90_ms);
        println!("p99          {:>10.2} ms", figures.p99_ms);
        println!("max          {:>10.2} ms", figures.max_ms);
        println!("failures     {:>10}  (not 200, or no node listed)", figures.failures);
        println!("nodes        {:>10}", figures.nodes);
    }
    Ok(())
}
