//! Conversions for the procurement topology's records: approval decisions and org
//! configuration in; approval requests, PO status and audit events out. Each output has a
//! record type that both encodes and decodes, so consumers (tests, the demo, data platforms
//! written in Rust) read exactly what the pipeline wrote.

use super::{
    dec, none, record, s, some, DecodeError, EncodeError, Record, AMOUNT, MEASURE, PRICE, QTY,
};
use apache_avro::types::Value;
use p2p_processors::approval::{ApprovalLevel, ApprovalPolicy, Decision, Thresholds};
use p2p_processors::duplicates::LookAlikes;
use p2p_processors::org_config::OrgConfig;
use p2p_processors::payment::{InstallmentPlan, PaymentPolicy, PaymentTerms};
use p2p_processors::procurement::ApprovalDecided;
use p2p_processors::requisition::RequisitionDecided;
use p2p_processors::tolerance_keys::{Combine, Limit, ToleranceKeys, ToleranceRule};
use p2p_processors::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

const RATE: (u32, u32) = (28, 10);

/// `L1` -> `"L1"`, with its index in the schemas' `ApprovalLevel` enum.
fn level_symbol(level: ApprovalLevel) -> (u32, &'static str) {
    match level {
        ApprovalLevel::L1 => (0, "L1"),
        ApprovalLevel::L2 => (1, "L2"),
        ApprovalLevel::L3 => (2, "L3"),
    }
}

fn level(r: &Record<'_>, field: &'static str) -> Result<ApprovalLevel, DecodeError> {
    match r.symbol(field)? {
        "L1" => Ok(ApprovalLevel::L1),
        "L2" => Ok(ApprovalLevel::L2),
        "L3" => Ok(ApprovalLevel::L3),
        _ => Err(DecodeError::WrongType {
            field,
            expected: "approval level",
        }),
    }
}

/// `AwaitingApproval` -> `AWAITING_APPROVAL`: the schemas' spelling of Rust variant names.
pub fn screaming_snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

pub fn state_symbol(state: PoState) -> String {
    screaming_snake(&format!("{state:?}"))
}

pub fn action_symbol(action: PoAction) -> String {
    screaming_snake(&format!("{action:?}"))
}

pub fn requisition_state_symbol(state: RequisitionState) -> String {
    screaming_snake(&format!("{state:?}"))
}

pub fn requisition_action_symbol(action: RequisitionAction) -> String {
    screaming_snake(&format!("{action:?}"))
}

// ---- inputs -------------------------------------------------------------------------------

/// A decision on a purchase order or on a requisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    PurchaseOrder(ApprovalDecided),
    Requisition(RequisitionDecided),
}

/// Decodes an `ApprovalDecision`, with its event time.
pub fn approval_decision(value: &Value) -> Result<(Decided, EventTime), DecodeError> {
    let r = Record::of(value, "ApprovalDecision")?;
    let approve = match r.symbol("decision")? {
        "APPROVE" => true,
        "REJECT" => false,
        other => return Err(DecodeError::UnknownEventType(other.to_owned())),
    };
    let org = r.id("org_id", OrgId::parse)?;
    let decision = Decision {
        approver: r.id("approver_id", UserId::parse)?,
        authority: level(&r, "authority")?,
        approve,
    };
    let decided = match r.document()? {
        DocumentRef::PurchaseOrder(po) => {
            Decided::PurchaseOrder(ApprovalDecided { org, po, decision })
        }
        DocumentRef::Requisition(requisition) => Decided::Requisition(RequisitionDecided {
            org,
            requisition,
            decision,
        }),
    };
    Ok((decided, r.timestamp("occurred_at")?))
}

