//! The runtime against a real nats-server: command runner, request/reply hosting, errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::Duration;
use tokio::sync::Notify;

use eventcore::{Aggregate, AggregateId, CommandMeta, DomainEvent, Rejection};
use eventstore::{AggregateRef, EventStore, StoreConfig};
use runtime::{
    parse_payload, Actor, CommandRequest, CommandRunner, ErrorKind, RunnerConfig, ServiceClient, ServiceHost,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use testkit::TestNats;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Default)]
struct Counter {
    value: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum CounterEvent {
    Added { by: u64 },
}
impl DomainEvent for CounterEvent {}

impl Aggregate for Counter {
    const KIND: &'static str = "counter";
    type Command = u64;
    type Event = CounterEvent;

    fn decide(&self, by: &u64) -> Result<Vec<CounterEvent>, Rejection> {
        if self.value + by > 1000 {
            return Err(Rejection::conflict("counter_full", "the counter stops at 1000"));
        }
        Ok(vec![CounterEvent::Added { by: *by }])
    }

    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Added { by } = event;
        self.value += by;
    }
}

async fn store(nats: &TestNats) -> EventStore {
    EventStore::open(nats.client().await, &eventstore::SERVICES, &StoreConfig::default()).await.unwrap()
}

fn id(s: &str) -> AggregateId {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_repeated_command_is_committed_once_and_answered_the_same() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let a = CommandRunner::<Counter>::new(store.clone(), "stock", RunnerConfig::default());
    let b = CommandRunner::<Counter>::new(store.clone(), "stock", RunnerConfig::default());

    let first = a.execute(id("c1"), 5, CommandMeta::new("key-1", "test")).await.unwrap();
    let again = a.execute(id("c1"), 5, CommandMeta::new("key-1", "test")).await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((again.seq, &again.events), (first.seq, &first.events));

    // Another instance whose cache never saw the first commit.
    let elsewhere = b.execute(id("c1"), 5, CommandMeta::new("key-1", "test")).await.unwrap();
    assert!(elsewhere.duplicate);
    assert_eq!(elsewhere.seq, first.seq);

    // Two instances racing with the same key: still one commit.
    let (x, y) = tokio::join!(
        a.execute(id("c2"), 1, CommandMeta::new("key-2", "test")),
        b.execute(id("c2"), 1, CommandMeta::new("key-2", "test"))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.seq, y.seq);
    assert!(x.duplicate ^ y.duplicate, "exactly one of them committed");

    let target = |s: &str| AggregateRef::new("stock", "counter", id(s));
    assert_eq!(store.load(&target("c1"), 0).await.unwrap().len(), 1);
    assert_eq!(store.load(&target("c2"), 0).await.unwrap().len(), 1);
    assert_eq!(a.load(&id("c1")).await.unwrap().0.value, 5);
}

#[tokio::test]
async fn concurrent_instances_converge_by_retrying_conflicts() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let config = RunnerConfig { max_retries: 50, ..Default::default() };
    let runners: Vec<_> =
        (0..3).map(|_| Arc::new(CommandRunner::<Counter>::new(store.clone(), "stock", config.clone()))).collect();
    let mut tasks = Vec::new();
    for (n, runner) in runners.iter().enumerate() {
        for i in 0..15 {
            let runner = runner.clone();
            tasks.push(tokio::spawn(async move {
                runner.execute(id("hot"), 2, CommandMeta::new(format!("r{n}-{i}"), "test")).await
            }));
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (state, version) = runners[0].load(&id("hot")).await.unwrap();
    assert_eq!((state.value, version), (90, 45), "every increment applied exactly once");

    // A domain rejection is an answer, not a failure, and stores nothing.
    let err = runners[1].execute(id("hot"), 2000, CommandMeta::new("too-much", "test")).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Conflict, "counter_full"));
    assert_eq!(runners[2].load(&id("hot")).await.unwrap().1, 45);
}

#[derive(Deserialize)]
struct AddBody {
    by: u64,
}

/// What the test sees of one instance: requests served, and a gate that holds the command
/// `{"by": 7}` in flight until the test opens it.
#[derive(Clone, Default)]
struct Probe {
    commands: Arc<AtomicUsize>,
    queries: Arc<AtomicUsize>,
    held: Arc<Notify>,
    release: Arc<Notify>,
}

