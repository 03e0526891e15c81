//! The shard database: the instance log, the instance and timer tables of passivated
//! instances, metadata, and one long-lived write transaction per checkpoint interval.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::btree_map::{BTreeMap, Entry as BTreeEntry};
use std::collections::{BTreeSet, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use foldhash::{HashMap, HashSet};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use smallvec::SmallVec;

use crate::keys::{InstanceId, TimerKey, TimerName, TimerRef};
use crate::log::{self, LoggedRecord, CHUNK_BYTES};
use crate::StorageError;

/// Passivated process instances: `InstanceId` bytes → the runtime's encoded instance record.
const INSTANCES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("instances.v1");
/// The earliest timer of each passivated instance (its others are in its record): `TimerKey`
/// bytes → nothing.
const TIMERS: TableDefinition<&[u8], ()> = TableDefinition::new("timers.v1");
/// Shard metadata: source position, watermark, output sequence, counters.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta.v1");
/// The instance log: chunk sequence number → records (see [`crate::log`]).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log.v1");

/// At most this many log chunks (about 8 MiB) wait in memory for the commit to insert them;
/// beyond it they are inserted at once. It bounds a shard's memory for them when checkpoints
/// are far apart.
const PENDING_CHUNKS: usize = 8;

/// redb's page cache per shard (read cache and write buffer together). redb's default, 1 GiB
/// per database, let 8 shards over a million instances keep every page they touched in memory;
/// pages beyond this are read again from the file (the OS page cache, usually). 16 MiB, not
/// 64: with 8 shards over a million instances the larger cache added 100–250 MiB of peak
/// RSS and no throughput (docs/performance.md).
pub const CACHE_BYTES: usize = 16 << 20;

/// One shard's redb database.
///
/// It keeps an instance in one of two places. An instance the shard has in memory is
/// *logged*: its record (with its timers) is appended to the log after every batch that
/// changed it, and its timers are kept in memory for the due-timer scan. An instance the
/// shard dropped from memory is *passivated*: its record (with its timers) is in the instance
/// table, and its earliest timer in the timer table, where it fires and activates the
/// instance. Beginning a transaction reads the log back, so the shard gets the instances it
/// had in memory at the last checkpoint.
pub struct ShardStore {
    db: Arc<Database>,
    path: PathBuf,
}

/// An instance in the log at the last checkpoint, handed back by [`ShardStore::begin`].
#[derive(Debug, Clone)]
pub struct LoggedInstance {
    pub id: InstanceId,
    pub record: Vec<u8>,
    /// The sequence number of the log chunk that holds the record (see
    /// [`ShardTxn::compact_log`]).
    pub seq: u64,
    /// The instance table also holds an older record of it (delete it when the instance ends).
    pub stored: bool,
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
        txn.open_table(LOG)?;
        txn.commit()?;
        Ok(ShardStore {
            db: Arc::new(db),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the write transaction that collects every change up to the next checkpoint, at
    /// the last checkpoint: with the instances the log holds (the shard's resident ones then).
    pub fn begin(&self) -> Result<(ShardTxn, Vec<LoggedInstance>), StorageError> {
        let mut txn = ShardTxn::begin(self.db.clone())?;
        let log = read_log(&txn.tables().log)?;
        (txn.next_seq, txn.chunks) = (log.next_seq, log.chunks);
        let live = log.live;
        let mut logged = Vec::with_capacity(live.len());
        for (id, record) in live {
            for key in record.timer_keys(&id) {
                txn.resident_timers.insert(ResidentTimer::from_key(&key));
            }
            logged.push(LoggedInstance {
                id: InstanceId::decode(&id)?,
                record: record.record,
                seq: record.seq,
                stored: record.stored,
            });
        }
        Ok((txn, logged))
    }

    /// A consistent read-only view of the last committed checkpoint.
    pub fn read(&self) -> Result<ShardReader, StorageError> {
        self.last_checkpoint()?.read()
    }

    /// Pins the last committed checkpoint, to be read later, on any thread, whatever the shard
    /// commits meanwhile.
    pub fn last_checkpoint(&self) -> Result<PinnedCheckpoint, StorageError> {
        Ok(PinnedCheckpoint(self.db.begin_read()?))
    }
}

/// The encoded key of a timer kept in memory ([`TimerKey::encode`]), split in two: its first
/// 8 bytes (the time) as one integer, and the rest. Ordered as the whole key's bytes are.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ResidentTimer {
    /// The key's first 8 bytes, big-endian: the sign-flipped time.
    time: u64,
    /// Inline up to 40 bytes (an order's timers): setting, removing or comparing one then
    /// allocates and follows no pointer.
    rest: SmallVec<[u8; 40]>,
}

impl ResidentTimer {
    fn from_key(key: &[u8]) -> ResidentTimer {
        let (time, rest) = key.split_at(8);
        ResidentTimer {
            time: u64::from_be_bytes(time.try_into().expect("a timer key starts with its time")),
            rest: rest.into(),
        }
    }

    fn of(timer: TimerRef<'_>) -> ResidentTimer {
        let key = timer.key.as_bytes();
        let mut rest = SmallVec::from_elem(0, TimerKey::rest_len(key, timer.name));
        TimerKey::write_rest(&mut rest, timer.template, key, timer.name);
        ResidentTimer {
            time: u64::from_be_bytes(TimerKey::time_prefix(timer.time)),
            rest,
        }
    }

    /// The whole encoded key.
    fn key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(8 + self.rest.len());
        key.extend_from_slice(&self.time.to_be_bytes());
        key.extend_from_slice(&self.rest);
        key
    }

    #[cfg(test)]
    fn as_parts(&self) -> TimerParts<'_> {
        TimerParts {
            time: self.time,
            rest: &self.rest,
        }
    }
}

/// A resident timer's key as [`ResidentTimer`] splits it, borrowed from [`ResidentTimers`].
#[derive(Debug, Clone, Copy)]
struct TimerParts<'a> {
    time: u64,
    rest: &'a [u8],
}

