//! Payment scheduling: one payment per matched invoice, ever; its due date and amount from the
//! payment terms (cash discount captured when the org enables it); holds that keep it from
//! being released and re-check themselves when their cause goes away; release into payment
//! runs per org, currency, debtor account and execution date; bank status moving each part on;
//! installment plans (e.g. Murabaha: cost plus markup in N installments); credit memos set off
//! against the supplier's next payments.

use crate::events::{DocumentKind, InvoiceMatched};
use crate::ids::{InvoiceId, InvoiceNumber, OrgId, PurchaseOrderId, SupplierId};
use crate::lifecycle::PoState;
use crate::money::{Currency, Money, MoneyError};
use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Supplier payment terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentTerms {
    /// Pay the gross amount `days` after the invoice date.
    Net { days: u32 },
    /// `percent` off when paid within `within_days`, else gross by `net_days` ("2/10 net 30").
    Discount {
        percent: Decimal,
        within_days: u32,
        net_days: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "payment terms {0:?} are neither \"NET <days>\" nor \"<percent>/<days> NET <days>\" \
     (at most 999 days, a discount below 100%)"
)]
pub struct TermsError(pub String);

impl std::fmt::Display for PaymentTerms {
    /// The form [`PaymentTerms::parse`] reads back: `NET 30`, `2/10 NET 30`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PaymentTerms::Net { days } => write!(f, "NET {days}"),
            PaymentTerms::Discount {
                percent,
                within_days,
                net_days,
            } => write!(f, "{percent}/{within_days} NET {net_days}"),
        }
    }
}

impl PaymentTerms {
    /// Longest net period accepted: no ERP's terms run longer (SAP's stop at 999 days).
    pub const MAX_DAYS: u32 = 999;

    /// Parses `NET30`, `Net 30`, `2/10 net 30`, `1.5/15 NET 45`.
    pub fn parse(text: &str) -> Result<Self, TermsError> {
        let err = || TermsError(text.to_owned());
        let upper = text.trim().to_ascii_uppercase();
        let (discount, net) = match upper.split_once("NET") {
            Some((before, after)) => (before.trim(), after.trim()),
            None => return Err(err()),
        };
        let net_days: u32 = net.parse().map_err(|_| err())?;
        if net_days > Self::MAX_DAYS {
            return Err(err());
        }
        if discount.is_empty() {
            return Ok(PaymentTerms::Net { days: net_days });
        }
        let (percent, within) = discount.split_once('/').ok_or_else(err)?;
        let percent: Decimal = percent.trim().parse().map_err(|_| err())?;
        let within_days: u32 = within.trim().parse().map_err(|_| err())?;
        if percent <= Decimal::ZERO || percent >= Decimal::ONE_HUNDRED || within_days > net_days {
            return Err(err());
        }
        Ok(PaymentTerms::Discount {
            percent,
            within_days,
            net_days,
        })
    }

    /// When to pay what for `gross` invoiced on `invoice_date`. The discount is rounded
    /// half-up to the currency's minor unit; the amount paid is gross minus that discount.
    pub fn due(&self, gross: Money, invoice_date: NaiveDate, capture_discount: bool) -> Due {
        let plus = |days: u32| invoice_date + Days::new(u64::from(days));
        match *self {
            PaymentTerms::Discount {
                percent,
                within_days,
                ..
            } if capture_discount => {
                let discount = Money::new(
                    gross.amount() * percent / Decimal::ONE_HUNDRED,
                    gross.currency(),
                )
                .round_half_up();
                Due {
                    pay_on: plus(within_days),
                    amount: Money::new(gross.amount() - discount.amount(), gross.currency()),
                    discount: Some(discount),
                }
            }
            PaymentTerms::Net { days } | PaymentTerms::Discount { net_days: days, .. } => Due {
                pay_on: plus(days),
                amount: gross,
                discount: None,
            },
        }
    }
}

/// What the terms make payable, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Due {
    pub pay_on: NaiveDate,
    pub amount: Money,
    pub discount: Option<Money>,
}

/// Cost plus an agreed markup, paid in equal installments every `interval_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallmentPlan {
    pub markup_percent: Decimal,
    pub installments: u32,
    pub interval_days: u32,
}

