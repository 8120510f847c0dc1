//! The `payment` topology: from matched invoices to payment instructions.
//!
//! In: `invoice-matched` (what may be paid), `invoice-exceptions` (an invoice blocked after its
//! match: held until it matches again), `po-events` (a dispute holds, a cancellation cancels
//! unreleased parts), `payment-status` (the bank's pain.002 statuses), and the
//! `supplier-master` and `org-config` tables. Out: `payment-schedule` (each payment's due date
//! and amount, holds and their release, release into a run, each bank status, settlement) and
//! `payment-instructions` (one record per payment run: org, currency, debtor account and
//! execution date, for a bank connector to turn into pain.001).
//!
//! One payment per invoice, ever: the payment is the invoice's state, and a re-delivered or
//! replayed `InvoiceMatched` finds it there and changes nothing. Of an invoice's outcomes, read
//! from two topics in any order, only one newer than the last heard of counts (their
//! `revision`): a later match releases the hold of a blocked invoice, or plans a corrected one
//! anew (ADR 0006).
//!
//! Payment runs are a durable timer per org, fired on the wall clock at the start (UTC) of the
//! day the next payment falls due; what a hold keeps back re-enters the next day's run.

use crate::config::Topics;
use crate::dlq::DlqReason;
use crate::record::{InputRecord, OutputRecord};
use crate::topology::{
    check_key, decode, not_an_input, BatchOutput, ProcessError, RecordResult, Topology,
};
use apache_avro::types::Value;
use chrono::NaiveDate;
use p2p_avro::contracts::{PAYMENT_INSTRUCTION, PAYMENT_SCHEDULE};
use p2p_avro::convert::payment::{
    clamped_date_of, supplier_master, BankStatusReport, InstructedPayment,
    PaymentInstructionRecord, PaymentScheduleRecord, ScheduleEventKind,
};
use p2p_avro::convert::procurement::org_config;
use p2p_avro::convert::{self, BlockedInvoice, DecodeError};
use p2p_avro::{Codec, CodecError, Contract};
use p2p_processors::org_config::OrgConfig;
use p2p_processors::payment::{
    payment_runs, Offset, Payee, Payment, PaymentError, PaymentEvent, PaymentPolicy, PaymentTerms,
    QueueSlot, Release, RunQueue, SupplierCredit,
};
use p2p_processors::{
    DocumentKind, EventTime, InvoiceId, InvoiceMatched, OrgId, PoState, PurchaseOrderEvent,
    PurchaseOrderId, PurchaseOrderStep,
};
use p2p_state::{decode_value, encode_value, StateError, StateKey, Store, StoreBatch, Timer};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

// A run's payments fit one instruction record, as its readers (the bank connector) accept it.
const _: () = assert!(p2p_processors::payment::MAX_RUN_PAYMENTS <= p2p_avro::convert::MAX_ENTRIES);

/// Name of this processor in DLQ headers and logs, and of its store.
pub const PROCESSOR: &str = "payment";
const RUN: &str = "payment-run";
const CONFIG: &str = "config/org";
const ORG_PAYMENTS: &str = "payments/org";
/// Most timers fired in one batch; the rest fire in the next.
const TIMERS_PER_BATCH: usize = 1_000;
const DAY_MS: i64 = 86_400_000;

/// An org's payments as a whole: the run queue, when its run timer is set, and matched
/// invoices that cannot be scheduled until the org configures a debtor account for their
/// currency (kept, never dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct OrgPayments {
    /// The org these are (the run timer names only the state key).
    org: Option<OrgId>,
    /// The waiting invoices are kept one a key, `queue_key`.
    #[serde(default)]
    run_queue: RunQueue,
    /// The queue as the layout before ADR 0011 kept it, whole: moved to `run_queue` when read.
    /// (Always written, if empty: a state value is an array of its fields, ADR 0022.)
    #[serde(default, rename = "queue")]
    whole_queue: WholeRunQueue,
    run_timer: Option<i64>,
    unscheduled: Vec<InvoiceMatched>,
    /// The traces of the outcomes in `unscheduled` (their own and their links, ADR 0027),
    /// by invoice, so that their payments keep them once scheduled.
    #[serde(default)]
    unscheduled_traces: BTreeMap<InvoiceId, Vec<String>>,
}

/// A run queue as the layout before ADR 0011 kept it, invoices and all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct WholeRunQueue {
    due: BTreeMap<NaiveDate, BTreeSet<InvoiceId>>,
}

/// Where the invoice waiting in `slot` of the org's run queue is kept.
fn queue_key(org: &OrgId, slot: QueueSlot) -> StateKey {
    StateKey::new(org, &format!("queue/{}/{}", slot.date, slot.index))
}

/// What is known of a PO here: the invoices paid against it and whether it holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PoPayments {
    invoices: BTreeSet<InvoiceId>,
    /// Disputed or Cancelled, as `po-events` last said; `None` otherwise.
    state: Option<PoState>,
}

