//! The whole audit of a run, as the demo and the benchmark end theirs: everything the pipeline
//! wrote, read back under read_committed, against the scenario's plan. Every invoice has its
//! one planned outcome, every PO and requisition its planned end, every matched invoice is
//! instructed once for its exact total, and the refusals are the planted ones.

use crate::audit::{
    audit, audit_lifecycles, audit_payments, audit_requisitions, paid_by_credit, read_outputs,
    read_payments, read_procurement, Audit, AuditError, Observed, PaymentsObserved,
    ProcurementObserved,
};
use crate::Scenario;
use p2p_avro::Codec;
use p2p_topologies::{KafkaProperties, Topics};
use std::time::Duration;

/// What the refusals the generator plants say (a requester approving their own document).
const PLANTED_REFUSAL: &str = "cannot approve their own document";

/// What a run wrote, and how it compares with the plan.
#[derive(Debug)]
pub struct Checked {
    pub lifecycle: ProcurementObserved,
    pub observed: Observed,
    pub payments: PaymentsObserved,
    pub audit: Audit,
    /// POs and requisitions that did not end as planned.
    pub lifecycle_disagreements: Vec<String>,
    /// Matched invoices not instructed once for their total, and the like.
    pub payment_disagreements: Vec<String>,
    pub refusals: usize,
    pub planted_refusals: usize,
}

/// A failed audit: the headline, and the first disagreements in words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{headline}")]
pub struct AuditFailed {
    pub headline: String,
    pub details: Vec<String>,
}

/// Reads every output of `topics` and audits it against `scenario`.
pub async fn check(
    kafka: &KafkaProperties,
    codec: &Codec,
    topics: &Topics,
    scenario: &Scenario,
    timeout: Duration,
) -> Result<Checked, AuditError> {
    let lifecycle = read_procurement(kafka, codec, topics, timeout).await?;
    let observed = read_outputs(kafka, codec, topics, timeout).await?;
    let audit = audit(&scenario.planted, &observed);
    let payments = read_payments(kafka, codec, topics, timeout).await?;
    let payment_disagreements = audit_payments(&observed, &payments);
    let mut lifecycle_disagreements = audit_lifecycles(
        &scenario.lifecycles,
        &lifecycle,
        &paid_by_credit(&observed, &payments),
    );
    lifecycle_disagreements.extend(audit_requisitions(&scenario.requisitions, &lifecycle));
    Ok(Checked {
        refusals: lifecycle.audit.get("Refused").copied().unwrap_or(0),
        planted_refusals: scenario.refusals,
        lifecycle,
        observed,
        payments,
        audit,
        lifecycle_disagreements,
        payment_disagreements,
    })
}

impl Checked {
    /// Passes when everything ended as planned; else says what did not, first failure first.
    pub fn verdict(&self) -> Result<(), AuditFailed> {
        let first = |list: &[String]| list.iter().take(20).cloned().collect();
        if !self.payment_disagreements.is_empty() {
            return Err(AuditFailed {
                headline: format!(
                    "{} disagreements between matched invoices and payment instructions",
                    self.payment_disagreements.len()
                ),
                details: first(&self.payment_disagreements),
            });
        }
        if self.refusals != self.planted_refusals {
            return Err(AuditFailed {
                headline: format!(
                    "{} refusals on audit-events, the generator planted {}",
                    self.refusals, self.planted_refusals
                ),
                // The planted ones (self-approvals) last: the others are the news.
                details: {
                    let mut refusals = self.lifecycle.refusals.clone();
                    refusals.sort_by_key(|r| r.contains(PLANTED_REFUSAL));
                    first(&refusals)
                },
            });
        }
        if !self.lifecycle_disagreements.is_empty() {
            return Err(AuditFailed {
                headline: format!(
                    "{} requisitions and purchase orders did not end as planned",
                    self.lifecycle_disagreements.len(),
                ),
                details: first(&self.lifecycle_disagreements),
            });
        }
        if !self.audit.passed() {
            return Err(AuditFailed {
                headline: format!(
                    "{} of {} invoices did not end as planted",
                    self.audit.disagreements.len(),
                    self.audit.invoices
                ),
                details: first(&self.audit.disagreements),
            });
        }
        Ok(())
    }
}
