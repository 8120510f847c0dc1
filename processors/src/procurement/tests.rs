use super::*;
use crate::approval::ApprovalLevel;
use crate::events::{
    PurchaseOrderCancelled, PurchaseOrderIssued, PurchaseOrderLine, PurchaseOrderStepped,
    PurchaseOrderSubmitted,
};
use crate::ids::{LineNumber, SupplierId, UserId};
use crate::lifecycle::PurchaseOrderTransitioned;
use crate::money::{Money, Quantity, UnitPrice};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

const T0: EventTime = EventTime(1_000_000);
const REQUESTER: u128 = 100;

fn org() -> OrgId {
    OrgId::from_u128(1)
}
fn po() -> PurchaseOrderId {
    PurchaseOrderId::from_u128(2)
}
fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}
fn user(n: u128) -> UserId {
    UserId::from_u128(n)
}

/// One line of `quantity` x `price` EUR.
fn lines(quantity: Decimal, price: Decimal) -> Vec<PurchaseOrderLine> {
    vec![PurchaseOrderLine {
        line: LineNumber::new(1).unwrap(),
        description: "pallets".into(),
        quantity: Quantity::new(quantity).unwrap(),
        unit_price: UnitPrice::new(Money::new(price, eur())).unwrap(),
        receipt_required: true,
        inspection_required: false,
    }]
}

fn submitted(quantity: Decimal, price: Decimal) -> ProcurementInput {
    ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Submitted(PurchaseOrderSubmitted {
        org: org(),
        po: po(),
        supplier: SupplierId::from_u128(3),
        currency: eur(),
        lines: lines(quantity, price),
        requester: user(REQUESTER),
        requisition: None,
    }))
}

fn issued() -> ProcurementInput {
    ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Issued(PurchaseOrderIssued {
        org: org(),
        po: po(),
        supplier: SupplierId::from_u128(3),
        currency: eur(),
        lines: lines(dec!(10), dec!(100)),
        requisition: None,
    }))
}

fn stepped(step: PurchaseOrderStep) -> ProcurementInput {
    ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Stepped(PurchaseOrderStepped {
        org: org(),
        po: po(),
        step,
    }))
}

fn cancelled() -> ProcurementInput {
    ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Cancelled(PurchaseOrderCancelled {
        org: org(),
        po: po(),
    }))
}

fn decision(by: u128, authority: ApprovalLevel, approve: bool) -> ProcurementInput {
    ProcurementInput::Decision(ApprovalDecided {
        org: org(),
        po: po(),
        decision: Decision {
            approver: user(by),
            authority,
            approve,
        },
    })
}

fn transition(action: PoAction, from: PoState, to: PoState, version: u64) -> ApprovalEvent {
    ApprovalEvent::Transitioned(PurchaseOrderTransitioned {
        org: org(),
        id: po(),
        action,
        from,
        to,
        version,
    })
}

const SLA: i64 = 48 * 3_600_000;

#[test]
fn an_l2_purchase_order_is_submitted_and_its_first_step_requested_with_its_sla() {
    let mut state = None;
    // 20 x 1,000 EUR = 20,000: L2, a chain of L1 then L2.
    let events = handle(&mut state, &submitted(dec!(20), dec!(1000)), None, T0).unwrap();
    assert_eq!(
        events,
        vec![
            transition(
                PoAction::Submit,
                PoState::Draft,
                PoState::AwaitingApproval,
                1
            ),
            ApprovalEvent::Requested {
                level: ApprovalLevel::L1,
                step: 1,
                of: 2,
                due_at: EventTime(T0.0 + SLA),
            },
        ]
    );
    let state = state.unwrap();
    assert_eq!(state.requester(), Some(&user(REQUESTER)));
    assert_eq!(state.total(), Money::new(dec!(20000), eur()));
}

