//! The runtime: consume a batch, process it (firing the timers due by now), and commit it.
//! When no records come, it still wakes up to fire timers.
//!
//! Exactly once (the default, `Guarantee::ExactlyOnce`): one Kafka transaction per batch holds
//! its outputs, its state changes (sent to the store's compacted changelog, on the partition of
//! the key they belong to) and its input offsets, sent with the consumer group's metadata so a
//! zombie is fenced. Local RocksDB state is written only after the commit, together with the
//! changelog offsets it now holds (its checkpoint), so it never holds an uncommitted write. On
//! assignment a store catches up from its checkpoint to the end of the changelog: nothing after
//! a clean stop, the tail after a crash, everything when the state directory is gone. A failed
//! transaction is aborted and the batch processed again from unchanged state.
//!
//! At least once (`Guarantee::AtLeastOnce`, ADR 0001; the demo's mock cluster keeps no
//! transactional offsets): outputs, then state, then offsets; a crash replays the batch, and the
//! state makes the replay harmless for consumers that key on document ids.

use crate::assignment::{self, CoverageWatch, GroupAssignment, Verdict};
use crate::changelog::{self, ChangelogError};
use crate::config::{Clock, Guarantee, RuntimeConfig};
use crate::dlq::DlqReason;
use crate::kafka::{client_config, producer_config};
use crate::metrics::{BatchMetrics, Metrics};
use crate::record::{Aligner, IdleWaits, InputRecord, Lag};
use crate::stats::{Stats, StatsSnapshot};
use crate::topology::{ProcessError, Topology};
use futures::future::join_all;
use futures::FutureExt;
use p2p_state::murmur2::partition_for;
use p2p_state::{StateError, Store};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[path = "growing.rs"]
mod growing;
use growing::GrowthStep;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("creating the Kafka {client}: {source}")]
    Client {
        client: &'static str,
        source: KafkaError,
    },
    #[error("subscribing to {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        source: KafkaError,
    },
    #[error("state store: {0}")]
    State(#[from] StateError),
    #[error("changelog: {0}")]
    Changelog(#[from] ChangelogError),
    #[error("transactions: {0}")]
    Transaction(KafkaError),
    #[error("going back to the committed offsets after an aborted transaction: {0}")]
    Rewind(KafkaError),
    #[error(
        "the {topology} topology panicked firing its timers, with no record to blame: \
         {message} (a bug; the timers are left as they were)"
    )]
    TimersPanicked {
        topology: &'static str,
        message: String,
    },
    #[error("the runtime's task was cancelled (its tokio runtime is shutting down)")]
    Cancelled,
    #[error(
        "the input topics are not co-partitioned (partition counts {counts:?}): a key's \
         records would sit on different partitions of different topics, out of reach of its \
         state; give them all the same partition count"
    )]
    NotCoPartitioned { counts: BTreeMap<String, i32> },
    #[error(
        "input topics {topics:?} do not exist: create them (`p2p admin create-topics`) before \
         the pipeline starts; its state is partitioned like its inputs"
    )]
    MissingInputTopics { topics: Vec<String> },
    #[error(
        "the input topics have {inputs} partitions, the state's changelog {changelog} has \
         {changelog_partitions}: partitions were added since the state was built, and this \
         runtime keeps its state only in its local store (at least once), which cannot move \
         to other instances; the runtime stops rather than decide on state it does not hold \
         (nothing is lost: the records wait). Exactly once, the state moves (ADR 0025)"
    )]
    PartitionCountChanged {
        changelog: String,
        changelog_partitions: i32,
        inputs: i32,
    },
    #[error(
        "the consumer group split partitions {partitions:?} of the input topics between members \
         for longer than {seconds} s: a key's records of one topic would be processed away from \
         its records of another. The runtime uses the `range` assignor, which never splits \
         co-partitioned topics; with `group.protocol = consumer` the broker assigns, so leave \
         `group.remote.assignor` unset (the runtime sets `range`) or set it to `range`"
    )]
    AssignmentSplit { partitions: Vec<i32>, seconds: u64 },
    #[error("growth log: {0}")]
    GrowthLog(#[from] crate::growth::GrowthLogIoError),
    #[error(
        "the input topics now have {now} partitions, but the growth from {from} to {to} has not \
         finished (some old partition has not moved its state out): one growth at a time. \
         Run the pipeline at {to} until `p2p admin grow-partitions --dry-run` shows nothing \
         waiting, then grow again"
    )]
    GrowthUnderWay { from: u32, to: u32, now: i32 },
    #[error(
        "the input topics have {inputs} partitions, fewer than the {state} the state is \
         partitioned by: partitions cannot be removed in Kafka, so another cluster's topics \
         of the same names are being read?"
    )]
    FewerPartitions { inputs: i32, state: i32 },
}

/// How long a transaction step (init, offsets, commit, abort) may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The broker aborts a transaction left open this long (`transaction.timeout.ms`).
const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// Records buffered per partition before it is paused (Kafka Streams'
/// `buffered.records.per.partition`). librdkafka hands a backlog over a partition at a time;
/// a group's batch stops where one of its partitions has nothing buffered, so the others must
/// not fill the buffer first: a full partition is paused (librdkafka drops what it fetched
/// ahead for it, and fetches it again from where the runtime is once resumed), and the
/// partitions the group waits for come through.
///
/// A resumed partition is fetched again only with the broker connection's next fetch, which
/// may first wait out `fetch.wait.max.ms` on partitions with nothing new. So a paused
/// partition is resumed while it still holds a few batches (`RESUME_BELOW`): the fetch
/// overlaps their processing. (Paused at 1,000 and resumed at 500, the benchmark's largest
/// owner's partition went at 1,000 records per fetch wait, 2,000 a second against 15,000 before
/// it.) The bound on memory: 5,000 records a partition, about 2.5 MB at 500 bytes a record.
const PARTITION_BUFFER: usize = 5_000;
/// A paused partition holding fewer records than this is resumed.
const RESUME_BELOW: usize = 4_000;
/// librdkafka's `fetch.wait.max.ms` unless `[kafka]` sets one: how long the broker holds a
/// fetch on partitions with nothing new. librdkafka's 500 ms delays a resumed partition's
/// records by as much (above); polling idle partitions 10 times a second costs little.
const FETCH_WAIT_MAX_MS: &str = "100";
/// librdkafka's `topic.metadata.refresh.interval.ms` unless `[kafka]` sets one.
const METADATA_REFRESH_MS: &str = "10000";
/// Producers lost in a row (no batch committed in between) before the runtime gives up: an
/// instance fenced again and again shares its instance id with another.
const MAX_PRODUCER_REBUILDS: u32 = 5;
/// How long the runtime waits for records while it owns partitions that have some to fetch,
/// before it takes the fetch for stuck and goes back to the committed offsets. After a broker
/// restart librdkafka could leave a newly assigned partition waiting for its committed offset
/// for good (a request timed out, never sent again): the pipeline stood still, all its
/// partitions behind, no error said.
const FETCH_STALL: Duration = Duration::from_secs(20);

/// How long an assignment may split co-partitioned inputs, all of one count, before the worker
/// leaves and joins the group again for a new one: past a rebalance's usual length.
const SPLIT_BEFORE_REJOIN: Duration = Duration::from_secs(5);
/// How long restoring one changelog partition may take.
/// How long a stop asked for waits for the group to confirm the instance left it.
const LEAVE_WAIT: Duration = Duration::from_secs(10);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);

/// Drives one topology against a Kafka cluster: `RuntimeConfig::workers` workers side by
/// side, each a consumer of the topology's group with its own producer (transactional id),
/// store and share of the partitions, as Kafka Streams runs stream threads (ADR 0023). A
/// worker's batches go through consume, process, produce and commit one after another; the
/// workers overlap, so one processes while another waits for its commit.
pub struct Runtime<T: Topology> {
    workers: Vec<Worker<T>>,
    stats: Arc<Stats>,
}

/// Whether any worker of a topology has partitions (the topology counts as running for
/// `/readyz` while one has): the first to announce itself says so, the last to leave says
/// it no longer is.
#[derive(Default)]
struct Presence {
    workers: std::sync::atomic::AtomicUsize,
}

/// One worker's announcement, withdrawn when dropped (however the worker ends).
struct Announced {
    presence: Arc<Presence>,
    metrics: Arc<Metrics>,
    topology: &'static str,
}

impl Presence {
    fn announce(self: &Arc<Self>, metrics: &Arc<Metrics>, topology: &'static str) -> Announced {
        use std::sync::atomic::Ordering;
        if self.workers.fetch_add(1, Ordering::SeqCst) == 0 {
            metrics.running(topology, true);
        }
        Announced {
            presence: self.clone(),
            metrics: metrics.clone(),
            topology,
        }
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.presence.workers.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.metrics.running(self.topology, false);
        }
    }
}

/// One worker of a runtime: a consumer, a producer and a store, one batch at a time.
struct Worker<T: Topology> {
    /// Which of the runtime's workers (0 keeps the ids and store path of a single worker).
    index: usize,
    config: RuntimeConfig,
    topology: Arc<T>,
    presence: Arc<Presence>,
    store: Store,
    consumer: RuntimeConsumer,
    producer: FutureProducer,
    stats: Arc<Stats>,
    metrics: Option<Arc<Metrics>>,
    /// Exactly-once: the store's changelog topic and its partition count (known once `run`
    /// has looked at the input topics).
    changelog: Option<(String, i32)>,
    /// When lag and state size were last reported.
    observed: std::sync::Mutex<Option<Instant>>,
    /// Each input topic's partition count (known once `run` has looked): a record must be on
    /// the partition its key hashes to, where the key's state is.
    input_partitions: HashMap<String, i32>,
    /// What the application's growth log says of this topology (ADR 0025): empty until read,
    /// and with no growth ever.
    growth: std::sync::RwLock<crate::growth::GrowthState>,
    /// Partitions this worker restored while they waited for state to arrive from old
    /// partitions: they take no record (and fire no timer) until restored again, with what
    /// arrived, whoever read the growth log that says it has. (Taken for arrived on another
    /// read of the log, by the restore of another partition, one was once decided on without
    /// its arrivals: invoices decided twice, payments never instructed.)
    arrivals_to_take: std::sync::Mutex<HashSet<i32>>,
}

