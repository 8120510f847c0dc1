//! What every runtime needs, whichever topology it drives: client properties, batching,
//! timers, the guarantee, workers, the state budget and the clock.

use p2p_state::StateMemory;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// librdkafka client properties (`bootstrap.servers`, `security.protocol`, `sasl.*`, ...),
/// passed through as given, so TLS and SASL need no code here.
pub type KafkaProperties = BTreeMap<String, String>;

/// What every runtime needs, whichever topology it drives.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Consumer group id and the name of the state directory.
    pub application_id: String,
    pub kafka: KafkaProperties,
    pub state_dir: PathBuf,
    /// Most records processed (and committed) together.
    pub max_batch: usize,
    /// How long a batch waits to fill once its first record is in.
    pub batch_linger: Duration,
    /// How often due timers are looked for when no records arrive.
    pub timer_interval: Duration,
    /// How long a group of co-partitioned partitions waits for one that is behind (the broker
    /// has records for it not yet fetched) before it processes what it has. Kafka Streams
    /// waits for such records without a limit. Ours is only a guard against a partition that
    /// merely looks behind (ADR 0004, 0009), so it is long: a loaded machine's first fetch
    /// after an assignment can take seconds, and going on without it processes a record
    /// before the earlier ones of another topic it depends on. The wait ends as soon as the records arrive.
    pub max_task_idle: Duration,
    /// How long it waits for a partition whose end is not known (the broker did not say on
    /// assignment, and no fetch has reported on it yet): its first records may be the
    /// earliest of all.
    pub max_fetch_wait: Duration,
    pub guarantee: Guarantee,
    /// Replication factor of the changelog topics the runtime creates; -1: the broker's
    /// `default.replication.factor`.
    pub changelog_replication: i32,
    /// This instance among the application's instances: its transactional id is
    /// `<application_id>-<instance_id>`, so a restarted instance fences its own zombie.
    pub instance_id: String,
    /// Static group membership: the consumer joins as `group.instance.id = <instance_id>`, so
    /// an instance restarted within `session.timeout.ms` (a crash, a rolling deploy) gets its
    /// partitions back with no rebalance. The price: an instance that never comes back holds
    /// its partitions until its session times out.
    pub static_membership: bool,
    /// On a planned stop (SIGTERM: a scale-in, `kubectl scale`, a rolling update) a static
    /// member leaves its group before it closes, so the others take its partitions within
    /// seconds instead of after `session.timeout.ms` (KIP-345 keeps a static member's place
    /// through a close). A crash, or a stop after a failure, keeps the place as before (ADR
    /// 0026).
    pub leave_group_on_stop: bool,
    /// The memory the runtime's store may use (block cache, index and filter blocks,
    /// memtables), shared with every store opened within the same budget (ADR 0012).
    pub state_memory: StateMemory,
    /// The clock timers fire by: the wall clock, moved by an offset for trials.
    pub clock: Clock,
    /// Workers side by side, each with a share of the partitions (ADR 0023). Default: 1.
    /// More workers than partitions leave some idle.
    pub workers: usize,
    /// Where the spans of committed batches and their decisions go (ADR 0027); none: no
    /// spans, though records carry their trace context either way.
    pub spans: Option<crate::spans::SpanExport>,
}

/// The time the runtime hands its topologies: the wall clock plus an offset, so that a trial
/// (or a test) can see a timer due next week fire today, without faking the process's time.
/// Event time (what records say) is not touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "clock offset {0:?} is not a signed whole number of days, hours, minutes or seconds \
     (7d, -36h, 90m, 30s), of at most ten years"
)]
pub struct ClockOffsetError(pub String);

impl Clock {
    const MAX_OFFSET_MS: i64 = 3_650 * 86_400_000;

    /// The wall clock.
    pub const WALL: Clock = Clock { offset_ms: 0 };

    /// The wall clock moved by `offset_ms`.
    pub fn offset_by(offset_ms: i64) -> Result<Clock, ClockOffsetError> {
        if offset_ms.abs() > Self::MAX_OFFSET_MS {
            return Err(ClockOffsetError(format!("{offset_ms} ms")));
        }
        Ok(Clock { offset_ms })
    }

    /// Parses `7d`, `+36h`, `-90m`, `30s`.
    pub fn parse_offset(text: &str) -> Result<Clock, ClockOffsetError> {
        let error = || ClockOffsetError(text.to_owned());
        let trimmed = text.trim();
        let (sign, rest) = match trimmed.strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        let split = rest.len().checked_sub(1).ok_or_else(error)?;
        let (number, unit) = rest.split_at(split);
        let unit_ms = match unit {
            "d" => 86_400_000,
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            _ => return Err(error()),
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error());
        }
        let number: i64 = number.parse().map_err(|_| error())?;
        let offset = number
            .checked_mul(unit_ms)
            .and_then(|ms| ms.checked_mul(sign))
            .ok_or_else(error)?;
        Clock::offset_by(offset).map_err(|_| error())
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_millis(&self) -> i64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        wall + self.offset_ms
    }
}

