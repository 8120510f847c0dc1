//! `p2p produce` on the real broker and registry: the load generator as a plain producer, at a
//! fixed rate, into the topics of a pipeline's configuration, which decides every invoice as
//! the generator planted it.

mod common;

use apache_avro::types::Value;
use common::{
    kafka, pipeline_toml, registry_codec, services, unique_topics, wait_for, Pipeline, TestTopics,
};
use p2p_avro::contracts::Contract;
use p2p_avro::CodecError;
use p2p_loadtest::audit::audit;
use p2p_loadtest::bench::recent;
use p2p_loadtest::generator::Payload;
use p2p_loadtest::produce::topic_name;
use p2p_loadtest::{GeneratorConfig, Scenario};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_feeds_a_configured_pipeline_the_stream_it_planted_at_a_fixed_rate() {
    let topics = TestTopics::create("produce", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = pipeline_toml(dir.path(), &topics, None);

    let output = Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args(["produce", "--config"])
        .arg(&config_path)
        .args([
            "--orgs",
            "3",
            "--pos-per-org",
            "10",
            "--skew",
            "1",
            "--seed",
            "5",
        ])
        .args(["--rate", "300", "--credit-memo-pct", "20"])
        .output()
        .expect("p2p produce runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "p2p produce failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The same stream, generated again from the same arguments: its plan is the check.
    let scenario = Scenario::generate(&recent(&GeneratorConfig {
        seed: 5,
        orgs: 3,
        pos_per_org: 10,
        org_size_skew: 1.0,
        credit_memo_pct: 20,
        ..GeneratorConfig::default()
    }));
    assert!(
        stdout.contains(&format!("produced {} records", scenario.records.len())),
        "{stdout}"
    );
    assert!(scenario.credit_memos > 0, "the stream has credit memos");

    let codec = registry_codec();
    let pipeline = Pipeline::start(&topics, codec.clone());
    // Held invoices released later are first published as exceptions: only the plan tells
    // when every invoice has its final outcome.
    let observed = wait_for(&topics, &codec, "every invoice as planted", |o| {
        audit(&scenario.planted, o).passed() && o.dead_letters.len() == 1
    })
    .await;
    pipeline.stop().await;

    let report = audit(&scenario.planted, &observed);
    assert!(report.matched > 0 && report.exceptions > 0 && report.pending > 0);
}

/// `schema_text` under `topic`'s subject, as the registry's own encoder is asked for it.
fn subject_with(topic: &str, schema_text: &str) -> SubjectNameStrategy {
    SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.to_owned(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, schema_text.to_owned()),
    )
}

fn decoder_of_registry() -> AvroDecoder {
    AvroDecoder::new(SrSettings::new(services().registry_url.clone()))
}

/// The stream's documents: (topic, contract, value).
fn documents<'a>(
    scenario: &'a Scenario,
    topics: &'a p2p_topologies::Topics,
) -> impl Iterator<Item = (&'a str, &'static Contract, &'a Value)> {
    scenario
        .records
        .iter()
        .filter_map(|record| match &record.payload {
            Payload::Document(value, contract) => {
                Some((topic_name(topics, record.topic), *contract, value))
            }
            Payload::Garbage(_) => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codec_writes_and_reads_every_record_as_the_registrys_own_clients_do() {
    // Subjects of their own; no topic is needed on the broker to encode.
    let topics = unique_topics("codec");
    let scenario = Scenario::generate(&GeneratorConfig {
        orgs: 2,
        pos_per_org: 10,
        credit_memo_pct: 20,
        ..GeneratorConfig::default()
    });
    let codec = registry_codec();
    let encoder = AvroEncoder::new(SrSettings::new(services().registry_url.clone()));
    let decoder = decoder_of_registry();
    let mut checked = 0;
    for (topic, contract, value) in documents(&scenario, &topics) {
        // Twice: the first asks the registry, the second frames with the id it learnt.
        for _ in 0..2 {
            let ours = codec.encode(topic, contract, value.clone()).await.unwrap();
            let theirs = encoder
                .encode_value(value.clone(), &subject_with(topic, contract.schema_text))
                .await
                .unwrap();
            assert_eq!(ours, theirs, "{topic}");
            let read = codec.decode(Some(&ours)).await.unwrap();
            assert_eq!(read, decoder.decode(Some(&ours)).await.unwrap().value);
            // What was read is what was written (the generator's fields in the schema's order).
            assert_eq!(codec.encode(topic, contract, read).await.unwrap(), ours);
        }
        checked += 1;
    }
    assert!(checked > 50, "{checked} records checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_another_writers_schema_is_read_through_the_registry() {
    let topics = unique_topics("foreign");
    let scenario = Scenario::generate(&GeneratorConfig {
        orgs: 1,
        pos_per_org: 3,
        ..GeneratorConfig::default()
    });
    let (topic, contract, value) = documents(&scenario, &topics)
        .find(|(_, contract, _)| contract.default_topic == "invoice-events")
        .expect("the stream has an invoice");
    // The same fields under another writer's documentation: not the bundled schema.
    let mut foreign: serde_json::Value = serde_json::from_str(contract.schema_text).unwrap();
    foreign["doc"] = "as another ERP release registered it".into();
    let encoder = AvroEncoder::new(SrSettings::new(services().registry_url.clone()));
    let bytes = encoder
        .encode_value(value.clone(), &subject_with(topic, &foreign.to_string()))
        .await
        .unwrap();
    let codec = registry_codec();
    let mut ours = codec.encode(topic, contract, value.clone()).await.unwrap();
    assert_ne!(ours[1..5], bytes[1..5], "two schemas, two ids");
    // Read through the registry's decoder, the other writer's record is the record ours is.
    assert_eq!(
        codec.decode(Some(&bytes)).await.unwrap(),
        codec.decode(Some(&ours)).await.unwrap()
    );
    // Trailing bytes after a bundled schema's datum are refused, not ignored.
    ours.push(0);
    assert_eq!(
        codec.decode(Some(&ours)).await,
        Err(CodecError::TrailingBytes(1))
    );
}

/// The loader without a rate sends partitions side by side: each org's records still reach
/// every topic in the stream's order, and each partition holds its records in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_keeps_each_orgs_order_on_every_topic() {
    use p2p_loadtest::produce::{erp_producer_lingering, produce_records};
    use rdkafka::message::Message;
    use std::collections::BTreeMap;
    let topics = TestTopics::create("loader-order", 2).await;
    let codec = registry_codec();
    let scenario = Scenario::generate(&GeneratorConfig {
        orgs: 6,
        pos_per_org: 15,
        ..GeneratorConfig::default()
    });
    let producer = erp_producer_lingering(&kafka(), 0).unwrap();
    let sent = produce_records(&producer, &codec, &topics, &scenario.records)
        .await
        .unwrap();
    assert_eq!(sent, scenario.records.len());
    // What the stream says each (topic, org) holds, in order: key and timestamp, then what
    // each topic holds in offset order.
    let mut planned: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for record in &scenario.records {
        let topic = topic_name(&topics, record.topic).to_owned();
        planned
            .entry((topic, record.key.clone()))
            .or_default()
            .push(record.timestamp.0);
    }
    // And each partition in the stream's order, whatever its orgs: consumers align topics by
    // timestamp, so a partition out of time order would show a receipt before its PO.
    let mut planned_partitions: BTreeMap<(String, i32), Vec<i64>> = BTreeMap::new();
    for record in &scenario.records {
        let topic = topic_name(&topics, record.topic).to_owned();
        let partition = p2p_state::murmur2::partition_for(record.key.as_bytes(), 2) as i32;
        planned_partitions
            .entry((topic, partition))
            .or_default()
            .push(record.timestamp.0);
    }
    let mut landed: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut landed_partitions: BTreeMap<(String, i32), Vec<i64>> = BTreeMap::new();
    let names: std::collections::BTreeSet<String> =
        planned.keys().map(|(t, _)| t.clone()).collect();
    for topic in names {
        let messages =
            p2p_loadtest::audit::read_topic(&kafka(), &topic, std::time::Duration::from_secs(30))
                .unwrap();
        for message in messages {
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            let timestamp = message.timestamp().to_millis().unwrap();
            landed
                .entry((topic.clone(), key))
                .or_default()
                .push(timestamp);
            landed_partitions
                .entry((topic.clone(), message.partition()))
                .or_default()
                .push(timestamp);
        }
    }
    assert_eq!(landed, planned);
    assert_eq!(landed_partitions, planned_partitions);
}

/// Topics that are not there are named, with the command that makes them, before anything
/// is sent (the broker alone would say UnknownTopicOrPartition at the first record).
#[test]
fn produce_to_topics_not_there_names_them_and_how_to_create_them() {
    let dir = tempfile::tempdir().unwrap();
    // Named, never created.
    let topics = unique_topics("produce-missing");
    let config_path = pipeline_toml(dir.path(), &topics, None);
    let output = Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args(["produce", "--config"])
        .arg(&config_path)
        .args(["--orgs", "1", "--pos-per-org", "1"])
        .output()
        .expect("p2p produce runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("input topics missing:")
            && stderr.contains(&topics.po_events)
            && stderr.contains("p2p admin create-topics --config"),
        "{stderr}"
    );
}
