//! Conversions between Avro values (as written by any producer of our schemas) and domain
//! types. Decoding validates everything the domain needs: an id that does not parse, a
//! currency that is not ISO 4217 or a negative quantity is a typed `DecodeError`, which the
//! runtime sends to the dead-letter queue with its reason.

use crate::decimal::{self, DecimalError};
use apache_avro::types::Value;
use chrono::NaiveDate;
use p2p_processors::*;
use rust_decimal::Decimal;

pub mod payment;
pub mod procurement;
pub mod status;

const QTY: (u32, u32) = (18, 4);
const PRICE: (u32, u32) = (18, 6);
const AMOUNT: (u32, u32) = (18, 4);
const MEASURE: (u32, u32) = (28, 10);
/// Most lines (or other entries) one document may carry. SAP caps a purchasing document's
/// items well below this; a larger array is refused as `invalid-document`.
pub const MAX_ENTRIES: usize = 1_000;

/// Why an Avro value is not a valid document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("expected a {expected} record")]
    NotARecord { expected: &'static str },
    #[error("field `{0}` is missing")]
    MissingField(&'static str),
    #[error("field `{field}` is not a {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field `{field}`: {source}")]
    InvalidId {
        field: &'static str,
        source: IdError,
    },
    #[error("field `{field}`: {source}")]
    InvalidMoney {
        field: &'static str,
        source: MoneyError,
    },
    #[error("field `{field}`: {source}")]
    InvalidDecimal {
        field: &'static str,
        source: DecimalError,
    },
    #[error("field `line_number`: {0}")]
    InvalidLineNumber(LineNumberError),
    #[error("field `invoice_number`: {0}")]
    InvalidInvoiceNumber(InvoiceNumberError),
    #[error("field `{field}` is required when event_type is {event_type}")]
    RequiredFor {
        field: &'static str,
        event_type: &'static str,
    },
    #[error("event_type {0:?} is not handled by this version of the pipeline")]
    UnknownEventType(String),
    #[error("a document needs at least one line")]
    NoLines,
    #[error("field `{field}`: {count} entries, more than the {max} accepted")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error(
        "field `{field}`: day {days} since 1970-01-01 is outside the dates accepted \
         (1900-01-01 to 2199-12-31)"
    )]
    DateOutOfRange { field: &'static str, days: i32 },
    #[error(
        "field `{field}`: {millis} ms since 1970-01-01 is outside the times accepted \
         (1900-01-01 to 2199-12-31)"
    )]
    TimestampOutOfRange { field: &'static str, millis: i64 },
    #[error("field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Why a domain value cannot be written with our schemas.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("field `{field}`: {source}")]
    Decimal {
        field: &'static str,
        source: DecimalError,
    },
    #[error("field `{field}`: {value} does not fit the schema's int")]
    OutOfRange { field: &'static str, value: String },
}

/// A view of an Avro record with typed, named-error field access.
struct Record<'a> {
    fields: &'a [(String, Value)],
}

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

impl<'a> Record<'a> {
    fn of(value: &'a Value, expected: &'static str) -> Result<Self, DecodeError> {
        match unwrap_union(value) {
            Value::Record(fields) => Ok(Self { fields }),
            _ => Err(DecodeError::NotARecord { expected }),
        }
    }

