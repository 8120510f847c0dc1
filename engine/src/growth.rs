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
}
