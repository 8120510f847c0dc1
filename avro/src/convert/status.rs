//! `invoice-status`: where each invoice stands, from the moment it arrives (issue 22, item 3).

use super::*;

/// The record key of a document's status on the compacted topic, `<org_id>/<invoice_id>`, each
/// id escaped as a state key segment (`/` as `%2F`), so no two documents share a key and
/// compaction keeps one record per document.
pub fn invoice_status_key(org: &OrgId, invoice: &InvoiceId) -> String {
    format!("{}/{}", org.key_segment(), invoice.key_segment())
}

/// An `InvoiceStatus` value.
pub fn invoice_status_value(status: &InvoiceStatusChanged) -> Result<Value, EncodeError> {
    let (symbol, index, outcome_revision, waiting, reasons): (_, u32, _, &[PendingReason], _) =
        match &status.status {
            InvoiceStatus::Waiting(waiting) => ("WAITING", 0, None, waiting, &[][..]),
            InvoiceStatus::Matched {
                outcome_revision,
                warnings,
            } => ("MATCHED", 1, Some(*outcome_revision), &[], &warnings[..]),
            InvoiceStatus::Held {
                outcome_revision,
                reasons,
            } => ("HELD", 2, Some(*outcome_revision), &[], &reasons[..]),
        };
    let waiting = waiting
        .iter()
        .map(|w| waiting_value(w, &status.po))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(record(vec![
        ("org_id", s(&status.org)),
        ("invoice_id", s(&status.invoice)),
        ("document_type", document_type(status.kind)),
        ("po_id", s(&status.po)),
        ("supplier_id", s(&status.supplier)),
        ("invoice_number", s(&status.number)),
        ("currency", s(status.total.currency())),
        (
            "total_amount",
            dec("total_amount", status.total.amount(), AMOUNT)?,
        ),
        ("status", Value::Enum(index, symbol.into())),
        ("revision", revision_value(status.revision)?),
        (
            "outcome_revision",
            match outcome_revision {
                Some(r) => some(revision_value(r)?),
                None => none(),
            },
        ),
        ("waiting_for", Value::Array(waiting)),
        ("reasons", reasons_value(reasons)?),
        (
            "decisions",
            Value::Array(status.decisions.iter().map(s).collect()),
        ),
        ("updated_at", Value::TimestampMillis(status.at.0)),
    ]))
}

const WAITING_KINDS: [&str; 6] = [
    "PO_NOT_SEEN",
    "GOODS_NOT_RECEIVED",
    "NOT_INSPECTED",
    "RECEIPT_DISCREPANCY",
    "INVOICE_NOT_MATCHED",
    "OTHER",
];

/// One thing a document waits for: the quantity it needs (`expected`), what is there so far
/// (`actual`), what is missing (`delta`), and a sentence.
fn waiting_value(waiting: &PendingReason, po: &PurchaseOrderId) -> Result<Value, EncodeError> {
    let measured = |f: &'static str, v: Quantity| dec(f, v.value(), MEASURE).map(some);
    let quantities = |line: &LineNumber, expected: Quantity, actual: Quantity| {
        Ok::<_, EncodeError>((
            some(Value::Int(line.get() as i32)),
            measured("expected", expected)?,
            measured("actual", actual)?,
            dec("delta", actual.value() - expected.value(), MEASURE).map(some)?,
        ))
    };
    let nothing = || (none(), none(), none(), none());
    let (kind, grn, (line, expected, actual, delta), detail) = match waiting {
        PendingReason::PurchaseOrder => (
            0,
            none(),
            nothing(),
            format!("purchase order {po} has not been received from the ERP yet"),
        ),
        PendingReason::Receipt {
            line,
            available,
            billed,
        }
        | PendingReason::Inspection {
            line,
            available,
            billed,
        } => {
            let (kind, so_far, for_what) = match waiting {
                PendingReason::Inspection { .. } => (2, "through inspection", "inspection"),
                _ => (1, "received", "the goods"),
            };
            (
                kind,
                none(),
                quantities(line, *billed, *available)?,
                format!(
                    "line {line}: {billed} billed, {available} {so_far} so far; waiting for {for_what}"
                ),
            )
        }
        PendingReason::ReceiptDiscrepancy { grn } => (
            3,
            some(s(grn)),
            nothing(),
            format!("goods receipt {grn} is in discrepancy; nothing of the order is matched until it is resolved"),
        ),
        PendingReason::Invoice {
            line,
            invoiced,
            credited,
        } => (
            4,
            none(),
            quantities(line, *credited, *invoiced)?,
            format!(
                "line {line}: credits {credited}, matched invoices billed {invoiced} so far; waiting for the invoice it credits"
            ),
        ),
    };
    Ok(record(vec![
        (
            "reason",
            Value::Enum(kind, WAITING_KINDS[kind as usize].into()),
        ),
        ("line_number", line),
        ("grn_id", grn),
        ("expected", expected),
        ("actual", actual),
        ("delta", delta),
        ("detail", s(detail)),
    ]))
}