impl<T: Topology> Runtime<T> {
    pub fn new(config: RuntimeConfig, topology: T) -> Result<Self, RuntimeError> {
        let topology = Arc::new(topology);
        let stats = Arc::new(Stats::default());
        let presence = Arc::new(Presence::default());
        // One store for all the workers (ADR 0023): where a single worker kept it.
        let store = Store::open_within(
            &config.state_dir.join(&config.application_id),
            topology.name(),
            &config.state_memory,
        )?;
        let workers = (0..config.workers.max(1))
            .map(|index| {
                Worker::new(
                    index,
                    config.for_worker(index),
                    topology.clone(),
                    stats.clone(),
                    presence.clone(),
                    store.share(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { workers, stats })
    }

    /// Reports to `metrics` (shared by the runtimes of one process).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        if let Some(worker) = self.workers.first() {
            metrics.declare_topology(worker.topology.name());
            for family in worker.topology.counters() {
                if let Err(error) = metrics.declare(family) {
                    tracing::warn!(%error, metric = family.name, "a topology's counter is not exported");
                }
            }
        }
        for worker in &mut self.workers {
            worker.metrics = Some(metrics.clone());
        }
        self
    }

    /// Counters of all its workers, readable while the runtime runs.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` completes, each worker finishing the batch in hand first. A
    /// worker that fails stops the others (an operator restarts the whole, never a part).
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<StatsSnapshot, RuntimeError> {
        if self.workers.len() == 1 {
            let worker = self.workers.remove(0);
            return worker
                .run(async move {
                    shutdown.await;
                    Stop::Asked
                })
                .await;
        }
        let (stop, stopped) = tokio::sync::watch::channel(None::<Stop>);
        let mut running = tokio::task::JoinSet::new();
        for worker in self.workers {
            let mut stopped = stopped.clone();
            running.spawn(worker.run(async move {
                let why = stopped
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|w| *w);
                why.unwrap_or(Stop::AfterFailure)
            }));
        }
        // The first reason to stop is the one every worker stops for.
        let stop_all = |why: Stop| {
            stop.send_if_modified(|first| {
                first.is_none() && {
                    *first = Some(why);
                    true
                }
            })
        };
        tokio::pin!(shutdown);
        let mut failure = None;
        let mut asked_to_stop = false;
        while !running.is_empty() {
            tokio::select! {
                _ = &mut shutdown, if !asked_to_stop => {
                    asked_to_stop = true;
                    stop_all(Stop::Asked);
                }
                Some(ended) = running.join_next() => {
                    let result = match ended {
                        Ok(result) => result,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(_) => Err(RuntimeError::Cancelled),
                    };
                    if let Err(error) = result {
                        failure.get_or_insert(error);
                    }
                    // One ended, by shutdown or failure: the others stop too (after a
                    // failure, keeping their place in the group for the restart).
                    stop_all(Stop::AfterFailure);
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(self.stats.snapshot()),
        }
    }
}

impl<T: Topology> Worker<T> {
    fn new(
        index: usize,
        config: RuntimeConfig,
        topology: Arc<T>,
        stats: Arc<Stats>,
        presence: Arc<Presence>,
        store: Store,
    ) -> Result<Self, RuntimeError> {
        // Subscribed by `run`, once the topics are known to fit the state: a consumer dropped
        // while it joins its group can hang in rust-rdkafka's close.
        let consumer = consumer(&config)?;
        let producer = producer(&config)?;
        Ok(Self {
            index,
            config,
            topology,
            presence,
            store,
            consumer,
            producer,
            stats,
            metrics: None,
            changelog: None,
            observed: std::sync::Mutex::new(None),
            input_partitions: HashMap::new(),
            growth: std::sync::RwLock::default(),
            arrivals_to_take: std::sync::Mutex::default(),
        })
    }

    /// Runs until `shutdown` completes, finishing the batch in hand first; a stop asked for
    /// leaves the group (see [`Worker::leave_group`]).
    async fn run(
        mut self,
        shutdown: impl Future<Output = Stop>,
    ) -> Result<StatsSnapshot, RuntimeError> {
        tokio::pin!(shutdown);
        self.input_partitions = self.await_input_topics().await?;
        self.await_co_partitioned().await?;
        if self.config.guarantee == Guarantee::ExactlyOnce {
            self.changelog = Some(self.ensure_changelog().await?);
        }
        let topics = self.topology.input_topics();
        subscribe(&self.consumer, &topics)?;
        let mut restored: HashSet<i32> = HashSet::new();
        // Since when the assignment has split co-partitioned partitions, if it does.
        let mut split_since: Option<Instant> = None;
        let mut split_logged: Option<Instant> = None;
        // Whether this worker left and joined the group again since the split began.
        let mut rejoined_for_split = false;
        // Ready (for /readyz) once it has partitions and their stores are restored.
        // `None` until it has partitions; then its announcement (none without metrics),
        // withdrawn when dropped, however the worker ends.
        let mut announced: Option<Option<Announced>> = None;
        let has_timers = self.topology.has_timers();
        let mut aligner = Aligner::default();
        let mut owned = Owned::default();
        // Partitions paused because their buffer is full.
        let mut paused: HashSet<(String, i32)> = HashSet::new();
        let mut receive_failures = 0u32;
        // Batches failed in a row (aborted, or the producer lost).
        let mut failures = 0u32;
        let mut timer_tick = tokio::time::interval(self.config.timer_interval);
        timer_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The last batch was full: the buffer may hold the next one already, and waiting for a
        // record or a timer to look at it again would idle a runtime with a backlog in hand.
        let mut full = false;
        // When a record last came (or the runtime last went back to the committed offsets).
        let mut last_record = Instant::now();
        // During a growth: partitions wait for their backlog or for state to arrive, and the
        // runtime looks at them (and the growth log) again shortly, records or not.
        let mut growth_pending = false;
        let mut last_log_look = Instant::now();
        // After each rebalance: does the group give every partition of the inputs a member?
        let mut coverage = CoverageWatch::default();
        let stop = loop {
            let waiting = aligner.is_waiting();
            let first = tokio::select! {
                why = &mut shutdown => break why,
                received = self.consumer.recv() => Some(received),
                _ = std::future::ready(()), if full => None,
                _ = timer_tick.tick(), if has_timers => None,
                _ = tokio::time::sleep(Duration::from_millis(200)), if growth_pending => None,
                // A partition group waits for a lagging partition: look again shortly.
                _ = tokio::time::sleep(Duration::from_millis(20)), if waiting => None,
                _ = sleep_until(coverage.due()), if coverage.due().is_some() => None,
            };
            let mut rebalanced =
                self.forget_revoked(&mut aligner, &mut owned, &mut restored, &mut paused);
            match first {
                None => {}
                Some(Ok(message)) => {
                    receive_failures = 0;
                    last_record = Instant::now();
                    self.buffer(&mut aligner, &mut paused, &message);
                    let deadline = Instant::now() + self.config.batch_linger;
                    // What librdkafka has fetched already is taken without waiting (each
                    // partition up to PARTITION_BUFFER): a batch follows event time across a
                    // group's partitions, so a buffer of one batch made batches of a few
                    // records from a backlog (the benchmark: 5 on average). The linger is
                    // waited only while not even one batch is in.
                    loop {
                        let next = match self.consumer.recv().now_or_never() {
                            Some(received) => Ok(received),
                            None if aligner.buffered() >= self.config.max_batch => break,
                            None => tokio::time::timeout_at(deadline, self.consumer.recv()).await,
                        };
                        match next {
                            Ok(Ok(message)) => {
                                if self.forget_revoked(
                                    &mut aligner,
                                    &mut owned,
                                    &mut restored,
                                    &mut paused,
                                ) {
                                    rebalanced = true;
                                }
                                self.buffer(&mut aligner, &mut paused, &message);
                            }
                            Ok(Err(error)) => {
                                tracing::warn!(%error, "consume failed mid-batch; processing what is in hand");
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Some(Err(error)) => {
                    receive_failures += 1;
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        // librdkafka gives up on a consumer for good on some errors (a static
                        // member fenced after a broker restart, say): a new one joins the
                        // group, and the stores restore whatever partitions it gets.
                        tracing::warn!(?code, %reason, "consumer failed for good; building a new one");
                        // Closing the old one waits on the broker: off the shared workers.
                        blocking(|| -> Result<(), RuntimeError> {
                            let rebuilt = consumer(&self.config)?;
                            subscribe(&rebuilt, &topics)?;
                            self.consumer = rebuilt;
                            Ok(())
                        })?;
                        aligner = Aligner::default();
                        owned = Owned::default();
                        paused.clear();
                        restored.clear();
                        continue;
                    }
                    // librdkafka reports what it recovers from by itself (a broker out of
                    // reach, say) as errors queued among the records. They are news, not
                    // failures to wait out: sleeping on each would drain a queue filled
                    // during an outage long after the broker is back. The next recv blocks
                    // until there is a record or more news. Logged sparingly.
                    if receive_failures.is_power_of_two() {
                        tracing::warn!(%error, in_a_row = receive_failures, "consumer reports an error; it goes on");
                    }
                    continue;
                }
            }
            // A recv cut short by the linger deadline may have run a rebalance too.
            rebalanced |= self.forget_revoked(&mut aligner, &mut owned, &mut restored, &mut paused);
            if rebalanced
                && matches!(
                    self.take_growth_if_grown(&mut restored, &mut aligner, &mut owned, &mut paused)
                        .await?,
                    CountChange::Grown(_)
                )
            {
                full = true;
                continue;
            }
            blocking(|| owned.refresh(&self.consumer));
            aligner.retain(|topic, partition| owned.contains(topic, partition));
            // Each partition number owned must be owned on every input topic (co-partitioned):
            // a split assignment waits (an assignment arriving in steps), then stops the runtime.
            let split = owned.split(&topics);
            if !split.is_empty() {
                let since = *split_since.get_or_insert_with(Instant::now);
                if since.elapsed() > self.config.max_task_idle {
                    return Err(RuntimeError::AssignmentSplit {
                        partitions: split.into_iter().collect(),
                        seconds: self.config.max_task_idle.as_secs(),
                    });
                }
                if split_logged.is_none_or(|at: Instant| at.elapsed() > Duration::from_secs(5)) {
                    split_logged = Some(Instant::now());
                    tracing::warn!(partitions = ?split, assignment = %owned.describe(), "the group's assignment splits co-partitioned partitions between members; waiting for it to settle");
                }
                if !rejoined_for_split
                    && since.elapsed() > SPLIT_BEFORE_REJOIN
                    && blocking(|| self.partition_counts(&topics))
                        .is_ok_and(|counts| co_partitioned(&counts).is_ok())
                {
                    // The inputs all have one count, yet the assignment splits them: made by
                    // a leader that saw some grown and others not yet, and not made again
                    // since (the growth test saw one last for good: a member's rejoin on new
                    // metadata rebalances nothing unless it leads the group). Leaving and
                    // joining again (a static member leaves on unsubscribe) makes the group
                    // assign anew, on the metadata of now.
                    tracing::warn!(partitions = ?split, "the split assignment was made on partition counts older than the topics'; leaving and joining the group again for a new one");
                    rejoined_for_split = true;
                    split_since = Some(Instant::now());
                    self.rejoin_group(&mut restored, &mut aligner, &mut owned, &mut paused)?;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            split_since = None;
            split_logged = None;
            rejoined_for_split = false;
            if rebalanced {
                coverage.rebalanced(Instant::now());
            }
            if coverage.is_due(Instant::now()) && !is_kip848(&self.config.kafka) {
                let seen = blocking(|| self.group_assignment(&topics));
                if let Verdict::Rejoin(unassigned) = coverage.observe(Instant::now(), seen) {
                    // Made on partition counts older than the topics' and handed back to
                    // static members restarted since, an assignment can leave a growth's
                    // new partitions to nobody for good (the growth test saw it: every
                    // worker busy with its share, the new partitions' records never taken).
                    tracing::warn!(
                        topology = self.topology.name(),
                        partitions = unassigned.len(),
                        first = ?unassigned.first(),
                        "the group's assignment gives some partitions of the inputs to no member (made on partition counts older than the topics'); leaving and joining the group again for a new one"
                    );
                    self.rejoin_group(&mut restored, &mut aligner, &mut owned, &mut paused)?;
                    continue;
                }
            }
            let mut keep_member = || {
                self.poll_while_restoring(&mut aligner, &mut paused);
                !self.consumer.context().pending()
            };
            blocking(|| self.restore_assigned(&owned, &mut restored, &mut keep_member))?;
            if self.consumer.context().pending() {
                // A rebalance ran during the restore: it is applied before any batch.
                full = true;
                continue;
            }
            growth_pending = false;
            if self.growing() {
                match self
                    .growth_step(&topics, &aligner, &owned, &mut restored, &mut last_log_look)
                    .await
                {
                    Ok(GrowthStep::Waiting) => growth_pending = true,
                    Ok(GrowthStep::Settled) => {}
                    Ok(GrowthStep::Arrived) => {
                        // Restored again (what arrived) before any of their records is taken.
                        full = true;
                        continue;
                    }
                    Err(failure) => {
                        growth_pending = true;
                        if let Some(error) = self.recover(failure, &mut failures).await? {
                            tracing::warn!(%error, "moving state out failed; trying again");
                        }
                        self.rewind(&mut aligner, &mut owned, &mut paused).await?;
                        continue;
                    }
                }
            }
            aligner.limit(self.limits(&owned, &restored, &topics));
            if aligner.buffered() == 0
                && last_record.elapsed() > FETCH_STALL
                && blocking(|| owned.fetch_stalled(&self.consumer))
            {
                tracing::warn!(
                    topology = self.topology.name(),
                    seconds = FETCH_STALL.as_secs(),
                    "partitions with records to fetch gave none for a while; going back to the committed offsets to start their fetch again"
                );
                self.rewind(&mut aligner, &mut owned, &mut paused).await?;
                last_record = Instant::now();
                continue;
            }
            if announced.is_none() && owned.any() {
                announced = Some(
                    self.metrics
                        .as_ref()
                        .map(|metrics| self.presence.announce(metrics, self.topology.name())),
                );
            }
            let positions = std::cell::OnceCell::new();
            let batch = aligner.take(
                &topics,
                self.config.max_batch,
                std::time::Instant::now(),
                IdleWaits {
                    behind: self.config.max_task_idle,
                    unknown: self.config.max_fetch_wait,
                },
                |topic, partition, next| {
                    // Read once per batch, and only if a partition has nothing buffered.
                    let position = positions
                        .get_or_init(|| self.consumer.position().ok())
                        .as_ref()
                        .and_then(|list| list.find_partition(topic, partition))
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                    owned.lag(&self.consumer, topic, partition, next.max(position))
                },
            );
            full = batch.len() >= self.config.max_batch;
            self.resume_drained(&aligner, &mut paused);
            if batch.is_empty() && (!has_timers || !owned.any()) {
                // Timers wait for an assignment, and with it a restored store.
                continue;
            }
            let routes = self.routes(&batch);
            // A record off its partition, or one that looks like a growth's straggler, may be
            // a producer's that learnt a newer count than this worker knows: the growth is
            // taken up (or, half done, waited for) before the record is taken for misplaced or
            // forwarded. Under 8 partitions a record an ERP sent to partition 1 under 12 looks
            // like a straggler of an org now on 5, when it is on its org's partition (the
            // kill -9 growth test forwarded such records, behind the org's later ones).
            if self.changelog.is_some()
                && routes.iter().any(|r| {
                    matches!(
                        r,
                        Some(
                            crate::growth::Route::Misplaced { .. }
                                | crate::growth::Route::Forward { .. }
                        )
                    )
                })
            {
                match self
                    .take_growth_if_grown(&mut restored, &mut aligner, &mut owned, &mut paused)
                    .await?
                {
                    CountChange::Unchanged => {}
                    CountChange::Grown(_) => {
                        full = true;
                        continue;
                    }
                    CountChange::Growing => {
                        self.rewind(&mut aligner, &mut owned, &mut paused).await?;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            match self.handle_batch(&batch, &routes).await {
                Ok(()) => failures = 0,
                Err(failure) => {
                    if let Some(reason) = self.recover(failure, &mut failures).await? {
                        tracing::warn!(%reason, records = batch.len(), "transaction aborted; consuming again from the committed offsets");
                    }
                    self.rewind(&mut aligner, &mut owned, &mut paused).await?;
                }
            }
        };
        drop(announced);
        if stop == Stop::Asked {
            self.leave_group().await;
        }
        tracing::info!(
            topology = self.topology.name(),
            worker = self.index,
            "runtime stopped"
        );
        Ok(self.stats.snapshot())
    }

    /// A stop asked for (SIGTERM: a scale-in, `kubectl scale`, a rolling update) hands the
    /// partitions over now. A static member's close keeps its place, and its partitions
    /// processed by nobody, until `session.timeout.ms` (KIP-345: 43 s measured); unsubscribing
    /// first makes librdkafka send a LeaveGroup once the assignment is given up, which the
    /// rebalance callback does inside a poll. So it polls until the group no longer lists
    /// it, or [`LEAVE_WAIT`] has passed (a close before the leave went out would skip it).
    /// One stopped in its first join finishes joining first.
    /// Nothing is processed meanwhile: what is fetched is fetched again by the next owner.
    /// A dynamic member leaves in its close anyway, and under KIP-848 librdkafka leaves a
    /// static member only for its session (epoch -2): nothing to do for either (ADR 0026).
    async fn leave_group(&self) {
        if !self.config.leave_group_on_stop || is_kip848(&self.config.kafka) {
            return;
        }
        // A dynamic member (no group instance id) leaves in its close.
        let Some(instance) = group_instance_id(&self.config) else {
            return;
        };
        let group = self.config.application_id.clone();
        let started = Instant::now();
        // A consumer stopped in its first join (its JoinGroup waits for the others) is listed
        // by the broker but has no member id yet: librdkafka would skip the leave. It joins
        // first.
        while !self.consumer.context().joined() && started.elapsed() < LEAVE_WAIT {
            let _ = tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await;
        }
        blocking(|| self.consumer.unsubscribe());
        loop {
            let _ = tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await;
            let listed = blocking(|| {
                self.consumer
                    .fetch_group_list(Some(&group), Duration::from_secs(2))
            })
            .map(|groups| {
                groups
                    .groups()
                    .iter()
                    .any(|g| g.members().iter().any(|m| is_member_of(m.id(), &instance)))
            });
            match listed {
                Ok(false) => {
                    tracing::info!(
                        topology = self.topology.name(),
                        worker = self.index,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "left the group: the other instances take its partitions now"
                    );
                    return;
                }
                Err(KafkaError::GroupListFetch(RDKafkaErrorCode::UnsupportedFeature)) => {
                    // librdkafka's mock cluster (the demo) lists no groups: the leave was
                    // asked for by the unsubscribe, and cannot be confirmed.
                    tracing::debug!("the cluster cannot list groups; the leave is not confirmed");
                    return;
                }
                Ok(true) | Err(_) if started.elapsed() < LEAVE_WAIT => {}
                outcome => {
                    tracing::warn!(
                        topology = self.topology.name(),
                        worker = self.index,
                        error = outcome.err().map(|e| e.to_string()),
                        "the group did not confirm the leave within {LEAVE_WAIT:?}; its partitions may wait for the session timeout"
                    );
                    return;
                }
            }
        }
    }

    /// After a transaction that did not commit: waits a backoff, and builds a new producer if
    /// the old one is lost. The reason of an aborted one, to log; the caller then consumes
    /// again from the committed offsets.
    async fn recover(
        &mut self,
        failure: Uncommitted,
        failures: &mut u32,
    ) -> Result<Option<String>, RuntimeError> {
        *failures += 1;
        if let (Some(metrics), Uncommitted::Aborted(_) | Uncommitted::ProducerLost(_)) =
            (&self.metrics, &failure)
        {
            metrics.transaction_aborted(self.topology.name());
        }
        match failure {
            Uncommitted::Aborted(reason) => {
                tokio::time::sleep(backoff(*failures)).await;
                Ok(Some(reason))
            }
            Uncommitted::ProducerLost(error) => {
                if *failures > MAX_PRODUCER_REBUILDS {
                    return Err(RuntimeError::Transaction(error));
                }
                tracing::warn!(%error, "producer fenced or failed; building a new one and consuming again from the committed offsets");
                tokio::time::sleep(backoff(*failures)).await;
                // Building it waits for the broker (init_transactions), and dropping the old
                // one closes it: off the shared workers.
                blocking(|| -> Result<(), RuntimeError> {
                    self.producer = producer(&self.config)?;
                    Ok(())
                })?;
                Ok(None)
            }
            Uncommitted::Fatal(e) => Err(e),
        }
    }

    /// The store's changelog topic, created (compacted, as many partitions as the inputs) if
    /// it does not exist yet, and the partition count the state is kept by: the inputs'. Its
    /// partition `p` holds the state of the keys on their partition `p`. A changelog with
    /// fewer partitions than the inputs means they grew (by another tool than `p2p admin
    /// grow-partitions`, or while no runtime ran): the growth is taken up (ADR 0025). One with
    /// more means a growth under way: the inputs grow last, and until they do the state is
    /// kept by their count.
    async fn ensure_changelog(&self) -> Result<(String, i32), RuntimeError> {
        let topic = self.config.changelog_topic(self.topology.name());
        let inputs = co_partitioned(&self.input_partitions)?.max(1);
        changelog::ensure_topic(
            &self.config.kafka,
            &topic,
            inputs,
            self.config.changelog_replication,
        )
        .await?;
        let counts = self
            .shown_partition_counts(std::slice::from_ref(&topic), Duration::from_secs(10))
            .await?;
        let partitions = counts.get(&topic).copied().unwrap_or(0);
        if partitions < inputs {
            self.adopt_growth(&topic, partitions, inputs).await?;
        } else {
            blocking(|| self.load_growth())?;
        }
        Ok((topic, inputs))
    }

    /// Each input topic's partition count, once every input topic exists. A topic just created
    /// may take a moment to show in the broker's metadata; one still missing after that is an
    /// error, as in Kafka Streams: a changelog sized on a missing topic would hold the state of
    /// too few partitions.
    async fn await_input_topics(&self) -> Result<HashMap<String, i32>, RuntimeError> {
        let inputs = self.topology.input_topics();
        let counts = self
            .shown_partition_counts(&inputs, Duration::from_secs(30))
            .await?;
        let mut missing: Vec<String> = counts
            .iter()
            .filter(|(_, count)| **count == 0)
            .map(|(topic, _)| topic.clone())
            .collect();
        if missing.is_empty() {
            return Ok(counts);
        }
        missing.sort();
        Err(RuntimeError::MissingInputTopics { topics: missing })
    }

    /// Waits, at start, while a growth recorded in the growth log is under way: `p2p admin
    /// grow-partitions` grows the topics one after the other (outputs first, and one
    /// topology's output is another's input), and an instance started meanwhile would find its
    /// inputs' counts apart for a few seconds. Apart with no growth recorded to the larger
    /// count, they are looked at for [`UNRECORDED_GROWTH_PATIENCE`] (the command records
    /// no growth for a topology that has no changelog yet: one never run, or starting for
    /// the first time as the growth begins), then refused as not co-partitioned; so are
    /// counts still apart after [`GROWTH_START_PATIENCE`].
    async fn await_co_partitioned(&mut self) -> Result<(), RuntimeError> {
        let largest = self.input_partitions.values().copied().max().unwrap_or(0);
        if co_partitioned(&self.input_partitions).is_ok() {
            return Ok(());
        }
        // The command records a growth before it grows any topic: one look at the log says
        // whether counts apart are one under way.
        let recorded = self.config.guarantee == Guarantee::ExactlyOnce
            && blocking(|| {
                crate::growth::read_log(
                    &self.config.kafka,
                    &self.config.growth_log_topic(),
                    self.topology.name(),
                    Duration::from_secs(30),
                )
            })
            .is_ok_and(|log| log.growth().is_some_and(|g| g.to() as i32 == largest));
        let started = Instant::now();
        let mut logged: Option<Instant> = None;
        loop {
            let refused = match co_partitioned(&self.input_partitions) {
                Ok(_) => return Ok(()),
                Err(refused) => refused,
            };
            let patience = if recorded {
                GROWTH_START_PATIENCE
            } else {
                UNRECORDED_GROWTH_PATIENCE
            };
            if started.elapsed() > patience {
                return Err(refused);
            }
            if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                logged = Some(Instant::now());
                if recorded {
                    tracing::info!(
                        topology = self.topology.name(),
                        counts = ?self.input_partitions,
                        to = largest,
                        "a growth is under way: waiting until every input topic has grown"
                    );
                } else {
                    tracing::info!(
                        topology = self.topology.name(),
                        counts = ?self.input_partitions,
                        seconds = UNRECORDED_GROWTH_PATIENCE.as_secs(),
                        "the input topics' partition counts differ and no growth is recorded: looking again for a while before refusing them"
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.input_partitions = self.await_input_topics().await?;
        }
    }

    /// Each of `topics`' partition count, looking again for up to `patience` while some do
    /// not show (a topic just created may take a moment to reach the broker's metadata): 0
    /// for one still missing then.
    async fn shown_partition_counts(
        &self,
        topics: &[String],
        patience: Duration,
    ) -> Result<HashMap<String, i32>, RuntimeError> {
        let started = Instant::now();
        loop {
            let counts = blocking(|| self.partition_counts(topics))?;
            if counts.values().all(|c| *c > 0) || started.elapsed() > patience {
                return Ok(counts);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After a rebalance (adding partitions to a topic causes one), or when a batch holds a
    /// record off its partition (a producer may have learnt a new count before this worker):
    /// whether the input topics grew past the count the state is kept by (exactly once, the
    /// growth is then taken up), or some have and the others not yet.
    fn check_partition_counts(&mut self) -> Result<CountChange, RuntimeError> {
        let counts = match self.partition_counts(&self.topology.input_topics()) {
            Ok(counts) => counts,
            Err(error) => {
                tracing::warn!(%error, "could not look at the input topics' partition counts; looking again later");
                return Ok(CountChange::Unchanged);
            }
        };
        let partitions = self.served_partitions();
        let Ok(grown) = co_partitioned(&counts) else {
            tracing::info!(?counts, "the input topics' partition counts differ (a growth under way?): their new partitions wait until all have grown");
            return Ok(CountChange::Growing);
        };
        if grown <= 0 || partitions <= 0 || grown == partitions {
            return Ok(CountChange::Unchanged);
        }
        if grown < partitions {
            return Err(RuntimeError::FewerPartitions {
                inputs: grown,
                state: partitions,
            });
        }
        let Some((changelog, _)) = &self.changelog else {
            // At least once: the state is in this instance's store alone, and cannot move.
            return Err(RuntimeError::PartitionCountChanged {
                changelog: "(none)".to_owned(),
                changelog_partitions: partitions,
                inputs: grown,
            });
        };
        tracing::info!(changelog = %changelog, from = partitions, to = grown, "the input topics grew");
        self.input_partitions = counts;
        Ok(CountChange::Grown(grown))
    }

    /// Looks at the input topics' partition counts, and takes up a growth found: every
    /// partition is restored again under the new count (the tails, from the checkpoints), and
    /// its records consumed again from the committed offsets.
    async fn take_growth_if_grown(
        &mut self,
        restored: &mut HashSet<i32>,
        aligner: &mut Aligner,
        owned: &mut Owned,
        paused: &mut HashSet<(String, i32)>,
    ) -> Result<CountChange, RuntimeError> {
        let change = blocking(|| self.check_partition_counts())?;
        if let CountChange::Grown(grown) = change {
            if let Some((changelog, from)) = self.changelog.clone() {
                self.adopt_growth(&changelog, from, grown).await?;
                self.changelog = Some((changelog, grown));
            }
            restored.clear();
            self.serve_only(restored);
            // The group's assignment may still be one made under the old count, and stay so:
            // a member's rejoin on new metadata rebalances nothing unless it leads the group,
            // and a static leader restarted since does not know it leads (librdkafka's
            // JoinGroup predates KIP-814). The growth test found the new partitions assigned
            // to nobody. Leaving and joining again makes the group assign on today's counts.
            tracing::info!(
                topology = self.topology.name(),
                "leaving and joining the group again, for an assignment of the grown partitions"
            );
            self.rejoin_group(restored, aligner, owned, paused)?;
        }
        Ok(change)
    }

    /// Leaves the group and joins it again, so that the group assigns anew (a static member
    /// leaves on unsubscribe; on termination it would not). What was buffered and restored is
    /// forgotten, as on any rebalance. Under KIP-848 the broker assigns and watches the
    /// topics' partition counts itself: nothing to do.
    fn rejoin_group(
        &self,
        restored: &mut HashSet<i32>,
        aligner: &mut Aligner,
        owned: &mut Owned,
        paused: &mut HashSet<(String, i32)>,
    ) -> Result<(), RuntimeError> {
        if is_kip848(&self.config.kafka) {
            return Ok(());
        }
        blocking(|| -> Result<(), RuntimeError> {
            self.consumer.unsubscribe();
            subscribe(&self.consumer, &self.topology.input_topics())
        })?;
        *aligner = Aligner::default();
        *owned = Owned::default();
        paused.clear();
        restored.clear();
        Ok(())
    }

    /// What the broker says of this worker's group's assignment, against the inputs'
    /// partition counts as they are now (nothing to conclude while they differ: a growth is
    /// under way).
    fn group_assignment(&self, topics: &[String]) -> GroupAssignment {
        match self.partition_counts(topics) {
            Ok(counts) if co_partitioned(&counts).is_ok() => assignment::describe(
                &self.consumer,
                &self.config.application_id,
                &counts,
                Duration::from_secs(10),
            ),
            _ => GroupAssignment::Unknown,
        }
    }

    /// Each of `topics`' partition count (0 for one that does not exist yet).
    fn partition_counts(&self, topics: &[String]) -> Result<HashMap<String, i32>, RuntimeError> {
        topics
            .iter()
            .map(|topic| Ok((topic.clone(), self.partition_count(topic)?)))
            .collect()
    }

    /// A topic's partition count (0 if it does not exist).
    fn partition_count(&self, topic: &str) -> Result<i32, RuntimeError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|source| RuntimeError::Client {
                client: "consumer",
                source,
            })?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.partitions().len() as i32)
            .max()
            .unwrap_or(0))
    }

    /// Why `record`, whose key belongs on partition `expected`, is dead-lettered.
    fn misplaced(record: &InputRecord, expected: u32) -> String {
        format!(
            "key {:?} belongs on partition {expected} of {} (murmur2, as the Java client \
             partitions), not on {}: its producer partitions differently",
            String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()),
            record.topic,
            record.partition
        )
    }

    /// Restores the store for every partition number newly assigned (each input topic's
    /// partition `p` holds the same keys as changelog partition `p`), before any of their
    /// records is processed; forgets the revoked ones, to restore them if they come back.
    fn restore_assigned(
        &self,
        owned: &Owned,
        restored: &mut HashSet<i32>,
        keep_member: &mut dyn FnMut() -> bool,
    ) -> Result<(), RuntimeError> {
        let Some((topic, partitions)) = &self.changelog else {
            // At least once: no changelog to restore from; the shared store holds what the
            // instance kept. Each worker serves (fires the timers of) its own partitions.
            let numbers: HashSet<i32> = owned.partition_numbers().into_iter().collect();
            if numbers != *restored {
                *restored = numbers;
                self.serve_only(restored);
            }
            return Ok(());
        };
        // Partitions past the count the state is kept by (inputs grown before the rest, or
        // before this worker took the growth up) wait: held, never restored or decided yet.
        let numbers: BTreeSet<i32> = owned
            .partition_numbers()
            .into_iter()
            .filter(|p| p < partitions)
            .collect();
        let before = restored.len();
        restored.retain(|p| numbers.contains(p));
        if restored.len() < before {
            // Partitions given up: their timers are their new owner's to fire.
            self.serve_only(restored);
        }
        let new: Vec<i32> = numbers
            .into_iter()
            .filter(|p| !restored.contains(p))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        // What the growth log says now: another worker may have moved a partition out (or
        // taken one's state in) since this one last looked, and the partitions it gets are
        // restored and decided by that.
        if let Err(error) = self.load_growth() {
            tracing::warn!(%error, "reading the growth log failed; restoring once it reads");
            return Ok(());
        }
        let started = Instant::now();
        let name = self.topology.name();
        // Counted as written, so changes an attempt that stalled had applied count too.
        let mut total = 0u64;
        let mut progress = |applied: u64, remaining: i64| {
            total += applied;
            // A restore may take longer than max.poll.interval.ms: the group consumer is
            // polled between RocksDB batches, as Kafka Streams polls while it restores, or
            // librdkafka would leave the group and the restore would start over elsewhere.
            // A rebalance that poll runs stops the restore at once: the partitions may be
            // another worker's now, and this one must not write their old state over what
            // that one restores and processes in the shared store.
            let go_on = keep_member();
            if let Some(metrics) = &self.metrics {
                metrics.restoring(name, applied, remaining);
            }
            if remaining > 0 {
                tracing::info!(topology = name, changelog = %topic, applied, remaining, "restoring");
            }
            go_on
        };
        // A restore that stalls (its consumer lost in a broker restart, say) starts again on
        // a new consumer, from the checkpoint the last one reached.
        let mut attempt = 0u32;
        loop {
            let left = RESTORE_TIMEOUT.saturating_sub(started.elapsed());
            // During a growth, what arrived from old partitions counts alone (ADR 0025).
            // A partition still waiting is restored without it, and again once it is in.
            for partition in &new {
                if self.growth().awaiting(*partition as u32).is_empty() {
                    self.take_arrivals(topic, *partition)?;
                    self.arrivals_to_take().remove(partition);
                } else {
                    self.arrivals_to_take().insert(*partition);
                }
            }
            match self.restore_partitions(topic, &new, left, &mut progress) {
                Ok(_) => break,
                Err(changelog::ChangelogError::Interrupted) => {
                    // Nothing is marked restored: the next look restores what is still owned,
                    // from the checkpoints this attempt wrote.
                    tracing::info!(topology = name, changelog = %topic, "restore stopped by a rebalance");
                    return Ok(());
                }
                Err(error) if error.is_transient() && !left.is_zero() => {
                    attempt += 1;
                    tracing::warn!(topology = name, changelog = %topic, %error, attempt, "restore failed; starting it again from its checkpoint");
                    std::thread::sleep(backoff(attempt));
                }
                Err(error) => return Err(error.into()),
            }
        }
        progress(0, 0);
        tracing::info!(
            topology = self.topology.name(),
            changelog = %topic,
            partitions = ?new,
            applied = total,
            seconds = started.elapsed().as_secs_f64(),
            "store restored"
        );
        self.stats.add(&StatsSnapshot {
            counts: [("changelog records restored", total)].into(),
            ..StatsSnapshot::default()
        });
        restored.extend(new);
        self.serve_only(restored);
        Ok(())
    }

    /// Polls the group consumer without waiting, buffering what it returns (the partitions it
    /// fills are paused as usual): a member that polls stays in its group.
    fn poll_while_restoring(&self, aligner: &mut Aligner, paused: &mut HashSet<(String, i32)>) {
        // Bounded: librdkafka's prefetch, and the pauses, bound what can come.
        for _ in 0..PARTITION_BUFFER {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => self.buffer(aligner, paused, &message),
                Some(Err(error)) => {
                    tracing::debug!(%error, "the consumer reports an error while restoring");
                    break;
                }
                None => break,
            }
        }
    }

    /// Buffers `message`, and pauses its partition once it holds `PARTITION_BUFFER` records.
    fn buffer(
        &self,
        aligner: &mut Aligner,
        paused: &mut HashSet<(String, i32)>,
        message: &BorrowedMessage<'_>,
    ) {
        let queued = aligner.push(to_input(message));
        if queued < PARTITION_BUFFER {
            return;
        }
        let key = (message.topic().to_owned(), message.partition());
        if !paused.contains(&key) {
            let mut list = TopicPartitionList::new();
            list.add_partition(&key.0, key.1);
            match self.consumer.pause(&list) {
                Ok(()) => {
                    paused.insert(key);
                }
                Err(error) => tracing::debug!(%error, "pausing a full partition failed"),
            }
        }
    }

    /// Resumes the paused partitions the batches have drained below `RESUME_BELOW`.
    fn resume_drained(&self, aligner: &Aligner, paused: &mut HashSet<(String, i32)>) {
        let drained: Vec<(String, i32)> = paused
            .iter()
            .filter(|(topic, partition)| aligner.queued(topic, *partition) < RESUME_BELOW)
            .cloned()
            .collect();
        for key in &drained {
            paused.remove(key);
        }
        self.resume(drained);
    }

    fn resume(&self, partitions: Vec<(String, i32)>) {
        if partitions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            list.add_partition(topic, *partition);
        }
        if let Err(error) = self.consumer.resume(&list) {
            tracing::warn!(%error, "resuming paused partitions failed");
        }
    }

    /// Forgets what the rebalances since the last look made stale: the buffered records of
    /// the revoked partitions (their positions went back to the committed offsets, so they
    /// come again) and their stores (restored again if the partitions come back, with what
    /// any other owner committed meanwhile). Whether there was a rebalance.
    ///
    /// What it had paused is forgotten here, when the rebalance is seen, and nowhere later:
    /// the new assignment starts unpaused (`Revocations` resumes it), and a partition paused
    /// after this (its buffer full of the new assignment's records) must stay known as paused,
    /// or nothing resumes it. (Forgotten at the end of the batch instead, such a partition
    /// stayed paused for good: after a broker restart the whole pipeline stood still.)
    fn forget_revoked(
        &self,
        aligner: &mut Aligner,
        owned: &mut Owned,
        restored: &mut HashSet<i32>,
        paused: &mut HashSet<(String, i32)>,
    ) -> bool {
        let (rebalanced, revoked) = self.consumer.context().take();
        if revoked.is_empty() {
            // Partitions only given (an incremental rebalance): nothing to forget, but the
            // partition counts are looked at again.
            return rebalanced;
        }
        let revoked: HashSet<(String, i32)> = revoked.into_iter().collect();
        self.stats.add(&StatsSnapshot {
            counts: [("rebalances that took partitions", 1)].into(),
            ..StatsSnapshot::default()
        });
        // Every partition under the eager protocol; under the incremental one those kept
        // stay paused in librdkafka, so they stay known as paused here.
        paused.retain(|partition| !revoked.contains(partition));
        tracing::info!(
            topology = self.topology.name(),
            partitions = revoked.len(),
            "partitions revoked by a rebalance"
        );
        aligner.retain(|topic, partition| !revoked.contains(&(topic.to_owned(), partition)));
        for (_, partition) in &revoked {
            restored.remove(partition);
        }
        self.serve_only(restored);
        // Learn the new assignment, and where its partitions start, afresh.
        *owned = Owned::default();
        true
    }

    /// The partition count of the inputs (co-partitioned), and of the changelog.
    fn served_partitions(&self) -> i32 {
        match &self.changelog {
            Some((_, partitions)) => *partitions,
            None => self.input_partitions.values().copied().max().unwrap_or(1),
        }
    }

    /// Lets this worker's handle on the store serve only the keys whose state is on the
    /// `restored` partitions (during a growth, an owner's state is on its old partition until
    /// that moves it out, and an owner arriving on a partition is served once every arrival
    /// is in): the state of other partitions the store holds is another worker's, or stale
    /// (another instance owns them), and their timers must not fire here.
    fn serve_only(&self, restored: &HashSet<i32>) {
        let partitions = self.served_partitions().max(1) as u32;
        let ready = self.ready(restored);
        let restored = restored.clone();
        let growth = self.growing().then(|| self.growth().clone());
        self.store.serve_only(Arc::new(move |key: &[u8]| {
            let Some(owner) = p2p_state::owner_of_raw_key(key) else {
                return false;
            };
            match &growth {
                None => restored.contains(&(partition_for(owner, partitions) as i32)),
                Some(growth) => {
                    let home = growth.state_home(owner, partitions);
                    restored.contains(&(home as i32))
                        && (ready.contains(&(home as i32)) || !growth.arrives_on(owner, home))
                }
            }
        }));
    }

    /// Processes one batch until it commits, or until a failed transaction sends the runtime
    /// back to the committed offsets. Faults before anything is sent (a registry out of
    /// reach, say) are retried in place with backoff, never skipped.
    async fn handle_batch(
        &self,
        batch: &[InputRecord],
        routes: &[Option<crate::growth::Route>],
    ) -> Result<(), Uncommitted> {
        let mut attempt = 0u32;
        loop {
            match self.try_batch(batch, routes).await {
                Ok(()) => return Ok(()),
                Err(BatchFailure::Retry(reason)) => {
                    attempt += 1;
                    tracing::warn!(attempt, %reason, records = batch.len(), "batch failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(BatchFailure::Uncommitted(failure)) => return Err(failure),
            }
        }
    }

    /// After a failed transaction: drops what is buffered and consumes again from the
    /// committed offsets, so the aborted work is processed anew (by this instance if it still
    /// owns the partitions once the consumer has polled, by their new owner if not). Where
    /// each partition starts is then its committed offset again: `owned` learns it afresh.
    async fn rewind(
        &self,
        aligner: &mut Aligner,
        owned: &mut Owned,
        paused: &mut HashSet<(String, i32)>,
    ) -> Result<(), RuntimeError> {
        *aligner = Aligner::default();
        *owned = Owned::default();
        // Resumed before the seek: a resumed partition fetches from where the runtime was
        // when it paused it, and the seek then moves it to the committed offset.
        self.resume(paused.drain().collect());
        let mut attempt = 0u32;
        loop {
            match blocking(|| self.seek_to_committed()) {
                Ok(()) => return Ok(()),
                Err(error) if attempt < 10 => {
                    attempt += 1;
                    tracing::warn!(%error, attempt, "going back to the committed offsets failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(error) => return Err(RuntimeError::Rewind(error)),
            }
        }
    }

    fn seek_to_committed(&self) -> Result<(), KafkaError> {
        let assignment = self.consumer.assignment()?;
        if assignment.count() == 0 {
            return Ok(());
        }
        let committed = self
            .consumer
            .committed_offsets(assignment.clone(), Timeout::After(TRANSACTION_TIMEOUT))?;
        let mut positions = TopicPartitionList::new();
        for e in assignment.elements() {
            let offset = committed
                .find_partition(e.topic(), e.partition())
                .map(|c| c.offset())
                .filter(|o| matches!(o, Offset::Offset(_)))
                // Nothing committed yet: from the beginning, as `auto.offset.reset` says.
                .unwrap_or(Offset::Beginning);
            positions.add_partition_offset(e.topic(), e.partition(), offset)?;
        }
        self.consumer
            .seek_partitions(positions, Timeout::After(TRANSACTION_TIMEOUT))?;
        Ok(())
    }

    async fn try_batch(
        &self,
        batch: &[InputRecord],
        routes: &[Option<crate::growth::Route>],
    ) -> Result<(), BatchFailure> {
        use crate::growth::Route;
        let started = Instant::now();
        // Records on the wrong partition go to the DLQ, a growth's stragglers on to their
        // owner's new partition (ADR 0025); the rest (all of the batch, unless a producer
        // misbehaves or the partitions grew: no copy then) are processed.
        // A replayed dead letter that only other topologies refused was processed here the
        // first time, and a straggler another topology forwarded is that one's: passed over
        // (their offsets are committed with the batch), and never forwarded again.
        let mut misplaced: Vec<(usize, String)> = Vec::new();
        let mut forwarded: Vec<(usize, i32)> = Vec::new();
        for (i, (record, route)) in batch.iter().zip(routes).enumerate() {
            match route {
                None | Some(Route::Here) => {}
                Some(Route::Forward { to }) => forwarded.push((i, *to as i32)),
                Some(Route::Misplaced { expected }) => {
                    misplaced.push((i, Self::misplaced(record, *expected)))
                }
            }
        }
        let here = |route: &Option<Route>| *route == Some(Route::Here);
        let placed: std::borrow::Cow<'_, [InputRecord]> = if routes.iter().all(here) {
            batch.into()
        } else {
            batch
                .iter()
                .zip(routes)
                .filter(|(_, route)| here(route))
                .map(|(record, _)| record.clone())
                .collect()
        };
        let mut output = match process_isolating_panics(
            &*self.topology,
            &placed,
            self.config.clock.now_millis(),
            &self.store,
        )
        .await
        {
            Ok(output) => output,
            Err(Isolated::Process(ProcessError::Transient(e))) => {
                return Err(BatchFailure::Retry(e.to_string()))
            }
            Err(Isolated::Process(ProcessError::State(e))) => {
                return Err(Uncommitted::Fatal(e.into()).into())
            }
            Err(Isolated::TimersPanicked(message)) => {
                return Err(Uncommitted::Fatal(RuntimeError::TimersPanicked {
                    topology: self.topology.name(),
                    message,
                })
                .into())
            }
        };
        for (i, why) in &misplaced {
            output.dead_letter(
                &batch[*i],
                DlqReason::WrongPartition,
                why,
                self.topology.name(),
            );
        }
        // What no input caused (a timer's output: a payment run released) starts a trace.
        let started_traces = crate::trace::start_each(&mut output.records, 0);
        output.decisions.extend(started_traces);
        let processed = Instant::now();
        if let Some((topic, partitions)) = &self.changelog {
            let forwarded: Vec<(&InputRecord, i32)> =
                forwarded.iter().map(|(i, to)| (&batch[*i], *to)).collect();
            return self
                .commit_transaction(
                    batch,
                    output,
                    &forwarded,
                    topic,
                    *partitions,
                    (started, processed),
                )
                .await;
        }

        let outputs = output.records.iter().map(|r| r.to_send()).collect();
        if let Err(error) = produce_in_order(&self.producer, outputs).await {
            return Err(BatchFailure::Retry(format!("produce: {error}")));
        }

        self.store
            .write(output.state)
            .map_err(|e| Uncommitted::Fatal(e.into()))?;
        let mut stats = output.stats;
        stats.records_in = batch.len() as u64;
        stats.batches = u64::from(!batch.is_empty());
        for record in &output.records {
            stats.count_out(&record.topic);
        }

        let committed_records = output.records.len();
        self.export_spans(batch, &output.records, output.decisions, started);
        if batch.is_empty() {
            self.report(&stats, batch, committed_records, (started, processed));
            return Ok(());
        }
        // Records are processed in offset order per partition; what is still buffered is
        // committed with a later batch.
        let offsets = next_offsets(batch);
        if let Err(error) = blocking(|| self.consumer.commit(&offsets, CommitMode::Sync)) {
            // Outputs and state are in place; a lost commit only means a harmless replay.
            tracing::warn!(%error, "offset commit failed; the batch will be replayed idempotently");
        }
        self.report(&stats, batch, committed_records, (started, processed));
        Ok(())
    }

    /// Exactly once: the batch's outputs, its state changes (to the changelog) and its input
    /// offsets in one transaction; local state is written only once it has committed, with the
    /// changelog offsets it now holds. Any failure aborts the transaction, and the batch is
    /// processed again from unchanged state.
    async fn commit_transaction(
        &self,
        batch: &[InputRecord],
        output: crate::topology::BatchOutput,
        forwarded: &[(&InputRecord, i32)],
        changelog: &str,
        partitions: i32,
        (started, processed): (Instant, Instant),
    ) -> Result<(), BatchFailure> {
        let mut state = output.state;
        let offsets = next_offsets(batch);
        if output.records.is_empty() && state.changes().is_empty() && offsets.count() == 0 {
            return Ok(()); // a timer tick with nothing due: no transaction
        }
        let committed_records = output.records.len() + forwarded.len() + state.changes().len();
        // Where each state change goes: its owner's state home (during a growth, the old
        // partition until it has moved out).
        let homes = state
            .changes()
            .iter()
            .map(|(key, _)| self.state_partition(key, partitions))
            .collect::<Result<Vec<i32>, _>>()
            .map_err(|e| Uncommitted::Fatal(e.into()))?;
        let producer = &self.producer;
        producer.begin_transaction().map_err(transaction_failed)?;
        let sent = async {
            let mut records = Vec::with_capacity(committed_records);
            records.extend(output.records.iter().map(|record| record.to_send()));
            let name = self.topology.name();
            records.extend(
                forwarded
                    .iter()
                    .map(|(record, to)| forward(record, *to, name)),
            );
            for ((key, value), partition) in state.changes().iter().zip(&homes) {
                let mut record = FutureRecord::to(changelog).partition(*partition).key(key);
                if let Some(value) = value {
                    record = record.payload(value);
                }
                records.push(record);
            }
            let delivered = produce_in_order(producer, records).await?;
            // The changelog records come last: the offsets after theirs are the checkpoint.
            let mut written: BTreeMap<i32, i64> = BTreeMap::new();
            for (partition, offset) in &delivered[output.records.len() + forwarded.len()..] {
                let next = written.entry(*partition).or_default();
                *next = (*next).max(offset + 1);
            }
            // The offsets go once every record is delivered. Sent while the records were on
            // their way, the benchmark's p99 latency went from 168 to 270 ms (librdkafka sends
            // one transaction request at a time: the likely cause). Nor are the deliveries
            // left to the commit's flush: that took 80 to 100 ms a transaction, this wait 7.
            self.send_offsets_and_commit(producer, offsets.clone())
                .await?;
            Ok::<_, TransactionStep>(written)
        }
        .await;
        let written = match sent {
            Ok(written) => written,
            Err(error) => return Err(self.settle_failed(error).await.into()),
        };
        for (partition, next) in written {
            state.checkpoint(changelog, partition, next);
        }
        self.store
            .write(state)
            .map_err(|e| Uncommitted::Fatal(e.into()))?;
        let mut stats = output.stats;
        stats.records_in = batch.len() as u64;
        stats.batches = u64::from(!batch.is_empty());
        stats.changelog_records =
            (committed_records - output.records.len() - forwarded.len()) as u64;
        if !forwarded.is_empty() {
            *stats
                .counts
                .entry("records forwarded to their owner's new partition")
                .or_default() += forwarded.len() as u64;
        }
        for record in &output.records {
            stats.count_out(&record.topic);
        }
        self.export_spans(batch, &output.records, output.decisions, started);
        self.report(&stats, batch, committed_records, (started, processed));
        Ok(())
    }

    /// The spans of a batch that committed, if they are exported.
    fn export_spans(
        &self,
        batch: &[InputRecord],
        outputs: &[crate::record::OutputRecord],
        decisions: Vec<crate::spans::Decision>,
        started: Instant,
    ) {
        if let Some(spans) = &self.config.spans {
            spans.committed_batch(
                self.topology.name(),
                &self.config.application_id,
                batch,
                outputs,
                decisions,
                started.elapsed(),
            );
        }
    }

    /// What a transaction that failed at `error` leaves: aborted (and the abort done), or
    /// the producer lost (its replacement aborts what it left open).
    /// Ends an open transaction: the input offsets go in with the group's metadata (so a
    /// member that lost the partitions meanwhile, a zombie, is fenced and its transaction
    /// aborts), then the commit.
    async fn send_offsets_and_commit(
        &self,
        producer: &FutureProducer,
        offsets: TopicPartitionList,
    ) -> Result<(), TransactionStep> {
        if offsets.count() > 0 {
            let group = self
                .consumer
                .group_metadata()
                .ok_or(TransactionStep::NoGroupMetadata)?;
            bounded_transaction_call(producer, move |producer| {
                producer.send_offsets_to_transaction(&offsets, &group, TRANSACTION_TIMEOUT)
            })
            .await?;
        }
        bounded_transaction_call(producer, |producer| {
            producer.commit_transaction(TRANSACTION_TIMEOUT)
        })
        .await
    }

    async fn settle_failed(&self, error: TransactionStep) -> Uncommitted {
        let failure = match error {
            TransactionStep::Kafka(e) => transaction_failed(e),
            TransactionStep::Changelog(e) => Uncommitted::Fatal(e.into()),
            TransactionStep::NoGroupMetadata => {
                Uncommitted::Aborted("the consumer has no group metadata yet".into())
            }
            TransactionStep::Stuck(what) => {
                tracing::warn!(
                    what,
                    seconds = TRANSACTION_TIMEOUT.as_secs(),
                    "librdkafka did not return from a transactional call in time; giving its producer up"
                );
                Uncommitted::ProducerLost(KafkaError::Canceled)
            }
        };
        if matches!(failure, Uncommitted::Aborted(_)) {
            let aborted = bounded_transaction_call(&self.producer, |producer| {
                producer.abort_transaction(TRANSACTION_TIMEOUT)
            })
            .await;
            match aborted {
                Ok(()) => {}
                Err(TransactionStep::Kafka(abort)) => return Uncommitted::ProducerLost(abort),
                Err(_) => return Uncommitted::ProducerLost(KafkaError::Canceled),
            }
        }
        failure
    }

    /// Counts a committed batch, and reports it to the metrics if there are any.
    fn report(
        &self,
        stats: &StatsSnapshot,
        batch: &[InputRecord],
        committed_records: usize,
        (started, processed): (Instant, Instant),
    ) {
        self.stats.add(stats);
        let Some(metrics) = &self.metrics else {
            return;
        };
        let mut records_in: Vec<(String, u64)> = Vec::new();
        for record in batch {
            match records_in.iter_mut().find(|(t, _)| *t == record.topic) {
                Some((_, n)) => *n += 1,
                None => records_in.push((record.topic.clone(), 1)),
            }
        }
        // Records' ages are real: the clock's offset is for timers, not for latency.
        let now = Clock::WALL.now_millis();
        let ages_ms: Vec<i64> = batch
            .iter()
            .filter_map(|r| r.timestamp)
            .map(|t| (now - t).max(0))
            .collect();
        metrics.batch(
            self.topology.name(),
            &BatchMetrics {
                stats,
                records_in: &records_in,
                processing: processed - started,
                committing: processed.elapsed(),
                committed_records,
                ages_ms: &ages_ms,
            },
        );
        self.observe_lag_and_size(metrics);
    }

    /// Consumer lag per input topic and the state's size, at most once a second: lag needs
    /// the positions (a list allocated by librdkafka), size asks RocksDB.
    fn observe_lag_and_size(&self, metrics: &Metrics) {
        {
            let mut last = self.observed.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *last = Some(Instant::now());
        }
        let name = self.topology.name();
        if let Ok(positions) = self.consumer.position() {
            let mut lag: BTreeMap<String, i64> = BTreeMap::new();
            let mut partitions = Vec::new();
            for e in positions.elements() {
                let Offset::Offset(position) = e.offset() else {
                    continue;
                };
                if let Some(high) = cached_high_watermark(&self.consumer, e.topic(), e.partition())
                {
                    let behind = (high - position).max(0);
                    match lag.get_mut(e.topic()) {
                        Some(records) => *records += behind,
                        None => {
                            lag.insert(e.topic().to_owned(), behind);
                        }
                    }
                    partitions.push((e.topic().to_owned(), e.partition(), position, behind));
                }
            }
            metrics.partitions(name, self.index, &partitions);
            // Every input topic, 0 where this worker has no partition of it now: the gauge
            // sums the workers' parts, and a part left from before a rebalance would stay.
            for topic in self.topology.input_topics() {
                let records = lag.get(&topic).copied().unwrap_or(0);
                metrics.lag(name, &topic, self.index, records);
            }
        }
        if let Some(bytes) = self.store.estimated_bytes() {
            // The workers share one store: each reports all of it, as one part (not summed).
            metrics.state_size(name, 0, bytes);
        }
        if let Some(bytes) = self.store.memory_bytes() {
            metrics.state_memory(bytes);
        }
    }
}

/// What a runtime spawned on a task of its own (`tokio::spawn(runtime.run(..))`) ended with.
/// Runtimes of one process each get a task: what blocks in one (a commit waiting on the
/// broker, a restore) then holds up no other. A panic is a bug, and goes on unwinding here.
pub async fn joined(
    task: tokio::task::JoinHandle<Result<StatsSnapshot, RuntimeError>>,
) -> Result<StatsSnapshot, RuntimeError> {
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(RuntimeError::Cancelled),
    }
}

/// The runtime's consumer: it tells the runtime of the partitions a rebalance took away.
type RuntimeConsumer = StreamConsumer<Revocations>;

/// The partitions revoked by rebalances since the runtime last looked. A rebalance resets
/// the positions of the partitions it assigns to their committed offsets, even of a partition
/// taken away and given back before the runtime noticed: what the runtime buffered of a
/// revoked partition is fetched again (processing the buffered copy too would do it twice),
/// and its store may have missed what another owner committed meanwhile.
struct Revocations {
    revoked: std::sync::Mutex<Vec<(String, i32)>>,
    /// A rebalance ran (partitions given, taken or both) since the last look.
    rebalanced: std::sync::atomic::AtomicBool,
    /// The group assigned to this consumer at least once: it has joined, and librdkafka knows
    /// its member id (a member still in its first join has none, and could not leave).
    joined: std::sync::atomic::AtomicBool,
    /// The group rebalances incrementally (KIP-848's consumer protocol): a rebalance names
    /// only the partitions given or taken, and the others stay as they were, paused or not.
    incremental: bool,
}

impl Revocations {
    fn new(incremental: bool) -> Self {
        Revocations {
            revoked: std::sync::Mutex::default(),
            rebalanced: std::sync::atomic::AtomicBool::new(false),
            joined: std::sync::atomic::AtomicBool::new(false),
            incremental,
        }
    }

    /// Whether the group has assigned to the consumer yet.
    fn joined(&self) -> bool {
        self.joined.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a rebalance ran since the last look, without taking it.
    fn pending(&self) -> bool {
        self.rebalanced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a rebalance ran since the last call, and the partitions it revoked.
    fn take(&self) -> (bool, Vec<(String, i32)>) {
        let rebalanced = self
            .rebalanced
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        let revoked = std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()));
        (rebalanced || !revoked.is_empty(), revoked)
    }
}

impl ClientContext for Revocations {}

impl ConsumerContext for Revocations {
    // Runs inside the consumer's poll (the runtime's `recv`): every record that poll or a later
    // one returns is of the new assignment. Under the classic protocol the runtime uses the
    // eager `range` assignor, so it assigns and unassigns in full; under KIP-848's consumer
    // protocol it assigns and unassigns the partitions named (librdkafka refuses a full
    // assign there). The protocol is known from the configuration: rust-rdkafka's default
    // asks librdkafka for it, a call that never returns once the consumer is being closed
    // mid-rebalance (a runtime that stopped during a rebalance hung in its drop).
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        self.rebalanced
            .store(true, std::sync::atomic::Ordering::Release);
        let assigned = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.joined
                    .store(true, std::sync::atomic::Ordering::Release);
                // A partition paused under an earlier assignment would stay paused: the
                // runtime forgets what it paused when it sees the rebalance.
                if self.incremental {
                    base_consumer.incremental_assign(partitions)
                } else {
                    base_consumer.assign(partitions)
                }
                .and_then(|()| base_consumer.resume(partitions))
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                revoked.extend(
                    partitions
                        .elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition())),
                );
                if self.incremental {
                    base_consumer.incremental_unassign(partitions)
                } else {
                    base_consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance failed; giving up the assignment");
                if self.incremental {
                    base_consumer.incremental_unassign(partitions)
                } else {
                    base_consumer.unassign()
                }
            }
        };
        if let Err(error) = assigned {
            tracing::warn!(%error, "applying a rebalance failed");
        }
    }
}

/// The partition numbers of which `owned` holds some of `topics`' partitions but not all.
fn split_partitions(
    owned: &HashSet<(String, i32)>,
    topics: &[String],
) -> std::collections::BTreeSet<i32> {
    owned
        .iter()
        .map(|(_, p)| *p)
        .filter(|p| {
            !topics
                .iter()
                .all(|topic| owned.contains(&(topic.clone(), *p)))
        })
        .collect()
}

/// The runtime's consumer settings: read_committed, offsets committed only by the runtime, a
/// static member of the group when so configured. (The benchmark's baseline uses them too.)
pub fn consumer_settings(config: &RuntimeConfig) -> ClientConfig {
    let mut consumer_config = client_config(&config.kafka);
    if let Some(instance) = group_instance_id(config) {
        consumer_config.set("group.instance.id", instance);
    }
    consumer_config
        .set("group.id", &config.application_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // Range assigns the same partition numbers of co-partitioned topics to the same
        // member, which a join by key needs (cooperative-sticky does not promise that).
        .set("partition.assignment.strategy", "range");
    // Under the consumer group protocol of KIP-848 the broker assigns, and ignores the
    // setting above: its `range` assignor keeps co-partitioned topics together, `uniform`
    // does not. An operator's choice stands (and is checked on each assignment).
    if is_kip848(&config.kafka) {
        consumer_config.remove("partition.assignment.strategy");
        if !config.kafka.contains_key("group.remote.assignor") {
            consumer_config.set("group.remote.assignor", "range");
        }
    }
    if !config.kafka.contains_key("fetch.wait.max.ms") {
        consumer_config.set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
    }
    // Grown inputs are seen (and their group rebalanced) at the next metadata refresh: every
    // 10 s rather than librdkafka's 5 minutes, so a growth's new partitions wait that long at
    // most before their owners take them up (ADR 0025). One small request per consumer.
    if !config
        .kafka
        .contains_key("topic.metadata.refresh.interval.ms")
    {
        consumer_config.set("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS);
    }
    // librdkafka prefetches up to 64 MiB per consumer under a backlog. A runtime's workers
    // share that: with one consumer per worker, the whole would grow with the cores (the
    // 10-million-open-PO benchmark went from 609 to 1,090 MiB with two workers).
    if config.workers > 1 && !config.kafka.contains_key("queued.max.messages.kbytes") {
        let share = PREFETCH_KBYTES / config.workers.min(64) as u64;
        consumer_config.set("queued.max.messages.kbytes", share.to_string());
    }
    consumer_config
}

/// Why a worker stops: asked to (a signal), or because another worker of its runtime failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Asked,
    AfterFailure,
}

/// The `group.instance.id` a worker's consumer joins as, if it is a static member.
fn group_instance_id(config: &RuntimeConfig) -> Option<String> {
    match config.kafka.get("group.instance.id") {
        Some(id) => Some(id.clone()),
        None if config.static_membership => Some(config.instance_id.clone()),
        None => None,
    }
}

/// Whether a group member's id is that of static member `instance`: the broker names a static
/// member `<group.instance.id>-<uuid>`, the uuid in Java's form or Kafka's 22-character
/// base64 (so instance `a` is neither `a-b` nor `a.worker-1`).
fn is_member_of(member_id: &str, instance: &str) -> bool {
    let base64 = |id: &str| {
        id.len() == 22
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    member_id
        .strip_prefix(instance)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok() || base64(id))
}

/// Whether the consumers join under KIP-848's consumer group protocol (`group.protocol =
/// consumer`): the broker assigns, incrementally.
fn is_kip848(kafka: &crate::KafkaProperties) -> bool {
    kafka
        .get("group.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("consumer"))
}

/// librdkafka's default `queued.max.messages.kbytes`: what one consumer may prefetch.
const PREFETCH_KBYTES: u64 = 65_536;

fn consumer(config: &RuntimeConfig) -> Result<RuntimeConsumer, RuntimeError> {
    let consumer: RuntimeConsumer = consumer_settings(config)
        .create_with_context(Revocations::new(is_kip848(&config.kafka)))
        .map_err(|source| RuntimeError::Client {
            client: "consumer",
            source,
        })?;
    Ok(consumer)
}

fn subscribe(consumer: &RuntimeConsumer, topics: &[String]) -> Result<(), RuntimeError> {
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .map_err(|source| RuntimeError::Subscribe {
            topics: topics.to_vec(),
            source,
        })
}

/// The runtime's producer settings: idempotent, and under exactly once transactional as
/// `<application_id>-<instance_id>`. (The benchmark's baseline uses them too.)
pub fn producer_settings(config: &RuntimeConfig) -> ClientConfig {
    let mut producer_config = producer_config(&config.kafka);
    if config.guarantee == Guarantee::ExactlyOnce {
        producer_config.set(
            "transactional.id",
            format!("{}-{}", config.application_id, config.instance_id),
        );
        if !config.kafka.contains_key("transaction.timeout.ms") {
            // What a crashed instance's open transaction holds back (its partitions'
            // committed offsets, read_committed readers) until the broker aborts it when
            // no restart of the instance does it first: Kafka Streams' 10 seconds.
            producer_config.set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS);
        }
    }
    producer_config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The Java client's partitioner, so upstreams on any client agree with us on partitions.
        .set("partitioner", "murmur2_random");
    // Tuning, not correctness: what `[kafka]` sets stands. Outputs grown with the inputs are
    // partitioned by their new count within seconds (ADR 0025).
    for (key, default) in [
        ("linger.ms", "5"),
        ("compression.type", "lz4"),
        ("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS),
    ] {
        if !config.kafka.contains_key(key) {
            producer_config.set(key, default);
        }
    }
    producer_config
}

/// The runtime's producer, initialised under exactly once (which fences any earlier producer
/// of its transactional id and aborts what it left open).
fn producer(config: &RuntimeConfig) -> Result<FutureProducer, RuntimeError> {
    let producer: FutureProducer =
        producer_settings(config)
            .create()
            .map_err(|source| RuntimeError::Client {
                client: "producer",
                source,
            })?;
    if config.guarantee == Guarantee::ExactlyOnce {
        producer
            .init_transactions(TRANSACTION_TIMEOUT)
            .map_err(RuntimeError::Transaction)?;
    }
    Ok(producer)
}

/// What the input topics' partition counts did.
enum CountChange {
    Unchanged,
    /// Every input has grown to this count.
    Grown(i32),
    /// Some inputs have grown, the others not yet.
    Growing,
}

/// A batch that failed.
enum BatchFailure {
    /// Nothing was sent: the same batch is processed again.
    Retry(String),
    Uncommitted(Uncommitted),
}

/// A batch that did not commit and is not retried in place.
enum Uncommitted {
    /// The batch's transaction was aborted: consume again from the committed offsets.
    Aborted(String),
    /// The producer is fenced or failed for good: build a new one (which aborts what this one
    /// left open), then consume again from the committed offsets.
    ProducerLost(KafkaError),
    Fatal(RuntimeError),
}

impl From<Uncommitted> for BatchFailure {
    fn from(failure: Uncommitted) -> Self {
        BatchFailure::Uncommitted(failure)
    }
}

/// Where a transaction failed.
enum TransactionStep {
    Kafka(KafkaError),
    Changelog(ChangelogError),
    NoGroupMetadata,
    /// A transactional call of librdkafka's did not return in time: the producer is given up.
    Stuck(&'static str),
}

/// Runs one of librdkafka's blocking transactional calls on a thread of its own and waits at
/// most a little past the transaction timeout for it. librdkafka's
/// `send_offsets_to_transaction` waits for its transaction manager without a bound of its own
/// ("timeout is enforced by" the manager), and after a broker restart the manager could leave
/// it waiting for good: the broker-restart soak found a runtime blocked in it for
/// minutes, deaf to a shutdown, its partitions processed by nobody. Past the limit the
/// producer is taken for lost (a new one fences it and aborts what it left open); the thread
/// still blocked holds a clone of it until librdkafka lets go.
async fn bounded_transaction_call(
    producer: &FutureProducer,
    call: impl FnOnce(&FutureProducer) -> Result<(), KafkaError> + Send + 'static,
) -> Result<(), TransactionStep> {
    const LIMIT: Duration = TRANSACTION_TIMEOUT.saturating_add(Duration::from_secs(5));
    let producer = producer.clone();
    match tokio::time::timeout(LIMIT, tokio::task::spawn_blocking(move || call(&producer))).await {
        Ok(Ok(result)) => result.map_err(TransactionStep::Kafka),
        Ok(Err(_)) => Err(TransactionStep::Kafka(KafkaError::Canceled)),
        Err(_) => Err(TransactionStep::Stuck("a transactional call")),
    }
}

impl From<KafkaError> for TransactionStep {
    fn from(e: KafkaError) -> Self {
        TransactionStep::Kafka(e)
    }
}

/// A transaction step that failed: fatal errors (fenced by a newer producer of the same id, a
/// broken producer) lose the producer; any other aborts the transaction.
fn transaction_failed(error: KafkaError) -> Uncommitted {
    let fatal = match &error {
        KafkaError::Transaction(e) => e.is_fatal(),
        _ => false,
    };
    if fatal {
        Uncommitted::ProducerLost(error)
    } else {
        Uncommitted::Aborted(format!("transaction: {error}"))
    }
}

/// How long an instance starting during a recorded growth waits for its inputs to have grown
/// alike before it refuses them: the command takes seconds; a crashed one is run again.
const GROWTH_START_PATIENCE: Duration = Duration::from_secs(300);
/// How long inputs apart with no growth recorded are looked at before they are refused: a
/// growth of a pipeline without state (or by another tool) settles in seconds; topics made
/// apart never do, and wait no longer than this for their error.
const UNRECORDED_GROWTH_PATIENCE: Duration = Duration::from_secs(30);

/// The partition count the existing input topics share (0 when none exists yet).
fn co_partitioned(counts: &HashMap<String, i32>) -> Result<i32, RuntimeError> {
    let existing: BTreeSet<i32> = counts.values().copied().filter(|c| *c > 0).collect();
    match existing.len() {
        0 => Ok(0),
        1 => Ok(existing.into_iter().next().unwrap_or(0)),
        _ => Err(RuntimeError::NotCoPartitioned {
            counts: counts.iter().map(|(t, c)| (t.clone(), *c)).collect(),
        }),
    }
}

/// Hands `records` to the producer one after the other, in their order, and waits until all
/// are delivered: where each went (partition, offset), in their order. A record the full
/// queue refuses is retried before any after it is handed over (`FutureProducer::send`
/// would let those go first: a document's later status could then land before its earlier one).
async fn produce_in_order<'a>(
    producer: &FutureProducer,
    records: Vec<FutureRecord<'a, Vec<u8>, Vec<u8>>>,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    // Bounded: a producer that sends nothing (after a broker restart, say) would otherwise keep
    // its queue full, and the batch wait on it for good, deaf to a shutdown, with nothing said.
    // Past the deadline the batch fails like any failed transaction: aborted and redone.
    let deadline = Instant::now() + TRANSACTION_TIMEOUT;
    let timed_out = || KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        let delivery = tokio::time::timeout_at(deadline, enqueue(producer, record))
            .await
            .map_err(|_| timed_out())??;
        deliveries.push(delivery);
    }
    let mut delivered = Vec::with_capacity(deliveries.len());
    let reports = tokio::time::timeout_at(deadline, join_all(deliveries))
        .await
        .map_err(|_| timed_out())?;
    for delivery in reports {
        match delivery {
            Ok(Ok(d)) => delivered.push((d.partition, d.offset)),
            Ok(Err((error, _))) => return Err(error),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    Ok(delivered)
}

/// Hands `record` to the producer now, waiting while its queue is full (`FutureProducer::send`
/// would let later records overtake it meanwhile). The future it returns is its delivery.
pub async fn enqueue<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), refused)) => {
                record = refused;
                // librdkafka's threads deliver what is queued meanwhile.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Sleeps until `at` (for ever if none: a `select!` branch guarded on it being some).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs a librdkafka or RocksDB call that blocks (a transaction step, a committed-offsets
/// fetch, a restore) so that it holds up only its own runtime: on a multi-threaded tokio
/// runtime the worker's other tasks move to another thread meanwhile. (A current-thread
/// runtime, as in-process tests use, has no other thread to move them to.)
fn blocking<R>(call: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
        _ => call(),
    }
}

/// A growth's straggler as it goes on to partition `to` of its topic: its key, value,
/// headers and timestamp as they came, and a header naming the `processor` it is for (every
/// processor reading the topic forwards its own copy: `dlq::meant_for`).
fn forward<'a>(
    record: &'a InputRecord,
    to: i32,
    processor: &'a str,
) -> FutureRecord<'a, Vec<u8>, Vec<u8>> {
    let mut headers = rdkafka::message::OwnedHeaders::new_with_capacity(record.headers.len() + 1);
    for (key, value) in &record.headers {
        headers = headers.insert(rdkafka::message::Header {
            key,
            value: Some(value),
        });
    }
    headers = headers.insert(rdkafka::message::Header {
        key: crate::dlq::HEADER_FORWARDED_FOR,
        value: Some(processor),
    });
    let mut forwarded = FutureRecord::to(&record.topic)
        .partition(to)
        .headers(headers);
    if let Some(key) = &record.key {
        forwarded = forwarded.key(key);
    }
    if let Some(payload) = &record.payload {
        forwarded = forwarded.payload(payload);
    }
    if let Some(timestamp) = record.timestamp {
        forwarded = forwarded.timestamp(timestamp);
    }
    forwarded
}

/// The offsets to commit for a batch: per partition, one past the last record processed.
fn next_offsets(batch: &[InputRecord]) -> TopicPartitionList {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for record in batch {
        let slot = next.entry((&record.topic, record.partition)).or_default();
        *slot = (*slot).max(record.offset + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        // Adding a partition to a fresh list cannot fail.
        let _ = offsets.add_partition_offset(topic, partition, Offset::Offset(offset));
    }
    offsets
}

/// The partitions this member owns, where each started (its committed offset) and how far it
/// went when assigned, to tell a partition that is caught up from one whose records are still
/// to be fetched.
#[derive(Default)]
struct Owned {
    partitions: HashSet<(String, i32)>,
    starts: HashMap<(String, i32), i64>,
    /// Each partition's end (high watermark; the last stable offset under read_committed) as
    /// the broker gave it on assignment. librdkafka's cached one may be older: from when this
    /// member owned the partition before, and another has since processed records past it.
    /// Trusting that would take the partition for caught up, and process another topic's
    /// later records first (a document's issue before its approvals).
    ends: HashMap<(String, i32), i64>,
}

impl Owned {
    fn refresh(&mut self, consumer: &RuntimeConsumer) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let now: HashSet<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        if now == self.partitions {
            return;
        }
        // A rebalance: learn where the new partitions start (one call per rebalance).
        self.starts.clear();
        if let Ok(committed) = consumer.committed(Timeout::After(Duration::from_secs(10))) {
            for e in committed.elements() {
                if let Offset::Offset(offset) = e.offset() {
                    self.starts
                        .insert((e.topic().to_owned(), e.partition()), offset);
                }
            }
        }
        // One request for them all (per leader), once per rebalance: asked partition by
        // partition, each answer waited behind the consumer's fetch, which an empty partition
        // holds for fetch.wait.max.ms (10 s at start-up for a topology with a few empty
        // inputs). The latest offset of `offsets_for_times` is the end a read_committed
        // consumer can reach. A partition whose end is not known is waited for as one not
        // fetched yet.
        self.ends.clear();
        let mut latest = TopicPartitionList::new();
        for (topic, partition) in &now {
            let _ = latest.add_partition_offset(topic, *partition, Offset::End);
        }
        match consumer.offsets_for_times(latest, Duration::from_secs(10)) {
            Ok(ends) => {
                for e in ends.elements() {
                    if let Offset::Offset(end) = e.offset() {
                        self.ends.insert((e.topic().to_owned(), e.partition()), end);
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "partition ends unknown after a rebalance"),
        }
        self.partitions = now;
    }

    fn contains(&self, topic: &str, partition: i32) -> bool {
        self.partitions.contains(&(topic.to_owned(), partition))
    }

    /// Whether some owned partition has records to fetch (its end, as the broker gave it on
    /// assignment or the last fetch reported, past the consumer's position, or a position not
    /// known at all), while the runtime has none buffered: its fetch is not running.
    fn fetch_stalled(&self, consumer: &RuntimeConsumer) -> bool {
        let Ok(positions) = consumer.position() else {
            return false;
        };
        self.partitions.iter().any(|(topic, partition)| {
            let position =
                positions
                    .find_partition(topic, *partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            self.lag(consumer, topic, *partition, position) == Lag::Behind
        })
    }

    fn any(&self) -> bool {
        !self.partitions.is_empty()
    }

    /// The partition numbers owned on some of `topics` but not on all of them: a group
    /// assignor that split co-partitioned topics between members.
    fn split(&self, topics: &[String]) -> std::collections::BTreeSet<i32> {
        split_partitions(&self.partitions, topics)
    }

    /// What is owned, topic by topic (`topic[0, 1] other[0]`), for a log line.
    fn describe(&self) -> String {
        let mut by_topic: BTreeMap<&str, std::collections::BTreeSet<i32>> = BTreeMap::new();
        for (topic, partition) in &self.partitions {
            by_topic.entry(topic).or_default().insert(*partition);
        }
        by_topic
            .iter()
            .map(|(topic, partitions)| format!("{topic}{partitions:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The partition numbers owned, whatever the topic (co-partitioned: the same keys).
    fn partition_numbers(&self) -> std::collections::BTreeSet<i32> {
        self.partitions.iter().map(|(_, p)| *p).collect()
    }

    /// Caught up when the next offset to read is at the partition's end: the later of what
    /// the last fetch reported and what the broker said on assignment. Unknown when neither
    /// is known. `next` is the furthest of the offset after the last record buffered and the
    /// consumer's position, which moves past transaction markers no record comes after.
    fn lag(
        &self,
        consumer: &RuntimeConsumer,
        topic: &str,
        partition: i32,
        next: Option<i64>,
    ) -> Lag {
        if !self.contains(topic, partition) {
            return Lag::CaughtUp;
        }
        let key = (topic.to_owned(), partition);
        let fetched = cached_high_watermark(consumer, topic, partition);
        let Some(high) = fetched.max(self.ends.get(&key).copied()) else {
            return Lag::Unknown;
        };
        let caught_up = match next.max(self.starts.get(&key).copied()) {
            Some(next) => next >= high,
            None => high == 0,
        };
        if caught_up {
            Lag::CaughtUp
        } else {
            Lag::Behind
        }
    }
}

/// The high watermark the last fetch response reported for a partition, from librdkafka's
/// cache: no request to the broker (rust-rdkafka only wraps the network variant).
fn cached_high_watermark(consumer: &RuntimeConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, `topic` is a
    // NUL-terminated string that outlives the call, and librdkafka only writes the two i64s.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// Why a batch could not be processed, once panics are isolated.
enum Isolated {
    Process(ProcessError),
    /// The timers panicked with no record in the batch: nothing to dead-letter.
    TimersPanicked(String),
}

/// Processes `records` as `topology.process` does, except that a record whose processing
/// panics is dead-lettered (`dlq.reason = panicked`, the panic's message as the error) and the
/// batch processed again without it: one bad record never stops its partition nor, by a
/// crash on every restart, the process. Processing writes nothing (its state changes come back
/// in the output), so processing again is harmless. The culprit is the shortest prefix of the
/// batch that panics, found by bisection: a dozen passes for a batch of 2,000.
async fn process_isolating_panics<T: Topology>(
    topology: &T,
    records: &[InputRecord],
    now: i64,
    store: &Store,
) -> Result<crate::topology::BatchOutput, Isolated> {
    // Indices into `records` of the records dead-lettered, with their panics' messages.
    let mut panicked: Vec<(usize, String)> = Vec::new();
    loop {
        let kept: Vec<usize> = (0..records.len())
            .filter(|i| !panicked.iter().any(|(p, _)| p == i))
            .collect();
        let batch: std::borrow::Cow<'_, [InputRecord]> = if panicked.is_empty() {
            records.into()
        } else {
            kept.iter().map(|&i| records[i].clone()).collect()
        };
        let message = match attempt(topology, &batch, now, store).await {
            Ok(result) => {
                let mut output = result.map_err(Isolated::Process)?;
                for (i, message) in &panicked {
                    let record = &records[*i];
                    tracing::error!(
                        topology = topology.name(),
                        topic = %record.topic,
                        partition = record.partition,
                        offset = record.offset,
                        panic = %message,
                        "processing a record panicked; it goes to the dead-letter queue"
                    );
                    output.dead_letter(record, DlqReason::Panicked, message, topology.name());
                }
                return Ok(output);
            }
            Err(message) => message,
        };
        // The shortest prefix that panics ends with the culprit (a prefix of 0 records fires
        // the timers only).
        let (mut fine, mut panics, mut culprit_message) = (0usize, batch.len(), message);
        if attempt(topology, &[], now, store).await.is_err() {
            return Err(Isolated::TimersPanicked(culprit_message));
        }
        while panics - fine > 1 {
            let middle = fine + (panics - fine) / 2;
            match attempt(topology, &batch[..middle], now, store).await {
                Ok(_) => fine = middle,
                Err(message) => {
                    panics = middle;
                    culprit_message = message;
                }
            }
        }
        panicked.push((kept[panics - 1], culprit_message));
    }
}

/// One pass of `topology.process`: `Err` with the panic's message if it panicked.
async fn attempt<T: Topology>(
    topology: &T,
    records: &[InputRecord],
    now: i64,
    store: &Store,
) -> Result<Result<crate::topology::BatchOutput, ProcessError>, String> {
    std::panic::AssertUnwindSafe(topology.process(records, now, store))
        .catch_unwind()
        .await
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned())
        })
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)))
}

fn to_input(message: &BorrowedMessage<'_>) -> InputRecord {
    InputRecord::of(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topology that panics on the records whose offsets it is told, and otherwise
    /// forwards each record to `out`; `timers_panic` makes every pass panic.
    struct Fragile {
        panics_on: Vec<i64>,
        timers_panic: bool,
    }

    impl Topology for Fragile {
        fn name(&self) -> &'static str {
            "fragile"
        }

        fn input_topics(&self) -> Vec<String> {
            vec!["in".into()]
        }

        async fn process(
            &self,
            records: &[InputRecord],
            _now: i64,
            _store: &Store,
        ) -> Result<crate::topology::BatchOutput, ProcessError> {
            let mut output = crate::topology::BatchOutput::default();
            for record in records {
                if self.panics_on.contains(&record.offset) {
                    panic!("cannot handle offset {}", record.offset);
                }
                output.records.push(crate::record::OutputRecord {
                    topic: "out".into(),
                    key: record.offset.to_string().into_bytes(),
                    payload: None,
                    headers: vec![],
                    timestamp: None,
                });
            }
            assert!(!self.timers_panic, "a timer's state is corrupt");
            Ok(output)
        }
    }

    fn offsets(n: i64) -> Vec<InputRecord> {
        (0..n)
            .map(|offset| InputRecord {
                topic: "in".into(),
                partition: 0,
                offset,
                timestamp: Some(offset),
                key: None,
                payload: None,
                headers: vec![],
            })
            .collect()
    }

    #[test]
    fn records_whose_processing_panics_are_dead_lettered_and_the_rest_processed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "fragile").unwrap();
        let topology = Fragile {
            panics_on: vec![0, 37, 38, 1_999],
            timers_panic: false,
        };
        let batch = offsets(2_000);
        let output =
            futures::executor::block_on(process_isolating_panics(&topology, &batch, 0, &store))
                .unwrap_or_else(|_| panic!("the batch is processed"));
        let processed: Vec<i64> = output
            .records
            .iter()
            .filter(|r| r.topic == "out")
            .map(|r| String::from_utf8_lossy(&r.key).parse().unwrap())
            .collect();
        let expected: Vec<i64> = (0..2_000)
            .filter(|o| ![0, 37, 38, 1_999].contains(o))
            .collect();
        assert_eq!(processed, expected, "every other record, once, in order");
        let mut dead: Vec<(String, String, String)> = output
            .records
            .iter()
            .filter(|r| r.topic == "in.dlq")
            .map(|r| {
                let header = |name: &str| {
                    r.headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap()
                };
                (
                    header(crate::dlq::HEADER_OFFSET),
                    header(crate::dlq::HEADER_REASON),
                    header(crate::dlq::HEADER_ERROR),
                )
            })
            .collect();
        dead.sort_by_key(|(offset, _, _)| offset.parse::<i64>().unwrap());
        assert_eq!(
            dead,
            [0, 37, 38, 1_999]
                .map(|o| (
                    o.to_string(),
                    "panicked".to_owned(),
                    format!("cannot handle offset {o}")
                ))
                .to_vec()
        );
        assert_eq!(output.stats.dead_lettered, 4);
    }

    #[test]
    fn a_panic_firing_timers_is_an_error_naming_it_not_a_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "fragile").unwrap();
        let topology = Fragile {
            panics_on: vec![],
            timers_panic: true,
        };
        let result = futures::executor::block_on(process_isolating_panics(
            &topology,
            &offsets(10),
            0,
            &store,
        ));
        match result {
            Err(Isolated::TimersPanicked(message)) => {
                assert_eq!(message, "a timer's state is corrupt")
            }
            _ => panic!("the timers' panic is reported"),
        }
    }

