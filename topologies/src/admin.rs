//! Creating and deleting the P2P topics (the engine's Kafka helpers are re-exported here, where
//! the CLI and the tests have always found them).

use crate::config::{KafkaProperties, Topics};
pub use p2p_engine::kafka::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

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

/// Why `grow-partitions` did not plan or carry out a growth.
#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Growth(#[from] p2p_engine::growth::GrowthError),
    #[error(transparent)]
    GrowthLog(#[from] p2p_engine::growth::GrowthLogIoError),
    #[error("input topics missing: {}", .0.join(", "))]
    MissingTopics(Vec<String>),
    #[error(
        "the input topics do not share one partition count ({0}): an earlier growth was left \
         half done, or another tool changed them; every input must have the same count first"
    )]
    NotCoPartitioned(String),
    #[error(
        "the {topology} topology's growth from {from} to {to} has not finished ({state}): one \
         growth at a time. Run the pipeline until `--dry-run` shows nothing waiting, then grow \
         again"
    )]
    UnderWay {
        topology: String,
        from: u32,
        to: u32,
        state: String,
    },
    #[error("changelog: {0}")]
    Changelog(#[from] p2p_engine::changelog::ChangelogError),
}

/// What growing every P2P topic to `to` partitions would move: the growth (from the inputs'
/// shared count), and for each of `changelogs` that exists, its plan.
pub struct GrowthReport {
    pub growth: p2p_engine::growth::Growth,
    /// Per topology, what its growth log says (a growth under way, its moves).
    pub logs: Vec<(String, p2p_engine::growth::GrowthState)>,
    pub plans: Vec<p2p_engine::growth::GrowthPlan>,
    /// Changelogs not there (a topology that never ran exactly once): no state to move.
    pub absent: Vec<String>,
}

/// A topology's stores as `grow-partitions` sees them: its name, changelog and growth log,
/// and the input topics whose backlog its runtimes decide before moving state.
#[derive(Debug, Clone)]
pub struct TopologyStore {
    pub topology: String,
    pub changelog: String,
    pub growth_log: String,
    pub inputs: Vec<String>,
    /// The growth log's replication factor (-1: the broker's default).
    pub replication: i32,
}

/// The three topologies' stores, each under the runtime settings `runtime_of` gives it.
pub fn topology_stores(
    topics: &Topics,
    runtime_of: impl Fn(&str) -> p2p_engine::RuntimeConfig,
) -> Vec<TopologyStore> {
    [
        ("match", topics.match_inputs()),
        ("procurement", topics.procurement_inputs()),
        ("payment", topics.payment_inputs()),
    ]
    .into_iter()
    .map(|(topology, inputs)| {
        let runtime = runtime_of(topology);
        TopologyStore {
            topology: topology.to_owned(),
            changelog: runtime.changelog_topic(topology),
            growth_log: runtime.growth_log_topic(),
            inputs: inputs.into_iter().map(str::to_owned).collect(),
            replication: runtime.changelog_replication,
        }
    })
    .collect()
}

/// Plans the growth of `topics` to `to` partitions: reads the inputs' partition counts (they
/// must share one), then each topology's growth log and changelog's live state to its end.
pub fn plan_growth(
    kafka: &KafkaProperties,
    topics: &Topics,
    stores: &[TopologyStore],
    to: u32,
    timeout: std::time::Duration,
) -> Result<GrowthReport, GrowError> {
    use p2p_engine::growth::{ChangelogCensus, Growth};
    let inputs = topics.inputs();
    let mut wanted: Vec<&str> = inputs.clone();
    wanted.extend(stores.iter().map(|s| s.changelog.as_str()));
    let counts = partition_counts(kafka, &wanted)?;
    let missing = absent_from(&counts, &inputs);
    if !missing.is_empty() {
        return Err(GrowError::MissingTopics(missing));
    }
    let shared: std::collections::BTreeSet<i32> = inputs.iter().map(|t| counts[*t]).collect();
    if shared.len() > 1 {
        let mut listed: Vec<String> = inputs
            .iter()
            .map(|t| format!("{t}: {}", counts[*t]))
            .collect();
        listed.sort();
        return Err(GrowError::NotCoPartitioned(listed.join(", ")));
    }
    let from = shared.into_iter().next().unwrap_or(0).max(0) as u32;
    let growth = Growth::new(from, to)?;
    let mut logs = Vec::new();
    for store in stores {
        let state =
            p2p_engine::growth::read_log(kafka, &store.growth_log, &store.topology, timeout)?;
        logs.push((store.topology.clone(), state));
    }
    let mut plans = Vec::new();
    let mut absent = Vec::new();
    for store in stores {
        if absent_from(&counts, &[&store.changelog]).is_empty() {
            plans.push(ChangelogCensus::read(kafka, &store.changelog, timeout)?.plan(growth));
        } else {
            absent.push(store.changelog.clone());
        }
    }
    Ok(GrowthReport {
        growth,
        logs,
        plans,
        absent,
    })
}

