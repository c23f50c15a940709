//! The projection engine against a real nats-server and a real sled directory.

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use eventcore::{encode_event, AggregateId, CommandMeta, Commit, DomainEvent};
use eventstore::{AggregateRef, EventStore, Expected, StoreConfig};
use projections::{ApplyError, Engine, EngineConfig, Projection, ProjectionState, ProjectionStore, RecordedEvent, Tx};
use serde::{Deserialize, Serialize};
use testkit::TestNats;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum Ev {
    Counted { by: u64 },
}
impl DomainEvent for Ev {}

/// Sums `counted` events per aggregate and in total.
struct Totals;

impl Projection for Totals {
    fn name(&self) -> &'static str {
        "totals"
    }
    fn streams(&self) -> &'static [&'static str] {
        &["stock", "transport"]
    }
    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        let Ev::Counted { by } = event.decode::<Ev>()?;
        let key = event.envelope.aggregate_id.as_bytes();
        let per: u64 = tx.get_json("per", key)?.unwrap_or(0);
        tx.put_json("per", key, &(per + by));
        let total: u64 = tx.get_json("total", b"")?.unwrap_or(0);
        tx.put_json("total", b"", &(total + by));
        Ok(())
    }
}

async fn append(store: &EventStore, service: &'static str, id: &str, n: u64) -> u64 {
    let target = AggregateRef::new(service, "counter", AggregateId::from_str(id).unwrap());
    let last = store.load(&target, 0).await.unwrap();
    let expected = Expected {
        version: last.last().map_or(0, |c| c.commit.last_version()),
        last_seq: last.last().map_or(0, |c| c.seq),
    };
    let events = vec![encode_event(&Ev::Counted { by: n }), encode_event(&Ev::Counted { by: 1 })];
    let commit = Commit::new(&CommandMeta::new(uuid(), "test"), "counter", id, expected.version, events, Utc::now());
    store.append(&target, expected, &commit).await.unwrap().seq
}

fn uuid() -> String {
    AggregateId::new_v7().to_string()
}