#[test]
fn the_whole_chain_approves_then_the_erp_issues_and_the_supplier_acknowledges() {
    let mut state = None;
    handle(&mut state, &submitted(dec!(20), dec!(1000)), None, T0).unwrap();
    let first = handle(
        &mut state,
        &decision(7, ApprovalLevel::L1, true),
        None,
        EventTime(T0.0 + 10),
    )
    .unwrap();
    assert_eq!(
        first,
        vec![
            ApprovalEvent::StepApproved {
                level: ApprovalLevel::L1,
                approver: user(7),
            },
            ApprovalEvent::Requested {
                level: ApprovalLevel::L2,
                step: 2,
                of: 2,
                due_at: EventTime(T0.0 + 10 + SLA),
            },
        ]
    );
    let second = handle(
        &mut state,
        &decision(8, ApprovalLevel::L3, true),
        None,
        EventTime(T0.0 + 20),
    )
    .unwrap();
    assert_eq!(
        second.last(),
        Some(&transition(
            PoAction::Approve,
            PoState::AwaitingApproval,
            PoState::Approved,
            2
        ))
    );
    assert_eq!(
        handle(&mut state, &issued(), None, T0).unwrap(),
        vec![transition(
            PoAction::Issue,
            PoState::Approved,
            PoState::Issued,
            3
        )]
    );
    assert_eq!(
        handle(
            &mut state,
            &stepped(PurchaseOrderStep::Acknowledged),
            None,
            T0
        )
        .unwrap(),
        vec![transition(
            PoAction::Acknowledge,
            PoState::Issued,
            PoState::Acknowledged,
            4
        )]
    );
    assert_eq!(state.unwrap().escalation_due(), None);
}

#[test]
fn a_requester_approving_their_own_po_is_refused_and_changes_nothing() {
    let mut state = None;
    handle(&mut state, &submitted(dec!(1), dec!(500)), None, T0).unwrap();
    let before = state.clone();
    let refusal = handle(
        &mut state,
        &decision(REQUESTER, ApprovalLevel::L3, true),
        None,
        T0,
    )
    .unwrap_err();
    assert_eq!(
        refusal,
        Refusal {
            org: org(),
            po: po(),
            state: Some(PoState::AwaitingApproval),
            version: 1,
            attempted: PoAction::Approve,
            reason: RefusalReason::Approval(ApprovalError::SegregationOfDuties(user(REQUESTER))),
        }
    );
    assert_eq!(state, before);
}

#[test]
fn a_decision_on_a_po_never_submitted_is_refused_as_unknown() {
    let mut state = None;
    let refusal = handle(&mut state, &decision(7, ApprovalLevel::L1, false), None, T0).unwrap_err();
    assert_eq!(refusal.reason, RefusalReason::UnknownPurchaseOrder(po()));
    assert_eq!(refusal.attempted, PoAction::Reject);
    assert_eq!(refusal.state, None);
    assert!(state.is_none());
}

#[test]
fn a_po_first_heard_of_when_issued_enters_at_issued_and_a_change_order_is_no_step() {
    let mut state = None;
    assert_eq!(
        handle(&mut state, &issued(), None, T0).unwrap(),
        vec![transition(
            PoAction::Issue,
            PoState::Approved,
            PoState::Issued,
            1
        )]
    );
    assert_eq!(state.as_ref().unwrap().requester(), None);
    assert_eq!(handle(&mut state, &issued(), None, T0).unwrap(), vec![]);
    assert_eq!(state.unwrap().po().version(), 1);
}

#[test]
fn lifecycle_steps_the_state_does_not_allow_are_refused_with_state_and_action() {
    let mut state = None;
    handle(&mut state, &issued(), None, T0).unwrap();
    let refusal = handle(&mut state, &stepped(PurchaseOrderStep::Closed), None, T0).unwrap_err();
    assert_eq!(refusal.state, Some(PoState::Issued));
    assert_eq!(refusal.attempted, PoAction::Close);
    assert!(matches!(
        refusal.reason,
        RefusalReason::Approval(ApprovalError::Transition(_))
    ));
    // Resubmitting a known PO is refused too: nothing leads back to Draft.
    let again = handle(&mut state, &submitted(dec!(1), dec!(1)), None, T0).unwrap_err();
    assert_eq!(again.attempted, PoAction::Submit);
    assert_eq!(again.version, 1);
}

#[test]
fn a_cancelled_po_under_approval_stops_its_escalation_and_refuses_decisions() {
    let mut state = None;
    handle(&mut state, &submitted(dec!(1), dec!(500)), None, T0).unwrap();
    assert!(state.as_ref().unwrap().escalation_due().is_some());
    assert_eq!(
        handle(&mut state, &cancelled(), None, T0).unwrap(),
        vec![transition(
            PoAction::Cancel,
            PoState::AwaitingApproval,
            PoState::Cancelled,
            2
        )]
    );
    assert_eq!(state.as_ref().unwrap().escalation_due(), None);
    let refusal = handle(&mut state, &decision(7, ApprovalLevel::L1, true), None, T0).unwrap_err();
    assert_eq!(
        refusal.reason,
        RefusalReason::Approval(ApprovalError::NotAwaitingApproval(PoState::Cancelled))
    );
}

