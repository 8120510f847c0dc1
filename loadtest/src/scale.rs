//! The scale phase of `p2p bench` (issue 25): instances added and removed (1 -> 3 -> 1) while
//! a fixed-rate stream flows, each an instance of the pipeline in this process with its own
//! state directory and instance id, in one consumer group per topology. Per move: how long
//! each partition stood still (its inputs' longest wait for their outputs, read back
//! read_committed: under a steady feed, a partition that produced nothing for 40 s leaves its
//! next inputs waiting 40 s), how many changelog records the instances restored, and the
//! end-to-end p99.

use crate::latency::{histogram, Latencies};
use std::collections::BTreeMap;
use std::time::Duration;

/// One change of the instance count.
#[derive(Debug, Clone)]
pub struct ScaleMove {
    /// E.g. "1 -> 3".
    pub change: String,
    /// When it happened, since the reader started.
    pub at: Duration,
    /// Per partition number: the longest wait of an input for its outputs, read from the move
    /// on (until the next move, or the end), in ms.
    pub pauses: BTreeMap<i32, u64>,
    /// Changelog records the instances restored from the move until the next.
    pub restored: u64,
    /// End-to-end latency over the same time.
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// The phase's result.
#[derive(Debug, Clone)]
pub struct ScaleRun {
    pub records: u64,
    pub rate: f64,
    /// The longest wait of any partition's input before the first move: what a pause
    /// compares with.
    pub steady_gap_ms: u64,
    /// Records in the three changelogs at the end, all partitions: what restoring every
    /// partition from nothing would read.
    pub changelog_records: u64,
    pub moves: Vec<ScaleMove>,
}

impl ScaleRun {
    /// One line for the console: the changes, the longest pause, what was restored.
    pub fn summary(&self, phase: &str) -> String {
        let changes: Vec<&str> = self.moves.iter().map(|m| m.change.as_str()).collect();
        let restored: Vec<String> = self.moves.iter().map(|m| m.restored.to_string()).collect();
        format!(
            "{phase} (exactly once, {} records at {:.0}/s, {}): longest pause {} ms (longest \
             wait before any change {} ms); restored {} changelog records (the changelogs hold \
             {})",
            self.records,
            self.rate,
            changes.join(" then "),
            self.longest_pause_ms(),
            self.steady_gap_ms,
            restored.join(" then "),
            self.changelog_records
        )
    }

    pub fn longest_pause_ms(&self) -> u64 {
        self.moves
            .iter()
            .flat_map(|m| m.pauses.values().copied())
            .max()
            .unwrap_or(0)
    }
}

/// Each partition's longest latency among the outputs read within `[from, to)` ms: how long
/// it stood still then, under a steady feed (its inputs waited that long).
pub fn pauses(latencies: &Latencies, from: u32, to: u32) -> BTreeMap<i32, u64> {
    latencies
        .reads
        .iter()
        .map(|(&partition, reads)| {
            let longest = reads
                .iter()
                .filter(|(read, _)| *read >= from && *read < to)
                .map(|(_, latency)| u64::from(*latency))
                .max()
                .unwrap_or(0);
            (partition, longest)
        })
        .collect()
}

/// p99 and max of the latencies read within `[from, to)` seconds.
pub fn percentiles(latencies: &Latencies, from: usize, to: usize) -> (u64, u64) {
    let mut merged = histogram();
    for second in latencies.per_second.iter().take(to).skip(from) {
        let _ = merged.add(second);
    }
    if merged.is_empty() {
        return (0, 0);
    }
    (merged.value_at_quantile(0.99), merged.max())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_is_the_longest_wait_of_a_partitions_inputs_read_in_the_window() {
        let mut latencies = Latencies {
            all: histogram(),
            per_second: Vec::new(),
            reads: BTreeMap::new(),
        };
        // Partition 0 steady at 50 ms; partition 1 stood still from 1,000 ms: its next output,
        // read at 4,500 ms, had waited 3,500 ms.
        latencies
            .reads
            .insert(0, (0..60).map(|i| (i * 100, 50)).collect());
        latencies.reads.insert(
            1,
            vec![(0, 40), (500, 40), (1_000, 40), (4_500, 3_500), (4_600, 60)],
        );
        let during = pauses(&latencies, 2_000, 6_000);
        assert_eq!(during[&0], 50);
        assert_eq!(during[&1], 3_500);
        let before = pauses(&latencies, 0, 2_000);
        assert_eq!(before[&1], 40);
    }
}