fn host(runner: Arc<CommandRunner<Counter>>, probe: Probe) -> ServiceHost {
    let mut host = ServiceHost::new("stock");
    let p = probe.clone();
    host.command("add", move |request: CommandRequest| {
        let (runner, probe) = (runner.clone(), p.clone());
        async move {
            probe.commands.fetch_add(1, Ordering::SeqCst);
            let body: AddBody = parse_payload(&request.payload)?;
            if body.by == 7 {
                probe.held.notify_one();
                probe.release.notified().await;
            }
            runner.execute(id("shared"), body.by, CommandMeta::new(request.command_id, request.actor.to_string())).await
        }
    });
    host.query("value", move |_request| {
        let probe = probe.clone();
        async move {
            probe.queries.fetch_add(1, Ordering::SeqCst);
            Ok::<_, runtime::ServiceError>(json!({"ok": true}))
        }
    });
    host
}

#[tokio::test]
async fn instances_share_requests_and_errors_travel_as_data() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    // Both instances share one gate, so the held command is released whichever takes it.
    let gate = Probe::default();
    let probes: Vec<Probe> =
        (0..2).map(|_| Probe { commands: Default::default(), queries: Default::default(), ..gate.clone() }).collect();
    for probe in &probes {
        let runner = Arc::new(CommandRunner::new(store.clone(), "stock", RunnerConfig::default()));
        let h = Arc::new(host(runner, probe.clone()));
        tracker.spawn(h.serve(nats.client().await, cancel.clone(), tracker.clone()));
    }
    let client = ServiceClient::new(nats.client().await, Duration::from_secs(5));
    let actor = Actor::system("test");
    // Wait until both instances have answered a query: both are subscribed.
    let query = runtime::QueryRequest::new(actor.clone(), json!({}));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while probes.iter().any(|p| p.queries.load(Ordering::SeqCst) == 0) {
        assert!(std::time::Instant::now() < deadline, "the two instances never both answered");
        let _ = client.query::<serde_json::Value>("stock", "value", &query).await;
        tokio::task::yield_now().await;
    }

    for i in 0..40 {
        let request = CommandRequest::new(format!("cmd-{i}"), actor.clone(), json!({"by": 1}));
        client.command("stock", "add", &request).await.unwrap();
    }
    let served: Vec<usize> = probes.iter().map(|p| p.commands.load(Ordering::SeqCst)).collect();
    assert_eq!(served.iter().sum::<usize>(), 40);
    assert!(served.iter().all(|n| *n > 0), "both instances of the queue group served requests: {served:?}");

    let bad = CommandRequest::new("bad", actor.clone(), json!({"by": "one"}));
    let err = client.command("stock", "add", &bad).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Validation, "invalid_payload"));
    let err = client.command("stock", "nope", &bad).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::NotFound, "unknown_command"));
    let err = client.command("transport", "add", &bad).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Unavailable, "service_unavailable"));
    let spaced = CommandRequest::new("has space", actor.clone(), json!({"by": 1}));
    assert_eq!(client.command("stock", "add", &spaced).await.unwrap_err().code, "invalid_command_id");

    // Shutdown drains: a request in flight when the hosts stop still gets its answer.
    let slow = CommandRequest::new("slow", actor.clone(), json!({"by": 7}));
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.command("stock", "add", &slow).await })
    };
    gate.held.notified().await;
    cancel.cancel();
    gate.release.notify_one();
    tracker.close();
    tracker.wait().await;
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.version, 41);
}

