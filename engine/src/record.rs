//! Owned records in and out of the processors, so they can be tested without a broker, and
//! the order in which consumed records are handed to them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A consumed record, with what the dead-letter queue needs to name its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp in ms (create or log-append time), if the broker gave one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl InputRecord {
    /// The consumed `message`, owned.
    pub fn of<M: rdkafka::message::Message>(message: &M) -> InputRecord {
        use rdkafka::message::Headers;
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
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its event time: that of the input record it came of, as Kafka Streams propagates it,
    /// so readers downstream (and the end-to-end latency) see when the event happened. `None`
    /// (a timer's output): the producer's clock.
    pub timestamp: Option<i64>,
}

impl OutputRecord {
    /// The record as rdkafka sends it, borrowing this one's bytes.
    pub fn to_send(&self) -> rdkafka::producer::FutureRecord<'_, Vec<u8>, Vec<u8>> {
        let mut headers = rdkafka::message::OwnedHeaders::new_with_capacity(self.headers.len());
        for (key, value) in &self.headers {
            headers = headers.insert(rdkafka::message::Header {
                key,
                value: Some(value),
            });
        }
        let mut record = rdkafka::producer::FutureRecord::to(&self.topic)
            .key(&self.key)
            .headers(headers);
        if let Some(timestamp) = self.timestamp {
            record = record.timestamp(timestamp);
        }
        match &self.payload {
            Some(payload) => record.payload(payload),
            None => record,
        }
    }
}

/// Whether a partition with nothing buffered may still hold records to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lag {
    /// Nothing more to fetch right now: it holds nothing back.
    CaughtUp,
    /// The broker has more for it than this member has seen.
    Behind,
    /// Not fetched yet (just assigned, or at start-up).
    Unknown,
}

/// How long a partition group waits for a partition before it goes on without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleWaits {
    pub behind: Duration,
    pub unknown: Duration,
}

impl IdleWaits {
    /// Never wait (every partition treated as caught up after its own records).
    pub const NONE: IdleWaits = IdleWaits {
        behind: Duration::ZERO,
        unknown: Duration::ZERO,
    };
}

/// Buffers consumed records per topic-partition and hands them out in event-time order across
/// each group of co-partitioned partitions (the same partition number of every input topic),
/// as Kafka Streams orders a task's inputs: repeatedly the head with the smallest timestamp,
/// each partition's own order kept exactly (ties go to the topic listed first; records without
/// a timestamp sort first). And as its task idling does (KIP-695): a group waits while one of
/// its partitions has nothing buffered but is behind or not fetched yet (its next record may
/// be earlier than every buffered one), for a bounded time, then goes on with what it has; a
/// caught-up partition holds nothing back. Without this, a backlog fetched topic by
/// topic would process a document's approval before its submission, or its issue before its
/// approval.
#[derive(Debug, Default)]
pub struct Aligner {
    queues: BTreeMap<(String, i32), VecDeque<InputRecord>>,
    /// Offset after the last record buffered, per topic-partition.
    next_offsets: HashMap<(String, i32), i64>,
    /// Since when each blocked partition group has been waiting.
    waiting_since: HashMap<i32, Instant>,
    /// Offsets no record of a topic-partition is taken from (during a growth, a partition
    /// waiting for its state takes nothing, or only its backlog): held, not dropped.
    limits: HashMap<(String, i32), i64>,
}

impl Aligner {
    /// Buffers `record`; returns how many its partition now holds.
    pub fn push(&mut self, record: InputRecord) -> usize {
        let key = (record.topic.clone(), record.partition);
        self.next_offsets.insert(key.clone(), record.offset + 1);
        let queue = self.queues.entry(key).or_default();
        queue.push_back(record);
        queue.len()
    }

    pub fn buffered(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    /// Records buffered of one topic-partition.
    pub fn queued(&self, topic: &str, partition: i32) -> usize {
        self.queues
            .get(&(topic.to_owned(), partition))
            .map_or(0, VecDeque::len)
    }

    /// The offset of the next record of a topic-partition to hand out, if one is buffered.
    pub fn front_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.queues
            .get(&(topic.to_owned(), partition))
            .and_then(VecDeque::front)
            .map(|r| r.offset)
    }

