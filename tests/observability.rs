//! What operators watch, through the `foodaid` binary: `/health` from the nodes' announcements
//! (it keeps answering, with its nodes, while projections are rebuilt; it forgets a node that
//! stops), and `/metrics` in the Prometheus text format. A real nats-server, child processes.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::TestNats;

use support::{command, in_days, run, token, wait_for, Api, Foodaid};

/// `foodaid serve <services>` as node `name` (no gateway), once it says it is up.
fn serve_node(data_dir: &Path, nats_url: &str, name: &str, services: &[&str]) -> Foodaid {
    let mut child = command(data_dir, Some(nats_url))
        .env("FOODAID__NODE__NAME", name)
        .arg("serve")
        .args(services)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("foodaid serve starts");
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let lines = stdout.clone();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let node = Foodaid { child, http: String::new(), stdout };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.printed("foodaid is up") {
        assert!(Instant::now() < deadline, "node {name} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

fn node_names(health: &Value) -> Vec<&str> {
    health["nodes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect()
}

/// Every projection's digest, asked of the running node (`foodaid status --digests`).
fn digests(data_dir: &Path, nats_url: &str) -> BTreeMap<String, String> {
    let status: Value =
        serde_json::from_str(&run(data_dir, Some(nats_url), &["status", "--json", "--digests"])).unwrap();
    status["nodes"][0]["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["digest"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_with_its_node_while_projections_are_rebuilt() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = token(dir.path(), Some(&url), &["--role", "admin"]);
    let api = Api::new(&foodaid.http, &admin);

    // Enough history that a rebuild takes a while: 1,500 donors, from 8 clients at once.
    let senders: Vec<_> = (0..8)
        .map(|client| {
            let api = Api::new(&foodaid.http, &admin);
            tokio::spawn(async move {
                for i in 0..188 {
                    let id = format!("d-{client}-{i}");
                    let body = json!({"donor_id": id, "kind": "retailer", "name": format!("Donor {id}")});
                    let (status, reply) = api.post("/api/donors", &id, body).await;
                    assert_eq!(status, StatusCode::CREATED, "{reply}");
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    wait_for(&api, "/health", |h| {
        h["projections"].as_array().is_some_and(|ps| {
            !ps.is_empty()
                && ps.iter().all(|p| p["state"] == "running" && p["lag"].as_object().unwrap().values().all(|l| l == 0))
        })
    })
    .await;
    let incremental = digests(dir.path(), &url);

    for round in 0..3 {
        // An operator rebuilds everything from the command line ...
        let mut cli = command(dir.path(), Some(&url))
            .args(["replay", "all"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("foodaid replay starts");
        // ... while the coordinator's screen asks for rebuilds too and follows /health.
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut asked, mut saw_rebuilding) = (0, false);
        loop {
            let started = Instant::now();
            let (status, health) = api.get("/health").await;
            let took = started.elapsed();
            assert_eq!(status, StatusCode::OK, "{health}");
            assert_eq!(
                node_names(&health),
                ["local"],
                "round {round}: the node stays listed during a rebuild: {health}"
            );
            assert!(!health["projections"].as_array().unwrap().is_empty(), "{health}");
            // A bound against waiting on a busy node, not a speed target (see `foodaid bench health`).
            assert!(took < Duration::from_secs(3), "round {round}: /health took {took:?} during a rebuild");
            saw_rebuilding |= health["projections"].as_array().unwrap().iter().any(|p| p["state"] == "rebuilding");

            if asked < 3 {
                let projection = if asked % 2 == 0 { "all" } else { "donors" };
                let (status, started) =
                    api.post("/api/replays", &format!("r-{round}-{asked}"), json!({"projection": projection})).await;
                assert_eq!(status, StatusCode::ACCEPTED, "round {round}, replay {asked} of {projection}: {started}");
                assert_eq!(started["nodes"][0]["node"], "local", "{started}");
                assert!(started["nodes"][0]["started"].as_array().unwrap().iter().any(|n| n == "donors"), "{started}");
                asked += 1;
            }
            if let Some(exit) = cli.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(cli.stderr.as_mut().unwrap(), &mut err).unwrap();
                assert!(exit.success(), "round {round}: foodaid replay all failed: {err}");
                assert!(!err.contains("could not acquire lock"), "{err}");
                if asked == 3 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "round {round}: the rebuild did not end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(saw_rebuilding, "round {round}: /health never showed a projection rebuilding");
    }

    // Everything caught up again, and rebuilt to the same rows.
    wait_for(&api, "/health", |h| {
        h["projections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "running" && p["lag"].as_object().unwrap().values().all(|l| l == 0))
    })
    .await;
    assert_eq!(digests(dir.path(), &url), incremental, "rebuilds asked at once give the same projections");
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_knows_the_nodes_that_announce_themselves() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let api = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));

    let annex_dir = tempfile::tempdir().unwrap();
    let annex = serve_node(annex_dir.path(), &url, "annex", &["stock"]);
    wait_for(&api, "/health", |h| node_names(h) == ["annex", "local"]).await;
    // A replay goes to every node that has the projection, and the answer names both.
    let (status, started) = api.post("/api/replays", "r-lots", json!({"projection": "lots"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let mut answered: Vec<&str> =
        started["nodes"].as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap()).collect();
    answered.sort();
    assert_eq!(answered, ["annex", "local"]);
    // Only the node that has it rebuilds a projection of the distribution service.
    let (status, started) = api.post("/api/replays", "r-households", json!({"projection": "households"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["nodes"].as_array().unwrap().len(), 1, "{started}");
    assert_eq!(started["nodes"][0]["node"], "local");

    // A node killed falls silent and is forgotten; one stopped says so as it leaves.
    annex.kill9();
    wait_for(&api, "/health", |h| node_names(h) == ["local"]).await;
    let annex = serve_node(annex_dir.path(), &url, "annex", &["stock"]);
    wait_for(&api, "/health", |h| node_names(h) == ["annex", "local"]).await;
    assert!(annex.terminate().success());
    wait_for(&api, "/health", |h| node_names(h) == ["local"]).await;
    assert!(foodaid.terminate().success());
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

/// Parses the Prometheus text format (0.0.4) strictly: `# HELP` and `# TYPE` lines, and samples
/// `name{label="value",...} value` whose family was typed before; anything else fails the test.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name, rest) = (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next());
            assert!(is_name(name, true), "bad metric name in {line:?}");
            match keyword {
                "HELP" => assert!(rest.is_some(), "HELP without text: {line:?}"),
                "TYPE" => {
                    let kind = rest.unwrap_or("");
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line:?}");
                    assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "family typed twice: {line:?}");
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert!(is_name(&key, false), "bad label name {key:?} in {line:?}");
                    assert_eq!(chars.next(), Some('"'), "unquoted label value in {line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => value.push('\n'),
                                Some(c @ ('\\' | '"')) => value.push(c),
                                other => panic!("bad escape {other:?} in {line:?}"),
                            },
                            Some('"') => break,
                            Some(c) => value.push(c),
                            None => panic!("unterminated label value in {line:?}"),
                        }
                    }
                    assert!(labels.insert(key, value).is_none(), "label twice in {line:?}");
                    match chars.next() {
                        Some(',') | None => {}
                        other => panic!("expected ',' after a label, found {other:?} in {line:?}"),
                    }
                }
                (name, labels)
            }
        };
        assert!(is_name(name, true), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| types.get(*base).is_some_and(|t| t == "histogram" || t == "summary"))
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line:?}");
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    samples
}

/// The value of the one sample of `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches several samples: {found:?}");
    found.first().map(|s| s.value)
}

async fn scrape(base: &str) -> Vec<Sample> {
    // No token: the figures name no one, and are open on the bind address like /health.
    let res = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    parse_prometheus(&res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_requests_lag_streams_reactors_and_open_reservations() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let wh = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "warehouse"]));

    let site = json!({"site_id": "gerland", "name": "Gerland", "zones": [{"code": "A1", "storage": "ambient"}]});
    assert_eq!(admin.post("/api/sites", "site", site).await.0, StatusCode::CREATED);
    let donor = json!({"donor_id": "lidl", "kind": "retailer", "name": "Lidl Villeurbanne"});
    assert_eq!(wh.post("/api/donors", "donor", donor).await.0, StatusCode::CREATED);
    let (status, err) = wh.post("/api/donors", "donor-bad", json!({"donor_id": "x", "kind": "castle"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_payload")));
    let pasta = json!({"product_id": "pasta", "name": "Pâtes 500 g", "food_group": "starches",
        "storage": "ambient", "date_kind": "ddm"});
    assert_eq!(wh.post("/api/products", "pasta", pasta).await.0, StatusCode::CREATED);
    for (id, quantity) in [("don-a", 4), ("don-b", 6)] {
        let body = json!({"donation_id": id, "donor_id": "lidl", "site_id": "gerland",
            "lines": [{"product_id": "pasta", "quantity": quantity, "weight_g": quantity * 500, "date": in_days(100)}]});
        assert_eq!(wh.post("/api/donations", id, body).await.0, StatusCode::CREATED);
    }
    wait_for(&wh, "/api/lots?product_id=pasta", |v| v.as_array().is_some_and(|a| a.len() == 2)).await;

    // Three parcels reserved, then one released and one picked; one too large is refused and
    // holds nothing.
    let reserve = |id: &str, quantity: u32| json!({"reservation_id": id, "site_id": "gerland", "lines": [{"product_id": "pasta", "quantity": quantity}]});
    for (id, quantity) in [("p-1", 2), ("p-2", 3), ("p-3", 1)] {
        let (status, reply) = wh.post("/api/reservations", id, reserve(id, quantity)).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
    }
    let (status, err) = wh.post("/api/reservations", "p-big", reserve("p-big", 50)).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("insufficient_stock")));
    assert_eq!(wh.post("/api/reservations/p-3/release", "release-3", json!({})).await.0, StatusCode::OK);
    let (status, picked) = wh.post("/api/reservations/p-2/pick", "pick-2", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let stock_seq = picked["seq"].as_f64().unwrap();

    // The read models catch up on their own; the scrape shows it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let samples = scrape(&foodaid.http).await;
        let lots_lag = value(&samples, "foodaid_projection_lag", &[("projection", "lots"), ("stream", "stock")]);
        let confirmed = value(&samples, "foodaid_open_reservations", &[("status", "confirmed")]);
        // Stream sizes are read every second: wait until they include the pick too.
        let stock = value(&samples, "foodaid_stream_last_seq", &[("stream", "stock")]);
        if lots_lag == Some(0.0) && confirmed == Some(1.0) && stock.is_some_and(|s| s >= stock_seq) {
            break samples;
        }
        assert!(Instant::now() < deadline, "lag {lots_lag:?}, confirmed {confirmed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Requests per operation and code, with their latency.
    let reserved = [("service", "stock"), ("operation", "reserve_stock"), ("status", "201"), ("code", "ok")];
    assert_eq!(value(&samples, "foodaid_http_requests_total", &reserved), Some(3.0));
    assert_eq!(value(&samples, "foodaid_http_request_duration_seconds_count", &reserved), Some(3.0));
    let mut inf = reserved.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(value(&samples, "foodaid_http_request_duration_seconds_bucket", &inf), Some(3.0));
    let refused = [("operation", "reserve_stock"), ("status", "409"), ("code", "insufficient_stock")];
    assert_eq!(value(&samples, "foodaid_http_requests_total", &refused), Some(1.0));
    let invalid = [("service", "donations"), ("operation", "register_donor"), ("code", "invalid_payload")];
    assert_eq!(value(&samples, "foodaid_http_requests_total", &invalid), Some(1.0));
    assert_eq!(value(&samples, "foodaid_http_requests_total", &[("operation", "pick_reservation")]), Some(1.0));

    // Projections, streams, reactors, NATS, and the reservations as they stand.
    assert_eq!(value(&samples, "foodaid_nodes", &[]), Some(1.0));
    assert_eq!(value(&samples, "foodaid_projection_stuck", &[("node", "local"), ("projection", "lots")]), Some(0.0));
    let last = value(&samples, "foodaid_stream_last_seq", &[("stream", "stock")]).unwrap();
    assert!(last >= stock_seq, "stock stream at {last}, the pick was {stock_seq}");
    assert!(value(&samples, "foodaid_stream_messages", &[("stream", "stock")]).unwrap() >= stock_seq);
    assert!(value(&samples, "foodaid_stream_bytes", &[("stream", "stock")]).unwrap() > 0.0);
    assert!(value(&samples, "foodaid_stream_messages", &[("stream", "donations")]).unwrap() >= 4.0);
    let reactor = [("node", "local"), ("reactor", "stock_receive_donations")];
    assert!(value(&samples, "foodaid_reactor_handled_total", &reactor).unwrap() >= 2.0);
    assert!(value(&samples, "foodaid_reactor_retries_total", &reactor).is_some());
    let failures = [("node", "local"), ("reactor", "stock_receive_donations"), ("kind", "refused")];
    assert_eq!(value(&samples, "foodaid_reactor_failures_total", &failures), Some(0.0));
    assert_eq!(value(&samples, "foodaid_nats_reconnects_total", &[("node", "local")]), Some(0.0));
    assert_eq!(value(&samples, "foodaid_open_reservations", &[("status", "picked")]), Some(1.0));
    assert_eq!(value(&samples, "foodaid_open_reservations", &[("status", "planned")]), Some(0.0));

    // The gauge follows the state: the last confirmed parcel released, nothing is open but p-2.
    assert_eq!(wh.post("/api/reservations/p-1/release", "release-1", json!({})).await.0, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let samples = scrape(&foodaid.http).await;
        let open: Vec<Option<f64>> = ["planned", "confirmed", "picked"]
            .iter()
            .map(|s| value(&samples, "foodaid_open_reservations", &[("status", s)]))
            .collect();
        if open == [Some(0.0), Some(0.0), Some(1.0)] {
            break;
        }
        assert!(Instant::now() < deadline, "open reservations {open:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(foodaid.terminate().success());
}
