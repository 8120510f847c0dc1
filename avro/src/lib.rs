//! Avro contracts of the pipeline: one `.avsc` per record under `schemas/`, the map from topic
//! to schema, conversions between Avro values and domain types, and the Confluent wire format
//! (magic byte, 4-byte schema id, Avro datum) with TopicNameStrategy subjects.
//!
//! Owns: everything about bytes on a topic. Must not touch: business rules (those are in
//! `p2p-processors`), Kafka clients or state stores.

pub mod contracts;
pub mod convert;
pub mod decimal;
pub mod wire;

pub use contracts::{Contract, CONTRACTS};
pub use convert::{DecodeError, EncodeError};
pub use wire::{Codec, CodecError};
