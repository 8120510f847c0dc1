//! The load generator, the benchmark harness and its report.
//!
//! Owns: realistic, seeded P2P streams, each invoice with the outcome it was planted to have;
//! producing them through the same Avro path an ERP would use, in bulk or at a fixed rate;
//! running the pipeline's runtimes over them (as `p2p run` does) and auditing what they wrote;
//! the benchmark (`bench`): a pass-through baseline, throughput, latency, a report. Must not
//! touch: the pipeline's internals. It starts the runtimes through their public API, watches
//! their counters to know when they are done, and reads every result from the topics.

pub mod audit;
pub mod baseline;
pub mod bench;
pub mod check;
pub mod generator;
pub mod latency;
pub mod pipeline;
pub mod produce;
pub mod report;
pub mod scale;

pub use generator::{GeneratorConfig, GeneratorConfigError, Planted, Scenario, ScenarioRecord};