fn payment_key(org: &OrgId, invoice: &InvoiceId) -> StateKey {
    StateKey::new(org, &format!("pay/{}", invoice.key_segment()))
}
fn po_key(org: &OrgId, po: &PurchaseOrderId) -> StateKey {
    StateKey::new(org, &format!("po/{}", po.key_segment()))
}
fn credit_key(
    org: &OrgId,
    supplier: &p2p_processors::SupplierId,
    currency: p2p_processors::Currency,
) -> StateKey {
    StateKey::new(
        org,
        &format!("credit/{}/{currency}", supplier.key_segment()),
    )
}
fn supplier_key(org: &OrgId, supplier: &p2p_processors::SupplierId) -> StateKey {
    StateKey::new(org, &format!("supplier/{}", supplier.key_segment()))
}
/// The newest revision of an invoice's outcome that blocks it, read before any payment of it
/// was scheduled: a match no newer than this schedules nothing.
fn blocked_key(org: &OrgId, invoice: &InvoiceId) -> StateKey {
    StateKey::new(org, &format!("blocked/{}", invoice.key_segment()))
}

/// State values as the store encodes them, by key; `None`: deleted.
type Values = HashMap<StateKey, Option<Vec<u8>>>;

/// The value of `key` in `values`: `None` if it is not there (then the store has it).
fn value_in<T: DeserializeOwned>(
    values: &Values,
    key: &StateKey,
) -> Option<Result<Option<T>, StateError>> {
    let encoded = values.get(key)?;
    Some(
        encoded
            .as_deref()
            .map_or(Ok(None), |bytes| decode_value(PROCESSOR, bytes).map(Some)),
    )
}

/// Every state a batch touches: read once, written once at the end.
struct Working<'s> {
    store: &'s Store,
    values: Values,
    timers: StoreBatch,
}

impl Working<'_> {
    fn get<T: DeserializeOwned>(&self, key: &StateKey) -> Result<Option<T>, StateError> {
        value_in(&self.values, key).unwrap_or_else(|| self.store.get(key))
    }

    fn put<T: Serialize>(&mut self, key: StateKey, value: &T) -> Result<(), StateError> {
        self.values.insert(key, Some(encode_value(value)?));
        Ok(())
    }

    fn config(&self, org: &OrgId) -> Result<Option<OrgConfig>, StateError> {
        self.get(&StateKey::new(org, CONFIG))
    }

    fn policy(&self, org: &OrgId) -> Result<(PaymentPolicy, PaymentTerms), StateError> {
        Ok(match self.config(org)? {
            Some(c) => (c.payment, c.default_terms),
            None => (PaymentPolicy::defaults(), PaymentTerms::DEFAULT),
        })
    }

    /// The supplier master's payee, or one on the org's default terms with no account to pay
    /// to (so its payments are scheduled, and held until the master knows the supplier).
    fn payee(
        &self,
        org: &OrgId,
        supplier: &p2p_processors::SupplierId,
        default_terms: PaymentTerms,
    ) -> Result<Payee, StateError> {
        Ok(self
            .get(&supplier_key(org, supplier))?
            .unwrap_or_else(|| Payee {
                supplier: supplier.clone(),
                name: String::new(),
                terms: default_terms,
                blocked: false,
                iban: None,
                bic: None,
                bank_account_changed_on: None,
            }))
    }

    /// Sets the org's run timer to the start of the day its queue next has work.
    fn arm_run_timer(&mut self, org: &OrgId, payments: &mut OrgPayments) {
        let key = StateKey::new(org, ORG_PAYMENTS);
        let wanted = payments
            .run_queue
            .next()
            .map(|date| i64::from(p2p_avro::convert::payment::days_of(date)) * DAY_MS);
        if wanted == payments.run_timer {
            return;
        }
        let timer = |due| Timer {
            due,
            owner: key.clone(),
            name: RUN.into(),
        };
        if let Some(due) = payments.run_timer {
            self.timers.cancel(&timer(due));
        }
        if let Some(due) = wanted {
            self.timers.schedule(&timer(due));
        }
        payments.run_timer = wanted;
    }
}

enum Input {
    Config(OrgConfig),
    Supplier(OrgId, Payee),
    Matched(InvoiceMatched),
    Blocked(BlockedInvoice),
    Bank(BankStatusReport),
    Po(PurchaseOrderEvent, EventTime),
}

impl Input {
    fn org(&self) -> &OrgId {
        match self {
            Input::Config(c) => &c.org,
            Input::Supplier(org, _) => org,
            Input::Matched(m) => &m.org,
            Input::Blocked(b) => &b.org,
            Input::Bank(b) => &b.org,
            Input::Po(e, _) => e.org(),
        }
    }
}

pub struct PaymentProcessor {
    topics: Topics,
    codec: Arc<Codec>,
}

impl PaymentProcessor {
    pub fn new(topics: Topics, codec: Arc<Codec>) -> Self {
        Self { topics, codec }
    }

