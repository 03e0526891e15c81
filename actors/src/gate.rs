//! Backpressure between the reader and the shard actors.
//!
//! actix mailboxes are unbounded for `do_send`, so the reader takes a credit for every batch it
//! hands to a shard and the shard returns it once the batch is processed. With at most
//! `capacity` batches in flight, memory stays bounded however fast the input is. The gate also
//! counts each shard's batches in flight, so that a shard knows when it has none waiting.

use crate::sync::{lock, Condvar, Mutex};

pub struct Gate {
    state: Mutex<State>,
    freed: Condvar,
    capacity: usize,
}

struct State {
    in_flight: usize,
    /// Per shard: its batches in flight.
    queued: Vec<usize>,
    /// Closed when the job fails: nobody waits any more.
    closed: bool,
}

impl Gate {
    /// A gate for `capacity` batches in flight, to `shards` shards.
    pub fn new(capacity: usize, shards: u32) -> Gate {
        Gate {
            state: Mutex::new(State {
                in_flight: 0,
                queued: vec![0; shards as usize],
                closed: false,
            }),
            freed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Blocks until a credit is free, then takes it for a batch to `shard`. Returns `false` if
    /// the gate was closed.
    pub fn acquire(&self, shard: u32) -> bool {
        let mut state = lock(&self.state);
        while state.in_flight >= self.capacity && !state.closed {
            state = match self.freed.wait(state) {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
        if state.closed {
            return false;
        }
        state.in_flight += 1;
        state.queued[shard as usize] += 1;
        true
    }

    /// Returns a credit `shard` was given by [`Gate::acquire`]; returns how many of its
    /// batches are still in flight (in its mailbox, or on their way).
    pub fn release(&self, shard: u32) -> usize {
        let mut state = lock(&self.state);
        debug_assert!(state.in_flight > 0, "release without acquire");
        state.in_flight = state.in_flight.saturating_sub(1);
        let queued = &mut state.queued[shard as usize];
        *queued = queued.saturating_sub(1);
        let left = *queued;
        drop(state);
        self.freed.notify_all();
        left
    }

    /// Blocks until every credit has been returned (all handed-out batches are processed)
    /// or the gate is closed.
    pub fn wait_idle(&self) {
        let mut state = lock(&self.state);
        while state.in_flight > 0 && !state.closed {
            state = match self.freed.wait(state) {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
    }

    /// Wakes every waiter and makes further `acquire`s fail.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.freed.notify_all();
    }

    pub fn in_flight(&self) -> usize {
        lock(&self.state).in_flight
    }
}

#[cfg(all(test, vigil_loom))]
mod loom_gate {
    use super::*;
    use crate::sync::Arc;

    /// A producer never has more than `capacity` credits out, and neither side deadlocks.
    #[test]
    fn loom_gate_bounds_in_flight_and_never_deadlocks() {
        loom::model(|| {
            let gate = Arc::new(Gate::new(1, 1));
            let consumer_gate = gate.clone();
            let (tx, rx) = loom::sync::mpsc::channel::<u32>();
            let consumer = loom::thread::spawn(move || {
                for _ in 0..2 {
                    let _batch = rx.recv().unwrap();
                    assert!(consumer_gate.in_flight() <= 1);
                    consumer_gate.release(0);
                }
            });
            for batch in 0..2 {
                assert!(gate.acquire(0));
                tx.send(batch).unwrap();
            }
            gate.wait_idle();
            assert_eq!(gate.in_flight(), 0);
            consumer.join().unwrap();
        });
    }
}

#[cfg(all(test, vigil_loom))]
mod loom_gate_close {
    use super::*;
    use crate::sync::Arc;

    /// A reader blocked on a full gate is always woken by `close`, whatever the interleaving.
    #[test]
    fn loom_gate_close_wakes_the_reader() {
        loom::model(|| {
            let gate = Arc::new(Gate::new(1, 1));
            assert!(gate.acquire(0));
            let closer = gate.clone();
            let shard = loom::thread::spawn(move || closer.close());
            let got = gate.acquire(0);
            shard.join().unwrap();
            assert!(!got);
        });
    }
}

#[cfg(all(test, not(vigil_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn acquire_blocks_until_a_credit_is_released() {
        let gate = Arc::new(Gate::new(2, 1));
        assert!(gate.acquire(0));
        assert!(gate.acquire(0));
        let other = gate.clone();
        let waiter = std::thread::spawn(move || {
            other.acquire(0);
            other.in_flight()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "a third acquire must wait for a release"
        );
        gate.release(0);
        assert_eq!(waiter.join().unwrap(), 2);
    }

    #[test]
    fn release_tells_how_many_of_the_shards_batches_are_left() {
        let gate = Gate::new(4, 2);
        for shard in [1, 0, 1] {
            assert!(gate.acquire(shard));
        }
        assert_eq!(gate.release(1), 1, "shard 1 has one more in flight");
        assert_eq!(gate.release(0), 0);
        assert_eq!(gate.release(1), 0);
        assert_eq!(gate.in_flight(), 0);
    }

    #[test]
    fn closing_wakes_a_blocked_acquire() {
        let gate = Arc::new(Gate::new(1, 1));
        assert!(gate.acquire(0));
        let other = gate.clone();
        let waiter = std::thread::spawn(move || other.acquire(0));
        std::thread::sleep(std::time::Duration::from_millis(20));
        gate.close();
        assert!(!waiter.join().unwrap(), "a closed gate gives no credit");
        gate.wait_idle(); // returns although a credit is still out
    }
}
