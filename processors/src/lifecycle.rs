//! The purchase-order and requisition lifecycles of DOMAIN.md as state machines. Every
//! accepted action is an event carrying the aggregate's new version; every refused one is a
//! typed rejection naming the current state and the attempted action, never a silent drop.

use crate::ids::{OrgId, PurchaseOrderId, RequisitionId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The twelve states of a purchase order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PoState {
    Draft,
    AwaitingApproval,
    Approved,
    Issued,
    Acknowledged,
    PartiallyReceived,
    Received,
    Invoiced,
    Paid,
    Closed,
    Cancelled,
    Disputed,
}

/// What can be attempted on a purchase order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PoAction {
    Submit,
    Approve,
    Reject,
    Issue,
    Acknowledge,
    /// Goods received, some still outstanding (repeatable).
    ReceivePartially,
    /// The last outstanding goods received.
    ReceiveInFull,
    /// An invoice of the PO matched.
    MatchInvoice,
    Pay,
    Close,
    Cancel,
    Dispute,
    ResolveDispute,
}

impl PoState {
    pub const ALL: [PoState; 12] = [
        PoState::Draft,
        PoState::AwaitingApproval,
        PoState::Approved,
        PoState::Issued,
        PoState::Acknowledged,
        PoState::PartiallyReceived,
        PoState::Received,
        PoState::Invoiced,
        PoState::Paid,
        PoState::Closed,
        PoState::Cancelled,
        PoState::Disputed,
    ];

    /// The state `action` leads to from this one, or `None` if DOMAIN.md does not allow it.
    pub fn after(self, action: PoAction) -> Option<PoState> {
        use PoAction as A;
        use PoState as S;
        Some(match (self, action) {
            (S::Draft, A::Submit) => S::AwaitingApproval,
            (S::AwaitingApproval, A::Approve) => S::Approved,
            (S::AwaitingApproval, A::Reject) => S::Cancelled,
            (S::Approved, A::Issue) => S::Issued,
            (S::Issued, A::Acknowledge) => S::Acknowledged,
            (S::Acknowledged | S::PartiallyReceived, A::ReceivePartially) => S::PartiallyReceived,
            (S::Acknowledged | S::PartiallyReceived, A::ReceiveInFull) => S::Received,
            (S::Received, A::MatchInvoice) => S::Invoiced,
            (S::Invoiced, A::Pay) => S::Paid,
            (S::Paid, A::Close) => S::Closed,
            (S::Draft | S::AwaitingApproval | S::Approved | S::Issued | S::Disputed, A::Cancel) => {
                S::Cancelled
            }
            (S::Acknowledged | S::PartiallyReceived | S::Received | S::Invoiced, A::Dispute) => {
                S::Disputed
            }
            (S::Disputed, A::ResolveDispute) => S::Approved,
            _ => return None,
        })
    }

    /// No action leads anywhere from a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(self, PoState::Closed | PoState::Cancelled)
    }
}

impl PoAction {
    pub const ALL: [PoAction; 13] = [
        PoAction::Submit,
        PoAction::Approve,
        PoAction::Reject,
        PoAction::Issue,
        PoAction::Acknowledge,
        PoAction::ReceivePartially,
        PoAction::ReceiveInFull,
        PoAction::MatchInvoice,
        PoAction::Pay,
        PoAction::Close,
        PoAction::Cancel,
        PoAction::Dispute,
        PoAction::ResolveDispute,
    ];
}

/// A variant's name in words, as a person reads it: `AwaitingApproval` -> "awaiting approval",
/// `ConvertToPo` -> "convert to PO".
pub fn in_words(name: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() || words.is_empty() {
            words.push(String::new());
        }
        if let Some(word) = words.last_mut() {
            word.push(c.to_ascii_lowercase());
        }
    }
    words
        .into_iter()
        .map(|w| if w == "po" { "PO".to_owned() } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for PoState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&in_words(&format!("{self:?}")))
    }
}

