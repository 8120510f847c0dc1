use super::*;
use crate::tolerance_keys::{Combine, Limit, ToleranceKeys};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

struct Fixture {
    org: OrgId,
    po: PurchaseOrderId,
    supplier: SupplierId,
    eur: Currency,
}

impl Fixture {
    fn new() -> Self {
        Self {
            org: OrgId::from_u128(1),
            po: PurchaseOrderId::from_u128(2),
            supplier: SupplierId::from_u128(3),
            eur: Currency::parse("EUR").unwrap(),
        }
    }

    fn state(&self) -> PurchaseOrderMatch {
        PurchaseOrderMatch::new(self.org.clone(), self.po.clone())
    }

    fn price(&self, amount: Decimal) -> UnitPrice {
        UnitPrice::new(Money::new(amount, self.eur)).unwrap()
    }

    /// Line 1: 100 units at 10.00 (goods); line 2: 1 unit at 500.00 (a service, two-way).
    fn issued(&self) -> MatchInput {
        MatchInput::PurchaseOrder(PurchaseOrderEvent::Issued(PurchaseOrderIssued {
            org: self.org.clone(),
            po: self.po.clone(),
            supplier: self.supplier.clone(),
            currency: self.eur,
            lines: vec![
                PurchaseOrderLine {
                    line: LineNumber::new(1).unwrap(),
                    description: "bolts".into(),
                    quantity: qty(dec!(100)),
                    unit_price: self.price(dec!(10.00)),
                    receipt_required: true,
                    inspection_required: false,
                },
                PurchaseOrderLine {
                    line: LineNumber::new(2).unwrap(),
                    description: "installation".into(),
                    quantity: qty(dec!(1)),
                    unit_price: self.price(dec!(500.00)),
                    receipt_required: false,
                    inspection_required: false,
                },
            ],
            requisition: None,
        }))
    }

    fn cancelled(&self) -> MatchInput {
        MatchInput::PurchaseOrder(PurchaseOrderEvent::Cancelled(PurchaseOrderCancelled {
            org: self.org.clone(),
            po: self.po.clone(),
        }))
    }

    fn receipt(&self, id: u128, received: Decimal, returned: Decimal) -> MatchInput {
        MatchInput::GoodsReceipt(GoodsReceived {
            org: self.org.clone(),
            grn: GoodsReceiptId::from_u128(id),
            po: self.po.clone(),
            lines: vec![ReceiptLine {
                line: LineNumber::new(1).unwrap(),
                received: qty(received),
                returned: qty(returned),
                expected: None,
                accepted: Quantity::ZERO,
            }],
            resolves: None,
        })
    }

    /// An invoice billing `quantity` of line 1 at `price`, with the total those two imply.
    fn invoice(&self, id: u128, quantity: Decimal, price: Decimal) -> InvoiceReceived {
        InvoiceReceived {
            payment_block: None,
            posted_by: None,
            org: self.org.clone(),
            invoice: InvoiceId::from_u128(id),
            kind: DocumentKind::Invoice,
            supplier: self.supplier.clone(),
            number: InvoiceNumber::parse(&format!("INV-{id}")).unwrap(),
            po: self.po.clone(),
            currency: self.eur,
            lines: vec![InvoiceLine {
                line: LineNumber::new(1).unwrap(),
                quantity: qty(quantity),
                unit_price: self.price(price),
            }],
            total: Money::new(quantity * price, self.eur),
            invoice_date: 20_000,
        }
    }
}

fn qty(value: Decimal) -> Quantity {
    Quantity::new(value).unwrap()
}

const T0: EventTime = EventTime(1_700_000_000_000);

fn apply(state: &mut PurchaseOrderMatch, input: MatchInput) -> Vec<MatchOutput> {
    decisions(state.apply(&input, T0, &MatchContext::default()).unwrap())
}

/// The outcomes among `outputs`, without the statuses published beside them (tested on their
/// own below).
fn decisions(outputs: Vec<MatchOutput>) -> Vec<MatchOutput> {
    outputs
        .into_iter()
        .filter(|o| !matches!(o, MatchOutput::Status(_)))
        .collect()
}

fn invoice(i: InvoiceReceived) -> MatchInput {
    MatchInput::Invoice(i)
}

fn reasons(outputs: &[MatchOutput]) -> Vec<ExceptionReason> {
    match outputs {
        [MatchOutput::Exception(e)] => e.reasons.clone(),
        other => panic!("expected one exception, got {other:?}"),
    }
}

fn line(n: i64) -> LineNumber {
    LineNumber::new(n).unwrap()
}

#[test]
fn an_invoice_for_received_goods_at_the_po_price_is_matched_and_consumes_the_receipt() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let out = apply(&mut s, invoice(f.invoice(20, dec!(60), dec!(10.00))));
    match out.as_slice() {
        [MatchOutput::Matched(m)] => {
            assert_eq!(m.total, Money::new(dec!(600.00), f.eur));
            assert_eq!(m.invoice, InvoiceId::from_u128(20));
        }
        other => panic!("expected a match, got {other:?}"),
    }
    assert_eq!(s.invoiced(line(1)), qty(dec!(60)));
}

#[test]
fn a_price_two_percent_above_the_po_is_matched_but_more_is_an_exception() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let ok = apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.20))));
    // Past the lower limit (none by default): matched, and the clerk is told by how much.
    match ok.as_slice() {
        [MatchOutput::Matched(m)] => assert_eq!(
            m.warnings,
            vec![
                ExceptionReason::PriceVariance {
                    line: line(1),
                    expected: Money::new(dec!(10.00), f.eur),
                    actual: Money::new(dec!(10.20), f.eur),
                },
                ExceptionReason::AmountVariance {
                    expected: Money::new(dec!(100.00), f.eur),
                    actual: Money::new(dec!(102.00), f.eur),
                }
            ]
        ),
        other => panic!("expected a match, got {other:?}"),
    }

    // The total follows the billed price, so the amount is over tolerance too.
    let out = apply(&mut s, invoice(f.invoice(21, dec!(10), dec!(10.21))));
    assert_eq!(
        reasons(&out),
        vec![
            ExceptionReason::PriceVariance {
                line: line(1),
                expected: Money::new(dec!(10.00), f.eur),
                actual: Money::new(dec!(10.21), f.eur),
            },
            ExceptionReason::AmountVariance {
                expected: Money::new(dec!(100.00), f.eur),
                actual: Money::new(dec!(102.10), f.eur),
            }
        ]
    );
    assert_eq!(reasons(&out)[0].delta(), Some(dec!(0.21)));
}

#[test]
fn an_invoice_before_its_receipt_is_pending_and_matched_when_the_goods_arrive() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    let out = apply(&mut s, invoice(f.invoice(20, dec!(40), dec!(10.00))));
    match out.as_slice() {
        [MatchOutput::Pending(p)] => assert_eq!(
            p.waiting_for,
            vec![PendingReason::Receipt {
                line: line(1),
                available: Quantity::ZERO,
                billed: qty(dec!(40)),
            }]
        ),
        other => panic!("expected pending, got {other:?}"),
    }
    // A partial receipt that does not cover the invoice changes nothing.
    assert!(apply(&mut s, f.receipt(10, dec!(30), dec!(0))).is_empty());
    let out = apply(&mut s, f.receipt(11, dec!(10), dec!(0)));
    assert!(
        matches!(out.as_slice(), [MatchOutput::Matched(m)] if m.invoice == InvoiceId::from_u128(20))
    );
}

#[test]
fn partial_receipts_accumulate_and_returns_subtract() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(30), dec!(0)));
    apply(&mut s, f.receipt(11, dec!(25), dec!(5)));
    assert_eq!(s.received(line(1)), qty(dec!(50)));
}

#[test]
fn a_redelivered_receipt_is_counted_once() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(30), dec!(0)));
    apply(&mut s, f.receipt(10, dec!(30), dec!(0)));
    assert_eq!(s.received(line(1)), qty(dec!(30)));
}

#[test]
fn billed_quantity_across_invoices_never_exceeds_what_was_received() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(50), dec!(0)));
    assert!(matches!(
        apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00)))).as_slice(),
        [MatchOutput::Matched(_)]
    ));
    // The receipt is used up: the next invoice waits for more goods.
    assert!(matches!(
        apply(&mut s, invoice(f.invoice(21, dec!(10), dec!(10.00)))).as_slice(),
        [MatchOutput::Pending(_)]
    ));
}

