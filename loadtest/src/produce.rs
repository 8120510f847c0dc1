//! Produces a scenario to Kafka through the same Avro path an ERP would use (Confluent wire
//! format; registry or embedded schemas), keyed by org_id with the Java client's partitioner.

use crate::generator::{InputTopic, Payload, Scenario, ScenarioRecord};
use futures::future::try_join_all;
use p2p_avro::{Codec, CodecError};
use p2p_topologies::admin::producer_config;
use p2p_topologies::runtime::enqueue;
use p2p_topologies::{KafkaProperties, Topics};
use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("encoding: {0}")]
    Encode(#[from] CodecError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// A producer configured as an ERP should configure one: idempotent, acks=all, murmur2;
/// `linger.ms` 5 unless `kafka` says otherwise.
pub fn erp_producer(kafka: &KafkaProperties) -> Result<FutureProducer, KafkaError> {
    erp_producer_lingering(kafka, 5)
}

/// [`erp_producer`] lingering `linger_ms` unless `kafka` says otherwise. 0 for a feed that
/// waits for each run of records before the next ([`produce_records`]): lingering would only
/// add to every wait, and what queues while a request is in flight is batched anyway.
pub fn erp_producer_lingering(
    kafka: &KafkaProperties,
    linger_ms: u32,
) -> Result<FutureProducer, KafkaError> {
    let mut config = producer_config(kafka);
    if !kafka.contains_key("linger.ms") {
        config.set("linger.ms", linger_ms.to_string());
    }
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .create()
}

pub fn topic_name(topics: &Topics, topic: InputTopic) -> &str {
    match topic {
        InputTopic::Requisitions => &topics.requisition_events,
        InputTopic::PurchaseOrders => &topics.po_events,
        InputTopic::GoodsReceipts => &topics.grn_events,
        InputTopic::Invoices => &topics.invoice_events,
        InputTopic::ApprovalDecisions => &topics.approval_decisions,
        InputTopic::OrgConfigs => &topics.org_config,
        InputTopic::SupplierMasters => &topics.supplier_master,
        InputTopic::InvoiceDecisions => &topics.invoice_decisions,
    }
}

/// Produces every record of `scenario` and waits until the broker has them all: a bulk load,
/// each topic's records in order, the topics side by side (load it before the pipeline runs).
pub async fn produce_scenario(
    producer: &FutureProducer,
    codec: &Codec,
    topics: &Topics,
    scenario: &Scenario,
) -> Result<usize, ProduceError> {
    produce(producer, codec, topics, &scenario.records, Order::PerTopic).await
}

/// Produces `records` (a slice of a scenario, to feed it as a steady stream to a running
/// pipeline) as ERPs publish them: a record goes out only once every earlier record of its
/// org on another topic is on the broker, as a receipt is published only after the PO it is
/// against. Sent side by side, a later record could become visible first, and a consumer
/// cannot tell. Each partition's records stay in the stream's order; partitions are
/// independent (every topic is keyed by org and has the same count), so they are sent side by
/// side.
pub async fn produce_records(
    producer: &FutureProducer,
    codec: &Codec,
    topics: &Topics,
    records: &[ScenarioRecord],
) -> Result<usize, ProduceError> {
    produce(producer, codec, topics, records, Order::PerOrg).await
}

/// How much of a scenario's order the broker must show.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Each topic's records in order.
    PerTopic,
    /// And per partition across topics: no record visible before an earlier one of its
    /// partition (so of its org) on another topic.
    PerOrg,
}

/// A record ready to send: topic, key, value bytes, timestamp.
struct Encoded<'a>(&'a str, &'a [u8], Vec<u8>, i64);

async fn encode<'a>(
    codec: &Codec,
    topics: &'a Topics,
    records: &'a [ScenarioRecord],
) -> Result<Vec<Encoded<'a>>, ProduceError> {
    let mut encoded = Vec::with_capacity(records.len());
    for record in records {
        let topic = topic_name(topics, record.topic);
        let bytes = match &record.payload {
            Payload::Document(value, contract) => {
                codec.encode(topic, contract, value.clone()).await?
            }
            Payload::Garbage(bytes) => bytes.clone(),
        };
        encoded.push(Encoded(
            topic,
            record.key.as_bytes(),
            bytes,
            record.timestamp.0,
        ));
    }
    Ok(encoded)
}

