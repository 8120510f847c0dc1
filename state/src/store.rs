//! A named key-value store on RocksDB holding serde values. Writes go through a `StoreBatch`
//! applied atomically, one per processed batch of records, so local state never holds half a
//! batch.

use crate::key::StateKey;
use crate::memory::StateMemory;
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};

/// Format byte in front of every stored value (ADR 0022). Values written before it are JSON
/// and stay readable; every value written now is MessagePack.
const JSON_FORMAT: u8 = 1;
/// MessagePack, structs as arrays of their fields in declaration order, enum variants by
/// name: less than half the bytes of JSON and about 40% less CPU to encode and decode. A
/// field added to a state type goes last with `#[serde(default)]` (a value written before
/// it then reads with the default); a field is never removed or reordered. A value of the
/// wrong shape fails to decode (MessagePack says each value's type), it is never misread.
const MSGPACK_FORMAT: u8 = 2;

/// `value` as the store writes it: its format byte, then its encoding.
pub fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = vec![MSGPACK_FORMAT];
    rmp_serde::encode::write(&mut bytes, value).map_err(|e| StateError::Encode {
        reason: e.to_string(),
    })?;
    Ok(bytes)
}

/// A value of store `store` as [`encode_value`] wrote it, or as JSON from before.
pub fn decode_value<T: DeserializeOwned>(store: &str, bytes: &[u8]) -> Result<T> {
    let corrupt = |reason: String| StateError::Corrupt {
        store: store.to_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((&MSGPACK_FORMAT, encoded)) => {
            rmp_serde::from_slice(encoded).map_err(|e| corrupt(e.to_string()))
        }
        Some((&JSON_FORMAT, json)) => {
            serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))
        }
        Some((format, _)) => Err(corrupt(format!("unknown value format {format}"))),
        None => Err(corrupt("an empty value".into())),
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("opening store {store} at {path}: {source}")]
    Open {
        store: String,
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("reading store {store}: {source}")]
    Read {
        store: String,
        source: rocksdb::Error,
    },
    #[error("writing store {store}: {source}")]
    Write {
        store: String,
        source: rocksdb::Error,
    },
    #[error("a state value cannot be encoded: {reason}")]
    Encode { reason: String },
    #[error("store {store} holds a value it cannot decode: {reason}")]
    Corrupt { store: String, reason: String },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// A key and value as RocksDB stores them.
pub(crate) type RawEntry = (Box<[u8]>, Box<[u8]>);

/// One RocksDB database per store, in `<state dir>/<store name>`. Handles made by
/// [`Store::share`] reach the same database, each with its own set of keys served.
pub struct Store {
    name: String,
    db: std::sync::Arc<rocksdb::DB>,
    /// Which raw keys this handle serves now (the owners of its assigned partitions); `None`:
    /// all of them.
    serving: std::sync::RwLock<Option<Serves>>,
}

