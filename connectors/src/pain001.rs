//! ISO 20022 pain.001.001.09 (Customer Credit Transfer Initiation): one file per payment run,
//! as a bank connector sends it. Pure: a run in, the file's XML and its id mapping out.

use crate::bank_ids::{check_bic, check_iban, BankIdError};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use p2p_processors::{Currency, InvoiceId, Money};
use rust_decimal::Decimal;
use serde::Serialize;

/// The longest `MsgId`, `PmtInfId` and `EndToEndId` (ISO 20022 `Max35Text`).
pub const MAX_ID: usize = 35;
/// The longest name (`Max140Text`; SEPA keeps 70).
pub const MAX_NAME: usize = 70;
/// The longest unstructured remittance (`Max140Text`).
pub const MAX_REMITTANCE: usize = 140;

/// One payment of a run, as the payment topology instructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPayment {
    pub invoice: InvoiceId,
    pub part: u32,
    pub creditor_name: String,
    pub creditor_iban: String,
    pub creditor_bic: Option<String>,
    pub amount: Money,
    pub remittance: String,
}

/// A payment run: one org, currency, debtor account and execution date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub run_id: String,
    pub debtor_name: String,
    pub debtor_iban: String,
    pub debtor_bic: Option<String>,
    pub currency: Currency,
    pub execution_date: NaiveDate,
    pub total: Money,
    pub payments: Vec<RunPayment>,
}

impl Run {
    /// The run the payment topology instructed on `payment-instructions`, paid from the
    /// account of `debtor_name` (the org's legal name; `org-config` does not carry it yet)
    /// whose bank's BIC is `debtor_bic`, if known.
    pub fn from_instruction(
        instruction: &p2p_avro::convert::payment::PaymentInstructionRecord,
        debtor_name: &str,
        debtor_bic: Option<&str>,
    ) -> Run {
        Run {
            run_id: instruction.run_id.clone(),
            debtor_name: debtor_name.to_owned(),
            debtor_iban: instruction.debtor_account.clone(),
            debtor_bic: debtor_bic.map(str::to_owned),
            currency: instruction.currency,
            execution_date: instruction.execution_date,
            total: instruction.total,
            payments: instruction
                .payments
                .iter()
                .map(|p| RunPayment {
                    invoice: p.invoice.clone(),
                    part: p.part,
                    creditor_name: p.creditor_name.clone(),
                    creditor_iban: p.creditor_iban.clone(),
                    creditor_bic: p.creditor_bic.clone(),
                    amount: p.amount,
                    remittance: p.remittance.clone(),
                })
                .collect(),
        }
    }
}

/// A pain.001 file, and how its ids map back to the run (pain.002 answers name them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pain001 {
    /// `MsgId`: the same run always gives the same one, so a file resent when unsure is the
    /// same file to the bank, which dedupes on it.
    pub msg_id: String,
    pub xml: String,
    /// `EndToEndId` in the file -> the invoice and part it pays.
    pub end_to_end: Vec<(String, InvoiceId, u32)>,
}

/// Why a run cannot become a file a bank accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pain001Error {
    #[error("run {0} has no payments: a pain.001 needs at least one")]
    Empty(String),
    #[error("payment of {invoice} part {part}: {amount} is not in the minor unit of its currency")]
    NotInMinorUnits {
        invoice: InvoiceId,
        part: u32,
        amount: Money,
    },
    #[error(
        "payment of {invoice} part {part}: {amount} is not positive; a bank pays no such amount"
    )]
    NotPositive {
        invoice: InvoiceId,
        part: u32,
        amount: Money,
    },
    #[error("payment of {invoice} part {part} is in {actual}, its run in {expected}")]
    OtherCurrency {
        invoice: InvoiceId,
        part: u32,
        expected: Currency,
        actual: Currency,
    },
    #[error("run {run}: its total {total} is not the sum of its payments, {sum}")]
    TotalMismatch {
        run: String,
        total: Money,
        sum: Decimal,
    },
    #[error("{field}: {source}")]
    BankId {
        field: &'static str,
        source: BankIdError,
    },
    #[error("the file could not be written: {0}")]
    Xml(String),
}

