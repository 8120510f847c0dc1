//! The `procurement` topology: each requisition's and purchase order's lifecycle and approval
//! routing.
//!
//! In: `requisition-events` (submitted for approval; converted when a PO names them),
//! `po-events` (submitted, issued, acknowledged, cancelled, disputed, ...),
//! `approval-decisions`, `grn-events` (receiving), `invoice-matched` and `payment-schedule`
//! (settlements: invoiced and paid), and the compacted `org-config` joined as a table (the
//! latest settings per org, kept in this topology's store). Out: `approval-requests` (each step to decide, and
//! each escalation of a step past its SLA), `po-status` (compacted, the latest state per PO)
//! and `audit-events` (every transition, approval step, escalation and refusal). Escalations
//! are durable timers in the store, fired on the wall clock: an SLA is real time.

use crate::config::Topics;
use crate::dlq::DlqReason;
use crate::record::{InputRecord, OutputRecord};
use crate::topology::{
    check_key, decode, not_an_input, BatchOutput, ProcessError, RecordResult, Topology,
};
use p2p_avro::contracts::{APPROVAL_REQUEST, AUDIT_EVENT, PO_STATUS};
use p2p_avro::convert::payment::{PaymentScheduleRecord, ScheduleEventKind};
use p2p_avro::convert::procurement::{
    action_symbol, approval_decision, org_config, requisition_action_symbol, requisition_event,
    requisition_state_symbol, state_symbol, ApprovalRequestRecord, AuditKind, AuditRecord, Decided,
    PoStatusRecord, RequestKind,
};
use p2p_avro::convert::{self, DecodeError};
use p2p_avro::{Codec, CodecError, Contract};
use p2p_processors::approval::{ApprovalEvent, ApprovalPolicy};
use p2p_processors::org_config::OrgConfig;
use p2p_processors::procurement::{
    handle_converting, policy_or_default, PaymentSettled, ProcurementInput, PurchaseOrderApproval,
    Refusal,
};
use p2p_processors::requisition::{
    handle_requisition, RequisitionApproval, RequisitionInput, RequisitionRefusal,
};
use p2p_processors::{
    DocumentRef, EventTime, MatchInput, Money, OrgId, PurchaseOrderEvent,
    PurchaseOrderTransitioned, RequisitionTransitioned, UserId,
};
use p2p_state::{StateError, StateKey, Store, StoreBatch, Timer};
use std::collections::HashMap;
use std::sync::Arc;

/// Name of this processor in DLQ headers and logs, and of its store.
pub const PROCESSOR: &str = "procurement";
/// The state entity under which an org's configuration is kept (no PO id looks like it).
const CONFIG_ENTITY: &str = "config/org";
const ESCALATION: &str = "escalation";
const REQUISITION_ESCALATION: &str = "requisition-escalation";
/// Most timers fired in one batch; the rest fire in the next.
const TIMERS_PER_BATCH: usize = 1_000;

pub struct ProcurementProcessor {
    topics: Topics,
    codec: Arc<Codec>,
}

/// The states a batch touches, each read once from the store and written once at the end.
struct Working<'s> {
    store: &'s Store,
    orders: HashMap<StateKey, Option<PurchaseOrderApproval>>,
    requisitions: HashMap<StateKey, Option<RequisitionApproval>>,
    configs: HashMap<StateKey, Option<OrgConfig>>,
    /// The keys a record or timer of this batch changed: the only ones written (the others
    /// were merely read, and writing them back would put each on the changelog again).
    changed: std::collections::HashSet<StateKey>,
    timers: StoreBatch,
}

