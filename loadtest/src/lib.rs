//! The load generator (and, with its own issue, the benchmark harness and its report).
//!
//! Owns: realistic, seeded P2P streams, each invoice with the outcome it was planted to have,
//! and producing them through the same Avro path an ERP would use. Must not touch: the
//! pipeline's internals; it talks to it only through topics.

pub mod audit;
pub mod generator;
pub mod produce;

pub use generator::{GeneratorConfig, Planted, Scenario, ScenarioRecord};