impl InstallmentPlan {
    /// The installments for `cost`, the first on `first`. Each is rounded half-up to the minor
    /// unit; the last takes the remainder, so they add up to cost plus markup exactly.
    pub fn schedule(&self, cost: Money, first: NaiveDate) -> Vec<(NaiveDate, Money)> {
        let n = self.installments.max(1);
        let total = Money::new(
            cost.amount() * (Decimal::ONE_HUNDRED + self.markup_percent) / Decimal::ONE_HUNDRED,
            cost.currency(),
        )
        .round_half_up();
        let each = Money::new(total.amount() / Decimal::from(n), cost.currency()).round_half_up();
        (0..n)
            .map(|i| {
                let date = first + Days::new(u64::from(i * self.interval_days));
                let amount = if i + 1 == n {
                    total.amount() - each.amount() * Decimal::from(n - 1)
                } else {
                    each.amount()
                };
                (date, Money::new(amount, cost.currency()))
            })
            .collect()
    }
}

/// Why a payment may not be released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Hold {
    PoDisputed,
    SupplierBlocked,
    /// The supplier's bank account changed within the org's cooling-off period.
    BankAccountChanged,
    /// The supplier master has no account to pay to.
    NoCreditorAccount,
    /// The invoice's match blocks it since it was scheduled: the clerk blocked it by hand, or a
    /// correction failed the match. Released when the invoice matches again.
    InvoiceBlocked,
}

impl Hold {
    /// The hold in a sentence, for a person.
    pub fn describe(self) -> &'static str {
        match self {
            Hold::PoDisputed => "its purchase order is disputed",
            Hold::SupplierBlocked => "the supplier is blocked for payment",
            Hold::BankAccountChanged => {
                "the supplier's bank account changed within the org's cooling-off period"
            }
            Hold::NoCreditorAccount => "the supplier master has no bank account to pay to",
            Hold::InvoiceBlocked => {
                "the invoice is blocked: held by hand, or it failed its match again"
            }
        }
    }

    /// `SupplierBlocked` -> `SUPPLIER_BLOCKED`.
    pub fn symbol(self) -> &'static str {
        match self {
            Hold::PoDisputed => "PO_DISPUTED",
            Hold::SupplierBlocked => "SUPPLIER_BLOCKED",
            Hold::BankAccountChanged => "BANK_ACCOUNT_CHANGED",
            Hold::NoCreditorAccount => "NO_CREDITOR_ACCOUNT",
            Hold::InvoiceBlocked => "INVOICE_BLOCKED",
        }
    }
}

/// Where one part (the payment, or one installment) stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartStatus {
    Scheduled,
    Released {
        execution_date: NaiveDate,
    },
    /// The bank accepted the instruction (pain.002 ACCP/ACSP).
    Disbursed,
    /// The bank settled it (pain.002 ACSC).
    Remitted,
    Rejected {
        reason: String,
    },
    /// Its PO was cancelled before it was released.
    Cancelled,
    /// Paid in full by the supplier's credit memos: never instructed, nothing for a bank.
    SetOff,
}

impl std::fmt::Display for PartStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartStatus::Scheduled => f.write_str("scheduled"),
            PartStatus::Released { execution_date } => {
                write!(f, "released in the run of {execution_date}")
            }
            PartStatus::Disbursed => f.write_str("accepted by the bank"),
            PartStatus::Remitted => f.write_str("settled by the bank"),
            PartStatus::Rejected { reason } => write!(f, "rejected by the bank ({reason})"),
            PartStatus::Cancelled => f.write_str("cancelled"),
            PartStatus::SetOff => f.write_str("paid by credit memos"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentPart {
    pub number: u32,
    pub pay_on: NaiveDate,
    pub amount: Money,
    pub status: PartStatus,
}

/// A bank's status report for one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankStatus {
    Accepted,
    Settled,
    Rejected(String),
}

/// The org's payment settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentPolicy {
    pub capture_discounts: bool,
    pub cooling_off_days: u32,
    /// POs whose invoice is at least this much are paid by `installment_plan`, if set.
    pub installment_threshold: Option<Money>,
    pub installment_plan: Option<InstallmentPlan>,
    /// The account payments of this currency are made from.
    pub debtor_accounts: BTreeMap<Currency, String>,
}

