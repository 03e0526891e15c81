//! The shard database: three typed tables and one long-lived write transaction per checkpoint.

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
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
        let db = Database::create(path).map_err(|source| StorageError::Open {
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
        Ok(ShardTxn {
            txn: self.db.begin_write()?,
        })
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
pub struct ShardTxn {
    txn: WriteTransaction,
}

impl ShardTxn {
    pub fn instance(&self, id: &InstanceId) -> Result<Option<Vec<u8>>, StorageError> {
        let table = self.txn.open_table(INSTANCES)?;
        let value = table.get(id.encode().as_slice())?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub fn put_instance(&mut self, id: &InstanceId, bytes: &[u8]) -> Result<(), StorageError> {
        let mut table = self.txn.open_table(INSTANCES)?;
        table.insert(id.encode().as_slice(), bytes)?;
        Ok(())
    }

    pub fn remove_instance(&mut self, id: &InstanceId) -> Result<(), StorageError> {
        let mut table = self.txn.open_table(INSTANCES)?;
        table.remove(id.encode().as_slice())?;
        Ok(())
    }

    pub fn set_timer(&mut self, timer: &TimerKey) -> Result<(), StorageError> {
        let mut table = self.txn.open_table(TIMERS)?;
        table.insert(timer.encode().as_slice(), ())?;
        Ok(())
    }

    pub fn remove_timer(&mut self, timer: &TimerKey) -> Result<(), StorageError> {
        let mut table = self.txn.open_table(TIMERS)?;
        table.remove(timer.encode().as_slice())?;
        Ok(())
    }

    /// Up to `limit` timers with `time <= upto`, earliest first (ties by template, key, name).
    pub fn due_timers(&self, upto: i64, limit: usize) -> Result<Vec<TimerKey>, StorageError> {
        let table = self.txn.open_table(TIMERS)?;
        let mut due = Vec::new();
        let range = match upto.checked_add(1) {
            Some(end) => table.range::<&[u8]>(..TimerKey::time_prefix(end).as_slice())?,
            None => table.range::<&[u8]>(..)?,
        };
        for entry in range.take(limit) {
            let (key, _) = entry?;
            due.push(TimerKey::decode(key.value())?);
        }
        Ok(due)
    }

    /// The earliest timer, if any.
    pub fn next_timer(&self) -> Result<Option<TimerKey>, StorageError> {
        let table = self.txn.open_table(TIMERS)?;
        let first = table.first()?;
        first
            .map(|(key, _)| TimerKey::decode(key.value()))
            .transpose()
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let table = self.txn.open_table(META)?;
        let value = table.get(name)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub fn put_meta(&mut self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let mut table = self.txn.open_table(META)?;
        table.insert(name, bytes)?;
        Ok(())
    }

    /// Commits every change durably (fsync): this is the checkpoint.
    pub fn commit(self) -> Result<(), StorageError> {
        self.txn.commit()?;
        Ok(())
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
