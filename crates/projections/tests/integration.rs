//! The projection engine against a real nats-server and a real sled directory.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
    fn version(&self) -> u32 {
        1
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
    let mut engine = Engine::new(
        fresh.clone(),
        events.jetstream().clone(),
        EngineConfig { node: "other".into(), batch_size: 100, ..Default::default() },
    );
    let handle = engine.register(Totals);
    engine.start();
    let err = handle.wait_for("stock", bad + 1, WAIT).await.unwrap_err();
    assert!(matches!(err, projections::WaitError::Stuck { .. }), "{err}");
    assert_eq!(handle.status().stuck.unwrap().seq, bad);
    assert_eq!(fresh.checkpoints("totals").unwrap()["stock"], bad - 1);
    assert_eq!(total(&fresh), 1505, "exactly the events before the bad one");
    engine.shutdown().await;
}

/// The same read model as [`Totals`], written another way: version 2 counts events per aggregate
/// in a table of its own and keeps no total. Its `apply` waits for `gate` to open, so that a test
/// can look at a rebuild while it is under way; it counts the events it applies.
struct TotalsV2 {
    gate: Gate,
    applied: Arc<AtomicU64>,
}

#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    /// Blocks until open; an error after a deadline rather than a test that never ends.
    fn pass(&self) -> Result<(), ApplyError> {
        let (open, changed) = &*self.0;
        let (open, wait) = changed.wait_timeout_while(open.lock().unwrap(), WAIT * 3, |open| !*open).unwrap();
        if wait.timed_out() && !*open {
            return Err(ApplyError("the test never opened the gate".into()));
        }
        Ok(())
    }
}

