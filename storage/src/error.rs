use crate::codec::CodecError;

/// Every failure of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open state file {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("state transaction failed: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("state table failed: {0}")]
    Table(#[from] redb::TableError),
    #[error("state read or write failed: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("checkpoint commit failed: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("corrupt key in table {table}")]
    CorruptKey { table: &'static str },
    #[error(transparent)]
    Codec(#[from] CodecError),
}
