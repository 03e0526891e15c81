//! A checkpoint is all or nothing: changes made after the last commit vanish when the
//! transaction is dropped (the shard rolls back), and committed ones survive reopening.

use vigil_storage::{codec, InstanceId, ShardStore, TimerKey};

#[test]
fn uncommitted_changes_roll_back_and_committed_ones_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-0001.redb");
    let order = InstanceId::new(3, "ORD-1");
    {
        let store = ShardStore::open(&path).unwrap();
        let mut txn = store.begin().unwrap();
        txn.put_instance(&order, b"v1").unwrap();
        txn.set_timer(&TimerKey::new(50, 3, "ORD-1", "sla"))
            .unwrap();
        txn.put_meta("position", &codec::encode(&10u64)).unwrap();
        txn.commit().unwrap();

        let mut txn = store.begin().unwrap();
        txn.put_instance(&order, b"v2").unwrap();
        txn.remove_timer(&TimerKey::new(50, 3, "ORD-1", "sla"))
            .unwrap();
        txn.put_meta("position", &codec::encode(&20u64)).unwrap();
        // The transaction sees its own writes...
        assert_eq!(txn.instance(&order).unwrap().as_deref(), Some(&b"v2"[..]));
        assert!(txn.due_timers(100, 10).unwrap().is_empty());
        drop(txn); // ...and a crash before commit loses all of them together.
    }
    let store = ShardStore::open(&path).unwrap();
    let read = store.read().unwrap();
    assert_eq!(read.instance(&order).unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        read.timers().unwrap(),
        vec![TimerKey::new(50, 3, "ORD-1", "sla")]
    );
    let position: u64 = codec::decode(&read.meta("position").unwrap().unwrap()).unwrap();
    assert_eq!(position, 10);
}

#[test]
fn due_timers_come_in_time_order_up_to_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("s.redb")).unwrap();
    let mut txn = store.begin().unwrap();
    for (time, key) in [(30, "c"), (-5, "neg"), (10, "a"), (10, "b"), (31, "late")] {
        txn.set_timer(&TimerKey::new(time, 0, key, "t")).unwrap();
    }
    let due: Vec<_> = txn
        .due_timers(30, 100)
        .unwrap()
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
    assert_eq!(txn.due_timers(30, 2).unwrap().len(), 2);
    assert_eq!(txn.next_timer().unwrap().unwrap().time, -5);
    assert_eq!(txn.due_timers(i64::MAX, 100).unwrap().len(), 5);
}

#[test]
fn timers_set_since_the_checkpoint_merge_with_stored_ones_and_are_stored_at_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("s.redb")).unwrap();
    let timer = |time, key: &str| TimerKey::new(time, 0, key, "t");
    let mut txn = store.begin().unwrap();
    for (time, key) in [(10, "a"), (30, "c"), (50, "e")] {
        txn.set_timer(&timer(time, key)).unwrap();
    }
    txn.commit().unwrap();

    let mut txn = store.begin().unwrap();
    for (time, key) in [(20, "b"), (30, "c"), (40, "d"), (60, "f")] {
        txn.set_timer(&timer(time, key)).unwrap();
    }
    txn.remove_timer(&timer(40, "d")).unwrap(); // set and removed before any commit
    txn.remove_timer(&timer(10, "a")).unwrap(); // stored, removed now
    let keys =
        |timers: Vec<TimerKey>| -> Vec<String> { timers.into_iter().map(|t| t.key).collect() };
    // In key order, each once: "c" is both stored and set again.
    assert_eq!(keys(txn.due_timers(50, 100).unwrap()), ["b", "c", "e"]);
    assert_eq!(keys(txn.due_timers(50, 2).unwrap()), ["b", "c"]);
    assert_eq!(txn.next_timer().unwrap(), Some(timer(20, "b")));
    txn.commit().unwrap();

    assert_eq!(
        keys(store.read().unwrap().timers().unwrap()),
        ["b", "c", "e", "f"]
    );
    // Rolled back: a timer set after the last commit is gone with the transaction.
    let mut txn = store.begin().unwrap();
    txn.set_timer(&timer(5, "z")).unwrap();
    assert_eq!(txn.next_timer().unwrap(), Some(timer(5, "z")));
    drop(txn);
    let txn = store.begin().unwrap();
    assert_eq!(txn.next_timer().unwrap(), Some(timer(20, "b")));
}

#[test]
fn a_timer_set_again_while_stored_is_gone_after_one_removal() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&dir.path().join("s.redb")).unwrap();
    let sla = TimerKey::new(10, 0, "ORD-1", "sla");
    let mut txn = store.begin().unwrap();
    txn.set_timer(&sla).unwrap();
    txn.commit().unwrap();
    let mut txn = store.begin().unwrap();
    txn.set_timer(&sla).unwrap();
    assert_eq!(txn.due_timers(10, 10).unwrap(), vec![sla.clone()]);
    txn.remove_timer(&sla).unwrap();
    assert!(txn.due_timers(10, 10).unwrap().is_empty());
    txn.commit().unwrap();
    assert!(store.read().unwrap().timers().unwrap().is_empty());
}
