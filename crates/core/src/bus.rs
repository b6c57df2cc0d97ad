//! The event bus: cameras' desired state and facts about cameras.
//!
//! [`KafkaBus`] spreads cameras over ingest workers with a Kafka consumer group on the
//! compacted desired-state topic: owning a partition means owning its cameras. [`MemoryBus`]
//! is the single-process equivalent (one owner of everything).

use async_trait::async_trait;
use cloudcam_proto::v1::{CameraEvent, CameraSpec};
use cloudcam_proto::{CAMERAS_TOPIC, EVENTS_TOPIC, SCHEMA_VERSION};
use prometheus::IntCounterVec;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka admin: creating topic {topic} failed: {code}")]
    Topic { topic: String, code: String },
    #[error("kafka: {0}")]
    Unavailable(String),
}

/// A change in what this worker owns.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecUpdate {
    /// The desired state of a camera in a partition this worker owns.
    Upsert { partition: i32, spec: CameraSpec },
    /// The camera was deleted.
    Deleted { partition: i32, camera_id: String },
    /// These partitions (and so their cameras) are no longer this worker's. The group waits
    /// (up to [`REVOKE_TIMEOUT`]) for `done` before giving them to another member: hand the
    /// partitions' cameras over, then call it. `lost`: the group session ended without a
    /// rebalance (the coordinator was unreachable for longer than the session timeout), so
    /// nobody may have been given them.
    Revoked {
        partitions: Vec<i32>,
        lost: bool,
        done: Ack,
    },
}

/// How long a revocation waits for the member to stop its actors.
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Acknowledges a revocation once the revoked cameras are stopped (dropping it does too).
#[derive(Clone)]
pub struct Ack(Option<std::sync::mpsc::SyncSender<()>>);

impl Ack {
    /// An acknowledgement nobody waits for.
    pub fn none() -> Self {
        Self(None)
    }