/// What the supplier master says of the payee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payee {
    pub supplier: SupplierId,
    pub name: String,
    pub terms: PaymentTerms,
    pub blocked: bool,
    /// Where to pay; `None` holds every payment to this supplier.
    pub iban: Option<String>,
    pub bic: Option<String>,
    pub bank_account_changed_on: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("no debtor account is configured for {0}")]
    NoDebtorAccount(Currency),
    #[error("{0} is a credit memo: it is set off against payments, never paid")]
    CreditMemo(InvoiceId),
    #[error("payment has no part {0}")]
    UnknownPart(u32),
    #[error("part {part} is {status}; a bank status for it is out of order")]
    UnexpectedBankStatus { part: u32, status: PartStatus },
    /// Money already went out on the old amount or date: the difference is for a credit memo
    /// or a further invoice, not for a changed payment.
    #[error("invoice {invoice} was corrected after part {part} of its payment was {status}; settle the difference with a credit memo or a further invoice")]
    CorrectedAfterRelease {
        invoice: InvoiceId,
        part: u32,
        status: PartStatus,
    },
}

/// Events of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    Scheduled {
        invoice: InvoiceId,
        parts: Vec<(NaiveDate, Money)>,
        discount: Option<Money>,
        /// The payable amount less the invoiced one, if the invoice had more decimals than
        /// its currency's minor unit: [`payable`].
        rounding: Option<Money>,
    },
    Held(Hold),
    HoldReleased(Hold),
    /// A corrected invoice matched again before any part was released: planned anew.
    Amended {
        invoice: InvoiceId,
        parts: Vec<(NaiveDate, Money)>,
        discount: Option<Money>,
        rounding: Option<Money>,
    },
    Released(Release),
    PartDisbursed(u32),
    PartRemitted(u32),
    PartRejected {
        part: u32,
        reason: String,
    },
    /// Every part remitted: the PO may move to Paid.
    Settled {
        invoice: InvoiceId,
        po: PurchaseOrderId,
    },
    PartCancelled(u32),
    /// Credit memos of the supplier taken off a part released for payment.
    CreditSetOff {
        part: u32,
        offsets: Vec<Offset>,
    },
    /// The credit covered the whole part: it is paid, with no bank instruction.
    PartSetOff(u32),
}

/// A part released for payment, to be grouped into a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub org: OrgId,
    pub invoice: InvoiceId,
    pub supplier: SupplierId,
    pub part: u32,
    pub amount: Money,
    pub debtor_account: String,
    pub execution_date: NaiveDate,
}

/// The payment of one invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    org: OrgId,
    invoice: InvoiceId,
    number: InvoiceNumber,
    po: PurchaseOrderId,
    supplier: SupplierId,
    debtor_account: String,
    parts: Vec<PaymentPart>,
    holds: BTreeSet<Hold>,
    /// The revision of the invoice's match outcome this payment last heard of.
    #[serde(default)]
    revision: u32,
    /// What the parts were planned from; `None` in payments stored before it was kept.
    #[serde(default)]
    basis: Option<Basis>,
    /// The traces it came of (ADR 0027), opaque here: its invoice's match outcome's and
    /// those that one links to (its PO's). Its payment run links to them.
    #[serde(default)]
    traces: Vec<String>,
}

/// The traces a payment keeps at most: its match outcomes' and their links, newest last.
const MAX_PAYMENT_TRACES: usize = 16;

/// What a payment's parts are planned from: a corrected invoice changing either is planned
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Basis {
    total: Money,
    invoice_date: NaiveDate,
}

/// A payment's parts, as the terms, the org's installment plan and its debtor accounts make
/// them.
struct Plan {
    debtor_account: String,
    parts: Vec<(NaiveDate, Money)>,
    discount: Option<Money>,
    rounding: Option<Money>,
}

