//! The procurement desk: one purchase order's lifecycle and approval routing, driven by what
//! its ERP publishes on `po-events` and what approvers decide on `approval-decisions`, with
//! escalation on a timer. Every input either moves the PO (events out) or is refused with a
//! typed reason (a business outcome for `audit-events`, never a silent drop).

use crate::approval::{ApprovalError, ApprovalEvent, ApprovalPolicy, Decision};
use crate::events::{
    order_total, EventTime, GoodsReceived, InvoiceMatched, PurchaseOrderEvent, PurchaseOrderLine,
    PurchaseOrderStep, PurchaseOrderStepped,
};
use crate::ids::{GoodsReceiptId, InvoiceId, LineNumber, OrgId, PurchaseOrderId};
use crate::lifecycle::{PoAction, PoState, PoTransitionRejected, PurchaseOrder};
use crate::money::Quantity;
use crate::money::{Currency, MoneyError};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

pub use crate::approval::PurchaseOrderApproval;
use crate::lifecycle::RequisitionTransitioned;
use crate::requisition::{ConversionRefused, RequisitionApproval};

/// An approver's decision on a purchase order's open approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecided {
    pub org: OrgId,
    pub po: PurchaseOrderId,
    pub decision: Decision,
}

/// The payment of one of a PO's invoices was settled by the bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSettled {
    pub org: OrgId,
    pub po: PurchaseOrderId,
    pub invoice: InvoiceId,
}

/// What the desk is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcurementInput {
    PurchaseOrder(PurchaseOrderEvent),
    Decision(ApprovalDecided),
    /// Goods received (and returned) against the PO.
    Receipt(GoodsReceived),
    /// One of its invoices matched.
    InvoiceMatched(InvoiceMatched),
    PaymentSettled(PaymentSettled),
}

/// What moves an issued PO on: the goods it expects and has received, the invoices matched
/// against it and those paid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfilment {
    /// Ordered quantity of every line that needs a receipt.
    expected: BTreeMap<LineNumber, Quantity>,
    /// Received minus returned, per line, over every receipt.
    received: BTreeMap<LineNumber, Quantity>,
    receipts: BTreeSet<GoodsReceiptId>,
    matched: BTreeSet<InvoiceId>,
    settled: BTreeSet<InvoiceId>,
    /// Ordered quantity of every line, services too.
    #[serde(default)]
    ordered: BTreeMap<LineNumber, Quantity>,
    /// Quantity billed by matched invoices (credit memos aside), per line.
    #[serde(default)]
    invoiced: BTreeMap<LineNumber, Quantity>,
}

impl Fulfilment {
    fn expect(&mut self, lines: &[PurchaseOrderLine]) {
        self.ordered = lines.iter().map(|l| (l.line, l.quantity)).collect();
        self.expected = lines
            .iter()
            .filter(|l| l.match_level() != crate::events::MatchLevel::TwoWay)
            .map(|l| (l.line, l.quantity))
            .collect();
    }

    /// Every line that needs a receipt has been received in full (net of returns).
    pub fn received_in_full(&self) -> bool {
        self.expected.iter().all(|(line, ordered)| {
            self.received
                .get(line)
                .is_some_and(|got| got.value() >= ordered.value())
        })
    }

    /// Matched invoices bill every ordered line in full.
    pub fn invoiced_in_full(&self) -> bool {
        self.ordered.iter().all(|(line, ordered)| {
            self.invoiced
                .get(line)
                .is_some_and(|billed| billed.value() >= ordered.value())
        })
    }

    /// The PO is billed in full and every invoice matched against it has been paid. Billed in
    /// full, so that a PO invoiced in parts is not paid after its first part: which invoices
    /// the pipeline has seen when a settlement comes in must not decide it.
    pub fn paid_in_full(&self) -> bool {
        !self.matched.is_empty() && self.matched.is_subset(&self.settled) && self.invoiced_in_full()
    }
}

impl ProcurementInput {
    pub fn org(&self) -> &OrgId {
        match self {
            ProcurementInput::PurchaseOrder(e) => e.org(),
            ProcurementInput::Decision(d) => &d.org,
            ProcurementInput::Receipt(r) => &r.org,
            ProcurementInput::InvoiceMatched(m) => &m.org,
            ProcurementInput::PaymentSettled(p) => &p.org,
        }
    }