impl Projection for TotalsV2 {
    fn name(&self) -> &'static str {
        "totals"
    }
    fn version(&self) -> u32 {
        2
    }
    fn streams(&self) -> &'static [&'static str] {
        &["stock", "transport"]
    }
    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        self.gate.pass()?;
        let Ev::Counted { .. } = event.decode::<Ev>()?;
        let key = event.envelope.aggregate_id.as_bytes();
        let events: u64 = tx.get_json("events", key)?.unwrap_or(0);
        tx.put_json("events", key, &(events + 1));
        self.applied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Waits until `check` holds, or fails after the deadline.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn rows(store: &ProjectionStore, table: &str) -> Vec<(String, u64)> {
    let view = store.view("totals").unwrap();
    view.scan(table, b"")
        .map(|r| {
            let (k, v) = r.unwrap();
            (String::from_utf8(k).unwrap(), serde_json::from_slice(&v).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_new_projection_version_rebuilds_it_on_start_and_queries_wait_for_the_rebuild() {
    let nats = TestNats::start().await;
    let events = EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap();
    let sled_dir = nats.path().join("sled");
    let mut last = (0, 0);
    {
        let store = ProjectionStore::open(&sled_dir).unwrap();
        let mut engine = Engine::new(
            store.clone(),
            events.jetstream().clone(),
            EngineConfig { batch_size: 16, ..Default::default() },
        );
        let handle = engine.register(Totals);
        engine.start();
        for i in 0..30 {
            last.0 = append(&events, "stock", &format!("a{}", i % 4), i).await;
        }
        last.1 = append(&events, "transport", "t", 2).await;
        handle.wait_for("stock", last.0, WAIT).await.unwrap();
        handle.wait_for("transport", last.1, WAIT).await.unwrap();
        assert_eq!(handle.status().version, 1);
        assert_eq!(store.version("totals").unwrap(), Some(1));
        assert_eq!(rows(&store, "per").len(), 5, "version 1 rows");
        engine.shutdown().await;
    }
    // Written while no projection runs: the rebuild covers them too.
    last.0 = append(&events, "stock", "late", 1).await;

    let store = ProjectionStore::open(&sled_dir).unwrap();
    let mut engine =
        Engine::new(store.clone(), events.jetstream().clone(), EngineConfig { batch_size: 16, ..Default::default() });
    let gate = Gate::default();
    let applied = Arc::new(AtomicU64::new(0));
    let handle = engine.register(TotalsV2 { gate: gate.clone(), applied: applied.clone() });
    engine.start();

    eventually("the projection rebuilding", || handle.status().state == ProjectionState::Rebuilding).await;
    let status = handle.status();
    assert_eq!(status.version, 2);
    assert!(status.checkpoints.values().all(|seq| *seq == 0), "a rebuild starts from scratch: {status:?}");
    assert_eq!(store.version("totals").unwrap(), Some(2));
    assert!(rows(&store, "per").is_empty() && total(&store) == 0, "the old rows are gone");
    let err = handle.wait_for("stock", last.0, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, projections::WaitError::Timeout { .. }), "a query waits for the rebuild: {err}");

    gate.open();
    handle.wait_for("stock", last.0, WAIT).await.unwrap();
    handle.wait_for("transport", last.1, WAIT).await.unwrap();
    eventually("the projection running", || handle.status().state == ProjectionState::Running).await;
    // Two events a commit; a0 and a1 had 8 commits, a2 and a3 7.
    let expected: Vec<(String, u64)> =
        [("a0", 16), ("a1", 16), ("a2", 14), ("a3", 14), ("late", 2), ("t", 2)].map(|(k, n)| (k.to_owned(), n)).into();
    assert_eq!(rows(&store, "events"), expected, "version 2 rows for every event, old and new");
    assert!(rows(&store, "per").is_empty() && total(&store) == 0, "no version 1 row left");
    assert_eq!(applied.load(Ordering::Relaxed), 64, "each event applied once");

    // The durable consumer was repositioned: it tails from where the rebuild ended.
    let live = append(&events, "transport", "t", 5).await;
    handle.wait_for("transport", live, WAIT).await.unwrap();
    assert_eq!(rows(&store, "events").last(), Some(&("t".to_owned(), 4)));
    assert_eq!(applied.load(Ordering::Relaxed), 66);
    engine.shutdown().await;
}

#[tokio::test]
async fn the_same_version_resumes_where_it_stopped_without_rebuilding() {
    let nats = TestNats::start().await;
    let events = EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap();
    let sled_dir = nats.path().join("sled");
    let gate = Gate::default();
    gate.open();
    let applied = Arc::new(AtomicU64::new(0));
    let first;
    {
        let store = ProjectionStore::open(&sled_dir).unwrap();
        let mut engine = Engine::new(store.clone(), events.jetstream().clone(), EngineConfig::default());
        let handle = engine.register(TotalsV2 { gate: gate.clone(), applied: applied.clone() });
        engine.start();
        for i in 0..10 {
            append(&events, "stock", &format!("a{}", i % 2), i).await;
        }
        first = append(&events, "transport", "t", 1).await;
        handle.wait_for("transport", first, WAIT).await.unwrap();
        engine.shutdown().await;
        assert_eq!(applied.load(Ordering::Relaxed), 22);
    }
    let second = append(&events, "stock", "a0", 1).await;
    let store = ProjectionStore::open(&sled_dir).unwrap();
    let before = store.digest("totals").unwrap();
    let mut engine = Engine::new(store.clone(), events.jetstream().clone(), EngineConfig::default());
    let handle = engine.register(TotalsV2 { gate: gate.clone(), applied: applied.clone() });
    engine.start();
    handle.wait_for("stock", second, WAIT).await.unwrap();
    handle.wait_for("transport", first, WAIT).await.unwrap();
    assert_eq!(applied.load(Ordering::Relaxed), 24, "only the commit written while stopped is applied");
    assert_eq!(rows(&store, "events"), vec![("a0".into(), 12), ("a1".into(), 10), ("t".into(), 2)]);
    assert_ne!(store.digest("totals").unwrap(), before);
    let status = handle.status();
    assert_eq!((status.state, status.version), (ProjectionState::Running, 2));
    engine.shutdown().await;
}

#[tokio::test]
async fn rows_of_a_build_that_kept_no_version_are_rebuilt() {
    let nats = TestNats::start().await;
    let events = EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap();
    let seq = append(&events, "stock", "a", 3).await;
    let store = ProjectionStore::open(&nats.path().join("sled")).unwrap();
    // What a build before versions left: rows (here a wrong total) and a checkpoint, no version.
    let mut tx = store.begin("totals").unwrap();
    tx.put_json("total", b"", &999u64);
    store.commit(tx, &std::collections::HashMap::from([("stock".to_owned(), seq)])).unwrap();
    assert_eq!(store.version("totals").unwrap(), None);

    let mut engine = Engine::new(store.clone(), events.jetstream().clone(), EngineConfig::default());
    let handle = engine.register(Totals);
    engine.start();
    handle.wait_for("stock", seq, WAIT).await.unwrap();
    eventually("the projection running", || handle.status().state == ProjectionState::Running).await;
    assert_eq!(total(&store), 4, "rebuilt from the stream, not kept");
    assert_eq!(store.version("totals").unwrap(), Some(1));
    engine.shutdown().await;
}

/// [`Totals`] under another name.
struct TotalsAs(&'static str);

impl Projection for TotalsAs {
    fn name(&self) -> &'static str {
        self.0
    }
    fn version(&self) -> u32 {
        1
    }
    fn streams(&self) -> &'static [&'static str] {
        Totals.streams()
    }
    fn apply(&self, tx: &mut Tx, event: &RecordedEvent<'_>) -> Result<(), ApplyError> {
        Totals.apply(tx, event)
    }
}

#[tokio::test]
async fn projections_far_behind_take_turns_to_catch_up_within_a_small_read_ahead() {
    let nats = TestNats::start().await;
    let events = EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap();
    let last = append_many(&events, 3000, 60).await;
    let store = ProjectionStore::open(&nats.path().join("sled")).unwrap();
    let config = EngineConfig { batch_size: 64, read_ahead_bytes: 1, catch_up_concurrency: 1, ..Default::default() };
    let mut engine = Engine::new(store.clone(), events.jetstream().clone(), config);
    let handles: Vec<_> = ["one", "two", "three"].map(|name| engine.register(TotalsAs(name))).into();
    engine.start();
    for handle in &handles {
        handle.wait_for("stock", last, WAIT * 3).await.unwrap();
    }
    for name in ["one", "two", "three"] {
        let total: u64 = store.view(name).unwrap().get_json("total", b"").unwrap().unwrap();
        assert_eq!(total, 3000, "{name}");
    }
    engine.shutdown().await;
}
