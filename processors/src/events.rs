//! The documents the pipeline consumes and the outcomes it produces, as domain values.
//! Wire formats (Avro) convert to and from these at the edge.

use crate::ids::*;
use crate::money::*;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Event time in milliseconds since the Unix epoch, taken from the record, never from a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventTime(pub i64);

/// ISO 8601 in UTC, to the second (`2026-12-04T09:30:00Z`), as people read it in texts.
impl std::fmt::Display for EventTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(at) => write!(f, "{}", at.format("%Y-%m-%dT%H:%M:%SZ")),
            None => write!(f, "{} ms after 1970-01-01T00:00:00Z", self.0),
        }
    }
}

/// One line of a purchase order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOrderLine {
    pub line: LineNumber,
    pub description: String,
    pub quantity: Quantity,
    pub unit_price: UnitPrice,
    /// False for services and other lines matched two-way (no goods receipt expected).
    pub receipt_required: bool,
    /// Goods are inspected before they count: matched four-way, against accepted quantity.
    /// Inspection implies a receipt, whatever `receipt_required` says.
    #[serde(default)]
    pub inspection_required: bool,
}

/// How a PO line's invoices are matched (DOMAIN.md: from the line's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchLevel {
    /// Billed against the PO only (services).
    TwoWay,
    /// Billed against what was received.
    ThreeWay,
    /// Billed against what passed inspection.
    FourWay,
}

impl PurchaseOrderLine {
    pub fn match_level(&self) -> MatchLevel {
        match (self.receipt_required, self.inspection_required) {
            (_, true) => MatchLevel::FourWay,
            (true, false) => MatchLevel::ThreeWay,
            (false, false) => MatchLevel::TwoWay,
        }
    }
}

/// A purchase order as issued to its supplier: what may be received and invoiced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOrderIssued {
    pub org: OrgId,
    pub po: PurchaseOrderId,
    pub supplier: SupplierId,
    pub currency: Currency,
    pub lines: Vec<PurchaseOrderLine>,
    /// The approved requisition this PO was converted from, if any.
    #[serde(default)]
    pub requisition: Option<RequisitionId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOrderCancelled {
    pub org: OrgId,
    pub po: PurchaseOrderId,
}

/// A purchase order submitted for approval by its requester, with what it will order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOrderSubmitted {
    pub org: OrgId,
    pub po: PurchaseOrderId,
    pub supplier: SupplierId,
    pub currency: Currency,
    pub lines: Vec<PurchaseOrderLine>,
    pub requester: UserId,
    /// The approved requisition this PO was converted from, if any.
    #[serde(default)]
    pub requisition: Option<RequisitionId>,
}

impl PurchaseOrderSubmitted {
    /// Sum of quantity x unit price over the lines, exact (no rounding).
    pub fn total(&self) -> Result<Money, MoneyError> {
        order_total(self.currency, &self.lines)
    }
}

/// Sum of quantity x unit price over `lines`, exact (no rounding).
pub fn order_total(currency: Currency, lines: &[PurchaseOrderLine]) -> Result<Money, MoneyError> {
    lines_total(currency, lines.iter().map(|l| (l.unit_price, l.quantity)))
}

/// Sum of unit price x quantity, exact; an error if a price is in another currency.
fn lines_total(
    currency: Currency,
    lines: impl IntoIterator<Item = (UnitPrice, Quantity)>,
) -> Result<Money, MoneyError> {
    lines
        .into_iter()
        .try_fold(Money::zero(currency), |sum, (price, quantity)| {
            sum.checked_add(price.money().times(quantity)?)
        })
}

/// One line of a requisition: what is asked for, at the price expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequisitionLine {
    pub line: LineNumber,
    pub description: String,
    pub quantity: Quantity,
    pub unit_price: UnitPrice,
}

/// A requisition submitted for approval by its requester, on `requisition-events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequisitionSubmitted {
    pub org: OrgId,
    pub requisition: RequisitionId,
    pub requester: UserId,
    pub currency: Currency,
    pub lines: Vec<RequisitionLine>,
}

