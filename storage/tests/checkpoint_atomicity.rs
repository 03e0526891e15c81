//! A checkpoint is all or nothing: changes made after the last commit vanish when the
//! transaction is dropped (the shard rolls back), and committed ones survive reopening,
//! whether the instance was logged or passivated.

use vigil_storage::{codec, InstanceId, Passivation, ShardStore, ShardTxn, TimerKey, TimerName};

fn sla(time: i64, key: &str) -> TimerKey {
    TimerKey::new(time, 3, key, "sla")
}

fn timers(time: i64) -> Vec<(TimerName, i64)> {
    vec![("sla".into(), time)]
}

/// Passivates one instance (`ShardTxn::passivate` takes a checkpoint's instances together).
fn passivate(
    txn: &mut ShardTxn,
    id: &InstanceId,
    record: Option<&[u8]>,
    logged: bool,
    timers: &[(TimerName, i64)],
) {
    let encoded = id.encode();
    let passivation = Passivation {
        encoded_id: &encoded,
        record,
        logged,
        timers,
    };
    txn.passivate(&[passivation]).unwrap();
}

#[test]
fn uncommitted_changes_roll_back_and_committed_ones_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-0001.redb");
    let order = InstanceId::new(3, "ORD-1");
    {
        let store = ShardStore::open(&path).unwrap();
        let (mut txn, logged) = store.begin().unwrap();
        assert!(logged.is_empty());
        txn.set_timer(&sla(50, "ORD-1")).unwrap();
        txn.log_instance(&order, b"v1", false, &timers(50)).unwrap();
        txn.put_meta("position", &codec::encode(&10u64)).unwrap();
        txn.commit().unwrap();

        txn.remove_timer(&sla(50, "ORD-1")).unwrap();
        txn.log_instance(&order, b"v2", false, &[]).unwrap();
        txn.put_meta("position", &codec::encode(&20u64)).unwrap();
        assert!(txn.due_timers(100, 10).unwrap().timers.is_empty());
        drop(txn); // a crash before the commit loses all of it together
    }
    let store = ShardStore::open(&path).unwrap();
    let (txn, logged) = store.begin().unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!((&logged[0].id, &logged[0].record[..]), (&order, &b"v1"[..]));
    assert_eq!(
        txn.due_timers(100, 10).unwrap().timers,
        vec![sla(50, "ORD-1")]
    );
    drop(txn);
    let read = store.read().unwrap();
    assert_eq!(read.instance(&order).unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(read.timers().unwrap(), vec![sla(50, "ORD-1")]);
    let position: u64 = codec::decode(&read.meta("position").unwrap().unwrap()).unwrap();
    assert_eq!(position, 10);
}

#[test]
fn due_timers_come_in_time_order_up_to_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("s.redb")).unwrap();
    let (mut txn, _) = store.begin().unwrap();
    for (time, key) in [(30, "c"), (-5, "neg"), (10, "a"), (10, "b"), (31, "late")] {
        txn.set_timer(&TimerKey::new(time, 0, key, "t")).unwrap();
    }
    let due: Vec<_> = txn
        .due_timers(30, 100)
        .unwrap()
        .timers
        .into_iter()
        .map(|t| (t.time, t.key))
        .collect();
    assert_eq!(
        due,
        vec![
            (-5, "neg".into()),
            (10, "a".into()),
            (10, "b".into()),
            (30, "c".into())
        ]
    );
    // The next timer comes with them: after the watermark, or after the limit.
    assert_eq!(txn.due_timers(30, 100).unwrap().next, Some(31));
    let first_two = txn.due_timers(30, 2).unwrap();
    assert_eq!((first_two.timers.len(), first_two.next), (2, Some(10)));
    assert_eq!(txn.next_timer().unwrap(), Some(-5));
    let all = txn.due_timers(i64::MAX, 100).unwrap();
    assert_eq!((all.timers.len(), all.next), (5, None));
}