    fn decode_input(&self, topic: &str, value: &Value) -> Result<Input, DecodeError> {
        let t = &self.topics;
        if topic == t.org_config {
            org_config(value).map(Input::Config)
        } else if topic == t.supplier_master {
            supplier_master(value).map(|(org, payee)| Input::Supplier(org, payee))
        } else if topic == t.invoice_matched {
            convert::invoice_matched(value).map(Input::Matched)
        } else if topic == t.invoice_exceptions {
            convert::blocked_invoice(value).map(Input::Blocked)
        } else if topic == t.payment_status {
            BankStatusReport::from_value(value).map(Input::Bank)
        } else {
            convert::purchase_order(value).map(|(e, at)| Input::Po(e, at))
        }
    }

    async fn process_record(
        &self,
        record: &InputRecord,
        working: &mut Working<'_>,
        output: &mut BatchOutput,
    ) -> RecordResult<()> {
        if !self
            .topics
            .payment_inputs()
            .contains(&record.topic.as_str())
        {
            return Ok(Err(not_an_input(record)));
        }
        let value = match decode(&self.codec, record).await? {
            Ok(value) => value,
            Err(dead) => return Ok(Err(dead)),
        };
        let input = match self.decode_input(&record.topic, &value) {
            Ok(input) => input,
            Err(e) => return Ok(Err((DlqReason::InvalidDocument, e.to_string()))),
        };
        if let Err(dead) = check_key(record, input.org()) {
            return Ok(Err(dead));
        }
        let at = EventTime(record.timestamp.unwrap_or_default());
        // Outputs are encoded before any state changes, so an output that cannot be written
        // leaves the state as it was (the record goes to the DLQ instead).
        let mut changes = Changes::default();
        match input {
            Input::Config(config) => {
                let org = config.org.clone();
                changes.put(StateKey::new(&org, CONFIG), &config)?;
                output.stats.count("org configs");
                // A debtor account may have arrived for invoices that were waiting for one.
                let mut payments = changes.org_payments(&org, working)?;
                let waiting = std::mem::take(&mut payments.unscheduled);
                let mut traces = std::mem::take(&mut payments.unscheduled_traces);
                changes.org_payments = Some((org.clone(), payments));
                for matched in waiting {
                    let traces = traces.remove(&matched.invoice).unwrap_or_default();
                    self.schedule(&matched, &traces, Some(&config), working, &mut changes, at)?;
                }
            }
            Input::Supplier(org, payee) => {
                changes.put(supplier_key(&org, &payee.supplier), &payee)?;
                output.stats.count("suppliers");
            }
            Input::Matched(matched) => {
                let config = working.config(&matched.org)?;
                // The payment keeps the outcome's trace and its links (its PO's): its run
                // links to them (ADR 0027).
                let traces = p2p_engine::trace::carried(&record.headers);
                self.schedule(
                    &matched,
                    &traces,
                    config.as_ref(),
                    working,
                    &mut changes,
                    at,
                )?;
            }
            Input::Blocked(blocked) => self.on_blocked(&blocked, working, &mut changes, at)?,
            Input::Bank(report) => {
                let key = payment_key(&report.org, &report.invoice);
                if changes.payment(&key, working)?.is_none() {
                    // Not a business outcome of any payment: the connector or the bank sent
                    // it to the wrong place. Kept in the DLQ with the reason.
                    return Ok(Err((
                        DlqReason::Rejected,
                        format!("no payment of invoice {} was scheduled", report.invoice),
                    )));
                }
                self.on_bank_status(&report, working, &mut changes)?
            }
            Input::Po(event, at) => self.on_po_event(&event, working, &mut changes, at)?,
        }
        let encoded = match self.encode_all(&changes.records).await {
            Ok(records) => records,
            Err(e) if e.is_transient() => return Err(ProcessError::transient(e)),
            Err(e) => {
                return Ok(Err((
                    DlqReason::Rejected,
                    format!("output not encodable: {e}"),
                )))
            }
        };
        count(&changes.records, false, output);
        output.records.extend(encoded);
        changes.apply(working)?;
        Ok(Ok(()))
    }

