//! The benchmark's baseline: the plainest exactly-once program rdkafka allows, which copies
//! every record of the input topics to one sink topic, a transaction per batch with the input
//! offsets in it, with the pipeline's client settings, batch size and linger. No decoding, no
//! state, no logic: what the broker and the client library cost, the ceiling our pipeline is
//! measured against.

use futures::future::join_all;
use p2p_topologies::runtime::{consumer_settings, enqueue, producer_settings};
use p2p_topologies::{KafkaProperties, RuntimeConfig};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use tokio::time::{timeout, timeout_at};

/// How a pass-through runs.
#[derive(Debug, Clone)]
pub struct PassThroughSettings {
    /// Its application id: consumer group and transactional id, as a runtime's.
    pub application_id: String,
    pub inputs: Vec<String>,
    pub sink: String,
    pub max_batch: usize,
    pub batch_linger: Duration,
    /// Records to copy before it stops.
    pub expected: u64,
    /// It gives up after this long.
    pub limit: Duration,
}

/// What a pass-through did.
#[derive(Debug, Clone, Copy)]
pub struct PassThrough {
    pub records: u64,
    pub transactions: u64,
    /// From the first record read to the last transaction committed.
    pub elapsed: Duration,
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Copies `settings.expected` records from the inputs to the sink, exactly once, as the
/// runtime drives its clients: a stream consumer, a future producer whose deliveries are
/// awaited before the commit. Its blocking transaction calls need a multi-threaded tokio
/// runtime.
pub async fn pass_through(
    kafka: &KafkaProperties,
    settings: &PassThroughSettings,
    mut progress: impl FnMut(u64),
) -> Result<PassThrough, KafkaError> {
    // The runtime's own client settings, exactly once.
    let runtime = RuntimeConfig::new(&settings.application_id, kafka.clone(), PathBuf::new());
    let consumer: StreamConsumer = consumer_settings(&runtime).create()?;
    let producer: FutureProducer = producer_settings(&runtime).create()?;
    block_in_place(|| producer.init_transactions(CLIENT_TIMEOUT))?;
    let inputs: Vec<&str> = settings.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs)?;

    let started = Instant::now();
    let mut first = None;
    let (mut records, mut transactions) = (0u64, 0u64);
    while records < settings.expected && started.elapsed() < settings.limit {
        let Ok(message) = timeout(Duration::from_millis(100), consumer.recv()).await else {
            continue;
        };
        let message = message?;
        first.get_or_insert_with(Instant::now);
        block_in_place(|| producer.begin_transaction())?;
        let linger_ends = tokio::time::Instant::now() + settings.batch_linger;
        let mut deliveries = Vec::with_capacity(settings.max_batch);
        let mut next = Some(message);
        while let Some(message) = next.take() {
            let mut record = FutureRecord::to(&settings.sink);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            if let Some(timestamp) = message.timestamp().to_millis() {
                record = record.timestamp(timestamp);
            }
            deliveries.push(enqueue(&producer, record).await?);
            if deliveries.len() >= settings.max_batch {
                break;
            }
            next = match timeout_at(linger_ends, consumer.recv()).await {
                Ok(message) => Some(message?),
                Err(_) => None,
            };
        }
        let batch = deliveries.len() as u64;
        for delivery in join_all(deliveries).await {
            match delivery {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e),
                Err(_) => return Err(KafkaError::Canceled),
            }
        }
        block_in_place(|| {
            let positions = consumer.position()?;
            // A subscribed consumer always has them.
            let group = consumer.group_metadata().ok_or(KafkaError::Subscription(
                "no consumer group metadata".into(),
            ))?;
            producer.send_offsets_to_transaction(&positions, &group, CLIENT_TIMEOUT)?;
            producer.commit_transaction(CLIENT_TIMEOUT)
        })?;
        records += batch;
        transactions += 1;
        progress(records);
    }
    Ok(PassThrough {
        records,
        transactions,
        elapsed: first.map_or(Duration::ZERO, |t| t.elapsed()),
    })
}