async fn produce(
    producer: &FutureProducer,
    codec: &Codec,
    topics: &Topics,
    records: &[ScenarioRecord],
    order: Order,
) -> Result<usize, ProduceError> {
    let encoded = encode(codec, topics, records).await?;
    let send = |record| send_one(producer, record);
    match order {
        // Chunks of 1,000 side by side: the broker keeps each topic's order per partition
        // (idempotent producer), and nothing else is asked.
        Order::PerTopic => {
            for chunk in encoded.chunks(1_000) {
                try_join_all(chunk.iter().map(send)).await?;
            }
        }
        // The stream split by partition (every topic has the same count, keyed by org): per
        // partition, runs of same-topic records, each acknowledged before the next, so each
        // partition holds its records in the stream's order (consumers align topics by
        // timestamp, as Kafka Streams does) and no record is visible before an earlier one of
        // its org on another topic. The partitions go side by side, so their waits overlap.
        Order::PerOrg => {
            let partitions = partition_count(producer, &encoded)?;
            let mut groups: Vec<Vec<&Encoded<'_>>> = vec![Vec::new(); partitions as usize];
            for record in &encoded {
                groups[p2p_state::murmur2::partition_for(record.1, partitions) as usize]
                    .push(record);
            }
            let per_partition = groups.iter().map(|records| async move {
                for run in records.chunk_by(|a, b| a.0 == b.0) {
                    try_join_all(run.iter().map(|r| send(r))).await?;
                }
                Ok::<(), ProduceError>(())
            });
            try_join_all(per_partition).await?;
        }
    }
    producer.flush(Timeout::After(Duration::from_secs(30)))?;
    Ok(encoded.len())
}

/// The partition count the topics of `records` share; 1 (one ordered stream) if they do not.
fn partition_count(
    producer: &FutureProducer,
    records: &[Encoded<'_>],
) -> Result<u32, ProduceError> {
    let topics: std::collections::BTreeSet<&str> = records.iter().map(|r| r.0).collect();
    let mut counts = std::collections::BTreeSet::new();
    for topic in topics {
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(30))?;
        for t in metadata.topics() {
            counts.insert(t.partitions().len() as u32);
        }
    }
    Ok(match counts.iter().collect::<Vec<_>>().as_slice() {
        [count] if **count > 0 => **count,
        _ => 1,
    })
}

/// Sends `record`, once: `Ok` when the broker has it.
async fn send_one(producer: &FutureProducer, record: &Encoded<'_>) -> Result<(), ProduceError> {
    let Encoded(topic, key, bytes, ts) = record;
    producer
        .send(
            FutureRecord::to(topic)
                .key(*key)
                .payload(bytes)
                .timestamp(*ts),
            Timeout::Never,
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e.into())
}

