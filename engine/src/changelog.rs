//! Store changelogs: every state write of a batch goes, in the batch's transaction, to the
//! store's compacted changelog topic, on the partition of the owner it belongs to (the key its
//! input records carry; its key group), so the partition that owns an owner's input owns its
//! state. On assignment a store
//! catches up on those partitions from its checkpoint, kept in the store with the data, to the
//! end: nothing after a clean stop, the tail after a crash, everything for a lost directory.

use crate::config::KafkaProperties;
use crate::kafka::{client_config, watermarks, PositionAsks, ReadError};
use p2p_state::murmur2::partition_for;
use p2p_state::{owner_of_raw_key, StateError, Store, StoreBatch};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Most changes applied in one RocksDB batch while restoring.
const RESTORE_BATCH: usize = 10_000;
/// How long one restore attempt may go without a record or a move of its position before it
/// gives up, so that the caller tries again on a new consumer: one that lost its way in a
/// broker restart (asking a leader that is gone, say) may not find it again for minutes.
const RESTORE_STALL: Duration = Duration::from_secs(30);

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
    #[error("restoring {topic}[{partition}] made no progress for {seconds} s")]
    RestoreStalled {
        topic: String,
        partition: i32,
        seconds: u64,
    },
    #[error("a state key of no owner reached the changelog (the store's own keys never should)")]
    KeyWithoutOwner,
    /// The caller asked to stop (its partitions were reassigned while it restored): what was
    /// applied is checkpointed, nothing more is.
    #[error("the restore was stopped: the partitions were reassigned")]
    Interrupted,
}

impl ChangelogError {
    /// Whether trying again (on a new consumer, from the checkpoint) may succeed: a broker
    /// fault, not a broken store.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ChangelogError::Kafka(_)
                | ChangelogError::Read(_)
                | ChangelogError::RestoreStalled { .. }
        )
    }
}

/// The partition of the changelog a raw store key goes to, with `partitions` partitions: the
/// one its owner's records are on in every co-partitioned input topic (the Java partitioner).
pub fn partition_of(key: &[u8], partitions: i32) -> Result<i32, ChangelogError> {
    let owner = owner_of_raw_key(key).ok_or(ChangelogError::KeyWithoutOwner)?;
    Ok(partition_for(owner, partitions.max(1) as u32) as i32)
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

/// Which changelog records a restore applies, and whether it moves the checkpoints.
pub struct Reading<'a> {
    /// Whether the record of this key read on this partition is applied.
    pub applies: &'a dyn Fn(i32, &[u8]) -> bool,
    pub checkpoints: bool,
}

/// Grows `topic` to `partitions` partitions, unless it has as many already.
pub async fn grow_topic(
    kafka: &KafkaProperties,
    topic: &str,
    partitions: i32,
) -> Result<(), ChangelogError> {
    use rdkafka::admin::NewPartitions;
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let new = NewPartitions::new(topic, partitions as usize);
    for result in admin
        .create_partitions([&new], &AdminOptions::new())
        .await?
    {
        match result {
            Ok(_) => {}
            // Already that many (a growth carried out again after a crash): nothing to do.
            Err((_, RDKafkaErrorCode::InvalidPartitions)) => {
                let consumer: BaseConsumer = client_config(kafka).create()?;
                let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
                let has = metadata
                    .topics()
                    .first()
                    .map_or(0, |t| t.partitions().len() as i32);
                if has < partitions {
                    return Err(KafkaError::AdminOp(RDKafkaErrorCode::InvalidPartitions).into());
                }
            }
            Err((_, code)) => return Err(KafkaError::AdminOp(code).into()),
        }
    }
    Ok(())
}

