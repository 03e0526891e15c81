//! Every lock, condition variable and atomic shared between threads comes from here, so that
//! under `--cfg vigil_loom` the loom model checker can explore their interleavings (tokio's
//! pattern). The flag is not the usual `loom`: tokio, which actix runs on, reads `--cfg loom`
//! itself and does not build with it.
//!
//! Run the models with `make loom`:
//! `RUSTFLAGS="--cfg vigil_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p vigil-actors --profile loom --lib loom_`.

#[cfg(vigil_loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(vigil_loom)]
pub use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(not(vigil_loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(not(vigil_loom))]
pub use std::sync::{Condvar, Mutex, MutexGuard};

/// Locks a mutex, recovering the data if another thread panicked while holding it: every
/// structure guarded here stays consistent between statements, so the data is still valid.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
