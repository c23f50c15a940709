//! Operating the platform with real processes: administrative commands reach the running
//! platform and never start one of their own, and the embedded nats-server is supervised —
//! restarted on its port and store when it dies, calls failing fast while it is down, shutdown
//! bounded whatever state it is in.

mod support;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::TestNats;

use support::{embedded_nats, in_days, min_seq, process_exists, process_running, run, run_in, signal, Api, Foodaid};

/// Where the shutdown of `foodaid up` must end after SIGTERM (ARCHITECTURE.md, Shutdown).
const SHUTDOWN_BOUND: Duration = Duration::from_secs(30);

/// A stand-in for `nats-server` (`nats.server_binary`) that records each launch and refuses to
/// start while its `hold` file exists: a server that stays down, as with a full disk.
struct Wrapper {
    script: PathBuf,
    launches: PathBuf,
    hold: PathBuf,
}

impl Wrapper {
    fn new(dir: &Path) -> Wrapper {
        let (script, launches, hold) = (dir.join("nats-server-wrapper"), dir.join("launches"), dir.join("hold"));
        let text = format!(
            "#!/bin/sh\necho $$ >> '{}'\nif [ -e '{}' ]; then echo 'held down by the test' >&2; exit 1; fi\nexec nats-server \"$@\"\n",
            launches.display(),
            hold.display()
        );
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Wrapper { script, launches, hold }
    }

