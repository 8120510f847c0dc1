//! Duplicate invoice detection, per supplier (ADR 0018). A **duplicate** is an earlier document
//! of the same supplier with the same normalised invoice reference: never payable. A
//! **look-alike** is an earlier document of the same supplier and purchase order with the same
//! currency, gross amount and invoice date under another reference: held for a person's
//! review by default, a warning or nothing as the org chooses. Documents of different POs are
//! never look-alikes: each PO's cumulative match already stops goods being billed twice, and
//! one price on one day across many POs is normal. Credit memos are checked among credit
//! memos. The same `invoice_id` again is a re-delivery or a correction, never a duplicate.

use crate::ids::{InvoiceId, InvoiceNumber, PurchaseOrderId, SupplierId};
use crate::money::Money;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Fields a duplicate rule can compare (the supplier is always compared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DuplicateField {
    Reference,
    Currency,
    Amount,
    InvoiceDate,
    PurchaseOrder,
}

/// A rule: documents equal on all these fields are duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateRule(pub Vec<DuplicateField>);

/// What an org does with a look-alike (`look_alikes` in `org-config`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookAlikes {
    /// Held for a person's review (`POSSIBLE_DUPLICATE`), SAP's and Oracle's default.
    #[default]
    Hold,
    /// Matched, with a `POSSIBLE_DUPLICATE` warning for the clerk.
    Warn,
    /// Not checked.
    Off,
}

/// What a rule finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finding {
    Duplicate,
    LookAlike,
}

/// The org's duplicate rules: the reference always, look-alikes unless switched off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicatePolicy {
    pub look_alikes: LookAlikes,
}

impl DuplicatePolicy {
    /// Each rule in force with its index (part of its register keys, so fixed forever) and
    /// what it finds.
    fn rules(&self) -> Vec<(usize, DuplicateRule, Finding)> {
        use DuplicateField::*;
        let mut rules = vec![(0, DuplicateRule(vec![Reference]), Finding::Duplicate)];
        if self.look_alikes != LookAlikes::Off {
            rules.push((
                1,
                DuplicateRule(vec![Currency, Amount, InvoiceDate, PurchaseOrder]),
                Finding::LookAlike,
            ));
        }
        rules
    }
}

pub use crate::events::DocumentKind;

/// What the duplicate check looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFacts {
    pub invoice: InvoiceId,
    pub supplier: SupplierId,
    pub po: PurchaseOrderId,
    pub kind: DocumentKind,
    pub number: InvoiceNumber,
    pub gross: Money,
    /// Days since the Unix epoch.
    pub invoice_date: i32,
}

/// The supplier's reference as compared: letters and digits only (punctuation and spaces
/// removed first), upper case, and each run of digits without its leading zeros, so
/// "inv-00042" and "INV 42" are the same reference.
pub fn normalise_reference(number: &InvoiceNumber) -> String {
    let cleaned: Vec<char> = number
        .as_str()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .collect();
    let mut out = String::with_capacity(cleaned.len());
    for run in cleaned.chunk_by(|a, b| a.is_ascii_digit() == b.is_ascii_digit()) {
        if run[0].is_ascii_digit() {
            let digits: String = run.iter().skip_while(|c| **c == '0').collect();
            out.push_str(if digits.is_empty() { "0" } else { &digits });
        } else {
            out.extend(run);
        }
    }
    out
}

fn fingerprint(facts: &InvoiceFacts, rule: &DuplicateRule) -> String {
    let mut key = format!("{:?}", facts.kind);
    for field in &rule.0 {
        key.push('|');
        match field {
            DuplicateField::Reference => key.push_str(&normalise_reference(&facts.number)),
            DuplicateField::Currency => key.push_str(facts.gross.currency().as_str()),
            DuplicateField::Amount => key.push_str(&facts.gross.amount().normalize().to_string()),
            DuplicateField::InvoiceDate => key.push_str(&facts.invoice_date.to_string()),
            DuplicateField::PurchaseOrder => key.push_str(facts.po.as_str()),
        }
    }
    key
}

/// "<rule index>|<fingerprint>": a register's key of `facts` under the policy's rule `index`.
fn entry_key(index: usize, facts: &InvoiceFacts, rule: &DuplicateRule) -> String {
    format!("{index}|{}", fingerprint(facts, rule))
}

/// The documents seen of one supplier, by fingerprint per rule: the whole register, or (as
/// the runtime keeps it) just the entries one document's check reads, `DuplicateRegister::keys`.
/// A supplier's register grows with every document it sends, so the runtime stores an entry
/// per fingerprint and never the register whole: a state value per supplier grew by about 120
/// bytes an invoice, was rewritten with each, and passed Kafka's 1 MB record limit at some
/// 9,000 invoices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateRegister {
    /// "<rule index>|<fingerprint>" -> first document with it (a string key, so the
    /// register stores as plain JSON).
    seen: BTreeMap<String, InvoiceId>,
}