#[test]
fn billing_more_than_was_ordered_is_a_quantity_exception_with_the_delta() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let out = apply(&mut s, invoice(f.invoice(20, dec!(110), dec!(10.00))));
    let r = reasons(&out);
    assert_eq!(
        r,
        vec![ExceptionReason::QuantityVariance {
            line: line(1),
            expected: qty(dec!(100)),
            actual: qty(dec!(110)),
        }]
    );
    assert_eq!(r[0].delta(), Some(dec!(10)));
}

#[test]
fn a_total_that_does_not_add_up_is_an_amount_exception() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let mut inv = f.invoice(20, dec!(10), dec!(10.00));
    inv.total = Money::new(dec!(150.00), f.eur);
    let r = reasons(&apply(&mut s, invoice(inv)));
    assert_eq!(
        r,
        vec![ExceptionReason::AmountVariance {
            expected: Money::new(dec!(100.00), f.eur),
            actual: Money::new(dec!(150.00), f.eur),
        }]
    );
    assert_eq!(r[0].delta(), Some(dec!(50.00)));
}

#[test]
fn every_reason_is_reported_at_once() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    let mut inv = f.invoice(20, dec!(5), dec!(12.00));
    inv.supplier = SupplierId::from_u128(99);
    inv.lines.push(InvoiceLine {
        line: line(7),
        quantity: qty(dec!(1)),
        unit_price: f.price(dec!(1)),
    });
    let kinds: Vec<ReasonKind> = reasons(&apply(&mut s, invoice(inv)))
        .iter()
        .map(ExceptionReason::kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            ReasonKind::SupplierMismatch,
            ReasonKind::PriceVariance,
            ReasonKind::UnknownPoLine,
            ReasonKind::NotReceived,
        ]
    );
}

#[test]
fn an_invoice_in_another_currency_is_a_currency_exception_not_a_price_one() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let usd = Currency::parse("USD").unwrap();
    let mut inv = f.invoice(20, dec!(10), dec!(10.00));
    inv.currency = usd;
    inv.lines[0].unit_price = UnitPrice::new(Money::new(dec!(11), usd)).unwrap();
    inv.total = Money::new(dec!(110), usd);
    assert_eq!(
        reasons(&apply(&mut s, invoice(inv))),
        vec![ExceptionReason::CurrencyMismatch {
            expected: f.eur,
            actual: usd
        }]
    );
}

#[test]
fn a_service_line_needs_no_receipt() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    let mut inv = f.invoice(20, dec!(1), dec!(500.00));
    inv.lines[0].line = line(2);
    assert!(matches!(
        apply(&mut s, invoice(inv)).as_slice(),
        [MatchOutput::Matched(_)]
    ));
}

#[test]
fn an_invoice_before_its_po_waits_for_the_po() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let out = apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.00))));
    assert!(matches!(out.as_slice(),
        [MatchOutput::Pending(p)] if p.waiting_for == vec![PendingReason::PurchaseOrder]));
    let out = apply(&mut s, f.issued());
    assert!(matches!(out.as_slice(), [MatchOutput::Matched(_)]));
}

#[test]
fn cancelling_a_po_turns_its_pending_invoices_into_exceptions_and_rejects_later_receipts() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.00))));
    let out = apply(&mut s, f.cancelled());
    assert_eq!(reasons(&out), vec![ExceptionReason::PoCancelled]);
    let out = apply(&mut s, f.receipt(10, dec!(10), dec!(0)));
    assert!(matches!(out.as_slice(), [MatchOutput::ReceiptRejected(_)]));
    assert_eq!(s.received(line(1)), Quantity::ZERO);
}

#[test]
fn a_redelivered_invoice_gets_the_same_answer_and_consumes_nothing_twice() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let first = apply(&mut s, invoice(f.invoice(20, dec!(60), dec!(10.00))));
    let again = apply(&mut s, invoice(f.invoice(20, dec!(60), dec!(10.00))));
    assert_eq!(first, again);
    assert_eq!(s.invoiced(line(1)), qty(dec!(60)));
}

#[test]
fn a_corrected_invoice_is_matched_again_on_its_new_content() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let out = apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(11.00))));
    assert!(matches!(out.as_slice(), [MatchOutput::Exception(_)]));
    let out = apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.00))));
    assert!(matches!(out.as_slice(), [MatchOutput::Matched(_)]));
    // Correcting a matched invoice gives back what it had consumed.
    apply(&mut s, invoice(f.invoice(20, dec!(4), dec!(10.00))));
    assert_eq!(s.invoiced(line(1)), qty(dec!(4)));
}

fn blocked(mut invoice: InvoiceReceived, reason: &str) -> InvoiceReceived {
    invoice.payment_block = Some(reason.into());
    invoice
}

fn revision(outputs: &[MatchOutput]) -> u32 {
    match outputs {
        [MatchOutput::Matched(m)] => m.revision,
        [MatchOutput::Exception(e)] => e.revision,
        other => panic!("expected one decided outcome, got {other:?}"),
    }
}

#[test]
fn a_manually_blocked_invoice_is_held_whatever_the_match_finds_until_resent_without_the_block() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let clean = f.invoice(20, dec!(60), dec!(10.00));
    let out = apply(
        &mut s,
        invoice(blocked(clean.clone(), "price under negotiation")),
    );
    assert_eq!(
        reasons(&out),
        vec![ExceptionReason::ManualHold {
            reason: "price under negotiation".into()
        }]
    );
    assert_eq!(
        s.invoiced(line(1)),
        Quantity::ZERO,
        "a held invoice consumes nothing"
    );
    // Facts changing re-check the automatic holds; a manual one stays as it is.
    assert!(apply(&mut s, f.receipt(11, dec!(0), dec!(0))).is_empty());
    assert_eq!(
        apply(
            &mut s,
            invoice(blocked(clean.clone(), "price under negotiation"))
        ),
        out,
        "a re-delivered blocked invoice gets the same answer"
    );
    let released = apply(&mut s, invoice(clean));
    assert!(matches!(released.as_slice(), [MatchOutput::Matched(_)]));
    assert_eq!(revision(&released), revision(&out) + 1);
    assert_eq!(s.invoiced(line(1)), qty(dec!(60)));
}

#[test]
fn blocking_a_matched_invoice_holds_it_and_gives_back_what_it_consumed() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let clean = f.invoice(20, dec!(60), dec!(10.00));
    let matched = apply(&mut s, invoice(clean.clone()));
    assert_eq!(revision(&matched), 1);
    let held = apply(&mut s, invoice(blocked(clean.clone(), "supplier query")));
    assert!(matches!(held.as_slice(), [MatchOutput::Exception(_)]));
    assert_eq!(revision(&held), 2);
    assert_eq!(s.invoiced(line(1)), Quantity::ZERO);
    let released = apply(&mut s, invoice(clean));
    assert_eq!(revision(&released), 3);
    assert_eq!(s.invoiced(line(1)), qty(dec!(60)));
}

#[test]
fn a_blocked_invoice_waiting_for_goods_names_the_block_and_the_missing_goods() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(40), dec!(0)));
    let out = apply(
        &mut s,
        invoice(blocked(f.invoice(20, dec!(60), dec!(10.00)), "dispute")),
    );
    assert_eq!(
        reasons(&out),
        vec![
            ExceptionReason::ManualHold {
                reason: "dispute".into()
            },
            ExceptionReason::NotReceived {
                line: line(1),
                expected: qty(dec!(40)),
                actual: qty(dec!(60)),
            },
        ]
    );
    // The goods coming changes what is reported, not that it is held.
    let out = apply(&mut s, f.receipt(11, dec!(20), dec!(0)));
    assert_eq!(
        reasons(&out),
        vec![ExceptionReason::ManualHold {
            reason: "dispute".into()
        }]
    );
}

#[test]
fn a_document_of_another_org_is_rejected_not_applied() {
    let f = Fixture::new();
    let mut s = f.state();
    let mut inv = f.invoice(20, dec!(1), dec!(10.00));
    inv.org = OrgId::from_u128(666);
    let err = s
        .apply(&invoice(inv), T0, &MatchContext::default())
        .unwrap_err();
    assert!(matches!(err, MatchError::OrgMismatch { .. }));
    assert_eq!(s, f.state());
}

proptest! {
    /// Whatever invoices and receipts arrive, in whatever amounts, the quantity consumed by
    /// matched invoices never exceeds what was received plus the tolerance.
    #[test]
    fn matched_quantity_never_exceeds_received_plus_tolerance(
        steps in proptest::collection::vec((any::<bool>(), 1u32..80), 1..30)
    ) {
        let f = Fixture::new();
        let mut s = f.state();
        apply(&mut s, f.issued());
        for (i, (is_receipt, amount)) in steps.into_iter().enumerate() {
            let amount = Decimal::from(amount);
            let input = if is_receipt {
                f.receipt(1000 + i as u128, amount, Decimal::ZERO)
            } else {
                invoice(f.invoice(2000 + i as u128, amount, dec!(10.00)))
            };
            apply(&mut s, input);
            let ceiling = s.received(line(1)).value() * dec!(1.02);
            prop_assert!(s.invoiced(line(1)).value() <= ceiling);
        }
    }
}