impl fmt::Display for PoAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&in_words(&format!("{self:?}")))
    }
}

impl fmt::Display for RequisitionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&in_words(&format!("{self:?}")))
    }
}

impl fmt::Display for RequisitionAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&in_words(&format!("{self:?}")))
    }
}

/// A state machine: which action leads from which state to which.
pub trait Transitions: Copy + Eq + fmt::Debug + fmt::Display {
    type Action: Copy + Eq + fmt::Debug + fmt::Display;
    /// The state `action` leads to, or `None` if it is not allowed from here.
    fn after(self, action: Self::Action) -> Option<Self>;
}

impl Transitions for PoState {
    type Action = PoAction;
    fn after(self, action: PoAction) -> Option<PoState> {
        PoState::after(self, action)
    }
}

impl Transitions for RequisitionState {
    type Action = RequisitionAction;
    fn after(self, action: RequisitionAction) -> Option<RequisitionState> {
        RequisitionState::after(self, action)
    }
}

/// An accepted transition: the event every consumer of the document's history sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize, S::Action: Serialize, Id: Serialize",
    deserialize = "S: Deserialize<'de>, S::Action: Deserialize<'de>, Id: Deserialize<'de>"
))]
pub struct Transitioned<S: Transitions, Id> {
    pub org: OrgId,
    pub id: Id,
    pub action: S::Action,
    pub from: S,
    pub to: S,
    /// The aggregate version after this event (1 for the first transition).
    pub version: u64,
}

/// A refused transition: the document, where it stands, and what was attempted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize, S::Action: Serialize, Id: Serialize",
    deserialize = "S: Deserialize<'de>, S::Action: Deserialize<'de>, Id: Deserialize<'de>"
))]
#[error("{id} is {current} (version {version}): \"{attempted}\" is not allowed from there")]
pub struct TransitionRejected<S: Transitions, Id: fmt::Display> {
    pub id: Id,
    pub current: S,
    pub attempted: S::Action,
    pub version: u64,
}

/// A document moving through a lifecycle, one versioned event at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle<S, Id> {
    org: OrgId,
    id: Id,
    state: S,
    version: u64,
}

impl<S: Transitions, Id: Clone + fmt::Display> Lifecycle<S, Id> {
    /// A document in its initial `state`, version 0.
    pub fn new(org: OrgId, id: Id, state: S) -> Self {
        Self {
            org,
            id,
            state,
            version: 0,
        }
    }

    pub fn state(&self) -> S {
        self.state
    }

    pub fn org(&self) -> &OrgId {
        &self.org
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn id(&self) -> &Id {
        &self.id
    }

    /// Applies `action` if the current state allows it.
    pub fn attempt(
        &mut self,
        action: S::Action,
    ) -> Result<Transitioned<S, Id>, TransitionRejected<S, Id>> {
        let Some(to) = self.state.after(action) else {
            return Err(TransitionRejected {
                id: self.id.clone(),
                current: self.state,
                attempted: action,
                version: self.version,
            });
        };
        let from = self.state;
        self.state = to;
        self.version += 1;
        Ok(Transitioned {
            org: self.org.clone(),
            id: self.id.clone(),
            action,
            from,
            to,
            version: self.version,
        })
    }
}

/// A purchase order's lifecycle.
pub type PurchaseOrder = Lifecycle<PoState, PurchaseOrderId>;
pub type PurchaseOrderTransitioned = Transitioned<PoState, PurchaseOrderId>;
pub type PoTransitionRejected = TransitionRejected<PoState, PurchaseOrderId>;
type PoResult = Result<PurchaseOrderTransitioned, PoTransitionRejected>;

impl PurchaseOrder {
    /// A new PO in Draft, version 0.
    pub fn draft(org: OrgId, id: PurchaseOrderId) -> Self {
        Self::new(org, id, PoState::Draft)
    }

