//! Conversions for the payment topology's records: supplier master data and bank statuses in;
//! payment schedule events and payment instructions (one per payment run) out.

use super::procurement::non_negative;
use super::{dec, none, record, s, some, DecodeError, EncodeError, Record, AMOUNT};
use apache_avro::types::Value;
use chrono::{Days, NaiveDate};
use p2p_processors::payment::{BankStatus, Payee, PaymentTerms};
use p2p_processors::tolerance_keys::ToleranceKeys;
use p2p_processors::*;

// invariant: constant dates, evaluated at compile time; an invalid one would not build.
const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
/// The first business date the pipeline accepts: no ERP posts a document before it.
// invariant: evaluated at compile time, as EPOCH.
pub const FIRST_DATE: NaiveDate = NaiveDate::from_ymd_opt(1900, 1, 1).expect("a valid date");
/// The last business date the pipeline accepts. Dates in this window plus any term, wait or
/// cooling-off period the pipeline allows (at most a few years) stay far inside the calendar's
/// range, so date arithmetic on input never overflows.
// invariant: evaluated at compile time, as EPOCH.
pub const LAST_DATE: NaiveDate = NaiveDate::from_ymd_opt(2199, 12, 31).expect("a valid date");
const DAY_MS: i64 = 86_400_000;

/// Days since the Unix epoch (Avro `date`) as a calendar date, if it is a business date
/// (from [`FIRST_DATE`] to [`LAST_DATE`]).
pub fn date_of(days: i32) -> Option<NaiveDate> {
    let date = if days >= 0 {
        EPOCH.checked_add_days(Days::new(days.unsigned_abs().into()))
    } else {
        EPOCH.checked_sub_days(Days::new(days.unsigned_abs().into()))
    }?;
    (FIRST_DATE..=LAST_DATE).contains(&date).then_some(date)
}

/// `days` as a date, brought into the business window. For dates decoding has already kept
/// in it (and the wall clock): state written before the window was enforced cannot panic.
pub fn clamped_date_of(days: i32) -> NaiveDate {
    date_of(days).unwrap_or(if days < 0 { FIRST_DATE } else { LAST_DATE })
}

/// Whether an instant (ms since the Unix epoch) falls on a business date: event times
/// outside it are refused, so timers computed from them never overflow.
pub fn timestamp_accepted(millis: i64) -> bool {
    let first = i64::from(days_of(FIRST_DATE)) * DAY_MS;
    let last = (i64::from(days_of(LAST_DATE)) + 1) * DAY_MS;
    (first..last).contains(&millis)
}

/// A calendar date as days since the Unix epoch (Avro `date`).
pub fn days_of(date: NaiveDate) -> i32 {
    (date - EPOCH).num_days() as i32
}

fn opt_date(r: &Record<'_>, field: &'static str) -> Result<Option<NaiveDate>, DecodeError> {
    r.opt(field).map(|_| r.date(field)).transpose()
}

fn opt_str(v: Option<&String>) -> Value {
    v.map_or_else(none, |v| some(s(v)))
}

/// Decodes a `SupplierMaster` record: the org it belongs to and the payee it describes.
pub fn supplier_master(value: &Value) -> Result<(OrgId, Payee), DecodeError> {
    let r = Record::of(value, "SupplierMaster")?;
    let terms = r.string("payment_terms")?;
    let payee = Payee {
        supplier: r.id("supplier_id", SupplierId::parse)?,
        name: r.string("name")?.to_owned(),
        terms: PaymentTerms::parse(terms).map_err(|e| DecodeError::Invalid {
            field: "payment_terms",
            reason: e.to_string(),
        })?,
        blocked: r.boolean_or("blocked", false)?,
        iban: r.opt_string("iban")?.map(str::to_owned),
        bic: r.opt_string("bic")?.map(str::to_owned),
        bank_account_changed_on: opt_date(&r, "bank_account_changed_on")?,
    };
    Ok((r.id("org_id", OrgId::parse)?, payee))
}

/// The supplier's own tolerance keys on a `SupplierMaster` record, if it has any (for the
/// match, which narrows the org's keys with them).
pub fn supplier_tolerances(
    value: &Value,
) -> Result<(OrgId, SupplierId, Option<ToleranceKeys>), DecodeError> {
    let r = Record::of(value, "SupplierMaster")?;
    let keys = r
        .opt("tolerances")
        .map(super::procurement::tolerance_keys)
        .transpose()?;
    Ok((
        r.id("org_id", OrgId::parse)?,
        r.id("supplier_id", SupplierId::parse)?,
        keys,
    ))
}

