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

/// Produces every record of `scenario` in order and waits until the broker has them all.
pub async fn produce_scenario(
    producer: &FutureProducer,
    codec: &Codec,
    topics: &Topics,
    scenario: &Scenario,
) -> Result<usize, ProduceError> {
    produce_records(producer, codec, topics, &scenario.records).await
}

/// Produces `records` in order (a slice of a scenario, to feed it as a steady stream) and
/// waits until the broker has them all.
pub async fn produce_records(
    producer: &FutureProducer,
    codec: &Codec,
    topics: &Topics,
    records: &[ScenarioRecord],
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
    for chunk in encoded.chunks(1_000) {
        let sends = chunk.iter().map(|(topic, key, bytes, ts)| {
            producer.send(
                FutureRecord::to(topic)
                    .key(*key)
                    .payload(bytes)
                    .timestamp(*ts),
                Timeout::Never,
            )
        });
        try_join_all(sends).await.map_err(|(e, _)| e)?;
    }
    producer.flush(Timeout::After(Duration::from_secs(30)))?;
    Ok(encoded.len())
}