    pub fn submit(&mut self) -> PoResult {
        self.attempt(PoAction::Submit)
    }
    pub fn approve(&mut self) -> PoResult {
        self.attempt(PoAction::Approve)
    }
    pub fn reject(&mut self) -> PoResult {
        self.attempt(PoAction::Reject)
    }
    pub fn issue(&mut self) -> PoResult {
        self.attempt(PoAction::Issue)
    }
    pub fn acknowledge(&mut self) -> PoResult {
        self.attempt(PoAction::Acknowledge)
    }
    pub fn receive_partially(&mut self) -> PoResult {
        self.attempt(PoAction::ReceivePartially)
    }
    pub fn receive_in_full(&mut self) -> PoResult {
        self.attempt(PoAction::ReceiveInFull)
    }
    pub fn match_invoice(&mut self) -> PoResult {
        self.attempt(PoAction::MatchInvoice)
    }
    pub fn pay(&mut self) -> PoResult {
        self.attempt(PoAction::Pay)
    }
    pub fn close(&mut self) -> PoResult {
        self.attempt(PoAction::Close)
    }
    pub fn cancel(&mut self) -> PoResult {
        self.attempt(PoAction::Cancel)
    }
    pub fn dispute(&mut self) -> PoResult {
        self.attempt(PoAction::Dispute)
    }
    pub fn resolve_dispute(&mut self) -> PoResult {
        self.attempt(PoAction::ResolveDispute)
    }
}

/// A purchase requisition's lifecycle.
pub type Requisition = Lifecycle<RequisitionState, RequisitionId>;
pub type RequisitionTransitioned = Transitioned<RequisitionState, RequisitionId>;
pub type RequisitionTransitionRejected = TransitionRejected<RequisitionState, RequisitionId>;
type RequisitionResult = Result<RequisitionTransitioned, RequisitionTransitionRejected>;

impl Requisition {
    /// A new requisition in Draft, version 0.
    pub fn draft(org: OrgId, id: RequisitionId) -> Self {
        Self::new(org, id, RequisitionState::Draft)
    }

    pub fn submit(&mut self) -> RequisitionResult {
        self.attempt(RequisitionAction::Submit)
    }
    pub fn start_review(&mut self) -> RequisitionResult {
        self.attempt(RequisitionAction::StartReview)
    }
    pub fn approve(&mut self) -> RequisitionResult {
        self.attempt(RequisitionAction::Approve)
    }
    pub fn reject(&mut self) -> RequisitionResult {
        self.attempt(RequisitionAction::Reject)
    }
    pub fn convert_to_po(&mut self) -> RequisitionResult {
        self.attempt(RequisitionAction::ConvertToPo)
    }
}

/// The states of a purchase requisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RequisitionState {
    Draft,
    Submitted,
    ManagerReview,
    Approved,
    ConvertedToPo,
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RequisitionAction {
    Submit,
    StartReview,
    Approve,
    Reject,
    ConvertToPo,
}

impl RequisitionState {
    pub const ALL: [RequisitionState; 6] = [
        RequisitionState::Draft,
        RequisitionState::Submitted,
        RequisitionState::ManagerReview,
        RequisitionState::Approved,
        RequisitionState::ConvertedToPo,
        RequisitionState::Rejected,
    ];

    pub fn after(self, action: RequisitionAction) -> Option<RequisitionState> {
        use RequisitionAction as A;
        use RequisitionState as S;
        Some(match (self, action) {
            (S::Draft, A::Submit) => S::Submitted,
            (S::Submitted, A::StartReview) => S::ManagerReview,
            (S::ManagerReview, A::Approve) => S::Approved,
            (S::ManagerReview, A::Reject) => S::Rejected,
            (S::Approved, A::ConvertToPo) => S::ConvertedToPo,
            _ => return None,
        })
    }
}

impl RequisitionAction {
    pub const ALL: [RequisitionAction; 5] = [
        RequisitionAction::Submit,
        RequisitionAction::StartReview,
        RequisitionAction::Approve,
        RequisitionAction::Reject,
        RequisitionAction::ConvertToPo,
    ];
}

#[cfg(test)]
mod tests;
