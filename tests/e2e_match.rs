//! End-to-end tests of the match topology on a real Apache Kafka broker and a real schema
//! registry (deploy/local/kafka.sh and registry.sh start them if none is running). Records go
//! in as an ERP would send them (Confluent wire format, TopicNameStrategy, murmur2) and
//! outcomes are read back with read_committed.

mod common;

use common::*;
use p2p_avro::convert::procurement::{AuditKind, AuditRecord};
use p2p_avro::convert::ReasonRecord;
use p2p_loadtest::audit::{audit, Observed};
use p2p_loadtest::generator::InputTopic;
use p2p_loadtest::produce::{erp_producer, produce_records, produce_scenario};
use p2p_loadtest::{GeneratorConfig, Scenario, ScenarioRecord};
use p2p_processors::org_config::OrgConfig;
use p2p_processors::payment::PaymentTerms;
use p2p_processors::*;
use p2p_topologies::dlq;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::time::Duration;

fn currency(code: &str) -> Currency {
    Currency::parse(code).unwrap()
}

fn line(n: i64) -> LineNumber {
    LineNumber::new(n).unwrap()
}

fn qty(v: Decimal) -> Quantity {
    Quantity::new(v).unwrap()
}

struct Org {
    id: OrgId,
    supplier: SupplierId,
    currency: Currency,
}

impl Org {
    fn new(code: &str) -> Org {
        Org {
            id: OrgId::random(),
            supplier: SupplierId::random(),
            currency: currency(code),
        }
    }

    fn price(&self, amount: Decimal) -> UnitPrice {
        UnitPrice::new(Money::new(amount, self.currency)).unwrap()
    }

    /// A PO of `(quantity, unit price, receipt required)` lines.
    fn po(&self, lines: &[(Decimal, Decimal, bool)]) -> PurchaseOrderIssued {
        PurchaseOrderIssued {
            org: self.id.clone(),
            po: PurchaseOrderId::random(),
            supplier: self.supplier.clone(),
            currency: self.currency,
            lines: lines
                .iter()
                .enumerate()
                .map(|(i, &(q, p, receipt_required))| PurchaseOrderLine {
                    line: line(i as i64 + 1),
                    description: format!("line {}", i + 1),
                    quantity: qty(q),
                    unit_price: self.price(p),
                    receipt_required,
                    inspection_required: false,
                })
                .collect(),
            requisition: None,
        }
    }

    fn receipt(&self, po: &PurchaseOrderIssued, lines: &[(i64, Decimal)]) -> GoodsReceived {
        GoodsReceived {
            org: self.id.clone(),
            grn: GoodsReceiptId::random(),
            po: po.po.clone(),
            lines: lines
                .iter()
                .map(|&(l, q)| ReceiptLine {
                    line: line(l),
                    received: qty(q),
                    returned: Quantity::ZERO,
                    expected: None,
                    accepted: Quantity::ZERO,
                })
                .collect(),
            resolves: None,
        }
    }

    /// An invoice of `(line, quantity, unit price)` with the stated `total`.
    fn invoice(
        &self,
        po: &PurchaseOrderIssued,
        lines: &[(i64, Decimal, Decimal)],
        total: Decimal,
    ) -> InvoiceReceived {
        InvoiceReceived {
            payment_block: None,
            posted_by: None,
            org: self.id.clone(),
            kind: DocumentKind::Invoice,
            invoice: InvoiceId::random(),
            supplier: self.supplier.clone(),
            number: InvoiceNumber::parse(&format!("SI-{}", &InvoiceId::random().as_str()[4..12]))
                .unwrap(),
            po: po.po.clone(),
            currency: self.currency,
            lines: lines
                .iter()
                .map(|&(l, q, p)| InvoiceLine {
                    line: line(l),
                    quantity: qty(q),
                    unit_price: self.price(p),
                })
                .collect(),
            total: Money::new(total, self.currency),
            invoice_date: 20_400,
        }
    }
}

const T: i64 = 1_767_225_600_000;

/// `org`'s settings as its administrator first publishes them: every default.
fn org_config(org: &Org) -> OrgConfig {
    OrgConfig::defaults(org.id.clone(), org.currency, EventTime(T))
}

fn issued(po: &PurchaseOrderIssued, t: i64) -> ScenarioRecord {
    ScenarioRecord::purchase_order(&PurchaseOrderEvent::Issued(po.clone()), EventTime(T + t))
}

fn cancelled(po: &PurchaseOrderIssued, t: i64) -> ScenarioRecord {
    ScenarioRecord::purchase_order(
        &PurchaseOrderEvent::Cancelled(PurchaseOrderCancelled {
            org: po.org.clone(),
            po: po.po.clone(),
        }),
        EventTime(T + t),
    )
}

fn received(grn: &GoodsReceived, t: i64) -> ScenarioRecord {
    ScenarioRecord::goods_receipt(grn, EventTime(T + t))
}

fn invoiced(invoice: &InvoiceReceived, t: i64) -> ScenarioRecord {
    ScenarioRecord::invoice(invoice, EventTime(T + t))
}

fn reason(
    kind: &str,
    line: Option<i32>,
    expected: Decimal,
    actual: Decimal,
) -> (
    String,
    Option<i32>,
    Option<Decimal>,
    Option<Decimal>,
    Option<Decimal>,
) {
    (
        kind.to_owned(),
        line,
        Some(expected),
        Some(actual),
        Some(actual - expected),
    )
}

type ReasonTuple = (
    String,
    Option<i32>,
    Option<Decimal>,
    Option<Decimal>,
    Option<Decimal>,
);

fn reasons_of(observed: &Observed, invoice: &InvoiceReceived) -> Vec<ReasonTuple> {
    let records = &observed.exceptions[invoice.invoice.as_str()];
    assert_eq!(
        records.len(),
        1,
        "exactly one exception for {}",
        invoice.invoice
    );
    records[0]
        .reasons
        .iter()
        .map(|r: &ReasonRecord| {
            assert!(!r.detail.is_empty());
            (
                r.reason.clone(),
                r.line_number,
                r.expected,
                r.actual,
                r.delta,
            )
        })
        .collect()
}

/// Produces a scripted stream as an ERP would, in order: across topics too (no record
/// visible before an earlier one of its org), which asks the broker for the topics' partition
/// count. Records of one topic are sent as they are, so that a producer that has not learnt a
/// growth (the straggler's) keeps partitioning by the old count.
async fn send_scripted(
    producer: &rdkafka::producer::FutureProducer,
    codec: &p2p_avro::Codec,
    topics: &p2p_topologies::Topics,
    records: Vec<ScenarioRecord>,
) {
    let one_topic = records.windows(2).all(|w| w[0].topic == w[1].topic);
    let produced = if one_topic {
        let scenario = Scenario {
            records,
            ..Scenario::default()
        };
        produce_scenario(producer, codec, topics, &scenario).await
    } else {
        produce_records(producer, codec, topics, &records).await
    };
    produced.expect("produced");
}