#[test]
fn a_duplicate_is_an_exception_naming_the_original_and_consumes_nothing() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00))));
    let context = MatchContext {
        duplicate_of: Some(InvoiceId::from_u128(20)),
        ..MatchContext::default()
    };
    let out = decisions(
        s.apply(&invoice(f.invoice(21, dec!(50), dec!(10.00))), T0, &context)
            .unwrap(),
    );
    assert_eq!(
        reasons(&out),
        vec![ExceptionReason::Duplicate {
            of: InvoiceId::from_u128(20)
        }]
    );
    assert_eq!(s.invoiced(line(1)), qty(dec!(50)));
    // Re-delivered, the duplicate gets the same answer.
    let again = decisions(
        s.apply(&invoice(f.invoice(21, dec!(50), dec!(10.00))), T0, &context)
            .unwrap(),
    );
    assert_eq!(again, out);
}

#[test]
fn a_duplicate_waiting_for_goods_is_an_exception_at_once_with_every_reason() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    let context = MatchContext {
        duplicate_of: Some(InvoiceId::from_u128(20)),
        ..MatchContext::default()
    };
    let out = decisions(
        s.apply(&invoice(f.invoice(21, dec!(5), dec!(10.00))), T0, &context)
            .unwrap(),
    );
    let kinds: Vec<ReasonKind> = reasons(&out).iter().map(ExceptionReason::kind).collect();
    assert_eq!(kinds, vec![ReasonKind::Duplicate, ReasonKind::NotReceived]);
}

#[test]
fn a_pending_invoice_past_its_wait_limit_becomes_an_exception_naming_what_it_waited_for() {
    let f = Fixture::new();
    // Before its PO: unknown PO once the limit passes.
    let mut early = f.state();
    apply(&mut early, invoice(f.invoice(20, dec!(5), dec!(10.00))));
    assert_eq!(early.pending().count(), 1);
    let expired = decisions(early.expire_pending(&InvoiceId::from_u128(20), T0));
    assert_eq!(
        reasons(&expired),
        vec![ExceptionReason::UnknownPurchaseOrder]
    );
    assert_eq!(early.pending().count(), 0);

    // Waiting for goods: not received, with what was billed and what came.
    let mut waiting = f.state();
    apply(&mut waiting, f.issued());
    apply(&mut waiting, f.receipt(10, dec!(3), dec!(0)));
    apply(&mut waiting, invoice(f.invoice(21, dec!(5), dec!(10.00))));
    let expired = decisions(waiting.expire_pending(&InvoiceId::from_u128(21), T0));
    assert_eq!(
        reasons(&expired),
        vec![ExceptionReason::NotReceived {
            line: line(1),
            expected: qty(dec!(3)),
            actual: qty(dec!(5)),
        }]
    );
    // The hold re-checks itself: the rest of the goods arriving later releases it.
    let released = apply(&mut waiting, f.receipt(11, dec!(2), dec!(0)));
    assert!(
        matches!(released.as_slice(), [MatchOutput::Matched(m)] if m.invoice == InvoiceId::from_u128(21)),
        "{released:?}"
    );
    assert_eq!(waiting.invoiced(line(1)), qty(dec!(5)));
}

#[test]
fn the_wait_limit_leaves_a_decided_invoice_alone() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    apply(&mut s, invoice(f.invoice(20, dec!(5), dec!(10.00))));
    assert_eq!(
        decisions(s.expire_pending(&InvoiceId::from_u128(20), T0)),
        vec![]
    );
    assert_eq!(
        decisions(s.expire_pending(&InvoiceId::from_u128(99), T0)),
        vec![]
    );
}

#[test]
fn a_return_read_before_the_receipt_it_returns_still_counts() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(11, dec!(0), dec!(4)));
    apply(&mut s, f.receipt(10, dec!(10), dec!(0)));
    assert_eq!(s.received(line(1)), qty(dec!(6)));
    let out = apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.00))));
    assert!(matches!(out.as_slice(), [MatchOutput::Pending(_)]));
}

/// What an invoice ended as, with every hold, without what depends on when it was decided
/// (the time, and warnings about goods still on their way when it matched).
fn decision(record: &InvoiceRecord) -> (&'static str, Vec<ExceptionReason>) {
    match &record.outcome {
        Outcome::Matched(_) => ("matched", vec![]),
        Outcome::Pending(_) => ("pending", vec![]),
        Outcome::Exception(e) => ("exception", e.reasons.clone()),
    }
}

proptest! {
    /// DOMAIN.md: out of order is normal. The PO, its receipts (with returns), invoices that
    /// do not compete for the same goods and credit memos end in the same outcomes and the
    /// same running totals, whatever order they arrive in. (Invoices that do compete are
    /// served in arrival order.)
    #[test]
    fn any_arrival_order_of_the_same_documents_ends_in_the_same_outcomes(
        receipts in proptest::collection::vec((0u32..40, 0u32..6), 1..5),
        invoices in proptest::collection::vec((1u32..25, 0u8..4), 1..6),
        memos in proptest::collection::vec(1u32..10, 0..3),
        shuffle in proptest::collection::vec(any::<u32>(), 16),
    ) {
        let f = Fixture::new();
        // No more received than ordered: an over-delivery is a discrepancy, judged against what
        // is open when it arrives, so which receipt is discrepant depends on the order.
        let mut unreceived = 100u32;
        let receipts: Vec<(u32, u32)> = receipts
            .into_iter()
            .map(|(received, returned)| {
                let received = received.min(unreceived);
                unreceived -= received;
                (received, returned)
            })
            .collect();
        let mut docs = vec![f.issued()];
        for (i, (received, returned)) in receipts.iter().enumerate() {
            docs.push(f.receipt(100 + i as u128, Decimal::from(*received), Decimal::from(*returned)));
        }
        let net: u32 = receipts.iter().map(|(r, _)| r).sum::<u32>()
            .saturating_sub(receipts.iter().map(|(_, ret)| ret).sum());
        // Invoices billing no more, together, than ends up received; one in four is overpriced.
        let mut left = net;
        let mut well_priced = 0u32;
        for (i, (quantity, price_kind)) in invoices.iter().enumerate() {
            let quantity = (*quantity).min(left);
            if quantity == 0 {
                break;
            }
            left -= quantity;
            let price = if *price_kind == 0 { dec!(11.00) } else { dec!(10.00) };
            docs.push(invoice(f.invoice(200 + i as u128, Decimal::from(quantity), price)));
            if *price_kind != 0 {
                well_priced += quantity;
            }
        }
        // Credit memos giving back no more, together, than the well-priced invoices bill (the
        // overpriced are held and bill nothing): each then matches, in any order.
        for (i, credited) in memos.iter().enumerate() {
            let credited = (*credited).min(well_priced);
            if credited == 0 {
                break;
            }
            well_priced -= credited;
            docs.push(invoice(f.credit_memo(300 + i as u128, Decimal::from(credited), dec!(10.00))));
        }
        let mut order: Vec<usize> = (0..docs.len()).collect();
        order.sort_by_key(|&i| shuffle[i]);

        let mut in_order = f.state();
        for doc in &docs {
            apply(&mut in_order, doc.clone());
        }
        let mut shuffled = f.state();
        for &i in &order {
            apply(&mut shuffled, docs[i].clone());
        }

        prop_assert_eq!(shuffled.received(line(1)), in_order.received(line(1)));
        prop_assert_eq!(shuffled.invoiced(line(1)), in_order.invoiced(line(1)));
        let outcomes = |s: &PurchaseOrderMatch| {
            let mut all: Vec<_> = s
                .invoices
                .iter()
                .map(|r| (r.invoice.invoice.clone(), decision(r)))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let expected = outcomes(&in_order);
        prop_assert!(expected.iter().all(|(_, (kind, _))| *kind != "pending"));
        prop_assert_eq!(outcomes(&shuffled), expected);
    }
}

impl Fixture {
    /// A receipt on line 1 with the delivery note's quantity, perhaps resolving another.
    fn delivery(
        &self,
        id: u128,
        received: Decimal,
        returned: Decimal,
        expected: Option<Decimal>,
        resolves: Option<u128>,
    ) -> MatchInput {
        self.goods(
            id,
            ReceiptLine {
                line: line(1),
                received: qty(received),
                returned: qty(returned),
                expected: expected.map(qty),
                accepted: Quantity::ZERO,
            },
            resolves,
        )
    }

    /// A receipt record of one line.
    fn goods(&self, id: u128, line: ReceiptLine, resolves: Option<u128>) -> MatchInput {
        MatchInput::GoodsReceipt(GoodsReceived {
            org: self.org.clone(),
            grn: GoodsReceiptId::from_u128(id),
            po: self.po.clone(),
            lines: vec![line],
            resolves: resolves.map(GoodsReceiptId::from_u128),
        })
    }
}

fn discrepancy(outputs: &[MatchOutput]) -> Option<&GoodsReceiptDiscrepancy> {
    outputs.iter().find_map(|o| match o {
        MatchOutput::ReceiptDiscrepancy(d) => Some(d),
        _ => None,
    })
}

#[test]
fn an_over_delivery_past_tolerance_is_a_discrepancy_that_blocks_matching_until_resolved() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(60), dec!(0)));
    // 40 are open; 40.8 would be within 2%, 50 is not.
    let out = apply(&mut s, f.receipt(11, dec!(50), dec!(0)));
    assert_eq!(
        discrepancy(&out).map(|d| d.lines.clone()),
        Some(vec![DiscrepantLine {
            line: line(1),
            expected: qty(dec!(40)),
            received: qty(dec!(50)),
        }])
    );
    // Goods are there, but nothing of the PO is matched while the discrepancy stands.
    let out = apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.00))));
    match out.as_slice() {
        [MatchOutput::Pending(p)] => assert_eq!(
            p.waiting_for,
            vec![PendingReason::ReceiptDiscrepancy {
                grn: GoodsReceiptId::from_u128(11)
            }]
        ),
        other => panic!("expected pending, got {other:?}"),
    }
    // The surplus is sent back, resolving it: the waiting invoice is matched at once.
    let out = apply(&mut s, f.delivery(12, dec!(0), dec!(10), None, Some(11)));
    assert!(matches!(
        out.as_slice(),
        [MatchOutput::DiscrepancyResolved(r), MatchOutput::Matched(m)]
            if r.grn == GoodsReceiptId::from_u128(11) && m.invoice == InvoiceId::from_u128(20)
    ));
    assert_eq!(s.received(line(1)), qty(dec!(100)));
}

