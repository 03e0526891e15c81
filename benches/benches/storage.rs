//! Shard storage: the codec on an instance record, the checkpoint (log N dirty instances +
//! commit, against putting them into the instance B-tree as passivation does), durable timers
//! (set, fire) and instance activation (lookup among 100k).
//!
//! The databases live in a temporary directory: put `TMPDIR` on the volume the state will use
//! to measure its fsync cost.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use redb::ReadableTable;
use vigil_actors::templates::process::ProcessState;
use vigil_benches::{example_spec, open_order, shop_lines, InstanceRecord};
use vigil_storage::{codec, InstanceId, Passivation, ShardStore, ShardTxn, TimerKey, TimerName};

/// An instance id shaped like the example's (the `order` process, an order number).
fn order_id(i: u64) -> InstanceId {
    InstanceId::new(0, format!("ORD-{:010}", 1_000_000 + i))
}

/// An instance to passivate that the log does not hold.
fn unlogged<'a>(
    encoded_id: &'a [u8],
    record: Option<&'a [u8]>,
    timers: &'a [(TimerName, i64)],
) -> Passivation<'a> {
    Passivation {
        encoded_id,
        record,
        logged: false,
        timers,
    }
}

/// Raw redb with the shard's table layout, for the ceilings: what the same work costs with each
/// table opened once per transaction instead of once per `ShardTxn` call.
mod raw {
    use redb::TableDefinition;

    pub const INSTANCES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("instances.v1");
    pub const TIMERS: TableDefinition<&[u8], ()> = TableDefinition::new("timers.v1");

    /// `InstanceId` bytes: template u16 BE ++ key.
    pub fn instance_key(id: &vigil_storage::InstanceId) -> Vec<u8> {
        let mut out = id.template.to_be_bytes().to_vec();
        out.extend_from_slice(id.key.as_bytes());
        out
    }

    /// `TimerKey` bytes: sign-flipped time BE ++ template BE ++ key length BE ++ key ++ name.
    pub fn timer_key(t: &vigil_storage::TimerKey) -> Vec<u8> {
        let mut out = ((t.time as u64) ^ (1 << 63)).to_be_bytes().to_vec();
        out.extend_from_slice(&t.template.to_be_bytes());
        out.extend_from_slice(&(t.key.len() as u32).to_be_bytes());
        out.extend_from_slice(t.key.as_bytes());
        out.extend_from_slice(t.name.as_bytes());
        out
    }
}

/// The realistic encoded record of an open order, and the parts it is made of.
fn fixture() -> &'static (ProcessState, InstanceRecord, Vec<u8>) {
    static FIXTURE: OnceLock<(ProcessState, InstanceRecord, Vec<u8>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let spec = example_spec();
        let (state, record) = open_order(&spec, &shop_lines(20_000));
        let bytes = codec::encode(&record);
        (state, record, bytes)
    })
}

fn bench_codec(c: &mut Criterion) {
    let (state, record, bytes) = fixture();
    let mut group = c.benchmark_group("storage/codec");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    // As a checkpoint does: encode the template's state, then the record around it.
    group.bench_function("encode_instance", |b| {
        b.iter(|| {
            let stored = InstanceRecord {
                meta: record.meta.clone(),
                state: Some(codec::encode(black_box(state))),
            };
            codec::encode(&stored)
        })
    });
    // As an activation does: decode the record, then the template's state in it.
    group.bench_function("decode_instance", |b| {
        b.iter(|| {
            let stored: InstanceRecord = codec::decode(black_box(bytes.as_slice())).unwrap();
            let state: ProcessState = codec::decode(stored.state.as_deref().unwrap()).unwrap();
            (stored.meta, state)
        })
    });
    group.finish();
}

