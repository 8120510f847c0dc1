//! Configuration of the P2P topologies: topic names, and the match's tolerance (what every
//! runtime needs is the engine's, re-exported here).

pub use p2p_engine::config::*;
use p2p_processors::Tolerance;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Topic names. Defaults are the names of DESIGN.md; operators may rename any of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Requisitions submitted for approval.
    pub requisition_events: String,
    pub po_events: String,
    pub grn_events: String,
    pub invoice_events: String,
    pub approval_decisions: String,
    /// People's decisions on invoices the match holds (ADR 0019).
    pub invoice_decisions: String,
    /// Compacted table, latest settings per org.
    pub org_config: String,
    /// Table of supplier payment master data, keyed by org (kept, not compacted: ADR 0005).
    pub supplier_master: String,
    /// Bank statuses (pain.002) from bank connectors.
    pub payment_status: String,
    pub invoice_matched: String,
    pub invoice_exceptions: String,
    /// Compacted, where each invoice stands, keyed `<org_id>/<invoice_id>`.
    pub invoice_status: String,
    pub approval_requests: String,
    /// Compacted, latest state per PO.
    pub po_status: String,
    pub audit_events: String,
    pub payment_schedule: String,
    pub payment_instructions: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self::named(str::to_owned)
    }
}

impl Topics {
    /// Every topic named by `name(default name)`, e.g. to give each test its own topics.
    pub fn named(name: impl Fn(&str) -> String) -> Self {
        Self {
            requisition_events: name("requisition-events"),
            po_events: name("po-events"),
            grn_events: name("grn-events"),
            invoice_events: name("invoice-events"),
            approval_decisions: name("approval-decisions"),
            invoice_decisions: name("invoice-decisions"),
            org_config: name("org-config"),
            supplier_master: name("supplier-master"),
            payment_status: name("payment-status"),
            invoice_matched: name("invoice-matched"),
            invoice_exceptions: name("invoice-exceptions"),
            invoice_status: name("invoice-status"),
            approval_requests: name("approval-requests"),
            po_status: name("po-status"),
            audit_events: name("audit-events"),
            payment_schedule: name("payment-schedule"),
            payment_instructions: name("payment-instructions"),
        }
    }

    /// Inputs of the match topology: the documents, the org settings (wait limits, tolerance
    /// keys), the supplier master (suppliers' narrower tolerance keys), people's decisions on
    /// invoices, and approval decisions (who approved a PO may not decide on its invoices).
    pub fn match_inputs(&self) -> Vec<&str> {
        vec![
            &self.po_events,
            &self.grn_events,
            &self.invoice_events,
            &self.org_config,
            &self.supplier_master,
            &self.invoice_decisions,
            &self.approval_decisions,
        ]
    }

    /// Inputs of the procurement (lifecycle and approval) topology: requisitions, what the ERP
    /// says of the PO, approvers' decisions, goods received, invoices matched and payments
    /// settled (the last two from the match and payment topologies).
    pub fn procurement_inputs(&self) -> Vec<&str> {
        vec![
            &self.requisition_events,
            &self.po_events,
            &self.approval_decisions,
            &self.grn_events,
            &self.invoice_matched,
            &self.payment_schedule,
            &self.org_config,
        ]
    }

    /// Inputs of the payment topology: what was matched, the tables it joins, the bank's
    /// statuses, and the PO events that hold or cancel payments.
    pub fn payment_inputs(&self) -> Vec<&str> {
        vec![
            &self.invoice_matched,
            &self.invoice_exceptions,
            &self.po_events,
            &self.payment_status,
            &self.supplier_master,
            &self.org_config,
        ]
    }

    /// Every topic the pipeline reads from outside (its own outputs aside).
    pub fn inputs(&self) -> Vec<&str> {
        vec![
            &self.requisition_events,
            &self.po_events,
            &self.grn_events,
            &self.invoice_events,
            &self.approval_decisions,
            &self.invoice_decisions,
            &self.org_config,
            &self.supplier_master,
            &self.payment_status,
        ]
    }

    /// Every topic the pipeline writes, DLQs aside.
    pub fn outputs(&self) -> Vec<&str> {
        vec![
            &self.invoice_matched,
            &self.invoice_exceptions,
            &self.invoice_status,
            &self.approval_requests,
            &self.po_status,
            &self.audit_events,
            &self.payment_schedule,
            &self.payment_instructions,
        ]
    }

    /// Tables: compacted, the latest record per key is the value.
    pub fn compacted(&self) -> Vec<&str> {
        vec![&self.org_config, &self.po_status, &self.invoice_status]
    }

    /// The dead-letter topic of an input topic.
    pub fn dlq(topic: &str) -> String {
        p2p_engine::dlq::dlq_topic(topic)
    }

    /// Every topic the pipeline reads or writes, DLQs included (one per topic any topology
    /// reads, its own outputs `invoice-matched`, `invoice-exceptions` and `payment-schedule`
    /// too).
    pub fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = self.inputs().iter().map(|t| t.to_string()).collect();
        all.extend(self.outputs().iter().map(|t| t.to_string()));
        let mut read: Vec<&str> = self.inputs();
        read.push(&self.invoice_matched);
        read.push(&self.invoice_exceptions);
        read.push(&self.payment_schedule);
        all.extend(read.iter().map(|t| Self::dlq(t)));
        all
    }
}

/// Everything the match runtime needs to run.
#[derive(Debug, Clone)]
pub struct MatchConfig {
    pub runtime: RuntimeConfig,
    pub topics: Topics,
    pub tolerance: Tolerance,
}

impl MatchConfig {
    pub fn new(application_id: &str, kafka: KafkaProperties, state_dir: PathBuf) -> Self {
        Self {
            runtime: RuntimeConfig::new(application_id, kafka, state_dir),
            topics: Topics::default(),
            tolerance: Tolerance::default(),
        }
    }
}
