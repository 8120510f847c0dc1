//! Growing the partition count (issue 25, ADR 0025): which owners' state moves from which
//! changelog partition to which when the topics go from `from` to `to` partitions, and a census
//! of a changelog's live state to plan the move with (`p2p admin grow-partitions --dry-run`).
//!
//! An owner (an org, in P2P) lives on `murmur2(owner) mod partitions`, as the Java client
//! partitions its records. Growing moves an owner from `h mod from` to `h mod to`; an owner
//! never moves between two partitions whose numbers differ modulo `gcd(from, to)`, so the
//! partitions one new partition draws from are few (one when `to` is a multiple of `from`).

use crate::kafka::{scan_topic, ReadError};
use crate::KafkaProperties;
use p2p_state::key::KEY_GROUPS;
use p2p_state::murmur2::partition_for;
use p2p_state::owner_of_raw_key;
use rdkafka::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

/// Why a partition count cannot be grown to the one asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrowthError {
    #[error(
        "the topics have {from} partitions and {to} were asked: shrinking is refused, since Kafka \
         cannot take partitions away and the records on the removed ones would be lost"
    )]
    Shrink { from: u32, to: u32 },
    #[error("the topics already have {partitions} partitions: nothing to grow")]
    Unchanged { partitions: u32 },
    #[error("{to} partitions asked: at most {KEY_GROUPS} (the key groups) are supported")]
    TooMany { to: u32 },
    #[error("the topics have no partitions (do they exist?)")]
    NoPartitions,
}

/// A growth of the partition count from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    from: u32,
    to: u32,
}

impl Growth {
    pub fn new(from: u32, to: u32) -> Result<Growth, GrowthError> {
        if from == 0 {
            return Err(GrowthError::NoPartitions);
        }
        if to > KEY_GROUPS {
            return Err(GrowthError::TooMany { to });
        }
        match to.cmp(&from) {
            std::cmp::Ordering::Less => Err(GrowthError::Shrink { from, to }),
            std::cmp::Ordering::Equal => Err(GrowthError::Unchanged { partitions: from }),
            std::cmp::Ordering::Greater => Ok(Growth { from, to }),
        }
    }

    pub fn from(self) -> u32 {
        self.from
    }

    pub fn to(self) -> u32 {
        self.to
    }

    /// Where `owner`'s state is before and after the growth, if it moves.
    pub fn move_of(self, owner: &[u8]) -> Option<(u32, u32)> {
        let before = partition_for(owner, self.from);
        let after = partition_for(owner, self.to);
        (before != after).then_some((before, after))
    }

    /// The partitions (of the old count) whose owners may land on `partition` of the new
    /// count: those congruent to it modulo `gcd(from, to)`.
    pub fn sources_of(self, partition: u32) -> Vec<u32> {
        let step = gcd(self.from, self.to);
        (0..self.from)
            .filter(|p| p % step == partition % step)
            .collect()
    }

    /// Whether every key group moves whole (both counts divide [`KEY_GROUPS`]): the state of
    /// a move is then a set of key-group prefixes; otherwise owners move one by one.
    pub fn whole_key_groups(self) -> bool {
        KEY_GROUPS.is_multiple_of(self.from) && KEY_GROUPS.is_multiple_of(self.to)
    }

