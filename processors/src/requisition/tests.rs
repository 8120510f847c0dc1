use super::*;
use crate::approval::ApprovalLevel;
use crate::events::{
    PurchaseOrderEvent, PurchaseOrderLine, PurchaseOrderSubmitted, RequisitionLine,
};
use crate::ids::{LineNumber, SupplierId};
use crate::lifecycle::PoState;
use crate::money::{Currency, Quantity, UnitPrice};
use crate::procurement::{handle_converting, ProcurementInput, RefusalReason};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn org() -> OrgId {
    OrgId::from_u128(9)
}

fn user(n: u128) -> UserId {
    UserId::from_u128(n)
}

const REQUESTER: u128 = 1;
const T0: EventTime = EventTime(1_000_000);
const HOUR: i64 = 3_600_000;

fn submitted(total: Decimal, lines: usize) -> RequisitionSubmitted {
    RequisitionSubmitted {
        org: org(),
        requisition: RequisitionId::from_u128(7),
        requester: user(REQUESTER),
        currency: eur(),
        lines: (1..=lines as u32)
            .map(|n| RequisitionLine {
                line: LineNumber::new(n as i64).unwrap(),
                description: format!("item {n}"),
                quantity: Quantity::new(Decimal::ONE).unwrap(),
                unit_price: UnitPrice::new(Money::new(total / Decimal::from(lines), eur()))
                    .unwrap(),
            })
            .collect(),
    }
}

fn decided(by: u128, authority: ApprovalLevel, approve: bool) -> RequisitionInput {
    RequisitionInput::Decision(RequisitionDecided {
        org: org(),
        requisition: RequisitionId::from_u128(7),
        decision: Decision {
            approver: user(by),
            authority,
            approve,
        },
    })
}

fn in_review(total: Decimal) -> Option<RequisitionApproval> {
    let mut state = None;
    let input = RequisitionInput::Submitted(submitted(total, 2));
    handle_requisition(&mut state, &input, None, T0).unwrap();
    state
}

