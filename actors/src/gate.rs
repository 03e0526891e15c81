//! Backpressure between the reader and the shard actors.
//!
//! actix mailboxes are unbounded for `do_send`, so the reader takes a credit for every batch it
//! hands to a shard and the shard returns it once the batch is processed. With at most
//! `capacity` batches in flight, memory stays bounded however fast the input is.

use crate::sync::{lock, Condvar, Mutex};

pub struct Gate {
    in_flight: Mutex<usize>,
    freed: Condvar,
    capacity: usize,
}

impl Gate {
    pub fn new(capacity: usize) -> Gate {
        Gate { in_flight: Mutex::new(0), freed: Condvar::new(), capacity: capacity.max(1) }
    }

    /// Blocks until a credit is free, then takes it.
    pub fn acquire(&self) {
        let mut in_flight = lock(&self.in_flight);
        while *in_flight >= self.capacity {
            in_flight = match self.freed.wait(in_flight) {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
        *in_flight += 1;
    }

    /// Returns a credit taken by [`Gate::acquire`].
    pub fn release(&self) {
        let mut in_flight = lock(&self.in_flight);
        debug_assert!(*in_flight > 0, "release without acquire");
        *in_flight = in_flight.saturating_sub(1);
        drop(in_flight);
        self.freed.notify_one();
    }

    /// Blocks until every credit has been returned: all handed-out batches are processed.
    pub fn wait_idle(&self) {
        let mut in_flight = lock(&self.in_flight);
        while *in_flight > 0 {
            in_flight = match self.freed.wait(in_flight) {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
    }

    pub fn in_flight(&self) -> usize {
        *lock(&self.in_flight)
    }
}

#[cfg(all(test, loom))]
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
                gate.acquire();
                tx.send(batch).unwrap();
            }
            gate.wait_idle();
            assert_eq!(gate.in_flight(), 0);
            consumer.join().unwrap();
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn acquire_blocks_until_a_credit_is_released() {
        let gate = Arc::new(Gate::new(2));
        gate.acquire();
        gate.acquire();
        let other = gate.clone();
        let waiter = std::thread::spawn(move || {
            other.acquire();
            other.in_flight()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a third acquire must wait for a release");
        gate.release();
        assert_eq!(waiter.join().unwrap(), 2);
    }
}
