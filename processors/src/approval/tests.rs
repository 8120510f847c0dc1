use super::*;
use crate::ids::{OrgId, PurchaseOrderId};
use rust_decimal_macros::dec;

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn policy() -> ApprovalPolicy {
    ApprovalPolicy::defaults(eur())
}

fn user(n: u128) -> UserId {
    UserId::from_u128(n)
}

const REQUESTER: u128 = 1;
const T0: EventTime = EventTime(1_000_000);

fn approval(total: Decimal, lines: usize) -> PurchaseOrderApproval {
    let po = PurchaseOrder::draft(OrgId::from_u128(9), PurchaseOrderId::from_u128(8));
    PurchaseOrderApproval::new(po, user(REQUESTER), lines, Money::new(total, eur()))
}

fn submitted(total: Decimal) -> PurchaseOrderApproval {
    let mut a = approval(total, 2);
    a.submit(&policy(), T0).unwrap();
    a
}

fn approve(by: u128, authority: ApprovalLevel) -> Decision {
    Decision {
        approver: user(by),
        authority,
        approve: true,
    }
}

#[test]
fn the_default_thresholds_put_each_boundary_in_the_lower_level() {
    let p = policy();
    let level = |a| p.level_for(Money::new(a, eur())).unwrap();
    assert_eq!(level(dec!(10000.00)), ApprovalLevel::L1);
    assert_eq!(level(dec!(10000.01)), ApprovalLevel::L2);
    assert_eq!(level(dec!(50000)), ApprovalLevel::L2);
    assert_eq!(level(dec!(50000.01)), ApprovalLevel::L3);
}

#[test]
fn a_foreign_currency_total_is_converted_by_the_orgs_rate() {
    let mut p = policy();
    let usd = Currency::parse("USD").unwrap();
    p.rates_to_base.insert(usd, dec!(0.9));
    // 11,000 USD at 0.9 is 9,900 EUR: L1. 11,200 USD is 10,080 EUR: L2.
    assert_eq!(
        p.level_for(Money::new(dec!(11000), usd)).unwrap(),
        ApprovalLevel::L1
    );
    assert_eq!(
        p.level_for(Money::new(dec!(11200), usd)).unwrap(),
        ApprovalLevel::L2
    );
}

#[test]
fn thresholds_set_per_currency_win_over_conversion() {
    let mut p = policy();
    let jpy = Currency::parse("JPY").unwrap();
    p.rates_to_base.insert(jpy, dec!(0.006));
    p.thresholds_by_currency.insert(
        jpy,
        Thresholds {
            l1_max: dec!(1500000),
            l2_max: dec!(7500000),
        },
    );
    assert_eq!(
        p.level_for(Money::new(dec!(2000000), jpy)).unwrap(),
        ApprovalLevel::L2
    );
}

#[test]
fn a_currency_without_a_rate_is_refused_and_the_po_stays_a_draft() {
    let mut a = approval(dec!(100), 1);
    a.total = Money::new(dec!(100), Currency::parse("CHF").unwrap());
    assert!(matches!(
        a.submit(&policy(), T0),
        Err(ApprovalError::NoRate { .. })
    ));
    assert_eq!(a.po().state(), PoState::Draft);
}

#[test]
fn submitting_requests_the_first_step_with_its_due_time() {
    let mut a = approval(dec!(60000), 3);
    let events = a.submit(&policy(), T0).unwrap();
    assert!(
        matches!(&events[0], ApprovalEvent::Transitioned(t) if t.to == PoState::AwaitingApproval && t.version == 1)
    );
    assert_eq!(
        events[1],
        ApprovalEvent::Requested {
            level: ApprovalLevel::L1,
            step: 1,
            of: 3,
            due_at: EventTime(T0.0 + policy().sla_millis),
        }
    );
}

#[test]
fn a_po_without_lines_cannot_be_submitted() {
    assert_eq!(
        approval(dec!(5), 0).submit(&policy(), T0),
        Err(ApprovalError::NoLines)
    );
}

