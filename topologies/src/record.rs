//! Owned records in and out of the processors, so they can be tested without a broker.

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

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Orders a batch for processing as Kafka Streams orders a task's inputs: repeatedly take the
/// head with the smallest timestamp among the batch's partitions, so documents are processed
/// in event-time order across topics (a PO before the invoice that refers to it, when the ERP
/// sent them so) while each partition's own order is kept exactly. Ties go to the partition
/// that appears first in the batch; records without a timestamp sort first.
pub fn merge_by_timestamp(batch: Vec<InputRecord>) -> Vec<InputRecord> {
    use std::collections::{BinaryHeap, VecDeque};
    let mut queues: Vec<VecDeque<InputRecord>> = Vec::new();
    let mut index: std::collections::HashMap<(String, i32), usize> = Default::default();
    for record in batch {
        let slot = *index
            .entry((record.topic.clone(), record.partition))
            .or_insert_with(|| {
                queues.push(VecDeque::new());
                queues.len() - 1
            });
        queues[slot].push_back(record);
    }
    if queues.len() <= 1 {
        return queues.pop().map(Vec::from).unwrap_or_default();
    }
    let total = queues.iter().map(VecDeque::len).sum();
    let key = |r: &InputRecord| r.timestamp.unwrap_or(i64::MIN);
    // Min-heap on (timestamp, queue index) via Reverse.
    let mut heads: BinaryHeap<std::cmp::Reverse<(i64, usize)>> = queues
        .iter()
        .enumerate()
        .filter_map(|(i, q)| q.front().map(|r| std::cmp::Reverse((key(r), i))))
        .collect();
    let mut merged = Vec::with_capacity(total);
    while let Some(std::cmp::Reverse((_, i))) = heads.pop() {
        let record = queues[i]
            .pop_front()
            .expect("a queue in the heap has a head");
        merged.push(record);
        if let Some(next) = queues[i].front() {
            heads.push(std::cmp::Reverse((key(next), i)));
        }
    }
    merged
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
}
