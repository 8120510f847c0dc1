//! End-to-end tests of the payment topology on a real Apache Kafka broker and a real schema
//! registry: matched invoices in (as the match topology writes them), supplier master data and
//! org settings as tables, PO disputes on `po-events`, bank statuses back; the payment schedule
//! and the payment instructions of each run read back with read_committed.

mod common;

use apache_avro::types::Value;
use chrono::{Days, NaiveDate};
use common::*;
use p2p_avro::contracts::{
    GOODS_RECEIPT_EVENT, INVOICE_EVENT, INVOICE_MATCHED, ORG_CONFIG, PAYMENT_STATUS,
    PURCHASE_ORDER_EVENT, SUPPLIER_MASTER,
};
use p2p_avro::convert::payment::{
    date_of, days_of, supplier_master_value, BankStatusReport, PaymentInstructionRecord,
    PaymentScheduleRecord, ScheduleEventKind,
};
use p2p_avro::convert::procurement::org_config_value;
use p2p_avro::convert::{
    exception_record, goods_receipt_event_value, invoice_event_value, invoice_matched_value,
    purchase_order_event_value, ExceptionRecord,
};
use p2p_avro::{Codec, Contract};
use p2p_loadtest::audit::read_topic;
use p2p_loadtest::produce::erp_producer;
use p2p_processors::org_config::OrgConfig;
use p2p_processors::payment::{BankStatus, Payee, PaymentTerms};
use p2p_processors::*;
use p2p_topologies::{dlq, Topics};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use std::time::Duration;

const DEBTOR_IBAN: &str = "DE89370400440532013000";

fn now() -> EventTime {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    EventTime(since_epoch.as_millis() as i64)
}

/// Today in UTC, the date the pipeline's payment runs go by.
fn today() -> NaiveDate {
    date_of(now().0.div_euclid(86_400_000) as i32).expect("today is a business date")
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

struct Sender {
    producer: FutureProducer,
    codec: std::sync::Arc<Codec>,
    topics: Topics,
}

impl Sender {
    /// Sends to `topics` on the test broker, as an ERP (or the match topology) would.
    fn new(topics: &Topics, codec: std::sync::Arc<Codec>) -> Sender {
        Sender {
            producer: erp_producer(&kafka()).unwrap(),
            codec,
            topics: topics.clone(),
        }
    }

    async fn send(&self, topic: &str, key: &str, contract: &Contract, value: Value) {
        self.send_with(
            topic,
            key,
            contract,
            value,
            rdkafka::message::OwnedHeaders::new(),
        )
        .await;
    }

    async fn send_with(
        &self,
        topic: &str,
        key: &str,
        contract: &Contract,
        value: Value,
        headers: rdkafka::message::OwnedHeaders,
    ) {
        let bytes = self.codec.encode(topic, contract, value).await.unwrap();
        self.producer
            .send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(&bytes)
                    .headers(headers),
                Timeout::After(Duration::from_secs(30)),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("the broker takes the record");
    }

    /// The PO issued by an ERP that traces: its event carries `traceparent`.
    async fn issue_traced(&self, po: &PurchaseOrderIssued, traceparent: &str) {
        let event = PurchaseOrderEvent::Issued(po.clone());
        let value = purchase_order_event_value(&event, "e", now()).unwrap();
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "traceparent",
            value: Some(traceparent),
        });
        self.send_with(
            &self.topics.po_events,
            po.org.as_str(),
            &PURCHASE_ORDER_EVENT,
            value,
            headers,
        )
        .await;
    }

    /// A matched invoice, its record carrying W3C trace context `traceparent`, as an ERP's
    /// (or the match topology's) traced record would.
    async fn matched_traced(&self, m: &InvoiceMatched, traceparent: &str, links: &str) {
        let value = invoice_matched_value(m).unwrap();
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: "traceparent",
                value: Some(traceparent),
            })
            .insert(rdkafka::message::Header {
                key: p2p_topologies::trace::LINKS,
                value: Some(links),
            });
        let topic = self.topics.invoice_matched.clone();
        self.send_with(&topic, m.org.as_str(), &INVOICE_MATCHED, value, headers)
            .await;
    }

    /// A record nobody can read, keyed by `org`, to `topic`.
    async fn not_avro(&self, topic: &str, org: &OrgId) {
        self.producer
            .send(
                FutureRecord::to(topic)
                    .key(org.as_str())
                    .payload(&b"not avro"[..]),
                Timeout::After(Duration::from_secs(30)),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("the broker takes the record");
    }

    async fn matched(&self, m: &InvoiceMatched) {
        let value = invoice_matched_value(m).unwrap();
        self.send(
            &self.topics.invoice_matched,
            m.org.as_str(),
            &INVOICE_MATCHED,
            value,
        )
        .await;
    }

    /// A PO issued by its ERP with one receipt-required line, `quantity` at `price` EUR.
    async fn issued_po(
        &self,
        org: &OrgId,
        supplier: &SupplierId,
        quantity: Decimal,
        price: Decimal,
    ) -> PurchaseOrderIssued {
        let po = PurchaseOrderIssued {
            org: org.clone(),
            po: PurchaseOrderId::random(),
            supplier: supplier.clone(),
            currency: eur(),
            lines: vec![PurchaseOrderLine {
                line: LineNumber::new(1).unwrap(),
                description: "pallets".into(),
                quantity: Quantity::new(quantity).unwrap(),
                unit_price: UnitPrice::new(Money::new(price, eur())).unwrap(),
                receipt_required: true,
                inspection_required: false,
            }],
            requisition: None,
        };
        self.issue(&po).await;
        po
    }

    async fn issue(&self, po: &PurchaseOrderIssued) {
        let event = PurchaseOrderEvent::Issued(po.clone());
        let value = purchase_order_event_value(&event, "e", now()).unwrap();
        self.send(
            &self.topics.po_events,
            po.org.as_str(),
            &PURCHASE_ORDER_EVENT,
            value,
        )
        .await;
    }

    /// Everything the PO's line ordered, delivered at once.
    async fn received_in_full(&self, po: &PurchaseOrderIssued) {
        self.received_in_full_as(po, GoodsReceiptId::random()).await
    }

    /// Everything the PO's line ordered, delivered at once on receipt `grn`.
    async fn received_in_full_as(&self, po: &PurchaseOrderIssued, grn: GoodsReceiptId) {
        let receipt = GoodsReceived {
            org: po.org.clone(),
            grn,
            po: po.po.clone(),
            lines: vec![ReceiptLine {
                line: LineNumber::new(1).unwrap(),
                received: po.lines[0].quantity,
                returned: Quantity::ZERO,
                expected: None,
                accepted: Quantity::ZERO,
            }],
            resolves: None,
        };
        let value = goods_receipt_event_value(&receipt, "g", now()).unwrap();
        self.send(
            &self.topics.grn_events,
            po.org.as_str(),
            &GOODS_RECEIPT_EVENT,
            value,
        )
        .await;
    }

    async fn invoice(&self, invoice: &InvoiceReceived) {
        let value = invoice_event_value(invoice, "i", now()).unwrap();
        self.send(
            &self.topics.invoice_events,
            invoice.org.as_str(),
            &INVOICE_EVENT,
            value,
        )
        .await;
    }

    async fn supplier(&self, org: &OrgId, payee: &Payee) {
        let value = supplier_master_value(org, payee, None, now()).unwrap();
        self.send(
            &self.topics.supplier_master,
            org.as_str(),
            &SUPPLIER_MASTER,
            value,
        )
        .await;
    }

    async fn bank(&self, org: &OrgId, invoice: &InvoiceId, status: BankStatus) {
        let report = BankStatusReport {
            org: org.clone(),
            invoice: invoice.clone(),
            part: 1,
            status,
            occurred_at: now(),
        };
        self.send(
            &self.topics.payment_status,
            org.as_str(),
            &PAYMENT_STATUS,
            report.to_value(),
        )
        .await;
    }
}

fn payee(name: &str, terms: &str) -> Payee {
    Payee {
        supplier: SupplierId::random(),
        name: name.into(),
        terms: PaymentTerms::parse(terms).unwrap(),
        blocked: false,
        iban: Some("DE02120300000000202051".into()),
        bic: Some("BYLADEM1001".into()),
        bank_account_changed_on: None,
    }
}

fn matched(
    org: &OrgId,
    supplier: &SupplierId,
    total: Decimal,
    currency: Currency,
) -> InvoiceMatched {
    InvoiceMatched {
        org: org.clone(),
        kind: DocumentKind::Invoice,
        invoice: InvoiceId::random(),
        po: PurchaseOrderId::random(),
        supplier: supplier.clone(),
        number: InvoiceNumber::parse(&format!("SI-{}", &InvoiceId::random().as_str()[4..10]))
            .unwrap(),
        total: Money::new(total, currency),
        lines: vec![],
        invoice_date: days_of(today()),
        matched_at: now(),
        warnings: vec![],
        revision: 1,
    }
}

#[derive(Debug, Default)]
struct Seen {
    schedule: BTreeMap<String, Vec<PaymentScheduleRecord>>,
    instructions: Vec<PaymentInstructionRecord>,
    dead_letters: Vec<BTreeMap<String, String>>,
}

impl Seen {
    async fn read(topics: &Topics, codec: &Codec) -> Seen {
        let mut seen = Seen::default();
        let read = |topic: &str| read_topic(&kafka(), topic, Duration::from_secs(30)).unwrap();
        for message in read(&topics.payment_schedule) {
            let value = codec.decode(message.payload()).await.unwrap();
            let record = PaymentScheduleRecord::from_value(&value).unwrap();
            seen.schedule
                .entry(record.invoice.to_string())
                .or_default()
                .push(record);
        }
        for message in read(&topics.payment_instructions) {
            let value = codec.decode(message.payload()).await.unwrap();
            seen.instructions
                .push(PaymentInstructionRecord::from_value(&value).unwrap());
        }
        for input in topics.payment_inputs() {
            for message in read(&Topics::dlq(input)) {
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                seen.dead_letters.push(headers);
            }
        }
        seen
    }

    fn kinds(&self, invoice: &InvoiceId) -> Vec<(ScheduleEventKind, Option<String>)> {
        self.schedule
            .get(invoice.as_str())
            .map(|rs| rs.iter().map(|r| (r.kind, r.hold.clone())).collect())
            .unwrap_or_default()
    }
}

