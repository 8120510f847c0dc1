//! ISO 20022 pain.002 (Customer Payment Status Report): what a bank answers about a pain.001
//! file it was sent. Pure: a report's text in, checked against its schema, read into statuses
//! at group, payment-information and transaction level, then resolved into one answer per
//! payment of the file it reports on.
//!
//! Banks send pain.002.001.03 (most), .10 (the 2019 version) and .12, and national variants
//! (the Swiss `pain.002.001.03.ch.02`). A .10 report is checked against the .12 schema (the
//! two differ in no element a status report of ours carries) and a Swiss one against .03, each
//! with its namespace read as that schema's; any other namespace, or none, is refused.

use crate::xsd::{self, Schema};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;

/// Which pain.002 a report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pain002Version {
    V03,
    /// The Swiss banks' pain.002.001.03.ch.02 (SIX).
    V03Ch02,
    V10,
    V12,
}

impl Pain002Version {
    fn of_namespace(namespace: &str) -> Option<(Self, Schema)> {
        Some(match namespace {
            "urn:iso:std:iso:20022:tech:xsd:pain.002.001.03" => (Self::V03, Schema::Pain002V03),
            "http://www.six-interbank-clearing.com/de/pain.002.001.03.ch.02.xsd" => {
                (Self::V03Ch02, Schema::Pain002V03)
            }
            "urn:iso:std:iso:20022:tech:xsd:pain.002.001.10" => (Self::V10, Schema::Pain002V12),
            "urn:iso:std:iso:20022:tech:xsd:pain.002.001.12" => (Self::V12, Schema::Pain002V12),
            _ => return None,
        })
    }
}

/// An ISO 20022 status code (`ExternalPaymentTransactionStatus1Code`: four letters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCode(String);

/// What a status says about a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// ACCP, ACSP, ACWC, ACWP, ACFC: the bank accepted the payment for execution.
    Accepted,
    /// ACSC, ACCC: the debtor's (or the creditor's) account was settled.
    Settled,
    Rejected,
    /// PART: some accepted, some not; the lower level says which.
    Partial,
    /// ACTC (technical validation), RCVD, PDNG, RCVC (verification of payee) and others: a
    /// step on the way, nothing that moves a payment.
    Informational,
}

impl StatusCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn meaning(&self) -> Meaning {
        match self.0.as_str() {
            "ACCP" | "ACSP" | "ACWC" | "ACWP" | "ACFC" => Meaning::Accepted,
            "ACSC" | "ACCC" => Meaning::Settled,
            "RJCT" => Meaning::Rejected,
            "PART" => Meaning::Partial,
            _ => Meaning::Informational,
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `StsRsnInf`: an ISO reason code (or the bank's proprietary one) and its free text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reason {
    pub code: Option<String>,
    pub text: Vec<String>,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text.join(" ");
        match (&self.code, text.is_empty()) {
            (Some(code), true) => f.write_str(code),
            (Some(code), false) => write!(f, "{code}: {text}"),
            (None, _) => f.write_str(&text),
        }
    }
}

/// A status and what the bank gave as its reasons, at one level of a report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Level {
    pub status: Option<StatusCode>,
    pub reasons: Vec<Reason>,
    /// `NbOfTxsPerSts`: how many transactions had each status.
    pub counts: Vec<(u64, StatusCode)>,
}

impl Level {
    /// The status a lower level without one of its own takes: this level's, unless PART.
    fn inherited(&self) -> Option<&StatusCode> {
        self.status
            .as_ref()
            .filter(|s| s.meaning() != Meaning::Partial)
    }