    /// With [`Growth::whole_key_groups`], how many of the key groups move.
    pub fn key_groups_moving(self) -> Option<u32> {
        self.whole_key_groups().then(|| {
            (0..KEY_GROUPS)
                .filter(|g| g % self.from != g % self.to)
                .count() as u32
        })
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The live state of a changelog, partition by partition: each key's latest value's size, what
/// compaction would keep (a tombstone removes its key).
#[derive(Debug, Default)]
pub struct ChangelogCensus {
    pub topic: String,
    live: BTreeMap<i32, HashMap<Vec<u8>, usize>>,
}

impl ChangelogCensus {
    /// Reads `topic` to its end, committed records only. Holds every live key in memory: for
    /// a plan, not for the hot path.
    pub fn read(
        kafka: &KafkaProperties,
        topic: &str,
        timeout: Duration,
    ) -> Result<ChangelogCensus, ReadError> {
        let mut census = ChangelogCensus {
            topic: topic.to_owned(),
            live: BTreeMap::new(),
        };
        scan_topic(kafka, topic, timeout, |message| {
            if let Some(key) = message.key() {
                census.record(message.partition(), key, message.payload());
            }
        })?;
        Ok(census)
    }

    /// One changelog record: a value, or a tombstone when `value` is `None`.
    pub fn record(&mut self, partition: i32, key: &[u8], value: Option<&[u8]>) {
        let keys = self.live.entry(partition).or_default();
        match value {
            Some(value) => {
                keys.insert(key.to_vec(), key.len() + value.len());
            }
            None => {
                keys.remove(key);
            }
        }
    }

    /// What `growth` moves of this state.
    pub fn plan(&self, growth: Growth) -> GrowthPlan {
        let mut plan = GrowthPlan {
            topic: self.topic.clone(),
            growth,
            keys: 0,
            bytes: 0,
            misplaced_keys: 0,
            moves: BTreeMap::new(),
        };
        let mut owners: BTreeMap<(u32, u32), HashSet<&[u8]>> = BTreeMap::new();
        for (&partition, keys) in &self.live {
            for (key, &bytes) in keys {
                plan.keys += 1;
                plan.bytes += bytes as u64;
                let Some(owner) = owner_of_raw_key(key) else {
                    continue;
                };
                // Found off its owner's partition: a plan must not guess where it belongs.
                if partition_for(owner, growth.from) as i32 != partition {
                    plan.misplaced_keys += 1;
                    continue;
                }
                if let Some((from, to)) = growth.move_of(owner) {
                    let moving = plan.moves.entry((from, to)).or_insert_with(|| Move {
                        from,
                        to,
                        ..Move::default()
                    });
                    moving.keys += 1;
                    moving.bytes += bytes as u64;
                    owners.entry((from, to)).or_default().insert(owner);
                }
            }
        }
        for (pair, set) in owners {
            if let Some(moving) = plan.moves.get_mut(&pair) {
                moving.owners = set.len() as u64;
            }
        }
        plan
    }
}

/// What one changelog's state does in a growth.
#[derive(Debug, Clone)]
pub struct GrowthPlan {
    pub topic: String,
    pub growth: Growth,
    /// Live keys and their bytes (keys and values), all partitions.
    pub keys: u64,
    pub bytes: u64,
    /// Keys on a partition their owner does not hash to under the old count (none, unless
    /// something else wrote the changelog).
    pub misplaced_keys: u64,
    /// By (old partition, new partition).
    pub moves: BTreeMap<(u32, u32), Move>,
}

/// The state that moves from one partition to another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Move {
    pub from: u32,
    pub to: u32,
    /// Owners (orgs) whose state moves, their keys and bytes.
    pub owners: u64,
    pub keys: u64,
    pub bytes: u64,
}

impl GrowthPlan {
    pub fn moving_keys(&self) -> u64 {
        self.moves.values().map(|m| m.keys).sum()
    }

    pub fn moving_owners(&self) -> u64 {
        self.moves.values().map(|m| m.owners).sum()
    }

    pub fn moving_bytes(&self) -> u64 {
        self.moves.values().map(|m| m.bytes).sum()
    }
}

impl fmt::Display for GrowthPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} live keys ({}); {} keys of {} owners move ({})",
            self.topic,
            self.keys,
            mib(self.bytes),
            self.moving_keys(),
            self.moving_owners(),
            mib(self.moving_bytes())
        )?;
        for m in self.moves.values() {
            writeln!(
                f,
                "  partition {} -> {}: {} owners, {} keys, {}",
                m.from,
                m.to,
                m.owners,
                m.keys,
                mib(m.bytes)
            )?;
        }
        if self.misplaced_keys > 0 {
            writeln!(
                f,
                "  {} keys sit on a partition their owner does not hash to: they are not planned",
                self.misplaced_keys
            )?;
        }
        Ok(())
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// What a growth does to the key groups, for the plan's header.
pub fn describe(growth: Growth) -> String {
    let moving = match growth.key_groups_moving() {
        Some(groups) => format!(
            "{groups} of the {KEY_GROUPS} key groups move whole, each to the partition of the same \
             number modulo {}",
            growth.to
        ),
        None => format!(
            "{} does not divide {KEY_GROUPS}: owners move one by one, each to murmur2(owner) mod {}",
            if !KEY_GROUPS.is_multiple_of(growth.from) {
                growth.from
            } else {
                growth.to
            },
            growth.to
        ),
    };
    let sources: Vec<String> = (0..growth.to)
        .map(|q| {
            let from: Vec<String> = growth
                .sources_of(q)
                .iter()
                .filter(|&&p| p != q)
                .map(u32::to_string)
                .collect();
            if from.is_empty() {
                format!("{q}: keeps its own")
            } else {
                format!("{q}: from {}", from.join(", "))
            }
        })
        .collect();
    format!(
        "growing from {} to {} partitions: {moving}.\nnew partitions draw state from: {}",
        growth.from,
        growth.to,
        sources.join("; ")
    )
}

/// One entry of an application's growth log (ADR 0025): a compacted topic of one partition
/// that every runtime reads whole before it restores, so it knows, before it reads a single
/// state record, which partitions have moved their state out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrowthEntry {
    /// The topology's topics grow (or grew) from `from` to `to` partitions.
    Grown { from: u32, to: u32 },
    /// Old partition `partition` has moved out every key it no longer holds at `to`.
    MovedOut { partition: u32, to: u32 },
    /// New partition `partition` has what old partition `source` had for it at `to`: its
    /// changelog holds the copies from offset `copies_from` on (with none, where it ended at
    /// the move; `i64::MAX` in logs of earlier versions: nothing came).
    Arrived {
        partition: u32,
        source: u32,
        to: u32,
        copies_from: i64,
    },
    /// Input `topic`'s old partition `partition` held records up to (not including) `offset`
    /// when its topics grew to `to`: its backlog, decided where its state was, before the move.
    End {
        topic: String,
        partition: u32,
        to: u32,
        offset: i64,
    },
}

