//! The delivery ledger: per payment run, the file sent for it (kept, so a resend is the same
//! file with the same `MsgId`), what the bank answered, and each payment's last status as the
//! pipeline was told it. Pure: a delivery and what happened in, the delivery as it is now and
//! the `payment-status` updates to publish out (none for what changes nothing, so an
//! acknowledgement or a report received twice publishes nothing twice).

use crate::pain002::{Answer, Resolution};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Where a run's file is, as the bank sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryState {
    /// Recorded before the first send: the bank may or may not have it. Sent (again, the
    /// same file) until the bank answers.
    Sent,
    /// The bank took the file (or answered that it has it already).
    Acknowledged { bank_reference: Option<String> },
    /// The bank refused the file as a whole (a 4xx: a business answer, never retried).
    Rejected { reason: String },
}

/// A payment's status as last published to `payment-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Published {
    Accepted,
    Settled,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredPayment {
    pub end_to_end_id: String,
    pub invoice_id: String,
    pub part: u32,
    pub published: Option<Published>,
}

/// The run's execution date was moved: past the bank's cut-off, or not a business day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateMoved {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub why: String,
}

/// One run's delivery: the ledger's value, keyed by run id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub run_id: String,
    pub org_id: String,
    pub bank: String,
    pub msg_id: String,
    pub payment_information_id: String,
    pub execution_date: NaiveDate,
    pub date_moved: Option<DateMoved>,
    /// The pain.001 file exactly as first sent.
    pub file: String,
    pub payments: Vec<DeliveredPayment>,
    #[serde(flatten)]
    pub state: DeliveryState,
    /// Sends so far (retries and resends after a restart included).
    pub attempts: u32,
    /// Ids of the status reports applied (their `MsgId`): a report delivered again is known.
    #[serde(default)]
    pub reports: Vec<String>,
    /// When this entry last changed, epoch milliseconds.
    pub updated_at: i64,
    /// The run's W3C `traceparent` (ADR 0027), put on each request that sends its file.
    #[serde(default)]
    pub trace: Option<String>,
    /// The traces the run links to: its payments' match outcomes' and their POs'. A PO's
    /// trace id is found here, beside the file that paid it.
    #[serde(default)]
    pub trace_links: Vec<String>,
}

/// A status to publish on `payment-status` for one part of one invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub invoice_id: String,
    pub part: u32,
    pub status: UpdateStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStatus {
    Accepted,
    Settled,
    Rejected(String),
}

impl Delivery {
    /// Whether the bank has answered for the file (acknowledged or rejected it): nothing is
    /// to be sent any more.
    pub fn is_answered(&self) -> bool {
        !matches!(self.state, DeliveryState::Sent)
    }

    /// The bank acknowledged the file: every payment the bank has said nothing about yet is
    /// accepted (the bank took the payments; a later report may still settle or reject one).
    pub fn acknowledge(&mut self, bank_reference: Option<String>, at: i64) -> Vec<StatusUpdate> {
        if self.is_answered() {
            return Vec::new();
        }
        self.state = DeliveryState::Acknowledged { bank_reference };
        self.updated_at = at;
        self.payments
            .iter_mut()
            .filter_map(|p| publish(p, UpdateStatus::Accepted))
            .collect()
    }

    /// The bank refused the whole file: every payment not settled is rejected, with the
    /// bank's reason.
    pub fn reject(&mut self, reason: &str, at: i64) -> Vec<StatusUpdate> {
        if self.is_answered() {
            return Vec::new();
        }
        self.state = DeliveryState::Rejected {
            reason: reason.to_owned(),
        };
        self.updated_at = at;
        self.payments
            .iter_mut()
            .filter_map(|p| publish(p, UpdateStatus::Rejected(reason.to_owned())))
            .collect()
    }

    /// The payment-information blocks of the file, as a report is resolved against them.
    pub fn blocks(&self) -> Vec<(String, Vec<String>)> {
        vec![(
            self.payment_information_id.clone(),
            self.payments
                .iter()
                .map(|p| p.end_to_end_id.clone())
                .collect(),
        )]
    }

    /// Applies a status report (`report_id` its `MsgId`) already resolved against this file.
    /// A report applied before changes nothing; so does an answer a payment has had, or one
    /// that would go back (a settled payment is not accepted again).
    pub fn apply(
        &mut self,
        report_id: &str,
        resolution: &Resolution,
        at: i64,
    ) -> Vec<StatusUpdate> {
        if self.reports.iter().any(|r| r == report_id) {
            return Vec::new();
        }
        self.reports.push(report_id.to_owned());
        self.updated_at = at;
        let mut updates = Vec::new();
        for (id, answer) in &resolution.answers {
            let Some(payment) = self.payments.iter_mut().find(|p| &p.end_to_end_id == id) else {
                continue;
            };
            let status = match answer {
                Answer::Accepted => UpdateStatus::Accepted,
                Answer::Settled => UpdateStatus::Settled,
                Answer::Rejected(reason) => UpdateStatus::Rejected(reason.clone()),
            };
            updates.extend(publish(payment, status));
        }
        updates
    }
}