/// What a bank can be told to pay of `invoiced`, and the rounding difference (payable less
/// invoiced, `None` if nothing was rounded). An invoice's lines may carry more decimals than
/// its currency's minor unit (EUR 99.9999); what leaves for a bank may not (ISO 4217: JPY 0,
/// EUR 2, KWD 3). Rounded half-up (half away from zero), once, where an amount becomes
/// payable: every part, discount, credit and run total after it is in minor units, so they
/// add up exactly.
pub fn payable(invoiced: Money) -> (Money, Option<Money>) {
    let payable = invoiced.round_half_up();
    let difference = payable.amount() - invoiced.amount();
    let rounding = (!difference.is_zero()).then(|| Money::new(difference, invoiced.currency()));
    (payable, rounding)
}

impl Plan {
    fn of(
        matched: &InvoiceMatched,
        invoice_date: NaiveDate,
        payee: &Payee,
        policy: &PaymentPolicy,
    ) -> Result<Plan, PaymentError> {
        let currency = matched.total.currency();
        let debtor_account = policy
            .debtor_accounts
            .get(&currency)
            .ok_or(PaymentError::NoDebtorAccount(currency))?
            .clone();
        let (total, rounding) = payable(matched.total);
        let due = payee
            .terms
            .due(total, invoice_date, policy.capture_discounts);
        let by_installments = match (policy.installment_threshold, policy.installment_plan) {
            (Some(threshold), Some(plan))
                if threshold.currency() == currency
                    && matched.total.amount() >= threshold.amount() =>
            {
                Some(plan)
            }
            _ => None,
        };
        let (parts, discount) = match by_installments {
            // Financed: no early-payment discount, the markup is the price of time.
            Some(plan) => (plan.schedule(total, due.pay_on), None),
            None => (vec![(due.pay_on, due.amount)], due.discount),
        };
        Ok(Plan {
            debtor_account,
            parts,
            discount,
            rounding,
        })
    }

    fn parts(&self) -> Vec<PaymentPart> {
        self.parts
            .iter()
            .enumerate()
            .map(|(i, (pay_on, amount))| PaymentPart {
                number: i as u32 + 1,
                pay_on: *pay_on,
                amount: *amount,
                status: PartStatus::Scheduled,
            })
            .collect()
    }
}

impl Payment {
    /// Keeps `traces` (opaque W3C trace contexts of what it came of) with those it has, each
    /// once, the oldest dropped past a bound.
    pub fn keep_traces(&mut self, traces: &[String]) {
        for trace in traces {
            if !self.traces.contains(trace) {
                self.traces.push(trace.clone());
            }
        }
        let over = self.traces.len().saturating_sub(MAX_PAYMENT_TRACES);
        self.traces.drain(..over);
    }

    /// The traces it came of.
    pub fn traces(&self) -> &[String] {
        &self.traces
    }

    /// Schedules the payment of a matched invoice. `existing` is what the store holds for this
    /// invoice: if there is anything, a replayed or re-delivered match changes nothing.
    pub fn schedule(
        existing: Option<&Payment>,
        matched: &InvoiceMatched,
        invoice_date: NaiveDate,
        payee: &Payee,
        policy: &PaymentPolicy,
    ) -> Result<Option<(Payment, Vec<PaymentEvent>)>, PaymentError> {
        if existing.is_some() {
            return Ok(None);
        }
        if matched.kind == DocumentKind::CreditMemo {
            return Err(PaymentError::CreditMemo(matched.invoice.clone()));
        }
        let plan = Plan::of(matched, invoice_date, payee, policy)?;
        let mut payment = Payment {
            org: matched.org.clone(),
            invoice: matched.invoice.clone(),
            number: matched.number.clone(),
            po: matched.po.clone(),
            supplier: matched.supplier.clone(),
            parts: plan.parts(),
            debtor_account: plan.debtor_account,
            holds: BTreeSet::new(),
            revision: matched.revision,
            basis: Some(Basis {
                total: matched.total,
                invoice_date,
            }),
            traces: Vec::new(),
        };
        let mut events = vec![PaymentEvent::Scheduled {
            invoice: matched.invoice.clone(),
            parts: plan.parts,
            discount: plan.discount,
            rounding: plan.rounding,
        }];
        events.extend(payment.on_payee(payee));
        Ok(Some((payment, events)))
    }

