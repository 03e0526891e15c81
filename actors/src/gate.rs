//! Backpressure between the reader and the shard actors.
//!
//! actix mailboxes are unbounded for `do_send`, so the reader takes a credit for every batch it
//! hands to a shard and the shard returns it once the batch is processed. With at most
//! `capacity` batches in flight, memory stays bounded however fast the input is.

use crate::sync::{lock, Condvar, Mutex};

pub struct Gate {
    state: Mutex<State>,
    freed: Condvar,
    capacity: usize,
}

struct State {
    in_flight: usize,
    /// Closed when the job fails: nobody waits any more.
    closed: bool,
}

impl Gate {
    pub fn new(capacity: usize) -> Gate {
        Gate {
            state: Mutex::new(State {
                in_flight: 0,
                closed: false,
            }),
            freed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Blocks until a credit is free, then takes it. Returns `false` if the gate was closed.
    pub fn acquire(&self) -> bool {
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
        true
    }

    /// Returns a credit taken by [`Gate::acquire`].
    pub fn release(&self) {
        let mut state = lock(&self.state);
        debug_assert!(state.in_flight > 0, "release without acquire");
        state.in_flight = state.in_flight.saturating_sub(1);
        drop(state);
        self.freed.notify_all();
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
            let gate = Arc::new(Gate::new(1));
            let consumer_gate = gate.clone();
            let (tx, rx) = loom::sync::mpsc::channel::<u32>();
            let consumer = loom::thread::spawn(move || {
                for _ in 0..2 {
                    let _batch = rx.recv().unwrap();
                    assert!(consumer_gate.in_flight() <= 1);
                    consumer_gate.release();
                }
            });
            for batch in 0..2 {
                assert!(gate.acquire());
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
            let gate = Arc::new(Gate::new(1));
            assert!(gate.acquire());
            let closer = gate.clone();
            let shard = loom::thread::spawn(move || closer.close());
            let got = gate.acquire();
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
        let gate = Arc::new(Gate::new(2));
        assert!(gate.acquire());
        assert!(gate.acquire());
        let other = gate.clone();
        let waiter = std::thread::spawn(move || {
            other.acquire();
            other.in_flight()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "a third acquire must wait for a release"
        );
        gate.release();
        assert_eq!(waiter.join().unwrap(), 2);
    }

    #[test]
    fn closing_wakes_a_blocked_acquire() {
        let gate = Arc::new(Gate::new(1));
        assert!(gate.acquire());
        let other = gate.clone();
        let waiter = std::thread::spawn(move || other.acquire());
        std::thread::sleep(std::time::Duration::from_millis(20));
        gate.close();
        assert!(!waiter.join().unwrap(), "a closed gate gives no credit");
        gate.wait_idle(); // returns although a credit is still out
    }
}
