//! Worker identity and heartbeats in the state store: every ingest worker and recorder keeps
//! `cloudcam:worker:<kind>:<id>` alive (with expiry) listing the cameras it serves, and is a
//! member of the registry `cloudcam:workers` (a sorted set scored by when the member expires),
//! so the API can show who serves what and a dead worker disappears by itself.

use crate::state::{StateStore, set_json};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const PREFIX: &str = "cloudcam:worker:";
/// The registry: `<kind>:<id>` scored by the heartbeat's expiry (ms since the epoch).
const REGISTRY: &str = "cloudcam:workers";
/// How often a worker refreshes its heartbeat (and at once when its cameras change).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A worker not heard from for this long is gone.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// What a worker says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    /// `ingest` or `recorder`.
    pub kind: String,
    /// The cameras it serves now, sorted.
    pub cameras: Vec<String>,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
}

fn member(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

fn key(kind: &str, id: &str) -> String {
    format!("{PREFIX}{}", member(kind, id))
}

/// Keeps a worker's heartbeat until the returned sender is dropped (then removes it). Send the
/// worker's current cameras into the sender whenever they change.
pub fn spawn_heartbeat(
    state: Arc<dyn StateStore>,
    kind: &'static str,
    id: String,
) -> watch::Sender<Vec<String>> {
    let (tx, mut rx) = watch::channel(Vec::new());
    let started_ms = crate::now_ms();
    tokio::spawn(async move {
        let mut logged = false;
        loop {
            let mut cameras = rx.borrow_and_update().clone();
            cameras.sort();
            let info = WorkerInfo {
                id: id.clone(),
                kind: kind.to_string(),
                cameras,
                started_ms,
                heartbeat_ms: crate::now_ms(),
            };
            let written = async {
                set_json(&*state, &key(kind, &id), &info, Some(HEARTBEAT_TTL)).await?;
                let expires = info.heartbeat_ms + HEARTBEAT_TTL.as_millis() as i64;
                state.zadd(REGISTRY, &member(kind, &id), expires).await
            };
            match written.await {
                Ok(()) => logged = false,
                Err(e) if !logged => {
                    tracing::warn!(worker = %id, error = %e, "cannot write the worker heartbeat");
                    logged = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            }
        }
        let _ = state.del(&key(kind, &id)).await;
        let _ = state.zrem(REGISTRY, &[member(kind, &id)]).await;
    });
    tx
}

/// Tells the heartbeat which cameras the worker serves now (written at once when they changed).
pub fn announce<'a>(heartbeat: &watch::Sender<Vec<String>>, ids: impl Iterator<Item = &'a String>) {
    let mut now: Vec<String> = ids.cloned().collect();
    now.sort();
    heartbeat.send_if_modified(|ids| {
        let changed = *ids != now;
        if changed {
            *ids = now;
        }
        changed
    });
}

/// Every live worker, ingest workers first, each kind sorted by id. A worker that missed three
/// heartbeats counts as gone even before its key expires (so a dead recorder does not still
/// claim its cameras).
pub async fn list(state: &dyn StateStore) -> Result<Vec<WorkerInfo>, crate::state::StateError> {
    let now = crate::now_ms();
    // Members whose heartbeat expired are gone: drop them from the registry as we go.
    state.zrem_range_by_score(REGISTRY, i64::MIN, now).await?;
    let keys: Vec<String> = state
        .zrange_by_score(REGISTRY, now + 1, i64::MAX)
        .await?
        .into_iter()
        .map(|(m, _)| format!("{PREFIX}{m}"))
        .collect();
    let fresh = now - 3 * HEARTBEAT_EVERY.as_millis() as i64;
    let mut out: Vec<WorkerInfo> = state
        .mget(&keys)
        .await?
        .into_iter()
        .flatten()
        .filter_map(|raw| serde_json::from_slice::<WorkerInfo>(&raw).ok())
        .filter(|w| w.heartbeat_ms >= fresh)
        .collect();
    out.sort_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heartbeat_lists_the_cameras_and_goes_away_with_the_worker() {
        let state: Arc<dyn StateStore> = Arc::new(crate::state::MemoryState::default());
        let tx = spawn_heartbeat(state.clone(), "ingest", "w1".into());
        tx.send(vec!["b".into(), "a".into()]).unwrap();
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen = list(&*state).await.unwrap();
            if seen.first().is_some_and(|w| w.cameras.len() == 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen[0].cameras, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(seen[0].kind, "ingest");
        drop(tx);
        for _ in 0..50 {
            if list(&*state).await.unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the heartbeat outlived its worker");
    }
}