    pub fn done(self) {
        if let Some(tx) = self.0 {
            let _ = tx.try_send(());
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

impl PartialEq for Ack {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Writes a camera's desired state; `None` deletes it (a tombstone).
    async fn put_spec(&self, camera_id: &str, spec: Option<&CameraSpec>) -> Result<(), BusError>;
    /// Publishes a fact about a camera.
    async fn publish_event(&self, event: &CameraEvent) -> Result<(), BusError>;
    /// Joins `group` over the desired-state topic and streams what this member owns.
    fn own_specs(&self, group: &str) -> Result<mpsc::UnboundedReceiver<SpecUpdate>, BusError>;
    /// Streams every camera event published from now on.
    fn events(&self) -> Result<mpsc::UnboundedReceiver<CameraEvent>, BusError>;
    /// Succeeds when the bus answers (the brokers, for Kafka).
    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
    /// How many partitions the desired-state topic has: a camera lives in
    /// [`camera_partition`]`(id, camera_partitions())`.
    fn camera_partitions(&self) -> i32 {
        1
    }
}

/// The partition of the desired-state topic a camera's messages go to: a stable hash of its id
/// (FNV-1a, so every publisher agrees on it whatever its language or build). The API draws
/// new ids so that cameras fill the partitions in turn, which spreads even a small fleet
/// evenly over the workers (Kafka assigns partitions, not cameras).
pub fn camera_partition(camera_id: &str, partitions: i32) -> i32 {
    let hash = camera_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash % partitions.max(1) as u32) as i32
}

/// Decodes a desired-state message; `None` (counted and logged) when it cannot be used.
fn decode_spec(payload: &[u8]) -> Option<CameraSpec> {
    match CameraSpec::decode(payload) {
        Ok(spec) if spec.schema_version <= SCHEMA_VERSION && !spec.camera_id.is_empty() => {
            Some(spec)
        }
        Ok(spec) => {
            skipped(
                CAMERAS_TOPIC,
                &format!("schema version {}", spec.schema_version),
            );
            None
        }
        Err(e) => {
            skipped(CAMERAS_TOPIC, &e.to_string());
            None
        }
    }
}

fn decode_event(payload: &[u8]) -> Option<CameraEvent> {
    match CameraEvent::decode(payload) {
        Ok(ev) if ev.schema_version <= SCHEMA_VERSION => Some(ev),
        Ok(ev) => {
            skipped(
                EVENTS_TOPIC,
                &format!("schema version {}", ev.schema_version),
            );
            None
        }
        Err(e) => {
            skipped(EVENTS_TOPIC, &e.to_string());
            None
        }
    }
}

/// The one place an undecodable message is both logged and counted.
fn skipped(topic: &'static str, why: &str) {
    crate::metrics::UNDECODABLE_MESSAGES
        .with_label_values(&[topic])
        .inc();
    tracing::warn!(topic, why, "skipped an undecodable message");
}

/// In-process bus: the single-machine default.
pub struct MemoryBus {
    specs: Mutex<HashMap<String, CameraSpec>>,
    spec_tx: broadcast::Sender<SpecUpdate>,
    event_tx: broadcast::Sender<CameraEvent>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self {
            specs: Mutex::new(HashMap::new()),
            spec_tx: broadcast::channel(1024).0,
            event_tx: broadcast::channel(4096).0,
        }
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// The camera's current desired state (`None` after a tombstone).
    pub fn latest_spec(&self, camera_id: &str) -> Option<CameraSpec> {
        self.specs.lock().expect("bus lock").get(camera_id).cloned()
    }
}

fn forward<T: Clone + Send + 'static>(
    mut rx: broadcast::Receiver<T>,
    tx: mpsc::UnboundedSender<T>,
) {
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "in-process bus subscriber lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

#[async_trait]
impl Bus for MemoryBus {
    async fn put_spec(&self, camera_id: &str, spec: Option<&CameraSpec>) -> Result<(), BusError> {
        let mut specs = self.specs.lock().expect("bus lock");
        let update = match spec {
            Some(s) => {
                specs.insert(camera_id.to_string(), s.clone());
                SpecUpdate::Upsert {
                    partition: 0,
                    spec: s.clone(),
                }
            }
            None => {
                specs.remove(camera_id);
                SpecUpdate::Deleted {
                    partition: 0,
                    camera_id: camera_id.to_string(),
                }
            }
        };
        let _ = self.spec_tx.send(update);
        Ok(())
    }

    async fn publish_event(&self, event: &CameraEvent) -> Result<(), BusError> {
        let _ = self.event_tx.send(event.clone());
        Ok(())
    }

    fn own_specs(&self, _group: &str) -> Result<mpsc::UnboundedReceiver<SpecUpdate>, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let specs = self.specs.lock().expect("bus lock");
        // Subscribe while holding the lock so no update falls between snapshot and stream.
        let live = self.spec_tx.subscribe();
        for spec in specs.values() {
            let _ = tx.send(SpecUpdate::Upsert {
                partition: 0,
                spec: spec.clone(),
            });
        }
        drop(specs);
        forward(live, tx);
        Ok(rx)
    }

    fn events(&self) -> Result<mpsc::UnboundedReceiver<CameraEvent>, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        forward(self.event_tx.subscribe(), tx);
        Ok(rx)
    }
}

/// Kafka connection settings (the `[kafka]` section of a service's config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port[,host:port]`; empty selects the in-process bus.
    pub brokers: String,
    /// Partitions of the desired-state topic: the unit of work distribution.
    pub camera_partitions: i32,
    pub replication_factor: i32,
    /// Consumer-group session timeout (classic protocol): how long a dead worker keeps its
    /// cameras. The broker's `group.min.session.timeout.ms` (default 6000) must allow it.
    pub session_timeout_ms: u32,
    /// How often a member heartbeats: survivors learn of a rebalance within this.
    pub heartbeat_interval_ms: u32,
    /// How long a message may wait for the brokers before its send fails (the callers keep it
    /// and retry: signal's spec outbox, ingest's latest event per camera).
    pub message_timeout_ms: u32,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            camera_partitions: 12,
            replication_factor: 1,
            session_timeout_ms: 1000,
            heartbeat_interval_ms: 200,
            message_timeout_ms: 5000,
        }
    }
}

/// Answers each message's delivery report on the channel it was sent with.
struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<tokio::sync::oneshot::Sender<Result<(), BusError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let outcome = result
            .as_ref()
            .map(|_| ())
            .map_err(|(e, _)| BusError::Kafka(e.clone()));
        let _ = reply.send(outcome);
    }
}

