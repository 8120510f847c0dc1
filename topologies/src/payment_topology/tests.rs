//! The payment topology's own logic, record by record, on a real RocksDB store and the
//! embedded codec: no broker (the end-to-end tests in `tests/` run it on one).

use super::*;
use crate::test_support::{input_record, state_bytes};
use futures::executor::block_on;
use p2p_avro::contracts::{
    INVOICE_EXCEPTION, INVOICE_MATCHED, ORG_CONFIG, PURCHASE_ORDER_EVENT, SUPPLIER_MASTER,
};
use p2p_avro::convert::payment::supplier_master_value;
use p2p_avro::convert::procurement::org_config_value;
use p2p_avro::convert::{
    invoice_exception_value, invoice_matched_value, purchase_order_event_value,
};
use p2p_processors::payment::Hold;
use p2p_processors::{
    Currency, ExceptionReason, InvoiceException, InvoiceNumber, Money, PurchaseOrderId,
    PurchaseOrderStepped, SupplierId,
};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// 2026-01-01: the invoices below fall due months later, so no payment run fires.
const NOW: i64 = 1_767_225_600_000;
/// 2026-03-01, as days since the epoch.
const INVOICE_DATE: i32 = 20_513;

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

struct Harness {
    processor: PaymentProcessor,
    topics: Topics,
    store: Store,
    offset: i64,
    /// The timestamp of the records fed next.
    event_time: i64,
    /// Bytes of state (keys and values) the last batch wrote.
    state_written: usize,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::default();
        Harness {
            processor: PaymentProcessor::new(topics.clone(), Arc::new(Codec::Embedded)),
            store: Store::open(dir.path(), PROCESSOR).unwrap(),
            topics,
            offset: 0,
            event_time: NOW,
            state_written: 0,
            _dir: dir,
        }
    }

    /// Processes one record, as one batch (at `NOW` on the wall clock), applies its state and
    /// returns what it produced.
    fn feed(
        &mut self,
        topic: &str,
        contract: &Contract,
        org: &OrgId,
        value: Value,
    ) -> Vec<OutputRecord> {
        self.offset += 1;
        let record = input_record(topic, contract, value, org, self.offset, self.event_time);
        let output = block_on(self.processor.process(&[record], NOW, &self.store)).unwrap();
        assert_eq!(output.stats.dead_lettered, 0, "nothing here is bad input");
        self.state_written = state_bytes(&output.state);
        self.store.write(output.state).unwrap();
        output.records
    }

    /// A batch of no records at `now` on the wall clock: the payment runs due fire. The
    /// payment parts they released.
    fn runs_at(&mut self, now: i64) -> u64 {
        let output = block_on(self.processor.process(&[], now, &self.store)).unwrap();
        self.store.write(output.state).unwrap();
        output.stats.get("parts released")
    }

    /// The payment instructions the runs due at `now` send to the bank connector, read back
    /// as the connector reads them.
    fn instructions_at(&mut self, now: i64) -> Vec<PaymentInstructionRecord> {
        let output = block_on(self.processor.process(&[], now, &self.store)).unwrap();
        self.store.write(output.state).unwrap();
        output
            .records
            .iter()
            .filter(|r| r.topic == self.topics.payment_instructions)
            .map(|r| {
                let value = block_on(Codec::Embedded.decode(r.payload.as_deref())).unwrap();
                PaymentInstructionRecord::from_value(&value).expect("the connector reads it")
            })
            .collect()
    }

    fn paying_eur(&mut self, org: &OrgId) {
        let mut config = OrgConfig::defaults(org.clone(), eur(), EventTime(NOW));
        config
            .payment
            .debtor_accounts
            .insert(eur(), "DE89370400440532013000".into());
        let topic = self.topics.org_config.clone();
        self.feed(&topic, &ORG_CONFIG, org, org_config_value(&config).unwrap());
    }

    /// The supplier of `outcome`'s invoices in the vendor master, with an account to pay to.
    fn supplier_with_account(&mut self, org: &OrgId) {
        let payee = Payee {
            supplier: SupplierId::from_u128(4),
            name: "Papeterie".into(),
            terms: PaymentTerms::DEFAULT,
            blocked: false,
            iban: Some("FR7630006000011234567890189".into()),
            bic: None,
            bank_account_changed_on: None,
        };
        let value = supplier_master_value(org, &payee, None, EventTime(NOW)).unwrap();
        let topic = self.topics.supplier_master.clone();
        self.feed(&topic, &SUPPLIER_MASTER, org, value);
    }

    /// Org 1, paying in EUR, its supplier (of `outcome`'s invoices) with an account to pay to.
    fn paying_org(&mut self) -> OrgId {
        let org = OrgId::from_u128(1);
        self.paying_eur(&org);
        self.supplier_with_account(&org);
        org
    }

    fn matched(&mut self, matched: &InvoiceMatched) -> Vec<OutputRecord> {
        let topic = self.topics.invoice_matched.clone();
        let value = invoice_matched_value(matched).unwrap();
        self.feed(&topic, &INVOICE_MATCHED, &matched.org, value)
    }

    fn outcome(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Po(step) => {
                let event = PurchaseOrderEvent::Stepped(PurchaseOrderStepped {
                    org: OrgId::from_u128(1),
                    po: PurchaseOrderId::from_u128(3),
                    step: *step,
                });
                let topic = self.topics.po_events.clone();
                let value = purchase_order_event_value(&event, "e", EventTime(NOW)).unwrap();
                self.feed(&topic, &PURCHASE_ORDER_EVENT, event.org(), value);
            }
            Outcome::Matched(m) => {
                self.matched(m);
            }
            Outcome::Blocked(e) => {
                let topic = self.topics.invoice_exceptions.clone();
                let value = invoice_exception_value(e).unwrap();
                self.feed(&topic, &INVOICE_EXCEPTION, &e.org, value);
            }
        }
    }

    /// What would be paid for `invoice` if a run came now: its parts' amounts, unless a hold
    /// stands or nothing is scheduled.
    fn payable(&self, org: &OrgId, invoice: &InvoiceId) -> Option<Vec<Money>> {
        let payment: Payment = self.store.get(&payment_key(org, invoice)).unwrap()?;
        payment
            .holds()
            .is_empty()
            .then(|| payment.parts().iter().map(|p| p.amount).collect())
    }

    fn holds(&self, org: &OrgId, invoice: &InvoiceId) -> Vec<Hold> {
        self.store
            .get::<Payment>(&payment_key(org, invoice))
            .unwrap()
            .map(|p| p.holds().iter().copied().collect())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Matched(InvoiceMatched),
    Blocked(InvoiceException),
    /// Not an outcome of the match: the invoice's PO disputed or its dispute resolved, on
    /// `po-events`, a third topic.
    Po(PurchaseOrderStep),
}

