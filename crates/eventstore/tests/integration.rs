//! The event store against a real nats-server (and a real 3-node cluster).

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use eventcore::{decode_event_raw, encode_event, AggregateId, CommandMeta, Commit, DomainEvent, Upcasters};
use eventstore::{AggregateRef, EventStore, Expected, StoreConfig, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use testkit::{TestCluster, TestNats};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum ParcelEvent {
    /// v1 stored `kg` as a float; v2 stores whole grams.
    ParcelWeighed {
        grams: u64,
    },
    ParcelLabelled {
        label: String,
    },
}

impl DomainEvent for ParcelEvent {
    fn schema_version(event_type: &str) -> u32 {
        if event_type == "parcel_weighed" {
            2
        } else {
            1
        }
    }

    fn upcast(event_type: &str, from: u32, data: Value) -> Option<Result<Value, String>> {
        Upcasters::default()
            .with("parcel_weighed", 1, |d| {
                let kg = d["kg"].as_f64().ok_or("kg missing")?;
                Ok(json!({ "grams": (kg * 1000.0).round() as u64 }))
            })
            .upcast(event_type, from, data)
    }
}

fn parcel(id: &str) -> AggregateRef {
    AggregateRef::new("distribution", "parcel", AggregateId::from_str(id).unwrap())
}

fn commit(target: &AggregateRef, command_id: &str, version: u64, events: &[ParcelEvent]) -> Commit {
    let meta = CommandMeta::new(command_id, "test");
    Commit::new(&meta, target.kind, target.id.as_str(), version, events.iter().map(encode_event).collect(), Utc::now())
}

async fn store(nats: &TestNats) -> EventStore {
    EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap()
}

#[tokio::test]
async fn a_commit_is_one_message_and_loads_back_in_order() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let p = parcel("p1");
    let first = commit(
        &p,
        "c1",
        0,
        &[ParcelEvent::ParcelWeighed { grams: 100 }, ParcelEvent::ParcelLabelled { label: "A".into() }],
    );
    let a1 = store.append(&p, Expected::default(), &first).await.unwrap();
    let second = commit(&p, "c2", 2, &[ParcelEvent::ParcelLabelled { label: "B".into() }]);
    let a2 = store.append(&p, Expected { version: 2, last_seq: a1.seq }, &second).await.unwrap();
    assert!(!a1.duplicate && !a2.duplicate);
    assert_eq!(a1.stream, "distribution");

    let loaded = store.load(&p, 0).await.unwrap();
    assert_eq!(loaded.len(), 2, "two commits, two messages");
    assert_eq!(loaded[0].commit, first);
    assert_eq!(loaded[1].commit, second);
    assert_eq!(loaded[1].commit.events[0].aggregate_version, 3);
    assert_eq!(store.load(&p, a1.seq).await.unwrap().len(), 1, "load after a snapshot's sequence");
    assert!(store.load(&parcel("p2"), 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_append_waiting_on_a_server_that_dies_fails_at_once() {
    let mut nats = TestNats::start().await;
    let store = store(&nats).await;
    let p = parcel("p1");
    // The server stops answering (SIGSTOP), so the commit's acknowledgement cannot come, and then
    // dies: the append says so when the connection drops, not after its 5 s time-out.
    let pid = nats.server.pid().expect("a running server") as libc::pid_t;
    #[allow(unsafe_code)]
    // SAFETY: kill(2) only sends a signal, to the server this test started.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let first = commit(&p, "c1", 0, &[ParcelEvent::ParcelLabelled { label: "A".into() }]);
    let started = std::time::Instant::now();
    let append = store.append(&p, Expected::default(), &first);
    let kill = async {
        // Let the append send its commit first.
        tokio::task::yield_now().await;
        nats.server.kill();
    };
    let (appended, ()) = tokio::join!(append, kill);
    assert!(matches!(appended, Err(StoreError::Unavailable(_))), "{appended:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_stale_writer_gets_a_conflict() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let p = parcel("p1");
    let base = store
        .append(&p, Expected::default(), &commit(&p, "c1", 0, &[ParcelEvent::ParcelLabelled { label: "A".into() }]))
        .await
        .unwrap();
    let seen = Expected { version: 1, last_seq: base.seq };
    let winner = commit(&p, "c2", 1, &[ParcelEvent::ParcelLabelled { label: "B".into() }]);
    let loser = commit(&p, "c3", 1, &[ParcelEvent::ParcelLabelled { label: "C".into() }]);
    let (a, b) = tokio::join!(store.append(&p, seen, &winner), store.append(&p, seen, &loser));
    let conflicts = [&a, &b].iter().filter(|r| matches!(r, Err(StoreError::Conflict { .. }))).count();
    assert_eq!(conflicts, 1, "exactly one of two concurrent writers wins: {a:?} {b:?}");
    // A new aggregate expected absent conflicts once it exists.
    let again = store.append(&p, Expected::default(), &commit(&p, "c4", 0, &[])).await;
    assert!(matches!(again, Err(StoreError::Conflict { .. })), "{again:?}");
    assert_eq!(store.load(&p, 0).await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_same_command_twice_is_stored_once() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let p = parcel("p1");
    let c = commit(&p, "same-key", 0, &[ParcelEvent::ParcelLabelled { label: "A".into() }]);
    let first = store.append(&p, Expected::default(), &c).await.unwrap();
    // The retry believes the aggregate is still new: deduplication answers before the
    // concurrency check, with the first commit's sequence.
    let second = store.append(&p, Expected::default(), &c).await.unwrap();
    assert!(second.duplicate);
    assert_eq!(second.seq, first.seq);
    assert_eq!(store.load(&p, 0).await.unwrap().len(), 1);
    // The same key on another aggregate is another command.
    let q = parcel("p2");
    let other = store.append(&q, Expected::default(), &commit(&q, "same-key", 0, &[])).await.unwrap();
    assert!(!other.duplicate);
}

#[tokio::test]
async fn a_stored_v1_event_is_upcast_on_read() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let fixture = include_str!("../fixtures/commit_v1.json");
    // Written as an older foodaid would have written it: raw bytes, no help from this build.
    let js = store.jetstream();
    js.publish("distribution.parcel.p-0001", fixture.as_bytes().to_vec().into()).await.unwrap().await.unwrap();

    let loaded = store.load(&parcel("p-0001"), 0).await.unwrap();
    let envelope = &loaded[0].commit.events[0];
    assert_eq!((envelope.event_type.as_str(), envelope.schema_version), ("parcel_weighed", 1));
    let event: ParcelEvent = decode_event_raw(&envelope.event_type, envelope.schema_version, &envelope.data).unwrap();
    assert_eq!(event, ParcelEvent::ParcelWeighed { grams: 7250 });
    assert_eq!(envelope.actor, "warehouse:dock-1");
}

#[tokio::test]
async fn a_newer_commit_format_is_refused_not_misread() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(eventstore::COMMIT_FORMAT_HEADER, "99");
    store.jetstream().publish_with_headers("stock.lot.l1", headers, "{}".into()).await.unwrap().await.unwrap();
    let target = AggregateRef::new("stock", "lot", AggregateId::from_str("l1").unwrap());
    let err = store.load(&target, 0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { seq: 1, .. }), "{err:?}");
    // Without the header, the format in the body is checked.
    let other = AggregateRef::new("stock", "lot", AggregateId::from_str("l2").unwrap());
    let mut future = commit(&other, "c1", 0, &[ParcelEvent::ParcelLabelled { label: "A".into() }]);
    future.format = 2;
    store
        .jetstream()
        .publish("stock.lot.l2", serde_json::to_vec(&future).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let err = store.load(&other, 0).await.unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt { reason, .. } if reason.contains("newer")), "{err:?}");
}

#[tokio::test]
async fn a_cluster_keeps_every_commit_when_a_node_dies() {
    let mut cluster = TestCluster::start(3).await;
    let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
    let client = options.connect(cluster.server_addrs()).await.unwrap();
    let config = StoreConfig { replicas: 3, ..StoreConfig::default() };
    let store = EventStore::open(client, &["stock"], &config).await.unwrap();

    let mut written = Vec::new();
    let append = |i: usize| {
        let store = store.clone();
        async move {
            let target = AggregateRef::new("stock", "lot", AggregateId::from_str(&format!("lot-{i}")).unwrap());
            let c = commit(&target, &format!("cmd-{i}"), 0, &[ParcelEvent::ParcelLabelled { label: i.to_string() }]);
            // A node loss may cost one ack; the retry is safe because of the message id.
            for attempt in 0.. {
                match store.append(&target, Expected::default(), &c).await {
                    Ok(a) => return (target, a.seq),
                    Err(e) if attempt < 40 => {
                        eprintln!("append {i} attempt {attempt}: {e}");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => panic!("append {i} failed for good: {e}"),
                }
            }
            unreachable!()
        }
    };
    for i in 0..50 {
        written.push(append(i).await);
    }
    // Kill the node the client is most likely talking to, and one that may lead the stream.
    cluster.nodes[0].kill();
    for i in 50..100 {
        written.push(append(i).await);
    }
    for (target, seq) in &written {
        let commits = store.load(target, 0).await.unwrap();
        assert_eq!(commits.len(), 1, "{} has exactly its one commit", target.subject());
        assert_eq!(commits[0].seq, *seq);
    }
    let last = store.last_sequences().await.unwrap();
    assert_eq!(last["stock"], 100, "nothing lost, nothing doubled");
}
