//! Store changelogs: every state write of a batch goes, in the batch's transaction, to the
//! store's compacted changelog topic, on the partition of the org it belongs to (its key
//! group), so the partition that owns an org's input owns its state. On assignment a store
//! catches up on those partitions from its checkpoint, kept in the store with the data, to the
//! end: nothing after a clean stop, the tail after a crash, everything for a lost directory.

use crate::admin::{client_config, watermarks, ReadError};
use crate::config::KafkaProperties;
use p2p_state::murmur2::partition_for;
use p2p_state::{org_of_raw_key, StateError, Store, StoreBatch};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Most changes applied in one RocksDB batch while restoring.
const RESTORE_BATCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("state store: {0}")]
    State(#[from] StateError),
    #[error("restoring {topic}[{partition}] did not reach its end within {seconds} s")]
    RestoreTimeout {
        topic: String,
        partition: i32,
        seconds: u64,
    },
    #[error("a state key of no org reached the changelog (the store's own keys never should)")]
    KeyWithoutOrg,
}

/// The partition of the changelog a raw store key goes to, with `partitions` partitions: the
/// one its org's records are on in every co-partitioned input topic (the Java partitioner).
pub fn partition_of(key: &[u8], partitions: i32) -> Result<i32, ChangelogError> {
    let org = org_of_raw_key(key).ok_or(ChangelogError::KeyWithoutOrg)?;
    Ok(partition_for(org, partitions.max(1) as u32) as i32)
}

/// Creates the compacted changelog `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(
    kafka: &KafkaProperties,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), ChangelogError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact");
    for result in admin.create_topics([&new], &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code).into()),
        }
    }
    Ok(())
}

/// Brings `store` up to the end of `topic` partition `partition`, from its checkpoint.
/// Returns how many changes it applied.
pub fn restore(
    kafka: &KafkaProperties,
    store: &Store,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<u64, ChangelogError> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", format!("p2p-restore-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let (low, high) = watermarks(&consumer, topic, partition, deadline)?;
    let from = store
        .checkpointed(topic, partition)?
        .unwrap_or(low)
        .max(low);
    if from >= high {
        return Ok(0);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&assignment)?;
    let mut applied = 0u64;
    let mut batch = StoreBatch::default();
    let mut in_batch = 0usize;
    let mut next = from;
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message?;
            if let Some(key) = message.key() {
                batch.restore(key, message.payload());
                in_batch += 1;
                applied += 1;
            }
            next = message.offset() + 1;
        }
        // Under read_committed the last offsets may be transaction markers, never delivered:
        // done once the position reaches the high watermark.
        let position = consumer
            .position()?
            .find_partition(topic, partition)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(next);
        let done = position.max(next) >= high;
        if in_batch >= RESTORE_BATCH || (done && in_batch > 0) {
            batch.checkpoint(topic, partition, next);
            store.write(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
        if done {
            return Ok(applied);
        }
        if Instant::now() > deadline {
            return Err(ChangelogError::RestoreTimeout {
                topic: topic.to_owned(),
                partition,
                seconds: timeout.as_secs(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_processors::OrgId;
    use p2p_state::{StateKey, Timer};

    #[test]
    fn an_orgs_state_and_timers_go_to_the_partition_its_input_is_on() {
        let org = OrgId::from_u128(7);
        let key = StateKey::new(&org, "po_1");
        let input_partition = partition_for(org.as_str().as_bytes(), 6) as i32;
        assert_eq!(partition_of(key.as_bytes(), 6).unwrap(), input_partition);
        let mut batch = StoreBatch::default();
        batch.schedule(&Timer {
            due: 5,
            owner: key,
            name: "escalation".into(),
        });
        let (timer_key, _) = &batch.changes()[0];
        assert_eq!(partition_of(timer_key, 6).unwrap(), input_partition);
    }
}