    fn env(&self) -> [(&'static str, &str); 1] {
        [("FOODAID__NATS__SERVER_BINARY", self.script.to_str().unwrap())]
    }

    /// How many times a nats-server was asked to start.
    fn launches(&self) -> usize {
        std::fs::read_to_string(&self.launches).map(|t| t.lines().count()).unwrap_or(0)
    }

    fn hold(&self, down: bool) {
        if down {
            std::fs::write(&self.hold, "").unwrap();
        } else {
            std::fs::remove_file(&self.hold).unwrap();
        }
    }
}

/// Polls `probe` until it gives a value, for at most `limit` (fit for a busy machine).
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/health`, or `None` if it does not answer within 2 s: a probe sent in the instant before
/// the client notices the server is gone waits for NATS timeouts, the next one does not.
async fn health(foodaid: &Foodaid) -> Option<(StatusCode, Value)> {
    let res = reqwest::Client::new()
        .get(format!("{}/health", foodaid.http))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status = res.status();
    Some((status, res.json().await.ok()?))
}

fn donor(id: &str) -> Value {
    json!({"donor_id": id, "kind": "retailer", "name": format!("Magasin {id}"), "address": "Lyon"})
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The last sequence of the `donations` stream, as `foodaid status` reads it from JetStream.
fn donations_last_seq(data: &Path) -> u64 {
    let status: Value = serde_json::from_str(&run(data, None, &["status", "--json"])).unwrap();
    let streams = status["streams"].as_array().unwrap();
    streams.iter().find(|s| s["name"] == "donations").unwrap()["last_seq"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_reach_the_running_platform_or_fail_saying_where_they_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let elsewhere = elsewhere.canonicalize().unwrap();
    let data = tmp.path().canonicalize().unwrap().join("platform");
    let wrapper = Wrapper::new(tmp.path());
    let env = wrapper.env();

    // Nothing runs: every command fails at once with the same shape, says where it looked,
    // prints no token, and starts no nats-server (no ./data appears, the wrapper never runs).
    let looked = elsewhere.join("data").join("nats.url").display().to_string();
    let commands: [&[&str]; 6] = [
        &["token", "create", "--role", "admin"],
        &["token", "list"],
        &["token", "revoke", "0123456789ab"],
        &["replay", "all"],
        &["status"],
        &["stock", "audit"],
    ];
    for args in commands {
        let out = run_in(&elsewhere, &env, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: platform_unreachable: "), "{args:?}: {stderr}");
        assert!(stderr.contains(&looked), "{args:?} names where it looked: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", text(&out.stdout));
    }
    assert!(!elsewhere.join("data").exists(), "no data dir was created");
    assert_eq!(wrapper.launches(), 0, "no nats-server was started");

    // The running platform, reached from another directory with its --data-dir.
    let foodaid = Foodaid::up_with(&data, None, &[], &env);
    assert_eq!(wrapper.launches(), 1);
    let dd = data.to_str().unwrap();
    let out = run_in(&elsewhere, &env, &["--data-dir", dd, "token", "create", "--role", "admin", "--name", "ops"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let admin = Api::new(&foodaid.http, text(&out.stdout).trim());
    let (status, me) = admin.get("/api/me").await;
    assert_eq!((status, me["role"].as_str()), (StatusCode::OK, Some("admin")), "the gateway accepts the token");

    let mut last = Value::Null;
    for i in 0..30 {
        let (status, reply) = admin.post("/api/donors", &format!("d{i}"), donor(&format!("d{i}"))).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        last = reply;
    }
    // A replay is asked of the running node, every time, and never rebuilt here on a store the
    // node holds.
    for round in 0..6 {
        let out = run_in(&elsewhere, &env, &["--data-dir", dd, "replay", "all"]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "round {round}: {stderr}");
        assert!(stderr.contains("on running node(s) local"), "round {round}: {stderr}");
        assert!(!stderr.contains("locally") && !stderr.contains("lock"), "round {round}: {stderr}");
    }
    let (status, donors) = admin.get(&format!("/api/donors?min_seq={}", min_seq(&last))).await;
    assert_eq!((status, donors.as_array().map(Vec::len)), (StatusCode::OK, Some(30)));

    // Tokens are listed and revoked on the running platform too.
    let out = run_in(&elsewhere, &env, &["--data-dir", dd, "token", "create", "--role", "warehouse"]);
    let warehouse = Api::new(&foodaid.http, text(&out.stdout).trim());
    let id = warehouse.token.split('_').nth(1).unwrap().to_owned();
    let out = run_in(&elsewhere, &env, &["--data-dir", dd, "token", "list"]);
    assert!(out.status.success() && text(&out.stdout).contains(&id), "{}", text(&out.stderr));
    let out = run_in(&elsewhere, &env, &["--data-dir", dd, "token", "revoke", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(warehouse.get("/api/me").await.0, StatusCode::UNAUTHORIZED);
    let out = run_in(&elsewhere, &env, &["--data-dir", dd, "status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["nodes"][0]["source"], "running", "{status}");
    // A second platform on the same data dir is refused before it starts anything.
    let mut second = support::command(&data, None)
        .envs(env)
        .args(["up", "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let refused = eventually("the second foodaid up ends", Duration::from_secs(30), || {
        let ended = second.try_wait().unwrap();
        async move { ended }
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!refused.success() && stderr.contains("foodaid already runs with data dir"), "{stderr}");
    assert_eq!(wrapper.launches(), 1, "the commands used the platform's own server");

    // A platform killed with kill -9 leaves nats.url behind: it names no platform.
    let (nats_pid, _) = embedded_nats(&data).unwrap();
    foodaid.kill9();
    eventually("the killed platform's nats-server ends with it", Duration::from_secs(20), || async {
        (!process_running(nats_pid)).then_some(())
    })
    .await;
    assert!(data.join("nats.url").exists());
    let out = run_in(&elsewhere, &env, &["--data-dir", dd, "token", "create", "--role", "admin"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with("error: platform_unreachable: no foodaid up runs with data dir"), "{stderr}");
    assert!(stderr.contains(dd) && out.stdout.is_empty(), "{stderr}");
    assert_eq!(wrapper.launches(), 1, "still no server of its own");

    // A NATS that answers with no node on it: nobody to ask for a replay; `status` reads the
    // projection store itself, since nothing holds it now.
    let nats = TestNats::start().await;
    let nats_url = nats.url();
    let with_url = [env[0], ("FOODAID__NATS__URL", nats_url.as_str())];
    let out = run_in(&elsewhere, &with_url, &["--data-dir", dd, "replay", "all"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with("error: no_running_node: ") && stderr.contains("foodaid.ctl.status"), "{stderr}");
    let out = run_in(&elsewhere, &with_url, &["--data-dir", dd, "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["nodes"][0]["source"], "offline", "{status}");
    // A NATS URL that nothing answers: named in the error.
    let nowhere = format!("nats://127.0.0.1:{}", natsd::free_port().unwrap());
    let out = run_in(&elsewhere, &[("FOODAID__NATS__URL", &nowhere)], &["token", "list"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with(&format!("error: platform_unreachable: cannot reach NATS at {nowhere}")), "{stderr}");
    assert!(!elsewhere.join("data").exists(), "still no data dir here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nats_server_is_restarted_on_its_port_and_store_and_calls_fail_fast_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("platform");
    let wrapper = Wrapper::new(tmp.path());
    // Tokens stay checked for the whole test, so that calls during the outage reach the service
    // client (with no cache, the token check answers first, as the next test shows).
    let env = [wrapper.env()[0], ("FOODAID__HTTP__TOKEN_CACHE_SECS", "3600")];
    let foodaid = Foodaid::up_with(&data, None, &[], &env);
    let admin = Api::new(&foodaid.http, &support::token(&data, None, &["--role", "admin"]));
    let site = json!({"site_id": "gerland", "name": "Gerland", "zones": [{"code": "A1", "storage": "ambient"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    let pasta = json!({"product_id": "pasta", "name": "Pâtes 500 g", "food_group": "starches",
        "storage": "ambient", "date_kind": "ddm"});
    assert_eq!(admin.post("/api/products", "pasta", pasta).await.0, StatusCode::CREATED);
    assert_eq!(admin.post("/api/donors", "before", donor("before")).await.0, StatusCode::CREATED);
    let recorded = donations_last_seq(&data);

    // Killed: restarted on its own, on the same port, and the old process is reaped.
    let (first, url) = embedded_nats(&data).unwrap();
    signal(first, libc::SIGKILL);
    let (second, again) = eventually("a new nats-server", Duration::from_secs(30), || async {
        embedded_nats(&data).filter(|(pid, _)| *pid != first)
    })
    .await;
    assert_eq!(again, url, "restarted on the same port");
    eventually("the killed server is reaped, not left a zombie", Duration::from_secs(10), || async {
        (!process_exists(first)).then_some(())
    })
    .await;
    eventually("calls work again", Duration::from_secs(30), || async {
        (admin.get("/api/donors/before").await.0 == StatusCode::OK).then_some(())
    })
    .await;

    // Held down: every call answers 503 service_unavailable at once, far under the 10 s
    // request timeout, while the supervisor keeps trying.
    wrapper.hold(true);
    let launches = wrapper.launches();
    signal(second, libc::SIGKILL);
    eventually("health reports NATS down", Duration::from_secs(20), || async {
        let (status, health) = health(&foodaid).await?;
        (status == StatusCode::SERVICE_UNAVAILABLE && health["nats_connected"] == false).then_some(())
    })
    .await;
    for round in 0..3 {
        for (method, path, body) in [
            (reqwest::Method::GET, "/api/donors", None),
            (reqwest::Method::POST, "/api/donors", Some(donor(&format!("outage-{round}")))),
            (reqwest::Method::GET, "/api/lots", None),
        ] {
            let started = Instant::now();
            let key = format!("outage-{round}");
            let (status, err) = admin.send(method.clone(), path, Some(&key), body).await.unwrap();
            let took = started.elapsed();
            assert_eq!(
                (status, err["code"].as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, Some("service_unavailable")),
                "{method} {path}: {err}"
            );
            assert!(took < Duration::from_secs(3), "{method} {path} took {took:?}");
            assert!(err["message"].as_str().unwrap().contains("NATS is not connected"), "{err}");
        }
    }
    eventually("the supervisor keeps trying", Duration::from_secs(30), || async {
        (wrapper.launches() >= launches + 2).then_some(())
    })
    .await;

    // Let it start: same port, same store, and everything resumes by itself.
    wrapper.hold(false);
    let (third, again) = eventually("the server back", Duration::from_secs(60), || async {
        embedded_nats(&data).filter(|(pid, _)| *pid != second && process_exists(*pid))
    })
    .await;
    assert_eq!(again, url, "restarted on the same port");
    eventually("calls work again", Duration::from_secs(60), || async {
        (admin.get("/api/donors").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(donations_last_seq(&data), recorded, "the stream kept what was written, and nothing from the outage");
    let (status, reply) = admin.post("/api/donors", "after", donor("after")).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    // The projections resumed: the new commit is read back.
    let (status, row) = admin.get(&format!("/api/donors/after?min_seq={}", min_seq(&reply))).await;
    assert_eq!((status, row["donor_id"].as_str()), (StatusCode::OK, Some("after")), "{row}");
    let (_, rows) = admin.get("/api/donors").await;
    let ids: Vec<&str> = rows.as_array().unwrap().iter().filter_map(|r| r["donor_id"].as_str()).collect();
    assert_eq!(ids.len(), 2, "before and after, nothing from the outage: {ids:?}");
    // The reactors resumed: an accepted donation line becomes a lot.
    let donation = json!({"donation_id": "don-after", "donor_id": "after", "site_id": "gerland",
        "lines": [{"product_id": "pasta", "quantity": 4, "weight_g": 2000, "date": in_days(120)}]});
    let (status, reply) = admin.post("/api/donations", "don-after", donation).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    eventually("the donation's lot", Duration::from_secs(60), || async {
        let (status, lot) = admin.get("/api/lots/don-after-l1").await;
        (status == StatusCode::OK && lot["on_hand"] == 4).then_some(())
    })
    .await;

    let (status, took) = foodaid.terminate_timed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(took < SHUTDOWN_BOUND, "SIGTERM took {took:?}");
    assert!(!process_running(third), "the embedded server stopped with foodaid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_nats_server_stays_down_exits_within_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("platform");
    let wrapper = Wrapper::new(tmp.path());
    let foodaid = Foodaid::up_with(&data, None, &[], &wrapper.env());
    let admin = Api::new(&foodaid.http, &support::token(&data, None, &["--role", "admin"]));
    assert_eq!(admin.post("/api/donors", "d1", donor("d1")).await.0, StatusCode::CREATED);

    wrapper.hold(true);
    let (pid, url) = embedded_nats(&data).unwrap();
    signal(pid, libc::SIGKILL);
    eventually("health reports NATS down", Duration::from_secs(20), || async {
        let (status, health) = health(&foodaid).await?;
        (status == StatusCode::SERVICE_UNAVAILABLE && health["nats_connected"] == false).then_some(())
    })
    .await;
    // With no token cache, the token check is what answers, as fast.
    let started = Instant::now();
    let (status, err) = admin.get("/api/donors").await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("service_unavailable")));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    let (status, took) = foodaid.terminate_timed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(took < SHUTDOWN_BOUND, "SIGTERM took {took:?}");
    assert!(!data.join("nats.url").exists() && !data.join("nats.pid").exists(), "its files are removed");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "no server was left behind");
}
