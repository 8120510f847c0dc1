//! `p2p admin grow-partitions` on the real broker (issue 25, ADR 0025): after the match has
//! decided a generated stream on 4 partitions, `--dry-run` plans growing to 8 and to 12 from
//! the match's changelog (every org whose partition changes moves, no other), shows what each
//! topology's growth log records, and shrinking is refused; then the growth itself, twice,
//! with the match running and ERPs publishing: 4 -> 8 (a multiple) and 8 -> 12 (not one).

mod common;

use common::{
    kafka, pipeline_toml, registry_codec, state_left_behind, wait_for_planted, Pipeline, TestTopics,
};
use p2p_avro::Codec;
use p2p_loadtest::audit::audit;
use p2p_loadtest::bench::recent;
use p2p_loadtest::generator::Payload;
use p2p_loadtest::produce::{erp_producer, produce_records};
use p2p_loadtest::{GeneratorConfig, Scenario};
use p2p_state::murmur2::partition_for;
use p2p_topologies::growth::{append_log, ensure_log, GrowthEntry};
use p2p_topologies::Topics;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Test topics on 4 partitions, the application's id, a pipeline configuration naming them
/// (in a directory to keep as long as the test runs), and a generated stream of orgs of equal
/// size.
async fn setup(
    prefix: &str,
    seed: u64,
    orgs: usize,
    pos_per_org: usize,
) -> (TestTopics, String, tempfile::TempDir, PathBuf, Scenario) {
    let topics = TestTopics::create(prefix, 4).await;
    let app = format!("p2p-grow-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let config_path = pipeline_toml(dir.path(), &topics, Some(&app));
    let scenario = Scenario::generate(&recent(&GeneratorConfig {
        seed,
        orgs,
        pos_per_org,
        org_size_skew: 0.0,
        ..GeneratorConfig::default()
    }));
    (topics, app, dir, config_path, scenario)
}

/// Publishes `scenario`'s records as ERPs do, from a producer made now (it partitions by the
/// topics' count of this moment).
async fn publish(topics: &Topics, codec: &Codec, scenario: &Scenario, what: &str) {
    produce_records(
        &erp_producer(&kafka()).unwrap(),
        codec,
        topics,
        &scenario.records,
    )
    .await
    .expect(what);
}

fn grow(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args(["admin", "grow-partitions", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("p2p admin grow-partitions runs")
}

/// The orgs of `orgs` whose partition differs between `from` and `to` partitions.
fn moving(orgs: &BTreeSet<String>, from: u32, to: u32) -> usize {
    orgs.iter()
        .filter(|o| partition_for(o.as_bytes(), from) != partition_for(o.as_bytes(), to))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_plans_the_orgs_that_move_and_shrinking_or_growing_for_real_is_refused() {
    let (topics, app, _dir, config_path, scenario) = setup("grow", 25, 16, 4).await;
    let orgs: BTreeSet<String> = scenario
        .records
        .iter()
        .filter(|r| matches!(r.payload, Payload::Document(..)))
        .map(|r| r.key.clone())
        .collect();
    let codec = registry_codec();
    publish(&topics, &codec, &scenario, "the stream is produced").await;
    // The match as the configuration's pipeline runs it: its changelog is the one planned.
    let pipeline = Pipeline::start_as(&format!("{app}-match"), &topics, codec.clone());
    wait_for_planted(&topics, &codec, &scenario.planted).await;
    pipeline.stop().await;

    let changelog = format!("{app}-match-match-changelog");
    for (to, header) in [
        (
            8,
            "growing from 4 to 8 partitions: 512 of the 1024 key groups move whole",
        ),
        (
            12,
            "growing from 4 to 12 partitions: 12 does not divide 1024",
        ),
    ] {
        let output = grow(&config_path, &["--to", &to.to_string(), "--dry-run"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(header), "{stdout}");
        let movers = moving(&orgs, 4, to);
        assert!(
            movers > 0 && movers < orgs.len(),
            "{movers} of {} orgs",
            orgs.len()
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{changelog}:")))
            .unwrap_or_else(|| panic!("no plan of {changelog}: {stdout}"));
        assert!(
            line.contains(&format!("keys of {movers} owners move")),
            "{movers} orgs change partition from 4 to {to}: {line}"
        );
        // Procurement and payment never ran: no changelog, nothing to move.
        assert!(
            stdout.contains(&format!(
                "{app}-procurement-procurement-changelog: not there"
            )),
            "{stdout}"
        );
    }

    // The growth log: none yet; then what a growth under way would have written to it.
    let first = grow(&config_path, &["--to", "8", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("match: no growth recorded"), "{stdout}");
    let log = format!("{app}-match-growth");
    ensure_log(&kafka(), &log, 1)
        .await
        .expect("growth log created");
    append_log(
        &kafka(),
        &log,
        "match",
        &[
            GrowthEntry::Grown { from: 4, to: 8 },
            GrowthEntry::MovedOut {
                partition: 1,
                to: 8,
            },
            GrowthEntry::Arrived {
                partition: 5,
                source: 1,
                to: 8,
                copies_from: 0,
            },
        ],
    )
    .expect("entries appended");
    let under_way = grow(&config_path, &["--to", "8", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&under_way.stdout);
    assert!(
        stdout.contains(
            "match: growth 4 -> 8 recorded; moved out: 1; waiting for state: 4 (from 0); \
             6 (from 2); 7 (from 3)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("procurement: no growth recorded"),
        "{stdout}"
    );

    let shrink = grow(&config_path, &["--to", "2", "--dry-run"]);
    assert!(!shrink.status.success());
    let stderr = String::from_utf8_lossy(&shrink.stderr);
    assert!(stderr.contains("shrinking is refused"), "{stderr}");

    // A growth under way (recorded above, partitions 0, 2 and 3 not moved out) refuses
    // another.
    let refused = grow(&config_path, &["--to", "12"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("has not finished"), "{stderr}");
}

/// The records of `scenario` of the orgs `orgs` accepts, in their order.
fn records_of(scenario: &Scenario, orgs: impl Fn(&str) -> bool) -> Scenario {
    Scenario {
        records: scenario
            .records
            .iter()
            .filter(|r| orgs(&r.key))
            .cloned()
            .collect(),
        ..Scenario::default()
    }
}

/// What `--dry-run` prints of the match's growth log.
fn growth_log_line(config: &Path) -> String {
    let output = grow(config, &["--to", "1024", "--dry-run"]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.starts_with("match: "))
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the match has moved every old partition's state out for the growth to `to`.
async fn growth_done(config: &Path, from: u32, to: u32) {
    let moved: Vec<String> = (0..from).map(|p| p.to_string()).collect();
    let done = format!(
        "match: growth {from} -> {to} recorded; moved out: {}; waiting for state: none",
        moved.join(", ")
    );
    let started = std::time::Instant::now();
    loop {
        let line = growth_log_line(config);
        if line == done {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(180),
            "the growth to {to} did not finish: {line}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Grows the partitions twice while the match runs and ERPs publish: 4 -> 8 while the first
/// orgs' backlog is still being decided, then 8 -> 12. The first orgs' POs are decided before
/// the growths and their invoices after both, on the state that moved (twice for some);
/// orgs first seen between the growths and after them are decided on their new partitions.
/// Ends with the audit (every invoice decided once, as planted) and no org's state left on a
/// changelog partition it no longer hashes to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_grow_4_to_8_to_12_mid_stream_and_every_orgs_state_moves_with_it() {
    let (topics, app, _dir, config_path, scenario) = setup("grow-live", 2512, 30, 5).await;
    let orgs: Vec<String> = scenario
        .records
        .iter()
        .map(|r| r.key.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let third = orgs.len() / 3;
    let (first, between) = (&orgs[..third], &orgs[third..2 * third]);
    let early = records_of(&scenario, |o| first.iter().any(|f| f == o));
    // The first orgs' records in two: their POs before the growths, the rest after both.
    let split = early.records.len() / 2;
    let before = Scenario {
        records: early.records[..split].to_vec(),
        ..Scenario::default()
    };
    let after_first = Scenario {
        records: early.records[split..].to_vec(),
        ..Scenario::default()
    };
    let codec = registry_codec();
    let pipeline = Pipeline::start_as(&format!("{app}-match"), &topics, codec.clone());
    publish(&topics, &codec, &before, "the first records are produced").await;

    let grown = grow(&config_path, &["--to", "8"]);
    assert!(
        grown.status.success(),
        "{}{}",
        String::from_utf8_lossy(&grown.stdout),
        String::from_utf8_lossy(&grown.stderr)
    );
    // A producer made now partitions by 8.
    publish(
        &topics,
        &codec,
        &records_of(&scenario, |o| between.iter().any(|b| b == o)),
        "the records between the growths are produced",
    )
    .await;
    growth_done(&config_path, 4, 8).await;

    let grown = grow(&config_path, &["--to", "12"]);
    assert!(
        grown.status.success(),
        "{}{}",
        String::from_utf8_lossy(&grown.stdout),
        String::from_utf8_lossy(&grown.stderr)
    );
    let fresh = erp_producer(&kafka()).unwrap();
    produce_records(&fresh, &codec, &topics, &after_first.records)
        .await
        .expect("the first orgs' later records are produced");
    produce_records(
        &fresh,
        &codec,
        &topics,
        &records_of(&scenario, |o| {
            !first.iter().any(|f| f == o) && !between.iter().any(|b| b == o)
        })
        .records,
    )
    .await
    .expect("the last orgs' records are produced");
    let observed = wait_for_planted(&topics, &codec, &scenario.planted).await;
    // The generator's undecodable records are dead-lettered as planted; nothing for its
    // partition.
    let misplaced: Vec<_> = observed
        .dead_letters
        .iter()
        .filter(|d| d.headers[p2p_topologies::dlq::HEADER_REASON] != "undecodable")
        .collect();
    assert!(misplaced.is_empty(), "{misplaced:?}");
    growth_done(&config_path, 8, 12).await;
    pipeline.stop().await;

    // No state left where its org no longer hashes to.
    let changelog = format!("{app}-match-match-changelog");
    let misplaced = state_left_behind(&kafka(), &changelog, 12);
    assert!(misplaced.is_empty(), "state left behind: {misplaced:?}");
}

/// Waits until group `group` has committed, on every partition of `topics`, at least the
/// offsets the partitions end at now: what was produced so far is decided.
async fn decided_so_far(group: &str, topics: &[&str]) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = p2p_topologies::admin::client_config(&kafka())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let timeout = std::time::Duration::from_secs(10);
    let mut ends = rdkafka::TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap();
        for partition in metadata.topics()[0].partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition.id(), timeout)
                .unwrap();
            ends.add_partition_offset(topic, partition.id(), rdkafka::Offset::Offset(high))
                .unwrap();
        }
    }
    let behind = |committed: &rdkafka::TopicPartitionList| -> Vec<String> {
        ends.elements()
            .iter()
            .filter_map(|end| {
                let at = committed
                    .find_partition(end.topic(), end.partition())
                    .and_then(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(0);
                let rdkafka::Offset::Offset(end_at) = end.offset() else {
                    return None;
                };
                (end_at > 0 && at < end_at)
                    .then(|| format!("{}/{} at {at} of {end_at}", end.topic(), end.partition()))
            })
            .collect()
    };
    common::poll(
        "the records produced so far decided",
        || async {
            behind(
                &consumer
                    .committed_offsets(ends.clone(), timeout)
                    .unwrap_or_default(),
            )
        },
        |behind| behind.is_empty(),
    )
    .await;
}

/// An org first seen after a growth whose move brought its new partition nothing is decided
/// there by the instance that made the move; restarted, that instance keeps the org's state.
/// (The kill -9 growth test found it lost: the restart took the move's arrival as one from
/// another store, dropped the org's keys as stale, and, the arrival saying nothing came, did
/// not read back what had been decided on them since.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_decided_after_a_growth_keeps_its_state_when_the_instance_that_moved_restarts() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (topics, app, _dir, config_path, scenario) = setup("grow-restart", 2612, 16, 4).await;
    let moves = |o: &str| partition_for(o.as_bytes(), 4) != partition_for(o.as_bytes(), 8);
    // Before the growth, only orgs that stay: every move finds nothing to move.
    let staying = records_of(&scenario, |o| !moves(o));
    let late = records_of(&scenario, moves);
    assert!(
        !staying.records.is_empty() && !late.records.is_empty(),
        "the seed gives orgs of both kinds"
    );
    let split = late.records.len() / 2;
    let (late_first, late_rest) = late.records.split_at(split);
    let group = format!("{app}-match");
    let codec = registry_codec();
    // One worker: the one that moves the old partitions' state decides on the new ones too.
    let pipeline = Pipeline::start_with_workers(&group, &topics, codec.clone(), 1);
    publish(
        &topics,
        &codec,
        &staying,
        "the staying orgs' records are produced",
    )
    .await;
    let grown = grow(&config_path, &["--to", "8"]);
    assert!(grown.status.success(), "{grown:?}");
    growth_done(&config_path, 4, 8).await;

    // The moving orgs' first records, by 8 partitions, decided on their new partitions.
    let fresh = erp_producer(&kafka()).unwrap();
    let first = Scenario {
        records: late_first.to_vec(),
        ..Scenario::default()
    };
    produce_records(&fresh, &codec, &topics, &first.records)
        .await
        .expect("the moving orgs' first records are produced");
    decided_so_far(&group, &topics.match_inputs()).await;
    let (_, state) = pipeline.stop_keeping_state().await;

    let pipeline = Pipeline::restart_as(&group, &topics, codec.clone(), state, 1);
    let rest = Scenario {
        records: late_rest.to_vec(),
        ..Scenario::default()
    };
    produce_records(&fresh, &codec, &topics, &rest.records)
        .await
        .expect("the moving orgs' later records are produced");
    let observed = wait_for_planted(&topics, &codec, &scenario.planted).await;
    assert!(audit(&scenario.planted, &observed).passed());
    pipeline.stop().await;
}

/// An instance started while a growth is under way, its inputs' partition counts apart (the
/// command grows them one after the other, after recording the growth), waits until they all
/// have grown, then decides on the grown count. (The kill -9 growth test saw an instance
/// started then exit, refusing its inputs as not co-partitioned.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_mid_growth_waits_until_every_input_has_grown() {
    let (topics, app, _dir, _config_path, scenario) = setup("grow-start", 2712, 8, 3).await;
    let group = format!("{app}-match");
    let log = format!("{group}-growth");
    ensure_log(&kafka(), &log, 1).await.unwrap();
    append_log(
        &kafka(),
        &log,
        "match",
        &[GrowthEntry::Grown { from: 4, to: 8 }],
    )
    .unwrap();
    let inputs = topics.match_inputs();
    p2p_topologies::changelog::grow_topic(&kafka(), inputs[0], 8)
        .await
        .unwrap();

    let codec = registry_codec();
    let pipeline = Pipeline::start_as(&group, &topics, codec.clone());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for topic in &inputs[1..] {
        p2p_topologies::changelog::grow_topic(&kafka(), topic, 8)
            .await
            .unwrap();
    }
    publish(
        &topics,
        &codec,
        &scenario,
        "the stream is produced, by 8 partitions",
    )
    .await;
    wait_for_planted(&topics, &codec, &scenario.planted).await;
    pipeline.stop().await;
}

/// An instance that crashed before a growth and came back within the session timeout is
/// handed back, as a static member, its share of the assignment the group made on the old
/// count: the broker does not rebalance for that, and the grown partitions had no member for
/// good (the kill -9 growth test: every worker busy with its share, the records of the new
/// partitions never taken). The workers find partitions of their inputs given to nobody in the
/// group's assignment, and join again for a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_back_from_a_crash_on_its_share_from_before_a_growth_takes_the_new_partitions()
{
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (topics, app, _dir, config_path, scenario) = setup("grow-stale", 2812, 16, 4).await;
    let moves = |o: &str| partition_for(o.as_bytes(), 4) != partition_for(o.as_bytes(), 8);
    let staying = records_of(&scenario, |o| !moves(o));
    let moving = records_of(&scenario, moves);
    assert!(
        !staying.records.is_empty() && !moving.records.is_empty(),
        "the seed gives orgs of both kinds"
    );
    let group = format!("{app}-match");
    let codec = registry_codec();
    let pipeline = Pipeline::start_with_workers(&group, &topics, codec.clone(), 1);
    let producer = erp_producer(&kafka()).unwrap();
    produce_records(&producer, &codec, &topics, &staying.records)
        .await
        .expect("the staying orgs' records are produced");
    decided_so_far(&group, &topics.match_inputs()).await;
    let state = pipeline.crash().await;

    let grown = grow(&config_path, &["--to", "8"]);
    assert!(grown.status.success(), "{grown:?}");
    let pipeline = Pipeline::restart_as(&group, &topics, codec.clone(), state, 1);
    // The moving orgs' records, by 8 partitions: on the new partitions 4 to 7.
    publish(
        &topics,
        &codec,
        &moving,
        "the moving orgs' records are produced",
    )
    .await;
    let observed = wait_for_planted(&topics, &codec, &scenario.planted).await;
    assert!(audit(&scenario.planted, &observed).passed());
    pipeline.stop().await;
}
