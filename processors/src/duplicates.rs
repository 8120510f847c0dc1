//! Duplicate invoice detection, per supplier: an invoice is a duplicate of an earlier one of
//! the same supplier when any of the org's rules finds them equal on every field the rule
//! compares. The defaults are DOMAIN.md's two: the same (normalised) invoice reference, or the
//! same currency, gross amount and invoice date. Credit memos are checked among credit memos.
//! The same `invoice_id` again is a re-delivery or a correction, never a duplicate.

use crate::ids::{InvoiceId, InvoiceNumber, SupplierId};
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
}

/// A rule: documents equal on all these fields are duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateRule(pub Vec<DuplicateField>);

/// The org's duplicate rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicatePolicy {
    pub rules: Vec<DuplicateRule>,
}

impl Default for DuplicatePolicy {
    fn default() -> Self {
        use DuplicateField::*;
        Self {
            rules: vec![
                DuplicateRule(vec![Reference]),
                DuplicateRule(vec![Currency, Amount, InvoiceDate]),
            ],
        }
    }
}

pub use crate::events::DocumentKind;

/// What the duplicate check looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFacts {
    pub invoice: InvoiceId,
    pub supplier: SupplierId,
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

/// An invoice found to repeat an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateFound {
    pub invoice: InvoiceId,
    pub duplicate_of: InvoiceId,
    pub rule: DuplicateRule,
}

impl DuplicateRegister {
    /// The entries `check` reads and writes for `facts`: a register holding only those of
    /// them the whole one has decides as the whole one would.
    pub fn keys(facts: &InvoiceFacts, policy: &DuplicatePolicy) -> Vec<String> {
        policy
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| entry_key(index, facts, rule))
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

    /// Registers `facts` and says whether an earlier, different document matches it.
    pub fn check(
        &mut self,
        facts: &InvoiceFacts,
        policy: &DuplicatePolicy,
    ) -> Option<DuplicateFound> {
        let mut found = None;
        for (index, rule) in policy.rules.iter().enumerate() {
            let key = entry_key(index, facts, rule);
            match self.seen.get(&key) {
                Some(first) if *first != facts.invoice => {
                    found.get_or_insert_with(|| DuplicateFound {
                        invoice: facts.invoice.clone(),
                        duplicate_of: first.clone(),
                        rule: rule.clone(),
                    });
                }
                Some(_) => {}
                None => {
                    self.seen.insert(key, facts.invoice.clone());
                }
            }
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

    fn facts(id: u128, number: &str, amount: Decimal, date: i32) -> InvoiceFacts {
        InvoiceFacts {
            invoice: InvoiceId::from_u128(id),
            supplier: SupplierId::from_u128(7),
            kind: DocumentKind::Invoice,
            number: InvoiceNumber::parse(number).unwrap(),
            gross: Money::new(amount, Currency::parse("EUR").unwrap()),
            invoice_date: date,
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
    fn the_same_reference_again_is_a_duplicate_whatever_the_amount() {
        let mut register = DuplicateRegister::default();
        let policy = DuplicatePolicy::default();
        assert_eq!(
            register.check(&facts(1, "INV-0042", dec!(100), 20000), &policy),
            None
        );
        let found = register
            .check(&facts(2, "inv 42", dec!(250), 20010), &policy)
            .unwrap();
        assert_eq!(found.duplicate_of, InvoiceId::from_u128(1));
        assert_eq!(found.rule, DuplicateRule(vec![DuplicateField::Reference]));
    }

    #[test]
    fn the_same_amount_and_date_under_another_reference_is_a_duplicate() {
        let mut register = DuplicateRegister::default();
        let policy = DuplicatePolicy::default();
        register.check(&facts(1, "A-1", dec!(999.90), 20000), &policy);
        assert!(register
            .check(&facts(2, "B-7", dec!(999.9), 20000), &policy)
            .is_some());
        assert!(register
            .check(&facts(3, "C-8", dec!(999.90), 20001), &policy)
            .is_none());
    }

    #[test]
    fn a_redelivered_or_corrected_invoice_is_not_its_own_duplicate() {
        let mut register = DuplicateRegister::default();
        let policy = DuplicatePolicy::default();
        register.check(&facts(1, "A-1", dec!(10), 20000), &policy);
        assert_eq!(
            register.check(&facts(1, "A-1", dec!(10), 20000), &policy),
            None
        );
        assert_eq!(
            register.check(&facts(1, "A-1", dec!(12), 20000), &policy),
            None
        );
    }

    #[test]
    fn a_credit_memo_is_checked_against_credit_memos_only() {
        let mut register = DuplicateRegister::default();
        let policy = DuplicatePolicy::default();
        register.check(&facts(1, "A-1", dec!(10), 20000), &policy);
        let mut memo = facts(2, "A-1", dec!(10), 20000);
        memo.kind = DocumentKind::CreditMemo;
        assert_eq!(register.check(&memo, &policy), None);
        let mut again = facts(3, "A-1", dec!(10), 20000);
        again.kind = DocumentKind::CreditMemo;
        assert!(register.check(&again, &policy).is_some());
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
        for (id, number, amount, duplicate_of) in [
            (100, "inv 0007", dec!(99), Some(7)), // the reference of invoice 7
            (101, "X-1", dec!(23), Some(13)),     // the amount and date of invoice 13
            (102, "X-2", dec!(5), None),          // new
            (7, "INV-7", dec!(17), None),         // invoice 7 again: not its own duplicate
        ] {
            let candidate = facts(id, number, amount, 20000);
            let keys = DuplicateRegister::keys(&candidate, &policy);
            let mut partial = DuplicateRegister::with_entries(
                keys.iter()
                    .filter_map(|k| whole.first_with(k).map(|first| (k.clone(), first.clone()))),
            );
            let mut copy = whole.clone();
            let found = partial.check(&candidate, &policy);
            assert_eq!(
                found.as_ref().map(|f| f.duplicate_of.clone()),
                duplicate_of.map(InvoiceId::from_u128)
            );
            assert_eq!(found, copy.check(&candidate, &policy));
            // What the check registers is among the keys it names.
            for (key, first) in partial.entries() {
                assert!(keys.contains(key));
                assert_eq!(copy.first_with(key), Some(first));
            }
        }
    }

    #[test]
    fn an_org_can_switch_rules_off() {
        let mut register = DuplicateRegister::default();
        let only_reference = DuplicatePolicy {
            rules: vec![DuplicateRule(vec![DuplicateField::Reference])],
        };
        register.check(&facts(1, "A-1", dec!(10), 20000), &only_reference);
        assert!(register
            .check(&facts(2, "B-2", dec!(10), 20000), &only_reference)
            .is_none());
    }
}
