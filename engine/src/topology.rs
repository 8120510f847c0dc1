//! What a topology is to the runtime: the topics it reads, and one step that turns a batch of
//! records (and the timers due by now) into output records and one state write batch. The
//! runtime does all the I/O around that step; a topology never touches Kafka.

use crate::dlq::{dead_letter, DlqReason};
use crate::metrics::CounterFamily;
use crate::record::{InputRecord, OutputRecord};
use crate::stats::StatsSnapshot;
use p2p_state::{StateError, Store, StoreBatch};
use std::future::Future;

/// A batch could not be processed now and must be retried as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("transient: {0}")]
    Transient(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    State(#[from] StateError),
}

impl ProcessError {
    /// A failure that may pass (a registry out of reach, say): the batch is tried again.
    pub fn transient(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ProcessError::Transient(Box::new(error))
    }
}

/// What one batch produced.
#[derive(Default)]
pub struct BatchOutput {
    pub records: Vec<OutputRecord>,
    pub state: StoreBatch,
    pub stats: StatsSnapshot,
    /// The decisions behind `records`, for their spans (only when spans are exported).
    pub decisions: Vec<crate::spans::Decision>,
}

impl BatchOutput {
    /// Sends `record` to its DLQ with `reason`, and counts it.
    pub fn dead_letter(
        &mut self,
        record: &InputRecord,
        reason: DlqReason,
        error: &str,
        processor: &str,
    ) {
        self.records
            .push(dead_letter(record, reason, error, processor));
        self.stats.dead_lettered += 1;
        *self.stats.dlq_reasons.entry(reason.code()).or_default() += 1;
    }

    /// Gives the records produced since the first `produced_before` the event time and the
    /// trace of `input`, the record they came of (those that have their own keep it): one
    /// span of the input's trace, the decision's, or of a trace started for the input if it
    /// carries none, so that what one input caused is one trace (ADR 0027). The decision is
    /// noted for export if spans are wanted.
    pub fn stamp_since(&mut self, produced_before: usize, input: &InputRecord) {
        let produced = &mut self.records[produced_before..];
        if produced.is_empty() {
            return;
        }
        for record in produced.iter_mut() {
            record.timestamp = record.timestamp.or(input.timestamp);
        }
        let parent = crate::trace::context_of(&input.headers);
        let span = crate::trace::child_of(parent.as_ref());
        crate::trace::carry(produced, &span);
        if crate::spans::wanted() {
            self.decisions.push(crate::spans::Decision {
                span,
                parent,
                input: Some(crate::spans::DecidedOn::of(input)),
                outputs: produced_before..self.records.len(),
            });
        }
    }
}

/// A record's fate: `Ok(Ok(v))` go on, `Ok(Err(..))` to the DLQ, `Err(..)` retry the batch.
pub type RecordResult<T> = Result<Result<T, (DlqReason, String)>, ProcessError>;

/// One processing step of a topology.
pub trait Topology: Send + Sync + 'static {
    /// The processor's name in DLQ headers and logs; also its store's directory name.
    fn name(&self) -> &'static str;

    /// The topics it consumes (co-partitioned: the records of one key on the same partition
    /// number of each).
    fn input_topics(&self) -> Vec<String>;

    /// The labelled counters it counts in (`StatsSnapshot::count_labelled`), exported with
    /// the runtime's metrics.
    fn counters(&self) -> &'static [CounterFamily] {
        &[]
    }

    /// Whether it keeps timers (the runtime then wakes up to fire them when idle).
    fn has_timers(&self) -> bool {
        false
    }

    /// Processes `records` in order, then fires the timers due at `now` (wall-clock ms).
    /// Nothing is written to `store` here: the runtime applies `BatchOutput::state` once the
    /// outputs are safely produced.
    fn process(
        &self,
        records: &[InputRecord],
        now: i64,
        store: &Store,
    ) -> impl Future<Output = Result<BatchOutput, ProcessError>> + Send;
}
