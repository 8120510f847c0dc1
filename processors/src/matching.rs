//! Three-way match of one purchase order: its lines, what was received, what was invoiced, and
//! the outcome of every invoice. `PurchaseOrderMatch::apply` is the whole rule book: state plus
//! one document in, the outcomes it causes out.

use crate::approval::{ApprovalError, ApprovalLevel};
use crate::decisions::{releasable, waived_by, DecisionAction, DecisionRefused, InvoiceDecision};
use crate::events::*;
use crate::ids::*;
use crate::money::*;
use crate::tolerance::Tolerance;
use crate::tolerance_keys::{EffectiveTolerances, Measure, Verdict};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A document that does not belong to this aggregate. The runtime routes by (org, PO), so
/// this signals a routing bug or a forged key, never a business outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    #[error("document of org {document} applied to the state of org {state}")]
    OrgMismatch { state: OrgId, document: OrgId },
    #[error("document of PO {document} applied to the state of PO {state}")]
    PoMismatch {
        state: PurchaseOrderId,
        document: PurchaseOrderId,
    },
    #[error("amount arithmetic overflowed: {0}")]
    Money(#[from] MoneyError),
}

/// What the match of one document needs besides the PO's own state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchContext {
    /// Per receipt line: how far a delivery may stray from its delivery note (or over-deliver
    /// the PO) before it is a discrepancy.
    pub receipt_tolerance: Tolerance,
    /// The invoice tolerance keys in force: the org's, narrowed by the supplier's.
    pub tolerances: EffectiveTolerances,
    /// For an invoice: the earlier invoice of its supplier it duplicates, if any (found by
    /// the supplier's duplicate register, which the PO's state cannot see).
    pub duplicate_of: Option<InvoiceId>,
    /// For an invoice: the earlier one of its supplier and PO it looks like, and what the
    /// org does about it (ADR 0018).
    pub look_alike: Option<LookAlike>,
}

/// What became of a person's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionOutcome {
    /// Taken: the invoice decided again (a new revision and status).
    Applied(Vec<MatchOutput>),
    /// Taken before: nothing changes.
    Repeated,
    /// Its invoice has not come yet: kept until it does, or the wait limit refuses it.
    Parked,
    Refused(DecisionRefused),
}

/// An earlier document an invoice looks like, and whether that holds it or warns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookAlike {
    pub of: InvoiceId,
    pub hold: bool,
}

/// What is known of the order itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Order {
    /// Receipts or invoices arrived before the PO did.
    NotYetSeen,
    Open(PurchaseOrderIssued),
    Cancelled,
}

/// Running totals of one PO line. Received and returned are kept apart so that a return read
/// before the receipt it returns still counts: the net is the same in any arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
struct LineProgress {
    received: Quantity,
    #[serde(default)]
    returned: Quantity,
    /// Passed inspection (four-way lines).
    #[serde(default)]
    accepted: Quantity,
    invoiced: Quantity,
}

impl LineProgress {
    fn count(&mut self, line: &ReceiptLine) {
        self.received = self.received.plus(line.received);
        self.returned = self.returned.plus(line.returned);
        self.accepted = self.accepted.plus(line.accepted);
    }

    fn uncount(&mut self, line: &ReceiptLine) {
        self.received = self.received.saturating_minus(line.received);
        self.returned = self.returned.saturating_minus(line.returned);
        self.accepted = self.accepted.saturating_minus(line.accepted);
    }

    fn net_received(&self) -> Quantity {
        self.received.saturating_minus(self.returned)
    }