fn states(events: &[RequisitionEvent]) -> Vec<(RequisitionState, RequisitionState, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            ApprovalEvent::Transitioned(t) => Some((t.from, t.to, t.version)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_submitted_requisition_goes_into_manager_review_and_requests_its_first_step() {
    let mut state = None;
    let input = RequisitionInput::Submitted(submitted(dec!(60000), 3));
    let events = handle_requisition(&mut state, &input, None, T0).unwrap();
    assert_eq!(
        states(&events),
        vec![
            (RequisitionState::Draft, RequisitionState::Submitted, 1),
            (
                RequisitionState::Submitted,
                RequisitionState::ManagerReview,
                2
            ),
        ]
    );
    // 60,000 EUR is above L2's 50,000: the chain is L1, L2, L3, due by the default SLA.
    assert_eq!(
        events.last(),
        Some(&ApprovalEvent::Requested {
            level: ApprovalLevel::L1,
            step: 1,
            of: 3,
            due_at: EventTime(T0.0 + 48 * HOUR),
        })
    );
    let state = state.unwrap();
    assert_eq!(state.requisition().state(), RequisitionState::ManagerReview);
    assert_eq!(state.total(), Money::new(dec!(60000), eur()));
}

#[test]
fn a_requisition_is_approved_only_after_every_step_of_its_chain() {
    let mut state = in_review(dec!(20000));
    let first =
        handle_requisition(&mut state, &decided(2, ApprovalLevel::L1, true), None, T0).unwrap();
    assert!(
        states(&first).is_empty(),
        "one step of two: still in review"
    );
    assert!(matches!(
        first[1],
        ApprovalEvent::Requested {
            level: ApprovalLevel::L2,
            step: 2,
            of: 2,
            ..
        }
    ));
    let second =
        handle_requisition(&mut state, &decided(3, ApprovalLevel::L2, true), None, T0).unwrap();
    assert_eq!(
        states(&second),
        vec![(
            RequisitionState::ManagerReview,
            RequisitionState::Approved,
            3
        )]
    );
}

#[test]
fn a_rejected_requisition_ends_rejected_and_takes_no_more_decisions() {
    let mut state = in_review(dec!(500));
    let events =
        handle_requisition(&mut state, &decided(2, ApprovalLevel::L1, false), None, T0).unwrap();
    assert_eq!(
        states(&events),
        vec![(
            RequisitionState::ManagerReview,
            RequisitionState::Rejected,
            3
        )]
    );
    let late =
        handle_requisition(&mut state, &decided(3, ApprovalLevel::L3, true), None, T0).unwrap_err();
    assert_eq!(
        late.reason,
        RequisitionRefusalReason::Approval(ApprovalError::NotInReview(RequisitionState::Rejected))
    );
    assert_eq!(late.version, 3);
}

#[test]
fn the_guards_refuse_a_decision_in_order_and_leave_the_requisition_as_it_was() {
    let mut state = in_review(dec!(20000));
    let before = state.clone();
    let refused = |state: &mut Option<RequisitionApproval>, by, level| {
        handle_requisition(state, &decided(by, level, true), None, T0)
            .unwrap_err()
            .reason
    };
    // Authority comes before segregation of duties: the requester without authority is told
    // about authority.
    let mut no_lines = in_review(dec!(20000));
    no_lines.as_mut().unwrap().lines = 0;
    assert_eq!(
        refused(&mut no_lines, REQUESTER, ApprovalLevel::L3),
        ApprovalError::NoLines.into()
    );
    let mut l2_first = in_review(dec!(20000));
    handle_requisition(
        &mut l2_first,
        &decided(2, ApprovalLevel::L1, true),
        None,
        T0,
    )
    .unwrap();
    assert_eq!(
        refused(&mut l2_first, REQUESTER, ApprovalLevel::L1),
        ApprovalError::InsufficientAuthority {
            required: ApprovalLevel::L2,
            held: ApprovalLevel::L1
        }
        .into()
    );
    assert_eq!(
        refused(&mut state, REQUESTER, ApprovalLevel::L3),
        ApprovalError::SegregationOfDuties(user(REQUESTER)).into()
    );
    assert_eq!(state, before);
    assert_eq!(
        refused(&mut l2_first, 2, ApprovalLevel::L3),
        ApprovalError::SameApproverTwice(user(2)).into()
    );
}

#[test]
fn unknown_or_resubmitted_requisitions_are_refused_with_where_they_stand() {
    let mut none = None;
    let refusal =
        handle_requisition(&mut none, &decided(2, ApprovalLevel::L1, true), None, T0).unwrap_err();
    assert_eq!(
        refusal.reason,
        RequisitionRefusalReason::Unknown(RequisitionId::from_u128(7))
    );
    assert_eq!(refusal.state, None);

    let mut state = in_review(dec!(100));
    let again = RequisitionInput::Submitted(submitted(dec!(100), 1));
    let refusal = handle_requisition(&mut state, &again, None, T0).unwrap_err();
    assert_eq!(refusal.state, Some(RequisitionState::ManagerReview));
    assert_eq!(refusal.attempted, RequisitionAction::Submit);

    let mut empty = None;
    let no_lines = RequisitionInput::Submitted(submitted(dec!(100), 0));
    let refusal = handle_requisition(&mut empty, &no_lines, None, T0).unwrap_err();
    assert_eq!(refusal.reason, ApprovalError::NoLines.into());
    assert_eq!(empty, None, "a refused submission leaves nothing behind");
}

#[test]
fn an_undecided_step_escalates_after_the_orgs_sla_and_again_after_another() {
    let mut policy = ApprovalPolicy::defaults(eur());
    policy.sla_millis = HOUR;
    let mut state = None;
    let input = RequisitionInput::Submitted(submitted(dec!(100), 1));
    handle_requisition(&mut state, &input, Some(&policy), T0).unwrap();
    let approval = state.as_mut().unwrap();
    assert_eq!(approval.escalation_due(), Some(EventTime(T0.0 + HOUR)));
    assert!(approval
        .on_timer(&policy, EventTime(T0.0 + HOUR - 1))
        .is_empty());
    assert_eq!(
        approval.on_timer(&policy, EventTime(T0.0 + HOUR)),
        vec![ApprovalEvent::Escalated {
            level: ApprovalLevel::L1,
            overdue_since: EventTime(T0.0 + HOUR),
            escalations: 1,
        }]
    );
    assert_eq!(approval.escalation_due(), Some(EventTime(T0.0 + 2 * HOUR)));
    // Decided: nothing left to escalate.
    handle_requisition(
        &mut state,
        &decided(2, ApprovalLevel::L1, true),
        Some(&policy),
        T0,
    )
    .unwrap();
    let approval = state.as_mut().unwrap();
    assert_eq!(approval.escalation_due(), None);
    assert!(approval
        .on_timer(&policy, EventTime(T0.0 + 9 * HOUR))
        .is_empty());
}

fn po_from(requisition: Option<RequisitionId>) -> ProcurementInput {
    ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Submitted(PurchaseOrderSubmitted {
        org: org(),
        po: PurchaseOrderId::from_u128(5),
        supplier: SupplierId::from_u128(6),
        currency: eur(),
        lines: vec![PurchaseOrderLine {
            line: LineNumber::new(1).unwrap(),
            description: "forklift".into(),
            quantity: Quantity::new(Decimal::ONE).unwrap(),
            unit_price: UnitPrice::new(Money::new(dec!(100), eur())).unwrap(),
            receipt_required: true,
            inspection_required: false,
        }],
        requester: user(REQUESTER),
        requisition,
    }))
}

#[test]
fn an_approved_requisition_is_converted_once_into_the_po_that_names_it() {
    let mut requisition = in_review(dec!(100));
    handle_requisition(
        &mut requisition,
        &decided(2, ApprovalLevel::L1, true),
        None,
        T0,
    )
    .unwrap();
    let mut order = None;
    let input = po_from(Some(RequisitionId::from_u128(7)));
    let (events, converted) =
        handle_converting(&mut order, &mut requisition, &input, None, T0).unwrap();
    let converted = converted.expect("the requisition is converted");
    assert_eq!(
        (converted.from, converted.to, converted.version),
        (
            RequisitionState::Approved,
            RequisitionState::ConvertedToPo,
            4
        )
    );
    assert!(!events.is_empty());
    assert_eq!(
        order.as_ref().unwrap().po().state(),
        PoState::AwaitingApproval
    );
    assert_eq!(
        requisition.as_ref().unwrap().converted_to(),
        Some(&PurchaseOrderId::from_u128(5))
    );

    // A second PO naming the same requisition is refused, and is not created.
    let ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Submitted(mut second)) = input else {
        unreachable!()
    };
    second.po = PurchaseOrderId::from_u128(55);
    let second = ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Submitted(second));
    let mut second_order = None;
    let refusal =
        handle_converting(&mut second_order, &mut requisition, &second, None, T0).unwrap_err();
    assert_eq!(
        refusal.reason,
        RefusalReason::Conversion(ConversionRefused::AlreadyConverted {
            requisition: RequisitionId::from_u128(7),
            po: PurchaseOrderId::from_u128(5),
        })
    );
    assert_eq!(second_order, None);
}

#[test]
fn a_po_naming_a_requisition_not_approved_or_unknown_is_refused_and_changes_nothing() {
    let input = po_from(Some(RequisitionId::from_u128(7)));
    let mut order = None;
    let mut unknown = None;
    let refusal = handle_converting(&mut order, &mut unknown, &input, None, T0).unwrap_err();
    assert_eq!(
        refusal.reason,
        RefusalReason::Conversion(ConversionRefused::UnknownRequisition(
            RequisitionId::from_u128(7)
        ))
    );

    let mut in_review = in_review(dec!(100));
    let before = in_review.clone();
    let refusal = handle_converting(&mut order, &mut in_review, &input, None, T0).unwrap_err();
    assert_eq!(
        refusal.reason,
        RefusalReason::Conversion(ConversionRefused::NotApproved {
            requisition: RequisitionId::from_u128(7),
            state: RequisitionState::ManagerReview,
        })
    );
    assert_eq!((order, in_review), (None, before));

    // A PO that names no requisition needs none.
    let mut order = None;
    let (_, converted) =
        handle_converting(&mut order, &mut None, &po_from(None), None, T0).unwrap();
    assert_eq!(converted, None);
    assert!(order.is_some());
}
