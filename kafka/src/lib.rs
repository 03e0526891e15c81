//! Kafka for Vigil: a job's nodes form one consumer group and Kafka assigns them shards.
//!
//! - [`ingest`] reads the input topics and forwards each record to the repartition topic's
//!   partition of every shard it goes to (the partitions are the shards; the same murmur2 hash
//!   as the embedded runtime and Kafka's default partitioner).
//! - [`node`] consumes the repartition topic: the partitions Kafka assigns this node (eager
//!   rebalancing by default, static membership with `instance_id`) are the shards it hosts,
//!   as the same shard actors the embedded runtime uses, with their redb state.
//! - [`sink::KafkaSink`] produces outputs exactly once with an idempotent producer: ids
//!   `job/shard/seq`, read back after a takeover.
//! - [`snapshot`] exports shard state to a shared directory and restores from it.
//!
//! The protocol and its failure cases: `docs/exactly-once.md`.

pub mod client;
pub mod ingest;
pub mod node;
pub mod protocol;
pub mod sink;
pub mod snapshot;
pub mod tools;

pub use node::run;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Topology(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] vigil_storage::StorageError),
    #[error(transparent)]
    Codec(#[from] vigil_storage::CodecError),
    #[error(transparent)]
    Run(#[from] vigil_actors::job::RunError),
    #[error("shard: {0}")]
    Shard(String),
}
