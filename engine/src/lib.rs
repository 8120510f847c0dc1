//! The stream-processing engine: consume a topology's input partitions, process them in
//! batches, produce the outputs and commit, one Kafka transaction per batch under exactly once;
//! workers side by side, state in RocksDB restored from compacted changelogs, timers,
//! dead-letter queues, panics isolated per record, metrics and readiness.
//!
//! Owns: all Kafka I/O of a running topology and the runtime's configuration. Must not touch:
//! any business word. A topology plugs in through [`Topology`] (one `process` step: records in,
//! outputs and a state write batch out) and never sees Kafka; which topics, documents and rules
//! exist is the topologies' and the processors' business.

mod assignment;
pub mod changelog;
pub mod cluster;
pub mod config;
pub mod dlq;
pub mod growth;
pub mod kafka;
pub mod metrics;
pub mod record;
pub mod runtime;
pub mod spans;
pub mod stats;
pub mod topology;
pub mod trace;

pub use config::{Clock, Guarantee, KafkaProperties, RuntimeConfig};
pub use metrics::{CounterFamily, Metrics};
pub use runtime::{joined, Runtime, RuntimeError};
pub use stats::{Stats, StatsSnapshot};
pub use topology::Topology;