    pub fn po(&self) -> &PurchaseOrderId {
        match self {
            ProcurementInput::PurchaseOrder(e) => e.po(),
            ProcurementInput::Decision(d) => &d.po,
            ProcurementInput::Receipt(r) => &r.po,
            ProcurementInput::InvoiceMatched(m) => &m.po,
            ProcurementInput::PaymentSettled(p) => &p.po,
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
            ProcurementInput::Receipt(_) => PoAction::ReceivePartially,
            ProcurementInput::InvoiceMatched(_) => PoAction::MatchInvoice,
            ProcurementInput::PaymentSettled(_) => PoAction::Pay,
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
    #[error(transparent)]
    Conversion(#[from] ConversionRefused),
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
            approval.fulfilment_mut().expect(&e.lines);
            let events = approval
                .submit(&policy_or_default(policy, e.currency), at)
                .map_err(|a| refuse(state, a.into()))?;
            *state = Some(approval);
            return Ok(events);
        }
        (None, ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Issued(e))) => {
            let total = order_total(e.currency, &e.lines).map_err(|m| refuse(state, m.into()))?;
            let (mut adopted, issued) = PurchaseOrderApproval::adopt_issued(
                e.org.clone(),
                e.po.clone(),
                e.lines.len(),
                total,
            );
            adopted.fulfilment_mut().expect(&e.lines);
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
        // matching and receiving, no lifecycle step.
        (Some(approval), ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Issued(e)))
            if is_out_with_supplier(approval.po().state()) =>
        {
            approval.fulfilment_mut().expect(&e.lines);
            Ok(vec![])
        }
        (Some(approval), ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Issued(e))) => {
            let issued = approval.act(PoAction::Issue);
            if issued.is_ok() {
                approval.fulfilment_mut().expect(&e.lines);
            }
            issued.map(|t| vec![ApprovalEvent::Transitioned(t)])
        }
        (Some(approval), ProcurementInput::Receipt(receipt)) => receive(approval, receipt),
        (Some(approval), ProcurementInput::InvoiceMatched(matched)) => {
            invoice_matched(approval, matched)
        }
        (Some(approval), ProcurementInput::PaymentSettled(settled)) => {
            payment_settled(approval, settled)
        }
        // The ERP closing a PO the pipeline closed when it was paid: already done.
        (
            Some(approval),
            ProcurementInput::PurchaseOrder(PurchaseOrderEvent::Stepped(PurchaseOrderStepped {
                step: PurchaseOrderStep::Closed,
                ..
            })),
        ) if approval.po().state() == PoState::Closed => Ok(vec![]),
        (Some(approval), ProcurementInput::PurchaseOrder(_)) => approval
            .act(input.attempted())
            .map(|t| vec![ApprovalEvent::Transitioned(t)]),
    };
    result.map_err(|a| {
        // What the lifecycle refused, when it did: a receipt attempts to receive in full or
        // partially, as the quantities say, not always the one.
        let attempted = match &a {
            ApprovalError::Transition(rejected) => rejected.attempted,
            _ => input.attempted(),
        };
        Refusal {
            attempted,
            ..refuse(state, a.into())
        }
    })
}

/// A PO's input that may convert the requisition it names: what the PO emits, and the
/// requisition's conversion if there was one.
pub type Converted = (Vec<ApprovalEvent>, Option<RequisitionTransitioned>);

/// Like [`handle`], for a PO first heard of through a submission or issue that names the
/// requisition it comes from (`requisition`: that requisition's state, `None` if never
/// seen). Only an approved requisition, not yet converted, becomes a purchase order: else the
/// PO is refused and nothing changes. Once the PO is accepted, the requisition is converted
/// (Approved -> ConvertedToPo). Inputs about a PO already known go to [`handle`] unchanged.
pub fn handle_converting(
    order: &mut Option<PurchaseOrderApproval>,
    requisition: &mut Option<RequisitionApproval>,
    input: &ProcurementInput,
    policy: Option<&ApprovalPolicy>,
    at: EventTime,
) -> Result<Converted, Refusal> {
    let names = match input {
        ProcurementInput::PurchaseOrder(e) if order.is_none() => e.requisition(),
        _ => None,
    };
    let Some(named) = names else {
        return handle(order, input, policy, at).map(|events| (events, None));
    };
    let refuse = |reason: ConversionRefused| Refusal {
        org: input.org().clone(),
        po: input.po().clone(),
        state: None,
        version: 0,
        attempted: input.attempted(),
        reason: reason.into(),
    };
    let Some(origin) = requisition.as_mut() else {
        return Err(refuse(ConversionRefused::UnknownRequisition(named.clone())));
    };
    origin.check_conversion().map_err(refuse)?;
    let events = handle(order, input, policy, at)?;
    let converted = origin.convert_to(input.po()).map_err(refuse)?;
    Ok((events, Some(converted)))
}

