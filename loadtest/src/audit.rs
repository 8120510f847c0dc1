//! Reads what the pipeline produced (outputs and dead-letter queues, read_committed, from the
//! beginning to the current end) and checks every invoice against the outcome it was planted
//! to have. A disagreement is a bug in the pipeline or in the plan, never noise.

use crate::generator::Planted;
use p2p_avro::convert::payment::{
    PaymentInstructionRecord, PaymentScheduleRecord, ScheduleEventKind,
};
use p2p_avro::convert::procurement::{
    ApprovalRequestRecord, AuditKind, AuditRecord, PoStatusRecord, RequestKind,
};
use p2p_avro::convert::status::InvoiceStatusRecord;
use p2p_avro::convert::{self, ExceptionRecord, MatchedRecord};
use p2p_avro::{Codec, CodecError};
use p2p_processors::{
    DocumentKind, DocumentRef, InvoiceId, PoState, PurchaseOrderId, ReasonKind, RequisitionId,
    RequisitionState,
};
use p2p_topologies::{KafkaProperties, Topics};

use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};

use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("output record on {topic} does not decode: {error}")]
    Decode { topic: String, error: String },
    #[error("reading back: {0}")]
    Read(#[from] p2p_topologies::admin::ReadError),
    #[error("output record is not in our wire format: {0}")]
    Codec(#[from] CodecError),
}

/// A dead-lettered record as an operator inspects it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Everything on the output topics, by invoice id.
#[derive(Debug, Default)]
pub struct Observed {
    pub matched: BTreeMap<String, Vec<MatchedRecord>>,
    pub exceptions: BTreeMap<String, Vec<ExceptionRecord>>,
    /// `invoice-status`, every record (not compacted yet), by invoice id.
    pub statuses: BTreeMap<String, Vec<InvoiceStatusRecord>>,
    pub dead_letters: Vec<DeadLetter>,
}

/// Reads every record of `topic` committed so far.
pub fn read_topic(
    kafka: &KafkaProperties,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<rdkafka::message::OwnedMessage>, AuditError> {
    Ok(p2p_topologies::admin::read_topic(kafka, topic, timeout)?)
}

/// Reads the match outputs and the input DLQs of `topics`.
pub async fn read_outputs(
    kafka: &KafkaProperties,
    codec: &Codec,
    topics: &Topics,
    timeout: Duration,
) -> Result<Observed, AuditError> {
    let mut observed = Observed::default();
    for message in read_topic(kafka, &topics.invoice_matched, timeout)? {
        let value = codec.decode(message.payload()).await?;
        let record = convert::matched_record(&value).map_err(|e| AuditError::Decode {
            topic: topics.invoice_matched.clone(),
            error: e.to_string(),
        })?;
        observed
            .matched
            .entry(record.invoice_id.clone())
            .or_default()
            .push(record);
    }
    for message in read_topic(kafka, &topics.invoice_exceptions, timeout)? {
        let value = codec.decode(message.payload()).await?;
        let record = convert::exception_record(&value).map_err(|e| AuditError::Decode {
            topic: topics.invoice_exceptions.clone(),
            error: e.to_string(),
        })?;
        observed
            .exceptions
            .entry(record.invoice_id.clone())
            .or_default()
            .push(record);
    }
    for message in read_topic(kafka, &topics.invoice_status, timeout)? {
        let value = codec.decode(message.payload()).await?;
        let record =
            convert::status::invoice_status_record(&value).map_err(|e| AuditError::Decode {
                topic: topics.invoice_status.clone(),
                error: e.to_string(),
            })?;
        observed
            .statuses
            .entry(record.invoice_id.clone())
            .or_default()
            .push(record);
    }
    for input in topics.match_inputs() {
        let dlq = Topics::dlq(input);
        for message in read_topic(kafka, &dlq, timeout)? {
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            observed.dead_letters.push(DeadLetter {
                topic: dlq.clone(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    Ok(observed)
}

/// The audit of one run.
#[derive(Debug, Default)]
pub struct Audit {
    pub invoices: usize,
    pub matched: usize,
    pub exceptions: usize,
    pub pending: usize,
    /// Reason symbol -> invoices whose final exception carries it.
    pub reasons: BTreeMap<String, usize>,
    /// Matched invoices total per currency, to the cent (credit memos aside).
    pub matched_totals: BTreeMap<String, rust_decimal::Decimal>,
    /// Of the matched, the credit memos, and what they credit per currency.
    pub credit_memos: usize,
    pub credited_totals: BTreeMap<String, rust_decimal::Decimal>,
    /// Invoices blocked by hand (`MANUAL_HOLD`) whose newest outcome is a match: released.
    pub released_holds: usize,
    pub disagreements: Vec<String>,
}

impl Audit {
    pub fn passed(&self) -> bool {
        self.disagreements.is_empty()
    }
}

/// Checks each planted invoice against what was observed.
pub fn audit(planted: &[(InvoiceId, Planted)], observed: &Observed) -> Audit {
    let mut audit = Audit {
        invoices: planted.len(),
        ..Default::default()
    };
    let planted_ids: BTreeSet<&str> = planted.iter().map(|(id, _)| id.as_str()).collect();
    for id in observed.matched.keys().chain(observed.exceptions.keys()) {
        if !planted_ids.contains(id.as_str()) {
            audit
                .disagreements
                .push(format!("{id}: an outcome for an invoice nobody sent"));
        }
    }
    for (id, plan) in planted {
        let matched = observed.matched.get(id.as_str());
        let exceptions = observed.exceptions.get(id.as_str());
        // At-least-once may repeat an outcome, but a repeat (same revision) must be identical.
        if let Some(m) = matched {
            let mut by_revision: BTreeMap<u32, &MatchedRecord> = BTreeMap::new();
            if m.iter()
                .any(|r| *by_revision.entry(r.revision).or_insert(r) != r)
            {
                audit
                    .disagreements
                    .push(format!("{id}: matched twice with different content"));
            }
        }
        // Decided more than once (blocked by hand, released, corrected): the newest stands.
        let newest_match = matched.and_then(|m| m.iter().map(|r| r.revision).max());
        let newest_exception = exceptions.and_then(|e| e.iter().map(|r| r.revision).max());
        audit.disagreements.extend(status_disagreements(
            id,
            observed.statuses.get(id.as_str()),
            newest_match,
            newest_exception,
        ));
        let (matched, exceptions) = match (newest_match, newest_exception) {
            (Some(m), Some(e)) if m > e => {
                let held_by_hand = exceptions
                    .into_iter()
                    .flatten()
                    .flat_map(|x| &x.reasons)
                    .any(|r| r.reason == ReasonKind::ManualHold.symbol());
                if held_by_hand {
                    audit.released_holds += 1;
                }
                (matched, None)
            }
            (Some(m), Some(e)) if e > m => (None, exceptions),
            _ => (matched, exceptions),
        };
        match (matched, exceptions) {
            (Some(m), None) => {
                audit.matched += 1;
                let totals = if m[0].document_type == DocumentKind::CreditMemo {
                    audit.credit_memos += 1;
                    &mut audit.credited_totals
                } else {
                    &mut audit.matched_totals
                };
                *totals.entry(m[0].currency.clone()).or_default() += m[0].total_amount;
                if *plan != Planted::Matched {
                    audit
                        .disagreements
                        .push(format!("{id}: matched, planted {plan:?}"));
                }
            }
            (None, Some(e)) => {
                audit.exceptions += 1;
                let last = e.iter().max_by_key(|r| r.revision).expect("non-empty");
                let found: BTreeSet<&str> =
                    last.reasons.iter().map(|r| r.reason.as_str()).collect();
                for symbol in &found {
                    *audit.reasons.entry((*symbol).to_owned()).or_default() += 1;
                }
                match plan {
                    Planted::Exception(kinds) => {
                        for kind in kinds {
                            if !found.contains(kind.symbol()) {
                                audit.disagreements.push(format!(
                                    "{id}: exception without {} (found {found:?})",
                                    kind.symbol()
                                ));
                            }
                        }
                    }
                    other => audit
                        .disagreements
                        .push(format!("{id}: exception {found:?}, planted {other:?}")),
                }
            }
            (None, None) => {
                audit.pending += 1;
                if *plan != Planted::Pending {
                    audit
                        .disagreements
                        .push(format!("{id}: no outcome, planted {plan:?}"));
                }
            }
            (Some(_), Some(_)) => audit
                .disagreements
                .push(format!("{id}: both matched and an exception")),
        }
    }
    audit
}

/// Where `invoice-status` leaves an invoice, against its outcomes: a status for every invoice
/// that arrived; a repeated revision identical but for its time (at-least-once may repeat
/// one, a re-delivered invoice is answered again); the newest status the newest outcome
/// (MATCHED or HELD naming its revision), or WAITING if none was decided.
fn status_disagreements(
    id: &InvoiceId,
    statuses: Option<&Vec<InvoiceStatusRecord>>,
    newest_match: Option<u32>,
    newest_exception: Option<u32>,
) -> Vec<String> {
    let Some(statuses) = statuses.filter(|s| !s.is_empty()) else {
        return vec![format!("{id}: no status on invoice-status")];
    };
    let mut found = Vec::new();
    let mut by_revision: BTreeMap<u32, &InvoiceStatusRecord> = BTreeMap::new();
    for status in statuses {
        let first = *by_revision.entry(status.revision).or_insert(status);
        let same = InvoiceStatusRecord {
            updated_at: first.updated_at,
            ..status.clone()
        };
        if &same != first {
            found.push(format!(
                "{id}: status revision {} published twice with different content",
                status.revision
            ));
        }
    }
    let newest = by_revision.values().next_back().expect("non-empty");
    let expected = match (newest_match, newest_exception) {
        (Some(m), e) if e.is_none_or(|e| m > e) => ("MATCHED", Some(m)),
        (_, Some(e)) => ("HELD", Some(e)),
        _ => ("WAITING", None),
    };
    if (newest.status.as_str(), newest.outcome_revision) != expected {
        found.push(format!(
            "{id}: newest status {} of outcome {:?}, its outcomes say {expected:?}",
            newest.status, newest.outcome_revision
        ));
    }
    found
}

/// What the procurement topology wrote.
#[derive(Debug, Default)]
pub struct ProcurementObserved {
    /// The latest status per PO, as compaction keeps it.
    pub status: BTreeMap<PurchaseOrderId, PoStatusRecord>,
    pub approval_requests: usize,
    pub escalations: usize,
    /// Audit events by kind.
    pub audit: BTreeMap<String, usize>,
    /// Every refusal: action attempted, state it was in, why.
    pub refusals: Vec<String>,
    /// The latest transition of each requisition (requisitions have no status topic; their
    /// audit trail is their history): state as spelled on the audit event, and version.
    pub requisitions: BTreeMap<RequisitionId, (String, u64)>,
}

/// Reads `po-status`, `approval-requests` and `audit-events`.
pub async fn read_procurement(
    kafka: &KafkaProperties,
    codec: &Codec,
    topics: &Topics,
    timeout: Duration,
) -> Result<ProcurementObserved, AuditError> {
    let decode_error = |topic: &str| {
        let topic = topic.to_owned();
        move |e: convert::DecodeError| AuditError::Decode {
            topic: topic.clone(),
            error: e.to_string(),
        }
    };
    let mut observed = ProcurementObserved::default();
    for message in read_topic(kafka, &topics.po_status, timeout)? {
        let value = codec.decode(message.payload()).await?;
        let status = PoStatusRecord::from_value(&value).map_err(decode_error(&topics.po_status))?;
        // The newest version, as a table reader keeps it: after a growth a PO's newer
        // statuses are on its new partition, its older ones on the old until compaction.
        match observed.status.get(&status.po) {
            Some(seen) if seen.version > status.version => {}
            _ => {
                observed.status.insert(status.po.clone(), status);
            }
        }
    }
    for message in read_topic(kafka, &topics.approval_requests, timeout)? {
        let value = codec.decode(message.payload()).await?;
        let request = ApprovalRequestRecord::from_value(&value)
            .map_err(decode_error(&topics.approval_requests))?;
        match request.kind {
            RequestKind::Requested => observed.approval_requests += 1,
            RequestKind::Escalated => observed.escalations += 1,
        }
    }
    for message in read_topic(kafka, &topics.audit_events, timeout)? {
        let value = codec.decode(message.payload()).await?;
        let entry = AuditRecord::from_value(&value).map_err(decode_error(&topics.audit_events))?;
        *observed
            .audit
            .entry(format!("{:?}", entry.kind))
            .or_default() += 1;
        if entry.kind == AuditKind::Refused {
            observed.refusals.push(format!(
                "{} {} in {}: {}",
                entry.action,
                entry.entity,
                entry.from_state.as_deref().unwrap_or("no state"),
                entry.detail
            ));
        }
        if let (DocumentRef::Requisition(id), AuditKind::Transitioned, Some(to)) =
            (&entry.entity, entry.kind, &entry.to_state)
        {
            let latest = observed
                .requisitions
                .entry(id.clone())
                .or_insert((to.clone(), entry.version));
            if entry.version >= latest.1 {
                *latest = (to.clone(), entry.version);
            }
        }
    }
    Ok(observed)
}

/// Each planned PO lifecycle against the status observed: every disagreement, in words.
///
/// A PO planned to end Invoiced may end Paid and then Closed (two versions on) when
/// `paid_by_credit` names it: the supplier's credit paid every invoice of it, so no bank was
/// needed. Which invoices the credit pays depends on when each payment run meets the
/// supplier's open credit, which a plan made before the run cannot know.
pub fn audit_lifecycles(
    planned: &BTreeMap<PurchaseOrderId, (PoState, u64)>,
    observed: &ProcurementObserved,
    paid_by_credit: &BTreeSet<String>,
) -> Vec<String> {
    let mut disagreements = Vec::new();
    for (po, (state, version)) in planned {
        match observed.status.get(po) {
            Some(s) if (s.state, s.version) == (*state, *version) => {}
            Some(s)
                if (*state, s.state, s.version)
                    == (PoState::Invoiced, PoState::Closed, version + 2)
                    && paid_by_credit.contains(po.as_str()) => {}
            Some(s) => disagreements.push(format!(
                "{po}: {:?} v{}, planned {state:?} v{version}",
                s.state, s.version
            )),
            None => disagreements.push(format!("{po}: no status, planned {state:?}")),
        }
    }
    for po in observed.status.keys() {
        if !planned.contains_key(po) {
            disagreements.push(format!("{po}: a status for a PO nobody sent"));
        }
    }
    disagreements
}

/// Each planned requisition lifecycle against its audit trail: every disagreement, in words.
pub fn audit_requisitions(
    planned: &BTreeMap<RequisitionId, (RequisitionState, u64)>,
    observed: &ProcurementObserved,
) -> Vec<String> {
    let mut disagreements = Vec::new();
    for (id, (state, version)) in planned {
        let spelled = convert::procurement::requisition_state_symbol(*state);
        match observed.requisitions.get(id) {
            Some((s, v)) if (s, v) == (&spelled, version) => {}
            Some((s, v)) => {
                disagreements.push(format!("{id}: {s} v{v}, planned {spelled} v{version}"))
            }
            None => disagreements.push(format!("{id}: no transition, planned {spelled}")),
        }
    }
    for id in observed.requisitions.keys() {
        if !planned.contains_key(id) {
            disagreements.push(format!("{id}: transitions of a requisition nobody sent"));
        }
    }
    disagreements
}

/// What the payment topology wrote.
#[derive(Debug, Default)]
pub struct PaymentsObserved {
    /// Schedule events by kind.
    pub events: BTreeMap<String, usize>,
    pub runs: usize,
    /// How many times each invoice was put in a payment instruction (each part counts).
    pub instructed: BTreeMap<String, usize>,
    /// Instructed amounts per currency, exact.
    pub instructed_totals: BTreeMap<String, Decimal>,
    /// Credit memos' amounts taken off each invoice's payment, exact.
    pub set_off: BTreeMap<String, Decimal>,
    /// Amounts on `payment-schedule` or `payment-instructions` with more decimals than their
    /// currency's minor unit, in words: a bank cannot pay them.
    pub not_in_minor_units: Vec<String>,
}

/// `amount` has no more decimals than its currency's minor unit.
fn in_minor_units(amount: &p2p_processors::Money) -> bool {
    amount.amount().normalize().scale() <= amount.currency().minor_units()
}

/// Reads `payment-schedule` and `payment-instructions`.
pub async fn read_payments(
    kafka: &KafkaProperties,
    codec: &Codec,
    topics: &Topics,
    timeout: Duration,
) -> Result<PaymentsObserved, AuditError> {
    let mut observed = PaymentsObserved::default();
    let decode_error = |topic: &String| {
        let topic = topic.clone();
        move |e: convert::DecodeError| AuditError::Decode {
            topic: topic.clone(),
            error: e.to_string(),
        }
    };
    for message in read_topic(kafka, &topics.payment_schedule, timeout)? {
        let value = codec.decode(message.payload()).await?;
        let record = PaymentScheduleRecord::from_value(&value)
            .map_err(decode_error(&topics.payment_schedule))?;
        *observed
            .events
            .entry(format!("{:?}", record.kind))
            .or_default() += 1;
        for amount in [record.amount, record.discount].iter().flatten() {
            if !in_minor_units(amount) {
                observed.not_in_minor_units.push(format!(
                    "{}: {:?} of {amount} on payment-schedule",
                    record.invoice, record.kind
                ));
            }
        }
        if let (ScheduleEventKind::SetOff, Some(amount)) = (record.kind, record.amount) {
            *observed
                .set_off
                .entry(record.invoice.to_string())
                .or_default() += amount.amount();
        }
    }
    for message in read_topic(kafka, &topics.payment_instructions, timeout)? {
        let value = codec.decode(message.payload()).await?;
        let run = PaymentInstructionRecord::from_value(&value)
            .map_err(decode_error(&topics.payment_instructions))?;
        observed.runs += 1;
        if !in_minor_units(&run.total) {
            observed
                .not_in_minor_units
                .push(format!("run {}: total {}", run.run_id, run.total));
        }
        for payment in &run.payments {
            if !in_minor_units(&payment.amount) {
                observed.not_in_minor_units.push(format!(
                    "{}: instructed {}",
                    payment.invoice, payment.amount
                ));
            }
            *observed
                .instructed
                .entry(payment.invoice.to_string())
                .or_default() += 1;
            *observed
                .instructed_totals
                .entry(run.currency.to_string())
                .or_default() += payment.amount.amount();
        }
    }
    Ok(observed)
}

/// Each invoice's match that stands: matched more than once (released, corrected), the newest
/// match is what is payable; one blocked since (a newer exception) is not payable.
fn payable(observed: &Observed) -> impl Iterator<Item = (&String, &MatchedRecord)> {
    observed.matched.iter().filter_map(|(invoice, records)| {
        let record = records.iter().max_by_key(|r| r.revision)?;
        let blocked_since = observed
            .exceptions
            .get(invoice)
            .is_some_and(|e| e.iter().any(|x| x.revision > record.revision));
        (!blocked_since).then_some((invoice, record))
    })
}

/// What a bank is told to pay (or a memo credits) of `record`: its total rounded half-up to its
/// currency's minor unit, as the payment topology rounds it, once (ADR 0015).
fn payable_amount(record: &MatchedRecord) -> Decimal {
    match p2p_processors::Currency::parse(&record.currency) {
        Ok(currency) => p2p_processors::payment::payable(p2p_processors::Money::new(
            record.total_amount,
            currency,
        ))
        .0
        .amount(),
        Err(_) => record.total_amount,
    }
}

/// The POs every payable invoice of which was paid in full by credit set off against it
/// (credit memos aside): settled with no bank payment.
pub fn paid_by_credit(observed: &Observed, payments: &PaymentsObserved) -> BTreeSet<String> {
    let mut by_credit: BTreeMap<&str, bool> = BTreeMap::new();
    for (invoice, record) in payable(observed) {
        if record.document_type == DocumentKind::CreditMemo {
            continue;
        }
        let offset = payments.set_off.get(invoice).copied().unwrap_or_default();
        let all = by_credit.entry(record.po_id.as_str()).or_insert(true);
        *all &= offset == payable_amount(record) && !payments.instructed.contains_key(invoice);
    }
    by_credit
        .into_iter()
        .filter(|(_, all)| *all)
        .map(|(po, _)| po.to_owned())
        .collect()
}

/// Every matched invoice paid exactly once, for exactly its matched total in its currency
/// rounded to the currency's minor unit (by the bank, less any credit set off against it); no credit memo ever paid, and no more
/// credit used than the memos gave: the disagreements, in words.
pub fn audit_payments(observed: &Observed, payments: &PaymentsObserved) -> Vec<String> {
    let mut disagreements = payments.not_in_minor_units.clone();
    // Per currency: what invoices were matched for, less the credit set off against them.
    let mut matched_totals: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut credited: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut set_off: BTreeMap<String, Decimal> = BTreeMap::new();
    for (invoice, record) in payable(observed) {
        if record.document_type == DocumentKind::CreditMemo {
            *credited.entry(record.currency.clone()).or_default() += payable_amount(record);
            if payments.instructed.contains_key(invoice) {
                disagreements.push(format!("{invoice}: a credit memo, instructed for payment"));
            }
            continue;
        }
        let offset = payments.set_off.get(invoice).copied().unwrap_or_default();
        *set_off.entry(record.currency.clone()).or_default() += offset;
        let payable = payable_amount(record);
        *matched_totals.entry(record.currency.clone()).or_default() += payable - offset;
        match payments.instructed.get(invoice) {
            Some(1) => {}
            // Paid in full by credit: nothing for the bank.
            None if offset == payable => {}
            Some(n) => disagreements.push(format!("{invoice}: instructed {n} times")),
            None => disagreements.push(format!("{invoice}: matched but never instructed")),
        }
    }
    for (currency, used) in &set_off {
        let given = credited.get(currency).copied().unwrap_or_default();
        if *used > given {
            disagreements.push(format!(
                "{used} {currency} of credit set off, credit memos gave {given}"
            ));
        }
    }
    matched_totals.retain(|_, total| !total.is_zero());
    for invoice in payments.instructed.keys() {
        if !observed.matched.contains_key(invoice) {
            disagreements.push(format!("{invoice}: instructed but never matched"));
        }
    }
    if matched_totals != payments.instructed_totals {
        disagreements.push(format!(
            "instructed {:?} per currency, matched {matched_totals:?}",
            payments.instructed_totals
        ));
    }
    disagreements
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn matched(invoice: &str, kind: DocumentKind, total: Decimal) -> (String, Vec<MatchedRecord>) {
        let record = MatchedRecord {
            revision: 0,
            org_id: "org".into(),
            invoice_id: invoice.into(),
            document_type: kind,
            po_id: "po".into(),
            currency: "EUR".into(),
            total_amount: total,
            matched_at: 0,
            warnings: vec![],
        };
        (invoice.to_owned(), vec![record])
    }

    fn observed() -> Observed {
        Observed {
            matched: [
                matched("inv-1", DocumentKind::Invoice, dec!(1000)),
                matched("inv-2", DocumentKind::Invoice, dec!(200)),
                matched("cm-1", DocumentKind::CreditMemo, dec!(500)),
            ]
            .into(),
            ..Observed::default()
        }
    }

    /// inv-1 paid 700 by the bank and 300 by credit; inv-2 paid by credit alone.
    fn paid_with_credit() -> PaymentsObserved {
        PaymentsObserved {
            instructed: [("inv-1".to_owned(), 1)].into(),
            instructed_totals: [("EUR".to_owned(), dec!(700))].into(),
            set_off: [
                ("inv-1".to_owned(), dec!(300)),
                ("inv-2".to_owned(), dec!(200)),
            ]
            .into(),
            ..PaymentsObserved::default()
        }
    }

    #[test]
    fn invoices_paid_partly_or_wholly_by_credit_reconcile_to_the_cent() {
        assert_eq!(
            audit_payments(&observed(), &paid_with_credit()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_po_counts_as_paid_by_credit_only_when_credit_paid_each_of_its_invoices() {
        // inv-1 went to the bank for 700 of its 1000.
        assert!(paid_by_credit(&observed(), &paid_with_credit()).is_empty());
        let mut only_inv_2 = observed();
        only_inv_2.matched.remove("inv-1");
        assert_eq!(
            paid_by_credit(&only_inv_2, &paid_with_credit()),
            BTreeSet::from(["po".to_owned()])
        );
    }

    fn closed(po: &PurchaseOrderId, state: PoState, version: u64) -> ProcurementObserved {
        let record = PoStatusRecord {
            org: p2p_processors::OrgId::from_u128(1),
            po: po.clone(),
            state,
            version,
            last_action: p2p_processors::PoAction::Close,
            updated_at: p2p_processors::EventTime(0),
        };
        ProcurementObserved {
            status: [(po.clone(), record)].into(),
            ..ProcurementObserved::default()
        }
    }

    #[test]
    fn a_po_planned_invoiced_may_end_closed_only_when_credit_paid_it() {
        let po = PurchaseOrderId::from_u128(9);
        let planned = BTreeMap::from([(po.clone(), (PoState::Invoiced, 6))]);
        let ended = closed(&po, PoState::Closed, 8);
        let by_credit = BTreeSet::from([po.as_str().to_owned()]);
        assert!(audit_lifecycles(&planned, &ended, &by_credit).is_empty());
        assert_eq!(
            audit_lifecycles(&planned, &ended, &BTreeSet::new()).len(),
            1
        );
        // Paid by credit, but a version too many: something else happened to it.
        let further = closed(&po, PoState::Closed, 9);
        assert_eq!(audit_lifecycles(&planned, &further, &by_credit).len(), 1);
    }

    #[test]
    fn a_credit_memo_instructed_for_payment_fails_the_audit() {
        let mut payments = paid_with_credit();
        payments.instructed.insert("cm-1".into(), 1);
        let found = audit_payments(&observed(), &payments);
        assert!(
            found.iter().any(|d| d.contains("cm-1: a credit memo")),
            "{found:?}"
        );
    }

    #[test]
    fn more_credit_used_than_the_memos_gave_fails_the_audit() {
        let mut payments = paid_with_credit();
        // 300 + 250 of credit from memos of 500, and the bank paid 50 less to match.
        payments.set_off.insert("inv-2".into(), dec!(250));
        let found = audit_payments(&observed(), &payments);
        assert!(
            found.iter().any(|d| d.contains("credit set off")),
            "{found:?}"
        );
    }

    #[test]
    fn a_cent_short_on_the_bank_side_fails_the_audit() {
        let mut payments = paid_with_credit();
        payments
            .instructed_totals
            .insert("EUR".into(), dec!(699.99));
        assert_eq!(audit_payments(&observed(), &payments).len(), 1);
    }

    #[test]
    fn an_invoice_billed_in_fractions_of_a_cent_reconciles_to_its_rounded_total_only() {
        let observed = Observed {
            matched: [matched("inv-1", DocumentKind::Invoice, dec!(99.9999))].into(),
            ..Observed::default()
        };
        let paid = |amount| PaymentsObserved {
            instructed: [("inv-1".to_owned(), 1)].into(),
            instructed_totals: [("EUR".to_owned(), amount)].into(),
            ..PaymentsObserved::default()
        };
        assert!(audit_payments(&observed, &paid(dec!(100.00))).is_empty());
        assert_eq!(audit_payments(&observed, &paid(dec!(99.9999))).len(), 1);
        let mut sub_cent = paid(dec!(100.00));
        sub_cent
            .not_in_minor_units
            .push("inv-1: instructed 99.9999 EUR".into());
        assert_eq!(audit_payments(&observed, &sub_cent).len(), 1);
    }

    fn held(invoice: &str, revision: u32) -> ExceptionRecord {
        ExceptionRecord {
            org_id: "org".into(),
            invoice_id: invoice.into(),
            document_type: DocumentKind::Invoice,
            po_id: "po".into(),
            currency: "EUR".into(),
            total_amount: dec!(1000),
            reasons: vec![convert::ReasonRecord {
                reason: "MANUAL_HOLD".into(),
                line_number: None,
                expected: None,
                actual: None,
                delta: None,
                detail: "blocked for payment by hand: query".into(),
            }],
            revision,
        }
    }

    fn status(
        invoice: &str,
        revision: u32,
        status: &str,
        outcome: Option<u32>,
    ) -> InvoiceStatusRecord {
        InvoiceStatusRecord {
            org_id: "org".into(),
            invoice_id: invoice.into(),
            document_type: DocumentKind::Invoice,
            po_id: "po".into(),
            invoice_number: "SI-1".into(),
            currency: "EUR".into(),
            total_amount: dec!(1000),
            status: status.into(),
            revision,
            outcome_revision: outcome,
            waiting_for: vec![],
            reasons: vec![],
            decisions: vec![],
            updated_at: i64::from(revision),
        }
    }

    #[test]
    fn of_an_invoices_outcomes_on_both_topics_the_newest_stands() {
        let id = InvoiceId::from_u128(7);
        let (key, mut records) = matched(id.as_str(), DocumentKind::Invoice, dec!(1000));
        records[0].revision = 2;
        // Blocked by hand (1), released and matched (2).
        let mut observed = Observed {
            matched: [(key.clone(), records)].into(),
            exceptions: [(key.clone(), vec![held(id.as_str(), 1)])].into(),
            statuses: [(
                key.clone(),
                vec![
                    status(id.as_str(), 1, "HELD", Some(1)),
                    status(id.as_str(), 2, "MATCHED", Some(2)),
                ],
            )]
            .into(),
            ..Observed::default()
        };
        let released = audit(&[(id.clone(), Planted::Matched)], &observed);
        assert!(released.passed(), "{:?}", released.disagreements);
        assert_eq!((released.matched, released.released_holds), (1, 1));
        let unpaid = audit_payments(&observed, &PaymentsObserved::default());
        assert!(
            unpaid.contains(&format!("{id}: matched but never instructed")),
            "{unpaid:?}"
        );
        // Blocked again (3): an exception now, and not payable.
        observed
            .exceptions
            .get_mut(&key)
            .unwrap()
            .push(held(id.as_str(), 3));
        let behind = audit(
            &[(id.clone(), Planted::Exception(vec![ReasonKind::ManualHold]))],
            &observed,
        );
        assert_eq!(behind.disagreements.len(), 1, "{:?}", behind.disagreements);
        observed
            .statuses
            .get_mut(&key)
            .unwrap()
            .push(status(id.as_str(), 3, "HELD", Some(3)));
        let blocked = audit(
            &[(id.clone(), Planted::Exception(vec![ReasonKind::ManualHold]))],
            &observed,
        );
        assert!(blocked.passed(), "{:?}", blocked.disagreements);
        assert_eq!(blocked.exceptions, 1);
        assert!(audit_payments(&observed, &PaymentsObserved::default()).is_empty());
    }

    #[test]
    fn an_invoice_without_a_status_or_with_a_revision_told_two_ways_fails_the_audit() {
        let id = InvoiceId::from_u128(8);
        let waiting = [(id.clone(), Planted::Pending)];
        let none = audit(&waiting, &Observed::default());
        assert_eq!(
            none.disagreements,
            vec![format!("{id}: no status on invoice-status")]
        );
        let twice = Observed {
            statuses: [(
                id.to_string(),
                vec![
                    status(id.as_str(), 1, "WAITING", None),
                    // Answered again later (a re-delivered invoice): the same but its time.
                    status(id.as_str(), 1, "WAITING", None),
                    status(id.as_str(), 1, "HELD", Some(1)),
                ],
            )]
            .into(),
            ..Observed::default()
        };
        let found = audit(&waiting, &twice).disagreements;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("published twice"), "{found:?}");
    }
}
