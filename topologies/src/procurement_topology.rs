//! The `procurement` topology: each purchase order's lifecycle and approval routing.
//!
//! In: `po-events` (submitted, issued, acknowledged, cancelled, disputed, ...),
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
    action_symbol, approval_decision, org_config, state_symbol, ApprovalRequestRecord, AuditKind,
    AuditRecord, PoStatusRecord, RequestKind,
};
use p2p_avro::convert::{self, DecodeError};
use p2p_avro::{Codec, CodecError, Contract};
use p2p_processors::approval::{ApprovalEvent, ApprovalPolicy};
use p2p_processors::org_config::OrgConfig;
use p2p_processors::procurement::{
    handle, policy_or_default, PaymentSettled, ProcurementInput, PurchaseOrderApproval, Refusal,
};
use p2p_processors::{EventTime, MatchInput, OrgId, PurchaseOrderEvent, UserId};
use p2p_state::{StateError, StateKey, Store, StoreBatch, Timer};
use std::collections::HashMap;
use std::sync::Arc;

/// Name of this processor in DLQ headers and logs, and of its store.
pub const PROCESSOR: &str = "procurement";
/// The state entity under which an org's configuration is kept (no PO id looks like it).
const CONFIG_ENTITY: &str = "config/org";
const ESCALATION: &str = "escalation";
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
    configs: HashMap<StateKey, Option<OrgConfig>>,
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

    fn approval_policy(&mut self, org: &OrgId) -> Result<Option<ApprovalPolicy>, StateError> {
        let key = StateKey::new(org, CONFIG_ENTITY);
        if !self.configs.contains_key(&key) {
            let config: Option<OrgConfig> = self.store.get(&key)?;
            self.configs.insert(key.clone(), config);
        }
        Ok(self.configs[&key].as_ref().map(|c| c.approval.clone()))
    }

    /// Keeps the escalation timer of `key` in step with its state.
    fn reschedule(&mut self, key: &StateKey, before: Option<EventTime>, after: Option<EventTime>) {
        if before == after {
            return;
        }
        if let Some(due) = before {
            self.timers.cancel(&escalation(key, due));
        }
        if let Some(due) = after {
            self.timers.schedule(&escalation(key, due));
        }
    }
}

fn escalation(key: &StateKey, due: EventTime) -> Timer {
    Timer {
        due: due.0,
        owner: key.clone(),
        name: ESCALATION.into(),
    }
}

