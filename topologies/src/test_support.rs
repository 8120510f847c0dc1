//! What the topologies' own tests share: records as a producer would send them, and the size
//! of what a batch writes. Tests only.

use crate::record::InputRecord;
use apache_avro::types::Value;
use futures::executor::block_on;
use p2p_avro::{Codec, Contract};
use p2p_state::StoreBatch;

/// `value` encoded with the embedded schemas as `topic`'s record at `offset` of partition 0,
/// keyed by `org` (as every P2P topic is) and stamped `timestamp`.
pub fn input_record(
    topic: &str,
    contract: &Contract,
    value: Value,
    org: &p2p_processors::OrgId,
    offset: i64,
    timestamp: i64,
) -> InputRecord {
    let payload = block_on(Codec::Embedded.encode(topic, contract, value)).unwrap();
    InputRecord {
        topic: topic.to_owned(),
        partition: 0,
        offset,
        timestamp: Some(timestamp),
        key: Some(org.as_str().as_bytes().to_vec()),
        payload: Some(payload),
        headers: vec![],
    }
}

/// Bytes of state (keys and values) a batch writes.
pub fn state_bytes(state: &StoreBatch) -> usize {
    state
        .changes()
        .iter()
        .map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len))
        .sum()
}
