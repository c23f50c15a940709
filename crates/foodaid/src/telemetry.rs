use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Logs to stderr, as text or JSON; `RUST_LOG` overrides the configured level. `quiet` keeps
/// commands whose stdout is machine-read free of info lines.
pub fn init(settings: &LogSettings, quiet: bool) {
    let default = if quiet { "warn" } else { settings.level.as_str() };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match settings.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