    /// The invoice's match was decided again after this payment was scheduled. Only a newer
    /// outcome than the last one heard of counts (the two outcome topics are read in any
    /// order); a replayed one changes nothing. Matched again: the hold of a blocked invoice
    /// goes, and a corrected amount or invoice date is planned anew, as long as no part has
    /// gone to the bank.
    pub fn on_matched_again(
        &mut self,
        matched: &InvoiceMatched,
        invoice_date: NaiveDate,
        payee: &Payee,
        policy: &PaymentPolicy,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        if matched.revision <= self.revision {
            return Ok(vec![]);
        }
        let basis = Basis {
            total: matched.total,
            invoice_date,
        };
        let mut events = Vec::new();
        if self.basis != Some(basis) {
            if let Some(gone) = self
                .parts
                .iter()
                .find(|p| p.status != PartStatus::Scheduled)
            {
                return Err(PaymentError::CorrectedAfterRelease {
                    invoice: self.invoice.clone(),
                    part: gone.number,
                    status: gone.status.clone(),
                });
            }
            let plan = Plan::of(matched, invoice_date, payee, policy)?;
            self.parts = plan.parts();
            self.debtor_account = plan.debtor_account;
            self.basis = Some(basis);
            events.push(PaymentEvent::Amended {
                invoice: self.invoice.clone(),
                parts: plan.parts,
                discount: plan.discount,
                rounding: plan.rounding,
            });
        }
        self.revision = matched.revision;
        events.extend(self.set_hold(Hold::InvoiceBlocked, false));
        Ok(events)
    }

    /// The invoice's match now blocks it (outcome `revision`): what is not yet released is
    /// held until it matches again. Older or the same revision: nothing.
    pub fn on_blocked(&mut self, revision: u32) -> Vec<PaymentEvent> {
        if revision <= self.revision {
            return vec![];
        }
        self.revision = revision;
        self.set_hold(Hold::InvoiceBlocked, true)
            .into_iter()
            .collect()
    }

    pub fn parts(&self) -> &[PaymentPart] {
        &self.parts
    }

    pub fn org(&self) -> &OrgId {
        &self.org
    }

    pub fn invoice(&self) -> &InvoiceId {
        &self.invoice
    }

    pub fn po(&self) -> &PurchaseOrderId {
        &self.po
    }

    /// The supplier's invoice number, the remittance information a payee recognises.
    pub fn number(&self) -> &InvoiceNumber {
        &self.number
    }

    pub fn supplier(&self) -> &SupplierId {
        &self.supplier
    }

    /// The date the next part still to be released falls due, if any is.
    pub fn next_due(&self) -> Option<NaiveDate> {
        self.parts
            .iter()
            .filter(|p| p.status == PartStatus::Scheduled)
            .map(|p| p.pay_on)
            .min()
    }

    pub fn holds(&self) -> &BTreeSet<Hold> {
        &self.holds
    }

    fn set_hold(&mut self, hold: Hold, on: bool) -> Option<PaymentEvent> {
        match (on, self.holds.contains(&hold)) {
            (true, false) => {
                self.holds.insert(hold);
                Some(PaymentEvent::Held(hold))
            }
            (false, true) => {
                self.holds.remove(&hold);
                Some(PaymentEvent::HoldReleased(hold))
            }
            _ => None,
        }
    }

    /// The supplier master changed: block, unblock, new bank account.
    pub fn on_payee(&mut self, payee: &Payee) -> Vec<PaymentEvent> {
        self.set_hold(Hold::SupplierBlocked, payee.blocked)
            .into_iter()
            .collect()
    }

    /// The PO moved: a dispute holds the payment until resolved; a cancellation cancels every
    /// part not yet released (released ones are with the bank already).
    pub fn on_po_state(&mut self, state: PoState) -> Vec<PaymentEvent> {
        if state == PoState::Cancelled {
            return self
                .parts
                .iter_mut()
                .filter(|p| p.status == PartStatus::Scheduled)
                .map(|p| {
                    p.status = PartStatus::Cancelled;
                    PaymentEvent::PartCancelled(p.number)
                })
                .collect();
        }
        self.set_hold(Hold::PoDisputed, state == PoState::Disputed)
            .into_iter()
            .collect()
    }