    /// The one status all of `n` transactions listed without a status must have, if this
    /// level counts exactly `n` transactions of one status (the Portuguese banks' implicit
    /// rejections: a `TxInfAndSts` with a reason but no `TxSts`).
    fn counted(&self, n: u64) -> Option<&StatusCode> {
        match self.counts.as_slice() {
            [(count, status)] if *count == n => Some(status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionStatus {
    pub original_end_to_end_id: Option<String>,
    pub status: Option<StatusCode>,
    pub reasons: Vec<Reason>,
    /// The bank's own reference for the transaction (`AcctSvcrRef`), if it gave one.
    pub bank_reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentInformationStatus {
    pub original_id: String,
    pub level: Level,
    pub transactions: Vec<TransactionStatus>,
}

/// A pain.002 as read, before it is matched to the file it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub version: Pain002Version,
    /// The report's own `MsgId`.
    pub msg_id: String,
    /// `OrgnlMsgId`: the pain.001 file this reports on.
    pub original_msg_id: String,
    pub group: Level,
    pub payment_informations: Vec<PaymentInformationStatus>,
}

/// Why a text is not a status report the connector can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pain002Error {
    #[error("not well-formed XML: {0}")]
    NotXml(String),
    #[error("the document has no namespace: an ISO 20022 file declares its message's")]
    NoNamespace,
    #[error("namespace {0} is not a pain.002 status report this connector reads (pain.002.001.03, .03.ch.02, .10, .12)")]
    UnknownNamespace(String),
    #[error("the root element is {0}, not an ISO 20022 Document")]
    NotADocument(String),
    #[error("invalid against {schema:?}: {}", errors.join("; "))]
    SchemaInvalid { schema: Schema, errors: Vec<String> },
    #[error("the report could not be read: {0}")]
    Unreadable(String),
}

/// Why a report does not fit the file it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("the report names payment information {0}, which the file does not have")]
    UnknownPaymentInformation(String),
    #[error("the report names end-to-end id {0}, which the file does not have")]
    UnknownEndToEnd(String),
    #[error("a transaction status names no end-to-end id: it cannot be traced to a payment")]
    NoEndToEnd,
}

/// What a report says about one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    Settled,
    /// Rejected, with the bank's reason (`AC01: ACC NUMBER INVALID`).
    Rejected(String),
}

/// A report resolved against the file it answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    /// End-to-end id -> answer, in the file's order; payments the report says nothing
    /// definite about are not here.
    pub answers: Vec<(String, Answer)>,
    /// The bank refused a file (or payment information, or transaction) as a duplicate of
    /// one it has (DU01-DU05): a resend of ours, the first one standing. Nothing changes.
    pub duplicate: bool,
}

/// Reads `xml` as a pain.002, refusing it unless it is valid against its schema.
pub fn parse(xml: &str) -> Result<StatusReport, Pain002Error> {
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let namespace = root_namespace(xml)?;
    let (version, schema) = Pain002Version::of_namespace(&namespace)
        .ok_or_else(|| Pain002Error::UnknownNamespace(namespace.clone()))?;
    // A .10 or Swiss report is checked by the schema it is read as, its namespace renamed
    // in a copy (the file as received is what is kept).
    let checked = if namespace == schema.namespace() {
        std::borrow::Cow::Borrowed(xml)
    } else {
        std::borrow::Cow::Owned(xml.replacen(&namespace, schema.namespace(), 1))
    };
    xsd::validate(schema, &checked)
        .map_err(|errors| Pain002Error::SchemaInvalid { schema, errors })?;
    let document: xml_model::Document =
        quick_xml::de::from_str(xml).map_err(|e| Pain002Error::Unreadable(e.to_string()))?;
    Ok(document.report.into_report(version))
}

/// The namespace of the root element, which must be `Document`.
fn root_namespace(xml: &str) -> Result<String, Pain002Error> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let mut reader = quick_xml::NsReader::from_str(xml);
    loop {
        match reader.read_resolved_event() {
            Ok((resolved, Event::Start(start) | Event::Empty(start))) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if name != "Document" {
                    return Err(Pain002Error::NotADocument(name));
                }
                return match resolved {
                    ResolveResult::Bound(ns) => Ok(String::from_utf8_lossy(ns.as_ref()).into()),
                    _ => Err(Pain002Error::NoNamespace),
                };
            }
            Ok((_, Event::Eof)) => return Err(Pain002Error::NotXml("no root element".into())),
            Ok(_) => {}
            Err(e) => return Err(Pain002Error::NotXml(e.to_string())),
        }
    }
}