    /// Schedules the payment of a matched invoice, once; a matched credit memo becomes credit
    /// for the supplier's next payments in its currency, once. A newer match of an invoice
    /// already scheduled releases its block or plans it anew; an older one changes nothing.
    fn schedule(
        &self,
        matched: &InvoiceMatched,
        traces: &[String],
        config: Option<&OrgConfig>,
        working: &mut Working<'_>,
        changes: &mut Changes,
        at: EventTime,
    ) -> Result<(), StateError> {
        if matched.kind == DocumentKind::CreditMemo {
            return Self::record_credit(matched, working, changes, at);
        }
        let org = &matched.org;
        let key = payment_key(org, &matched.invoice);
        let existing: Option<Payment> = changes.payment(&key, working)?;
        let (policy, terms) = match config {
            Some(c) => (c.payment.clone(), c.default_terms),
            None => (PaymentPolicy::defaults(), PaymentTerms::DEFAULT),
        };
        let payee = working.payee(org, &matched.supplier, terms)?;
        let invoice_date = clamped_date_of(matched.invoice_date);
        let mut payments = changes.org_payments(org, working)?;
        if let Some(mut payment) = existing {
            match payment.on_matched_again(matched, invoice_date, &payee, &policy) {
                Ok(events) if events.is_empty() => {}
                Ok(events) => {
                    payment.keep_traces(traces);
                    if let Some(due) = payment.next_due() {
                        changes.enqueue(org, &mut payments, due, &matched.invoice)?;
                    }
                    changes.events(&payment, &events, at);
                    changes.put(key, &payment)?;
                }
                Err(e) => {
                    changes.memo_record(matched, ScheduleEventKind::Refused, e.to_string(), at)
                }
            }
            changes.org_payments = Some((org.clone(), payments));
            return Ok(());
        }
        let blocked_since: Option<u32> =
            changes.get(&blocked_key(org, &matched.invoice), working)?;
        if blocked_since.is_some_and(|revision| revision >= matched.revision) {
            // A newer outcome blocks it: the match that releases it schedules it.
            changes.org_payments = Some((org.clone(), payments));
            return Ok(());
        }
        match Payment::schedule(None, matched, invoice_date, &payee, &policy) {
            // Not reached: there is no payment to find here (one per invoice, ever).
            Ok(None) => {}
            Ok(Some((mut payment, mut events))) => {
                payment.keep_traces(traces);
                let po_key = po_key(org, &matched.po);
                let mut po: PoPayments = changes.get(&po_key, working)?.unwrap_or_default();
                if let Some(state) = po.state {
                    events.extend(payment.on_po_state(state));
                }
                po.invoices.insert(matched.invoice.clone());
                if let Some(due) = payment.next_due() {
                    changes.enqueue(org, &mut payments, due, &matched.invoice)?;
                }
                changes.events(&payment, &events, at);
                changes.put(po_key, &po)?;
                changes.put(key, &payment)?;
            }
            Err(e @ PaymentError::NoDebtorAccount(_)) => {
                changes.refused(matched, &e.to_string(), at);
                // Kept once per invoice: its newest match.
                let newest = match payments
                    .unscheduled
                    .iter_mut()
                    .find(|m| m.invoice == matched.invoice)
                {
                    Some(kept) if kept.revision < matched.revision => {
                        *kept = matched.clone();
                        true
                    }
                    Some(_) => false,
                    None => {
                        payments.unscheduled.push(matched.clone());
                        true
                    }
                };
                // With its traces, so that its payment keeps them once scheduled.
                if newest && traces.is_empty() {
                    payments.unscheduled_traces.remove(&matched.invoice);
                } else if newest {
                    payments
                        .unscheduled_traces
                        .insert(matched.invoice.clone(), traces.to_vec());
                }
            }
            Err(e) => changes.refused(matched, &e.to_string(), at),
        }
        changes.org_payments = Some((org.clone(), payments));
        Ok(())
    }

    /// The match now blocks an invoice: its payment, if scheduled, is held until the invoice
    /// matches again; if not, the block is remembered so that an older match read later
    /// schedules nothing. A credit memo's credit, once recorded, stays (it is ours).
    fn on_blocked(
        &self,
        blocked: &BlockedInvoice,
        working: &Working<'_>,
        changes: &mut Changes,
        at: EventTime,
    ) -> Result<(), StateError> {
        // Revision 0: a writer older than revisions, whose outcomes cannot be ordered.
        if blocked.kind == DocumentKind::CreditMemo || blocked.revision == 0 {
            return Ok(());
        }
        let key = payment_key(&blocked.org, &blocked.invoice);
        if let Some(mut payment) = changes.payment(&key, working)? {
            let events = payment.on_blocked(blocked.revision);
            changes.events(&payment, &events, at);
            if !events.is_empty() {
                if let Some(last) = changes.records.last_mut() {
                    last.detail = format!(
                        "the invoice's match blocks it: {}",
                        blocked.reasons.join(", ")
                    );
                }
            }
            changes.put(key, &payment)?;
            return Ok(());
        }
        let key = blocked_key(&blocked.org, &blocked.invoice);
        let known: Option<u32> = changes.get(&key, working)?;
        if known.is_none_or(|revision| revision < blocked.revision) {
            changes.put(key, &blocked.revision)?;
        }
        Ok(())
    }

    fn record_credit(
        memo: &InvoiceMatched,
        working: &Working<'_>,
        changes: &mut Changes,
        at: EventTime,
    ) -> Result<(), StateError> {
        let currency = memo.total.currency();
        let key = credit_key(&memo.org, &memo.supplier, currency);
        let mut credit: SupplierCredit = changes
            .get(&key, working)?
            .unwrap_or_else(|| SupplierCredit::new(currency));
        match credit.record(memo) {
            Ok(false) => {} // replayed or re-delivered: counted once
            Ok(true) => {
                let open = credit.balance().map_err(|e| StateError::Encode {
                    reason: e.to_string(),
                })?;
                changes.memo_record(
                    memo,
                    ScheduleEventKind::CreditRecorded,
                    format!(
                        "credit memo {} recorded: set off against the supplier's next payments in {currency}; open credit {}",
                        memo.number,
                        open.amount()
                    ),
                    at,
                );
                changes.put(key, &credit)?;
            }
            Err(e) => changes.memo_record(memo, ScheduleEventKind::Refused, e.to_string(), at),
        }
        Ok(())
    }

