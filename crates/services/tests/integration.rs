//! The services as they run, against a real nats-server and a real sled directory:
//! read-your-writes through `min_seq`, and role checks before anything is parsed or written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventstore::{EventStore, StoreConfig};
use projections::{Engine, EngineConfig, ProjectionStore};
use runtime::{Actor, CommandRequest, ErrorKind, QueryRequest, Role, RunnerConfig, ServiceClient};
use serde_json::{json, Value};
use services::ServiceContext;
use testkit::TestNats;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Running {
    client: ServiceClient,
    engine: Arc<Engine>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

async fn start(nats: &TestNats) -> Running {
    let events = EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap();
    let store = ProjectionStore::open(&nats.path().join("sled")).unwrap();
    let mut engine = Engine::new(store.clone(), events.jetstream().clone(), EngineConfig::default());
    let vault = vault::Vault::open(events.jetstream().clone(), 1).await.unwrap();
    let ctx = ServiceContext {
        events,
        projections: store,
        runner: RunnerConfig::default(),
        query_wait: Duration::from_millis(300),
        policies: services::Policies::default(),
        vault,
        client: runtime::ServiceClient::new(nats.client().await, Duration::from_secs(10)),
        calendar: values::Calendar::default(),
    };
    let hosts: Vec<_> =
        services::SERVICE_NAMES.iter().map(|s| services::build(s, &ctx, &mut engine).unwrap()).collect();
    engine.start();
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    for host in hosts {
        tracker.spawn(Arc::new(host).serve(nats.client().await, cancel.clone(), tracker.clone()));
    }
    let client = ServiceClient::new(nats.client().await, Duration::from_secs(5));
    // Wait until the donations service answers.
    let probe = QueryRequest::new(Actor::admin("test"), json!({}));
    while client.query::<Value>("donations", "list_donors", &probe).await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running { client, engine: Arc::new(engine), cancel, tracker }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.engine.shutdown().await;
    }
}

fn warehouse() -> Actor {
    Actor { role: Role::Warehouse, scope: None, name: "dock".into() }
}

#[tokio::test]
async fn a_query_with_min_seq_sees_the_write_it_follows() {
    let nats = TestNats::start().await;
    let running = start(&nats).await;
    let client = &running.client;
    for i in 0..20 {
        let body = json!({"donor_id": format!("d{i}"), "kind": "producer", "name": format!("Ferme {i}")});
        let reply = client
            .command("donations", "register_donor", &CommandRequest::new(format!("k{i}"), warehouse(), body))
            .await
            .unwrap();
        // Straight after the answer, with no sleep: the query waits for the commit.
        let mut query = QueryRequest::new(warehouse(), json!({"donor_id": format!("d{i}")}));
        query.min_seq = BTreeMap::from([(reply.stream.clone(), reply.seq)]);
        let row: Value = client.query("donations", "get_donor", &query).await.unwrap();
        assert_eq!(row["name"], format!("Ferme {i}"));
    }
    // A sequence the stream has not reached is refused at once: it cannot be waited for.
    let mut query = QueryRequest::new(warehouse(), json!({}));
    query.min_seq = BTreeMap::from([("donations".to_owned(), 10_000)]);
    let err = client.query::<Value>("donations", "list_donors", &query).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Validation, "min_seq_unreachable"));
    // min_seq of another service's stream does not hold this one up.
    query.min_seq = BTreeMap::from([("transport".to_owned(), 10_000)]);
    let rows: Vec<Value> = client.query("donations", "list_donors", &query).await.unwrap();
    assert_eq!(rows.len(), 20);
    running.stop().await;
}

#[tokio::test]
async fn roles_are_checked_before_the_payload_and_nothing_is_written() {
    let nats = TestNats::start().await;
    let running = start(&nats).await;
    let client = &running.client;
    let driver = Actor { role: Role::Driver, scope: Some("drv-1".into()), name: String::new() };
    // A driver may not register donors, even with a payload that would be invalid anyway.
    let err = client
        .command("donations", "register_donor", &CommandRequest::new("x", driver.clone(), json!({"bad": 1})))
        .await
        .unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Forbidden, "forbidden"));
    let err = client
        .command("stock", "create_site", &CommandRequest::new("s", warehouse(), json!({"name": "Site"})))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Forbidden, "sites are created by admins");
    // Bad values are refused with the field named, and nothing reaches the stream.
    let bad = json!({"kind": "producer", "name": "Ferme", "position": {"lat": 123.0, "lon": 4.0}});
    let err =
        client.command("donations", "register_donor", &CommandRequest::new("y", warehouse(), bad)).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Validation, "invalid_payload"));
    assert!(err.message.contains("position.lat"), "{}", err.message);
    let js = async_nats::jetstream::new(nats.client().await);
    let mut stream = js.get_stream("donations").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    // Unknown query parameters are refused rather than ignored.
    let err = client
        .query::<Value>("transport", "list_vehicles", &QueryRequest::new(driver, json!({"colour": "red"})))
        .await
        .unwrap_err();
    assert_eq!(err.code, "invalid_payload");
    running.stop().await;
}