/// `po_id` and `requisition_id` of a record naming `document`.
fn document_fields(document: &DocumentRef) -> [(&'static str, Value); 2] {
    match document {
        DocumentRef::PurchaseOrder(po) => [("po_id", some(s(po))), ("requisition_id", none())],
        DocumentRef::Requisition(r) => [("po_id", none()), ("requisition_id", some(s(r)))],
    }
}

fn decision_value(
    org: &OrgId,
    document: &DocumentRef,
    decision: &Decision,
    decision_id: &str,
    occurred_at: EventTime,
) -> Value {
    let (index, symbol) = level_symbol(decision.authority);
    let verdict = if decision.approve {
        Value::Enum(0, "APPROVE".into())
    } else {
        Value::Enum(1, "REJECT".into())
    };
    let [po, requisition] = document_fields(document);
    record(vec![
        ("decision_id", s(decision_id)),
        ("org_id", s(org)),
        po,
        requisition,
        ("approver_id", s(&decision.approver)),
        ("authority", Value::Enum(index, symbol.into())),
        ("decision", verdict),
        ("comment", none()),
        ("occurred_at", Value::TimestampMillis(occurred_at.0)),
    ])
}

/// An `ApprovalDecision` value on a purchase order, as an approval front end would publish it.
pub fn approval_decision_value(
    decided: &ApprovalDecided,
    decision_id: &str,
    occurred_at: EventTime,
) -> Value {
    let document = DocumentRef::PurchaseOrder(decided.po.clone());
    decision_value(
        &decided.org,
        &document,
        &decided.decision,
        decision_id,
        occurred_at,
    )
}

/// An `ApprovalDecision` value on a requisition.
pub fn requisition_decision_value(
    decided: &RequisitionDecided,
    decision_id: &str,
    occurred_at: EventTime,
) -> Value {
    let document = DocumentRef::Requisition(decided.requisition.clone());
    decision_value(
        &decided.org,
        &document,
        &decided.decision,
        decision_id,
        occurred_at,
    )
}

/// Decodes a `RequisitionEvent`, with its event time.
pub fn requisition_event(value: &Value) -> Result<(RequisitionSubmitted, EventTime), DecodeError> {
    let r = Record::of(value, "RequisitionEvent")?;
    match r.symbol("event_type")? {
        "SUBMITTED" => {}
        other => return Err(DecodeError::UnknownEventType(other.to_owned())),
    }
    let currency = r.currency("currency")?;
    let lines = r
        .array("lines")?
        .iter()
        .map(|v| {
            let l = Record::of(v, "RequisitionLine")?;
            Ok(RequisitionLine {
                line: l.line_number()?,
                description: l.string("description")?.to_owned(),
                quantity: l.quantity("quantity")?,
                unit_price: l.unit_price("unit_price", currency)?,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    if lines.is_empty() {
        return Err(DecodeError::NoLines);
    }
    super::amounts_fit(currency, lines.iter().map(|l| (l.unit_price, l.quantity)))?;
    let submitted = RequisitionSubmitted {
        org: r.id("org_id", OrgId::parse)?,
        requisition: r.id("requisition_id", RequisitionId::parse)?,
        requester: r.id("requester_id", UserId::parse)?,
        currency,
        lines,
    };
    Ok((submitted, r.timestamp("occurred_at")?))
}

/// A `RequisitionEvent` value, as a procurement front end would publish it.
pub fn requisition_event_value(
    submitted: &RequisitionSubmitted,
    event_id: &str,
    occurred_at: EventTime,
) -> Result<Value, EncodeError> {
    let lines = submitted
        .lines
        .iter()
        .map(|l| {
            Ok(record(vec![
                ("line_number", Value::Int(l.line.get() as i32)),
                ("description", s(&l.description)),
                ("quantity", dec("quantity", l.quantity.value(), QTY)?),
                (
                    "unit_price",
                    dec("unit_price", l.unit_price.money().amount(), PRICE)?,
                ),
            ]))
        })
        .collect::<Result<Vec<_>, EncodeError>>()?;
    Ok(record(vec![
        ("event_id", s(event_id)),
        ("event_type", Value::Enum(0, "SUBMITTED".into())),
        ("org_id", s(&submitted.org)),
        ("requisition_id", s(&submitted.requisition)),
        ("requester_id", s(&submitted.requester)),
        ("currency", s(submitted.currency)),
        ("lines", Value::Array(lines)),
        ("occurred_at", Value::TimestampMillis(occurred_at.0)),
    ]))
}

fn thresholds(
    r: &Record<'_>,
    l1: &'static str,
    l2: &'static str,
) -> Result<Thresholds, DecodeError> {
    Ok(Thresholds {
        l1_max: r.decimal(l1, AMOUNT)?,
        l2_max: r.decimal(l2, AMOUNT)?,
    })
}

/// Decodes an `OrgConfig`.
pub fn org_config(value: &Value) -> Result<OrgConfig, DecodeError> {
    let r = Record::of(value, "OrgConfig")?;
    let mut by_currency = BTreeMap::new();
    for v in r.array("approval_thresholds_by_currency")? {
        let t = Record::of(v, "CurrencyThresholds")?;
        by_currency.insert(t.currency("currency")?, thresholds(&t, "l1_max", "l2_max")?);
    }
    let mut rates = BTreeMap::new();
    for v in r.array("rates_to_base")? {
        let t = Record::of(v, "RateToBase")?;
        let rate = t.decimal("rate", RATE)?;
        if rate <= Decimal::ZERO || rate >= MAX_RATE.into() {
            return Err(DecodeError::Invalid {
                field: "rate",
                reason: format!(
                    "a rate to the base currency is above 0 and below {MAX_RATE}, got {rate}"
                ),
            });
        }
        rates.insert(t.currency("currency")?, rate);
    }
    let mut debtor_accounts = BTreeMap::new();
    for v in r.array("debtor_accounts")? {
        let a = Record::of(v, "DebtorAccount")?;
        debtor_accounts.insert(a.currency("currency")?, a.string("iban")?.to_owned());
    }
    let (installment_threshold, installment_plan) = match r.opt("installments") {
        None => (None, None),
        Some(v) => {
            let i = Record::of(v, "InstallmentSettings")?;
            let currency = i.currency("threshold_currency")?;
            let plan = InstallmentPlan {
                markup_percent: percent(&i, "markup_percent", (18, 6))?,
                installments: at_most(&i, "count", MAX_INSTALLMENTS)?,
                interval_days: at_most(&i, "interval_days", MAX_DAYS)?,
            };
            let threshold = Money::new(i.decimal("threshold_amount", AMOUNT)?, currency);
            (Some(threshold), Some(plan))
        }
    };
    let terms = r.string("default_payment_terms")?;
    Ok(OrgConfig {
        org: r.id("org_id", OrgId::parse)?,
        payment: PaymentPolicy {
            capture_discounts: r.boolean_or("capture_discounts", false)?,
            cooling_off_days: at_most(&r, "cooling_off_days", MAX_DAYS)?,
            installment_threshold,
            installment_plan,
            debtor_accounts,
        },
        default_terms: PaymentTerms::parse(terms).map_err(|e| DecodeError::Invalid {
            field: "default_payment_terms",
            reason: e.to_string(),
        })?,
        pending_wait_days: at_most(&r, "pending_invoice_wait_days", MAX_DAYS)?,
        tolerances: r
            .opt("tolerances")
            .map(|v| tolerance_keys(v).map(Box::new))
            .transpose()?,
        look_alikes: match r.opt("look_alikes") {
            None => LookAlikes::Hold,
            Some(_) => match r.symbol("look_alikes")? {
                "WARN" => LookAlikes::Warn,
                "OFF" => LookAlikes::Off,
                _ => LookAlikes::Hold,
            },
        },
        approval: ApprovalPolicy {
            base_currency: r.currency("base_currency")?,
            thresholds: thresholds(&r, "approval_l1_max", "approval_l2_max")?,
            thresholds_by_currency: by_currency,
            rates_to_base: rates,
            sla_millis: approval_sla(&r)?,
        },
        updated_at: r.timestamp("updated_at")?,
    })
}

/// An `OrgConfig` value, as an org's administrator would publish it.
pub fn org_config_value(config: &OrgConfig) -> Result<Value, EncodeError> {
    let a = &config.approval;
    let by_currency = a
        .thresholds_by_currency
        .iter()
        .map(|(currency, t)| {
            Ok(record(vec![
                ("currency", s(currency)),
                ("l1_max", dec("l1_max", t.l1_max, AMOUNT)?),
                ("l2_max", dec("l2_max", t.l2_max, AMOUNT)?),
            ]))
        })
        .collect::<Result<Vec<_>, EncodeError>>()?;
    let rates = a
        .rates_to_base
        .iter()
        .map(|(currency, rate)| {
            Ok(record(vec![
                ("currency", s(currency)),
                ("rate", dec("rate", *rate, RATE)?),
            ]))
        })
        .collect::<Result<Vec<_>, EncodeError>>()?;
    Ok(record(vec![
        ("org_id", s(&config.org)),
        ("base_currency", s(a.base_currency)),
        (
            "approval_l1_max",
            dec("approval_l1_max", a.thresholds.l1_max, AMOUNT)?,
        ),
        (
            "approval_l2_max",
            dec("approval_l2_max", a.thresholds.l2_max, AMOUNT)?,
        ),
        ("approval_thresholds_by_currency", Value::Array(by_currency)),
        ("rates_to_base", Value::Array(rates)),
        ("approval_sla_millis", Value::Long(a.sla_millis)),
        (
            "capture_discounts",
            Value::Boolean(config.payment.capture_discounts),
        ),
        (
            "cooling_off_days",
            Value::Int(config.payment.cooling_off_days as i32),
        ),
        (
            "debtor_accounts",
            Value::Array(
                config
                    .payment
                    .debtor_accounts
                    .iter()
                    .map(|(currency, iban)| {
                        record(vec![("currency", s(currency)), ("iban", s(iban))])
                    })
                    .collect(),
            ),
        ),
        ("default_payment_terms", s(config.default_terms)),
        (
            "pending_invoice_wait_days",
            Value::Int(config.pending_wait_days as i32),
        ),
        ("installments", installments_value(&config.payment)?),
        (
            "tolerances",
            match &config.tolerances {
                Some(keys) => some(tolerance_keys_value(keys)?),
                None => none(),
            },
        ),
        (
            "look_alikes",
            match config.look_alikes {
                LookAlikes::Hold => Value::Enum(0, "HOLD".into()),
                LookAlikes::Warn => Value::Enum(1, "WARN".into()),
                LookAlikes::Off => Value::Enum(2, "OFF".into()),
            },
        ),
        ("updated_at", Value::TimestampMillis(config.updated_at.0)),
    ]))
}

const TOLERANCE_ABSOLUTE: (u32, u32) = AMOUNT;
const TOLERANCE_PERCENT: (u32, u32) = (18, 6);

pub(super) fn tolerance_keys(value: &Value) -> Result<ToleranceKeys, DecodeError> {
    let keys = Record::of(value, "ToleranceKeys")?;
    let rule = |field: &'static str| -> Result<ToleranceRule, DecodeError> {
        let rule = Record::of(keys.get(field)?, "ToleranceRule")?;
        Ok(ToleranceRule {
            warn: tolerance_limit(rule.get("warn")?)?,
            block: tolerance_limit(rule.get("block")?)?,
        })
    };
    Ok(ToleranceKeys {
        price: rule("price")?,
        quantity: rule("quantity")?,
        amount: rule("amount")?,
    })
}

fn tolerance_limit(value: &Value) -> Result<Limit, DecodeError> {
    let limit = Record::of(value, "ToleranceLimit")?;
    let not_negative =
        |field: &'static str, decimal: (u32, u32)| match limit.opt_decimal(field, decimal)? {
            Some(v) if v.is_sign_negative() && !v.is_zero() => Err(DecodeError::Invalid {
                field,
                reason: format!("a tolerance cannot be negative, got {v}"),
            }),
            v => Ok(v),
        };
    Ok(Limit {
        absolute: not_negative("absolute", TOLERANCE_ABSOLUTE)?,
        percent: not_negative("percent", TOLERANCE_PERCENT)?,
        combine: match limit
            .opt("combine")
            .map(|_| limit.symbol("combine"))
            .transpose()?
        {
            None | Some("AND") => Combine::And,
            Some("OR") => Combine::Or,
            Some(other) => {
                return Err(DecodeError::Invalid {
                    field: "combine",
                    reason: format!("expected AND or OR, got {other}"),
                })
            }
        },
    })
}

pub(super) fn tolerance_keys_value(keys: &ToleranceKeys) -> Result<Value, EncodeError> {
    let limit = |l: &Limit| -> Result<Value, EncodeError> {
        let opt = |f: &'static str, v: Option<rust_decimal::Decimal>, p| match v {
            Some(v) => dec(f, v, p).map(some),
            None => Ok(none()),
        };
        Ok(record(vec![
            ("absolute", opt("absolute", l.absolute, TOLERANCE_ABSOLUTE)?),
            ("percent", opt("percent", l.percent, TOLERANCE_PERCENT)?),
            (
                "combine",
                match l.combine {
                    Combine::And => Value::Enum(0, "AND".into()),
                    Combine::Or => Value::Enum(1, "OR".into()),
                },
            ),
        ]))
    };
    let rule = |r: &ToleranceRule| -> Result<Value, EncodeError> {
        Ok(record(vec![
            ("warn", limit(&r.warn)?),
            ("block", limit(&r.block)?),
        ]))
    };
    Ok(record(vec![
        ("price", rule(&keys.price)?),
        ("quantity", rule(&keys.quantity)?),
        ("amount", rule(&keys.amount)?),
    ]))
}

fn installments_value(policy: &PaymentPolicy) -> Result<Value, EncodeError> {
    let (Some(threshold), Some(plan)) = (policy.installment_threshold, policy.installment_plan)
    else {
        return Ok(none());
    };
    Ok(some(record(vec![
        ("threshold_currency", s(threshold.currency())),
        (
            "threshold_amount",
            dec("threshold_amount", threshold.amount(), AMOUNT)?,
        ),
        (
            "markup_percent",
            dec("markup_percent", plan.markup_percent, (18, 6))?,
        ),
        ("count", Value::Int(plan.installments as i32)),
        ("interval_days", Value::Int(plan.interval_days as i32)),
    ])))
}

/// An int field that must not be negative (a count of days or installments).
/// Most days any period of an org's settings may last (payment intervals, cooling-off, wait
/// limits): ten years.
const MAX_DAYS: u32 = 3_650;
/// Most installments one plan may split a payment into.
const MAX_INSTALLMENTS: u32 = 360;
/// A rate to the base currency is below this (the weakest currencies trade at tens of
/// thousands to the dollar).
const MAX_RATE: u32 = 1_000_000_000;

/// An approval step's SLA: from a second to a year. Zero or less would escalate on every
/// timer tick (the escalation re-arms at now plus the SLA), a huge one overflow the due time.
fn approval_sla(r: &Record<'_>) -> Result<i64, DecodeError> {
    const SECOND: i64 = 1_000;
    const YEAR: i64 = 365 * 86_400_000;
    let field = "approval_sla_millis";
    let sla = r.long(field)?;
    if !(SECOND..=YEAR).contains(&sla) {
        return Err(DecodeError::Invalid {
            field,
            reason: format!("an approval SLA is from a second to a year, got {sla} ms"),
        });
    }
    Ok(sla)
}

/// A non-negative count of at most `max`.
fn at_most(r: &Record<'_>, field: &'static str, max: u32) -> Result<u32, DecodeError> {
    let value = non_negative(r, field)?;
    if value > max {
        return Err(DecodeError::Invalid {
            field,
            reason: format!("{value} is more than the {max} accepted"),
        });
    }
    Ok(value)
}

/// A percentage from 0 to 100.
fn percent(
    r: &Record<'_>,
    field: &'static str,
    decimal: (u32, u32),
) -> Result<Decimal, DecodeError> {
    let value = r.decimal(field, decimal)?;
    if value < Decimal::ZERO || value > Decimal::ONE_HUNDRED {
        return Err(DecodeError::Invalid {
            field,
            reason: format!("a percentage is from 0 to 100, got {value}"),
        });
    }
    Ok(value)
}

pub(super) fn non_negative(r: &Record<'_>, field: &'static str) -> Result<u32, DecodeError> {
    u32::try_from(r.int(field)?).map_err(|_| DecodeError::Invalid {
        field,
        reason: "must not be negative".into(),
    })
}

// ---- outputs ------------------------------------------------------------------------------

/// Whether an approval request is new or an escalation of one past its SLA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Requested,
    Escalated,
}

/// An `ApprovalRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequestRecord {
    pub org: OrgId,
    /// The purchase order or requisition to decide.
    pub document: DocumentRef,
    pub kind: RequestKind,
    pub level: ApprovalLevel,
    pub step: u32,
    pub steps: u32,
    pub requester: UserId,
    pub total: Money,
    pub due_at: EventTime,
    pub escalations: u32,
    /// An escalation: since when the step has been past its SLA.
    pub overdue_since: Option<EventTime>,
    pub occurred_at: EventTime,
}

