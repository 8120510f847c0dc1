//! The pipeline's edges (to come): ERP ingest (HTTP, files, outbox/CDC envelopes) publishing
//! to the input topics, and bank connectors (ISO 20022 pain.001 out, validated against
//! `pain.001.001.09.xsd`; pain.002 status in).
//!
//! Owns: translating external formats to and from the pipeline's topics. Must not touch:
//! business rules (`p2p-processors`) or the runtime's state.
//!
//! So far (issue 23): the pain.001.001.09 file of a payment run (`pain001`), with the bank
//! identifiers it carries checked (`bank_ids`); banks' pain.002 status reports read and
//! resolved to answers per payment (`pain002`); both checked against their XSD (`xsd`).

pub mod bank_ids;
pub mod bank_sim;
pub mod connector;
pub mod delivery;
pub mod ledger;
pub mod pain001;
pub mod pain002;
pub mod tls;
pub mod xsd;
