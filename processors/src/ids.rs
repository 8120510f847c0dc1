//! Typed identifiers. Each is `<prefix>_<uuid>` and can only be built by parsing, so a supplier
//! id can never be passed where a purchase-order id is expected, and no malformed id gets past
//! the edge.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must start with `{prefix}_`, got {value:?}")]
    WrongPrefix {
        kind: &'static str,
        prefix: &'static str,
        value: String,
    },
    #[error("{kind} {value:?} does not end in a UUID")]
    NotAUuid { kind: &'static str, value: String },
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Parses `<prefix>_<uuid>`; the UUID is stored lower-cased so equal ids compare equal.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                let rest = value
                    .strip_prefix(concat!($prefix, "_"))
                    .ok_or_else(|| IdError::WrongPrefix {
                        kind: stringify!($name),
                        prefix: $prefix,
                        value: value.to_owned(),
                    })?;
                let uuid = Uuid::try_parse(rest).map_err(|_| IdError::NotAUuid {
                    kind: stringify!($name),
                    value: value.to_owned(),
                })?;
                Ok(Self(format!(concat!($prefix, "_{}"), uuid.hyphenated())))
            }

            /// A fresh random id (for generators and tests; the domain never invents ids).
            pub fn random() -> Self {
                Self(format!(concat!($prefix, "_{}"), Uuid::new_v4().hyphenated()))
            }

            /// A deterministic id from 128 bits, for seeded generators.
            pub fn from_u128(bits: u128) -> Self {
                Self(format!(concat!($prefix, "_{}"), Uuid::from_u128(bits).hyphenated()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
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
/// trail name: a purchase order or a requisition. Its id's prefix says which.
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
    fn a_po_id_with_its_prefix_and_a_uuid_parses() {
        let id = PurchaseOrderId::parse("po_6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        assert_eq!(id.as_str(), "po_6f9619ff-8b86-d011-b42d-00c04fc964ff");
    }

    #[test]
    fn a_supplier_id_is_not_a_po_id() {
        let err = PurchaseOrderId::parse(SupplierId::random().as_str()).unwrap_err();
        assert!(matches!(err, IdError::WrongPrefix { prefix: "po", .. }));
    }

    #[test]
    fn an_id_without_a_uuid_is_rejected() {
        assert!(matches!(
            InvoiceId::parse("inv_12345"),
            Err(IdError::NotAUuid { .. })
        ));
    }

    #[test]
    fn ids_round_trip_through_serde_and_reject_garbage() {
        let id = OrgId::random();
        let json = serde_json_like(&id);
        assert_eq!(json, id.as_str());
        assert!(OrgId::try_from("org_nope".to_string()).is_err());
    }

    fn serde_json_like(id: &OrgId) -> String {
        String::from(id.clone())
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