/// What a crash can do to a batch (Kafka Streams' `processing.guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// One Kafka transaction per batch: its outputs, its state changes (to the store's
    /// changelog) and its input offsets commit together or not at all; local state is written
    /// only after the commit and rebuilt from the changelog when it is missing or behind.
    ExactlyOnce,
    /// Outputs, then local state, then offsets: a crash replays the batch, and the state makes
    /// the replay harmless for consumers that key on document ids. No changelog: local state
    /// lost is state lost.
    AtLeastOnce,
}

impl RuntimeConfig {
    pub fn new(application_id: &str, kafka: KafkaProperties, state_dir: PathBuf) -> Self {
        Self {
            application_id: application_id.to_owned(),
            kafka,
            state_dir,
            max_batch: 2_000,
            batch_linger: Duration::from_millis(20),
            timer_interval: Duration::from_millis(500),
            max_task_idle: Duration::from_secs(30),
            max_fetch_wait: Duration::from_secs(30),
            guarantee: Guarantee::ExactlyOnce,
            changelog_replication: -1,
            instance_id: "0".into(),
            static_membership: true,
            leave_group_on_stop: true,
            state_memory: StateMemory::process_default(),
            clock: Clock::WALL,
            workers: default_workers(),
            spans: None,
        }
    }

    /// The configuration of worker `index`: worker 0 is what a single worker was (its group
    /// instance id and transactional id stay what they were, so an upgrade keeps them); worker
    /// `k` appends `.worker-k` to the ids. The workers share one store (ADR 0023).
    pub fn for_worker(&self, index: usize) -> RuntimeConfig {
        let mut config = self.clone();
        if index == 0 {
            return config;
        }
        let suffix = format!(".worker-{index}");
        config.instance_id.push_str(&suffix);
        if let Some(id) = config.kafka.get_mut("group.instance.id") {
            id.push_str(&suffix);
        }
        config
    }

    /// `<application_id>-growth`: the growth log of the runtime's store (ADR 0025).
    pub fn growth_log_topic(&self) -> String {
        format!("{}-growth", self.application_id)
    }

    /// `<application_id>-<store>-changelog`.
    pub fn changelog_topic(&self, store: &str) -> String {
        format!("{}-{store}-changelog", self.application_id)
    }
}

/// As many workers as the machine has cores (ADR 0023), as Kafka Streams is advised to run
/// a stream thread per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offsets_read_as_operators_write_them_and_nothing_else() {
        let day = 86_400_000;
        assert_eq!(Clock::parse_offset("7d").unwrap().offset_ms(), 7 * day);
        assert_eq!(
            Clock::parse_offset("+36h").unwrap().offset_ms(),
            36 * 3_600_000
        );
        assert_eq!(
            Clock::parse_offset("-90m").unwrap().offset_ms(),
            -90 * 60_000
        );
        assert_eq!(Clock::parse_offset("30s").unwrap().offset_ms(), 30_000);
        for bad in [
            "",
            "d",
            "7",
            "7 days",
            "7w",
            "1.5d",
            "--1d",
            "99999999999999d",
            "3651d",
        ] {
            assert_eq!(
                Clock::parse_offset(bad),
                Err(ClockOffsetError(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_clock_runs_ahead_by_its_offset() {
        let week = 7 * 86_400_000;
        let ahead = Clock::offset_by(week).unwrap().now_millis();
        let wall = Clock::WALL.now_millis();
        // Read one after the other: a week apart, give or take the instant between.
        assert!((ahead - wall - week).abs() < 60_000);
    }

    #[test]
    fn worker_0_keeps_a_single_workers_ids_and_the_others_get_their_own_but_share_its_store() {
        let mut kafka = KafkaProperties::new();
        kafka.insert("group.instance.id".into(), "pod-3".into());
        let mut config = RuntimeConfig::new("p2p-match", kafka, "/var/lib/p2p".into());
        config.instance_id = "pod-3".into();
        let first = config.for_worker(0);
        assert_eq!(first.instance_id, "pod-3");
        assert_eq!(first.state_dir, std::path::PathBuf::from("/var/lib/p2p"));
        let second = config.for_worker(1);
        assert_eq!(second.instance_id, "pod-3.worker-1");
        assert_eq!(second.kafka["group.instance.id"], "pod-3.worker-1");
        // One store for all: the state directory is the runtime's.
        assert_eq!(second.state_dir, std::path::PathBuf::from("/var/lib/p2p"));
        assert!(default_workers() >= 1);
    }
}