#[test]
fn the_orgs_configured_policy_decides_the_level_and_the_sla() {
    let mut policy = ApprovalPolicy::defaults(eur());
    policy.thresholds.l1_max = dec!(100);
    policy.thresholds.l2_max = dec!(200);
    policy.sla_millis = 1_000;
    let mut state = None;
    // 500 EUR: L1 by default, L3 under this org's policy.
    let events = handle(
        &mut state,
        &submitted(dec!(1), dec!(500)),
        Some(&policy),
        T0,
    )
    .unwrap();
    assert_eq!(
        events[1],
        ApprovalEvent::Requested {
            level: ApprovalLevel::L1,
            step: 1,
            of: 3,
            due_at: EventTime(T0.0 + 1_000),
        }
    );
}

#[test]
fn a_rejection_cancels_the_po() {
    let mut state = None;
    handle(&mut state, &submitted(dec!(1), dec!(500)), None, T0).unwrap();
    let events = handle(&mut state, &decision(7, ApprovalLevel::L1, false), None, T0).unwrap();
    assert_eq!(
        events,
        vec![transition(
            PoAction::Reject,
            PoState::AwaitingApproval,
            PoState::Cancelled,
            2
        )]
    );
}

fn receipt(grn: u128, received: Decimal, returned: Decimal) -> ProcurementInput {
    ProcurementInput::Receipt(crate::events::GoodsReceived {
        org: org(),
        grn: crate::ids::GoodsReceiptId::from_u128(grn),
        po: po(),
        lines: vec![crate::events::ReceiptLine {
            line: LineNumber::new(1).unwrap(),
            received: Quantity::new(received).unwrap(),
            returned: Quantity::new(returned).unwrap(),
            expected: None,
            accepted: Quantity::ZERO,
        }],
        resolves: None,
    })
}

/// An invoice billing all 10 ordered of line 1, matched.
fn invoice_matched(invoice: u128) -> ProcurementInput {
    invoice_billing(invoice, dec!(10))
}

/// An invoice billing `quantity` of line 1, matched.
fn invoice_billing(invoice: u128, quantity: Decimal) -> ProcurementInput {
    ProcurementInput::InvoiceMatched(crate::events::InvoiceMatched {
        revision: 0,
        org: org(),
        invoice: crate::ids::InvoiceId::from_u128(invoice),
        kind: crate::events::DocumentKind::Invoice,
        po: po(),
        supplier: SupplierId::from_u128(3),
        number: crate::ids::InvoiceNumber::parse("SI-1").unwrap(),
        total: Money::new(quantity * dec!(100), eur()),
        lines: vec![crate::events::InvoiceLine {
            line: LineNumber::new(1).unwrap(),
            quantity: Quantity::new(quantity).unwrap(),
            unit_price: UnitPrice::new(Money::new(dec!(100), eur())).unwrap(),
        }],
        invoice_date: 0,
        matched_at: T0,
        warnings: vec![],
    })
}

fn settled(invoice: u128) -> ProcurementInput {
    ProcurementInput::PaymentSettled(PaymentSettled {
        org: org(),
        po: po(),
        invoice: crate::ids::InvoiceId::from_u128(invoice),
    })
}

fn states(events: &[ApprovalEvent]) -> Vec<(PoAction, PoState, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            ApprovalEvent::Transitioned(t) => Some((t.action, t.to, t.version)),
            _ => None,
        })
        .collect()
}

/// Paid at `version`, then closed.
fn paid_and_closed(version: u64) -> Vec<(PoAction, PoState, u64)> {
    vec![
        (PoAction::Pay, PoState::Paid, version),
        (PoAction::Close, PoState::Closed, version + 1),
    ]
}

#[test]
fn receipts_acknowledge_then_accumulate_net_of_returns_until_received_in_full() {
    let mut state = None;
    handle(&mut state, &issued(), None, T0).unwrap();
    // 10 ordered: 6 received, 1 sent back: 5 net.
    let first = handle(&mut state, &receipt(1, dec!(6), dec!(1)), None, T0).unwrap();
    assert_eq!(
        states(&first),
        vec![
            (PoAction::Acknowledge, PoState::Acknowledged, 2),
            (PoAction::ReceivePartially, PoState::PartiallyReceived, 3),
        ]
    );
    // The same receipt again (a replay): nothing.
    assert_eq!(
        handle(&mut state, &receipt(1, dec!(6), dec!(1)), None, T0).unwrap(),
        vec![]
    );
    // 4 more: 9 of 10, still partial; then the last one.
    let second = handle(&mut state, &receipt(2, dec!(4), dec!(0)), None, T0).unwrap();
    assert_eq!(
        states(&second),
        vec![(PoAction::ReceivePartially, PoState::PartiallyReceived, 4)]
    );
    let third = handle(&mut state, &receipt(3, dec!(1), dec!(0)), None, T0).unwrap();
    assert_eq!(
        states(&third),
        vec![(PoAction::ReceiveInFull, PoState::Received, 5)]
    );
}

