//! End-to-end latency as a reader downstream sees it: each output record, from its timestamp
//! (the event time of the input it came of, which the pipeline carries over) to the moment a
//! read_committed consumer has it. Fed at a fixed rate with inputs stamped as they are sent,
//! that is input produced to output available, transaction commit included.

use hdrhistogram::Histogram;
use p2p_topologies::admin::{client_config, PositionAsks};
use p2p_topologies::KafkaProperties;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the reader goes on reading to the ends once stopped.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Latencies in milliseconds, up to ten minutes, three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000, 3).expect("static bounds are valid")
}

/// What the reader saw.
#[derive(Debug, Clone)]
pub struct Latencies {
    pub all: Histogram<u64>,
    /// Per second since the reader started: outputs read, and their latencies.
    pub per_second: Vec<Histogram<u64>>,
    /// Per partition number (outputs are keyed by org, so on the partition number of the
    /// inputs they came of): when each of its outputs was read, in ms since the reader
    /// started, in order, and its latency in ms. Under a steady feed, a partition whose
    /// topology stood still for a while shows it as the latency of its next outputs.
    pub reads: std::collections::BTreeMap<i32, Vec<(u32, u32)>>,
}

impl Latencies {
    fn record(&mut self, second: usize, millis: u64) {
        let millis = millis.clamp(1, 600_000);
        self.all.saturating_record(millis);
        while self.per_second.len() <= second {
            self.per_second.push(histogram());
        }
        self.per_second[second].saturating_record(millis);
    }
}

/// Reads `topics` (read_committed, from their beginning) on a thread of its own until `stop`
/// is set and it has read to their ends, recording each record's latency.
pub fn spawn_reader(
    kafka: &KafkaProperties,
    topics: Vec<String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<Latencies, KafkaError>> {
    let kafka = kafka.clone();
    std::thread::spawn(move || read(&kafka, &topics, &stop))
}

fn read(
    kafka: &KafkaProperties,
    topics: &[String],
    stop: &AtomicBool,
) -> Result<Latencies, KafkaError> {
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", format!("p2p-latency-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let started = now_millis();
    let mut latencies = Latencies {
        all: histogram(),
        per_second: Vec::new(),
        reads: std::collections::BTreeMap::new(),
    };
    // Once stopped: where each partition ends, then read up to there.
    let mut ends: Option<Vec<((String, i32), i64)>> = None;
    let mut stopped_at = None;
    let mut asks = PositionAsks::new();
    loop {
        let polled = consumer.poll(Duration::from_millis(50));
        let ran_out = polled.is_none();
        match polled {
            Some(Ok(message)) => {
                let read_at = now_millis();
                if let Some(timestamp) = message.timestamp().to_millis() {
                    latencies
                        .reads
                        .entry(message.partition())
                        .or_default()
                        .push((
                            u32::try_from((read_at - started).max(0)).unwrap_or(u32::MAX),
                            u32::try_from((read_at - timestamp).max(0)).unwrap_or(u32::MAX),
                        ));
                    let second = usize::try_from((read_at - started).max(0) / 1000).unwrap_or(0);
                    latencies.record(second, u64::try_from(read_at - timestamp).unwrap_or(0));
                }
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
        if !stop.load(Ordering::Relaxed) || !asks.due(ran_out) {
            continue;
        }
        let ends = match &ends {
            Some(ends) => ends,
            None => {
                // One request for all (asked one by one, each waits behind a fetch).
                let mut latest = TopicPartitionList::new();
                for element in assignment.elements() {
                    latest.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        Offset::End,
                    )?;
                }
                let found = consumer
                    .offsets_for_times(latest, Duration::from_secs(10))?
                    .elements()
                    .iter()
                    .map(|e| {
                        let end = e.offset().to_raw().unwrap_or(0).max(0);
                        ((e.topic().to_owned(), e.partition()), end)
                    })
                    .collect();
                ends.insert(found)
            }
        };
        // The position moves past transaction markers, so it reaches the end.
        let positions = consumer.position()?;
        let read_all = ends.iter().all(|((topic, partition), end)| {
            *end == 0
                || positions
                    .find_partition(topic, *partition)
                    .and_then(|p| p.offset().to_raw())
                    .is_some_and(|at| at >= *end)
        });
        // A transaction left open would hold the end back; what was read is reported.
        if read_all || stopped_at.get_or_insert_with(Instant::now).elapsed() > DRAIN_LIMIT {
            return Ok(latencies);
        }
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
