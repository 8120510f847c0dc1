//! How a worker goes through a growth of its partition count (ADR 0025), exactly once: it
//! takes the new count up, decides each old partition's backlog where its state is, moves
//! that partition's leaving state out in one transaction, holds a partition's records until
//! the state it draws from others has arrived, and forwards stragglers. The rules are
//! `crate::growth`'s (pure); this is their I/O.

use super::*;
use crate::growth::{self, GrowthEntry, GrowthState, Route};
use p2p_state::owner_of_raw_key;

/// How often a worker holding partitions until their state arrives reads the growth log.
pub(super) const GROWTH_LOG_LOOK: Duration = Duration::from_secs(1);

impl<T: Topology> Worker<T> {
    pub(super) fn growth(&self) -> std::sync::RwLockReadGuard<'_, GrowthState> {
        self.growth.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the growth log (tiny: a few records a partition per growth) again.
    pub(super) fn load_growth(&self) -> Result<(), RuntimeError> {
        let state = growth::read_log(
            &self.config.kafka,
            &self.config.growth_log_topic(),
            self.topology.name(),
            Duration::from_secs(30),
        )?;
        *self.growth.write().unwrap_or_else(|e| e.into_inner()) = state;
        Ok(())
    }

    fn apply_growth(&self, entries: &[GrowthEntry]) {
        let mut state = self.growth.write().unwrap_or_else(|e| e.into_inner());
        for entry in entries {
            state.apply(entry.clone());
        }
    }

    /// Takes up the inputs' growth from `from` to `to` partitions: recorded in the growth log
    /// with the inputs' backlog ends (unless `p2p admin grow-partitions` recorded it: another
    /// tool grew them), and the changelog grown to `to`.
    pub(super) async fn adopt_growth(
        &self,
        changelog: &str,
        from: i32,
        to: i32,
    ) -> Result<(), RuntimeError> {
        let log = self.config.growth_log_topic();
        growth::ensure_log(&self.config.kafka, &log, self.config.changelog_replication).await?;
        blocking(|| self.load_growth())?;
        let inputs = self.topology.input_topics();
        let mut entries = Vec::new();
        let recorded = self.growth().growth();
        let from = match recorded {
            Some(g) if g.to() == to as u32 => g.from(),
            _ => {
                if let Some(under_way) = self.growth().unfinished() {
                    return Err(RuntimeError::GrowthUnderWay {
                        from: under_way.from(),
                        to: under_way.to(),
                        now: to,
                    });
                }
                entries.push(GrowthEntry::Grown {
                    from: from as u32,
                    to: to as u32,
                });
                from as u32
            }
        };
        if !entries.is_empty() || !self.growth().ends_recorded(&inputs) {
            for topic in &inputs {
                for partition in 0..from {
                    let (_, high) = blocking(|| {
                        self.consumer.fetch_watermarks(
                            topic,
                            partition as i32,
                            Duration::from_secs(10),
                        )
                    })
                    .map_err(|source| RuntimeError::Client {
                        client: "consumer",
                        source,
                    })?;
                    entries.push(GrowthEntry::End {
                        topic: topic.clone(),
                        partition,
                        to: to as u32,
                        offset: high,
                    });
                }
            }
        }
        if !entries.is_empty() {
            let name = self.topology.name();
            blocking(|| growth::append_log(&self.config.kafka, &log, name, &entries))?;
        }
        changelog::grow_topic(&self.config.kafka, changelog, to).await?;
        blocking(|| self.load_growth())?;
        // Every topic it writes grew too (the outputs before the inputs): all of them.
        self.learn_partitions(None);
        tracing::info!(
            topology = self.topology.name(),
            from,
            to,
            recorded_here = !entries.is_empty(),
            "the input topics grew: taking the new partition count up (ADR 0025)"
        );
        Ok(())
    }

    /// Has the producer learn `topics`' partition counts now: its metadata cache would know
    /// the new partitions only at its next refresh, and refuse to write to them until then
    /// (`UnknownPartition`). A metadata answer updates the cache of the client that asked.
    pub(super) fn learn_partitions(&self, topic: Option<&str>) {
        if let Err(error) = blocking(|| {
            self.producer
                .client()
                .fetch_metadata(topic, Duration::from_secs(10))
        }) {
            tracing::warn!(%error, ?topic, "the producer could not learn the partition counts; it will at its next refresh");
        }
    }