/// `status` for `payment` if it moves it forward: nothing -> accepted -> settled, or to
/// rejected from nothing or accepted. Settled and rejected are final.
fn publish(payment: &mut DeliveredPayment, status: UpdateStatus) -> Option<StatusUpdate> {
    let next = match (&payment.published, &status) {
        (None, UpdateStatus::Accepted) => Published::Accepted,
        (None | Some(Published::Accepted), UpdateStatus::Settled) => Published::Settled,
        (None | Some(Published::Accepted), UpdateStatus::Rejected(_)) => Published::Rejected,
        _ => return None,
    };
    payment.published = Some(next);
    Some(StatusUpdate {
        invoice_id: payment.invoice_id.clone(),
        part: payment.part,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        Delivery {
            run_id: "1000/EUR/DE89370400440532013000/2026-12-07/1".into(),
            org_id: "1000".into(),
            bank: "commerzbank".into(),
            msg_id: "m1".into(),
            payment_information_id: "m1".into(),
            execution_date: NaiveDate::from_ymd_opt(2026, 12, 7).unwrap(),
            date_moved: None,
            file: "<Document/>".into(),
            payments: ["INV-1", "INV-2", "INV-3"]
                .iter()
                .map(|invoice| DeliveredPayment {
                    end_to_end_id: format!("{invoice}/1"),
                    invoice_id: invoice.to_string(),
                    part: 1,
                    published: None,
                })
                .collect(),
            state: DeliveryState::Sent,
            attempts: 1,
            reports: Vec::new(),
            updated_at: 0,
            trace: None,
            trace_links: Vec::new(),
        }
    }

    fn update(invoice: &str, status: UpdateStatus) -> StatusUpdate {
        StatusUpdate {
            invoice_id: invoice.into(),
            part: 1,
            status,
        }
    }

    fn resolution(answers: &[(&str, Answer)]) -> Resolution {
        Resolution {
            answers: answers
                .iter()
                .map(|(id, a)| (id.to_string(), a.clone()))
                .collect(),
            duplicate: false,
        }
    }

    #[test]
    fn an_acknowledged_file_accepts_each_payment_once_and_reports_move_them_on_once() {
        let mut d = delivery();
        assert_eq!(
            d.acknowledge(Some("BANK-REF-1".into()), 1),
            ["INV-1", "INV-2", "INV-3"]
                .map(|i| update(i, UpdateStatus::Accepted))
                .to_vec()
        );
        assert_eq!(d.acknowledge(Some("BANK-REF-1".into()), 2), vec![], "twice");
        assert_eq!(d.reject("late", 2), vec![], "answered already");
        let settled = resolution(&[
            ("INV-1/1", Answer::Settled),
            ("INV-2/1", Answer::Rejected("AC04: account closed".into())),
            ("INV-3/1", Answer::Accepted),
        ]);
        assert_eq!(
            d.apply("R1", &settled, 3),
            vec![
                update("INV-1", UpdateStatus::Settled),
                update(
                    "INV-2",
                    UpdateStatus::Rejected("AC04: account closed".into())
                ),
            ],
            "INV-3 was accepted already"
        );
        assert_eq!(d.apply("R1", &settled, 4), vec![], "the same report again");
        let again = resolution(&[
            ("INV-1/1", Answer::Accepted),
            ("INV-2/1", Answer::Settled),
            ("INV-3/1", Answer::Settled),
        ]);
        assert_eq!(
            d.apply("R2", &again, 5),
            vec![update("INV-3", UpdateStatus::Settled)],
            "a settled payment is not accepted again, a rejected one not settled"
        );
    }

    #[test]
    fn a_refused_file_rejects_every_payment_and_a_report_before_the_ack_counts() {
        let mut d = delivery();
        assert_eq!(
            d.apply(
                "R0",
                &resolution(&[("INV-1/1", Answer::Rejected("AC01".into()))]),
                1
            ),
            vec![update("INV-1", UpdateStatus::Rejected("AC01".into()))]
        );
        assert!(!d.is_answered());
        assert_eq!(
            d.reject("400: CtrlSum wrong", 2),
            vec![
                update("INV-2", UpdateStatus::Rejected("400: CtrlSum wrong".into())),
                update("INV-3", UpdateStatus::Rejected("400: CtrlSum wrong".into())),
            ]
        );
        assert!(d.is_answered());
    }

    #[test]
    fn a_delivery_reads_back_as_it_was_written() {
        let mut d = delivery();
        d.acknowledge(Some("R".into()), 9);
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains("\"state\":\"ACKNOWLEDGED\""), "{json}");
        assert_eq!(serde_json::from_str::<Delivery>(&json).unwrap(), d);
    }
}