impl StatusReport {
    /// What this report says about each payment of a file whose payment-information blocks
    /// are `file` (id -> the end-to-end ids of its payments). Per payment, the most specific
    /// level decides: its transaction status; else, for a transaction listed without one,
    /// its block's or the group's (unless PART), or the one status the block or group counts
    /// for exactly the transactions listed without one; for a payment not listed, its
    /// block's status, else the group's (unless PART). Informational statuses (ACTC, RCVC,
    /// PDNG...) answer nothing.
    pub fn resolve(&self, file: &[(String, Vec<String>)]) -> Result<Resolution, ResolveError> {
        let mut resolution = Resolution::default();
        let mut named: HashMap<&str, (&StatusCode, &[Reason])> = HashMap::new();
        let mut blocks: HashMap<&str, &PaymentInformationStatus> = HashMap::new();
        for block in &self.payment_informations {
            let (_, payments) = file
                .iter()
                .find(|(id, _)| id == block.original_id.trim())
                .ok_or_else(|| {
                    ResolveError::UnknownPaymentInformation(block.original_id.clone())
                })?;
            blocks.insert(block.original_id.trim(), block);
            let without_status = block
                .transactions
                .iter()
                .filter(|t| t.status.is_none())
                .count() as u64;
            for transaction in &block.transactions {
                let id = transaction
                    .original_end_to_end_id
                    .as_deref()
                    .map(str::trim)
                    .ok_or(ResolveError::NoEndToEnd)?;
                if !payments.iter().any(|p| p == id) {
                    return Err(ResolveError::UnknownEndToEnd(id.to_owned()));
                }
                let status = transaction
                    .status
                    .as_ref()
                    .or_else(|| block.level.inherited())
                    .or_else(|| self.group.inherited())
                    .or_else(|| block.level.counted(without_status))
                    .or_else(|| self.group.counted(without_status));
                if let Some(status) = status {
                    // A listed transaction's reasons are its own, else its block's.
                    let reasons = if transaction.reasons.is_empty() {
                        &block.level.reasons
                    } else {
                        &transaction.reasons
                    };
                    named.insert(id, (status, reasons));
                }
            }
        }
        for (block_id, payments) in file {
            let block = blocks.get(block_id.as_str());
            for id in payments {
                let decided = match named.get(id.as_str()) {
                    Some(&(status, reasons)) => Some((status, reasons)),
                    None => match block.and_then(|b| b.level.inherited().map(|s| (s, b))) {
                        Some((status, b)) => Some((status, b.level.reasons.as_slice())),
                        None => self
                            .group
                            .inherited()
                            .map(|s| (s, self.group.reasons.as_slice())),
                    },
                };
                let Some((status, reasons)) = decided else {
                    continue;
                };
                let answer = match status.meaning() {
                    Meaning::Accepted => Answer::Accepted,
                    Meaning::Settled => Answer::Settled,
                    Meaning::Rejected if is_duplicate(reasons) => {
                        resolution.duplicate = true;
                        continue;
                    }
                    Meaning::Rejected => Answer::Rejected(describe(reasons)),
                    Meaning::Partial | Meaning::Informational => continue,
                };
                resolution.answers.push((id.clone(), answer));
            }
        }
        Ok(resolution)
    }
}

/// DU01 duplicate message, DU02 payment information, DU03 transaction, DU04 end-to-end id,
/// DU05 instruction id: the bank has the payment already.
fn is_duplicate(reasons: &[Reason]) -> bool {
    reasons.iter().any(|r| {
        r.code
            .as_deref()
            .is_some_and(|c| matches!(c, "DU01" | "DU02" | "DU03" | "DU04" | "DU05"))
    })
}