#[test]
fn a_received_po_is_invoiced_when_matched_and_paid_when_every_matched_invoice_is_settled() {
    let mut state = None;
    handle(&mut state, &issued(), None, T0).unwrap();
    handle(&mut state, &receipt(1, dec!(10), dec!(0)), None, T0).unwrap();
    let invoiced = handle(&mut state, &invoice_matched(7), None, T0).unwrap();
    assert_eq!(
        states(&invoiced),
        vec![(PoAction::MatchInvoice, PoState::Invoiced, 4)]
    );
    // A second invoice: no step, but the PO is paid only once both are settled.
    assert_eq!(
        handle(&mut state, &invoice_matched(8), None, T0).unwrap(),
        vec![]
    );
    assert_eq!(handle(&mut state, &settled(7), None, T0).unwrap(), vec![]);
    // Both paid: nothing is left to happen to the PO, so it is paid and closed.
    let paid = handle(&mut state, &settled(8), None, T0).unwrap();
    assert_eq!(states(&paid), paid_and_closed(5));
    // The ERP closing it too changes nothing, and is no refusal.
    let closed = handle(&mut state, &stepped(PurchaseOrderStep::Closed), None, T0).unwrap();
    assert_eq!(closed, vec![]);
    assert_eq!(state.unwrap().po().version(), 6);
}

#[test]
fn a_po_billed_in_parts_is_paid_only_when_the_last_part_is_billed_and_every_part_settled() {
    let mut state = None;
    handle(&mut state, &issued(), None, T0).unwrap();
    handle(&mut state, &receipt(1, dec!(10), dec!(0)), None, T0).unwrap();
    handle(&mut state, &invoice_billing(7, dec!(4)), None, T0).unwrap();
    // 4 of 10 billed and paid: more invoices are to come, the PO stays Invoiced.
    assert_eq!(handle(&mut state, &settled(7), None, T0).unwrap(), vec![]);
    assert_eq!(
        handle(&mut state, &invoice_billing(8, dec!(6)), None, T0).unwrap(),
        vec![]
    );
    let paid = handle(&mut state, &settled(8), None, T0).unwrap();
    assert_eq!(states(&paid), paid_and_closed(5));
}

#[test]
fn an_invoice_matched_and_paid_while_goods_were_coming_invoices_and_pays_the_po_on_the_last_receipt(
) {
    let mut state = None;
    handle(&mut state, &issued(), None, T0).unwrap();
    handle(&mut state, &receipt(1, dec!(4), dec!(0)), None, T0).unwrap();
    // Matched and settled before this topology reads the rest of the goods: recorded only.
    assert_eq!(
        handle(&mut state, &invoice_matched(7), None, T0).unwrap(),
        vec![]
    );
    assert_eq!(handle(&mut state, &settled(7), None, T0).unwrap(), vec![]);
    let last = handle(&mut state, &receipt(2, dec!(6), dec!(0)), None, T0).unwrap();
    assert_eq!(
        states(&last),
        vec![
            (PoAction::ReceiveInFull, PoState::Received, 4),
            (PoAction::MatchInvoice, PoState::Invoiced, 5),
            (PoAction::Pay, PoState::Paid, 6),
            (PoAction::Close, PoState::Closed, 7),
        ]
    );
}