/// One decoded input of this topology.
enum Input {
    Config(OrgConfig),
    Procurement(ProcurementInput, EventTime, Option<UserId>),
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
        if topic == self.topics.approval_decisions {
            let (decided, at) = approval_decision(value)?;
            let actor = Some(decided.decision.approver.clone());
            return Ok(Input::Procurement(
                ProcurementInput::Decision(decided),
                at,
                actor,
            ));
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
        let (input, at, actor) = match input {
            Input::Config(config) => {
                if let Err(dead) = check_key(record, &config.org) {
                    return Ok(Err(dead));
                }
                let key = StateKey::new(&config.org, CONFIG_ENTITY);
                working.configs.insert(key, Some(config));
                output.stats.count("org configs");
                return Ok(Ok(()));
            }
            Input::Procurement(input, at, actor) => (input, at, actor),
            Input::Ignored => return Ok(Ok(())),
        };
        if let Err(dead) = check_key(record, input.org()) {
            return Ok(Err(dead));
        }
        let key = StateKey::new(input.org(), input.po().as_str());
        let policy = working.approval_policy(input.org())?;
        let mut order = working.order(&key)?;
        let before = order
            .as_ref()
            .and_then(PurchaseOrderApproval::escalation_due);
        let outcome = handle(&mut order, &input, policy.as_ref(), at);
        // Encode first: if an output cannot be written, the state stays as it was.
        let encoded = match &outcome {
            Ok(events) => {
                let order = order
                    .as_ref()
                    .expect("an accepted input leaves a PO behind");
                self.encode_events(order, events, actor.as_ref(), at).await
            }
            Err(refusal) => self.encode_refusal(refusal, actor.as_ref(), at).await,
        };
        let encoded = match encoded {
            Ok(records) => records,
            Err(e) if e.is_transient() => return Err(ProcessError::Transient(e)),
            Err(e) => {
                return Ok(Err((
                    DlqReason::Rejected,
                    format!("output not encodable: {e}"),
                )))
            }
        };
        match &outcome {
            Ok(events) => count_events(events, output),
            Err(_) => output.stats.count("refusals"),
        }
        output.records.extend(encoded);
        let after = order
            .as_ref()
            .and_then(PurchaseOrderApproval::escalation_due);
        working.reschedule(&key, before, after);
        working.orders.insert(key, order);
        Ok(Ok(()))
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
            if timer.name != ESCALATION {
                continue;
            }
            let Some(mut order) = working.order(&timer.owner)? else {
                continue;
            };
            let org = order.po().org().clone();
            let configured = working.approval_policy(&org)?;
            let policy = policy_or_default(configured.as_ref(), order.total().currency());
            let before = order.escalation_due();
            let events = order.on_timer(&policy, EventTime(now));
            if events.is_empty() {
                continue;
            }
            let encoded = self
                .encode_events(&order, &events, None, EventTime(now))
                .await;
            match encoded {
                Ok(records) => output.records.extend(records),
                Err(e) if e.is_transient() => return Err(ProcessError::Transient(e)),
                // Our own outputs always fit our schemas; if one ever did not, the timer is
                // kept rather than losing the escalation.
                Err(e) => {
                    tracing::error!(error = %e, "escalation not encodable; kept for the next tick");
                    working.timers.schedule(&timer);
                    continue;
                }
            }
            count_events(&events, output);
            let after = order.escalation_due();
            working.reschedule(&timer.owner, before, after);
            working.orders.insert(timer.owner.clone(), Some(order));
        }
        Ok(())
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
        })
    }

    async fn encode_events(
        &self,
        order: &PurchaseOrderApproval,
        events: &[ApprovalEvent],
        actor: Option<&UserId>,
        at: EventTime,
    ) -> Result<Vec<OutputRecord>, CodecError> {
        let po = order.po();
        let org = po.org();
        let mut records = Vec::with_capacity(events.len() * 2);
        let audit =
            |kind, action: String, from: Option<String>, to: Option<String>, detail| AuditRecord {
                org: org.clone(),
                po: po.id().clone(),
                kind,
                action,
                from_state: from,
                to_state: to,
                version: po.version(),
                actor: actor.cloned(),
                detail,
                occurred_at: at,
            };
        for event in events {
            let (request, audit) = match event {
                ApprovalEvent::Transitioned(t) => {
                    let status = PoStatusRecord {
                        org: t.org.clone(),
                        po: t.id.clone(),
                        state: t.to,
                        version: t.version,
                        last_action: t.action,
                        updated_at: at,
                    };
                    records.push(
                        self.encode(
                            &self.topics.po_status,
                            &PO_STATUS,
                            status.key(),
                            status.to_value(),
                        )
                        .await?,
                    );
                    let mut entry = audit(
                        AuditKind::Transitioned,
                        action_symbol(t.action),
                        Some(state_symbol(t.from)),
                        Some(state_symbol(t.to)),
                        format!("{:?} -> {:?}", t.from, t.to),
                    );
                    entry.version = t.version;
                    (None, entry)
                }
                ApprovalEvent::Requested {
                    level,
                    step,
                    of,
                    due_at,
                } => (
                    Some((RequestKind::Requested, *level, *step, *of, *due_at, 0)),
                    audit(
                        AuditKind::ApprovalRequested,
                        format!("REQUEST_{level:?}"),
                        None,
                        None,
                        format!("step {step} of {of} needs {level:?}, due at {}", due_at.0),
                    ),
                ),
                ApprovalEvent::StepApproved { level, approver } => (
                    None,
                    audit(
                        AuditKind::StepApproved,
                        format!("APPROVE_{level:?}"),
                        None,
                        None,
                        format!("{approver} approved step {level:?}"),
                    ),
                ),
                ApprovalEvent::Escalated {
                    level,
                    overdue_since,
                    escalations,
                } => {
                    let (step, of) = order.open_step().unwrap_or((0, 0));
                    let due = order.escalation_due().unwrap_or(at);
                    (
                        Some((RequestKind::Escalated, *level, step, of, due, *escalations)),
                        audit(
                            AuditKind::Escalated,
                            format!("ESCALATE_{level:?}"),
                            None,
                            None,
                            format!(
                                "step {level:?} undecided since {} (escalation {escalations})",
                                overdue_since.0
                            ),
                        ),
                    )
                }
            };
            if let Some((kind, level, step, steps, due_at, escalations)) = request {
                // Every routed PO was submitted, so it has a requester.
                if let Some(requester) = order.requester() {
                    let request = ApprovalRequestRecord {
                        org: org.clone(),
                        po: po.id().clone(),
                        kind,
                        level,
                        step: step as u32,
                        steps: steps as u32,
                        requester: requester.clone(),
                        total: order.total(),
                        due_at,
                        escalations,
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

    async fn encode_refusal(
        &self,
        refusal: &Refusal,
        actor: Option<&UserId>,
        at: EventTime,
    ) -> Result<Vec<OutputRecord>, CodecError> {
        let entry = AuditRecord {
            org: refusal.org.clone(),
            po: refusal.po.clone(),
            kind: AuditKind::Refused,
            action: action_symbol(refusal.attempted),
            from_state: refusal.state.map(state_symbol),
            to_state: None,
            version: refusal.version,
            actor: actor.cloned(),
            detail: refusal.reason.to_string(),
            occurred_at: at,
        };
        Ok(vec![
            self.encode(
                &self.topics.audit_events,
                &AUDIT_EVENT,
                refusal.org.to_string(),
                entry.to_value(),
            )
            .await?,
        ])
    }
}

fn count_events(events: &[ApprovalEvent], output: &mut BatchOutput) {
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
            configs: HashMap::new(),
            timers: StoreBatch::default(),
        };
        let mut output = BatchOutput::default();
        for record in records {
            if let Err((reason, error)) = self
                .process_record(record, &mut working, &mut output)
                .await?
            {
                output.dead_letter(record, reason, &error, PROCESSOR);
            }
        }
        self.fire_timers(now, &mut working, &mut output).await?;
        let Working {
            orders,
            configs,
            timers,
            ..
        } = working;
        let mut state = timers;
        for (key, order) in &orders {
            if let Some(order) = order {
                state.put(key, order)?;
            }
        }
        for (key, config) in &configs {
            if let Some(config) = config {
                state.put(key, config)?;
            }
        }
        output.state = state;
        Ok(output)
    }
}
