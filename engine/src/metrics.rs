//! Prometheus metrics of the runtimes, and the HTTP endpoint operators scrape: `/metrics`
//! (text exposition format), `/healthz` (the process serves) and `/readyz` (every runtime has
//! its partitions and has restored their state). Names follow Prometheus conventions: `p2p_` prefix, `_total` counters, base units
//! (seconds).

use crate::stats::StatsSnapshot;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Every metric the runtimes of one process report, labelled by topology.
pub struct Metrics {
    registry: Registry,
    records_in: IntCounterVec,
    records_out: IntCounterVec,
    dead_letters: IntCounterVec,
    /// The labelled counters the topologies declare (`Topology::counters`), by family.
    families: std::sync::Mutex<BTreeMap<&'static str, IntCounterVec>>,
    events: IntCounterVec,
    batch_records: HistogramVec,
    process_seconds: HistogramVec,
    commit_seconds: HistogramVec,
    end_to_end_seconds: HistogramVec,
    commit_records: HistogramVec,
    running: IntGaugeVec,
    restored: IntCounterVec,
    restore_remaining: IntGaugeVec,
    consumer_lag: IntGaugeVec,
    partition_lag: IntGaugeVec,
    partition_position: IntGaugeVec,
    transactions_aborted: IntCounterVec,
    /// The partitions each worker of a topology last reported, by topology and worker: one
    /// it no longer owns is dropped from the per-partition gauges.
    reported_partitions: std::sync::Mutex<ReportedPartitions>,
    state_bytes: IntGaugeVec,
    state_memory_bytes: IntGauge,
    /// Runtimes expected, and how many of them run: ready when all do.
    expected: usize,
    runs: AtomicUsize,
    /// Each worker's part of a gauge summed over a topology's workers (lag, state size), by
    /// gauge, topology and topic.
    worker_parts: std::sync::Mutex<WorkerParts>,
}

/// A labelled counter a topology counts in (`StatsSnapshot::count_labelled(family, label)`),
/// exported as `name{label="..."}`.
#[derive(Debug, Clone, Copy)]
pub struct CounterFamily {
    /// What the topology counts under (`StatsSnapshot::labelled`'s first key).
    pub family: &'static str,
    /// The metric's full name, `_total` last.
    pub name: &'static str,
    pub help: &'static str,
    /// The label's name.
    pub label: &'static str,
}