/// A `SupplierMaster` value, as a vendor-master system would publish it.
pub fn supplier_master_value(
    org: &OrgId,
    payee: &Payee,
    tolerances: Option<&ToleranceKeys>,
    updated_at: EventTime,
) -> Result<Value, EncodeError> {
    let tolerances = match tolerances {
        Some(keys) => some(super::procurement::tolerance_keys_value(keys)?),
        None => none(),
    };
    Ok(record(vec![
        ("org_id", s(org)),
        ("supplier_id", s(&payee.supplier)),
        ("name", s(&payee.name)),
        ("payment_terms", s(payee.terms)),
        ("blocked", Value::Boolean(payee.blocked)),
        ("iban", opt_str(payee.iban.as_ref())),
        ("bic", opt_str(payee.bic.as_ref())),
        (
            "bank_account_changed_on",
            payee
                .bank_account_changed_on
                .map_or_else(none, |d| some(Value::Date(days_of(d)))),
        ),
        ("tolerances", tolerances),
        ("updated_at", Value::TimestampMillis(updated_at.0)),
    ]))
}

/// A bank's status for one part of one invoice's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankStatusReport {
    pub org: OrgId,
    pub invoice: InvoiceId,
    pub part: u32,
    pub status: BankStatus,
    pub occurred_at: EventTime,
}

impl BankStatusReport {
    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let r = Record::of(value, "PaymentStatus")?;
        let status = match r.symbol("status")? {
            "ACCEPTED" => BankStatus::Accepted,
            "SETTLED" => BankStatus::Settled,
            "REJECTED" => BankStatus::Rejected(
                r.opt_string("reason")?
                    .unwrap_or("no reason given")
                    .to_owned(),
            ),
            other => return Err(DecodeError::UnknownEventType(other.to_owned())),
        };
        Ok(Self {
            org: r.id("org_id", OrgId::parse)?,
            invoice: r.id("invoice_id", InvoiceId::parse)?,
            part: non_negative(&r, "part")?,
            status,
            occurred_at: r.timestamp("occurred_at")?,
        })
    }

    pub fn to_value(&self) -> Value {
        let (index, symbol, reason) = match &self.status {
            BankStatus::Accepted => (0, "ACCEPTED", none()),
            BankStatus::Settled => (1, "SETTLED", none()),
            BankStatus::Rejected(reason) => (2, "REJECTED", some(s(reason))),
        };
        record(vec![
            ("org_id", s(&self.org)),
            ("invoice_id", s(&self.invoice)),
            ("part", Value::Int(self.part as i32)),
            ("status", Value::Enum(index, symbol.into())),
            ("reason", reason),
            ("occurred_at", Value::TimestampMillis(self.occurred_at.0)),
        ])
    }
}

/// The kinds of `PaymentScheduleEvent`, in the schema's enum order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScheduleEventKind {
    Scheduled,
    Held,
    HoldReleased,
    Released,
    Disbursed,
    Remitted,
    Rejected,
    Settled,
    Cancelled,
    Refused,
    /// A matched credit memo became credit for the supplier's next payments.
    CreditRecorded,
    /// Credit memos taken off a part released for payment.
    SetOff,
    /// A corrected invoice planned anew before any part was released.
    Amended,
}

const SCHEDULE_KINDS: [(ScheduleEventKind, &str); 13] = [
    (ScheduleEventKind::Scheduled, "SCHEDULED"),
    (ScheduleEventKind::Held, "HELD"),
    (ScheduleEventKind::HoldReleased, "HOLD_RELEASED"),
    (ScheduleEventKind::Released, "RELEASED"),
    (ScheduleEventKind::Disbursed, "DISBURSED"),
    (ScheduleEventKind::Remitted, "REMITTED"),
    (ScheduleEventKind::Rejected, "REJECTED"),
    (ScheduleEventKind::Settled, "SETTLED"),
    (ScheduleEventKind::Cancelled, "CANCELLED"),
    (ScheduleEventKind::Refused, "REFUSED"),
    (ScheduleEventKind::CreditRecorded, "CREDIT_RECORDED"),
    (ScheduleEventKind::SetOff, "SET_OFF"),
    (ScheduleEventKind::Amended, "AMENDED"),
];

/// A `PaymentScheduleEvent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentScheduleRecord {
    pub org: OrgId,
    pub invoice: InvoiceId,
    pub po: PurchaseOrderId,
    pub supplier: SupplierId,
    pub kind: ScheduleEventKind,
    pub part: Option<u32>,
    pub pay_on: Option<NaiveDate>,
    pub currency: Currency,
    pub amount: Option<Money>,
    pub discount: Option<Money>,
    /// Payable (or credited) less invoiced, where the invoice had more decimals than its
    /// currency's minor unit.
    pub rounding: Option<Money>,
    pub hold: Option<String>,
    pub detail: String,
    pub occurred_at: EventTime,
}

