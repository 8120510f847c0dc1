//! The memory RocksDB may use, shared by every store of a process (ADR 0012).
//!
//! Left to its defaults, each store has its own memtables (64 MiB, two of them) and its own
//! block cache, and keeps every table file's index and filter blocks in memory outside any
//! cache: a process's memory then grows with the number of stores and with what they hold.
//! Here one LRU cache holds the data blocks, the index and filter blocks, and (charged to it
//! by a write buffer manager) the memtables of all the stores, so the process's state costs
//! about one budget, whatever it holds.

use std::sync::{Arc, Mutex};

/// One memory budget for the stores that share it. Cheap to clone: clones share the budget.
#[derive(Clone)]
pub struct StateMemory {
    /// The options every store opened with this budget starts from: they hold the shared
    /// cache and write buffer manager. rust-rocksdb's cache handle is not `Sync`, its options
    /// are `Send`: behind a mutex, stores opened on any thread share one cache.
    template: Arc<Mutex<rocksdb::Options>>,
    bytes: usize,
}

impl std::fmt::Debug for StateMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMemory")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl StateMemory {
    /// The budget of a process that sets none: 256 MiB.
    pub const DEFAULT_BYTES: usize = 256 << 20;

    /// A budget of `bytes` for block cache and memtables together; at most half of it goes
    /// to memtables (a store flushes when the stores' memtables reach that).
    pub fn new(bytes: usize) -> StateMemory {
        let cache = rocksdb::Cache::new_lru_cache(bytes);
        let write_buffers = rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(
            bytes / 2,
            false,
            cache.clone(),
        );
        let mut tables = rocksdb::BlockBasedOptions::default();
        tables.set_block_cache(&cache);
        tables.set_cache_index_and_filter_blocks(true);
        // The newest files' index and filters are read on every lookup: they stay.
        tables.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Most lookups are for keys not there yet (a new PO, a first invoice): a filter
        // answers them without reading a block.
        tables.set_bloom_filter(10.0, false);
        let mut options = rocksdb::Options::default();
        options.set_block_based_table_factory(&tables);
        options.set_write_buffer_manager(&write_buffers);
        // A memtable flushes at a quarter of the memtable budget at the latest.
        options.set_write_buffer_size((bytes / 8).max(1 << 20));
        StateMemory {
            template: Arc::new(Mutex::new(options)),
            bytes,
        }
    }

    /// The budget every store of this process shares unless given another.
    pub fn process_default() -> StateMemory {
        static DEFAULT: std::sync::OnceLock<StateMemory> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| StateMemory::new(Self::DEFAULT_BYTES))
            .clone()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether stores opened within `self` and within `other` share one budget.
    pub fn is_shared_with(&self, other: &StateMemory) -> bool {
        Arc::ptr_eq(&self.template, &other.template)
    }

    /// Options for one more store under this budget.
    pub(crate) fn options(&self) -> rocksdb::Options {
        self.template
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StateKey, Store, StoreBatch};
    use p2p_processors::OrgId;

    const MIB: usize = 1 << 20;

    /// Writes `bytes` of state into `store`, in batches of a megabyte, as a runtime would.
    fn fill(store: &Store, prefix: &str, bytes: usize) {
        let org = OrgId::from_u128(7);
        let value = crate::encode_value(&"x".repeat(1_000)).unwrap();
        for chunk in 0..bytes / MIB {
            let mut batch = StoreBatch::default();
            for i in 0..MIB / value.len() {
                let key = StateKey::new(&org, &format!("{prefix}/{chunk}/{i}"));
                batch.put_encoded(&key, value.clone());
            }
            store.write(batch).unwrap();
        }
    }

    fn memtables(store: &Store) -> usize {
        store.property("rocksdb.cur-size-all-mem-tables").unwrap() as usize
    }

    #[test]
    fn a_store_flushes_its_memtables_before_they_pass_its_budget() {
        // RocksDB's defaults keep up to two 64 MiB memtables per store: 40 MiB written would
        // all still be in memory.
        let dir = tempfile::tempdir().unwrap();
        let memory = StateMemory::new(8 * MIB);
        let store = Store::open_within(dir.path(), "s", &memory).unwrap();
        fill(&store, "po", 40 * MIB);
        let held = memtables(&store);
        assert!(
            held <= memory.bytes(),
            "memtables hold {held} bytes within a budget of {}",
            memory.bytes()
        );
    }

    #[test]
    fn stores_opened_within_one_budget_share_its_cache() {
        let dir = tempfile::tempdir().unwrap();
        let memory = StateMemory::new(64 * MIB);
        let procurement = Store::open_within(dir.path(), "procurement", &memory).unwrap();
        let matching = Store::open_within(dir.path(), "match", &memory).unwrap();
        let before = matching.memory_bytes().unwrap() as usize;
        // Only the procurement store is written: its memtables are charged to the cache the
        // match store reports too.
        fill(&procurement, "po", 4 * MIB);
        let after = matching.memory_bytes().unwrap() as usize;
        assert!(
            after >= before + 2 * MIB,
            "the shared cache went from {before} to {after} bytes"
        );
        assert_eq!(procurement.memory_bytes(), matching.memory_bytes());
    }

    #[test]
    fn stores_within_different_budgets_do_not_share() {
        let dir = tempfile::tempdir().unwrap();
        let procurement =
            Store::open_within(dir.path(), "procurement", &StateMemory::new(64 * MIB)).unwrap();
        let matching =
            Store::open_within(dir.path(), "match", &StateMemory::new(64 * MIB)).unwrap();
        let before = matching.memory_bytes().unwrap() as usize;
        fill(&procurement, "po", 4 * MIB);
        assert_eq!(matching.memory_bytes().unwrap() as usize, before);
        assert!(procurement.memory_bytes().unwrap() as usize >= before + 2 * MIB);
    }
}
