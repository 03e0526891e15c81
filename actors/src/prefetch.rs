//! Hints to the CPU to load memory before it is read: the shard thread reads what the reader
//! thread wrote on the other core, and instances spread over a large table, each a cache miss
//! when its turn comes unless asked for ahead.

/// A hint to load the cache line at `address`; nothing else happens, whatever the address.
pub fn prefetch<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` reads nothing into a register and never faults, whatever the
    // address; `sse` is in every x86-64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// [`prefetch`] for every cache line of the `len` bytes at `start`, up to [`MAX_BYTES`].
pub fn prefetch_lines<T: ?Sized>(start: *const T, len: usize) {
    let start = start.cast::<u8>();
    let end = start.wrapping_add(len.clamp(1, MAX_BYTES) - 1);
    let mut line = start.wrapping_sub(start as usize % 64);
    while line <= end {
        prefetch(line);
        line = line.wrapping_add(64);
    }
}

/// The most [`prefetch_lines`] asks for: more would push out of the first-level cache what
/// is still to be read.
const MAX_BYTES: usize = 512;