impl TimerParts<'_> {
    /// Compares with an encoded key as the key's bytes compare.
    fn cmp_key(&self, key: &[u8]) -> Ordering {
        let (time, rest) = key.split_at(8);
        self.time
            .to_be_bytes()
            .as_slice()
            .cmp(time)
            .then_with(|| self.rest.cmp(rest))
    }

    fn decode(&self) -> Result<TimerKey, StorageError> {
        TimerKey::decode_parts(self.time, self.rest)
    }
}

/// The timers of the instances in memory, in their encoded keys' order: by time, then by the
/// rest of the key's bytes. One tree key per time, an integer: a search reads a node's 11
/// times (88 bytes), not 11 whole keys of a cache line each, and only the last node's entry
/// holds the keys' rests (usually one).
#[derive(Default)]
struct ResidentTimers {
    by_time: BTreeMap<u64, SmallVec<[SmallVec<[u8; 40]>; 1]>>,
}

impl ResidentTimers {
    /// Adds a timer; `false` if it was there.
    fn insert(&mut self, timer: ResidentTimer) -> bool {
        let rests = self.by_time.entry(timer.time).or_default();
        match rests.binary_search(&timer.rest) {
            Ok(_) => false,
            Err(at) => {
                rests.insert(at, timer.rest);
                true
            }
        }
    }

    /// Removes a timer; `false` if it was not there.
    fn remove(&mut self, timer: &ResidentTimer) -> bool {
        let BTreeEntry::Occupied(mut rests) = self.by_time.entry(timer.time) else {
            return false;
        };
        let Ok(at) = rests.get().binary_search(&timer.rest) else {
            return false;
        };
        if rests.get().len() == 1 {
            rests.remove();
        } else {
            rests.get_mut().remove(at);
        }
        true
    }

    /// Every timer, in order.
    fn iter(&self) -> impl Iterator<Item = TimerParts<'_>> {
        self.by_time
            .iter()
            .flat_map(|(&time, rests)| rests.iter().map(move |rest| TimerParts { time, rest }))
    }
}

/// What [`ShardTxn::due_timers`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DueTimers {
    /// The due timers, earliest first.
    pub timers: Vec<TimerKey>,
    /// The time of the earliest timer not in `timers` (later than the watermark, or beyond the
    /// limit), if any.
    pub next: Option<i64>,
}

/// A committed checkpoint, pinned by [`ShardStore::last_checkpoint`].
pub struct PinnedCheckpoint(ReadTransaction);

impl PinnedCheckpoint {
    /// Reads its log back: the view [`ShardStore::read`] returns.
    pub fn read(self) -> Result<ShardReader, StorageError> {
        let log = read_log(&self.0.open_table(LOG)?)?;
        Ok(ShardReader {
            txn: self.0,
            log_bytes: log.chunks.iter().map(|&(_, bytes)| bytes).sum(),
            log: log.live,
        })
    }
}

/// The log as of a transaction.
struct Log {
    /// Encoded id → latest record of each logged instance.
    live: HashMap<Vec<u8>, LoggedRecord>,
    /// Each chunk's sequence number and size, in order.
    chunks: VecDeque<(u64, u64)>,
    /// The sequence number after the last chunk.
    next_seq: u64,
}

/// Reads and replays every chunk of the log table.
fn read_log(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<Log, StorageError> {
    let mut log = Log {
        live: HashMap::default(),
        chunks: VecDeque::new(),
        next_seq: 0,
    };
    for entry in table.iter()? {
        let (seq, chunk) = entry?;
        let (seq, chunk) = (seq.value(), chunk.value());
        log.chunks.push_back((seq, chunk.len() as u64));
        log.next_seq = seq + 1;
        log::replay(seq, chunk, &mut log.live)?;
    }
    Ok(log)
}

/// Every change between two checkpoints. [`ShardTxn::commit`] makes them durable and goes on
/// with the next interval; dropping it discards the changes since the last commit, which is
/// how a shard rolls back to its last checkpoint (and [`ShardStore::begin`] starts again).
///
/// The tables are opened once per interval and stay open until the commit: opening a redb
/// table per call cost 1.5–2.4x the work itself (`benches/benches/storage.rs`, `*_raw_redb`).
pub struct ShardTxn {
    db: Arc<Database>,
    /// Borrows `*txn`; always dropped (the tables closed) before the transaction.
    tables: Option<Tables>,
    /// The transaction, owned through a raw pointer (from `Box::into_raw`) rather than a
    /// `Box`, so that moving a `ShardTxn` does not assert unique access to a transaction the
    /// tables borrow. Freed by `commit` or `Drop`, after the tables; `None` once it is.
    txn: Option<NonNull<WriteTransaction>>,
    /// Encoded keys of the timers of logged instances: in memory only (and in the instances'
    /// log records).
    resident_timers: ResidentTimers,
    /// Log records not yet in a chunk.
    entry: Vec<u8>,
    /// Chunks not yet inserted into the log table, with their sequence numbers: the commit
    /// inserts them, so that copying them into redb's pages (and writing pages out when its
    /// write buffer is full) happens off the worker thread for a periodic checkpoint. Kept
    /// to [`PENDING_CHUNKS`].
    pending_chunks: Vec<(u64, Vec<u8>)>,
    /// The sequence number of the next log chunk.
    next_seq: u64,
    /// The sequence number and size of each chunk in the log, in the table or pending.
    chunks: VecDeque<(u64, u64)>,
    /// Set by [`ShardTxn::compact_log`]: chunks before this one are deleted at the commit.
    drop_chunks_before: Option<u64>,
    /// Rows of the instance and timer tables deleted in this interval: the commit deletes
    /// them (off the worker thread for the periodic checkpoint, as it writes what is
    /// passivated); until then the reads here skip them.
    deleted_instances: HashSet<Vec<u8>>,
    deleted_timers: HashSet<Vec<u8>>,
    /// Every row of the timer table below this key is in `deleted_timers`: the due-timer
    /// scan starts here instead of skipping them all again (fired timers pile up at the
    /// front of the table until the commit deletes them).
    timers_from: RefCell<Vec<u8>>,
    /// Per template, the largest id in the instance table or one above it (an insert raises
    /// it, a delete leaves it): no row holds an id above it, so looking up a new key of keys
    /// that grow (order numbers, time-ordered ids) reads no B-tree page. Read from the table
    /// at a template's first lookup; `Some(None)`: the table holds no id of the template.
    stored_bound: RefCell<Vec<Option<Option<Vec<u8>>>>>,
}

/// Whether `encoded` is above a template's bound of stored ids ([`ShardTxn::stored_bound`];
/// `None`: the table holds none of its ids).
fn above(bound: &Option<Vec<u8>>, encoded: &[u8]) -> bool {
    bound.as_deref().is_none_or(|bound| encoded > bound)
}

/// An instance for [`ShardTxn::passivate`].
pub struct Passivation<'a> {
    /// Its id as [`InstanceId::encode_into`] writes it (the caller encodes the ids next to
    /// their records, just after sorting them has read their keys).
    pub encoded_id: &'a [u8],
    /// Its record, if it changed since it was stored.
    pub record: Option<&'a [u8]>,
    /// Whether the log holds it.
    pub logged: bool,
    pub timers: &'a [(TimerName, i64)],
}