fn bench_checkpoint(c: &mut Criterion) {
    let (_, _, bytes) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("storage/checkpoint");
    group.measurement_time(Duration::from_secs(8));
    for n in [100u64, 1_000, 10_000] {
        let store = ShardStore::open(&dir.path().join(format!("checkpoint-{n}.redb"))).unwrap();
        let ids: Vec<InstanceId> = (0..n).map(order_id).collect();
        group.throughput(Throughput::Elements(n));
        let (mut txn, _) = store.begin().unwrap();
        // A checkpoint of N dirty instances, as the shard writes it: appended to the log.
        // (Each iteration drops the whole log: no record is live in it, so it stays the size
        // of one checkpoint.)
        group.bench_with_input(BenchmarkId::new("log_commit", n), &ids, |b, ids| {
            b.iter(|| {
                txn.compact_log(&[]).unwrap();
                for id in ids {
                    txn.log_instance(id, bytes, false, &[]).unwrap();
                }
                txn.put_meta("position", &codec::encode(&42u64)).unwrap();
                txn.commit().unwrap();
            })
        });
        // The same instances put into the instance B-tree (what passivating them does, and
        // what every checkpoint did before the log), in one call as a checkpoint makes it:
        // the first iteration inserts (through a cursor at the table's end), the others
        // update.
        let encoded: Vec<_> = ids.iter().map(InstanceId::encode).collect();
        group.bench_with_input(BenchmarkId::new("put_commit", n), &encoded, |b, encoded| {
            b.iter(|| {
                let batch: Vec<Passivation> = (encoded.iter())
                    .map(|id| unlogged(id, Some(bytes), &[]))
                    .collect();
                txn.passivate(&batch).unwrap();
                txn.put_meta("position", &codec::encode(&42u64)).unwrap();
                txn.commit().unwrap();
            })
        });
    }
    // Ceiling: the largest checkpoint with the table opened once.
    let n = 10_000u64;
    let db = redb::Database::create(dir.path().join("checkpoint-raw.redb")).unwrap();
    let keys: Vec<Vec<u8>> = (0..n).map(|i| raw::instance_key(&order_id(i))).collect();
    group.throughput(Throughput::Elements(n));
    group.bench_with_input(
        BenchmarkId::new("put_commit_raw_redb", n),
        &keys,
        |b, keys| {
            b.iter(|| {
                let txn = db.begin_write().unwrap();
                {
                    let mut table = txn.open_table(raw::INSTANCES).unwrap();
                    for key in keys {
                        table.insert(key.as_slice(), bytes.as_slice()).unwrap();
                    }
                }
                txn.commit().unwrap();
            })
        },
    );
    group.finish();
}

/// Timers per iteration of the timer benchmarks, over a background of pending ones.
const TIMER_BATCH: u64 = 1_000;
const PENDING_TIMERS: u64 = 10_000;

fn sla_timer(time: i64, i: u64) -> TimerKey {
    TimerKey::new(
        time,
        0,
        format!("ORD-{:010}", 1_000_000 + i),
        "sla:SLA_BREACHED",
    )
}

/// Runs `work` `iters` times, each in a transaction of its own that is dropped (rolled back)
/// afterwards, and returns the time spent in `work` alone.
fn timed_in_rollbacks(
    store: &ShardStore,
    iters: u64,
    mut work: impl FnMut(&mut ShardTxn),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (mut txn, _) = store.begin().unwrap();
        let start = Instant::now();
        work(&mut txn);
        total += start.elapsed();
    }
    total
}

