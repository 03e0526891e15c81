//! Durable shard state for Vigil.
//!
//! Each shard of a job owns one redb database file. It holds the shard's process instances,
//! their durable timers and the shard's metadata (source position, watermark, output sequence),
//! and every change between two checkpoints is made in one write transaction, so a checkpoint
//! commits state, timers and source position atomically.
//!
//! ```
//! use vigil_storage::{ShardStore, InstanceId, TimerKey};
//! let dir = tempfile::tempdir().unwrap();
//! let store = ShardStore::open(&dir.path().join("shard-0000.redb")).unwrap();
//! let mut txn = store.begin().unwrap();
//! let order = InstanceId::new(0, "ORD-1");
//! txn.put_instance(&order, b"state").unwrap();
//! txn.set_timer(&TimerKey::new(1_000, 0, "ORD-1", "sla")).unwrap();
//! txn.put_meta("position", &vigil_storage::codec::encode(&42u64)).unwrap();
//! txn.commit().unwrap();
//! let txn = store.begin().unwrap();
//! assert_eq!(txn.due_timers(1_000, 10).unwrap().len(), 1);
//! ```
//!
//! Values are encoded by [`codec`]: bincode 2 behind a format-version byte.

pub mod codec;
mod error;
mod keys;
mod store;

pub use codec::{CodecError, FORMAT_VERSION};
pub use error::StorageError;
pub use keys::{InstanceId, TimerKey};
pub use store::{ShardReader, ShardStore, ShardTxn};
