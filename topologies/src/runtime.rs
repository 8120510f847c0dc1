//! The runtime of the match topology: consume a batch, process it, produce its outputs and
//! wait until the broker has them, apply its state writes as one RocksDB batch, then commit
//! its input offsets.
//!
//! Guarantee: at least once, with idempotent outputs. A crash between any two steps replays
//! the batch from the last committed offsets; the match state makes the replay harmless (a
//! re-delivered receipt is counted once, a re-delivered invoice gets the same outcome again,
//! with the same content), so consumers that key on `invoice_id` see each outcome once.
//! Outputs go out before state is written, so no outcome is ever recorded without having been
//! delivered. Exactly-once (one Kafka transaction per batch) replaces this in its own issue.

use crate::admin::client_config;
use crate::config::MatchConfig;
use crate::match_topology::{MatchProcessor, ProcessError, STORE};
use crate::record::{merge_by_timestamp, InputRecord};
use crate::stats::{Stats, StatsSnapshot};
use futures::future::join_all;
use p2p_avro::Codec;
use p2p_state::{StateError, Store};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
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

/// Drives the match topology against a Kafka cluster.
pub struct MatchRuntime {
    config: MatchConfig,
    processor: MatchProcessor,
    store: Store,
    consumer: StreamConsumer,
    producer: FutureProducer,
    stats: Arc<Stats>,
}

impl MatchRuntime {
    pub fn new(config: MatchConfig, codec: Arc<Codec>) -> Result<Self, RuntimeError> {
        let store = Store::open(&config.state_dir.join(&config.application_id), STORE)?;
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
        let topics: Vec<String> = config
            .topics
            .inputs()
            .iter()
            .map(|t| t.to_string())
            .collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&refs)
            .map_err(|source| RuntimeError::Subscribe {
                topics: topics.clone(),
                source,
            })?;
        let processor = MatchProcessor::new(config.topics.clone(), config.tolerance, codec);
        Ok(Self {
            config,
            processor,
            store,
            consumer,
            producer,
            stats: Arc::new(Stats::default()),
        })
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
        let mut receive_failures = 0u32;
        loop {
            let first = tokio::select! {
                _ = &mut shutdown => break,
                received = self.consumer.recv() => received,
            };
            let first = match first {
                Ok(message) => {
                    receive_failures = 0;
                    to_input(&message)
                }
                Err(error) => {
                    receive_failures += 1;
                    tracing::warn!(%error, "consume failed; retrying");
                    tokio::time::sleep(backoff(receive_failures)).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + self.config.batch_linger;
            while batch.len() < self.config.max_batch {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(message)) => batch.push(to_input(&message)),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "consume failed mid-batch; processing what is in hand");
                        break;
                    }
                    Err(_) => break,
                }
            }
            let batch = merge_by_timestamp(batch);
            self.handle_batch(&batch).await?;
        }
        tracing::info!("match runtime stopped");
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
        let output = match self.processor.process_batch(batch, &self.store).await {
            Ok(output) => output,
            Err(ProcessError::Transient(e)) => return Err(BatchFailure::Retry(e.to_string())),
            Err(ProcessError::State(e)) => return Err(BatchFailure::Fatal(e.into())),
        };

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
        self.stats.add(&output.stats);
        Ok(())
    }
}

enum BatchFailure {
    Retry(String),
    Fatal(RuntimeError),
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