/// Carries out the growth `report` planned (ADR 0025): for each topology, the growth and its
/// inputs' backlog ends go to its growth log, and its changelog grows if it exists; then
/// every other P2P topic grows, and the inputs last, so that a runtime that sees
/// them grown finds everything else ready. Refused while a growth is under way. A crash
/// midway is completed by running it again. The topics grown, in order.
pub async fn carry_out_growth(
    kafka: &KafkaProperties,
    topics: &Topics,
    stores: &[TopologyStore],
    report: &GrowthReport,
) -> Result<Vec<String>, GrowError> {
    use p2p_engine::growth::{append_log, ensure_log, GrowthEntry};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    for (topology, log) in &report.logs {
        // A topology with no changelog has no state to move: its growth never finishes
        // until it runs, and holds no other growth up (its runtimes forward the records of
        // an older count to where they belong now, as any straggler).
        let stateless = stores
            .iter()
            .any(|s| &s.topology == topology && report.absent.contains(&s.changelog));
        if stateless {
            continue;
        }
        if let Some(under_way) = log.unfinished() {
            if under_way.to() != report.growth.to() {
                return Err(GrowError::UnderWay {
                    topology: topology.clone(),
                    from: under_way.from(),
                    to: under_way.to(),
                    state: log.to_string(),
                });
            }
        }
    }
    let (from, to) = (report.growth.from(), report.growth.to());
    let reader: BaseConsumer = client_config(kafka).create()?;
    let mut grown = Vec::new();
    for store in stores {
        // A topology without a changelog yet (never run exactly once, or starting for the
        // first time now) has no state to move, but its inputs' backlog was partitioned by
        // the old count: the growth and the backlog's ends are recorded for it too, so that
        // its runtimes (which create the changelog at the grown count) decide that backlog
        // on its old partitions instead of dead-lettering it as off its partition. (The
        // kill -9 growth test grew the topics as its pipeline first started: the payment
        // topology sent every PO event from before the growth to the DLQ.)
        ensure_log(kafka, &store.growth_log, store.replication).await?;
        let mut entries = vec![GrowthEntry::Grown { from, to }];
        for topic in &store.inputs {
            for partition in 0..from {
                let (_, end) =
                    reader.fetch_watermarks(topic, partition as i32, Duration::from_secs(10))?;
                entries.push(GrowthEntry::End {
                    topic: topic.clone(),
                    partition,
                    to,
                    offset: end,
                });
            }
        }
        append_log(kafka, &store.growth_log, &store.topology, &entries)?;
        if !report.absent.contains(&store.changelog) {
            p2p_engine::changelog::grow_topic(kafka, &store.changelog, to as i32).await?;
            grown.push(store.changelog.clone());
        }
    }
    let inputs = topics.inputs();
    let all = topics.all();
    let (first, last): (Vec<&str>, Vec<&str>) = all
        .iter()
        .map(String::as_str)
        .partition(|t| !inputs.contains(t));
    let counts = partition_counts(kafka, &all.iter().map(String::as_str).collect::<Vec<_>>())?;
    for topic in first.into_iter().chain(last) {
        if counts.get(topic).is_some_and(|c| (*c as u32) < to) {
            p2p_engine::changelog::grow_topic(kafka, topic, to as i32).await?;
            grown.push(topic.to_owned());
        }
    }
    // The command returns once the cluster's metadata shows every topic grown: a producer
    // made after it partitions by the new count (the controller accepts a growth before the
    // brokers' metadata shows it).
    let names: Vec<&str> = grown.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let counts = partition_counts(kafka, &names)?;
        if names
            .iter()
            .all(|t| counts.get(*t).is_some_and(|c| *c as u32 >= to))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(grown)
}

/// Those of `topics` the cluster does not have, from one metadata request.
pub fn missing_topics(kafka: &KafkaProperties, topics: &[&str]) -> Result<Vec<String>, KafkaError> {
    Ok(absent_from(&partition_counts(kafka, topics)?, topics))
}

/// Those of `topics` that `counts` has no partitions of, sorted, each once.
fn absent_from(counts: &std::collections::HashMap<String, i32>, topics: &[&str]) -> Vec<String> {
    let mut missing: Vec<String> = topics
        .iter()
        .filter(|t| counts.get(**t).copied().unwrap_or(0) == 0)
        .map(|t| (*t).to_owned())
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Each of `topics`' partition count (absent: not there), from one metadata request.
fn partition_counts(
    kafka: &KafkaProperties,
    topics: &[&str],
) -> Result<std::collections::HashMap<String, i32>, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = client_config(kafka).create()?;
    let metadata = consumer.fetch_metadata(None, std::time::Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| topics.contains(&t.name()) && t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
        .collect())
}
