//! The procurement desk: one purchase order's lifecycle and approval routing, driven by what
//! its ERP publishes on `po-events` and what approvers decide on `approval-decisions`, with
//! escalation on a timer. Every input either moves the PO (events out) or is refused with a
//! typed reason (a business outcome for `audit-events`, never a silent drop).

use crate::approval::{ApprovalError, ApprovalEvent, ApprovalPolicy, Decision};
use crate::events::{order_total, EventTime, PurchaseOrderEvent, PurchaseOrderStep};
use crate::ids::{OrgId, PurchaseOrderId};
use crate::lifecycle::{PoAction, PoState, PoTransitionRejected, PurchaseOrder};
use crate::money::{Currency, MoneyError};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

pub use crate::approval::PurchaseOrderApproval;

/// An approver's decision on a purchase order's open approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecided {
    pub org: OrgId,
    pub po: PurchaseOrderId,
    pub decision: Decision,
}

/// What the desk is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcurementInput {
    PurchaseOrder(PurchaseOrderEvent),
    Decision(ApprovalDecided),
}

impl ProcurementInput {
    pub fn org(&self) -> &OrgId {
        match self {
            ProcurementInput::PurchaseOrder(e) => e.org(),
            ProcurementInput::Decision(d) => &d.org,
        }
    }

    pub fn po(&self) -> &PurchaseOrderId {
        match self {
            ProcurementInput::PurchaseOrder(e) => e.po(),
            ProcurementInput::Decision(d) => &d.po,
        }
    }

    /// The lifecycle action this input attempts.
    pub fn attempted(&self) -> PoAction {
        match self {
            ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Submitted(_)) => PoAction::Submit,
            ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Issued(_)) => PoAction::Issue,
            ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Cancelled(_)) => PoAction::Cancel,
            ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Stepped(s)) => match s.step {
                PurchaseOrderStep::Acknowledged => PoAction::Acknowledge,
                PurchaseOrderStep::Disputed => PoAction::Dispute,
                PurchaseOrderStep::DisputeResolved => PoAction::ResolveDispute,
                PurchaseOrderStep::Closed => PoAction::Close,
            },
            ProcurementInput::Decision(d) if d.decision.approve => PoAction::Approve,
            ProcurementInput::Decision(_) => PoAction::Reject,
        }
    }
}

/// Why an input did not move the PO.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusalReason {
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error("no purchase order {0} has been submitted or issued")]
    UnknownPurchaseOrder(PurchaseOrderId),
    #[error("the order total cannot be computed: {0}")]
    Total(#[from] MoneyError),
}

/// A refused input: which PO, where it stood, what was attempted, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub org: OrgId,
    pub po: PurchaseOrderId,
    /// `None` when the PO is unknown.
    pub state: Option<PoState>,
    pub version: u64,
    pub attempted: PoAction,
    pub reason: RefusalReason,
}

/// The org's approval policy, or DOMAIN.md's defaults in the document's own currency when the
/// org has published no configuration.
pub fn policy_or_default(
    configured: Option<&ApprovalPolicy>,
    currency: Currency,
) -> Cow<'_, ApprovalPolicy> {
    match configured {
        Some(policy) => Cow::Borrowed(policy),
        None => Cow::Owned(ApprovalPolicy::defaults(currency)),
    }
}

/// Applies `input` to the PO's state (`None`: never seen). On refusal the state is unchanged.
pub fn handle(
    state: &mut Option<PurchaseOrderApproval>,
    input: &ProcurementInput,
    policy: Option<&ApprovalPolicy>,
    at: EventTime,
) -> Result<Vec<ApprovalEvent>, Refusal> {
    let refuse = |state: &Option<PurchaseOrderApproval>, reason: RefusalReason| Refusal {
        org: input.org().clone(),
        po: input.po().clone(),
        state: state.as_ref().map(|s| s.po().state()),
        version: state.as_ref().map_or(0, |s| s.po().version()),
        attempted: input.attempted(),
        reason,
    };
    let result = match (state.as_mut(), input) {
        (None, ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Submitted(e))) => {
            let total = e.total().map_err(|m| refuse(state, m.into()))?;
            let mut approval = PurchaseOrderApproval::new(
                PurchaseOrder::draft(e.org.clone(), e.po.clone()),
                e.requester.clone(),
                e.lines.len(),
                total,
            );
            let events = approval
                .submit(&policy_or_default(policy, e.currency), at)
                .map_err(|a| refuse(state, a.into()))?;
            *state = Some(approval);
            return Ok(events);
        }
        (None, ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Issued(e))) => {
            let total = order_total(e.currency, &e.lines).map_err(|m| refuse(state, m.into()))?;
            let (adopted, issued) = PurchaseOrderApproval::adopt_issued(
                e.org.clone(),
                e.po.clone(),
                e.lines.len(),
                total,
            );
            *state = Some(adopted);
            return Ok(vec![ApprovalEvent::Transitioned(issued)]);
        }
        (None, _) => {
            let reason = RefusalReason::UnknownPurchaseOrder(input.po().clone());
            return Err(refuse(state, reason));
        }
        (Some(approval), ProcurementInput::Decision(d)) => {
            let policy = policy_or_default(policy, approval.total().currency());
            let mut next = approval.clone();
            let decided = next.decide(&d.decision, &policy, at);
            if decided.is_ok() {
                *approval = next;
            }
            decided
        }
        // Nothing leads back to Draft: a PO is submitted once.
        (Some(approval), ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Submitted(_))) => {
            Err(ApprovalError::Transition(PoTransitionRejected {
                id: approval.po().id().clone(),
                current: approval.po().state(),
                attempted: PoAction::Submit,
                version: approval.po().version(),
            }))
        }
        // A change order re-issues a PO already out with its supplier: new terms for
        // matching, no lifecycle step.
        (Some(approval), ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Issued(_)))
            if is_out_with_supplier(approval.po().state()) =>
        {
            Ok(vec![])
        }
        (Some(approval), ProcurementInput::PurchaseOrder(_)) => approval
            .act(input.attempted())
            .map(|t| vec![ApprovalEvent::Transitioned(t)]),
    };
    result.map_err(|a| refuse(state, a.into()))
}

fn is_out_with_supplier(state: PoState) -> bool {
    matches!(
        state,
        PoState::Issued
            | PoState::Acknowledged
            | PoState::PartiallyReceived
            | PoState::Received
            | PoState::Invoiced
    )
}

#[cfg(test)]
mod tests;