impl Working<'_> {
    fn order(&mut self, key: &StateKey) -> Result<Option<PurchaseOrderApproval>, StateError> {
        if let Some(order) = self.orders.get(key) {
            return Ok(order.clone());
        }
        let order = self.store.get(key)?;
        self.orders.insert(key.clone(), order.clone());
        Ok(order)
    }

    fn requisition(&mut self, key: &StateKey) -> Result<Option<RequisitionApproval>, StateError> {
        if let Some(requisition) = self.requisitions.get(key) {
            return Ok(requisition.clone());
        }
        let requisition = self.store.get(key)?;
        self.requisitions.insert(key.clone(), requisition.clone());
        Ok(requisition)
    }

    fn approval_policy(&mut self, org: &OrgId) -> Result<Option<ApprovalPolicy>, StateError> {
        let key = StateKey::new(org, CONFIG_ENTITY);
        if !self.configs.contains_key(&key) {
            let config: Option<OrgConfig> = self.store.get(&key)?;
            self.configs.insert(key.clone(), config);
        }
        Ok(self.configs[&key].as_ref().map(|c| c.approval.clone()))
    }

    /// Keeps the escalation timer `name` of `key` in step with its state.
    fn reschedule(
        &mut self,
        name: &str,
        key: &StateKey,
        before: Option<EventTime>,
        after: Option<EventTime>,
    ) {
        if before == after {
            return;
        }
        let timer = |due: EventTime| Timer {
            due: due.0,
            owner: key.clone(),
            name: name.into(),
        };
        if let Some(due) = before {
            self.timers.cancel(&timer(due));
        }
        if let Some(due) = after {
            self.timers.schedule(&timer(due));
        }
    }
}

/// What the outputs of a routed document need to know of it, PO or requisition alike.
struct Routed<'a> {
    org: &'a OrgId,
    document: DocumentRef,
    version: u64,
    requester: Option<&'a UserId>,
    total: Money,
    open_step: Option<(usize, usize)>,
    escalation_due: Option<EventTime>,
}

impl<'a> From<&'a PurchaseOrderApproval> for Routed<'a> {
    fn from(order: &'a PurchaseOrderApproval) -> Self {
        Self {
            org: order.po().org(),
            document: DocumentRef::PurchaseOrder(order.po().id().clone()),
            version: order.po().version(),
            requester: order.requester(),
            total: order.total(),
            open_step: order.open_step(),
            escalation_due: order.escalation_due(),
        }
    }
}

impl<'a> From<&'a RequisitionApproval> for Routed<'a> {
    fn from(requisition: &'a RequisitionApproval) -> Self {
        Self {
            org: requisition.requisition().org(),
            document: DocumentRef::Requisition(requisition.requisition().id().clone()),
            version: requisition.requisition().version(),
            requester: Some(requisition.requester()),
            total: requisition.total(),
            open_step: requisition.open_step(),
            escalation_due: requisition.escalation_due(),
        }
    }
}

/// A routed document whose open step the escalation timer fires on.
trait Escalates {
    type Transition: SpelledTransition;
    fn routed(&self) -> Routed<'_>;
    fn on_timer(
        &mut self,
        policy: &ApprovalPolicy,
        now: EventTime,
    ) -> Vec<ApprovalEvent<Self::Transition>>;
}

impl Escalates for PurchaseOrderApproval {
    type Transition = PurchaseOrderTransitioned;
    fn routed(&self) -> Routed<'_> {
        Routed::from(self)
    }
    fn on_timer(&mut self, policy: &ApprovalPolicy, now: EventTime) -> Vec<ApprovalEvent> {
        PurchaseOrderApproval::on_timer(self, policy, now)
    }
}

impl Escalates for RequisitionApproval {
    type Transition = RequisitionTransitioned;
    fn routed(&self) -> Routed<'_> {
        Routed::from(self)
    }
    fn on_timer(
        &mut self,
        policy: &ApprovalPolicy,
        now: EventTime,
    ) -> Vec<ApprovalEvent<RequisitionTransitioned>> {
        RequisitionApproval::on_timer(self, policy, now)
    }
}

/// A lifecycle transition as the outputs spell it.
trait SpelledTransition {
    /// Action, from state and to state as the schemas spell them, and the new version.
    fn spelled(&self) -> (String, String, String, u64);
    /// The `po-status` record it leads to, for a purchase order.
    fn status(&self, at: EventTime) -> Option<PoStatusRecord>;
    /// The transition in words, for the audit trail's reader.
    fn sentence(&self) -> String;
}