impl ApprovalRequestRecord {
    pub fn to_value(&self) -> Result<Value, EncodeError> {
        let (index, symbol) = level_symbol(self.level);
        let kind = match self.kind {
            RequestKind::Requested => Value::Enum(0, "REQUESTED".into()),
            RequestKind::Escalated => Value::Enum(1, "ESCALATED".into()),
        };
        let [po, requisition] = document_fields(&self.document);
        Ok(record(vec![
            ("org_id", s(&self.org)),
            po,
            requisition,
            ("kind", kind),
            ("level", Value::Enum(index, symbol.into())),
            ("step", Value::Int(self.step as i32)),
            ("steps", Value::Int(self.steps as i32)),
            ("requester_id", s(&self.requester)),
            ("currency", s(self.total.currency())),
            (
                "total_amount",
                dec("total_amount", self.total.amount(), MEASURE)?,
            ),
            ("due_at", Value::TimestampMillis(self.due_at.0)),
            ("escalations", Value::Int(self.escalations as i32)),
            (
                "overdue_since",
                self.overdue_since
                    .map_or_else(none, |t| some(Value::TimestampMillis(t.0))),
            ),
            ("occurred_at", Value::TimestampMillis(self.occurred_at.0)),
        ]))
    }

    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let r = Record::of(value, "ApprovalRequest")?;
        let kind = match r.symbol("kind")? {
            "REQUESTED" => RequestKind::Requested,
            "ESCALATED" => RequestKind::Escalated,
            other => return Err(DecodeError::UnknownEventType(other.to_owned())),
        };
        let currency = r.currency("currency")?;
        Ok(Self {
            org: r.id("org_id", OrgId::parse)?,
            document: r.document()?,
            kind,
            level: level(&r, "level")?,
            step: r.int("step")? as u32,
            steps: r.int("steps")? as u32,
            requester: r.id("requester_id", UserId::parse)?,
            total: Money::new(r.decimal("total_amount", MEASURE)?, currency),
            due_at: r.timestamp("due_at")?,
            escalations: r.int("escalations")? as u32,
            overdue_since: r
                .opt("overdue_since")
                .map(|_| r.timestamp("overdue_since"))
                .transpose()?,
            occurred_at: r.timestamp("occurred_at")?,
        })
    }
}

