//! Shared live state: a small key-value interface with expiry, served by Redis across machines
//! or by an in-memory map in the single-machine default.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored value under {key} is not valid JSON: {source}")]
    Json {
        key: String,
        source: serde_json::Error,
    },
}

/// The operations cloudcam needs from its shared state.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Stores `value`; with `ttl` it expires unless written again.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError>;
    async fn del(&self, key: &str) -> Result<(), StateError>;
    /// Every live key starting with `prefix`, with its value.
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError>;
    /// Whether the backing service answers.
    async fn ping(&self) -> Result<(), StateError>;
}

/// JSON helpers over any [`StateStore`].
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn StateStore,
    key: &str,
) -> Result<Option<T>, StateError> {
    match store.get(key).await? {
        None => Ok(None),
        Some(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|source| StateError::Json {
                key: key.to_string(),
                source,
            }),
    }
}

pub async fn set_json<T: serde::Serialize>(
    store: &dyn StateStore,
    key: &str,
    value: &T,
    ttl: Option<Duration>,
) -> Result<(), StateError> {
    let raw = serde_json::to_vec(value).expect("serializable");
    store.set(key, &raw, ttl).await
}

/// A stored value and when it expires.
type Entry = (Vec<u8>, Option<Instant>);

/// In-process state for the single-machine default and unit tests.
#[derive(Default)]
pub struct MemoryState {
    map: Mutex<HashMap<String, Entry>>,
}

impl MemoryState {
    pub fn new() -> Self {
        Self::default()
    }
}

fn live(entry: &Entry, now: Instant) -> bool {
    entry.1.is_none_or(|exp| exp > now)
}

#[async_trait]
impl StateStore for MemoryState {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let map = self.map.lock().expect("state lock");
        let now = Instant::now();
        Ok(map
            .get(key)
            .filter(|e| live(e, now))
            .map(|(v, _)| v.clone()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        let exp = ttl.map(|t| Instant::now() + t);
        self.map
            .lock()
            .expect("state lock")
            .insert(key.to_string(), (value.to_vec(), exp));
        Ok(())
    }

    async fn del(&self, key: &str) -> Result<(), StateError> {
        self.map.lock().expect("state lock").remove(key);
        Ok(())
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let mut map = self.map.lock().expect("state lock");
        let now = Instant::now();
        map.retain(|_, e| live(e, now));
        Ok(map
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect())
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }
}

/// Redis-backed state, shared by every service instance on every machine.
pub struct RedisState {
    conn: redis::aio::ConnectionManager,
}

impl RedisState {
    /// Connects to `url` (`redis://host:port/db`); reconnects by itself afterwards.
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new(client).await?;
        Ok(Self { conn })
    }
}

#[async_trait]
impl StateStore for RedisState {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let mut c = self.conn.clone();
        Ok(redis::cmd("GET").arg(key).query_async(&mut c).await?)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let () = cmd.query_async(&mut c).await?;
        Ok(())
    }

    async fn del(&self, key: &str) -> Result<(), StateError> {
        let mut c = self.conn.clone();
        let () = redis::cmd("DEL").arg(key).query_async(&mut c).await?;
        Ok(())
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let mut c = self.conn.clone();
        let pattern = format!("{}*", redis_glob_escape(prefix));
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    async fn ping(&self) -> Result<(), StateError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }
}

fn redis_glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_state_expires_and_scans() {
        let s = MemoryState::new();
        s.set("a:1", b"x", None).await.unwrap();
        s.set("a:2", b"y", Some(Duration::ZERO)).await.unwrap();
        s.set("b:1", b"z", None).await.unwrap();
        let got = s.scan_prefix("a:").await.unwrap();
        assert_eq!(got, vec![("a:1".to_string(), b"x".to_vec())]);
        assert_eq!(s.get("a:2").await.unwrap(), None);
    }

    #[test]
    fn glob_is_escaped() {
        assert_eq!(redis_glob_escape("a*b?"), "a\\*b\\?");
    }
}
