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

/// Puts `metric` in the default registry and hands it back: every registration goes here.
fn registered<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    prometheus::default_registry()
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

/// Registers a counter in the default registry.
pub fn register_counter(name: &str, help: &str) -> prometheus::IntCounter {
    registered(prometheus::IntCounter::new(name, help).expect("valid metric"))
}

/// Registers a counter vector in the default registry.
pub fn register_counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

/// Registers a gauge vector in the default registry.
pub fn register_gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    registered(prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

/// Registers a gauge in the default registry.
pub fn register_gauge(name: &str, help: &str) -> prometheus::Gauge {
    registered(prometheus::Gauge::new(name, help).expect("valid metric"))
}

/// Registers a histogram in the default registry.
pub fn register_histogram(name: &str, help: &str, buckets: Vec<f64>) -> prometheus::Histogram {
    let opts = prometheus::HistogramOpts::new(name, help).buckets(buckets);
    registered(prometheus::Histogram::with_opts(opts).expect("valid metric"))
}

/// Registers a histogram vector in the default registry.
pub fn register_histogram_vec(
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> prometheus::HistogramVec {
    let opts = prometheus::HistogramOpts::new(name, help).buckets(buckets);
    registered(prometheus::HistogramVec::new(opts, labels).expect("valid metric"))
}

/// The default registry in Prometheus's text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut buf)
        .expect("text encoding never fails");
    String::from_utf8(buf).expect("metrics are UTF-8")
}