/// By (gauge, topology, topic): each worker's part.
/// The (topic, partition)s each worker of a topology last reported, by (topology, worker).
type ReportedPartitions = BTreeMap<(String, usize), Vec<(String, i32)>>;
type WorkerParts = BTreeMap<(&'static str, String, String), BTreeMap<usize, i64>>;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering a metric: {0}")]
    Register(#[from] prometheus::Error),
    #[error("serving metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Latency buckets from 1 ms to 30 s.
const SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const RECORDS: [f64; 10] = [
    1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

impl Metrics {
    /// The metrics of `runtimes` runtimes (ready once that many run).
    pub fn new(runtimes: usize) -> Result<Arc<Metrics>, MetricsError> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["topology"],
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let running = IntGaugeVec::new(
            Opts::new("p2p_runtime_running", "1 while the topology's runtime runs"),
            &["topology"],
        )?;
        registry.register(Box::new(running.clone()))?;
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        Ok(Arc::new(Metrics {
            commit_records: histogram(
                "p2p_commit_records",
                "Records per committed transaction: outputs and changelog writes",
                &RECORDS,
            )?,
            restore_remaining: gauge(
                "p2p_restore_remaining_records",
                "Changelog offsets still to restore before the topology processes (0 when restored)",
                &["topology"],
            )?,
            consumer_lag: gauge(
                "p2p_consumer_lag_records",
                "Records on the broker this instance has not consumed yet, per input topic (over the partitions it owns)",
                &["topology", "topic"],
            )?,
            partition_lag: gauge(
                "p2p_partition_lag_records",
                "Records on the broker not consumed yet, per input partition this instance owns",
                &["topology", "topic", "partition"],
            )?,
            partition_position: gauge(
                "p2p_partition_position",
                "The next offset this instance consumes, per input partition it owns (stands still when the partition makes no progress)",
                &["topology", "topic", "partition"],
            )?,
            transactions_aborted: counter(
                "p2p_transactions_aborted_total",
                "Transactions aborted or lost with their producer: the batch is consumed again from the committed offsets",
                &["topology"],
            )?,
            reported_partitions: std::sync::Mutex::new(BTreeMap::new()),
            state_bytes: gauge(
                "p2p_state_bytes",
                "Estimated size of the topology's local state (RocksDB live data)",
                &["topology"],
            )?,
            state_memory_bytes: {
                let gauge = IntGauge::new(
                    "p2p_state_memory_bytes",
                    "Memory RocksDB holds within the process's state budget (block cache, index and filter blocks, memtables), all stores together",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            records_in: counter(
                "p2p_records_in_total",
                "Records consumed and processed, per input topic",
                &["topology", "topic"],
            )?,
            records_out: counter(
                "p2p_records_out_total",
                "Records produced, per output topic (DLQs included)",
                &["topology", "topic"],
            )?,
            dead_letters: counter(
                "p2p_dead_letters_total",
                "Records sent to a dead-letter queue, per reason",
                &["topology", "reason"],
            )?,
            families: std::sync::Mutex::new(BTreeMap::new()),
            events: counter(
                "p2p_events_total",
                "What the topologies did, per kind (as each topology names it)",
                &["topology", "event"],
            )?,
            batch_records: histogram(
                "p2p_batch_records",
                "Records per processed batch",
                &RECORDS,
            )?,
            process_seconds: histogram(
                "p2p_batch_process_seconds",
                "Time to process a batch (decode, rules, state reads), before its outputs go out",
                &SECONDS,
            )?,
            commit_seconds: histogram(
                "p2p_batch_commit_seconds",
                "Time from a processed batch to its outputs acknowledged, state written and offsets committed",
                &SECONDS,
            )?,
            end_to_end_seconds: histogram(
                "p2p_end_to_end_latency_seconds",
                "From an input record's timestamp to its batch committed",
                &SECONDS,
            )?,
            restored: counter(
                "p2p_changelog_records_restored_total",
                "Changelog records applied to local state while restoring it",
                &["topology"],
            )?,
            running,
            expected: runtimes,
            runs: AtomicUsize::new(0),
            worker_parts: std::sync::Mutex::new(BTreeMap::new()),
            registry,
        }))
    }

    /// Registers `family` (once, however many runtimes declare it).
    pub fn declare(&self, family: &CounterFamily) -> Result<(), MetricsError> {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        if families.contains_key(family.family) {
            return Ok(());
        }
        let counter = IntCounterVec::new(Opts::new(family.name, family.help), &[family.label])?;
        self.registry.register(Box::new(counter.clone()))?;
        families.insert(family.family, counter);
        Ok(())
    }

    /// One committed batch of `topology`: what it counted and how long it took.
    pub fn batch(&self, topology: &str, batch: &BatchMetrics<'_>) {
        let stats = batch.stats;
        for (topic, n) in batch.records_in {
            self.records_in
                .with_label_values(&[topology, topic])
                .inc_by(*n);
        }
        for (topic, n) in &stats.records_out {
            self.records_out
                .with_label_values(&[topology, topic])
                .inc_by(*n);
        }
        for (reason, n) in &stats.dlq_reasons {
            self.dead_letters
                .with_label_values(&[topology, reason])
                .inc_by(*n);
        }
        if !stats.labelled.is_empty() {
            let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
            for ((family, label), n) in &stats.labelled {
                // A family no topology declared is not exported (nor an error: a count).
                if let Some(counter) = families.get(family) {
                    counter.with_label_values(&[label]).inc_by(*n);
                }
            }
        }
        for (event, n) in &stats.counts {
            self.events.with_label_values(&[topology, event]).inc_by(*n);
        }
        if stats.records_in > 0 {
            self.batch_records
                .with_label_values(&[topology])
                .observe(stats.records_in as f64);
        }
        self.process_seconds
            .with_label_values(&[topology])
            .observe(batch.processing.as_secs_f64());
        self.commit_seconds
            .with_label_values(&[topology])
            .observe(batch.committing.as_secs_f64());
        if batch.committed_records > 0 {
            self.commit_records
                .with_label_values(&[topology])
                .observe(batch.committed_records as f64);
        }
        let end_to_end = self.end_to_end_seconds.with_label_values(&[topology]);
        for age in batch.ages_ms {
            end_to_end.observe(*age as f64 / 1000.0);
        }
    }

    /// `topology`'s runtime is ready (`true`: assigned and restored) or stopped.
    pub fn running(&self, topology: &str, running: bool) {
        self.running
            .with_label_values(&[topology])
            .set(i64::from(running));
        if running {
            self.runs.fetch_add(1, Ordering::Relaxed);
        } else {
            self.runs.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// `topology` restored `applied` more changelog records into its store, and has
    /// `remaining` changelog offsets still to go.
    pub fn restoring(&self, topology: &str, applied: u64, remaining: i64) {
        self.restored.with_label_values(&[topology]).inc_by(applied);
        self.restore_remaining
            .with_label_values(&[topology])
            .set(remaining);
    }

    /// Records on the broker that `topology` has not processed yet, on `topic`.
    pub fn lag(&self, topology: &str, topic: &str, worker: usize, records: i64) {
        let total = self.summed("lag", topology, topic, worker, records);
        self.consumer_lag
            .with_label_values(&[topology, topic])
            .set(total);
    }

    /// `topology`'s series that rules read before anything happened (aborted transactions at
    /// 0): an alert on a rate needs the series to exist.
    pub fn declare_topology(&self, topology: &str) {
        self.transactions_aborted.with_label_values(&[topology]);
    }

    /// `topology` aborted a transaction (or lost its producer mid-transaction).
    pub fn transaction_aborted(&self, topology: &str) {
        self.transactions_aborted
            .with_label_values(&[topology])
            .inc();
    }

    /// Each input partition `worker` of `topology` owns now: its topic, number, position and
    /// the records behind it. Partitions it reported before and no longer owns are dropped
    /// (their new owner reports them).
    pub fn partitions(&self, topology: &str, worker: usize, owned: &[(String, i32, i64, i64)]) {
        let mut reported = self
            .reported_partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = reported
            .insert(
                (topology.to_owned(), worker),
                owned.iter().map(|(t, p, _, _)| (t.clone(), *p)).collect(),
            )
            .unwrap_or_default();
        for (topic, partition) in before {
            if !owned
                .iter()
                .any(|(t, p, _, _)| *t == topic && *p == partition)
            {
                let partition = partition.to_string();
                let labels = [topology, topic.as_str(), partition.as_str()];
                let _ = self.partition_lag.remove_label_values(&labels);
                let _ = self.partition_position.remove_label_values(&labels);
            }
        }
        for (topic, partition, position, behind) in owned {
            let partition = partition.to_string();
            let labels = [topology, topic.as_str(), partition.as_str()];
            self.partition_lag.with_label_values(&labels).set(*behind);
            self.partition_position
                .with_label_values(&labels)
                .set(*position);
        }
    }

    /// The estimated size of `worker`'s store of `topology` (the gauge: all its workers').
    pub fn state_size(&self, topology: &str, worker: usize, bytes: u64) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let total = self.summed("state", topology, "", worker, bytes);
        self.state_bytes.with_label_values(&[topology]).set(total);
    }

    /// Records `worker`'s part and gives the sum of all workers' parts.
    fn summed(
        &self,
        gauge: &'static str,
        topology: &str,
        topic: &str,
        worker: usize,
        part: i64,
    ) -> i64 {
        let mut parts = self.worker_parts.lock().unwrap_or_else(|e| e.into_inner());
        let workers = parts
            .entry((gauge, topology.to_owned(), topic.to_owned()))
            .or_default();
        workers.insert(worker, part);
        workers.values().fold(0i64, |sum, v| sum.saturating_add(*v))
    }

    /// The memory the process's stores hold within their budget.
    pub fn state_memory(&self, bytes: u64) {
        self.state_memory_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Every expected runtime runs.
    pub fn ready(&self) -> bool {
        self.runs.load(Ordering::Relaxed) >= self.expected
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process ends. Returns the
    /// address bound (port 0 picks a free one).
    pub async fn serve(self: &Arc<Self>, addr: SocketAddr) -> Result<SocketAddr, MetricsError> {
        use axum::http::StatusCode;
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let metrics = self.clone();
        let ready = self.clone();
        let app = axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let metrics = metrics.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            metrics.render(),
                        )
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || {
                    let ready = ready.clone();
                    async move {
                        if ready.ready() {
                            (StatusCode::OK, "ready\n")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                        }
                    }
                }),
            );
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the metrics endpoint stopped");
            }
        });
        Ok(bound)
    }
}

/// What one committed batch reports.
pub struct BatchMetrics<'a> {
    pub stats: &'a StatsSnapshot,
    /// Records consumed, per input topic.
    pub records_in: &'a [(String, u64)],
    pub processing: Duration,
    pub committing: Duration,
    /// Records the batch's commit held: outputs, and changelog writes under exactly once.
    pub committed_records: usize,
    /// Per input record: milliseconds from its timestamp to the batch's commit.
    pub ages_ms: &'a [i64],
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTCOMES: CounterFamily = CounterFamily {
        family: "outcomes",
        name: "p2p_outcomes_total",
        help: "What became of the documents",
        label: "outcome",
    };

    fn batch_of(stats: &StatsSnapshot) -> BatchMetrics<'_> {
        BatchMetrics {
            stats,
            records_in: &[],
            processing: Duration::ZERO,
            committing: Duration::ZERO,
            committed_records: 0,
            ages_ms: &[],
        }
    }

    #[test]
    fn a_topologys_declared_counters_are_exported_under_its_names_and_undeclared_ones_are_not() {
        let metrics = Metrics::new(1).unwrap();
        metrics.declare(&OUTCOMES).unwrap();
        // Declared again by a second runtime of the same topology: one family still.
        metrics.declare(&OUTCOMES).unwrap();
        let mut stats = StatsSnapshot::default();
        stats.count_labelled("outcomes", "settled");
        stats.count_labelled("outcomes", "settled");
        stats.count_labelled("outcomes", "held");
        stats.count_labelled("undeclared", "anything");
        stats.count("reminders sent");
        metrics.batch("billing", &batch_of(&stats));

        let text = metrics.render();
        assert!(
            text.contains("p2p_outcomes_total{outcome=\"settled\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("p2p_outcomes_total{outcome=\"held\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("p2p_events_total{event=\"reminders sent\",topology=\"billing\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("undeclared") && !text.contains("anything"),
            "{text}"
        );
    }

    #[test]
    fn a_partition_given_up_leaves_the_per_partition_gauges_and_aborts_start_at_zero() {
        let metrics = Metrics::new(1).unwrap();
        metrics.declare_topology("billing");
        assert!(
            metrics
                .render()
                .contains("p2p_transactions_aborted_total{topology=\"billing\"} 0"),
            "a rate rule needs the series before the first abort"
        );
        metrics.transaction_aborted("billing");
        let owned = |p: i32, position: i64, behind: i64| ("orders".to_owned(), p, position, behind);
        metrics.partitions("billing", 0, &[owned(0, 40, 2), owned(1, 70, 0)]);
        let text = metrics.render();
        assert!(text.contains("p2p_transactions_aborted_total{topology=\"billing\"} 1"));
        assert!(
            text.contains(
                "p2p_partition_lag_records{partition=\"0\",topic=\"orders\",topology=\"billing\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "p2p_partition_position{partition=\"1\",topic=\"orders\",topology=\"billing\"} 70"
        ));

        // A rebalance took partition 1 away: its series go, or a stuck-partition alert would
        // see a partition that stands still here while its new owner moves it.
        metrics.partitions("billing", 0, &[owned(0, 45, 0)]);
        let text = metrics.render();
        assert!(!text.contains("partition=\"1\""), "{text}");
        assert!(text.contains(
            "p2p_partition_position{partition=\"0\",topic=\"orders\",topology=\"billing\"} 45"
        ));
    }
}