    /// What a line of `level` may have invoiced in all: nothing is needed for two-way; for
    /// four-way, what passed inspection and was not sent back.
    fn invoiceable(&self, level: MatchLevel) -> Option<Quantity> {
        match level {
            MatchLevel::TwoWay => None,
            MatchLevel::ThreeWay => Some(self.net_received()),
            MatchLevel::FourWay => Some(self.accepted.min(self.net_received())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Outcome {
    Pending(InvoicePending),
    Matched(InvoiceMatched),
    Exception(InvoiceException),
}

impl Outcome {
    fn to_output(&self) -> MatchOutput {
        match self {
            Outcome::Pending(p) => MatchOutput::Pending(p.clone()),
            Outcome::Matched(m) => MatchOutput::Matched(m.clone()),
            Outcome::Exception(e) => MatchOutput::Exception(e.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InvoiceRecord {
    invoice: InvoiceReceived,
    #[serde(default)]
    duplicate_of: Option<InvoiceId>,
    #[serde(default)]
    look_alike: Option<LookAlike>,
    outcome: Outcome,
    /// How many outcomes were decided for it (see `InvoiceMatched::revision`).
    #[serde(default)]
    revision: u32,
    /// How many statuses were published for it (see `InvoiceStatusChanged::revision`).
    #[serde(default)]
    status_revision: u32,
    /// A credit memo matched by netting against a held invoice: its lines that credit value
    /// (a price), not quantity, so give no quantity back when counted.
    #[serde(default)]
    value_credit_lines: Vec<LineNumber>,
    /// Holds people waived (released, accepted, not a duplicate), as they stood then.
    #[serde(default)]
    waived: Vec<ExceptionReason>,
    /// The ids of the decisions taken on it: the same one again changes nothing.
    #[serde(default)]
    decided: Vec<String>,
    /// Who decided what and why, for its status.
    #[serde(default)]
    decisions: Vec<String>,
    /// Rejected by a person (`ExceptionReason::Rejected`): never payable.
    #[serde(default)]
    rejected: Option<ExceptionReason>,
}

impl InvoiceRecord {
    /// Records an outcome; a decided one (matched or exception) is the invoice's next
    /// revision, and says so.
    fn decide(&mut self, mut outcome: Outcome) {
        match &mut outcome {
            Outcome::Pending(_) => {}
            Outcome::Matched(m) => {
                self.revision += 1;
                m.revision = self.revision;
            }
            Outcome::Exception(e) => {
                self.revision += 1;
                e.revision = self.revision;
            }
        }
        self.status_revision += 1;
        self.outcome = outcome;
    }

    /// Still waiting, perhaps for less: a new status when what it waits for changed.
    fn wait(&mut self, still: InvoicePending, at: EventTime) -> Option<MatchOutput> {
        let changed =
            !matches!(&self.outcome, Outcome::Pending(p) if p.waiting_for == still.waiting_for);
        self.outcome = Outcome::Pending(still);
        changed.then(|| {
            self.status_revision += 1;
            self.status(at)
        })
    }

    /// Where the invoice stands now.
    fn status(&self, at: EventTime) -> MatchOutput {
        let status = match &self.outcome {
            Outcome::Pending(p) => InvoiceStatus::Waiting(p.waiting_for.clone()),
            Outcome::Matched(m) => InvoiceStatus::Matched {
                outcome_revision: m.revision,
                warnings: m.warnings.clone(),
            },
            Outcome::Exception(e) => InvoiceStatus::Held {
                outcome_revision: e.revision,
                reasons: e.reasons.clone(),
            },
        };
        let invoice = &self.invoice;
        MatchOutput::Status(InvoiceStatusChanged {
            org: invoice.org.clone(),
            invoice: invoice.invoice.clone(),
            kind: invoice.kind,
            po: invoice.po.clone(),
            supplier: invoice.supplier.clone(),
            number: invoice.number.clone(),
            total: invoice.total,
            revision: self.status_revision,
            status,
            decisions: self.decisions.clone(),
            at,
        })
    }

    /// Its outcome, and its status beside it.
    fn outputs(&self, at: EventTime) -> [MatchOutput; 2] {
        [self.outcome.to_output(), self.status(at)]
    }
}

/// The match state of one purchase order of one org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOrderMatch {
    org: OrgId,
    po: PurchaseOrderId,
    order: Order,
    progress: BTreeMap<LineNumber, LineProgress>,
    receipts: BTreeSet<GoodsReceiptId>,
    /// Receipts in discrepancy, not yet resolved: while any is, no invoice of the PO matches.
    #[serde(default)]
    discrepancies: BTreeSet<GoodsReceiptId>,
    /// Receipts read before the PO, kept until it comes to be checked in the order they came.
    #[serde(default)]
    unchecked: Vec<GoodsReceived>,
    /// Invoices in arrival order: pending ones are re-matched in this order, so cumulative
    /// consumption is deterministic.
    invoices: Vec<InvoiceRecord>,
    /// The ERP closed the PO: no invoice of it matches any more (its credit memos still do).
    #[serde(default)]
    closed: bool,
    /// People's decisions on invoices not seen yet, waiting for them.
    #[serde(default)]
    early_decisions: Vec<InvoiceDecision>,
    /// Who asked for the PO and who acted on its approval: never the ones to decide on its
    /// invoices' holds (segregation of duties).
    #[serde(default)]
    requested_or_approved_by: BTreeSet<UserId>,
    /// The trace its issue event carried (ADR 0027), opaque here: its invoices' outcomes
    /// link to it, and through them their payments.
    #[serde(default)]
    trace: Option<String>,
}

impl PurchaseOrderMatch {
    pub fn new(org: OrgId, po: PurchaseOrderId) -> Self {
        Self {
            org,
            po,
            order: Order::NotYetSeen,
            progress: BTreeMap::new(),
            receipts: BTreeSet::new(),
            discrepancies: BTreeSet::new(),
            unchecked: Vec::new(),
            invoices: Vec::new(),
            closed: false,
            early_decisions: Vec::new(),
            requested_or_approved_by: BTreeSet::new(),
            trace: None,
        }
    }

    /// Keeps the trace the PO's issue event carried.
    pub fn keep_trace(&mut self, trace: String) {
        self.trace = Some(trace);
    }

    /// The trace the PO's issue event carried, if one.
    pub fn trace(&self) -> Option<&str> {
        self.trace.as_deref()
    }

    pub fn org(&self) -> &OrgId {
        &self.org
    }

    pub fn po(&self) -> &PurchaseOrderId {
        &self.po
    }

    /// The invoices still pending.
    pub fn pending(&self) -> impl Iterator<Item = &InvoiceId> {
        self.invoices
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Pending(_)))
            .map(|r| &r.invoice.invoice)
    }

    /// The org's wait limit for `invoice` has passed: if it is still pending it becomes an
    /// exception, with every reason it was waiting for (goods not received, or no such PO).
    /// Decided invoices are left as they are.
    pub fn expire_pending(&mut self, invoice: &InvoiceId, at: EventTime) -> Vec<MatchOutput> {
        let Some(record) = self
            .invoices
            .iter_mut()
            .find(|r| &r.invoice.invoice == invoice)
        else {
            return vec![];
        };
        let Outcome::Pending(pending) = &record.outcome else {
            return vec![];
        };
        let mut reasons: Vec<ExceptionReason> = record
            .duplicate_of
            .iter()
            .map(|of| ExceptionReason::Duplicate { of: of.clone() })
            .collect();
        if pending.waiting_for.contains(&PendingReason::PurchaseOrder) {
            reasons.push(ExceptionReason::UnknownPurchaseOrder);
        }
        reasons.extend(waiting_as_reasons(pending.waiting_for.clone()));
        record.decide(Outcome::Exception(exception(&record.invoice, reasons, at)));
        record.outputs(at).to_vec()
    }

    /// The PO's supplier, once the PO has been issued.
    pub fn supplier(&self) -> Option<&SupplierId> {
        match &self.order {
            Order::Open(issued) => Some(&issued.supplier),
            Order::NotYetSeen | Order::Cancelled => None,
        }
    }

    /// Whether the PO has been seen (issued, or cancelled).
    pub fn po_known(&self) -> bool {
        !matches!(self.order, Order::NotYetSeen)
    }

    /// The org's wait limit for a receipt read before its PO has passed: if the PO still has
    /// not come, the receipt is rejected (DOMAIN.md: no receipt against an unknown PO) and its
    /// quantities no longer count. A PO that came meanwhile leaves it as it is.
    pub fn expire_receipt(&mut self, grn: &GoodsReceiptId) -> Vec<MatchOutput> {
        if !matches!(self.order, Order::NotYetSeen) {
            return vec![];
        }
        let Some(index) = self.unchecked.iter().position(|r| &r.grn == grn) else {
            return vec![];
        };
        // Still in `receipts`: a re-delivery of a rejected receipt stays rejected.
        let receipt = self.unchecked.remove(index);
        for line in &receipt.lines {
            self.progress.entry(line.line).or_default().uncount(line);
        }
        vec![MatchOutput::ReceiptRejected(ReceiptRejected {
            org: receipt.org,
            grn: receipt.grn,
            po: receipt.po,
            reason: ExceptionReason::UnknownPurchaseOrder,
        })]
    }

    /// Received minus returned so far on a line.
    pub fn received(&self, line: LineNumber) -> Quantity {
        self.progress
            .get(&line)
            .map_or(Quantity::ZERO, |p| p.net_received())
    }

    /// Quantity consumed by matched invoices on a line.
    pub fn invoiced(&self, line: LineNumber) -> Quantity {
        self.progress
            .get(&line)
            .map_or(Quantity::ZERO, |p| p.invoiced)
    }

    /// Applies one document and returns what it caused, in order.
    pub fn apply(
        &mut self,
        input: &MatchInput,
        at: EventTime,
        context: &MatchContext,
    ) -> Result<Vec<MatchOutput>, MatchError> {
        let tolerance = context.receipt_tolerance;
        let keys = &context.tolerances;
        if input.org() != &self.org {
            return Err(MatchError::OrgMismatch {
                state: self.org.clone(),
                document: input.org().clone(),
            });
        }
        if input.po() != &self.po {
            return Err(MatchError::PoMismatch {
                state: self.po.clone(),
                document: input.po().clone(),
            });
        }
        match input {
            MatchInput::PurchaseOrder(PurchaseOrderEvent::Issued(issued)) => {
                self.on_issued(issued, at, tolerance, keys)
            }
            MatchInput::PurchaseOrder(PurchaseOrderEvent::Cancelled(_)) => {
                Ok(self.on_cancelled(at))
            }
            MatchInput::PurchaseOrder(PurchaseOrderEvent::Stepped(stepped))
                if stepped.step == PurchaseOrderStep::Closed =>
            {
                self.on_closed(at, keys)
            }
            // Approval and the other lifecycle steps do not change what may be matched.
            MatchInput::PurchaseOrder(
                PurchaseOrderEvent::Submitted(_) | PurchaseOrderEvent::Stepped(_),
            ) => Ok(vec![]),
            MatchInput::GoodsReceipt(receipt) => self.on_receipt(receipt, at, tolerance, keys),
            MatchInput::Invoice(invoice) => self.on_invoice(invoice, context, at, keys),
        }
    }

    fn on_issued(
        &mut self,
        issued: &PurchaseOrderIssued,
        at: EventTime,
        tolerance: Tolerance,
        keys: &EffectiveTolerances,
    ) -> Result<Vec<MatchOutput>, MatchError> {
        match &self.order {
            // A cancelled order stays cancelled; a re-delivered issue changes nothing.
            Order::Cancelled => return Ok(vec![]),
            Order::Open(current) if current == issued => return Ok(vec![]),
            // First sight, or a change order: the new terms apply to what is still pending.
            _ => self.order = Order::Open(issued.clone()),
        }
        // Receipts that came first are checked now, each against what was open when it came.
        let mut outputs = Vec::new();
        let mut progress: BTreeMap<LineNumber, LineProgress> = BTreeMap::new();
        for receipt in std::mem::take(&mut self.unchecked) {
            let discrepant = discrepant_lines(issued, &progress, &receipt, tolerance);
            for line in &receipt.lines {
                progress.entry(line.line).or_default().count(line);
            }
            outputs.extend(self.on_discrepancy(&receipt, discrepant));
        }
        outputs.extend(self.recheck(at, keys, None)?);
        Ok(outputs)
    }

    /// Closed by the ERP: what is matched stays matched; every invoice still open (pending,
    /// or held) is an exception naming the closed PO, with whatever else it had.
    fn on_closed(
        &mut self,
        at: EventTime,
        keys: &EffectiveTolerances,
    ) -> Result<Vec<MatchOutput>, MatchError> {
        if self.closed {
            return Ok(vec![]);
        }
        self.closed = true;
        self.recheck(at, keys, None)
    }

    fn on_cancelled(&mut self, at: EventTime) -> Vec<MatchOutput> {
        self.order = Order::Cancelled;
        let mut outputs = Vec::new();
        for record in &mut self.invoices {
            if let Outcome::Pending(_) = record.outcome {
                record.decide(Outcome::Exception(exception(
                    &record.invoice,
                    vec![ExceptionReason::PoCancelled],
                    at,
                )));
                outputs.extend(record.outputs(at));
            }
        }
        outputs
    }

    fn on_receipt(
        &mut self,
        receipt: &GoodsReceived,
        at: EventTime,
        tolerance: Tolerance,
        keys: &EffectiveTolerances,
    ) -> Result<Vec<MatchOutput>, MatchError> {
        if self.receipts.contains(&receipt.grn) {
            return Ok(vec![]); // re-delivered: already counted
        }
        if let Order::Cancelled = self.order {
            return Ok(vec![MatchOutput::ReceiptRejected(ReceiptRejected {
                org: receipt.org.clone(),
                grn: receipt.grn.clone(),
                po: receipt.po.clone(),
                reason: ExceptionReason::PoCancelled,
            })]);
        }
        self.receipts.insert(receipt.grn.clone());
        // Checked against what was open before this receipt counts.
        let discrepant = match &self.order {
            Order::Open(order) => discrepant_lines(order, &self.progress, receipt, tolerance),
            // Nothing to compare with yet: counted now, checked when the PO comes.
            Order::NotYetSeen => {
                self.unchecked.push(receipt.clone());
                vec![]
            }
            Order::Cancelled => vec![], // rejected above
        };
        for line in &receipt.lines {
            self.progress.entry(line.line).or_default().count(line);
        }
        let mut outputs = self.on_discrepancy(receipt, discrepant);
        outputs.extend(self.recheck(at, keys, None)?);
        Ok(outputs)
    }

    /// Resolves what `receipt` says it resolves, and records its own discrepancy, if any.
    fn on_discrepancy(
        &mut self,
        receipt: &GoodsReceived,
        discrepant: Vec<DiscrepantLine>,
    ) -> Vec<MatchOutput> {
        let mut outputs = Vec::new();
        if let Some(resolved) = &receipt.resolves {
            if self.discrepancies.remove(resolved) {
                outputs.push(MatchOutput::DiscrepancyResolved(
                    ReceiptDiscrepancyResolved {
                        org: receipt.org.clone(),
                        grn: resolved.clone(),
                        po: receipt.po.clone(),
                        by: receipt.grn.clone(),
                    },
                ));
            }
        }
        if !discrepant.is_empty() {
            self.discrepancies.insert(receipt.grn.clone());
            outputs.push(MatchOutput::ReceiptDiscrepancy(GoodsReceiptDiscrepancy {
                org: receipt.org.clone(),
                grn: receipt.grn.clone(),
                po: receipt.po.clone(),
                lines: discrepant,
            }));
        }
        outputs
    }

    fn on_invoice(
        &mut self,
        invoice: &InvoiceReceived,
        context: &MatchContext,
        at: EventTime,
        keys: &EffectiveTolerances,
    ) -> Result<Vec<MatchOutput>, MatchError> {
        let duplicate_of = context.duplicate_of.clone();
        let look_alike = context.look_alike.clone();
        let position = self
            .invoices
            .iter()
            .position(|r| r.invoice.invoice == invoice.invoice);
        let index = match position {
            // Re-delivered unchanged: answer as before, consume nothing twice.
            Some(i) if self.invoices[i].invoice == *invoice => {
                return Ok(self.invoices[i].outputs(at).to_vec());
            }
            // A corrected invoice: undo what the old version counted, match it again.
            Some(i) => {
                if let Outcome::Matched(matched) = self.invoices[i].outcome.clone() {
                    let value_only = std::mem::take(&mut self.invoices[i].value_credit_lines);
                    self.count_matched(&matched, &value_only, Direction::Undo);
                }
                self.invoices[i].invoice = invoice.clone();
                self.invoices[i].duplicate_of = duplicate_of;
                self.invoices[i].look_alike = look_alike;
                i
            }
            None => {
                self.invoices.push(InvoiceRecord {
                    invoice: invoice.clone(),
                    duplicate_of,
                    look_alike,
                    outcome: Outcome::Pending(InvoicePending {
                        org: invoice.org.clone(),
                        invoice: invoice.invoice.clone(),
                        po: invoice.po.clone(),
                        waiting_for: vec![],
                    }),
                    revision: 0,
                    status_revision: 0,
                    value_credit_lines: vec![],
                    waived: vec![],
                    decided: vec![],
                    decisions: vec![],
                    rejected: None,
                });
                self.invoices.len() - 1
            }
        };
        let outcome = self.evaluate(&self.invoices[index], at, keys)?;
        self.settle(index, outcome);
        let mut outputs = self.invoices[index].outputs(at).to_vec();
        // What is invoiced changed: a matched invoice is what credit memos waiting for it
        // need; a matched credit memo gives back room that waiting invoices may need.
        if let Outcome::Matched(matched) = &self.invoices[index].outcome {
            let waiting_ones = match matched.kind {
                DocumentKind::Invoice => Some(DocumentKind::CreditMemo),
                DocumentKind::CreditMemo => None,
            };
            outputs.extend(self.recheck(at, keys, waiting_ones)?);
        } else {
            // A credit memo may be what a held invoice needed, or this invoice what a waiting
            // memo did: net them.
            let netted = self.net_held(at, keys)?;
            if !netted.is_empty() {
                outputs.extend(netted);
                outputs.extend(self.recheck(at, keys, None)?);
            }
        }
        Ok(outputs)
    }

    /// A fact behind the open invoices changed (goods came, a discrepancy was resolved, the
    /// order was issued or changed): every pending invoice and every held one (an exception)
    /// is matched again, in arrival order. Reported: pending invoices now decided, held ones
    /// released (matched), and held ones whose holds changed. A held invoice never goes back
    /// to pending: it was decided, perhaps by its wait limit.
    /// `only`: just the documents of that kind, at first.
    fn recheck(
        &mut self,
        at: EventTime,
        keys: &EffectiveTolerances,
        mut only: Option<DocumentKind>,
    ) -> Result<Vec<MatchOutput>, MatchError> {
        let mut outputs = Vec::new();
        loop {
            let mut matched_any = false;
            for index in 0..self.invoices.len() {
                if only.is_some_and(|kind| self.invoices[index].invoice.kind != kind) {
                    continue;
                }
                let outcome = match &self.invoices[index].outcome {
                    Outcome::Matched(_) => continue,
                    Outcome::Pending(_) | Outcome::Exception(_) => {
                        self.evaluate(&self.invoices[index], at, keys)?
                    }
                };
                let outcome = match (&self.invoices[index].outcome, outcome) {
                    (Outcome::Pending(_), Outcome::Pending(still)) => {
                        // Still waiting, perhaps for less: its status says so if it changed.
                        outputs.extend(self.invoices[index].wait(still, at));
                        continue;
                    }
                    (_, outcome) => outcome,
                };
                match (&self.invoices[index].outcome, &outcome) {
                    (Outcome::Exception(_), Outcome::Pending(_)) => continue,
                    (Outcome::Exception(held), Outcome::Exception(now))
                        if held.reasons == now.reasons =>
                    {
                        continue
                    }
                    _ => {}
                }
                matched_any |= matches!(outcome, Outcome::Matched(_));
                self.settle(index, outcome);
                outputs.extend(self.invoices[index].outputs(at));
            }
            let netted = self.net_held(at, keys)?;
            matched_any |= !netted.is_empty();
            outputs.extend(netted);
            // A match changes what is invoiced, which a document earlier in arrival order may
            // have been waiting for (a credit memo for its invoice, an invoice for the room a
            // memo gives back): round again, over every kind, until nothing more matches.
            // Each round matches at least one more document, so this ends.
            if !matched_any {
                return Ok(outputs);
            }
            only = None;
        }
    }

    /// Records an outcome; a matched invoice consumes what it bills, a matched credit memo
    /// gives back what it credits.
    fn settle(&mut self, index: usize, outcome: Outcome) {
        if let Outcome::Matched(matched) = &outcome {
            let value_only = self.invoices[index].value_credit_lines.clone();
            self.count_matched(matched, &value_only, Direction::Do);
        }
        self.invoices[index].decide(outcome);
    }

    /// `value_only`: lines of a credit memo that credit a price, not quantity.
    fn count_matched(
        &mut self,
        matched: &InvoiceMatched,
        value_only: &[LineNumber],
        direction: Direction,
    ) {
        let adds = matches!(
            (matched.kind, direction),
            (DocumentKind::Invoice, Direction::Do) | (DocumentKind::CreditMemo, Direction::Undo)
        );
        for line in matched
            .lines
            .iter()
            .filter(|l| !value_only.contains(&l.line))
        {
            let progress = self.progress.entry(line.line).or_default();
            progress.invoiced = if adds {
                progress.invoiced.plus(line.quantity)
            } else {
                progress.invoiced.saturating_minus(line.quantity)
            };
        }
    }

    /// SAP's automatic release of a blocked invoice by a credit memo: each invoice held for
    /// variances only (price, quantity, amount: nothing a person must decide, no duplicate,
    /// no manual hold) is netted with the open credit memos of the PO that credit only lines
    /// it bills (waiting for an invoice to credit, or held for variances themselves), in
    /// arrival order. A memo line at the PO's price (within tolerance) gives quantity back; at
    /// another price it credits value (a price correction: 10 units at 1.00 off). Where the
    /// net (quantity, line amounts, total) passes the match rules, the invoice is matched as
    /// billed and its memos as credited: the payment pays the invoice and sets the memos' credit
    /// off against it, the net, once.
    fn net_held(
        &mut self,
        at: EventTime,
        keys: &EffectiveTolerances,
    ) -> Result<Vec<MatchOutput>, MatchError> {
        let Order::Open(order) = &self.order else {
            return Ok(vec![]);
        };
        // Run on every re-check: most POs hold nothing a memo could net, so nothing is copied.
        if !self
            .invoices
            .iter()
            .any(|r| r.invoice.kind == DocumentKind::Invoice && held_for_variances_only(&r.outcome))
        {
            return Ok(vec![]);
        }
        let order = order.clone();
        let mut outputs = Vec::new();
        for index in 0..self.invoices.len() {
            let record = &self.invoices[index];
            if record.invoice.kind != DocumentKind::Invoice
                || record.duplicate_of.is_some()
                || !held_for_variances_only(&record.outcome)
            {
                continue;
            }
            let billed: BTreeSet<LineNumber> =
                record.invoice.lines.iter().map(|l| l.line).collect();
            let memos: Vec<usize> = (0..self.invoices.len())
                .filter(|&j| {
                    let memo = &self.invoices[j];
                    memo.invoice.kind == DocumentKind::CreditMemo
                        && memo.duplicate_of.is_none()
                        && memo.invoice.payment_block.is_none()
                        && open_for_netting(&memo.outcome)
                        && memo.invoice.lines.iter().all(|l| billed.contains(&l.line))
                })
                .collect();
            if memos.is_empty() {
                continue;
            }
            let Some(Netted { net, value_lines }) = netted(
                &order,
                &record.invoice,
                memos.iter().map(|&j| &self.invoices[j].invoice),
                keys,
            )?
            else {
                continue;
            };
            let Outcome::Matched(net_match) = self.evaluate_rules(&net, at, keys)? else {
                continue;
            };
            let invoice = matched(&self.invoices[index].invoice, at, net_match.warnings);
            self.settle(index, Outcome::Matched(invoice));
            // The memos' outcomes first: a payment reading them in order knows the credit
            // before it schedules the invoice it nets.
            for (&j, value_lines) in memos.iter().zip(value_lines) {
                self.invoices[j].value_credit_lines = value_lines;
                let memo = matched(&self.invoices[j].invoice, at, vec![]);
                self.settle(j, Outcome::Matched(memo));
                outputs.extend(self.invoices[j].outputs(at));
            }
            outputs.extend(self.invoices[index].outputs(at));
        }
        Ok(outputs)
    }

    /// The match of one invoice record: the rules below; a duplicate, and an invoice the
    /// clerk blocked by hand, are exceptions whatever else is found (reported first, with
    /// every other reason). A rejected invoice is only rejected. Holds a person waived
    /// (ADR 0019) are warnings while the facts stay within what was waived.
    fn evaluate(
        &self,
        record: &InvoiceRecord,
        at: EventTime,
        keys: &EffectiveTolerances,
    ) -> Result<Outcome, MatchError> {
        let invoice = &record.invoice;
        if let Some(rejected) = &record.rejected {
            return Ok(Outcome::Exception(exception(
                invoice,
                vec![rejected.clone()],
                at,
            )));
        }
        let outcome = self.evaluate_rules(invoice, at, keys)?;
        let is_waived = |r: &ExceptionReason| record.waived.iter().any(|w| waived_by(r, w));
        let mut warnings = Vec::new();
        let mut holds: Vec<ExceptionReason> = record
            .duplicate_of
            .iter()
            .map(|of| ExceptionReason::Duplicate { of: of.clone() })
            .chain(
                invoice
                    .payment_block
                    .iter()
                    .map(|reason| ExceptionReason::ManualHold {
                        reason: reason.clone(),
                    }),
            )
            .collect();
        if let Some(look_alike) = &record.look_alike {
            let resembles = ExceptionReason::PossibleDuplicate {
                of: look_alike.of.clone(),
            };
            if look_alike.hold {
                holds.push(resembles);
            } else {
                warnings.push(resembles);
            }
        }
        let (waived, mut holds): (Vec<_>, Vec<_>) = holds.into_iter().partition(is_waived);
        warnings.extend(waived);
        let outcome = match outcome {
            Outcome::Exception(mut e) => {
                let (waived, kept): (Vec<_>, Vec<_>) = e.reasons.into_iter().partition(is_waived);
                warnings.extend(waived);
                if kept.is_empty() {
                    Outcome::Matched(matched(invoice, at, vec![]))
                } else {
                    e.reasons = kept;
                    Outcome::Exception(e)
                }
            }
            other => other,
        };
        if holds.is_empty() {
            return Ok(match outcome {
                Outcome::Matched(mut m) => {
                    m.warnings.extend(warnings);
                    Outcome::Matched(m)
                }
                other => other,
            });
        }
        match outcome {
            Outcome::Exception(e) => holds.extend(e.reasons),
            Outcome::Pending(p) => holds.extend(waiting_as_reasons(p.waiting_for)),
            Outcome::Matched(_) => {}
        }
        Ok(Outcome::Exception(exception(invoice, holds, at)))
    }

    /// A person's decision on one of this PO's invoices (ADR 0019). Checked first: a
    /// duplicate by reference or a rejected invoice takes no decision, its poster may not
    /// decide, and the person's authority must cover the invoice's total as it would an
    /// approval. Then the holds it names are waived (or the invoice rejected) and the
    /// invoice decided again: a released one is matched with a new revision. The same
    /// decision again changes nothing; one for an invoice not seen yet waits for it.
    pub fn decide(
        &mut self,
        decision: &InvoiceDecision,
        authority_needed: impl Fn(Money) -> Result<ApprovalLevel, ApprovalError>,
        at: EventTime,
        context: &MatchContext,
    ) -> Result<DecisionOutcome, MatchError> {
        let Some(index) = self
            .invoices
            .iter()
            .position(|r| r.invoice.invoice == decision.invoice)
        else {
            if !self.early_decisions.iter().any(|d| d.id == decision.id) {
                self.early_decisions.push(decision.clone());
            }
            return Ok(DecisionOutcome::Parked);
        };
        let record = &self.invoices[index];
        let invoice = record.invoice.invoice.clone();
        if record.decided.contains(&decision.id) {
            return Ok(DecisionOutcome::Repeated);
        }
        let refuse = |why| Ok(DecisionOutcome::Refused(why));
        if record.rejected.is_some() {
            return refuse(DecisionRefused::AlreadyRejected(invoice));
        }
        if let Some(of) = &record.duplicate_of {
            let of = of.clone();
            return refuse(DecisionRefused::Duplicate { invoice, of });
        }
        if record.invoice.posted_by.as_ref() == Some(&decision.by) {
            let by = decision.by.clone();
            return refuse(DecisionRefused::OwnInvoice { by, invoice });
        }
        if self.requested_or_approved_by.contains(&decision.by) {
            let (by, po) = (decision.by.clone(), self.po.clone());
            return refuse(DecisionRefused::OwnPurchaseOrder { by, po });
        }
        let total = record.invoice.total;
        let needed = match authority_needed(total) {
            Ok(needed) => needed,
            Err(source) => return refuse(DecisionRefused::Policy { invoice, source }),
        };
        if decision.authority < needed {
            return refuse(DecisionRefused::NoAuthority {
                by: decision.by.clone(),
                invoice,
                total,
                held: decision.authority,
                needed,
            });
        }
        let holds: Vec<ExceptionReason> = match &record.outcome {
            Outcome::Exception(e) => e.reasons.clone(),
            _ => vec![],
        };
        let named = |kind: ReasonKind| -> Vec<ExceptionReason> {
            holds.iter().filter(|r| r.kind() == kind).cloned().collect()
        };
        let waive: Vec<ExceptionReason> = match decision.action {
            DecisionAction::Reject => vec![],
            DecisionAction::NotADuplicate => named(ReasonKind::PossibleDuplicate),
            DecisionAction::AcceptVariance => {
                holds.iter().filter(|r| is_variance(r)).cloned().collect()
            }
            DecisionAction::Release(Some(kind)) if !releasable(kind) => {
                return refuse(DecisionRefused::NotReleasable {
                    hold: kind.symbol(),
                })
            }
            DecisionAction::Release(Some(kind)) => named(kind),
            DecisionAction::Release(None) => holds
                .iter()
                .filter(|r| releasable(r.kind()))
                .cloned()
                .collect(),
        };
        if decision.action != DecisionAction::Reject && waive.is_empty() {
            return refuse(match decision.action {
                DecisionAction::NotADuplicate => DecisionRefused::NoSuchHold {
                    invoice,
                    hold: ReasonKind::PossibleDuplicate.symbol(),
                },
                DecisionAction::Release(Some(kind)) => DecisionRefused::NoSuchHold {
                    invoice,
                    hold: kind.symbol(),
                },
                _ => DecisionRefused::NothingToDecide(invoice),
            });
        }
        if decision.action == DecisionAction::Reject {
            // What it consumed of the PO is free for the next invoice.
            if let Outcome::Matched(matched) = self.invoices[index].outcome.clone() {
                let value_only = self.invoices[index].value_credit_lines.clone();
                self.count_matched(&matched, &value_only, Direction::Undo);
            }
            self.invoices[index].rejected = Some(ExceptionReason::Rejected {
                by: decision.by.clone(),
                reason: decision.reason_code.clone(),
            });
        }
        let record = &mut self.invoices[index];
        if decision.action == DecisionAction::NotADuplicate {
            record.look_alike = None;
        }
        record.waived.extend(waive);
        record.decided.push(decision.id.clone());
        record
            .decisions
            .push(format!("{} at {at}", decision.describe()));
        let outcome = match self.evaluate(&self.invoices[index], at, &context.tolerances)? {
            // A held invoice never goes back to waiting (its outcome stands on
            // invoice-exceptions): what it still waits for holds it.
            Outcome::Pending(p) => {
                let mut reasons = Vec::new();
                if p.waiting_for.contains(&PendingReason::PurchaseOrder) {
                    reasons.push(ExceptionReason::UnknownPurchaseOrder);
                }
                reasons.extend(waiting_as_reasons(p.waiting_for));
                Outcome::Exception(exception(&self.invoices[index].invoice, reasons, at))
            }
            outcome => outcome,
        };
        self.settle(index, outcome);
        let mut outputs = self.invoices[index].outputs(at).to_vec();
        if let Outcome::Matched(matched) = &self.invoices[index].outcome {
            // As when an invoice matches: credit memos waiting for it may match now.
            if matched.kind == DocumentKind::Invoice {
                outputs.extend(self.recheck(
                    at,
                    &context.tolerances,
                    Some(DocumentKind::CreditMemo),
                )?);
            }
        } else if decision.action == DecisionAction::Reject {
            // Room given back: waiting invoices of the PO may match now.
            outputs.extend(self.recheck(at, &context.tolerances, None)?);
        }
        Ok(DecisionOutcome::Applied(outputs))
    }

    /// `user` asked for this PO, or acted on its approval (approving or rejecting a step).
    pub fn note_requester_or_approver(&mut self, user: &UserId) {
        self.requested_or_approved_by.insert(user.clone());
    }

    /// The decisions parked for `invoice`, which has just arrived: the caller decides them.
    pub fn take_early_decisions(&mut self, invoice: &InvoiceId) -> Vec<InvoiceDecision> {
        let (for_it, others) = std::mem::take(&mut self.early_decisions)
            .into_iter()
            .partition(|d| &d.invoice == invoice);
        self.early_decisions = others;
        for_it
    }

    /// The wait limit of a decision parked for an invoice that never came: refused.
    pub fn expire_decision(&mut self, id: &str) -> Option<DecisionRefused> {
        let position = self.early_decisions.iter().position(|d| d.id == id)?;
        let decision = self.early_decisions.remove(position);
        Some(DecisionRefused::UnknownInvoice(decision.invoice))
    }

    /// The match rules themselves. Read state, change nothing. Each comparison's verdict
    /// under the tolerance keys: within, a warning on the outcome, or a hold (an exception
    /// reason; for goods not yet there, waiting).
    fn evaluate_rules(
        &self,
        invoice: &InvoiceReceived,
        at: EventTime,
        keys: &EffectiveTolerances,
    ) -> Result<Outcome, MatchError> {
        let order = match &self.order {
            Order::NotYetSeen => {
                return Ok(Outcome::Pending(pending(
                    invoice,
                    vec![PendingReason::PurchaseOrder],
                )))
            }
            Order::Cancelled => {
                return Ok(Outcome::Exception(exception(
                    invoice,
                    vec![ExceptionReason::PoCancelled],
                    at,
                )))
            }
            Order::Open(order) => order,
        };

        let mut reasons = Vec::new();
        let mut warnings = Vec::new();
        let mut waiting = Vec::new();
        if self.closed && invoice.kind == DocumentKind::Invoice {
            reasons.push(ExceptionReason::PoClosed);
        }
        if invoice.supplier != order.supplier {
            reasons.push(ExceptionReason::SupplierMismatch {
                expected: order.supplier.clone(),
                actual: invoice.supplier.clone(),
            });
        }
        let same_currency = invoice.currency == order.currency;
        if !same_currency {
            reasons.push(ExceptionReason::CurrencyMismatch {
                expected: order.currency,
                actual: invoice.currency,
            });
        }

        // Prices line by line; quantities summed per PO line (an invoice may split a line).
        let mut billed: BTreeMap<LineNumber, Quantity> = BTreeMap::new();
        let mut expected_total = Some(Money::zero(invoice.currency));
        for line in &invoice.lines {
            let Some(po_line) = order.lines.iter().find(|l| l.line == line.line) else {
                reasons.push(ExceptionReason::UnknownPoLine { line: line.line });
                expected_total = None;
                continue;
            };
            let sum = billed.entry(line.line).or_insert(Quantity::ZERO);
            *sum = sum.plus(line.quantity);
            if same_currency {
                let expected = po_line.unit_price.money();
                let actual = line.unit_price.money();
                let verdict = keys.verdict(Measure::Price, expected.amount(), actual.amount());
                let variance = ExceptionReason::PriceVariance {
                    line: line.line,
                    expected,
                    actual,
                };
                judge(verdict, variance, &mut reasons, &mut warnings);
                expected_total = match expected_total {
                    Some(total) => Some(total.checked_add(expected.times(line.quantity)?)?),
                    None => None,
                };
            }
        }

        for (&line, &quantity) in &billed {
            let Some(po_line) = order.lines.iter().find(|l| l.line == line) else {
                continue;
            };
            let progress = self.progress.get(&line).copied().unwrap_or_default();
            if invoice.kind == DocumentKind::CreditMemo {
                // A credit memo gives back what matched invoices billed, never more: money
                // back needs no goods, but it needs the invoice it credits.
                if quantity > progress.invoiced {
                    waiting.push(PendingReason::Invoice {
                        line,
                        invoiced: progress.invoiced,
                        credited: quantity,
                    });
                }
                continue;
            }
            let left_to_invoice = po_line.quantity.saturating_minus(progress.invoiced);
            let over_order =
                keys.excess_verdict(Measure::Quantity, left_to_invoice.value(), quantity.value());
            let variance = ExceptionReason::QuantityVariance {
                line,
                expected: left_to_invoice,
                actual: quantity,
            };
            if over_order == Verdict::Blocked {
                reasons.push(variance);
                continue;
            }
            judge(over_order, variance, &mut reasons, &mut warnings);
            let Some(invoiceable) = progress.invoiceable(po_line.match_level()) else {
                continue;
            };
            let available = invoiceable.saturating_minus(progress.invoiced);
            let billed = quantity;
            let (wait, short) = match po_line.match_level() {
                MatchLevel::FourWay => (
                    PendingReason::Inspection {
                        line,
                        available,
                        billed,
                    },
                    ExceptionReason::NotAccepted {
                        line,
                        expected: available,
                        actual: billed,
                    },
                ),
                _ => (
                    PendingReason::Receipt {
                        line,
                        available,
                        billed,
                    },
                    ExceptionReason::NotReceived {
                        line,
                        expected: available,
                        actual: billed,
                    },
                ),
            };
            match keys.excess_verdict(Measure::Quantity, available.value(), billed.value()) {
                Verdict::Within => {}
                Verdict::Warning => warnings.push(short),
                Verdict::Blocked => waiting.push(wait),
            }
        }

        // An unresolved receipt discrepancy blocks the match of every invoice of the PO (not
        // of its credit memos: holding back money owed to us helps nobody).
        if invoice.kind == DocumentKind::Invoice {
            waiting.extend(
                self.discrepancies
                    .iter()
                    .map(|grn| PendingReason::ReceiptDiscrepancy { grn: grn.clone() }),
            );
        }

        if let (true, Some(expected)) = (same_currency, expected_total) {
            let verdict = keys.verdict(Measure::Amount, expected.amount(), invoice.total.amount());
            let variance = ExceptionReason::AmountVariance {
                expected,
                actual: invoice.total,
            };
            judge(verdict, variance, &mut reasons, &mut warnings);
        }

        if !reasons.is_empty() {
            // Every reason at once, including goods still missing, so the clerk sees it all.
            reasons.extend(waiting_as_reasons(waiting));
            return Ok(Outcome::Exception(exception(invoice, reasons, at)));
        }
        if !waiting.is_empty() {
            return Ok(Outcome::Pending(pending(invoice, waiting)));
        }
        Ok(Outcome::Matched(matched(invoice, at, warnings)))
    }
}

/// `invoice` matched as it was billed.
fn matched(
    invoice: &InvoiceReceived,
    at: EventTime,
    warnings: Vec<ExceptionReason>,
) -> InvoiceMatched {
    InvoiceMatched {
        org: invoice.org.clone(),
        invoice: invoice.invoice.clone(),
        kind: invoice.kind,
        po: invoice.po.clone(),
        supplier: invoice.supplier.clone(),
        number: invoice.number.clone(),
        total: invoice.total,
        lines: invoice.lines.clone(),
        invoice_date: invoice.invoice_date,
        matched_at: at,
        warnings,
        revision: 0,
    }
}

/// The reasons a netting credit memo can resolve, and a person accepts as variances: of price,
/// quantity and amount.
fn is_variance(reason: &ExceptionReason) -> bool {
    crate::decisions::is_variance(reason.kind())
}

/// Held, and only for variances a credit memo can net away.
fn held_for_variances_only(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Exception(e) if !e.reasons.is_empty() && e.reasons.iter().all(is_variance))
}

/// A credit memo that may net against a held invoice: waiting for an invoice to credit, or
/// held for variances only (a price credit is a price variance on its own).
fn open_for_netting(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Pending(p) => {
            !p.waiting_for.is_empty()
                && p.waiting_for
                    .iter()
                    .all(|w| matches!(w, PendingReason::Invoice { .. }))
        }
        outcome => held_for_variances_only(outcome),
    }
}

/// A held invoice less its credit memos, as one document; with, per memo, its lines that
/// credit value only.
struct Netted {
    net: InvoiceReceived,
    value_lines: Vec<Vec<LineNumber>>,
}

/// `invoice` less `memos`, as one document to match: per line, the quantity billed less what
/// memos at the PO's price give back, and the amount billed less every memo line's amount;
/// the total less the memos' totals. With it, for each memo, its lines that credit value only
/// (at a price other than the PO's). `None` if a line would net to nothing billed but an
/// amount, or to less than nothing: not a netting the match can judge.
fn netted<'a>(
    order: &PurchaseOrderIssued,
    invoice: &InvoiceReceived,
    memos: impl Iterator<Item = &'a InvoiceReceived>,
    keys: &EffectiveTolerances,
) -> Result<Option<Netted>, MatchError> {
    let mut lines: BTreeMap<LineNumber, (Decimal, Decimal)> = BTreeMap::new();
    for line in &invoice.lines {
        let (quantity, amount) = lines.entry(line.line).or_default();
        *quantity += line.quantity.value();
        *amount += line.unit_price.money().times(line.quantity)?.amount();
    }
    let mut total = invoice.total;
    let mut value_lines = Vec::new();
    for memo in memos {
        let mut value_only = Vec::new();
        for line in &memo.lines {
            let Some(po_line) = order.lines.iter().find(|l| l.line == line.line) else {
                return Ok(None);
            };
            let price = line.unit_price.money();
            let (quantity, amount) = lines.entry(line.line).or_default();
            *amount -= price.times(line.quantity)?.amount();
            let at_po_price = keys.verdict(
                Measure::Price,
                po_line.unit_price.money().amount(),
                price.amount(),
            ) != Verdict::Blocked;
            if at_po_price {
                *quantity -= line.quantity.value();
            } else {
                value_only.push(line.line);
            }
        }
        total = total.checked_sub(memo.total)?;
        value_lines.push(value_only);
    }
    let mut net_lines = Vec::new();
    for (line, (quantity, amount)) in lines {
        if quantity.is_zero() && amount.is_zero() {
            continue;
        }
        if quantity <= Decimal::ZERO || amount < Decimal::ZERO {
            return Ok(None);
        }
        let Some(unit) = amount.checked_div(quantity) else {
            return Ok(None);
        };
        net_lines.push(InvoiceLine {
            line,
            quantity: Quantity::new(quantity)?,
            unit_price: UnitPrice::new(Money::new(unit, invoice.currency))?,
        });
    }
    if net_lines.is_empty() || total.amount() < Decimal::ZERO {
        return Ok(None);
    }
    let net = InvoiceReceived {
        lines: net_lines,
        total,
        ..invoice.clone()
    };
    Ok(Some(Netted { net, value_lines }))
}

/// Per line, never per total: each receipt line against what it was to bring (the
/// delivery note's quantity), or without one against the PO line's open quantity, where
/// only an over-delivery is a discrepancy (less is a partial receipt). A line the PO does
/// not have expected nothing.
fn discrepant_lines(
    order: &PurchaseOrderIssued,
    progress: &BTreeMap<LineNumber, LineProgress>,
    receipt: &GoodsReceived,
    tolerance: Tolerance,
) -> Vec<DiscrepantLine> {
    receipt
        .lines
        .iter()
        .filter_map(|line| {
            let open = order.lines.iter().find(|l| l.line == line.line).map(|l| {
                let progress = progress.get(&line.line).copied().unwrap_or_default();
                l.quantity.saturating_minus(progress.net_received())
            });
            let (expected, discrepant) = match (line.expected, open) {
                (_, None) => (Quantity::ZERO, !line.received.value().is_zero()),
                (Some(expected), Some(_)) => (
                    expected,
                    !tolerance.admits(expected.value(), line.received.value()),
                ),
                (None, Some(open)) => (
                    open,
                    tolerance.exceeded_by(open.value(), line.received.value()),
                ),
            };
            discrepant.then_some(DiscrepantLine {
                line: line.line,
                expected,
                received: line.received,
            })
        })
        .collect()
}

/// Whether a matched document's quantities are counted or taken back (a correction).
#[derive(Clone, Copy)]
enum Direction {
    Do,
    Undo,
}

/// Files a comparison's finding by its verdict: a hold, a warning, or nothing.
fn judge(
    verdict: Verdict,
    finding: ExceptionReason,
    holds: &mut Vec<ExceptionReason>,
    warnings: &mut Vec<ExceptionReason>,
) {
    match verdict {
        Verdict::Within => {}
        Verdict::Warning => warnings.push(finding),
        Verdict::Blocked => holds.push(finding),
    }
}

/// What an invoice (or credit memo) still waits for, as exception reasons (when it is an
/// exception anyway, or its wait limit has passed).
fn waiting_as_reasons(waiting: Vec<PendingReason>) -> impl Iterator<Item = ExceptionReason> {
    waiting.into_iter().filter_map(|w| match w {
        PendingReason::ReceiptDiscrepancy { grn } => {
            Some(ExceptionReason::ReceiptDiscrepancy { grn })
        }
        PendingReason::Receipt {
            line,
            available,
            billed,
        } => Some(ExceptionReason::NotReceived {
            line,
            expected: available,
            actual: billed,
        }),
        PendingReason::Inspection {
            line,
            available,
            billed,
        } => Some(ExceptionReason::NotAccepted {
            line,
            expected: available,
            actual: billed,
        }),
        PendingReason::Invoice {
            line,
            invoiced,
            credited,
        } => Some(ExceptionReason::QuantityVariance {
            line,
            expected: invoiced,
            actual: credited,
        }),
        PendingReason::PurchaseOrder => None,
    })
}

fn pending(invoice: &InvoiceReceived, waiting_for: Vec<PendingReason>) -> InvoicePending {
    InvoicePending {
        org: invoice.org.clone(),
        invoice: invoice.invoice.clone(),
        po: invoice.po.clone(),
        waiting_for,
    }
}

fn exception(
    invoice: &InvoiceReceived,
    reasons: Vec<ExceptionReason>,
    at: EventTime,
) -> InvoiceException {
    InvoiceException {
        org: invoice.org.clone(),
        invoice: invoice.invoice.clone(),
        kind: invoice.kind,
        po: invoice.po.clone(),
        supplier: invoice.supplier.clone(),
        number: invoice.number.clone(),
        total: invoice.total,
        reasons,
        raised_at: at,
        revision: 0,
    }
}

#[cfg(test)]
mod tests;
