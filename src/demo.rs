//! `p2p demo`: the pipeline's topologies (procurement: lifecycle and approval routing; match;
//! payment) in one process against librdkafka's in-process mock cluster, fed by the load generator,
//! then read back and checked against the generator's plan.
//!
//! The mock cluster is fine for a demo and nothing more: its Fetch ignores read_committed and
//! it does not store transactional offset commits. Correctness is tested on a real broker.

use anyhow::{bail, Context};
use clap::Args;
use p2p_avro::Codec;
use p2p_loadtest::check::check;
use p2p_loadtest::generator::{InputTopic, Payload};
use p2p_loadtest::pipeline::{run_until_processed, Expected, PipelineSettings};
use p2p_loadtest::produce::{erp_producer, produce_scenario};
use p2p_loadtest::{GeneratorConfig, Scenario};
use p2p_topologies::{Guarantee, KafkaProperties, Topics};
use rdkafka::mocking::MockCluster;
use std::sync::Arc;
use std::time::Duration;

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
    // The mock cluster keeps no transactional offset commits (see above): at least once.
    // One worker per topology: at least once, a batch whose commit a rebalance refused (the
    // second worker joining while the first already processes) is decided again, as the
    // guarantee allows, and the demo's exact check would count its refusals twice.
    let settings = PipelineSettings {
        guarantee: Guarantee::AtLeastOnce,
        workers: 1,
        ..PipelineSettings::new("p2p-demo", &kafka, state_dir.path().to_path_buf())
    };
    let expected = Expected::of(&scenario);
    debug_assert_eq!(produced, scenario.records.len());
    let finished = run_until_processed(
        &kafka,
        codec.clone(),
        &topics,
        &settings,
        expected,
        Duration::from_secs(120),
        |_| {},
    )
    .await?;
    if !finished.completed {
        bail!(
            "within two minutes {}",
            expected.shortfall(&finished.progress)
        );
    }
    let total_in = finished.progress.records_in();
    let elapsed = finished.elapsed;
    println!(
        "processed {total_in} records in {:.2} s after the first batch ({:.0} records/s on the \
         mock cluster, a debug build is slower; speed claims come from the benchmark)",
        elapsed.as_secs_f64(),
        total_in as f64 / elapsed.as_secs_f64().max(1e-9),
    );

    let checked = check(&kafka, &codec, &topics, &scenario, Duration::from_secs(30)).await?;
    let lifecycle = &checked.lifecycle;
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
    println!(
        "people's decisions on held invoices: {} taken (variances accepted, manual holds \
         released, look-alike credit memos found not duplicates, over-billed invoices \
         rejected), on audit-events and each invoice's status",
        audit_count("InvoiceDecided"),
    );

    let (observed, audit) = (&checked.observed, &checked.audit);
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
        finished
            .progress
            .matching
            .labelled(p2p_topologies::match_topology::INVOICE_OUTCOMES, "pending")
    );
    println!(
        "  released holds      {:>6}   (blocked by hand in the ERP, released, then matched)",
        audit.released_holds
    );
    // Where each invoice stands, as a clerk or a supplier portal looks it up.
    let newest: Vec<&p2p_avro::convert::status::InvoiceStatusRecord> = observed
        .statuses
        .values()
        .filter_map(|s| s.iter().max_by_key(|r| r.revision))
        .collect();
    let mut by_status = std::collections::BTreeMap::new();
    for status in &newest {
        *by_status.entry(status.status.as_str()).or_insert(0usize) += 1;
    }
    println!(
        "invoice-status (newest per invoice, {} statuses published in all)",
        observed.statuses.values().map(Vec::len).sum::<usize>()
    );
    for (status, count) in &by_status {
        println!("  {status:<19} {count:>6}");
    }
    if let Some(waiting) = newest.iter().find(|s| !s.waiting_for.is_empty()) {
        println!(
            "  e.g. {} of org {}: {}",
            waiting.invoice_id, waiting.org_id, waiting.waiting_for[0].detail
        );
    }
    // Orgs publishing their ERP's own ids, next to orgs publishing UUIDs.
    if let Some(erp) = observed
        .matched
        .values()
        .flatten()
        .find(|m| !m.org_id.contains('_'))
    {
        println!(
            "  ERP ids: org {} matched invoice {} against PO {}",
            erp.org_id, erp.invoice_id, erp.po_id
        );
    }
    println!("exception reasons (invoices carrying each)");
    for (reason, count) in &audit.reasons {
        println!("  {reason:<19} {count:>6}");
    }
    println!(
        "matched amounts (invoices; {} credit memos credit the second column)",
        audit.credit_memos
    );
    for (currency, total) in &audit.matched_totals {
        let credited = audit
            .credited_totals
            .get(currency)
            .copied()
            .unwrap_or_default();
        println!("  {currency}                 {total:>16} {credited:>16}");
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
    let payments = &checked.payments;
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
    println!(
        "  {} invoices had credit memos set off against their payment",
        payments.set_off.len()
    );
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
    if let Err(failed) = checked.verdict() {
        for d in &failed.details {
            println!("  DISAGREES: {d}");
        }
        return Err(failed.into());
    }
    println!(
        "check: all {} requisitions, {} POs and {} invoices ended as the generator planted \
         them; every matched invoice was instructed once, for its total in its currency rounded \
         to the minor unit, less the credit memos set off against it; no credit memo was paid; \
         every invoice's newest status is its newest outcome",
        scenario.requisitions.len(),
        scenario.lifecycles.len(),
        audit.invoices
    );

    println!();
    println!(
        "the bank (p2p bank-connector and p2p bank-sim, on the same embedded Kafka): each run as \
         a pain.001.001.09 file, the bank's answers back as pain.002"
    );
    let settled =
        crate::demo_bank::through_the_bank(&cluster, &kafka, codec, &topics, &settings).await?;
    println!(
        "  {} files sent, one per run; {} payments executed by the bank, each once",
        settled.files, settled.executed
    );
    for (status, n) in &settled.statuses {
        println!("  payment-status {status:<9} {n:>6}");
    }
    println!(
        "  {} payments remitted, {} invoices settled; POs {}",
        settled.remitted_parts,
        settled.settled_invoices,
        settled
            .pos
            .iter()
            .map(|(state, n)| format!("{state} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(file) = settled.example_file {
        let head: String = file.lines().take(12).collect::<Vec<_>>().join("\n");
        println!("  the first file's start:\n{head}\n  ...");
    }
    println!("check: every instructed payment executed by the bank exactly once and settled");
    Ok(())
}
