//! Test support for foodaid's integration tests: each test gets its own real `nats-server`
//! (or 3-node cluster) on free loopback ports with a temporary data directory; dropping the
//! handle kills the server and removes the directory. No mocks of NATS.

use std::time::{Duration, Instant};

use natsd::{ClusterOptions, NatsServer, ServerOptions};
use tempfile::TempDir;

/// One JetStream-enabled server for one test.
pub struct TestNats {
    pub server: NatsServer,
    // Declared after `server`: the process dies before its directory is removed.
    dir: TempDir,
}

impl TestNats {
    pub async fn start() -> TestNats {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options = ServerOptions::new(dir.path().join("nats"));
        options.server_name = "test".into();
        let server = NatsServer::start(options).await.expect("nats-server starts (is it installed?)");
        TestNats { server, dir }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("connect to test nats-server")
    }

    /// A scratch directory that lives as long as the server (for sled stores).
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A JetStream cluster of `n` nodes on loopback.
pub struct TestCluster {
    pub nodes: Vec<NatsServer>,
    dir: TempDir,
}

impl TestCluster {
    pub async fn start(n: usize) -> TestCluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster_ports: Vec<u16> = (0..n).map(|_| natsd::free_port().expect("free port")).collect();
        let routes: Vec<String> = cluster_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let mut nodes = Vec::new();
        for (i, port) in cluster_ports.iter().enumerate() {
            let mut options = ServerOptions::new(dir.path().join(format!("n{i}")));
            options.server_name = format!("n{i}");
            options.cluster = Some(ClusterOptions {
                name: "foodaid-test".into(),
                port: *port,
                routes: routes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, r)| r.clone()).collect(),
            });
            nodes.push(NatsServer::start(options).await.expect("cluster node starts"));
        }
        let cluster = TestCluster { nodes, dir };
        cluster.wait_for_jetstream(Duration::from_secs(30)).await;
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// Every node, as a client's server list.
    pub fn server_addrs(&self) -> Vec<async_nats::ServerAddr> {
        self.urls().iter().map(|u| u.parse().expect("valid url")).collect()
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    async fn wait_for_jetstream(&self, limit: Duration) {
        let client = async_nats::connect(self.server_addrs()).await.expect("connect to cluster");
        let deadline = Instant::now() + limit;
        // A raw $JS.API.INFO rather than the client's typed call: nats-server 2.9 answers with
        // fewer fields than the client's type expects.
        loop {
            let answer = client.request("$JS.API.INFO", "".into()).await;
            match answer {
                Ok(m) if !String::from_utf8_lossy(&m.payload).contains("\"error\"") => return,
                _ => {}
            }
            assert!(Instant::now() < deadline, "cluster JetStream not ready after {limit:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Sends test logs to the test harness's captured output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
}
