use super::*;
use proptest::prelude::*;
use PoAction as A;
use PoState as S;

/// DOMAIN.md's purchase-order lifecycle, transcribed edge by edge. The implementation is a
/// `match`; this list is the specification it is checked against, for all 12 x 13 pairs.
const PO_EDGES: &[(PoState, PoAction, PoState)] = &[
    (S::Draft, A::Submit, S::AwaitingApproval),
    (S::AwaitingApproval, A::Approve, S::Approved),
    (S::AwaitingApproval, A::Reject, S::Cancelled),
    (S::Approved, A::Issue, S::Issued),
    (S::Issued, A::Acknowledge, S::Acknowledged),
    (S::Acknowledged, A::ReceivePartially, S::PartiallyReceived),
    (
        S::PartiallyReceived,
        A::ReceivePartially,
        S::PartiallyReceived,
    ),
    (S::Acknowledged, A::ReceiveInFull, S::Received),
    (S::PartiallyReceived, A::ReceiveInFull, S::Received),
    (S::Received, A::MatchInvoice, S::Invoiced),
    (S::Invoiced, A::Pay, S::Paid),
    (S::Paid, A::Close, S::Closed),
    (S::Draft, A::Cancel, S::Cancelled),
    (S::AwaitingApproval, A::Cancel, S::Cancelled),
    (S::Approved, A::Cancel, S::Cancelled),
    (S::Issued, A::Cancel, S::Cancelled),
    (S::Acknowledged, A::Dispute, S::Disputed),
    (S::PartiallyReceived, A::Dispute, S::Disputed),
    (S::Received, A::Dispute, S::Disputed),
    (S::Invoiced, A::Dispute, S::Disputed),
    (S::Disputed, A::ResolveDispute, S::Approved),
    (S::Disputed, A::Cancel, S::Cancelled),
];

/// A PO brought to `state` through valid transitions only.
fn po_in(state: PoState) -> PurchaseOrder {
    let path: &[PoAction] = match state {
        S::Draft => &[],
        S::AwaitingApproval => &[A::Submit],
        S::Approved => &[A::Submit, A::Approve],
        S::Issued => &[A::Submit, A::Approve, A::Issue],
        S::Acknowledged => &[A::Submit, A::Approve, A::Issue, A::Acknowledge],
        S::PartiallyReceived => &[
            A::Submit,
            A::Approve,
            A::Issue,
            A::Acknowledge,
            A::ReceivePartially,
        ],
        S::Received => &[
            A::Submit,
            A::Approve,
            A::Issue,
            A::Acknowledge,
            A::ReceiveInFull,
        ],
        S::Invoiced => &[
            A::Submit,
            A::Approve,
            A::Issue,
            A::Acknowledge,
            A::ReceiveInFull,
            A::MatchInvoice,
        ],
        S::Paid => &[
            A::Submit,
            A::Approve,
            A::Issue,
            A::Acknowledge,
            A::ReceiveInFull,
            A::MatchInvoice,
            A::Pay,
        ],
        S::Closed => &[
            A::Submit,
            A::Approve,
            A::Issue,
            A::Acknowledge,
            A::ReceiveInFull,
            A::MatchInvoice,
            A::Pay,
            A::Close,
        ],
        S::Cancelled => &[A::Cancel],
        S::Disputed => &[A::Submit, A::Approve, A::Issue, A::Acknowledge, A::Dispute],
    };
    let mut po = PurchaseOrder::draft(OrgId::from_u128(1), PurchaseOrderId::from_u128(2));
    for action in path {
        po.attempt(*action).expect("the path to a state is valid");
    }
    assert_eq!(po.state(), state);
    po
}

