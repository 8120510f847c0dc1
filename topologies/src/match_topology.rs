//! The `match` topology: `po-events`, `grn-events` and `invoice-events` in (keyed by org_id,
//! co-partitioned), with the `org-config` and `supplier-master` tables (wait limits, tolerance
//! keys); per-PO match state in RocksDB, `invoice-matched` and `invoice-exceptions` out,
//! undecodable or invalid records to `<input>.dlq`.
//!
//! [`MatchProcessor::process_batch`] is the whole per-batch step without Kafka: records in,
//! output records and one state write batch out. The runtime does the I/O around it.

use crate::config::Topics;
use crate::dlq::DlqReason;
use crate::record::{InputRecord, OutputRecord};
use crate::stats::StatsSnapshot;
use crate::topology::{
    check_key, decode, not_an_input, BatchOutput, ProcessError, RecordResult, Topology,
};
use p2p_avro::contracts::{AUDIT_EVENT, INVOICE_EXCEPTION, INVOICE_MATCHED, INVOICE_STATUS};
use p2p_avro::convert;
use p2p_avro::convert::payment::supplier_tolerances;
use p2p_avro::convert::procurement::{org_config, AuditKind, AuditRecord};
use p2p_avro::{Codec, CodecError};
use p2p_processors::approval::ApprovalPolicy;
use p2p_processors::decisions::InvoiceDecision;
use p2p_processors::duplicates::{DuplicatePolicy, DuplicateRegister, InvoiceFacts, LookAlikes};
use p2p_processors::org_config::OrgConfig;
use p2p_processors::tolerance_keys::{EffectiveTolerances, ToleranceKeys};
use p2p_processors::{
    DecisionOutcome, DocumentRef, EventTime, GoodsReceiptId, InvoiceId, LookAlike, MatchContext,
    MatchInput, MatchOutput, OrgId, PurchaseOrderEvent, PurchaseOrderId, PurchaseOrderMatch,
    PurchaseOrderStep, SupplierId, Tolerance, UserId,
};
use p2p_state::{StateError, StateKey, Store, StoreBatch, Timer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Name of this processor in DLQ headers and logs.
pub const PROCESSOR: &str = "match";

#[derive(Clone, Copy)]
enum InputKind {
    PurchaseOrder,
    GoodsReceipt,
    Invoice,
    OrgConfig,
    SupplierMaster,
    Decision,
    /// Who acted on a PO's approval: never the one to decide on its invoices.
    ApprovalDecision,
}

/// The state entity of an org's configuration (no PO's entity looks like it: ADR 0014).
const CONFIG_ENTITY: &str = "config/org";
/// The state key of a supplier's tolerance keys: entity `tol/<supplier id>`.
fn supplier_tolerances_key(org: &OrgId, supplier: &SupplierId) -> StateKey {
    StateKey::new(org, &format!("tol/{}", supplier.key_segment()))
}
/// Timer names of pending invoices' wait limits: `pending/<invoice id>`.
const PENDING_TIMER: &str = "pending/";
/// Timer names of receipts waiting for their PO: `receipt/<grn id>`.
const RECEIPT_TIMER: &str = "receipt/";
/// Timer names of people's decisions waiting for their invoice: `decision/<decision id>`.
const DECISION_TIMER: &str = "decision/";
/// The audit action of a person's decision on an invoice (taken or refused).
const DECIDE_INVOICE: &str = "DECIDE_INVOICE";
const DAY_MS: i64 = 86_400_000;
/// Most wait limits expired in one batch; the rest in the next.
const TIMERS_PER_BATCH: usize = 1_000;

/// The counter family of invoice outcomes (`matched`, `exception`, `pending`).
pub const INVOICE_OUTCOMES: &str = "invoice_outcomes";
/// The counter family of exception reasons (`PRICE_VARIANCE`, `DUPLICATE`, ...).
pub const EXCEPTION_REASONS: &str = "invoice_exception_reasons";

const COUNTERS: [p2p_engine::CounterFamily; 2] = [
    p2p_engine::CounterFamily {
        family: INVOICE_OUTCOMES,
        name: "p2p_invoice_outcomes_total",
        help: "Match outcomes: matched, exception, pending",
        label: "outcome",
    },
    p2p_engine::CounterFamily {
        family: EXCEPTION_REASONS,
        name: "p2p_invoice_exception_reasons_total",
        help: "Exception reasons reported, per reason",
        label: "reason",
    },
];

/// Builds the match topology's runtime, a `Runtime<MatchProcessor>`: `MatchRuntime::for_match`,
/// as the CLI, the tests and the Kafka Streams benchmark's `match-only` start it.
pub struct MatchRuntime;

impl MatchRuntime {
    pub fn for_match(
        config: crate::MatchConfig,
        codec: Arc<Codec>,
    ) -> Result<p2p_engine::Runtime<MatchProcessor>, p2p_engine::RuntimeError> {
        let processor = MatchProcessor::new(config.topics.clone(), config.tolerance, codec);
        p2p_engine::Runtime::new(config.runtime, processor)
    }
}

pub struct MatchProcessor {
    topics: Topics,
    tolerance: Tolerance,
    codec: Arc<Codec>,
    /// The latest record timestamp processed: the clock of pending invoices' wait limits.
    stream_time: AtomicI64,
}

/// The states a batch touches: each read once from the store, written once at the end.
/// Per-PO match states and suppliers' duplicate registers share the store (and so the write
/// batch): a register entry's entity is `dup/<supplier id>/<entry>`, which no PO id can be.
struct Working<'s> {
    store: &'s Store,
    states: HashMap<StateKey, PurchaseOrderMatch>,
    /// Duplicate register entries read or registered: the first document with each.
    register_entries: HashMap<StateKey, Option<InvoiceId>>,
    /// The entries this batch registered: the only ones it writes (an entry, once there,
    /// never changes).
    registered: Vec<StateKey>,
    /// Whole registers, as stored before ADR 0011 under `dup/<supplier id>`: read for entries
    /// not stored on their own, never written.
    whole_registers: HashMap<StateKey, Option<DuplicateRegister>>,
    configs: HashMap<StateKey, Option<OrgConfig>>,
    /// Suppliers' own tolerance keys; `None`: the supplier has none (the org's apply).
    supplier_keys: HashMap<StateKey, Option<ToleranceKeys>>,
    /// The configs and supplier keys a record of this batch set: the only ones written (the
    /// others were merely read, and writing them back would put each on the changelog again).
    published: std::collections::HashSet<StateKey>,
    timers: StoreBatch,
}