/// librdkafka's producer with a thread of its own serving delivery reports.
///
/// Written instead of rdkafka's `FutureProducer` (0.38 and 0.39): its thread polls in 100 ms
/// slices, and each slice ends with a busy loop through its last millisecond (the remaining
/// time is rounded down to whole milliseconds, so librdkafka is asked to wait 0 ms until the
/// deadline passes). That was about 0.7 % of a core in every process, idle or not; here a slice
/// is a second long.
struct Producer {
    inner: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
}

/// How long the delivery thread waits for reports in one call (see [`Producer`]).
const DELIVERY_POLL: Duration = Duration::from_secs(1);

/// How long a message waits for room in librdkafka's queue before its send fails.
const QUEUE_WAIT: Duration = Duration::from_secs(10);

impl Producer {
    fn new(config: &ClientConfig) -> Result<Self, BusError> {
        let inner: Arc<BaseProducer<Deliveries>> =
            Arc::new(config.create_with_context(Deliveries)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (producer, stopped) = (inner.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka-deliveries".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    producer.poll(DELIVERY_POLL);
                }
            })
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(Self { inner, stop })
    }

    /// Sends one message and waits for the broker's acknowledgement (bounded by
    /// `message.timeout.ms`); a full local queue is waited out for [`QUEUE_WAIT`] at most.
    async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &str,
        payload: Option<&[u8]>,
    ) -> Result<(), BusError> {
        let started = std::time::Instant::now();
        loop {
            let (reply, delivered) = tokio::sync::oneshot::channel();
            let mut record = BaseRecord::with_opaque_to(topic, Box::new(reply)).key(key);
            if let Some(p) = partition {
                record = record.partition(p);
            }
            if let Some(p) = payload {
                record = record.payload(p);
            }
            match self.inner.send(record) {
                Ok(()) => {
                    return delivered.await.unwrap_or_else(|_| {
                        Err(BusError::Unavailable("the producer was closed".into()))
                    });
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    _,
                )) if started.elapsed() < QUEUE_WAIT => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((e, _)) => return Err(BusError::Kafka(e)),
            }
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The Kafka-backed bus.
pub struct KafkaBus {
    settings: KafkaSettings,
    producer: Producer,
    /// The desired-state topic's partition count, as the brokers report it.
    camera_partitions: i32,
}

/// The longest pause between two attempts to reach a broker that is away (librdkafka's
/// default is 10 s): a restarted broker is found within a second, which is what bounds how
/// soon the workers have their cameras back after a Kafka restart.
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";

/// The longest a desired-state fetch waits at the broker for new messages. On assignment a
/// worker reads its new partitions only once the fetch in flight returns, so this bounds that
/// part of a failover (10 small fetches a second per worker while nothing changes).
const OWNER_FETCH_WAIT_MS: &str = "100";

impl KafkaBus {
    /// Connects to the brokers and makes sure both topics exist.
    pub async fn connect(settings: KafkaSettings) -> Result<Self, BusError> {
        let producer = Producer::new(
            ClientConfig::new()
                .set("bootstrap.servers", &settings.brokers)
                .set(
                    "message.timeout.ms",
                    settings.message_timeout_ms.to_string(),
                )
                .set("linger.ms", "0")
                .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
                // One request in flight per broker: retries keep the order of a partition's
                // messages (a camera's specs). (The idempotent producer keeps order too, but holds
                // a message well past message.timeout.ms while the broker is away.)
                .set("max.in.flight.requests.per.connection", "1"),
        )?;
        let mut bus = Self {
            settings,
            producer,
            camera_partitions: 0,
        };
        bus.ensure_topics().await?;
        // The topic may predate this configuration: its own partition count is what counts.
        let client = bus.producer.inner.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(Some(CAMERAS_TOPIC), Duration::from_secs(5))
        })
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))??;
        bus.camera_partitions = metadata
            .topics()
            .iter()
            .map(|t| t.partitions().len() as i32)
            .sum();
        if bus.camera_partitions == 0 {
            return Err(BusError::Unavailable(format!(
                "{CAMERAS_TOPIC} has no partitions"
            )));
        }
        Ok(bus)
    }

    async fn ensure_topics(&self) -> Result<(), BusError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.settings.brokers)
            .create()?;
        let rf = || TopicReplication::Fixed(self.settings.replication_factor);
        let cameras = NewTopic::new(CAMERAS_TOPIC, self.settings.camera_partitions, rf())
            .set("cleanup.policy", "compact");
        let events = NewTopic::new(EVENTS_TOPIC, self.settings.camera_partitions, rf())
            .set("retention.ms", "86400000");
        // Short, so a service started before its broker retries soon (see ops::Readiness).
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(5)))
            .request_timeout(Some(Duration::from_secs(5)));
        for res in admin.create_topics([&cameras, &events], &opts).await? {
            match res {
                Ok(_) => {}
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(BusError::Topic {
                        topic,
                        code: format!("{code:?}"),
                    });
                }
            }
        }
        Ok(())
    }

    fn consumer_config(&self, group: &str, offset_reset: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.settings.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", offset_reset)
            .set(
                "session.timeout.ms",
                self.settings.session_timeout_ms.to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                self.settings.heartbeat_interval_ms.to_string(),
            )
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
            // Feeds the consumer-lag gauge.
            .set("statistics.interval.ms", "5000");
        cfg
    }
}