#[test]
fn a_delivery_note_quantity_is_checked_both_ways_per_line() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    // Short by 1 of 50 (2%): within tolerance.
    let out = apply(
        &mut s,
        f.delivery(10, dec!(49), dec!(0), Some(dec!(50)), None),
    );
    assert_eq!(discrepancy(&out), None);
    // Short by 5 of 40: a discrepancy, though well within what the PO has open.
    let out = apply(
        &mut s,
        f.delivery(11, dec!(35), dec!(0), Some(dec!(40)), None),
    );
    assert_eq!(
        discrepancy(&out).map(|d| d.lines[0].clone()),
        Some(DiscrepantLine {
            line: line(1),
            expected: qty(dec!(40)),
            received: qty(dec!(35)),
        })
    );
}

#[test]
fn an_invoice_with_other_reasons_during_a_discrepancy_names_it_too_and_so_does_its_wait_limit() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(11, dec!(150), dec!(0)));
    let grn = GoodsReceiptId::from_u128(11);
    let out = apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(12.00))));
    assert_eq!(
        reasons(&out)
            .iter()
            .map(ExceptionReason::kind)
            .collect::<Vec<_>>(),
        vec![
            ReasonKind::PriceVariance,
            ReasonKind::AmountVariance,
            ReasonKind::ReceiptDiscrepancy
        ]
    );
    apply(&mut s, invoice(f.invoice(21, dec!(10), dec!(10.00))));
    let expired = decisions(s.expire_pending(&InvoiceId::from_u128(21), T0));
    assert_eq!(
        reasons(&expired),
        vec![ExceptionReason::ReceiptDiscrepancy { grn }]
    );
}

#[test]
fn a_receipt_read_before_its_po_is_checked_when_the_po_comes() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.receipt(10, dec!(90), dec!(0)));
    apply(&mut s, f.receipt(11, dec!(30), dec!(0)));
    apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.00))));
    let out = apply(&mut s, f.issued());
    // The second receipt found only 10 open of the 100 ordered.
    assert_eq!(
        discrepancy(&out).map(|d| (d.grn.clone(), d.lines.clone())),
        Some((
            GoodsReceiptId::from_u128(11),
            vec![DiscrepantLine {
                line: line(1),
                expected: qty(dec!(10)),
                received: qty(dec!(30)),
            }]
        ))
    );
    assert_eq!(
        s.pending().count(),
        1,
        "the invoice waits for the resolution"
    );
}

impl Fixture {
    /// As `issued`, with line 1's goods inspected before they count (four-way).
    fn issued_inspected(&self) -> MatchInput {
        let MatchInput::PurchaseOrder(PurchaseOrderEvent::Issued(mut po)) = self.issued() else {
            unreachable!("issued() is an issue")
        };
        po.lines[0].inspection_required = true;
        MatchInput::PurchaseOrder(PurchaseOrderEvent::Issued(po))
    }

    /// An inspection result on line 1: `accepted` passed, nothing newly received.
    fn inspected(&self, id: u128, accepted: Decimal) -> MatchInput {
        self.goods(
            id,
            ReceiptLine {
                line: line(1),
                received: Quantity::ZERO,
                returned: Quantity::ZERO,
                expected: None,
                accepted: qty(accepted),
            },
            None,
        )
    }
}

#[test]
fn a_four_way_line_is_invoiced_against_what_passed_inspection_not_what_was_received() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued_inspected());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    // All 100 at the dock, none inspected yet: the invoice waits for inspection.
    let out = apply(&mut s, invoice(f.invoice(20, dec!(60), dec!(10.00))));
    match out.as_slice() {
        [MatchOutput::Pending(p)] => assert_eq!(
            p.waiting_for,
            vec![PendingReason::Inspection {
                line: line(1),
                available: qty(dec!(0)),
                billed: qty(dec!(60)),
            }]
        ),
        other => panic!("expected pending, got {other:?}"),
    }
    // 60 pass inspection: matched at once.
    let out = apply(&mut s, f.inspected(11, dec!(60)));
    assert!(
        matches!(out.as_slice(), [MatchOutput::Matched(m)] if m.invoice == InvoiceId::from_u128(20))
    );
    // The other 40 were received but not accepted: a further bill waits, and at its wait
    // limit is an exception saying so.
    apply(&mut s, invoice(f.invoice(21, dec!(30), dec!(10.00))));
    let expired = decisions(s.expire_pending(&InvoiceId::from_u128(21), T0));
    assert_eq!(
        reasons(&expired),
        vec![ExceptionReason::NotAccepted {
            line: line(1),
            expected: qty(dec!(0)),
            actual: qty(dec!(30)),
        }]
    );
}

#[test]
fn what_was_sent_back_after_inspection_is_not_invoiceable_either() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued_inspected());
    apply(&mut s, f.receipt(10, dec!(50), dec!(0)));
    apply(&mut s, f.inspected(11, dec!(50)));
    apply(&mut s, f.receipt(12, dec!(0), dec!(20)));
    let out = apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00))));
    assert!(matches!(out.as_slice(), [MatchOutput::Pending(_)]));
    let out = apply(&mut s, invoice(f.invoice(21, dec!(30), dec!(10.00))));
    assert!(matches!(out.as_slice(), [MatchOutput::Matched(_)]));
}

#[test]
fn a_receipt_whose_po_never_comes_is_rejected_at_the_wait_limit_and_no_longer_counts() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.receipt(10, dec!(40), dec!(0)));
    apply(&mut s, f.receipt(11, dec!(5), dec!(0)));
    assert_eq!(s.received(line(1)), qty(dec!(45)));
    let out = s.expire_receipt(&GoodsReceiptId::from_u128(10));
    assert!(matches!(
        out.as_slice(),
        [MatchOutput::ReceiptRejected(r)]
            if r.grn == GoodsReceiptId::from_u128(10)
                && r.reason == ExceptionReason::UnknownPurchaseOrder
    ));
    assert_eq!(s.received(line(1)), qty(dec!(5)));
    // Re-delivered, it stays rejected; expiring it again does nothing.
    assert!(apply(&mut s, f.receipt(10, dec!(40), dec!(0))).is_empty());
    assert!(s.expire_receipt(&GoodsReceiptId::from_u128(10)).is_empty());
    assert_eq!(s.received(line(1)), qty(dec!(5)));

    // Once the PO has come, the limit of a receipt counted before it changes nothing.
    apply(&mut s, f.issued());
    assert!(s.expire_receipt(&GoodsReceiptId::from_u128(11)).is_empty());
    assert_eq!(s.received(line(1)), qty(dec!(5)));
}

