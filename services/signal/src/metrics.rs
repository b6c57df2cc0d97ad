//! The signal service's metrics: HTTP request durations (by route pattern, never raw paths),
//! WebSocket and viewer sessions, and the health of each Janus gateway.

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use cloudcam_core::metrics::{register_gauge_vec, register_histogram_vec};
use prometheus::{GaugeVec, HistogramVec};
use std::sync::LazyLock;
use std::time::Instant;

static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec(
        "cloudcam_signal_http_request_duration_seconds",
        "HTTP request durations by method, route pattern and status code",
        &["method", "route", "status"],
        vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
    )
});
pub static WEBSOCKETS: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    cloudcam_core::metrics::register_gauge(
        "cloudcam_signal_websocket_sessions",
        "Open WebSocket sessions on this signal instance",
    )
});
static VIEWERS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec(
        "cloudcam_signal_viewers",
        "Open live views (Janus viewer sessions) on this signal instance, per camera",
        &["camera"],
    )
});
pub static JANUS_UP: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec(
        "cloudcam_signal_janus_up",
        "1 when the last health check of a Janus gateway succeeded",
        &["gateway"],
    )
});
pub static JANUS_MOUNTPOINTS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec(
        "cloudcam_signal_janus_mountpoints",
        "Streaming mountpoints present on a Janus gateway at its last health check",
        &["gateway"],
    )
});

/// Desired-state changes stored but not published at once (the bus was away); the outbox pass
/// publishes them.
pub static SPECS_DEFERRED: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    cloudcam_core::metrics::register_counter(
        "cloudcam_signal_specs_deferred_total",
        "Desired-state changes stored while the bus could not take them (published later from the outbox)",
    )
});
pub static SPECS_UNPUBLISHED: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    cloudcam_core::metrics::register_gauge(
        "cloudcam_signal_specs_unpublished",
        "Cameras whose desired state waits in the outbox for the bus, at the last outbox pass",
    )
});
/// Edge agents connected to this signal instance.
pub static EDGE_AGENTS: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    cloudcam_core::metrics::register_gauge(
        "cloudcam_signal_edge_agents",
        "Edge agents connected to this signal instance",
    )
});
/// Messages from edge agents that could not be decoded (skipped).
pub static EDGE_BAD_MESSAGES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    cloudcam_core::metrics::register_counter(
        "cloudcam_signal_edge_bad_messages_total",
        "Messages from edge agents that could not be decoded and were skipped",
    )
});

/// Registers the signal service's metrics up front.
pub fn describe() {
    LazyLock::force(&WEBSOCKETS);
    LazyLock::force(&EDGE_AGENTS);
    LazyLock::force(&EDGE_BAD_MESSAGES);
    LazyLock::force(&SPECS_DEFERRED);
    LazyLock::force(&SPECS_UNPUBLISHED);
    cloudcam_core::metrics::describe();
}

/// Times every request; the route label is the matched pattern (`/api/v1/cameras/{id}`), so
/// its values are bounded by the routes the service has.
pub async fn http_timer(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    HTTP_DURATION
        .with_label_values(&[method, &route, res.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    Ok(res)
}

/// The method label: one of the standard methods, else `other`, so requests with made-up
/// methods (anyone can send them, unauthenticated) add no series.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, label)| label)
}

/// Counts one open view of a camera for as long as it lives.
pub struct ViewerGuard(String);

impl ViewerGuard {
    pub fn new(camera_id: &str) -> Self {
        VIEWERS.with_label_values(&[camera_id]).inc();
        Self(camera_id.to_string())
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        VIEWERS.with_label_values(&[&self.0]).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        let made_up = actix_web::http::Method::from_bytes(b"XYZZY").unwrap();
        assert_eq!(method_label(&made_up), "other");
        assert_eq!(method_label(&actix_web::http::Method::PATCH), "PATCH");
    }
}
