//! Shared live state on the structures its queries need: plain values with expiry, sets
//! (registries), sorted sets (time indexes, expiring members), counters (allocation) and
//! versioned records written with compare-and-set. Served by Redis across machines
//! ([`RedisState`]) or by an in-memory twin in the single-machine default and unit tests
//! ([`MemoryState`]).
//!
//! There is deliberately no key scan: every listing reads a set or a sorted set, so no request
//! and no periodic loop ever walks the keyspace. The domain stores on top (camera registry,
//! segment index, worker and viewer registries, mountpoint allocator) name the keys and
//! encode the values; this trait only moves bytes.

use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};
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
    #[error("{0} holds a value of another kind")]
    WrongType(String),
    #[error("{0} is busy (held by another writer for too long)")]
    Busy(String),
}

/// A record with the version it was stored at (versions start at 1 and grow by one per write).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub version: u64,
    pub value: Vec<u8>,
}

/// The operations cloudcam needs from its shared state.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Several values in one round trip, in the order of `keys`.
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError>;
    /// Stores `value`; with `ttl` it expires unless written again.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError>;
    /// Stores `value` only if `key` holds nothing; whether it did.
    async fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError>;
    async fn del(&self, key: &str) -> Result<(), StateError>;
    /// Deletes `key` only while it still holds `value` (releasing a claim or a lock).
    async fn del_if_eq(&self, key: &str, value: &[u8]) -> Result<bool, StateError>;
    /// Adds one to the counter under `key` (0 when absent) and returns the new value.
    async fn incr(&self, key: &str) -> Result<i64, StateError> {
        self.incr_by(key, 1, None).await
    }
    /// Adds `delta` to the counter under `key` (0 when absent), atomically, and returns the new
    /// value; a counter created by this call expires after `ttl`.
    async fn incr_by(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StateError>;

    async fn set_add(&self, key: &str, member: &str) -> Result<(), StateError>;
    async fn set_remove(&self, key: &str, member: &str) -> Result<(), StateError>;
    async fn set_members(&self, key: &str) -> Result<Vec<String>, StateError>;

    /// Adds `member` to the sorted set (or moves it) at `score`.
    async fn zadd(&self, key: &str, member: &str, score: i64) -> Result<(), StateError>;
    async fn zrem(&self, key: &str, members: &[String]) -> Result<(), StateError>;
    /// Members with `min <= score <= max`, by score (then member).
    async fn zrange_by_score(
        &self,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<Vec<(String, i64)>, StateError>;
    /// Removes the members with `min <= score <= max`; how many.
    async fn zrem_range_by_score(&self, key: &str, min: i64, max: i64) -> Result<u64, StateError>;
    async fn zcard(&self, key: &str) -> Result<u64, StateError>;
    /// The member's score, if it is in the set.
    async fn zscore(&self, key: &str, member: &str) -> Result<Option<i64>, StateError>;

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>, StateError>;
    async fn mget_versioned(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StateError>;
    /// Writes `value` if the stored version is `expected` (0: nothing stored yet); returns the
    /// new version, or `None` when another write came first.
    async fn put_versioned(
        &self,
        key: &str,
        expected: u64,
        value: &[u8],
    ) -> Result<Option<u64>, StateError>;
    /// Deletes the record if its version is `expected` (any version with `None`); whether it did.
    async fn del_versioned(&self, key: &str, expected: Option<u64>) -> Result<bool, StateError>;

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
        Some(raw) => decode(key, &raw).map(Some),
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

/// The JSON values at `keys`, in order, in one round trip; a missing or undecodable value is
/// `None`.
pub async fn get_json_many<T: serde::de::DeserializeOwned>(
    store: &dyn StateStore,
    keys: &[String],
) -> Result<Vec<Option<T>>, StateError> {
    Ok(store
        .mget(keys)
        .await?
        .into_iter()
        .map(|raw| raw.and_then(|r| serde_json::from_slice(&r).ok()))
        .collect())
}

/// Decodes a stored JSON value, naming its key on failure.
pub fn decode<T: serde::de::DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(raw).map_err(|source| StateError::Json {
        key: key.to_string(),
        source,
    })
}

/// A short lease on a name (say, one camera's desired state) so that writers that read, decide
/// and publish do so one at a time, across every process sharing the state. Released on drop
/// (by its token only, so an expired lease never releases its successor's).
pub struct Lease {
    state: std::sync::Arc<dyn StateStore>,
    key: String,
    token: String,
}

impl Lease {
    /// Waits up to `wait` for the lease; it expires by itself after `ttl` if never released.
    pub async fn acquire(
        state: std::sync::Arc<dyn StateStore>,
        key: String,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Self, StateError> {
        let token = crate::random_hex(8);
        let deadline = Instant::now() + wait;
        loop {
            if state.set_nx(&key, token.as_bytes(), Some(ttl)).await? {
                return Ok(Self { state, key, token });
            }
            if Instant::now() >= deadline {
                return Err(StateError::Busy(key));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (state, key, token) = (
            self.state.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = state.del_if_eq(&key, token.as_bytes()).await;
            });
        }
    }
}

/// One value of the in-memory state.
enum Value {
    Bytes(Vec<u8>),
    Set(BTreeSet<String>),
    /// member → score; ordered views are built on query (the in-memory state is small).
    Sorted(HashMap<String, i64>),
    Versioned(Versioned),
}

/// A value and when it expires.
struct Entry {
    value: Value,
    expires: Option<Instant>,
}

/// In-process state for the single-machine default and unit tests.
#[derive(Default)]
pub struct MemoryState {
    map: Mutex<HashMap<String, Entry>>,
}

impl MemoryState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the live entry under `key` (expired entries are dropped first).
    fn with<R>(&self, key: &str, f: impl FnOnce(&mut Option<&mut Entry>) -> R) -> R {
        let mut map = self.map.lock().expect("state lock");
        let now = Instant::now();
        if map
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|x| x <= now))
        {
            map.remove(key);
        }
        let mut entry = map.get_mut(key);
        f(&mut entry)
    }

    fn put(&self, key: &str, value: Value, ttl: Option<Duration>) {
        self.map.lock().expect("state lock").insert(
            key.to_string(),
            Entry {
                value,
                expires: ttl.map(|t| Instant::now() + t),
            },
        );
    }

    fn bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.with(key, |e| match e.as_deref() {
            None => Ok(None),
            Some(Entry {
                value: Value::Bytes(b),
                ..
            }) => Ok(Some(b.clone())),
            Some(_) => Err(StateError::WrongType(key.into())),
        })
    }

    fn sorted<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut HashMap<String, i64>) -> R,
    ) -> Result<R, StateError> {
        let mut map = self.map.lock().expect("state lock");
        let entry = map.entry(key.to_string()).or_insert_with(|| Entry {
            value: Value::Sorted(HashMap::new()),
            expires: None,
        });
        let Value::Sorted(z) = &mut entry.value else {
            return Err(StateError::WrongType(key.into()));
        };
        let r = f(z);
        if z.is_empty() {
            map.remove(key);
        }
        Ok(r)
    }

    fn set_of<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut BTreeSet<String>) -> R,
    ) -> Result<R, StateError> {
        let mut map = self.map.lock().expect("state lock");
        let entry = map.entry(key.to_string()).or_insert_with(|| Entry {
            value: Value::Set(BTreeSet::new()),
            expires: None,
        });
        let Value::Set(s) = &mut entry.value else {
            return Err(StateError::WrongType(key.into()));
        };
        let r = f(s);
        if s.is_empty() {
            map.remove(key);
        }
        Ok(r)
    }

    fn versioned(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        self.with(key, |e| match e.as_deref() {
            None => Ok(None),
            Some(Entry {
                value: Value::Versioned(v),
                ..
            }) => Ok(Some(v.clone())),
            Some(_) => Err(StateError::WrongType(key.into())),
        })
    }
}