static CONSUMER_LAG: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    crate::metrics::register_gauge_vec(
        "cloudcam_bus_consumer_lag_messages",
        "Messages on a topic's owned partitions not yet consumed by this process",
        &["topic"],
    )
});
static REBALANCES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::metrics::register_counter_vec(
        "cloudcam_bus_partitions_rebalanced_total",
        "Partitions assigned to or revoked from this process by its consumer group (kind=assigned|revoked)",
        &["topic", "kind"],
    )
});

/// Reports lag from librdkafka's statistics and, for the desired-state consumer, tells the
/// owner loop which partitions were taken away, before they are given to others.
struct BusContext {
    topic: &'static str,
    revoked: Option<mpsc::UnboundedSender<SpecUpdate>>,
}

impl rdkafka::client::ClientContext for BusContext {
    fn stats(&self, stats: rdkafka::Statistics) {
        let lag: i64 = stats
            .topics
            .get(self.topic)
            .map(|t| {
                t.partitions
                    .values()
                    .filter(|p| p.partition >= 0)
                    .map(|p| p.consumer_lag.max(0))
                    .sum()
            })
            .unwrap_or(0);
        CONSUMER_LAG
            .with_label_values(&[self.topic])
            .set(lag as f64);
    }
}

impl ConsumerContext for BusContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let lost = consumer.assignment_lost();
            tracing::info!(topic = self.topic, ?partitions, lost, "partitions revoked");
            REBALANCES
                .with_label_values(&[self.topic, "revoked"])
                .inc_by(partitions.len() as u64);
            if let Some(tx) = &self.revoked {
                // This runs on the consumer's own thread, inside the group protocol: blocking
                // here holds the partitions until the owner loop has stopped their actors.
                let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
                let sent = tx.send(SpecUpdate::Revoked {
                    partitions,
                    lost,
                    done: Ack(Some(done_tx)),
                });
                if sent.is_ok() && done_rx.recv_timeout(REVOKE_TIMEOUT).is_err() {
                    tracing::warn!(topic = self.topic, "revoked cameras did not stop in time");
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(topic = self.topic, ?partitions, "partitions assigned");
            REBALANCES
                .with_label_values(&[self.topic, "assigned"])
                .inc_by(partitions.len() as u64);
        }
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn put_spec(&self, camera_id: &str, spec: Option<&CameraSpec>) -> Result<(), BusError> {
        let payload = spec.map(|s| s.encode_to_vec());
        let partition = camera_partition(camera_id, self.camera_partitions);
        self.producer
            .send(
                CAMERAS_TOPIC,
                Some(partition),
                camera_id,
                payload.as_deref(),
            )
            .await
    }

    fn camera_partitions(&self) -> i32 {
        self.camera_partitions
    }

    async fn publish_event(&self, event: &CameraEvent) -> Result<(), BusError> {
        let payload = event.encode_to_vec();
        self.producer
            .send(EVENTS_TOPIC, None, &event.camera_id, Some(&payload))
            .await
    }

    fn own_specs(&self, group: &str) -> Result<mpsc::UnboundedReceiver<SpecUpdate>, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        // No offsets are ever committed: every assignment replays its partitions from the
        // start of the compacted topic, which rebuilds their desired state.
        let consumer: BaseConsumer<BusContext> = self
            .consumer_config(group, "earliest")
            // A fetch for partitions with nothing new waits this long at the broker, and the
            // fetch for partitions just assigned goes out only after it: librdkafka's 500 ms
            // default was a third of a failover.
            .set("fetch.wait.max.ms", OWNER_FETCH_WAIT_MS)
            .create_with_context(BusContext {
                topic: CAMERAS_TOPIC,
                revoked: Some(tx.clone()),
            })?;
        consumer.subscribe(&[CAMERAS_TOPIC])?;
        // A thread of its own: the revocation callback blocks it until the owner loop (on the
        // async runtime) has stopped the revoked cameras.
        std::thread::Builder::new()
            .name(format!("{group}-consumer"))
            .spawn(move || {
                let mut errors = ConsumerErrors::new(CAMERAS_TOPIC);
                while !tx.is_closed() {
                    let Some(res) = consumer.poll(Duration::from_millis(200)) else {
                        continue;
                    };
                    let msg = match res {
                        Ok(msg) => msg,
                        Err(e) => {
                            errors.seen(&e);
                            continue;
                        }
                    };
                    let partition = msg.partition();
                    let key = msg
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default();
                    let update = match msg.payload() {
                        None | Some([]) => Some(SpecUpdate::Deleted {
                            partition,
                            camera_id: key,
                        }),
                        Some(p) => {
                            decode_spec(p).map(|spec| SpecUpdate::Upsert { partition, spec })
                        }
                    };
                    if let Some(u) = update
                        && tx.send(u).is_err()
                    {
                        break;
                    }
                }
                consumer.unsubscribe();
            })
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(rx)
    }

    async fn ping(&self) -> Result<(), BusError> {
        let producer = self.producer.inner.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(CAMERAS_TOPIC), Duration::from_secs(2))
                .map(|_| ())
        })
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))??;
        Ok(())
    }

    fn events(&self) -> Result<mpsc::UnboundedReceiver<CameraEvent>, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Every instance wants every event from now on: no group to join (which would take
        // seconds and miss what is published meanwhile), but every partition assigned from its
        // current end, before this returns.
        let group = format!("cloudcam-events-{}", crate::random_hex(6));
        let consumer: StreamConsumer<BusContext> = self
            .consumer_config(&group, "latest")
            .create_with_context(BusContext {
                topic: EVENTS_TOPIC,
                revoked: None,
            })?;
        // A topic created a moment ago may not have its partition leaders yet: retry briefly.
        let mut attempt = 0;
        let tpl = loop {
            match event_ends(&consumer) {
                Ok(tpl) => break tpl,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "events topic not ready yet");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        };
        consumer.assign(&tpl)?;
        pump(consumer, EVENTS_TOPIC, tx, |msg| {
            msg.payload().and_then(decode_event)
        });
        Ok(rx)
    }
}