/// A `PurchaseOrderStatus`: the latest state of one PO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoStatusRecord {
    pub org: OrgId,
    pub po: PurchaseOrderId,
    pub state: PoState,
    pub version: u64,
    pub last_action: PoAction,
    pub updated_at: EventTime,
}

impl PoStatusRecord {
    /// The record key on the compacted topic, `<org_id>/<po_id>`, each id escaped as a state
    /// key segment (`/` as `%2F`, ADR 0014): one record per PO survives compaction, and no two
    /// POs share a key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.org.key_segment(), self.po.key_segment())
    }

    pub fn to_value(&self) -> Value {
        let index = PoState::ALL
            .iter()
            .position(|s| *s == self.state)
            .unwrap_or(0) as u32;
        record(vec![
            ("org_id", s(&self.org)),
            ("po_id", s(&self.po)),
            ("state", Value::Enum(index, state_symbol(self.state))),
            ("version", Value::Long(self.version as i64)),
            ("last_action", s(action_symbol(self.last_action))),
            ("updated_at", Value::TimestampMillis(self.updated_at.0)),
        ])
    }

    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let r = Record::of(value, "PurchaseOrderStatus")?;
        let state = r.symbol("state")?;
        let state = PoState::ALL
            .into_iter()
            .find(|s| state_symbol(*s) == state)
            .ok_or(DecodeError::WrongType {
                field: "state",
                expected: "purchase order state",
            })?;
        let action = r.string("last_action")?;
        let last_action = PoAction::ALL
            .into_iter()
            .find(|a| action_symbol(*a) == action)
            .ok_or(DecodeError::WrongType {
                field: "last_action",
                expected: "purchase order action",
            })?;
        Ok(Self {
            org: r.id("org_id", OrgId::parse)?,
            po: r.id("po_id", PurchaseOrderId::parse)?,
            state,
            version: r.long("version")? as u64,
            last_action,
            updated_at: r.timestamp("updated_at")?,
        })
    }
}