#[async_trait]
impl StateStore for MemoryState {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.bytes(key)
    }

    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        // Like Redis's MGET: a key of another kind reads as absent.
        Ok(keys.iter().map(|k| self.bytes(k).ok().flatten()).collect())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        self.put(key, Value::Bytes(value.to_vec()), ttl);
        Ok(())
    }

    async fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let mut map = self.map.lock().expect("state lock");
        let now = Instant::now();
        if map
            .get(key)
            .is_some_and(|e| e.expires.is_none_or(|x| x > now))
        {
            return Ok(false);
        }
        map.insert(
            key.to_string(),
            Entry {
                value: Value::Bytes(value.to_vec()),
                expires: ttl.map(|t| now + t),
            },
        );
        Ok(true)
    }

    async fn del(&self, key: &str) -> Result<(), StateError> {
        self.map.lock().expect("state lock").remove(key);
        Ok(())
    }

    async fn del_if_eq(&self, key: &str, value: &[u8]) -> Result<bool, StateError> {
        let same = self.bytes(key)?.is_some_and(|v| v == value);
        if same {
            self.map.lock().expect("state lock").remove(key);
        }
        Ok(same)
    }

    async fn incr_by(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StateError> {
        let mut map = self.map.lock().expect("state lock");
        let now = Instant::now();
        if map
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|x| x <= now))
        {
            map.remove(key);
        }
        let entry = map.entry(key.to_string()).or_insert_with(|| Entry {
            value: Value::Bytes(b"0".to_vec()),
            expires: ttl.map(|t| now + t),
        });
        let Value::Bytes(b) = &mut entry.value else {
            return Err(StateError::WrongType(key.into()));
        };
        let n = std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| StateError::WrongType(key.into()))?
            + delta;
        *b = n.to_string().into_bytes();
        Ok(n)
    }

    async fn set_add(&self, key: &str, member: &str) -> Result<(), StateError> {
        self.set_of(key, |s| {
            s.insert(member.to_string());
        })
    }

    async fn set_remove(&self, key: &str, member: &str) -> Result<(), StateError> {
        self.set_of(key, |s| {
            s.remove(member);
        })
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, StateError> {
        self.set_of(key, |s| s.iter().cloned().collect())
    }

    async fn zadd(&self, key: &str, member: &str, score: i64) -> Result<(), StateError> {
        self.sorted(key, |z| {
            z.insert(member.to_string(), score);
        })
    }

    async fn zrem(&self, key: &str, members: &[String]) -> Result<(), StateError> {
        self.sorted(key, |z| {
            for m in members {
                z.remove(m);
            }
        })
    }

    async fn zrange_by_score(
        &self,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<Vec<(String, i64)>, StateError> {
        self.sorted(key, |z| {
            let mut out: Vec<(String, i64)> = z
                .iter()
                .filter(|(_, s)| (min..=max).contains(*s))
                .map(|(m, s)| (m.clone(), *s))
                .collect();
            out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            out
        })
    }

    async fn zrem_range_by_score(&self, key: &str, min: i64, max: i64) -> Result<u64, StateError> {
        self.sorted(key, |z| {
            let before = z.len();
            z.retain(|_, s| !(min..=max).contains(s));
            (before - z.len()) as u64
        })
    }

    async fn zcard(&self, key: &str) -> Result<u64, StateError> {
        self.sorted(key, |z| z.len() as u64)
    }

    async fn zscore(&self, key: &str, member: &str) -> Result<Option<i64>, StateError> {
        self.sorted(key, |z| z.get(member).copied())
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        self.versioned(key)
    }

    async fn mget_versioned(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StateError> {
        keys.iter().map(|k| self.versioned(k)).collect()
    }

    async fn put_versioned(
        &self,
        key: &str,
        expected: u64,
        value: &[u8],
    ) -> Result<Option<u64>, StateError> {
        let mut map = self.map.lock().expect("state lock");
        let current = match map.get(key) {
            None => 0,
            Some(Entry {
                value: Value::Versioned(v),
                ..
            }) => v.version,
            Some(_) => return Err(StateError::WrongType(key.into())),
        };
        if current != expected {
            return Ok(None);
        }
        let version = current + 1;
        map.insert(
            key.to_string(),
            Entry {
                value: Value::Versioned(Versioned {
                    version,
                    value: value.to_vec(),
                }),
                expires: None,
            },
        );
        Ok(Some(version))
    }

    async fn del_versioned(&self, key: &str, expected: Option<u64>) -> Result<bool, StateError> {
        let current = self.versioned(key)?;
        let Some(current) = current else {
            return Ok(false);
        };
        if expected.is_some_and(|v| v != current.version) {
            return Ok(false);
        }
        self.map.lock().expect("state lock").remove(key);
        Ok(true)
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }
}

/// Writes a versioned record (a hash of `v` and `d`) if its version is the expected one.
const PUT_VERSIONED: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'v', v + 1, 'd', ARGV[2])
return v + 1
";

/// Deletes a versioned record if its version is the expected one (any, when ARGV[1] is empty).
const DEL_VERSIONED: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return 0 end
if ARGV[1] ~= '' and v ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// Adds to a counter; gives a counter it creates an expiry (ARGV[2] ms, when above 0).
const INCR_BY: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n
";

/// Deletes a key only while it holds the given value.
const DEL_IF_EQ: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Redis-backed state, shared by every service instance on every machine.
pub struct RedisState {
    conn: redis::aio::ConnectionManager,
    put_versioned: redis::Script,
    incr_by: redis::Script,
    del_versioned: redis::Script,
    del_if_eq: redis::Script,
}

/// How long one Redis call may take before it fails (a Redis that stops answering must not
/// hang the caller).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisState {
    /// Connects to `url` (`redis://host:port/db`); reconnects by itself afterwards.
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        let conn = redis::aio::ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            conn,
            put_versioned: redis::Script::new(PUT_VERSIONED),
            incr_by: redis::Script::new(INCR_BY),
            del_versioned: redis::Script::new(DEL_VERSIONED),
            del_if_eq: redis::Script::new(DEL_IF_EQ),
        })
    }

    fn c(&self) -> redis::aio::ConnectionManager {
        self.conn.clone()
    }
}