fn describe(reasons: &[Reason]) -> String {
    if reasons.is_empty() {
        return "rejected by the bank without a reason".into();
    }
    reasons
        .iter()
        .map(Reason::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The parts of the schema a status report is read from (both versions name them alike);
/// everything else in a report is skipped.
mod xml_model {
    use super::*;

    #[derive(Deserialize)]
    pub struct Document {
        #[serde(rename = "CstmrPmtStsRpt")]
        pub report: Report,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Report {
        grp_hdr: GroupHeader,
        orgnl_grp_inf_and_sts: OriginalGroup,
        #[serde(default)]
        orgnl_pmt_inf_and_sts: Vec<OriginalPaymentInformation>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct GroupHeader {
        msg_id: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct OriginalGroup {
        orgnl_msg_id: String,
        grp_sts: Option<String>,
        #[serde(default)]
        sts_rsn_inf: Vec<StatusReason>,
        #[serde(default)]
        nb_of_txs_per_sts: Vec<Count>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct OriginalPaymentInformation {
        orgnl_pmt_inf_id: String,
        pmt_inf_sts: Option<String>,
        #[serde(default)]
        sts_rsn_inf: Vec<StatusReason>,
        #[serde(default)]
        nb_of_txs_per_sts: Vec<Count>,
        #[serde(default)]
        tx_inf_and_sts: Vec<Transaction>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Transaction {
        orgnl_end_to_end_id: Option<String>,
        tx_sts: Option<String>,
        #[serde(default)]
        sts_rsn_inf: Vec<StatusReason>,
        acct_svcr_ref: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct StatusReason {
        rsn: Option<ReasonCode>,
        #[serde(default)]
        addtl_inf: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ReasonCode {
        cd: Option<String>,
        prtry: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Count {
        dtld_nb_of_txs: String,
        dtld_sts: String,
    }

    fn code(text: Option<String>) -> Option<StatusCode> {
        text.map(|t| StatusCode(t.trim().to_owned()))
    }

    fn reasons(list: Vec<StatusReason>) -> Vec<Reason> {
        list.into_iter()
            .map(|r| Reason {
                code: r
                    .rsn
                    .and_then(|c| c.cd.or(c.prtry))
                    .map(|c| c.trim().to_owned()),
                text: r
                    .addtl_inf
                    .into_iter()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect(),
            })
            .collect()
    }

    fn counts(list: Vec<Count>) -> Vec<(u64, StatusCode)> {
        // The schema makes DtldNbOfTxs digits; a count too large for u64 counts nothing.
        list.into_iter()
            .filter_map(|c| {
                Some((
                    c.dtld_nb_of_txs.trim().parse().ok()?,
                    StatusCode(c.dtld_sts.trim().to_owned()),
                ))
            })
            .collect()
    }

    impl Report {
        pub fn into_report(self, version: Pain002Version) -> StatusReport {
            let group = self.orgnl_grp_inf_and_sts;
            StatusReport {
                version,
                msg_id: self.grp_hdr.msg_id.trim().to_owned(),
                original_msg_id: group.orgnl_msg_id.trim().to_owned(),
                group: Level {
                    status: code(group.grp_sts),
                    reasons: reasons(group.sts_rsn_inf),
                    counts: counts(group.nb_of_txs_per_sts),
                },
                payment_informations: self
                    .orgnl_pmt_inf_and_sts
                    .into_iter()
                    .map(|b| PaymentInformationStatus {
                        original_id: b.orgnl_pmt_inf_id.trim().to_owned(),
                        level: Level {
                            status: code(b.pmt_inf_sts),
                            reasons: reasons(b.sts_rsn_inf),
                            counts: counts(b.nb_of_txs_per_sts),
                        },
                        transactions: b
                            .tx_inf_and_sts
                            .into_iter()
                            .map(|t| TransactionStatus {
                                original_end_to_end_id: t
                                    .orgnl_end_to_end_id
                                    .map(|id| id.trim().to_owned()),
                                status: code(t.tx_sts),
                                reasons: reasons(t.sts_rsn_inf),
                                bank_reference: t.acct_svcr_ref,
                            })
                            .collect(),
                    })
                    .collect(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
