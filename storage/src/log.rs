//! The instance log: how a checkpoint writes the instances a shard keeps in memory.
//!
//! The shard appends the record of every instance a batch of events changed, in chunks of at
//! most [`CHUNK_BYTES`], each under the next sequence number of the `log` table, in the
//! write transaction the next checkpoint commits (which inserts them). Writing them is one
//! sequential append; putting each into the instance B-tree cost a copy-on-write leaf per
//! instance per checkpoint (about 6 µs each, half the throughput of
//! the full topology with 1 s checkpoints). An instance leaves the log when it ends or when
//! the shard passivates it into the instance table. A checkpoint whose log has grown well past
//! what is live compacts it: it drops the oldest chunks and logs again the instances whose
//! latest records were in them (see [`crate::ShardTxn::compact_log`]).
//!
//! Records, one after another in a chunk (integers little-endian):
//!
//! ```text
//! put:    1, id length u32, id, stored u8, record length u32, record,
//!         timer count u32, (time i64, name length u32, name) per timer
//! forget: 2, id length u32, id
//! ```
//!
//! `stored` says the instance table holds an older record of the instance (it was passivated
//! and activated again), which must be deleted when the instance ends.

use std::collections::VecDeque;

use foldhash::HashMap;

use crate::keys::{InstanceId, TimerKey};
use crate::StorageError;

/// The most a chunk holds, unless it is one record larger than this: a chunk is written when
/// the next record would take it past this size. With redb's leaf header and its key (16
/// bytes) it fits a 1 MiB page; a chunk of 1 MiB or more took a 2 MiB page, whose unused half
/// was zeroed and written to disk as well.
pub(crate) const CHUNK_BYTES: usize = (1 << 20) - 4096;

const PUT: u8 = 1;
const FORGET: u8 = 2;

/// An instance's latest record in the log.
#[derive(Debug, Clone)]
pub(crate) struct LoggedRecord {
    pub record: Vec<u8>,
    /// The sequence number of the chunk that holds it.
    pub seq: u64,
    pub stored: bool,
    /// The instance's timers, `(time, name)`.
    pub timers: Vec<(i64, String)>,
}

impl LoggedRecord {
    /// The encoded [`TimerKey`]s of the instance whose encoded id is `id`.
    pub fn timer_keys<'a>(&'a self, id: &'a [u8]) -> impl Iterator<Item = Vec<u8>> + 'a {
        self.timers.iter().map(move |(time, name)| {
            TimerKey::encode_parts(*time, u16::from_be_bytes([id[0], id[1]]), &id[2..], name)
        })
    }
}

/// Appends a put record of the instance `id`.
pub(crate) fn put<'a>(
    out: &mut Vec<u8>,
    id: &InstanceId,
    record: &[u8],
    stored: bool,
    timers: impl ExactSizeIterator<Item = (i64, &'a str)>,
) {
    out.push(PUT);
    out.extend_from_slice(&(id.encoded_len() as u32).to_le_bytes());
    id.encode_into(out);
    out.push(stored as u8);
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(record);
    out.extend_from_slice(&(timers.len() as u32).to_le_bytes());
    for (time, name) in timers {
        out.extend_from_slice(&time.to_le_bytes());
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
}

/// Appends a forget record.
pub(crate) fn forget(out: &mut Vec<u8>, id: &[u8]) {
    out.push(FORGET);
    out.extend_from_slice(&(id.len() as u32).to_le_bytes());
    out.extend_from_slice(id);
}

/// Where [`crate::ShardTxn::compact_log`] cuts the log: how many of its oldest `chunks`
/// (sequence number, bytes) to drop, given the bytes of latest records each holds
/// (`live_in`, in the same order), which must then be logged again. Of the cuts that drop at
/// least half the log's bytes, the one with the fewest live bytes per byte dropped; of equal
/// ones, the one that drops more.
pub(crate) fn cut(chunks: &VecDeque<(u64, u64)>, live_in: &[u64]) -> usize {
    let total: u64 = chunks.iter().map(|&(_, bytes)| bytes).sum();
    let (mut dropped, mut live) = (0u64, 0u64);
    let mut best: Option<(usize, u64, u64)> = None;
    for (i, &(_, bytes)) in chunks.iter().enumerate() {
        dropped += bytes;
        live += live_in.get(i).copied().unwrap_or(0);
        if 2 * dropped < total {
            continue;
        }
        let better = best.is_none_or(|(_, best_dropped, best_live)| {
            u128::from(live) * u128::from(best_dropped)
                <= u128::from(best_live) * u128::from(dropped)
        });
        if better {
            best = Some((i + 1, dropped, live));
        }
    }
    best.map_or(chunks.len(), |(count, _, _)| count)
}

/// Applies the records of one chunk, number `seq`, in order, to `live` (encoded id → latest
/// record).
pub(crate) fn replay(
    seq: u64,
    chunk: &[u8],
    live: &mut HashMap<Vec<u8>, LoggedRecord>,
) -> Result<(), StorageError> {
    let mut reader = Reader { bytes: chunk };
    while !reader.bytes.is_empty() {
        let tag = reader.take(1)?[0];
        let id_len = reader.u32()? as usize;
        if id_len < 2 {
            return Err(corrupt()); // an id starts with its template number
        }
        let id = reader.take(id_len)?.to_vec();
        match tag {
            PUT => {
                let stored = reader.take(1)?[0] != 0;
                let record_len = reader.u32()? as usize;
                let record = reader.take(record_len)?.to_vec();
                let count = reader.u32()? as usize;
                let mut timers = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    let time = i64::from_le_bytes(reader.take(8)?.try_into().expect("8 bytes"));
                    let name_len = reader.u32()? as usize;
                    let name = std::str::from_utf8(reader.take(name_len)?)
                        .map_err(|_| corrupt())?
                        .to_owned();
                    timers.push((time, name));
                }
                live.insert(
                    id,
                    LoggedRecord {
                        record,
                        seq,
                        stored,
                        timers,
                    },
                );
            }
            FORGET => {
                live.remove(&id);
            }
            _ => return Err(corrupt()),
        }
    }
    Ok(())
}

