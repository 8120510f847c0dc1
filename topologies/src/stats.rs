//! Counters of what the runtime did, for the demo's summary and the logs (Prometheus export
//! comes with the operational surface).

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub records_in: u64,
    pub batches: u64,
    pub matched: u64,
    pub exceptions: u64,
    /// Invoices that went (or went again) to Pending.
    pub pending: u64,
    pub receipts_rejected: u64,
    pub dead_lettered: u64,
    pub exception_reasons: BTreeMap<&'static str, u64>,
    pub dlq_reasons: BTreeMap<&'static str, u64>,
    /// Other counters by name (transitions, refusals, approval requests, escalations, ...).
    pub counts: BTreeMap<&'static str, u64>,
    /// Records produced, per topic (DLQs included).
    pub records_out: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    pub fn count(&mut self, name: &'static str) {
        *self.counts.entry(name).or_default() += 1;
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Records produced to `topic`.
    pub fn out(&self, topic: &str) -> u64 {
        self.records_out.get(topic).copied().unwrap_or(0)
    }
}

/// Shared, updated once per batch.
#[derive(Debug, Default)]
pub struct Stats(Mutex<StatsSnapshot>);

impl Stats {
    pub fn add(&self, batch: &StatsSnapshot) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.records_in += batch.records_in;
        s.batches += batch.batches;
        s.matched += batch.matched;
        s.exceptions += batch.exceptions;
        s.pending += batch.pending;
        s.receipts_rejected += batch.receipts_rejected;
        s.dead_lettered += batch.dead_lettered;
        for (k, v) in &batch.exception_reasons {
            *s.exception_reasons.entry(k).or_default() += v;
        }
        for (k, v) in &batch.dlq_reasons {
            *s.dlq_reasons.entry(k).or_default() += v;
        }
        for (k, v) in &batch.counts {
            *s.counts.entry(k).or_default() += v;
        }
        for (k, v) in &batch.records_out {
            *s.records_out.entry(k.clone()).or_default() += v;
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