#[test]
fn timers_of_passivated_and_resident_instances_merge_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("s.redb")).unwrap();
    let keys =
        |t: Vec<TimerKey>| -> Vec<String> { t.into_iter().map(|t| t.key.to_string()).collect() };
    let (mut txn, _) = store.begin().unwrap();
    for (time, key) in [(10, "a"), (30, "c"), (50, "e")] {
        txn.set_timer(&sla(time, key)).unwrap();
        passivate(
            &mut txn,
            &InstanceId::new(3, key),
            Some(b"p"),
            false,
            &timers(time),
        );
    }
    txn.commit().unwrap();
    for (time, key) in [(20, "b"), (40, "d"), (60, "f")] {
        txn.set_timer(&sla(time, key)).unwrap();
    }
    txn.remove_timer(&sla(40, "d")).unwrap(); // resident, removed from memory
    txn.remove_timer(&sla(10, "a")).unwrap(); // passivated, removed from its table
                                              // The list ends after a passivated instance's timer: firing it may bring earlier ones.
    let due = txn.due_timers(50, 100).unwrap();
    assert_eq!(due.next, Some(50));
    assert_eq!(keys(due.timers), ["b", "c"]);
    let due = txn.due_timers(50, 1).unwrap();
    assert_eq!(due.next, Some(30));
    assert_eq!(keys(due.timers), ["b"]);
    assert_eq!(txn.next_timer().unwrap(), Some(20));
    txn.remove_timer(&sla(30, "c")).unwrap(); // fired
    let due = txn.due_timers(50, 100).unwrap();
    assert_eq!(due.next, Some(60));
    assert_eq!(keys(due.timers), ["b", "e"]);
    txn.log_instance(&InstanceId::new(3, "b"), b"l", false, &timers(20))
        .unwrap();
    txn.log_instance(&InstanceId::new(3, "f"), b"l", false, &timers(60))
        .unwrap();
    txn.commit().unwrap();
    drop(txn);
    assert_eq!(
        keys(store.read().unwrap().timers().unwrap()),
        ["b", "e", "f"]
    );
    // Rolled back: a timer set after the last commit is gone with the transaction.
    let (mut txn, _) = store.begin().unwrap();
    assert_eq!(txn.next_timer().unwrap(), Some(20));
    txn.set_timer(&sla(5, "z")).unwrap();
    assert_eq!(txn.next_timer().unwrap(), Some(5));
    drop(txn);
    let (txn, _) = store.begin().unwrap();
    assert_eq!(txn.next_timer().unwrap(), Some(20));
}

#[test]
fn a_passivated_instance_has_one_timer_row_and_activation_brings_back_all_its_timers() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("s.redb")).unwrap();
    let order = InstanceId::new(3, "ORD-1");
    let both: Vec<(TimerName, i64)> = vec![("sla".into(), 30), ("expire".into(), 90)];
    let (mut txn, _) = store.begin().unwrap();
    txn.set_timer(&sla(30, "ORD-1")).unwrap();
    txn.set_timer(&TimerKey::new(90, 3, "ORD-1", "expire"))
        .unwrap();
    txn.set_timer(&sla(60, "other")).unwrap();
    passivate(&mut txn, &order, Some(b"p"), false, &both);
    // Only the earliest is in the table; the other left memory with the instance.
    let due = txn.due_timers(100, 10).unwrap();
    assert_eq!((due.timers, due.next), (vec![sla(30, "ORD-1")], Some(60)));
    txn.commit().unwrap();
    assert_eq!(
        store.read().unwrap().timers().unwrap(),
        vec![sla(30, "ORD-1")]
    );

    // Activated, the instance's timers come back to memory, merged with the other
    // instance's in time order; its row is gone at the commit.
    txn.activate_timers(&order, &both).unwrap();
    let upcoming: Vec<_> = txn.upcoming_timers(2).collect();
    assert_eq!(
        upcoming,
        [(3, "ORD-1"), (3, "other")],
        "the instances of the next timers in memory, earliest first"
    );
    let due = txn.due_timers(100, 10).unwrap();
    let names: Vec<_> = due
        .timers
        .iter()
        .map(|t| (t.time, t.name.as_str()))
        .collect();
    assert_eq!(names, [(30, "sla"), (60, "sla"), (90, "expire")]);
    txn.log_instance(&order, b"l", true, &both).unwrap();
    txn.commit().unwrap();
    drop(txn);
    let read = store.read().unwrap();
    let times: Vec<_> = read.timers().unwrap().iter().map(|t| t.time).collect();
    assert_eq!(
        times,
        [30, 90],
        "the logged instance's timers, from its log record"
    );
}