/// "receive partially: issued -> partially received".
fn transition_sentence<S: p2p_processors::lifecycle::Transitions, Id>(
    t: &p2p_processors::lifecycle::Transitioned<S, Id>,
) -> String {
    format!("{}: {} -> {}", t.action, t.from, t.to)
}

impl SpelledTransition for PurchaseOrderTransitioned {
    fn spelled(&self) -> (String, String, String, u64) {
        (
            action_symbol(self.action),
            state_symbol(self.from),
            state_symbol(self.to),
            self.version,
        )
    }

    fn status(&self, at: EventTime) -> Option<PoStatusRecord> {
        Some(PoStatusRecord {
            org: self.org.clone(),
            po: self.id.clone(),
            state: self.to,
            version: self.version,
            last_action: self.action,
            updated_at: at,
        })
    }

    fn sentence(&self) -> String {
        transition_sentence(self)
    }
}

impl SpelledTransition for RequisitionTransitioned {
    fn spelled(&self) -> (String, String, String, u64) {
        (
            requisition_action_symbol(self.action),
            requisition_state_symbol(self.from),
            requisition_state_symbol(self.to),
            self.version,
        )
    }

    fn status(&self, _: EventTime) -> Option<PoStatusRecord> {
        None
    }

    fn sentence(&self) -> String {
        transition_sentence(self)
    }
}

/// One decoded input of this topology.
enum Input {
    Config(OrgConfig),
    Procurement(ProcurementInput, EventTime, Option<UserId>),
    Requisition(RequisitionInput, EventTime, Option<UserId>),
    /// A payment-schedule event other than a settlement: nothing for the PO's lifecycle.
    Ignored,
}

impl ProcurementProcessor {
    pub fn new(topics: Topics, codec: Arc<Codec>) -> Self {
        Self { topics, codec }
    }

    fn decode_input(
        &self,
        topic: &str,
        value: &apache_avro::types::Value,
    ) -> Result<Input, DecodeError> {
        if topic == self.topics.org_config {
            return org_config(value).map(Input::Config);
        }
        if topic == self.topics.requisition_events {
            let (submitted, at) = requisition_event(value)?;
            let actor = Some(submitted.requester.clone());
            return Ok(Input::Requisition(
                RequisitionInput::Submitted(submitted),
                at,
                actor,
            ));
        }
        if topic == self.topics.approval_decisions {
            return Ok(match approval_decision(value)? {
                (Decided::PurchaseOrder(decided), at) => {
                    let actor = Some(decided.decision.approver.clone());
                    Input::Procurement(ProcurementInput::Decision(decided), at, actor)
                }
                (Decided::Requisition(decided), at) => {
                    let actor = Some(decided.decision.approver.clone());
                    Input::Requisition(RequisitionInput::Decision(decided), at, actor)
                }
            });
        }
        if topic == self.topics.grn_events {
            let decoded = convert::goods_receipt_event(value)?;
            let MatchInput::GoodsReceipt(receipt) = decoded.input else {
                return Err(DecodeError::NotARecord {
                    expected: "GoodsReceiptEvent",
                });
            };
            let input = ProcurementInput::Receipt(receipt);
            return Ok(Input::Procurement(input, decoded.occurred_at, None));
        }
        if topic == self.topics.invoice_matched {
            let matched = convert::invoice_matched(value)?;
            let at = matched.matched_at;
            return Ok(Input::Procurement(
                ProcurementInput::InvoiceMatched(matched),
                at,
                None,
            ));
        }
        if topic == self.topics.payment_schedule {
            let event = PaymentScheduleRecord::from_value(value)?;
            if event.kind != ScheduleEventKind::Settled {
                return Ok(Input::Ignored);
            }
            let settled = PaymentSettled {
                org: event.org,
                po: event.po,
                invoice: event.invoice,
            };
            let input = ProcurementInput::PaymentSettled(settled);
            return Ok(Input::Procurement(input, event.occurred_at, None));
        }
        let (event, occurred_at) = convert::purchase_order(value)?;
        let actor = match &event {
            PurchaseOrderEvent::Submitted(s) => Some(s.requester.clone()),
            _ => None,
        };
        Ok(Input::Procurement(
            ProcurementInput::PurchaseOrder(event),
            occurred_at,
            actor,
        ))
    }

