//! Topologies: which topics feed which processors and where their outputs go, and the runtime
//! that drives them (consume, process, produce, commit).
//!
//! Owns: all Kafka I/O, batching, dead-lettering and offset commits. Must not touch: business
//! rules (it calls `p2p-processors`) or the byte layout of state (it goes through `p2p-state`).

pub mod admin;
pub mod changelog;
pub mod cluster;
pub mod config;
pub mod dlq;
pub mod match_topology;
pub mod metrics;
pub mod payment_topology;
pub mod procurement_topology;
pub mod record;
pub mod runtime;
pub mod stats;
#[cfg(test)]
mod test_support;
pub mod topology;

pub use config::{Clock, Guarantee, KafkaProperties, MatchConfig, RuntimeConfig, Topics};
pub use match_topology::MatchProcessor;
pub use metrics::Metrics;
pub use payment_topology::PaymentProcessor;
pub use procurement_topology::ProcurementProcessor;
pub use runtime::{joined, MatchRuntime, Runtime, RuntimeError};
pub use stats::{Stats, StatsSnapshot};
pub use topology::Topology;