    /// The offset after the last buffered record of a topic-partition, if any was buffered.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.next_offsets
            .get(&(topic.to_owned(), partition))
            .copied()
    }

    /// Takes records of each listed topic-partition only below its offset from now on
    /// (replacing the limits set before).
    pub fn limit(&mut self, limits: impl IntoIterator<Item = (String, i32, i64)>) {
        self.limits = limits
            .into_iter()
            .map(|(topic, partition, offset)| ((topic, partition), offset))
            .collect();
    }

    /// Drops what was buffered from partitions this member no longer owns.
    pub fn retain(&mut self, owned: impl Fn(&str, i32) -> bool) {
        self.queues.retain(|(t, p), _| owned(t, *p));
        self.next_offsets.retain(|(t, p), _| owned(t, *p));
    }

    /// Takes up to `max` records. `lag(topic, partition, next offset buffered)` says whether a
    /// partition with nothing buffered has more to fetch. A group waits for a partition that
    /// is `Behind` at most `waits.behind`, for one never fetched yet at most `waits.unknown`.
    pub fn take(
        &mut self,
        topics: &[String],
        max: usize,
        now: Instant,
        waits: IdleWaits,
        lag: impl Fn(&str, i32, Option<i64>) -> Lag,
    ) -> Vec<InputRecord> {
        let mut groups: Vec<i32> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|((_, p), _)| *p)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        // A group with nothing buffered waits for nothing. Its clock would otherwise outlive
        // a revocation (which drops its records) and, when the partitions come back, count
        // the wait as long over: a document's issue would go before its approvals still in flight.
        self.waiting_since
            .retain(|p, _| groups.binary_search(p).is_ok());
        let mut taken = Vec::new();
        for partition in groups {
            if taken.len() >= max {
                break;
            }
            // The group's buffers in the order of `topics`, out of the map while its records are
            // taken: a record taken then costs no lookup, and an empty partition's lag is asked
            // once per take, not once per record (each ask reaches into librdkafka).
            let mut buffers: Vec<Option<VecDeque<InputRecord>>> = topics
                .iter()
                .map(|topic| self.queues.remove(&(topic.clone(), partition)))
                .collect();
            let mut waits_for: Vec<Option<Option<Duration>>> = vec![None; topics.len()];
            let limits: Vec<Option<i64>> = topics
                .iter()
                .map(|topic| self.limits.get(&(topic.clone(), partition)).copied())
                .collect();
            while taken.len() < max {
                let mut head: Option<(i64, usize)> = None;
                let mut blocked: Option<Duration> = None;
                for (i, topic) in topics.iter().enumerate() {
                    match buffers[i].as_ref().and_then(VecDeque::front) {
                        // Held at its limit: nothing of it is taken, and it holds back nothing.
                        Some(r) if limits[i].is_some_and(|limit| r.offset >= limit) => {}
                        Some(r) => {
                            let ts = r.timestamp.unwrap_or(i64::MIN);
                            if head.is_none_or(|(best, _)| ts < best) {
                                head = Some((ts, i));
                            }
                        }
                        None => {
                            let wait = *waits_for[i].get_or_insert_with(|| {
                                let next = self.next_offsets.get(&(topic.clone(), partition));
                                match lag(topic, partition, next.copied()) {
                                    Lag::CaughtUp => None,
                                    Lag::Behind => Some(waits.behind),
                                    Lag::Unknown => Some(waits.unknown),
                                }
                            });
                            blocked = blocked.max(wait);
                        }
                    }
                }
                let Some((_, i)) = head else {
                    self.waiting_since.remove(&partition);
                    break;
                };
                if let Some(limit) = blocked {
                    let since = *self.waiting_since.entry(partition).or_insert(now);
                    if now.duration_since(since) < limit {
                        break;
                    }
                } else {
                    self.waiting_since.remove(&partition);
                }
                let record = buffers[i]
                    .as_mut()
                    .and_then(VecDeque::pop_front)
                    .expect("the head was just seen");
                taken.push(record);
            }
            for (topic, buffer) in topics.iter().zip(buffers) {
                if let Some(buffer) = buffer {
                    self.queues.insert((topic.clone(), partition), buffer);
                }
            }
        }
        taken
    }

    /// Whether some group is waiting for a partition to catch up.
    pub fn is_waiting(&self) -> bool {
        !self.waiting_since.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, partition: i32, offset: i64, timestamp: i64) -> InputRecord {
        InputRecord {
            topic: topic.into(),
            partition,
            offset,
            timestamp: Some(timestamp),
            key: None,
            payload: None,
            headers: vec![],
        }
    }

    /// Everything buffered, every partition caught up.
    fn merge_by_timestamp(batch: Vec<InputRecord>) -> Vec<InputRecord> {
        let mut topics: Vec<String> = batch.iter().map(|r| r.topic.clone()).collect();
        topics.dedup();
        let mut aligner = Aligner::default();
        let total = batch.len();
        for record in batch {
            aligner.push(record);
        }
        aligner.take(
            &topics,
            total,
            Instant::now(),
            IdleWaits::NONE,
            |_, _, _| Lag::CaughtUp,
        )
    }

    fn order(batch: &[InputRecord]) -> Vec<(&str, i64)> {
        batch.iter().map(|r| (r.topic.as_str(), r.offset)).collect()
    }

    #[test]
    fn records_of_several_topics_come_out_in_event_time_order() {
        // As a fetch may hand them over: all invoices first, then the POs.
        let batch = vec![
            record("invoice-events", 0, 0, 20),
            record("invoice-events", 0, 1, 40),
            record("po-events", 0, 0, 10),
            record("po-events", 0, 1, 30),
        ];
        let merged = merge_by_timestamp(batch);
        assert_eq!(
            order(&merged),
            vec![
                ("po-events", 0),
                ("invoice-events", 0),
                ("po-events", 1),
                ("invoice-events", 1)
            ]
        );
    }

    #[test]
    fn a_partitions_own_order_is_kept_even_when_its_timestamps_go_back() {
        let batch = vec![
            record("po-events", 0, 0, 50),
            record("po-events", 0, 1, 5),
            record("grn-events", 0, 0, 10),
        ];
        let merged = merge_by_timestamp(batch);
        // Offset 1 (ts 5) never overtakes offset 0 of its own partition.
        assert_eq!(
            order(&merged),
            vec![("grn-events", 0), ("po-events", 0), ("po-events", 1)]
        );
    }

    #[test]
    fn nothing_is_lost_or_repeated() {
        let batch: Vec<InputRecord> = (0..50)
            .map(|i| {
                record(
                    ["a", "b", "c"][i % 3],
                    (i % 2) as i32,
                    i as i64,
                    (i * 7 % 13) as i64,
                )
            })
            .collect();
        let mut merged: Vec<i64> = merge_by_timestamp(batch).iter().map(|r| r.offset).collect();
        merged.sort();
        assert_eq!(merged, (0..50).collect::<Vec<i64>>());
    }

    #[test]
    fn batches_smaller_than_the_buffer_take_each_record_once_and_ask_an_empty_partitions_lag_once()
    {
        let mut aligner = Aligner::default();
        for i in 0..40 {
            aligner.push(record(
                ["a", "b"][i % 2],
                (i % 4 / 2) as i32,
                i as i64,
                i as i64,
            ));
        }
        // "c" has nothing buffered: whether it holds a group back is asked of the consumer.
        let topics: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let mut taken = Vec::new();
        loop {
            let asked = std::cell::Cell::new(0);
            let batch = aligner.take(&topics, 15, Instant::now(), IdleWaits::NONE, |_, _, _| {
                asked.set(asked.get() + 1);
                Lag::CaughtUp
            });
            // At most once per empty partition of the groups the batch reached (3 topics, 2
            // groups), never once per record taken (15 a batch).
            assert!(asked.get() <= 6, "lag asked {} times", asked.get());
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 15);
            taken.extend(batch.into_iter().map(|r| r.offset));
        }
        let mut all = taken.clone();
        all.sort();
        assert_eq!(all, (0..40).collect::<Vec<i64>>(), "each record once");
        // Per partition group, in event time (here the offset).
        for group in [0, 1] {
            let of_group: Vec<i64> = taken
                .iter()
                .copied()
                .filter(|o| (o % 4 / 2) as i32 == group)
                .collect();
            assert!(of_group.is_sorted(), "{of_group:?}");
        }
    }

    fn aligned_at(
        aligner: &mut Aligner,
        now: Instant,
        caught_up: &[(&str, i32)],
        idle: Duration,
    ) -> Vec<(String, i64)> {
        let topics = vec!["po".to_string(), "decisions".to_string()];
        let waits = IdleWaits {
            behind: idle,
            unknown: idle * 10,
        };
        aligner
            .take(&topics, 100, now, waits, |t, p, _| {
                if caught_up.contains(&(t, p)) {
                    Lag::CaughtUp
                } else {
                    Lag::Behind
                }
            })
            .into_iter()
            .map(|r| (r.topic, r.offset))
            .collect()
    }

    #[test]
    fn a_group_waits_for_a_partition_that_is_behind_then_merges_by_event_time() {
        let mut aligner = Aligner::default();
        let now = Instant::now();
        let idle = Duration::from_millis(200);
        // The decision (ts 20) is fetched before the submission (ts 10) it refers to.
        aligner.push(record("decisions", 0, 0, 20));
        assert!(aligned_at(&mut aligner, now, &[], idle).is_empty());
        assert!(aligner.is_waiting());
        aligner.push(record("po", 0, 0, 10));
        aligner.push(record("po", 0, 1, 30));
        // After po@1, decisions is empty but caught up, po is empty and not: the group stops.
        assert_eq!(
            aligned_at(&mut aligner, now, &[("decisions", 0)], idle),
            vec![("po".into(), 0), ("decisions".into(), 0), ("po".into(), 1)]
        );
    }

    #[test]
    fn a_group_given_up_and_given_back_waits_afresh() {
        let mut aligner = Aligner::default();
        let start = Instant::now();
        let idle = Duration::from_millis(200);
        aligner.push(record("po", 2, 0, 30));
        assert!(aligned_at(&mut aligner, start, &[], idle).is_empty());
        // A rebalance takes the partitions away before the wait is over, and gives them back
        // long after: the issue (ts 30) still waits for the approval (ts 20) not fetched yet.
        aligner.retain(|_, _| false);
        let later = start + Duration::from_millis(1_000);
        assert!(aligned_at(&mut aligner, later, &[], idle).is_empty());
        aligner.push(record("po", 2, 0, 30));
        assert!(aligned_at(&mut aligner, later, &[], idle).is_empty());
        aligner.push(record("decisions", 2, 0, 20));
        assert_eq!(
            aligned_at(&mut aligner, later, &[("decisions", 2)], idle),
            vec![("decisions".into(), 0), ("po".into(), 0)]
        );
    }

    #[test]
    fn a_group_goes_on_without_a_silent_partition_after_the_idle_limit() {
        let mut aligner = Aligner::default();
        let start = Instant::now();
        let idle = Duration::from_millis(200);
        aligner.push(record("decisions", 1, 7, 20));
        assert!(aligned_at(&mut aligner, start, &[], idle).is_empty());
        let later = start + Duration::from_millis(250);
        assert_eq!(
            aligned_at(&mut aligner, later, &[], idle),
            vec![("decisions".into(), 7)]
        );
        assert_eq!(aligner.next_offset("decisions", 1), Some(8));
    }

    #[test]
    fn a_partition_not_fetched_yet_is_waited_for_longer_than_one_known_to_be_behind() {
        let mut aligner = Aligner::default();
        let start = Instant::now();
        let waits = IdleWaits {
            behind: Duration::from_millis(100),
            unknown: Duration::from_secs(5),
        };
        aligner.push(record("decisions", 0, 0, 20));
        let topics = vec!["po".to_string(), "decisions".to_string()];
        let unknown = |t: &str, _, _| {
            if t == "po" {
                Lag::Unknown
            } else {
                Lag::CaughtUp
            }
        };
        let later = start + Duration::from_secs(1);
        assert!(aligner.take(&topics, 10, start, waits, unknown).is_empty());
        assert!(aligner.take(&topics, 10, later, waits, unknown).is_empty());
        let much_later = start + Duration::from_secs(6);
        assert_eq!(
            aligner.take(&topics, 10, much_later, waits, unknown).len(),
            1
        );
    }

    #[test]
    fn caught_up_partitions_never_hold_anything_back_and_groups_are_independent() {
        let mut aligner = Aligner::default();
        aligner.push(record("po", 0, 0, 50));
        aligner.push(record("po", 1, 0, 5));
        aligner.retain(|_, p| p == 0);
        let all = [("po", 0), ("decisions", 0), ("po", 1), ("decisions", 1)];
        assert_eq!(
            aligned_at(&mut aligner, Instant::now(), &all, Duration::ZERO),
            vec![("po".into(), 0)]
        );
        assert_eq!(aligner.buffered(), 0);
    }
}