/// Inserts `rows` (key, value) into `table`, a later row of a key replacing an earlier one.
/// Sorted by key first (they usually are): the keys above the table's last one then go in
/// through one cursor at its end, which buffers them and splices them into full leaves (a
/// megabyte at a time) instead of searching the tree for each; the others one by one.
fn insert_rows<'v, V: redb::Value + 'static>(
    table: &mut Table<'static, &'static [u8], V>,
    rows: &mut Vec<(&[u8], V::SelfType<'v>)>,
) -> Result<(), StorageError> {
    if !rows.is_sorted_by(|a, b| a.0 < b.0) {
        rows.sort_by(|a, b| a.0.cmp(b.0)); // stable: the later of two equal keys stays last
        rows.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier); // keep the later row
            }
            same
        });
    }
    let last = table.last()?.map(|(key, _)| key.value().to_vec());
    let appended =
        rows.partition_point(|(key, _)| last.as_deref().is_some_and(|last| *key <= last));
    let (middle, end) = rows.split_at(appended);
    for (key, value) in middle {
        table.insert(*key, value)?;
    }
    if end.is_empty() {
        return Ok(());
    }
    let mut cursor = table.upper_bound_mut(Bound::<&[u8]>::Unbounded)?;
    let mut inserted = 0;
    for (key, value) in end {
        match cursor.insert_before(*key, value) {
            Ok(()) => inserted += 1,
            Err(redb::CursorError::Storage(e)) => return Err(e.into()),
            // Not with keys ascending and above the last; the rest go in one by one.
            Err(_) => break,
        }
    }
    cursor.close()?;
    for (key, value) in &end[inserted..] {
        table.insert(*key, value)?;
    }
    Ok(())
}

/// The open tables of a [`ShardTxn`]. Their `'static` is a lie told to the borrow checker:
/// they borrow the `WriteTransaction` owned by the same `ShardTxn`, which outlives them (see
/// [`ShardTxn::open_tables`]).
struct Tables {
    instances: Table<'static, &'static [u8], &'static [u8]>,
    timers: Table<'static, &'static [u8], ()>,
    meta: Table<'static, &'static str, &'static [u8]>,
    log: Table<'static, u64, &'static [u8]>,
}

// SAFETY: a `ShardTxn` owns its transaction exclusively (the tables are private and borrow
// only it), so sending it sends a `WriteTransaction` and its tables together, as a
// `txn: WriteTransaction` field would.
unsafe impl Send for ShardTxn where WriteTransaction: Send {}

impl ShardTxn {
    fn begin(db: Arc<Database>) -> Result<ShardTxn, StorageError> {
        let mut this = ShardTxn {
            db,
            tables: None,
            txn: None,
            resident_timers: ResidentTimers::default(),
            entry: Vec::new(),
            pending_chunks: Vec::new(),
            next_seq: 0,
            chunks: VecDeque::new(),
            drop_chunks_before: None,
            deleted_instances: HashSet::default(),
            deleted_timers: HashSet::default(),
            timers_from: RefCell::new(Vec::new()),
            stored_bound: RefCell::new(Vec::new()),
        };
        this.open_tables()?;
        Ok(this)
    }

    /// Begins a write transaction and opens the tables in it.
    fn open_tables(&mut self) -> Result<(), StorageError> {
        debug_assert!(self.txn.is_none() && self.tables.is_none());
        let txn = NonNull::from(Box::leak(Box::new(self.db.begin_write()?)));
        self.txn = Some(txn);
        // SAFETY: the transaction lives on the heap, at an address that does not change, until
        // `commit` or `Drop` frees it, and both drop the tables first. Nothing else accesses
        // it mutably meanwhile. The `'static` references never leave this module.
        let borrowed: &'static WriteTransaction = unsafe { txn.as_ref() };
        self.tables = Some(Tables {
            instances: borrowed.open_table(INSTANCES)?,
            timers: borrowed.open_table(TIMERS)?,
            meta: borrowed.open_table(META)?,
            log: borrowed.open_table(LOG)?,
        });
        Ok(())
    }

    /// Closes the tables and takes back the transaction.
    fn take_txn(&mut self) -> WriteTransaction {
        drop(self.tables.take());
        let txn = self.txn.take().expect("owned until taken");
        // SAFETY: from `Box::leak` in `open_tables`, taken once; the tables that borrowed it
        // are gone.
        *unsafe { Box::from_raw(txn.as_ptr()) }
    }

    fn tables(&self) -> &Tables {
        self.tables
            .as_ref()
            .expect("tables are open between commits")
    }

    fn tables_mut(&mut self) -> &mut Tables {
        self.tables
            .as_mut()
            .expect("tables are open between commits")
    }

