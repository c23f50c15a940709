//! Finding NATS: the configured cluster, the embedded server of a running `foodaid up`, or a
//! new embedded server on the data directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use natsd::{NatsServer, ServerOptions};

use crate::config::Settings;

pub struct Connection {
    pub client: async_nats::Client,
    /// The server this process started, if any; stopped by [`Connection::close`].
    pub embedded: Option<NatsServer>,
    url_file: Option<PathBuf>,
    /// Set while closing, so the expected disconnection is not reported as a problem.
    closing: Arc<AtomicBool>,
}

/// How a command may reach NATS when none is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embed {
    /// `foodaid up`: start one, refuse if another foodaid already runs on this data dir.
    Own,
    /// Administrative commands: use the running one, or start one for the duration.
    Borrow,
}

fn url_file(settings: &Settings) -> PathBuf {
    settings.data_dir.join("nats.url")
}

async fn connect_to(urls: &[String], name: &str, closing: Arc<AtomicBool>) -> anyhow::Result<async_nats::Client> {
    let addrs: Vec<async_nats::ServerAddr> =
        urls.iter().map(|u| u.parse().with_context(|| format!("invalid NATS URL {u:?}"))).collect::<Result<_, _>>()?;
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .event_callback(move |event| {
            let closing = closing.load(Ordering::Relaxed);
            async move {
                match event {
                    async_nats::Event::Disconnected if closing => tracing::debug!("nats disconnected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    other => tracing::debug!(event = %other, "nats event"),
                }
            }
        })
        .connect(addrs)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", urls.join(",")))
}

pub async fn connect(settings: &Settings, embed: Embed) -> anyhow::Result<Connection> {
    let name = format!("foodaid-{}", settings.node.name);
    let closing = Arc::new(AtomicBool::new(false));
    let urls = settings.nats_urls();
    if !urls.is_empty() {
        let client = connect_to(&urls, &name, closing.clone()).await?;
        return Ok(Connection { client, embedded: None, url_file: None, closing });
    }
    let file = url_file(settings);
    if let Ok(url) = std::fs::read_to_string(&file) {
        let url = url.trim().to_owned();
        if let Ok(client) = connect_to(std::slice::from_ref(&url), &name, closing.clone()).await {
            if embed == Embed::Own {
                bail!(
                    "foodaid already runs with data dir {} (NATS at {url}); stop it first",
                    settings.data_dir.display()
                );
            }
            return Ok(Connection { client, embedded: None, url_file: None, closing });
        }
    }
    let mut options = ServerOptions::new(settings.nats_dir());
    options.binary = settings.nats.server_binary.clone();
    options.server_name = format!("foodaid-{}", settings.node.name);
    let server = NatsServer::start(options).await.context("starting the embedded nats-server")?;
    std::fs::write(&file, server.url()).with_context(|| format!("writing {}", file.display()))?;
    let client = connect_to(&[server.url()], &name, closing.clone()).await?;
    Ok(Connection { client, embedded: Some(server), url_file: Some(file), closing })
}

impl Connection {
    /// Flushes what this client sent and stops the embedded server, if this process owns one.
    pub async fn close(self) {
        self.closing.store(true, Ordering::Relaxed);
        if let Err(e) = self.client.flush().await {
            tracing::debug!(error = %e, "flush on close failed");
        }
        drop(self.client);
        if let Some(server) = self.embedded {
            server.stop().await;
        }
        if let Some(file) = self.url_file {
            let _ = std::fs::remove_file(file);
        }
    }
}