    async fn process_record(
        &self,
        record: &InputRecord,
        working: &mut Working<'_>,
        output: &mut BatchOutput,
    ) -> RecordResult<()> {
        if !self
            .topics
            .procurement_inputs()
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
        match input {
            Input::Config(config) => {
                if let Err(dead) = check_key(record, &config.org) {
                    return Ok(Err(dead));
                }
                let key = StateKey::new(&config.org, CONFIG_ENTITY);
                working.changed.insert(key.clone());
                working.configs.insert(key, Some(config));
                output.stats.count("org configs");
                Ok(Ok(()))
            }
            Input::Procurement(input, at, actor) => {
                if let Err(dead) = check_key(record, input.org()) {
                    return Ok(Err(dead));
                }
                self.process_order(&input, at, actor.as_ref(), working, output)
                    .await
            }
            Input::Requisition(input, at, actor) => {
                if let Err(dead) = check_key(record, input.org()) {
                    return Ok(Err(dead));
                }
                self.process_requisition(&input, at, actor.as_ref(), working, output)
                    .await
            }
            Input::Ignored => Ok(Ok(())),
        }
    }

    /// A PO's input, and the conversion of the requisition a new PO names.
    async fn process_order(
        &self,
        input: &ProcurementInput,
        at: EventTime,
        actor: Option<&UserId>,
        working: &mut Working<'_>,
        output: &mut BatchOutput,
    ) -> RecordResult<()> {
        let key = StateKey::new(input.org(), &input.po().state_entity());
        let policy = working.approval_policy(input.org())?;
        let mut order = working.order(&key)?;
        let origin = match input {
            ProcurementInput::PurchaseOrder(event) => event.requisition(),
            _ => None,
        };
        let origin_key = origin.map(|r| StateKey::new(input.org(), &r.state_entity()));
        let mut requisition = match &origin_key {
            Some(key) => working.requisition(key)?,
            None => None,
        };
        let before = order
            .as_ref()
            .and_then(PurchaseOrderApproval::escalation_due);
        let outcome = handle_converting(&mut order, &mut requisition, input, policy.as_ref(), at);
        // Encode first: if an output cannot be written, the state stays as it was.
        let encoded = match &outcome {
            Ok((events, converted)) => {
                let order = order
                    .as_ref()
                    .expect("an accepted input leaves a PO behind");
                let origin = converted.as_ref().zip(requisition.as_ref());
                self.encode_order_outputs(order, events, origin, actor, at)
                    .await
            }
            Err(refusal) => {
                self.encode_refusal(&order_refusal(refusal), actor, at)
                    .await
            }
        };
        let encoded = match encoded {
            Ok(records) => records,
            Err(e) => return self.unencodable(e),
        };
        match &outcome {
            Ok((events, converted)) => {
                count_events(events, output);
                if converted.is_some() {
                    output.stats.count("requisitions converted");
                }
            }
            Err(_) => output.stats.count("refusals"),
        }
        output.records.extend(encoded);
        let after = order
            .as_ref()
            .and_then(PurchaseOrderApproval::escalation_due);
        working.reschedule(ESCALATION, &key, before, after);
        working.changed.insert(key.clone());
        working.orders.insert(key, order);
        if let (Ok((_, Some(_))), Some(key)) = (&outcome, origin_key) {
            working.changed.insert(key.clone());
            working.requisitions.insert(key, requisition);
        }
        Ok(Ok(()))
    }

    /// A PO's outputs, and those of the requisition it converted, if it did.
    async fn encode_order_outputs(
        &self,
        order: &PurchaseOrderApproval,
        events: &[ApprovalEvent],
        converted: Option<(&RequisitionTransitioned, &RequisitionApproval)>,
        actor: Option<&UserId>,
        at: EventTime,
    ) -> Result<Vec<OutputRecord>, CodecError> {
        let mut records = self
            .encode_events(&Routed::from(order), events, actor, at)
            .await?;
        if let Some((converted, origin)) = converted {
            let events = [ApprovalEvent::Transitioned(converted.clone())];
            let origin = Routed::from(origin);
            records.extend(self.encode_events(&origin, &events, actor, at).await?);
        }
        Ok(records)
    }