// ---- tolerance keys: warnings, holds per reason, holds that re-check themselves -------------

fn with_keys(keys: ToleranceKeys, supplier: Option<ToleranceKeys>) -> MatchContext {
    MatchContext {
        tolerances: EffectiveTolerances {
            org: keys,
            supplier,
        },
        ..MatchContext::default()
    }
}

fn keys_with_price_block(block: Limit) -> ToleranceKeys {
    let mut keys = ToleranceKeys::defaults();
    keys.price.block = block;
    keys
}

#[test]
fn an_orgs_absolute_price_limit_blocks_a_deviation_its_percent_would_allow() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    // 5 cents AND 2%: 10.10 is within 2% of 10.00 but 10 cents off.
    let keys = keys_with_price_block(Limit {
        absolute: Some(dec!(0.05)),
        percent: Some(dec!(2)),
        combine: Combine::And,
    });
    let held = decisions(
        s.apply(
            &invoice(f.invoice(20, dec!(10), dec!(10.10))),
            T0,
            &with_keys(keys, None),
        )
        .unwrap(),
    );
    assert_eq!(
        reasons(&held)[0],
        ExceptionReason::PriceVariance {
            line: line(1),
            expected: Money::new(dec!(10.00), f.eur),
            actual: Money::new(dec!(10.10), f.eur),
        }
    );
    // Under OR, either number admits it: matched, with the deviation as a warning.
    let keys = keys_with_price_block(Limit {
        absolute: Some(dec!(0.05)),
        percent: Some(dec!(2)),
        combine: Combine::Or,
    });
    let ok = decisions(
        s.apply(
            &invoice(f.invoice(21, dec!(10), dec!(10.10))),
            T0,
            &with_keys(keys, None),
        )
        .unwrap(),
    );
    assert!(
        matches!(ok.as_slice(), [MatchOutput::Matched(m)] if m.warnings.len() == 2),
        "{ok:?}"
    );
}

#[test]
fn a_supplier_narrowing_holds_what_the_org_would_pass() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let strict_supplier = keys_with_price_block(Limit::EXACT);
    let out = decisions(
        s.apply(
            &invoice(f.invoice(20, dec!(10), dec!(10.01))),
            T0,
            &with_keys(ToleranceKeys::defaults(), Some(strict_supplier)),
        )
        .unwrap(),
    );
    assert_eq!(reasons(&out)[0].kind(), ReasonKind::PriceVariance);
}

#[test]
fn billing_a_little_more_than_arrived_matches_with_a_not_received_warning() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(50), dec!(0)));
    // 50.5 billed, 50 arrived: 1%, within the 2% block limit, past the (exact) warning one.
    let out = apply(&mut s, invoice(f.invoice(20, dec!(50.5), dec!(10.00))));
    match out.as_slice() {
        [MatchOutput::Matched(m)] => assert_eq!(
            m.warnings,
            vec![ExceptionReason::NotReceived {
                line: line(1),
                expected: qty(dec!(50)),
                actual: qty(dec!(50.5)),
            }]
        ),
        other => panic!("expected a match with a warning, got {other:?}"),
    }
}

#[test]
fn goods_arriving_for_an_overpriced_invoice_drop_its_not_received_hold_and_keep_the_price_one() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    let first = apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(11.00))));
    let kinds = |r: Vec<ExceptionReason>| r.iter().map(|r| r.kind()).collect::<Vec<_>>();
    assert_eq!(
        kinds(reasons(&first)),
        vec![
            ReasonKind::PriceVariance,
            ReasonKind::AmountVariance,
            ReasonKind::NotReceived
        ]
    );
    // The receipt re-checks every hold: one is gone, the invoice stays held for the others.
    let rechecked = apply(&mut s, f.receipt(10, dec!(10), dec!(0)));
    assert_eq!(
        kinds(reasons(&rechecked)),
        vec![ReasonKind::PriceVariance, ReasonKind::AmountVariance]
    );
    // A receipt that changes none of its holds reports nothing about it.
    assert_eq!(apply(&mut s, f.receipt(11, dec!(5), dec!(0))), vec![]);
    // Held invoices consume nothing: the goods are there for the next invoice.
    assert_eq!(s.invoiced(line(1)), Quantity::ZERO);
    // The corrected invoice, at the PO price, is released.
    let corrected = apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.00))));
    assert!(matches!(corrected.as_slice(), [MatchOutput::Matched(m)] if m.warnings.is_empty()));
}

#[test]
fn a_duplicate_stays_held_whatever_goods_arrive() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    let context = MatchContext {
        duplicate_of: Some(InvoiceId::from_u128(19)),
        ..MatchContext::default()
    };
    s.apply(&invoice(f.invoice(20, dec!(10), dec!(10.00))), T0, &context)
        .unwrap();
    let rechecked = apply(&mut s, f.receipt(10, dec!(10), dec!(0)));
    // Its not-received hold is gone; the duplicate hold is not, and nothing is consumed.
    assert_eq!(
        reasons(&rechecked),
        vec![ExceptionReason::Duplicate {
            of: InvoiceId::from_u128(19)
        }]
    );
    assert_eq!(s.invoiced(line(1)), Quantity::ZERO);
}

// ---- credit memos ---------------------------------------------------------------------------

impl Fixture {
    /// A credit memo giving back `quantity` of line 1 at `price`.
    fn credit_memo(&self, id: u128, quantity: Decimal, price: Decimal) -> InvoiceReceived {
        InvoiceReceived {
            kind: DocumentKind::CreditMemo,
            ..self.invoice(id, quantity, price)
        }
    }
}

fn matched_kinds(outputs: &[MatchOutput]) -> Vec<(InvoiceId, DocumentKind)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            MatchOutput::Matched(m) => Some((m.invoice.clone(), m.kind)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_credit_memo_gives_back_what_it_credits_so_the_line_can_be_invoiced_again() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    apply(&mut s, invoice(f.invoice(20, dec!(100), dec!(10.00))));
    // 10 went back to the supplier, who credits them.
    apply(&mut s, f.receipt(11, dec!(0), dec!(10)));
    let out = apply(&mut s, invoice(f.credit_memo(30, dec!(10), dec!(10.00))));
    assert_eq!(
        matched_kinds(&out),
        vec![(InvoiceId::from_u128(30), DocumentKind::CreditMemo)]
    );
    assert_eq!(s.invoiced(line(1)), qty(dec!(90)));
    // The replacement delivery can be invoiced again.
    apply(&mut s, f.receipt(12, dec!(10), dec!(0)));
    let again = apply(&mut s, invoice(f.invoice(21, dec!(10), dec!(10.00))));
    assert_eq!(
        matched_kinds(&again),
        vec![(InvoiceId::from_u128(21), DocumentKind::Invoice)]
    );
    assert_eq!(s.invoiced(line(1)), qty(dec!(100)));
}

#[test]
fn a_credit_memo_before_the_invoice_it_credits_waits_for_it() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    let early = apply(&mut s, invoice(f.credit_memo(30, dec!(10), dec!(10.00))));
    assert!(
        matches!(early.as_slice(), [MatchOutput::Pending(p)] if p.waiting_for == vec![
            PendingReason::Invoice { line: line(1), invoiced: Quantity::ZERO, credited: qty(dec!(10)) }
        ]),
        "{early:?}"
    );
    let out = apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00))));
    assert_eq!(
        matched_kinds(&out),
        vec![
            (InvoiceId::from_u128(20), DocumentKind::Invoice),
            (InvoiceId::from_u128(30), DocumentKind::CreditMemo)
        ]
    );
    assert_eq!(s.invoiced(line(1)), qty(dec!(40)));
}

#[test]
fn a_credit_memo_for_more_than_was_ever_invoiced_is_an_exception_at_its_wait_limit() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    apply(&mut s, invoice(f.invoice(20, dec!(5), dec!(10.00))));
    apply(&mut s, invoice(f.credit_memo(30, dec!(8), dec!(10.00))));
    let expired = decisions(s.expire_pending(&InvoiceId::from_u128(30), T0));
    assert_eq!(
        reasons(&expired),
        vec![ExceptionReason::QuantityVariance {
            line: line(1),
            expected: qty(dec!(5)),
            actual: qty(dec!(8)),
        }]
    );
    assert_eq!(s.invoiced(line(1)), qty(dec!(5)), "nothing given back");
}

