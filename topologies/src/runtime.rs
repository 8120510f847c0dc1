//! The runtime: consume a batch, process it (firing the timers due by now), produce its
//! outputs and wait until the broker has them, apply its state writes as one RocksDB batch,
//! then commit its input offsets. When no records come, it still wakes up to fire timers.
//!
//! Guarantee: at least once, with idempotent outputs. A crash between any two steps replays
//! the batch from the last committed offsets; the state makes the replay harmless (a
//! re-delivered receipt is counted once, a re-delivered invoice gets the same outcome again,
//! with the same content), so consumers that key on the document id see each outcome once.
//! Outputs go out before state is written, so no outcome is ever recorded without having been
//! delivered. Exactly-once (one Kafka transaction per batch) replaces this in its own issue.

use crate::admin::client_config;
use crate::config::{MatchConfig, RuntimeConfig};
use crate::match_topology::MatchProcessor;
use crate::metrics::{BatchMetrics, Metrics};
use crate::record::{Aligner, IdleWaits, InputRecord, Lag};
use crate::stats::{Stats, StatsSnapshot};
use crate::topology::{ProcessError, Topology};
use futures::future::join_all;
use p2p_avro::Codec;
use p2p_state::{StateError, Store};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("creating the Kafka {client}: {source}")]
    Client {
        client: &'static str,
        source: KafkaError,
    },
    #[error("subscribing to {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        source: KafkaError,
    },
    #[error("state store: {0}")]
    State(#[from] StateError),
}

/// Drives one topology against a Kafka cluster.
pub struct Runtime<T: Topology> {
    config: RuntimeConfig,
    topology: T,
    store: Store,
    consumer: StreamConsumer,
    producer: FutureProducer,
    stats: Arc<Stats>,
    metrics: Option<Arc<Metrics>>,
}

/// The match topology's runtime.
pub type MatchRuntime = Runtime<MatchProcessor>;

impl MatchRuntime {
    pub fn for_match(config: MatchConfig, codec: Arc<Codec>) -> Result<Self, RuntimeError> {
        let processor = MatchProcessor::new(config.topics.clone(), config.tolerance, codec);
        Runtime::new(config.runtime, processor)
    }
}