    fn on_bank_status(
        &self,
        report: &BankStatusReport,
        working: &mut Working<'_>,
        changes: &mut Changes,
    ) -> Result<(), StateError> {
        let key = payment_key(&report.org, &report.invoice);
        let Some(mut payment) = changes.payment(&key, working)? else {
            return Ok(());
        };
        match payment.on_bank_status(report.part, &report.status) {
            Ok(events) => {
                changes.events(&payment, &events, report.occurred_at);
                changes.put(key, &payment)?;
            }
            Err(e) => changes.schedule_record(
                &payment,
                ScheduleEventKind::Refused,
                Some(report.part),
                e.to_string(),
                report.occurred_at,
            ),
        }
        Ok(())
    }

    /// A dispute holds the PO's payments, its resolution releases them, a cancellation
    /// cancels every part not yet released. The state is kept for invoices still to come.
    fn on_po_event(
        &self,
        event: &PurchaseOrderEvent,
        working: &mut Working<'_>,
        changes: &mut Changes,
        at: EventTime,
    ) -> Result<(), StateError> {
        let state = match event {
            PurchaseOrderEvent::Cancelled(_) => Some(PoState::Cancelled),
            PurchaseOrderEvent::Stepped(s) if s.step == PurchaseOrderStep::Disputed => {
                Some(PoState::Disputed)
            }
            PurchaseOrderEvent::Stepped(s) if s.step == PurchaseOrderStep::DisputeResolved => None,
            _ => return Ok(()),
        };
        let key = po_key(event.org(), event.po());
        let mut po: PoPayments = changes.get(&key, working)?.unwrap_or_default();
        if po.state == Some(PoState::Cancelled) {
            return Ok(());
        }
        po.state = state;
        for invoice in &po.invoices {
            let payment_key = payment_key(event.org(), invoice);
            if let Some(mut payment) = changes.payment(&payment_key, working)? {
                // A resolved dispute: any state but Disputed lifts the hold.
                let events = payment.on_po_state(state.unwrap_or(PoState::Approved));
                changes.events(&payment, &events, at);
                changes.put(payment_key, &payment)?;
            }
        }
        changes.put(key, &po)?;
        Ok(())
    }

    /// Fires the payment runs due by `now`.
    async fn fire_runs(
        &self,
        now: i64,
        working: &mut Working<'_>,
        output: &mut BatchOutput,
    ) -> Result<(), ProcessError> {
        let execution_date =
            clamped_date_of(now.div_euclid(DAY_MS).clamp(0, i64::from(i32::MAX)) as i32);
        for timer in working.store.due_timers(now, TIMERS_PER_BATCH)? {
            working.timers.cancel(&timer);
            if timer.name != RUN {
                continue;
            }
            let Some(mut payments) = working.get::<OrgPayments>(&timer.owner)? else {
                continue;
            };
            // This timer is spent; a later one is set below if work remains.
            if payments.run_timer == Some(timer.due) {
                payments.run_timer = None;
            }
            let Some(org) = payments.org.clone() else {
                continue;
            };
            let (policy, terms) = working.policy(&org)?;
            let mut changes = Changes::default();
            changes.move_whole_queue(&org, &mut payments)?;
            let mut releases: Vec<(Release, Payment)> = Vec::new();
            let at = EventTime(now);
            // An invoice queued twice (matched again, say) is paid once.
            let mut taken: HashSet<InvoiceId> = HashSet::new();
            for slot in payments.run_queue.take_due(execution_date) {
                let slot_key = queue_key(&org, slot);
                let waiting: Option<InvoiceId> = changes.get(&slot_key, working)?;
                changes.delete(slot_key);
                let Some(invoice) = waiting.filter(|invoice| taken.insert(invoice.clone())) else {
                    continue;
                };
                let key = payment_key(&org, &invoice);
                let Some(mut payment) = changes.payment(&key, working)? else {
                    continue;
                };
                let payee = working.payee(&org, payment.supplier(), terms)?;
                let mut events = Vec::new();
                for event in payment.release(execution_date, &payee, &policy) {
                    let PaymentEvent::Released(release) = event else {
                        events.push(event);
                        continue;
                    };
                    // The supplier's open credit in this currency is taken off first.
                    let key = credit_key(&org, &release.supplier, release.amount.currency());
                    let Some(mut credit) = changes.get::<SupplierCredit>(&key, working)? else {
                        events.push(PaymentEvent::Released(release));
                        continue;
                    };
                    let set_off =
                        payment
                            .set_off(release, &mut credit)
                            .map_err(|e| StateError::Encode {
                                reason: e.to_string(),
                            })?;
                    events.extend(set_off);
                    changes.put(key, &credit)?;
                }
                for event in &events {
                    if let PaymentEvent::Released(release) = event {
                        releases.push((release.clone(), payment.clone()));
                    }
                }
                changes.events(&payment, &events, at);
                if let Some(slot) = payments.run_queue.requeue(&payment, execution_date) {
                    changes.put(queue_key(&org, slot), &invoice)?;
                }
                changes.put(key, &payment)?;
            }
            // Each run links to the traces of its payments (ADR 0027).
            let traces: HashMap<InvoiceId, Vec<String>> = releases
                .iter()
                .map(|(r, p)| (r.invoice.clone(), p.traces().to_vec()))
                .collect();
            let instructions = self.instructions(&org, releases, terms, working, at)?;
            let mut records = self
                .encode_all(&changes.records)
                .await
                .map_err(ProcessError::transient)?;
            for instruction in &instructions {
                let value = instruction
                    .to_value()
                    .map_err(|e| ProcessError::transient(CodecError::Avro(e.to_string())))?;
                let mut record = self
                    .encode(
                        &self.topics.payment_instructions,
                        &PAYMENT_INSTRUCTION,
                        org.to_string(),
                        value,
                    )
                    .await
                    .map_err(ProcessError::transient)?;
                p2p_engine::trace::add_links(
                    &mut record.headers,
                    instruction
                        .payments
                        .iter()
                        .filter_map(|p| traces.get(&p.invoice))
                        .flatten()
                        .map(String::as_str),
                );
                records.push(record);
                output.stats.count("payment runs");
            }
            count(&changes.records, true, output);
            output.records.extend(records);
            changes.org_payments = Some((org, payments));
            changes.apply(working)?;
        }
        Ok(())
    }

