//! Layered configuration: serde defaults, then an optional TOML file, then environment
//! variables, then [`Validate::validate`]. Unknown keys are rejected at every layer.
//!
//! Environment variables are `CLOUDCAM_<SERVICE>_<KEY>`, with `__` between nested keys:
//! `CLOUDCAM_SIGNAL_KAFKA__BROKERS=127.0.0.1:9092`.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::path::Path;

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