/// `text` in the characters every SEPA bank accepts (`a-z A-Z 0-9 / - ? : ( ) . , ' +` and
/// space), letters with diacritics spelled without them, anything else a space; at most `max`
/// characters.
pub fn sepa_text(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => out.push(c),
            '/' | '-' | '?' | ':' | '(' | ')' | '.' | ',' | '\'' | '+' | ' ' => out.push(c),
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'Ä' => out.push_str("Ae"),
            'Ö' => out.push_str("Oe"),
            'Ü' => out.push_str("Ue"),
            'ß' => out.push_str("ss"),
            'à' | 'á' | 'â' | 'ã' | 'å' => out.push('a'),
            'è' | 'é' | 'ê' | 'ë' => out.push('e'),
            'ì' | 'í' | 'î' | 'ï' => out.push('i'),
            'ò' | 'ó' | 'ô' | 'õ' | 'ø' => out.push('o'),
            'ù' | 'ú' | 'û' => out.push('u'),
            'ç' => out.push('c'),
            'ñ' => out.push('n'),
            'À' | 'Á' | 'Â' | 'Ã' | 'Å' => out.push('A'),
            'È' | 'É' | 'Ê' | 'Ë' => out.push('E'),
            'Ç' => out.push('C'),
            'Ñ' => out.push('N'),
            '&' => out.push('+'),
            _ => out.push(' '),
        }
    }
    out.trim().chars().take(max).collect()
}

/// `id` as an ISO 20022 identifier: itself if it has at most 35 SEPA characters, else a
/// deterministic 32-character name of it (a UUID v5 in the URL namespace), so the same id
/// always maps to the same one and the mapping can be kept to trace answers back.
pub fn short_id(id: &str) -> String {
    if id.chars().count() <= MAX_ID && sepa_text(id, MAX_ID) == id && !id.contains(' ') {
        id.to_owned()
    } else {
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, id.as_bytes())
            .simple()
            .to_string()
    }
}

/// The run's pain.001.001.09, created at `created`.
pub fn pain001(run: &Run, created: DateTime<Utc>) -> Result<Pain001, Pain001Error> {
    if run.payments.is_empty() {
        return Err(Pain001Error::Empty(run.run_id.clone()));
    }
    let bank_id = |field, result: Result<String, BankIdError>| {
        result.map_err(|source| Pain001Error::BankId { field, source })
    };
    let debtor_iban = bank_id("debtor IBAN", check_iban(&run.debtor_iban))?;
    let debtor_bic = run
        .debtor_bic
        .as_deref()
        .map(|bic| bank_id("debtor BIC", check_bic(bic)))
        .transpose()?;
    let scale = run.currency.minor_units();
    let mut sum = Decimal::ZERO;
    let mut transactions = Vec::with_capacity(run.payments.len());
    let mut end_to_end = Vec::with_capacity(run.payments.len());
    for payment in &run.payments {
        let (invoice, part, amount) = (payment.invoice.clone(), payment.part, payment.amount);
        if amount.currency() != run.currency {
            return Err(Pain001Error::OtherCurrency {
                invoice,
                part,
                expected: run.currency,
                actual: amount.currency(),
            });
        }
        if amount.amount() <= Decimal::ZERO {
            return Err(Pain001Error::NotPositive {
                invoice,
                part,
                amount,
            });
        }
        if amount.amount().normalize().scale() > scale {
            return Err(Pain001Error::NotInMinorUnits {
                invoice,
                part,
                amount,
            });
        }
        sum += amount.amount();
        let iban = bank_id("creditor IBAN", check_iban(&payment.creditor_iban))?;
        let bic = payment
            .creditor_bic
            .as_deref()
            .map(|bic| bank_id("creditor BIC", check_bic(bic)))
            .transpose()?;
        let id = short_id(&format!("{}/{}", payment.invoice, payment.part));
        end_to_end.push((id.clone(), payment.invoice.clone(), payment.part));
        let remittance = sepa_text(&payment.remittance, MAX_REMITTANCE);
        transactions.push(CreditTransfer {
            pmt_id: PaymentId { end_to_end_id: id },
            amt: Amount {
                instd_amt: InstructedAmount {
                    ccy: run.currency.as_str().to_owned(),
                    value: in_minor_units(amount.amount(), scale),
                },
            },
            cdtr_agt: bic.map(|bic| Agent {
                fin_instn_id: FinancialInstitution::Bic { bicfi: bic },
            }),
            cdtr: Party {
                nm: sepa_text(&payment.creditor_name, MAX_NAME),
            },
            cdtr_acct: Account {
                id: AccountId { iban },
                ccy: None,
            },
            rmt_inf: (!remittance.is_empty()).then_some(Remittance { ustrd: remittance }),
        });
    }
    if sum != run.total.amount() {
        return Err(Pain001Error::TotalMismatch {
            run: run.run_id.clone(),
            total: run.total,
            sum,
        });
    }
    let msg_id = short_id(&run.run_id);
    let control_sum = in_minor_units(sum, scale);
    let count = run.payments.len().to_string();
    let sepa = run.currency.as_str() == "EUR";
    let debtor = Party {
        nm: sepa_text(&run.debtor_name, MAX_NAME),
    };
    let document = Document {
        xmlns: "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09",
        initiation: Initiation {
            grp_hdr: GroupHeader {
                msg_id: msg_id.clone(),
                cre_dt_tm: created.to_rfc3339_opts(SecondsFormat::Secs, false),
                nb_of_txs: count.clone(),
                ctrl_sum: control_sum.clone(),
                initg_pty: debtor.clone(),
            },
            pmt_inf: PaymentInformation {
                pmt_inf_id: msg_id.clone(),
                pmt_mtd: "TRF",
                btch_bookg: true,
                nb_of_txs: count,
                ctrl_sum: control_sum,
                pmt_tp_inf: sepa.then_some(PaymentType {
                    svc_lvl: ServiceLevel { cd: "SEPA" },
                }),
                reqd_exctn_dt: ExecutionDate {
                    dt: run.execution_date.to_string(),
                },
                dbtr: debtor,
                dbtr_acct: Account {
                    id: AccountId { iban: debtor_iban },
                    ccy: Some(run.currency.as_str().to_owned()),
                },
                dbtr_agt: Agent {
                    fin_instn_id: match debtor_bic {
                        Some(bicfi) => FinancialInstitution::Bic { bicfi },
                        None => FinancialInstitution::Other {
                            othr: Other { id: "NOTPROVIDED" },
                        },
                    },
                },
                chrg_br: sepa.then_some("SLEV"),
                cdt_trf_tx_inf: transactions,
            },
        },
    };
    // Indented: the bank reads it the same, and an operator reading one in the ledger can.
    let mut body = String::new();
    let mut serializer = quick_xml::se::Serializer::with_root(&mut body, Some("Document"))
        .map_err(|e| Pain001Error::Xml(e.to_string()))?;
    serializer.indent(' ', 2);
    document
        .serialize(serializer)
        .map_err(|e| Pain001Error::Xml(e.to_string()))?;
    Ok(Pain001 {
        msg_id,
        xml: format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}\n"),
        end_to_end,
    })
}

