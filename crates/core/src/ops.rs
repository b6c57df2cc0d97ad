//! What every service serves and waits for: `/metrics`, `/healthz` (the process answers) and
//! `/readyz` (its dependencies answer), and a shutdown on SIGTERM or Ctrl-C.

use actix_web::{App, HttpResponse, HttpServer, web};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The dependency checks behind `/readyz`, each named (`kafka`, `redis`, `janus`, `media`).
#[derive(Clone, Default)]
pub struct Readiness {
    probes: Vec<(&'static str, Probe)>,
}

/// How long one dependency may take to answer before `/readyz` calls it down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named check; it passes when the future resolves to `Ok` within two seconds.
    pub fn check<F, Fut>(mut self, name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.probes
            .push((name, Arc::new(move || Box::pin(probe()) as BoxFuture<_>)));
        self
    }

    /// The checks every service needs: the bus (Kafka), the state store (Redis) and, where the
    /// service touches media, the object store (S3).
    pub fn dependencies(
        bus: Arc<dyn crate::bus::Bus>,
        state: Arc<dyn crate::state::StateStore>,
        store: Option<Arc<dyn object_store::ObjectStore>>,
    ) -> Self {
        let mut r = Self::new()
            .check("kafka", move || {
                let bus = bus.clone();
                async move { bus.ping().await.map_err(|e| e.to_string()) }
            })
            .check("redis", move || {
                let state = state.clone();
                async move { state.ping().await.map_err(|e| e.to_string()) }
            });
        if let Some(store) = store {
            r = r.check("media", move || {
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
        r
    }

    /// Runs every check at once: `(ready, {name: "ok" | "error: …"})`.
    pub async fn run(&self) -> (bool, serde_json::Map<String, serde_json::Value>) {
        let results = futures::future::join_all(self.probes.iter().map(|(name, probe)| {
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
        let ready = results.iter().all(|(_, r)| r.is_ok());
        let checks = results
            .into_iter()
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
        let readiness = Readiness::new()
            .check("redis", || async { Ok(()) })
            .check("kafka", || async { Err("connection refused".to_string()) });
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
}