impl Working<'_> {
    fn config(&mut self, org: &OrgId) -> Result<Option<&OrgConfig>, StateError> {
        let key = StateKey::new(org, CONFIG_ENTITY);
        if !self.configs.contains_key(&key) {
            let config = self.store.get(&key)?;
            self.configs.insert(key.clone(), config);
        }
        Ok(self.configs[&key].as_ref())
    }

    /// The org's tolerance keys, if it published any.
    fn tolerances(&mut self, org: &OrgId) -> Result<Option<ToleranceKeys>, StateError> {
        Ok(self
            .config(org)?
            .and_then(|c| c.tolerances.as_deref().copied()))
    }

    fn supplier_tolerances(
        &mut self,
        org: &OrgId,
        supplier: &SupplierId,
    ) -> Result<Option<ToleranceKeys>, StateError> {
        let key = supplier_tolerances_key(org, supplier);
        if !self.supplier_keys.contains_key(&key) {
            let keys = self.store.get::<Option<ToleranceKeys>>(&key)?.flatten();
            self.supplier_keys.insert(key.clone(), keys);
        }
        Ok(self.supplier_keys[&key])
    }

    fn existing(&self, key: &StateKey) -> Result<Option<PurchaseOrderMatch>, StateError> {
        match self.states.get(key) {
            Some(state) => Ok(Some(state.clone())),
            None => self.store.get(key),
        }
    }

    /// The part of `supplier`'s duplicate register that checking `facts` reads.
    fn register(
        &mut self,
        org: &OrgId,
        facts: &InvoiceFacts,
        policy: &DuplicatePolicy,
    ) -> Result<DuplicateRegister, StateError> {
        let mut entries = Vec::new();
        for entry in DuplicateRegister::keys(facts, policy) {
            let key = register_entry_key(org, &facts.supplier, &entry);
            if !self.register_entries.contains_key(&key) {
                let first = match self.store.get::<InvoiceId>(&key)? {
                    Some(first) => Some(first),
                    None => self.whole_register_entry(org, &facts.supplier, &entry)?,
                };
                self.register_entries.insert(key.clone(), first);
            }
            if let Some(first) = &self.register_entries[&key] {
                entries.push((entry, first.clone()));
            }
        }
        Ok(DuplicateRegister::with_entries(entries))
    }

    /// `entry` of the supplier's register as stored whole before ADR 0011 (`whole_registers`).
    fn whole_register_entry(
        &mut self,
        org: &OrgId,
        supplier: &SupplierId,
        entry: &str,
    ) -> Result<Option<InvoiceId>, StateError> {
        let key = StateKey::new(org, &format!("dup/{}", supplier.key_segment()));
        if !self.whole_registers.contains_key(&key) {
            let whole = self.store.get::<DuplicateRegister>(&key)?;
            self.whole_registers.insert(key.clone(), whole);
        }
        Ok(self.whole_registers[&key]
            .as_ref()
            .and_then(|whole| whole.first_with(entry))
            .cloned())
    }

    fn load(
        &mut self,
        key: &StateKey,
        org: &OrgId,
        po: &PurchaseOrderId,
    ) -> Result<PurchaseOrderMatch, StateError> {
        if let Some(state) = self.states.get(key) {
            return Ok(state.clone());
        }
        Ok(self
            .store
            .get(key)?
            .unwrap_or_else(|| PurchaseOrderMatch::new(org.clone(), po.clone())))
    }
}