    /// Groups the releases of one run date into runs (org, currency, debtor account, date; at
    /// most `MAX_RUN_PAYMENTS` each, which the instruction's contract accepts).
    fn instructions(
        &self,
        org: &OrgId,
        releases: Vec<(Release, Payment)>,
        terms: PaymentTerms,
        working: &Working<'_>,
        at: EventTime,
    ) -> Result<Vec<PaymentInstructionRecord>, StateError> {
        let numbers: HashMap<(InvoiceId, u32), String> = releases
            .iter()
            .map(|(r, p)| ((r.invoice.clone(), r.part), p.number().to_string()))
            .collect();
        let runs = payment_runs(releases.into_iter().map(|(r, _)| r).collect()).map_err(|e| {
            StateError::Encode {
                reason: e.to_string(),
            }
        })?;
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            let mut payments = Vec::with_capacity(run.releases.len());
            for release in &run.releases {
                let payee = working.payee(org, &release.supplier, terms)?;
                payments.push(InstructedPayment {
                    invoice: release.invoice.clone(),
                    part: release.part,
                    supplier: release.supplier.clone(),
                    creditor_name: payee.name.clone(),
                    // Released only when the payee has an account (NoCreditorAccount holds).
                    creditor_iban: payee.iban.clone().unwrap_or_default(),
                    creditor_bic: payee.bic.clone(),
                    amount: release.amount,
                    remittance: numbers
                        .get(&(release.invoice.clone(), release.part))
                        .cloned()
                        .unwrap_or_default(),
                });
            }
            let first = payments
                .first()
                .map(InstructedPayment::end_to_end_id)
                .unwrap_or_default();
            out.push(PaymentInstructionRecord {
                run_id: format!(
                    "{}/{}/{}/{}/{first}",
                    run.org, run.currency, run.debtor_account, run.execution_date
                ),
                org: run.org,
                currency: run.currency,
                debtor_account: run.debtor_account,
                execution_date: run.execution_date,
                total: run.total,
                payments,
                created_at: at,
            });
        }
        Ok(out)
    }

    async fn encode(
        &self,
        topic: &str,
        contract: &Contract,
        key: String,
        value: Value,
    ) -> Result<OutputRecord, CodecError> {
        let payload = self.codec.encode(topic, contract, value).await?;
        Ok(OutputRecord {
            topic: topic.to_owned(),
            key: key.into_bytes(),
            payload: Some(payload),
            headers: vec![],
            timestamp: None,
        })
    }

    async fn encode_all(
        &self,
        records: &[PaymentScheduleRecord],
    ) -> Result<Vec<OutputRecord>, CodecError> {
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let value = record
                .to_value()
                .map_err(|e| CodecError::Avro(e.to_string()))?;
            out.push(
                self.encode(
                    &self.topics.payment_schedule,
                    &PAYMENT_SCHEDULE,
                    record.org.to_string(),
                    value,
                )
                .await?,
            );
        }
        Ok(out)
    }
}

/// Counts the schedule records by kind. `in_run`: they come of a payment run, where a part is
/// remitted only when credit memos paid it in full (the bank's statuses come on their own).
fn count(records: &[PaymentScheduleRecord], in_run: bool, output: &mut BatchOutput) {
    use ScheduleEventKind as K;
    for record in records {
        output.stats.count(match record.kind {
            K::Scheduled => "payments scheduled",
            K::Amended => "payments amended",
            K::Held => "holds",
            K::HoldReleased => "holds released",
            K::Released => "parts released",
            K::Remitted if in_run => "parts paid by credit",
            K::Refused => "payment refusals",
            K::Settled => "payments settled",
            K::Cancelled => "parts cancelled",
            K::CreditRecorded => "credits recorded",
            K::SetOff => "credit set off",
            K::Disbursed | K::Remitted | K::Rejected => "bank statuses",
        });
    }
}