#[test]
fn a_credit_memo_is_checked_against_the_po_price_and_gives_back_nothing_when_held() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00))));
    let out = apply(&mut s, invoice(f.credit_memo(30, dec!(10), dec!(12.00))));
    assert_eq!(reasons(&out)[0].kind(), ReasonKind::PriceVariance);
    assert_eq!(s.invoiced(line(1)), qty(dec!(50)));
}

#[test]
fn a_corrected_credit_memo_takes_back_what_its_first_version_gave() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00))));
    apply(&mut s, invoice(f.credit_memo(30, dec!(10), dec!(10.00))));
    assert_eq!(s.invoiced(line(1)), qty(dec!(40)));
    let corrected = apply(&mut s, invoice(f.credit_memo(30, dec!(4), dec!(10.00))));
    assert_eq!(
        matched_kinds(&corrected),
        vec![(InvoiceId::from_u128(30), DocumentKind::CreditMemo)]
    );
    assert_eq!(s.invoiced(line(1)), qty(dec!(46)));
    // Delivered again unchanged: nothing given back twice.
    apply(&mut s, invoice(f.credit_memo(30, dec!(4), dec!(10.00))));
    assert_eq!(s.invoiced(line(1)), qty(dec!(46)));
}

// ---- a PO the ERP closed ----------------------------------------------------------------------

impl Fixture {
    fn closed(&self) -> MatchInput {
        MatchInput::PurchaseOrder(PurchaseOrderEvent::Stepped(PurchaseOrderStepped {
            org: self.org.clone(),
            po: self.po.clone(),
            step: PurchaseOrderStep::Closed,
        }))
    }
}

#[test]
fn once_the_erp_closes_a_po_its_open_and_later_invoices_are_exceptions_and_matched_ones_stay() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(50), dec!(0)));
    let first = apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00))));
    assert!(matches!(first.as_slice(), [MatchOutput::Matched(_)]));
    // Waiting for goods that will not come now.
    let waiting = apply(&mut s, invoice(f.invoice(21, dec!(30), dec!(10.00))));
    assert!(matches!(waiting.as_slice(), [MatchOutput::Pending(_)]));

    let out = apply(&mut s, f.closed());
    assert_eq!(
        reasons(&out),
        vec![
            ExceptionReason::PoClosed,
            ExceptionReason::NotReceived {
                line: line(1),
                expected: Quantity::ZERO,
                actual: qty(dec!(30)),
            },
        ]
    );
    assert!(apply(&mut s, f.closed()).is_empty(), "closed once");
    // Goods on hand do not help an invoice of a closed PO.
    apply(&mut s, f.receipt(11, dec!(20), dec!(0)));
    let late = apply(&mut s, invoice(f.invoice(22, dec!(20), dec!(10.00))));
    assert_eq!(reasons(&late), vec![ExceptionReason::PoClosed]);
    assert_eq!(
        s.invoiced(line(1)),
        qty(dec!(50)),
        "what matched stays matched"
    );
    // Money back is still taken.
    let memo = apply(&mut s, invoice(f.credit_memo(30, dec!(5), dec!(10.00))));
    assert_eq!(
        matched_kinds(&memo),
        vec![(InvoiceId::from_u128(30), DocumentKind::CreditMemo)]
    );
}

/// The statuses among `outputs`, as (revision, status).
fn statuses(outputs: &[MatchOutput]) -> Vec<(u32, InvoiceStatus)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            MatchOutput::Status(s) => Some((s.revision, s.status.clone())),
            _ => None,
        })
        .collect()
}

fn everything(state: &mut PurchaseOrderMatch, input: MatchInput) -> Vec<MatchOutput> {
    state.apply(&input, T0, &MatchContext::default()).unwrap()
}

#[test]
fn an_invoice_waiting_for_goods_is_visible_at_once_and_each_change_is_a_higher_revision() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    let waiting_for = |available| {
        InvoiceStatus::Waiting(vec![PendingReason::Receipt {
            line: line(1),
            available: qty(available),
            billed: qty(dec!(10)),
        }])
    };
    // Posted at once, blocked for quantity: nothing received of the 10 billed.
    let arrived = everything(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.00))));
    assert_eq!(statuses(&arrived), vec![(1, waiting_for(dec!(0)))]);
    let MatchOutput::Status(status) = &arrived[1] else {
        panic!("{arrived:?}")
    };
    assert_eq!(
        (&status.invoice, &status.number, status.total),
        (
            &InvoiceId::from_u128(20),
            &InvoiceNumber::parse("INV-20").unwrap(),
            Money::new(dec!(100.00), f.eur)
        )
    );
    // Re-delivered: the same answer, the same revision.
    let again = everything(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.00))));
    assert_eq!(statuses(&again), vec![(1, waiting_for(dec!(0)))]);
    // Part of the goods: still waiting, for less, and it says so.
    let part = everything(&mut s, f.receipt(10, dec!(4), dec!(0)));
    assert_eq!(statuses(&part), vec![(2, waiting_for(dec!(4)))]);
    // A receipt for nothing it waits for changes nothing it shows.
    let none = everything(&mut s, f.receipt(11, dec!(0), dec!(0)));
    assert_eq!(statuses(&none), vec![]);
    // The rest: matched, on invoice-matched as its first outcome.
    let rest = everything(&mut s, f.receipt(12, dec!(6), dec!(0)));
    assert_eq!(
        statuses(&rest),
        vec![(
            3,
            InvoiceStatus::Matched {
                outcome_revision: 1,
                warnings: vec![]
            }
        )]
    );
}

#[test]
fn an_invoice_before_its_po_waits_for_the_po_and_is_held_when_its_wait_limit_passes() {
    let f = Fixture::new();
    let mut s = f.state();
    let arrived = everything(&mut s, invoice(f.invoice(20, dec!(10), dec!(10.00))));
    assert_eq!(
        statuses(&arrived),
        vec![(
            1,
            InvoiceStatus::Waiting(vec![PendingReason::PurchaseOrder])
        )]
    );
    let expired = s.expire_pending(&InvoiceId::from_u128(20), T0);
    assert!(matches!(
        statuses(&expired).as_slice(),
        [(2, InvoiceStatus::Held { outcome_revision: 1, reasons })]
            if reasons.iter().any(|r| r.kind() == ReasonKind::UnknownPo)
    ));
}

#[test]
fn an_invoice_decided_at_once_has_its_status_beside_its_outcome() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(10), dec!(0)));
    let over = everything(&mut s, invoice(f.invoice(20, dec!(10), dec!(12.00))));
    assert!(matches!(
        over.as_slice(),
        [
            MatchOutput::Exception(e),
            MatchOutput::Status(InvoiceStatusChanged {
                revision: 1,
                status: InvoiceStatus::Held { outcome_revision: 1, reasons },
                ..
            })
        ] if &e.reasons == reasons
    ));
}

fn credit_memo(f: &Fixture, id: u128, quantity: Decimal, price: Decimal) -> InvoiceReceived {
    InvoiceReceived {
        kind: DocumentKind::CreditMemo,
        number: InvoiceNumber::parse(&format!("CM-{id}")).unwrap(),
        ..f.invoice(id, quantity, price)
    }
}

/// The documents `outputs` matched, and the invoices they hold, by id.
fn decided(outputs: &[MatchOutput]) -> Vec<(InvoiceId, &'static str, u32)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            MatchOutput::Matched(m) => Some((m.invoice.clone(), "matched", m.revision)),
            MatchOutput::Exception(e) => Some((e.invoice.clone(), "held", e.revision)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_invoice_held_for_quantity_is_released_by_the_credit_memo_that_nets_it_within_tolerance() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    // 110 billed of the 100 ordered and received: held for quantity.
    let held = apply(&mut s, invoice(f.invoice(20, dec!(110), dec!(10.00))));
    assert_eq!(reasons(&held)[0].kind(), ReasonKind::QuantityVariance);
    // The supplier credits 5: 105 is still over, so both wait.
    let one = apply(&mut s, invoice(credit_memo(&f, 30, dec!(5), dec!(10.00))));
    assert!(decided(&one).is_empty(), "{one:?}");
    assert!(matches!(one.as_slice(), [MatchOutput::Pending(_)]));
    // And another 5: 100 net, within. The invoice is released (its second outcome) and both
    // memos matched; what is invoiced is the net.
    let other = apply(&mut s, invoice(credit_memo(&f, 31, dec!(5), dec!(10.00))));
    assert_eq!(
        decided(&other)
            .into_iter()
            .filter(|(_, what, _)| *what == "matched")
            .map(|(id, _, revision)| (id, revision))
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            (InvoiceId::from_u128(20), 2),
            (InvoiceId::from_u128(30), 1),
            (InvoiceId::from_u128(31), 1),
        ])
    );
    assert_eq!(s.invoiced(line(1)), qty(dec!(100)));
    // Nothing more may be billed: the line is invoiced in full.
    let more = apply(&mut s, invoice(f.invoice(21, dec!(1), dec!(10.00))));
    assert_eq!(reasons(&more)[0].kind(), ReasonKind::QuantityVariance);
}

