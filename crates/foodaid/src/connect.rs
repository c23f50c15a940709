//! Finding NATS: the configured cluster, or the embedded server of the data directory.
//!
//! Only `foodaid up` starts a nats-server ([`Embed::Own`]), and then supervises it: a server that
//! dies is started again on the same port and JetStream directory, with a growing delay if it
//! keeps dying. Administrative commands ([`Embed::Running`]) reach the platform that runs and
//! never start a server of their own: a second server on the same JetStream directory, or a fresh
//! one in `./data`, would split the platform (a token written there is refused by the real one).

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use natsd::{NatsServer, ServerOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

pub struct Connection {
    pub client: async_nats::Client,
    /// Where this connection was found, for messages ("nats://... (from data/nats.url)").
    pub target: String,
    /// The embedded server this process runs, watched and restarted; stopped by
    /// [`Connection::close`].
    supervisor: Option<Supervisor>,
    /// `nats.url` and `nats.pid` of the embedded server, removed on close.
    files: Vec<PathBuf>,
    /// Held while `foodaid up` runs: one platform per data directory.
    _lock: Option<File>,
    /// Set while closing, so the expected disconnection is not reported as a problem.
    closing: Arc<AtomicBool>,
}

/// How a command may reach NATS when none is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embed {
    /// `foodaid up`: start one and supervise it; refuse if another foodaid runs on this data dir.
    Own,
    /// Everything else: the server of the running `foodaid up` of the data dir, or fail.
    Running,
}

/// The platform a command was pointed at is not there. The binary prints it as
/// `error: <code>: <message>` and exits with [`Unreachable::EXIT_CODE`].
#[derive(Debug)]
pub struct Unreachable {
    /// `platform_unreachable` (no NATS where we looked) or `no_running_node` (NATS answers, no
    /// foodaid node does).
    pub code: &'static str,
    pub message: String,
}

impl Unreachable {
    pub const EXIT_CODE: u8 = 3;

    pub fn platform(message: impl Into<String>) -> Self {
        Unreachable { code: "platform_unreachable", message: message.into() }
    }

    pub fn no_node(message: impl Into<String>) -> Self {
        Unreachable { code: "no_running_node", message: message.into() }
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Unreachable {}

pub fn url_file(settings: &Settings) -> PathBuf {
    settings.data_dir.join("nats.url")
}

/// The embedded server's process id, rewritten at each restart (for operators and tests).
pub fn pid_file(settings: &Settings) -> PathBuf {
    settings.data_dir.join("nats.pid")
}

fn lock_file(settings: &Settings) -> PathBuf {
    settings.data_dir.join("foodaid.lock")
}

/// The data directory as an absolute path, for messages that must say where we looked.
pub fn shown(dir: &Path) -> String {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()).display().to_string()
}

/// Delay before the client's `attempts`-th reconnection: at once, then doubling from 50 ms up to
/// 2 s, so that a restarted local server is found within 2 s, and a cluster node that is away
/// is not hammered. The client retries forever (`max_reconnects(None)`).
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(6);
    Duration::from_millis(50 * 2u64.pow(exp)).min(Duration::from_secs(2))
}

async fn connect_to(urls: &[String], name: &str, closing: Arc<AtomicBool>) -> anyhow::Result<async_nats::Client> {
    let addrs: Vec<async_nats::ServerAddr> =
        urls.iter().map(|u| u.parse().with_context(|| format!("invalid NATS URL {u:?}"))).collect::<Result<_, _>>()?;
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let closing = closing.load(Ordering::Relaxed);
            async move {
                match event {
                    async_nats::Event::Disconnected if closing => tracing::debug!("nats disconnected"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("nats disconnected; calls answer service_unavailable until it is back")
                    }
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    other => tracing::debug!(event = %other, "nats event"),
                }
            }
        })
        .connect(addrs)
        .await?;
    Ok(client)
}