fn has_outcome(observed: &Observed, invoice: &InvoiceReceived) -> bool {
    observed.matched.contains_key(invoice.invoice.as_str())
        || observed.exceptions.contains_key(invoice.invoice.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_orgs_end_in_exactly_the_outcomes_reasons_and_deltas_of_the_rules() {
    let topics = TestTopics::create("scripted", 3).await;
    let codec = registry_codec();
    let producer = erp_producer(&kafka()).unwrap();
    let send = |records: Vec<ScenarioRecord>| send_scripted(&producer, &codec, &topics, records);

    let a = Org::new("EUR");
    let b = Org::new("USD");
    let c = Org::new("GBP");

    // Org A: a clean three-way + two-way match; a price over tolerance on a service; a PO
    // cancelled while its invoice waits for goods.
    let a1 = a.po(&[
        (dec!(100), dec!(10.00), true),
        (dec!(1), dec!(500.00), false),
    ]);
    let a1_grn = a.receipt(&a1, &[(1, dec!(100))]);
    let a1_inv = a.invoice(
        &a1,
        &[(1, dec!(100), dec!(10.00)), (2, dec!(1), dec!(500.00))],
        dec!(1500.00),
    );
    let a2 = a.po(&[(dec!(1), dec!(1000.00), false)]);
    let a2_inv = a.invoice(&a2, &[(1, dec!(1), dec!(1025.00))], dec!(1025.00));
    let a3 = a.po(&[(dec!(5), dec!(10.00), true)]);
    let a3_inv = a.invoice(&a3, &[(1, dec!(5), dec!(10.00))], dec!(50.00));
    // An invoice of org C's PO sent under org A's key: must never touch org C's state.
    let forged = {
        let po = c.po(&[(dec!(1), dec!(1.00), false)]);
        let mut record = invoiced(&c.invoice(&po, &[(1, dec!(1), dec!(1.00))], dec!(1.00)), 90);
        record.key = a.id.to_string();
        record
    };

    // Org B: billed more than ordered; an invoice that arrives before its goods. A poison
    // record sits in front of them on the same partition (same key).
    let b1 = b.po(&[(dec!(10), dec!(99.99), true)]);
    let b1_inv = b.invoice(&b1, &[(1, dec!(12), dec!(99.99))], dec!(1199.88));
    let b2 = b.po(&[(dec!(40), dec!(5.25), true)]);
    let b2_inv = b.invoice(&b2, &[(1, dec!(40), dec!(5.25))], dec!(210.00));
    let b2_grn = b.receipt(&b2, &[(1, dec!(40))]);

    // Org C: partial receipts that accumulate; exactly 2% over (matches) and just over 2%.
    let c1 = c.po(&[(dec!(100), dec!(3.00), true)]);
    let c1_grn1 = c.receipt(&c1, &[(1, dec!(60))]);
    let c1_inv = c.invoice(&c1, &[(1, dec!(100), dec!(3.00))], dec!(300.00));
    let c1_grn2 = c.receipt(&c1, &[(1, dec!(40))]);
    let c2 = c.po(&[(dec!(10), dec!(100.00), false)]);
    let c2_inv = c.invoice(&c2, &[(1, dec!(10), dec!(102.00))], dec!(1020.00));
    // The supplier sends C2's invoice again; the ERP registers it under a new id.
    let c2_dup = InvoiceReceived {
        invoice: InvoiceId::random(),
        ..c2_inv.clone()
    };
    let c3 = c.po(&[(dec!(10), dec!(100.00), false)]);
    let c3_inv = c.invoice(&c3, &[(1, dec!(10), dec!(102.01))], dec!(1020.10));

    let pipeline = Pipeline::start(&topics, codec.clone());

    // Phase 1: everything but the goods that complete B2 and C1.
    send(vec![
        issued(&a1, 1),
        issued(&a2, 2),
        issued(&a3, 3),
        issued(&b1, 4),
        issued(&b2, 5),
        issued(&c1, 6),
        issued(&c2, 7),
        issued(&c3, 8),
        received(&a1_grn, 10),
        received(&c1_grn1, 11),
        ScenarioRecord::garbage(
            InputTopic::Invoices,
            b.id.as_str(),
            b"{\"not\": \"avro\"}",
            EventTime(T + 19),
        ),
        invoiced(&a1_inv, 20),
        invoiced(&a2_inv, 21),
        invoiced(&a3_inv, 22),
        invoiced(&b1_inv, 23),
        invoiced(&b2_inv, 24),
        invoiced(&c1_inv, 25),
        invoiced(&c2_inv, 26),
        invoiced(&c3_inv, 27),
        invoiced(&c2_dup, 28),
        forged,
    ])
    .await;
    let phase1 = wait_for(&topics, &codec, "phase 1 outcomes", |o| {
        [&a1_inv, &a2_inv, &b1_inv, &c2_inv, &c3_inv, &c2_dup]
            .iter()
            .all(|i| has_outcome(o, i))
            && o.dead_letters.len() == 2
    })
    .await;
    // Waiting for goods, not decided: the invoice before its receipt, the partly received one,
    // and the one whose goods never came (yet).
    for pending in [&b2_inv, &c1_inv, &a3_inv] {
        assert!(
            !has_outcome(&phase1, pending),
            "{} should be pending",
            pending.invoice
        );
    }

    // Phase 2: the goods arrive, and A3's PO is cancelled.
    send(vec![
        received(&b2_grn, 30),
        received(&c1_grn2, 31),
        cancelled(&a3, 32),
    ])
    .await;
    let observed = wait_for(&topics, &codec, "phase 2 outcomes", |o| {
        [&b2_inv, &c1_inv, &a3_inv]
            .iter()
            .all(|i| has_outcome(o, i))
    })
    .await;
    let stats = pipeline.stop().await;

    // Matched: exactly these, once each, with the invoice totals to the cent.
    let mut matched: Vec<&str> = observed.matched.keys().map(String::as_str).collect();
    matched.sort();
    let mut expected_matched = vec![
        a1_inv.invoice.as_str(),
        b2_inv.invoice.as_str(),
        c1_inv.invoice.as_str(),
        c2_inv.invoice.as_str(),
    ];
    expected_matched.sort();
    assert_eq!(matched, expected_matched);
    for (invoice, total, code) in [
        (&a1_inv, dec!(1500.00), "EUR"),
        (&b2_inv, dec!(210.00), "USD"),
        (&c1_inv, dec!(300.00), "GBP"),
        (&c2_inv, dec!(1020.00), "GBP"),
    ] {
        let records = &observed.matched[invoice.invoice.as_str()];
        assert_eq!(records.len(), 1, "matched once: {}", invoice.invoice);
        assert_eq!(records[0].total_amount, total);
        assert_eq!(records[0].currency, code);
        assert_eq!(records[0].org_id, invoice.org.as_str());
    }

    // Exceptions: exactly these, with every reason and its expected, actual and delta.
    assert_eq!(observed.exceptions.len(), 5);
    // Never paid twice: the copy is an exception naming the original, and since the original
    // used up the PO line, it is over quantity too.
    let dup = &observed.exceptions[c2_dup.invoice.as_str()][0];
    assert_eq!(dup.reasons[0].reason, "DUPLICATE");
    assert!(dup.reasons[0].detail.contains(c2_inv.invoice.as_str()));
    assert_eq!(
        reasons_of(&observed, &c2_dup)[1..],
        [reason("QUANTITY_VARIANCE", Some(1), dec!(0), dec!(10))]
    );
    assert_eq!(
        reasons_of(&observed, &a2_inv),
        vec![
            reason("PRICE_VARIANCE", Some(1), dec!(1000.00), dec!(1025.00)),
            reason("AMOUNT_VARIANCE", None, dec!(1000.00), dec!(1025.00)),
        ]
    );
    assert_eq!(
        reasons_of(&observed, &b1_inv),
        vec![reason("QUANTITY_VARIANCE", Some(1), dec!(10), dec!(12))]
    );
    assert_eq!(
        reasons_of(&observed, &c3_inv),
        vec![
            reason("PRICE_VARIANCE", Some(1), dec!(100.00), dec!(102.01)),
            reason("AMOUNT_VARIANCE", None, dec!(1000.00), dec!(1020.10)),
        ]
    );
    assert_eq!(
        reasons_of(&observed, &a3_inv),
        vec![("PO_CANCELLED".to_owned(), None, None, None, None)]
    );

    // Dead letters: the poison record and the forged one, each with its origin and reason,
    // and B's later invoices on that partition were still processed (asserted above).
    assert_eq!(observed.dead_letters.len(), 2);
    let poison = observed
        .dead_letters
        .iter()
        .find(|d| d.headers[dlq::HEADER_REASON] == "undecodable")
        .expect("the poison record is dead-lettered");
    assert_eq!(poison.topic, format!("{}.dlq", topics.invoice_events));
    assert_eq!(poison.payload.as_deref(), Some(&b"{\"not\": \"avro\"}"[..]));
    assert_eq!(poison.key.as_deref(), Some(b.id.as_str().as_bytes()));
    assert_eq!(poison.headers[dlq::HEADER_TOPIC], topics.invoice_events);
    assert_eq!(poison.headers[dlq::HEADER_PROCESSOR], "match");
    assert_eq!(poison.headers[dlq::HEADER_TIMESTAMP], (T + 19).to_string());
    assert!(poison.headers[dlq::HEADER_ERROR].contains("magic byte"));
    let partition: i32 = poison.headers[dlq::HEADER_PARTITION].parse().unwrap();
    let offset: i64 = poison.headers[dlq::HEADER_OFFSET].parse().unwrap();
    assert!(partition >= 0 && offset >= 0);
    let forged = observed
        .dead_letters
        .iter()
        .find(|d| d.headers[dlq::HEADER_REASON] == "key-mismatch")
        .expect("the forged record is dead-lettered");
    assert!(forged.headers[dlq::HEADER_ERROR].contains(c.id.as_str()));

    assert_eq!(stats.dead_lettered, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_stream_ends_as_planted_through_the_registry() {
    let topics = TestTopics::create("generated", 4).await;
    let codec = registry_codec();
    let scenario = Scenario::generate(&GeneratorConfig {
        seed: 7,
        orgs: 4,
        pos_per_org: 25,
        undecodable_records: 2,
        short_receipt_pct: 10,
        ..GeneratorConfig::default()
    });
    // The stream must hold every kind of outcome for the audit below to mean something.
    let planted = |p: &p2p_loadtest::Planted| scenario.planted.iter().any(|(_, x)| x == p);
    assert!(planted(&p2p_loadtest::Planted::Pending) && planted(&p2p_loadtest::Planted::Matched));
    let producer = erp_producer(&kafka()).unwrap();
    produce_scenario(&producer, &codec, &topics, &scenario)
        .await
        .expect("produced");

    let pipeline = Pipeline::start(&topics, codec.clone());
    let decided = scenario
        .planted
        .iter()
        .filter(|(_, p)| *p != p2p_loadtest::Planted::Pending)
        .count();
    let observed = wait_for(&topics, &codec, "every decided invoice", |o| {
        o.matched.len() + o.exceptions.len() >= decided && o.dead_letters.len() == 2
    })
    .await;
    pipeline.stop().await;

    let report = audit(&scenario.planted, &observed);
    assert!(report.passed(), "{:#?}", report.disagreements);
    assert!(report.matched > 0 && report.exceptions > 0 && report.pending > 0);

    // TopicNameStrategy: the value schemas are registered under `<topic>-value`, where a
    // Java consumer using Confluent's deserializer looks them up.
    let match_outputs = [&topics.invoice_matched, &topics.invoice_exceptions];
    let decided_by_people = scenario.count(InputTopic::InvoiceDecisions) > 0;
    for topic in topics
        .match_inputs()
        .into_iter()
        .filter(|t| decided_by_people || *t != topics.invoice_decisions)
        .chain(match_outputs.map(String::as_str))
    {
        let subject = format!("{topic}-value");
        assert!(
            registry_has_subject(&services().registry_url, &subject).await,
            "{subject} is registered"
        );
    }
}

/// Whether `subject` has a version in the registry (asked by name: a registry that outlives
/// many test runs pages its full list of subjects).
async fn registry_has_subject(registry: &str, subject: &str) -> bool {
    let output = tokio::process::Command::new("curl")
        .args(["-sf", &format!("{registry}/subjects/{subject}/versions")])
        .output()
        .await
        .expect("curl runs");
    output.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_still_pending_past_the_orgs_wait_limit_become_exceptions_on_stream_time() {
    let topics = TestTopics::create("wait-limit", 2).await;
    let codec = registry_codec();
    let producer = erp_producer(&kafka()).unwrap();
    let send = |records: Vec<ScenarioRecord>| send_scripted(&producer, &codec, &topics, records);
    const DAY: i64 = 86_400_000;
    let a = Org::new("EUR");
    let config = OrgConfig {
        pending_wait_days: 2,
        ..org_config(&a)
    };
    // Waits for goods that never come; its PO is issued, 3 of 5 received.
    let waiting_po = a.po(&[(dec!(5), dec!(10.00), true)]);
    let waiting = a.invoice(&waiting_po, &[(1, dec!(5), dec!(10.00))], dec!(50.00));
    // Names a PO nobody ever issues.
    // (Amounts differ, so no invoice is another's duplicate.)
    let ghost_po = a.po(&[(dec!(1), dec!(7.00), true)]);
    let orphan = a.invoice(&ghost_po, &[(1, dec!(1), dec!(7.00))], dec!(7.00));
    // Waits a day, then its goods come: matched, not expired.
    let late_po = a.po(&[(dec!(1), dec!(8.00), true)]);
    let late = a.invoice(&late_po, &[(1, dec!(1), dec!(8.00))], dec!(8.00));
    // Arrives on day 2: within its own limit when stream time reaches day 3.
    let fresh_po = a.po(&[(dec!(1), dec!(9.00), true)]);
    let fresh = a.invoice(&fresh_po, &[(1, dec!(1), dec!(9.00))], dec!(9.00));
    let filler = a.po(&[(dec!(1), dec!(1.00), true)]);
    let ghost_goods = a.receipt(&ghost_po, &[(1, dec!(1))]);

    let pipeline = Pipeline::start(&topics, codec.clone());
    send(vec![
        ScenarioRecord::org_config(&config),
        issued(&waiting_po, 1),
        issued(&late_po, 2),
        received(&a.receipt(&waiting_po, &[(1, dec!(3))]), 3),
        invoiced(&waiting, 10),
        invoiced(&orphan, 11),
        // Goods for that PO too: rejected at the limit, as no such PO came.
        received(&ghost_goods, 12),
        invoiced(&late, 12),
        received(&a.receipt(&late_po, &[(1, dec!(1))]), DAY),
        issued(&fresh_po, 2 * DAY),
        invoiced(&fresh, 2 * DAY + 1),
        // Nothing but the passing of (event) time: a PO issued on day 3.
        issued(&filler, 3 * DAY),
    ])
    .await;
    let observed = wait_for(&topics, &codec, "the expired invoices", |o| {
        has_outcome(o, &waiting) && has_outcome(o, &orphan) && has_outcome(o, &late)
    })
    .await;
    let stats = pipeline.stop().await;

    assert_eq!(
        reasons_of(&observed, &waiting),
        vec![reason("NOT_RECEIVED", Some(1), dec!(3), dec!(5))]
    );
    let orphan_reasons = &observed.exceptions[orphan.invoice.as_str()][0].reasons;
    assert_eq!(orphan_reasons.len(), 1);
    assert_eq!(orphan_reasons[0].reason, "UNKNOWN_PO");
    assert!(observed.matched.contains_key(late.invoice.as_str()));
    assert!(
        !has_outcome(&observed, &fresh),
        "still within its wait limit"
    );
    assert_eq!(stats.get("wait limits expired"), 3);
    let refusals: Vec<AuditRecord> = audit_trail(&topics, &codec)
        .await
        .into_iter()
        .filter(|e| e.kind == AuditKind::Refused)
        .collect();
    assert_eq!(refusals.len(), 1);
    assert_eq!(
        refusals[0].entity,
        DocumentRef::PurchaseOrder(ghost_po.po.clone())
    );
    assert!(
        refusals[0].detail.contains(ghost_goods.grn.as_str()),
        "{}",
        refusals[0].detail
    );
}

/// The audit trail the match wrote, in order.
async fn audit_trail(topics: &p2p_topologies::Topics, codec: &p2p_avro::Codec) -> Vec<AuditRecord> {
    use p2p_loadtest::audit::read_topic;
    use rdkafka::Message;
    let mut trail = Vec::new();
    for message in read_topic(&kafka(), &topics.audit_events, Duration::from_secs(30)).unwrap() {
        let value = codec.decode(message.payload()).await.unwrap();
        trail.push(AuditRecord::from_value(&value).unwrap());
    }
    trail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_delivery_blocks_the_pos_invoices_until_a_later_receipt_resolves_it() {
    let topics = TestTopics::create("discrepancy", 2).await;
    let codec = registry_codec();
    let producer = erp_producer(&kafka()).unwrap();
    let a = Org::new("EUR");
    let po = a.po(&[(dec!(10), dec!(10.00), true)]);
    // 15 delivered against 10 ordered: past the 2% tolerance.
    let over = a.receipt(&po, &[(1, dec!(15))]);
    let bill = a.invoice(&po, &[(1, dec!(10), dec!(10.00))], dec!(100.00));
    // The surplus goes back, on a receipt that says which discrepancy it resolves.
    let back = GoodsReceived {
        org: a.id.clone(),
        grn: GoodsReceiptId::random(),
        po: po.po.clone(),
        lines: vec![ReceiptLine {
            line: line(1),
            received: Quantity::ZERO,
            returned: qty(dec!(5)),
            expected: None,
            accepted: Quantity::ZERO,
        }],
        resolves: Some(over.grn.clone()),
    };
    let pipeline = Pipeline::start(&topics, codec.clone());
    send_scripted(
        &producer,
        &codec,
        &topics,
        vec![
            issued(&po, 1),
            received(&over, 2),
            invoiced(&bill, 3),
            received(&back, 4),
        ],
    )
    .await;
    let observed = wait_for(&topics, &codec, "the invoice", |o| has_outcome(o, &bill)).await;
    let stats = pipeline.stop().await;

    assert!(observed.matched.contains_key(bill.invoice.as_str()));
    assert!(!observed.exceptions.contains_key(bill.invoice.as_str()));
    // Enough was received when it came, yet it waited for the discrepancy to be resolved.
    assert_eq!(
        stats.labelled(p2p_topologies::match_topology::INVOICE_OUTCOMES, "pending"),
        1,
        "the invoice waited"
    );
    assert_eq!(stats.get("receipt discrepancies"), 1);
    assert_eq!(stats.get("receipt discrepancies resolved"), 1);

    let trail = audit_trail(&topics, &codec).await;
    let kinds: Vec<AuditKind> = trail.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            AuditKind::ReceiptDiscrepancy,
            AuditKind::DiscrepancyResolved
        ]
    );
    assert!(trail
        .iter()
        .all(|e| e.entity == DocumentRef::PurchaseOrder(po.po.clone())));
    assert!(
        trail[0].detail.contains("line 1: received 15"),
        "names the line: {}",
        trail[0].detail
    );
    assert!(
        trail[0].detail.contains("expected 10"),
        "{}",
        trail[0].detail
    );
}

fn tuples(reasons: &[ReasonRecord]) -> Vec<ReasonTuple> {
    reasons
        .iter()
        .map(|r| {
            (
                r.reason.clone(),
                r.line_number,
                r.expected,
                r.actual,
                r.delta,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerance_keys_of_an_org_or_its_supplier_decide_warnings_and_holds_that_recheck() {
    use p2p_processors::tolerance_keys::{Combine, Limit, ToleranceKeys};
    let topics = TestTopics::create("tolerance-keys", 2).await;
    let codec = registry_codec();
    let producer = erp_producer(&kafka()).unwrap();
    let send = |records: Vec<ScenarioRecord>| send_scripted(&producer, &codec, &topics, records);
    // Org A: a unit price may be 5 cents off, whatever the percent; org B runs on defaults.
    let a = Org::new("EUR");
    let b = Org::new("EUR");
    let mut keys = ToleranceKeys::defaults();
    keys.price.block = Limit {
        absolute: Some(dec!(0.05)),
        percent: None,
        combine: Combine::And,
    };
    let config = OrgConfig {
        tolerances: Some(Box::new(keys)),
        ..org_config(&a)
    };
    // Org C runs on defaults, but its supplier's master record narrows price to 5 cents too.
    let c = Org::new("EUR");
    let c_payee = p2p_processors::payment::Payee {
        supplier: c.supplier.clone(),
        name: "Narrow Margins Ltd".into(),
        terms: PaymentTerms::DEFAULT,
        blocked: false,
        iban: None,
        bic: None,
        bank_account_changed_on: None,
    };
    let pipeline = Pipeline::start(&topics, codec.clone());
    send(vec![
        ScenarioRecord::org_config(&config),
        ScenarioRecord::supplier_master(&c.id, &c_payee, Some(&keys), EventTime(T)),
    ])
    .await;
    hold_probe_until_in_force(&producer, &codec, &topics, &a).await;
    hold_probe_until_in_force(&producer, &codec, &topics, &c).await;

    // Org A, within 5 cents: matched, with the deviations as warnings.
    let po_warned = a.po(&[(dec!(10), dec!(10.00), true)]);
    let warned = a.invoice(&po_warned, &[(1, dec!(10), dec!(10.04))], dec!(100.40));
    // Org A, overpriced and before its goods: held for both; the goods drop one hold.
    let po_held = a.po(&[(dec!(20), dec!(10.00), true)]);
    let held = a.invoice(&po_held, &[(1, dec!(20), dec!(10.10))], dec!(202.00));
    // Org C, the same: held by its supplier's keys, also when its goods re-check it.
    let po_c = c.po(&[(dec!(20), dec!(10.00), true)]);
    let c_held = c.invoice(&po_c, &[(1, dec!(20), dec!(10.10))], dec!(202.00));
    // Org B, the same 10 cents: within its (default) 2%, matched with a warning.
    let po_b = b.po(&[(dec!(10), dec!(10.00), true)]);
    let b_invoice = b.invoice(&po_b, &[(1, dec!(10), dec!(10.10))], dec!(101.00));
    send(vec![
        issued(&po_warned, 100),
        received(&a.receipt(&po_warned, &[(1, dec!(10))]), 101),
        invoiced(&warned, 102),
        issued(&po_held, 103),
        invoiced(&held, 104),
        issued(&po_b, 105),
        received(&b.receipt(&po_b, &[(1, dec!(10))]), 106),
        invoiced(&b_invoice, 107),
        issued(&po_c, 108),
        invoiced(&c_held, 109),
    ])
    .await;
    let observed = wait_for(&topics, &codec, "the first outcomes", |o| {
        [&warned, &held, &b_invoice, &c_held]
            .iter()
            .all(|i| has_outcome(o, i))
    })
    .await;
    let matched = &observed.matched[warned.invoice.as_str()][0];
    assert_eq!(
        tuples(&matched.warnings),
        vec![
            reason("PRICE_VARIANCE", Some(1), dec!(10), dec!(10.04)),
            reason("AMOUNT_VARIANCE", None, dec!(100), dec!(100.40)),
        ]
    );
    assert_eq!(
        reasons_of(&observed, &held),
        vec![
            reason("PRICE_VARIANCE", Some(1), dec!(10), dec!(10.10)),
            reason("NOT_RECEIVED", Some(1), dec!(0), dec!(20)),
        ]
    );
    let b_matched = &observed.matched[b_invoice.invoice.as_str()][0];
    assert_eq!(b_matched.warnings.len(), 2, "{:?}", b_matched.warnings);

    send(vec![
        received(&a.receipt(&po_held, &[(1, dec!(20))]), 200),
        received(&c.receipt(&po_c, &[(1, dec!(20))]), 201),
    ])
    .await;
    let observed = wait_for(&topics, &codec, "the held invoices re-checked", |o| {
        [&held, &c_held].iter().all(|i| {
            o.exceptions
                .get(i.invoice.as_str())
                .is_some_and(|e| e.len() == 2)
        })
    })
    .await;
    pipeline.stop().await;
    for invoice in [&held, &c_held] {
        assert_eq!(
            tuples(&observed.exceptions[invoice.invoice.as_str()][1].reasons),
            vec![reason("PRICE_VARIANCE", Some(1), dec!(10), dec!(10.10))],
            "the goods came: only the price holds it now"
        );
        assert!(!observed.matched.contains_key(invoice.invoice.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_memo_is_matched_as_one_and_gives_quantity_back_to_the_po() {
    let topics = TestTopics::create("credit-memo", 2).await;
    let codec = registry_codec();
    let producer = erp_producer(&kafka()).unwrap();
    let a = Org::new("EUR");
    let po = a.po(&[(dec!(10), dec!(10.00), true)]);
    let bill = a.invoice(&po, &[(1, dec!(10), dec!(10.00))], dec!(100.00));
    // 2 sent back and credited; the replacements billed again.
    let memo = InvoiceReceived {
        kind: DocumentKind::CreditMemo,
        ..a.invoice(&po, &[(1, dec!(2), dec!(10.00))], dec!(20.00))
    };
    let rebill = a.invoice(&po, &[(1, dec!(2), dec!(10.00))], dec!(20.00));
    let mut returned = a.receipt(&po, &[(1, dec!(0))]);
    returned.lines[0].returned = qty(dec!(2));
    let pipeline = Pipeline::start(&topics, codec.clone());
    send_scripted(
        &producer,
        &codec,
        &topics,
        vec![
            issued(&po, 1),
            received(&a.receipt(&po, &[(1, dec!(10))]), 2),
            invoiced(&bill, 3),
            received(&returned, 4),
            invoiced(&memo, 5),
            received(&a.receipt(&po, &[(1, dec!(2))]), 6),
            invoiced(&rebill, 7),
        ],
    )
    .await;
    let observed = wait_for(&topics, &codec, "the three documents matched", |o| {
        [&bill, &memo, &rebill]
            .iter()
            .all(|i| o.matched.contains_key(i.invoice.as_str()))
    })
    .await;
    pipeline.stop().await;
    let kind_of = |i: &InvoiceReceived| observed.matched[i.invoice.as_str()][0].document_type;
    assert_eq!(kind_of(&bill), DocumentKind::Invoice);
    assert_eq!(kind_of(&memo), DocumentKind::CreditMemo);
    assert_eq!(kind_of(&rebill), DocumentKind::Invoice);
    assert!(observed.exceptions.is_empty(), "{:#?}", observed.exceptions);
}

/// The org-config and supplier-master tables and the documents are separate topics, read in no
/// fixed order: probes `org` until a 10-cent deviation on a 10.00 unit price (1%, within the
/// default) is held, showing its (or its supplier's) 5-cent price limit is in force.
async fn hold_probe_until_in_force(
    producer: &rdkafka::producer::FutureProducer,
    codec: &p2p_avro::Codec,
    topics: &p2p_topologies::Topics,
    org: &Org,
) {
    for probe_number in 1..=10 {
        // A quantity of its own per probe, so that no probe duplicates another.
        let quantity = Decimal::from(probe_number);
        let po = org.po(&[(quantity, dec!(10.00), true)]);
        let probe = org.invoice(&po, &[(1, quantity, dec!(10.10))], quantity * dec!(10.10));
        send_scripted(
            producer,
            codec,
            topics,
            vec![
                issued(&po, probe_number),
                received(&org.receipt(&po, &[(1, quantity)]), probe_number),
                invoiced(&probe, probe_number),
            ],
        )
        .await;
        let observed = wait_for(topics, codec, "the probe's outcome", |o| {
            has_outcome(o, &probe)
        })
        .await;
        if observed.exceptions.contains_key(probe.invoice.as_str()) {
            assert_eq!(
                reasons_of(&observed, &probe),
                vec![reason("PRICE_VARIANCE", Some(1), dec!(10), dec!(10.10))],
                "held for the price alone: 1% is within the default amount tolerance"
            );
            return;
        }
    }
    panic!("the 5-cent price limit never took effect for {}", org.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_erp_closes_a_po_its_open_invoices_are_exceptions_naming_it() {
    let topics = TestTopics::create("po-closed", 2).await;
    let codec = registry_codec();
    let producer = erp_producer(&kafka()).unwrap();
    let send = |records: Vec<ScenarioRecord>| send_scripted(&producer, &codec, &topics, records);
    let a = Org::new("EUR");
    // 10 ordered, 6 delivered and billed; the supplier bills the 4 it never delivered.
    let po = a.po(&[(dec!(10), dec!(10.00), true)]);
    let billed = a.invoice(&po, &[(1, dec!(6), dec!(10.00))], dec!(60.00));
    let undelivered = a.invoice(&po, &[(1, dec!(4), dec!(10.00))], dec!(40.00));
    let pipeline = Pipeline::start(&topics, codec.clone());
    send(vec![
        issued(&po, 1),
        received(&a.receipt(&po, &[(1, dec!(6))]), 2),
        invoiced(&billed, 3),
        invoiced(&undelivered, 4),
    ])
    .await;
    wait_for(&topics, &codec, "the delivered part matched", |o| {
        o.matched.contains_key(billed.invoice.as_str())
    })
    .await;
    // The buyer closes the PO short: the rest will not come.
    let closed = PurchaseOrderEvent::Stepped(PurchaseOrderStepped {
        org: a.id.clone(),
        po: po.po.clone(),
        step: PurchaseOrderStep::Closed,
    });
    send(vec![ScenarioRecord::purchase_order(
        &closed,
        EventTime(T + 5),
    )])
    .await;
    let observed = wait_for(&topics, &codec, "the open invoice's exception", |o| {
        o.exceptions.contains_key(undelivered.invoice.as_str())
    })
    .await;
    pipeline.stop().await;
    let reasons: Vec<String> = reasons_of(&observed, &undelivered)
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(reasons, vec!["PO_CLOSED", "NOT_RECEIVED"]);
    assert_eq!(observed.matched[billed.invoice.as_str()].len(), 1);
}

/// `GET http://<addr><path>`: the status code and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let output = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            &format!("http://{addr}{path}"),
        ])
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl prints the status last");
    (code.trim().parse().expect("a status code"), body.to_owned())
}

/// The value of the sample `name{labels}` in a Prometheus text exposition (labels as written,
/// in the order the registry writes them, sorted by name).
fn sample(exposition: &str, name_and_labels: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_scrape_what_the_pipeline_did_and_see_it_ready_only_while_it_runs() {
    let topics = TestTopics::create("metrics", 2).await;
    let codec = registry_codec();
    let producer = erp_producer(&kafka()).unwrap();
    let metrics = p2p_topologies::Metrics::new(1).unwrap();
    let addr = metrics
        .serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 503, "nothing runs yet");

    let a = Org::new("EUR");
    let po = a.po(&[(dec!(2), dec!(10.00), false)]);
    let clean = a.invoice(&po, &[(1, dec!(2), dec!(10.00))], dec!(20.00));
    let over = a.invoice(&po, &[(1, dec!(1), dec!(12.00))], dec!(12.00));
    let pipeline = Pipeline::start_measured(&topics, codec.clone(), metrics.clone());
    send_scripted(
        &producer,
        &codec,
        &topics,
        vec![
            issued(&po, 1),
            invoiced(&clean, 2),
            invoiced(&over, 3),
            ScenarioRecord::garbage(InputTopic::Invoices, a.id.as_str(), b"{}", EventTime(T + 4)),
        ],
    )
    .await;
    wait_for(&topics, &codec, "both outcomes and the dead letter", |o| {
        has_outcome(o, &clean) && has_outcome(o, &over) && o.dead_letters.len() == 1
    })
    .await;
    // Counted once the batch is committed, which is after its outputs are readable.
    let (status, exposition) = poll(
        "the metrics to count the dead letter",
        || http_get(addr, "/metrics"),
        |(_, body)| {
            sample(
                body,
                "p2p_dead_letters_total{reason=\"undecodable\",topology=\"match\"}",
            ) == Some(1.0)
        },
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let invoices_in = format!(
        "p2p_records_in_total{{topic=\"{}\",topology=\"match\"}}",
        topics.invoice_events
    );
    assert_eq!(sample(&exposition, &invoices_in), Some(3.0), "{exposition}");
    assert_eq!(
        sample(
            &exposition,
            "p2p_invoice_outcomes_total{outcome=\"matched\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &exposition,
            "p2p_invoice_exception_reasons_total{reason=\"PRICE_VARIANCE\"}"
        ),
        Some(1.0)
    );
    for histogram in [
        "p2p_batch_process_seconds_count{topology=\"match\"}",
        "p2p_end_to_end_latency_seconds_count{topology=\"match\"}",
        "p2p_commit_records_count{topology=\"match\"}",
    ] {
        assert!(
            sample(&exposition, histogram).is_some_and(|n| n >= 1.0),
            "{histogram} in {exposition}"
        );
    }
    assert_eq!(
        sample(
            &exposition,
            "p2p_changelog_records_restored_total{topology=\"match\"}"
        ),
        Some(0.0),
        "a new application restores nothing, and says so"
    );
    assert_eq!(
        sample(
            &exposition,
            "p2p_restore_remaining_records{topology=\"match\"}"
        ),
        Some(0.0)
    );
    assert!(
        sample(&exposition, "p2p_state_bytes{topology=\"match\"}").is_some_and(|b| b > 0.0),
        "{exposition}"
    );
    assert!(
        sample(&exposition, "p2p_state_memory_bytes").is_some_and(|b| b > 0.0),
        "{exposition}"
    );
    assert!(
        exposition.contains("p2p_consumer_lag_records{topic="),
        "{exposition}"
    );
    pipeline.stop().await;
    assert_eq!(http_get(addr, "/readyz").await.0, 503, "stopped");
}

/// `po` issued, its ten units of line 1 received, then `invoice`.
fn received_and_invoiced(
    org: &Org,
    po: &PurchaseOrderIssued,
    invoice: &InvoiceReceived,
) -> Vec<ScenarioRecord> {
    vec![
        issued(po, 1),
        received(&org.receipt(po, &[(1, dec!(10))]), 2),
        invoiced(invoice, 3),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_lost_its_local_state_rebuilds_it_from_the_changelog() {
    let topics = TestTopics::create("restore", 2).await;
    let codec = registry_codec();
    let producer = erp_producer(&kafka()).unwrap();
    let send = |records: Vec<ScenarioRecord>| send_scripted(&producer, &codec, &topics, records);
    let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());
    let a = Org::new("EUR");
    let po = a.po(&[(dec!(10), dec!(10.00), true)]);
    let first = a.invoice(&po, &[(1, dec!(10), dec!(10.00))], dec!(100.00));
    let again = a.invoice(&po, &[(1, dec!(10), dec!(10.00))], dec!(100.00));
    let first_run = Pipeline::start_as(&app, &topics, codec.clone());
    send(received_and_invoiced(&a, &po, &first)).await;
    wait_for(&topics, &codec, "the first invoice matched", |o| {
        o.matched.contains_key(first.invoice.as_str())
    })
    .await;
    first_run.stop().await;

    // Same application, its local state directory gone (a new disk, a new pod).
    let second_run = Pipeline::start_as(&app, &topics, codec.clone());
    send(vec![invoiced(&again, 4)]).await;
    let observed = wait_for(&topics, &codec, "the second invoice decided", |o| {
        has_outcome(o, &again)
    })
    .await;
    let stats = second_run.stop().await;
    // It knows the PO, its receipt and what the first invoice consumed: nothing is left to
    // bill. (With no state it would wait for a PO it had never seen, and decide nothing.)
    let reasons: Vec<String> = reasons_of(&observed, &again)
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert!(
        reasons.contains(&"QUANTITY_VARIANCE".to_owned()),
        "{reasons:?}"
    );
    assert!(
        stats.get("changelog records restored") > 0,
        "restored from the changelog: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_is_replaced_and_the_work_it_lost_is_done_once() {
    use rdkafka::producer::{BaseProducer, Producer};
    let topics = TestTopics::create("fenced", 2).await;
    let codec = registry_codec();
    let producer = erp_producer(&kafka()).unwrap();
    let send = |records: Vec<ScenarioRecord>| send_scripted(&producer, &codec, &topics, records);
    let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());
    let a = Org::new("EUR");
    let po = a.po(&[(dec!(10), dec!(10.00), true)]);
    let first = a.invoice(&po, &[(1, dec!(4), dec!(10.00))], dec!(40.00));
    let second = a.invoice(&po, &[(1, dec!(6), dec!(10.00))], dec!(60.00));
    let pipeline = Pipeline::start_as(&app, &topics, codec.clone());
    send(received_and_invoiced(&a, &po, &first)).await;
    wait_for(&topics, &codec, "the first invoice matched", |o| {
        o.matched.contains_key(first.invoice.as_str())
    })
    .await;

    // Another producer takes the runtime's transactional id (a zombie's twin, an operator's
    // mistake): the runtime's producer is fenced on its next transaction.
    let usurper: BaseProducer = p2p_topologies::admin::client_config(&kafka())
        .set("transactional.id", format!("{app}-0"))
        .create()
        .unwrap();
    usurper
        .init_transactions(std::time::Duration::from_secs(30))
        .unwrap();
    send(vec![invoiced(&second, 4)]).await;
    let observed = wait_for(&topics, &codec, "the second invoice matched", |o| {
        o.matched.contains_key(second.invoice.as_str())
    })
    .await;
    pipeline.stop().await;
    // Still the one runtime, with a new producer: each invoice decided once, the second on
    // what the first left of the PO.
    for invoice in [&first, &second] {
        let outcomes = observed.matched[invoice.invoice.as_str()].len()
            + observed
                .exceptions
                .get(invoice.invoice.as_str())
                .map_or(0, Vec::len);
        assert_eq!(outcomes, 1, "{}: {observed:#?}", invoice.invoice);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_an_erp_partitions_unlike_the_java_client_are_dead_lettered_not_decided() {
    let topics = TestTopics::create("misrouted", 4).await;
    let codec = registry_codec();
    // librdkafka's default partitioner (CRC32 of the key), not murmur2 as the contract says.
    let misconfigured: rdkafka::producer::FutureProducer =
        p2p_topologies::admin::client_config(&kafka())
            .set("partitioner", "consistent_random")
            .create()
            .unwrap();
    let orgs: Vec<Org> = (0..8).map(|_| Org::new("EUR")).collect();
    let mut records = Vec::new();
    let mut invoices = Vec::new();
    for (i, org) in orgs.iter().enumerate() {
        let po = org.po(&[(dec!(1), dec!(100.00), false)]);
        let invoice = org.invoice(&po, &[(1, dec!(1), dec!(100.00))], dec!(100.00));
        records.push(issued(&po, i as i64));
        records.push(invoiced(&invoice, 20 + i as i64));
        invoices.push(invoice);
    }
    let pipeline = Pipeline::start(&topics, codec.clone());
    send_scripted(&misconfigured, &codec, &topics, records).await;

    // Each org's two records are either both on the partition the contract puts them on
    // (decided) or both elsewhere (dead-lettered): never decided where another instance may
    // hold the org's state.
    // Each refused invoice's PO too: its dead letter may commit with a later batch.
    let observed = wait_for(&topics, &codec, "every invoice decided or refused", |o| {
        let refused = |topic: &str| {
            o.dead_letters
                .iter()
                .filter(|d| d.headers[dlq::HEADER_TOPIC] == topic)
                .count()
        };
        let invoices_refused = refused(&topics.invoice_events);
        invoices.iter().filter(|i| has_outcome(o, i)).count() + invoices_refused == invoices.len()
            && refused(&topics.po_events) == invoices_refused
    })
    .await;
    let mut misrouted = 0;
    for (org, invoice) in orgs.iter().zip(&invoices) {
        let key = org.id.as_str().as_bytes();
        let belongs = p2p_state::murmur2::partition_for(key, 4) as i32;
        let letters: Vec<_> = observed
            .dead_letters
            .iter()
            .filter(|d| d.key.as_deref() == Some(key))
            .collect();
        if letters.is_empty() {
            assert!(
                has_outcome(&observed, invoice),
                "{} is decided",
                invoice.invoice
            );
            continue;
        }
        misrouted += 1;
        assert!(
            !has_outcome(&observed, invoice),
            "{} is not decided",
            invoice.invoice
        );
        assert_eq!(letters.len(), 2, "the PO and the invoice of {}", org.id);
        for letter in letters {
            assert_eq!(letter.headers[dlq::HEADER_REASON], "wrong-partition");
            let on: i32 = letter.headers[dlq::HEADER_PARTITION].parse().unwrap();
            assert_ne!(on, belongs);
            assert!(letter.headers[dlq::HEADER_ERROR].contains(&format!("partition {belongs}")));
        }
    }
    // CRC32 and murmur2 agree on a partition for about one org in four.
    assert!(misrouted > 0, "some org's records were misrouted");
    pipeline.stop().await;
}

/// Another tool (here the admin API) grows the inputs from 2 to 4 partitions under a running
/// instance (ADR 0025): it takes the growth up, moves the state of the orgs whose partition
/// changed, and decides their invoices on it: one produced by a producer that knows the new
/// count (to the new partition), one by a producer that does not yet (a straggler on the old
/// partition, forwarded). Nothing waits forever on a PO it no longer finds, nothing is
/// dead-lettered, and a restart finds the state where it now is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_by_another_tool_carry_each_orgs_state_to_its_new_partition() {
    use p2p_state::murmur2::partition_for;
    let topics = TestTopics::create("grown", 2).await;
    let codec = registry_codec();
    let state = tempfile::tempdir().unwrap();
    let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());
    let mut config = p2p_topologies::MatchConfig::new(&app, kafka(), state.path().to_path_buf());
    config.topics = topics.clone();
    // Partition changes reach a client with its next metadata refresh (5 minutes by default).
    config
        .runtime
        .kafka
        .insert("topic.metadata.refresh.interval.ms".into(), "1000".into());
    let runtime = p2p_topologies::MatchRuntime::for_match(config.clone(), codec.clone()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(runtime.run(async {
        let _ = stopped.await;
    }));

    // Orgs that move from their partition of 2 to another of 4, and one that stays.
    let org_moving = |moves: bool| loop {
        let org = Org::new("EUR");
        let key = org.id.as_str().as_bytes();
        if (partition_for(key, 2) != partition_for(key, 4)) == moves {
            return org;
        }
    };
    let (direct, straggler, stayer) = (org_moving(true), org_moving(true), org_moving(false));
    let orgs = [&direct, &straggler, &stayer];
    let pos: Vec<_> = orgs
        .iter()
        .map(|org| org.po(&[(dec!(3), dec!(60.00), false)]))
        .collect();
    let invoices: Vec<_> = orgs
        .iter()
        .zip(&pos)
        .map(|(org, po)| org.invoice(po, &[(1, dec!(1), dec!(60.00))], dec!(60.00)))
        .collect();
    let second: Vec<_> = orgs
        .iter()
        .zip(&pos)
        .map(|(org, po)| org.invoice(po, &[(1, dec!(2), dec!(60.00))], dec!(120.00)))
        .collect();
    let stale_producer = erp_producer(&kafka()).unwrap();
    send_scripted(
        &stale_producer,
        &codec,
        &topics,
        pos.iter()
            .zip(&invoices)
            .flat_map(|(po, invoice)| [issued(po, 0), invoiced(invoice, 10)])
            .collect(),
    )
    .await;
    wait_for(&topics, &codec, "the first invoices decided", |o| {
        invoices.iter().all(|invoice| has_outcome(o, invoice))
    })
    .await;

    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        p2p_topologies::admin::client_config(&kafka())
            .create()
            .unwrap();
    let grown: Vec<_> = topics
        .match_inputs()
        .into_iter()
        .map(|topic| rdkafka::admin::NewPartitions::new(topic, 4))
        .collect();
    for result in admin
        .create_partitions(&grown, &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    // The runtime takes the growth up within its metadata refresh (10 s): it records the
    // growth, and the inputs' ends, in its growth log.
    let log = format!("{app}-growth");
    let _ = common::poll(
        "the growth taken up",
        || {
            let log = log.clone();
            async move {
                p2p_topologies::growth::read_log(&kafka(), &log, "match", Duration::from_secs(10))
                    .map(|state| state.growth().map(|g| (g.from(), g.to())))
                    .map_err(|e| e.to_string())
            }
        },
        |read| matches!(read, Ok(Some((2, 4)))),
    )
    .await;
    // The second invoice of each PO, for the rest of its quantity: decided on the PO's
    // state (without it, it would wait for a PO it never finds). The straggler's producer
    // still partitions by 2: it lands past the end recorded, and goes on.
    let fresh_producer = erp_producer(&kafka()).unwrap();
    for (producer, index) in [
        (&fresh_producer, 0),
        (&fresh_producer, 2),
        (&stale_producer, 1),
    ] {
        send_scripted(
            producer,
            &codec,
            &topics,
            vec![invoiced(&second[index], 20)],
        )
        .await;
    }
    let observed = wait_for(&topics, &codec, "the second invoices decided", |o| {
        second.iter().all(|invoice| has_outcome(o, invoice))
    })
    .await;
    for invoice in &second {
        assert!(
            observed.matched.contains_key(invoice.invoice.as_str()),
            "{} decided on its PO's state: {:?}",
            invoice.invoice,
            observed.exceptions.get(invoice.invoice.as_str())
        );
    }
    assert!(!running.is_finished(), "the runtime goes on");
    assert!(
        observed.dead_letters.is_empty(),
        "nothing dead-lettered: {:?}",
        observed.dead_letters
    );
    let _ = stop.send(());
    let stats = running.await.unwrap().expect("it stops cleanly");
    assert!(
        stats
            .counts
            .get("state keys moved to new partitions")
            .copied()
            .unwrap_or(0)
            > 0,
        "{stats:?}"
    );
    assert_eq!(
        stats
            .counts
            .get("records forwarded to their owner's new partition")
            .copied(),
        Some(1),
        "the straggler went on: {stats:?}"
    );

    // Restarted, it finds each org's state on its new partition: a third invoice of the
    // moved PO is over-invoiced (the PO's quantity of 3 is invoiced already), not waiting
    // for a PO it cannot find.
    let third = direct.invoice(&pos[0], &[(1, dec!(2), dec!(60.00))], dec!(120.00));
    let restarted = p2p_topologies::MatchRuntime::for_match(config, codec.clone()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(restarted.run(async {
        let _ = stopped.await;
    }));
    send_scripted(&fresh_producer, &codec, &topics, vec![invoiced(&third, 30)]).await;
    let observed = wait_for(&topics, &codec, "the third invoice decided", |o| {
        has_outcome(o, &third)
    })
    .await;
    let reasons: Vec<&str> = observed
        .exceptions
        .get(third.invoice.as_str())
        .into_iter()
        .flatten()
        .flat_map(|e| e.reasons.iter().map(|r| r.reason.as_str()))
        .collect();
    assert!(
        reasons.contains(&"QUANTITY_VARIANCE"),
        "the moved state says the PO is fully invoiced: {reasons:?}"
    );
    let _ = stop.send(());
    running.await.unwrap().expect("it stops cleanly");
}

/// Every `invoice-status` record, in order, as (key, record).
async fn statuses(
    topics: &p2p_topologies::Topics,
    codec: &p2p_avro::Codec,
) -> Vec<(String, p2p_avro::convert::status::InvoiceStatusRecord)> {
    use rdkafka::message::Message;
    let mut statuses = Vec::new();
    for message in
        p2p_loadtest::audit::read_topic(&kafka(), &topics.invoice_status, Duration::from_secs(30))
            .unwrap()
    {
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let value = codec.decode(message.payload()).await.unwrap();
        let record = p2p_avro::convert::status::invoice_status_record(&value).unwrap();
        statuses.push((key, record));
    }
    statuses
}

/// Issue 22, item 3: an invoice that waits for goods is on `invoice-status` the moment it
/// arrives, saying per line what it waits for (expected, actual, delta); each receipt that
/// changes that is a new status of a higher revision, and the match is the last. One for a PO
/// not yet seen says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_invoice_is_visible_at_once_and_each_change_is_a_higher_revision() {
    let topics = TestTopics::create("invoice-status", 2).await;
    let codec = registry_codec();
    let producer = erp_producer(&kafka()).unwrap();
    let a = Org::new("EUR");
    let po = a.po(&[(dec!(10), dec!(10.00), true)]);
    let bill = a.invoice(&po, &[(1, dec!(10), dec!(10.00))], dec!(100.00));
    let stray = a.invoice(
        &a.po(&[(dec!(1), dec!(5.00), true)]),
        &[(1, dec!(1), dec!(5.00))],
        dec!(5.00),
    );
    let pipeline = Pipeline::start(&topics, codec.clone());
    send_scripted(
        &producer,
        &codec,
        &topics,
        vec![issued(&po, 1), invoiced(&bill, 2), invoiced(&stray, 3)],
    )
    .await;
    let of = |invoice: &InvoiceReceived,
              statuses: &[(String, p2p_avro::convert::status::InvoiceStatusRecord)]| {
        statuses
            .iter()
            .filter(|(_, s)| s.invoice_id == invoice.invoice.as_str())
            .map(|(key, s)| (key.clone(), s.clone()))
            .collect::<Vec<_>>()
    };
    let seen = poll(
        "both invoices waiting",
        || statuses(&topics, &codec),
        |s| !of(&bill, s).is_empty() && !of(&stray, s).is_empty(),
    )
    .await;
    let (key, waiting) = of(&bill, &seen).remove(0);
    assert_eq!(key, format!("{}/{}", a.id, bill.invoice));
    assert_eq!((waiting.status.as_str(), waiting.revision), ("WAITING", 1));
    assert_eq!(waiting.outcome_revision, None);
    assert_eq!(waiting.total_amount, dec!(100.00));
    assert_eq!(waiting.waiting_for.len(), 1);
    let goods = &waiting.waiting_for[0];
    assert_eq!(
        (
            goods.reason.as_str(),
            goods.line_number,
            goods.expected,
            goods.actual,
            goods.delta
        ),
        (
            "GOODS_NOT_RECEIVED",
            Some(1),
            Some(dec!(10)),
            Some(dec!(0)),
            Some(dec!(-10))
        )
    );
    assert!(
        goods.detail.contains("10 billed, 0 received"),
        "{}",
        goods.detail
    );
    let stray_status = &of(&stray, &seen)[0].1;
    assert_eq!(stray_status.status, "WAITING");
    assert_eq!(stray_status.waiting_for[0].reason, "PO_NOT_SEEN");

    // Four of the ten come: still waiting, for six.
    send_scripted(
        &producer,
        &codec,
        &topics,
        vec![received(&a.receipt(&po, &[(1, dec!(4))]), 4)],
    )
    .await;
    let seen = poll(
        "the partial receipt shown",
        || statuses(&topics, &codec),
        |s| of(&bill, s).len() == 2,
    )
    .await;
    let part = &of(&bill, &seen)[1].1;
    assert_eq!((part.status.as_str(), part.revision), ("WAITING", 2));
    assert_eq!(
        (part.waiting_for[0].actual, part.waiting_for[0].delta),
        (Some(dec!(4)), Some(dec!(-6)))
    );
    // The rest: matched, and its status names the outcome it is.
    send_scripted(
        &producer,
        &codec,
        &topics,
        vec![received(&a.receipt(&po, &[(1, dec!(6))]), 5)],
    )
    .await;
    let seen = poll(
        "the match shown",
        || statuses(&topics, &codec),
        |s| of(&bill, s).len() == 3,
    )
    .await;
    let matched = &of(&bill, &seen)[2].1;
    assert_eq!(
        (
            matched.status.as_str(),
            matched.revision,
            matched.outcome_revision
        ),
        ("MATCHED", 3, Some(1))
    );
    assert!(matched.waiting_for.is_empty());
    let observed = wait_for(&topics, &codec, "the invoice matched", |o| {
        o.matched.contains_key(bill.invoice.as_str())
    })
    .await;
    assert_eq!(observed.matched[bill.invoice.as_str()][0].revision, 1);
    pipeline.stop().await;
}

/// Two workers of one runtime share its partitions (ADR 0023): both join the group, the stream
/// ends as planted, each invoice decided once, and their state is in one store, where a worker
/// that gets its sibling's partitions finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_partitions_and_every_invoice_is_decided_once() {
    let topics = TestTopics::create("two-workers", 4).await;
    let codec = registry_codec();
    let scenario = Scenario::generate(&GeneratorConfig {
        seed: 11,
        orgs: 8,
        pos_per_org: 10,
        ..GeneratorConfig::default()
    });
    let state = tempfile::tempdir().unwrap();
    let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());
    let mut config = p2p_topologies::MatchConfig::new(&app, kafka(), state.path().to_path_buf());
    config.topics = (*topics).clone();
    config.runtime.workers = 2;
    // Members that leave on a stop, so that the restart below gets every partition at once.
    config.runtime.static_membership = false;
    let runtime = p2p_topologies::MatchRuntime::for_match(config, codec.clone()).unwrap();
    let pipeline = Pipeline::run(runtime, tempfile::tempdir().unwrap());
    // Both workers join the group and each gets partitions before the stream comes.
    let holding = poll(
        "both workers holding partitions",
        || async { members_holding_partitions(&app) },
        |holding| *holding == 2,
    )
    .await;
    assert_eq!(holding, 2);
    let observed = produce_and_await_decisions(&topics, &codec, &scenario).await;
    let stats = pipeline.stop().await;

    let report = audit(&scenario.planted, &observed);
    assert!(report.passed(), "{:#?}", report.disagreements);
    assert!(
        stats.records_in
            >= [
                InputTopic::PurchaseOrders,
                InputTopic::GoodsReceipts,
                InputTopic::Invoices
            ]
            .into_iter()
            .map(|topic| scenario.count(topic) as u64)
            .sum::<u64>(),
        "the runtime's counts are both workers' together: {stats:?}"
    );
    // The workers kept their state in one store: restarted with one worker, which gets every
    // partition (both workers' before), it restores nothing; it is all local already.
    let mut config = p2p_topologies::MatchConfig::new(&app, kafka(), state.path().to_path_buf());
    config.topics = (*topics).clone();
    config.runtime.workers = 1;
    config.runtime.static_membership = false;
    let runtime = p2p_topologies::MatchRuntime::for_match(config, codec.clone()).unwrap();
    let counts = runtime.stats();
    let pipeline = Pipeline::run(runtime, tempfile::tempdir().unwrap());
    let restored = poll(
        "the single worker restoring its partitions",
        || async {
            counts
                .snapshot()
                .counts
                .get("changelog records restored")
                .copied()
        },
        |restored| restored.is_some(),
    )
    .await;
    pipeline.stop().await;
    assert_eq!(
        restored,
        Some(0),
        "every partition's state was in the shared store"
    );
    assert!(!state.path().join("worker-1").exists());
}

/// Under the KIP-848 consumer group protocol the broker assigns, not the client's `range`
/// assignor: the runtime asks for the broker's `range`, which keeps each partition number of
/// the co-partitioned inputs on one member, and checks every assignment (a split would stop
/// it). Two instances of two workers each share the partitions, and the stream ends as planted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_kip_848_protocol_two_instances_keep_each_orgs_records_together() {
    let topics = TestTopics::create("kip-848", 4).await;
    let codec = registry_codec();
    let scenario = Scenario::generate(&GeneratorConfig {
        seed: 13,
        orgs: 8,
        pos_per_org: 10,
        ..GeneratorConfig::default()
    });
    let app = format!("p2p-test-{}", uuid::Uuid::new_v4().simple());
    let instance = |id: &str| {
        let mut kafka = kafka();
        kafka.insert("group.protocol".into(), "consumer".into());
        let state = tempfile::tempdir().unwrap();
        let mut config = p2p_topologies::MatchConfig::new(&app, kafka, state.path().to_path_buf());
        config.topics = (*topics).clone();
        config.runtime.workers = 2;
        config.runtime.instance_id = id.to_owned();
        config.runtime.static_membership = false;
        let metrics = p2p_topologies::Metrics::new(1).unwrap();
        let runtime = p2p_topologies::MatchRuntime::for_match(config, codec.clone())
            .unwrap()
            .with_metrics(metrics.clone());
        (Pipeline::run(runtime, state), metrics)
    };
    let (first, first_ready) = instance("a");
    let (second, second_ready) = instance("b");
    // Both hold partitions (ready: assigned and restored) before the stream comes.
    poll(
        "both instances holding partitions",
        || async { (first_ready.ready(), second_ready.ready()) },
        |ready| *ready == (true, true),
    )
    .await;
    let observed = produce_and_await_decisions(&topics, &codec, &scenario).await;
    // Both stop cleanly: neither met a split assignment.
    let stats = [first.stop().await, second.stop().await];
    let report = audit(&scenario.planted, &observed);
    assert!(report.passed(), "{:#?}", report.disagreements);
    assert!(
        stats.iter().all(|s| s.records_in > 0),
        "both instances held partitions: {stats:?}"
    );
}

/// Produces `scenario` and waits until every invoice it plants to be decided has an outcome.
async fn produce_and_await_decisions(
    topics: &p2p_topologies::Topics,
    codec: &std::sync::Arc<p2p_avro::Codec>,
    scenario: &Scenario,
) -> Observed {
    let producer = erp_producer(&kafka()).unwrap();
    produce_records(&producer, codec, topics, &scenario.records)
        .await
        .expect("produced");
    let decided = scenario
        .planted
        .iter()
        .filter(|(_, p)| *p != p2p_loadtest::Planted::Pending)
        .count();
    wait_for(topics, codec, "every decided invoice", |o| {
        o.matched.len() + o.exceptions.len() >= decided
    })
    .await
}

/// The members of consumer group `group` that hold at least one partition.
fn members_holding_partitions(group: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let admin: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka()["bootstrap.servers"])
        .create()
        .unwrap();
    let Ok(groups) = admin.fetch_group_list(Some(group), Duration::from_secs(10)) else {
        return 0;
    };
    groups.groups().first().map_or(0, |g| {
        g.members()
            .iter()
            .filter(|m| {
                // The consumer protocol's assignment: version (i16), then its topics (i32
                // count, ...): a member without partitions has none.
                m.assignment()
                    .and_then(|a| a.get(2..6))
                    .is_some_and(|count| i32::from_be_bytes(count.try_into().unwrap()) > 0)
            })
            .count()
    })
}