#[test]
fn an_invoice_held_for_price_is_released_by_a_credit_memo_for_the_difference() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(10), dec!(0)));
    // 10 at 11.00 against 10.00: held for price (and amount).
    let held = apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(11.00))));
    assert!(reasons(&held).iter().all(|r| matches!(
        r.kind(),
        ReasonKind::PriceVariance | ReasonKind::AmountVariance
    )));
    // The supplier credits 1.00 on each of the 10: a price correction, no goods back.
    let credit = apply(&mut s, invoice(credit_memo(&f, 30, dec!(10), dec!(1.00))));
    let matched: Vec<InvoiceId> = decided(&credit)
        .into_iter()
        .filter(|(_, what, _)| *what == "matched")
        .map(|(id, _, _)| id)
        .collect();
    // The memo first: a payment reading in order knows the credit before the invoice.
    assert_eq!(
        matched,
        vec![InvoiceId::from_u128(30), InvoiceId::from_u128(20)]
    );
    // The 10 billed stay invoiced: a price credit gives no quantity back.
    assert_eq!(s.invoiced(line(1)), qty(dec!(10)));
}

#[test]
fn a_credit_memo_that_does_not_bring_the_net_within_tolerance_releases_nothing() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(10), dec!(0)));
    apply(&mut s, invoice(f.invoice(20, dec!(10), dec!(12.00))));
    // 0.50 off each: 11.50 is still 15 % over.
    let credit = apply(&mut s, invoice(credit_memo(&f, 30, dec!(10), dec!(0.50))));
    assert!(
        decided(&credit).iter().all(|(_, what, _)| *what == "held"),
        "{credit:?}"
    );
    assert_eq!(s.invoiced(line(1)), qty(dec!(0)));
}

#[test]
fn a_manual_hold_or_a_duplicate_is_never_released_by_a_credit_memo() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    apply(
        &mut s,
        invoice(InvoiceReceived {
            payment_block: Some("query with the supplier".into()),
            ..f.invoice(20, dec!(110), dec!(10.00))
        }),
    );
    let credit = apply(&mut s, invoice(credit_memo(&f, 30, dec!(10), dec!(10.00))));
    assert!(decided(&credit).is_empty(), "{credit:?}");
}

#[test]
fn a_look_alike_is_held_for_review_or_matched_with_a_warning_as_the_org_chooses() {
    let f = Fixture::new();
    let resembling = |hold| MatchContext {
        look_alike: Some(LookAlike {
            of: InvoiceId::from_u128(20),
            hold,
        }),
        ..MatchContext::default()
    };
    let possible_duplicate = ExceptionReason::PossibleDuplicate {
        of: InvoiceId::from_u128(20),
    };
    for hold in [true, false] {
        let mut s = f.state();
        apply(&mut s, f.issued());
        apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
        apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00))));
        let out = decisions(
            s.apply(
                &invoice(f.invoice(21, dec!(50), dec!(10.00))),
                T0,
                &resembling(hold),
            )
            .unwrap(),
        );
        if hold {
            assert_eq!(reasons(&out), vec![possible_duplicate.clone()]);
            // Held, it consumes nothing: the PO's quantity stays for the next invoice.
            assert_eq!(s.invoiced(line(1)), qty(dec!(50)));
        } else {
            assert!(
                matches!(out.as_slice(), [MatchOutput::Matched(m)] if m.warnings == vec![possible_duplicate.clone()]),
                "{out:?}"
            );
            assert_eq!(s.invoiced(line(1)), qty(dec!(100)));
        }
    }
}

#[test]
fn a_held_look_alike_is_never_released_by_a_credit_memo() {
    let f = Fixture::new();
    let mut s = f.state();
    apply(&mut s, f.issued());
    apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
    apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00))));
    let context = MatchContext {
        look_alike: Some(LookAlike {
            of: InvoiceId::from_u128(20),
            hold: true,
        }),
        ..MatchContext::default()
    };
    s.apply(&invoice(f.invoice(21, dec!(55), dec!(10.00))), T0, &context)
        .unwrap();
    let credit = apply(&mut s, invoice(credit_memo(&f, 30, dec!(5), dec!(10.00))));
    assert!(
        !decided(&credit)
            .iter()
            .any(|(id, what, _)| *id == InvoiceId::from_u128(21) && *what == "matched"),
        "{credit:?}"
    );
}

mod decisions {
    use super::*;
    use crate::approval::{ApprovalError, ApprovalLevel};
    use crate::decisions::{DecisionAction, DecisionRefused, InvoiceDecision};

    fn decision(
        id: &str,
        invoice: u128,
        by: &str,
        authority: ApprovalLevel,
        action: DecisionAction,
    ) -> InvoiceDecision {
        InvoiceDecision {
            id: id.into(),
            invoice: InvoiceId::from_u128(invoice),
            po: PurchaseOrderId::from_u128(2),
            by: UserId::parse(by).unwrap(),
            authority,
            action,
            reason_code: "AGREED".into(),
            comment: Some("checked with the buyer".into()),
        }
    }

    /// L1 up to 10,000, L2 up to 50,000, L3 above (DOMAIN.md's defaults).
    fn needed(total: Money) -> Result<ApprovalLevel, ApprovalError> {
        Ok(if total.amount() <= dec!(10000) {
            ApprovalLevel::L1
        } else if total.amount() <= dec!(50000) {
            ApprovalLevel::L2
        } else {
            ApprovalLevel::L3
        })
    }

    fn decide(s: &mut PurchaseOrderMatch, d: &InvoiceDecision) -> DecisionOutcome {
        s.decide(d, needed, T0, &MatchContext::default()).unwrap()
    }

    fn applied(outcome: DecisionOutcome) -> Vec<MatchOutput> {
        match outcome {
            DecisionOutcome::Applied(outputs) => decisions(outputs),
            other => panic!("expected the decision applied, got {other:?}"),
        }
    }