/// Why a growth log record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrowthLogError {
    #[error("growth log key {0:?} is not <kind>/<topology>/<partitions>")]
    Key(String),
    #[error(
        "growth log value of {key:?} is not the 4-byte partition count it grows to (and, for an \
         end, the 8-byte offset)"
    )]
    Value { key: String },
}

/// A growth log value with an offset: the partition count (4 bytes), then the offset (8).
fn with_offset(to: u32, offset: i64) -> Vec<u8> {
    let mut value = to.to_be_bytes().to_vec();
    value.extend_from_slice(&offset.to_be_bytes());
    value
}

impl GrowthEntry {
    /// The record's key (a compacted log keeps the newest per key) and value.
    pub fn encode(&self, topology: &str) -> (String, Vec<u8>) {
        match *self {
            GrowthEntry::End {
                ref topic,
                partition,
                to,
                offset,
            } => (
                format!("end/{topology}/{topic}/{partition}"),
                with_offset(to, offset),
            ),
            GrowthEntry::Grown { from, to } => (
                format!("grown/{topology}/{from}"),
                to.to_be_bytes().to_vec(),
            ),
            GrowthEntry::MovedOut { partition, to } => (
                format!("moved-out/{topology}/{partition}"),
                to.to_be_bytes().to_vec(),
            ),
            GrowthEntry::Arrived {
                partition,
                source,
                to,
                copies_from,
            } => (
                format!("arrived/{topology}/{partition}/{source}"),
                with_offset(to, copies_from),
            ),
        }
    }

    /// The topology and entry of a record; an error for one no runtime wrote.
    pub fn decode(key: &str, value: &[u8]) -> Result<(String, GrowthEntry), GrowthLogError> {
        let with_offset = key.starts_with("end/") || key.starts_with("arrived/");
        let (value, offset) = match (with_offset, value.len()) {
            (true, 12) => {
                let offset = <[u8; 8]>::try_from(&value[4..])
                    .map(i64::from_be_bytes)
                    .ok();
                (&value[..4], offset)
            }
            (true, _) => {
                return Err(GrowthLogError::Value {
                    key: key.to_owned(),
                })
            }
            (false, _) => (value, None),
        };
        let to = <[u8; 4]>::try_from(value)
            .map(u32::from_be_bytes)
            .map_err(|_| GrowthLogError::Value {
                key: key.to_owned(),
            })?;
        let bad = || GrowthLogError::Key(key.to_owned());
        let parts: Vec<&str> = key.split('/').collect();
        let number = |i: usize| -> Result<u32, GrowthLogError> {
            parts.get(i).and_then(|p| p.parse().ok()).ok_or_else(bad)
        };
        let entry = match (parts.first().copied(), parts.len()) {
            (Some("grown"), 3) => GrowthEntry::Grown {
                from: number(2)?,
                to,
            },
            (Some("moved-out"), 3) => GrowthEntry::MovedOut {
                partition: number(2)?,
                to,
            },
            (Some("arrived"), 4) => GrowthEntry::Arrived {
                partition: number(2)?,
                source: number(3)?,
                to,
                copies_from: offset.ok_or_else(bad)?,
            },
            (Some("end"), 4) if !parts[2].is_empty() => GrowthEntry::End {
                topic: parts[2].to_owned(),
                partition: number(3)?,
                to,
                offset: offset.ok_or_else(bad)?,
            },
            _ => return Err(bad()),
        };
        let topology = parts.get(1).filter(|t| !t.is_empty()).ok_or_else(bad)?;
        Ok(((*topology).to_owned(), entry))
    }
}

/// What a topology's growth log says, folded: its newest growth, which old partitions have
/// moved out for it and which new partitions have what each source had for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrowthState {
    growth: Option<Growth>,
    moved_out: std::collections::BTreeSet<u32>,
    /// (partition, source) -> the offset of the partition's changelog the copies start at.
    arrived: BTreeMap<(u32, u32), i64>,
    /// Each input partition's backlog end per growth (`to`, topic, partition): the smallest
    /// recorded counts (the command records them; a runtime that finds a growth done by
    /// another tool records its own).
    ends: BTreeMap<(u32, String, u32), i64>,
    /// Moves recorded for another growth than the newest (an earlier one's, or a later one's
    /// read before its growth record): kept apart until the growth they belong to is known.
    other: Vec<GrowthEntry>,
    /// Every count a recorded growth started from: a producer still partitioning by one of
    /// them sends stragglers of that growth.
    counts_before: std::collections::BTreeSet<u32>,
}

