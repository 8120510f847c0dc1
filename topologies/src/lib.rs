//! The P2P topologies: which topics feed which processors and where their outputs go (match,
//! procurement, payment), each a [`Topology`] the engine (`p2p-engine`) runs.
//!
//! Owns: topic names, decoding and encoding records for the processors, which counters and
//! DLQ reasons a document earns. Must not touch: business rules (it calls `p2p-processors`),
//! Kafka I/O (the engine's) or the byte layout of state (`p2p-state`'s).

pub mod admin;
pub mod config;
pub mod match_topology;
pub mod payment_topology;
pub mod procurement_topology;
#[cfg(test)]
mod test_support;
pub mod topology;

// The engine's modules, where the CLI, the load tests and the tests have always found them.
pub use p2p_engine::{
    changelog, cluster, dlq, growth, metrics, record, runtime, spans, stats, trace,
};

pub use config::{Clock, Guarantee, KafkaProperties, MatchConfig, RuntimeConfig, Topics};
pub use match_topology::{MatchProcessor, MatchRuntime};
pub use metrics::Metrics;
pub use payment_topology::PaymentProcessor;
pub use procurement_topology::ProcurementProcessor;
pub use runtime::{joined, Runtime, RuntimeError};
pub use stats::{Stats, StatsSnapshot};
pub use topology::Topology;
