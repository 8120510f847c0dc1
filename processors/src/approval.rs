//! Approval routing of a purchase order: the level its total calls for (per-org thresholds,
//! converted from the document currency by the org's rates, or set per currency), the chain
//! of steps that level needs (L3 needs L1, L2 and L3, in order), the guards every decision
//! passes (cheapest first: state, lines, authority, segregation of duties), and the SLA after
//! which a step not decided is escalated. Time comes in with the events; the runtime's timer
//! fires `on_timer` at `escalation_due()`.

use crate::events::EventTime;
use crate::ids::UserId;
use crate::ids::{OrgId, PurchaseOrderId};
use crate::lifecycle::{
    PoAction, PoState, PoTransitionRejected, PurchaseOrder, PurchaseOrderTransitioned,
    RequisitionState, RequisitionTransitionRejected,
};
use crate::money::{Currency, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Approval levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ApprovalLevel {
    L1,
    L2,
    L3,
}

impl ApprovalLevel {
    /// Every step the level needs, in order.
    pub fn chain(self) -> Vec<ApprovalLevel> {
        [ApprovalLevel::L1, ApprovalLevel::L2, ApprovalLevel::L3]
            .into_iter()
            .filter(|l| *l <= self)
            .collect()
    }
}

/// Upper bounds (inclusive) of L1 and L2; above `l2_max` is L3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    pub l1_max: Decimal,
    pub l2_max: Decimal,
}

impl Thresholds {
    /// DOMAIN.md's defaults: L1 up to 10,000; L2 up to 50,000; L3 above.
    pub const DEFAULT: Thresholds = Thresholds {
        l1_max: Decimal::from_parts(10_000, 0, 0, false, 0),
        l2_max: Decimal::from_parts(50_000, 0, 0, false, 0),
    };

    pub fn level(&self, amount: Decimal) -> ApprovalLevel {
        if amount <= self.l1_max {
            ApprovalLevel::L1
        } else if amount <= self.l2_max {
            ApprovalLevel::L2
        } else {
            ApprovalLevel::L3
        }
    }
}

/// One org's approval policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalPolicy {
    /// The currency `thresholds` are in.
    pub base_currency: Currency,
    pub thresholds: Thresholds,
    /// Thresholds stated directly in a document currency; take precedence over conversion.
    pub thresholds_by_currency: BTreeMap<Currency, Thresholds>,
    /// Units of `base_currency` per unit of the key currency.
    pub rates_to_base: BTreeMap<Currency, Decimal>,
    /// How long a step may wait for its decision before it is escalated, in milliseconds.
    pub sla_millis: i64,
}

impl ApprovalPolicy {
    /// DOMAIN.md's defaults in `base_currency`, with a 48-hour SLA.
    pub fn defaults(base_currency: Currency) -> Self {
        Self {
            base_currency,
            thresholds: Thresholds::DEFAULT,
            thresholds_by_currency: BTreeMap::new(),
            rates_to_base: BTreeMap::new(),
            sla_millis: 48 * 3_600_000,
        }
    }

    /// The level a document of `total` needs.
    pub fn level_for(&self, total: Money) -> Result<ApprovalLevel, ApprovalError> {
        if let Some(thresholds) = self.thresholds_by_currency.get(&total.currency()) {
            return Ok(thresholds.level(total.amount()));
        }
        if total.currency() == self.base_currency {
            return Ok(self.thresholds.level(total.amount()));
        }
        let rate = self
            .rates_to_base
            .get(&total.currency())
            .ok_or(ApprovalError::NoRate {
                from: total.currency(),
                to: self.base_currency,
            })?;
        // Compared exactly: no rounding of the converted amount.
        Ok(self.thresholds.level(total.amount() * rate))
    }
}

/// Why a submission or a decision is refused. Guards are checked in this order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApprovalError {
    #[error(transparent)]
    Transition(#[from] PoTransitionRejected),
    #[error("the purchase order is {0}, not awaiting approval")]
    NotAwaitingApproval(PoState),
    #[error(transparent)]
    RequisitionTransition(#[from] RequisitionTransitionRejected),
    #[error("the requisition is {0}, not in manager review")]
    NotInReview(RequisitionState),
    #[error("a document needs at least one line to be approved")]
    NoLines,
    #[error(
        "step {required:?} needs approval authority {required:?}; the approver holds {held:?}"
    )]
    InsufficientAuthority {
        required: ApprovalLevel,
        held: ApprovalLevel,
    },
    #[error("the requester {0} cannot approve their own document")]
    SegregationOfDuties(UserId),
    #[error("{0} already approved an earlier step of this chain")]
    SameApproverTwice(UserId),
    #[error("no rate from {from} to {to} is configured for this org")]
    NoRate { from: Currency, to: Currency },
    #[error("{0} is decided by approval routing, not by a lifecycle event")]
    NeedsRouting(PoAction),
}

