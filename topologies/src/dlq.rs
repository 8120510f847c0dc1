//! Dead-letter records: the original key, value and headers, plus headers naming why and
//! where from, so a DLQ can be inspected and replayed without guessing.

use crate::config::Topics;
use crate::record::{InputRecord, OutputRecord};

pub const HEADER_REASON: &str = "dlq.reason";
pub const HEADER_ERROR: &str = "dlq.error";
pub const HEADER_TOPIC: &str = "dlq.original.topic";
pub const HEADER_PARTITION: &str = "dlq.original.partition";
pub const HEADER_OFFSET: &str = "dlq.original.offset";
pub const HEADER_TIMESTAMP: &str = "dlq.original.timestamp";
pub const HEADER_PROCESSOR: &str = "dlq.processor";

/// Why a record went to the dead-letter queue (the `dlq.reason` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DlqReason {
    /// Not Avro in the Confluent wire format, or not readable with its schema.
    Undecodable,
    /// Decoded, but not a valid document (bad id, unknown currency, no lines, ...).
    InvalidDocument,
    /// The record key is not the org_id of the document it carries.
    KeyMismatch,
    /// The processor refused the document outright (not a business outcome).
    Rejected,
}

impl DlqReason {
    pub fn code(self) -> &'static str {
        match self {
            DlqReason::Undecodable => "undecodable",
            DlqReason::InvalidDocument => "invalid-document",
            DlqReason::KeyMismatch => "key-mismatch",
            DlqReason::Rejected => "rejected",
        }
    }
}

/// The dead-letter record for `input`.
pub fn dead_letter(
    input: &InputRecord,
    reason: DlqReason,
    error: &str,
    processor: &str,
) -> OutputRecord {
    let mut headers = input.headers.clone();
    let mut add = |k: &str, v: String| headers.push((k.to_owned(), v.into_bytes()));
    add(HEADER_REASON, reason.code().to_owned());
    add(HEADER_ERROR, error.to_owned());
    add(HEADER_TOPIC, input.topic.clone());
    add(HEADER_PARTITION, input.partition.to_string());
    add(HEADER_OFFSET, input.offset.to_string());
    add(
        HEADER_TIMESTAMP,
        input.timestamp.map_or_else(String::new, |t| t.to_string()),
    );
    add(HEADER_PROCESSOR, processor.to_owned());
    OutputRecord {
        topic: Topics::dlq(&input.topic),
        key: input.key.clone().unwrap_or_default(),
        payload: input.payload.clone(),
        headers,
    }
}