fn bench_timers(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("timers.redb")).unwrap();
    // Pending timers of passivated orders, one second apart; the first TIMER_BATCH of them
    // are due at `due`.
    let (mut txn, _) = store.begin().unwrap();
    for i in 0..PENDING_TIMERS {
        let timer = sla_timer(i as i64 * 1_000, i);
        let timers = [(timer.name.as_str().into(), timer.time)];
        txn.passivate(&[unlogged(&order_id(i).encode(), None, &timers)])
            .unwrap();
    }
    txn.commit().unwrap();
    drop(txn);
    let due = (TIMER_BATCH as i64 - 1) * 1_000;
    let fresh: Vec<TimerKey> = (0..TIMER_BATCH)
        .map(|i| sla_timer(i as i64 * 1_000 + 500, PENDING_TIMERS + i))
        .collect();

    let mut group = c.benchmark_group("storage/timers");
    group.throughput(Throughput::Elements(TIMER_BATCH));
    // Only the operations are timed: each iteration begins its own transaction and drops it
    // afterwards (a rollback), so every iteration sees the same table. A timer of an instance
    // in memory is kept in memory (`set` times that; `set_raw_redb` is a B-tree insert, what
    // passivating the instance does with it).
    group.bench_function("set", |b| {
        b.iter_custom(|iters| {
            timed_in_rollbacks(&store, iters, |txn| {
                for timer in &fresh {
                    txn.set_timer(black_box(timer)).unwrap();
                }
            })
        })
    });
    // An order that completes while in memory: its SLA timer is set and removed, and never
    // written to the B-tree.
    group.bench_function("set_then_remove", |b| {
        b.iter_custom(|iters| {
            timed_in_rollbacks(&store, iters, |txn| {
                for timer in &fresh {
                    txn.set_timer(black_box(timer)).unwrap();
                }
                for timer in &fresh {
                    txn.remove_timer(black_box(timer)).unwrap();
                }
            })
        })
    });
    // Due timers of passivated instances, fired as the shard fires them: a scan ends after a
    // timer-table row (the wake-up that activates its instance, bringing its other timers into
    // memory), so it takes a scan per passivated instance, each starting after the rows
    // removed before it.
    group.bench_function("due_and_remove", |b| {
        b.iter_custom(|iters| {
            timed_in_rollbacks(&store, iters, |txn| {
                let mut fired = 0;
                while fired < TIMER_BATCH {
                    let timers = txn
                        .due_timers(black_box(due), TIMER_BATCH as usize)
                        .unwrap()
                        .timers;
                    assert!(!timers.is_empty(), "{fired} of {TIMER_BATCH} fired");
                    for timer in &timers {
                        txn.remove_timer(timer).unwrap();
                    }
                    fired += timers.len() as u64;
                }
                assert_eq!(fired, TIMER_BATCH);
            })
        })
    });
    // Ceiling: the same inserts with the timer table opened once.
    let raw_db = redb::Database::create(dir.path().join("timers-raw.redb")).unwrap();
    let raw_pending: Vec<Vec<u8>> = (0..PENDING_TIMERS)
        .map(|i| raw::timer_key(&sla_timer(i as i64 * 1_000, i)))
        .collect();
    let txn = raw_db.begin_write().unwrap();
    {
        let mut table = txn.open_table(raw::TIMERS).unwrap();
        for key in &raw_pending {
            table.insert(key.as_slice(), ()).unwrap();
        }
    }
    txn.commit().unwrap();
    let raw_fresh: Vec<Vec<u8>> = fresh.iter().map(raw::timer_key).collect();
    group.bench_function("set_raw_redb", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let txn = raw_db.begin_write().unwrap();
                let start = Instant::now();
                {
                    let mut table = txn.open_table(raw::TIMERS).unwrap();
                    for key in &raw_fresh {
                        table.insert(black_box(key.as_slice()), ()).unwrap();
                    }
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

const INSTANCES: u64 = 100_000;

fn bench_activation(c: &mut Criterion) {
    let (_, _, bytes) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("activation.redb")).unwrap();
    let (mut txn, _) = store.begin().unwrap();
    for i in 0..INSTANCES {
        txn.passivate(&[unlogged(&order_id(i).encode(), Some(bytes), &[])])
            .unwrap();
    }
    txn.commit().unwrap();
    drop(txn);
    // Existing keys in a scattered order (a full-period step through 0..INSTANCES).
    let probes: Vec<InstanceId> = (0..4_096u64)
        .map(|i| order_id((i * 7_919 + 13) % INSTANCES))
        .collect();

    let mut group = c.benchmark_group("storage/activation");
    group.throughput(Throughput::Elements(1));
    let (txn, _) = store.begin().unwrap();
    let mut next = 0;
    group.bench_function("lookup_of_100k", |b| {
        b.iter(|| {
            next = (next + 1) % probes.len();
            txn.instance(&probes[next])
                .unwrap()
                .expect("an existing key")
        })
    });
    group.bench_function("lookup_and_decode_of_100k", |b| {
        b.iter(|| {
            next = (next + 1) % probes.len();
            let bytes = txn
                .instance(&probes[next])
                .unwrap()
                .expect("an existing key");
            let stored: InstanceRecord = codec::decode(&bytes).unwrap();
            let state: ProcessState = codec::decode(stored.state.as_deref().unwrap()).unwrap();
            (stored.meta, state)
        })
    });
    drop(txn);
    // Ceiling: the same lookups in a copy of the table, opened once.
    let raw_db = redb::Database::create(dir.path().join("activation-raw.redb")).unwrap();
    let txn = raw_db.begin_write().unwrap();
    {
        let mut table = txn.open_table(raw::INSTANCES).unwrap();
        for i in 0..INSTANCES {
            table
                .insert(raw::instance_key(&order_id(i)).as_slice(), bytes.as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
    let raw_probes: Vec<Vec<u8>> = probes.iter().map(raw::instance_key).collect();
    let txn = raw_db.begin_write().unwrap();
    let table = txn.open_table(raw::INSTANCES).unwrap();
    group.bench_function("lookup_of_100k_raw_redb", |b| {
        b.iter(|| {
            next = (next + 1) % raw_probes.len();
            let value = table
                .get(raw_probes[next].as_slice())
                .unwrap()
                .expect("an existing key");
            value.value().to_vec()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_codec, bench_checkpoint, bench_timers, bench_activation
}
criterion_main!(benches);