/// Produces `records` paced at `rate` records per second, each stamped with the wall clock as
/// it is sent, as ERPs publish events as they happen. The orgs publish side by side: their
/// records are interleaved, each org's spread evenly over the feed and kept in its order, and
/// a record goes out only once its org's earlier records of other topics are on the broker
/// (a receipt after the PO it is against). An org's deliveries not in by its next turn hold
/// the feed back: what it achieved is returned (records per second). `sent` is told how many
/// are out.
pub async fn produce_at_rate(
    producer: &FutureProducer,
    codec: &Codec,
    topics: &Topics,
    records: &[ScenarioRecord],
    rate: f64,
    mut sent: impl FnMut(usize),
) -> Result<f64, ProduceError> {
    let encoded = encode(codec, topics, records).await?;
    let started = tokio::time::Instant::now();
    // Per org: the topic of its records in flight, and their deliveries.
    let mut in_flight: HashMap<&[u8], (&str, Vec<DeliveryFuture>)> = HashMap::new();
    // Per org: its last record's timestamp. Two records of an org in the same millisecond on
    // two topics would have no order a consumer could follow: the later one is a
    // millisecond later at least.
    let mut last_stamp: HashMap<&[u8], i64> = HashMap::new();
    for (i, index) in interleaved_by_key(&encoded).into_iter().enumerate() {
        let Encoded(topic, key, bytes, _) = &encoded[index];
        tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate)).await;
        let (last_topic, deliveries) = in_flight.entry(key).or_insert((topic, Vec::new()));
        if last_topic != topic {
            delivered(deliveries.drain(..)).await?;
            *last_topic = topic;
        }
        let stamp = last_stamp.entry(key).or_insert(i64::MIN);
        *stamp = wall_clock_millis().max(stamp.saturating_add(1));
        let record = FutureRecord::to(topic)
            .key(*key)
            .payload(bytes)
            .timestamp(*stamp);
        deliveries.push(enqueue(producer, record).await?);
        sent(i + 1);
    }
    for (_, (_, deliveries)) in in_flight.drain() {
        delivered(deliveries.into_iter()).await?;
    }
    producer.flush(Timeout::After(Duration::from_secs(30)))?;
    Ok(encoded.len() as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// The order to send `encoded` in: each key's records in their order, spread evenly over the
/// whole (a record's place is its rank within its key, as a fraction of the key's records).
fn interleaved_by_key(encoded: &[Encoded<'_>]) -> Vec<usize> {
    interleaved(encoded.iter().map(|Encoded(_, key, ..)| *key))
}

/// `records` in the order [`produce_at_rate`] would send them all at once: each org's records
/// in their order, spread evenly over the whole. A feed sent in slices (each its own call)
/// keeps every org active from the first slice, as one call would.
pub fn interleaved_by_org(records: &[ScenarioRecord]) -> Vec<ScenarioRecord> {
    interleaved(records.iter().map(|r| r.key.as_bytes()))
        .into_iter()
        .map(|index| records[index].clone())
        .collect()
}

/// The order of the items whose keys `keys` gives: each key's items in their order, spread
/// evenly over the whole.
fn interleaved<'a>(keys: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<usize> {
    let mut per_key: HashMap<&[u8], usize> = HashMap::new();
    for key in keys.clone() {
        *per_key.entry(key).or_default() += 1;
    }
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    let mut places: Vec<(f64, usize)> = keys
        .enumerate()
        .map(|(index, key)| {
            let rank = seen.entry(key).or_default();
            let place = (*rank as f64 + 0.5) / per_key[key] as f64;
            *rank += 1;
            (place, index)
        })
        .collect();
    // Stable: equal places keep the scenario's order.
    places.sort_by(|a, b| a.0.total_cmp(&b.0));
    places.into_iter().map(|(_, index)| index).collect()
}

async fn delivered(deliveries: impl Iterator<Item = DeliveryFuture>) -> Result<(), ProduceError> {
    for delivery in futures::future::join_all(deliveries).await {
        match delivery {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e.into()),
            Err(_) => return Err(KafkaError::Canceled.into()),
        }
    }
    Ok(())
}

fn wall_clock_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_spreads_each_key_over_the_feed_and_keeps_its_order() {
        let (a, b): (&[u8], &[u8]) = (b"org-a", b"org-b");
        let record = |topic, key, n: u8| Encoded(topic, key, vec![n], 0);
        // Org a's four records, then org b's two: as the generator writes them.
        let encoded = vec![
            record("po", a, 0),
            record("grn", a, 1),
            record("inv", a, 2),
            record("inv", a, 3),
            record("po", b, 4),
            record("inv", b, 5),
        ];
        let order = interleaved_by_key(&encoded);
        assert_eq!(order, vec![0, 4, 1, 2, 5, 3]);
        for key in [a, b] {
            let of_key: Vec<usize> = order
                .iter()
                .copied()
                .filter(|i| encoded[*i].1 == key)
                .collect();
            assert!(of_key.windows(2).all(|w| w[0] < w[1]), "{key:?} in order");
        }
    }
}
