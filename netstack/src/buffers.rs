//! Socket buffer memory, recycled without being zeroed again.
//!
//! A connection's buffers are hundreds of KiB; zeroing fresh ones for every
//! connection cost more than the whole handshake. smoltcp takes its storage
//! either as an owned `Vec` (which it never gives back) or as a borrowed
//! slice, so the pool lends `'static` slices carved from boxes it owns, and a
//! [`Lease`] returns the box when the socket that borrowed it is gone.
//!
//! Stale bytes from an earlier connection stay in recycled memory; smoltcp's
//! ring buffers only ever read bytes they wrote, so nothing leaks across.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

/// Most memory the pool keeps idle.
const MAX_IDLE_BYTES: usize = 256 << 20;

#[derive(Debug, Default)]
struct Idle {
    by_len: HashMap<usize, Vec<Box<[u8]>>>,
    bytes: usize,
}

/// A shared pool of buffers; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct BufferPool {
    idle: Arc<Mutex<Idle>>,
}

/// Ownership of one lent buffer. Must be dropped only after the borrow it
/// backs is gone: keep it in the same struct as the socket, declared after it.
#[derive(Debug)]
pub(crate) struct Lease {
    ptr: NonNull<[u8]>,
    idle: Arc<Mutex<Idle>>,
}

// SAFETY: a Lease owns its allocation exactly as a Box<[u8]> would; moving it
// to another thread moves that ownership, and the pool behind it is a Mutex.
unsafe impl Send for Lease {}

impl BufferPool {
    /// Lends a buffer of `len` bytes: the slice for smoltcp and the lease that reclaims it.
    pub(crate) fn lend(&self, len: usize) -> (&'static mut [u8], Lease) {
        let recycled = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let b = idle.by_len.get_mut(&len).and_then(Vec::pop);
            if b.is_some() {
                idle.bytes -= len;
            }
            b
        };
        let boxed = recycled.unwrap_or_else(|| vec![0u8; len].into_boxed_slice());
        let raw = Box::into_raw(boxed);
        // SAFETY: `raw` comes from Box::into_raw, so it is non-null.
        let ptr = unsafe { NonNull::new_unchecked(raw) };
        // SAFETY: the allocation is valid and initialised, and this slice is the
        // only reference to it; the Lease does not touch it until its drop,
        // which its owner orders after the slice's last use.
        let slice = unsafe { &mut *raw };
        (
            slice,
            Lease {
                ptr,
                idle: Arc::clone(&self.idle),
            },
        )
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // SAFETY: the pointer came from Box::into_raw in `lend`, is reclaimed only
        // here, and the slice lent from it is gone (the owner drops it first).
        let boxed = unsafe { Box::from_raw(self.ptr.as_ptr()) };
        let len = boxed.len();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.bytes + len <= MAX_IDLE_BYTES {
            idle.bytes += len;
            idle.by_len.entry(len).or_default().push(boxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_without_rezeroing_and_caps_idle_memory() {
        let pool = BufferPool::default();
        let (s, lease) = pool.lend(4096);
        s[0] = 7;
        drop(lease);
        let (s2, lease2) = pool.lend(4096);
        assert_eq!(s2[0], 7, "the same buffer came back");
        drop(lease2);
        let (s3, _l3) = pool.lend(100);
        assert!(s3.iter().all(|&b| b == 0), "a new size is freshly zeroed");
        let big: Vec<_> = (0..3).map(|_| pool.lend(MAX_IDLE_BYTES / 2)).collect();
        drop(big);
        let idle = pool.idle.lock().unwrap();
        assert!(idle.bytes <= MAX_IDLE_BYTES);
    }
}