impl RequisitionSubmitted {
    /// Sum of quantity x unit price over the lines, exact (no rounding).
    pub fn total(&self) -> Result<Money, MoneyError> {
        lines_total(
            self.currency,
            self.lines.iter().map(|l| (l.unit_price, l.quantity)),
        )
    }
}

/// A lifecycle step the ERP reports that carries nothing but the step itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PurchaseOrderStep {
    /// The supplier confirmed the order.
    Acknowledged,
    Disputed,
    DisputeResolved,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOrderStepped {
    pub org: OrgId,
    pub po: PurchaseOrderId,
    pub step: PurchaseOrderStep,
}

/// What an ERP publishes on `po-events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PurchaseOrderEvent {
    Submitted(PurchaseOrderSubmitted),
    Issued(PurchaseOrderIssued),
    Cancelled(PurchaseOrderCancelled),
    Stepped(PurchaseOrderStepped),
}

impl PurchaseOrderEvent {
    pub fn org(&self) -> &OrgId {
        match self {
            PurchaseOrderEvent::Submitted(e) => &e.org,
            PurchaseOrderEvent::Issued(e) => &e.org,
            PurchaseOrderEvent::Cancelled(e) => &e.org,
            PurchaseOrderEvent::Stepped(e) => &e.org,
        }
    }

    /// The requisition a PO's submission or issue names as its origin.
    pub fn requisition(&self) -> Option<&RequisitionId> {
        match self {
            PurchaseOrderEvent::Submitted(e) => e.requisition.as_ref(),
            PurchaseOrderEvent::Issued(e) => e.requisition.as_ref(),
            _ => None,
        }
    }

    pub fn po(&self) -> &PurchaseOrderId {
        match self {
            PurchaseOrderEvent::Submitted(e) => &e.po,
            PurchaseOrderEvent::Issued(e) => &e.po,
            PurchaseOrderEvent::Cancelled(e) => &e.po,
            PurchaseOrderEvent::Stepped(e) => &e.po,
        }
    }
}

/// Received and returned quantity of one PO line on one goods receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptLine {
    pub line: LineNumber,
    pub received: Quantity,
    /// Rejected at the dock or sent back: subtracts from what may be invoiced.
    pub returned: Quantity,
    /// What this delivery was to bring (delivery note, ASN), if the ERP says. Without it, the
    /// PO line's open quantity is expected, and only an over-delivery is a discrepancy.
    #[serde(default)]
    pub expected: Option<Quantity>,
    /// Passed inspection (for four-way lines); an inspection result may come on a record of
    /// its own, receiving nothing.
    #[serde(default)]
    pub accepted: Quantity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodsReceived {
    pub org: OrgId,
    pub grn: GoodsReceiptId,
    pub po: PurchaseOrderId,
    /// May be empty only for a resolution that accepts the quantities as received.
    pub lines: Vec<ReceiptLine>,
    /// The discrepant receipt this one resolves (its lines, if any, correct the quantities).
    #[serde(default)]
    pub resolves: Option<GoodsReceiptId>,
}

/// A receipt line outside the org's quantity tolerance of what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscrepantLine {
    pub line: LineNumber,
    pub expected: Quantity,
    pub received: Quantity,
}

/// A receipt that does not agree with what was expected, naming each discrepant line. The PO's
/// invoices are not matched until it is resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodsReceiptDiscrepancy {
    pub org: OrgId,
    pub grn: GoodsReceiptId,
    pub po: PurchaseOrderId,
    pub lines: Vec<DiscrepantLine>,
}

/// A later receipt resolved a discrepancy: the PO's invoices are matched again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptDiscrepancyResolved {
    pub org: OrgId,
    pub grn: GoodsReceiptId,
    pub po: PurchaseOrderId,
    pub by: GoodsReceiptId,
}

/// One billed line of a supplier invoice, against a PO line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub line: LineNumber,
    pub quantity: Quantity,
    pub unit_price: UnitPrice,
}

/// Whether a supplier document bills (an invoice) or gives back (a credit memo). Both carry
/// positive quantities and amounts, as printed; the kind says which way they count.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum DocumentKind {
    #[default]
    Invoice,
    CreditMemo,
}

