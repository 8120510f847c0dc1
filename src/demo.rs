//! `p2p demo`: the pipeline's topologies (procurement: lifecycle and approval routing; match)
//! in one process against librdkafka's in-process mock cluster, fed by the load generator,
//! then read back and checked against the generator's plan.
//!
//! The mock cluster is fine for a demo and nothing more: its Fetch ignores read_committed and
//! it does not store transactional offset commits. Correctness is tested on a real broker.

use anyhow::{bail, Context};
use clap::Args;
use p2p_avro::Codec;
use p2p_loadtest::audit::{audit, audit_lifecycles, read_outputs, read_procurement};
use p2p_loadtest::generator::{InputTopic, Payload};
use p2p_loadtest::produce::{erp_producer, produce_scenario};
use p2p_loadtest::{GeneratorConfig, Scenario};
use p2p_topologies::{
    KafkaProperties, MatchConfig, MatchRuntime, ProcurementProcessor, Runtime, RuntimeConfig,
    Stats, Topics,
};
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
    println!(
        "P2P pipeline demo: approval routing and three-way match on an embedded Kafka \
         (librdkafka mock cluster)"
    );
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
        "input:   {} orgs, {} POs: {} po-events, {} approval-decisions, {} grn-events, \
         {} invoice-events (incl. {} undecodable)",
        args.orgs,
        args.orgs * args.pos_per_org,
        scenario.count(InputTopic::PurchaseOrders),
        scenario.count(InputTopic::ApprovalDecisions),
        scenario.count(InputTopic::GoodsReceipts),
        scenario.count(InputTopic::Invoices),
        scenario
            .records
            .iter()
            .filter(|r| matches!(r.payload, Payload::Garbage(_)))
            .count(),
    );

    let state_dir = tempfile::tempdir()?;
    let mut config = MatchConfig::new(
        "p2p-demo-match",
        kafka.clone(),
        state_dir.path().to_path_buf(),
    );
    config.topics = topics.clone();
    let matching = MatchRuntime::for_match(config, codec.clone())?;
    let procurement = Runtime::new(
        RuntimeConfig::new(
            "p2p-demo-procurement",
            kafka.clone(),
            state_dir.path().to_path_buf(),
        ),
        ProcurementProcessor::new(topics.clone(), codec.clone()),
    )?;
    let match_inputs = scenario.count(InputTopic::PurchaseOrders)
        + scenario.count(InputTopic::GoodsReceipts)
        + scenario.count(InputTopic::Invoices);
    let procurement_inputs =
        scenario.count(InputTopic::PurchaseOrders) + scenario.count(InputTopic::ApprovalDecisions);
    debug_assert_eq!(
        produced,
        match_inputs + scenario.count(InputTopic::ApprovalDecisions)
    );
    // From the first processed batch, so joining the consumer group is not counted.
    let first_batch = Arc::new(OnceLock::new());
    let started = Instant::now();
    let (match_stats, procurement_stats) = (matching.stats(), procurement.stats());
    let (matched, procured) = tokio::try_join!(
        matching.run(processed(match_stats, match_inputs, first_batch.clone())),
        procurement.run(processed(
            procurement_stats,
            procurement_inputs,
            first_batch.clone()
        )),
    )?;
    let elapsed = first_batch
        .get()
        .map_or(started.elapsed(), Instant::elapsed);
    if matched.records_in < match_inputs as u64 || procured.records_in < procurement_inputs as u64 {
        bail!(
            "the pipeline processed {} of {match_inputs} match and {} of {procurement_inputs} \
             procurement records within two minutes",
            matched.records_in,
            procured.records_in
        );
    }
    let snapshot = matched;
    println!(
        "processed {} records in {:.2} s after the first batch ({:.0} records/s on the mock \
         cluster, a debug build is slower; speed claims come from the benchmark)",
        snapshot.records_in + procured.records_in,
        elapsed.as_secs_f64(),
        (snapshot.records_in + procured.records_in) as f64 / elapsed.as_secs_f64().max(1e-9),
    );

    let lifecycle = read_procurement(&kafka, &codec, &topics, Duration::from_secs(30)).await?;
    let lifecycle_disagreements = audit_lifecycles(&scenario.lifecycles, &lifecycle);
    println!();
    println!("purchase orders (latest po-status per PO)");
    let mut states = std::collections::BTreeMap::new();
    for status in lifecycle.status.values() {
        *states
            .entry(format!("{:?}", status.state))
            .or_insert(0usize) += 1;
    }
    for (state, count) in &states {
        println!("  {state:<19} {count:>6}");
    }
    let audit_count = |kind: &str| lifecycle.audit.get(kind).copied().unwrap_or(0);
    println!(
        "approval: {} steps requested, {} approved, {} escalated; {} transitions and {} \
         refusals on audit-events",
        lifecycle.approval_requests,
        audit_count("StepApproved"),
        lifecycle.escalations,
        audit_count("Transitioned"),
        audit_count("Refused"),
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
    let refusals = audit_count("Refused");
    if refusals != scenario.refusals {
        bail!(
            "{refusals} refusals on audit-events, the generator planted {}",
            scenario.refusals
        );
    }
    if !lifecycle_disagreements.is_empty() {
        for d in lifecycle_disagreements.iter().take(20) {
            println!("  DISAGREES: {d}");
        }
        bail!(
            "{} of {} purchase orders did not end as planted",
            lifecycle_disagreements.len(),
            scenario.lifecycles.len()
        );
    }
    if audit.passed() {
        println!(
            "check: all {} POs and all {} invoices ended as the generator planted them",
            scenario.lifecycles.len(),
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

/// Completes once `stats` counts `expected` records in (or after two minutes), noting when
/// the first batch was processed.
async fn processed(stats: Arc<Stats>, expected: usize, first_batch: Arc<OnceLock<Instant>>) {
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        let processed = stats.snapshot().records_in;
        if processed > 0 {
            first_batch.get_or_init(Instant::now);
        }
        if processed >= expected as u64 || Instant::now() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
