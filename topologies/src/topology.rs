//! What the P2P topologies share on top of the engine's [`Topology`] trait (re-exported here):
//! decoding a record's Avro value and checking that its key is its document's org.

use apache_avro::types::Value;
use p2p_avro::Codec;
use p2p_engine::dlq::DlqReason;
use p2p_engine::record::InputRecord;
pub use p2p_engine::topology::*;
use p2p_processors::OrgId;

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
        Err(e) if e.is_transient() => Err(ProcessError::transient(e)),
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
