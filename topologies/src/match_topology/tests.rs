//! The match topology's own state handling, batch by batch, on a real RocksDB store and the
//! embedded codec: no broker (the end-to-end tests in `tests/` run it on one).

use super::*;
use crate::test_support::{input_record, state_bytes};
use apache_avro::types::Value;
use futures::executor::block_on;
use p2p_avro::contracts::{INVOICE_EVENT, PURCHASE_ORDER_EVENT};
use p2p_avro::convert::{invoice_event_value, purchase_order_event_value};
use p2p_avro::Contract;
use p2p_processors::{
    Currency, DocumentKind, InvoiceLine, InvoiceNumber, InvoiceReceived, LineNumber, Money,
    PurchaseOrderIssued, PurchaseOrderLine, Quantity, UnitPrice,
};
use rust_decimal::Decimal;

/// 2026-01-01.
const T: i64 = 1_767_225_600_000;

struct Harness {
    processor: MatchProcessor,
    topics: Topics,
    store: Store,
    org: OrgId,
    supplier: SupplierId,
    offset: i64,
    /// The keys the last batch wrote.
    written: Vec<Vec<u8>>,
    /// The records the last batch produced.
    produced: Vec<OutputRecord>,
    /// Headers the next PO issued carries.
    po_headers: Vec<(String, Vec<u8>)>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::default();
        Harness {
            processor: MatchProcessor::new(
                topics.clone(),
                Tolerance::default(),
                Arc::new(Codec::Embedded),
            ),
            store: Store::open(dir.path(), PROCESSOR).unwrap(),
            topics,
            org: OrgId::random(),
            supplier: SupplierId::random(),
            offset: 0,
            written: Vec::new(),
            produced: Vec::new(),
            po_headers: Vec::new(),
            _dir: dir,
        }
    }

    /// Processes one record as one batch and applies its state: what the batch did.
    fn feed(&mut self, topic: &str, contract: &Contract, value: Value) -> Fed {
        self.feed_with(topic, contract, value, Vec::new())
    }

    /// The same, the record carrying `headers`.
    fn feed_with(
        &mut self,
        topic: &str,
        contract: &Contract,
        value: Value,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Fed {
        self.offset += 1;
        let timestamp = T + self.offset;
        let mut record = input_record(topic, contract, value, &self.org, self.offset, timestamp);
        record.headers = headers;
        let output = block_on(self.processor.process(&[record], T, &self.store)).unwrap();
        assert_eq!(output.stats.dead_lettered, 0, "nothing here is bad input");
        let fed = Fed {
            duplicates: output.stats.labelled(EXCEPTION_REASONS, "DUPLICATE"),
            state_bytes: state_bytes(&output.state),
        };
        self.written = output
            .state
            .changes()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        self.produced = output.records.clone();
        self.store.write(output.state).unwrap();
        fed
    }

    /// Issues a PO of one line (10 at 9.50 EUR, no receipt needed) and invoices it in full:
    /// the invoice batch's output.
    fn po_and_invoice(&mut self, number: &str, invoice: InvoiceId) -> Fed {
        let eur = Currency::parse("EUR").unwrap();
        let line = LineNumber::new(1).unwrap();
        let quantity = Quantity::new(Decimal::from(10)).unwrap();
        let price = UnitPrice::new(Money::new(Decimal::new(950, 2), eur)).unwrap();
        let po = PurchaseOrderIssued {
            org: self.org.clone(),
            po: PurchaseOrderId::random(),
            supplier: self.supplier.clone(),
            currency: eur,
            lines: vec![PurchaseOrderLine {
                line,
                description: "paper".into(),
                quantity,
                unit_price: price,
                receipt_required: false,
                inspection_required: false,
            }],
            requisition: None,
        };
        let at = EventTime(T + self.offset);
        let value =
            purchase_order_event_value(&PurchaseOrderEvent::Issued(po.clone()), "po", at).unwrap();
        let topic = self.topics.po_events.clone();
        let headers = std::mem::take(&mut self.po_headers);
        self.feed_with(&topic, &PURCHASE_ORDER_EVENT, value, headers);
        let invoice = InvoiceReceived {
            payment_block: None,
            posted_by: None,
            org: self.org.clone(),
            kind: DocumentKind::Invoice,
            invoice,
            supplier: self.supplier.clone(),
            number: InvoiceNumber::parse(number).unwrap(),
            po: po.po.clone(),
            currency: eur,
            lines: vec![InvoiceLine {
                line,
                quantity,
                unit_price: price,
            }],
            total: Money::new(Decimal::from(95), eur),
            // Each its own date: equal amounts on equal dates are duplicates.
            invoice_date: 20_000 + self.offset as i32,
        };
        let value = invoice_event_value(&invoice, "invoice", at).unwrap();
        let topic = self.topics.invoice_events.clone();
        self.feed(&topic, &INVOICE_EVENT, value)
    }
}