/// Goods received: the first receipt on an issued PO acknowledges it (the supplier shipped);
/// the PO is then partially received until every line that needs a receipt is received in
/// full. A receipt seen before (a replay) changes nothing; receipts after the PO is received
/// in full are counted, with no step. A cancelled or closed PO refuses it.
fn receive(
    approval: &mut PurchaseOrderApproval,
    receipt: &GoodsReceived,
) -> Result<Vec<ApprovalEvent>, ApprovalError> {
    if approval.fulfilment().receipts.contains(&receipt.grn) {
        return Ok(vec![]);
    }
    let state = approval.po().state();
    let mut next = approval.clone();
    let fulfilment = next.fulfilment_mut();
    fulfilment.receipts.insert(receipt.grn.clone());
    for line in &receipt.lines {
        let got = fulfilment
            .received
            .entry(line.line)
            .or_insert(Quantity::ZERO);
        *got = got.plus(line.received).saturating_minus(line.returned);
    }
    let full = next.fulfilment().received_in_full();
    let mut events = Vec::new();
    match state {
        PoState::Received | PoState::Invoiced | PoState::Paid | PoState::Disputed => {}
        _ => {
            if state == PoState::Issued {
                events.push(ApprovalEvent::Transitioned(
                    next.act(PoAction::Acknowledge)?,
                ));
            }
            let action = if full {
                PoAction::ReceiveInFull
            } else {
                PoAction::ReceivePartially
            };
            events.push(ApprovalEvent::Transitioned(next.act(action)?));
            // Invoices matched while goods were still coming (the match reads receipts
            // before this topology does, on another topic) invoice the PO now, and pay it if
            // they are settled already: the outcome must not depend on the order of topics.
            if full && !next.fulfilment().matched.is_empty() {
                events.push(ApprovalEvent::Transitioned(
                    next.act(PoAction::MatchInvoice)?,
                ));
                if next.fulfilment().paid_in_full() {
                    events.extend(pay_and_close(&mut next)?);
                }
            }
        }
    }
    *approval = next;
    Ok(events)
}

/// An invoice matched: the PO is invoiced once it is received in full and matched. A match on
/// a PO still being received is recorded, and invoices it when the last goods come. A matched credit memo moves
/// nothing: it is never paid itself, so the PO must not wait for its payment.
fn invoice_matched(
    approval: &mut PurchaseOrderApproval,
    matched: &InvoiceMatched,
) -> Result<Vec<ApprovalEvent>, ApprovalError> {
    if matched.kind == crate::events::DocumentKind::CreditMemo {
        return Ok(vec![]);
    }
    let mut next = approval.clone();
    let fulfilment = next.fulfilment_mut();
    if fulfilment.matched.insert(matched.invoice.clone()) {
        for line in &matched.lines {
            let billed = fulfilment
                .invoiced
                .entry(line.line)
                .or_insert(Quantity::ZERO);
            *billed = billed.plus(line.quantity);
        }
    }
    let mut events = Vec::new();
    let state = next.po().state();
    if next.fulfilment().expected.is_empty()
        && matches!(state, PoState::Issued | PoState::Acknowledged)
    {
        // Services only: nothing is ever received. The matched invoice attests the service
        // was rendered (as SAP's service entry sheet does), so the PO passes through
        // Received on its way to Invoiced, every step an event of its own.
        if state == PoState::Issued {
            events.push(ApprovalEvent::Transitioned(
                next.act(PoAction::Acknowledge)?,
            ));
        }
        events.push(ApprovalEvent::Transitioned(
            next.act(PoAction::ReceiveInFull)?,
        ));
    }
    if next.po().state() == PoState::Received {
        events.push(ApprovalEvent::Transitioned(
            next.act(PoAction::MatchInvoice)?,
        ));
    }
    // A settlement read before the match of the invoice it pays (they come from different
    // topologies) counts once the match is in.
    if next.po().state() == PoState::Invoiced && next.fulfilment().paid_in_full() {
        events.extend(pay_and_close(&mut next)?);
    }
    *approval = next;
    Ok(events)
}

/// A payment settled: the PO is paid once it is billed in full and every invoice matched
/// against it is paid.
fn payment_settled(
    approval: &mut PurchaseOrderApproval,
    settled: &PaymentSettled,
) -> Result<Vec<ApprovalEvent>, ApprovalError> {
    approval
        .fulfilment_mut()
        .settled
        .insert(settled.invoice.clone());
    if approval.po().state() != PoState::Invoiced || !approval.fulfilment().paid_in_full() {
        return Ok(vec![]);
    }
    let mut next = approval.clone();
    let events = pay_and_close(&mut next)?;
    *approval = next;
    Ok(events)
}

/// Paid, then Closed: received in full, billed in full and every invoice paid, nothing is left
/// to happen to the PO (DOMAIN.md: the bank's status moves the PO to Paid and then Closed).
/// Each is its own event.
fn pay_and_close(
    approval: &mut PurchaseOrderApproval,
) -> Result<Vec<ApprovalEvent>, ApprovalError> {
    Ok(vec![
        ApprovalEvent::Transitioned(approval.act(PoAction::Pay)?),
        ApprovalEvent::Transitioned(approval.act(PoAction::Close)?),
    ])
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