/// What kind of entry an audit event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuditKind {
    Transitioned,
    Refused,
    ApprovalRequested,
    StepApproved,
    Escalated,
    /// A receipt of the PO disagrees with what was expected (from the match).
    ReceiptDiscrepancy,
    DiscrepancyResolved,
    /// A person's decision on an invoice of the PO was taken (ADR 0019).
    InvoiceDecided,
}

const AUDIT_KINDS: [(AuditKind, &str); 8] = [
    (AuditKind::Transitioned, "TRANSITIONED"),
    (AuditKind::Refused, "REFUSED"),
    (AuditKind::ApprovalRequested, "APPROVAL_REQUESTED"),
    (AuditKind::StepApproved, "STEP_APPROVED"),
    (AuditKind::Escalated, "ESCALATED"),
    (AuditKind::ReceiptDiscrepancy, "RECEIPT_DISCREPANCY"),
    (AuditKind::DiscrepancyResolved, "DISCREPANCY_RESOLVED"),
    (AuditKind::InvoiceDecided, "INVOICE_DECIDED"),
];

/// An `AuditEvent` about a purchase order or a requisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub org: OrgId,
    pub entity: DocumentRef,
    pub kind: AuditKind,
    pub action: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub version: u64,
    pub actor: Option<UserId>,
    pub detail: String,
    pub occurred_at: EventTime,
}

