//! Owned records in and out of the processors, so they can be tested without a broker.

/// A consumed record, with what the dead-letter queue needs to name its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp in ms (create or log-append time), if the broker gave one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}
