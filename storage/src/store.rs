//! The shard database: three typed tables and one long-lived write transaction per checkpoint.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};

use crate::keys::{InstanceId, TimerKey};
use crate::StorageError;

/// Process instances: `InstanceId` bytes → the runtime's encoded instance record.
const INSTANCES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("instances.v1");
/// Durable timers: `TimerKey` bytes → nothing.
const TIMERS: TableDefinition<&[u8], ()> = TableDefinition::new("timers.v1");
/// Shard metadata: source position, watermark, output sequence, counters.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta.v1");

/// redb's page cache per shard (read cache and write buffer together). redb's default, 1 GiB
/// per database, let 8 shards over a million instances keep every page they touched in memory;
/// pages beyond this are read again from the file (the OS page cache, usually).
pub const CACHE_BYTES: usize = 64 << 20;

/// One shard's redb database.
pub struct ShardStore {
    db: Database,
    path: PathBuf,
}

impl ShardStore {
    /// Opens (or creates) the shard database at `path`, creating its tables.
    pub fn open(path: &Path) -> Result<ShardStore, StorageError> {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|source| StorageError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let txn = db.begin_write()?;
        txn.open_table(INSTANCES)?;
        txn.open_table(TIMERS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(ShardStore {
            db,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the write transaction that collects every change up to the next checkpoint.
    pub fn begin(&self) -> Result<ShardTxn, StorageError> {
        ShardTxn::begin(self.db.begin_write()?)
    }

    /// A consistent read-only view of the last committed checkpoint.
    pub fn read(&self) -> Result<ShardReader, StorageError> {
        Ok(ShardReader {
            txn: self.db.begin_read()?,
        })
    }
}

/// Every change between two checkpoints. Dropping it without [`ShardTxn::commit`] discards
/// the changes, which is how a shard rolls back to its last checkpoint.
///
/// The three tables are opened once, when the transaction begins, and stay open until it is
/// committed or dropped: opening a redb table per call cost 1.5–2.4x the work itself
/// (`benches/benches/storage.rs`, `*_raw_redb`).
///
/// Timers set in this transaction are kept in memory and inserted into redb, in key order, at
/// the commit: one removed before the commit (an order completes before its deadline, a timer
/// fires) never touches the B-tree. A removal also removes the stored copy, if any: a timer
/// set again while stored is gone after one removal, like any other.
pub struct ShardTxn {
    /// Borrows `*txn`; always dropped (the tables closed) before the transaction.
    tables: Option<Tables>,
    /// Encoded keys of the timers set since the transaction began, not yet in `timers`.
    timers_set: BTreeSet<Vec<u8>>,
    /// The transaction, owned through a raw pointer (from `Box::into_raw`) rather than a
    /// `Box`, so that moving a `ShardTxn` does not assert unique access to a transaction the
    /// tables borrow. Freed by `commit` or `Drop`, after the tables; `None` once it is.
    txn: Option<NonNull<WriteTransaction>>,
}

/// The open tables of a [`ShardTxn`]. Their `'static` is a lie told to the borrow checker:
/// they borrow the `WriteTransaction` owned by the same `ShardTxn`, which outlives them (see
/// [`ShardTxn::begin`]).
struct Tables {
    instances: Table<'static, &'static [u8], &'static [u8]>,
    timers: Table<'static, &'static [u8], ()>,
    meta: Table<'static, &'static str, &'static [u8]>,
}

// SAFETY: a `ShardTxn` owns its transaction exclusively (the tables are private and borrow
// only it), so sending it sends a `WriteTransaction` and its tables together, as the former
// `txn: WriteTransaction` field did.
unsafe impl Send for ShardTxn where WriteTransaction: Send {}

impl ShardTxn {
    fn begin(txn: WriteTransaction) -> Result<ShardTxn, StorageError> {
        let txn = NonNull::from(Box::leak(Box::new(txn)));
        let mut this = ShardTxn {
            tables: None,
            timers_set: BTreeSet::new(),
            txn: Some(txn),
        };
        // SAFETY: the transaction lives on the heap, at an address that does not change, until
        // `commit` or `Drop` frees it, and both drop the tables first. Nothing else accesses
        // it mutably meanwhile. The `'static` references never leave this module.
        let borrowed: &'static WriteTransaction = unsafe { txn.as_ref() };
        this.tables = Some(Tables {
            instances: borrowed.open_table(INSTANCES)?,
            timers: borrowed.open_table(TIMERS)?,
            meta: borrowed.open_table(META)?,
        });
        Ok(this)
    }

    /// Closes the tables and takes back the transaction.
    fn into_txn(mut self) -> WriteTransaction {
        drop(self.tables.take());
        let txn = self.txn.take().expect("owned until taken");
        // SAFETY: from `Box::leak` in `begin`, taken once; the tables that borrowed it are gone.
        *unsafe { Box::from_raw(txn.as_ptr()) }
    }

    fn tables(&self) -> &Tables {
        self.tables.as_ref().expect("tables are open until commit")
    }

    fn tables_mut(&mut self) -> &mut Tables {
        self.tables.as_mut().expect("tables are open until commit")
    }

    pub fn instance(&self, id: &InstanceId) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.tables().instances.get(id.encode().as_slice())?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub fn put_instance(&mut self, id: &InstanceId, bytes: &[u8]) -> Result<(), StorageError> {
        self.tables_mut()
            .instances
            .insert(id.encode().as_slice(), bytes)?;
        Ok(())
    }

    pub fn remove_instance(&mut self, id: &InstanceId) -> Result<(), StorageError> {
        self.tables_mut().instances.remove(id.encode().as_slice())?;
        Ok(())
    }

    pub fn set_timer(&mut self, timer: &TimerKey) -> Result<(), StorageError> {
        self.timers_set.insert(timer.encode());
        Ok(())
    }

    pub fn remove_timer(&mut self, timer: &TimerKey) -> Result<(), StorageError> {
        let key = timer.encode();
        // A timer set since the last commit is usually not stored as well: a lookup (no
        // copy-on-write of the path, unlike a delete) tells.
        if self.timers_set.remove(&key) && self.tables().timers.get(key.as_slice())?.is_none() {
            return Ok(());
        }
        self.tables_mut().timers.remove(key.as_slice())?;
        Ok(())
    }

    /// Up to `limit` timers with `time <= upto`, earliest first (ties by template, key, name).
    pub fn due_timers(&self, upto: i64, limit: usize) -> Result<Vec<TimerKey>, StorageError> {
        let end = upto.checked_add(1).map(TimerKey::time_prefix);
        let table = &self.tables().timers;
        let (stored, set) = match &end {
            Some(end) => (
                table.range::<&[u8]>(..end.as_slice())?,
                self.timers_set
                    .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(end.as_slice()))),
            ),
            None => (
                table.range::<&[u8]>(..)?,
                self.timers_set.range::<[u8], _>(..),
            ),
        };
        // Both are sorted by key: merge them, a key in both once.
        let mut stored = stored.peekable();
        let mut set = set.peekable();
        let mut due = Vec::new();
        while due.len() < limit {
            let order = match (stored.peek(), set.peek()) {
                (None, None) => break,
                (Some(Err(_)), _) | (Some(_), None) => Ordering::Less, // an error: `?` below
                (None, Some(_)) => Ordering::Greater,
                (Some(Ok((key, _))), Some(set_key)) => key.value().cmp(set_key.as_slice()),
            };
            if order == Ordering::Equal {
                set.next();
            }
            let from_stored = order != Ordering::Greater;
            let timer = if from_stored {
                let (key, _) = stored.next().expect("peeked")?;
                TimerKey::decode(key.value())?
            } else {
                TimerKey::decode(set.next().expect("peeked"))?
            };
            due.push(timer);
        }
        Ok(due)
    }

    /// The earliest timer, if any.
    pub fn next_timer(&self) -> Result<Option<TimerKey>, StorageError> {
        Ok(self.due_timers(i64::MAX, 1)?.pop())
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.tables().meta.get(name)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub fn put_meta(&mut self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.tables_mut().meta.insert(name, bytes)?;
        Ok(())
    }

    /// Commits every change durably (fsync): this is the checkpoint.
    pub fn commit(mut self) -> Result<(), StorageError> {
        let set = std::mem::take(&mut self.timers_set);
        let timers = &mut self.tables_mut().timers;
        for key in set {
            timers.insert(key.as_slice(), ())?;
        }
        self.into_txn().commit()?;
        Ok(())
    }
}

impl Drop for ShardTxn {
    /// Without a commit: closes the tables, then drops (aborts) the transaction.
    fn drop(&mut self) {
        drop(self.tables.take());
        if let Some(txn) = self.txn.take() {
            // SAFETY: as in `into_txn`.
            drop(unsafe { Box::from_raw(txn.as_ptr()) });
        }
    }
}

/// A read-only view of a shard's last checkpoint, for queries and tests.
pub struct ShardReader {
    txn: ReadTransaction,
}

impl ShardReader {
    pub fn instance(&self, id: &InstanceId) -> Result<Option<Vec<u8>>, StorageError> {
        let table = self.txn.open_table(INSTANCES)?;
        let value = table.get(id.encode().as_slice())?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Every instance of the shard with its encoded record.
    pub fn instances(&self) -> Result<Vec<(InstanceId, Vec<u8>)>, StorageError> {
        let table = self.txn.open_table(INSTANCES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            out.push((InstanceId::decode(key.value())?, value.value().to_vec()));
        }
        Ok(out)
    }

    /// Calls `f` with every instance's encoded record, in key order, holding one at a time.
    pub fn for_each_instance(
        &self,
        mut f: impl FnMut(&[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let table = self.txn.open_table(INSTANCES)?;
        for entry in table.iter()? {
            let (_, value) = entry?;
            f(value.value())?;
        }
        Ok(())
    }

    pub fn instance_count(&self) -> Result<u64, StorageError> {
        Ok(self.txn.open_table(INSTANCES)?.len()?)
    }

    pub fn timer_count(&self) -> Result<u64, StorageError> {
        Ok(self.txn.open_table(TIMERS)?.len()?)
    }

    pub fn timers(&self) -> Result<Vec<TimerKey>, StorageError> {
        let table = self.txn.open_table(TIMERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, _) = entry?;
            out.push(TimerKey::decode(key.value())?);
        }
        Ok(out)
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let table = self.txn.open_table(META)?;
        let value = table.get(name)?;
        Ok(value.map(|v| v.value().to_vec()))
    }
}

impl ShardReader {
    /// Writes this checkpoint, compacted, to a new database at `path` (a shard snapshot): to
    /// `path` + `.tmp` first, synced, then renamed, so `path` is always a whole snapshot.
    /// Returns the snapshot's size in bytes.
    pub fn export_to(&self, path: &Path) -> Result<u64, StorageError> {
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let io = |source: std::io::Error| StorageError::Storage(redb::StorageError::Io(source));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        {
            let target = ShardStore::open(&tmp)?;
            let txn = target.db.begin_write()?;
            {
                let mut instances = txn.open_table(INSTANCES)?;
                for entry in self.txn.open_table(INSTANCES)?.iter()? {
                    let (key, value) = entry?;
                    instances.insert(key.value(), value.value())?;
                }
                let mut timers = txn.open_table(TIMERS)?;
                for entry in self.txn.open_table(TIMERS)?.iter()? {
                    let (key, _) = entry?;
                    timers.insert(key.value(), ())?;
                }
                let mut meta = txn.open_table(META)?;
                for entry in self.txn.open_table(META)?.iter()? {
                    let (key, value) = entry?;
                    meta.insert(key.value(), value.value())?;
                }
            }
            txn.commit()?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().and_then(|p| std::fs::File::open(p).ok()) {
            let _ = dir.sync_all();
        }
        Ok(std::fs::metadata(path).map_err(io)?.len())
    }
}