    /// A requisition's submission or decision.
    async fn process_requisition(
        &self,
        input: &RequisitionInput,
        at: EventTime,
        actor: Option<&UserId>,
        working: &mut Working<'_>,
        output: &mut BatchOutput,
    ) -> RecordResult<()> {
        let key = StateKey::new(input.org(), &input.requisition().state_entity());
        let policy = working.approval_policy(input.org())?;
        let mut requisition = working.requisition(&key)?;
        let before = requisition
            .as_ref()
            .and_then(RequisitionApproval::escalation_due);
        let outcome = handle_requisition(&mut requisition, input, policy.as_ref(), at);
        let encoded = match &outcome {
            Ok(events) => {
                let routed = Routed::from(
                    requisition
                        .as_ref()
                        .expect("an accepted input leaves a requisition behind"),
                );
                self.encode_events(&routed, events, actor, at).await
            }
            Err(refusal) => {
                self.encode_refusal(&requisition_refusal(refusal), actor, at)
                    .await
            }
        };
        let encoded = match encoded {
            Ok(records) => records,
            Err(e) => return self.unencodable(e),
        };
        match &outcome {
            Ok(events) => count_events(events, output),
            Err(_) => output.stats.count("refusals"),
        }
        output.records.extend(encoded);
        let after = requisition
            .as_ref()
            .and_then(RequisitionApproval::escalation_due);
        working.reschedule(REQUISITION_ESCALATION, &key, before, after);
        working.changed.insert(key.clone());
        working.requisitions.insert(key, requisition);
        Ok(Ok(()))
    }

    /// An output that cannot be written: retried if the registry is unreachable, else the
    /// input goes to the DLQ (our outputs always fit our schemas, so this is a bug).
    fn unencodable(&self, e: CodecError) -> RecordResult<()> {
        if e.is_transient() {
            return Err(ProcessError::transient(e));
        }
        Ok(Err((
            DlqReason::Rejected,
            format!("output not encodable: {e}"),
        )))
    }