    fn opt(&self, field: &'static str) -> Option<&'a Value> {
        self.fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, v)| unwrap_union(v))
            .filter(|v| !matches!(v, Value::Null))
    }

    fn get(&self, field: &'static str) -> Result<&'a Value, DecodeError> {
        self.opt(field).ok_or(DecodeError::MissingField(field))
    }

    fn string(&self, field: &'static str) -> Result<&'a str, DecodeError> {
        match self.get(field)? {
            Value::String(s) => Ok(s),
            _ => Err(DecodeError::WrongType {
                field,
                expected: "string",
            }),
        }
    }

    fn opt_string(&self, field: &'static str) -> Result<Option<&'a str>, DecodeError> {
        match self.opt(field) {
            None => Ok(None),
            Some(_) => self.string(field).map(Some),
        }
    }

    fn symbol(&self, field: &'static str) -> Result<&'a str, DecodeError> {
        match self.get(field)? {
            Value::Enum(_, s) | Value::String(s) => Ok(s),
            _ => Err(DecodeError::WrongType {
                field,
                expected: "enum",
            }),
        }
    }

    fn int(&self, field: &'static str) -> Result<i32, DecodeError> {
        match self.get(field)? {
            Value::Int(i) | Value::Date(i) => Ok(*i),
            _ => Err(DecodeError::WrongType {
                field,
                expected: "int",
            }),
        }
    }

    fn long(&self, field: &'static str) -> Result<i64, DecodeError> {
        match self.get(field)? {
            Value::Long(l) => Ok(*l),
            Value::Int(i) => Ok(i64::from(*i)),
            _ => Err(DecodeError::WrongType {
                field,
                expected: "long",
            }),
        }
    }

    fn timestamp(&self, field: &'static str) -> Result<EventTime, DecodeError> {
        match self.get(field)? {
            Value::TimestampMillis(t) | Value::Long(t) if payment::timestamp_accepted(*t) => {
                Ok(EventTime(*t))
            }
            Value::TimestampMillis(t) | Value::Long(t) => {
                Err(DecodeError::TimestampOutOfRange { field, millis: *t })
            }
            _ => Err(DecodeError::WrongType {
                field,
                expected: "timestamp-millis",
            }),
        }
    }

    fn boolean_or(&self, field: &'static str, default: bool) -> Result<bool, DecodeError> {
        match self.opt(field) {
            None => Ok(default),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(_) => Err(DecodeError::WrongType {
                field,
                expected: "boolean",
            }),
        }
    }

    /// A decimal written at the schema's `(precision, scale)`: more digits than the schema's
    /// precision (a writer may put any bytes there) is refused, so arithmetic on what was read
    /// stays far inside `Decimal`'s range.
    fn decimal(
        &self,
        field: &'static str,
        (precision, scale): (u32, u32),
    ) -> Result<Decimal, DecodeError> {
        match self.get(field)? {
            Value::Decimal(d) => decimal::from_avro(d, scale),
            Value::Bytes(b) => decimal::from_twos_complement(b, scale),
            _ => {
                return Err(DecodeError::WrongType {
                    field,
                    expected: "decimal",
                })
            }
        }
        .and_then(|value| decimal::within_precision(value, precision))
        .map_err(|source| DecodeError::InvalidDecimal { field, source })
    }

    fn opt_decimal(
        &self,
        field: &'static str,
        decimal: (u32, u32),
    ) -> Result<Option<Decimal>, DecodeError> {
        match self.opt(field) {
            None => Ok(None),
            Some(_) => self.decimal(field, decimal).map(Some),
        }
    }

    /// A business date (Avro `date`), within [`payment::FIRST_DATE`] to [`payment::LAST_DATE`].
    fn date(&self, field: &'static str) -> Result<NaiveDate, DecodeError> {
        let days = self.int(field)?;
        payment::date_of(days).ok_or(DecodeError::DateOutOfRange { field, days })
    }

    /// An array of at most [`MAX_ENTRIES`] items: a document of more lines than any ERP
    /// sends would make each batch that touches it slow and its state huge.
    fn array(&self, field: &'static str) -> Result<&'a [Value], DecodeError> {
        match self.opt(field) {
            None => Ok(&[]),
            Some(Value::Array(items)) if items.len() > MAX_ENTRIES => Err(DecodeError::TooMany {
                field,
                count: items.len(),
                max: MAX_ENTRIES,
            }),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(DecodeError::WrongType {
                field,
                expected: "array",
            }),
        }
    }

    fn id<T>(
        &self,
        field: &'static str,
        parse: fn(&str) -> Result<T, IdError>,
    ) -> Result<T, DecodeError> {
        parse(self.string(field)?).map_err(|source| DecodeError::InvalidId { field, source })
    }

    fn opt_id<T>(
        &self,
        field: &'static str,
        parse: fn(&str) -> Result<T, IdError>,
    ) -> Result<Option<T>, DecodeError> {
        self.opt_string(field)?
            .map(|v| parse(v).map_err(|source| DecodeError::InvalidId { field, source }))
            .transpose()
    }

    /// The document a record names by exactly one of `po_id` and `requisition_id`.
    fn document(&self) -> Result<DocumentRef, DecodeError> {
        let po = self.opt_id("po_id", PurchaseOrderId::parse)?;
        let requisition = self.opt_id("requisition_id", RequisitionId::parse)?;
        match (po, requisition) {
            (Some(po), None) => Ok(DocumentRef::PurchaseOrder(po)),
            (None, Some(requisition)) => Ok(DocumentRef::Requisition(requisition)),
            (po, _) => Err(DecodeError::Invalid {
                field: if po.is_some() {
                    "requisition_id"
                } else {
                    "po_id"
                },
                reason: "exactly one of po_id and requisition_id names the document".into(),
            }),
        }
    }

    fn currency(&self, field: &'static str) -> Result<Currency, DecodeError> {
        Currency::parse(self.string(field)?)
            .map_err(|source| DecodeError::InvalidMoney { field, source })
    }

    fn quantity(&self, field: &'static str) -> Result<Quantity, DecodeError> {
        Quantity::new(self.decimal(field, QTY)?)
            .map_err(|source| DecodeError::InvalidMoney { field, source })
    }

    fn unit_price(
        &self,
        field: &'static str,
        currency: Currency,
    ) -> Result<UnitPrice, DecodeError> {
        UnitPrice::new(Money::new(self.decimal(field, PRICE)?, currency))
            .map_err(|source| DecodeError::InvalidMoney { field, source })
    }

    fn line_number(&self) -> Result<LineNumber, DecodeError> {
        LineNumber::new(i64::from(self.int("line_number")?)).map_err(DecodeError::InvalidLineNumber)
    }
}

/// A decoded input document with the event time it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub input: MatchInput,
    pub occurred_at: EventTime,
}

/// Supplier, currency and lines, required for SUBMITTED and ISSUED.
fn order_terms(
    r: &Record<'_>,
    event_type: &'static str,
) -> Result<(SupplierId, Currency, Vec<PurchaseOrderLine>), DecodeError> {
    let required = |field: &'static str| DecodeError::RequiredFor { field, event_type };
    let supplier_id = r
        .opt_string("supplier_id")?
        .ok_or(required("supplier_id"))?;
    let supplier = SupplierId::parse(supplier_id).map_err(|source| DecodeError::InvalidId {
        field: "supplier_id",
        source,
    })?;
    if r.opt_string("currency")?.is_none() {
        return Err(required("currency"));
    }
    let currency = r.currency("currency")?;
    let lines = r
        .array("lines")?
        .iter()
        .map(|v| {
            let l = Record::of(v, "PurchaseOrderLine")?;
            Ok(PurchaseOrderLine {
                line: l.line_number()?,
                description: l.string("description")?.to_owned(),
                quantity: l.quantity("quantity")?,
                unit_price: l.unit_price("unit_price", currency)?,
                receipt_required: l.boolean_or("receipt_required", true)?,
                inspection_required: l.boolean_or("inspection_required", false)?,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    if lines.is_empty() {
        return Err(DecodeError::NoLines);
    }
    amounts_fit(currency, lines.iter().map(|l| (l.unit_price, l.quantity)))?;
    Ok((supplier, currency, lines))
}

/// Decodes a `PurchaseOrderEvent` as an input of the match.
pub fn purchase_order_event(value: &Value) -> Result<Decoded, DecodeError> {
    let (event, occurred_at) = purchase_order(value)?;
    Ok(Decoded {
        input: MatchInput::PurchaseOrder(event),
        occurred_at,
    })
}

/// Decodes a `PurchaseOrderEvent`, with its event time.
pub fn purchase_order(value: &Value) -> Result<(PurchaseOrderEvent, EventTime), DecodeError> {
    let r = Record::of(value, "PurchaseOrderEvent")?;
    let org = r.id("org_id", OrgId::parse)?;
    let po = r.id("po_id", PurchaseOrderId::parse)?;
    let requisition = r.opt_id("requisition_id", RequisitionId::parse)?;
    let step = |step| {
        PurchaseOrderEvent::Stepped(PurchaseOrderStepped {
            org: org.clone(),
            po: po.clone(),
            step,
        })
    };
    let event = match r.symbol("event_type")? {
        "ISSUED" => {
            let (supplier, currency, lines) = order_terms(&r, "ISSUED")?;
            PurchaseOrderEvent::Issued(PurchaseOrderIssued {
                org,
                po,
                supplier,
                currency,
                lines,
                requisition,
            })
        }
        "SUBMITTED" => {
            let (supplier, currency, lines) = order_terms(&r, "SUBMITTED")?;
            let requester = r
                .opt_string("requester_id")?
                .ok_or(DecodeError::RequiredFor {
                    field: "requester_id",
                    event_type: "SUBMITTED",
                })?;
            let requester = UserId::parse(requester).map_err(|source| DecodeError::InvalidId {
                field: "requester_id",
                source,
            })?;
            PurchaseOrderEvent::Submitted(PurchaseOrderSubmitted {
                org,
                po,
                supplier,
                currency,
                lines,
                requester,
                requisition,
            })
        }
        "CANCELLED" => PurchaseOrderEvent::Cancelled(PurchaseOrderCancelled { org, po }),
        "ACKNOWLEDGED" => step(PurchaseOrderStep::Acknowledged),
        "DISPUTED" => step(PurchaseOrderStep::Disputed),
        "DISPUTE_RESOLVED" => step(PurchaseOrderStep::DisputeResolved),
        "CLOSED" => step(PurchaseOrderStep::Closed),
        other => return Err(DecodeError::UnknownEventType(other.to_owned())),
    };
    Ok((event, r.timestamp("occurred_at")?))
}

/// Decodes a `GoodsReceiptEvent`.
pub fn goods_receipt_event(value: &Value) -> Result<Decoded, DecodeError> {
    let r = Record::of(value, "GoodsReceiptEvent")?;
    let lines = r
        .array("lines")?
        .iter()
        .map(|v| {
            let l = Record::of(v, "GoodsReceiptLine")?;
            let expected = match l.opt("expected_quantity") {
                None => None,
                Some(_) => Some(l.quantity("expected_quantity")?),
            };
            Ok(ReceiptLine {
                line: l.line_number()?,
                received: l.quantity("received_quantity")?,
                returned: l.quantity("returned_quantity")?,
                expected,
                accepted: match l.opt("accepted_quantity") {
                    None => Quantity::ZERO,
                    Some(_) => l.quantity("accepted_quantity")?,
                },
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let resolves = match r.opt("resolves_grn_id") {
        None => None,
        Some(_) => Some(r.id("resolves_grn_id", GoodsReceiptId::parse)?),
    };
    if lines.is_empty() && resolves.is_none() {
        return Err(DecodeError::NoLines);
    }
    Ok(Decoded {
        input: MatchInput::GoodsReceipt(GoodsReceived {
            org: r.id("org_id", OrgId::parse)?,
            grn: r.id("grn_id", GoodsReceiptId::parse)?,
            po: r.id("po_id", PurchaseOrderId::parse)?,
            lines,
            resolves,
        }),
        occurred_at: r.timestamp("occurred_at")?,
    })
}

/// The billed lines of an `InvoiceEvent` or an `InvoiceMatched` (the same record type).
fn invoice_lines(r: &Record<'_>, currency: Currency) -> Result<Vec<InvoiceLine>, DecodeError> {
    r.array("lines")?
        .iter()
        .map(|v| {
            let l = Record::of(v, "InvoiceLine")?;
            Ok(InvoiceLine {
                line: l.line_number()?,
                quantity: l.quantity("quantity")?,
                unit_price: l.unit_price("unit_price", currency)?,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()
        .and_then(|lines| {
            amounts_fit(currency, lines.iter().map(|l| (l.unit_price, l.quantity)))?;
            Ok(lines)
        })
}

/// The largest amount an output can carry (`AMOUNT`'s precision at its scale): a document
/// whose lines come to more could be matched but never paid, so it is refused at the door.
fn amount_limit() -> Decimal {
    Decimal::from_i128_with_scale(10i128.pow(AMOUNT.0 - AMOUNT.1), 0)
}

/// Each line's amount and the lines' total fit what the outputs can carry.
fn amounts_fit(
    currency: Currency,
    lines: impl IntoIterator<Item = (UnitPrice, Quantity)>,
) -> Result<(), DecodeError> {
    let limit = amount_limit();
    let too_large = |amount: Decimal| DecodeError::Invalid {
        field: "lines",
        reason: format!(
            "the lines come to {amount} {currency} or more, beyond the largest amount \
             accepted ({limit} {currency})"
        ),
    };
    let mut total = Decimal::ZERO;
    for (price, quantity) in lines {
        // Each factor is within its schema's precision, so the product cannot overflow.
        let amount = price.money().amount() * quantity.value();
        total = total
            .checked_add(amount)
            .filter(|t| t.abs() < limit)
            .ok_or_else(|| too_large(total.saturating_add(amount)))?;
    }
    Ok(())
}

/// `total_amount`: within the schema's precision, and not negative (a credit memo says it is
/// one with `document_type`, its amount is positive).
fn document_total(r: &Record<'_>, currency: Currency) -> Result<Money, DecodeError> {
    let total = r.decimal("total_amount", AMOUNT)?;
    if total.is_sign_negative() && !total.is_zero() {
        return Err(DecodeError::Invalid {
            field: "total_amount",
            reason: format!(
                "{total} is negative; a credit memo carries a positive amount and \
                 document_type CREDIT_MEMO"
            ),
        });
    }
    Ok(Money::new(total, currency))
}

/// Decodes an `InvoiceEvent`.
pub fn invoice_event(value: &Value) -> Result<Decoded, DecodeError> {
    let r = Record::of(value, "InvoiceEvent")?;
    let currency = r.currency("currency")?;
    let lines = invoice_lines(&r, currency)?;
    if lines.is_empty() {
        return Err(DecodeError::NoLines);
    }
    Ok(Decoded {
        input: MatchInput::Invoice(InvoiceReceived {
            org: r.id("org_id", OrgId::parse)?,
            invoice: r.id("invoice_id", InvoiceId::parse)?,
            kind: document_kind(&r)?,
            supplier: r.id("supplier_id", SupplierId::parse)?,
            number: InvoiceNumber::parse(r.string("invoice_number")?)
                .map_err(DecodeError::InvalidInvoiceNumber)?,
            po: r.id("po_id", PurchaseOrderId::parse)?,
            currency,
            lines,
            total: document_total(&r, currency)?,
            invoice_date: payment::days_of(r.date("invoice_date")?),
            // A blank block key is no block, as in the ERPs that send one always.
            payment_block: r
                .opt_string("payment_block")?
                .map(str::trim)
                .filter(|reason| !reason.is_empty())
                .map(str::to_owned),
            posted_by: r.opt_id("posted_by", UserId::parse)?,
        }),
        occurred_at: r.timestamp("occurred_at")?,
    })
}

/// `document_type`; absent (a writer older than the field) is an invoice.
fn document_kind(r: &Record<'_>) -> Result<DocumentKind, DecodeError> {
    match r
        .opt("document_type")
        .map(|_| r.symbol("document_type"))
        .transpose()?
    {
        None | Some("INVOICE") => Ok(DocumentKind::Invoice),
        Some("CREDIT_MEMO") => Ok(DocumentKind::CreditMemo),
        Some(other) => Err(DecodeError::Invalid {
            field: "document_type",
            reason: format!("expected INVOICE or CREDIT_MEMO, got {other}"),
        }),
    }
}

// ---- encoding ---------------------------------------------------------------------------

fn document_type(kind: DocumentKind) -> Value {
    match kind {
        DocumentKind::Invoice => Value::Enum(0, "INVOICE".into()),
        DocumentKind::CreditMemo => Value::Enum(1, "CREDIT_MEMO".into()),
    }
}

fn dec(
    field: &'static str,
    value: Decimal,
    (precision, scale): (u32, u32),
) -> Result<Value, EncodeError> {
    decimal::to_avro(value, precision, scale)
        .map(Value::Decimal)
        .map_err(|source| EncodeError::Decimal { field, source })
}

fn s(value: impl ToString) -> Value {
    Value::String(value.to_string())
}

fn some(value: Value) -> Value {
    Value::Union(1, Box::new(value))
}

fn none() -> Value {
    Value::Union(0, Box::new(Value::Null))
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn order_lines(lines: &[PurchaseOrderLine]) -> Result<Vec<Value>, EncodeError> {
    lines
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
                ("receipt_required", Value::Boolean(l.receipt_required)),
                ("inspection_required", Value::Boolean(l.inspection_required)),
            ]))
        })
        .collect()
}

/// The symbol of a `PurchaseOrderEventType`, with its index in the schema's enum.
fn po_event_type(event: &PurchaseOrderEvent) -> (u32, &'static str) {
    match event {
        PurchaseOrderEvent::Issued(_) => (0, "ISSUED"),
        PurchaseOrderEvent::Cancelled(_) => (1, "CANCELLED"),
        PurchaseOrderEvent::Submitted(_) => (2, "SUBMITTED"),
        PurchaseOrderEvent::Stepped(e) => match e.step {
            PurchaseOrderStep::Acknowledged => (3, "ACKNOWLEDGED"),
            PurchaseOrderStep::Disputed => (4, "DISPUTED"),
            PurchaseOrderStep::DisputeResolved => (5, "DISPUTE_RESOLVED"),
            PurchaseOrderStep::Closed => (6, "CLOSED"),
        },
    }
}

/// A `PurchaseOrderEvent` value, as an ERP would publish it.
pub fn purchase_order_event_value(
    event: &PurchaseOrderEvent,
    event_id: &str,
    occurred_at: EventTime,
) -> Result<Value, EncodeError> {
    let (supplier, currency, lines, requester) = match event {
        PurchaseOrderEvent::Issued(e) => (
            some(s(&e.supplier)),
            some(s(e.currency)),
            order_lines(&e.lines)?,
            none(),
        ),
        PurchaseOrderEvent::Submitted(e) => (
            some(s(&e.supplier)),
            some(s(e.currency)),
            order_lines(&e.lines)?,
            some(s(&e.requester)),
        ),
        PurchaseOrderEvent::Cancelled(_) | PurchaseOrderEvent::Stepped(_) => {
            (none(), none(), vec![], none())
        }
    };
    let (index, symbol) = po_event_type(event);
    Ok(record(vec![
        ("event_id", s(event_id)),
        ("event_type", Value::Enum(index, symbol.into())),
        ("org_id", s(event.org())),
        ("po_id", s(event.po())),
        ("supplier_id", supplier),
        ("currency", currency),
        ("lines", Value::Array(lines)),
        ("requester_id", requester),
        (
            "requisition_id",
            event
                .requisition()
                .map_or_else(none, |requisition| some(s(requisition))),
        ),
        ("occurred_at", Value::TimestampMillis(occurred_at.0)),
    ]))
}

/// A `GoodsReceiptEvent` value.
pub fn goods_receipt_event_value(
    event: &GoodsReceived,
    event_id: &str,
    occurred_at: EventTime,
) -> Result<Value, EncodeError> {
    let lines = event
        .lines
        .iter()
        .map(|l| {
            Ok(record(vec![
                ("line_number", Value::Int(l.line.get() as i32)),
                (
                    "received_quantity",
                    dec("received_quantity", l.received.value(), QTY)?,
                ),
                (
                    "returned_quantity",
                    dec("returned_quantity", l.returned.value(), QTY)?,
                ),
                (
                    "expected_quantity",
                    match l.expected {
                        Some(q) => some(dec("expected_quantity", q.value(), QTY)?),
                        None => none(),
                    },
                ),
                (
                    "accepted_quantity",
                    if l.accepted.value().is_zero() {
                        none()
                    } else {
                        some(dec("accepted_quantity", l.accepted.value(), QTY)?)
                    },
                ),
            ]))
        })
        .collect::<Result<Vec<_>, EncodeError>>()?;
    Ok(record(vec![
        ("event_id", s(event_id)),
        ("org_id", s(&event.org)),
        ("grn_id", s(&event.grn)),
        ("po_id", s(&event.po)),
        ("lines", Value::Array(lines)),
        (
            "resolves_grn_id",
            event.resolves.as_ref().map_or_else(none, |g| some(s(g))),
        ),
        ("occurred_at", Value::TimestampMillis(occurred_at.0)),
    ]))
}

fn billed_lines(lines: &[InvoiceLine]) -> Result<Vec<Value>, EncodeError> {
    lines
        .iter()
        .map(|l| {
            Ok(record(vec![
                ("line_number", Value::Int(l.line.get() as i32)),
                ("quantity", dec("quantity", l.quantity.value(), QTY)?),
                (
                    "unit_price",
                    dec("unit_price", l.unit_price.money().amount(), PRICE)?,
                ),
            ]))
        })
        .collect()
}

/// An `InvoiceEvent` value.
pub fn invoice_event_value(
    event: &InvoiceReceived,
    event_id: &str,
    occurred_at: EventTime,
) -> Result<Value, EncodeError> {
    Ok(record(vec![
        ("event_id", s(event_id)),
        ("org_id", s(&event.org)),
        ("invoice_id", s(&event.invoice)),
        ("supplier_id", s(&event.supplier)),
        ("invoice_number", s(&event.number)),
        ("po_id", s(&event.po)),
        ("currency", s(event.currency)),
        ("lines", Value::Array(billed_lines(&event.lines)?)),
        (
            "total_amount",
            dec("total_amount", event.total.amount(), AMOUNT)?,
        ),
        ("invoice_date", Value::Date(event.invoice_date)),
        ("occurred_at", Value::TimestampMillis(occurred_at.0)),
        ("document_type", document_type(event.kind)),
        (
            "payment_block",
            event
                .payment_block
                .as_ref()
                .map_or_else(none, |reason| some(s(reason))),
        ),
        (
            "posted_by",
            event.posted_by.as_ref().map_or_else(none, |by| some(s(by))),
        ),
    ]))
}

/// An `InvoiceMatched` value.
pub fn invoice_matched_value(m: &InvoiceMatched) -> Result<Value, EncodeError> {
    Ok(record(vec![
        ("org_id", s(&m.org)),
        ("invoice_id", s(&m.invoice)),
        ("document_type", document_type(m.kind)),
        ("po_id", s(&m.po)),
        ("supplier_id", s(&m.supplier)),
        ("invoice_number", s(&m.number)),
        ("currency", s(m.total.currency())),
        (
            "total_amount",
            dec("total_amount", m.total.amount(), AMOUNT)?,
        ),
        ("lines", Value::Array(billed_lines(&m.lines)?)),
        ("invoice_date", some(Value::Date(m.invoice_date))),
        ("matched_at", Value::TimestampMillis(m.matched_at.0)),
        ("warnings", reasons_value(&m.warnings)?),
        ("revision", revision_value(m.revision)?),
    ]))
}

/// Exception reasons (or match warnings: the same record shape), with expected, actual and
/// delta where the reason has them.
fn reasons_value(reasons: &[ExceptionReason]) -> Result<Value, EncodeError> {
    let reasons = reasons
        .iter()
        .map(|r| {
            let kind = r.kind();
            let index = ReasonKind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u32;
            let measured = |f: &'static str, v: Option<Decimal>| match v {
                Some(v) => dec(f, v, MEASURE).map(some),
                None => Ok(none()),
            };
            let pair = r.expected_actual();
            Ok(record(vec![
                ("reason", Value::Enum(index, kind.symbol().into())),
                (
                    "line_number",
                    r.line()
                        .map_or_else(none, |l| some(Value::Int(l.get() as i32))),
                ),
                ("expected", measured("expected", pair.map(|p| p.0))?),
                ("actual", measured("actual", pair.map(|p| p.1))?),
                ("delta", measured("delta", r.delta())?),
                ("detail", s(r.describe())),
            ]))
        })
        .collect::<Result<Vec<_>, EncodeError>>()?;
    Ok(Value::Array(reasons))
}

/// An `InvoiceException` value.
pub fn invoice_exception_value(e: &InvoiceException) -> Result<Value, EncodeError> {
    let reasons = reasons_value(&e.reasons)?;
    Ok(record(vec![
        ("org_id", s(&e.org)),
        ("invoice_id", s(&e.invoice)),
        ("document_type", document_type(e.kind)),
        ("po_id", s(&e.po)),
        ("supplier_id", s(&e.supplier)),
        ("invoice_number", s(&e.number)),
        ("currency", s(e.total.currency())),
        (
            "total_amount",
            dec("total_amount", e.total.amount(), AMOUNT)?,
        ),
        ("reasons", reasons),
        ("raised_at", Value::TimestampMillis(e.raised_at.0)),
        ("revision", revision_value(e.revision)?),
    ]))
}

fn revision_value(revision: u32) -> Result<Value, EncodeError> {
    i32::try_from(revision)
        .map(Value::Int)
        .map_err(|_| EncodeError::OutOfRange {
            field: "revision",
            value: revision.to_string(),
        })
}

/// `revision`; absent (a writer older than the field) is 0, older than any outcome.
fn revision(r: &Record<'_>) -> Result<u32, DecodeError> {
    match r.opt("revision") {
        None => Ok(0),
        Some(_) => u32::try_from(r.int("revision")?).map_err(|_| DecodeError::Invalid {
            field: "revision",
            reason: "a revision is never negative".into(),
        }),
    }
}

/// An invoice the match blocks, as the payment topology needs it: which invoice, and which
/// of its outcomes this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedInvoice {
    pub org: OrgId,
    pub invoice: InvoiceId,
    pub kind: DocumentKind,
    pub revision: u32,
    /// The reasons' symbols (`MANUAL_HOLD`, `PRICE_VARIANCE`, ...), in the order reported.
    pub reasons: Vec<String>,
}

/// Decodes an `InvoiceException` for the payment topology.
pub fn blocked_invoice(value: &Value) -> Result<BlockedInvoice, DecodeError> {
    let r = Record::of(value, "InvoiceException")?;
    Ok(BlockedInvoice {
        org: r.id("org_id", OrgId::parse)?,
        invoice: r.id("invoice_id", InvoiceId::parse)?,
        kind: document_kind(&r)?,
        revision: revision(&r)?,
        reasons: r
            .array("reasons")?
            .iter()
            .map(|v| {
                Ok(Record::of(v, "ExceptionReason")?
                    .symbol("reason")?
                    .to_owned())
            })
            .collect::<Result<_, DecodeError>>()?,
    })
}

// ---- output views, for consumers of the output topics (tests, demo, data platforms) -------

/// Decodes an `InvoiceMatched` back into the domain value (for the payment topology). A
/// record from a writer older than `invoice_date` takes the date it was matched. Warnings
/// are for people, not for payment: they are read with [`matched_record`].
pub fn invoice_matched(value: &Value) -> Result<InvoiceMatched, DecodeError> {
    let r = Record::of(value, "InvoiceMatched")?;
    let currency = r.currency("currency")?;
    let lines = invoice_lines(&r, currency)?;
    let matched_at = r.timestamp("matched_at")?;
    let invoice_date = match r.opt("invoice_date") {
        Some(_) => payment::days_of(r.date("invoice_date")?),
        None => matched_at.0.div_euclid(86_400_000) as i32,
    };
    Ok(InvoiceMatched {
        org: r.id("org_id", OrgId::parse)?,
        invoice: r.id("invoice_id", InvoiceId::parse)?,
        kind: document_kind(&r)?,
        po: r.id("po_id", PurchaseOrderId::parse)?,
        supplier: r.id("supplier_id", SupplierId::parse)?,
        number: InvoiceNumber::parse(r.string("invoice_number")?)
            .map_err(DecodeError::InvalidInvoiceNumber)?,
        total: Money::new(r.decimal("total_amount", AMOUNT)?, currency),
        lines,
        invoice_date,
        matched_at,
        warnings: vec![],
        revision: revision(&r)?,
    })
}

/// `InvoiceMatched` as a consumer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRecord {
    pub org_id: String,
    pub invoice_id: String,
    pub document_type: DocumentKind,
    pub po_id: String,
    pub currency: String,
    pub total_amount: Decimal,
    pub matched_at: i64,
    pub warnings: Vec<ReasonRecord>,
    /// Of an invoice's outcomes on `invoice-matched` and `invoice-exceptions`, the highest
    /// stands.
    pub revision: u32,
}

/// One reason of an `InvoiceException` as a consumer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonRecord {
    pub reason: String,
    pub line_number: Option<i32>,
    pub expected: Option<Decimal>,
    pub actual: Option<Decimal>,
    pub delta: Option<Decimal>,
    pub detail: String,
}

/// `InvoiceException` as a consumer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionRecord {
    pub org_id: String,
    pub invoice_id: String,
    pub document_type: DocumentKind,
    pub po_id: String,
    pub currency: String,
    pub total_amount: Decimal,
    pub reasons: Vec<ReasonRecord>,
    pub revision: u32,
}

pub fn matched_record(value: &Value) -> Result<MatchedRecord, DecodeError> {
    let r = Record::of(value, "InvoiceMatched")?;
    Ok(MatchedRecord {
        org_id: r.string("org_id")?.to_owned(),
        invoice_id: r.string("invoice_id")?.to_owned(),
        document_type: document_kind(&r)?,
        po_id: r.string("po_id")?.to_owned(),
        currency: r.string("currency")?.to_owned(),
        total_amount: r.decimal("total_amount", AMOUNT)?,
        matched_at: r.timestamp("matched_at")?.0,
        warnings: reason_records(&r, "warnings", "MatchWarning")?,
        revision: revision(&r)?,
    })
}

fn reason_records(
    r: &Record<'_>,
    field: &'static str,
    name: &'static str,
) -> Result<Vec<ReasonRecord>, DecodeError> {
    r.array(field)?
        .iter()
        .map(|v| {
            let x = Record::of(v, name)?;
            Ok(ReasonRecord {
                reason: x.symbol("reason")?.to_owned(),
                line_number: x
                    .opt("line_number")
                    .map(|_| x.int("line_number"))
                    .transpose()?,
                expected: x.opt_decimal("expected", MEASURE)?,
                actual: x.opt_decimal("actual", MEASURE)?,
                delta: x.opt_decimal("delta", MEASURE)?,
                detail: x.string("detail")?.to_owned(),
            })
        })
        .collect()
}

pub fn exception_record(value: &Value) -> Result<ExceptionRecord, DecodeError> {
    let r = Record::of(value, "InvoiceException")?;
    let reasons = reason_records(&r, "reasons", "ExceptionReason")?;
    Ok(ExceptionRecord {
        org_id: r.string("org_id")?.to_owned(),
        invoice_id: r.string("invoice_id")?.to_owned(),
        document_type: document_kind(&r)?,
        po_id: r.string("po_id")?.to_owned(),
        currency: r.string("currency")?.to_owned(),
        total_amount: r.decimal("total_amount", AMOUNT)?,
        reasons,
        revision: revision(&r)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::GOODS_RECEIPT_EVENT;
    use rust_decimal_macros::dec;

    fn roundtrip(value: Value) -> Value {
        let bytes = GOODS_RECEIPT_EVENT.write_datum(value).unwrap();
        GOODS_RECEIPT_EVENT.read_datum(&mut &bytes[..]).unwrap()
    }

    fn receipt(lines: Vec<ReceiptLine>, resolves: Option<GoodsReceiptId>) -> GoodsReceived {
        GoodsReceived {
            org: OrgId::from_u128(1),
            grn: GoodsReceiptId::from_u128(2),
            po: PurchaseOrderId::from_u128(3),
            lines,
            resolves,
        }
    }

    #[test]
    fn a_receipt_keeps_its_delivery_note_quantity_and_what_it_resolves() {
        let line = ReceiptLine {
            line: LineNumber::new(1).unwrap(),
            received: Quantity::new(dec!(9.5)).unwrap(),
            returned: Quantity::ZERO,
            expected: Some(Quantity::new(dec!(10)).unwrap()),
            accepted: Quantity::new(dec!(9)).unwrap(),
        };
        let sent = receipt(vec![line], Some(GoodsReceiptId::from_u128(9)));
        let value = goods_receipt_event_value(&sent, "e1", EventTime(7)).unwrap();
        let back = goods_receipt_event(&roundtrip(value)).unwrap();
        assert_eq!(back.input, MatchInput::GoodsReceipt(sent));
        assert_eq!(back.occurred_at, EventTime(7));
    }

    #[test]
    fn only_a_resolution_may_come_without_lines() {
        let accept = receipt(vec![], Some(GoodsReceiptId::from_u128(9)));
        let value = goods_receipt_event_value(&accept, "e1", EventTime(7)).unwrap();
        assert!(goods_receipt_event(&roundtrip(value)).is_ok());
        let empty = receipt(vec![], None);
        let value = goods_receipt_event_value(&empty, "e2", EventTime(7)).unwrap();
        assert!(matches!(
            goods_receipt_event(&roundtrip(value)),
            Err(DecodeError::NoLines)
        ));
    }
}
