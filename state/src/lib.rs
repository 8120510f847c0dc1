//! Keyed state on RocksDB: key groups, key encoding, stores that apply one write batch at a
//! time. Later: changelog topics, restore, checkpoints and timers.
//!
//! Owns: how state is laid out on disk and found again. Must not touch: business rules (state
//! values are `p2p-processors` types, stored opaquely) or Kafka clients.
//!
//! Every key begins with its key group, a stable hash of `org_id` into [`KEY_GROUPS`] slots
//! computed exactly like the Java client's partitioner, never with a partition number: when
//! operators add partitions, each org's state is found by prefix and moves as a whole.

pub mod key;
pub mod memory;
pub mod murmur2;
pub mod store;
pub mod timers;

pub use key::{owner_of_raw_key, KeyGroup, StateKey, KEY_GROUPS};
pub use memory::StateMemory;
pub use store::{decode_value, encode_value, Serves, StateError, Store, StoreBatch};
pub use timers::Timer;