pub async fn connect(settings: &Settings, embed: Embed) -> anyhow::Result<Connection> {
    let name = format!("foodaid-{}", settings.node.name);
    let closing = Arc::new(AtomicBool::new(false));
    let urls = settings.nats_urls();
    let lock = match embed {
        Embed::Own => Some(lock_data_dir(settings)?),
        Embed::Running => None,
    };
    if !urls.is_empty() {
        let target = format!("{} (nats.url)", urls.join(","));
        let client = match connect_to(&urls, &name, closing.clone()).await {
            Ok(client) => client,
            Err(e) if embed == Embed::Running => {
                return Err(Unreachable::platform(format!("cannot reach NATS at {target}: {e}")).into())
            }
            Err(e) => return Err(e.context(format!("cannot connect to NATS at {target}"))),
        };
        return Ok(Connection { client, target, supervisor: None, files: Vec::new(), _lock: lock, closing });
    }
    let file = url_file(settings);
    if embed == Embed::Running {
        return reach_embedded(settings, &file, &name, closing).await;
    }
    // The data dir is ours (locked): a `nats.url` left there by a run that was killed names no
    // server of ours, whatever answers at that address now.
    let mut options = ServerOptions::new(settings.nats_dir());
    options.binary = settings.nats.server_binary.clone();
    options.server_name = format!("foodaid-{}", settings.node.name);
    let server = NatsServer::start(options).await.context("starting the embedded nats-server")?;
    let pid = pid_file(settings);
    std::fs::write(&file, server.url()).with_context(|| format!("writing {}", file.display()))?;
    write_pid(&pid, &server);
    let target = format!("{} (embedded)", server.url());
    let client = connect_to(&[server.url()], &name, closing.clone())
        .await
        .with_context(|| format!("cannot connect to the embedded nats-server at {}", server.url()))?;
    let supervisor = Supervisor::spawn(server, pid.clone());
    Ok(Connection { client, target, supervisor: Some(supervisor), files: vec![file, pid], _lock: lock, closing })
}

/// The embedded server of the `foodaid up` that holds the data directory, or why there is none.
async fn reach_embedded(
    settings: &Settings,
    file: &Path,
    name: &str,
    closing: Arc<AtomicBool>,
) -> anyhow::Result<Connection> {
    let dir = shown(&settings.data_dir);
    let recorded = std::fs::read_to_string(file).ok().map(|u| u.trim().to_owned());
    let url = match (recorded, data_dir_locked(settings)) {
        (Some(url), true) => url,
        (None, true) => {
            return Err(Unreachable::platform(format!(
                "foodaid up runs with data dir {dir} against a NATS of its configuration, and nats.url is not set \
                 here: set nats.url (FOODAID__NATS__URL) as it has"
            ))
            .into())
        }
        (Some(_), false) => {
            return Err(Unreachable::platform(format!(
                "no foodaid up runs with data dir {dir} ({} is left from a run that did not stop cleanly); start \
                 `foodaid up --data-dir {dir}`, or give the --data-dir (or nats.url) of the running platform",
                shown(file)
            ))
            .into())
        }
        (None, false) => {
            return Err(Unreachable::platform(format!(
                "no foodaid up runs with data dir {dir} ({} does not exist) and nats.url is not set; start `foodaid \
                 up --data-dir {dir}`, or give the --data-dir (or nats.url) of the running platform",
                shown(file)
            ))
            .into())
        }
    };
    let target = format!("{url} (from {})", shown(file));
    match connect_to(std::slice::from_ref(&url), name, closing.clone()).await {
        Ok(client) => Ok(Connection { client, target, supervisor: None, files: Vec::new(), _lock: None, closing }),
        Err(e) => Err(Unreachable::platform(format!(
            "cannot reach NATS at {target}: {e}; foodaid up runs with data dir {dir} but its nats-server is down \
             (it restarts it by itself): try again shortly"
        ))
        .into()),
    }
}

/// Takes the data directory for this process (an advisory `flock`, released by the kernel when
/// the process ends, even by `kill -9`).
fn lock_data_dir(settings: &Settings) -> anyhow::Result<File> {
    let path = lock_file(settings);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(true) => Ok(file),
        Ok(false) => bail!("foodaid already runs with data dir {}; stop it first", shown(&settings.data_dir)),
        Err(e) => Err(anyhow::Error::new(e).context(format!("locking {}", path.display()))),
    }
}