#[test]
fn an_activated_instance_is_read_from_its_log_record_and_ends_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("s.redb")).unwrap();
    let order = InstanceId::new(3, "ORD-1");
    let (mut txn, _) = store.begin().unwrap();
    txn.set_timer(&sla(50, "ORD-1")).unwrap();
    txn.log_instance(&order, b"v1", false, &timers(50)).unwrap();
    txn.commit().unwrap();
    passivate(&mut txn, &order, Some(b"v1"), true, &timers(50));
    txn.commit().unwrap();
    drop(txn);

    let (mut txn, logged) = store.begin().unwrap();
    assert!(logged.is_empty(), "passivated instances leave the log");
    assert_eq!(txn.instance(&order).unwrap().as_deref(), Some(&b"v1"[..]));
    txn.activate_timers(&order, &timers(50)).unwrap();
    txn.log_instance(&order, b"v2", true, &timers(50)).unwrap();
    txn.commit().unwrap();
    drop(txn);

    // The log's record wins over the older stored one, counted once.
    let read = store.read().unwrap();
    assert_eq!(read.instance(&order).unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(
        read.instances().unwrap(),
        vec![(order.clone(), b"v2".to_vec())]
    );
    assert_eq!(read.instance_count().unwrap(), 1);
    assert_eq!(read.timers().unwrap(), vec![sla(50, "ORD-1")]);
    drop(read);
    let (mut txn, logged) = store.begin().unwrap();
    assert!(logged[0].stored);
    assert_eq!(
        txn.due_timers(100, 10).unwrap().timers,
        vec![sla(50, "ORD-1")]
    );

    txn.remove_timer(&sla(50, "ORD-1")).unwrap();
    txn.remove_instance(&order, true, true).unwrap();
    txn.commit().unwrap();
    drop(txn);
    let read = store.read().unwrap();
    assert_eq!(read.instance_count().unwrap(), 0);
    assert!(read.timers().unwrap().is_empty());
    assert!(store.begin().unwrap().1.is_empty());
}

#[test]
fn a_compacted_log_drops_its_oldest_chunks_and_keeps_what_was_logged_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("s.redb")).unwrap();
    let (mut txn, _) = store.begin().unwrap();
    // A cold instance logged once, in the first chunk; two hot ones logged in every chunk
    // (each commit writes one).
    let cold = InstanceId::new(0, "cold");
    let mut latest = vec![(
        cold.clone(),
        txn.log_instance(&cold, b"cold", false, &[]).unwrap(),
        4,
    )];
    for round in 0..50u8 {
        latest.truncate(1);
        for key in ["a", "b"] {
            let id = InstanceId::new(0, key);
            let seq = txn.log_instance(&id, &[round; 100], false, &[]).unwrap();
            latest.push((id, seq, 100));
        }
        txn.commit().unwrap();
    }
    let before = txn.log_bytes();
    let first = txn.log_first_seq();
    let mut live_in = vec![0; 50];
    for (_, seq, bytes) in &latest {
        live_in[(seq - first) as usize] += bytes;
    }
    // Every chunk but the last holds only dead records and the cold one: the cut drops
    // them, so the cold instance alone must be logged again.
    let keep_from = txn.compact_log(&live_in).unwrap();
    assert_eq!(keep_from, latest[1].1);
    assert_eq!(latest[1].1, latest[2].1);
    assert!(latest[0].1 < keep_from);
    txn.log_instance(&cold, b"cold", false, &[]).unwrap();
    txn.commit().unwrap();
    assert!(
        txn.log_bytes() < before / 20,
        "{} of {before}",
        txn.log_bytes()
    );
    drop(txn);
    let (txn, mut logged) = store.begin().unwrap();
    assert_eq!(txn.log_first_seq(), keep_from);
    logged.sort_unstable_by(|x, y| x.id.cmp(&y.id));
    let found: Vec<_> = logged
        .iter()
        .map(|l| (l.id.key.to_string(), l.record.clone(), l.seq))
        .collect();
    assert_eq!(
        found,
        [
            ("a".to_owned(), vec![49; 100], keep_from),
            ("b".to_owned(), vec![49; 100], keep_from),
            ("cold".to_owned(), b"cold".to_vec(), keep_from + 1),
        ]
    );
}

