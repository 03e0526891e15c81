//! Vigil's runtime: shard actors hosting keyed process instances as virtual actors.
//!
//! A job has a fixed number of shards (key groups). A key goes to the shard Kafka's default
//! partitioner would pick ([`hash::shard_of`]). Each shard is an actix actor that owns one
//! redb file ([`vigil_storage`]) and hosts the instances of its keys: an instance is activated
//! by its first event, runs its [`template::Template`] one event at a time, keeps durable
//! timers, is passivated when idle and deleted when it ends. See `docs/architecture.md`.
//!
//! ```no_run
//! # fn spec() -> vigil_actors::spec::JobSpec { unimplemented!() }
//! let summary = vigil_actors::job::run(spec(), vigil_actors::job::RunOptions::default()).unwrap();
//! println!("{} lines, {} records", summary.counts.read, summary.counts.records);
//! ```

pub mod enrich;
pub mod event;
pub mod expr;
pub mod gate;
pub mod hash;
pub mod job;
pub mod payload;
pub mod prefetch;
pub mod record;
pub mod registry;
pub mod shard;
pub mod shop;
pub mod sink;
pub mod source;
pub mod spec;
pub mod sync;
pub mod template;
pub mod templates;
pub mod time;