async fn wait_until(
    topics: &Topics,
    codec: &Codec,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    poll(what, || Seen::read(topics, codec), done).await
}

fn kind(k: ScheduleEventKind) -> (ScheduleEventKind, Option<String>) {
    (k, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matched_invoices_are_scheduled_held_released_in_runs_and_settled_once() {
    let topics = TestTopics::create("payment", 3).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = OrgId::random();
    let mut config = OrgConfig::defaults(org.clone(), eur(), now());
    config.payment.capture_discounts = true;
    config
        .payment
        .debtor_accounts
        .insert(eur(), DEBTOR_IBAN.into());
    tx.send(
        &topics.org_config,
        org.as_str(),
        &ORG_CONFIG,
        org_config_value(&config).unwrap(),
    )
    .await;
    let prompt = payee("Acme Bolts GmbH", "NET 0");
    let mut blocked = payee("Shady Supplies Ltd", "NET 0");
    blocked.blocked = true;
    let discounting = payee("Early Bird AG", "2/10 NET 30");
    for p in [&prompt, &blocked, &discounting] {
        tx.supplier(&org, p).await;
    }

    let pipeline = Pipeline::payment(&topics, codec.clone());

    // Due today: released in today's run. Sent twice: paid once.
    let paid = matched(&org, &prompt.supplier, dec!(1000.00), eur());
    // Due today, but the supplier is blocked: held, never instructed.
    let held = matched(&org, &blocked.supplier, dec!(500.00), eur());
    // Its PO is disputed before the invoice is matched: held from the start.
    let disputed = matched(&org, &prompt.supplier, dec!(250.00), eur());
    // 2/10 net 30 with discounts captured: 2% off, due in 10 days, not in today's run.
    let early = matched(&org, &discounting.supplier, dec!(1234.50), eur());
    // No debtor account for USD: not scheduled, and kept.
    let dollars = matched(
        &org,
        &prompt.supplier,
        dec!(99.99),
        Currency::parse("USD").unwrap(),
    );

    let dispute = PurchaseOrderEvent::Stepped(PurchaseOrderStepped {
        org: org.clone(),
        po: disputed.po.clone(),
        step: PurchaseOrderStep::Disputed,
    });
    tx.send(
        &topics.po_events,
        org.as_str(),
        &PURCHASE_ORDER_EVENT,
        purchase_order_event_value(&dispute, "d", now()).unwrap(),
    )
    .await;
    for m in [&paid, &held, &disputed, &early, &dollars, &paid] {
        tx.matched(m).await;
    }

    let seen = wait_until(&topics, &codec, "today's payment run", |s| {
        !s.instructions.is_empty()
            && s.kinds(&held.invoice)
                .iter()
                .any(|k| k.0 == ScheduleEventKind::Held)
    })
    .await;

    // One run: org, EUR, the debtor account, today; only the invoice that may be paid.
    assert_eq!(seen.instructions.len(), 1, "{:#?}", seen.instructions);
    let run = &seen.instructions[0];
    assert_eq!(
        (
            run.org.clone(),
            run.currency,
            run.debtor_account.as_str(),
            run.execution_date
        ),
        (org.clone(), eur(), DEBTOR_IBAN, today())
    );
    assert_eq!(run.total, Money::new(dec!(1000.00), eur()));
    assert_eq!(run.payments.len(), 1);
    let instructed = &run.payments[0];
    assert_eq!(instructed.invoice, paid.invoice);
    assert_eq!(instructed.creditor_name, "Acme Bolts GmbH");
    assert_eq!(instructed.creditor_iban, "DE02120300000000202051");
    assert_eq!(instructed.remittance, paid.number.to_string());
    assert_eq!(instructed.end_to_end_id(), format!("{}/1", paid.invoice));

    // The re-delivered match scheduled nothing more.
    assert_eq!(
        seen.kinds(&paid.invoice),
        vec![
            kind(ScheduleEventKind::Scheduled),
            kind(ScheduleEventKind::Released)
        ]
    );
    assert_eq!(
        seen.kinds(&held.invoice),
        vec![
            kind(ScheduleEventKind::Scheduled),
            (ScheduleEventKind::Held, Some("SUPPLIER_BLOCKED".into())),
        ]
    );
    assert_eq!(
        seen.kinds(&disputed.invoice),
        vec![
            kind(ScheduleEventKind::Scheduled),
            (ScheduleEventKind::Held, Some("PO_DISPUTED".into())),
        ]
    );
    // A sentence for the clerk, not a Rust name.
    assert_eq!(
        seen.schedule[held.invoice.as_str()][1].detail,
        "held: the supplier is blocked for payment"
    );
    let early_schedule = &seen.schedule[early.invoice.as_str()];
    assert_eq!(early_schedule.len(), 1, "{early_schedule:#?}");
    assert_eq!(
        early_schedule[0].pay_on,
        today().checked_add_days(Days::new(10))
    );
    assert_eq!(
        early_schedule[0].amount,
        Some(Money::new(dec!(1209.81), eur()))
    );
    assert_eq!(
        early_schedule[0].discount,
        Some(Money::new(dec!(24.69), eur()))
    );
    assert_eq!(
        seen.kinds(&dollars.invoice),
        vec![kind(ScheduleEventKind::Refused)]
    );

    // The bank accepts and settles it; a status for a payment nobody scheduled is refused.
    tx.bank(&org, &paid.invoice, BankStatus::Accepted).await;
    tx.bank(&org, &paid.invoice, BankStatus::Settled).await;
    tx.bank(&org, &InvoiceId::random(), BankStatus::Settled)
        .await;
    let seen = wait_until(&topics, &codec, "the settlement", |s| {
        s.kinds(&paid.invoice)
            .iter()
            .any(|k| k.0 == ScheduleEventKind::Settled)
            && !s.dead_letters.is_empty()
    })
    .await;
    let stats = pipeline.stop().await;
    assert_eq!(
        seen.kinds(&paid.invoice),
        vec![
            kind(ScheduleEventKind::Scheduled),
            kind(ScheduleEventKind::Released),
            kind(ScheduleEventKind::Disbursed),
            kind(ScheduleEventKind::Remitted),
            kind(ScheduleEventKind::Settled),
        ]
    );
    assert_eq!(seen.dead_letters.len(), 1);
    assert_eq!(seen.dead_letters[0][dlq::HEADER_REASON], "rejected");
    assert_eq!(
        seen.dead_letters[0][dlq::HEADER_TOPIC],
        topics.payment_status
    );
    assert_eq!(
        seen.instructions.len(),
        1,
        "no second run for the same payment"
    );
    assert_eq!(stats.get("payment runs"), 1);
}

/// The latest status of each PO on `po-status`.
async fn po_states(topics: &Topics, codec: &Codec) -> BTreeMap<String, (PoState, u64)> {
    use p2p_avro::convert::procurement::PoStatusRecord;
    let mut states = BTreeMap::new();
    for message in read_topic(&kafka(), &topics.po_status, Duration::from_secs(30)).unwrap() {
        let value = codec.decode(message.payload()).await.unwrap();
        let status = PoStatusRecord::from_value(&value).unwrap();
        states.insert(status.po.to_string(), (status.state, status.version));
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_po_is_received_invoiced_paid_when_the_bank_settles_and_then_closed() {
    let topics = TestTopics::create("po-paid", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Acme Bolts GmbH", "NET 0");
    tx.supplier(&org, &supplier).await;

    let procurement = Pipeline::procurement(&topics, codec.clone());
    let payments = Pipeline::payment(&topics, codec.clone());

    let (po, invoice) = received_and_matched(&tx, &org, &supplier.supplier).await;

    let released = wait_until(&topics, &codec, "the payment released", |s| {
        !s.instructions.is_empty()
    })
    .await;
    assert_eq!(
        released.instructions[0].total,
        Money::new(dec!(1000.00), eur())
    );
    let invoiced = po_states(&topics, &codec).await;
    assert_eq!(invoiced.get(po.po.as_str()), Some(&(PoState::Invoiced, 4)));

    tx.bank(&org, &invoice.invoice, BankStatus::Accepted).await;
    tx.bank(&org, &invoice.invoice, BankStatus::Settled).await;
    // Received, billed and paid in full: paid, then closed.
    until_closed(&topics, &codec, &po.po).await;
    payments.stop().await;
    procurement.stop().await;
}

/// Two such POs paid for real: their payment run goes to the bank connector, as a pain.001
/// file to the simulated bank, whose acknowledgement and pain.002 reports come back on
/// `payment-status`. The bank settles one payment (its PO is Paid and Closed) and rejects the
/// other (AC04, account closed), which ends Rejected with the bank's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_po_is_paid_and_closed_through_the_bank_connector_and_a_rejected_payment_says_why() {
    use common::bank;
    let topics = TestTopics::create("po-bank", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Müller & Söhne Schraubenwerk GmbH", "NET 0");
    tx.supplier(&org, &supplier).await;
    let listen = bank::free_port();
    // Every second payment the bank is sent is rejected.
    let the_bank = bank::Bank::start(format!("http://{listen}/pain002"), 2).await;
    let connector_id = bank::connector_id("po-bank");
    let connector = bank::start(bank::config(&topics, &connector_id, listen, &the_bank.url));
    let procurement = Pipeline::procurement(&topics, codec.clone());
    let payments = Pipeline::payment(&topics, codec.clone());

    let first = received_and_matched(&tx, &org, &supplier.supplier).await;
    let second = received_and_matched(&tx, &org, &supplier.supplier).await;
    let ended = |s: &Seen, invoice: &InvoiceId| {
        s.kinds(invoice).last().is_some_and(|k| {
            matches!(
                k.0,
                ScheduleEventKind::Settled | ScheduleEventKind::Rejected
            )
        })
    };
    let seen = wait_until(&topics, &codec, "both payments to end", |s| {
        ended(s, &first.1.invoice) && ended(s, &second.1.invoice)
    })
    .await;
    let last = |invoice: &InvoiceId| seen.kinds(invoice).last().unwrap().0;
    let ((paid_po, paid), (rejected_po, rejected)) =
        if last(&first.1.invoice) == ScheduleEventKind::Settled {
            (first, second)
        } else {
            (second, first)
        };
    until_closed(&topics, &codec, &paid_po.po).await;
    connector.stop().await;
    payments.stop().await;
    procurement.stop().await;
    assert_eq!(
        seen.kinds(&paid.invoice),
        vec![
            kind(ScheduleEventKind::Scheduled),
            kind(ScheduleEventKind::Released),
            kind(ScheduleEventKind::Disbursed),
            kind(ScheduleEventKind::Remitted),
            kind(ScheduleEventKind::Settled),
        ]
    );
    let rejection = seen.schedule[rejected.invoice.as_str()].last().unwrap();
    assert_eq!(rejection.kind, ScheduleEventKind::Rejected);
    assert!(
        rejection.detail.contains("AC04: Account closed"),
        "{}",
        rejection.detail
    );
    let states = po_states(&topics, &codec).await;
    assert_eq!(
        states.get(rejected_po.po.as_str()),
        Some(&(PoState::Invoiced, 4)),
        "a PO whose payment the bank rejected is not paid"
    );
    let at_the_bank = the_bank.state().await;
    let mut executed: Vec<(String, u32)> = at_the_bank.executed.into_iter().collect();
    executed.sort();
    let mut expected: Vec<(String, u32)> = [&paid.invoice, &rejected.invoice]
        .iter()
        .map(|i| (p2p_connectors::pain001::short_id(&format!("{i}/1")), 1))
        .collect();
    expected.sort();
    assert_eq!(
        executed, expected,
        "each invoice's one part sent once (its end-to-end id mapped to SEPA's characters)"
    );
}

/// A PO issued by its ERP (approved there) for 10 pallets at 100.00, all delivered at once,
/// and its invoice for 1000.00 matched, as the match topology writes it.
async fn received_and_matched(
    tx: &Sender,
    org: &OrgId,
    supplier: &SupplierId,
) -> (PurchaseOrderIssued, InvoiceMatched) {
    let po = tx.issued_po(org, supplier, dec!(10), dec!(100.00)).await;
    tx.received_in_full(&po).await;
    let mut invoice = matched(org, supplier, dec!(1000.00), eur());
    invoice.po = po.po.clone();
    invoice.lines = vec![InvoiceLine {
        line: LineNumber::new(1).unwrap(),
        quantity: Quantity::new(dec!(10)).unwrap(),
        unit_price: UnitPrice::new(Money::new(dec!(100.00), eur())).unwrap(),
    }];
    tx.matched(&invoice).await;
    (po, invoice)
}

/// PO `number` (an ERP's own id) for 10 pallets at 100.00 EUR, to be received.
fn pallets_po(org: &OrgId, supplier: &SupplierId, number: &str) -> PurchaseOrderIssued {
    PurchaseOrderIssued {
        org: org.clone(),
        po: PurchaseOrderId::parse(number).unwrap(),
        supplier: supplier.clone(),
        currency: eur(),
        lines: vec![PurchaseOrderLine {
            line: LineNumber::new(1).unwrap(),
            description: "pallets".into(),
            quantity: Quantity::new(dec!(10)).unwrap(),
            unit_price: UnitPrice::new(Money::new(dec!(100.00), eur())).unwrap(),
            receipt_required: true,
            inspection_required: false,
        }],
        requisition: None,
    }
}

/// Waits for `po` to be paid and then closed (version 6 after issue, receipt, invoice).
async fn until_closed(topics: &Topics, codec: &Codec, po: &PurchaseOrderId) {
    let state_of_po = || async { po_states(topics, codec).await.get(po.as_str()).copied() };
    poll("the PO to become Paid and Closed", state_of_po, |s| {
        *s == Some((PoState::Closed, 6))
    })
    .await;
}

/// An org paying EUR from [`DEBTOR_IBAN`], published on `org-config`.
async fn org_paying_eur(tx: &Sender) -> OrgId {
    let org = OrgId::random();
    publish_org_paying_eur(tx, &org).await;
    org
}

/// Publishes `org`'s settings: paying EUR from [`DEBTOR_IBAN`].
async fn publish_org_paying_eur(tx: &Sender, org: &OrgId) {
    let mut config = OrgConfig::defaults(org.clone(), eur(), now());
    config
        .payment
        .debtor_accounts
        .insert(eur(), DEBTOR_IBAN.into());
    let value = org_config_value(&config).unwrap();
    tx.send(&tx.topics.org_config, org.as_str(), &ORG_CONFIG, value)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_memos_are_set_off_against_the_suppliers_next_payments_never_paid() {
    let topics = TestTopics::create("credit-memos", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Acme Bolts GmbH", "NET 0");
    tx.supplier(&org, &supplier).await;
    let memo = |total| InvoiceMatched {
        kind: DocumentKind::CreditMemo,
        ..matched(&org, &supplier.supplier, total, eur())
    };
    // One topic, one key: read in this order. The memo comes twice: credit once.
    let credit = memo(dec!(300.00));
    let invoice = matched(&org, &supplier.supplier, dec!(1000.00), eur());
    let pipeline = Pipeline::payment(&topics, codec.clone());
    for m in [&credit, &credit, &invoice] {
        tx.matched(m).await;
    }
    wait_until(&topics, &codec, "today's run", |s| {
        !s.instructions.is_empty()
    })
    .await;
    // After that run: more credit than the next invoice.
    let big_credit = memo(dec!(1500.00));
    let covered = matched(&org, &supplier.supplier, dec!(400.00), eur());
    for m in [&big_credit, &covered] {
        tx.matched(m).await;
    }
    let seen = wait_until(&topics, &codec, "the covered invoice settled", |s| {
        s.kinds(&covered.invoice)
            .iter()
            .any(|k| k.0 == ScheduleEventKind::Settled)
    })
    .await;
    pipeline.stop().await;

    // The bank is told to pay 1000 less 300, and nothing for the invoice credit covers.
    assert_eq!(seen.instructions.len(), 1, "{:#?}", seen.instructions);
    let run = &seen.instructions[0];
    assert_eq!(run.payments.len(), 1);
    assert_eq!(run.payments[0].invoice, invoice.invoice);
    assert_eq!(run.payments[0].amount, Money::new(dec!(700.00), eur()));
    assert_eq!(run.total, Money::new(dec!(700.00), eur()));
    let amounts = |invoice: &InvoiceId| -> Vec<(ScheduleEventKind, Option<Money>)> {
        seen.schedule[invoice.as_str()]
            .iter()
            .map(|r| (r.kind, r.amount))
            .collect()
    };
    let eur_amount = |a| Some(Money::new(a, eur()));
    assert_eq!(
        amounts(&credit.invoice),
        vec![(ScheduleEventKind::CreditRecorded, eur_amount(dec!(300.00)))]
    );
    assert_eq!(
        amounts(&invoice.invoice),
        vec![
            (ScheduleEventKind::Scheduled, eur_amount(dec!(1000.00))),
            (ScheduleEventKind::SetOff, eur_amount(dec!(300.00))),
            (ScheduleEventKind::Released, eur_amount(dec!(700.00))),
        ]
    );
    assert_eq!(
        seen.kinds(&covered.invoice),
        vec![
            kind(ScheduleEventKind::Scheduled),
            kind(ScheduleEventKind::SetOff),
            kind(ScheduleEventKind::Remitted),
            kind(ScheduleEventKind::Settled),
        ]
    );
    assert_eq!(
        seen.kinds(&big_credit.invoice),
        vec![kind(ScheduleEventKind::CreditRecorded)]
    );
}

/// The supplier's invoice for `quantity` of the PO's line at its price, as the ERP registers it.
fn invoice_for(po: &PurchaseOrderIssued, quantity: Decimal) -> InvoiceReceived {
    let price = po.lines[0].unit_price;
    InvoiceReceived {
        org: po.org.clone(),
        invoice: InvoiceId::random(),
        kind: DocumentKind::Invoice,
        supplier: po.supplier.clone(),
        number: InvoiceNumber::parse(&format!("SI-{}", &InvoiceId::random().as_str()[4..10]))
            .unwrap(),
        po: po.po.clone(),
        currency: eur(),
        lines: vec![InvoiceLine {
            line: LineNumber::new(1).unwrap(),
            quantity: Quantity::new(quantity).unwrap(),
            unit_price: price,
        }],
        total: Money::new(quantity * price.money().amount(), eur()),
        invoice_date: days_of(today()),
        payment_block: None,
        posted_by: None,
    }
}

async fn exceptions(topics: &Topics, codec: &Codec) -> Vec<ExceptionRecord> {
    let mut out = Vec::new();
    for message in read_topic(
        &kafka(),
        &topics.invoice_exceptions,
        Duration::from_secs(30),
    )
    .unwrap()
    {
        let value = codec.decode(message.payload()).await.unwrap();
        out.push(exception_record(&value).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_hold_keeps_an_invoice_from_payment_until_released_and_a_correction_is_planned_anew(
) {
    let topics = TestTopics::create("manual-hold", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    // Due in 30 days: scheduled, not in today's run. Due today: paid in today's run.
    let later = payee("Acme Bolts GmbH", "NET 30");
    let now_due = payee("Cargo Pallets BV", "NET 0");
    tx.supplier(&org, &later).await;
    tx.supplier(&org, &now_due).await;
    let matching = Pipeline::start(&topics, codec.clone());
    let payments = Pipeline::payment(&topics, codec.clone());
    let bolts = tx
        .issued_po(&org, &later.supplier, dec!(10), dec!(100.00))
        .await;
    let pallets = tx
        .issued_po(&org, &now_due.supplier, dec!(5), dec!(100.00))
        .await;
    tx.received_in_full(&bolts).await;
    tx.received_in_full(&pallets).await;

    // Matched and scheduled; then the clerk blocks it in the ERP.
    let clean = invoice_for(&bolts, dec!(10));
    tx.invoice(&clean).await;
    wait_until(&topics, &codec, "the invoice scheduled", |s| {
        s.kinds(&clean.invoice) == vec![kind(ScheduleEventKind::Scheduled)]
    })
    .await;
    let blocked = InvoiceReceived {
        payment_block: Some("price under negotiation".into()),
        ..clean.clone()
    };
    tx.invoice(&blocked).await;
    let held = wait_until(&topics, &codec, "its payment held", |s| {
        s.kinds(&clean.invoice).len() == 2
    })
    .await;
    assert_eq!(
        held.kinds(&clean.invoice)[1],
        (ScheduleEventKind::Held, Some("INVOICE_BLOCKED".into()))
    );
    let raised = exceptions(&topics, &codec).await;
    assert_eq!(raised.len(), 1, "{raised:#?}");
    assert_eq!(raised[0].invoice_id, clean.invoice.as_str());
    assert_eq!(raised[0].reasons[0].reason, "MANUAL_HOLD");
    assert!(raised[0].reasons[0]
        .detail
        .contains("price under negotiation"));

    // Released with a correction: 9 pallets billed, not 10. Nothing went to the bank yet, so
    // the payment is planned anew on 900.00, and its hold goes.
    let corrected = invoice_for(&bolts, dec!(9));
    let corrected = InvoiceReceived {
        invoice: clean.invoice.clone(),
        number: clean.number.clone(),
        ..corrected
    };
    tx.invoice(&corrected).await;

    // Blocked from the start: never scheduled, so never paid; released, paid in today's run.
    let first_blocked = InvoiceReceived {
        payment_block: Some("awaiting credit check".into()),
        ..invoice_for(&pallets, dec!(5))
    };
    tx.invoice(&first_blocked).await;
    poll(
        "the second invoice's exception",
        || exceptions(&topics, &codec),
        |e| {
            e.iter()
                .any(|x| x.invoice_id == first_blocked.invoice.as_str())
        },
    )
    .await;
    let released = InvoiceReceived {
        payment_block: None,
        ..first_blocked.clone()
    };
    tx.invoice(&released).await;

    // Schedule and instructions are read one after the other: wait for both.
    let seen = wait_until(&topics, &codec, "the amendment and today's run", |s| {
        s.kinds(&clean.invoice).len() == 4
            && s.kinds(&first_blocked.invoice).len() == 2
            && !s.instructions.is_empty()
    })
    .await;
    matching.stop().await;
    payments.stop().await;

    let records = &seen.schedule[clean.invoice.as_str()];
    assert_eq!(
        records
            .iter()
            .map(|r| (r.kind, r.amount))
            .collect::<Vec<_>>(),
        vec![
            (
                ScheduleEventKind::Scheduled,
                Some(Money::new(dec!(1000.00), eur()))
            ),
            (ScheduleEventKind::Held, None),
            (
                ScheduleEventKind::Amended,
                Some(Money::new(dec!(900.00), eur()))
            ),
            (ScheduleEventKind::HoldReleased, None),
        ]
    );
    assert_eq!(records[2].pay_on, today().checked_add_days(Days::new(30)));
    // Today's run pays the released invoice once, and nothing of the one due in 30 days.
    assert_eq!(seen.instructions.len(), 1, "{:#?}", seen.instructions);
    let run = &seen.instructions[0];
    assert_eq!(run.payments.len(), 1);
    assert_eq!(run.payments[0].invoice, first_blocked.invoice);
    assert_eq!(run.total, Money::new(dec!(500.00), eur()));
    assert_eq!(
        seen.kinds(&first_blocked.invoice),
        vec![
            kind(ScheduleEventKind::Scheduled),
            kind(ScheduleEventKind::Released),
        ]
    );
    assert!(seen.dead_letters.is_empty(), "{:#?}", seen.dead_letters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_status_that_came_too_early_is_dead_lettered_and_replayed_once_its_payment_exists() {
    use p2p_topologies::dlq::{self, DlqSelection, HEADER_REPLAYED_FROM};
    let topics = TestTopics::create("dlq-replay", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Acme Bolts GmbH", "NET 0");
    tx.supplier(&org, &supplier).await;
    let payments = Pipeline::payment(&topics, codec.clone());
    let invoice = matched(&org, &supplier.supplier, dec!(250.00), eur());

    // The bank's acceptance overtakes the match (a misrouted connector, say), and a record
    // nobody can read sits next to it.
    tx.bank(&org, &invoice.invoice, BankStatus::Accepted).await;
    tx.not_avro(&topics.payment_status, &org).await;
    wait_until(&topics, &codec, "two dead letters", |s| {
        s.dead_letters.len() == 2
    })
    .await;
    tx.matched(&invoice).await;
    wait_until(&topics, &codec, "the payment released", |s| {
        s.kinds(&invoice.invoice)
            .contains(&kind(ScheduleEventKind::Released))
    })
    .await;

    // Only the rejected one goes back; the unreadable one would only fail again.
    let dlq_topic = Topics::dlq(&topics.payment_status);
    let rejected = DlqSelection {
        reason: Some("rejected".into()),
        ..DlqSelection::default()
    };
    let replayed = dlq::replay(&kafka(), &dlq_topic, &rejected, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    let seen = wait_until(&topics, &codec, "the replayed status applied", |s| {
        s.kinds(&invoice.invoice)
            .contains(&kind(ScheduleEventKind::Disbursed))
    })
    .await;
    payments.stop().await;

    assert_eq!(seen.dead_letters.len(), 2, "nothing dead-lettered again");
    let statuses = read_topic(&kafka(), &topics.payment_status, Duration::from_secs(30)).unwrap();
    assert_eq!(statuses.len(), 3);
    let back = statuses.last().unwrap();
    let from = back
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == HEADER_REPLAYED_FROM))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(
        from,
        Some(format!(
            "{dlq_topic}/{}/{}",
            replayed[0].partition, replayed[0].offset
        ))
    );
    assert!(
        back.headers()
            .is_some_and(|h| h.iter().all(|h| !h.key.starts_with("dlq.")
                || h.key == HEADER_REPLAYED_FROM
                || h.key == dlq::HEADER_REPLAYED_FOR)),
        "the DLQ's own headers stay behind"
    );
    let all = dlq::inspect(
        &kafka(),
        &dlq_topic,
        &DlqSelection::default(),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(all.len(), 2, "the dead letters stay where they are");
}

/// Issue 21's reproducer: one valid Avro `supplier-master` record whose bank account changed
/// on the first day an Avro date can name (i32::MIN days, long before any calendar) panicked
/// `p2p run` on every restart, in every tenant. Now it is dead-lettered naming the field, and
/// the pipeline goes on paying the other suppliers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplier_record_dated_before_any_calendar_is_dead_lettered_and_payments_go_on() {
    let topics = TestTopics::create("far-past-supplier", 1).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let hostile = payee("Long Ago Ltd", "NET 0");
    let Value::Record(mut fields) = supplier_master_value(&org, &hostile, None, now()).unwrap()
    else {
        panic!("a record")
    };
    for (name, value) in &mut fields {
        if name == "bank_account_changed_on" {
            *value = Value::Union(1, Box::new(Value::Date(i32::MIN)));
        }
    }
    tx.send(
        &topics.supplier_master,
        org.as_str(),
        &SUPPLIER_MASTER,
        Value::Record(fields),
    )
    .await;
    let honest = payee("Acme Bolts GmbH", "NET 0");
    tx.supplier(&org, &honest).await;
    let paid = matched(&org, &honest.supplier, dec!(410.00), eur());
    tx.matched(&paid).await;

    // The match reads supplier-master too (for tolerances): both must live through it.
    let payment = Pipeline::payment(&topics, codec.clone());
    let matching = Pipeline::start(&topics, codec.clone());
    let seen = wait_until(&topics, &codec, "the honest supplier's payment run", |s| {
        !s.instructions.is_empty() && !s.dead_letters.is_empty()
    })
    .await;
    assert_eq!(seen.instructions.len(), 1);
    assert_eq!(seen.instructions[0].payments[0].invoice, paid.invoice);
    for letter in &seen.dead_letters {
        assert_eq!(letter[dlq::HEADER_TOPIC], topics.supplier_master);
        assert_eq!(letter[dlq::HEADER_REASON], "invalid-document");
        assert!(
            letter[dlq::HEADER_ERROR].contains("`bank_account_changed_on`"),
            "{letter:?}"
        );
    }
    // Both stop cleanly: neither panicked, neither stopped on the record.
    let payment_stats = payment.stop().await;
    matching.stop().await;
    assert_eq!(payment_stats.get("payment runs"), 1);
}

/// A `po-events` record every topology reading the topic refuses is dead-lettered by each
/// (three letters, each naming its processor), and replaying them all sends the record back
/// once, marked for the three; each refuses it again, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_three_topologies_refuse_is_replayed_once() {
    use p2p_topologies::dlq::{DlqSelection, HEADER_PROCESSOR, HEADER_REPLAYED_FOR};
    let topics = TestTopics::create("dlq-once", 1).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = OrgId::random();
    tx.not_avro(&topics.po_events, &org).await;
    let pipelines = [
        Pipeline::start(&topics, codec.clone()),
        Pipeline::procurement(&topics, codec.clone()),
        Pipeline::payment(&topics, codec.clone()),
    ];
    let dlq_topic = Topics::dlq(&topics.po_events);
    let letters = |n: usize| {
        let dlq_topic = dlq_topic.clone();
        async move {
            poll(
                &format!("{n} dead letters"),
                || async {
                    dlq::inspect(
                        &kafka(),
                        &dlq_topic,
                        &DlqSelection::default(),
                        Duration::from_secs(30),
                    )
                    .unwrap()
                },
                |l| l.len() >= n,
            )
            .await
        }
    };
    let first = letters(3).await;
    let mut processors: Vec<String> = first
        .iter()
        .map(|l| l.header(HEADER_PROCESSOR).unwrap())
        .collect();
    processors.sort();
    assert_eq!(processors, ["match", "payment", "procurement"]);

    let selected = dlq::replay(
        &kafka(),
        &dlq_topic,
        &DlqSelection::default(),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(selected.len(), 3);
    let again = letters(6).await;
    let records = read_topic(&kafka(), &topics.po_events, Duration::from_secs(30)).unwrap();
    assert_eq!(records.len(), 2, "the original and one replay");
    let marked = records[1]
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == HEADER_REPLAYED_FOR))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap();
    let mut marked: Vec<&str> = marked.split(',').collect();
    marked.sort();
    assert_eq!(marked, ["match", "payment", "procurement"]);
    for pipeline in pipelines {
        pipeline.stop().await;
    }
    assert_eq!(again.len(), 6, "each refused the replay once");
}

/// Issue 22, item 6: a payment due next week is seen in its run today, on a clock set a week
/// ahead (`p2p run --clock-offset 7d`), without faking the process's time or waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_set_a_week_ahead_shows_next_weeks_payment_run_today() {
    let topics = TestTopics::create("clock-offset", 1).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Weekly Widgets BV", "NET 7");
    tx.supplier(&org, &supplier).await;
    let invoice = matched(&org, &supplier.supplier, dec!(700.00), eur());
    tx.matched(&invoice).await;
    let week_ahead = p2p_topologies::Clock::parse_offset("7d").unwrap();
    let payments = Pipeline::payment_by(&topics, codec.clone(), week_ahead);
    let seen = wait_until(&topics, &codec, "next week's payment run", |s| {
        !s.instructions.is_empty()
    })
    .await;
    payments.stop().await;
    let next_week = today().checked_add_days(Days::new(7)).unwrap();
    assert_eq!(
        seen.schedule[invoice.invoice.as_str()][0].pay_on,
        Some(next_week)
    );
    assert_eq!(seen.instructions.len(), 1);
    assert_eq!(seen.instructions[0].execution_date, next_week);
    assert_eq!(seen.instructions[0].payments[0].invoice, invoice.invoice);
    assert_eq!(seen.instructions[0].total, Money::new(dec!(700.00), eur()));
}

/// Issue 22, item 1: an SAP system's own ids, from the requisition to the bank's settlement,
/// through all three topologies. Its PO and a requisition share a number (as SAP's separate
/// number ranges allow), its invoice id has a `/`; an id no ERP would send (a control
/// character in it) is dead-lettered naming its field, and the rest goes on. And (issue 28,
/// ADR 0027) the trace its PO was issued in is linked from the run that pays its invoice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sap_system_s_own_ids_go_from_requisition_to_settled_payment() {
    use p2p_avro::contracts::REQUISITION_EVENT;
    use p2p_avro::convert::procurement::{requisition_event_value, ApprovalRequestRecord};

    let topics = TestTopics::create("erp-ids", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = OrgId::parse("1000").unwrap();
    publish_org_paying_eur(&tx, &org).await;
    let supplier = Payee {
        supplier: SupplierId::parse("V100234").unwrap(),
        ..payee("Acme Bolts GmbH", "NET 0")
    };
    tx.supplier(&org, &supplier).await;
    let procurement = Pipeline::procurement(&topics, codec.clone());
    let matching = Pipeline::start(&topics, codec.clone());
    let payments = Pipeline::payment(&topics, codec.clone());

    let number = "4500012345";
    let requisition = RequisitionSubmitted {
        org: org.clone(),
        requisition: RequisitionId::parse(number).unwrap(),
        requester: UserId::parse("JSMITH").unwrap(),
        currency: eur(),
        lines: vec![RequisitionLine {
            line: LineNumber::new(1).unwrap(),
            description: "forklift".into(),
            quantity: Quantity::new(dec!(1)).unwrap(),
            unit_price: UnitPrice::new(Money::new(dec!(25000.00), eur())).unwrap(),
        }],
    };
    let value = requisition_event_value(&requisition, "r", now()).unwrap();
    tx.send(
        &topics.requisition_events,
        org.as_str(),
        &REQUISITION_EVENT,
        value,
    )
    .await;

    let po = pallets_po(&org, &supplier.supplier, number);
    // First, the same PO under an id with a bell character in it: no ERP's.
    let mut garbled =
        purchase_order_event_value(&PurchaseOrderEvent::Issued(po.clone()), "x", now()).unwrap();
    if let Value::Record(fields) = &mut garbled {
        let po_id = fields.iter_mut().find(|(name, _)| name == "po_id").unwrap();
        po_id.1 = Value::String("45000\u{7}12345".into());
    }
    tx.send(
        &topics.po_events,
        org.as_str(),
        &PURCHASE_ORDER_EVENT,
        garbled,
    )
    .await;
    let po_trace = "00-5e1d9a0c8e2b4f7a9c3d6b1e0f2a4c8d-1a2b3c4d5e6f7a8b-01";
    tx.issue_traced(&po, po_trace).await;
    tx.received_in_full_as(&po, GoodsReceiptId::parse("5000012345").unwrap())
        .await;
    let invoice = InvoiceReceived {
        invoice: InvoiceId::parse("INV-2026/0042").unwrap(),
        number: InvoiceNumber::parse("0042").unwrap(),
        ..invoice_for(&po, dec!(10))
    };
    tx.invoice(&invoice).await;

    let seen = wait_until(&topics, &codec, "the invoice paid in a run", |s| {
        !s.instructions.is_empty()
            && s.dead_letters
                .iter()
                .any(|l| l[dlq::HEADER_TOPIC] == topics.po_events)
    })
    .await;
    let run = &seen.instructions[0];
    assert_eq!(run.org, org);
    first_run_linking(&topics, po_trace);
    assert_eq!(run.payments.len(), 1);
    assert_eq!(run.payments[0].invoice, invoice.invoice);
    assert_eq!(run.payments[0].amount, Money::new(dec!(1000.00), eur()));
    for letter in seen
        .dead_letters
        .iter()
        .filter(|l| l[dlq::HEADER_TOPIC] == topics.po_events)
    {
        assert_eq!(letter[dlq::HEADER_REASON], "invalid-document");
        assert!(
            letter[dlq::HEADER_ERROR].contains("po_id"),
            "{}",
            letter[dlq::HEADER_ERROR]
        );
    }

    tx.bank(&org, &invoice.invoice, BankStatus::Accepted).await;
    tx.bank(&org, &invoice.invoice, BankStatus::Settled).await;
    poll(
        "the PO to become Paid and Closed",
        || async { po_states(&topics, &codec).await.get(number).copied() },
        |s| *s == Some((PoState::Closed, 6)),
    )
    .await;
    // The requisition of the same number is its own document, waiting for its approver.
    let mut requests = Vec::new();
    for message in read_topic(&kafka(), &topics.approval_requests, Duration::from_secs(30)).unwrap()
    {
        let value = codec.decode(message.payload()).await.unwrap();
        requests.push(ApprovalRequestRecord::from_value(&value).unwrap());
    }
    assert!(
        requests
            .iter()
            .any(|r| r.document == DocumentRef::Requisition(requisition.requisition.clone())),
        "{requests:#?}"
    );
    payments.stop().await;
    matching.stop().await;
    procurement.stop().await;
}

/// Issue 22, item 2: invoices and a credit memo billed in fractions of a cent (as lines of
/// 7 x 14.2857 are) are paid in cents: each rounded half-up once when it becomes payable, the
/// difference on its record, the run's total the sum of its payments to the cent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_billed_in_fractions_of_a_cent_reach_the_bank_in_cents_and_add_up() {
    let topics = TestTopics::create("minor-units", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Acme Bolts GmbH", "NET 0");
    tx.supplier(&org, &supplier).await;
    let pipeline = Pipeline::payment(&topics, codec.clone());
    let memo = InvoiceMatched {
        kind: DocumentKind::CreditMemo,
        ..matched(&org, &supplier.supplier, dec!(10.0050), eur())
    };
    let first = matched(&org, &supplier.supplier, dec!(99.9999), eur());
    let second = matched(&org, &supplier.supplier, dec!(50.0049), eur());
    for m in [&memo, &first, &second] {
        tx.matched(m).await;
    }
    let seen = wait_until(&topics, &codec, "both invoices in a run", |s| {
        s.instructions
            .iter()
            .map(|i| i.payments.len())
            .sum::<usize>()
            == 2
    })
    .await;
    pipeline.stop().await;

    let cents = |m: &Money| m.amount().normalize().scale() <= 2;
    for record in seen.schedule.values().flatten() {
        for amount in [record.amount, record.discount].into_iter().flatten() {
            assert!(cents(&amount), "{record:#?}");
        }
    }
    let recorded = |invoice: &InvoiceId, kind| {
        seen.schedule[invoice.as_str()]
            .iter()
            .find(|r| r.kind == kind)
            .map(|r| (r.amount, r.rounding))
            .unwrap()
    };
    let eur_amount = |a| Some(Money::new(a, eur()));
    assert_eq!(
        recorded(&first.invoice, ScheduleEventKind::Scheduled),
        (eur_amount(dec!(100.00)), eur_amount(dec!(0.0001)))
    );
    assert_eq!(
        recorded(&second.invoice, ScheduleEventKind::Scheduled),
        (eur_amount(dec!(50.00)), eur_amount(dec!(-0.0049)))
    );
    assert_eq!(
        recorded(&memo.invoice, ScheduleEventKind::CreditRecorded),
        (eur_amount(dec!(10.01)), eur_amount(dec!(0.0050)))
    );
    let mut paid = Decimal::ZERO;
    for run in &seen.instructions {
        let sum: Decimal = run.payments.iter().map(|p| p.amount.amount()).sum();
        assert!(run.payments.iter().all(|p| cents(&p.amount)), "{run:#?}");
        assert_eq!(run.total.amount(), sum, "{run:#?}");
        paid += sum;
    }
    // 100.00 + 50.00 less the credit of 10.01.
    assert_eq!(paid, dec!(139.99));
}

/// Issue 22, item 4: an invoice held for price (10 at 11.00 against 10.00), then the
/// supplier's credit memo for the difference (1.00 off each of the 10): the match nets them,
/// releases the invoice (a new revision) and matches the memo; the payment pays the net,
/// 100.00, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_memo_that_nets_a_held_invoice_within_tolerance_releases_it_and_the_net_is_paid_once(
) {
    let topics = TestTopics::create("netting", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Acme Bolts GmbH", "NET 0");
    tx.supplier(&org, &supplier).await;
    let matching = Pipeline::start(&topics, codec.clone());
    let payments = Pipeline::payment(&topics, codec.clone());

    let po = tx
        .issued_po(&org, &supplier.supplier, dec!(10), dec!(10.00))
        .await;
    tx.received_in_full(&po).await;
    let overpriced = InvoiceReceived {
        lines: vec![InvoiceLine {
            line: LineNumber::new(1).unwrap(),
            quantity: Quantity::new(dec!(10)).unwrap(),
            unit_price: UnitPrice::new(Money::new(dec!(11.00), eur())).unwrap(),
        }],
        total: Money::new(dec!(110.00), eur()),
        ..invoice_for(&po, dec!(10))
    };
    tx.invoice(&overpriced).await;
    let held = poll(
        "the invoice held for price",
        || exceptions(&topics, &codec),
        |e| {
            e.iter()
                .any(|x| x.invoice_id == overpriced.invoice.as_str())
        },
    )
    .await;
    assert!(held
        .iter()
        .flat_map(|x| &x.reasons)
        .any(|r| r.reason == "PRICE_VARIANCE"));

    let memo = InvoiceReceived {
        kind: DocumentKind::CreditMemo,
        number: InvoiceNumber::parse("CN-0001").unwrap(),
        lines: vec![InvoiceLine {
            line: LineNumber::new(1).unwrap(),
            quantity: Quantity::new(dec!(10)).unwrap(),
            unit_price: UnitPrice::new(Money::new(dec!(1.00), eur())).unwrap(),
        }],
        total: Money::new(dec!(10.00), eur()),
        ..invoice_for(&po, dec!(10))
    };
    tx.invoice(&memo).await;
    let seen = wait_until(&topics, &codec, "the net paid", |s| {
        !s.instructions.is_empty()
            && s.schedule.get(memo.invoice.as_str()).is_some_and(|r| {
                r.iter()
                    .any(|r| r.kind == ScheduleEventKind::CreditRecorded)
            })
    })
    .await;
    payments.stop().await;
    matching.stop().await;

    assert_eq!(seen.instructions.len(), 1, "{:#?}", seen.instructions);
    let run = &seen.instructions[0];
    assert_eq!(run.payments.len(), 1);
    assert_eq!(run.payments[0].invoice, overpriced.invoice);
    assert_eq!(run.payments[0].amount, Money::new(dec!(100.00), eur()));
    assert_eq!(run.total, Money::new(dec!(100.00), eur()));
    let kinds: Vec<ScheduleEventKind> = seen.schedule[overpriced.invoice.as_str()]
        .iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            ScheduleEventKind::Scheduled,
            ScheduleEventKind::SetOff,
            ScheduleEventKind::Released
        ]
    );
}

/// Issue 27, item 1: a supplier delivering against two POs bills both the same amount on the
/// same day under two numbers: both are paid. A second invoice of that amount and day under
/// another number on one PO looks like the first: held for review (`POSSIBLE_DUPLICATE`
/// naming it), or, for an org that chose to be warned, matched with the warning and paid. The
/// first's number again (spelled otherwise) is a `DUPLICATE`, never paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_amount_on_the_same_day_is_paid_per_po_held_as_a_look_alike_on_one_and_refused_by_reference(
) {
    use p2p_processors::duplicates::LookAlikes;
    let topics = TestTopics::create("look-alikes", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let holding = org_paying_eur(&tx).await;
    let warned = OrgId::random();
    let mut config = OrgConfig::defaults(warned.clone(), eur(), now());
    config
        .payment
        .debtor_accounts
        .insert(eur(), DEBTOR_IBAN.into());
    config.look_alikes = LookAlikes::Warn;
    tx.send(
        &topics.org_config,
        warned.as_str(),
        &ORG_CONFIG,
        org_config_value(&config).unwrap(),
    )
    .await;
    let matching = Pipeline::start(&topics, codec.clone());
    let payments = Pipeline::payment(&topics, codec.clone());

    let mut paid = Vec::new();
    let mut held = Vec::new();
    for org in [&holding, &warned] {
        let supplier = payee("Acme Bolts GmbH", "NET 0");
        tx.supplier(org, &supplier).await;
        // Two POs of 20 pallets at 25.00, both delivered in full.
        let a = tx
            .issued_po(org, &supplier.supplier, dec!(20), dec!(25.00))
            .await;
        let b = tx
            .issued_po(org, &supplier.supplier, dec!(20), dec!(25.00))
            .await;
        tx.received_in_full(&a).await;
        tx.received_in_full(&b).await;
        let numbered = |po: &PurchaseOrderIssued, number: &str| InvoiceReceived {
            number: InvoiceNumber::parse(number).unwrap(),
            ..invoice_for(po, dec!(10))
        };
        let first = numbered(&a, "SI-2026-0001");
        let other_po = numbered(&b, "SI-2026-0002");
        let look_alike = numbered(&a, "SI-2026-0003");
        // Case, spaces and punctuation folded: the first's reference.
        let same_number = numbered(&b, "si 2026 0001");
        for invoice in [&first, &other_po, &look_alike, &same_number] {
            tx.invoice(invoice).await;
        }
        paid.extend([first.invoice.clone(), other_po.invoice.clone()]);
        if org == &warned {
            paid.push(look_alike.invoice.clone());
        } else {
            held.push((
                look_alike.invoice.clone(),
                "POSSIBLE_DUPLICATE",
                first.invoice.clone(),
            ));
        }
        held.push((
            same_number.invoice.clone(),
            "DUPLICATE",
            first.invoice.clone(),
        ));
    }

    let seen = wait_until(&topics, &codec, "every payable invoice paid", |s| {
        let instructed: Vec<&InvoiceId> = s
            .instructions
            .iter()
            .flat_map(|i| i.payments.iter().map(|p| &p.invoice))
            .collect();
        paid.iter().all(|i| instructed.contains(&i))
    })
    .await;
    let blocked = poll(
        "the look-alike and the duplicates held",
        || exceptions(&topics, &codec),
        |e| {
            held.iter()
                .all(|(id, _, _)| e.iter().any(|x| x.invoice_id == id.as_str()))
        },
    )
    .await;
    payments.stop().await;
    matching.stop().await;

    let instructed: Vec<&InvoiceId> = seen
        .instructions
        .iter()
        .flat_map(|i| i.payments.iter().map(|p| &p.invoice))
        .collect();
    assert_eq!(instructed.len(), paid.len(), "{instructed:?}");
    for (invoice, reason, of) in &held {
        assert!(!instructed.contains(&invoice), "{invoice} was paid");
        let exception = blocked
            .iter()
            .find(|x| x.invoice_id == invoice.as_str())
            .unwrap();
        let reasons: Vec<&str> = exception
            .reasons
            .iter()
            .map(|r| r.reason.as_str())
            .collect();
        assert_eq!(reasons, vec![*reason], "{exception:#?}");
        assert!(
            exception.reasons[0].detail.contains(of.as_str()),
            "{exception:#?}"
        );
    }
}

/// Issue 27, items 2 and 3, on the real broker: people decide what the match holds. A
/// look-alike is released by "not a duplicate" and paid once; a price variance is refused to
/// the invoice's own poster and to an approver without the authority, then accepted by one
/// with it and paid; a held invoice is rejected and never paid, and the next one is; a
/// decision delivered twice is taken once; one sent before its invoice waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_release_accept_and_reject_what_the_match_holds_each_checked_audited_and_once() {
    use p2p_avro::contracts::INVOICE_DECISION;
    use p2p_avro::convert::procurement::{AuditKind, AuditRecord};
    use p2p_avro::convert::status::invoice_decision_value;
    use p2p_processors::approval::ApprovalLevel;
    use p2p_processors::decisions::{DecisionAction, InvoiceDecision};

    let topics = TestTopics::create("decisions", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Acme Bolts GmbH", "NET 0");
    tx.supplier(&org, &supplier).await;
    let matching = Pipeline::start(&topics, codec.clone());
    let payments = Pipeline::payment(&topics, codec.clone());
    let decide =
        |id: &str, invoice: &InvoiceReceived, by: &str, authority, action| InvoiceDecision {
            id: id.into(),
            invoice: invoice.invoice.clone(),
            po: invoice.po.clone(),
            by: UserId::parse(by).unwrap(),
            authority,
            action,
            reason_code: "CHECKED".into(),
            comment: Some("with the buyer".into()),
        };
    let send = |d: InvoiceDecision| {
        let (tx, org, topics) = (&tx, org.clone(), topics.clone());
        async move {
            let value = invoice_decision_value(&org, &d, now());
            tx.send(
                &topics.invoice_decisions,
                org.as_str(),
                &INVOICE_DECISION,
                value,
            )
            .await;
        }
    };

    // A look-alike: the same amount and day on one PO under another number.
    let po = tx
        .issued_po(&org, &supplier.supplier, dec!(20), dec!(25.00))
        .await;
    tx.received_in_full(&po).await;
    let first = invoice_for(&po, dec!(10));
    let look_alike = invoice_for(&po, dec!(10));
    // A price variance of 10 % (11,000.00: it needs level L2), posted by CLERK1.
    let priced = tx
        .issued_po(&org, &supplier.supplier, dec!(1000), dec!(10.00))
        .await;
    // The PO's approver (as approval-decisions says) may not decide on its invoices either.
    let approved = p2p_processors::procurement::ApprovalDecided {
        org: org.clone(),
        po: priced.po.clone(),
        decision: p2p_processors::approval::Decision {
            approver: UserId::parse("APPROVER7").unwrap(),
            authority: ApprovalLevel::L3,
            approve: true,
        },
    };
    tx.send(
        &topics.approval_decisions,
        org.as_str(),
        &p2p_avro::contracts::APPROVAL_DECISION,
        p2p_avro::convert::procurement::approval_decision_value(&approved, "a-1", now()),
    )
    .await;

    tx.received_in_full(&priced).await;
    let over = InvoiceReceived {
        lines: vec![InvoiceLine {
            line: LineNumber::new(1).unwrap(),
            quantity: Quantity::new(dec!(1000)).unwrap(),
            unit_price: UnitPrice::new(Money::new(dec!(11.00), eur())).unwrap(),
        }],
        total: Money::new(dec!(11000.00), eur()),
        posted_by: Some(UserId::parse("CLERK1").unwrap()),
        ..invoice_for(&priced, dec!(1000))
    };
    // A held invoice to reject, on a PO of its own, and the right one after it; the
    // rejection is sent before its invoice.
    let other = tx
        .issued_po(&org, &supplier.supplier, dec!(5), dec!(40.00))
        .await;
    tx.received_in_full(&other).await;
    let wrong = InvoiceReceived {
        lines: vec![InvoiceLine {
            line: LineNumber::new(1).unwrap(),
            quantity: Quantity::new(dec!(5)).unwrap(),
            unit_price: UnitPrice::new(Money::new(dec!(60.00), eur())).unwrap(),
        }],
        total: Money::new(dec!(300.00), eur()),
        ..invoice_for(&other, dec!(5))
    };
    let right = invoice_for(&other, dec!(5));
    // The first invoice's reference again, on another PO: a duplicate, whatever is decided.
    let duplicate = InvoiceReceived {
        number: first.number.clone(),
        ..invoice_for(&other, dec!(1))
    };
    send(decide(
        "d-reject",
        &wrong,
        "BUYER1",
        ApprovalLevel::L1,
        DecisionAction::Reject,
    ))
    .await;
    for invoice in [&first, &look_alike, &over, &wrong, &duplicate] {
        tx.invoice(invoice).await;
    }
    let not_a_duplicate = decide(
        "d-lookalike",
        &look_alike,
        "CLERK2",
        ApprovalLevel::L1,
        DecisionAction::NotADuplicate,
    );
    send(not_a_duplicate.clone()).await;
    send(not_a_duplicate).await;
    send(decide(
        "d-approver",
        &over,
        "APPROVER7",
        ApprovalLevel::L3,
        DecisionAction::AcceptVariance,
    ))
    .await;
    send(decide(
        "d-own",
        &over,
        "CLERK1",
        ApprovalLevel::L3,
        DecisionAction::AcceptVariance,
    ))
    .await;
    send(decide(
        "d-weak",
        &over,
        "BUYER2",
        ApprovalLevel::L1,
        DecisionAction::AcceptVariance,
    ))
    .await;
    send(decide(
        "d-accept",
        &over,
        "BUYER3",
        ApprovalLevel::L2,
        DecisionAction::AcceptVariance,
    ))
    .await;
    send(decide(
        "d-duplicate",
        &duplicate,
        "BUYER3",
        ApprovalLevel::L3,
        DecisionAction::Release(None),
    ))
    .await;
    tx.invoice(&right).await;

    let paid = [&first, &look_alike, &over, &right];
    let seen = wait_until(
        &topics,
        &codec,
        "the released and accepted invoices paid",
        |s| {
            let instructed: Vec<&InvoiceId> = s
                .instructions
                .iter()
                .flat_map(|i| i.payments.iter().map(|p| &p.invoice))
                .collect();
            paid.iter().all(|i| instructed.contains(&&i.invoice))
        },
    )
    .await;
    let audit = poll(
        "every decision audited",
        || async {
            let mut entries = Vec::new();
            for message in
                read_topic(&kafka(), &topics.audit_events, Duration::from_secs(30)).unwrap()
            {
                let value = codec.decode(message.payload()).await.unwrap();
                entries.push(AuditRecord::from_value(&value).unwrap());
            }
            entries
        },
        |entries| {
            entries
                .iter()
                .filter(|e| e.action == "DECIDE_INVOICE")
                .count()
                >= 7
        },
    )
    .await;
    payments.stop().await;
    matching.stop().await;

    // Paid once each; the rejected one never.
    let instructed: Vec<&InvoiceId> = seen
        .instructions
        .iter()
        .flat_map(|i| i.payments.iter().map(|p| &p.invoice))
        .collect();
    assert_eq!(instructed.len(), paid.len(), "{instructed:?}");
    assert!(!instructed.contains(&&wrong.invoice));
    assert!(!instructed.contains(&&duplicate.invoice));
    let decisions: Vec<(AuditKind, String)> = audit
        .iter()
        .filter(|e| e.action == "DECIDE_INVOICE")
        .map(|e| (e.kind, e.detail.clone()))
        .collect();
    let taken = |id: &InvoiceId| {
        decisions
            .iter()
            .filter(|(kind, detail)| {
                *kind == AuditKind::InvoiceDecided && detail.contains(id.as_str())
            })
            .count()
    };
    let refused: Vec<&String> = decisions
        .iter()
        .filter(|(kind, _)| *kind == AuditKind::Refused)
        .map(|(_, detail)| detail)
        .collect();
    // "Not a duplicate" delivered twice: taken once.
    assert_eq!(taken(&look_alike.invoice), 1, "{decisions:#?}");
    assert_eq!(taken(&over.invoice), 1, "{decisions:#?}");
    assert_eq!(taken(&wrong.invoice), 1, "{decisions:#?}");
    assert_eq!(refused.len(), 4, "{decisions:#?}");
    assert!(
        refused
            .iter()
            .any(|d| d.contains("d-duplicate") && d.contains("never paid, whatever anyone decides")),
        "{refused:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|d| d.contains("d-approver") && d.contains("requested or approved purchase order")),
        "{refused:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|d| d.contains("d-own") && d.contains("segregation of duties")),
        "{refused:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|d| d.contains("d-weak") && d.contains("needs level L2")),
        "{refused:#?}"
    );
    // The decision is on the invoice's published state: who, what, why, when.
    let mut newest = None;
    for message in read_topic(&kafka(), &topics.invoice_status, Duration::from_secs(30)).unwrap() {
        let value = codec.decode(message.payload()).await.unwrap();
        let status = p2p_avro::convert::status::invoice_status_record(&value).unwrap();
        if status.invoice_id == look_alike.invoice.as_str() {
            newest = Some(status);
        }
    }
    let newest = newest.unwrap();
    assert_eq!(newest.status, "MATCHED");
    assert_eq!(newest.decisions.len(), 1, "{newest:#?}");
    assert!(
        newest.decisions[0]
            .starts_with("CLERK2 marked it as not a duplicate (CHECKED): with the buyer at 20"),
        "{newest:#?}"
    );
}

/// The first payment run's instruction, which must link to the trace `po_trace` (ADR 0027).
fn first_run_linking(topics: &Topics, po_trace: &str) -> rdkafka::message::OwnedMessage {
    let instruction = read_topic(
        &kafka(),
        &topics.payment_instructions,
        Duration::from_secs(30),
    )
    .unwrap()
    .swap_remove(0);
    let headers = p2p_topologies::record::InputRecord::of(&instruction).headers;
    assert!(
        p2p_topologies::trace::links_of(&headers).contains(&po_trace.to_owned()),
        "the run links to the PO's trace: {headers:?}"
    );
    instruction
}

/// The trace context on a record read back: its `traceparent`'s trace id and span id.
fn trace_of(message: &rdkafka::message::OwnedMessage) -> Option<(String, String)> {
    let headers = message.headers()?;
    let value = headers
        .iter()
        .find(|h| h.key == p2p_topologies::trace::TRACEPARENT)?
        .value?;
    let parts: Vec<String> = std::str::from_utf8(value)
        .ok()?
        .split('-')
        .map(str::to_owned)
        .collect();
    (parts.len() == 4 && parts[0] == "00").then(|| (parts[1].clone(), parts[2].clone()))
}

/// W3C trace context (ADR 0027): a matched invoice's trace goes on to the payment scheduled
/// for it, under a span of its own; one that carries none, or a broken one, starts a trace; a
/// payment run, released by a timer, starts a trace of its own and links to its payments'
/// traces and theirs (the PO's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoices_trace_goes_on_to_its_payment_and_a_run_starts_its_own() {
    let topics = TestTopics::create("payment-trace", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Acme Bolts GmbH", "NET 0");
    tx.supplier(&org, &supplier).await;
    let payments = Pipeline::payment(&topics, codec.clone());

    let erp_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traced = matched(&org, &supplier.supplier, dec!(1000.00), eur());
    let untraced = matched(&org, &supplier.supplier, dec!(200.00), eur());
    let broken = matched(&org, &supplier.supplier, dec!(30.00), eur());
    // As the match writes it: the invoice's trace, and a link to its PO's.
    let po_link = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let own = format!("00-{erp_trace}-00f067aa0ba902b7-01");
    tx.matched_traced(&traced, &own, po_link).await;
    tx.matched(&untraced).await;
    tx.matched_traced(&broken, "00-not-a-trace-01", "").await;
    wait_until(&topics, &codec, "the payment run", |s| {
        s.instructions
            .iter()
            .map(|run| run.payments.len())
            .sum::<usize>()
            == 3
    })
    .await;
    payments.stop().await;

    let mut scheduled: BTreeMap<String, (String, String)> = BTreeMap::new();
    for message in read_topic(&kafka(), &topics.payment_schedule, Duration::from_secs(30)).unwrap()
    {
        let value = codec.decode(message.payload()).await.unwrap();
        let record = PaymentScheduleRecord::from_value(&value).unwrap();
        let trace = trace_of(&message).expect("every schedule record carries a trace");
        if record.kind == ScheduleEventKind::Scheduled {
            scheduled.insert(record.invoice.to_string(), trace);
        }
    }
    let (trace, span) = &scheduled[traced.invoice.as_str()];
    assert_eq!(trace, erp_trace, "the invoice's trace goes on");
    assert_ne!(span, "00f067aa0ba902b7", "under a span of its own");
    for other in [&untraced, &broken] {
        let (trace, _) = &scheduled[other.invoice.as_str()];
        assert_ne!(trace, erp_trace);
        assert_ne!(trace, &"0".repeat(32), "a valid trace, started for it");
    }
    assert_ne!(
        scheduled[untraced.invoice.as_str()].0,
        scheduled[broken.invoice.as_str()].0,
        "each record without one starts its own"
    );
    let runs = read_topic(
        &kafka(),
        &topics.payment_instructions,
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(!runs.is_empty());
    let mut links = Vec::new();
    for run in &runs {
        let (trace, _) = trace_of(run).expect("a run's instruction carries a trace");
        assert!(
            scheduled.values().all(|(t, _)| *t != trace),
            "a run is a trace of its own"
        );
        let headers = p2p_topologies::record::InputRecord::of(run).headers;
        links.extend(p2p_topologies::trace::links_of(&headers));
    }
    // The run links to its payments' traces: the invoice's outcome and the PO it links to.
    assert!(links.contains(&own), "{links:?}");
    assert!(links.contains(&po_link.to_owned()), "{links:?}");
}

/// Issue 28, item 5: one PO followed from its ERP to the bank's file, both ways an operator
/// would: by the trace context its records carry, and by the spans the three topologies and
/// the bank connector export over OTLP (to a receiver decoding the protocol's own messages).
/// The PO's trace is the ERP's; its invoice comes without one (most ERPs send none), so the
/// match starts the invoice's trace and links it to the PO's; the payment continues the
/// invoice's; the run that pays it starts its own, linked to both; the connector's send of
/// the run's file is a span of the run's trace, and the bank is told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_po_s_trace_is_followed_from_the_erp_through_three_topologies_to_the_bank_file() {
    use common::bank;
    use common::otlp::{Collector, ReceivedSpan};
    use p2p_topologies::spans::{OtlpConfig, SpanExport};

    let collector = Collector::start().await;
    let spans = SpanExport::otlp(&OtlpConfig {
        endpoint: collector.endpoint.clone(),
        service: "p2p-pipeline".into(),
        instance: "test".into(),
    })
    .expect("an OTLP exporter");
    let topics = TestTopics::create("traced", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Acme Bolts GmbH", "NET 0");
    tx.supplier(&org, &supplier).await;
    let listen = bank::free_port();
    let the_bank = bank::Bank::start(format!("http://{listen}/pain002"), 0).await;
    let mut connector_config = bank::config(
        &topics,
        &bank::connector_id("traced"),
        listen,
        &the_bank.url,
    );
    connector_config.tracing.otlp_endpoint = Some(collector.endpoint.clone());
    let connector = bank::start(connector_config);
    let procurement = Pipeline::procurement_traced(&topics, codec.clone(), Some(spans.clone()));
    let matching = Pipeline::start_traced(&topics, codec.clone(), spans.clone());
    let payments = Pipeline::payment_traced(
        &topics,
        codec.clone(),
        p2p_topologies::Clock::WALL,
        Some(spans.clone()),
    );

    let po = pallets_po(&org, &supplier.supplier, "4500077001");
    let (po_trace_id, po_span_id) = ("7c1e5a3b9d2f4e6a8b0c1d2e3f4a5b6c", "0f1e2d3c4b5a6978");
    let po_trace = format!("00-{po_trace_id}-{po_span_id}-01");
    tx.issue_traced(&po, &po_trace).await;
    tx.received_in_full_as(&po, GoodsReceiptId::parse("5000077001").unwrap())
        .await;
    let invoice = invoice_for(&po, dec!(10));
    tx.invoice(&invoice).await;
    wait_until(&topics, &codec, "the invoice's payment settled", |s| {
        s.kinds(&invoice.invoice)
            .last()
            .is_some_and(|k| k.0 == ScheduleEventKind::Settled)
    })
    .await;
    connector.stop().await;
    payments.stop().await;
    matching.stop().await;
    procurement.stop().await;
    let flushing = spans.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap();

    // The headers: the run's instruction links to the PO's trace, and the bank was sent its
    // file in the run's trace.
    let instruction = &first_run_linking(&topics, &po_trace);
    let (run_trace_id, run_span_id) = trace_of(instruction).expect("the run's trace");
    let at_the_bank = the_bank.state().await;
    assert_eq!(at_the_bank.traces.len(), 1, "{at_the_bank:#?}");
    let sent_in = at_the_bank.traces.values().next().unwrap();
    assert_eq!(
        sent_in.split('-').nth(1),
        Some(run_trace_id.as_str()),
        "the file went in the run's trace"
    );

    // The spans.
    let received = poll(
        "the connector's span",
        || async { collector.spans() },
        |spans| spans.iter().any(|s| s.service == "p2p-bank-connector"),
    )
    .await;
    let find = |what: &str, holds: &dyn Fn(&ReceivedSpan) -> bool| -> ReceivedSpan {
        received
            .iter()
            .find(|s| holds(s))
            .cloned()
            .unwrap_or_else(|| panic!("no span {what} among {received:#?}"))
    };
    // The procurement decides the PO (its status); the match only keeps it, so it has no
    // decision of its own until the invoice comes.
    let issued = find("of the procurement taking the PO", &|s| {
        s.name == format!("procurement process {}", topics.po_events)
    });
    assert_eq!(issued.trace_id, po_trace_id, "in the ERP's trace");
    assert_eq!(issued.parent_span_id, po_span_id, "under the ERP's span");
    assert_eq!(
        issued.attribute("messaging.kafka.message.key"),
        Some(org.as_str())
    );
    let batch = find("of the procurement's batch", &|s| {
        issued
            .links
            .contains(&(s.trace_id.clone(), s.span_id.clone()))
    });
    assert_eq!(batch.name, "procurement batch", "linked to its batch");
    let matched = find("of the match deciding the invoice", &|s| {
        s.attribute("p2p.topology") == Some("match")
            && s.attribute("p2p.output.topics")
                .is_some_and(|t| t.contains(&topics.invoice_matched))
    });
    assert!(
        matched.links_to(&po_trace),
        "linked to the PO's: {matched:#?}"
    );
    let scheduled = find("of the payment scheduling the invoice", &|s| {
        s.name == format!("payment process {}", topics.invoice_matched)
    });
    assert_eq!(
        (&scheduled.trace_id, &scheduled.parent_span_id),
        (&matched.trace_id, &matched.span_id),
        "the payment continues the match's decision"
    );
    let released = find("of the run released", &|s| {
        s.name == "payment timer" && s.trace_id == run_trace_id
    });
    assert_eq!(
        released.span_id, run_span_id,
        "the instruction names the run's span"
    );
    assert!(released.links_to(&po_trace), "{released:#?}");
    assert!(
        released
            .links
            .iter()
            .any(|(trace, _)| *trace == matched.trace_id),
        "the run links to its invoice's trace: {released:#?}"
    );
    let sent = find("of the file sent", &|s| s.service == "p2p-bank-connector");
    assert_eq!(sent.name, "send pain.001 to simulated-bank");
    assert_eq!(
        (&sent.trace_id, &sent.parent_span_id),
        (&run_trace_id, &run_span_id),
        "the send is a span of the run's"
    );
    assert_eq!(sent.attribute("p2p.answer"), Some("acknowledged"));
    assert_eq!(
        sent_in.split('-').nth(2),
        Some(sent.span_id.as_str()),
        "the bank is told the send's span"
    );
}

/// Issue 28, item 5, with a real collector: `p2p run`, configured with `[tracing]
/// otlp_endpoint`, sends its spans to Jaeger (`common::otlp::Jaeger`), and Jaeger's query API
/// finds the ERP's trace of a PO with the procurement's decision under the ERP's span, and the
/// match's decision on the PO's invoice linked to that trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_run_sends_its_spans_to_a_real_jaeger_which_finds_a_pos_trace() {
    let Some(jaeger) = common::otlp::Jaeger::start().await else {
        return;
    };
    let topics = TestTopics::create("jaeger", 2).await;
    let codec = registry_codec();
    let tx = Sender::new(&topics, codec.clone());
    let org = org_paying_eur(&tx).await;
    let supplier = payee("Acme Bolts GmbH", "NET 0");
    tx.supplier(&org, &supplier).await;
    let dir = tempfile::tempdir().unwrap();
    let app = format!("p2p-jaeger-{}", uuid::Uuid::new_v4().simple());
    let path = pipeline_toml(dir.path(), &topics, Some(&app));
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "metrics_addr = \"127.0.0.1:0\"\n{config}\n[tracing]\notlp_endpoint = \"{}\"\n",
            jaeger.endpoint
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("p2p.log")).unwrap();
    let mut pipeline = std::process::Command::new(env!("CARGO_BIN_EXE_p2p"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("p2p run starts");

    let po = pallets_po(&org, &supplier.supplier, "4500088001");
    let (po_trace_id, po_span_id) = ("3d5f7a9b1c2e4f6a8b0c2d4e6f8a0b1c", "1122334455667788");
    tx.issue_traced(&po, &format!("00-{po_trace_id}-{po_span_id}-01"))
        .await;
    tx.received_in_full_as(&po, GoodsReceiptId::parse("5000088001").unwrap())
        .await;
    let invoice = invoice_for(&po, dec!(10));
    tx.invoice(&invoice).await;

    // The PO's trace, as Jaeger keeps it: the procurement's decision under the ERP's span.
    let trace = poll(
        "Jaeger to hold the procurement's span of the PO",
        || async { jaeger.query(&format!("/api/traces/{po_trace_id}")).await },
        |trace| {
            spans_of(trace)
                .any(|s| s["operationName"] == format!("procurement process {}", topics.po_events))
        },
    )
    .await;
    let issued = spans_of(&trace)
        .find(|s| s["operationName"] == format!("procurement process {}", topics.po_events))
        .unwrap();
    assert!(
        references(issued).any(|(kind, trace, span)| kind == "CHILD_OF"
            && trace == po_trace_id
            && span == po_span_id),
        "under the ERP's span: {issued:#}"
    );
    // The match's decision on the invoice: a trace of its own, linked to the PO's.
    let operation = format!("match process {}", topics.invoice_events);
    let found = poll(
        "Jaeger to hold the match's decision on the invoice, linked to the PO's trace",
        || async {
            jaeger
                .query(&format!(
                    "/api/traces?service=p2p-pipeline&operation={}&limit=100",
                    operation.replace(' ', "%20")
                ))
                .await
        },
        |traces| {
            traces["data"].as_array().is_some_and(|traces| {
                traces
                    .iter()
                    .flat_map(spans_of)
                    .any(|s| references(s).any(|(_, trace, _)| trace == po_trace_id))
            })
        },
    )
    .await;
    assert!(found["data"].as_array().is_some_and(|t| !t.is_empty()));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pipeline.id().to_string()])
        .status();
    let stopped = pipeline.wait().unwrap();
    assert!(stopped.success(), "p2p run stops cleanly: {stopped}");
}

/// The spans of a trace Jaeger's query API answered with.
fn spans_of(trace: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    let traces = match trace.get("data") {
        Some(serde_json::Value::Array(traces)) => traces.iter().collect::<Vec<_>>(),
        _ => vec![trace],
    };
    traces
        .into_iter()
        .flat_map(|t| t["spans"].as_array().into_iter().flatten())
}

/// A Jaeger span's references: (kind, trace id, span id).
fn references(span: &serde_json::Value) -> impl Iterator<Item = (&str, &str, &str)> {
    span["references"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["refType"].as_str().unwrap_or_default(),
                r["traceID"].as_str().unwrap_or_default(),
                r["spanID"].as_str().unwrap_or_default(),
            )
        })
}
