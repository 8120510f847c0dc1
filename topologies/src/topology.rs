//! What a topology is to the runtime: the topics it reads, and one step that turns a batch of
//! records (and the timers due by now) into output records and one state write batch. The
//! runtime does all the I/O around that step; a topology never touches Kafka.

use crate::dlq::{dead_letter, DlqReason};
use crate::record::{InputRecord, OutputRecord};
use crate::stats::StatsSnapshot;
use apache_avro::types::Value;
use p2p_avro::{Codec, CodecError};
use p2p_processors::OrgId;
use p2p_state::{StateError, Store, StoreBatch};
use std::future::Future;

/// A batch could not be processed now and must be retried as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("transient: {0}")]
    Transient(CodecError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What one batch produced.
#[derive(Default)]
pub struct BatchOutput {
    pub records: Vec<OutputRecord>,
    pub state: StoreBatch,
    pub stats: StatsSnapshot,
}

impl BatchOutput {
    /// Sends `record` to its DLQ with `reason`, and counts it.
    pub fn dead_letter(
        &mut self,
        record: &InputRecord,
        reason: DlqReason,
        error: &str,
        processor: &str,
    ) {
        self.records
            .push(dead_letter(record, reason, error, processor));
        self.stats.dead_lettered += 1;
        *self.stats.dlq_reasons.entry(reason.code()).or_default() += 1;
    }

    /// Gives the records produced since the first `produced_before` the event time of `input`,
    /// the record they came of (those that have one keep it).
    pub fn stamp_since(&mut self, produced_before: usize, input: &InputRecord) {
        for record in &mut self.records[produced_before..] {
            record.timestamp = record.timestamp.or(input.timestamp);
        }
    }
}

/// A record's fate: `Ok(Ok(v))` go on, `Ok(Err(..))` to the DLQ, `Err(..)` retry the batch.
pub type RecordResult<T> = Result<Result<T, (DlqReason, String)>, ProcessError>;

/// One processing step of a topology.
pub trait Topology: Send + Sync + 'static {
    /// The processor's name in DLQ headers and logs; also its store's directory name.
    fn name(&self) -> &'static str;

    /// The topics it consumes (co-partitioned, keyed by org_id).
    fn input_topics(&self) -> Vec<String>;

    /// Whether it keeps timers (the runtime then wakes up to fire them when idle).
    fn has_timers(&self) -> bool {
        false
    }

    /// Processes `records` in order, then fires the timers due at `now` (wall-clock ms).
    /// Nothing is written to `store` here: the runtime applies `BatchOutput::state` once the
    /// outputs are safely produced.
    fn process(
        &self,
        records: &[InputRecord],
        now: i64,
        store: &Store,
    ) -> impl Future<Output = Result<BatchOutput, ProcessError>> + Send;
}

/// The largest record value accepted. A document's state and outputs are a few times its
/// Avro encoding; one that came close to Kafka's 1 MB record limit would make a changelog or
/// output record over it, and fail its batch's transaction on every attempt (the partition
/// stopped). No ERP document comes near this (1,000 lines of 100 bytes are 100 KB).
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// Decodes a record's value; undecodable bytes are a DLQ entry, an unreachable registry a retry.
pub async fn decode(codec: &Codec, record: &InputRecord) -> RecordResult<Value> {
    let size = record.payload.as_ref().map_or(0, Vec::len);
    if size > MAX_RECORD_BYTES {
        return Ok(Err((
            DlqReason::InvalidDocument,
            format!("a record of {size} bytes, more than the {MAX_RECORD_BYTES} accepted"),
        )));
    }
    match codec.decode(record.payload.as_deref()).await {
        Ok(value) => Ok(Ok(value)),
        Err(e) if e.is_transient() => Err(ProcessError::Transient(e)),
        Err(e) => Ok(Err((DlqReason::Undecodable, e.to_string()))),
    }
}

/// The DLQ entry of a record from a topic the topology does not consume (a misconfigured
/// subscription): refused, never guessed at.
pub fn not_an_input(record: &InputRecord) -> (DlqReason, String) {
    (
        DlqReason::Rejected,
        format!("topic {} is not an input of this topology", record.topic),
    )
}

/// Every P2P record is keyed by the org its document belongs to; anything else is refused,
/// so an event can never reach another org's state.
pub fn check_key(record: &InputRecord, org: &OrgId) -> Result<(), (DlqReason, String)> {
    if record.key.as_deref() == Some(org.as_str().as_bytes()) {
        return Ok(());
    }
    let key = record
        .key
        .as_deref()
        .map_or("no key".into(), |k| String::from_utf8_lossy(k).into_owned());
    Err((
        DlqReason::KeyMismatch,
        format!("record key {key:?} is not the document's org_id {org}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: Vec<u8>) -> InputRecord {
        InputRecord {
            topic: "po-events".into(),
            partition: 0,
            offset: 1,
            timestamp: None,
            key: None,
            payload: Some(payload),
            headers: vec![],
        }
    }

    #[test]
    fn a_record_too_large_for_its_state_to_fit_kafka_is_refused_by_size() {
        let codec = Codec::Embedded;
        let huge = record(vec![0; MAX_RECORD_BYTES + 1]);
        let refused = futures::executor::block_on(decode(&codec, &huge)).unwrap();
        assert_eq!(
            refused,
            Err((
                DlqReason::InvalidDocument,
                format!(
                    "a record of {} bytes, more than the {MAX_RECORD_BYTES} accepted",
                    MAX_RECORD_BYTES + 1
                )
            ))
        );
        // At the limit it is decoded (here: refused as what it is, not by size).
        let at_limit = record(vec![0; MAX_RECORD_BYTES]);
        let decoded = futures::executor::block_on(decode(&codec, &at_limit)).unwrap();
        assert!(matches!(decoded, Err((DlqReason::Undecodable, _))));
    }
}
