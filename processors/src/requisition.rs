//! A purchase requisition's approval: submitted by its requester, put in manager review on
//! the same approval chain as a purchase order (level from its total and the org's
//! thresholds, the same guards, escalation past the SLA), and converted, once, into the
//! purchase order that fulfils it.

use crate::approval::{ApprovalError, ApprovalEvent, ApprovalPolicy, ApprovalRoute, Decision};
use crate::events::{EventTime, RequisitionSubmitted};
use crate::ids::{OrgId, PurchaseOrderId, RequisitionId, UserId};
use crate::lifecycle::{
    Requisition, RequisitionAction, RequisitionState, RequisitionTransitionRejected,
    RequisitionTransitioned,
};
use crate::money::{Money, MoneyError};
use crate::procurement::policy_or_default;
use serde::{Deserialize, Serialize};

/// What routing a requisition emits.
pub type RequisitionEvent = ApprovalEvent<RequisitionTransitioned>;

/// An approver's decision on a requisition's open approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequisitionDecided {
    pub org: OrgId,
    pub requisition: RequisitionId,
    pub decision: Decision,
}

/// What a requisition is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequisitionInput {
    Submitted(RequisitionSubmitted),
    Decision(RequisitionDecided),
}

impl RequisitionInput {
    pub fn org(&self) -> &OrgId {
        match self {
            RequisitionInput::Submitted(e) => &e.org,
            RequisitionInput::Decision(d) => &d.org,
        }
    }

    pub fn requisition(&self) -> &RequisitionId {
        match self {
            RequisitionInput::Submitted(e) => &e.requisition,
            RequisitionInput::Decision(d) => &d.requisition,
        }
    }

    /// The lifecycle action this input attempts.
    pub fn attempted(&self) -> RequisitionAction {
        match self {
            RequisitionInput::Submitted(_) => RequisitionAction::Submit,
            RequisitionInput::Decision(d) if d.decision.approve => RequisitionAction::Approve,
            RequisitionInput::Decision(_) => RequisitionAction::Reject,
        }
    }
}

/// Why a requisition input changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequisitionRefusalReason {
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error("no requisition {0} has been submitted")]
    Unknown(RequisitionId),
    #[error("the requisition total cannot be computed: {0}")]
    Total(#[from] MoneyError),
}

/// A refused requisition input: which, where it stood, what was attempted, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequisitionRefusal {
    pub org: OrgId,
    pub requisition: RequisitionId,
    /// `None` when the requisition is unknown.
    pub state: Option<RequisitionState>,
    pub version: u64,
    pub attempted: RequisitionAction,
    pub reason: RequisitionRefusalReason,
}

/// Why a purchase order cannot be converted from a requisition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionRefused {
    #[error("requisition {0} has not been submitted to this org")]
    UnknownRequisition(RequisitionId),
    #[error("requisition {requisition} is {state}; only an approved requisition becomes a purchase order")]
    NotApproved {
        requisition: RequisitionId,
        state: RequisitionState,
    },
    #[error("requisition {requisition} was already converted to {po}")]
    AlreadyConverted {
        requisition: RequisitionId,
        po: PurchaseOrderId,
    },
}

/// A requisition under approval, and the purchase order it became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequisitionApproval {
    requisition: Requisition,
    requester: UserId,
    lines: usize,
    total: Money,
    route: Option<ApprovalRoute>,
    converted_to: Option<PurchaseOrderId>,
}

impl RequisitionApproval {
    /// Submits a requisition and starts its manager review: Draft -> Submitted ->
    /// ManagerReview, each an event, then the request for the first step of the chain its
    /// total needs.
    pub fn submit(
        submitted: &RequisitionSubmitted,
        policy: &ApprovalPolicy,
        at: EventTime,
    ) -> Result<(Self, Vec<RequisitionEvent>), RequisitionRefusalReason> {
        if submitted.lines.is_empty() {
            return Err(ApprovalError::NoLines.into());
        }
        let total = submitted.total()?;
        let level = policy.level_for(total)?;
        let mut requisition =
            Requisition::draft(submitted.org.clone(), submitted.requisition.clone());
        let mut events = vec![
            ApprovalEvent::Transitioned(requisition.submit().map_err(ApprovalError::from)?),
            ApprovalEvent::Transitioned(requisition.start_review().map_err(ApprovalError::from)?),
        ];
        let (route, requested) = ApprovalRoute::start(level, policy, at);
        events.push(requested);
        let approval = Self {
            requisition,
            requester: submitted.requester.clone(),
            lines: submitted.lines.len(),
            total,
            route: Some(route),
            converted_to: None,
        };
        Ok((approval, events))
    }

    pub fn requisition(&self) -> &Requisition {
        &self.requisition
    }

    pub fn requester(&self) -> &UserId {
        &self.requester
    }

    pub fn total(&self) -> Money {
        self.total
    }

    /// The purchase order it was converted to, once it has been.
    pub fn converted_to(&self) -> Option<&PurchaseOrderId> {
        self.converted_to.as_ref()
    }