/// The `revision`-th outcome of one invoice: matched for `total`, or blocked by hand.
fn outcome(revision: u32, total: Option<Decimal>) -> Outcome {
    let org = OrgId::from_u128(1);
    let invoice = InvoiceId::from_u128(2);
    let po = PurchaseOrderId::from_u128(3);
    let supplier = SupplierId::from_u128(4);
    let number = InvoiceNumber::parse("SI-1").unwrap();
    match total {
        Some(total) => Outcome::Matched(InvoiceMatched {
            org,
            invoice,
            kind: DocumentKind::Invoice,
            po,
            supplier,
            number,
            total: Money::new(total, eur()),
            lines: vec![],
            invoice_date: INVOICE_DATE,
            matched_at: EventTime(NOW),
            warnings: vec![],
            revision,
        }),
        None => Outcome::Blocked(InvoiceException {
            org,
            invoice,
            kind: DocumentKind::Invoice,
            po,
            supplier,
            number,
            total: Money::new(Decimal::ONE_HUNDRED, eur()),
            reasons: vec![ExceptionReason::ManualHold {
                reason: "query".into(),
            }],
            raised_at: EventTime(NOW),
            revision,
        }),
    }
}

#[test]
fn a_block_read_before_the_match_it_follows_keeps_that_match_from_being_scheduled() {
    let mut h = Harness::new();
    let org = OrgId::from_u128(1);
    let invoice = InvoiceId::from_u128(2);
    h.paying_eur(&org);
    h.outcome(&outcome(2, None));
    h.outcome(&outcome(1, Some(Decimal::ONE_HUNDRED)));
    assert_eq!(h.payable(&org, &invoice), None);
    // Released: the newer match schedules it.
    h.outcome(&outcome(3, Some(Decimal::ONE_HUNDRED)));
    assert_eq!(
        h.payable(&org, &invoice),
        Some(vec![Money::new(Decimal::ONE_HUNDRED, eur())])
    );
}

#[test]
fn a_block_after_the_match_holds_the_payment_until_it_matches_again() {
    let mut h = Harness::new();
    let org = OrgId::from_u128(1);
    let invoice = InvoiceId::from_u128(2);
    h.paying_eur(&org);
    h.outcome(&outcome(1, Some(Decimal::ONE_HUNDRED)));
    h.outcome(&outcome(2, None));
    assert_eq!(h.holds(&org, &invoice), vec![Hold::InvoiceBlocked]);
    h.outcome(&outcome(3, Some(Decimal::TEN)));
    assert_eq!(
        h.payable(&org, &invoice),
        Some(vec![Money::new(Decimal::TEN, eur())])
    );
}