/// What one record changes: state writes (applied only once its outputs are encoded) and the
/// schedule records it emits.
#[derive(Default)]
struct Changes {
    values: Values,
    org_payments: Option<(OrgId, OrgPayments)>,
    records: Vec<PaymentScheduleRecord>,
}

impl Changes {
    fn get<T: DeserializeOwned>(
        &self,
        key: &StateKey,
        working: &Working<'_>,
    ) -> Result<Option<T>, StateError> {
        value_in(&self.values, key).unwrap_or_else(|| working.get(key))
    }

    fn payment(
        &self,
        key: &StateKey,
        working: &Working<'_>,
    ) -> Result<Option<Payment>, StateError> {
        self.get(key, working)
    }

    fn org_payments(
        &mut self,
        org: &OrgId,
        working: &Working<'_>,
    ) -> Result<OrgPayments, StateError> {
        if let Some((o, payments)) = self.org_payments.take() {
            if &o == org {
                return Ok(payments);
            }
            self.org_payments = Some((o, payments));
        }
        let mut payments: OrgPayments = working
            .get(&StateKey::new(org, ORG_PAYMENTS))?
            .unwrap_or_default();
        self.move_whole_queue(org, &mut payments)?;
        Ok(payments)
    }

    /// Moves a queue kept whole (before ADR 0011) to a key per waiting invoice.
    fn move_whole_queue(
        &mut self,
        org: &OrgId,
        payments: &mut OrgPayments,
    ) -> Result<(), StateError> {
        for (date, invoices) in std::mem::take(&mut payments.whole_queue.due) {
            for invoice in invoices {
                self.enqueue(org, payments, date, &invoice)?;
            }
        }
        Ok(())
    }

    /// Queues `invoice` for the org's run on `on`.
    fn enqueue(
        &mut self,
        org: &OrgId,
        payments: &mut OrgPayments,
        on: NaiveDate,
        invoice: &InvoiceId,
    ) -> Result<(), StateError> {
        let slot = payments.run_queue.add(on);
        self.put(queue_key(org, slot), invoice)
    }

    fn put<T: Serialize>(&mut self, key: StateKey, value: &T) -> Result<(), StateError> {
        self.values.insert(key, Some(encode_value(value)?));
        Ok(())
    }

    fn delete(&mut self, key: StateKey) {
        self.values.insert(key, None);
    }

    fn apply(self, working: &mut Working<'_>) -> Result<(), StateError> {
        working.values.extend(self.values);
        if let Some((org, mut payments)) = self.org_payments {
            payments.org = Some(org.clone());
            working.arm_run_timer(&org, &mut payments);
            working.put(StateKey::new(&org, ORG_PAYMENTS), &payments)?;
        }
        Ok(())
    }

    fn schedule_record(
        &mut self,
        payment: &Payment,
        kind: ScheduleEventKind,
        part: Option<u32>,
        detail: String,
        at: EventTime,
    ) {
        let p = payment.parts().iter().find(|p| Some(p.number) == part);
        let currency = payment
            .parts()
            .first()
            .map(|p| p.amount.currency())
            .expect("a payment has at least one part");
        self.records.push(PaymentScheduleRecord {
            org: payment.org().clone(),
            invoice: payment.invoice().clone(),
            po: payment.po().clone(),
            supplier: payment.supplier().clone(),
            kind,
            part,
            pay_on: p.map(|p| p.pay_on),
            currency,
            amount: p.map(|p| p.amount),
            discount: None,
            rounding: None,
            hold: None,
            detail,
            occurred_at: at,
        });
    }