    /// Releases every part due by `execution_date` unless a hold stands. The bank-account
    /// hold is decided here, against the execution date: a change within the cooling-off
    /// period holds; once the period has passed the hold goes by itself.
    pub fn release(
        &mut self,
        execution_date: NaiveDate,
        payee: &Payee,
        policy: &PaymentPolicy,
    ) -> Vec<PaymentEvent> {
        let cooling = payee.bank_account_changed_on.is_some_and(|changed| {
            execution_date < changed + Days::new(u64::from(policy.cooling_off_days))
        });
        let mut events: Vec<PaymentEvent> = self
            .set_hold(Hold::BankAccountChanged, cooling)
            .into_iter()
            .chain(self.set_hold(Hold::NoCreditorAccount, payee.iban.is_none()))
            .collect();
        events.extend(self.on_payee(payee));
        if !self.holds.is_empty() {
            return events;
        }
        for part in &mut self.parts {
            if part.status == PartStatus::Scheduled && part.pay_on <= execution_date {
                part.status = PartStatus::Released { execution_date };
                events.push(PaymentEvent::Released(Release {
                    org: self.org.clone(),
                    invoice: self.invoice.clone(),
                    supplier: self.supplier.clone(),
                    part: part.number,
                    // A no-op but for parts planned before amounts were rounded (ADR 0015).
                    amount: part.amount.round_half_up(),
                    debtor_account: self.debtor_account.clone(),
                    execution_date,
                }));
            }
        }
        events
    }

    /// A bank status report (pain.002) for one part.
    pub fn on_bank_status(
        &mut self,
        part: u32,
        status: &BankStatus,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let p = self
            .parts
            .iter_mut()
            .find(|p| p.number == part)
            .ok_or(PaymentError::UnknownPart(part))?;
        let event = match (&p.status, status) {
            (PartStatus::Released { .. }, BankStatus::Accepted) => {
                p.status = PartStatus::Disbursed;
                PaymentEvent::PartDisbursed(part)
            }
            (PartStatus::Released { .. } | PartStatus::Disbursed, BankStatus::Settled) => {
                p.status = PartStatus::Remitted;
                PaymentEvent::PartRemitted(part)
            }
            (PartStatus::Released { .. } | PartStatus::Disbursed, BankStatus::Rejected(reason)) => {
                p.status = PartStatus::Rejected {
                    reason: reason.clone(),
                };
                PaymentEvent::PartRejected {
                    part,
                    reason: reason.clone(),
                }
            }
            // The same report again: nothing new.
            (PartStatus::Disbursed, BankStatus::Accepted)
            | (PartStatus::Remitted, BankStatus::Settled | BankStatus::Accepted) => {
                return Ok(vec![])
            }
            (current, _) => {
                return Err(PaymentError::UnexpectedBankStatus {
                    part,
                    status: current.clone(),
                })
            }
        };
        let mut events = vec![event];
        if matches!(events[0], PaymentEvent::PartRemitted(_)) {
            events.extend(self.settled());
        }
        Ok(events)
    }

    /// `Settled` once every part is paid, by the bank or by credit.
    fn settled(&self) -> Option<PaymentEvent> {
        self.parts
            .iter()
            .all(|p| matches!(p.status, PartStatus::Remitted | PartStatus::SetOff))
            .then(|| PaymentEvent::Settled {
                invoice: self.invoice.clone(),
                po: self.po.clone(),
            })
    }

    /// Takes the supplier's open credit off a part just released (`release`, one of the
    /// events of [`Payment::release`]). What is left is released for the bank; a part the
    /// credit covers entirely is paid by set-off and never instructed (pain.001 has no
    /// negative or zero amounts).
    pub fn set_off(
        &mut self,
        release: Release,
        credit: &mut SupplierCredit,
    ) -> Result<Vec<PaymentEvent>, MoneyError> {
        let (left, offsets) = credit.take(release.amount)?;
        if offsets.is_empty() {
            return Ok(vec![PaymentEvent::Released(release)]);
        }
        let mut events = vec![PaymentEvent::CreditSetOff {
            part: release.part,
            offsets,
        }];
        if !left.amount().is_zero() {
            events.push(PaymentEvent::Released(Release {
                amount: left,
                ..release
            }));
            return Ok(events);
        }
        if let Some(part) = self.parts.iter_mut().find(|p| p.number == release.part) {
            part.status = PartStatus::SetOff;
        }
        events.push(PaymentEvent::PartSetOff(release.part));
        events.extend(self.settled());
        Ok(events)
    }
}

