//! Durable shard state for Vigil.
//!
//! Each shard of a job owns one redb database file. It holds the shard's process instances,
//! their durable timers and the shard's metadata (source position, watermark, output sequence),
//! and every change between two checkpoints is made in one write transaction, so a checkpoint
//! commits state, timers and source position atomically. The instances a shard keeps in
//! memory are written to an append-only log ([`ShardTxn::log_instance`]); the ones it drops
//! from memory go to B-tree tables ([`ShardTxn::passivate`]).
//!
//! ```
//! use vigil_storage::{InstanceId, ShardStore, TimerKey, TimerName};
//! let dir = tempfile::tempdir().unwrap();
//! let store = ShardStore::open(&dir.path().join("shard-0000.redb")).unwrap();
//! let (mut txn, logged) = store.begin().unwrap();
//! assert!(logged.is_empty());
//! let order = InstanceId::new(0, "ORD-1");
//! let timers = [(TimerName::from("sla"), 1_000)];
//! txn.set_timer(&TimerKey::new(1_000, 0, "ORD-1", "sla")).unwrap();
//! txn.log_instance(&order, b"state", false, &timers).unwrap();
//! txn.put_meta("position", &vigil_storage::codec::encode(&42u64)).unwrap();
//! txn.commit().unwrap();
//! drop(txn);
//! let (txn, logged) = store.begin().unwrap();
//! assert_eq!(logged[0].record, b"state");
//! assert_eq!(txn.due_timers(1_000, 10).unwrap().timers.len(), 1);
//! ```
//!
//! Values are encoded by [`codec`]: bincode 2 behind a format-version byte.

pub mod codec;
mod error;
mod keys;
mod log;
mod store;

pub use codec::{CodecError, FORMAT_VERSION};
pub use error::StorageError;
pub use keys::{InstanceId, TimerKey, TimerName, TimerRef};
pub use store::{
    DueTimers, LoggedInstance, Passivation, PinnedCheckpoint, ShardReader, ShardStore, ShardTxn,
};