/// Where one entry of `supplier`'s duplicate register is stored.
fn register_entry_key(org: &OrgId, supplier: &SupplierId, entry: &str) -> StateKey {
    StateKey::new(org, &format!("dup/{}/{entry}", supplier.key_segment()))
}

impl MatchProcessor {
    pub fn new(topics: Topics, tolerance: Tolerance, codec: Arc<Codec>) -> Self {
        Self {
            topics,
            tolerance,
            codec,
            stream_time: AtomicI64::new(i64::MIN),
        }
    }

    fn kind_of(&self, topic: &str) -> Option<InputKind> {
        if topic == self.topics.po_events {
            Some(InputKind::PurchaseOrder)
        } else if topic == self.topics.grn_events {
            Some(InputKind::GoodsReceipt)
        } else if topic == self.topics.invoice_events {
            Some(InputKind::Invoice)
        } else if topic == self.topics.org_config {
            Some(InputKind::OrgConfig)
        } else if topic == self.topics.supplier_master {
            Some(InputKind::SupplierMaster)
        } else if topic == self.topics.invoice_decisions {
            Some(InputKind::Decision)
        } else if topic == self.topics.approval_decisions {
            Some(InputKind::ApprovalDecision)
        } else {
            None
        }
    }

    /// Processes `records` in order against `store`, then expires the pending invoices whose
    /// wait limit stream time has passed.
    pub async fn process_batch(
        &self,
        records: &[InputRecord],
        store: &Store,
    ) -> Result<BatchOutput, ProcessError> {
        let mut working = Working {
            store,
            states: HashMap::new(),
            register_entries: HashMap::new(),
            registered: Vec::new(),
            whole_registers: HashMap::new(),
            configs: HashMap::new(),
            supplier_keys: HashMap::new(),
            published: std::collections::HashSet::new(),
            timers: StoreBatch::default(),
        };
        let mut output = BatchOutput::default();
        output.records.reserve(records.len());
        for record in records {
            let produced_before = output.records.len();
            if let Err((reason, error)) = self
                .process_record(record, &mut working, &mut output.records, &mut output.stats)
                .await?
            {
                output.dead_letter(record, reason, &error, PROCESSOR);
            }
            output.stamp_since(produced_before, record);
        }
        // Wait limits run on stream time (the latest event time seen), so replaying the same
        // records always expires the same invoices.
        let batch_time = records.iter().filter_map(|r| r.timestamp).max();
        if let Some(t) = batch_time {
            self.stream_time.fetch_max(t, Ordering::Relaxed);
        }
        self.expire_pending(&mut working, &mut output).await?;
        let Working {
            states,
            register_entries,
            registered,
            configs,
            supplier_keys,
            published,
            timers,
            ..
        } = working;
        output.state = timers;
        for (key, value) in &states {
            output.state.put(key, value)?;
        }
        for key in &registered {
            if let Some(Some(first)) = register_entries.get(key) {
                output.state.put(key, first)?;
            }
        }
        for key in &published {
            if let Some(Some(config)) = configs.get(key) {
                output.state.put(key, config)?;
            } else if let Some(keys) = supplier_keys.get(key) {
                output.state.put(key, keys)?;
            }
        }
        Ok(output)
    }