impl GrowthState {
    /// Folds in one entry, in the log's order.
    pub fn apply(&mut self, entry: GrowthEntry) {
        match entry {
            GrowthEntry::Grown { from, to } => {
                let Ok(growth) = Growth::new(from, to) else {
                    return;
                };
                self.counts_before.insert(from);
                if self.growth.is_some_and(|g| g.to >= to) {
                    return;
                }
                self.growth = Some(growth);
                self.moved_out.clear();
                self.arrived.clear();
                for earlier in std::mem::take(&mut self.other) {
                    self.apply(earlier);
                }
            }
            GrowthEntry::MovedOut { partition, to } => match self.growth {
                Some(g) if g.to == to => {
                    self.moved_out.insert(partition);
                }
                _ => self.other.push(entry),
            },
            GrowthEntry::Arrived {
                partition,
                source,
                to,
                copies_from,
            } => match self.growth {
                Some(g) if g.to == to => {
                    self.arrived.insert((partition, source), copies_from);
                }
                _ => self.other.push(entry),
            },
            GrowthEntry::End {
                topic,
                partition,
                to,
                offset,
            } => {
                let end = self.ends.entry((to, topic, partition)).or_insert(offset);
                *end = (*end).min(offset);
            }
        }
    }

    /// Whether the newest growth is still under way: some old partition has not moved out.
    pub fn unfinished(&self) -> Option<Growth> {
        self.growth
            .filter(|g| (0..g.from).any(|p| !self.moved_out(p)))
    }

    /// Where input `topic`'s old partition `partition` ended when the inputs grew to the
    /// newest growth's count, if recorded.
    pub fn end_of(&self, topic: &str, partition: u32) -> Option<i64> {
        let growth = self.growth?;
        self.ends
            .get(&(growth.to, topic.to_owned(), partition))
            .copied()
    }

    /// Whether an end is recorded for every old partition of each of `topics`.
    pub fn ends_recorded(&self, topics: &[String]) -> bool {
        self.growth.is_none_or(|g| {
            topics
                .iter()
                .all(|t| (0..g.from).all(|p| self.end_of(t, p).is_some()))
        })
    }

    /// The growth whose count is `partitions`, if that is the newest one: the one the
    /// placement rules below follow.
    fn current(&self, partitions: u32) -> Option<Growth> {
        self.growth.filter(|g| g.to == partitions)
    }

    /// The changelog partition that holds `owner`'s state now, with `partitions` partitions:
    /// its old home while that has not moved out, its new one after (and without a growth).
    pub fn state_home(&self, owner: &[u8], partitions: u32) -> u32 {
        let home = partition_for(owner, partitions);
        match self.current(partitions) {
            Some(growth) => {
                let old = partition_for(owner, growth.from);
                if old != home && !self.moved_out(old) {
                    old
                } else {
                    home
                }
            }
            None => home,
        }
    }

    /// Where the copies `source` sent to `partition` start on its changelog, once arrived.
    pub fn copies_from(&self, partition: u32, source: u32) -> Option<i64> {
        self.arrived.get(&(partition, source)).copied()
    }

    /// The new partitions old partition `partition` sends state to (itself excluded).
    pub fn targets_of(&self, partition: u32) -> Vec<u32> {
        let Some(growth) = self.growth else {
            return Vec::new();
        };
        (0..growth.to)
            .filter(|&q| q != partition && growth.sources_of(q).contains(&partition))
            .collect()
    }

    /// Where a record of `key` read at `offset` of input `topic`'s partition `partition`
    /// is decided, with `partitions` partitions now.
    pub fn route(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        key: &[u8],
        partitions: u32,
    ) -> Route {
        let home = partition_for(key, partitions);
        if let Some(growth) = self.current(partitions) {
            let old = partition_for(key, growth.from);
            // Sent by a producer still partitioning by the count before an earlier growth (a
            // long metadata refresh, two growths within it): that growth's straggler, whose
            // state has long moved on. Straight to where the state is now, never decided
            // here.
            let earlier_straggler = old != partition
                && home != partition
                && self
                    .counts_before
                    .iter()
                    .any(|&count| count != growth.from && partition_for(key, count) == partition);
            if earlier_straggler {
                return Route::Forward { to: home };
            }
            let backlog = partition < growth.from
                && !self.moved_out(partition)
                && self
                    .end_of(topic, partition)
                    .is_some_and(|end| offset < end);
            if backlog {
                // Produced before the growth: decided where its state is, under the old count.
                return if old == partition {
                    Route::Here
                } else {
                    Route::Misplaced { expected: old }
                };
            }
            if home != partition && old == partition {
                return Route::Forward { to: home };
            }
        }
        if home == partition {
            Route::Here
        } else {
            Route::Misplaced { expected: home }
        }
    }

    /// The partitions a worker owning `owned` (with `partitions` partitions now) takes records
    /// of only below an offset, and which offset per input topic: those still waiting for
    /// state from another partition take nothing (offset 0), unless they are old partitions
    /// still deciding their backlog, which they take up to its end.
    /// `held` names partitions that wait although nothing is awaited any more (restored before
    /// their state arrived, not yet again with it).
    pub fn limits(
        &self,
        owned: impl IntoIterator<Item = u32>,
        topics: &[String],
        partitions: u32,
        held: impl Fn(u32) -> bool,
    ) -> Vec<(String, u32, i64)> {
        let Some(growth) = self.current(partitions) else {
            return Vec::new();
        };
        let mut limits = Vec::new();
        for partition in owned {
            if self.awaiting(partition).is_empty() && !held(partition) {
                continue;
            }
            let draining = partition < growth.from && !self.moved_out(partition);
            for topic in topics {
                let limit = if draining {
                    self.end_of(topic, partition).unwrap_or(0)
                } else {
                    0
                };
                limits.push((topic.clone(), partition, limit));
            }
        }
        limits
    }

