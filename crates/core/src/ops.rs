//! What every service serves and waits for: `/metrics`, `/healthz` (the process answers) and
//! `/readyz` (its dependencies answer), and a shutdown on SIGTERM or Ctrl-C.

use actix_web::{App, HttpResponse, HttpServer, web};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The dependency checks behind `/readyz`, each named (`kafka`, `redis`, `janus`, `media`).
/// Clones share their checks, so a service can serve `/readyz` before it has connected to
/// anything: while [`Readiness::connect`] waits for a dependency, `/readyz` names it and why.
#[derive(Clone, Default)]
pub struct Readiness {
    probes: Arc<Mutex<Vec<(&'static str, Probe)>>>,
    /// Dependencies still being connected to, with the last error.
    waiting: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

/// How long one dependency may take to answer before `/readyz` calls it down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two attempts to reach a dependency at start.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named check; it passes when the future resolves to `Ok` within two seconds.
    /// Every clone sees the new check.
    pub fn add<F, Fut>(&self, name: &'static str, probe: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.probes
            .lock()
            .expect("readiness lock")
            .push((name, Arc::new(move || Box::pin(probe()) as BoxFuture<_>)));
    }

    /// Adds the checks every service needs: the bus (Kafka), the state store (Redis) and, where
    /// the service touches media, the object store (S3).
    pub fn add_dependencies(
        &self,
        bus: Arc<dyn crate::bus::Bus>,
        state: Arc<dyn crate::state::StateStore>,
        store: Option<Arc<dyn object_store::ObjectStore>>,
    ) {
        self.add("kafka", move || {
            let bus = bus.clone();
            async move { bus.ping().await.map_err(|e| e.to_string()) }
        });
        self.add("redis", move || {
            let state = state.clone();
            async move { state.ping().await.map_err(|e| e.to_string()) }
        });
        if let Some(store) = store {
            self.add("media", move || {
                let store = store.clone();
                async move {
                    use object_store::ObjectStoreExt as _;
                    match store.head(&object_store::path::Path::from("readyz")).await {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            });
        }
    }

    /// Holds `/readyz` at 503 naming `name` and `why` until [`Readiness::clear`]: a step of
    /// starting that is not a dependency (signal's API is not listening yet).
    pub fn pending(&self, name: &'static str, why: &str) {
        self.waiting
            .lock()
            .expect("readiness lock")
            .insert(name, why.to_string());
    }

    /// Ends what [`Readiness::pending`] started.
    pub fn clear(&self, name: &'static str) {
        self.waiting.lock().expect("readiness lock").remove(name);
    }

    /// Calls `attempt` until it succeeds, pausing between tries (up to two seconds): a service
    /// started before its dependency waits for it instead of exiting, and meanwhile `/readyz`
    /// answers 503 naming `name` and the last error.
    pub async fn connect<T, E, F, Fut>(&self, name: &'static str, mut attempt: F) -> T
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut pause = Duration::from_millis(100);
        // Not ready from the start: the first attempt may take seconds to fail.
        self.pending(name, "waiting to connect: first attempt");
        let mut failed = false;
        loop {
            match attempt().await {
                Ok(v) => {
                    self.clear(name);
                    if failed {
                        tracing::info!(dependency = name, "connected");
                    }
                    return v;
                }
                Err(e) => {
                    failed = true;
                    let why = format!("waiting to connect: {e}");
                    let mut waiting = self.waiting.lock().expect("readiness lock");
                    if waiting.get(name) != Some(&why) {
                        tracing::warn!(dependency = name, error = %e, "cannot connect yet; retrying");
                    }
                    waiting.insert(name, why);
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(CONNECT_BACKOFF_MAX);
        }
    }

    /// Runs every check at once: `(ready, {name: "ok" | "error: …"})`.
    pub async fn run(&self) -> (bool, serde_json::Map<String, serde_json::Value>) {
        let probes = self.probes.lock().expect("readiness lock").clone();
        let waiting = self.waiting.lock().expect("readiness lock").clone();
        let results = futures::future::join_all(probes.iter().map(|(name, probe)| {
            let fut = probe();
            async move {
                let r = match tokio::time::timeout(PROBE_TIMEOUT, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
                };
                (*name, r)
            }
        }))
        .await;
        let ready = waiting.is_empty() && results.iter().all(|(_, r)| r.is_ok());
        let checks = waiting
            .into_iter()
            .map(|(name, why)| (name, Err(why)))
            .chain(results)
            .map(|(name, r)| {
                let v = match r {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("error: {e}"),
                };
                (name.to_string(), serde_json::Value::String(v))
            })
            .collect();
        (ready, checks)
    }
}

/// Connects to the bus (Kafka) and the state store (Redis) named by the settings, both at
/// once, waiting for each while `/readyz` names every one still missing.
pub async fn connect_backends(
    readiness: &Readiness,
    kafka: &crate::bus::KafkaSettings,
    redis: &crate::config::RedisSettings,
) -> (Arc<dyn crate::bus::Bus>, Arc<dyn crate::state::StateStore>) {
    tokio::join!(
        readiness.connect("kafka", || crate::bus::from_settings(kafka)),
        readiness.connect("redis", || crate::config::state_from_settings(redis)),
    )
}

/// A worker's start (ingest, recorder): serves `/metrics` and `/readyz` on `listen` at once,
/// then waits for Kafka and Redis ([`connect_backends`]) and adds their checks, and the media
/// store's, to `/readyz`.
pub async fn serve_and_connect(
    listen: &str,
    kafka: &crate::bus::KafkaSettings,
    redis: &crate::config::RedisSettings,
    store: Arc<dyn object_store::ObjectStore>,
) -> std::io::Result<(
    actix_web::dev::ServerHandle,
    Arc<dyn crate::bus::Bus>,
    Arc<dyn crate::state::StateStore>,
)> {
    let readiness = Readiness::new();
    let handle = serve_metrics(listen, readiness.clone())?;
    let (bus, state) = connect_backends(&readiness, kafka, redis).await;
    readiness.add_dependencies(bus.clone(), state.clone(), Some(store));
    Ok((handle, bus, state))
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let (ready, checks) = readiness.run().await;
    let body = serde_json::json!({ "ready": ready, "checks": checks });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        tracing::warn!(checks = %body["checks"], "not ready");
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Registers `/metrics`, `/healthz` and `/readyz` (backed by `readiness`).
pub fn routes(cfg: &mut web::ServiceConfig, readiness: Readiness) {
    cfg.app_data(web::Data::new(readiness))
        .route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// Serves [`routes`] on `listen` for a worker; must run inside an actix system.
pub fn serve_metrics(
    listen: &str,
    readiness: Readiness,
) -> std::io::Result<actix_web::dev::ServerHandle> {
    let server = HttpServer::new(move || {
        let readiness = readiness.clone();
        App::new().configure(move |c| routes(c, readiness))
    })
    .workers(1)
    .disable_signals()
    .bind(listen)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!(%listen, "metrics served");
    Ok(handle)
}

/// Runs `pass` every `every`, forever, on the current actix system; a failing pass is logged
/// once until it succeeds again (say, while Redis or Kafka is away).
pub fn spawn_pass<F, Fut, T, E>(what: &'static str, every: Duration, mut pass: F)
where
    F: FnMut() -> Fut + 'static,
    Fut: Future<Output = Result<T, E>> + 'static,
    E: std::fmt::Display,
{
    actix_rt::spawn(async move {
        let mut failing = false;
        loop {
            match pass().await {
                Ok(_) => {
                    if failing {
                        tracing::info!(pass = what, "recovered");
                    }
                    failing = false;
                }
                Err(e) if !failing => {
                    tracing::warn!(pass = what, error = %e, "pass failed; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn readyz_names_the_dependency_that_is_down() {
        let readiness = Readiness::new();
        readiness.add("redis", || async { Ok(()) });
        readiness.add("kafka", || async { Err("connection refused".to_string()) });
        let app = actix_web::test::init_service(
            App::new().configure(move |c| routes(c, readiness.clone())),
        )
        .await;
        let req = actix_web::test::TestRequest::get()
            .uri("/readyz")
            .to_request();
        let res = actix_web::test::call_service(&app, req).await;
        assert_eq!(res.status(), 503);
        let body: serde_json::Value = actix_web::test::read_body_json(res).await;
        assert_eq!(body["ready"], false);
        assert_eq!(body["checks"]["redis"], "ok");
        assert_eq!(body["checks"]["kafka"], "error: connection refused");
        let req = actix_web::test::TestRequest::get()
            .uri("/healthz")
            .to_request();
        assert!(
            actix_web::test::call_service(&app, req)
                .await
                .status()
                .is_success()
        );
    }

    #[tokio::test]
    async fn readyz_names_a_dependency_still_being_connected_to() {
        let readiness = Readiness::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<u32, String>>();
        let r = readiness.clone();
        let connected = tokio::spawn(async move {
            r.connect("kafka", || {
                let next = rx.try_recv().unwrap_or(Err("connection refused".into()));
                async move { next }
            })
            .await
        });
        let waited = async {
            loop {
                let (ready, checks) = readiness.run().await;
                if !checks.is_empty() {
                    return (ready, checks);
                }
                tokio::task::yield_now().await;
            }
        };
        let (ready, checks) = tokio::time::timeout(Duration::from_secs(5), waited)
            .await
            .expect("the wait is reported");
        assert!(!ready);
        assert_eq!(
            checks["kafka"],
            "error: waiting to connect: connection refused"
        );
        tx.send(Ok(7)).unwrap();
        assert_eq!(connected.await.unwrap(), 7);
        let (ready, checks) = readiness.run().await;
        assert!(ready && checks.is_empty(), "{checks:?}");
    }
}