impl<T: Topology> Runtime<T> {
    pub fn new(config: RuntimeConfig, topology: T) -> Result<Self, RuntimeError> {
        let store = Store::open(
            &config.state_dir.join(&config.application_id),
            topology.name(),
        )?;
        let consumer: StreamConsumer = client_config(&config.kafka)
            .set("group.id", &config.application_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            // Range assigns the same partition numbers of co-partitioned topics to the same
            // member, which the join by org needs (cooperative-sticky does not promise that).
            .set("partition.assignment.strategy", "range")
            .create()
            .map_err(|source| RuntimeError::Client {
                client: "consumer",
                source,
            })?;
        let producer: FutureProducer = client_config(&config.kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // The Java client's partitioner, so ERPs on any client agree with us on partitions.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create()
            .map_err(|source| RuntimeError::Client {
                client: "producer",
                source,
            })?;
        let topics = topology.input_topics();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&refs)
            .map_err(|source| RuntimeError::Subscribe {
                topics: topics.clone(),
                source,
            })?;
        Ok(Self {
            config,
            topology,
            store,
            consumer,
            producer,
            stats: Arc::new(Stats::default()),
            metrics: None,
        })
    }

    /// Reports to `metrics` (shared by the runtimes of one process).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counters, readable while the runtime runs.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` completes, finishing the batch in hand first.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<StatsSnapshot, RuntimeError> {
        tokio::pin!(shutdown);
        if let Some(metrics) = &self.metrics {
            metrics.running(self.topology.name(), true);
        }
        let topics = self.topology.input_topics();
        let has_timers = self.topology.has_timers();
        let mut aligner = Aligner::default();
        let mut owned = Owned::default();
        let mut receive_failures = 0u32;
        let mut timer_tick = tokio::time::interval(self.config.timer_interval);
        timer_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let waiting = aligner.is_waiting();
            let first = tokio::select! {
                _ = &mut shutdown => break,
                received = self.consumer.recv() => Some(received),
                _ = timer_tick.tick(), if has_timers => None,
                // A partition group waits for a lagging partition: look again shortly.
                _ = tokio::time::sleep(Duration::from_millis(20)), if waiting => None,
            };
            match first {
                None => {}
                Some(Ok(message)) => {
                    receive_failures = 0;
                    aligner.push(to_input(&message));
                    let deadline = Instant::now() + self.config.batch_linger;
                    while aligner.buffered() < self.config.max_batch {
                        match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                            Ok(Ok(message)) => aligner.push(to_input(&message)),
                            Ok(Err(error)) => {
                                tracing::warn!(%error, "consume failed mid-batch; processing what is in hand");
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Some(Err(error)) => {
                    receive_failures += 1;
                    tracing::warn!(%error, "consume failed; retrying");
                    tokio::time::sleep(backoff(receive_failures)).await;
                    continue;
                }
            }
            owned.refresh(&self.consumer);
            aligner.retain(|topic, partition| owned.contains(topic, partition));
            let batch = aligner.take(
                &topics,
                self.config.max_batch,
                std::time::Instant::now(),
                IdleWaits {
                    behind: self.config.max_task_idle,
                    unknown: self.config.max_fetch_wait,
                },
                |topic, partition, next| owned.lag(&self.consumer, topic, partition, next),
            );
            if batch.is_empty() && !has_timers {
                continue;
            }
            self.handle_batch(&batch).await?;
        }
        if let Some(metrics) = &self.metrics {
            metrics.running(self.topology.name(), false);
        }
        tracing::info!(topology = self.topology.name(), "runtime stopped");
        Ok(self.stats.snapshot())
    }

    /// Processes one batch until it succeeds: transient faults are retried with backoff,
    /// never skipped.
    async fn handle_batch(&self, batch: &[InputRecord]) -> Result<(), RuntimeError> {
        let mut attempt = 0u32;
        loop {
            match self.try_batch(batch).await {
                Ok(()) => return Ok(()),
                Err(BatchFailure::Retry(reason)) => {
                    attempt += 1;
                    tracing::warn!(attempt, %reason, records = batch.len(), "batch failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(BatchFailure::Fatal(e)) => return Err(e),
            }
        }
    }

    async fn try_batch(&self, batch: &[InputRecord]) -> Result<(), BatchFailure> {
        let started = Instant::now();
        let output = match self
            .topology
            .process(batch, wall_clock_millis(), &self.store)
            .await
        {
            Ok(output) => output,
            Err(ProcessError::Transient(e)) => return Err(BatchFailure::Retry(e.to_string())),
            Err(ProcessError::State(e)) => return Err(BatchFailure::Fatal(e.into())),
        };
        let processed = Instant::now();

        let deliveries = output.records.iter().map(|record| {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut future = FutureRecord::to(&record.topic)
                .key(&record.key)
                .headers(headers);
            if let Some(payload) = &record.payload {
                future = future.payload(payload);
            }
            self.producer.send(future, Timeout::Never)
        });
        for delivery in join_all(deliveries).await {
            if let Err((error, _)) = delivery {
                return Err(BatchFailure::Retry(format!("produce: {error}")));
            }
        }

        self.store
            .write(output.state)
            .map_err(|e| BatchFailure::Fatal(e.into()))?;
        let mut stats = output.stats;
        stats.records_in = batch.len() as u64;
        stats.batches = u64::from(!batch.is_empty());
        for record in &output.records {
            *stats.records_out.entry(record.topic.clone()).or_default() += 1;
        }

        if batch.is_empty() {
            self.report(&stats, batch, started, processed);
            return Ok(());
        }
        // Records are processed in offset order per partition; what is still buffered is
        // committed with a later batch.
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for record in batch {
            let slot = next.entry((&record.topic, record.partition)).or_default();
            *slot = (*slot).max(record.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            // Adding a partition to a fresh list cannot fail.
            let _ = offsets.add_partition_offset(topic, partition, Offset::Offset(offset));
        }
        if let Err(error) = self.consumer.commit(&offsets, CommitMode::Sync) {
            // Outputs and state are in place; a lost commit only means a harmless replay.
            tracing::warn!(%error, "offset commit failed; the batch will be replayed idempotently");
        }
        self.report(&stats, batch, started, processed);
        Ok(())
    }

    /// Counts a committed batch, and reports it to the metrics if there are any.
    fn report(
        &self,
        stats: &StatsSnapshot,
        batch: &[InputRecord],
        started: Instant,
        processed: Instant,
    ) {
        self.stats.add(stats);
        let Some(metrics) = &self.metrics else {
            return;
        };
        let mut records_in: Vec<(String, u64)> = Vec::new();
        for record in batch {
            match records_in.iter_mut().find(|(t, _)| *t == record.topic) {
                Some((_, n)) => *n += 1,
                None => records_in.push((record.topic.clone(), 1)),
            }
        }
        let now = wall_clock_millis();
        let ages_ms: Vec<i64> = batch
            .iter()
            .filter_map(|r| r.timestamp)
            .map(|t| (now - t).max(0))
            .collect();
        metrics.batch(
            self.topology.name(),
            &BatchMetrics {
                stats,
                records_in: &records_in,
                processing: processed - started,
                committing: processed.elapsed(),
                ages_ms: &ages_ms,
            },
        );
    }
}

enum BatchFailure {
    Retry(String),
    Fatal(RuntimeError),
}

/// The partitions this member owns, and where each started (its committed offset), to tell
/// a partition that is caught up from one whose records are still to be fetched.
#[derive(Default)]
struct Owned {
    partitions: HashSet<(String, i32)>,
    starts: HashMap<(String, i32), i64>,
}

impl Owned {
    fn refresh(&mut self, consumer: &StreamConsumer) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let now: HashSet<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        if now == self.partitions {
            return;
        }
        // A rebalance: learn where the new partitions start (one call per rebalance).
        self.starts.clear();
        if let Ok(committed) = consumer.committed(Timeout::After(Duration::from_secs(10))) {
            for e in committed.elements() {
                if let Offset::Offset(offset) = e.offset() {
                    self.starts
                        .insert((e.topic().to_owned(), e.partition()), offset);
                }
            }
        }
        self.partitions = now;
    }

    fn contains(&self, topic: &str, partition: i32) -> bool {
        self.partitions.contains(&(topic.to_owned(), partition))
    }

    /// Caught up when the next offset to read is at the high watermark the last fetch
    /// reported; unknown until a fetch has reported one.
    fn lag(
        &self,
        consumer: &StreamConsumer,
        topic: &str,
        partition: i32,
        next: Option<i64>,
    ) -> Lag {
        if !self.contains(topic, partition) {
            return Lag::CaughtUp;
        }
        let Some(high) = cached_high_watermark(consumer, topic, partition) else {
            return Lag::Unknown;
        };
        let caught_up =
            match next.or_else(|| self.starts.get(&(topic.to_owned(), partition)).copied()) {
                Some(next) => next >= high,
                None => high == 0,
            };
        if caught_up {
            Lag::CaughtUp
        } else {
            Lag::Behind
        }
    }
}

/// The high watermark the last fetch response reported for a partition, from librdkafka's
/// cache: no request to the broker (rust-rdkafka only wraps the network variant).
fn cached_high_watermark(consumer: &StreamConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, `topic` is a
    // NUL-terminated string that outlives the call, and librdkafka only writes the two i64s.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// The runtime's clock, read once per batch and handed to the topology: processors never read
/// a clock themselves.
fn wall_clock_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)))
}

fn to_input(message: &BorrowedMessage<'_>) -> InputRecord {
    InputRecord {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