    /// Where each record of `batch` is decided: `None` for one another processor's (a
    /// replayed dead letter only others refused, a straggler another forwarded), passed over;
    /// else here, forwarded to its org's new partition, or nowhere (its producer partitions
    /// differently). Once a batch, under one look at the growth.
    pub(super) fn routes(&self, batch: &[InputRecord]) -> Vec<Option<Route>> {
        let name = self.topology.name();
        let growth = self.growth();
        batch
            .iter()
            .map(|record| crate::dlq::meant_for(record, name).then(|| self.route(&growth, record)))
            .collect()
    }

    fn route(&self, growth: &GrowthState, record: &InputRecord) -> Route {
        let (Some(key), Some(&partitions)) = (
            record.key.as_deref(),
            self.input_partitions.get(&record.topic),
        ) else {
            // A record without a key is left to the topology, which refuses it.
            return Route::Here;
        };
        if partitions <= 0 {
            return Route::Here;
        }
        growth.route(
            &record.topic,
            record.partition as u32,
            record.offset,
            key,
            partitions as u32,
        )
    }

    /// The changelog partition a state change of `key` goes to: its owner's state home.
    pub(super) fn state_partition(
        &self,
        key: &[u8],
        partitions: i32,
    ) -> Result<i32, ChangelogError> {
        let owner = owner_of_raw_key(key).ok_or(ChangelogError::KeyWithoutOwner)?;
        Ok(self.growth().state_home(owner, partitions.max(1) as u32) as i32)
    }

    /// The partitions of `restored` that take every record: not waiting for state, and
    /// restored with what arrived.
    pub(super) fn ready(&self, restored: &HashSet<i32>) -> HashSet<i32> {
        if !self.growing() {
            return restored.clone();
        }
        let growth = self.growth();
        let to_take = self.arrivals_to_take();
        restored
            .iter()
            .copied()
            .filter(|p| growth.awaiting(*p as u32).is_empty() && !to_take.contains(p))
            .collect()
    }