    /// The schedule records of a payment's events.
    fn events(&mut self, payment: &Payment, events: &[PaymentEvent], at: EventTime) {
        use ScheduleEventKind as K;
        for event in events {
            match event {
                PaymentEvent::Scheduled {
                    parts,
                    discount,
                    rounding,
                    ..
                }
                | PaymentEvent::Amended {
                    parts,
                    discount,
                    rounding,
                    ..
                } => {
                    let kind = if matches!(event, PaymentEvent::Amended { .. }) {
                        K::Amended
                    } else {
                        K::Scheduled
                    };
                    for (i, (pay_on, amount)) in parts.iter().enumerate() {
                        self.records.push(PaymentScheduleRecord {
                            org: payment.org().clone(),
                            invoice: payment.invoice().clone(),
                            po: payment.po().clone(),
                            supplier: payment.supplier().clone(),
                            kind,
                            part: Some(i as u32 + 1),
                            pay_on: Some(*pay_on),
                            currency: amount.currency(),
                            amount: Some(*amount),
                            discount: if i == 0 { *discount } else { None },
                            rounding: if i == 0 { *rounding } else { None },
                            hold: None,
                            detail: format!("part {} of {}", i + 1, parts.len()),
                            occurred_at: at,
                        });
                    }
                }
                PaymentEvent::Held(hold) | PaymentEvent::HoldReleased(hold) => {
                    let kind = if matches!(event, PaymentEvent::Held(_)) {
                        K::Held
                    } else {
                        K::HoldReleased
                    };
                    let detail = if kind == K::Held {
                        format!("held: {}", hold.describe())
                    } else {
                        format!("hold released: no longer the case that {}", hold.describe())
                    };
                    self.schedule_record(payment, kind, None, detail, at);
                    if let Some(last) = self.records.last_mut() {
                        last.hold = Some(hold.symbol().to_owned());
                    }
                }
                PaymentEvent::Released(release) => {
                    self.schedule_record(
                        payment,
                        K::Released,
                        Some(release.part),
                        format!("in the run of {}", release.execution_date),
                        at,
                    );
                    if let Some(last) = self.records.last_mut() {
                        last.pay_on = Some(release.execution_date);
                        // What goes to the bank: the part less any credit set off.
                        last.amount = Some(release.amount);
                    }
                }
                PaymentEvent::CreditSetOff { part, offsets } => {
                    let memos: Vec<String> = offsets
                        .iter()
                        .map(|o| format!("{} ({})", o.number, o.amount.amount()))
                        .collect();
                    self.schedule_record(
                        payment,
                        K::SetOff,
                        Some(*part),
                        format!("credit memos set off: {}", memos.join(", ")),
                        at,
                    );
                    if let Some(last) = self.records.last_mut() {
                        last.amount = offsets_total(offsets);
                    }
                }
                PaymentEvent::PartSetOff(part) => self.schedule_record(
                    payment,
                    K::Remitted,
                    Some(*part),
                    "paid in full by credit memos; nothing for the bank".into(),
                    at,
                ),
                PaymentEvent::PartDisbursed(part) => {
                    self.schedule_record(payment, K::Disbursed, Some(*part), "accepted".into(), at)
                }
                PaymentEvent::PartRemitted(part) => {
                    self.schedule_record(payment, K::Remitted, Some(*part), "settled".into(), at)
                }
                PaymentEvent::PartRejected { part, reason } => {
                    self.schedule_record(payment, K::Rejected, Some(*part), reason.clone(), at)
                }
                PaymentEvent::Settled { .. } => self.schedule_record(
                    payment,
                    K::Settled,
                    None,
                    "every part remitted".into(),
                    at,
                ),
                PaymentEvent::PartCancelled(part) => self.schedule_record(
                    payment,
                    K::Cancelled,
                    Some(*part),
                    "its purchase order was cancelled".into(),
                    at,
                ),
            }
        }
    }

    /// A matched invoice that could not be scheduled.
    fn refused(&mut self, matched: &InvoiceMatched, why: &str, at: EventTime) {
        self.memo_record(
            matched,
            ScheduleEventKind::Refused,
            format!("not scheduled: {why}; kept until it can be"),
            at,
        );
    }

    /// A record about a matched document itself, for its whole amount (no part), in the
    /// currency's minor unit as everything on `payment-schedule` is.
    fn memo_record(
        &mut self,
        matched: &InvoiceMatched,
        kind: ScheduleEventKind,
        detail: String,
        at: EventTime,
    ) {
        let (amount, rounding) = p2p_processors::payment::payable(matched.total);
        self.records.push(PaymentScheduleRecord {
            org: matched.org.clone(),
            invoice: matched.invoice.clone(),
            po: matched.po.clone(),
            supplier: matched.supplier.clone(),
            kind,
            part: None,
            pay_on: None,
            currency: matched.total.currency(),
            amount: Some(amount),
            discount: None,
            rounding,
            hold: None,
            detail,
            occurred_at: at,
        });
    }
}

/// What credit memos paid of one part, for its record (`None` only if it would overflow).
fn offsets_total(offsets: &[Offset]) -> Option<p2p_processors::Money> {
    let first = offsets.first()?;
    offsets
        .iter()
        .skip(1)
        .try_fold(first.amount, |sum, o| sum.checked_add(o.amount).ok())
}

impl Topology for PaymentProcessor {
    fn name(&self) -> &'static str {
        PROCESSOR
    }

    fn input_topics(&self) -> Vec<String> {
        self.topics
            .payment_inputs()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    fn has_timers(&self) -> bool {
        true
    }

    async fn process(
        &self,
        records: &[InputRecord],
        now: i64,
        store: &Store,
    ) -> Result<BatchOutput, ProcessError> {
        let mut working = Working {
            store,
            values: HashMap::new(),
            timers: StoreBatch::default(),
        };
        let mut output = BatchOutput::default();
        for record in records {
            let produced_before = output.records.len();
            if let Err((reason, error)) = self
                .process_record(record, &mut working, &mut output)
                .await?
            {
                output.dead_letter(record, reason, &error, PROCESSOR);
            }
            output.stamp_since(produced_before, record);
        }
        self.fire_runs(now, &mut working, &mut output).await?;
        let Working { values, timers, .. } = working;
        let mut state = timers;
        for (key, encoded) in values {
            match encoded {
                Some(encoded) => state.put_encoded(&key, encoded),
                None => state.delete(&key),
            }
        }
        output.state = state;
        Ok(output)
    }
}

#[cfg(test)]
mod tests;