#[test]
fn what_a_match_causes_carries_the_event_time_of_that_match() {
    let mut h = Harness::new();
    let org = OrgId::from_u128(1);
    h.paying_eur(&org);
    // Read a minute after it was matched.
    h.event_time = NOW - 60_000;
    let Outcome::Matched(matched) = outcome(1, Some(Decimal::ONE_HUNDRED)) else {
        unreachable!("a total makes a match")
    };
    let produced = h.matched(&matched);
    assert!(
        produced
            .iter()
            .any(|r| r.topic == h.topics.payment_schedule),
        "the match schedules a payment"
    );
    assert!(produced.iter().all(|r| r.timestamp == Some(NOW - 60_000)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// DOMAIN.md: any permutation of the same documents' arrival order ends in the same
    /// outcome. One invoice is decided again and again (blocked by hand, released,
    /// corrected); the match writes each outcome to `invoice-matched` or `invoice-exceptions`
    /// and the payment topology reads the two topics in any order, some records twice. What
    /// it would pay ends as the newest outcome says: nothing while it blocks, else that
    /// match's amount, once.
    #[test]
    fn what_is_payable_follows_the_newest_outcome_whatever_order_the_two_topics_are_read_in(
        totals in proptest::collection::vec(proptest::option::of(1i64..1_000_000), 1..6),
        order in Just(()).prop_perturb(|_, mut rng| {
            let mut order: Vec<usize> = (0..12).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            order
        }),
        again in proptest::collection::vec(0usize..12, 0..4),
        dispute in proptest::option::of((0usize..16, proptest::option::of(0usize..16))),
    ) {
        let outcomes: Vec<Outcome> = totals
            .iter()
            .enumerate()
            .map(|(i, t)| outcome(i as u32 + 1, t.map(|c| Decimal::new(c, 2))))
            .collect();
        let org = OrgId::from_u128(1);
        let invoice = InvoiceId::from_u128(2);
        let mut h = Harness::new();
        h.paying_eur(&org);
        let mut arrival: Vec<&Outcome> = order
            .iter()
            .chain(&again)
            .filter_map(|&i| outcomes.get(i))
            .collect();
        // The PO disputed somewhere among them (one topic: its resolution comes after it).
        let resolved = dispute.is_some_and(|(_, resolution)| resolution.is_some());
        let steps = [
            Outcome::Po(PurchaseOrderStep::Disputed),
            Outcome::Po(PurchaseOrderStep::DisputeResolved),
        ];
        if let Some((at, resolution)) = dispute {
            let at = at.min(arrival.len());
            arrival.insert(at, &steps[0]);
            if let Some(later) = resolution {
                arrival.insert((at + 1 + later).min(arrival.len()), &steps[1]);
            }
        }
        for outcome in arrival {
            h.outcome(outcome);
        }
        let expected = match outcomes.last().unwrap() {
            Outcome::Matched(m) if dispute.is_none() || resolved => Some(vec![m.total]),
            _ => None,
        };
        prop_assert_eq!(h.payable(&org, &invoice), expected);
    }
}

/// Invoice `n` of org 1, matched for 100 EUR: due 30 days after `INVOICE_DATE` on the
/// defaults' terms (2026-03-31), months after `NOW`.
fn matched_invoice(n: u128) -> InvoiceMatched {
    let Outcome::Matched(mut matched) = outcome(1, Some(Decimal::ONE_HUNDRED)) else {
        unreachable!("a total makes a match")
    };
    matched.invoice = InvoiceId::from_u128(1_000 + n);
    matched.po = PurchaseOrderId::from_u128(1_000_000 + n);
    matched.number = InvoiceNumber::parse(&format!("SI-{n}")).unwrap();
    matched
}

/// Wall-clock millis of midnight (UTC) of `date`.
fn midnight(date: NaiveDate) -> i64 {
    i64::from(p2p_avro::convert::payment::days_of(date)) * DAY_MS
}

#[test]
fn the_thousandth_payment_waiting_for_its_run_writes_no_more_state_than_the_first() {
    let mut h = Harness::new();
    let org = h.paying_org();
    h.matched(&matched_invoice(1));
    let first = h.state_written;
    for n in 2..=1_000 {
        h.matched(&matched_invoice(n));
    }
    // A queue written whole grew by about 40 bytes a waiting invoice: 40 KB by now.
    assert!(
        h.state_written <= first + 16,
        "the 1,000th wrote {} bytes of state, the first {first}",
        h.state_written
    );
    let payment: Payment = h
        .store
        .get(&payment_key(&org, &InvoiceId::from_u128(1_001)))
        .unwrap()
        .unwrap();
    let due = payment.next_due().unwrap();
    assert_eq!(
        h.runs_at(midnight(due) - 1),
        0,
        "nothing is due the day before"
    );
    assert_eq!(
        h.runs_at(midnight(due)),
        1_000,
        "the run pays each of them once"
    );
    assert_eq!(
        h.runs_at(midnight(due) + 2 * DAY_MS),
        0,
        "and nothing is left waiting"
    );
}

#[test]
fn a_run_of_more_payments_than_one_instruction_carries_goes_out_as_several_the_bank_can_read() {
    let mut h = Harness::new();
    let org = h.paying_org();
    for n in 1..=1_001 {
        h.matched(&matched_invoice(n));
    }
    let payment: Payment = h
        .store
        .get(&payment_key(&org, &InvoiceId::from_u128(1_001)))
        .unwrap()
        .unwrap();
    let due = payment.next_due().unwrap();
    // One instruction of 1,001 payments was refused by its own readers (more than the 1,000
    // entries the contract accepts): the bank connector dead-lettered the whole run.
    let instructions = h.instructions_at(midnight(due));
    let sizes: Vec<usize> = instructions.iter().map(|i| i.payments.len()).collect();
    assert_eq!(sizes, vec![1_000, 1]);
    assert_ne!(instructions[0].run_id, instructions[1].run_id);
    for instruction in &instructions {
        let sum: Decimal = instruction.payments.iter().map(|p| p.amount.amount()).sum();
        assert_eq!(instruction.total.amount(), sum);
    }
    let paid: HashSet<&InvoiceId> = instructions
        .iter()
        .flat_map(|i| i.payments.iter().map(|p| &p.invoice))
        .collect();
    assert_eq!(paid.len(), 1_001, "each invoice paid once");
}

#[test]
fn payments_queued_whole_before_adr_0011_are_paid_by_their_run() {
    let mut h = Harness::new();
    let org = h.paying_org();
    h.matched(&matched_invoice(1));
    h.matched(&matched_invoice(2));
    // Rewritten as the layout before ADR 0011 kept it: the queue whole, no entry a slot.
    let key = StateKey::new(&org, ORG_PAYMENTS);
    let mut payments: OrgPayments = h.store.get(&key).unwrap().unwrap();
    let mut legacy = StoreBatch::default();
    let due = payments.run_queue.next().unwrap();
    for slot in payments.run_queue.take_due(due) {
        let invoice: InvoiceId = h.store.get(&queue_key(&org, slot)).unwrap().unwrap();
        payments
            .whole_queue
            .due
            .entry(slot.date)
            .or_default()
            .insert(invoice);
        legacy.delete(&queue_key(&org, slot));
    }
    legacy.put(&key, &payments).unwrap();
    h.store.write(legacy).unwrap();
    let stored: OrgPayments = h.store.get(&key).unwrap().unwrap();
    assert!(
        !stored.whole_queue.due.is_empty(),
        "kept as before: {stored:?}"
    );

    // A third invoice scheduled meanwhile joins them.
    h.matched(&matched_invoice(3));
    assert_eq!(h.runs_at(midnight(due)), 3);
    assert_eq!(h.runs_at(midnight(due) + 2 * DAY_MS), 0);
}

/// ADR 0027: an invoice matched before its org named a debtor account waits, and its trace
/// and its links (its PO's) wait with it: the run that pays it once the account is named
/// links to them, as it would had it been scheduled at once.
#[test]
fn an_invoice_that_waited_for_a_debtor_account_keeps_its_traces_until_its_run() {
    const OUTCOME: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const PO: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut h = Harness::new();
    let org = OrgId::from_u128(1);
    h.supplier_with_account(&org);
    let matched = matched_invoice(1);
    let topic = h.topics.invoice_matched.clone();
    let mut record = input_record(
        &topic,
        &INVOICE_MATCHED,
        invoice_matched_value(&matched).unwrap(),
        &org,
        100,
        NOW,
    );
    record.headers = vec![
        ("traceparent".to_owned(), OUTCOME.as_bytes().to_vec()),
        (crate::trace::LINKS.to_owned(), PO.as_bytes().to_vec()),
    ];
    let output = block_on(h.processor.process(&[record], NOW, &h.store)).unwrap();
    h.store.write(output.state).unwrap();
    assert!(
        h.store
            .get::<Payment>(&payment_key(&org, &matched.invoice))
            .unwrap()
            .is_none(),
        "no debtor account: it waits"
    );

    h.paying_eur(&org);
    let payment: Payment = h
        .store
        .get(&payment_key(&org, &matched.invoice))
        .unwrap()
        .expect("scheduled once the account is named");
    let due = midnight(payment.next_due().unwrap());
    let output = block_on(h.processor.process(&[], due, &h.store)).unwrap();
    let instruction = output
        .records
        .iter()
        .find(|r| r.topic == h.topics.payment_instructions)
        .expect("the run's instruction");
    let links = crate::trace::links_of(&instruction.headers);
    assert!(
        links.contains(&OUTCOME.to_owned()) && links.contains(&PO.to_owned()),
        "the run links to the outcome's trace and the PO's: {links:?}"
    );
}