    /// `Ok(Err(..))`: this record goes to the DLQ; `Err(..)`: the batch must be retried.
    async fn process_record(
        &self,
        record: &InputRecord,
        working: &mut Working<'_>,
        out: &mut Vec<OutputRecord>,
        stats: &mut StatsSnapshot,
    ) -> RecordResult<()> {
        let Some(kind) = self.kind_of(&record.topic) else {
            return Ok(Err(not_an_input(record)));
        };
        let value = match decode(&self.codec, record).await? {
            Ok(value) => value,
            Err(dead) => return Ok(Err(dead)),
        };
        let decoded = match kind {
            InputKind::ApprovalDecision => {
                let decided = match convert::procurement::approval_decision(&value) {
                    Ok((decided, _)) => decided,
                    Err(e) => return Ok(Err((DlqReason::InvalidDocument, e.to_string()))),
                };
                let convert::procurement::Decided::PurchaseOrder(decided) = decided else {
                    return Ok(Ok(()));
                };
                if let Err(dead) = check_key(record, &decided.org) {
                    return Ok(Err(dead));
                }
                let key = StateKey::new(&decided.org, &decided.po.state_entity());
                let mut state = working.load(&key, &decided.org, &decided.po)?;
                state.note_requester_or_approver(&decided.decision.approver);
                working.states.insert(key, state);
                return Ok(Ok(()));
            }
            InputKind::Decision => {
                let (org, decision, at) = match convert::status::invoice_decision(&value) {
                    Ok(found) => found,
                    Err(e) => return Ok(Err((DlqReason::InvalidDocument, e.to_string()))),
                };
                if let Err(dead) = check_key(record, &org) {
                    return Ok(Err(dead));
                }
                let key = StateKey::new(&org, &decision.po.state_entity());
                let mut state = working.load(&key, &org, &decision.po)?;
                let context = self.context(working, &org, state.supplier().cloned())?;
                let mut encoded = Vec::new();
                let parked = match self
                    .decide(
                        &mut state,
                        &decision,
                        at,
                        &context,
                        working,
                        &mut encoded,
                        stats,
                    )
                    .await?
                {
                    Ok(parked) => parked,
                    Err(e) => return Ok(Err((DlqReason::Rejected, e.to_string()))),
                };
                if parked {
                    let days = working
                        .config(&org)?
                        .map_or(OrgConfig::DEFAULT_PENDING_WAIT_DAYS, |c| {
                            c.pending_wait_days
                        });
                    working.timers.schedule(&Timer {
                        due: at.0 + i64::from(days) * DAY_MS,
                        owner: key.clone(),
                        name: format!("{DECISION_TIMER}{}", decision.id),
                    });
                }
                working.states.insert(key, state);
                out.extend(encoded);
                return Ok(Ok(()));
            }
            InputKind::PurchaseOrder => convert::purchase_order_event(&value),
            InputKind::GoodsReceipt => convert::goods_receipt_event(&value),
            InputKind::Invoice => convert::invoice_event(&value),
            InputKind::OrgConfig => {
                let config = match org_config(&value) {
                    Ok(config) => config,
                    Err(e) => return Ok(Err((DlqReason::InvalidDocument, e.to_string()))),
                };
                if let Err(dead) = check_key(record, &config.org) {
                    return Ok(Err(dead));
                }
                let key = StateKey::new(&config.org, CONFIG_ENTITY);
                working.published.insert(key.clone());
                working.configs.insert(key, Some(config));
                return Ok(Ok(()));
            }
            InputKind::SupplierMaster => {
                let (org, supplier, keys) = match supplier_tolerances(&value) {
                    Ok(found) => found,
                    Err(e) => return Ok(Err((DlqReason::InvalidDocument, e.to_string()))),
                };
                if let Err(dead) = check_key(record, &org) {
                    return Ok(Err(dead));
                }
                let key = supplier_tolerances_key(&org, &supplier);
                working.published.insert(key.clone());
                working.supplier_keys.insert(key, keys);
                return Ok(Ok(()));
            }
        };
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => return Ok(Err((DlqReason::InvalidDocument, e.to_string()))),
        };
        let org = decoded.input.org();
        if let Err(dead) = check_key(record, org) {
            return Ok(Err(dead));
        }
        // Approval and lifecycle steps are the procurement topology's; nothing to match, but
        // for a close: the PO takes no more invoices.
        match &decoded.input {
            // Who asked for it: never the one to decide on its invoices.
            MatchInput::PurchaseOrder(PurchaseOrderEvent::Submitted(submitted)) => {
                let key = StateKey::new(org, &submitted.po.state_entity());
                let mut state = working.load(&key, org, &submitted.po)?;
                state.note_requester_or_approver(&submitted.requester);
                working.states.insert(key, state);
                return Ok(Ok(()));
            }
            MatchInput::PurchaseOrder(PurchaseOrderEvent::Stepped(s))
                if s.step != PurchaseOrderStep::Closed =>
            {
                return Ok(Ok(()))
            }
            _ => {}
        }