/// What the register says of a document: the earlier one it duplicates, and the earlier one
/// it looks like (at most one of each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicatesFound {
    pub duplicate_of: Option<InvoiceId>,
    pub look_alike_of: Option<InvoiceId>,
}

impl DuplicateRegister {
    /// The entries `check` reads and writes for `facts`: a register holding only those of
    /// them the whole one has decides as the whole one would.
    pub fn keys(facts: &InvoiceFacts, policy: &DuplicatePolicy) -> Vec<String> {
        policy
            .rules()
            .iter()
            .map(|(index, rule, _)| entry_key(*index, facts, rule))
            .collect()
    }

    /// A register of these entries (key as `keys` names it, first document with it).
    pub fn with_entries(entries: impl IntoIterator<Item = (String, InvoiceId)>) -> Self {
        Self {
            seen: entries.into_iter().collect(),
        }
    }

    /// The first document seen with the entry `key`, if any.
    pub fn first_with(&self, key: &str) -> Option<&InvoiceId> {
        self.seen.get(key)
    }

    /// Every entry: key as `keys` names it, first document with it.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &InvoiceId)> {
        self.seen.iter()
    }

    /// Registers `facts` and says which earlier, different documents it duplicates or looks
    /// like.
    pub fn check(&mut self, facts: &InvoiceFacts, policy: &DuplicatePolicy) -> DuplicatesFound {
        let mut found = DuplicatesFound::default();
        for (index, rule, finding) in policy.rules() {
            let key = entry_key(index, facts, &rule);
            match self.seen.get(&key) {
                Some(first) if *first != facts.invoice => {
                    let slot = match finding {
                        Finding::Duplicate => &mut found.duplicate_of,
                        Finding::LookAlike => &mut found.look_alike_of,
                    };
                    slot.get_or_insert_with(|| first.clone());
                }
                Some(_) => {}
                None => {
                    self.seen.insert(key, facts.invoice.clone());
                }
            }
        }
        // A duplicate is never paid, whatever anyone decides: that it also looks like one
        // says nothing more.
        if found.duplicate_of.is_some() {
            found.look_alike_of = None;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;

    /// Invoice `id` of supplier 7 against PO 1.
    fn facts(id: u128, number: &str, amount: Decimal, date: i32) -> InvoiceFacts {
        InvoiceFacts {
            invoice: InvoiceId::from_u128(id),
            supplier: SupplierId::from_u128(7),
            po: PurchaseOrderId::from_u128(1),
            kind: DocumentKind::Invoice,
            number: InvoiceNumber::parse(number).unwrap(),
            gross: Money::new(amount, Currency::parse("EUR").unwrap()),
            invoice_date: date,
        }
    }

    fn duplicate_of(id: u128) -> DuplicatesFound {
        DuplicatesFound {
            duplicate_of: Some(InvoiceId::from_u128(id)),
            look_alike_of: None,
        }
    }

    fn look_alike_of(id: u128) -> DuplicatesFound {
        DuplicatesFound {
            duplicate_of: None,
            look_alike_of: Some(InvoiceId::from_u128(id)),
        }
    }

    #[test]
    fn references_are_compared_without_punctuation_case_or_leading_zeros() {
        let n = |s| normalise_reference(&InvoiceNumber::parse(s).unwrap());
        assert_eq!(n("inv-00042"), n("INV 42"));
        assert_eq!(n("2026/0007"), "20260007");
        assert_eq!(n("00-12"), "12");
        assert_eq!(n("A-000"), "A0");
        assert_ne!(n("INV-42"), n("INV-420"));
    }

    #[test]
    fn the_same_reference_again_is_a_duplicate_whatever_the_amount_or_po() {
        let mut register = DuplicateRegister::default();
        let policy = DuplicatePolicy::default();
        let first = facts(1, "INV-0042", dec!(100), 20000);
        assert_eq!(register.check(&first, &policy), DuplicatesFound::default());
        let again = InvoiceFacts {
            po: PurchaseOrderId::from_u128(2),
            ..facts(2, "inv 42", dec!(250), 20010)
        };
        assert_eq!(register.check(&again, &policy), duplicate_of(1));
    }

    #[test]
    fn the_same_amount_and_date_under_another_reference_on_the_same_po_only_looks_alike() {
        let mut register = DuplicateRegister::default();
        let policy = DuplicatePolicy::default();
        register.check(&facts(1, "A-1", dec!(999.90), 20000), &policy);
        assert_eq!(
            register.check(&facts(2, "B-7", dec!(999.9), 20000), &policy),
            look_alike_of(1)
        );
        assert_eq!(
            register.check(&facts(3, "C-8", dec!(999.90), 20001), &policy),
            DuplicatesFound::default()
        );
    }

    #[test]
    fn a_supplier_billing_two_pos_the_same_amount_on_the_same_day_is_billing_correctly() {
        let mut register = DuplicateRegister::default();
        let policy = DuplicatePolicy::default();
        register.check(&facts(1, "A-1", dec!(500), 20000), &policy);
        let other_po = InvoiceFacts {
            po: PurchaseOrderId::from_u128(2),
            ..facts(2, "A-2", dec!(500), 20000)
        };
        assert_eq!(
            register.check(&other_po, &policy),
            DuplicatesFound::default()
        );
    }

    #[test]
    fn a_redelivered_or_corrected_invoice_is_not_its_own_duplicate() {
        let mut register = DuplicateRegister::default();
        let policy = DuplicatePolicy::default();
        register.check(&facts(1, "A-1", dec!(10), 20000), &policy);
        assert_eq!(
            register.check(&facts(1, "A-1", dec!(10), 20000), &policy),
            DuplicatesFound::default()
        );
        assert_eq!(
            register.check(&facts(1, "A-1", dec!(12), 20000), &policy),
            DuplicatesFound::default()
        );
    }

    #[test]
    fn a_credit_memo_is_checked_against_credit_memos_only() {
        let mut register = DuplicateRegister::default();
        let policy = DuplicatePolicy::default();
        register.check(&facts(1, "A-1", dec!(10), 20000), &policy);
        let mut memo = facts(2, "A-1", dec!(10), 20000);
        memo.kind = DocumentKind::CreditMemo;
        assert_eq!(register.check(&memo, &policy), DuplicatesFound::default());
        let mut again = facts(3, "A-1", dec!(10), 20000);
        again.kind = DocumentKind::CreditMemo;
        assert_eq!(register.check(&again, &policy), duplicate_of(2));
    }

    #[test]
    fn a_register_survives_a_round_trip_through_json() {
        let mut register = DuplicateRegister::default();
        register.check(
            &facts(1, "A-1", dec!(10), 20000),
            &DuplicatePolicy::default(),
        );
        let json = serde_json::to_string(&register).unwrap();
        assert_eq!(
            serde_json::from_str::<DuplicateRegister>(&json).unwrap(),
            register
        );
    }

    #[test]
    fn a_register_of_the_entries_a_check_reads_decides_as_the_whole_one() {
        let policy = DuplicatePolicy::default();
        let mut whole = DuplicateRegister::default();
        for i in 0..50 {
            whole.check(
                &facts(i, &format!("INV-{i}"), dec!(10) + Decimal::from(i), 20000),
                &policy,
            );
        }
        for (id, number, amount, found) in [
            (100, "inv 0007", dec!(99), duplicate_of(7)), // the reference of invoice 7
            (101, "X-1", dec!(23), look_alike_of(13)),    // the amount and date of invoice 13
            (102, "X-2", dec!(5), DuplicatesFound::default()), // new
            (7, "INV-7", dec!(17), DuplicatesFound::default()), // invoice 7 again
        ] {
            let candidate = facts(id, number, amount, 20000);
            let keys = DuplicateRegister::keys(&candidate, &policy);
            let mut partial = DuplicateRegister::with_entries(
                keys.iter()
                    .filter_map(|k| whole.first_with(k).map(|first| (k.clone(), first.clone()))),
            );
            let mut copy = whole.clone();
            assert_eq!(partial.check(&candidate, &policy), found);
            assert_eq!(copy.check(&candidate, &policy), found);
            // What the check registers is among the keys it names.
            for (key, first) in partial.entries() {
                assert!(keys.contains(key));
                assert_eq!(copy.first_with(key), Some(first));
            }
        }
    }

    #[test]
    fn an_org_can_switch_look_alikes_off_but_never_the_reference() {
        let mut register = DuplicateRegister::default();
        let off = DuplicatePolicy {
            look_alikes: LookAlikes::Off,
        };
        register.check(&facts(1, "A-1", dec!(10), 20000), &off);
        assert_eq!(
            register.check(&facts(2, "B-2", dec!(10), 20000), &off),
            DuplicatesFound::default()
        );
        assert_eq!(
            register.check(&facts(3, "a 1", dec!(11), 20001), &off),
            duplicate_of(1)
        );
    }
}
