//! People's decisions on what the match holds (issue 27, ADR 0019): release a hold, accept a
//! variance, mark a look-alike as not a duplicate, or reject the invoice. What a decision is,
//! why one is refused, and which holds a decision waives. Pure: the match state
//! (`matching`) applies them.

use crate::approval::{ApprovalError, ApprovalLevel};
use crate::events::{ExceptionReason, ReasonKind};
use crate::ids::{InvoiceId, PurchaseOrderId, UserId};
use crate::money::Money;
use serde::{Deserialize, Serialize};

/// What a person decides on one invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecisionAction {
    /// Release the hold of this kind, or (`None`) every hold a person may release.
    Release(Option<ReasonKind>),
    /// Accept the price, quantity and amount variances as they stand.
    AcceptVariance,
    /// The invoice it looks like is another bill: not a duplicate.
    NotADuplicate,
    /// Never to be paid; what it consumed of the PO is given back.
    Reject,
}

/// A person's decision on one invoice, from `invoice-decisions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceDecision {
    /// Unique per decision: the same id again is a re-delivery and changes nothing.
    pub id: String,
    pub invoice: InvoiceId,
    pub po: PurchaseOrderId,
    pub by: UserId,
    /// The highest level the person may decide, as for approvals (from the identity provider).
    pub authority: ApprovalLevel,
    pub action: DecisionAction,
    /// Why, as a code of the org's (e.g. `PRICE_AGREED`), and in words.
    pub reason_code: String,
    pub comment: Option<String>,
}

impl InvoiceDecision {
    /// "released the PRICE_VARIANCE hold", for texts.
    pub fn describe(&self) -> String {
        let what = match self.action {
            DecisionAction::Release(Some(kind)) => format!("released the {} hold", kind.symbol()),
            DecisionAction::Release(None) => "released every hold".to_owned(),
            DecisionAction::AcceptVariance => "accepted the variances".to_owned(),
            DecisionAction::NotADuplicate => "marked it as not a duplicate".to_owned(),
            DecisionAction::Reject => "rejected it".to_owned(),
        };
        let comment = self
            .comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        format!("{} {what} ({}){comment}", self.by, self.reason_code)
    }
}

/// Why a decision is refused: published on `audit-events`, never dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionRefused {
    #[error("no invoice {0} of this purchase order arrived within the org's wait limit")]
    UnknownInvoice(InvoiceId),
    #[error("invoice {invoice} duplicates {of} by its reference: it is never paid, whatever anyone decides")]
    Duplicate { invoice: InvoiceId, of: InvoiceId },
    #[error("invoice {0} was rejected: nothing more is decided on it")]
    AlreadyRejected(InvoiceId),
    #[error("invoice {0} holds nothing that decision could release")]
    NothingToDecide(InvoiceId),
    #[error("invoice {invoice} has no {hold} hold")]
    NoSuchHold {
        invoice: InvoiceId,
        hold: &'static str,
    },
    #[error("a {hold} hold is not for a person to release: the invoice cannot be paid against this purchase order as it stands")]
    NotReleasable { hold: &'static str },
    #[error(
        "{by} may decide up to level {held:?}; invoice {invoice} of {total} needs level {needed:?}"
    )]
    NoAuthority {
        by: UserId,
        invoice: InvoiceId,
        total: Money,
        held: ApprovalLevel,
        needed: ApprovalLevel,
    },
    #[error(
        "{by} posted invoice {invoice}: someone else must decide on it (segregation of duties)"
    )]
    OwnInvoice { by: UserId, invoice: InvoiceId },
    #[error("{by} requested or approved purchase order {po}: someone else must decide on its invoices (segregation of duties)")]
    OwnPurchaseOrder { by: UserId, po: PurchaseOrderId },
    #[error("the authority needed for invoice {invoice} cannot be worked out: {source}")]
    Policy {
        invoice: InvoiceId,
        source: ApprovalError,
    },
}