fn corrupt() -> StorageError {
    StorageError::CorruptKey { table: "log" }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StorageError> {
        if self.bytes.len() < n {
            return Err(corrupt());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, StorageError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_records_replace_earlier_ones_and_forgets_remove_them() {
        let mut chunk = Vec::new();
        let (a, b) = (InstanceId::new(0, "a"), InstanceId::new(0, "b"));
        put(&mut chunk, &a, b"v1", false, [(5, "sla")].into_iter());
        put(&mut chunk, &b, b"b1", true, std::iter::empty());
        put(
            &mut chunk,
            &a,
            b"v2",
            true,
            [(7, "x"), (9, "y")].into_iter(),
        );
        forget(&mut chunk, &b.encode());
        let mut live = HashMap::default();
        replay(3, &chunk, &mut live).unwrap();
        assert_eq!(live.len(), 1);
        // A put names the instance as `InstanceId::encode` does.
        assert_eq!(a.encode()[..], *b"\0\0a");
        let a = &live[&b"\0\0a"[..]];
        assert_eq!(a.record, b"v2");
        assert_eq!(a.seq, 3);
        assert!(a.stored);
        assert_eq!(a.timers, vec![(7, "x".to_owned()), (9, "y".to_owned())]);
        // A truncated chunk is reported, not half-applied silently.
        assert!(replay(3, &chunk[..chunk.len() - 1], &mut HashMap::default()).is_err());
    }

    fn chunks(sizes: &[u64]) -> VecDeque<(u64, u64)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &b)| (10 + i as u64, b))
            .collect()
    }

    #[test]
    fn a_cut_drops_at_least_half_and_copies_the_least_live_per_byte_dropped() {
        // Instances that leave in the order they came: the old chunks are dead, the new ones
        // live. The cut drops every dead chunk and copies nothing.
        let fifo = chunks(&[100, 100, 100, 100, 100, 100]);
        assert_eq!(cut(&fifo, &[0, 0, 0, 0, 40, 100]), 4);
        // A cold instance in the first chunk: every cut copies it; the cut before the last
        // chunk copies only it, 30 bytes for 500 dropped (the whole log: 60 for 600).
        assert_eq!(cut(&fifo, &[30, 0, 0, 0, 0, 30]), 5);
        assert_eq!(cut(&fifo, &[30, 0, 0, 0, 0, 0]), 6);
        // Never less than half, even where the first chunk alone is dead.
        assert_eq!(cut(&fifo, &[0, 50, 50, 50, 50, 50]), 3);
        // Every chunk live alike: the whole log (the ratio ties, the larger cut wins).
        assert_eq!(cut(&fifo, &[50; 6]), 6);
        // Half the bytes in one big chunk.
        assert_eq!(cut(&chunks(&[300, 100, 100, 100]), &[0, 100, 100, 100]), 1);
        assert_eq!(cut(&VecDeque::new(), &[0]), 0);
    }
}
