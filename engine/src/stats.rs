//! Counters of what a runtime did, per batch and in total: records in and out, dead letters,
//! changelog records, and whatever a topology counts (by name, or by family and label, which
//! the metrics export as a labelled counter the topology declares).

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub records_in: u64,
    pub batches: u64,
    pub dead_lettered: u64,
    pub dlq_reasons: BTreeMap<&'static str, u64>,
    /// Other counters by name (transitions, refusals, approval requests, escalations, ...).
    pub counts: BTreeMap<&'static str, u64>,
    /// Counters by (family, label): one labelled counter per family (`Topology::counters`).
    pub labelled: BTreeMap<(&'static str, &'static str), u64>,
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

    /// Counts one `label` of the counter family `family`.
    pub fn count_labelled(&mut self, family: &'static str, label: &'static str) {
        *self.labelled.entry((family, label)).or_default() += 1;
    }

    /// The count of `label` in `family`.
    pub fn labelled(&self, family: &str, label: &str) -> u64 {
        self.labelled
            .iter()
            .find(|((f, l), _)| *f == family && *l == label)
            .map_or(0, |(_, n)| *n)
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
        self.dead_lettered += other.dead_lettered;
        self.changelog_records += other.changelog_records;
        let add = |into: &mut BTreeMap<&'static str, u64>, from: &BTreeMap<&'static str, u64>| {
            for (k, v) in from {
                *into.entry(k).or_default() += v;
            }
        };
        add(&mut self.dlq_reasons, &other.dlq_reasons);
        add(&mut self.counts, &other.counts);
        for (k, v) in &other.labelled {
            *self.labelled.entry(*k).or_default() += v;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_labelled_counts_add_up_by_family_and_label() {
        let mut first = StatsSnapshot::default();
        first.count_labelled("outcomes", "settled");
        first.count_labelled("reasons", "settled");
        let mut second = StatsSnapshot::default();
        second.count_labelled("outcomes", "settled");
        second.count_labelled("outcomes", "held");
        let total = Stats::default();
        total.add(&first);
        total.add(&second);
        let total = total.snapshot();
        assert_eq!(total.labelled("outcomes", "settled"), 2);
        assert_eq!(total.labelled("outcomes", "held"), 1);
        assert_eq!(total.labelled("reasons", "settled"), 1);
        assert_eq!(total.labelled("reasons", "held"), 0);
    }
}
