//! Layered configuration: serde defaults, then an optional TOML file, then environment
//! variables, then [`Validate::validate`]. Unknown keys are rejected at every layer.
//!
//! Environment variables are `CLOUDCAM_<SERVICE>_<KEY>`, with `__` between nested keys:
//! `CLOUDCAM_SIGNAL_KAFKA__BROKERS=127.0.0.1:9092`.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration is invalid: {0}")]
    Invalid(String),
}

/// Checks a loaded configuration for values that parse but make no sense.
pub trait Validate {
    fn validate(&self) -> Result<(), String>;
}

/// Loads `T` for `service` (`signal`, `ingest`, …) from defaults, `file` and the environment.
pub fn load<T: DeserializeOwned + Validate>(
    service: &str,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file).required(true));
    }
    let prefix = format!("CLOUDCAM_{}", service.to_uppercase());
    builder = builder.add_source(
        config::Environment::with_prefix(&prefix)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true),
    );
    let cfg: T = builder.build()?.try_deserialize()?;
    cfg.validate().map_err(ConfigError::Invalid)?;
    Ok(cfg)
}

/// The credential of the workers' RTSP re-streams (RTSP digest): ingest requires it, recorders
/// present it. One per deployment; its `Debug` output never shows the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestreamAuth {
    pub user: String,
    pub password: String,
}

impl Default for RestreamAuth {
    fn default() -> Self {
        Self {
            user: "cloudcam".into(),
            password: String::new(),
        }
    }
}

impl std::fmt::Debug for RestreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestreamAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Validate for RestreamAuth {
    fn validate(&self) -> Result<(), String> {
        if self.user.is_empty() || self.password.len() < 12 {
            return Err(
                "restream_auth.user must be set and restream_auth.password must have at least 12 \
                 characters (the deployment's re-stream credential, the same for ingest and \
                 recorders)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Writes into `dir` a copy of the configuration file at `path` with `from` replaced by `to` (for
/// tests of reference configurations whose secrets are deliberately left empty or refused).
pub fn edited_copy(path: &Path, from: &str, to: &str, dir: &Path) -> std::io::Result<PathBuf> {
    let text = std::fs::read_to_string(path)?;
    assert!(text.contains(from), "{from:?} is not in {}", path.display());
    let copy = dir.join(path.file_name().unwrap_or_default());
    std::fs::write(&copy, text.replace(from, to))?;
    Ok(copy)
}

/// Redis connection settings (the `[redis]` section).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://host:port/db`; empty selects the in-memory state.
    pub url: String,
}

/// Connects the state store the settings name.
pub async fn state_from_settings(
    settings: &RedisSettings,
) -> Result<std::sync::Arc<dyn crate::state::StateStore>, crate::state::StateError> {
    if settings.url.is_empty() {
        Ok(std::sync::Arc::new(crate::state::MemoryState::new()))
    } else {
        Ok(std::sync::Arc::new(
            crate::state::RedisState::connect(&settings.url).await?,
        ))
    }
}