/// Whether a `foodaid up` holds the data directory.
fn data_dir_locked(settings: &Settings) -> bool {
    let Ok(file) = File::open(lock_file(settings)) else {
        return false;
    };
    // Taking a shared lock fails only while the exclusive one is held; ours goes with `file`.
    matches!(flock(&file, libc::LOCK_SH | libc::LOCK_NB), Ok(false))
}

/// `Ok(false)` when another process holds a conflicting lock.
#[allow(unsafe_code)]
fn flock(file: &File, operation: libc::c_int) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `file` keeps open for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        return Ok(true);
    }
    match std::io::Error::last_os_error() {
        e if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        e => Err(e),
    }
}

fn write_pid(path: &Path, server: &NatsServer) {
    if let Some(pid) = server.pid() {
        if let Err(e) = std::fs::write(path, pid.to_string()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the nats-server pid");
        }
    }
}

/// The task that watches the embedded server and starts it again when it dies.
struct Supervisor {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// A server that ran this long before dying is restarted at once; one that keeps dying sooner
/// waits longer and longer, up to [`MAX_RESTART_DELAY`].
const STABLE_AFTER: Duration = Duration::from_secs(60);
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(250);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);

/// How long the embedded server has to stop on SIGTERM before it is killed.
const SERVER_STOP_WITHIN: Duration = Duration::from_secs(5);

/// How long closing waits for what this client sent to reach the server: nothing waits on a
/// server that is down.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

impl Supervisor {
    fn spawn(server: NatsServer, pid_file: PathBuf) -> Supervisor {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(server, pid_file, cancel.clone()));
        Supervisor { cancel, task }
    }

    async fn stop(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the nats-server supervisor failed");
        }
    }
}

async fn supervise(mut server: NatsServer, pid_file: PathBuf, cancel: CancellationToken) {
    let addr = server.addr();
    let mut started = Instant::now();
    let mut delay = Duration::ZERO;
    'watch: loop {
        let status = tokio::select! {
            _ = cancel.cancelled() => break 'watch,
            status = server.exited() => status,
        };
        let ran = started.elapsed();
        delay = if ran >= STABLE_AFTER {
            Duration::ZERO
        } else {
            (delay * 2).clamp(FIRST_RESTART_DELAY, MAX_RESTART_DELAY)
        };
        tracing::error!(%addr, %status, ran_secs = ran.as_secs(), "nats-server died; restarting it");
        for attempt in 1.. {
            if !delay.is_zero() {
                tracing::warn!(%addr, attempt, delay_ms = delay.as_millis() as u64, "restarting nats-server after a delay");
            }
            tokio::select! {
                _ = cancel.cancelled() => break 'watch,
                _ = tokio::time::sleep(delay) => {}
            }
            let restarted = tokio::select! {
                _ = cancel.cancelled() => break 'watch,
                restarted = server.restart() => restarted,
            };
            match restarted {
                Ok(()) => {
                    started = Instant::now();
                    write_pid(&pid_file, &server);
                    tracing::warn!(%addr, attempt, pid = server.pid(), "nats-server restarted on the same port and store");
                    continue 'watch;
                }
                Err(e) => {
                    tracing::error!(%addr, attempt, error = %e, "nats-server restart failed");
                    delay = (delay * 2).clamp(FIRST_RESTART_DELAY, MAX_RESTART_DELAY);
                }
            }
        }
    }
    server.stop_within(SERVER_STOP_WITHIN).await;
}

impl Connection {
    /// Flushes what this client sent (for at most [`FLUSH_WITHIN`]) and stops the embedded
    /// server, if this process runs one (for at most [`SERVER_STOP_WITHIN`]).
    pub async fn close(self) {
        self.closing.store(true, Ordering::Relaxed);
        if self.client.connection_state() == async_nats::connection::State::Connected {
            match tokio::time::timeout(FLUSH_WITHIN, self.client.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "flush on close failed"),
                Err(_) => tracing::warn!(within_secs = FLUSH_WITHIN.as_secs(), "flush on close did not finish"),
            }
        }
        drop(self.client);
        if let Some(supervisor) = self.supervisor {
            supervisor.stop().await;
        }
        for file in self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnection_is_immediate_then_backs_off_to_two_seconds() {
        let delays: Vec<u64> = (0..12).map(|n| reconnect_delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [0, 0, 50, 100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000]);
    }
}