/// Every partition of the events topic at its current end (each with a leader).
fn event_ends<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
) -> Result<rdkafka::TopicPartitionList, BusError> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(EVENTS_TOPIC), timeout)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for topic in metadata.topics() {
        if topic.partitions().is_empty() || topic.partitions().iter().any(|p| p.leader() < 0) {
            return Err(BusError::Unavailable(format!(
                "{EVENTS_TOPIC} has partitions without a leader"
            )));
        }
        for p in topic.partitions() {
            let (_, high) = consumer.fetch_watermarks(EVENTS_TOPIC, p.id(), timeout)?;
            tpl.add_partition_offset(EVENTS_TOPIC, p.id(), rdkafka::Offset::Offset(high))?;
        }
    }
    Ok(tpl)
}

/// Feeds what `map` makes of each message into `tx` until the receiver goes away. Consumer
/// errors (broker away, rebalancing) are logged and retried; they never end the loop.
fn pump<C, T, F>(
    consumer: StreamConsumer<C>,
    topic: &'static str,
    tx: mpsc::UnboundedSender<T>,
    map: F,
) where
    C: ConsumerContext + 'static,
    T: Send + 'static,
    F: Fn(&rdkafka::message::BorrowedMessage<'_>) -> Option<T> + Send + 'static,
{
    tokio::spawn(async move {
        let mut errors = ConsumerErrors::new(topic);
        loop {
            match consumer.recv().await {
                Ok(msg) => {
                    if let Some(item) = map(&msg)
                        && tx.send(item).is_err()
                    {
                        return;
                    }
                }
                Err(e) => errors.seen(&e),
            }
        }
    });
}

/// How often one kind of consumer error is logged while it repeats.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Consumer errors are events librdkafka queues (a broker away, a reconnect refused): each is
/// read and passed over at once, never waited after — a pause per error lets a backlog of them
/// build up while Kafka is away, and the messages and rebalances queued behind it then arrive
/// minutes late. They are logged once per kind and [`ERROR_LOG_EVERY`], with the repeats counted.
struct ConsumerErrors {
    topic: &'static str,
    logged: HashMap<String, (std::time::Instant, u64)>,
}

impl ConsumerErrors {
    fn new(topic: &'static str) -> Self {
        Self {
            topic,
            logged: HashMap::new(),
        }
    }

    fn seen(&mut self, e: &rdkafka::error::KafkaError) {
        let text = e.to_string();
        let now = std::time::Instant::now();
        match self.logged.get_mut(&text) {
            Some((at, repeats)) if now.duration_since(*at) < ERROR_LOG_EVERY => *repeats += 1,
            Some((at, repeats)) => {
                tracing::warn!(topic = self.topic, error = %text, repeats = *repeats, "kafka consumer error");
                (*at, *repeats) = (now, 0);
            }
            None => {
                tracing::warn!(topic = self.topic, error = %text, "kafka consumer error");
                self.logged.insert(text, (now, 0));
            }
        }
    }
}

/// Connects the bus the settings name: Kafka when brokers are set, else the in-process bus.
pub async fn from_settings(settings: &KafkaSettings) -> Result<Arc<dyn Bus>, BusError> {
    if settings.brokers.is_empty() {
        Ok(Arc::new(MemoryBus::new()))
    } else {
        Ok(Arc::new(KafkaBus::connect(settings.clone()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_always_maps_to_the_same_partition() {
        // FNV-1a of "a" is 0xe40c292c: fixed, so publishers built at different times agree.
        assert_eq!(camera_partition("a", 12), (0xe40c_292c_u32 % 12) as i32);
        assert_eq!(camera_partition("a", 1), 0);
        assert_eq!(camera_partition("a", 0), 0);
        let hit: std::collections::HashSet<i32> = (0..200)
            .map(|i| camera_partition(&format!("cam{i}"), 12))
            .collect();
        assert_eq!(hit.len(), 12, "every partition reachable");
    }

    #[tokio::test]
    async fn memory_bus_replays_then_streams() {
        let bus = MemoryBus::new();
        let spec = CameraSpec {
            schema_version: 1,
            camera_id: "a".into(),
            ..Default::default()
        };
        bus.put_spec("a", Some(&spec)).await.unwrap();
        let mut rx = bus.own_specs("g").unwrap();
        assert!(matches!(rx.recv().await, Some(SpecUpdate::Upsert { .. })));
        bus.put_spec("a", None).await.unwrap();
        assert_eq!(
            rx.recv().await,
            Some(SpecUpdate::Deleted {
                partition: 0,
                camera_id: "a".into()
            })
        );
    }

    #[test]
    fn undecodable_spec_is_skipped_and_counted() {
        let before = crate::metrics::UNDECODABLE_MESSAGES
            .with_label_values(&[CAMERAS_TOPIC])
            .get();
        assert!(decode_spec(&[0xff, 0xff, 0xff]).is_none());
        let future = CameraSpec {
            schema_version: 99,
            camera_id: "x".into(),
            ..Default::default()
        };
        assert!(decode_spec(&future.encode_to_vec()).is_none());
        let after = crate::metrics::UNDECODABLE_MESSAGES
            .with_label_values(&[CAMERAS_TOPIC])
            .get();
        assert_eq!(after - before, 2);
    }
}