#[test]
fn an_l3_po_needs_l1_l2_and_l3_in_order_then_is_approved() {
    let mut a = submitted(dec!(75000));
    let p = policy();
    let e1 = a.decide(&approve(2, ApprovalLevel::L1), &p, T0).unwrap();
    assert!(matches!(
        e1[1],
        ApprovalEvent::Requested {
            level: ApprovalLevel::L2,
            step: 2,
            of: 3,
            ..
        }
    ));
    let e2 = a.decide(&approve(3, ApprovalLevel::L2), &p, T0).unwrap();
    assert!(matches!(
        e2[1],
        ApprovalEvent::Requested {
            level: ApprovalLevel::L3,
            step: 3,
            ..
        }
    ));
    let e3 = a.decide(&approve(4, ApprovalLevel::L3), &p, T0).unwrap();
    assert!(matches!(&e3[1], ApprovalEvent::Transitioned(t) if t.to == PoState::Approved));
    assert_eq!(a.po().state(), PoState::Approved);
}

#[test]
fn an_approver_below_the_steps_level_is_refused() {
    let mut a = submitted(dec!(20000));
    a.decide(&approve(2, ApprovalLevel::L1), &policy(), T0)
        .unwrap();
    assert_eq!(
        a.decide(&approve(3, ApprovalLevel::L1), &policy(), T0),
        Err(ApprovalError::InsufficientAuthority {
            required: ApprovalLevel::L2,
            held: ApprovalLevel::L1
        })
    );
}

#[test]
fn the_requester_never_approves_their_own_po() {
    let mut a = submitted(dec!(500));
    assert_eq!(
        a.decide(&approve(REQUESTER, ApprovalLevel::L3), &policy(), T0),
        Err(ApprovalError::SegregationOfDuties(user(REQUESTER)))
    );
}

#[test]
fn one_approver_cannot_approve_two_steps_of_a_chain() {
    let mut a = submitted(dec!(20000));
    a.decide(&approve(2, ApprovalLevel::L3), &policy(), T0)
        .unwrap();
    assert_eq!(
        a.decide(&approve(2, ApprovalLevel::L3), &policy(), T0),
        Err(ApprovalError::SameApproverTwice(user(2)))
    );
}

#[test]
fn guards_are_checked_cheapest_first() {
    // Not awaiting approval beats every other failure.
    let mut draft = approval(dec!(500), 0);
    let requester_without_authority = Decision {
        approver: user(REQUESTER),
        authority: ApprovalLevel::L1,
        approve: true,
    };
    assert_eq!(
        draft.decide(&requester_without_authority, &policy(), T0),
        Err(ApprovalError::NotAwaitingApproval(PoState::Draft))
    );
    // Authority is checked before segregation of duties.
    let mut a = submitted(dec!(20000));
    a.decide(&approve(2, ApprovalLevel::L1), &policy(), T0)
        .unwrap();
    assert!(matches!(
        a.decide(&requester_without_authority, &policy(), T0),
        Err(ApprovalError::InsufficientAuthority { .. })
    ));
}

#[test]
fn a_rejection_at_any_step_cancels_the_po() {
    let mut a = submitted(dec!(20000));
    let events = a
        .decide(
            &Decision {
                approver: user(2),
                authority: ApprovalLevel::L2,
                approve: false,
            },
            &policy(),
            T0,
        )
        .unwrap();
    assert!(matches!(&events[0], ApprovalEvent::Transitioned(t) if t.to == PoState::Cancelled));
    assert_eq!(a.escalation_due(), None);
}

#[test]
fn a_step_not_decided_within_the_sla_is_escalated_once_per_period() {
    let p = policy();
    let mut a = submitted(dec!(500));
    let due = a.escalation_due().unwrap();
    assert!(a.on_timer(&p, EventTime(due.0 - 1)).is_empty());
    assert_eq!(
        a.on_timer(&p, due),
        vec![ApprovalEvent::Escalated {
            level: ApprovalLevel::L1,
            overdue_since: due,
            escalations: 1
        }]
    );
    // Re-armed: nothing more until another SLA period passes.
    assert!(a.on_timer(&p, EventTime(due.0 + 1)).is_empty());
    assert_eq!(a.escalation_due(), Some(EventTime(due.0 + p.sla_millis)));
}

#[test]
fn an_approved_step_restarts_the_sla_for_the_next() {
    let p = policy();
    let mut a = submitted(dec!(20000));
    let later = EventTime(T0.0 + 3_600_000);
    a.decide(&approve(2, ApprovalLevel::L1), &p, later).unwrap();
    assert_eq!(a.escalation_due(), Some(EventTime(later.0 + p.sla_millis)));
}