#[tokio::test]
async fn queries_waiting_never_hold_up_commands() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let runner = Arc::new(CommandRunner::new(store.clone(), "stock", RunnerConfig::default()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let waiting = Arc::new(AtomicUsize::new(0));
    let mut h = host(runner, Probe::default());
    let (g, w) = (gate.clone(), waiting.clone());
    // A query that waits as one waiting for its projection would.
    h.query("slow", move |_request| {
        let (gate, waiting) = (g.clone(), w.clone());
        async move {
            waiting.fetch_add(1, Ordering::SeqCst);
            let _ = gate.acquire().await;
            Ok::<_, runtime::ServiceError>(json!({}))
        }
    });
    tracker.spawn(Arc::new(h).serve(nats.client().await, cancel.clone(), tracker.clone()));
    let client = ServiceClient::new(nats.client().await, Duration::from_secs(30));
    let actor = Actor::system("test");
    let mut queries = Vec::new();
    for _ in 0..300 {
        let (client, query) = (client.clone(), runtime::QueryRequest::new(actor.clone(), json!({})));
        queries.push(tokio::spawn(async move { client.query::<serde_json::Value>("stock", "slow", &query).await }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while waiting.load(Ordering::SeqCst) < 256 {
        assert!(std::time::Instant::now() < deadline, "the queries never filled their slots");
        tokio::task::yield_now().await;
    }
    // Every query slot is taken; a command still goes through.
    let quick = ServiceClient::new(nats.client().await, Duration::from_secs(5));
    let request = CommandRequest::new("while-queries-wait", actor.clone(), json!({"by": 1}));
    let reply = quick.command("stock", "add", &request).await.expect("a command is not held up by queries");
    assert_eq!(reply.version, 1);
    gate.add_permits(1000);
    for q in queries {
        q.await.unwrap().unwrap();
    }
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn a_callers_key_gets_its_first_answer_back_whatever_changed() {
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let runner = Arc::new(CommandRunner::new(store.clone(), "stock", RunnerConfig::default()));
    let probe = Probe::default();
    let mut h = host(runner, probe.clone());
    let journal =
        runtime::AnswerJournal::open(store.jetstream(), 1, Duration::ZERO, Duration::from_secs(60)).await.unwrap();
    h.remember_answers(journal);
    tracker.spawn(Arc::new(h).serve(nats.client().await, cancel.clone(), tracker.clone()));
    let client = ServiceClient::new(nats.client().await, Duration::from_secs(10));
    let send = |caller: &str, key: &str, by: u64| {
        let mut request = CommandRequest::new(key, Actor::admin("coordinator"), json!({"by": by}));
        request.caller = Some(caller.to_owned());
        let client = client.clone();
        async move { client.command("stock", "add", &request).await }
    };

    let first = send("t1", "k", 600).await.unwrap();
    assert!(!first.duplicate);
    // The counter is now too full for another 600: the retry is answered before any check.
    let again = send("t1", "k", 600).await.unwrap();
    assert_eq!(again, runtime::CommandReply { duplicate: true, ..first.clone() });
    assert_eq!(probe.commands.load(Ordering::SeqCst), 1, "the handler ran once");
    // Another caller's same key is another command, decided on today's state.
    let err = send("t2", "k", 600).await.unwrap_err();
    assert_eq!(err.code, "counter_full");
    // A key names one request: the same key with another body is refused.
    assert_eq!(send("t1", "k", 5).await.unwrap_err().code, "idempotency_key_reused");
    // A refused command is not remembered: its key is free for the request that fits.
    let fits = send("t2", "k", 100).await.unwrap();
    assert!(!fits.duplicate && fits.version == 2, "{fits:?}");
    assert!(send("t2", "k", 100).await.unwrap().duplicate);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn broadcasts_say_when_nobody_listens_and_calls_fail_at_once_while_nats_is_down() {
    use futures::StreamExt;
    use runtime::Collect;

    let mut nats = TestNats::start().await;
    let client = ServiceClient::new(nats.client().await, Duration::from_secs(10));
    // Nobody listens: the server says so, and the answer comes at once rather than after the wait.
    let started = std::time::Instant::now();
    let wait = Collect::within(Duration::from_secs(10));
    let nobody = client.broadcast::<_, u64>("test.ctl", &json!({}), wait).await.unwrap();
    assert!(nobody.nobody_listens && nobody.answers.is_empty());
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    // Two nodes answer; the wait ends with the answers expected.
    for n in 1..=2u64 {
        let node = nats.client().await;
        let mut sub = node.subscribe("test.ctl").await.unwrap();
        node.flush().await.unwrap();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let body = serde_json::to_vec(&json!({ "ok": n })).unwrap();
                node.publish(m.reply.unwrap(), body.into()).await.unwrap();
            }
        });
    }
    // A flush does not wait for the server to have taken a subscription in: ask until both
    // nodes are heard once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let probe = Collect { expect: Some(2), ..Collect::within(Duration::from_millis(500)) };
        if client.broadcast::<_, u64>("test.ctl", &json!({}), probe).await.unwrap().answers.len() == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the two nodes never both listened");
    }
    let started = std::time::Instant::now();
    let collect = Collect { expect: Some(2), ..Collect::within(Duration::from_secs(10)) };
    let mut both = client.broadcast::<_, u64>("test.ctl", &json!({}), collect).await.unwrap();
    both.answers.sort();
    assert_eq!((both.answers, both.nobody_listens), (vec![1, 2], false));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // A call in flight when the server dies (its service took the request and has not
    // answered) fails at once too: its answer would never come.
    let silent = nats.client().await;
    let mut taken = silent.subscribe("foodaid.cmd.stock.slow").await.unwrap();
    silent.flush().await.unwrap();
    // A flush does not wait for the server to have taken the subscription in: probe until one
    // arrives, so the request below finds its taker.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        client.nats().publish("foodaid.cmd.stock.slow", "probe".into()).await.unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), taken.next()).await {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the subscription never took a message");
    }
    // Probes still on their way are not the request.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), taken.next()).await {}
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            let request = CommandRequest::new("c0", Actor::system("test"), json!({}));
            let started = std::time::Instant::now();
            (client.command("stock", "slow", &request).await.unwrap_err(), started)
        }
    });
    let held = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), taken.next())
            .await
            .expect("the service took the request within 10 s")
            .expect("subscribed");
        if message.reply.is_some() {
            break message;
        }
    };

    // The server is gone: calls answer service_unavailable at once, not after their 10 s.
    nats.server.kill();
    let (err, sent) = in_flight.await.unwrap();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Unavailable, "service_unavailable"), "{err:?}");
    assert!(sent.elapsed() < Duration::from_secs(3), "the call in flight took {:?}", sent.elapsed());
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.nats().connection_state() == async_nats::connection::State::Connected {
        assert!(std::time::Instant::now() < deadline, "the client never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    let request = CommandRequest::new("c1", Actor::system("test"), json!({"by": 1}));
    let err = client.command("stock", "add", &request).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Unavailable, "service_unavailable"));
    let err = client.broadcast::<_, u64>("test.ctl", &json!({}), wait).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Unavailable, "service_unavailable"));
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