/// A supplier invoice or credit memo as registered by the buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceReceived {
    pub org: OrgId,
    pub invoice: InvoiceId,
    #[serde(default)]
    pub kind: DocumentKind,
    pub supplier: SupplierId,
    pub number: InvoiceNumber,
    pub po: PurchaseOrderId,
    pub currency: Currency,
    pub lines: Vec<InvoiceLine>,
    /// The invoice's stated total (net of tax), in `currency`.
    pub total: Money,
    /// Days since the Unix epoch, as printed on the invoice.
    pub invoice_date: i32,
    /// A payment block the AP clerk set on the invoice in the ERP, with its reason: the
    /// invoice is held whatever the match finds, until it is re-sent without one (the release).
    #[serde(default)]
    pub payment_block: Option<String>,
    /// Who posted it in the ERP: never the one to decide on its holds (segregation of duties).
    #[serde(default)]
    pub posted_by: Option<UserId>,
}

/// Any document that feeds the match of one purchase order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchInput {
    PurchaseOrder(PurchaseOrderEvent),
    GoodsReceipt(GoodsReceived),
    Invoice(InvoiceReceived),
}

impl MatchInput {
    pub fn org(&self) -> &OrgId {
        match self {
            MatchInput::PurchaseOrder(e) => e.org(),
            MatchInput::GoodsReceipt(e) => &e.org,
            MatchInput::Invoice(e) => &e.org,
        }
    }

    pub fn po(&self) -> &PurchaseOrderId {
        match self {
            MatchInput::PurchaseOrder(e) => e.po(),
            MatchInput::GoodsReceipt(e) => &e.po,
            MatchInput::Invoice(e) => &e.po,
        }
    }
}

/// Why an invoice cannot be paid as it stands. Each carries what was expected and what came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExceptionReason {
    /// Billed unit price outside tolerance of the PO price.
    PriceVariance {
        line: LineNumber,
        expected: Money,
        actual: Money,
    },
    /// Billed quantity beyond what is left to invoice on the PO line (ordered minus invoiced);
    /// for a credit memo, credited quantity beyond what matched invoices billed.
    QuantityVariance {
        line: LineNumber,
        expected: Quantity,
        actual: Quantity,
    },
    /// Invoice total outside tolerance of sum(billed quantity x PO price).
    AmountVariance {
        expected: Money,
        actual: Money,
    },
    CurrencyMismatch {
        expected: Currency,
        actual: Currency,
    },
    SupplierMismatch {
        expected: SupplierId,
        actual: SupplierId,
    },
    /// Billed quantity beyond what was received and not yet invoiced.
    NotReceived {
        line: LineNumber,
        expected: Quantity,
        actual: Quantity,
    },
    /// The invoice bills a line the PO does not have.
    UnknownPoLine {
        line: LineNumber,
    },
    PoCancelled,
    /// The supplier already sent this invoice (see `duplicates`).
    Duplicate {
        of: InvoiceId,
    },
    /// No such purchase order was issued within the org's wait limit.
    UnknownPurchaseOrder,
    /// A receipt of the PO is in discrepancy and not resolved.
    ReceiptDiscrepancy {
        grn: GoodsReceiptId,
    },
    /// Four-way: billed quantity beyond what passed inspection and was not yet invoiced.
    NotAccepted {
        line: LineNumber,
        expected: Quantity,
        actual: Quantity,
    },
    /// Blocked for payment by hand in the ERP. No fact releases it: only the invoice re-sent
    /// without the block does.
    ManualHold {
        reason: String,
    },
    /// The ERP closed the PO (nothing more is to be delivered or billed on it).
    PoClosed,
    /// Looks like an earlier document of the same supplier and PO: same currency, gross
    /// amount and invoice date under another reference. For a person to review.
    PossibleDuplicate {
        of: InvoiceId,
    },
    /// A person rejected it: never payable.
    Rejected {
        by: UserId,
        reason: String,
    },
}

