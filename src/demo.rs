//! `p2p demo`: the pipeline's topologies (procurement: lifecycle and approval routing; match;
//! payment) in one process against librdkafka's in-process mock cluster, fed by the load generator,
//! then read back and checked against the generator's plan.
//!
//! The mock cluster is fine for a demo and nothing more: its Fetch ignores read_committed and
//! it does not store transactional offset commits. Correctness is tested on a real broker.

use anyhow::{bail, Context};
use clap::Args;
use p2p_avro::Codec;
use p2p_loadtest::audit::{
    audit, audit_lifecycles, audit_payments, audit_requisitions, read_outputs, read_payments,
    read_procurement,
};
use p2p_loadtest::generator::{InputTopic, Payload};
use p2p_loadtest::produce::{erp_producer, produce_scenario};
use p2p_loadtest::{GeneratorConfig, Scenario};
use p2p_topologies::{
    joined, Guarantee, KafkaProperties, MatchConfig, MatchRuntime, PaymentProcessor,
    ProcurementProcessor, Runtime, RuntimeConfig, Stats, StatsSnapshot, Topics,
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
        "P2P pipeline demo: approval routing, three-way match and payment runs on an embedded \
         Kafka (librdkafka mock cluster)"
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
        "input:   {} orgs, {} requisitions, {} POs: {} requisition-events, {} po-events, \
         {} approval-decisions, {} grn-events, {} invoice-events (incl. {} undecodable)",
        args.orgs,
        scenario.requisitions.len(),
        args.orgs * args.pos_per_org,
        scenario.count(InputTopic::Requisitions),
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
    // The mock cluster keeps no transactional offset commits (see above): at least once.
    config.runtime.guarantee = Guarantee::AtLeastOnce;
    let matching = MatchRuntime::for_match(config, codec.clone())?;
    let runtime_config = |application_id: &str| RuntimeConfig {
        guarantee: Guarantee::AtLeastOnce,
        ..RuntimeConfig::new(
            application_id,
            kafka.clone(),
            state_dir.path().to_path_buf(),
        )
    };
    let procurement = Runtime::new(
        runtime_config("p2p-demo-procurement"),
        ProcurementProcessor::new(topics.clone(), codec.clone()),
    )?;
    let payment = Runtime::new(
        runtime_config("p2p-demo-payment"),
        PaymentProcessor::new(topics.clone(), codec.clone()),
    )?;
    let count =
        |topics: &[InputTopic]| -> u64 { topics.iter().map(|t| scenario.count(*t) as u64).sum() };
    use InputTopic as I;
    let match_inputs = count(&[
        I::PurchaseOrders,
        I::GoodsReceipts,
        I::Invoices,
        I::OrgConfigs,
    ]);
    // Besides what the ERPs send, procurement reads what match and payment write.
    let procurement_inputs = count(&[
        I::Requisitions,
        I::PurchaseOrders,
        I::ApprovalDecisions,
        I::GoodsReceipts,
        I::OrgConfigs,
    ]);
    let payable = scenario
        .planted
        .iter()
        .filter(|(_, p)| *p == p2p_loadtest::Planted::Matched)
        .count() as u64;
    // Configs, suppliers and PO events, then one matched invoice per payable one.
    let payment_inputs = count(&[I::PurchaseOrders, I::OrgConfigs, I::SupplierMasters]) + payable;
    debug_assert_eq!(produced as u64, count(&I::ALL));
    // From the first processed batch, so joining the consumer group is not counted.
    let first_batch = Arc::new(OnceLock::new());
    let started = Instant::now();
    let (match_stats, procurement_stats, payment_stats) =
        (matching.stats(), procurement.stats(), payment.stats());
    let (from_match, from_payment) = (match_stats.clone(), payment_stats.clone());
    let (matched_topic, schedule_topic) = (
        topics.invoice_matched.clone(),
        topics.payment_schedule.clone(),
    );
    let (matched, procured, paid) = tokio::try_join!(
        joined(tokio::spawn(matching.run(processed(
            match_stats.clone(),
            move |s| s.records_in >= match_inputs,
            first_batch.clone()
        )))),
        joined(tokio::spawn(procurement.run(processed(
            procurement_stats,
            move |s| {
                let (matching, paying) = (from_match.snapshot(), from_payment.snapshot());
                matching.records_in >= match_inputs
                    && paying.get("parts released") >= payable
                    && s.records_in
                        >= procurement_inputs
                            + matching.out(&matched_topic)
                            + paying.out(&schedule_topic)
            },
            first_batch.clone()
        )))),
        joined(tokio::spawn(payment.run(processed(
            payment_stats.clone(),
            // Every payable invoice in, and released by the run its due date calls for.
            move |s| s.records_in >= payment_inputs && s.get("parts released") >= payable,
            first_batch.clone()
        )))),
    )?;
    let elapsed = first_batch
        .get()
        .map_or(started.elapsed(), Instant::elapsed);
    if matched.records_in < match_inputs
        || procured.records_in < procurement_inputs + matched.out(&topics.invoice_matched)
        || paid.get("parts released") < payable
    {
        bail!(
            "within two minutes the pipeline processed {} of {match_inputs} match and {} of \
             {procurement_inputs} procurement records, and released {} of {payable} payments",
            matched.records_in,
            procured.records_in,
            paid.get("parts released"),
        );
    }
    let snapshot = matched;
    let total_in = snapshot.records_in + procured.records_in + paid.records_in;
    println!(
        "processed {total_in} records in {:.2} s after the first batch ({:.0} records/s on the \
         mock cluster, a debug build is slower; speed claims come from the benchmark)",
        elapsed.as_secs_f64(),
        total_in as f64 / elapsed.as_secs_f64().max(1e-9),
    );

    let lifecycle = read_procurement(&kafka, &codec, &topics, Duration::from_secs(30)).await?;
    let mut lifecycle_disagreements = audit_lifecycles(&scenario.lifecycles, &lifecycle);
    lifecycle_disagreements.extend(audit_requisitions(&scenario.requisitions, &lifecycle));
    println!();
    println!("requisitions (latest transition per requisition, from audit-events)");
    let mut requisition_states = std::collections::BTreeMap::new();
    for (state, _) in lifecycle.requisitions.values() {
        *requisition_states.entry(state.as_str()).or_insert(0usize) += 1;
    }
    for (state, count) in &requisition_states {
        println!("  {state:<19} {count:>6}");
    }
    println!(
        "  {} of {} POs were converted from an approved requisition",
        requisition_states
            .get("CONVERTED_TO_PO")
            .copied()
            .unwrap_or(0),
        scenario.lifecycles.len()
    );
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
    println!(
        "  released holds      {:>6}   (blocked by hand in the ERP, released, then matched)",
        audit.released_holds
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
    let payments = read_payments(&kafka, &codec, &topics, Duration::from_secs(30)).await?;
    let payment_disagreements = audit_payments(&observed, &payments);
    println!("payments (payment-schedule and payment-instructions)");
    for (kind, n) in &payments.events {
        println!("  {kind:<19} {n:>6}");
    }
    println!(
        "  {} payment instructions (runs per org, currency, debtor account and date)",
        payments.runs
    );
    for (currency, total) in &payments.instructed_totals {
        println!("  instructed {currency}       {total:>16}");
    }
    // The whole flow, end to end: requisition approved, converted, PO received and invoiced,
    // invoice matched and put in a payment instruction.
    let converted: std::collections::BTreeSet<&str> =
        scenario.converted.keys().map(|po| po.as_str()).collect();
    let paid_from_requisitions = observed
        .matched
        .values()
        .flatten()
        .filter(|m| converted.contains(m.po_id.as_str()))
        .filter(|m| payments.instructed.contains_key(&m.invoice_id))
        .count();
    println!(
        "  {paid_from_requisitions} invoices of POs converted from approved requisitions went the \
         whole way: requisition -> approval -> PO -> receipt -> invoice -> match -> payment \
         instruction"
    );
    println!();
    let refusals = audit_count("Refused");
    if !payment_disagreements.is_empty() {
        for d in payment_disagreements.iter().take(20) {
            println!("  DISAGREES: {d}");
        }
        bail!(
            "{} disagreements between matched invoices and payment instructions",
            payment_disagreements.len()
        );
    }
    if refusals != scenario.refusals {
        for r in lifecycle.refusals.iter().take(10) {
            println!("  REFUSED: {r}");
        }
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
            "{} of {} requisitions and purchase orders did not end as planted",
            lifecycle_disagreements.len(),
            scenario.requisitions.len() + scenario.lifecycles.len()
        );
    }
    if audit.passed() {
        println!(
            "check: all {} requisitions, {} POs and {} invoices ended as the generator planted \
             them; every matched invoice was instructed once, for its exact total in its currency",
            scenario.requisitions.len(),
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

/// Completes once `done` holds for `stats` (or after two minutes), noting when the first
/// batch was processed.
async fn processed(
    stats: Arc<Stats>,
    done: impl Fn(&StatsSnapshot) -> bool,
    first_batch: Arc<OnceLock<Instant>>,
) {
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        let snapshot = stats.snapshot();
        if snapshot.records_in > 0 {
            first_batch.get_or_init(Instant::now);
        }
        if done(&snapshot) || Instant::now() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