    #[test]
    fn an_assignment_owning_a_partition_number_on_some_inputs_only_is_split() {
        let topics = vec!["po".to_owned(), "invoice".to_owned()];
        let owned = |pairs: &[(&str, i32)]| -> HashSet<(String, i32)> {
            pairs.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
        };
        // What range gives: the same numbers of every topic.
        let together = owned(&[("po", 0), ("invoice", 0), ("po", 2), ("invoice", 2)]);
        assert!(split_partitions(&together, &topics).is_empty());
        // What a uniform assignor may give: a topic's partitions on one member.
        let apart = owned(&[("po", 0), ("po", 1), ("invoice", 1)]);
        assert_eq!(split_partitions(&apart, &topics), BTreeSet::from([0]));
        assert!(split_partitions(&HashSet::new(), &topics).is_empty());
    }

    #[test]
    fn a_runtimes_workers_share_one_consumers_prefetch_unless_configured() {
        let mut kafka = crate::config::KafkaProperties::new();
        kafka.insert("bootstrap.servers".into(), "127.0.0.1:9092".into());
        let mut config = RuntimeConfig::new("app", kafka, Default::default());
        config.workers = 1;
        assert_eq!(
            consumer_settings(&config).get("queued.max.messages.kbytes"),
            None
        );
        config.workers = 2;
        assert_eq!(
            consumer_settings(&config).get("queued.max.messages.kbytes"),
            Some("32768")
        );
        config
            .kafka
            .insert("queued.max.messages.kbytes".into(), "100000".into());
        assert_eq!(
            consumer_settings(&config).get("queued.max.messages.kbytes"),
            Some("100000")
        );
    }

