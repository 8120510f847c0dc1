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
    /// State changes written to the store's changelog (exactly once only).
    pub changelog_records: u64,
}

impl StatsSnapshot {
    pub fn count(&mut self, name: &'static str) {
        *self.counts.entry(name).or_default() += 1;
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Counts a record produced to `topic` (allocating its name only the first time).
    pub fn count_out(&mut self, topic: &str) {
        match self.records_out.get_mut(topic) {
            Some(count) => *count += 1,
            None => {
                self.records_out.insert(topic.to_owned(), 1);
            }
        }
    }

    /// Records written: outputs, dead letters and changelog records.
    pub fn records_written(&self) -> u64 {
        self.records_out.values().sum::<u64>() + self.changelog_records
    }

    /// Records produced to `topic`.
    pub fn out(&self, topic: &str) -> u64 {
        self.records_out.get(topic).copied().unwrap_or(0)
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &StatsSnapshot) {
        self.records_in += other.records_in;
        self.batches += other.batches;
        self.matched += other.matched;
        self.exceptions += other.exceptions;
        self.pending += other.pending;
        self.receipts_rejected += other.receipts_rejected;
        self.dead_lettered += other.dead_lettered;
        self.changelog_records += other.changelog_records;
        let add = |into: &mut BTreeMap<&'static str, u64>, from: &BTreeMap<&'static str, u64>| {
            for (k, v) in from {
                *into.entry(k).or_default() += v;
            }
        };
        add(&mut self.exception_reasons, &other.exception_reasons);
        add(&mut self.dlq_reasons, &other.dlq_reasons);
        add(&mut self.counts, &other.counts);
        for (k, v) in &other.records_out {
            *self.records_out.entry(k.clone()).or_default() += v;
        }
    }
}

/// Shared, updated once per batch.
#[derive(Debug, Default)]
pub struct Stats(Mutex<StatsSnapshot>);

impl Stats {
    pub fn add(&self, batch: &StatsSnapshot) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .merge(batch);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
