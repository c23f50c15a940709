//! Typed settings: `config/default.toml` (compiled in), then a profile file, then
//! `FOODAID__SECTION__KEY` environment variables. Unknown keys are an error at every level.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// The collective's time zone: days, months, years and times of day in every rule.
    pub time_zone: values::Calendar,
    pub node: NodeSettings,
    pub nats: NatsSettings,
    pub http: HttpSettings,
    pub projections: ProjectionSettings,
    pub commands: CommandSettings,
    pub log: LogSettings,
    pub jobs: JobSettings,
    pub policies: services::Policies,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    pub expiry_interval_minutes: u64,
    pub collection_interval_minutes: u64,
    pub pickups_interval_minutes: u64,
    pub reservations_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    pub url: String,
    pub server_binary: PathBuf,
    pub replicas: usize,
    pub duplicate_window_secs: u64,
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: String,
    pub request_timeout_secs: u64,
    pub token_cache_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSettings {
    pub batch_size: usize,
    pub query_wait_ms: u64,
    /// sled's page cache for all projections of this node, MB.
    pub cache_mb: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSettings {
    pub max_retries: u32,
    pub cache_size: usize,
    /// Days a command's first answer is kept for retries with its idempotency key; 0: for ever.
    pub answer_days: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// Loads the settings. `file` is an explicit overlay (`--config`); otherwise the profile
    /// named by `FOODAID_PROFILE` in `env` is read from `config/<profile>.toml`. `env` stands
    /// for the process environment so that tests can pass their own.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> anyhow::Result<Settings> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(file) = file {
            builder = builder.add_source(File::from(file).format(FileFormat::Toml).required(true));
        } else if let Some(profile) = env.get("FOODAID_PROFILE").filter(|p| !p.is_empty()) {
            let path = PathBuf::from("config").join(format!("{profile}.toml"));
            anyhow::ensure!(path.exists(), "profile {profile:?} not found: no {}", path.display());
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let vars: HashMap<String, String> =
            env.iter().filter(|(k, _)| k.starts_with("FOODAID__")).map(|(k, v)| (k.clone(), v.clone())).collect();
        builder = builder.add_source(
            Environment::with_prefix("FOODAID")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(vars)),
        );
        let settings: Settings =
            builder.build().context("reading configuration")?.try_deserialize().context("invalid configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let name_ok = !self.node.name.is_empty()
            && self.node.name.len() <= 32
            && self.node.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        anyhow::ensure!(name_ok, "node.name {:?} must be 1 to 32 letters, digits, '-' or '_'", self.node.name);
        anyhow::ensure!(self.nats.replicas >= 1 && self.nats.replicas <= 5, "nats.replicas must be between 1 and 5");
        anyhow::ensure!(self.projections.batch_size >= 1, "projections.batch_size must be positive");
        let timeout = self.policies.reservation_timeout_minutes;
        anyhow::ensure!(
            timeout.is_finite() && timeout > 0.0,
            "policies.reservation_timeout_minutes must be positive (it should outlast any request)"
        );
        anyhow::ensure!(self.projections.cache_mb >= 1, "projections.cache_mb must be at least 1");
        Ok(())
    }

    pub fn nats_urls(&self) -> Vec<String> {
        self.nats.url.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    pub fn store_config(&self) -> eventstore::StoreConfig {
        eventstore::StoreConfig {
            replicas: self.nats.replicas,
            duplicate_window: Duration::from_secs(self.nats.duplicate_window_secs),
            ..Default::default()
        }
    }

    /// How long a command's first answer is kept (zero: for ever).
    pub fn answer_retention(&self) -> Duration {
        Duration::from_secs(self.commands.answer_days * 24 * 3600)
    }

    pub fn token_cache(&self) -> Duration {
        Duration::from_secs(self.http.token_cache_secs)
    }

    pub fn projections_dir(&self) -> PathBuf {
        self.data_dir.join("projections")
    }

    pub fn nats_dir(&self) -> PathBuf {
        self.data_dir.join("nats")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_load_and_environment_overrides() {
        let s = Settings::load(None, &env(&[])).unwrap();
        assert_eq!(s.nats.replicas, 1);
        assert!(s.nats.url.is_empty());
        let s = Settings::load(
            None,
            &env(&[("FOODAID__NATS__URL", "nats://a:1, nats://b:2"), ("FOODAID__NATS__REPLICAS", "3")]),
        )
        .unwrap();
        assert_eq!(s.nats_urls(), vec!["nats://a:1", "nats://b:2"]);
        assert_eq!(s.nats.replicas, 3);
        assert_eq!(
            Settings::load(None, &env(&[("FOODAID__DATA_DIR", "/tmp/x")])).unwrap().data_dir,
            PathBuf::from("/tmp/x")
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let err = Settings::load(None, &env(&[("FOODAID__NATS__URLL", "x")])).unwrap_err();
        assert!(format!("{err:#}").contains("urll"), "{err:#}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.toml");
        std::fs::write(&file, "[http]\nadress = \"x\"\n").unwrap();
        assert!(format!("{:#}", Settings::load(Some(&file), &env(&[])).unwrap_err()).contains("adress"));
        assert!(Settings::load(None, &env(&[("FOODAID__NODE__NAME", "a.b")])).is_err());
        assert!(Settings::load(None, &env(&[("FOODAID__PROJECTIONS__CACHE_MB", "0")])).is_err());
        assert_eq!(Settings::load(None, &env(&[])).unwrap().projections.cache_mb, 64);
        assert!(Settings::load(None, &env(&[("FOODAID_PROFILE", "nope")])).is_err());
    }

    #[test]
    fn a_profile_file_overlays_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[projections]\nbatch_size = 10\n").unwrap();
        let s = Settings::load(Some(&file), &env(&[("FOODAID__PROJECTIONS__QUERY_WAIT_MS", "7")])).unwrap();
        assert_eq!((s.projections.batch_size, s.projections.query_wait_ms), (10, 7));
        assert_eq!(s.commands.max_retries, 8, "untouched keys keep their defaults");
    }

    #[test]
    fn the_rules_in_the_default_file_are_the_documented_defaults_and_can_be_overridden() {
        let s = Settings::load(None, &env(&[])).unwrap();
        assert_eq!(s.policies, services::Policies::default());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[policies.reception.chilled_max_c.groups]\ndairy = 3.0\n").unwrap();
        let s = Settings::load(Some(&file), &env(&[("FOODAID__POLICIES__RECEPTION__DLC_MIN_HOURS", "24")])).unwrap();
        assert_eq!(s.policies.reception.dlc_min_hours, 24);
        assert_eq!(s.policies.reception.chilled_max_c.get(services::FoodGroup::Dairy), 3.0);
        assert_eq!(s.policies.reception.chilled_max_c.get(services::FoodGroup::Drinks), 4.0);
        std::fs::write(&file, "[policies.reception.ddm_grace_days.groups]\ncandy = 3\n").unwrap();
        assert!(Settings::load(Some(&file), &env(&[])).is_err(), "unknown food groups are refused");
    }
}