/// One credit memo's amount taken off one payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    pub memo: InvoiceId,
    pub number: InvoiceNumber,
    pub amount: Money,
}

/// A credit memo not yet set off in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenCredit {
    pub memo: InvoiceId,
    pub number: InvoiceNumber,
    pub left: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    #[error("invoice {0} is an invoice, not a credit memo")]
    NotACreditMemo(InvoiceId),
    #[error("credit memo {memo} is in {memo_currency}; this supplier's credit is in {credit}")]
    CurrencyMismatch {
        memo: InvoiceId,
        memo_currency: Currency,
        credit: Currency,
    },
}

/// The matched credit memos of one supplier in one currency, as SAP's payment run clears open
/// credit memo items against the vendor's invoices: each credit is taken off the supplier's
/// next payments in that currency, oldest credit first, until it is used up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplierCredit {
    currency: Currency,
    open: Vec<OpenCredit>,
    /// Every credit memo ever recorded: a replayed or re-delivered one counts once.
    recorded: BTreeSet<InvoiceId>,
}

impl SupplierCredit {
    pub fn new(currency: Currency) -> Self {
        Self {
            currency,
            open: Vec::new(),
            recorded: BTreeSet::new(),
        }
    }

    /// Records a matched credit memo. `Ok(false)`: already recorded, nothing changes.
    pub fn record(&mut self, memo: &InvoiceMatched) -> Result<bool, CreditError> {
        if memo.kind != DocumentKind::CreditMemo {
            return Err(CreditError::NotACreditMemo(memo.invoice.clone()));
        }
        if memo.total.currency() != self.currency {
            return Err(CreditError::CurrencyMismatch {
                memo: memo.invoice.clone(),
                memo_currency: memo.total.currency(),
                credit: self.currency,
            });
        }
        if !self.recorded.insert(memo.invoice.clone()) {
            return Ok(false);
        }
        // Credit is money a bank would otherwise pay: in minor units, as payments are.
        let (credit, _) = payable(memo.total);
        if !credit.amount().is_zero() {
            self.open.push(OpenCredit {
                memo: memo.invoice.clone(),
                number: memo.number.clone(),
                left: credit,
            });
        }
        Ok(true)
    }

    /// Credit not yet set off.
    pub fn balance(&self) -> Result<Money, MoneyError> {
        self.open
            .iter()
            .try_fold(Money::zero(self.currency), |sum, c| sum.checked_add(c.left))
    }

    pub fn open(&self) -> &[OpenCredit] {
        &self.open
    }

    /// Takes credit off `amount`, oldest first: what is left to pay and what was taken.
    fn take(&mut self, amount: Money) -> Result<(Money, Vec<Offset>), MoneyError> {
        let mut left = amount;
        let mut offsets = Vec::new();
        if amount.currency() != self.currency {
            return Ok((left, offsets));
        }
        while let Some(credit) = self.open.first_mut() {
            if left.amount().is_zero() {
                break;
            }
            // Credit recorded before amounts were rounded (ADR 0015) is rounded as it is used.
            credit.left = credit.left.round_half_up();
            if credit.left.amount().is_zero() {
                self.open.remove(0);
                continue;
            }
            let taken = if credit.left.amount() <= left.amount() {
                credit.left
            } else {
                left
            };
            left = left.checked_sub(taken)?;
            credit.left = credit.left.checked_sub(taken)?;
            offsets.push(Offset {
                memo: credit.memo.clone(),
                number: credit.number.clone(),
                amount: taken,
            });
            if credit.left.amount().is_zero() {
                self.open.remove(0);
            }
        }
        Ok((left, offsets))
    }
}