/// The kind of an exception reason, as reported on the wire and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReasonKind {
    PriceVariance,
    QuantityVariance,
    AmountVariance,
    CurrencyMismatch,
    SupplierMismatch,
    NotReceived,
    UnknownPoLine,
    PoCancelled,
    Duplicate,
    UnknownPo,
    ReceiptDiscrepancy,
    NotAccepted,
    ManualHold,
    PoClosed,
    PossibleDuplicate,
    Rejected,
}

impl ReasonKind {
    /// In the order of the Avro enum's symbols.
    pub const ALL: [ReasonKind; 16] = [
        ReasonKind::PriceVariance,
        ReasonKind::QuantityVariance,
        ReasonKind::AmountVariance,
        ReasonKind::CurrencyMismatch,
        ReasonKind::SupplierMismatch,
        ReasonKind::NotReceived,
        ReasonKind::UnknownPoLine,
        ReasonKind::PoCancelled,
        ReasonKind::Duplicate,
        ReasonKind::UnknownPo,
        ReasonKind::ReceiptDiscrepancy,
        ReasonKind::NotAccepted,
        ReasonKind::ManualHold,
        ReasonKind::PoClosed,
        ReasonKind::PossibleDuplicate,
        ReasonKind::Rejected,
    ];

    /// The Avro enum symbol and metric label.
    pub fn symbol(self) -> &'static str {
        match self {
            ReasonKind::PriceVariance => "PRICE_VARIANCE",
            ReasonKind::QuantityVariance => "QUANTITY_VARIANCE",
            ReasonKind::AmountVariance => "AMOUNT_VARIANCE",
            ReasonKind::CurrencyMismatch => "CURRENCY_MISMATCH",
            ReasonKind::SupplierMismatch => "SUPPLIER_MISMATCH",
            ReasonKind::NotReceived => "NOT_RECEIVED",
            ReasonKind::UnknownPoLine => "UNKNOWN_PO_LINE",
            ReasonKind::PoCancelled => "PO_CANCELLED",
            ReasonKind::Duplicate => "DUPLICATE",
            ReasonKind::UnknownPo => "UNKNOWN_PO",
            ReasonKind::ReceiptDiscrepancy => "RECEIPT_DISCREPANCY",
            ReasonKind::NotAccepted => "NOT_ACCEPTED",
            ReasonKind::ManualHold => "MANUAL_HOLD",
            ReasonKind::PoClosed => "PO_CLOSED",
            ReasonKind::PossibleDuplicate => "POSSIBLE_DUPLICATE",
            ReasonKind::Rejected => "REJECTED",
        }
    }

    pub fn from_symbol(symbol: &str) -> Option<ReasonKind> {
        Self::ALL.into_iter().find(|k| k.symbol() == symbol)
    }
}

impl ExceptionReason {
    pub fn kind(&self) -> ReasonKind {
        match self {
            ExceptionReason::PriceVariance { .. } => ReasonKind::PriceVariance,
            ExceptionReason::QuantityVariance { .. } => ReasonKind::QuantityVariance,
            ExceptionReason::AmountVariance { .. } => ReasonKind::AmountVariance,
            ExceptionReason::CurrencyMismatch { .. } => ReasonKind::CurrencyMismatch,
            ExceptionReason::SupplierMismatch { .. } => ReasonKind::SupplierMismatch,
            ExceptionReason::NotReceived { .. } => ReasonKind::NotReceived,
            ExceptionReason::UnknownPoLine { .. } => ReasonKind::UnknownPoLine,
            ExceptionReason::PoCancelled => ReasonKind::PoCancelled,
            ExceptionReason::Duplicate { .. } => ReasonKind::Duplicate,
            ExceptionReason::UnknownPurchaseOrder => ReasonKind::UnknownPo,
            ExceptionReason::ReceiptDiscrepancy { .. } => ReasonKind::ReceiptDiscrepancy,
            ExceptionReason::NotAccepted { .. } => ReasonKind::NotAccepted,
            ExceptionReason::ManualHold { .. } => ReasonKind::ManualHold,
            ExceptionReason::PoClosed => ReasonKind::PoClosed,
            ExceptionReason::PossibleDuplicate { .. } => ReasonKind::PossibleDuplicate,
            ExceptionReason::Rejected { .. } => ReasonKind::Rejected,
        }
    }