/// Holds a person may release: what the facts alone would keep held, but a person with the
/// authority may take responsibility for (SAP MRBR, Oracle hold release). Not a duplicate by
/// reference, a cancelled or closed PO, an unknown PO or line, another currency or supplier:
/// those cannot be paid against this PO whoever decides.
pub fn releasable(kind: ReasonKind) -> bool {
    matches!(
        kind,
        ReasonKind::PriceVariance
            | ReasonKind::QuantityVariance
            | ReasonKind::AmountVariance
            | ReasonKind::NotReceived
            | ReasonKind::NotAccepted
            | ReasonKind::ManualHold
            | ReasonKind::PossibleDuplicate
            | ReasonKind::ReceiptDiscrepancy
    )
}

/// The variances "accept the variance" accepts.
pub fn is_variance(kind: ReasonKind) -> bool {
    matches!(
        kind,
        ReasonKind::PriceVariance | ReasonKind::QuantityVariance | ReasonKind::AmountVariance
    )
}

/// Whether a hold found now is one a person waived earlier: the same kind on the same line,
/// and no further from what was expected than when it was waived (a later fact that moves it
/// beyond what was accepted holds the invoice again). Reasons without figures must be the
/// same (the same block reason, the same look-alike, the same receipt).
pub fn waived_by(found: &ExceptionReason, waived: &ExceptionReason) -> bool {
    if found.kind() != waived.kind() || found.line() != waived.line() {
        return false;
    }
    match (found.expected_actual(), waived.expected_actual()) {
        (Some((_, _)), Some((_, _))) => {
            let (now, then) = (
                found.delta().unwrap_or_default(),
                waived.delta().unwrap_or_default(),
            );
            now.is_sign_negative() == then.is_sign_negative() && now.abs() <= then.abs()
        }
        _ => found == waived,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::LineNumber;
    use crate::money::{Currency, Quantity};
    use rust_decimal_macros::dec;

    fn over(
        line: i64,
        expected: rust_decimal::Decimal,
        actual: rust_decimal::Decimal,
    ) -> ExceptionReason {
        ExceptionReason::QuantityVariance {
            line: LineNumber::new(line).unwrap(),
            expected: Quantity::new(expected).unwrap(),
            actual: Quantity::new(actual).unwrap(),
        }
    }

    #[test]
    fn a_waived_variance_stays_waived_until_the_facts_move_beyond_it() {
        let accepted = over(1, dec!(100), dec!(110));
        assert!(waived_by(&over(1, dec!(100), dec!(110)), &accepted));
        assert!(waived_by(&over(1, dec!(100), dec!(105)), &accepted));
        assert!(!waived_by(&over(1, dec!(100), dec!(111)), &accepted));
        assert!(!waived_by(&over(2, dec!(100), dec!(105)), &accepted));
        let price = ExceptionReason::PriceVariance {
            line: LineNumber::new(1).unwrap(),
            expected: Money::new(dec!(10), Currency::parse("EUR").unwrap()),
            actual: Money::new(dec!(11), Currency::parse("EUR").unwrap()),
        };
        assert!(!waived_by(&price, &accepted));
    }

    #[test]
    fn a_reason_without_figures_is_waived_only_as_it_was() {
        let block = |why: &str| ExceptionReason::ManualHold { reason: why.into() };
        assert!(waived_by(&block("query"), &block("query")));
        assert!(!waived_by(&block("another query"), &block("query")));
    }

    #[test]
    fn a_duplicate_or_a_cancelled_po_is_never_for_a_person_to_release() {
        for kind in [
            ReasonKind::Duplicate,
            ReasonKind::PoCancelled,
            ReasonKind::PoClosed,
            ReasonKind::UnknownPo,
            ReasonKind::CurrencyMismatch,
            ReasonKind::SupplierMismatch,
            ReasonKind::UnknownPoLine,
            ReasonKind::Rejected,
        ] {
            assert!(!releasable(kind), "{kind:?}");
        }
        assert!(releasable(ReasonKind::PossibleDuplicate));
    }
}