        let key = StateKey::new(org, &decoded.input.po().state_entity());
        // Work on copies: if an output cannot be encoded, the state stays as it was.
        let mut state = working.load(&key, org, decoded.input.po())?;
        // The PO keeps its issue event's trace: its invoices' outcomes link to it (ADR 0027).
        if let MatchInput::PurchaseOrder(PurchaseOrderEvent::Issued(_)) = &decoded.input {
            if let Some(trace) = p2p_engine::trace::traceparent_of(&record.headers) {
                state.keep_trace(trace);
            }
        }
        // The supplier whose tolerance keys narrow the org's: the invoice's, or for what
        // re-checks the PO's invoices (receipts, a change order) the PO's.
        let supplier = match &decoded.input {
            MatchInput::Invoice(invoice) => Some(&invoice.supplier),
            MatchInput::PurchaseOrder(PurchaseOrderEvent::Issued(issued)) => Some(&issued.supplier),
            _ => state.supplier(),
        };
        let mut context = self.context(working, org, supplier.cloned())?;
        // An invoice is first checked against its supplier's earlier invoices.
        let mut register = None;
        if let MatchInput::Invoice(invoice) = &decoded.input {
            let facts = InvoiceFacts {
                invoice: invoice.invoice.clone(),
                supplier: invoice.supplier.clone(),
                po: invoice.po.clone(),
                kind: invoice.kind,
                number: invoice.number.clone(),
                gross: invoice.total,
                invoice_date: invoice.invoice_date,
            };
            let policy = DuplicatePolicy {
                look_alikes: working
                    .config(org)?
                    .map_or(LookAlikes::default(), |c| c.look_alikes),
            };
            let mut seen = working.register(org, &facts, &policy)?;
            let found = seen.check(&facts, &policy);
            context.duplicate_of = found.duplicate_of;
            context.look_alike = found.look_alike_of.map(|of| LookAlike {
                of,
                hold: policy.look_alikes == LookAlikes::Hold,
            });
            register = Some((facts.supplier, seen));
        }

