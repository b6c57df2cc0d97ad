//! What every worker binary serves and waits for: `/metrics` and `/healthz` on their own port,
//! and a shutdown on SIGTERM or Ctrl-C.

use actix_web::{App, HttpResponse, HttpServer, web};

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}

/// Serves `/metrics` and `/healthz` on `listen`; must run inside an actix system.
pub fn serve_metrics(listen: &str) -> std::io::Result<actix_web::dev::ServerHandle> {
    let server = HttpServer::new(|| {
        App::new().route("/metrics", web::get().to(metrics)).route(
            "/healthz",
            web::get().to(|| async { HttpResponse::Ok().body("ok") }),
        )
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