/// Counts events; holds its batch while the gate is closed, saying so in `held`.
struct Gated {
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    held: Arc<AtomicUsize>,
}

impl projections::Projection for Gated {
    fn version(&self) -> u32 {
        1
    }

    fn name(&self) -> &'static str {
        "gated"
    }
    fn streams(&self) -> &'static [&'static str] {
        &["stock"]
    }
    fn apply(
        &self,
        tx: &mut projections::Tx,
        _: &projections::RecordedEvent<'_>,
    ) -> Result<(), projections::ApplyError> {
        let (open, turned) = &*self.gate;
        let mut open = open.lock().unwrap();
        if !*open {
            self.held.fetch_add(1, Ordering::SeqCst);
        }
        while !*open {
            open = turned.wait(open).unwrap();
        }
        let n: u64 = tx.get_json("count", b"n")?.unwrap_or(0);
        tx.put_json("count", b"n", &(n + 1));
        Ok(())
    }
}

/// Opens the gate when dropped: a failing test must not leave a batch held, or the runtime
/// would wait for that blocking thread forever.
struct OpenOnDrop(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl OpenOnDrop {
    fn set(&self, open: bool) {
        let (flag, turned) = &*self.0;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = open;
        turned.notify_all();
    }
}

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.set(true);
    }
}

/// The `gated` projection as node `n1` reports it, asked directly.
async fn gated(client: &ServiceClient) -> projections::ProjectionStatus {
    let started = std::time::Instant::now();
    let nodes = client.node_statuses_on(&["n1".to_owned()], Duration::from_secs(10)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "the answer of the one node expected ends the wait");
    assert_eq!(nodes.len(), 1, "n1 answers while its projection is being replayed");
    nodes[0].projections.iter().find(|p| p.name == "gated").unwrap().clone()
}

