//! Prometheus helpers. Every service registers its metrics in the default registry and serves
//! them from `/metrics` with [`render`]. Names follow `cloudcam_<subsystem>_<name>_<unit>[_total]`;
//! label values come from fixed sets (states, error kinds) or camera ids.

use prometheus::{Encoder, IntCounterVec, Opts, TextEncoder};
use std::sync::LazyLock;

/// Messages on Kafka (or the in-process bus) that could not be decoded and were skipped.
pub static UNDECODABLE_MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "cloudcam_bus_undecodable_messages_total",
        "Messages skipped because they could not be decoded or carry an unknown schema version",
        &["topic"],
    )
});

/// Registers the metrics every service shares (the bus's), so they are listed from the start.
pub fn describe() {
    for topic in [cloudcam_proto::CAMERAS_TOPIC, cloudcam_proto::EVENTS_TOPIC] {
        UNDECODABLE_MESSAGES.with_label_values(&[topic]).inc_by(0);
    }
}

/// Registers a counter vector in the default registry.
pub fn register_counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    prometheus::default_registry()
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

/// Registers a gauge vector in the default registry.
pub fn register_gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    let g = prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    prometheus::default_registry()
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

/// The default registry in Prometheus's text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut buf)
        .expect("text encoding never fails");
    String::from_utf8(buf).expect("metrics are UTF-8")
}

/// Registers a histogram in the default registry.
pub fn register_histogram(name: &str, help: &str, buckets: Vec<f64>) -> prometheus::Histogram {
    let h = prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new(name, help).buckets(buckets),
    )
    .expect("valid metric");
    prometheus::default_registry()
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

/// Registers a histogram vector in the default registry.
pub fn register_histogram_vec(
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> prometheus::HistogramVec {
    let h = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(name, help).buckets(buckets),
        labels,
    )
    .expect("valid metric");
    prometheus::default_registry()
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

/// Registers a gauge in the default registry.
pub fn register_gauge(name: &str, help: &str) -> prometheus::Gauge {
    let g = prometheus::Gauge::new(name, help).expect("valid metric");
    prometheus::default_registry()
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}
