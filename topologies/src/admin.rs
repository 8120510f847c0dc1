//! Creating and deleting the P2P topics (the engine's Kafka helpers are re-exported here, where
//! the CLI and the tests have always found them).

use crate::config::{KafkaProperties, Topics};
pub use p2p_engine::kafka::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Creates every topic of `topics` (inputs, outputs, DLQs) with `partitions` partitions,
/// the tables (`org-config`, `po-status`) compacted.
/// Existing topics are left as they are. All P2P topics share one partition count, so they
/// stay co-partitioned.
pub async fn create_topics(
    kafka: &KafkaProperties,
    topics: &Topics,
    partitions: i32,
    replication: i32,
) -> Result<Vec<String>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka).create()?;
    let names = topics.all();
    let compacted = topics.compacted();
    let new_topics: Vec<NewTopic> = names
        .iter()
        .map(|name| {
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
            // Tables keep the latest record per key forever; supplier-master is keyed by org
            // (many suppliers per key), so it keeps every record instead (ADR 0005).
            if compacted.contains(&name.as_str()) {
                topic.set("cleanup.policy", "compact")
            } else if *name == topics.supplier_master {
                topic.set("retention.ms", "-1")
            } else {
                topic
            }
        })
        .collect();
    let results = admin
        .create_topics(new_topics.iter(), &AdminOptions::new())
        .await?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::error!(topic = %name, error = %code, "creating topic failed");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(created)
}

/// Deletes every topic of `topics` that exists. For disposable topic sets (tests, load tests):
/// a broker keeps every partition it ever had, and loading thousands of them makes its next
/// start slow.
pub async fn delete_topics(kafka: &KafkaProperties, topics: &Topics) -> Result<(), KafkaError> {
    delete_topic_names(kafka, &topics.all()).await
}