#[test]
fn every_state_action_pair_does_exactly_what_the_domain_says() {
    let mut accepted = 0;
    for state in PoState::ALL {
        for action in PoAction::ALL {
            let mut po = po_in(state);
            let before = po.clone();
            let expected = PO_EDGES
                .iter()
                .find(|(from, a, _)| *from == state && *a == action)
                .map(|(_, _, to)| *to);
            match (po.attempt(action), expected) {
                (Ok(event), Some(to)) => {
                    accepted += 1;
                    assert_eq!(event.from, state);
                    assert_eq!(event.to, to, "{state} --{action}-->");
                    assert_eq!(event.action, action);
                    assert_eq!(event.version, before.version() + 1);
                    assert_eq!(po.state(), to);
                    assert_eq!(po.version(), event.version);
                }
                (Err(rejection), None) => {
                    assert_eq!(rejection.current, state);
                    assert_eq!(rejection.attempted, action);
                    assert_eq!(rejection.version, before.version());
                    assert_eq!(po, before, "a rejection changes nothing");
                }
                (outcome, expected) => {
                    panic!("{state} --{action}-->: got {outcome:?}, DOMAIN.md says {expected:?}")
                }
            }
        }
    }
    assert_eq!(accepted, PO_EDGES.len());
}

#[test]
fn a_paid_or_closed_po_can_never_be_cancelled() {
    for state in [S::Paid, S::Closed] {
        let err = po_in(state).cancel().unwrap_err();
        assert_eq!((err.current, err.attempted), (state, A::Cancel));
    }
}

#[test]
fn the_named_methods_are_the_actions() {
    let mut po = po_in(S::Draft);
    assert_eq!(po.submit().unwrap().to, S::AwaitingApproval);
    assert_eq!(po.approve().unwrap().to, S::Approved);
    assert_eq!(po.issue().unwrap().to, S::Issued);
    assert_eq!(po.acknowledge().unwrap().to, S::Acknowledged);
    assert_eq!(po.receive_partially().unwrap().to, S::PartiallyReceived);
    assert_eq!(po.dispute().unwrap().to, S::Disputed);
    assert_eq!(po.resolve_dispute().unwrap().to, S::Approved);
    assert_eq!(po.issue().unwrap().to, S::Issued);
    assert_eq!(po.acknowledge().unwrap().to, S::Acknowledged);
    assert_eq!(po.receive_in_full().unwrap().to, S::Received);
    assert_eq!(po.match_invoice().unwrap().to, S::Invoiced);
    assert_eq!(po.pay().unwrap().to, S::Paid);
    assert_eq!(po.close().unwrap().to, S::Closed);
    assert_eq!(po.version(), 13);
    assert!(po_in(S::AwaitingApproval).reject().is_ok());
}

#[test]
fn a_rejection_names_the_po_its_state_and_the_action_for_the_clerk() {
    let err = po_in(S::Closed).pay().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("is closed") && text.contains("\"pay\"") && text.contains(err.id.as_str()),
        "{text}"
    );
}

proptest! {
    /// Whatever is attempted, the version counts accepted transitions exactly, terminal
    /// states stay terminal, and Paid is only ever reached from Invoiced.
    #[test]
    fn any_sequence_of_attempts_keeps_the_lifecycle_consistent(
        actions in proptest::collection::vec(0..PoAction::ALL.len(), 0..60)
    ) {
        let mut po = po_in(S::Draft);
        let mut accepted = 0u64;
        for i in actions {
            let was = po.state();
            match po.attempt(PoAction::ALL[i]) {
                Ok(event) => {
                    accepted += 1;
                    prop_assert!(!was.is_terminal());
                    if event.to == S::Paid {
                        prop_assert_eq!(event.from, S::Invoiced);
                    }
                }
                Err(_) => prop_assert_eq!(po.state(), was),
            }
            prop_assert_eq!(po.version(), accepted);
        }
    }
}