/// An approver's decision on the current step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approver: UserId,
    /// The highest level this approver may approve.
    pub authority: ApprovalLevel,
    pub approve: bool,
}

/// What routing emits. `T` is the document's lifecycle transition: a purchase order's by
/// default, a requisition's for requisitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalEvent<T = PurchaseOrderTransitioned> {
    /// The document moved in its lifecycle (submitted, approved, rejected).
    Transitioned(T),
    /// A step awaits a decision, due by `due_at`.
    Requested {
        level: ApprovalLevel,
        step: usize,
        of: usize,
        due_at: EventTime,
    },
    StepApproved {
        level: ApprovalLevel,
        approver: UserId,
    },
    /// A step passed its SLA undecided.
    Escalated {
        level: ApprovalLevel,
        overdue_since: EventTime,
        escalations: u32,
    },
}

/// The chain of steps a document's level needs, where it stands, who approved so far and when
/// the open step escalates. Shared by every document that is routed (POs and requisitions);
/// the document checks its own state and lines, the route checks everything about the
/// approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRoute {
    chain: Vec<ApprovalLevel>,
    next_step: usize,
    approvers: Vec<UserId>,
    due_at: EventTime,
    escalations: u32,
}

impl ApprovalRoute {
    /// Opens the chain `level` needs, and the request for its first step.
    pub fn start<T>(
        level: ApprovalLevel,
        policy: &ApprovalPolicy,
        at: EventTime,
    ) -> (Self, ApprovalEvent<T>) {
        let chain = level.chain();
        let due_at = EventTime(at.0 + policy.sla_millis);
        let requested = ApprovalEvent::Requested {
            level: chain[0],
            step: 1,
            of: chain.len(),
            due_at,
        };
        let route = Self {
            chain,
            next_step: 0,
            approvers: vec![],
            due_at,
            escalations: 0,
        };
        (route, requested)
    }

    /// The open step's position and the chain's length, e.g. `(2, 3)`.
    pub fn open_step(&self) -> (usize, usize) {
        (self.next_step + 1, self.chain.len())
    }

    /// When the open step escalates if still undecided.
    pub fn due_at(&self) -> EventTime {
        self.due_at
    }

    /// The approver's guards, in DOMAIN.md's order after state and lines: authority, then
    /// segregation of duties (never the requester, never one person for two steps).
    pub fn check(
        &self,
        decision: &Decision,
        requester: Option<&UserId>,
    ) -> Result<ApprovalLevel, ApprovalError> {
        let required = self.chain[self.next_step];
        if decision.authority < required {
            return Err(ApprovalError::InsufficientAuthority {
                required,
                held: decision.authority,
            });
        }
        if Some(&decision.approver) == requester {
            return Err(ApprovalError::SegregationOfDuties(
                decision.approver.clone(),
            ));
        }
        if self.approvers.contains(&decision.approver) {
            return Err(ApprovalError::SameApproverTwice(decision.approver.clone()));
        }
        Ok(required)
    }

    /// Records the open step as approved by `approver` (already [`check`](Self::check)ed):
    /// the step's event, then the next step's request, or `true` when the chain is complete.
    pub fn approve<T>(
        &mut self,
        approver: &UserId,
        policy: &ApprovalPolicy,
        at: EventTime,
    ) -> (Vec<ApprovalEvent<T>>, bool) {
        let level = self.chain[self.next_step];
        self.approvers.push(approver.clone());
        self.next_step += 1;
        let mut events = vec![ApprovalEvent::StepApproved {
            level,
            approver: approver.clone(),
        }];
        if self.next_step == self.chain.len() {
            return (events, true);
        }
        self.due_at = EventTime(at.0 + policy.sla_millis);
        self.escalations = 0;
        events.push(ApprovalEvent::Requested {
            level: self.chain[self.next_step],
            step: self.next_step + 1,
            of: self.chain.len(),
            due_at: self.due_at,
        });
        (events, false)
    }

    /// Escalates the open step if `now` is past its SLA, and gives it one more SLA period.
    pub fn escalate<T>(
        &mut self,
        policy: &ApprovalPolicy,
        now: EventTime,
    ) -> Vec<ApprovalEvent<T>> {
        if now < self.due_at {
            return vec![];
        }
        let overdue_since = self.due_at;
        self.escalations += 1;
        self.due_at = EventTime(now.0 + policy.sla_millis);
        vec![ApprovalEvent::Escalated {
            level: self.chain[self.next_step],
            overdue_since,
            escalations: self.escalations,
        }]
    }
}

/// A purchase order under approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOrderApproval {
    po: PurchaseOrder,
    /// `None` for a PO adopted at Issued (approved by the ERP, outside this pipeline).
    requester: Option<UserId>,
    lines: usize,
    total: Money,
    route: Option<ApprovalRoute>,
    /// What was ordered, received, matched and paid: what moves the PO after it is issued.
    #[serde(default)]
    fulfilment: crate::procurement::Fulfilment,
}