    #[test]
    fn under_the_kip_848_protocol_the_broker_is_asked_for_its_range_assignor() {
        let mut kafka = crate::config::KafkaProperties::new();
        kafka.insert("bootstrap.servers".into(), "127.0.0.1:9092".into());
        let classic = consumer_settings(&RuntimeConfig::new(
            "app",
            kafka.clone(),
            Default::default(),
        ));
        assert_eq!(classic.get("partition.assignment.strategy"), Some("range"));
        assert_eq!(classic.get("group.remote.assignor"), None);

        kafka.insert("group.protocol".into(), "consumer".into());
        let kip848 = consumer_settings(&RuntimeConfig::new(
            "app",
            kafka.clone(),
            Default::default(),
        ));
        assert_eq!(kip848.get("partition.assignment.strategy"), None);
        assert_eq!(kip848.get("group.remote.assignor"), Some("range"));

        // An operator's choice stands; the assignment check catches a split it makes.
        kafka.insert("group.remote.assignor".into(), "uniform".into());
        let chosen = consumer_settings(&RuntimeConfig::new("app", kafka, Default::default()));
        assert_eq!(chosen.get("group.remote.assignor"), Some("uniform"));
    }

    #[test]
    fn a_leaving_instance_knows_its_own_members_and_no_other_instances() {
        // The broker names a static member `<group.instance.id>-<uuid>`.
        let java = "pod-1-3f1c2a9e-8a4b-4c1d-9e2f-0a1b2c3d4e5f";
        assert!(is_member_of(java, "pod-1"));
        assert!(is_member_of("pod-1-AbCdEfGhIjKlMnOpQr_-12", "pod-1"));
        // Not a longer name that starts like it, not a worker of it, not a dynamic member.
        assert!(!is_member_of(java, "pod"));
        assert!(!is_member_of(
            "pod-1.worker-1-3f1c2a9e-8a4b-4c1d-9e2f-0a1b2c3d4e5f",
            "pod-1"
        ));
        assert!(!is_member_of(
            "rdkafka-3f1c2a9e-8a4b-4c1d-9e2f-0a1b2c3d4e5f",
            "pod-1"
        ));

        let mut config = RuntimeConfig::new("app", Default::default(), Default::default());
        config.instance_id = "pod-1".into();
        assert_eq!(group_instance_id(&config).as_deref(), Some("pod-1"));
        assert_eq!(
            group_instance_id(&config.for_worker(1)).as_deref(),
            Some("pod-1.worker-1")
        );
        config.static_membership = false;
        assert_eq!(group_instance_id(&config), None);
        // An id set under [kafka] is the one the consumer joins as.
        config
            .kafka
            .insert("group.instance.id".into(), "set-by-hand".into());
        assert_eq!(group_instance_id(&config).as_deref(), Some("set-by-hand"));
    }

    #[test]
    fn producer_tuning_from_the_configuration_stands_and_its_guarantees_do_not_yield() {
        let mut kafka = crate::config::KafkaProperties::new();
        kafka.insert("bootstrap.servers".into(), "127.0.0.1:9092".into());
        kafka.insert("linger.ms".into(), "1".into());
        kafka.insert("acks".into(), "1".into());
        let config = RuntimeConfig::new("app", kafka, std::path::PathBuf::new());
        let settings = producer_settings(&config);
        assert_eq!(settings.get("linger.ms"), Some("1"));
        assert_eq!(settings.get("compression.type"), Some("lz4"));
        assert_eq!(settings.get("acks"), Some("all"));
        assert_eq!(settings.get("enable.idempotence"), Some("true"));
    }
}
