//! A restore longer than `max.poll.interval.ms` on the real broker (issue 25, item 2): the
//! runtime polls its group consumer while it restores, as Kafka Streams does, so it keeps its
//! membership (no rebalance takes its partitions) and then decides the stream as planted.

mod common;

use common::{kafka, poll, registry_codec, wait_for_planted, Pipeline, TestTopics, PATIENCE};
use p2p_loadtest::audit::audit;
use p2p_loadtest::bench::recent;
use p2p_loadtest::produce::{erp_producer, produce_records};
use p2p_loadtest::{GeneratorConfig, Scenario};
use p2p_processors::OrgId;
use p2p_state::StateKey;
use p2p_topologies::changelog::{ensure_topic, partition_of};
use p2p_topologies::{MatchConfig, MatchRuntime};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::time::{Duration, Instant};

/// The group's limits in this test: the broker's least session timeout, and a member that does
/// not poll for as long leaves its group.
const MAX_POLL_INTERVAL_MS: u64 = 6_000;
/// State records in the changelog before the runtime starts: restoring them takes this
/// machine several times the poll interval.
const CHANGELOG_RECORDS: u64 = 2_000_000;

/// Writes `records` state records of 1,000 orgs (none of the stream's) onto `changelog`, each
/// on the partition its org hashes to, as the runtime writes them.
fn fill_changelog(changelog: &str, partitions: i32, records: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        p2p_topologies::admin::producer_config(&kafka())
            .set("linger.ms", "50")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("compression.type", "lz4")
            .create()
            .expect("producer");
    let orgs: Vec<OrgId> = (0..1_000u128)
        .map(|n| OrgId::from_u128(900_000 + n))
        .collect();
    let value = [7u8; 40];
    for n in 0..records {
        let key = StateKey::new(&orgs[(n % 1_000) as usize], &format!("filler_{n}"));
        let partition = partition_of(key.as_bytes(), partitions).expect("an org's key");
        let mut record = BaseRecord::to(changelog)
            .key(key.as_bytes())
            .payload(&value[..])
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, refused)) => {
                    record = refused;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("the changelog is written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_longer_than_the_poll_interval_keeps_the_group_and_decides_the_stream() {
    let topics = TestTopics::create("restore-polls", 2).await;
    let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());
    let state = tempfile::tempdir().unwrap();
    let mut kafka = kafka();
    kafka.insert(
        "max.poll.interval.ms".into(),
        MAX_POLL_INTERVAL_MS.to_string(),
    );
    kafka.insert(
        "session.timeout.ms".into(),
        MAX_POLL_INTERVAL_MS.to_string(),
    );
    kafka.insert("heartbeat.interval.ms".into(), "1000".into());
    let mut config = MatchConfig::new(&app, kafka.clone(), state.path().to_path_buf());
    config.topics = (*topics).clone();
    config.runtime.workers = 1;
    let changelog = config.runtime.changelog_topic("match");
    ensure_topic(&kafka, &changelog, 2, 1)
        .await
        .expect("changelog created");
    let changelog_name = changelog.clone();
    tokio::task::spawn_blocking(move || fill_changelog(&changelog_name, 2, CHANGELOG_RECORDS))
        .await
        .unwrap();

    let codec = registry_codec();
    let runtime = MatchRuntime::for_match(config, codec.clone()).expect("runtime");
    let stats = runtime.stats();
    let started = Instant::now();
    let pipeline = Pipeline::run(runtime, state);
    let restored = poll(
        "the changelog restored",
        || async { stats.snapshot().get("changelog records restored") },
        |restored| *restored >= CHANGELOG_RECORDS,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(restored, CHANGELOG_RECORDS);
    // Without this the test would show nothing: the restore must outlast the interval.
    assert!(
        took > Duration::from_millis(MAX_POLL_INTERVAL_MS) && took < PATIENCE,
        "restoring {CHANGELOG_RECORDS} records took {took:?}: not longer than the poll interval"
    );

    let scenario = Scenario::generate(&recent(&GeneratorConfig {
        seed: 31,
        orgs: 4,
        pos_per_org: 5,
        ..GeneratorConfig::default()
    }));
    produce_records(
        &erp_producer(&kafka).unwrap(),
        &codec,
        &topics,
        &scenario.records,
    )
    .await
    .expect("produced");
    let observed = wait_for_planted(&topics, &codec, &scenario.planted).await;
    assert!(audit(&scenario.planted, &observed).passed());
    // The member kept its partitions throughout: no rebalance took them (one that leaves
    // its group for not polling gives them up, and restores again when it rejoins).
    assert_eq!(
        stats.snapshot().get("rebalances that took partitions"),
        0,
        "the restore cost the member its partitions"
    );
    pipeline.stop().await;
}