impl PaymentScheduleRecord {
    pub fn to_value(&self) -> Result<Value, EncodeError> {
        let index = SCHEDULE_KINDS
            .iter()
            .position(|(k, _)| *k == self.kind)
            .unwrap_or(0);
        let money = |field, m: Option<Money>| match m {
            Some(m) => dec(field, m.amount(), AMOUNT).map(some),
            None => Ok(none()),
        };
        Ok(record(vec![
            ("org_id", s(&self.org)),
            ("invoice_id", s(&self.invoice)),
            ("po_id", s(&self.po)),
            ("supplier_id", s(&self.supplier)),
            (
                "event",
                Value::Enum(index as u32, SCHEDULE_KINDS[index].1.into()),
            ),
            (
                "part",
                self.part.map_or_else(none, |p| some(Value::Int(p as i32))),
            ),
            (
                "pay_on",
                self.pay_on
                    .map_or_else(none, |d| some(Value::Date(days_of(d)))),
            ),
            ("currency", s(self.currency)),
            ("amount", money("amount", self.amount)?),
            ("discount", money("discount", self.discount)?),
            ("rounding", money("rounding", self.rounding)?),
            ("hold", opt_str(self.hold.as_ref())),
            ("detail", s(&self.detail)),
            ("occurred_at", Value::TimestampMillis(self.occurred_at.0)),
        ]))
    }

    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let r = Record::of(value, "PaymentScheduleEvent")?;
        let symbol = r.symbol("event")?;
        let kind = SCHEDULE_KINDS
            .iter()
            .find(|(_, s)| *s == symbol)
            .map(|(k, _)| *k)
            .ok_or(DecodeError::UnknownEventType(symbol.to_owned()))?;
        let currency = r.currency("currency")?;
        let money = |field| -> Result<Option<Money>, DecodeError> {
            Ok(r.opt_decimal(field, AMOUNT)?
                .map(|a| Money::new(a, currency)))
        };
        Ok(Self {
            org: r.id("org_id", OrgId::parse)?,
            invoice: r.id("invoice_id", InvoiceId::parse)?,
            po: r.id("po_id", PurchaseOrderId::parse)?,
            supplier: r.id("supplier_id", SupplierId::parse)?,
            kind,
            part: r
                .opt("part")
                .map(|_| non_negative(&r, "part"))
                .transpose()?,
            pay_on: opt_date(&r, "pay_on")?,
            currency,
            amount: money("amount")?,
            discount: money("discount")?,
            rounding: money("rounding")?,
            hold: r.opt_string("hold")?.map(str::to_owned),
            detail: r.string("detail")?.to_owned(),
            occurred_at: r.timestamp("occurred_at")?,
        })
    }
}

/// One payment of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructedPayment {
    pub invoice: InvoiceId,
    pub part: u32,
    pub supplier: SupplierId,
    pub creditor_name: String,
    pub creditor_iban: String,
    pub creditor_bic: Option<String>,
    pub amount: Money,
    pub remittance: String,
}

impl InstructedPayment {
    /// Unique per part and stable across replays, so a bank sees a repeat as the same payment.
    pub fn end_to_end_id(&self) -> String {
        format!("{}/{}", self.invoice, self.part)
    }
}

/// A `PaymentInstruction`: one payment run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentInstructionRecord {
    pub run_id: String,
    pub org: OrgId,
    pub currency: Currency,
    pub debtor_account: String,
    pub execution_date: NaiveDate,
    pub total: Money,
    pub payments: Vec<InstructedPayment>,
    pub created_at: EventTime,
}