fn total(store: &ProjectionStore) -> u64 {
    store.view("totals").unwrap().get_json("total", b"").unwrap().unwrap_or(0)
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn replay_rebuilds_exactly_the_incremental_state() {
    let nats = TestNats::start().await;
    let events = EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap();
    let sled_dir = nats.path().join("sled");
    let store = ProjectionStore::open(&sled_dir).unwrap();
    let mut engine =
        Engine::new(store.clone(), events.jetstream().clone(), EngineConfig { batch_size: 7, ..Default::default() });
    let handle = engine.register(Totals);
    engine.start();

    let mut last = (0, 0);
    for i in 0..40 {
        last.0 = append(&events, "stock", &format!("a{}", i % 5), i).await;
        if i % 3 == 0 {
            last.1 = append(&events, "transport", "t", 2).await;
        }
    }
    handle.wait_for("stock", last.0, WAIT).await.unwrap();
    handle.wait_for("transport", last.1, WAIT).await.unwrap();
    let expected: u64 = (0..40).sum::<u64>() + 40 + 14 * 3;
    assert_eq!(total(&store), expected, "every event counted once");
    let incremental = store.digest("totals").unwrap();

    engine.replay("totals").await.unwrap();
    handle.wait_for("stock", last.0, WAIT).await.unwrap();
    handle.wait_for("transport", last.1, WAIT).await.unwrap();
    assert_eq!(store.digest("totals").unwrap(), incremental, "replay equals incremental build");
    assert_eq!(total(&store), expected);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_restart_resumes_at_the_checkpoint_without_double_counting() {
    let nats = TestNats::start().await;
    let events = EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap();
    let sled_dir = nats.path().join("sled");
    let first_seq;
    {
        let store = ProjectionStore::open(&sled_dir).unwrap();
        let mut engine = Engine::new(store.clone(), events.jetstream().clone(), EngineConfig::default());
        let handle = engine.register(Totals);
        engine.start();
        first_seq = append(&events, "stock", "a", 10).await;
        handle.wait_for("stock", first_seq, WAIT).await.unwrap();
        engine.shutdown().await;
        assert_eq!(total(&store), 11);
    }
    // Written while no projection runs.
    let second_seq = append(&events, "stock", "a", 5).await;
    let store = ProjectionStore::open(&sled_dir).unwrap();
    let mut engine = Engine::new(store.clone(), events.jetstream().clone(), EngineConfig::default());
    let handle = engine.register(Totals);
    engine.start();
    handle.wait_for("stock", second_seq, WAIT).await.unwrap();
    assert_eq!(total(&store), 17);
    assert_eq!(store.checkpoints("totals").unwrap()["stock"], second_seq);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_undecodable_event_stops_the_projection_and_says_where() {
    let nats = TestNats::start().await;
    let events = EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap();
    let store = ProjectionStore::temporary().unwrap();
    let mut engine = Engine::new(store.clone(), events.jetstream().clone(), EngineConfig::default());
    let handle = engine.register(Totals);

    append(&events, "stock", "a", 3).await;
    // A commit written by a newer foodaid: its event is at schema version 2.
    let target = AggregateRef::new("stock", "counter", AggregateId::from_str("b").unwrap());
    let mut encoded = encode_event(&Ev::Counted { by: 100 });
    encoded.schema_version = 2;
    let commit = Commit::new(
        &CommandMeta::new(uuid(), "future"),
        "counter",
        "b",
        0,
        vec![encode_event(&Ev::Counted { by: 1000 }), encoded],
        Utc::now(),
    );
    let bad = events.append(&target, Expected::default(), &commit).await.unwrap().seq;
    let after = append(&events, "stock", "a", 7).await;
    engine.start();

    let err = handle.wait_for("stock", after, WAIT).await.unwrap_err();
    assert!(matches!(err, projections::WaitError::Stuck { .. }), "{err}");
    let status = handle.status();
    assert_eq!(status.state, ProjectionState::Stuck);
    let stuck = status.stuck.unwrap();
    assert_eq!((stuck.stream.as_str(), stuck.seq), ("stock", bad));
    assert!(stuck.reason.contains("newer"), "{}", stuck.reason);
    assert_eq!(total(&store), 4, "events before it count, none of the bad commit, none after");
    assert_eq!(status.checkpoints["stock"], bad - 1);
    engine.shutdown().await;
}

/// Appends `n` one-event commits on `aggregates` aggregates, 64 at a time; returns the last seq.
async fn append_many(store: &EventStore, n: usize, aggregates: usize) -> u64 {
    use futures::StreamExt;
    let mut last = 0;
    for round in 0..n.div_ceil(aggregates) {
        let appends = futures::stream::iter((0..aggregates.min(n - round * aggregates)).map(|i| {
            let store = store.clone();
            async move {
                let id = format!("bulk-{i}");
                let target = AggregateRef::new("stock", "counter", AggregateId::from_str(&id).unwrap());
                let expected = match store.load(&target, 0).await.unwrap().last() {
                    Some(c) => Expected { version: c.commit.last_version(), last_seq: c.seq },
                    None => Expected::default(),
                };
                let commit = Commit::new(
                    &CommandMeta::new(uuid(), "bulk"),
                    "counter",
                    &id,
                    expected.version,
                    vec![encode_event(&Ev::Counted { by: 1 })],
                    Utc::now(),
                );
                store.append(&target, expected, &commit).await.unwrap().seq
            }
        }));
        let seqs: Vec<u64> = appends.buffer_unordered(64).collect().await;
        last = last.max(seqs.into_iter().max().unwrap_or(0));
    }
    last
}

#[tokio::test]
async fn a_projection_far_behind_catches_up_and_stops_at_a_bad_event_on_the_way() {
    let nats = TestNats::start().await;
    let events = EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap();
    // More than the catch-up threshold, so the ordered-consumer path runs.
    let first = append_many(&events, 1500, 50).await;
    let store = ProjectionStore::open(&nats.path().join("sled")).unwrap();
    let mut engine =
        Engine::new(store.clone(), events.jetstream().clone(), EngineConfig { batch_size: 100, ..Default::default() });
    let handle = engine.register(Totals);
    engine.start();
    handle.wait_for("stock", first, WAIT).await.unwrap();
    assert_eq!(total(&store), 1500);
    // Then it tails live with its durable consumer.
    let live = append(&events, "stock", "live", 4).await;
    handle.wait_for("stock", live, WAIT).await.unwrap();
    assert_eq!(total(&store), 1505);
    let incremental = store.digest("totals").unwrap();
    engine.replay("totals").await.unwrap();
    handle.wait_for("stock", live, WAIT).await.unwrap();
    assert_eq!(store.digest("totals").unwrap(), incremental, "a catch-up replay equals the incremental build");
    engine.shutdown().await;

    // A bad event in the middle of a long catch-up: everything before it lands, nothing after.
    let target = AggregateRef::new("stock", "counter", AggregateId::from_str("bad").unwrap());
    let mut encoded = encode_event(&Ev::Counted { by: 100 });
    encoded.schema_version = 7;
    let commit = Commit::new(&CommandMeta::new(uuid(), "future"), "counter", "bad", 0, vec![encoded], Utc::now());
    let bad = events.append(&target, Expected::default(), &commit).await.unwrap().seq;
    append_many(&events, 1200, 40).await;
    let fresh = ProjectionStore::open(&nats.path().join("sled-2")).unwrap();
    let mut engine =
        Engine::new(fresh.clone(), events.jetstream().clone(), EngineConfig { node: "other".into(), batch_size: 100 });
    let handle = engine.register(Totals);
    engine.start();
    let err = handle.wait_for("stock", bad + 1, WAIT).await.unwrap_err();
    assert!(matches!(err, projections::WaitError::Stuck { .. }), "{err}");
    assert_eq!(handle.status().stuck.unwrap().seq, bad);
    assert_eq!(fresh.checkpoints("totals").unwrap()["stock"], bad - 1);
    assert_eq!(total(&fresh), 1505, "exactly the events before the bad one");
    engine.shutdown().await;
}