    /// Fires the escalation timers due at `now`.
    async fn fire_timers(
        &self,
        now: i64,
        working: &mut Working<'_>,
        output: &mut BatchOutput,
    ) -> Result<(), ProcessError> {
        for timer in working.store.due_timers(now, TIMERS_PER_BATCH)? {
            working.timers.cancel(&timer);
            let fired = match timer.name.as_str() {
                ESCALATION => match working.order(&timer.owner)? {
                    Some(mut order) => {
                        let fired = self.escalate(&mut order, &timer, now, working, output);
                        let fired = fired.await?;
                        if fired.is_ok() {
                            working.changed.insert(timer.owner.clone());
                            working.orders.insert(timer.owner.clone(), Some(order));
                        }
                        fired
                    }
                    None => Ok(()),
                },
                REQUISITION_ESCALATION => match working.requisition(&timer.owner)? {
                    Some(mut requisition) => {
                        let fired = self.escalate(&mut requisition, &timer, now, working, output);
                        let fired = fired.await?;
                        if fired.is_ok() {
                            let owner = timer.owner.clone();
                            working.changed.insert(owner.clone());
                            working.requisitions.insert(owner, Some(requisition));
                        }
                        fired
                    }
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            match fired {
                Ok(()) => {}
                Err(e) if e.is_transient() => return Err(ProcessError::transient(e)),
                // Our own outputs always fit our schemas; if one ever did not, the timer is
                // kept rather than losing the escalation.
                Err(e) => {
                    tracing::error!(error = %e, "escalation not encodable; kept for the next tick");
                    working.timers.schedule(&timer);
                }
            }
        }
        Ok(())
    }

    /// Escalates `document` if its open step is past its SLA: the escalation's outputs, and
    /// its timer re-armed. The caller keeps the document only if this succeeded.
    async fn escalate<D: Escalates>(
        &self,
        document: &mut D,
        timer: &Timer,
        now: i64,
        working: &mut Working<'_>,
        output: &mut BatchOutput,
    ) -> Result<Result<(), CodecError>, ProcessError> {
        let configured = working.approval_policy(document.routed().org)?;
        let policy = policy_or_default(configured.as_ref(), document.routed().total.currency());
        let before = document.routed().escalation_due;
        let events = document.on_timer(&policy, EventTime(now));
        if events.is_empty() {
            return Ok(Ok(()));
        }
        let encoded = self
            .encode_events(&document.routed(), &events, None, EventTime(now))
            .await;
        let records = match encoded {
            Ok(records) => records,
            Err(e) => return Ok(Err(e)),
        };
        output.records.extend(records);
        count_events(&events, output);
        let after = document.routed().escalation_due;
        working.reschedule(&timer.name, &timer.owner, before, after);
        Ok(Ok(()))
    }

    async fn encode(
        &self,
        topic: &str,
        contract: &Contract,
        key: String,
        value: apache_avro::types::Value,
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

    async fn encode_events<T: SpelledTransition>(
        &self,
        routed: &Routed<'_>,
        events: &[ApprovalEvent<T>],
        actor: Option<&UserId>,
        at: EventTime,
    ) -> Result<Vec<OutputRecord>, CodecError> {
        let org = routed.org;
        let mut records = Vec::with_capacity(events.len() * 2);
        let audit =
            |kind, action: String, from: Option<String>, to: Option<String>, detail| AuditRecord {
                org: org.clone(),
                entity: routed.document.clone(),
                kind,
                action,
                from_state: from,
                to_state: to,
                version: routed.version,
                actor: actor.cloned(),
                detail,
                occurred_at: at,
            };
        for event in events {
            let (request, audit) = match event {
                ApprovalEvent::Transitioned(t) => {
                    if let Some(status) = t.status(at) {
                        records.push(
                            self.encode(
                                &self.topics.po_status,
                                &PO_STATUS,
                                status.key(),
                                status.to_value(),
                            )
                            .await?,
                        );
                    }
                    let (action, from, to, version) = t.spelled();
                    let detail = t.sentence();
                    let mut entry = audit(
                        AuditKind::Transitioned,
                        action,
                        Some(from),
                        Some(to),
                        detail,
                    );
                    entry.version = version;
                    (None, entry)
                }
                ApprovalEvent::Requested {
                    level,
                    step,
                    of,
                    due_at,
                } => (
                    Some((RequestKind::Requested, *level, *step, *of, *due_at, 0, None)),
                    audit(
                        AuditKind::ApprovalRequested,
                        format!("REQUEST_{level:?}"),
                        None,
                        None,
                        format!("step {step} of {of} needs an approver of level {level:?}, due by {due_at}"),
                    ),
                ),
                ApprovalEvent::StepApproved { level, approver } => (
                    None,
                    audit(
                        AuditKind::StepApproved,
                        format!("APPROVE_{level:?}"),
                        None,
                        None,
                        format!("{approver} approved the level {level:?} step"),
                    ),
                ),
                ApprovalEvent::Escalated {
                    level,
                    overdue_since,
                    escalations,
                } => {
                    let (step, of) = routed.open_step.unwrap_or((0, 0));
                    let due = routed.escalation_due.unwrap_or(at);
                    (
                        Some((
                            RequestKind::Escalated,
                            *level,
                            step,
                            of,
                            due,
                            *escalations,
                            Some(*overdue_since),
                        )),
                        audit(
                            AuditKind::Escalated,
                            format!("ESCALATE_{level:?}"),
                            None,
                            None,
                            format!(
                                "the level {level:?} step is undecided, overdue since {overdue_since} (escalation {escalations})"
                            ),
                        ),
                    )
                }
            };
            if let Some((kind, level, step, steps, due_at, escalations, overdue_since)) = request {
                // Every routed document was submitted, so it has a requester.
                if let Some(requester) = routed.requester {
                    let request = ApprovalRequestRecord {
                        org: org.clone(),
                        document: routed.document.clone(),
                        kind,
                        level,
                        step: step as u32,
                        steps: steps as u32,
                        requester: requester.clone(),
                        total: routed.total,
                        due_at,
                        escalations,
                        overdue_since,
                        occurred_at: at,
                    };
                    let value = request
                        .to_value()
                        .map_err(|e| CodecError::Avro(e.to_string()))?;
                    records.push(
                        self.encode(
                            &self.topics.approval_requests,
                            &APPROVAL_REQUEST,
                            org.to_string(),
                            value,
                        )
                        .await?,
                    );
                }
            }
            records.push(
                self.encode(
                    &self.topics.audit_events,
                    &AUDIT_EVENT,
                    org.to_string(),
                    audit.to_value(),
                )
                .await?,
            );
        }
        Ok(records)
    }

    /// The audit event of a refused input: what was attempted, where the document stood, why.
    async fn encode_refusal(
        &self,
        refused: &RefusedInput,
        actor: Option<&UserId>,
        at: EventTime,
    ) -> Result<Vec<OutputRecord>, CodecError> {
        let entry = AuditRecord {
            org: refused.org.clone(),
            entity: refused.entity.clone(),
            kind: AuditKind::Refused,
            action: refused.action.clone(),
            from_state: refused.state.clone(),
            to_state: None,
            version: refused.version,
            actor: actor.cloned(),
            detail: refused.detail.clone(),
            occurred_at: at,
        };
        Ok(vec![
            self.encode(
                &self.topics.audit_events,
                &AUDIT_EVENT,
                refused.org.to_string(),
                entry.to_value(),
            )
            .await?,
        ])
    }
}

/// A refusal of either document, as the audit trail spells it.
struct RefusedInput {
    org: OrgId,
    entity: DocumentRef,
    action: String,
    state: Option<String>,
    version: u64,
    detail: String,
}

fn order_refusal(refusal: &Refusal) -> RefusedInput {
    RefusedInput {
        org: refusal.org.clone(),
        entity: DocumentRef::PurchaseOrder(refusal.po.clone()),
        action: action_symbol(refusal.attempted),
        state: refusal.state.map(state_symbol),
        version: refusal.version,
        detail: refusal.reason.to_string(),
    }
}

fn requisition_refusal(refusal: &RequisitionRefusal) -> RefusedInput {
    RefusedInput {
        org: refusal.org.clone(),
        entity: DocumentRef::Requisition(refusal.requisition.clone()),
        action: requisition_action_symbol(refusal.attempted),
        state: refusal.state.map(requisition_state_symbol),
        version: refusal.version,
        detail: refusal.reason.to_string(),
    }
}

fn count_events<T>(events: &[ApprovalEvent<T>], output: &mut BatchOutput) {
    for event in events {
        output.stats.count(match event {
            ApprovalEvent::Transitioned(_) => "transitions",
            ApprovalEvent::Requested { .. } => "approval requests",
            ApprovalEvent::StepApproved { .. } => "approval steps",
            ApprovalEvent::Escalated { .. } => "escalations",
        });
    }
}

impl Topology for ProcurementProcessor {
    fn name(&self) -> &'static str {
        PROCESSOR
    }

    fn input_topics(&self) -> Vec<String> {
        self.topics
            .procurement_inputs()
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
            orders: HashMap::new(),
            requisitions: HashMap::new(),
            configs: HashMap::new(),
            changed: std::collections::HashSet::new(),
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
        self.fire_timers(now, &mut working, &mut output).await?;
        let Working {
            orders,
            requisitions,
            configs,
            changed,
            timers,
            ..
        } = working;
        let mut state = timers;
        for key in &changed {
            if let Some(Some(order)) = orders.get(key) {
                state.put(key, order)?;
            } else if let Some(Some(requisition)) = requisitions.get(key) {
                state.put(key, requisition)?;
            } else if let Some(Some(config)) = configs.get(key) {
                state.put(key, config)?;
            }
        }
        output.state = state;
        Ok(output)
    }
}