impl PurchaseOrderApproval {
    pub fn fulfilment(&self) -> &crate::procurement::Fulfilment {
        &self.fulfilment
    }

    pub(crate) fn fulfilment_mut(&mut self) -> &mut crate::procurement::Fulfilment {
        &mut self.fulfilment
    }

    pub fn new(po: PurchaseOrder, requester: UserId, lines: usize, total: Money) -> Self {
        Self {
            po,
            requester: Some(requester),
            lines,
            total,
            route: None,
            fulfilment: Default::default(),
        }
    }

    /// A PO the pipeline first hears of when its ERP issues it: approved outside the pipeline,
    /// so it enters at Issued, by the one transition that did happen (Approved -> Issued).
    pub fn adopt_issued(
        org: OrgId,
        id: PurchaseOrderId,
        lines: usize,
        total: Money,
    ) -> (Self, PurchaseOrderTransitioned) {
        let mut po = PurchaseOrder::new(org, id, PoState::Approved);
        let issued = po
            .issue()
            .expect("Approved -> Issued is a valid transition");
        let adopted = Self {
            po,
            requester: None,
            lines,
            total,
            route: None,
            fulfilment: Default::default(),
        };
        (adopted, issued)
    }

    pub fn po(&self) -> &PurchaseOrder {
        &self.po
    }

    pub fn requester(&self) -> Option<&UserId> {
        self.requester.as_ref()
    }

    pub fn total(&self) -> Money {
        self.total
    }

    /// Moves the PO on by a lifecycle action that needs no approval routing (issue,
    /// acknowledge, receive, cancel, dispute, ...). Submit, approve and reject go through
    /// [`submit`](Self::submit) and [`decide`](Self::decide), which check their guards.
    pub fn act(&mut self, action: PoAction) -> Result<PurchaseOrderTransitioned, ApprovalError> {
        if matches!(
            action,
            PoAction::Submit | PoAction::Approve | PoAction::Reject
        ) {
            return Err(ApprovalError::NeedsRouting(action));
        }
        Ok(self.po.attempt(action)?)
    }

    /// The open step's position and the chain's length, e.g. `(2, 3)`, if a step is open.
    pub fn open_step(&self) -> Option<(usize, usize)> {
        self.route
            .as_ref()
            .filter(|_| self.po.state() == PoState::AwaitingApproval)
            .map(ApprovalRoute::open_step)
    }

    /// When the open step must be escalated, if a step is open.
    pub fn escalation_due(&self) -> Option<EventTime> {
        self.route
            .as_ref()
            .filter(|_| self.po.state() == PoState::AwaitingApproval)
            .map(ApprovalRoute::due_at)
    }

    /// Submits the PO for approval and requests the first step of the chain its total needs.
    pub fn submit(
        &mut self,
        policy: &ApprovalPolicy,
        at: EventTime,
    ) -> Result<Vec<ApprovalEvent>, ApprovalError> {
        if self.lines == 0 {
            return Err(ApprovalError::NoLines);
        }
        // The level first: a missing rate must not leave the PO submitted without a route.
        let level = policy.level_for(self.total)?;
        let submitted = self.po.submit()?;
        let (route, requested) = ApprovalRoute::start(level, policy, at);
        self.route = Some(route);
        Ok(vec![ApprovalEvent::Transitioned(submitted), requested])
    }

    /// Applies a decision on the open step, after the guards in DOMAIN.md's order.
    pub fn decide(
        &mut self,
        decision: &Decision,
        policy: &ApprovalPolicy,
        at: EventTime,
    ) -> Result<Vec<ApprovalEvent>, ApprovalError> {
        let state = self.po.state();
        let route = match &self.route {
            Some(route) if state == PoState::AwaitingApproval => route,
            _ => return Err(ApprovalError::NotAwaitingApproval(state)),
        };
        if self.lines == 0 {
            return Err(ApprovalError::NoLines);
        }
        route.check(decision, self.requester.as_ref())?;
        if !decision.approve {
            return Ok(vec![ApprovalEvent::Transitioned(self.po.reject()?)]);
        }
        let route = self.route.as_mut().expect("checked above");
        let (mut events, complete) = route.approve(&decision.approver, policy, at);
        if complete {
            events.push(ApprovalEvent::Transitioned(self.po.approve()?));
        }
        Ok(events)
    }

    /// Called by the runtime's timer: escalates the open step if it is past its SLA, and
    /// re-arms the timer for one more SLA period.
    pub fn on_timer(&mut self, policy: &ApprovalPolicy, now: EventTime) -> Vec<ApprovalEvent> {
        if self.escalation_due().is_none() {
            return vec![];
        }
        let route = self.route.as_mut().expect("a due step has a route");
        route.escalate(policy, now)
    }
}

#[cfg(test)]
mod tests;