/// Whether a raw key (state or timer) belongs to what an instance serves.
pub type Serves = std::sync::Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Writes to apply together: each state write as a change (key, value or `None` for a
/// delete), in order, which is also what the store's changelog topic carries; and the store's
/// own bookkeeping (checkpoints), never sent anywhere. Turned into one RocksDB write batch only
/// when written, so each write is held once.
#[derive(Default)]
pub struct StoreBatch {
    changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    meta: Vec<(Vec<u8>, Vec<u8>)>,
}

/// First byte of the keys the store keeps about itself (changelog checkpoints): above every
/// state key (first byte at most 0x03) and every timer key (0xFE), so no scan of either meets
/// them, and never written to the changelog.
const META_PREFIX: u8 = 0xFF;

fn checkpoint_key(changelog: &str, partition: i32) -> Vec<u8> {
    let mut key = vec![META_PREFIX];
    key.extend_from_slice(format!("checkpoint/{changelog}/{partition}").as_bytes());
    key
}

fn note_key(note: &str) -> Vec<u8> {
    let mut key = vec![META_PREFIX];
    key.extend_from_slice(format!("note/{note}").as_bytes());
    key
}

impl StoreBatch {
    /// Adds a write of `value`; a value the format cannot hold is an error, not a panic.
    pub fn put<T: Serialize>(&mut self, key: &StateKey, value: &T) -> Result<()> {
        let bytes = encode_value(value)?;
        self.changes.push((key.as_bytes().to_vec(), Some(bytes)));
        Ok(())
    }

    /// Adds a write of a value [`encode_value`] encoded (for a caller that caches values
    /// across a batch without knowing their types).
    pub fn put_encoded(&mut self, key: &StateKey, encoded: Vec<u8>) {
        self.changes.push((key.as_bytes().to_vec(), Some(encoded)));
    }

    pub fn delete(&mut self, key: &StateKey) {
        self.delete_raw(key.as_bytes());
    }

    pub(crate) fn put_raw(&mut self, key: &[u8], value: &[u8]) {
        self.changes.push((key.to_vec(), Some(value.to_vec())));
    }

    pub(crate) fn delete_raw(&mut self, key: &[u8]) {
        self.changes.push((key.to_vec(), None));
    }

    /// The state writes of this batch, in order: what its changelog records carry.
    pub fn changes(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.changes
    }

    /// Applies a change read back from the changelog (restore).
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.changes.push((key.to_vec(), value.map(<[u8]>::to_vec)));
    }

    /// Records that the store holds `changelog` partition `partition` up to (not including)
    /// `next_offset`, atomically with the writes of this batch.
    pub fn checkpoint(&mut self, changelog: &str, partition: i32, next_offset: i64) {
        self.meta.push((
            checkpoint_key(changelog, partition),
            next_offset.to_be_bytes().to_vec(),
        ));
    }

    /// Records `note` (a fact about the store, such as a growth step done) atomically with
    /// the writes of this batch; [`Store::noted`] reads it back.
    pub fn note(&mut self, note: &str) {
        self.meta.push((note_key(note), Vec::new()));
    }

    pub fn len(&self) -> usize {
        self.changes.len() + self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store {
    /// Opens (creating if needed) the store `name` under `state_dir`, within the process's
    /// default memory budget.
    pub fn open(state_dir: &Path, name: &str) -> Result<Self> {
        Self::open_within(state_dir, name, &StateMemory::process_default())
    }

    /// The same, within `memory`, shared with the other stores opened within it.
    pub fn open_within(state_dir: &Path, name: &str, memory: &StateMemory) -> Result<Self> {
        let path = state_dir.join(name);
        let mut options = memory.options();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let db = rocksdb::DB::open(&options, &path).map_err(|source| StateError::Open {
            store: name.to_owned(),
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            db: std::sync::Arc::new(db),
            serving: std::sync::RwLock::new(None),
        })
    }

    /// Another handle on the same database, serving no key until told otherwise. The
    /// workers of one runtime share their store this way: a partition that moves from one to
    /// another finds its state where it was, and each fires only its own partitions' timers.
    /// Their writes never meet: a partition has one owner at a time, and its keys are its own.
    pub fn share(&self) -> Store {
        Store {
            name: self.name.clone(),
            db: self.db.clone(),
            serving: std::sync::RwLock::new(Some(std::sync::Arc::new(|_: &[u8]| false))),
        }
    }

    /// Serves only the keys `serves` accepts from now on. The store may still hold state of
    /// partitions given up in a rebalance (to restore them from where they were if they come
    /// back); their new owner fires their timers, never this instance.
    pub fn serve_only(&self, serves: Serves) {
        *self.serving.write().unwrap_or_else(|e| e.into_inner()) = Some(serves);
    }

    /// Whether this instance serves `key` now.
    pub fn serves(&self, key: &[u8]) -> bool {
        self.serving
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|serves| serves(key))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// RocksDB's estimate of the data it holds, in bytes: live data in its files, and what
    /// its memtables hold not yet flushed.
    pub fn estimated_bytes(&self) -> Option<u64> {
        Some(
            self.property("rocksdb.estimate-live-data-size")?
                + self.property("rocksdb.cur-size-all-mem-tables")?,
        )
    }

    /// The memory this store's budget holds now, in bytes: its shared cache's usage, which
    /// counts the data, index and filter blocks it caches and the memtables charged to it, of
    /// every store opened within the same budget.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.property("rocksdb.block-cache-usage")
    }

    /// One of RocksDB's integer properties of this store.
    pub(crate) fn property(&self, name: &str) -> Option<u64> {
        self.db.property_int_value(name).ok().flatten()
    }

    /// Where restoring `changelog` partition `partition` starts: the offset after the last
    /// change this store holds, or `None` if it holds none (restore from the beginning).
    pub fn checkpointed(&self, changelog: &str, partition: i32) -> Result<Option<i64>> {
        let bytes = self
            .db
            .get_pinned(checkpoint_key(changelog, partition))
            .map_err(|source| StateError::Read {
                store: self.name.clone(),
                source,
            })?;
        match bytes {
            None => Ok(None),
            Some(b) => {
                let raw: [u8; 8] = b.as_ref().try_into().map_err(|_| StateError::Corrupt {
                    store: self.name.clone(),
                    reason: "a checkpoint is not 8 bytes".into(),
                })?;
                Ok(Some(i64::from_be_bytes(raw)))
            }
        }
    }

    /// Whether a batch written to this store recorded `note`.
    pub fn noted(&self, note: &str) -> Result<bool> {
        self.db
            .get_pinned(note_key(note))
            .map(|v| v.is_some())
            .map_err(|source| StateError::Read {
                store: self.name.clone(),
                source,
            })
    }

    /// Every state and timer entry (raw key and value) whose owner `keep` accepts, in key
    /// order, whatever this handle serves: what a partition hands over when it moves.
    pub fn entries_of(&self, keep: &dyn Fn(&[u8]) -> bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = Vec::new();
        let ranges: [(&[u8], &[u8]); 2] = [
            (&[0x00], &[0x04]),
            (
                &[crate::timers::TIMER_PREFIX],
                &[crate::timers::TIMER_PREFIX + 1],
            ),
        ];
        for (from, to) in ranges {
            for entry in self.scan_raw(from, to) {
                let (key, value) = entry?;
                if crate::key::owner_of_raw_key(&key).is_some_and(keep) {
                    entries.push((key.into_vec(), value.into_vec()));
                }
            }
        }
        Ok(entries)
    }

    pub fn get<T: DeserializeOwned>(&self, key: &StateKey) -> Result<Option<T>> {
        let Some(bytes) =
            self.db
                .get_pinned(key.as_bytes())
                .map_err(|source| StateError::Read {
                    store: self.name.clone(),
                    source,
                })?
        else {
            return Ok(None);
        };
        decode_value(&self.name, &bytes).map(Some)
    }

    /// Applies every write of `batch` atomically.
    pub fn write(&self, batch: StoreBatch) -> Result<()> {
        let mut writes = rocksdb::WriteBatch::default();
        for (key, value) in &batch.changes {
            match value {
                Some(value) => writes.put(key, value),
                None => writes.delete(key),
            }
        }
        for (key, value) in &batch.meta {
            writes.put(key, value);
        }
        self.db.write(writes).map_err(|source| StateError::Write {
            store: self.name.clone(),
            source,
        })
    }

    /// Raw entries with `from <= key < to`, in key order.
    pub(crate) fn scan_raw<'a>(
        &'a self,
        from: &[u8],
        to: &[u8],
    ) -> impl Iterator<Item = Result<RawEntry>> + 'a {
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(to.to_vec());
        self.db
            .iterator_opt(
                rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward),
                options,
            )
            .map(|entry| {
                entry.map_err(|source| StateError::Read {
                    store: self.name.clone(),
                    source,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_processors::{OrgId, PurchaseOrderId, PurchaseOrderMatch};

    #[test]
    fn a_batch_is_visible_after_write_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let org = OrgId::from_u128(1);
        let po = PurchaseOrderId::from_u128(2);
        let key = StateKey::new(&org, po.as_str());
        let state = PurchaseOrderMatch::new(org.clone(), po.clone());
        {
            let store = Store::open(dir.path(), "match").unwrap();
            let mut batch = StoreBatch::default();
            batch.put(&key, &state).unwrap();
            assert_eq!(store.get::<PurchaseOrderMatch>(&key).unwrap(), None);
            store.write(batch).unwrap();
        }
        let store = Store::open(dir.path(), "match").unwrap();
        assert_eq!(store.get::<PurchaseOrderMatch>(&key).unwrap(), Some(state));
    }

    #[test]
    fn a_value_in_an_unknown_format_is_a_corrupt_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "match").unwrap();
        let key = StateKey::new(&OrgId::from_u128(1), "x");
        store.db.put(key.as_bytes(), b"\x07junk").unwrap();
        assert!(matches!(
            store.get::<PurchaseOrderMatch>(&key),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn state_written_as_json_before_msgpack_still_reads_and_is_rewritten_smaller() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "match").unwrap();
        let org = OrgId::from_u128(1);
        let po = PurchaseOrderId::from_u128(2);
        let key = StateKey::new(&org, po.as_str());
        let state = PurchaseOrderMatch::new(org, po);
        let mut json = vec![JSON_FORMAT];
        json.extend(serde_json::to_vec(&state).unwrap());
        store.db.put(key.as_bytes(), &json).unwrap();
        assert_eq!(
            store.get::<PurchaseOrderMatch>(&key).unwrap().as_ref(),
            Some(&state)
        );
        let mut batch = StoreBatch::default();
        batch.put(&key, &state).unwrap();
        let (_, rewritten) = &batch.changes()[0];
        let rewritten = rewritten.as_ref().unwrap();
        assert_eq!(rewritten[0], MSGPACK_FORMAT);
        assert!(
            rewritten.len() * 2 < json.len(),
            "{} vs {}",
            rewritten.len(),
            json.len()
        );
        store.write(batch).unwrap();
        assert_eq!(store.get::<PurchaseOrderMatch>(&key).unwrap(), Some(state));
    }

    /// The rule for changing a state type: a new field goes last, with a default.
    #[test]
    fn a_field_added_last_with_a_default_reads_older_values_and_a_changed_type_is_refused() {
        #[derive(serde::Serialize)]
        struct Before {
            supplier: String,
            lines: Vec<u32>,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct After {
            supplier: String,
            lines: Vec<u32>,
            #[serde(default)]
            closed: bool,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Retyped {
            supplier: u64,
            lines: Vec<u32>,
        }
        let before = encode_value(&Before {
            supplier: "V100234".into(),
            lines: vec![10, 20],
        })
        .unwrap();
        assert_eq!(
            decode_value::<After>("match", &before).unwrap(),
            After {
                supplier: "V100234".into(),
                lines: vec![10, 20],
                closed: false
            }
        );
        assert!(matches!(
            decode_value::<Retyped>("match", &before),
            Err(StateError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_value::<After>("match", &[]),
            Err(StateError::Corrupt { .. })
        ));
    }
}
