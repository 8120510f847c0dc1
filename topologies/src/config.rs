//! Configuration of the match topology: topic names, client properties, batching, tolerance.

use p2p_processors::Tolerance;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// librdkafka client properties (`bootstrap.servers`, `security.protocol`, `sasl.*`, ...),
/// passed through as given, so TLS and SASL need no code here.
pub type KafkaProperties = BTreeMap<String, String>;

/// Topic names. Defaults are the names of DESIGN.md; operators may rename any of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    pub po_events: String,
    pub grn_events: String,
    pub invoice_events: String,
    pub invoice_matched: String,
    pub invoice_exceptions: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            po_events: "po-events".into(),
            grn_events: "grn-events".into(),
            invoice_events: "invoice-events".into(),
            invoice_matched: "invoice-matched".into(),
            invoice_exceptions: "invoice-exceptions".into(),
        }
    }
}

impl Topics {
    pub fn inputs(&self) -> [&str; 3] {
        [&self.po_events, &self.grn_events, &self.invoice_events]
    }

    pub fn outputs(&self) -> [&str; 2] {
        [&self.invoice_matched, &self.invoice_exceptions]
    }

    /// The dead-letter topic of an input topic.
    pub fn dlq(topic: &str) -> String {
        format!("{topic}.dlq")
    }

    /// Every topic the topology reads or writes, DLQs included.
    pub fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = self.inputs().iter().map(|t| t.to_string()).collect();
        all.extend(self.outputs().iter().map(|t| t.to_string()));
        all.extend(self.inputs().iter().map(|t| Self::dlq(t)));
        all
    }
}

/// Everything the match runtime needs to run.
#[derive(Debug, Clone)]
pub struct MatchConfig {
    /// Consumer group id and the name of the state directory.
    pub application_id: String,
    pub kafka: KafkaProperties,
    pub topics: Topics,
    pub state_dir: PathBuf,
    pub tolerance: Tolerance,
    /// Most records processed (and committed) together.
    pub max_batch: usize,
    /// How long a batch waits to fill once its first record is in.
    pub batch_linger: Duration,
}

impl MatchConfig {
    pub fn new(application_id: &str, kafka: KafkaProperties, state_dir: PathBuf) -> Self {
        Self {
            application_id: application_id.to_owned(),
            kafka,
            topics: Topics::default(),
            state_dir,
            tolerance: Tolerance::default(),
            max_batch: 500,
            batch_linger: Duration::from_millis(20),
        }
    }
}