    /// Whether `partition` is an old partition that still has to move its state out (after
    /// deciding its backlog), with `partitions` partitions now.
    pub fn to_move_out(&self, partition: u32, partitions: u32) -> bool {
        self.current(partitions)
            .is_some_and(|g| partition < g.from && !self.moved_out(partition))
    }

    /// The owners whose state arrives on `partition` from another one in the newest growth.
    pub fn arrives_on(&self, owner: &[u8], partition: u32) -> bool {
        self.growth.is_some_and(|g| {
            partition_for(owner, g.to) == partition && partition_for(owner, g.from) != partition
        })
    }

    pub fn growth(&self) -> Option<Growth> {
        self.growth
    }

    /// Whether old partition `partition` has moved its state out for the newest growth.
    pub fn moved_out(&self, partition: u32) -> bool {
        self.moved_out.contains(&partition)
    }

    /// The sources whose state new partition `partition` still waits for (none once all
    /// have arrived, or with no growth).
    pub fn awaiting(&self, partition: u32) -> Vec<u32> {
        let Some(growth) = self.growth else {
            return Vec::new();
        };
        growth
            .sources_of(partition)
            .into_iter()
            .filter(|&source| {
                source != partition && !self.arrived.contains_key(&(partition, source))
            })
            .collect()
    }

    /// Whether a changelog record of `owner` read on `partition` is the owner's state, with
    /// `partitions` partitions now: only from where its state is (`state_home`), its old
    /// home until that has moved out, its new one after. A stale copy or a tombstone on a
    /// partition the owner left never counts, whatever order partitions are restored in; nor
    /// does what its new home kept of it from an older growth (its values then, and the
    /// tombstones of that move: read while the state is still at the old home, they would
    /// delete, in a store the workers share, the keys the old home's worker decides on).
    pub fn applies(&self, owner: &[u8], partition: u32, partitions: u32) -> bool {
        partition == self.state_home(owner, partitions)
    }
}

/// Where a record is decided during (or after) a growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// On the partition it was read from.
    Here,
    /// A straggler: produced to its org's old partition after the state moved, it goes on to
    /// its new one, in the batch's transaction.
    Forward { to: u32 },
    /// Its producer partitions differently: dead-lettered as `wrong-partition`.
    Misplaced { expected: u32 },
}

/// Why a growth log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GrowthLogIoError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating the growth log: {0}")]
    Create(#[from] crate::changelog::ChangelogError),
    #[error("growth log {topic}: {source}")]
    Entry {
        topic: String,
        source: GrowthLogError,
    },
}

/// What `topic` (a growth log; none there reads as no growth) says of `topology`.
pub fn read_log(
    kafka: &KafkaProperties,
    topic: &str,
    topology: &str,
    timeout: Duration,
) -> Result<GrowthState, GrowthLogIoError> {
    let mut state = GrowthState::default();
    let mut refused = None;
    scan_topic(kafka, topic, timeout, |message| {
        let (Some(key), Some(value)) = (message.key(), message.payload()) else {
            return;
        };
        match GrowthEntry::decode(&String::from_utf8_lossy(key), value) {
            Ok((of, entry)) if of == topology => state.apply(entry),
            Ok(_) => {}
            Err(error) => {
                refused.get_or_insert(error);
            }
        }
    })?;
    match refused {
        Some(source) => Err(GrowthLogIoError::Entry {
            topic: topic.to_owned(),
            source,
        }),
        None => Ok(state),
    }
}

/// Creates the growth log `topic` (compacted, one partition) unless it exists.
pub async fn ensure_log(
    kafka: &KafkaProperties,
    topic: &str,
    replication: i32,
) -> Result<(), GrowthLogIoError> {
    crate::changelog::ensure_topic(kafka, topic, 1, replication).await?;
    Ok(())
}