    fn refused(outcome: DecisionOutcome) -> DecisionRefused {
        match outcome {
            DecisionOutcome::Refused(why) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A PO of 100 at 10.00, all received, and invoice 20 billing 100 at 11.00: held for
    /// price and amount, posted by CLERK1.
    fn held_for_price(f: &Fixture) -> PurchaseOrderMatch {
        let mut s = f.state();
        apply(&mut s, f.issued());
        apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
        let held = apply(
            &mut s,
            invoice(InvoiceReceived {
                posted_by: Some(UserId::parse("CLERK1").unwrap()),
                ..f.invoice(20, dec!(100), dec!(11.00))
            }),
        );
        assert_eq!(reasons(&held)[0].kind(), ReasonKind::PriceVariance);
        s
    }

    #[test]
    fn who_requested_or_approved_the_po_may_not_decide_on_its_invoices() {
        let f = Fixture::new();
        let mut s = held_for_price(&f);
        s.note_requester_or_approver(&UserId::parse("REQUESTER1").unwrap());
        s.note_requester_or_approver(&UserId::parse("APPROVER1").unwrap());
        for (id, by) in [("d1", "REQUESTER1"), ("d2", "APPROVER1")] {
            let d = decision(
                id,
                20,
                by,
                ApprovalLevel::L3,
                DecisionAction::AcceptVariance,
            );
            assert!(matches!(
                refused(decide(&mut s, &d)),
                DecisionRefused::OwnPurchaseOrder { .. }
            ));
        }
        let other = decision(
            "d3",
            20,
            "BUYER9",
            ApprovalLevel::L1,
            DecisionAction::AcceptVariance,
        );
        assert!(matches!(
            decide(&mut s, &other),
            DecisionOutcome::Applied(_)
        ));
    }

    #[test]
    fn an_accepted_price_variance_releases_the_invoice_once_with_a_new_revision() {
        let f = Fixture::new();
        let mut s = held_for_price(&f);
        let accept = decision(
            "d1",
            20,
            "BUYER1",
            ApprovalLevel::L1,
            DecisionAction::AcceptVariance,
        );
        let out = applied(decide(&mut s, &accept));
        assert!(
            matches!(out.as_slice(), [MatchOutput::Matched(m)] if m.revision == 2
                && m.warnings.iter().any(|w| w.kind() == ReasonKind::PriceVariance)),
            "{out:?}"
        );
        assert_eq!(s.invoiced(line(1)), qty(dec!(100)));
        // The same decision again changes nothing.
        assert_eq!(decide(&mut s, &accept), DecisionOutcome::Repeated);
        // A later fact within what was accepted leaves it matched: a receipt, nothing billed.
        assert!(apply(&mut s, f.receipt(11, dec!(0), dec!(0))).is_empty());
    }

    #[test]
    fn the_poster_or_an_approver_without_the_authority_is_refused_with_the_reason() {
        let f = Fixture::new();
        let mut s = held_for_price(&f);
        let own = decision(
            "d1",
            20,
            "CLERK1",
            ApprovalLevel::L3,
            DecisionAction::AcceptVariance,
        );
        assert!(matches!(
            refused(decide(&mut s, &own)),
            DecisionRefused::OwnInvoice { .. }
        ));
        // 1,100.00 needs L1; a bigger invoice on another PO would need more.
        let mut big = f.state();
        apply(&mut big, f.issued());
        apply(&mut big, f.receipt(10, dec!(100), dec!(0)));
        apply(&mut big, invoice(f.invoice(21, dec!(100), dec!(600.00))));
        let weak = decision(
            "d2",
            21,
            "BUYER1",
            ApprovalLevel::L2,
            DecisionAction::AcceptVariance,
        );
        assert!(matches!(
            refused(decide(&mut big, &weak)),
            DecisionRefused::NoAuthority {
                needed: ApprovalLevel::L3,
                held: ApprovalLevel::L2,
                ..
            }
        ));
        // Nothing changed for either.
        assert_eq!(s.invoiced(line(1)), qty(dec!(0)));
    }

    #[test]
    fn a_rejected_invoice_is_never_payable_and_gives_its_quantity_back() {
        let f = Fixture::new();
        let mut s = f.state();
        apply(&mut s, f.issued());
        apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
        apply(&mut s, invoice(f.invoice(20, dec!(100), dec!(10.00))));
        assert_eq!(s.invoiced(line(1)), qty(dec!(100)));
        let reject = decision(
            "d1",
            20,
            "BUYER1",
            ApprovalLevel::L1,
            DecisionAction::Reject,
        );
        let out = applied(decide(&mut s, &reject));
        assert!(matches!(
            out.as_slice(),
            [MatchOutput::Exception(e)] if e.revision == 2 && e.reasons.len() == 1
                && e.reasons[0].kind() == ReasonKind::Rejected
        ));
        assert_eq!(s.invoiced(line(1)), qty(dec!(0)));
        // Its quantity is free for the next invoice.
        assert!(matches!(
            apply(&mut s, invoice(f.invoice(21, dec!(100), dec!(10.00)))).as_slice(),
            [MatchOutput::Matched(_)]
        ));
        // And nothing releases it.
        let release = decision(
            "d2",
            20,
            "BUYER2",
            ApprovalLevel::L3,
            DecisionAction::Release(None),
        );
        assert!(matches!(
            refused(decide(&mut s, &release)),
            DecisionRefused::AlreadyRejected(_)
        ));
    }

    #[test]
    fn a_look_alike_marked_not_a_duplicate_is_released_and_a_duplicate_never_is() {
        let f = Fixture::new();
        let mut s = f.state();
        apply(&mut s, f.issued());
        apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
        apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00))));
        let look_alike = MatchContext {
            look_alike: Some(LookAlike {
                of: InvoiceId::from_u128(20),
                hold: true,
            }),
            ..MatchContext::default()
        };
        s.apply(
            &invoice(f.invoice(21, dec!(50), dec!(10.00))),
            T0,
            &look_alike,
        )
        .unwrap();
        let not_a_duplicate = decision(
            "d1",
            21,
            "CLERK2",
            ApprovalLevel::L1,
            DecisionAction::NotADuplicate,
        );
        assert!(matches!(
            applied(decide(&mut s, &not_a_duplicate)).as_slice(),
            [MatchOutput::Matched(m)] if m.invoice == InvoiceId::from_u128(21)
        ));
        let duplicate = MatchContext {
            duplicate_of: Some(InvoiceId::from_u128(20)),
            ..MatchContext::default()
        };
        s.apply(
            &invoice(f.invoice(22, dec!(1), dec!(10.00))),
            T0,
            &duplicate,
        )
        .unwrap();
        for action in [
            DecisionAction::Release(None),
            DecisionAction::NotADuplicate,
            DecisionAction::AcceptVariance,
        ] {
            let d = decision("d9", 22, "CFO", ApprovalLevel::L3, action);
            assert!(matches!(
                refused(decide(&mut s, &d)),
                DecisionRefused::Duplicate { .. }
            ));
        }
    }

    #[test]
    fn a_decision_before_its_invoice_waits_for_it_and_one_for_no_invoice_is_refused_at_the_limit() {
        let f = Fixture::new();
        let mut s = f.state();
        apply(&mut s, f.issued());
        apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
        let early = decision(
            "d1",
            20,
            "BUYER1",
            ApprovalLevel::L1,
            DecisionAction::AcceptVariance,
        );
        assert_eq!(decide(&mut s, &early), DecisionOutcome::Parked);
        assert_eq!(decide(&mut s, &early), DecisionOutcome::Parked);
        apply(&mut s, invoice(f.invoice(20, dec!(100), dec!(11.00))));
        let parked = s.take_early_decisions(&InvoiceId::from_u128(20));
        assert_eq!(parked, vec![early.clone()]);
        assert!(matches!(
            applied(decide(&mut s, &parked[0])).as_slice(),
            [MatchOutput::Matched(_)]
        ));
        let stray = decision(
            "d2",
            99,
            "BUYER1",
            ApprovalLevel::L1,
            DecisionAction::Reject,
        );
        assert_eq!(decide(&mut s, &stray), DecisionOutcome::Parked);
        assert_eq!(
            s.expire_decision("d2"),
            Some(DecisionRefused::UnknownInvoice(InvoiceId::from_u128(99)))
        );
        assert_eq!(s.expire_decision("d2"), None);
    }

    #[test]
    fn a_look_alike_released_while_its_goods_are_missing_stays_held_for_them_until_they_come() {
        let f = Fixture::new();
        let mut s = f.state();
        apply(&mut s, f.issued());
        apply(&mut s, invoice(f.invoice(20, dec!(50), dec!(10.00))));
        let look_alike = MatchContext {
            look_alike: Some(LookAlike {
                of: InvoiceId::from_u128(20),
                hold: true,
            }),
            ..MatchContext::default()
        };
        s.apply(
            &invoice(f.invoice(21, dec!(50), dec!(10.00))),
            T0,
            &look_alike,
        )
        .unwrap();
        let d = decision(
            "d1",
            21,
            "CLERK2",
            ApprovalLevel::L1,
            DecisionAction::NotADuplicate,
        );
        let out = decide(&mut s, &d);
        let DecisionOutcome::Applied(outputs) = out else {
            panic!("{out:?}")
        };
        // Held still (never back to waiting: its hold stands on invoice-exceptions), now only
        // for the goods, with its status saying so.
        assert!(matches!(
            statuses(&outputs).as_slice(),
            [(2, InvoiceStatus::Held { outcome_revision: 2, reasons })]
                if reasons.iter().all(|r| r.kind() == ReasonKind::NotReceived)
        ));
        let goods = apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
        assert!(
            goods
                .iter()
                .any(|o| matches!(o, MatchOutput::Matched(m) if m.invoice == InvoiceId::from_u128(21) && m.revision == 3)),
            "{goods:?}"
        );
    }

    #[test]
    fn an_accepted_quantity_holds_again_when_a_correction_bills_beyond_it() {
        let f = Fixture::new();
        let mut s = f.state();
        apply(&mut s, f.issued());
        apply(&mut s, f.receipt(10, dec!(100), dec!(0)));
        // 110 billed of the 100 ordered: held for quantity, then accepted.
        apply(&mut s, invoice(f.invoice(20, dec!(110), dec!(10.00))));
        let accept = decision(
            "d1",
            20,
            "BUYER1",
            ApprovalLevel::L1,
            DecisionAction::AcceptVariance,
        );
        assert!(matches!(
            applied(decide(&mut s, &accept)).as_slice(),
            [MatchOutput::Matched(_)]
        ));
        // The supplier corrects the invoice to 120: beyond the 110 accepted.
        let corrected = apply(&mut s, invoice(f.invoice(20, dec!(120), dec!(10.00))));
        assert_eq!(reasons(&corrected)[0].kind(), ReasonKind::QuantityVariance);
        // Corrected to 105: within what was accepted.
        let within = apply(&mut s, invoice(f.invoice(20, dec!(105), dec!(10.00))));
        assert!(
            matches!(within.as_slice(), [MatchOutput::Matched(_)]),
            "{within:?}"
        );
    }
}