proptest::proptest! {
    /// Procurement reads receipts from the ERP, and matched invoices and settlements from the
    /// match and payment topologies, each on its own topic, so they interleave in any order.
    /// Whatever the order, the PO ends in the same state at the same version: paid and closed
    /// once its goods are all received, and billed in full by invoices that are all settled.
    #[test]
    fn the_po_ends_the_same_whatever_order_receipts_matches_and_settlements_arrive_in(
        receipts in proptest::collection::vec(1u32..6, 1..5),
        invoices in proptest::collection::vec(1u32..6, 1..4),
        settle in proptest::collection::vec(proptest::bool::ANY, 4),
        shuffle in proptest::collection::vec(proptest::num::u32::ANY, 16),
    ) {
        // 10 ordered: received in parts, billed in parts, the last part of each brings the rest.
        let parts = |sizes: &[u32]| {
            let mut left = 10u32;
            let mut parts = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                let part = if i + 1 == sizes.len() { left } else { (*size).min(left) };
                if part > 0 {
                    left -= part;
                    parts.push(Decimal::from(part));
                }
            }
            parts
        };
        let mut docs = Vec::new();
        for (i, part) in parts(&receipts).into_iter().enumerate() {
            docs.push(receipt(10 + i as u128, part, dec!(0)));
        }
        let billed = parts(&invoices);
        for (i, part) in billed.iter().enumerate() {
            docs.push(invoice_billing(20 + i as u128, *part));
            if settle[i] {
                docs.push(settled(20 + i as u128));
            }
        }
        let mut order: Vec<usize> = (0..docs.len()).collect();
        order.sort_by_key(|&i| shuffle[i]);

        let run = |order: &mut dyn Iterator<Item = &ProcurementInput>| {
            let mut state = None;
            handle(&mut state, &issued(), None, T0).unwrap();
            for doc in order {
                handle(&mut state, doc, None, T0).unwrap();
            }
            let po = state.unwrap();
            (po.po().state(), po.po().version())
        };
        let in_order = run(&mut docs.iter());
        let shuffled = run(&mut order.iter().map(|&i| &docs[i]));
        let all_settled = settle.iter().take(billed.len()).all(|s| *s);
        proptest::prop_assert_eq!(
            in_order.0,
            if all_settled { PoState::Closed } else { PoState::Invoiced }
        );
        proptest::prop_assert_eq!(shuffled, in_order);
    }
}

#[test]
fn a_po_of_services_only_is_invoiced_when_its_invoice_matches_and_then_paid() {
    let mut state = None;
    let mut services = lines(dec!(1), dec!(5000));
    services[0].receipt_required = false;
    let issued = ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Issued(PurchaseOrderIssued {
        org: org(),
        po: po(),
        supplier: SupplierId::from_u128(3),
        currency: eur(),
        lines: services,
        requisition: None,
    }));
    handle(&mut state, &issued, None, T0).unwrap();
    // Nothing is ever received: the match attests the service, every step on the record.
    let invoiced = handle(&mut state, &invoice_matched(8), None, T0).unwrap();
    assert_eq!(
        states(&invoiced),
        vec![
            (PoAction::Acknowledge, PoState::Acknowledged, 2),
            (PoAction::ReceiveInFull, PoState::Received, 3),
            (PoAction::MatchInvoice, PoState::Invoiced, 4),
        ]
    );
    let paid = handle(&mut state, &settled(8), None, T0).unwrap();
    assert_eq!(states(&paid), paid_and_closed(5));
}

#[test]
fn a_matched_credit_memo_neither_invoices_the_po_nor_keeps_it_from_being_paid() {
    let mut state = None;
    handle(&mut state, &issued(), None, T0).unwrap();
    handle(&mut state, &receipt(1, dec!(10), dec!(0)), None, T0).unwrap();
    let memo = |id| match invoice_matched(id) {
        ProcurementInput::InvoiceMatched(m) => {
            ProcurementInput::InvoiceMatched(crate::events::InvoiceMatched {
                kind: crate::events::DocumentKind::CreditMemo,
                ..m
            })
        }
        _ => unreachable!(),
    };
    // A credit memo alone does not invoice the PO.
    assert_eq!(handle(&mut state, &memo(9), None, T0).unwrap(), vec![]);
    handle(&mut state, &invoice_matched(8), None, T0).unwrap();
    // Nor does it wait for a payment of its own: the invoice's settles the PO.
    let paid = handle(&mut state, &settled(8), None, T0).unwrap();
    assert_eq!(states(&paid), paid_and_closed(5));
}

#[test]
fn a_receipt_against_a_cancelled_or_unknown_po_is_refused() {
    let mut state = None;
    let unknown = handle(&mut state, &receipt(1, dec!(1), dec!(0)), None, T0).unwrap_err();
    assert_eq!(unknown.reason, RefusalReason::UnknownPurchaseOrder(po()));
    handle(&mut state, &issued(), None, T0).unwrap();
    handle(&mut state, &cancelled(), None, T0).unwrap();
    let refused = handle(&mut state, &receipt(1, dec!(1), dec!(0)), None, T0).unwrap_err();
    assert_eq!(refused.state, Some(PoState::Cancelled));
    assert_eq!(refused.attempted, PoAction::ReceivePartially);
}

#[test]
fn a_refused_receipt_names_what_it_attempted_receiving_in_full_or_partially() {
    let mut state = None;
    handle(&mut state, &issued(), None, T0).unwrap();
    handle(&mut state, &cancelled(), None, T0).unwrap();
    // Everything the PO ordered (its line of 10), at once.
    let refused = handle(&mut state, &receipt(1, dec!(10), dec!(0)), None, T0).unwrap_err();
    assert_eq!(refused.attempted, PoAction::ReceiveInFull);
}
