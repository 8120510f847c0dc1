//! Kafka client helpers: client and producer configurations from the configured properties,
//! deleting topics, reading a topic back to its end and counting it (for operators' tools and
//! tests), and watermarks.

use crate::config::KafkaProperties;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// When a reader to the end of a partition asks its consumer's position. Under
/// read_committed the last offsets may be transaction markers, never delivered, so a reader is
/// done once its position reaches the end. The position is a request to librdkafka's main
/// thread: asked when the fetched records run out, or every 50 ms, never per record (the
/// benchmark's audit spent most of its CPU on asking it per record).
pub struct PositionAsks {
    last: Instant,
}

impl PositionAsks {
    const EVERY: Duration = Duration::from_millis(50);

    pub fn new() -> Self {
        Self {
            last: Instant::now(),
        }
    }

    /// Whether to ask now, after a poll that `ran_out` of records or not.
    pub fn due(&mut self, ran_out: bool) -> bool {
        if !ran_out && self.last.elapsed() < Self::EVERY {
            return false;
        }
        self.last = Instant::now();
        true
    }
}

impl Default for PositionAsks {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("reading {0} did not reach the end in time")]
    Timeout(String),
}

pub fn client_config(kafka: &KafkaProperties) -> ClientConfig {
    config_of(kafka, |_| true)
}

fn config_of(kafka: &KafkaProperties, keep: impl Fn(&str) -> bool) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in kafka.iter().filter(|(k, _)| keep(k)) {
        config.set(k, v);
    }
    config
}

/// librdkafka's consumer-only properties. `[kafka]` is shared by every client, and a producer
/// given one of these warns (CONFWARN) each time it is built.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.remote.assignor",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "isolation.level",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "enable.partition.eof",
    "check.crcs",
    "allow.auto.create.topics",
];

/// [`client_config`] for a producer: the consumer-only properties left out.
pub fn producer_config(kafka: &KafkaProperties) -> ClientConfig {
    config_of(kafka, |k| !CONSUMER_ONLY.contains(&k))
}

/// Deletes each topic named that exists (a disposable application's changelogs, say).
pub async fn delete_topic_names(
    kafka: &KafkaProperties,
    names: &[String],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = admin.delete_topics(&names, &AdminOptions::new()).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => {
                tracing::warn!(topic = %name, error = %code, "deleting topic failed");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// Reads every record of `topic` committed so far.
pub fn read_topic(
    kafka: &KafkaProperties,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>, ReadError> {
    let mut records = Vec::new();
    scan_topic(kafka, topic, timeout, |message| {
        records.push(message.detach())
    })?;
    Ok(records)
}

/// Counts the records of `topic` committed so far (transaction markers and aborted records
/// aside), holding none of them.
pub fn count_topic(
    kafka: &KafkaProperties,
    topic: &str,
    timeout: Duration,
) -> Result<u64, ReadError> {
    let mut count = 0;
    scan_topic(kafka, topic, timeout, |_| count += 1)?;
    Ok(count)
}

/// Hands every record of `topic` committed so far to `each`, in each partition's order.
pub fn scan_topic(
    kafka: &KafkaProperties,
    topic: &str,
    timeout: Duration,
    mut each: impl FnMut(rdkafka::message::BorrowedMessage<'_>),
) -> Result<(), ReadError> {
    // Partitions are assigned, never subscribed: the group id commits nothing and joins no
    // group, it only has to be there.
    // Under the application id when the caller names one (`group.id`), so a prefixed ACL on
    // it covers this reader too.
    let prefix = kafka.get("group.id").map_or("p2p", String::as_str);
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", format!("{prefix}-read-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let deadline = Instant::now() + timeout;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = watermarks(&consumer, topic, partition.id(), deadline)?;
        if high > low {
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
            ends.insert(partition.id(), high);
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment)?;
    let mut asks = PositionAsks::new();
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(ReadError::Timeout(topic.to_owned()));
        }
        let polled = consumer.poll(Duration::from_millis(200));
        let ran_out = polled.is_none();
        if let Some(message) = polled {
            each(message?);
        }
        if !asks.due(ran_out) {
            continue;
        }
        let position = consumer.position()?;
        ends.retain(|partition, high| {
            match position
                .find_partition(topic, *partition)
                .map(|p| p.offset())
            {
                Some(Offset::Offset(o)) => o < *high,
                _ => true,
            }
        });
    }
    Ok(())
}

/// A partition's low and high watermarks. A partition just created may have no leader yet,
/// and a broker restart leaves the client's idea of the leader stale: both pass, so it is
/// retried until `deadline`, like any transient broker fault.
pub fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    deadline: Instant,
) -> Result<(i64, i64), ReadError> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let mut attempts = 0u32;
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            Code::NotLeaderForPartition
                                | Code::LeaderNotAvailable
                                | Code::UnknownTopicOrPartition
                                | Code::UnknownPartition
                                | Code::UnknownTopic
                        )
                    ) =>
            {
                attempts += 1;
                if attempts.is_power_of_two() && attempts >= 16 {
                    tracing::warn!(%topic, partition, error = %e, attempts, "the partition's leader is not known yet; asking again");
                }
                // A client assigned nothing refreshes a topic's metadata only every
                // `topic.metadata.refresh.interval.ms` (5 minutes): after a broker restart it
                // would ask the leader it knew, in vain, until then. A metadata request for
                // the topic refreshes it now.
                let _ = consumer.fetch_metadata(Some(topic), Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return Ok(result?),
        }
    }
}