    pub fn line(&self) -> Option<LineNumber> {
        match self {
            ExceptionReason::PriceVariance { line, .. }
            | ExceptionReason::QuantityVariance { line, .. }
            | ExceptionReason::NotReceived { line, .. }
            | ExceptionReason::NotAccepted { line, .. }
            | ExceptionReason::UnknownPoLine { line } => Some(*line),
            _ => None,
        }
    }

    /// Expected and actual as numbers, for reasons that have them (delta = actual - expected).
    pub fn expected_actual(&self) -> Option<(Decimal, Decimal)> {
        match self {
            ExceptionReason::PriceVariance {
                expected, actual, ..
            }
            | ExceptionReason::AmountVariance { expected, actual } => {
                Some((expected.amount(), actual.amount()))
            }
            ExceptionReason::QuantityVariance {
                expected, actual, ..
            }
            | ExceptionReason::NotReceived {
                expected, actual, ..
            }
            | ExceptionReason::NotAccepted {
                expected, actual, ..
            } => Some((expected.value(), actual.value())),
            _ => None,
        }
    }

    pub fn delta(&self) -> Option<Decimal> {
        self.expected_actual().map(|(e, a)| a - e)
    }

    /// One sentence an AP clerk can read.
    pub fn describe(&self) -> String {
        match self {
            ExceptionReason::PriceVariance {
                line,
                expected,
                actual,
            } => format!("line {line}: billed unit price {actual}, PO price {expected}"),
            ExceptionReason::QuantityVariance {
                line,
                expected,
                actual,
            } => format!("line {line}: billed {actual}, only {expected} left to invoice on the PO"),
            ExceptionReason::AmountVariance { expected, actual } => {
                format!("invoice total {actual}, billed lines at PO prices come to {expected}")
            }
            ExceptionReason::CurrencyMismatch { expected, actual } => {
                format!("invoiced in {actual}, PO is in {expected}")
            }
            ExceptionReason::SupplierMismatch { expected, actual } => {
                format!("invoiced by {actual}, PO is with {expected}")
            }
            ExceptionReason::NotReceived {
                line,
                expected,
                actual,
            } => format!("line {line}: billed {actual}, received and not yet invoiced {expected}"),
            ExceptionReason::UnknownPoLine { line } => format!("line {line} is not on the PO"),
            ExceptionReason::PoCancelled => "the purchase order is cancelled".to_owned(),
            ExceptionReason::PoClosed => {
                "the purchase order is closed: nothing more is to be billed on it".to_owned()
            }
            ExceptionReason::Duplicate { of } => {
                format!("duplicates invoice {of} of the same supplier")
            }
            ExceptionReason::UnknownPurchaseOrder => {
                "no such purchase order was issued within the wait limit".to_owned()
            }
            ExceptionReason::ReceiptDiscrepancy { grn } => {
                format!("goods receipt {grn} is in discrepancy and not resolved")
            }
            ExceptionReason::NotAccepted {
                line,
                expected,
                actual,
            } => format!("line {line}: billed {actual}, accepted at inspection and not yet invoiced {expected}"),
            ExceptionReason::ManualHold { reason } => {
                format!("blocked for payment by hand: {reason}")
            }
            ExceptionReason::PossibleDuplicate { of } => format!(
                "looks like invoice {of} of the same supplier and purchase order (same currency, \
                 amount and invoice date under another reference): for review"
            ),
            ExceptionReason::Rejected { by, reason } => {
                format!("rejected by {by}: {reason}; never to be paid")
            }
        }
    }
}

