//! Produces a scenario to Kafka through the same Avro path an ERP would use (Confluent wire
//! format; registry or embedded schemas), keyed by org_id with the Java client's partitioner.

use crate::generator::{InputTopic, Payload, Scenario, ScenarioRecord};
use futures::future::try_join_all;
use p2p_avro::{Codec, CodecError};
use p2p_topologies::admin::producer_config;
use p2p_topologies::{KafkaProperties, Topics};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("encoding: {0}")]
    Encode(#[from] CodecError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// A producer configured as an ERP should configure one: idempotent, acks=all, murmur2.
pub fn erp_producer(kafka: &KafkaProperties) -> Result<FutureProducer, KafkaError> {
    producer_config(kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
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
/// pipeline) as ERPs publish them: a record goes out only once every earlier record of another
/// topic is on the broker, as a receipt is published only after the PO it is against. Sent
/// side by side, a later record could become visible first, and a consumer cannot tell.
pub async fn produce_records(
    producer: &FutureProducer,
    codec: &Codec,
    topics: &Topics,
    records: &[ScenarioRecord],
) -> Result<usize, ProduceError> {
    produce(producer, codec, topics, records, Order::Total).await
}

/// How much of a scenario's order the broker must show.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Each topic's records in order.
    PerTopic,
    /// And across topics: no record visible before an earlier one of another topic.
    Total,
}

async fn produce(
    producer: &FutureProducer,
    codec: &Codec,
    topics: &Topics,
    records: &[ScenarioRecord],
    order: Order,
) -> Result<usize, ProduceError> {
    let mut encoded = Vec::with_capacity(records.len());
    for record in records {
        let topic = topic_name(topics, record.topic);
        let bytes = match &record.payload {
            Payload::Document(value, contract) => {
                codec.encode(topic, contract, value.clone()).await?
            }
            Payload::Garbage(bytes) => bytes.clone(),
        };
        encoded.push((topic, record.key.as_bytes(), bytes, record.timestamp.0));
    }
    // Runs of records sent side by side: at most 1,000, of one topic when the order is total.
    let mut start = 0;
    while start < encoded.len() {
        let first_topic = encoded[start].0;
        let end = encoded[start..]
            .iter()
            .take(1_000)
            .position(|(topic, ..)| order == Order::Total && *topic != first_topic)
            .map_or((start + 1_000).min(encoded.len()), |n| start + n);
        let sends = encoded[start..end].iter().map(|(topic, key, bytes, ts)| {
            producer.send(
                FutureRecord::to(topic)
                    .key(*key)
                    .payload(bytes)
                    .timestamp(*ts),
                Timeout::Never,
            )
        });
        try_join_all(sends).await.map_err(|(e, _)| e)?;
        start = end;
    }
    producer.flush(Timeout::After(Duration::from_secs(30)))?;
    Ok(encoded.len())
}