/// One thing a document waits for, as a consumer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRecord {
    pub reason: String,
    pub line_number: Option<i32>,
    pub grn_id: Option<String>,
    pub expected: Option<Decimal>,
    pub actual: Option<Decimal>,
    pub delta: Option<Decimal>,
    pub detail: String,
}

/// `InvoiceStatus` as a consumer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceStatusRecord {
    pub org_id: String,
    pub invoice_id: String,
    pub document_type: DocumentKind,
    pub po_id: String,
    pub invoice_number: String,
    pub currency: String,
    pub total_amount: Decimal,
    /// WAITING, MATCHED or HELD.
    pub status: String,
    pub revision: u32,
    pub outcome_revision: Option<u32>,
    pub waiting_for: Vec<WaitingRecord>,
    pub reasons: Vec<ReasonRecord>,
    pub decisions: Vec<String>,
    pub updated_at: i64,
}

pub fn invoice_status_record(value: &Value) -> Result<InvoiceStatusRecord, DecodeError> {
    let r = Record::of(value, "InvoiceStatus")?;
    let waiting_for = r
        .array("waiting_for")?
        .iter()
        .map(|v| {
            let x = Record::of(v, "WaitingReason")?;
            Ok(WaitingRecord {
                reason: x.symbol("reason")?.to_owned(),
                line_number: x
                    .opt("line_number")
                    .map(|_| x.int("line_number"))
                    .transpose()?,
                grn_id: x.opt_string("grn_id")?.map(str::to_owned),
                expected: x.opt_decimal("expected", MEASURE)?,
                actual: x.opt_decimal("actual", MEASURE)?,
                delta: x.opt_decimal("delta", MEASURE)?,
                detail: x.string("detail")?.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok(InvoiceStatusRecord {
        org_id: r.string("org_id")?.to_owned(),
        invoice_id: r.string("invoice_id")?.to_owned(),
        document_type: document_kind(&r)?,
        po_id: r.string("po_id")?.to_owned(),
        invoice_number: r.string("invoice_number")?.to_owned(),
        currency: r.string("currency")?.to_owned(),
        total_amount: r.decimal("total_amount", AMOUNT)?,
        status: r.symbol("status")?.to_owned(),
        revision: revision(&r)?,
        outcome_revision: r
            .opt("outcome_revision")
            .map(|_| r.int("outcome_revision").map(|v| v.max(0) as u32))
            .transpose()?,
        waiting_for,
        reasons: reason_records(&r, "reasons", "ExceptionReason")?,
        decisions: r
            .array("decisions")?
            .iter()
            .map(|v| match v {
                Value::String(text) => Ok(text.clone()),
                _ => Err(DecodeError::Invalid {
                    field: "decisions",
                    reason: "a decision is a string".into(),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?,
        updated_at: r.timestamp("updated_at")?.0,
    })
}

/// An `InvoiceDecision` as the match reads it, with its org and time.
pub fn invoice_decision(
    value: &Value,
) -> Result<(OrgId, p2p_processors::decisions::InvoiceDecision, EventTime), DecodeError> {
    use p2p_processors::approval::ApprovalLevel;
    use p2p_processors::decisions::{DecisionAction, InvoiceDecision};
    let r = Record::of(value, "InvoiceDecision")?;
    // Never a default: an authority the pipeline does not know grants nothing.
    let authority = match r.symbol("authority")? {
        "L1" => ApprovalLevel::L1,
        "L2" => ApprovalLevel::L2,
        "L3" => ApprovalLevel::L3,
        other => return Err(DecodeError::UnknownEventType(other.to_owned())),
    };
    let action = match r.symbol("decision")? {
        "RELEASE_HOLD" => {
            let hold = r.opt_string("hold")?.ok_or(DecodeError::Invalid {
                field: "hold",
                reason: "RELEASE_HOLD names the hold it releases".into(),
            })?;
            let kind = ReasonKind::from_symbol(hold).ok_or_else(|| DecodeError::Invalid {
                field: "hold",
                reason: format!("{hold:?} is no hold the match gives"),
            })?;
            DecisionAction::Release(Some(kind))
        }
        "RELEASE_ALL" => DecisionAction::Release(None),
        "ACCEPT_VARIANCE" => DecisionAction::AcceptVariance,
        "NOT_A_DUPLICATE" => DecisionAction::NotADuplicate,
        "REJECT" => DecisionAction::Reject,
        other => return Err(DecodeError::UnknownEventType(other.to_owned())),
    };
    let text = |field: &'static str, value: &str| -> Result<String, DecodeError> {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > 2_000 {
            return Err(DecodeError::Invalid {
                field,
                reason: "between 1 and 2,000 characters".into(),
            });
        }
        Ok(value.to_owned())
    };
    let decision_id = text("decision_id", r.string("decision_id")?)?;
    let reason_code = text("reason_code", r.string("reason_code")?)?;
    let comment = match r.opt_string("comment")? {
        Some(c) if !c.trim().is_empty() => Some(text("comment", c)?),
        _ => None,
    };
    Ok((
        r.id("org_id", OrgId::parse)?,
        InvoiceDecision {
            id: decision_id,
            invoice: r.id("invoice_id", InvoiceId::parse)?,
            po: r.id("po_id", PurchaseOrderId::parse)?,
            by: r.id("decided_by", UserId::parse)?,
            authority,
            action,
            reason_code,
            comment,
        },
        r.timestamp("occurred_at")?,
    ))
}

/// An `InvoiceDecision` value, as an AP front end would publish it.
pub fn invoice_decision_value(
    org: &OrgId,
    decision: &p2p_processors::decisions::InvoiceDecision,
    at: EventTime,
) -> Value {
    use p2p_processors::decisions::DecisionAction;
    let (index, symbol, hold) = match decision.action {
        DecisionAction::Release(Some(kind)) => (0, "RELEASE_HOLD", some(s(kind.symbol()))),
        DecisionAction::Release(None) => (1, "RELEASE_ALL", none()),
        DecisionAction::AcceptVariance => (2, "ACCEPT_VARIANCE", none()),
        DecisionAction::NotADuplicate => (3, "NOT_A_DUPLICATE", none()),
        DecisionAction::Reject => (4, "REJECT", none()),
    };
    let authority = decision.authority as u32;
    record(vec![
        ("decision_id", s(&decision.id)),
        ("org_id", s(org)),
        ("invoice_id", s(&decision.invoice)),
        ("po_id", s(&decision.po)),
        ("decided_by", s(&decision.by)),
        (
            "authority",
            Value::Enum(authority, format!("{:?}", decision.authority)),
        ),
        ("decision", Value::Enum(index, symbol.into())),
        ("hold", hold),
        ("reason_code", s(&decision.reason_code)),
        (
            "comment",
            decision.comment.as_ref().map_or_else(none, |c| some(s(c))),
        ),
        ("occurred_at", Value::TimestampMillis(at.0)),
    ])
}
