//! The pipeline's edges to banks: payment runs out as ISO 20022 pain.001.001.09 files, the
//! banks' pain.002 status reports in, and what lies between (delivery over HTTPS exactly once
//! as the bank sees it, a ledger of what was sent and answered, retries and a breaker per
//! bank). Also a simulated bank to try it against. ERP ingest will live here too.
//!
//! Owns: translating external formats to and from the pipeline's topics, and the connector's
//! own topics (its ledger, its refused reports). Must not touch: business rules
//! (`p2p-processors`) or the topologies' state.
//!
//! - `pain001`: a run's file; `bank_ids`: IBAN and BIC checks; `pain002`: reading and resolving
//!   status reports; `xsd`: validation with libxml2 against the schemas in `xsd/`.
//! - `ledger` (pure): a run's delivery and the statuses each answer publishes; `delivery`: the
//!   banks' config, the HTTPS client, backoff and breaker.
//! - `connector`: the running connector (`p2p bank-connector`); `bank_sim` and `tls`: the
//!   simulated bank (`p2p bank-sim`).

pub mod bank_ids;
pub mod bank_sim;
pub mod connector;
pub mod delivery;
pub mod ledger;
pub mod pain001;
pub mod pain002;
pub mod tls;
pub mod xsd;
