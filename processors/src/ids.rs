//! Typed identifiers: the ERP's own (an SAP PO number `4500012345`, an invoice `INV-2026/0042`,
//! a vendor `V100234`). Each kind is its own type, built only by parsing, so a supplier id can
//! never be passed where a purchase-order id is expected; parsing checks only what any ERP id
//! satisfies (ADR 0014), never a format the pipeline invented.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use uuid::Uuid;

/// The longest identifier accepted, in characters: SAP's longest document keys are 35 (a
/// DMS document), Oracle's and Coupa's shorter; a UUID with a prefix is 40.
pub const MAX_ID_CHARS: usize = 64;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is {chars} characters long, more than the {max} allowed")]
    TooLong {
        kind: &'static str,
        value: String,
        chars: usize,
        max: usize,
    },
    #[error("{kind} {value:?} has an unprintable character {character:?} at position {position}")]
    Unprintable {
        kind: &'static str,
        value: String,
        character: char,
        position: usize,
    },
    #[error("{kind} {value:?} begins or ends with a space: ids are compared exactly, so it would not match the same id without")]
    SurroundingSpace { kind: &'static str, value: String },
}

/// An identifier kind: what every typed id shares, so generators can mint any of them.
pub trait Identifier: Sized {
    /// The prefix of the ids the pipeline's own generators mint (`po` for `po_<uuid>`).
    const PREFIX: &'static str;
    fn parse(value: &str) -> Result<Self, IdError>;
    fn as_str(&self) -> &str;
    /// A deterministic `<prefix>_<uuid>` id from 128 bits, for seeded generators.
    fn from_u128(bits: u128) -> Self;
}

/// Checks what any ERP's id satisfies, and returns the id as stored: `<prefix>_<uuid>` ids
/// (the form this pipeline's generators and early clients used) with the UUID lower-cased and
/// hyphenated as before, so their state keys do not change; any other id exactly as given.
fn checked_id(kind: &'static str, prefix: &str, value: &str) -> Result<String, IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let chars = value.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(IdError::TooLong {
            kind,
            value: value.chars().take(MAX_ID_CHARS).collect::<String>() + "…",
            chars,
            max: MAX_ID_CHARS,
        });
    }
    // Control characters, and whitespace other than a plain space (tabs, line or paragraph
    // separators, no-break spaces that print like one): unprintable, or printed as something
    // it is not.
    if let Some((position, character)) = value
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() || (c.is_whitespace() && *c != ' ') || is_invisible(*c))
    {
        return Err(IdError::Unprintable {
            kind,
            value: value.to_owned(),
            character,
            position,
        });
    }
    if value.starts_with(' ') || value.ends_with(' ') {
        return Err(IdError::SurroundingSpace {
            kind,
            value: value.to_owned(),
        });
    }
    let uuid = value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .and_then(|rest| Uuid::try_parse(rest).ok());
    Ok(match uuid {
        Some(uuid) => format!("{prefix}_{}", uuid.hyphenated()),
        None => value.to_owned(),
    })
}