impl PaymentInstructionRecord {
    pub fn to_value(&self) -> Result<Value, EncodeError> {
        let payments = self
            .payments
            .iter()
            .map(|p| {
                Ok(record(vec![
                    ("end_to_end_id", s(p.end_to_end_id())),
                    ("invoice_id", s(&p.invoice)),
                    ("part", Value::Int(p.part as i32)),
                    ("supplier_id", s(&p.supplier)),
                    ("creditor_name", s(&p.creditor_name)),
                    ("creditor_iban", s(&p.creditor_iban)),
                    ("creditor_bic", opt_str(p.creditor_bic.as_ref())),
                    ("amount", dec("amount", p.amount.amount(), AMOUNT)?),
                    ("remittance", s(&p.remittance)),
                ]))
            })
            .collect::<Result<Vec<_>, EncodeError>>()?;
        Ok(record(vec![
            ("run_id", s(&self.run_id)),
            ("org_id", s(&self.org)),
            ("currency", s(self.currency)),
            ("debtor_account", s(&self.debtor_account)),
            ("execution_date", Value::Date(days_of(self.execution_date))),
            (
                "total_amount",
                dec("total_amount", self.total.amount(), AMOUNT)?,
            ),
            ("payments", Value::Array(payments)),
            ("created_at", Value::TimestampMillis(self.created_at.0)),
        ]))
    }

    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let r = Record::of(value, "PaymentInstruction")?;
        let currency = r.currency("currency")?;
        let payments = r
            .array("payments")?
            .iter()
            .map(|v| {
                let p = Record::of(v, "InstructedPayment")?;
                Ok(InstructedPayment {
                    invoice: p.id("invoice_id", InvoiceId::parse)?,
                    part: non_negative(&p, "part")?,
                    supplier: p.id("supplier_id", SupplierId::parse)?,
                    creditor_name: p.string("creditor_name")?.to_owned(),
                    creditor_iban: p.string("creditor_iban")?.to_owned(),
                    creditor_bic: p.opt_string("creditor_bic")?.map(str::to_owned),
                    amount: Money::new(p.decimal("amount", AMOUNT)?, currency),
                    remittance: p.string("remittance")?.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Ok(Self {
            run_id: r.string("run_id")?.to_owned(),
            org: r.id("org_id", OrgId::parse)?,
            currency,
            debtor_account: r.string("debtor_account")?.to_owned(),
            execution_date: r.date("execution_date")?,
            total: Money::new(r.decimal("total_amount", AMOUNT)?, currency),
            payments,
            created_at: r.timestamp("created_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{
        PAYMENT_INSTRUCTION, PAYMENT_SCHEDULE, PAYMENT_STATUS, SUPPLIER_MASTER,
    };
    use rust_decimal_macros::dec;

    fn roundtrip(contract: &crate::Contract, value: Value) -> Value {
        let bytes = contract.write_datum(value).unwrap();
        contract.read_datum(&mut &bytes[..]).unwrap()
    }

    #[test]
    fn a_matched_invoice_reads_back_whole_with_its_invoice_date() {
        let eur = Currency::parse("EUR").unwrap();
        let matched = InvoiceMatched {
            revision: 4,
            org: OrgId::from_u128(1),
            invoice: InvoiceId::from_u128(2),
            kind: DocumentKind::CreditMemo,
            po: PurchaseOrderId::from_u128(3),
            supplier: SupplierId::from_u128(4),
            number: InvoiceNumber::parse("SI-9").unwrap(),
            total: Money::new(dec!(1234.5678), eur),
            lines: vec![InvoiceLine {
                line: LineNumber::new(1).unwrap(),
                quantity: Quantity::new(dec!(3)).unwrap(),
                unit_price: UnitPrice::new(Money::new(dec!(411.522600), eur)).unwrap(),
            }],
            invoice_date: 20_500,
            matched_at: EventTime(1_800_000_000_000),
            warnings: vec![],
        };
        let value = super::super::invoice_matched_value(&matched).unwrap();
        let value = roundtrip(&crate::contracts::INVOICE_MATCHED, value);
        assert_eq!(super::super::invoice_matched(&value).unwrap(), matched);

        // Warnings travel with the match, each with expected, actual and delta for the clerk.
        let warned = InvoiceMatched {
            warnings: vec![ExceptionReason::PriceVariance {
                line: LineNumber::new(1).unwrap(),
                expected: Money::new(dec!(400), eur),
                actual: Money::new(dec!(411.5226), eur),
            }],
            ..matched
        };
        let value = super::super::invoice_matched_value(&warned).unwrap();
        let view =
            super::super::matched_record(&roundtrip(&crate::contracts::INVOICE_MATCHED, value))
                .unwrap();
        assert_eq!(view.warnings.len(), 1);
        let warning = &view.warnings[0];
        assert_eq!(warning.reason, "PRICE_VARIANCE");
        assert_eq!(warning.line_number, Some(1));
        assert_eq!(warning.expected, Some(dec!(400)));
        assert_eq!(warning.actual, Some(dec!(411.5226)));
        assert_eq!(warning.delta, Some(dec!(11.5226)));
    }

    #[test]
    fn dates_are_days_since_the_epoch_both_ways() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        assert_eq!(date_of(days_of(d)), Some(d));
        assert_eq!(days_of(EPOCH), 0);
        assert_eq!(date_of(-1), NaiveDate::from_ymd_opt(1969, 12, 31));
        // Outside the business window, and at the ends of the Avro int (the first panicked
        // the payment topology on every restart): refused, never a panic.
        assert_eq!(date_of(days_of(FIRST_DATE) - 1), None);
        assert_eq!(date_of(days_of(LAST_DATE) + 1), None);
        assert_eq!(date_of(i32::MIN), None);
        assert_eq!(date_of(i32::MAX), None);
        assert_eq!(clamped_date_of(i32::MIN), FIRST_DATE);
    }

    #[test]
    fn supplier_master_bank_status_schedule_and_instruction_read_back_as_written() {
        let org = OrgId::from_u128(1);
        let payee = Payee {
            supplier: SupplierId::from_u128(2),
            name: "Acme Bolts GmbH".into(),
            terms: PaymentTerms::parse("2/10 NET 30").unwrap(),
            blocked: true,
            iban: Some("DE02120300000000202051".into()),
            bic: None,
            bank_account_changed_on: NaiveDate::from_ymd_opt(2026, 11, 1),
        };
        let value = roundtrip(
            &SUPPLIER_MASTER,
            supplier_master_value(&org, &payee, None, EventTime(3)).unwrap(),
        );
        assert_eq!(
            supplier_master(&value).unwrap(),
            (org.clone(), payee.clone())
        );
        assert_eq!(
            supplier_tolerances(&value).unwrap(),
            (org.clone(), payee.supplier.clone(), None)
        );
        // The supplier's own tolerance keys ride on the same record, for the match.
        let mut keys = ToleranceKeys::defaults();
        keys.quantity.block = p2p_processors::tolerance_keys::Limit::EXACT;
        let value = roundtrip(
            &SUPPLIER_MASTER,
            supplier_master_value(&org, &payee, Some(&keys), EventTime(3)).unwrap(),
        );
        assert_eq!(
            supplier_tolerances(&value).unwrap(),
            (org.clone(), payee.supplier.clone(), Some(keys))
        );
        assert_eq!(supplier_master(&value).unwrap(), (org.clone(), payee));

        let status = BankStatusReport {
            org: org.clone(),
            invoice: InvoiceId::from_u128(4),
            part: 2,
            status: BankStatus::Rejected("AC04 closed account".into()),
            occurred_at: EventTime(5),
        };
        let value = roundtrip(&PAYMENT_STATUS, status.to_value());
        assert_eq!(BankStatusReport::from_value(&value).unwrap(), status);

        let eur = Currency::parse("EUR").unwrap();
        let scheduled = PaymentScheduleRecord {
            org: org.clone(),
            invoice: InvoiceId::from_u128(4),
            po: PurchaseOrderId::from_u128(6),
            supplier: SupplierId::from_u128(2),
            kind: ScheduleEventKind::Scheduled,
            part: Some(1),
            pay_on: NaiveDate::from_ymd_opt(2026, 12, 2),
            currency: eur,
            amount: Some(Money::new(dec!(980.00), eur)),
            discount: Some(Money::new(dec!(20.00), eur)),
            rounding: Some(Money::new(dec!(-0.0049), eur)),
            hold: None,
            detail: "2/10 NET 30".into(),
            occurred_at: EventTime(7),
        };
        let value = roundtrip(&PAYMENT_SCHEDULE, scheduled.to_value().unwrap());
        assert_eq!(
            PaymentScheduleRecord::from_value(&value).unwrap(),
            scheduled
        );

        let instruction = PaymentInstructionRecord {
            run_id: "run".into(),
            org,
            currency: eur,
            debtor_account: "DE89370400440532013000".into(),
            execution_date: NaiveDate::from_ymd_opt(2026, 12, 2).unwrap(),
            total: Money::new(dec!(980.00), eur),
            payments: vec![InstructedPayment {
                invoice: InvoiceId::from_u128(4),
                part: 1,
                supplier: SupplierId::from_u128(2),
                creditor_name: "Acme Bolts GmbH".into(),
                creditor_iban: "DE02120300000000202051".into(),
                creditor_bic: Some("MARKDEF1100".into()),
                amount: Money::new(dec!(980.00), eur),
                remittance: "SI-1".into(),
            }],
            created_at: EventTime(8),
        };
        let value = roundtrip(&PAYMENT_INSTRUCTION, instruction.to_value().unwrap());
        assert_eq!(
            PaymentInstructionRecord::from_value(&value).unwrap(),
            instruction
        );
    }
}