/// What a batch did.
#[derive(Debug, Clone, Copy)]
struct Fed {
    /// Invoices found to be duplicates.
    duplicates: u64,
    /// Bytes of state written (keys and values).
    state_bytes: usize,
}

#[test]
fn a_suppliers_thousandth_invoice_writes_no_more_state_than_its_first() {
    let mut harness = Harness::new();
    let first = harness.po_and_invoice("SI-1", InvoiceId::random());
    assert_eq!(first.duplicates, 0);
    let mut last = first;
    for n in 2..=1_000 {
        last = harness.po_and_invoice(&format!("SI-{n}"), InvoiceId::random());
        assert_eq!(last.duplicates, 0, "invoice {n} repeats none");
    }
    // A register written whole grew by about 120 bytes an invoice: 120 KB by now.
    assert!(
        last.state_bytes <= first.state_bytes + 64,
        "the 1,000th invoice wrote {} bytes of state, the first {}",
        last.state_bytes,
        first.state_bytes
    );
    // And the register still knows the first invoice.
    let again = harness.po_and_invoice("si 0001", InvoiceId::random());
    assert_eq!(again.duplicates, 1);
}

#[test]
fn a_batch_writes_back_only_what_it_changed_not_the_settings_it_read() {
    let mut harness = Harness::new();
    let tolerances = supplier_tolerances_key(&harness.org, &harness.supplier);
    let config = StateKey::new(&harness.org, CONFIG_ENTITY);
    harness.po_and_invoice("SI-1", InvoiceId::random());
    // The invoice's batch read the supplier's tolerance keys (it has none) to match it: they
    // are not written back, so not put on the changelog batch after batch.
    assert!(
        !harness.written.is_empty(),
        "the PO's state and register are written"
    );
    assert!(
        !harness.written.contains(&tolerances.as_bytes().to_vec()),
        "the supplier's tolerance keys were only read"
    );
    assert!(!harness.written.contains(&config.as_bytes().to_vec()));
}

#[test]
fn a_duplicate_of_an_invoice_in_a_register_stored_whole_before_adr_0011_is_found() {
    let mut harness = Harness::new();
    let earlier = InvoiceId::random();
    let mut whole = DuplicateRegister::default();
    whole.check(
        &InvoiceFacts {
            invoice: earlier,
            supplier: harness.supplier.clone(),
            po: PurchaseOrderId::random(),
            kind: DocumentKind::Invoice,
            number: InvoiceNumber::parse("SI-77").unwrap(),
            gross: Money::new(Decimal::from(1), Currency::parse("EUR").unwrap()),
            invoice_date: 19_000,
        },
        &DuplicatePolicy::default(),
    );
    let mut legacy = StoreBatch::default();
    legacy
        .put(
            &StateKey::new(&harness.org, &format!("dup/{}", harness.supplier)),
            &whole,
        )
        .unwrap();
    harness.store.write(legacy).unwrap();

    let fresh = harness.po_and_invoice("SI-78", InvoiceId::random());
    assert_eq!(fresh.duplicates, 0);
    let repeat = harness.po_and_invoice("si-0077", InvoiceId::random());
    assert_eq!(repeat.duplicates, 1);
}

/// ADR 0027: an invoice's outcome carries its own trace (the invoice's, started for it here)
/// and links to the trace its PO was issued in, which the PO's state keeps.
#[test]
fn an_invoices_outcome_links_to_the_trace_its_po_was_issued_in() {
    use p2p_engine::trace::{context_of, links_of};
    let po_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut harness = Harness::new();
    harness.po_headers = vec![("traceparent".to_owned(), po_trace.as_bytes().to_vec())];
    harness.po_and_invoice("SI-1", InvoiceId::random());
    let matched = harness
        .produced
        .iter()
        .find(|r| r.topic == harness.topics.invoice_matched)
        .expect("the invoice matched");
    assert_eq!(links_of(&matched.headers), vec![po_trace.to_owned()]);
    let own = context_of(&matched.headers).expect("a trace of its own");
    assert_ne!(
        own.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let status = harness
        .produced
        .iter()
        .find(|r| r.topic == harness.topics.invoice_status)
        .expect("the invoice's status");
    assert_eq!(links_of(&status.headers), vec![po_trace.to_owned()]);

    // A PO issued without a trace: its invoices' outcomes link to nothing.
    harness.po_and_invoice("SI-2", InvoiceId::random());
    let matched = harness
        .produced
        .iter()
        .find(|r| r.topic == harness.topics.invoice_matched)
        .expect("the invoice matched");
    assert!(links_of(&matched.headers).is_empty());
}