/// Brings `store` up to the end of `topic` on each of `partitions`, from each one's
/// checkpoint, in one pass over all of them. Returns how many changes it applied per
/// partition. `progress` hears of each RocksDB batch written: the changes it applied, and the
/// changelog offsets still to go; when it answers `false`, the restore stops there
/// ([`ChangelogError::Interrupted`]) and writes nothing more.
///
/// `reading` says which records to apply (all of them, but during a growth those of an owner
/// whose state is elsewhere: ADR 0025), and whether the pass advances the checkpoints: a
/// sweep, which applies only some owners' records, leaves them where they were.
pub fn restore(
    kafka: &KafkaProperties,
    store: &Store,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
    reading: &Reading<'_>,
    progress: &mut dyn FnMut(u64, i64) -> bool,
) -> Result<BTreeMap<i32, u64>, ChangelogError> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = client_config(kafka)
        // Under the changelog's name, and so under the application id: a prefixed ACL on it
        // covers this reader too.
        .set(
            "group.id",
            format!("{topic}-restore-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut applied: BTreeMap<i32, u64> = partitions.iter().map(|p| (*p, 0)).collect();
    // Per partition still behind: the next offset to apply and the end to reach.
    let mut behind: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    let ends_by = deadline.min(Instant::now() + RESTORE_STALL);
    for &partition in partitions {
        let (low, high) = watermarks(&consumer, topic, partition, ends_by)?;
        let from = store
            .checkpointed(topic, partition)?
            .unwrap_or(low)
            .max(low);
        if from < high {
            assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
            behind.insert(partition, (from, high));
        }
    }
    if behind.is_empty() {
        return Ok(applied);
    }
    consumer.assign(&assignment)?;
    let mut batch = StoreBatch::default();
    let mut in_batch = 0usize;
    let mut applied_in_batch = 0u64;
    let mut progressed = Instant::now();
    let mut asks = PositionAsks::new();
    while !behind.is_empty() {
        let polled = consumer.poll(Duration::from_millis(50));
        let ran_out = polled.is_none();
        if let Some(message) = polled {
            progressed = Instant::now();
            let message = message?;
            let partition = message.partition();
            if let Some(key) = message.key() {
                // Records passed over count towards the batch too: its end is where the
                // group consumer is polled.
                in_batch += 1;
                if (reading.applies)(partition, key) {
                    batch.restore(key, message.payload());
                    applied_in_batch += 1;
                    *applied.entry(partition).or_default() += 1;
                }
            }
            if let Some((next, _)) = behind.get_mut(&partition) {
                *next = message.offset() + 1;
            }
        }
        // A partition is done once its position reaches its high watermark (`PositionAsks`).
        let position = if asks.due(ran_out) {
            Some(consumer.position()?)
        } else {
            None
        };
        let mut done = Vec::new();
        for (&partition, (next, high)) in behind.iter_mut() {
            if let Some(Offset::Offset(o)) = position
                .as_ref()
                .and_then(|position| position.find_partition(topic, partition))
                .map(|p| p.offset())
            {
                if o > *next {
                    progressed = Instant::now();
                }
                *next = (*next).max(o);
            }
            if *next >= *high {
                done.push(partition);
            }
        }
        if in_batch >= RESTORE_BATCH || (!done.is_empty() && in_batch > 0) {
            // The checkpoint of every partition this batch holds changes of.
            if reading.checkpoints {
                for (&partition, (next, _)) in &behind {
                    batch.checkpoint(topic, partition, *next);
                }
            }
            store.write(std::mem::take(&mut batch))?;
            let remaining = behind
                .iter()
                .filter(|(p, _)| !done.contains(p))
                .map(|(_, (next, high))| high - next)
                .sum();
            if !progress(applied_in_batch, remaining) {
                return Err(ChangelogError::Interrupted);
            }
            in_batch = 0;
            applied_in_batch = 0;
        }
        for partition in done {
            behind.remove(&partition);
        }
        if let Some((&partition, _)) = behind.iter().next() {
            if Instant::now() > deadline {
                return Err(ChangelogError::RestoreTimeout {
                    topic: topic.to_owned(),
                    partition,
                    seconds: timeout.as_secs(),
                });
            }
            if progressed.elapsed() > RESTORE_STALL {
                // What was applied is checkpointed: the next attempt goes on from there.
                if in_batch > 0 {
                    if reading.checkpoints {
                        for (&partition, (next, _)) in &behind {
                            batch.checkpoint(topic, partition, *next);
                        }
                    }
                    store.write(std::mem::take(&mut batch))?;
                    let remaining = behind.values().map(|(next, high)| high - next).sum();
                    let _ = progress(applied_in_batch, remaining);
                }
                return Err(ChangelogError::RestoreStalled {
                    topic: topic.to_owned(),
                    partition,
                    seconds: RESTORE_STALL.as_secs(),
                });
            }
        }
    }
    Ok(applied)
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