/// The payments of one org waiting for a payment run, by the date their next part falls due.
/// A payment run takes what is due by its execution date; a payment that stays unreleased (a
/// hold stands) re-enters the next run.
///
/// The queue holds how many wait on each date, and names a slot for each: the runtime keeps
/// the waiting invoice under a key of its own for the slot. An org's queue so stays a few
/// bytes a date however many payments wait (held whole, it grew by about 40 bytes a waiting
/// invoice and was rewritten with each one scheduled).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunQueue {
    /// Slots taken on each date.
    due: BTreeMap<NaiveDate, u32>,
}

/// Where one waiting invoice is kept: its date in the queue and its place among that date's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueSlot {
    pub date: NaiveDate,
    pub index: u32,
}

impl RunQueue {
    /// The slot for an invoice due `on`. (An invoice queued twice is in two slots; the run
    /// that takes them pays it once.)
    pub fn add(&mut self, on: NaiveDate) -> QueueSlot {
        let taken = self.due.entry(on).or_default();
        let slot = QueueSlot {
            date: on,
            index: *taken,
        };
        *taken += 1;
        slot
    }

    /// Removes and returns the slots of every date by `date`, earliest first: the invoices
    /// kept in them are due.
    pub fn take_due(&mut self, date: NaiveDate) -> Vec<QueueSlot> {
        let later = match date.succ_opt() {
            Some(next) => self.due.split_off(&next),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut self.due, later);
        due.into_iter()
            .flat_map(|(date, taken)| (0..taken).map(move |index| QueueSlot { date, index }))
            .collect()
    }

    /// When the next run has something to do.
    pub fn next(&self) -> Option<NaiveDate> {
        self.due.keys().next().copied()
    }

    /// The slot for `payment` in the run after `run_date` if it still has parts to release:
    /// at the next part's date, or the next day if that date has passed (a hold stood).
    pub fn requeue(&mut self, payment: &Payment, run_date: NaiveDate) -> Option<QueueSlot> {
        let due = payment.next_due()?;
        let next_run = run_date.succ_opt().unwrap_or(run_date);
        Some(self.add(due.max(next_run)))
    }
}

/// Most payments in one run. A run is one `payment-instructions` record, which carries every
/// payment (about 200 bytes each): the contract refuses an array of more than 1,000 entries
/// (`p2p_avro::convert::MAX_ENTRIES`), and Kafka a record over 1 MB by default. A date with
/// more releases for one org and account goes out as several runs, each its own file.
pub const MAX_RUN_PAYMENTS: usize = 1_000;

/// A payment run: released parts of one org, currency, debtor account and execution date,
/// which a bank connector turns into one pain.001 payment information block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRun {
    pub org: OrgId,
    pub currency: Currency,
    pub debtor_account: String,
    pub execution_date: NaiveDate,
    pub releases: Vec<Release>,
    pub total: Money,
}

/// Groups releases into runs of at most [`MAX_RUN_PAYMENTS`] payments; the order of releases
/// is kept within a run and across the runs a group is split into.
pub fn payment_runs(releases: Vec<Release>) -> Result<Vec<PaymentRun>, MoneyError> {
    let mut runs: BTreeMap<(OrgId, Currency, String, NaiveDate), Vec<Release>> = BTreeMap::new();
    for release in releases {
        let key = (
            release.org.clone(),
            release.amount.currency(),
            release.debtor_account.clone(),
            release.execution_date,
        );
        runs.entry(key).or_default().push(release);
    }
    let mut out = Vec::with_capacity(runs.len());
    for ((org, currency, debtor_account, execution_date), mut releases) in runs {
        while !releases.is_empty() {
            // The first MAX_RUN_PAYMENTS in order, moved (not copied) into this run.
            let rest = releases.split_off(releases.len().min(MAX_RUN_PAYMENTS));
            let total = releases
                .iter()
                .try_fold(Money::zero(currency), |sum, r| sum.checked_add(r.amount))?;
            out.push(PaymentRun {
                org: org.clone(),
                currency,
                debtor_account: debtor_account.clone(),
                execution_date,
                releases: std::mem::replace(&mut releases, rest),
                total,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
