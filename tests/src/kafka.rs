//! Reads topics from the real broker, for tests that inspect what went over Kafka.

use anyhow::Result;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Reads every message currently in `topics`, from the start, handing each to `each`.
fn read(brokers: &str, topics: &[&str], mut each: impl FnMut(&BorrowedMessage<'_>)) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "cloudcam-test-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = Vec::new();
    for t in metadata
        .topics()
        .iter()
        .filter(|t| topics.contains(&t.name()))
    {
        for p in t.partitions() {
            let (low, high) =
                consumer.fetch_watermarks(t.name(), p.id(), Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
                remaining.push((t.name().to_string(), p.id(), high));
            }
        }
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !remaining.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "timed out reading {topics:?}");
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = msg?;
        each(&msg);
        let (topic, partition, offset) = (msg.topic().to_string(), msg.partition(), msg.offset());
        remaining.retain(|(t, p, high)| !(t == &topic && *p == partition && offset + 1 >= *high));
    }
    Ok(())
}

/// Every message (key and value bytes, concatenated) currently in `topics`.
pub fn read_all(brokers: &str, topics: &[&str]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    read(brokers, topics, |msg| {
        let mut bytes = msg.key().unwrap_or_default().to_vec();
        bytes.extend_from_slice(msg.payload().unwrap_or_default());
        out.push(bytes);
    })?;
    Ok(out)
}

/// The last message of every key in `topic`: `None` for a tombstone.
pub fn latest_by_key(
    brokers: &str,
    topic: &str,
) -> Result<std::collections::HashMap<String, Option<Vec<u8>>>> {
    let mut out = std::collections::HashMap::new();
    read(brokers, &[topic], |msg| {
        let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
        out.insert(key, msg.payload().map(<[u8]>::to_vec));
    })?;
    Ok(out)
}
