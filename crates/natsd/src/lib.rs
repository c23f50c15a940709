//! Starts and stops a `nats-server -js` child process.
//!
//! `foodaid up` uses it when no NATS URL is configured, and the test kit uses it to give every
//! integration test its own server. It is not a NATS client and knows nothing of streams: it only
//! owns a process, its port and its data directory. The child is bound to its parent with
//! `PR_SET_PDEATHSIG`, so a `kill -9` of foodaid does not leave an orphan server holding the data
//! directory. It reaps the child and says when it died ([`NatsServer::exited`]), and starts it
//! again on the same port and data directory ([`NatsServer::restart`]), so that `foodaid up` can
//! supervise it.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to run one server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Program to run; `nats-server` from `PATH` by default.
    pub binary: PathBuf,
    /// JetStream storage and the server log live here.
    pub data_dir: PathBuf,
    pub host: String,
    /// Client port; `None` picks a free one.
    pub port: Option<u16>,
    pub server_name: String,
    pub cluster: Option<ClusterOptions>,
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub name: String,
    pub port: u16,
    /// `nats://host:port` of the other nodes' cluster listeners.
    pub routes: Vec<String>,
}

impl ServerOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerOptions {
            binary: PathBuf::from("nats-server"),
            data_dir: data_dir.into(),
            host: "127.0.0.1".into(),
            port: None,
            server_name: "foodaid".into(),
            cluster: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("nats-server not found at {0:?}: install it (apt-get install -y nats-server) or configure nats.url")]
    NotInstalled(PathBuf),
    #[error("cannot start nats-server: {0}")]
    Io(#[from] io::Error),
    #[error("nats-server exited during start-up ({status}); see {log}")]
    Exited { status: String, log: String },
    #[error("nats-server did not accept connections on {addr} within {secs} s; see {log}")]
    NotReady { addr: SocketAddr, secs: u64, log: String },
}

/// A running server; killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    /// `None` once it has been reaped (or killed) and until it is restarted.
    child: Option<Child>,
    addr: SocketAddr,
    options: ServerOptions,
}

/// How long a server has to accept connections after it is spawned.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// How often a supervisor looks whether the child is still alive: a reap is one cheap system
/// call, and a dead server is noticed by the clients at once anyway (their socket closes).
const EXIT_POLL: Duration = Duration::from_millis(100);

/// Asks the kernel for a free TCP port on loopback.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl NatsServer {
    /// Starts the server and waits until it accepts connections.
    pub async fn start(mut options: ServerOptions) -> Result<NatsServer, StartError> {
        let port = match options.port {
            Some(p) => p,
            None => free_port()?,
        };
        // Fixed from now on: a restart comes back on the same port, so clients reconnect to the
        // URL they know.
        options.port = Some(port);
        let addr: SocketAddr = format!("{}:{}", options.host, port)
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad host: {e}")))?;
        let mut server = NatsServer { child: None, addr, options };
        server.spawn_and_wait().await?;
        tracing::info!(%addr, data_dir = %server.options.data_dir.display(), "nats-server started");
        Ok(server)
    }

    /// Starts the server again, on the same port and data directory, after it died. A server
    /// still running is left as it is.
    pub async fn restart(&mut self) -> Result<(), StartError> {
        if self.try_exited()?.is_none() && self.child.is_some() {
            return Ok(());
        }
        self.spawn_and_wait().await?;
        tracing::info!(addr = %self.addr, data_dir = %self.options.data_dir.display(), "nats-server restarted");
        Ok(())
    }

    /// Spawns the child and waits until it accepts connections. The child is kept in `self` while
    /// waiting, so that a caller giving up (a shutdown) still stops it; it is killed and reaped if
    /// it never gets ready.
    async fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let options = &self.options;
        let port = self.addr.port();
        std::fs::create_dir_all(&options.data_dir)?;
        let log_path = options.data_dir.join("nats-server.log");
        let log = File::options().create(true).append(true).open(&log_path)?;

        let mut cmd = Command::new(&options.binary);
        cmd.arg("-js")
            .args(["-a", &options.host])
            .args(["-p", &port.to_string()])
            .arg("-sd")
            .arg(options.data_dir.join("jetstream"))
            .args(["-n", &options.server_name])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(cluster) = &options.cluster {
            cmd.args(["--cluster_name", &cluster.name])
                .args(["--cluster", &format!("nats://{}:{}", options.host, cluster.port)]);
            if !cluster.routes.is_empty() {
                cmd.args(["--routes", &cluster.routes.join(",")]);
            }
        }
        bind_to_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StartError::NotInstalled(options.binary.clone()),
            _ => StartError::Io(e),
        })?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready(READY_WITHIN).await {
            self.kill();
            return Err(e);
        }
        Ok(())
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exited()? {
                return Err(StartError::Exited { status: status.to_string(), log: self.log_path() });
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError::NotReady { addr: self.addr, secs: limit.as_secs(), log: self.log_path() });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log_path(&self) -> String {
        self.options.data_dir.join("nats-server.log").display().to_string()
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id of the running child, if there is one.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the child has ended (it is reaped then, and forgotten), `None` while it
    /// runs or when there is no child.
    fn try_exited(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Waits until the child ends, reaps it and returns how it ended; never returns while it runs
    /// (nor when there is no child: call [`restart`](Self::restart) first). Cancel-safe.
    pub async fn exited(&mut self) -> ExitStatus {
        loop {
            match self.try_exited() {
                Ok(Some(status)) => return status,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check on nats-server"),
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the server to shut down (SIGTERM) and waits up to 10 s before killing it.
    pub async fn stop(self) {
        self.stop_within(Duration::from_secs(10)).await
    }

    /// Asks the server to shut down (SIGTERM) and waits up to `limit` before killing it.
    pub async fn stop_within(mut self, limit: Duration) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    tracing::info!(addr = %self.addr, "nats-server stopped");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tracing::warn!(addr = %self.addr, "nats-server did not stop in time, killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The kernel sends SIGKILL to the child when the *thread* that spawned it ends. foodaid spawns
/// from the main thread or from tokio's worker threads, which live as long as the runtime (no
/// `block_in_place` in the workspace turns one into a blocking thread that could end earlier).
#[allow(unsafe_code)]
fn bind_to_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it only asks the
    // kernel to send SIGKILL to the child when the thread that forked it dies.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn terminate(child: &Child) {
    // SAFETY: sending a signal to a pid we own and have not yet reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}