/// Zero-width and direction-changing characters, which print as nothing: two ids that look the
/// same to a clerk must be the same id.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// `id` as one segment of a state key: the store joins segments with `/` (`tol/<supplier>`,
/// `dup/<supplier>/<entry>`) and keys POs by their bare id, so an id's own `/` (as in
/// `INV-2026/0042`) and `%` are escaped, `%2F` and `%25`. Every id without them, the
/// `<prefix>_<uuid>` ones included, is its own segment, so keys written before ERP ids were
/// accepted are unchanged; an escaped segment never contains `/`, so no id's key is another
/// kind's (`config/org`, `tol/...`).
pub fn key_segment(id: &str) -> Cow<'_, str> {
    if id.contains(['/', '%']) {
        Cow::Owned(id.replace('%', "%25").replace('/', "%2F"))
    } else {
        Cow::Borrowed(id)
    }
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Parses an ERP's id: non-empty, at most [`MAX_ID_CHARS`] characters, printable,
            /// no leading or trailing space.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                checked_id(stringify!($name), $prefix, value).map(Self)
            }

            /// A fresh random `<prefix>_<uuid>` id (for generators and tests; the domain
            /// never invents ids).
            pub fn random() -> Self {
                Self(format!(concat!($prefix, "_{}"), Uuid::new_v4().hyphenated()))
            }

            /// A deterministic `<prefix>_<uuid>` id from 128 bits, for seeded generators.
            pub fn from_u128(bits: u128) -> Self {
                Self(format!(concat!($prefix, "_{}"), Uuid::from_u128(bits).hyphenated()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// This id as a state key's segment: [`key_segment`].
            pub fn key_segment(&self) -> Cow<'_, str> {
                key_segment(&self.0)
            }

            /// The state entity of the document this id names, where the document is keyed
            /// by its id alone: `<prefix>_<uuid>` ids bare, as they always were (ADR 0014),
            /// any other `<prefix>/<segment>`. So a PO and a requisition both numbered
            /// `4500012345` have different keys, and no id's key is another kind's.
            pub fn state_entity(&self) -> Cow<'_, str> {
                let legacy = self
                    .0
                    .strip_prefix(concat!($prefix, "_"))
                    .is_some_and(|rest| Uuid::try_parse(rest).is_ok());
                if legacy {
                    Cow::Borrowed(&self.0)
                } else {
                    Cow::Owned(format!(concat!($prefix, "/{}"), key_segment(&self.0)))
                }
            }
        }

        impl Identifier for $name {
            const PREFIX: &'static str = $prefix;
            fn parse(value: &str) -> Result<Self, IdError> {
                $name::parse(value)
            }
            fn as_str(&self) -> &str {
                &self.0
            }
            fn from_u128(bits: u128) -> Self {
                $name::from_u128(bits)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

prefixed_id!(
    /// The tenant every document belongs to; all state keys begin with it.
    OrgId, "org");
prefixed_id!(
    /// A supplier (vendor) of an organisation.
    SupplierId, "sup");
prefixed_id!(
    /// A person: requester or approver.
    UserId, "usr");
prefixed_id!(
    /// A purchase requisition.
    RequisitionId, "req");
prefixed_id!(
    /// A purchase order.
    PurchaseOrderId, "po");
prefixed_id!(
    /// A goods receipt note.
    GoodsReceiptId, "grn");
prefixed_id!(
    /// A supplier invoice as registered by the buyer's ERP.
    InvoiceId, "inv");

/// A document that goes through approval routing, and that approval requests and the audit
/// trail name: a purchase order or a requisition (records say which in a field of their own).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DocumentRef {
    PurchaseOrder(PurchaseOrderId),
    Requisition(RequisitionId),
}

impl DocumentRef {
    pub fn as_str(&self) -> &str {
        match self {
            DocumentRef::PurchaseOrder(id) => id.as_str(),
            DocumentRef::Requisition(id) => id.as_str(),
        }
    }
}

impl fmt::Display for DocumentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<PurchaseOrderId> for DocumentRef {
    fn from(id: PurchaseOrderId) -> Self {
        DocumentRef::PurchaseOrder(id)
    }
}

impl From<RequisitionId> for DocumentRef {
    fn from(id: RequisitionId) -> Self {
        DocumentRef::Requisition(id)
    }
}

/// The supplier's own reference for an invoice (free text, printed on the document).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InvoiceNumber(String);

/// Why a supplier invoice number is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceNumberError {
    #[error("invoice number is empty")]
    Empty,
    #[error("invoice number is longer than 64 characters")]
    TooLong,
}