#[tokio::test]
async fn a_node_answers_and_announces_itself_while_a_replay_waits() {
    use futures::StreamExt;
    use projections::ProjectionState;

    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let runner = CommandRunner::<Counter>::new(store.clone(), "stock", RunnerConfig::default());
    let gate = Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
    let held = Arc::new(AtomicUsize::new(0));
    let projections = projections::ProjectionStore::open(&nats.path().join("sled")).unwrap();
    let config = projections::EngineConfig { node: "n1".into(), batch_size: 16, ..Default::default() };
    let mut engine = projections::Engine::new(projections, store.jetstream().clone(), config);
    let handle = engine.register(Gated { gate: gate.clone(), held: held.clone() });
    let gate = OpenOnDrop(gate);
    engine.start();
    let engine = Arc::new(engine);
    for i in 0..3 {
        runner.execute(id("c"), 1, CommandMeta::new(format!("k{i}"), "test")).await.unwrap();
    }

    let client = nats.client().await;
    let mut presence = client.subscribe(runtime::CTL_PRESENCE).await.unwrap();
    let cancel = CancellationToken::new();
    let info = runtime::NodeInfo { node: "n1".into(), services: vec!["stock".into()], started_at: chrono::Utc::now() };
    let control = tokio::spawn(runtime::serve_control(client.clone(), engine.clone(), info, cancel.clone()));
    let services = ServiceClient::new(client.clone(), Duration::from_secs(5));

    // The node announces itself, with its projection's progress.
    let last = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), presence.next()).await.unwrap().unwrap();
        let a: runtime::Announcement = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!((a.status.node.as_str(), a.every_ms, a.leaving), ("n1", 1000, false));
        let p = a.status.projections.iter().find(|p| p.name == "gated").unwrap();
        if let Some(seq) = p.checkpoints.get("stock").filter(|_| p.state == ProjectionState::Running) {
            break *seq;
        }
    };
    assert!(last >= 3);

    // A batch is held inside the projection: a replay must wait for it to land.
    gate.set(false);
    runner.execute(id("c"), 1, CommandMeta::new("k3", "test")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the projection never took the new event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let request = runtime::ReplayRequest { projection: "gated".into(), node: None };
    let answers = services.replay_on(&request, &["n1".to_owned()], Duration::from_secs(10)).await.unwrap();
    assert_eq!(answers, [runtime::ReplayReply { node: "n1".into(), started: vec!["gated".into()] }]);
    // Answered, and still answering, while the replay waits: rebuilding, from nothing.
    let during = gated(&services).await;
    assert_eq!((during.state, during.checkpoints.len()), (ProjectionState::Rebuilding, 0), "{during:?}");
    assert_eq!(held.load(Ordering::SeqCst), 1, "the batch is still held");
    // Asked again meanwhile: the same rebuild, not a second one.
    let again = services.replay_on(&request, &["n1".to_owned()], Duration::from_secs(10)).await.unwrap();
    assert_eq!(again[0].started, ["gated"]);

    // The gate opens: the rebuild runs to the end and counts every event once.
    gate.set(true);
    handle.wait_for("stock", last + 1, Duration::from_secs(20)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let after = gated(&services).await;
        if after.state == ProjectionState::Running && after.checkpoints.get("stock") == Some(&(last + 1)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the rebuild did not end: {after:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stopping, it says it leaves.
    cancel.cancel();
    control.await.unwrap().unwrap();
    let leaving = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), presence.next()).await.unwrap().unwrap();
        let a: runtime::Announcement = serde_json::from_slice(&message.payload).unwrap();
        if a.leaving {
            break a;
        }
    };
    assert_eq!(leaving.status.node, "n1");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_reactors_consumer_takes_this_builds_settings_and_skips_nothing() {
    use runtime::{Reaction, Reactor, ReactorSettings};
    let nats = TestNats::start().await;
    let store = store(&nats).await;
    let runner = CommandRunner::<Counter>::new(store.clone(), "stock", RunnerConfig::default());
    let js = async_nats::jetstream::new(nats.client().await);
    let seen = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let reactor = |settings: ReactorSettings, filter: &str| {
        let seen = seen.clone();
        let mut r = Reactor::new("probe", "stock", filter, move |reaction: Reaction| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(reaction.seq);
                Ok(())
            }
        });
        r.settings = settings;
        r
    };
    let run = |r: Reactor, until: usize| {
        let (js, seen) = (js.clone(), seen.clone());
        async move {
            let cancel = CancellationToken::new();
            let task = tokio::spawn(r.run(js, cancel.clone()));
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while seen.lock().unwrap().len() < until {
                assert!(std::time::Instant::now() < deadline, "handled {:?}", seen.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
            task.await.unwrap();
        }
    };
    let info = |js: async_nats::jetstream::Context| async move {
        let stream = js.get_stream("stock").await.unwrap();
        stream.consumer_info("react_probe").await.unwrap().config.clone()
    };
    for i in 0..3 {
        runner.execute(id("c1"), 1, CommandMeta::new(format!("a{i}"), "test")).await.unwrap();
    }
    // An older build's consumer: other settings, three commits handled.
    let old = ReactorSettings { ack_wait: Duration::from_secs(30), max_ack_pending: 1000 };
    run(reactor(old, "stock.counter.>"), 3).await;
    assert_eq!(info(js.clone()).await.max_ack_pending, 1000);
    for i in 0..2 {
        runner.execute(id("c2"), 1, CommandMeta::new(format!("b{i}"), "test")).await.unwrap();
    }
    // This build's settings reach it on start, in place, and it goes on from where it was.
    run(reactor(ReactorSettings::default(), "stock.counter.>"), 5).await;
    let config = info(js.clone()).await;
    assert_eq!((config.ack_wait, config.max_ack_pending), (Duration::from_secs(10), 32));
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4, 5], "nothing skipped, nothing handled twice");
    // A filter the server cannot change in place: the consumer is made again from its floor.
    for i in 0..2 {
        runner.execute(id("c3"), 1, CommandMeta::new(format!("c{i}"), "test")).await.unwrap();
    }
    run(reactor(ReactorSettings::default(), "stock.>"), 7).await;
    assert_eq!(info(js.clone()).await.filter_subject, "stock.>");
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4, 5, 6, 7]);
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_absurd_dates_never_reach_a_handler() {
    let nats = TestNats::start().await;
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let reached = Arc::new(AtomicUsize::new(0));
    let mut host = ServiceHost::new("stock");
    let seen = reached.clone();
    host.command("boom", move |request| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let by: u64 = parse_payload::<serde_json::Value>(&request.payload)?["by"].as_u64().unwrap_or(0);
            // A bug: arithmetic on what a user sent.
            let doubled = by.checked_mul(2).expect("no overflow");
            Err(runtime::ServiceError::validation("never", doubled))
        }
    });
    let seen = reached.clone();
    host.query("boom", move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let items: Vec<u64> = Vec::new();
            Ok::<u64, runtime::ServiceError>(items[3])
        }
    });
    host.command("strict", |request| async move {
        let by: u64 = parse_payload(&request.payload)?;
        Err(runtime::ServiceError::validation("never", by))
    });
    tracker.spawn(Arc::new(host).serve(nats.client().await, cancel.clone(), tracker.clone()));
    // Longer than the test may take: an answer that is not `timeout` came from the host.
    let client = ServiceClient::new(nats.client().await, Duration::from_secs(60));
    let actor = Actor::system("test");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let panicked = loop {
        let request = CommandRequest::new("k1", actor.clone(), json!({"by": u64::MAX}));
        match client.command("stock", "boom", &request).await {
            Err(e) if e.code == "service_unavailable" && std::time::Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            other => break other.unwrap_err(),
        }
    };
    assert_eq!((panicked.kind, panicked.code.as_str()), (ErrorKind::Internal, "internal"));
    assert!(!panicked.message.contains("overflow"), "the panic's text is logged, not returned: {}", panicked.message);
    let query = runtime::QueryRequest::new(actor.clone(), json!({}));
    let err = client.query::<serde_json::Value>("stock", "boom", &query).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Internal, "internal"));
    assert_eq!(reached.load(Ordering::SeqCst), 2);

    // A year chrono can hold but no fact can have is refused before any handler runs, wherever
    // it is: in a body, in a query's parameters, as the time it happened.
    for payload in [json!({"assessed_on": "+262142-12-31"}), json!({"lines": [{"date": "0000-01-01"}]})] {
        let request = CommandRequest::new("k2", actor.clone(), payload);
        assert_eq!(client.command("stock", "boom", &request).await.unwrap_err().code, "date_out_of_range");
    }
    let mut request = CommandRequest::new("k3", actor.clone(), json!({}));
    request.occurred_at = Some("2201-01-01T00:00:00Z".parse().unwrap());
    assert_eq!(client.command("stock", "boom", &request).await.unwrap_err().code, "date_out_of_range");
    let query = runtime::QueryRequest::new(actor.clone(), json!({"as_of": "1899-12-31"}));
    assert_eq!(client.query::<serde_json::Value>("stock", "boom", &query).await.unwrap_err().code, "date_out_of_range");
    let request = CommandRequest::new("k4", actor.clone(), json!({"reason": "a\u{202E}b"}));
    assert_eq!(client.command("stock", "boom", &request).await.unwrap_err().code, "invalid_text");
    assert_eq!(reached.load(Ordering::SeqCst), 2, "no handler saw them");

    // An error quoting what was sent (serde quotes a whole string, escaped once more in the
    // reply) would not fit in a NATS message, and its caller would wait for its timeout: the
    // message is cut instead.
    let quotes = CommandRequest::new("k5", actor.clone(), json!("\"".repeat(300_000)));
    let err = client.command("stock", "strict", &quotes).await.unwrap_err();
    assert_eq!(err.code, "invalid_payload");
    assert!(err.message.chars().count() <= 1_001, "cut: {} characters", err.message.chars().count());
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}