    fn open_route(&self) -> Option<&ApprovalRoute> {
        self.route
            .as_ref()
            .filter(|_| self.requisition.state() == RequisitionState::ManagerReview)
    }

    /// The open step's position and the chain's length, if a step is open.
    pub fn open_step(&self) -> Option<(usize, usize)> {
        self.open_route().map(ApprovalRoute::open_step)
    }

    /// When the open step must be escalated, if a step is open.
    pub fn escalation_due(&self) -> Option<EventTime> {
        self.open_route().map(ApprovalRoute::due_at)
    }

    /// Applies a decision on the open step after DOMAIN.md's guards, in order: state (in
    /// manager review), lines, authority, segregation of duties.
    pub fn decide(
        &mut self,
        decision: &Decision,
        policy: &ApprovalPolicy,
        at: EventTime,
    ) -> Result<Vec<RequisitionEvent>, ApprovalError> {
        let Some(route) = self.open_route() else {
            return Err(ApprovalError::NotInReview(self.requisition.state()));
        };
        if self.lines == 0 {
            return Err(ApprovalError::NoLines);
        }
        route.check(decision, Some(&self.requester))?;
        if !decision.approve {
            return Ok(vec![ApprovalEvent::Transitioned(
                self.requisition.reject()?,
            )]);
        }
        let route = self.route.as_mut().expect("an open route");
        let (mut events, complete) = route.approve(&decision.approver, policy, at);
        if complete {
            events.push(ApprovalEvent::Transitioned(self.requisition.approve()?));
        }
        Ok(events)
    }

    /// Called by the runtime's timer: escalates the open step if it is past its SLA.
    pub fn on_timer(&mut self, policy: &ApprovalPolicy, now: EventTime) -> Vec<RequisitionEvent> {
        if self.open_route().is_none() {
            return vec![];
        }
        let route = self.route.as_mut().expect("an open route");
        route.escalate(policy, now)
    }

    /// Whether `po` may be converted from this requisition: it is approved and not yet
    /// converted. Nothing changes.
    pub fn check_conversion(&self) -> Result<(), ConversionRefused> {
        let requisition = self.requisition.id().clone();
        if let Some(po) = &self.converted_to {
            return Err(ConversionRefused::AlreadyConverted {
                requisition,
                po: po.clone(),
            });
        }
        match self.requisition.state() {
            RequisitionState::Approved => Ok(()),
            state => Err(ConversionRefused::NotApproved { requisition, state }),
        }
    }

    /// Converts the requisition into `po`: Approved -> ConvertedToPo, once.
    pub fn convert_to(
        &mut self,
        po: &PurchaseOrderId,
    ) -> Result<RequisitionTransitioned, ConversionRefused> {
        self.check_conversion()?;
        let converted = self.requisition.convert_to_po().map_err(
            |rejected: RequisitionTransitionRejected| ConversionRefused::NotApproved {
                requisition: rejected.id,
                state: rejected.current,
            },
        )?;
        self.converted_to = Some(po.clone());
        Ok(converted)
    }
}

/// Applies `input` to the requisition's state (`None`: never seen). On refusal the state is
/// unchanged.
pub fn handle_requisition(
    state: &mut Option<RequisitionApproval>,
    input: &RequisitionInput,
    policy: Option<&ApprovalPolicy>,
    at: EventTime,
) -> Result<Vec<RequisitionEvent>, RequisitionRefusal> {
    let refuse = |state: &Option<RequisitionApproval>, reason| RequisitionRefusal {
        org: input.org().clone(),
        requisition: input.requisition().clone(),
        state: state.as_ref().map(|r| r.requisition.state()),
        version: state.as_ref().map_or(0, |r| r.requisition.version()),
        attempted: input.attempted(),
        reason,
    };
    match (state.as_mut(), input) {
        (None, RequisitionInput::Submitted(e)) => {
            let policy = policy_or_default(policy, e.currency);
            let (approval, events) =
                RequisitionApproval::submit(e, &policy, at).map_err(|r| refuse(state, r))?;
            *state = Some(approval);
            Ok(events)
        }
        (None, RequisitionInput::Decision(d)) => Err(refuse(
            state,
            RequisitionRefusalReason::Unknown(d.requisition.clone()),
        )),
        // Nothing leads back to Draft: a requisition is submitted once.
        (Some(approval), RequisitionInput::Submitted(_)) => {
            let rejected = RequisitionTransitionRejected {
                id: approval.requisition.id().clone(),
                current: approval.requisition.state(),
                attempted: RequisitionAction::Submit,
                version: approval.requisition.version(),
            };
            Err(refuse(state, ApprovalError::from(rejected).into()))
        }
        (Some(approval), RequisitionInput::Decision(d)) => {
            let policy = policy_or_default(policy, approval.total.currency());
            let mut next = approval.clone();
            match next.decide(&d.decision, &policy, at) {
                Ok(events) => {
                    *approval = next;
                    Ok(events)
                }
                Err(e) => Err(refuse(state, e.into())),
            }
        }
    }
}

#[cfg(test)]
mod tests;
