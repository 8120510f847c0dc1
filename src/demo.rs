//! `p2p demo`: the whole match pipeline in one process against librdkafka's in-process mock
//! cluster, fed by the load generator, then read back and checked against the generator's plan.
//!
//! The mock cluster is fine for a demo and nothing more: its Fetch ignores read_committed and
//! it does not store transactional offset commits. Correctness is tested on a real broker.

use anyhow::{bail, Context};
use clap::Args;
use p2p_avro::Codec;
use p2p_loadtest::audit::{audit, read_outputs};
use p2p_loadtest::generator::{InputTopic, Payload};
use p2p_loadtest::produce::{erp_producer, produce_scenario};
use p2p_loadtest::{GeneratorConfig, Scenario};
use p2p_topologies::{KafkaProperties, MatchConfig, MatchRuntime, Topics};
use rdkafka::mocking::MockCluster;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of organisations (tenants).
    #[arg(long, default_value_t = 6)]
    orgs: usize,
    /// Purchase orders per organisation.
    #[arg(long, default_value_t = 50)]
    pos_per_org: usize,
    /// Seed of the generated stream (same seed, same stream).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Partitions per topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("starting the embedded Kafka")?;
    let topics = Topics::default();
    for topic in topics.all() {
        cluster.create_topic(&topic, args.partitions, 1)?;
    }
    let mut kafka = KafkaProperties::new();
    kafka.insert("bootstrap.servers".into(), cluster.bootstrap_servers());

    let codec = Arc::new(Codec::Embedded);
    println!("P2P pipeline demo: three-way match on an embedded Kafka (librdkafka mock cluster)");
    println!("schemas: {}", codec.describe());

    let scenario = Scenario::generate(&GeneratorConfig {
        seed: args.seed,
        orgs: args.orgs,
        pos_per_org: args.pos_per_org,
        ..GeneratorConfig::default()
    });
    let producer = erp_producer(&kafka)?;
    let produced = produce_scenario(&producer, &codec, &topics, &scenario).await?;
    println!(
        "input:   {} orgs, {} POs: {} po-events, {} grn-events, {} invoice-events (incl. {} undecodable)",
        args.orgs,
        args.orgs * args.pos_per_org,
        scenario.count(InputTopic::PurchaseOrders),
        scenario.count(InputTopic::GoodsReceipts),
        scenario.count(InputTopic::Invoices),
        scenario
            .records
            .iter()
            .filter(|r| matches!(r.payload, Payload::Garbage(_)))
            .count(),
    );

    let state_dir = tempfile::tempdir()?;
    let mut config = MatchConfig::new("p2p-demo", kafka.clone(), state_dir.path().to_path_buf());
    config.topics = topics.clone();
    let runtime = MatchRuntime::new(config, codec.clone())?;
    let stats = runtime.stats();
    let watcher = stats.clone();
    // From the first processed batch, so joining the consumer group is not counted.
    let first_batch = Arc::new(OnceLock::new());
    let first = first_batch.clone();
    let done = async move {
        let limit = Instant::now() + Duration::from_secs(120);
        loop {
            let processed = watcher.snapshot().records_in;
            if processed > 0 {
                first.get_or_init(Instant::now);
            }
            if processed >= produced as u64 || Instant::now() > limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let snapshot = runtime.run(done).await?;
    let elapsed = first_batch.get().map_or(Duration::ZERO, Instant::elapsed);
    if snapshot.records_in < produced as u64 {
        bail!(
            "the pipeline processed {} of {produced} records within two minutes",
            snapshot.records_in
        );
    }
    println!(
        "processed {} records in {} batches, {:.2} s after the first batch ({:.0} records/s on \
         the mock cluster, a debug build is slower; speed claims come from the benchmark)",
        snapshot.records_in,
        snapshot.batches,
        elapsed.as_secs_f64(),
        snapshot.records_in as f64 / elapsed.as_secs_f64().max(1e-9),
    );

    let observed = read_outputs(&kafka, &codec, &topics, Duration::from_secs(30)).await?;
    let audit = audit(&scenario.planted, &observed);
    println!();
    println!("invoice outcomes (final, read back from the output topics)");
    println!("  matched             {:>6}", audit.matched);
    println!("  exception           {:>6}", audit.exceptions);
    println!(
        "  still pending       {:>6}   (waiting for goods)",
        audit.pending
    );
    println!(
        "  pending on arrival  {:>6}   (read before their PO or goods; decided later or still pending)",
        snapshot.pending
    );
    println!("exception reasons (invoices carrying each)");
    for (reason, count) in &audit.reasons {
        println!("  {reason:<19} {count:>6}");
    }
    println!("matched amounts");
    for (currency, total) in &audit.matched_totals {
        println!("  {currency}                 {total:>16}");
    }
    println!("dead-letter queues");
    if observed.dead_letters.is_empty() {
        println!("  (empty)");
    }
    for letter in &observed.dead_letters {
        let header = |k: &str| letter.headers.get(k).map_or("?", String::as_str);
        println!(
            "  {}: {} from {}[{}]@{}: {}",
            letter.topic,
            header("dlq.reason"),
            header("dlq.original.topic"),
            header("dlq.original.partition"),
            header("dlq.original.offset"),
            header("dlq.error"),
        );
    }
    println!();
    if audit.passed() {
        println!(
            "check: all {} invoices ended as the generator planted them",
            audit.invoices
        );
        Ok(())
    } else {
        for d in audit.disagreements.iter().take(20) {
            println!("  DISAGREES: {d}");
        }
        bail!(
            "{} of {} invoices did not end as planted",
            audit.disagreements.len(),
            audit.invoices
        )
    }
}