fn versioned_from(raw: (Option<u64>, Option<Vec<u8>>)) -> Option<Versioned> {
    match raw {
        (Some(version), Some(value)) => Some(Versioned { version, value }),
        _ => None,
    }
}

#[async_trait]
impl StateStore for RedisState {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.c())
            .await?)
    }

    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let part: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut self.c())
                .await?;
            out.extend(part);
        }
        Ok(out)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let () = cmd.query_async(&mut self.c()).await?;
        Ok(())
    }

    async fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX");
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        let done: Option<String> = cmd.query_async(&mut self.c()).await?;
        Ok(done.is_some())
    }

    async fn del(&self, key: &str) -> Result<(), StateError> {
        let () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut self.c())
            .await?;
        Ok(())
    }

    async fn del_if_eq(&self, key: &str, value: &[u8]) -> Result<bool, StateError> {
        let n: i64 = self
            .del_if_eq
            .key(key)
            .arg(value)
            .invoke_async(&mut self.c())
            .await?;
        Ok(n > 0)
    }

    async fn incr_by(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StateError> {
        let ttl_ms = ttl.map_or(0, |t| t.as_millis().max(1) as i64);
        Ok(self
            .incr_by
            .key(key)
            .arg(delta)
            .arg(ttl_ms)
            .invoke_async(&mut self.c())
            .await?)
    }

    async fn set_add(&self, key: &str, member: &str) -> Result<(), StateError> {
        let _: i64 = redis::cmd("SADD")
            .arg(key)
            .arg(member)
            .query_async(&mut self.c())
            .await?;
        Ok(())
    }

    async fn set_remove(&self, key: &str, member: &str) -> Result<(), StateError> {
        let _: i64 = redis::cmd("SREM")
            .arg(key)
            .arg(member)
            .query_async(&mut self.c())
            .await?;
        Ok(())
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, StateError> {
        let mut m: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut self.c())
            .await?;
        m.sort();
        Ok(m)
    }

    async fn zadd(&self, key: &str, member: &str, score: i64) -> Result<(), StateError> {
        let _: i64 = redis::cmd("ZADD")
            .arg(key)
            .arg(score)
            .arg(member)
            .query_async(&mut self.c())
            .await?;
        Ok(())
    }

    async fn zrem(&self, key: &str, members: &[String]) -> Result<(), StateError> {
        if members.is_empty() {
            return Ok(());
        }
        let _: i64 = redis::cmd("ZREM")
            .arg(key)
            .arg(members)
            .query_async(&mut self.c())
            .await?;
        Ok(())
    }

    async fn zrange_by_score(
        &self,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<Vec<(String, i64)>, StateError> {
        let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(min)
            .arg(max)
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(&mut self.c())
            .await?;
        Ok(raw.into_iter().map(|(m, s)| (m, s as i64)).collect())
    }

    async fn zrem_range_by_score(&self, key: &str, min: i64, max: i64) -> Result<u64, StateError> {
        Ok(redis::cmd("ZREMRANGEBYSCORE")
            .arg(key)
            .arg(min)
            .arg(max)
            .query_async(&mut self.c())
            .await?)
    }

    async fn zcard(&self, key: &str) -> Result<u64, StateError> {
        Ok(redis::cmd("ZCARD")
            .arg(key)
            .query_async(&mut self.c())
            .await?)
    }

    async fn zscore(&self, key: &str, member: &str) -> Result<Option<i64>, StateError> {
        let s: Option<f64> = redis::cmd("ZSCORE")
            .arg(key)
            .arg(member)
            .query_async(&mut self.c())
            .await?;
        Ok(s.map(|s| s as i64))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        let raw: (Option<u64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(key)
            .arg("v")
            .arg("d")
            .query_async(&mut self.c())
            .await?;
        Ok(versioned_from(raw))
    }

    async fn mget_versioned(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StateError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("HMGET").arg(k).arg("v").arg("d");
            }
            let raw: Vec<(Option<u64>, Option<Vec<u8>>)> = pipe.query_async(&mut self.c()).await?;
            out.extend(raw.into_iter().map(versioned_from));
        }
        Ok(out)
    }

    async fn put_versioned(
        &self,
        key: &str,
        expected: u64,
        value: &[u8],
    ) -> Result<Option<u64>, StateError> {
        let v: i64 = self
            .put_versioned
            .key(key)
            .arg(expected)
            .arg(value)
            .invoke_async(&mut self.c())
            .await?;
        Ok((v > 0).then_some(v as u64))
    }

    async fn del_versioned(&self, key: &str, expected: Option<u64>) -> Result<bool, StateError> {
        let n: i64 = self
            .del_versioned
            .key(key)
            .arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .invoke_async(&mut self.c())
            .await?;
        Ok(n > 0)
    }

    async fn ping(&self) -> Result<(), StateError> {
        let _: String = redis::cmd("PING").query_async(&mut self.c()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_expire() {
        let s = MemoryState::new();
        s.set("a", b"x", None).await.unwrap();
        s.set("b", b"y", Some(Duration::ZERO)).await.unwrap();
        assert_eq!(s.get("a").await.unwrap(), Some(b"x".to_vec()));
        assert_eq!(s.get("b").await.unwrap(), None);
        assert!(s.set_nx("b", b"z", None).await.unwrap());
        assert!(!s.set_nx("b", b"w", None).await.unwrap());
        assert!(!s.del_if_eq("b", b"w").await.unwrap());
        assert!(s.del_if_eq("b", b"z").await.unwrap());
    }

    #[tokio::test]
    async fn versioned_writes_are_compare_and_set() {
        let s = MemoryState::new();
        assert_eq!(s.put_versioned("r", 0, b"1").await.unwrap(), Some(1));
        assert_eq!(s.put_versioned("r", 0, b"x").await.unwrap(), None);
        assert_eq!(s.put_versioned("r", 1, b"2").await.unwrap(), Some(2));
        let got = s.get_versioned("r").await.unwrap().unwrap();
        assert_eq!((got.version, got.value), (2, b"2".to_vec()));
        assert!(!s.del_versioned("r", Some(1)).await.unwrap());
        assert!(s.del_versioned("r", Some(2)).await.unwrap());
        assert_eq!(s.get_versioned("r").await.unwrap(), None);
    }

    #[tokio::test]
    async fn sorted_sets_range_by_score() {
        let s = MemoryState::new();
        for (m, score) in [("c", 30), ("a", 10), ("b", 20)] {
            s.zadd("z", m, score).await.unwrap();
        }
        let got = s.zrange_by_score("z", 15, 30).await.unwrap();
        assert_eq!(got, vec![("b".into(), 20), ("c".into(), 30)]);
        assert_eq!(s.zrem_range_by_score("z", i64::MIN, 20).await.unwrap(), 2);
        assert_eq!(s.zcard("z").await.unwrap(), 1);
        assert_eq!(s.incr("n").await.unwrap(), 1);
        assert_eq!(s.incr("n").await.unwrap(), 2);
        let minute = Some(Duration::from_secs(60));
        assert_eq!(s.incr_by("t", 1, minute).await.unwrap(), 1);
        assert_eq!(s.incr_by("t", -1, minute).await.unwrap(), 0);
        // A counter that has expired starts again from 0.
        assert_eq!(s.incr_by("gone", 3, Some(Duration::ZERO)).await.unwrap(), 3);
        assert_eq!(s.incr_by("gone", 5, None).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn a_lease_is_exclusive_until_dropped() {
        let s: std::sync::Arc<dyn StateStore> = std::sync::Arc::new(MemoryState::new());
        let ttl = Duration::from_secs(5);
        let first = Lease::acquire(s.clone(), "l".into(), ttl, Duration::ZERO)
            .await
            .unwrap();
        assert!(
            Lease::acquire(s.clone(), "l".into(), ttl, Duration::from_millis(30))
                .await
                .is_err()
        );
        drop(first);
        Lease::acquire(s.clone(), "l".into(), ttl, Duration::from_secs(1))
            .await
            .unwrap();
    }
}