#[test]
fn a_snapshot_holds_every_instance_passivated() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("s.redb")).unwrap();
    let (mut txn, _) = store.begin().unwrap();
    passivate(
        &mut txn,
        &InstanceId::new(3, "p"),
        Some(b"p1"),
        false,
        &timers(7),
    );
    txn.set_timer(&sla(9, "l")).unwrap();
    txn.log_instance(&InstanceId::new(3, "l"), b"l1", false, &timers(9))
        .unwrap();
    txn.put_meta("position", &codec::encode(&5u64)).unwrap();
    txn.commit().unwrap();
    drop(txn);
    let snapshot = dir.path().join("snap.redb");
    store.read().unwrap().export_to(&snapshot).unwrap();

    let restored = ShardStore::open(&snapshot).unwrap();
    let (txn, logged) = restored.begin().unwrap();
    assert!(logged.is_empty());
    assert_eq!(
        txn.instance(&InstanceId::new(3, "l")).unwrap().as_deref(),
        Some(&b"l1"[..])
    );
    // Each a passivated instance's timer row: the list ends after the first.
    let due = txn.due_timers(100, 10).unwrap();
    assert_eq!((due.timers, due.next), (vec![sla(7, "p")], Some(9)));
    assert!(txn.meta("position").unwrap().is_some());
    drop(txn);
    assert_eq!(
        restored.read().unwrap().timers().unwrap(),
        vec![sla(7, "p"), sla(9, "l")]
    );
}

#[test]
fn rows_deleted_in_an_interval_are_gone_at_once_and_deleted_at_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("s.redb")).unwrap();
    let (a, b) = (InstanceId::new(3, "a"), InstanceId::new(3, "b"));
    let (mut txn, _) = store.begin().unwrap();
    txn.set_timer(&sla(10, "a")).unwrap();
    passivate(&mut txn, &a, Some(b"a1"), false, &timers(10));
    txn.set_timer(&sla(20, "b")).unwrap();
    passivate(&mut txn, &b, Some(b"b1"), false, &timers(20));
    txn.commit().unwrap();

    // `a` is activated (its timer moves to memory), its timer fires, and it ends.
    txn.activate_timers(&a, &timers(10)).unwrap();
    txn.remove_timer(&sla(10, "a")).unwrap();
    txn.remove_instance(&a, false, true).unwrap();
    // `b`'s row is deleted and the key passivated again in the same interval.
    txn.remove_timer(&sla(20, "b")).unwrap();
    txn.remove_instance(&b, false, true).unwrap();
    passivate(&mut txn, &b, Some(b"b2"), false, &timers(30));
    assert_eq!(txn.instance(&a).unwrap(), None);
    assert_eq!(txn.instance(&b).unwrap().as_deref(), Some(&b"b2"[..]));
    let due = txn.due_timers(100, 10).unwrap();
    assert_eq!((due.timers, due.next), (vec![sla(30, "b")], None));
    // Before the commit, the last checkpoint still has them.
    assert_eq!(store.read().unwrap().instance_count().unwrap(), 2);
    txn.commit().unwrap();
    drop(txn);

    let read = store.read().unwrap();
    assert_eq!(read.instances().unwrap(), vec![(b.clone(), b"b2".to_vec())]);
    assert_eq!(read.timers().unwrap(), vec![sla(30, "b")]);
}