    /// The partitions restored while they waited for state to arrive, not restored again
    /// with it since.
    pub(super) fn arrivals_to_take(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.arrivals_to_take
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the newest growth recorded is to the count the worker runs under.
    pub(super) fn growing(&self) -> bool {
        let partitions = self.served_partitions() as u32;
        self.growth().growth().is_some_and(|g| g.to() == partitions)
    }

    /// How the store's records are read back: those of each owner from where its state is
    /// (`GrowthState::applies`: during a growth, its old home until that has moved out; else
    /// its home under the count the worker runs under). Always so, not only during a growth:
    /// an old partition's changelog keeps the tombstones of the moves out of it, past any
    /// checkpoint (a move writes no checkpoint), and a restore that read them all while a
    /// newer growth was recorded but not yet taken up deleted, in the store the workers share,
    /// the state of orgs that had moved (the bench's grow phase lost four payment keys so,
    /// and four invoices were never paid). Without any growth every key is on its home.
    pub(super) fn restore_partitions(
        &self,
        topic: &str,
        partitions: &[i32],
        timeout: Duration,
        progress: &mut dyn FnMut(u64, i64) -> bool,
    ) -> Result<BTreeMap<i32, u64>, ChangelogError> {
        let state = self.growth().clone();
        let count = self.served_partitions() as u32;
        let applies = move |partition: i32, key: &[u8]| {
            owner_of_raw_key(key).is_none_or(|owner| state.applies(owner, partition as u32, count))
        };
        changelog::restore(
            &self.config.kafka,
            &self.store,
            topic,
            partitions,
            timeout,
            &changelog::Reading {
                applies: &applies,
                checkpoints: true,
            },
            progress,
        )
    }

    /// Before partition `partition` is restored with the state that arrived on it, once per
    /// source and growth (a note in the store): whatever this store holds of the owners that
    /// arrived from that source is dropped (it may be what it restored from their old
    /// partition long ago, before deletes there), and the partition's checkpoint goes back to
    /// where the copies start, so that the restore reads them all, whatever an earlier restore
    /// of the partition (one that met them half written, say) applied. Reading a stretch of
    /// the changelog again from before the checkpoint leaves every other key as it was.
    pub(super) fn take_arrivals(&self, topic: &str, partition: i32) -> Result<(), StateError> {
        if !self.growing() {
            return Ok(());
        }
        let state = self.growth().clone();
        let Some(growth) = state.growth() else {
            return Ok(());
        };
        let q = partition as u32;
        for source in growth.sources_of(q) {
            let Some(copies_from) = state.copies_from(q, source).filter(|_| source != q) else {
                continue;
            };
            let note = arrival_note(topic, growth.to(), q, source);
            if self.store.noted(&note)? {
                continue;
            }
            let kept = self.store.entries_of(&|owner| {
                partition_for(owner, growth.to()) == q
                    && partition_for(owner, growth.from()) == source
            })?;
            let mut batch = p2p_state::StoreBatch::default();
            for (key, _) in &kept {
                batch.restore(key, None);
            }
            if let Some(checkpoint) = self.store.checkpointed(topic, partition)? {
                batch.checkpoint(topic, partition, checkpoint.min(copies_from));
            }
            batch.note(&note);
            self.store.write(batch)?;
            tracing::info!(
                topology = self.topology.name(),
                partition,
                source,
                stale_keys_dropped = kept.len(),
                copies_from,
                "taking the state that arrived from an old partition"
            );
        }
        Ok(())
    }

    /// The offsets below which each owned partition's records are taken (none past them):
    /// partitions waiting for state take nothing, or only their backlog, and partitions of
    /// numbers past the count the worker runs under (inputs grown before the others) nothing.
    pub(super) fn limits(
        &self,
        owned: &Owned,
        restored: &HashSet<i32>,
        topics: &[String],
    ) -> Vec<(String, i32, i64)> {
        let partitions = self.served_partitions();
        // Restored before its state arrived: held as if it still waited.
        let held = self.arrivals_to_take().clone();
        let mut limits: Vec<(String, i32, i64)> = self
            .growth()
            .limits(
                restored.iter().map(|p| *p as u32),
                topics,
                partitions as u32,
                |p| held.contains(&(p as i32)),
            )
            .into_iter()
            .map(|(topic, partition, limit)| (topic, partition as i32, limit))
            .collect();
        for number in owned.partition_numbers() {
            if number >= partitions {
                limits.extend(topics.iter().map(|t| (t.clone(), number, 0)));
            }
        }
        limits
    }

    /// Whether old partition `partition` has decided its backlog: every input's next record
    /// to decide is at or past the end recorded for it.
    pub(super) fn backlog_decided(
        &self,
        partition: i32,
        topics: &[String],
        aligner: &Aligner,
        owned: &Owned,
        positions: &TopicPartitionList,
    ) -> bool {
        let growth = self.growth();
        topics.iter().all(|topic| {
            let end = growth.end_of(topic, partition as u32).unwrap_or(0);
            if end <= 0 {
                return true;
            }
            if let Some(next) = aligner.front_offset(topic, partition) {
                return next >= end;
            }
            // Nothing buffered: what was handed out is decided, up to the position (which
            // moves past transaction markers) or, before any fetch, the committed offset.
            let position =
                positions
                    .find_partition(topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            position
                .max(owned.starts.get(&(topic.clone(), partition)).copied())
                .is_some_and(|next| next >= end)
        })
    }

    /// Moves the state of the owners leaving old partition `partition` to their new
    /// partitions: a copy of each key there and a tombstone here, with the log's `moved out`
    /// and `arrived` entries, in one transaction. The store keeps its copy (the same keys and
    /// values): it serves them no more unless it owns their new partition. How many keys moved.
    pub(super) async fn move_out(&self, partition: i32) -> Result<u64, Uncommitted> {
        let Some((topic, _)) = self.changelog.clone() else {
            return Ok(0);
        };
        let Some(growth) = self.growth().growth() else {
            return Ok(0);
        };
        let (from, to, p) = (growth.from(), growth.to(), partition as u32);
        let entries = blocking(|| {
            self.store.entries_of(&|owner| {
                partition_for(owner, from) == p && partition_for(owner, to) != p
            })
        })
        .map_err(|e| Uncommitted::Fatal(e.into()))?;
        let name = self.topology.name();
        let targets = self.growth().targets_of(p);
        let log = self.config.growth_log_topic();
        self.learn_partitions(Some(&topic));
        // Where each target's changelog ends before the move: a target no copy goes to has its
        // arrival start there, so that a store taking the arrival reads again everything
        // written to the target after the move (a target waits for its arrivals, so nothing
        // is written to it meanwhile). Left open (`i64::MAX`), a store that dropped the
        // arriving owners' keys kept its checkpoint and lost what was decided on them since.
        let ends = blocking(|| {
            targets
                .iter()
                .map(|&q| {
                    self.consumer
                        .fetch_watermarks(&topic, q as i32, Duration::from_secs(10))
                        .map(|(_, high)| (q, high))
                })
                .collect::<Result<BTreeMap<u32, i64>, KafkaError>>()
        })
        .map_err(|error| {
            Uncommitted::Aborted(format!(
                "the end of the changelog partitions the move of {partition} goes to: {error}"
            ))
        })?;
        let producer = &self.producer;
        producer.begin_transaction().map_err(transaction_failed)?;
        let sent = async {
            let mut records = Vec::with_capacity(entries.len() * 2);
            for (key, value) in &entries {
                let owner = owner_of_raw_key(key)
                    .ok_or(TransactionStep::Changelog(ChangelogError::KeyWithoutOwner))?;
                let q = partition_for(owner, to) as i32;
                records.push(
                    FutureRecord::to(&topic)
                        .partition(q)
                        .key(key)
                        .payload(value),
                );
                records.push(FutureRecord::to(&topic).partition(partition).key(key));
            }
            let delivered = produce_in_order(producer, records).await?;
            // Where each target's copies start: its arrival entry says so.
            let mut copies_from: BTreeMap<u32, i64> = BTreeMap::new();
            for (q, offset) in delivered.iter().step_by(2) {
                let start = copies_from.entry(*q as u32).or_insert(*offset);
                *start = (*start).min(*offset);
            }
            let mut log_entries = vec![GrowthEntry::MovedOut { partition: p, to }];
            log_entries.extend(targets.iter().map(|&q| {
                GrowthEntry::Arrived {
                    partition: q,
                    source: p,
                    to,
                    copies_from: copies_from
                        .get(&q)
                        .copied()
                        .unwrap_or_else(|| ends.get(&q).copied().unwrap_or(0)),
                }
            }));
            let encoded: Vec<(Vec<u8>, Vec<u8>)> = log_entries
                .iter()
                .map(|e| {
                    let (key, value) = e.encode(name);
                    (key.into_bytes(), value)
                })
                .collect();
            let records = encoded
                .iter()
                .map(|(key, value)| FutureRecord::to(&log).partition(0).key(key).payload(value))
                .collect();
            produce_in_order(producer, records).await?;
            // The partition's committed offsets, committed again with the group's metadata:
            // a member that lost the partition meanwhile (a zombie) is fenced, and its move
            // aborts, as a batch of its would.
            let offsets = blocking(|| self.committed_of(partition))?;
            self.send_offsets_and_commit(producer, offsets).await?;
            Ok::<_, TransactionStep>(log_entries)
        }
        .await;
        let log_entries = match sent {
            Ok(log_entries) => log_entries,
            Err(error) => return Err(self.settle_failed(error).await),
        };
        self.apply_growth(&log_entries);
        // This store holds what it sent, as it sent it: it has taken the arrivals itself. A
        // restore of a target here must not drop the arriving owners' keys as stale (they may
        // have been decided on since). Lost in a crash before the write, the note is only an
        // economy: taking the arrival reads the copies and what followed them again.
        let mut notes = p2p_state::StoreBatch::default();
        for &q in &targets {
            notes.note(&arrival_note(&topic, to, q, p));
        }
        if let Err(error) = blocking(|| self.store.write(notes)) {
            tracing::warn!(%error, partition, "could not note the arrivals this move made in the store; a restore of their partitions reads them again");
        }
        tracing::info!(
            topology = name,
            partition,
            keys = entries.len(),
            to,
            "moved the state of the owners leaving this partition to their new partitions"
        );
        self.stats.add(&StatsSnapshot {
            counts: [("state keys moved to new partitions", entries.len() as u64)].into(),
            ..StatsSnapshot::default()
        });
        Ok(entries.len() as u64)
    }
}

/// The store's note that it has taken what old partition `source` moved to `partition` of
/// changelog `topic` for the growth to `to`.
fn arrival_note(topic: &str, to: u32, partition: u32, source: u32) -> String {
    format!("arrived/{topic}/{to}/{partition}/{source}")
}

impl<T: Topology> Worker<T> {
    /// The committed offsets of partition `partition` of every input topic (those with one).
    fn committed_of(&self, partition: i32) -> Result<TopicPartitionList, KafkaError> {
        let mut asked = TopicPartitionList::new();
        for topic in self.topology.input_topics() {
            asked.add_partition(&topic, partition);
        }
        let committed = self
            .consumer
            .committed_offsets(asked, Timeout::After(TRANSACTION_TIMEOUT))?;
        let mut offsets = TopicPartitionList::new();
        for e in committed.elements() {
            if let Offset::Offset(offset) = e.offset() {
                offsets.add_partition_offset(e.topic(), e.partition(), Offset::Offset(offset))?;
            }
        }
        Ok(offsets)
    }
}

/// What a look at a growth under way found.
pub(super) enum GrowthStep {
    /// Nothing waits.
    Settled,
    /// A backlog to decide or state to arrive: look again shortly.
    Waiting,
    /// State arrived on partitions that waited for it: restore them before taking records.
    Arrived,
}

impl<T: Topology> Worker<T> {
    /// Moves out the state of the old partitions whose backlog is decided, and looks at the
    /// growth log for the arrivals restored partitions wait for.
    pub(super) async fn growth_step(
        &self,
        topics: &[String],
        aligner: &Aligner,
        owned: &Owned,
        restored: &mut HashSet<i32>,
        last_log_look: &mut Instant,
    ) -> Result<GrowthStep, Uncommitted> {
        let partitions = self.served_partitions() as u32;
        let mut to_move: Vec<i32> = restored
            .iter()
            .copied()
            .filter(|p| self.growth().to_move_out(*p as u32, partitions))
            .collect();
        to_move.sort_unstable();
        let mut moved = false;
        let mut backlog = false;
        if !to_move.is_empty() {
            let positions = blocking(|| self.consumer.position()).unwrap_or_default();
            for partition in to_move {
                if self.backlog_decided(partition, topics, aligner, owned, &positions) {
                    self.move_out(partition).await?;
                    moved = true;
                } else {
                    backlog = true;
                }
            }
        }
        // Waiting: for state still to arrive, or to be restored again with what has (another
        // read of the log, a restore's, may have found it in first).
        let waiting: Vec<i32> = restored
            .iter()
            .copied()
            .filter(|p| {
                !self.growth().awaiting(*p as u32).is_empty() || self.arrivals_to_take().contains(p)
            })
            .collect();
        let arrived_of = |waiting: &[i32]| -> Vec<i32> {
            waiting
                .iter()
                .copied()
                .filter(|p| self.growth().awaiting(*p as u32).is_empty())
                .collect()
        };
        let mut arrived = arrived_of(&waiting);
        if arrived.is_empty()
            && !waiting.is_empty()
            && (moved || last_log_look.elapsed() >= GROWTH_LOG_LOOK)
        {
            *last_log_look = Instant::now();
            match blocking(|| self.load_growth()) {
                Ok(()) => arrived = arrived_of(&waiting),
                Err(error) => {
                    tracing::warn!(%error, "reading the growth log failed; looking again shortly")
                }
            }
        }
        if !arrived.is_empty() {
            tracing::info!(
                topology = self.topology.name(),
                partitions = ?arrived,
                "the state these partitions waited for has arrived"
            );
            for partition in arrived {
                restored.remove(&partition);
            }
            self.serve_only(restored);
            return Ok(GrowthStep::Arrived);
        }
        if moved {
            self.serve_only(restored);
        }
        if backlog || !waiting.is_empty() {
            Ok(GrowthStep::Waiting)
        } else {
            Ok(GrowthStep::Settled)
        }
    }
}