impl AuditRecord {
    pub fn to_value(&self) -> Value {
        let (index, symbol) = AUDIT_KINDS
            .iter()
            .enumerate()
            .find(|(_, (k, _))| *k == self.kind)
            .map(|(i, (_, name))| (i as u32, *name))
            .unwrap_or((0, "TRANSITIONED"));
        let opt = |v: &Option<String>| v.as_ref().map_or_else(none, |v| some(s(v)));
        record(vec![
            ("org_id", s(&self.org)),
            (
                "entity_type",
                match self.entity {
                    DocumentRef::PurchaseOrder(_) => Value::Enum(0, "PURCHASE_ORDER".into()),
                    DocumentRef::Requisition(_) => Value::Enum(1, "REQUISITION".into()),
                },
            ),
            ("entity_id", s(&self.entity)),
            ("kind", Value::Enum(index, symbol.into())),
            ("action", s(&self.action)),
            ("from_state", opt(&self.from_state)),
            ("to_state", opt(&self.to_state)),
            ("version", Value::Long(self.version as i64)),
            (
                "actor_id",
                self.actor.as_ref().map_or_else(none, |a| some(s(a))),
            ),
            ("detail", s(&self.detail)),
            ("occurred_at", Value::TimestampMillis(self.occurred_at.0)),
        ])
    }

    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let r = Record::of(value, "AuditEvent")?;
        let kind = r.symbol("kind")?;
        let kind = AUDIT_KINDS
            .iter()
            .find(|(_, name)| *name == kind)
            .map(|(k, _)| *k)
            .ok_or(DecodeError::UnknownEventType(kind.to_owned()))?;
        let actor = r
            .opt_string("actor_id")?
            .map(|a| {
                UserId::parse(a).map_err(|source| DecodeError::InvalidId {
                    field: "actor_id",
                    source,
                })
            })
            .transpose()?;
        Ok(Self {
            org: r.id("org_id", OrgId::parse)?,
            entity: match r.symbol("entity_type")? {
                "PURCHASE_ORDER" => {
                    DocumentRef::PurchaseOrder(r.id("entity_id", PurchaseOrderId::parse)?)
                }
                "REQUISITION" => DocumentRef::Requisition(r.id("entity_id", RequisitionId::parse)?),
                other => {
                    return Err(DecodeError::Invalid {
                        field: "entity_type",
                        reason: format!("not a routed document: {other}"),
                    })
                }
            },
            kind,
            action: r.string("action")?.to_owned(),
            from_state: r.opt_string("from_state")?.map(str::to_owned),
            to_state: r.opt_string("to_state")?.map(str::to_owned),
            version: r.long("version")? as u64,
            actor,
            detail: r.string("detail")?.to_owned(),
            occurred_at: r.timestamp("occurred_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{
        APPROVAL_DECISION, APPROVAL_REQUEST, AUDIT_EVENT, ORG_CONFIG, PO_STATUS, REQUISITION_EVENT,
    };
    use rust_decimal_macros::dec;

    fn roundtrip(contract: &crate::Contract, value: Value) -> Value {
        let bytes = contract.write_datum(value).unwrap();
        contract.read_datum(&mut &bytes[..]).unwrap()
    }

    #[test]
    fn screaming_snake_spells_states_as_the_schema_does() {
        assert_eq!(state_symbol(PoState::AwaitingApproval), "AWAITING_APPROVAL");
        assert_eq!(action_symbol(PoAction::ResolveDispute), "RESOLVE_DISPUTE");
        let apache_avro::Schema::Record(r) = PO_STATUS.schema() else {
            panic!("a record")
        };
        let apache_avro::Schema::Enum(e) = &r.fields[r.lookup["state"]].schema else {
            panic!("an enum")
        };
        let ours: Vec<String> = PoState::ALL.into_iter().map(state_symbol).collect();
        assert_eq!(e.symbols, ours);
    }

    #[test]
    fn an_org_config_keeps_every_threshold_rate_and_sla_exactly() {
        let eur = Currency::parse("EUR").unwrap();
        let usd = Currency::parse("USD").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        let mut approval = ApprovalPolicy::defaults(eur);
        approval.thresholds.l1_max = dec!(5000.50);
        approval.rates_to_base.insert(usd, dec!(0.9234567891));
        approval.thresholds_by_currency.insert(
            jpy,
            Thresholds {
                l1_max: dec!(1500000),
                l2_max: dec!(7500000),
            },
        );
        approval.sla_millis = 3_600_000;
        let mut payment = PaymentPolicy::defaults();
        payment.capture_discounts = true;
        payment
            .debtor_accounts
            .insert(eur, "DE89370400440532013000".into());
        payment.installment_threshold = Some(Money::new(dec!(250000), eur));
        payment.installment_plan = Some(InstallmentPlan {
            markup_percent: dec!(4.5),
            installments: 12,
            interval_days: 30,
        });
        let config = OrgConfig {
            org: OrgId::from_u128(1),
            approval,
            payment,
            default_terms: PaymentTerms::parse("2/10 NET 30").unwrap(),
            pending_wait_days: OrgConfig::DEFAULT_PENDING_WAIT_DAYS,
            tolerances: None,
            look_alikes: LookAlikes::Warn,
            updated_at: EventTime(5),
        };
        let back = org_config(&roundtrip(&ORG_CONFIG, org_config_value(&config).unwrap())).unwrap();
        assert_eq!(back, config);

        // Tolerance keys: absolute and percent limits, AND and OR, each read back as set.
        let mut keys = ToleranceKeys::defaults();
        keys.price.warn = Limit {
            absolute: Some(dec!(0.05)),
            percent: None,
            combine: Combine::And,
        };
        keys.amount.block = Limit {
            absolute: Some(dec!(25)),
            percent: Some(dec!(1.5)),
            combine: Combine::Or,
        };
        let config = OrgConfig {
            tolerances: Some(Box::new(keys)),
            ..config
        };
        let back = org_config(&roundtrip(&ORG_CONFIG, org_config_value(&config).unwrap())).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn requests_statuses_and_audit_events_read_back_as_written() {
        let eur = Currency::parse("EUR").unwrap();
        let request = ApprovalRequestRecord {
            org: OrgId::from_u128(1),
            document: DocumentRef::PurchaseOrder(PurchaseOrderId::from_u128(2)),
            kind: RequestKind::Escalated,
            level: ApprovalLevel::L2,
            step: 2,
            steps: 3,
            requester: UserId::from_u128(3),
            total: Money::new(dec!(20000.123456), eur),
            due_at: EventTime(10),
            escalations: 1,
            overdue_since: Some(EventTime(5)),
            occurred_at: EventTime(9),
        };
        let value = roundtrip(&APPROVAL_REQUEST, request.to_value().unwrap());
        assert_eq!(ApprovalRequestRecord::from_value(&value).unwrap(), request);

        let status = PoStatusRecord {
            org: OrgId::from_u128(1),
            po: PurchaseOrderId::from_u128(2),
            state: PoState::PartiallyReceived,
            version: 6,
            last_action: PoAction::ReceivePartially,
            updated_at: EventTime(11),
        };
        let value = roundtrip(&PO_STATUS, status.to_value());
        assert_eq!(PoStatusRecord::from_value(&value).unwrap(), status);

        let audit = AuditRecord {
            org: OrgId::from_u128(1),
            entity: DocumentRef::PurchaseOrder(PurchaseOrderId::from_u128(2)),
            kind: AuditKind::Refused,
            action: "APPROVE".into(),
            from_state: Some("AWAITING_APPROVAL".into()),
            to_state: None,
            version: 1,
            actor: Some(UserId::from_u128(3)),
            detail: "the requester cannot approve their own document".into(),
            occurred_at: EventTime(12),
        };
        let value = roundtrip(&AUDIT_EVENT, audit.to_value());
        assert_eq!(AuditRecord::from_value(&value).unwrap(), audit);

        // The same records name a requisition just as exactly.
        let requisition = DocumentRef::Requisition(RequisitionId::from_u128(4));
        let request = ApprovalRequestRecord {
            document: requisition.clone(),
            ..request
        };
        let value = roundtrip(&APPROVAL_REQUEST, request.to_value().unwrap());
        assert_eq!(ApprovalRequestRecord::from_value(&value).unwrap(), request);
        let audit = AuditRecord {
            entity: requisition,
            ..audit
        };
        let value = roundtrip(&AUDIT_EVENT, audit.to_value());
        assert_eq!(AuditRecord::from_value(&value).unwrap(), audit);
    }

    #[test]
    fn a_requisition_and_decisions_on_it_read_back_as_written() {
        let eur = Currency::parse("EUR").unwrap();
        let submitted = RequisitionSubmitted {
            org: OrgId::from_u128(1),
            requisition: RequisitionId::from_u128(2),
            requester: UserId::from_u128(3),
            currency: eur,
            lines: vec![RequisitionLine {
                line: LineNumber::new(1).unwrap(),
                description: "laptop".into(),
                quantity: Quantity::new(dec!(2.5)).unwrap(),
                unit_price: UnitPrice::new(Money::new(dec!(1299.990001), eur)).unwrap(),
            }],
        };
        let value = requisition_event_value(&submitted, "e1", EventTime(7)).unwrap();
        let back = requisition_event(&roundtrip(&REQUISITION_EVENT, value)).unwrap();
        assert_eq!(back, (submitted, EventTime(7)));

        let decided = RequisitionDecided {
            org: OrgId::from_u128(1),
            requisition: RequisitionId::from_u128(2),
            decision: Decision {
                approver: UserId::from_u128(4),
                authority: ApprovalLevel::L2,
                approve: false,
            },
        };
        let value = requisition_decision_value(&decided, "d1", EventTime(8));
        let back = approval_decision(&roundtrip(&APPROVAL_DECISION, value)).unwrap();
        assert_eq!(back, (Decided::Requisition(decided.clone()), EventTime(8)));

        // A decision naming both documents, or neither, names no document: refused.
        let on_po = ApprovalDecided {
            org: decided.org.clone(),
            po: PurchaseOrderId::from_u128(5),
            decision: decided.decision.clone(),
        };
        let mut both = approval_decision_value(&on_po, "d2", EventTime(9));
        let mut neither = both.clone();
        for (value, requisition) in [
            (&mut both, some(s(&decided.requisition))),
            (&mut neither, none()),
        ] {
            let Value::Record(fields) = value else {
                unreachable!()
            };
            for (name, field) in fields.iter_mut() {
                match name.as_str() {
                    "requisition_id" => *field = requisition.clone(),
                    "po_id" if matches!(requisition, Value::Union(0, _)) => *field = none(),
                    _ => {}
                }
            }
        }
        for value in [both, neither] {
            assert!(matches!(
                approval_decision(&roundtrip(&APPROVAL_DECISION, value)),
                Err(DecodeError::Invalid { .. })
            ));
        }
    }
}