const REQUISITION_EDGES: &[(RequisitionState, RequisitionAction, RequisitionState)] = &[
    (
        RequisitionState::Draft,
        RequisitionAction::Submit,
        RequisitionState::Submitted,
    ),
    (
        RequisitionState::Submitted,
        RequisitionAction::StartReview,
        RequisitionState::ManagerReview,
    ),
    (
        RequisitionState::ManagerReview,
        RequisitionAction::Approve,
        RequisitionState::Approved,
    ),
    (
        RequisitionState::ManagerReview,
        RequisitionAction::Reject,
        RequisitionState::Rejected,
    ),
    (
        RequisitionState::Approved,
        RequisitionAction::ConvertToPo,
        RequisitionState::ConvertedToPo,
    ),
];

#[test]
fn every_requisition_state_action_pair_does_exactly_what_the_domain_says() {
    for state in RequisitionState::ALL {
        for action in RequisitionAction::ALL {
            let expected = REQUISITION_EDGES
                .iter()
                .find(|(from, a, _)| *from == state && *a == action)
                .map(|(_, _, to)| *to);
            let mut requisition = requisition_in(state);
            let before = requisition.clone();
            match (requisition.attempt(action), expected) {
                (Ok(event), Some(to)) => {
                    assert_eq!((event.from, event.to), (state, to));
                    assert_eq!(event.version, before.version() + 1);
                }
                (Err(rejection), None) => {
                    assert_eq!((rejection.current, rejection.attempted), (state, action));
                    assert_eq!(requisition, before);
                }
                (outcome, expected) => {
                    panic!(
                        "{state:?} --{action:?}-->: got {outcome:?}, DOMAIN.md says {expected:?}"
                    )
                }
            }
        }
    }
}

fn requisition_in(state: RequisitionState) -> Requisition {
    use RequisitionAction as R;
    let path: &[RequisitionAction] = match state {
        RequisitionState::Draft => &[],
        RequisitionState::Submitted => &[R::Submit],
        RequisitionState::ManagerReview => &[R::Submit, R::StartReview],
        RequisitionState::Approved => &[R::Submit, R::StartReview, R::Approve],
        RequisitionState::ConvertedToPo => &[R::Submit, R::StartReview, R::Approve, R::ConvertToPo],
        RequisitionState::Rejected => &[R::Submit, R::StartReview, R::Reject],
    };
    let mut requisition = Requisition::draft(OrgId::from_u128(1), RequisitionId::from_u128(3));
    for action in path {
        requisition
            .attempt(*action)
            .expect("the path to a state is valid");
    }
    assert_eq!(requisition.state(), state);
    requisition
}

#[test]
fn the_requisition_methods_walk_the_happy_path_and_a_rejection_ends_it() {
    let mut r = requisition_in(RequisitionState::Draft);
    r.submit().unwrap();
    r.start_review().unwrap();
    assert_eq!(r.approve().unwrap().to, RequisitionState::Approved);
    assert_eq!(r.convert_to_po().unwrap().version, 4);
    let mut rejected = requisition_in(RequisitionState::ManagerReview);
    assert_eq!(rejected.reject().unwrap().to, RequisitionState::Rejected);
    assert!(rejected.approve().is_err());
}

#[test]
fn states_and_actions_read_as_words_and_a_refusal_as_a_sentence() {
    assert_eq!(PoState::AwaitingApproval.to_string(), "awaiting approval");
    assert_eq!(PoAction::ReceiveInFull.to_string(), "receive in full");
    assert_eq!(
        RequisitionState::ConvertedToPo.to_string(),
        "converted to PO"
    );
    let refused = TransitionRejected::<PoState, PurchaseOrderId> {
        id: PurchaseOrderId::parse("4500012345").unwrap(),
        current: PoState::Cancelled,
        attempted: PoAction::ReceiveInFull,
        version: 3,
    };
    assert_eq!(
        refused.to_string(),
        "4500012345 is cancelled (version 3): \"receive in full\" is not allowed from there"
    );
}

#[test]
fn event_times_read_as_iso_dates() {
    assert_eq!(
        crate::events::EventTime(1_796_516_885_791).to_string(),
        "2026-12-06T00:28:05Z"
    );
}