/// What a matched invoice commits to pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceMatched {
    pub org: OrgId,
    pub invoice: InvoiceId,
    /// A matched credit memo is not paid: it is a credit against the supplier's payments.
    #[serde(default)]
    pub kind: DocumentKind,
    pub po: PurchaseOrderId,
    pub supplier: SupplierId,
    pub number: InvoiceNumber,
    pub total: Money,
    pub lines: Vec<InvoiceLine>,
    /// Days since the Unix epoch, as printed on the invoice (payment terms run from it).
    pub invoice_date: i32,
    pub matched_at: EventTime,
    /// Deviations past a lower tolerance limit but within the upper one: recorded for the
    /// clerk, blocking nothing. Same shapes as an exception's reasons.
    #[serde(default)]
    pub warnings: Vec<ExceptionReason>,
    /// Counts the outcomes decided for this invoice (matched or exception), from 1: of two
    /// outcomes of one invoice, read from two topics in any order, the higher one stands.
    #[serde(default)]
    pub revision: u32,
}

/// An invoice that cannot be paid as it stands, with every reason found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceException {
    pub org: OrgId,
    pub invoice: InvoiceId,
    #[serde(default)]
    pub kind: DocumentKind,
    pub po: PurchaseOrderId,
    pub supplier: SupplierId,
    pub number: InvoiceNumber,
    pub total: Money,
    pub reasons: Vec<ExceptionReason>,
    pub raised_at: EventTime,
    /// As on [`InvoiceMatched`].
    #[serde(default)]
    pub revision: u32,
}

/// What a pending invoice waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingReason {
    /// The PO has not been seen yet (topics interleave; it may simply be later in the stream).
    PurchaseOrder,
    /// Goods not yet received for a three-way line.
    Receipt {
        line: LineNumber,
        available: Quantity,
        billed: Quantity,
    },
    /// A receipt of the PO is in discrepancy: nothing is matched until it is resolved.
    ReceiptDiscrepancy { grn: GoodsReceiptId },
    /// Goods received but not yet through inspection, for a four-way line.
    Inspection {
        line: LineNumber,
        available: Quantity,
        billed: Quantity,
    },
    /// A credit memo gives back more of a line than its matched invoices billed so far: it
    /// waits for the invoice it credits (topics interleave).
    Invoice {
        line: LineNumber,
        invoiced: Quantity,
        credited: Quantity,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicePending {
    pub org: OrgId,
    pub invoice: InvoiceId,
    pub po: PurchaseOrderId,
    pub waiting_for: Vec<PendingReason>,
}

/// Where one invoice (or credit memo) stands, published from the moment it arrives and again
/// each time that changes: waiting (and for what), matched, or held. An AP clerk, a supplier
/// portal or a data platform sees every document at once, as SAP posts an invoice blocked for
/// quantity at once and releases it when the goods come (issue 22, item 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceStatusChanged {
    pub org: OrgId,
    pub invoice: InvoiceId,
    pub kind: DocumentKind,
    pub po: PurchaseOrderId,
    pub supplier: SupplierId,
    pub number: InvoiceNumber,
    pub total: Money,
    /// Counts this document's statuses, from 1: of two, the higher stands.
    pub revision: u32,
    pub status: InvoiceStatus,
    /// People's decisions on it so far: who decided what, why and when.
    pub decisions: Vec<String>,
    pub at: EventTime,
}

/// An invoice's status: what the match has decided so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceStatus {
    /// Not decided yet: waiting for each of these.
    Waiting(Vec<PendingReason>),
    /// Matched, as `invoice-matched`'s record of `outcome_revision` says.
    Matched {
        outcome_revision: u32,
        warnings: Vec<ExceptionReason>,
    },
    /// Held (blocked for payment), as `invoice-exceptions`' record of `outcome_revision` says.
    Held {
        outcome_revision: u32,
        reasons: Vec<ExceptionReason>,
    },
}

/// A document the match refuses, as a business event rather than a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRejected {
    pub org: OrgId,
    pub grn: GoodsReceiptId,
    pub po: PurchaseOrderId,
    pub reason: ExceptionReason,
}

/// Everything the three-way match can emit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOutput {
    Matched(InvoiceMatched),
    Exception(InvoiceException),
    Pending(InvoicePending),
    /// Beside each outcome above, and when what a waiting invoice waits for changes.
    Status(InvoiceStatusChanged),
    ReceiptRejected(ReceiptRejected),
    ReceiptDiscrepancy(GoodsReceiptDiscrepancy),
    DiscrepancyResolved(ReceiptDiscrepancyResolved),
}