impl InvoiceNumber {
    pub fn parse(value: &str) -> Result<Self, InvoiceNumberError> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(InvoiceNumberError::Empty);
        }
        if trimmed.chars().count() > 64 {
            return Err(InvoiceNumberError::TooLong);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InvoiceNumber {
    type Error = InvoiceNumberError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<InvoiceNumber> for String {
    fn from(n: InvoiceNumber) -> String {
        n.0
    }
}

impl fmt::Display for InvoiceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A purchase-order line number (1-based, as ERPs print them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct LineNumber(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line number must be at least 1, got {0}")]
pub struct LineNumberError(pub i64);

impl LineNumber {
    pub fn new(n: i64) -> Result<Self, LineNumberError> {
        u32::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .map(Self)
            .ok_or(LineNumberError(n))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for LineNumber {
    type Error = LineNumberError;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Self::new(i64::from(n))
    }
}

impl From<LineNumber> for u32 {
    fn from(n: LineNumber) -> u32 {
        n.0
    }
}

impl fmt::Display for LineNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erp_s_own_ids_parse_as_given() {
        for (po, invoice, supplier) in [
            ("4500012345", "5105600001", "V100234"),
            ("PO-2026-000017", "INV-2026/0042", "ACME GmbH 0001"),
            ("0045000123", "FV 2026/12/0042-A", "Müller & Söhne"),
        ] {
            assert_eq!(PurchaseOrderId::parse(po).unwrap().as_str(), po);
            assert_eq!(InvoiceId::parse(invoice).unwrap().as_str(), invoice);
            assert_eq!(SupplierId::parse(supplier).unwrap().as_str(), supplier);
        }
        // Leading zeros are part of an SAP number: never folded.
        assert_ne!(
            PurchaseOrderId::parse("0045000123").unwrap(),
            PurchaseOrderId::parse("45000123").unwrap()
        );
    }

    #[test]
    fn a_prefixed_uuid_is_stored_as_before_so_its_state_keys_do_not_change() {
        let id = PurchaseOrderId::parse("po_6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        assert_eq!(id.as_str(), "po_6f9619ff-8b86-d011-b42d-00c04fc964ff");
        // Another kind's prefix is just text to a PO id.
        let odd = PurchaseOrderId::parse("inv_6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        assert_eq!(odd.as_str(), "inv_6F9619FF-8B86-D011-B42D-00C04FC964FF");
    }

    #[test]
    fn what_no_erp_id_is_gets_a_typed_refusal() {
        assert_eq!(
            InvoiceId::parse(""),
            Err(IdError::Empty { kind: "InvoiceId" })
        );
        assert!(matches!(
            InvoiceId::parse(&"9".repeat(65)),
            Err(IdError::TooLong {
                chars: 65,
                max: 64,
                ..
            })
        ));
        assert!(InvoiceId::parse(&"ß".repeat(64)).is_ok());
        for (bad, at) in [
            ("45\u{0}01", 2),
            ("4500\n", 4),
            ("45\t00", 2),
            ("45\u{200B}00", 2),
            ("\u{A0}4500", 0),
        ] {
            assert!(
                matches!(PurchaseOrderId::parse(bad), Err(IdError::Unprintable { position, .. }) if position == at),
                "{bad:?}"
            );
        }
        assert!(matches!(
            SupplierId::parse(" V100234"),
            Err(IdError::SurroundingSpace { .. })
        ));
        assert!(matches!(
            SupplierId::parse("V100234 "),
            Err(IdError::SurroundingSpace { .. })
        ));
    }

    #[test]
    fn a_key_segment_never_holds_a_slash_and_tells_every_id_apart() {
        assert_eq!(key_segment("4500012345"), "4500012345");
        assert_eq!(key_segment("INV-2026/0042"), "INV-2026%2F0042");
        assert_eq!(key_segment("50%/off"), "50%25%2Foff");
        // "A/B" and "A%2FB" are different ids, so their segments must differ.
        assert_ne!(key_segment("A/B"), key_segment("A%2FB"));
        assert!(!key_segment("config/org").contains('/'));
    }

    #[test]
    fn a_po_and_a_requisition_with_the_same_number_have_different_state_entities() {
        let po = PurchaseOrderId::parse("4500012345").unwrap();
        let requisition = RequisitionId::parse("4500012345").unwrap();
        assert_eq!(po.state_entity(), "po/4500012345");
        assert_eq!(requisition.state_entity(), "req/4500012345");
        // The pipeline's own form keeps the bare key it always had; another kind's prefix
        // does not make an id that kind's.
        let legacy = PurchaseOrderId::from_u128(7);
        assert_eq!(legacy.state_entity(), legacy.as_str());
        let look_alike = PurchaseOrderId::parse(RequisitionId::from_u128(7).as_str()).unwrap();
        assert_ne!(
            look_alike.state_entity(),
            RequisitionId::from_u128(7).state_entity()
        );
    }

    #[test]
    fn ids_round_trip_through_serde_and_reject_garbage() {
        let id = OrgId::random();
        assert_eq!(String::from(id.clone()), id.as_str());
        assert!(OrgId::try_from("bad\u{7}".to_string()).is_err());
    }

    #[test]
    fn line_number_zero_is_rejected() {
        assert_eq!(LineNumber::new(0), Err(LineNumberError(0)));
        assert_eq!(LineNumber::new(3).unwrap().get(), 3);
    }

    #[test]
    fn invoice_numbers_are_trimmed_and_never_empty() {
        assert_eq!(InvoiceNumber::parse("  INV-7 ").unwrap().as_str(), "INV-7");
        assert_eq!(InvoiceNumber::parse("   "), Err(InvoiceNumberError::Empty));
    }
}
