//! The `foodaid` binary as users and operators run it: child processes, real nats-server,
//! real sled directories, HTTP through the gateway.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::TestNats;

use support::{run, token, wait_for, Api, Foodaid, BIN};

fn donor(id: &str) -> Value {
    json!({"donor_id": id, "kind": "retailer", "name": format!("Magasin {id}"), "address": "Lyon"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_demo_answers_health_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // No NATS configured: foodaid starts its own nats-server under the data dir. Queries wait
    // long for their read model here, so that a refusal at once shows.
    let foodaid = Foodaid::up_with(dir.path(), None, &["--demo"], &[("FOODAID__PROJECTIONS__QUERY_WAIT_MS", "30000")]);
    // One token per role, each printed as a sign-in link for the web app.
    let tokens: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("demo-tokens.json")).unwrap())
        .expect("the demo saves its tokens");
    for who in ["admin", "warehouse", "association", "driver"] {
        let link = format!("{}/#token={}", foodaid.http, tokens[who].as_str().unwrap());
        assert!(foodaid.line_starting(&format!("  {who:<12} {link}")).is_some(), "{who}'s sign-in link is printed");
    }
    let token = tokens["admin"].as_str().unwrap().to_owned();
    let me = Api::new(&foodaid.http, tokens["driver"].as_str().unwrap()).get("/api/me").await.1;
    assert_eq!(
        me,
        json!({"role": "driver", "scope": "drv-monique", "name": "demo driver Monique", "time_zone": "Europe/Paris"})
    );
    for method in [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::DELETE] {
        let (status, err) =
            Api::new(&foodaid.http, &token).send(method.clone(), "/api/donorz", None, None).await.unwrap();
        assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{method}");
    }
    let index = reqwest::get(format!("{}/", foodaid.http)).await.unwrap();
    assert_eq!(index.headers()["content-type"], "text/html");
    assert!(index.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    assert!(index.text().await.unwrap().contains("/js/app.js"), "the web app is served at /");
    let health = reqwest::get(format!("{}/health", foodaid.http)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["nats_connected"], true);
    let api = Api::new(&foodaid.http, &token);
    let (status, donors) = api.get("/api/donors").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(donors.as_array().unwrap().len(), 5);
    // A sequence the stream has not reached is refused at once, not waited for.
    let asked = Instant::now();
    let (status, err) = api.get("/api/donors?min_seq=donations:999999999").await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("min_seq_unreachable")));
    assert!(asked.elapsed() < Duration::from_secs(10), "answered before the 30 s wait: {:?}", asked.elapsed());
    let nats_url = std::fs::read_to_string(dir.path().join("nats.url")).unwrap();
    assert!(foodaid.terminate().success(), "SIGTERM drains and exits 0");
    let port: u16 = nats_url.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the embedded nats-server stopped too");

    // Loading the demo again changes nothing; the data survived the restart.
    let foodaid = Foodaid::up(dir.path(), None, &["--demo"]);
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("demo-tokens.json")).unwrap()).unwrap();
    assert_eq!(again, tokens, "the demo's tokens are kept across restarts");
    let api = Api::new(&foodaid.http, &token);
    assert_eq!(api.get("/api/donors").await.1.as_array().unwrap().len(), 5);
    assert_eq!(api.get("/api/associations").await.1.as_array().unwrap().len(), 4);
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_loses_no_acknowledged_command_and_projections_equal_a_replay() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = token(dir.path(), Some(&url), &["--role", "admin", "--name", "crash-test"]);

    // Four clients send commands as fast as they can; foodaid is killed under them.
    let acked = Arc::new(Mutex::new(BTreeMap::<String, (u64, String)>::new()));
    let mut senders = Vec::new();
    for client in 0..4 {
        let api = Api::new(&foodaid.http, &admin);
        let acked = acked.clone();
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("d-{client}-{i}");
                match api.send(reqwest::Method::POST, "/api/donors", Some(&format!("k-{id}")), Some(donor(&id))).await {
                    Ok((StatusCode::CREATED, reply)) => {
                        acked.lock().unwrap().insert(id, (reply["seq"].as_u64().unwrap(), format!("k-{client}-{i}")));
                    }
                    Ok((status, body)) => panic!("unexpected answer {status}: {body}"),
                    Err(_) => return, // the server died under us
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 150 {
        assert!(Instant::now() < deadline, "commands are too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    foodaid.kill9();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // Every acknowledged command is in the stream exactly once.
    let client = nats.client().await;
    let store = eventstore::EventStore::open(client, &eventstore::SERVICES, &Default::default()).await.unwrap();
    for id in acked.keys() {
        let target = eventstore::AggregateRef::new("donations", "donor", id.parse().unwrap());
        assert_eq!(store.load(&target, 0).await.unwrap().len(), 1, "{id} committed exactly once");
    }

    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let api = Api::new(&foodaid.http, &admin);
    let max_seq = acked.values().map(|(seq, _)| *seq).max().unwrap();
    let (status, rows) = api.get(&format!("/api/donors?min_seq={max_seq}")).await;
    assert_eq!(status, StatusCode::OK);
    let listed: HashSet<String> =
        rows.as_array().unwrap().iter().map(|r| r["donor_id"].as_str().unwrap().to_owned()).collect();
    for id in acked.keys() {
        assert!(listed.contains(id), "{id} acknowledged before the crash but missing after");
    }
    assert_eq!(listed.len(), rows.as_array().unwrap().len(), "no donor listed twice");

    // Resending an acknowledged command after the crash answers with the first commit.
    let (first, (seq, _)) = acked.iter().next().unwrap();
    let (status, again) = api.post("/api/donors", &format!("k-{first}"), donor(first)).await;
    assert_eq!(status, StatusCode::CREATED, "a retry answers as the first did");
    assert_eq!((again["duplicate"].as_bool(), again["seq"].as_u64()), (Some(true), Some(*seq)));

    // The incrementally built projections equal a replay from the streams.
    let digests = |data: &Path| -> BTreeMap<String, String> {
        let status: Value = serde_json::from_str(&run(data, Some(&url), &["status", "--json", "--digests"])).unwrap();
        let node = &status["nodes"][0];
        assert_eq!(node["source"], "running");
        node["projections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_owned(), p["digest"].as_str().unwrap().to_owned()))
            .collect()
    };
    let incremental = digests(dir.path());
    run(dir.path(), Some(&url), &["replay", "all"]);
    assert_eq!(digests(dir.path()), incremental, "replay rebuilds the same projections");

    // The coordinator's screen asks the same over HTTP; /health shows it catch up.
    let (status, started) = api.post("/api/replays", "r1", json!({"projection": "donors"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["nodes"][0]["started"], json!(["donors"]));
    let (status, err) = api.post("/api/replays", "r2", json!({"projection": "nothing"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("projection_not_found")));
    let warehouse = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "warehouse"]));
    let (status, _) = warehouse.post("/api/replays", "r3", json!({"projection": "donors"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    wait_for(&api, "/health", |health| {
        let donors = health["projections"].as_array().unwrap().iter().find(|p| p["name"] == "donors").unwrap();
        donors["state"] == "running" && donors["lag"]["donations"] == 0
    })
    .await;
    assert_eq!(digests(dir.path()), incremental, "a rebuild asked over HTTP gives the same projections");
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_is_reported_by_health_and_status() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = token(dir.path(), Some(&url), &["--role", "admin"]);
    let api = Api::new(&foodaid.http, &admin);
    assert_eq!(api.post("/api/donors", "k1", donor("before")).await.0, StatusCode::CREATED);

    // A commit from a future foodaid: donor_registered at schema version 99.
    let js = async_nats::jetstream::new(nats.client().await);
    let future = json!({"format": 1, "command_id": "future", "aggregate_kind": "donor", "aggregate_id": "f1", "events": [{
        "event_id": "01954fa2-3c00-7000-8000-000000000001", "aggregate_id": "f1", "aggregate_version": 1,
        "event_type": "donor_registered", "schema_version": 99, "occurred_at": "2026-01-01T00:00:00Z",
        "recorded_at": "2026-01-01T00:00:00Z", "actor": "future", "correlation_id": "01954fa2-3c00-7000-8000-000000000002",
        "causation_id": "01954fa2-3c00-7000-8000-000000000002", "data": {"whatever": true}}]});
    let seq = js
        .publish("donations.donor.f1", serde_json::to_vec(&future).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let (status, _) = api.post("/api/donors", "k2", donor("after")).await;
    assert_eq!(status, StatusCode::CREATED);

    // /health is refreshed from the nodes' announcements and the streams' sizes, each up to a
    // second old: wait until it shows the stuck projection with both commits behind it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let health: Value = reqwest::get(format!("{}/health", foodaid.http)).await.unwrap().json().await.unwrap();
        let lag = health["projections"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "donors"))
            .and_then(|p| p["lag"]["donations"].as_u64());
        if health["status"] == "degraded" && lag == Some(2) {
            break health;
        }
        assert!(Instant::now() < deadline, "health never reported the stuck projection: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let donors = health["projections"].as_array().unwrap().iter().find(|p| p["name"] == "donors").unwrap();
    assert_eq!(donors["state"], "stuck");
    assert_eq!(donors["stuck"]["seq"].as_u64(), Some(seq));
    assert!(donors["stuck"]["reason"].as_str().unwrap().contains("newer"), "{donors}");
    assert_eq!(donors["lag"]["donations"].as_u64(), Some(2), "the bad event and the one after it");
    assert_eq!(donors["version"].as_u64(), Some(1), "{donors}");

    let text = run(dir.path(), Some(&url), &["status"]);
    assert!(text.contains(&format!("STUCK at donations#{seq}")), "{text}");
    assert!(text.lines().any(|l| l.split_whitespace().take(2).eq(["donors", "1"])), "the version is shown: {text}");
    // A query that needs the stuck part says so instead of waiting or lying.
    let (status, err) = api.get(&format!("/api/donors?min_seq={}", seq + 1)).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("projection_stuck")));
    // Other projections carry on.
    let site = json!({"site_id": "s", "name": "Site", "zones": [{"code": "A1", "storage": "ambient"}]});
    assert_eq!(api.post("/api/sites", "s", site).await.0, StatusCode::CREATED);
    let body = json!({"vehicle_id": "kangoo", "name": "Kangoo", "capacity_kg": 500, "home_site": "s"});
    let ok = api.post("/api/vehicles", "v1", body).await;
    assert_eq!(ok.0, StatusCode::CREATED);
    // The vehicle goes to the garage on Thursday.
    let off = json!({"date": "2026-11-26", "available": false});
    let (status, reply) = api.put("/api/vehicles/kangoo/availability", "off-1", off).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (_, vehicles) = api.get(&format!("/api/vehicles?min_seq={}", support::min_seq(&reply))).await;
    assert_eq!(vehicles[0]["off_days"], json!(["2026-11-26"]), "{vehicles}");
    assert!(foodaid.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_what_a_caller_may_do_and_errors_have_stable_codes() {
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let admin = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    for (id, name) in [("asso-a", "Association A"), ("asso-b", "Association B")] {
        let body = json!({"association_id": id, "name": name, "commune": "Lyon"});
        assert_eq!(admin.post("/api/associations", &format!("reg-{id}"), body).await.0, StatusCode::CREATED);
    }
    let a_token = token(dir.path(), Some(&url), &["--role", "association", "--scope", "asso-a", "--name", "A staff"]);
    let a = Api::new(&foodaid.http, &a_token);
    let relay = json!({"name": "Local", "commune": "Lyon", "cold_storage": true});
    assert_eq!(a.post("/api/associations/asso-a/relay-points", "r1", relay.clone()).await.0, StatusCode::CREATED);
    let (status, err) = a.post("/api/associations/asso-b/relay-points", "r2", relay.clone()).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let (status, err) = a.post("/api/associations", "r3", json!({"name": "x", "commune": "y"})).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));

    // Stable codes for bad input of every kind.
    let raw = reqwest::Client::new();
    let post_raw = |body: &'static str| {
        raw.post(format!("{}/api/donors", foodaid.http))
            .bearer_auth(&admin.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let res = post_raw("{\"kind\": ").await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "malformed_json");
    let res = post_raw("{\"kind\": \"retailer\", \"name\": \"x\", \"colour\": 1}").await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "invalid_payload");
    assert!(body["message"].as_str().unwrap().contains("colour"), "{body}");
    let res = raw.get(format!("{}/api/nothing", foodaid.http)).send().await.unwrap();
    assert_eq!(
        (res.status(), res.json::<Value>().await.unwrap()["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let res =
        raw.get(format!("{}/api/donors", foodaid.http)).bearer_auth("fa_000000000000_forged").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (status, err) = admin.get("/api/donors/nobody").await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("donor_not_found")));
    let res = raw
        .get(format!("{}/api/donors", foodaid.http))
        .bearer_auth(&admin.token)
        .header("x-request-id", "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b");

    // The OpenAPI document describes every route the gateway serves.
    let doc: Value = raw.get(format!("{}/api/openapi.json", foodaid.http)).send().await.unwrap().json().await.unwrap();
    for op in gateway::api::operations() {
        let method = op.method.as_str().to_lowercase();
        assert!(doc["paths"][op.path][&method].is_object(), "{} {} missing from OpenAPI", op.method, op.path);
    }

    // Revocation: the token stops working (cache disabled in this test).
    let listed = run(dir.path(), Some(&url), &["token", "list"]);
    let id = a_token.split('_').nth(1).unwrap();
    assert!(listed.contains(id), "{listed}");
    run(dir.path(), Some(&url), &["token", "revoke", id]);
    let (status, err) = a.get("/api/associations").await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")));
    assert!(foodaid.terminate().success());
}

#[test]
fn deploy_configurations_are_valid() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    for n in 1..=3 {
        let conf = deploy.join(format!("nats/nats-{n}.conf"));
        let out = Command::new("nats-server").arg("-t").arg("-c").arg(&conf).output().expect("nats-server runs");
        assert!(out.status.success(), "{}: {}", conf.display(), String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains(&format!("server_name: nats-{n}")) && text.contains("jetstream"), "{}", conf.display());
    }
    let units = ["foodaid-services@.service", "foodaid-gateway.service"];
    for unit in units {
        let text = std::fs::read_to_string(deploy.join("systemd").join(unit)).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/foodaid serve"), "{unit}");
        assert!(text.contains("FOODAID_PROFILE=cluster"), "{unit}");
    }
    // The cluster profile the units use must load.
    let out = Command::new(BIN)
        .current_dir(deploy.join(".."))
        .env("FOODAID_PROFILE", "cluster")
        .args(["serve", "nothing"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown service \"nothing\""), "profile failed to load: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_occurred_at_is_bounded_per_kind_of_fact_on_every_command() {
    use gateway::api::{operations, Dated, OpKind};
    let nats = TestNats::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let foodaid = Foodaid::up(dir.path(), Some(&url), &[]);
    let api = Api::new(&foodaid.http, &token(dir.path(), Some(&url), &["--role", "admin"]));
    let js = async_nats::jetstream::new(nats.client().await);
    let before = support::settled(&js).await;
    let now = chrono::Utc::now();
    let send = |method: reqwest::Method, path: String, at: String| {
        let api = &api;
        async move {
            let res = api
                .http
                .request(method, format!("{}{path}", api.base))
                .bearer_auth(&api.token)
                .header("Idempotency-Key", format!("dated-{at}"))
                .header("X-Occurred-At", at)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let mut checked = 0;
    for op in operations().into_iter().filter(|o| o.kind == OpKind::Command) {
        let method = reqwest::Method::from_bytes(op.method.as_str().as_bytes()).unwrap();
        let path = op.path.split('/').map(|p| if p.starts_with('{') { "x" } else { p }).collect::<Vec<_>>().join("/");
        // Never ahead of the clock, whatever the operation.
        let (status, err) = send(method.clone(), path.clone(), "9999-12-31T00:00:00Z".into()).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("occurred_in_future")),
            "{}",
            op.name
        );
        // In the past: only what can be recorded late, and not too late.
        let (status, err) = send(method.clone(), path.clone(), "2020-01-01T00:00:00Z".into()).await;
        let code = match op.dated {
            Dated::Now => "occurred_at_not_accepted",
            Dated::DaysBack(_) => "occurred_too_long_ago",
        };
        assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{}", op.name);
        if op.dated == Dated::Now {
            let an_hour_ago = (now - chrono::Duration::hours(1)).to_rfc3339();
            let (status, err) = send(method, path, an_hour_ago).await;
            assert_eq!((status, err["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{}", op.name);
        }
        checked += 1;
    }
    assert!(checked > 60, "{checked} commands");
    // A donation's own received_at has the same bound as its X-Occurred-At.
    let long_ago = (now - chrono::Duration::days(40)).to_rfc3339();
    let body = json!({"donor_id": "d", "site_id": "s", "received_at": long_ago, "lines": []});
    let (status, err) = api.post("/api/donations", "old", body).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("received_too_long_ago")),
        "{err}"
    );
    assert_eq!(support::settled(&js).await, before, "nothing refused was written");
    assert!(foodaid.terminate().success());
}
