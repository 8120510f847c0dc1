//! Configuration: topic names, client properties, batching, timers, tolerance.

use p2p_processors::Tolerance;
use p2p_state::StateMemory;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// librdkafka client properties (`bootstrap.servers`, `security.protocol`, `sasl.*`, ...),
/// passed through as given, so TLS and SASL need no code here.
pub type KafkaProperties = BTreeMap<String, String>;

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
    /// Compacted table, latest settings per org.
    pub org_config: String,
    /// Table of supplier payment master data, keyed by org (kept, not compacted: ADR 0005).
    pub supplier_master: String,
    /// Bank statuses (pain.002) from bank connectors.
    pub payment_status: String,
    pub invoice_matched: String,
    pub invoice_exceptions: String,
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
            org_config: name("org-config"),
            supplier_master: name("supplier-master"),
            payment_status: name("payment-status"),
            invoice_matched: name("invoice-matched"),
            invoice_exceptions: name("invoice-exceptions"),
            approval_requests: name("approval-requests"),
            po_status: name("po-status"),
            audit_events: name("audit-events"),
            payment_schedule: name("payment-schedule"),
            payment_instructions: name("payment-instructions"),
        }
    }

    /// Inputs of the match topology: the documents, the org settings (wait limits, tolerance
    /// keys) and the supplier master (suppliers' narrower tolerance keys).
    pub fn match_inputs(&self) -> Vec<&str> {
        vec![
            &self.po_events,
            &self.grn_events,
            &self.invoice_events,
            &self.org_config,
            &self.supplier_master,
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
            &self.approval_requests,
            &self.po_status,
            &self.audit_events,
            &self.payment_schedule,
            &self.payment_instructions,
        ]
    }

    /// Tables: compacted, the latest record per key is the value.
    pub fn compacted(&self) -> Vec<&str> {
        vec![&self.org_config, &self.po_status]
    }

    /// The dead-letter topic of an input topic.
    pub fn dlq(topic: &str) -> String {
        format!("{topic}.dlq")
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

/// What every runtime needs, whichever topology it drives.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Consumer group id and the name of the state directory.
    pub application_id: String,
    pub kafka: KafkaProperties,
    pub state_dir: PathBuf,
    /// Most records processed (and committed) together.
    pub max_batch: usize,
    /// How long a batch waits to fill once its first record is in.
    pub batch_linger: Duration,
    /// How often due timers are looked for when no records arrive.
    pub timer_interval: Duration,
    /// How long a group of co-partitioned partitions waits for one that is behind (the broker
    /// has records for it not yet fetched) before it processes what it has. Kafka Streams
    /// waits for such records without a limit. Ours is only a guard against a partition that
    /// merely looks behind (ADR 0004, 0009), so it is long: a loaded machine's first fetch
    /// after an assignment can take seconds, and going on without it processes a PO's issue
    /// before its approvals. The wait ends as soon as the records arrive.
    pub max_task_idle: Duration,
    /// How long it waits for a partition whose end is not known (the broker did not say on
    /// assignment, and no fetch has reported on it yet): its first records may be the
    /// earliest of all.
    pub max_fetch_wait: Duration,
    pub guarantee: Guarantee,
    /// Replication factor of the changelog topics the runtime creates; -1: the broker's
    /// `default.replication.factor`.
    pub changelog_replication: i32,
    /// This instance among the application's instances: its transactional id is
    /// `<application_id>-<instance_id>`, so a restarted instance fences its own zombie.
    pub instance_id: String,
    /// Static group membership: the consumer joins as `group.instance.id = <instance_id>`, so
    /// an instance restarted within `session.timeout.ms` (a crash, a rolling deploy) gets its
    /// partitions back with no rebalance. The price: an instance that never comes back holds
    /// its partitions until its session times out.
    pub static_membership: bool,
    /// The memory the runtime's store may use (block cache, index and filter blocks,
    /// memtables), shared with every store opened within the same budget (ADR 0012).
    pub state_memory: StateMemory,
}

/// What a crash can do to a batch (Kafka Streams' `processing.guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// One Kafka transaction per batch: its outputs, its state changes (to the store's
    /// changelog) and its input offsets commit together or not at all; local state is written
    /// only after the commit and rebuilt from the changelog when it is missing or behind.
    ExactlyOnce,
    /// Outputs, then local state, then offsets: a crash replays the batch, and the state makes
    /// the replay harmless for consumers that key on document ids. No changelog: local state
    /// lost is state lost.
    AtLeastOnce,
}

impl RuntimeConfig {
    pub fn new(application_id: &str, kafka: KafkaProperties, state_dir: PathBuf) -> Self {
        Self {
            application_id: application_id.to_owned(),
            kafka,
            state_dir,
            max_batch: 2_000,
            batch_linger: Duration::from_millis(20),
            timer_interval: Duration::from_millis(500),
            max_task_idle: Duration::from_secs(30),
            max_fetch_wait: Duration::from_secs(30),
            guarantee: Guarantee::ExactlyOnce,
            changelog_replication: -1,
            instance_id: "0".into(),
            static_membership: true,
            state_memory: StateMemory::process_default(),
        }
    }

    /// `<application_id>-<store>-changelog`.
    pub fn changelog_topic(&self, store: &str) -> String {
        format!("{}-{store}-changelog", self.application_id)
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