/// `amount` written with exactly the currency's decimals (EUR `12.30`, JPY `1235`).
fn in_minor_units(amount: Decimal, scale: u32) -> String {
    let mut fixed = amount;
    fixed.rescale(scale);
    fixed.to_string()
}

// ---- the document, as the XSD names it ---------------------------------------------------

#[derive(Serialize)]
struct Document {
    #[serde(rename = "@xmlns")]
    xmlns: &'static str,
    #[serde(rename = "CstmrCdtTrfInitn")]
    initiation: Initiation,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Initiation {
    grp_hdr: GroupHeader,
    pmt_inf: PaymentInformation,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GroupHeader {
    msg_id: String,
    cre_dt_tm: String,
    nb_of_txs: String,
    ctrl_sum: String,
    initg_pty: Party,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PaymentInformation {
    pmt_inf_id: String,
    pmt_mtd: &'static str,
    btch_bookg: bool,
    nb_of_txs: String,
    ctrl_sum: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pmt_tp_inf: Option<PaymentType>,
    reqd_exctn_dt: ExecutionDate,
    dbtr: Party,
    dbtr_acct: Account,
    dbtr_agt: Agent,
    #[serde(skip_serializing_if = "Option::is_none")]
    chrg_br: Option<&'static str>,
    cdt_trf_tx_inf: Vec<CreditTransfer>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PaymentType {
    svc_lvl: ServiceLevel,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceLevel {
    cd: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExecutionDate {
    dt: String,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "PascalCase")]
struct Party {
    nm: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Account {
    id: AccountId,
    #[serde(skip_serializing_if = "Option::is_none")]
    ccy: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "UPPERCASE")]
struct AccountId {
    iban: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Agent {
    fin_instn_id: FinancialInstitution,
}

#[derive(Serialize)]
#[serde(untagged)]
enum FinancialInstitution {
    Bic {
        #[serde(rename = "BICFI")]
        bicfi: String,
    },
    Other {
        #[serde(rename = "Othr")]
        othr: Other,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Other {
    id: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreditTransfer {
    pmt_id: PaymentId,
    amt: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    cdtr_agt: Option<Agent>,
    cdtr: Party,
    cdtr_acct: Account,
    #[serde(skip_serializing_if = "Option::is_none")]
    rmt_inf: Option<Remittance>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PaymentId {
    end_to_end_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Amount {
    instd_amt: InstructedAmount,
}

#[derive(Serialize)]
struct InstructedAmount {
    #[serde(rename = "@Ccy")]
    ccy: String,
    #[serde(rename = "$text")]
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Remittance {
    ustrd: String,
}

#[cfg(test)]
mod tests;