/// Appends `entries` of `topology` to the growth log `topic`, each acknowledged by every
/// in-sync replica before this returns. (The runtime's moves write theirs in the move's
/// transaction instead.)
pub fn append_log(
    kafka: &KafkaProperties,
    topic: &str,
    topology: &str,
    entries: &[GrowthEntry],
) -> Result<(), GrowthLogIoError> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = crate::kafka::producer_config(kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    for entry in entries {
        let (key, value) = entry.encode(topology);
        producer
            .send(BaseRecord::to(topic).key(&key).payload(&value).partition(0))
            .map_err(|(error, _)| error)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

impl fmt::Display for GrowthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(growth) = self.growth else {
            return write!(f, "no growth recorded");
        };
        let moved: Vec<String> = self.moved_out.iter().map(u32::to_string).collect();
        let waiting: Vec<String> = (0..growth.to)
            .filter_map(|q| {
                let sources = self.awaiting(q);
                (!sources.is_empty()).then(|| {
                    let sources: Vec<String> = sources.iter().map(u32::to_string).collect();
                    format!("{q} (from {})", sources.join(", "))
                })
            })
            .collect();
        write!(
            f,
            "growth {} -> {} recorded; moved out: {}; waiting for state: {}",
            growth.from,
            growth.to,
            if moved.is_empty() {
                "none".to_owned()
            } else {
                moved.join(", ")
            },
            if waiting.is_empty() {
                "none".to_owned()
            } else {
                waiting.join("; ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_processors::OrgId;
    use p2p_state::StateKey;

    #[test]
    fn shrinking_or_keeping_the_count_is_refused_with_its_reason() {
        assert_eq!(
            Growth::new(8, 4),
            Err(GrowthError::Shrink { from: 8, to: 4 })
        );
        assert_eq!(
            Growth::new(8, 8),
            Err(GrowthError::Unchanged { partitions: 8 })
        );
        assert_eq!(Growth::new(0, 4), Err(GrowthError::NoPartitions));
        assert_eq!(Growth::new(4, 2048), Err(GrowthError::TooMany { to: 2048 }));
        assert!(Growth::new(8, 12).is_ok());
    }

    #[test]
    fn an_owner_moves_only_between_partitions_a_growth_says_it_may() {
        for (from, to) in [(4, 8), (8, 12), (3, 5), (4, 6), (1, 7)] {
            let growth = Growth::new(from, to).unwrap();
            for n in 0..2_000u128 {
                let org = OrgId::from_u128(n * 104_729);
                let owner = org.as_str().as_bytes();
                let before = partition_for(owner, from);
                let after = partition_for(owner, to);
                assert_eq!(
                    growth.move_of(owner),
                    (before != after).then_some((before, after))
                );
                assert!(
                    growth.sources_of(after).contains(&before),
                    "{from} -> {to}: an owner of {before} lands on {after}, not among its sources"
                );
            }
        }
    }

    #[test]
    fn growing_by_a_multiple_draws_each_new_partition_from_one_old_one() {
        let growth = Growth::new(4, 8).unwrap();
        for q in 0..8 {
            assert_eq!(growth.sources_of(q), vec![q % 4]);
        }
        assert_eq!(growth.key_groups_moving(), Some(512));
        // 8 -> 12: gcd 4, each new partition from two old ones; 12 does not divide 1024.
        let growth = Growth::new(8, 12).unwrap();
        assert_eq!(growth.sources_of(3), vec![3, 7]);
        assert_eq!(growth.key_groups_moving(), None);
    }

    #[test]
    fn a_census_plans_what_compaction_keeps_and_moves_whole_orgs() {
        let growth = Growth::new(4, 8).unwrap();
        let orgs: Vec<OrgId> = (0..200u128).map(|n| OrgId::from_u128(n * 7_919)).collect();
        let mut census = ChangelogCensus::default();
        for org in &orgs {
            let partition = partition_for(org.as_str().as_bytes(), 4) as i32;
            for entity in ["po_1", "po_2"] {
                let key = StateKey::new(org, entity);
                census.record(partition, key.as_bytes(), Some(b"state v1"));
            }
            // po_2 is deleted later: its tombstone leaves nothing to move.
            census.record(partition, StateKey::new(org, "po_2").as_bytes(), None);
        }
        let plan = census.plan(growth);
        let moving: Vec<&OrgId> = orgs
            .iter()
            .filter(|o| growth.move_of(o.as_str().as_bytes()).is_some())
            .collect();
        assert!(!moving.is_empty() && moving.len() < orgs.len());
        assert_eq!(plan.keys, 200);
        assert_eq!(plan.moving_keys(), moving.len() as u64);
        assert_eq!(plan.moving_owners(), moving.len() as u64);
        for m in plan.moves.values() {
            assert_eq!(m.to % 4, m.from, "4 -> 8 moves p to p + 4 only");
        }
        assert_eq!(plan.misplaced_keys, 0);
    }

    #[test]
    fn keys_off_their_partition_are_counted_not_planned() {
        let org = OrgId::from_u128(11);
        let right = partition_for(org.as_str().as_bytes(), 4) as i32;
        let mut census = ChangelogCensus::default();
        census.record(
            (right + 1) % 4,
            StateKey::new(&org, "x").as_bytes(),
            Some(b"v"),
        );
        let plan = census.plan(Growth::new(4, 8).unwrap());
        assert_eq!(plan.misplaced_keys, 1);
        assert!(plan.moves.is_empty());
    }

    #[test]
    fn growth_log_entries_read_back_as_written_and_foreign_ones_are_refused() {
        for entry in [
            GrowthEntry::Grown { from: 8, to: 12 },
            GrowthEntry::MovedOut {
                partition: 7,
                to: 12,
            },
            GrowthEntry::Arrived {
                partition: 3,
                source: 7,
                to: 12,
                copies_from: 0,
            },
        ] {
            let (key, value) = entry.encode("match");
            assert_eq!(
                GrowthEntry::decode(&key, &value),
                Ok(("match".to_owned(), entry))
            );
        }
        assert!(matches!(
            GrowthEntry::decode("grown/match/8", b"12"),
            Err(GrowthLogError::Value { .. })
        ));
        assert!(matches!(
            GrowthEntry::decode("shrunk/match/8", &4u32.to_be_bytes()),
            Err(GrowthLogError::Key(_))
        ));
    }

    /// 8 -> 12: partitions 3 and 7 each send keys to the other. Whatever order their
    /// changelogs are read in, an owner's state counts from its old home until that moved
    /// out, then from its new home only.
    #[test]
    fn a_moved_owners_state_counts_from_one_home_at_a_time() {
        let mut state = GrowthState::default();
        state.apply(GrowthEntry::Grown { from: 8, to: 12 });
        let crossing = |from: u32, to: u32| {
            (0..100_000u128)
                .map(|n| OrgId::from_u128(n).as_str().to_owned())
                .find(|o| {
                    partition_for(o.as_bytes(), 8) == from && partition_for(o.as_bytes(), 12) == to
                })
                .expect("such an org exists")
        };
        let (seven_to_three, three_to_seven) = (crossing(7, 3), crossing(3, 7));
        for (owner, old, new) in [(&seven_to_three, 7, 3), (&three_to_seven, 3, 7)] {
            assert!(state.applies(owner.as_bytes(), old, 12), "before the move");
            assert!(
                !state.applies(owner.as_bytes(), new, 12),
                "what the new home holds of it is from an older growth"
            );
            assert!(!state.applies(owner.as_bytes(), 0, 12));
        }
        assert_eq!(state.awaiting(3), vec![7]);
        state.apply(GrowthEntry::MovedOut {
            partition: 7,
            to: 12,
        });
        state.apply(GrowthEntry::Arrived {
            partition: 3,
            source: 7,
            to: 12,
            copies_from: 0,
        });
        assert!(
            !state.applies(seven_to_three.as_bytes(), 7, 12),
            "moved out"
        );
        assert!(state.applies(seven_to_three.as_bytes(), 3, 12));
        assert!(
            state.applies(three_to_seven.as_bytes(), 3, 12),
            "3 has not moved"
        );
        assert!(state.awaiting(3).is_empty());
        assert_eq!(state.awaiting(11), vec![3, 7]);
        // Without a growth (or after one, under its count), only the home counts.
        assert!(!GrowthState::default().applies(seven_to_three.as_bytes(), 7, 12));
    }

    /// An org that moves from 1 to 5 when 4 partitions grow to 8, and one that stays on 1.
    fn mover_and_stayer() -> (String, String) {
        let find = |moves: bool| {
            (0..100_000u128)
                .map(|n| OrgId::from_u128(n).as_str().to_owned())
                .find(|o| {
                    partition_for(o.as_bytes(), 4) == 1
                        && (partition_for(o.as_bytes(), 8) == 5) == moves
                })
                .expect("such an org exists")
        };
        (find(true), find(false))
    }

    fn grown_4_to_8() -> GrowthState {
        let mut state = GrowthState::default();
        grow(&mut state, 4, 8, 100);
        state
    }

    /// Records a growth from `from` to `to` with every input's end at `end`.
    fn grow(state: &mut GrowthState, from: u32, to: u32, end: i64) {
        state.apply(GrowthEntry::Grown { from, to });
        for partition in 0..from {
            state.apply(GrowthEntry::End {
                topic: "invoices".into(),
                partition,
                to,
                offset: end,
            });
        }
    }

    #[test]
    fn a_straggler_of_the_growth_before_the_last_goes_on_to_where_its_state_is_now() {
        // An org on 1 under 4, on 5 under 8, elsewhere under 12 (not 1, not 5).
        let org = (0..10_000)
            .map(|i| format!("org-{i}"))
            .find(|o| {
                let o = o.as_bytes();
                partition_for(o, 4) == 1
                    && partition_for(o, 8) == 5
                    && ![1, 5].contains(&partition_for(o, 12))
            })
            .expect("such an org exists");
        let home = partition_for(org.as_bytes(), 12);
        let mut state = grown_4_to_8();
        grow(&mut state, 8, 12, 200);
        let route = |partition: u32, offset: i64| {
            state.route("invoices", partition, offset, org.as_bytes(), 12)
        };
        // An ERP still partitioning by 4 sends it to 1, before and after the last growth's
        // end there: forwarded to where the state is going (it waits there for it).
        assert_eq!(route(1, 150), Route::Forward { to: home });
        assert_eq!(route(1, 250), Route::Forward { to: home });
        // By 8, to 5: the last growth's straggler or backlog, as before.
        assert_eq!(route(5, 250), Route::Forward { to: home });
        assert_eq!(route(5, 150), Route::Here);
        // On a partition no count ever sent it to: misplaced.
        let never = (0..12)
            .find(|p| ![1, 5, home].contains(p))
            .expect("another partition");
        assert!(matches!(route(never, 250), Route::Misplaced { .. }));
    }

    #[test]
    fn the_backlog_is_decided_where_the_state_is_and_later_stragglers_go_on_to_the_new_partition() {
        let (mover, stayer) = mover_and_stayer();
        let mut state = grown_4_to_8();
        let route = |state: &GrowthState, org: &str, partition: u32, offset: i64| {
            state.route("invoices", partition, offset, org.as_bytes(), 8)
        };
        // Produced before the growth (below the end recorded): decided on 1, where the state is.
        assert_eq!(route(&state, &mover, 1, 99), Route::Here);
        assert_eq!(state.state_home(mover.as_bytes(), 8), 1);
        // Produced after, by a producer that had not learnt the new count yet: a straggler.
        assert_eq!(route(&state, &mover, 1, 100), Route::Forward { to: 5 });
        assert_eq!(route(&state, &stayer, 1, 100), Route::Here);
        // On its new partition, it is at home; on any other, misplaced.
        assert_eq!(route(&state, &mover, 5, 0), Route::Here);
        assert_eq!(
            route(&state, &mover, 2, 100),
            Route::Misplaced { expected: 5 }
        );
        // A backlog record on a partition its key never hashed to is misplaced under the
        // old count.
        assert_eq!(
            route(&state, &mover, 0, 5),
            Route::Misplaced { expected: 1 }
        );
        // 1 waits for nothing (it keeps its own) and takes all; 5 takes nothing yet.
        let topics = vec!["invoices".to_owned()];
        assert_eq!(
            state.limits([1, 5], &topics, 8, |_| false),
            vec![("invoices".to_owned(), 5, 0)]
        );
        assert!(state.to_move_out(1, 8));
        state.apply(GrowthEntry::MovedOut {
            partition: 1,
            to: 8,
        });
        for target in state.targets_of(1) {
            state.apply(GrowthEntry::Arrived {
                partition: target,
                source: 1,
                to: 8,
                copies_from: 0,
            });
        }
        assert_eq!(state.targets_of(1), vec![5]);
        // Moved out: even the backlog goes on now, and the state is on 5.
        assert_eq!(route(&state, &mover, 1, 99), Route::Forward { to: 5 });
        assert_eq!(state.state_home(mover.as_bytes(), 8), 5);
        assert_eq!(state.state_home(stayer.as_bytes(), 8), 1);
        assert!(state.limits([1, 5], &topics, 8, |_| false).is_empty());
        assert!(!state.to_move_out(1, 8));
        assert!(state.arrives_on(mover.as_bytes(), 5));
        assert!(!state.arrives_on(stayer.as_bytes(), 1));
        // Under another count than the growth's, only the home counts.
        assert_eq!(
            state.route("invoices", 1, 0, mover.as_bytes(), 4),
            Route::Here
        );
    }

    #[test]
    fn an_old_partition_waiting_for_state_still_takes_its_backlog() {
        // 8 -> 12: 3 draws from 7 (and 7 from 3). Each takes its backlog before the other's
        // state arrives, or each would wait for the other forever.
        let mut state = GrowthState::default();
        state.apply(GrowthEntry::Grown { from: 8, to: 12 });
        for partition in [3, 7] {
            state.apply(GrowthEntry::End {
                topic: "invoices".into(),
                partition,
                to: 12,
                offset: 40,
            });
        }
        let topics = vec!["invoices".to_owned()];
        assert_eq!(
            state.limits([3, 7, 11], &topics, 12, |_| false),
            vec![
                ("invoices".to_owned(), 3, 40),
                ("invoices".to_owned(), 7, 40),
                ("invoices".to_owned(), 11, 0)
            ]
        );
        assert_eq!(state.unfinished(), Some(Growth::new(8, 12).unwrap()));
        for p in 0..8 {
            state.apply(GrowthEntry::MovedOut {
                partition: p,
                to: 12,
            });
        }
        assert_eq!(state.unfinished(), None);
    }

    #[test]
    fn the_smallest_end_recorded_counts_and_ends_read_back_as_written() {
        let mut state = grown_4_to_8();
        state.apply(GrowthEntry::End {
            topic: "invoices".into(),
            partition: 1,
            to: 8,
            offset: 250,
        });
        assert_eq!(state.end_of("invoices", 1), Some(100));
        assert!(state.ends_recorded(&["invoices".to_owned()]));
        assert!(!state.ends_recorded(&["receipts".to_owned()]));
        let entry = GrowthEntry::End {
            topic: "p2p.invoices.v1".into(),
            partition: 3,
            to: 8,
            offset: 1 << 40,
        };
        let (key, value) = entry.encode("match");
        assert_eq!(
            GrowthEntry::decode(&key, &value),
            Ok(("match".to_owned(), entry))
        );
        assert!(matches!(
            GrowthEntry::decode(&key, &8u32.to_be_bytes()),
            Err(GrowthLogError::Value { .. })
        ));
    }

    #[test]
    fn moves_read_before_their_growth_count_once_it_is_known() {
        let mut state = GrowthState::default();
        state.apply(GrowthEntry::MovedOut {
            partition: 1,
            to: 8,
        });
        assert!(!state.moved_out(1));
        state.apply(GrowthEntry::Grown { from: 4, to: 8 });
        assert!(state.moved_out(1));
        // An older growth's record changes nothing.
        state.apply(GrowthEntry::Grown { from: 2, to: 4 });
        assert_eq!(state.growth(), Some(Growth::new(4, 8).unwrap()));
    }
}