        let outputs = match state.apply(&decoded.input, decoded.occurred_at, &context) {
            Ok(outputs) => outputs,
            Err(e) => return Ok(Err((DlqReason::Rejected, e.to_string()))),
        };
        let mut encoded = Vec::with_capacity(outputs.len());
        let mut batch_stats = StatsSnapshot::default();
        for output in &outputs {
            match self
                .encode(output, decoded.occurred_at, state.trace(), &mut batch_stats)
                .await
            {
                Ok(Some(r)) => encoded.push(r),
                Ok(None) => {}
                Err(e) if e.is_transient() => return Err(ProcessError::transient(e)),
                Err(e) => {
                    return Ok(Err((
                        DlqReason::Rejected,
                        format!("output not encodable: {e}"),
                    )))
                }
            }
        }
        // An invoice that arrives and waits, or a receipt that comes before its PO, gets the
        // org's wait limit, counted from its event time.
        let waiting = match &decoded.input {
            MatchInput::Invoice(invoice)
                if outputs.iter().any(
                    |o| matches!(o, MatchOutput::Pending(p) if p.invoice == invoice.invoice),
                ) =>
            {
                Some(format!("{PENDING_TIMER}{}", invoice.invoice))
            }
            MatchInput::GoodsReceipt(receipt) if !state.po_known() => {
                Some(format!("{RECEIPT_TIMER}{}", receipt.grn))
            }
            _ => None,
        };
        if let Some(name) = waiting {
            let days = working
                .config(org)?
                .map_or(OrgConfig::DEFAULT_PENDING_WAIT_DAYS, |c| {
                    c.pending_wait_days
                });
            working.timers.schedule(&Timer {
                due: decoded.occurred_at.0 + i64::from(days) * DAY_MS,
                owner: key.clone(),
                name,
            });
        }
        // Decisions people took before the invoice came are taken now.
        if let MatchInput::Invoice(invoice) = &decoded.input {
            // Their wait-limit timers, when they fire, find nothing parked and do nothing.
            for decision in state.take_early_decisions(&invoice.invoice) {
                if let Err(e) = self
                    .decide(
                        &mut state,
                        &decision,
                        decoded.occurred_at,
                        &context,
                        working,
                        &mut encoded,
                        stats,
                    )
                    .await?
                {
                    return Ok(Err((DlqReason::Rejected, e.to_string())));
                }
            }
        }
        working.states.insert(key, state);
        if let Some((supplier, seen)) = register {
            for (entry, first) in seen.entries() {
                let key = register_entry_key(org, &supplier, entry);
                let known = working
                    .register_entries
                    .insert(key.clone(), Some(first.clone()));
                if known.flatten().is_none() {
                    working.registered.push(key);
                }
            }
        }
        out.extend(encoded);
        stats.merge(&batch_stats);
        Ok(Ok(()))
    }

    /// Turns every invoice still pending past its org's wait limit (on stream time) into an
    /// exception naming what it waited for.
    async fn expire_pending(
        &self,
        working: &mut Working<'_>,
        output: &mut BatchOutput,
    ) -> Result<(), ProcessError> {
        let now = self.stream_time.load(Ordering::Relaxed);
        if now == i64::MIN {
            return Ok(());
        }
        for timer in working.store.due_timers(now, TIMERS_PER_BATCH)? {
            working.timers.cancel(&timer);
            let Some(mut state) = working.existing(&timer.owner)? else {
                continue;
            };
            if let Some(id) = timer.name.strip_prefix(DECISION_TIMER) {
                if let Some(refused) = state.expire_decision(id) {
                    let (org, po) = (state.org().clone(), state.po().clone());
                    let audit = self.po_audit(
                        &org,
                        &po,
                        AuditKind::Refused,
                        DECIDE_INVOICE,
                        None,
                        format!("decision {id} refused: {refused}"),
                        EventTime(timer.due),
                    );
                    let payload = self
                        .codec
                        .encode(&self.topics.audit_events, &AUDIT_EVENT, audit)
                        .await
                        .map_err(ProcessError::transient)?;
                    output.records.push(OutputRecord {
                        topic: self.topics.audit_events.clone(),
                        key: org.as_str().as_bytes().to_vec(),
                        payload: Some(payload),
                        headers: vec![],
                        timestamp: None,
                    });
                    output.stats.count("decisions refused");
                    working.states.insert(timer.owner.clone(), state);
                }
                continue;
            }
            let outputs = if let Some(invoice) = timer.name.strip_prefix(PENDING_TIMER) {
                match InvoiceId::parse(invoice) {
                    Ok(invoice) => state.expire_pending(&invoice, EventTime(timer.due)),
                    Err(_) => continue,
                }
            } else if let Some(grn) = timer.name.strip_prefix(RECEIPT_TIMER) {
                match GoodsReceiptId::parse(grn) {
                    Ok(grn) => state.expire_receipt(&grn),
                    Err(_) => continue,
                }
            } else {
                continue;
            };
            let mut encoded = Vec::with_capacity(outputs.len());
            for o in &outputs {
                match self
                    .encode(o, EventTime(timer.due), state.trace(), &mut output.stats)
                    .await
                {
                    Ok(Some(r)) => encoded.push(r),
                    Ok(None) => {}
                    // Our own exception always fits its schema; anything else is retried.
                    Err(e) => return Err(ProcessError::transient(e)),
                }
            }
            output.records.extend(encoded);
            if !outputs.is_empty() {
                output.stats.count("wait limits expired");
                working.states.insert(timer.owner.clone(), state);
            }
        }
        Ok(())
    }

    /// What matching a document of `org`'s needs besides the PO's state: the tolerance keys
    /// in force (the org's, narrowed by `supplier`'s).
    fn context(
        &self,
        working: &mut Working<'_>,
        org: &OrgId,
        supplier: Option<SupplierId>,
    ) -> Result<MatchContext, StateError> {
        let supplier = match supplier {
            Some(supplier) => working.supplier_tolerances(org, &supplier)?,
            None => None,
        };
        Ok(MatchContext {
            receipt_tolerance: self.tolerance,
            tolerances: EffectiveTolerances {
                org: working
                    .tolerances(org)?
                    .unwrap_or_else(|| ToleranceKeys::blocking_past(self.tolerance.as_percent())),
                supplier,
            },
            duplicate_of: None,
            look_alike: None,
        })
    }

    /// Takes a person's decision on `state`'s invoice, encoding what it changed and its audit
    /// entry (taken or refused) into `out`. `Ok(true)` if it waits for its invoice; the inner
    /// `Err` if the match cannot decide it (the record is dead-lettered, as a document the
    /// match rejects is, not retried forever).
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        state: &mut PurchaseOrderMatch,
        decision: &InvoiceDecision,
        at: EventTime,
        context: &MatchContext,
        working: &mut Working<'_>,
        out: &mut Vec<OutputRecord>,
        stats: &mut StatsSnapshot,
    ) -> Result<Result<bool, p2p_processors::MatchError>, ProcessError> {
        let org = state.org().clone();
        let approval = working.config(&org)?.map(|c| c.approval.clone());
        let authority_needed = |total: p2p_processors::Money| match &approval {
            Some(policy) => policy.level_for(total),
            None => ApprovalPolicy::defaults(total.currency()).level_for(total),
        };
        let outcome = match state.decide(decision, authority_needed, at, context) {
            Ok(outcome) => outcome,
            Err(e) => return Ok(Err(e)),
        };
        let (kind, detail, outputs) = match outcome {
            DecisionOutcome::Parked => return Ok(Ok(true)),
            DecisionOutcome::Repeated => return Ok(Ok(false)),
            DecisionOutcome::Applied(outputs) => {
                stats.count("decisions taken");
                (
                    AuditKind::InvoiceDecided,
                    format!("invoice {}: {}", decision.invoice, decision.describe()),
                    outputs,
                )
            }
            DecisionOutcome::Refused(why) => {
                stats.count("decisions refused");
                (
                    AuditKind::Refused,
                    format!(
                        "decision {} on invoice {} refused: {why}",
                        decision.id, decision.invoice
                    ),
                    vec![],
                )
            }
        };
        for output in &outputs {
            if let Some(record) = self
                .encode(output, at, state.trace(), stats)
                .await
                .map_err(ProcessError::transient)?
            {
                out.push(record);
            }
        }
        let audit = self.po_audit(
            &org,
            state.po(),
            kind,
            DECIDE_INVOICE,
            Some(&decision.by),
            detail,
            at,
        );
        let payload = self
            .codec
            .encode(&self.topics.audit_events, &AUDIT_EVENT, audit)
            .await
            .map_err(ProcessError::transient)?;
        out.push(OutputRecord {
            topic: self.topics.audit_events.clone(),
            key: org.as_str().as_bytes().to_vec(),
            payload: Some(payload),
            headers: vec![],
            timestamp: None,
        });
        Ok(Ok(false))
    }

    /// An entry on the audit trail of `po`: `action` `RECEIVE` for its receipts,
    /// `DECIDE_INVOICE` for people's decisions on its invoices.
    #[allow(clippy::too_many_arguments)]
    fn po_audit(
        &self,
        org: &OrgId,
        po: &PurchaseOrderId,
        kind: AuditKind,
        action: &str,
        actor: Option<&UserId>,
        detail: String,
        at: EventTime,
    ) -> apache_avro::types::Value {
        AuditRecord {
            org: org.clone(),
            entity: DocumentRef::PurchaseOrder(po.clone()),
            kind,
            action: action.to_owned(),
            from_state: None,
            to_state: None,
            version: 0,
            actor: actor.cloned(),
            detail,
            occurred_at: at,
        }
        .to_value()
    }

    fn receipt_audit(
        &self,
        org: &OrgId,
        po: &PurchaseOrderId,
        kind: AuditKind,
        detail: String,
        at: EventTime,
    ) -> apache_avro::types::Value {
        self.po_audit(org, po, kind, "RECEIVE", None, detail, at)
    }

    /// `output` as a record; one of an invoice links to its PO's trace, `po_trace`.
    async fn encode(
        &self,
        output: &MatchOutput,
        at: EventTime,
        po_trace: Option<&str>,
        stats: &mut StatsSnapshot,
    ) -> Result<Option<OutputRecord>, CodecError> {
        let mut headers = Vec::new();
        p2p_engine::trace::add_links(&mut headers, po_trace);
        let (topic, contract, org, value) = match output {
            MatchOutput::Matched(m) => {
                stats.count_labelled(INVOICE_OUTCOMES, "matched");
                let value = convert::invoice_matched_value(m)
                    .map_err(|e| CodecError::Avro(e.to_string()))?;
                (
                    &self.topics.invoice_matched,
                    &INVOICE_MATCHED,
                    &m.org,
                    value,
                )
            }
            MatchOutput::Exception(e) => {
                stats.count_labelled(INVOICE_OUTCOMES, "exception");
                for reason in &e.reasons {
                    stats.count_labelled(EXCEPTION_REASONS, reason.kind().symbol());
                }
                let value = convert::invoice_exception_value(e)
                    .map_err(|e| CodecError::Avro(e.to_string()))?;
                (
                    &self.topics.invoice_exceptions,
                    &INVOICE_EXCEPTION,
                    &e.org,
                    value,
                )
            }
            // The PO's audit trail: a receipt in discrepancy blocks its invoices.
            MatchOutput::ReceiptDiscrepancy(d) => {
                stats.count("receipt discrepancies");
                let lines: Vec<String> = d
                    .lines
                    .iter()
                    .map(|l| {
                        format!(
                            "line {}: received {}, expected {}",
                            l.line, l.received, l.expected
                        )
                    })
                    .collect();
                let detail = format!(
                    "goods receipt {} in discrepancy ({}); the PO's invoices wait until it is resolved",
                    d.grn,
                    lines.join("; ")
                );
                let record =
                    self.receipt_audit(&d.org, &d.po, AuditKind::ReceiptDiscrepancy, detail, at);
                (&self.topics.audit_events, &AUDIT_EVENT, &d.org, record)
            }
            MatchOutput::DiscrepancyResolved(r) => {
                stats.count("receipt discrepancies resolved");
                let detail = format!("goods receipt {} resolved by {}", r.grn, r.by);
                let record =
                    self.receipt_audit(&r.org, &r.po, AuditKind::DiscrepancyResolved, detail, at);
                (&self.topics.audit_events, &AUDIT_EVENT, &r.org, record)
            }
            // A pending invoice is seen by its status (below); rejected receipts are audited
            // by procurement.
            MatchOutput::Pending(_) => {
                stats.count_labelled(INVOICE_OUTCOMES, "pending");
                return Ok(None);
            }
            // Keyed by document on a compacted topic, for lookup: not by org.
            MatchOutput::Status(status) => {
                stats.count("invoice statuses");
                let value = convert::status::invoice_status_value(status)
                    .map_err(|e| CodecError::Avro(e.to_string()))?;
                let payload = self
                    .codec
                    .encode(&self.topics.invoice_status, &INVOICE_STATUS, value)
                    .await?;
                return Ok(Some(OutputRecord {
                    topic: self.topics.invoice_status.clone(),
                    key: convert::status::invoice_status_key(&status.org, &status.invoice)
                        .into_bytes(),
                    payload: Some(payload),
                    headers,
                    timestamp: None,
                }));
            }
            // A receipt whose PO never came is refused here, where that is known; procurement
            // audits the receipts it refuses itself (a cancelled PO, a PO not yet issued).
            MatchOutput::ReceiptRejected(r)
                if r.reason == p2p_processors::ExceptionReason::UnknownPurchaseOrder =>
            {
                stats.count("receipts rejected");
                let detail = format!("goods receipt {} rejected: {}", r.grn, r.reason.describe());
                let record = self.receipt_audit(&r.org, &r.po, AuditKind::Refused, detail, at);
                (&self.topics.audit_events, &AUDIT_EVENT, &r.org, record)
            }
            MatchOutput::ReceiptRejected(_) => {
                stats.count("receipts rejected");
                return Ok(None);
            }
        };
        let payload = self.codec.encode(topic, contract, value).await?;
        Ok(Some(OutputRecord {
            topic: topic.clone(),
            key: org.as_str().as_bytes().to_vec(),
            payload: Some(payload),
            headers,
            timestamp: None,
        }))
    }
}

impl Topology for MatchProcessor {
    fn name(&self) -> &'static str {
        PROCESSOR
    }

    fn counters(&self) -> &'static [p2p_engine::CounterFamily] {
        &COUNTERS
    }

    fn input_topics(&self) -> Vec<String> {
        self.topics
            .match_inputs()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Pending invoices' wait limits: a limit scheduled in the batch that also moved stream
    /// time past it fires on the next idle tick.
    fn has_timers(&self) -> bool {
        true
    }

    async fn process(
        &self,
        records: &[InputRecord],
        _now: i64,
        store: &Store,
    ) -> Result<BatchOutput, ProcessError> {
        self.process_batch(records, store).await
    }
}

#[cfg(test)]
mod tests;