    /// The record of a passivated instance. (A logged instance is in the shard's memory.)
    pub fn instance(&self, id: &InstanceId) -> Result<Option<Vec<u8>>, StorageError> {
        let encoded = id.encode();
        if self.deleted_instances.contains(encoded.as_slice()) || self.above_stored(id, &encoded)? {
            return Ok(None);
        }
        let value = self.tables().instances.get(encoded.as_slice())?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Whether `encoded` (`id`'s bytes) is above every id of its template in the instance
    /// table ([`ShardTxn::stored_bound`]).
    fn above_stored(&self, id: &InstanceId, encoded: &[u8]) -> Result<bool, StorageError> {
        let mut bounds = self.stored_bound.borrow_mut();
        let template = usize::from(id.template);
        if bounds.len() <= template {
            bounds.resize(template + 1, None);
        }
        let bound = match &mut bounds[template] {
            Some(bound) => bound,
            unread => {
                // The template's ids: from its two bytes up to the next template's.
                let (from, next) = (id.template.to_be_bytes(), id.template.checked_add(1));
                let to = next.map(u16::to_be_bytes);
                let upper = to
                    .as_ref()
                    .map_or(Bound::Unbounded, |to| Bound::Excluded(&to[..]));
                let mut rows = (self.tables().instances)
                    .range::<&[u8]>((Bound::Included(&from[..]), upper))?;
                let last = rows.next_back().transpose()?;
                unread.insert(last.map(|(key, _)| key.value().to_vec()))
            }
        };
        Ok(above(bound, encoded))
    }

    /// Raises the template's bound of stored ids to `encoded`, just inserted, if it is read.
    fn raise_stored_bound(&mut self, template: u16, encoded: &[u8]) {
        if let Some(Some(bound)) = self.stored_bound.get_mut().get_mut(usize::from(template)) {
            if above(bound, encoded) {
                *bound = Some(encoded.to_vec());
            }
        }
    }

    /// Writes an instance's record and its timers, `(name, time)`, to this checkpoint's log
    /// entry. Its timers must be in memory already (set, or moved there by
    /// [`ShardTxn::activate_timers`]). `stored`: the instance table holds an older record.
    /// Returns the sequence number of the chunk the record will be in.
    pub fn log_instance(
        &mut self,
        id: &InstanceId,
        record: &[u8],
        stored: bool,
        timers: &[(TimerName, i64)],
    ) -> Result<u64, StorageError> {
        let timers = timers.iter().map(|(name, time)| (*time, name.as_str()));
        self.append_to_log(|entry| log::put(entry, id, record, stored, timers))?;
        Ok(self.next_seq)
    }

    /// Passivates instances: each one's `record` (if it changed since it was passivated last)
    /// goes to the instance table, its timers leave memory, and the earliest of them goes to
    /// the timer table; a `logged` instance leaves the log.
    ///
    /// One timer row per passivated instance, not one per timer: the record holds them all,
    /// and when the earliest fires it activates the instance, which brings the others back
    /// into memory ([`ShardTxn::activate_timers`]) before any of them can be due (a due-timer
    /// scan ends after a row of the table, see [`ShardTxn::due_timers`]).
    ///
    /// The rows are B-tree inserts, most of the cost of passivating an instance. Those above
    /// every row of their table (new keys that grow, as order numbers do, and their timers)
    /// go in through one cursor at the table's end, which packs them into leaves a
    /// megabyte at a time instead of searching the tree for each ([`insert_rows`]).
    pub fn passivate(&mut self, instances: &[Passivation<'_>]) -> Result<(), StorageError> {
        let mut records: Vec<(&[u8], &[u8])> = Vec::with_capacity(instances.len());
        let mut timer_rows: Vec<Vec<u8>> = Vec::with_capacity(instances.len());
        for instance in instances {
            let (template, key_bytes) = InstanceId::encoded_parts(instance.encoded_id)?;
            if let Some(record) = instance.record {
                self.deleted_instances.remove(instance.encoded_id);
                self.raise_stored_bound(template, instance.encoded_id);
                records.push((instance.encoded_id, record));
            }
            let mut earliest: Option<Vec<u8>> = None;
            for (name, time) in instance.timers {
                let key = TimerKey::encode_parts(*time, template, key_bytes, name);
                self.resident_timers.remove(&ResidentTimer::from_key(&key));
                if earliest.as_ref().is_none_or(|e| key < *e) {
                    earliest = Some(key);
                }
            }
            if let Some(key) = earliest {
                self.deleted_timers.remove(&key);
                let from = self.timers_from.get_mut();
                if key < *from {
                    from.clone_from(&key);
                }
                timer_rows.push(key);
            }
            if instance.logged {
                self.append_to_log(|entry| log::forget(entry, instance.encoded_id))?;
            }
        }
        let tables = self.tables_mut();
        insert_rows(&mut tables.instances, &mut records)?;
        let mut timer_rows: Vec<(&[u8], ())> = timer_rows.iter().map(|k| (&k[..], ())).collect();
        insert_rows(&mut tables.timers, &mut timer_rows)?;
        Ok(())
    }

    /// Moves the timers of an instance just activated from the instance table into memory;
    /// its row in the timer table is deleted at the commit. (Every one of its timers is
    /// deleted there: a file written before passivation kept only the earliest has a row
    /// per timer.) The caller must know that timers earlier than the next one
    /// [`ShardTxn::due_timers`] reported may now be due. The shard must log the instance at
    /// the next checkpoint: its timers are then in no table.
    pub fn activate_timers(
        &mut self,
        id: &InstanceId,
        timers: &[(TimerName, i64)],
    ) -> Result<(), StorageError> {
        for (name, time) in timers {
            let key = TimerKey::encode_parts(*time, id.template, id.key.as_bytes(), name);
            self.resident_timers.insert(ResidentTimer::from_key(&key));
            self.deleted_timers.insert(key);
        }
        Ok(())
    }

    /// Deletes an ended instance: from the log if `logged`, from the instance table if
    /// `stored` (at the commit). (Its timers are removed one by one with
    /// [`ShardTxn::remove_timer`].)
    pub fn remove_instance(
        &mut self,
        id: &InstanceId,
        logged: bool,
        stored: bool,
    ) -> Result<(), StorageError> {
        let encoded = id.encode();
        if logged {
            self.append_to_log(|entry| log::forget(entry, &encoded))?;
        }
        if stored {
            self.deleted_instances.insert(encoded.to_vec());
        }
        Ok(())
    }

    /// Sets a timer of a resident instance (kept in memory, logged with the instance).
    pub fn set_timer<'a>(&mut self, timer: impl Into<TimerRef<'a>>) -> Result<(), StorageError> {
        self.resident_timers.insert(ResidentTimer::of(timer.into()));
        Ok(())
    }

    /// Removes a timer: of a resident instance from memory, else from the timer table (at the
    /// commit).
    pub fn remove_timer<'a>(&mut self, timer: impl Into<TimerRef<'a>>) -> Result<(), StorageError> {
        let timer = ResidentTimer::of(timer.into());
        if !self.resident_timers.remove(&timer) {
            self.deleted_timers.insert(timer.key());
        }
        Ok(())
    }

    /// Up to `limit` timers with `time <= upto`, earliest first (ties by template, key, name),
    /// and the time of the timer after them: what to scan for next, in the same pass.
    ///
    /// The list ends after the first row of the timer table (a passivated instance's earliest
    /// timer): firing it activates the instance, whose other timers then join those in
    /// memory and may come before the rest of this list.
    pub fn due_timers(&self, upto: i64, limit: usize) -> Result<DueTimers, StorageError> {
        let upto = u64::from_be_bytes(TimerKey::time_prefix(upto));
        let time_of = |key: &[u8]| u64::from_be_bytes(key[..8].try_into().expect("a timer key"));
        // Both are sorted by key: merge them, a key in both once.
        let mut from = self.timers_from.borrow_mut();
        let mut stored = self
            .tables()
            .timers
            .range::<&[u8]>(from.as_slice()..)?
            .peekable();
        let mut resident = self.resident_timers.iter().peekable();
        let mut due = DueTimers::default();
        let mut leading = true;
        // The list has a passivated instance's timer: it ends there.
        let mut woke = false;
        loop {
            // Rows deleted in this interval are not there any more.
            while let Some(Ok((key, _))) = stored.peek() {
                let deleted = self.deleted_timers.contains(key.value());
                if leading {
                    // The next scan starts at this row, or just after it if it is deleted.
                    from.clear();
                    from.extend_from_slice(key.value());
                    if deleted {
                        from.push(0);
                    }
                }
                if !deleted {
                    break;
                }
                stored.next();
            }
            leading = false;
            if let Some(Err(_)) = stored.peek() {
                stored.next().expect("peeked")?;
            }
            let (order, time) = match (stored.peek(), resident.peek()) {
                (None, None) => break,
                (Some(Ok((key, _))), None) => (Ordering::Less, time_of(key.value())),
                (None, Some(set_key)) => (Ordering::Greater, set_key.time),
                (Some(Ok((key, _))), Some(set_key)) => {
                    let order = set_key.cmp_key(key.value()).reverse();
                    (order, time_of(key.value()).min(set_key.time))
                }
                (Some(Err(_)), _) => unreachable!("returned above"),
            };
            if time > upto || due.timers.len() == limit || woke {
                due.next = Some(TimerKey::decode_time(time));
                break;
            }
            if order == Ordering::Equal {
                resident.next();
            }
            let timer = if order != Ordering::Greater {
                // Only in the table (not of an instance in memory): a passivated instance's.
                woke = order == Ordering::Less;
                let (key, _) = stored.next().expect("peeked")?;
                TimerKey::decode(key.value())?
            } else {
                resident.next().expect("peeked").decode()?
            };
            due.timers.push(timer);
        }
        Ok(due)
    }

    /// The template and key of each of the first `n` timers in memory (those of the instances
    /// in memory), earliest first. After a [`ShardTxn::due_timers`] scan and the removal of
    /// the timers it found, these are the next to be due: a shard asks the CPU for their
    /// instances ahead.
    pub fn upcoming_timers(&self, n: usize) -> impl Iterator<Item = (u16, &str)> {
        self.resident_timers
            .by_time
            .values()
            .flatten()
            .take(n)
            .filter_map(|rest| TimerKey::instance_of_rest(rest))
    }

    /// The earliest timer, if any.
    pub fn next_timer(&self) -> Result<Option<i64>, StorageError> {
        let due = self.due_timers(i64::MIN, 0)?;
        Ok(due.next)
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.tables().meta.get(name)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub fn put_meta(&mut self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.tables_mut().meta.insert(name, bytes)?;
        Ok(())
    }

    /// Bytes in the log, counting what this interval wrote so far.
    pub fn log_bytes(&self) -> u64 {
        let chunks: u64 = self.chunks.iter().map(|&(_, bytes)| bytes).sum();
        chunks + self.entry.len() as u64
    }

    /// The sequence number of the log's oldest chunk (of the entry being written if there is
    /// none): where the index of [`ShardTxn::compact_log`]'s `live_in` starts.
    pub fn log_first_seq(&self) -> u64 {
        self.chunks.front().map_or(self.next_seq, |&(seq, _)| seq)
    }

    /// Compacts the log: drops its oldest chunks at the commit, and returns the sequence
    /// number of the first chunk it keeps. The caller must log again, in this checkpoint,
    /// every instance whose latest record is in a chunk before it, and must call this before
    /// logging the checkpoint's records.
    ///
    /// `live_in[i]` is how many bytes of latest records chunk `log_first_seq() + i` holds (the
    /// last index: the entry being written). Of the cuts that drop at least half the log, it
    /// takes the one that logs again the fewest live bytes per byte dropped ([`log::cut`]).
    /// Where instances leave the log in the order they came (new keys, passivated in turn), the
    /// oldest chunks hold almost nothing live, and a compaction copies almost nothing; a cut
    /// of the whole log is always among the choices, so it never copies more than the live
    /// bytes.
    pub fn compact_log(&mut self, live_in: &[u64]) -> Result<u64, StorageError> {
        self.write_chunk()?; // every record in a chunk: the whole log can be dropped
        let dropped = log::cut(&self.chunks, live_in);
        self.chunks.drain(..dropped);
        let keep_from = self.log_first_seq();
        self.drop_chunks_before = Some(keep_from);
        Ok(keep_from)
    }

    /// Appends one record to the entry with `append`. If it takes the entry past
    /// [`CHUNK_BYTES`], the entry before it becomes a chunk and the record starts the next.
    /// (Only a record larger than a chunk makes one larger.)
    fn append_to_log(&mut self, append: impl FnOnce(&mut Vec<u8>)) -> Result<(), StorageError> {
        let start = self.entry.len();
        append(&mut self.entry);
        if self.entry.len() > CHUNK_BYTES && start > 0 {
            self.write_chunk_of(start)?;
        }
        Ok(())
    }

    fn write_chunk(&mut self) -> Result<(), StorageError> {
        self.write_chunk_of(self.entry.len())
    }

    /// Makes the entry's first `len` bytes (whole records) the next chunk, to be inserted
    /// into the log table at the commit, or now if more than [`PENDING_CHUNKS`] wait.
    fn write_chunk_of(&mut self, len: usize) -> Result<(), StorageError> {
        if len == 0 {
            return Ok(());
        }
        let rest = self.entry.len() - len;
        // Room for a chunk and the record that takes it past `CHUNK_BYTES`.
        let mut next = Vec::with_capacity((CHUNK_BYTES + 64 * 1024).max(rest));
        next.extend_from_slice(&self.entry[len..]);
        let mut chunk = std::mem::replace(&mut self.entry, next);
        chunk.truncate(len);
        self.pending_chunks.push((self.next_seq, chunk));
        self.chunks.push_back((self.next_seq, len as u64));
        self.next_seq += 1;
        if self.pending_chunks.len() > PENDING_CHUNKS {
            self.insert_pending_chunks()?;
        }
        Ok(())
    }

    fn insert_pending_chunks(&mut self) -> Result<(), StorageError> {
        for (seq, chunk) in std::mem::take(&mut self.pending_chunks) {
            self.tables_mut().log.insert(seq, chunk.as_slice())?;
        }
        Ok(())
    }

    /// Commits every change durably (fsync): this is the checkpoint. The transaction goes on
    /// with the next interval.
    pub fn commit(&mut self) -> Result<(), StorageError> {
        for key in std::mem::take(&mut self.deleted_instances) {
            self.tables_mut().instances.remove(key.as_slice())?;
        }
        for key in std::mem::take(&mut self.deleted_timers) {
            self.tables_mut().timers.remove(key.as_slice())?;
        }
        self.timers_from.get_mut().clear();
        self.write_chunk()?;
        if let Some(start) = self.drop_chunks_before.take() {
            // Chunks the compaction dropped: those still waiting are not inserted only to be
            // deleted.
            self.pending_chunks.retain(|(seq, _)| *seq >= start);
            self.tables_mut().log.retain_in(..start, |_, _| false)?;
        }
        self.insert_pending_chunks()?;
        self.take_txn().commit()?;
        self.open_tables()
    }
}

impl Drop for ShardTxn {
    /// Without a commit: closes the tables, then drops (aborts) the transaction.
    fn drop(&mut self) {
        drop(self.tables.take());
        if let Some(txn) = self.txn.take() {
            // SAFETY: as in `take_txn`.
            drop(unsafe { Box::from_raw(txn.as_ptr()) });
        }
    }
}

/// A read-only view of a shard's last checkpoint, logged and passivated instances together,
/// for summaries, snapshots and tests.
pub struct ShardReader {
    txn: ReadTransaction,
    /// The log's instances: encoded id → latest record.
    log: HashMap<Vec<u8>, LoggedRecord>,
    log_bytes: u64,
}

impl ShardReader {
    pub fn instance(&self, id: &InstanceId) -> Result<Option<Vec<u8>>, StorageError> {
        let encoded = id.encode();
        if let Some(logged) = self.log.get(encoded.as_slice()) {
            return Ok(Some(logged.record.clone()));
        }
        let table = self.txn.open_table(INSTANCES)?;
        let value = table.get(encoded.as_slice())?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Every instance of the shard with its encoded record, in id order.
    pub fn instances(&self) -> Result<Vec<(InstanceId, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        self.for_each_encoded(|id, record| {
            out.push((InstanceId::decode(id)?, record.to_vec()));
            Ok(())
        })?;
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Calls `f` with every instance's encoded record, holding one at a time (passivated
    /// ones in id order, then logged ones).
    pub fn for_each_instance(
        &self,
        mut f: impl FnMut(&[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.for_each_encoded(|_, record| f(record))
    }

    fn for_each_encoded(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let table = self.txn.open_table(INSTANCES)?;
        for entry in table.iter()? {
            let (id, record) = entry?;
            // A logged instance's stored record is an older one.
            if !self.log.contains_key(id.value()) {
                f(id.value(), record.value())?;
            }
        }
        for (id, logged) in &self.log {
            f(id, &logged.record)?;
        }
        Ok(())
    }

    /// The size of the log: what recovering the shard reads.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    pub fn instance_count(&self) -> Result<u64, StorageError> {
        let mut count = 0;
        self.for_each_encoded(|_, _| {
            count += 1;
            Ok(())
        })?;
        Ok(count)
    }

    /// The timers in the timer table (a passivated instance's earliest; its others are in
    /// its record) and the logged instances' timers, in key (time) order.
    pub fn timers(&self) -> Result<Vec<TimerKey>, StorageError> {
        let mut out = Vec::new();
        for key in self.timer_keys()? {
            out.push(TimerKey::decode(&key)?);
        }
        Ok(out)
    }

    fn timer_keys(&self) -> Result<BTreeSet<Vec<u8>>, StorageError> {
        let mut keys = BTreeSet::new();
        for entry in self.txn.open_table(TIMERS)?.iter()? {
            let (key, _) = entry?;
            keys.insert(key.value().to_vec());
        }
        for (id, logged) in &self.log {
            keys.extend(logged.timer_keys(id));
        }
        Ok(keys)
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let table = self.txn.open_table(META)?;
        let value = table.get(name)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Writes this checkpoint, compacted, to a new database at `path` (a shard snapshot):
    /// every instance passivated (the log empty), to `path` + `.tmp` first, synced, then
    /// renamed, so `path` is always a whole snapshot. Returns the snapshot's size in bytes.
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
                self.for_each_encoded(|id, record| {
                    instances.insert(id, record)?;
                    Ok(())
                })?;
                // As passivation writes them: each instance's earliest timer.
                let mut timers = txn.open_table(TIMERS)?;
                for entry in self.txn.open_table(TIMERS)?.iter()? {
                    timers.insert(entry?.0.value(), ())?;
                }
                for (id, logged) in &self.log {
                    if let Some(key) = logged.timer_keys(id).min() {
                        timers.insert(key.as_slice(), ())?;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Resident timers sort exactly as their encoded keys do in the timer table, which
        /// `due_timers` relies on to merge the two.
        #[test]
        fn resident_timers_order_as_their_bytes(
            a in (any::<i64>(), 0u16..3, "[a-c]{0,3}", "[x-z]{0,2}"),
            b in (any::<i64>(), 0u16..3, "[a-c]{0,3}", "[x-z]{0,2}"),
            same_time in any::<bool>(),
        ) {
            let b_time = if same_time { a.0 } else { b.0 };
            let parts = TimerRef { time: a.0, template: a.1, key: &a.2, name: &a.3 };
            let a = TimerKey::encode_parts(a.0, a.1, a.2.as_bytes(), &a.3);
            prop_assert_eq!(ResidentTimer::of(parts), ResidentTimer::from_key(&a));
            let b = TimerKey::encode_parts(b_time, b.1, b.2.as_bytes(), &b.3);
            let expected = a.as_slice().cmp(b.as_slice());
            let (ra, rb) = (ResidentTimer::from_key(&a), ResidentTimer::from_key(&b));
            prop_assert_eq!(ra.cmp(&rb), expected);
            prop_assert_eq!(ra.as_parts().cmp_key(&b), expected);
            prop_assert_eq!(ra.as_parts().decode().unwrap(), TimerKey::decode(&a).unwrap());
            let decoded = TimerKey::decode(&a).unwrap();
            prop_assert_eq!(
                TimerKey::instance_of_rest(&a[8..]),
                Some((decoded.template, &*decoded.key))
            );
        }

        /// Resident timers hold what a set of their encoded keys holds, in its order, through
        /// any inserts and removes (many of one time among them).
        #[test]
        fn resident_timers_are_a_set_in_key_order(
            ops in prop::collection::vec((any::<bool>(), 0i64..4, "[a-c]{0,2}", "[x-y]{0,1}"), 0..200),
        ) {
            let mut timers = ResidentTimers::default();
            let mut model = BTreeSet::new();
            for (insert, time, key, name) in ops {
                let key = TimerKey::encode_parts(time, 0, key.as_bytes(), &name);
                let timer = ResidentTimer::from_key(&key);
                match insert {
                    true => prop_assert_eq!(timers.insert(timer), model.insert(key)),
                    false => prop_assert_eq!(timers.remove(&timer), model.remove(&key)),
                }
            }
            let keys: Vec<Vec<u8>> = timers
                .iter()
                .map(|t| [&t.time.to_be_bytes()[..], t.rest].concat())
                .collect();
            prop_assert_eq!(keys, model.into_iter().collect::<Vec<_>>());
            prop_assert!(timers.by_time.values().all(|rests| !rests.is_empty()));
        }
    }

    /// A batch of passivations in any order, with keys among, equal to and above the stored
    /// ones, and a key named twice: every row ends as the batch's last word on it, in the
    /// table's order, before and after the commit.
    #[test]
    fn passivated_rows_land_whatever_their_order_and_the_last_of_a_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(&dir.path().join("shard.redb")).unwrap();
        let (mut txn, _) = store.begin().unwrap();
        let batch = |txn: &mut ShardTxn, rows: &[(&str, &str)]| {
            let ids: Vec<_> = rows
                .iter()
                .map(|(k, _)| InstanceId::new(1, *k).encode())
                .collect();
            let timers: Vec<[(TimerName, i64); 1]> = (rows.iter())
                .map(|(k, _)| [(TimerName::from("sla"), i64::from(k.as_bytes()[0]))])
                .collect();
            let passivations: Vec<Passivation> = (rows.iter().zip(&ids).zip(&timers))
                .map(|(((_, value), id), timers)| Passivation {
                    encoded_id: id,
                    record: Some(value.as_bytes()),
                    logged: false,
                    timers,
                })
                .collect();
            txn.passivate(&passivations).unwrap();
        };
        batch(&mut txn, &[("b", "b1"), ("d", "d1"), ("f", "f1")]);
        txn.commit().unwrap();
        let after = [
            ("g", "g1"),
            ("a", "a1"),
            ("d", "d2"),
            ("h", "h1"),
            ("e", "e1"),
        ];
        batch(&mut txn, &[&after[..], &[("g", "g22")]].concat());
        let expected = [
            ("a", "a1"),
            ("b", "b1"),
            ("d", "d2"),
            ("e", "e1"),
            ("f", "f1"),
            ("g", "g22"),
            ("h", "h1"),
        ];
        for (key, value) in expected {
            let found = txn.instance(&InstanceId::new(1, key)).unwrap();
            assert_eq!(found.as_deref(), Some(value.as_bytes()), "{key}");
        }
        txn.commit().unwrap();
        drop(txn);
        let read = store.read().unwrap();
        let rows: Vec<(String, Vec<u8>)> = (read.instances().unwrap().into_iter())
            .map(|(id, record)| (id.key.to_string(), record))
            .collect();
        let expected: Vec<(String, Vec<u8>)> = (expected.iter())
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(rows, expected);
        // One timer row per instance (g's two rows are one key).
        let times: Vec<i64> = read.timers().unwrap().iter().map(|t| t.time).collect();
        let keys: Vec<i64> = expected
            .iter()
            .map(|(k, _)| i64::from(k.as_bytes()[0]))
            .collect();
        assert_eq!(times, keys);
    }

    /// A lookup skips the instance table only for an id above every stored id of its
    /// template: a passivation raises the bound read before it, each template has its own,
    /// and a store opened again reads its bounds from the table.
    #[test]
    fn lookups_above_the_stored_ids_skip_the_table_and_miss_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(&dir.path().join("shard.redb")).unwrap();
        let id = |template: u16, key: &str| InstanceId::new(template, key);
        let found = |txn: &ShardTxn, template, key| txn.instance(&id(template, key)).unwrap();
        let (mut txn, _) = store.begin().unwrap();
        assert_eq!(found(&txn, 1, "b"), None); // bound read: no id of template 1
        let last = u16::MAX; // its ids have no next template's ids above them
        assert_eq!(found(&txn, last, "a"), None);
        let passivated = [
            (1, "b"),
            (1, "d"),
            (0, "z"),
            (2, "a"),
            (1, "a"),
            (last, "m"),
        ];
        for (template, key) in passivated {
            txn.passivate(&[Passivation {
                encoded_id: &id(template, key).encode(),
                record: Some(key.as_bytes()),
                logged: false,
                timers: &[],
            }])
            .unwrap();
            assert_eq!(found(&txn, template, key).as_deref(), Some(key.as_bytes()));
        }
        assert_eq!(found(&txn, 1, "c"), None); // below the bound: looked up
        assert_eq!(found(&txn, 1, "e"), None); // above it
        let bound = |txn: &ShardTxn, template: usize| txn.stored_bound.borrow()[template].clone();
        assert_eq!(bound(&txn, 1), Some(Some(id(1, "d").encode().to_vec())));
        txn.commit().unwrap();
        drop(txn);

        let (txn, _) = store.begin().unwrap();
        for (template, key) in passivated {
            assert_eq!(found(&txn, template, key).as_deref(), Some(key.as_bytes()));
        }
        assert_eq!(found(&txn, 1, "e"), None);
        assert_eq!(found(&txn, last, "z"), None);
        let last_bound = txn.stored_bound.borrow()[usize::from(last)].clone();
        assert_eq!(last_bound, Some(Some(id(last, "m").encode().to_vec())));
        assert_eq!(found(&txn, 3, "a"), None);
        assert_eq!(bound(&txn, 0), Some(Some(id(0, "z").encode().to_vec())));
        assert_eq!(bound(&txn, 1), Some(Some(id(1, "d").encode().to_vec())));
        assert_eq!(bound(&txn, 3), Some(None));
    }

    /// Chunks wait for the commit, at most [`PENDING_CHUNKS`] of them: a long interval's log
    /// goes into the table as it grows instead of piling up in memory.
    #[test]
    fn log_chunks_wait_for_the_commit_up_to_a_bound() {
        use redb::ReadableTableMetadata;
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(&dir.path().join("shard.redb")).unwrap();
        let (mut txn, _) = store.begin().unwrap();
        let record = vec![1u8; 10_000];
        let mut waited = 0;
        // About 100 records a chunk: PENDING_CHUNKS + 4 chunks.
        for i in 0..(PENDING_CHUNKS + 4) * 100 {
            let id = InstanceId::new(0, format!("order-{i}"));
            txn.log_instance(&id, &record, false, &[]).unwrap();
            assert!(txn.pending_chunks.len() <= PENDING_CHUNKS);
            waited = waited.max(txn.pending_chunks.len());
        }
        assert_eq!(waited, PENDING_CHUNKS);
        let in_table = txn.tables().log.len().unwrap();
        assert!(in_table > 0);
        assert_eq!(in_table + txn.pending_chunks.len() as u64, txn.next_seq);
        txn.commit().unwrap();
        assert!(txn.pending_chunks.is_empty());
        assert_eq!(txn.tables().log.len().unwrap(), txn.next_seq);
        drop(txn);
        let (_, logged) = store.begin().unwrap();
        assert_eq!(logged.len(), (PENDING_CHUNKS + 4) * 100);
    }

    /// Log chunks stay within [`CHUNK_BYTES`] (a 1 MiB page in redb), except a chunk of one
    /// larger record, and every record comes back from them in order.
    #[test]
    fn log_chunks_stay_within_a_page_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(&dir.path().join("shard.redb")).unwrap();
        let (mut txn, logged) = store.begin().unwrap();
        assert!(logged.is_empty());
        let record = |i: usize| vec![(i % 251) as u8; 900 + i % 200];
        let large = vec![9u8; CHUNK_BYTES + 10];
        let large_id = InstanceId::new(1, "large");
        for i in 0..4000 {
            let id = InstanceId::new(0, format!("order-{i}"));
            txn.log_instance(&id, &record(i), false, &[]).unwrap();
            if i == 2000 {
                txn.log_instance(&large_id, &large, false, &[]).unwrap();
            }
        }
        txn.commit().unwrap();
        drop(txn);

        let read = store.db.begin_read().unwrap();
        let chunks: Vec<usize> = read
            .open_table(LOG)
            .unwrap()
            .iter()
            .unwrap()
            .map(|row| row.unwrap().1.value().len())
            .collect();
        let oversized: Vec<usize> = chunks
            .iter()
            .copied()
            .filter(|&n| n > CHUNK_BYTES)
            .collect();
        // The large record alone: its put record is its bytes plus the id and lengths.
        assert_eq!(oversized.len(), 1, "chunks: {chunks:?}");
        assert!(oversized[0] < large.len() + 64, "chunks: {chunks:?}");
        // 4000 records of about 1 KiB (4.2 MB): four chunks, each written when the next
        // record would not fit, but the one the large record cut short and the last.
        assert_eq!(chunks.len(), 5, "chunks: {chunks:?}");
        let full = chunks
            .iter()
            .filter(|&&n| n > CHUNK_BYTES - 1100 && n <= CHUNK_BYTES);
        assert_eq!(full.count(), 2, "chunks: {chunks:?}");

        let (_, logged) = store.begin().unwrap();
        assert_eq!(logged.len(), 4001);
        for instance in logged {
            let expected = match instance.id.key.strip_prefix("order-") {
                Some(i) => record(i.parse().unwrap()),
                None => large.clone(),
            };
            assert_eq!(instance.record, expected, "{:?}", instance.id);
        }
    }
}
