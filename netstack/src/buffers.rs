//! Socket buffer memory: anonymous mappings, lent to smoltcp and recycled.
//!
//! A socket's buffers are hundreds of KiB, but an idle connection writes a
//! page or two of them. Fresh anonymous mappings cost nothing until touched
//! (the kernel supplies zero pages on first write), where a zeroed heap
//! allocation of the same size is written in full; and recycling mappings
//! spares the map/unmap calls on the connection hot path. smoltcp takes its
//! storage either as an owned `Vec` (which it never gives back) or as a
//! borrowed slice, so the pool lends `'static` slices, and a [`Lease`] takes
//! the memory back when the socket that borrowed it is gone.
//!
//! Stale bytes from an earlier connection stay in recycled memory; smoltcp's
//! ring buffers only ever read bytes they wrote, so nothing leaks across.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{NetError, Result};

/// Most memory the pool keeps idle (and resident, where it was touched).
const MAX_IDLE_BYTES: usize = 64 << 20;

/// One private anonymous mapping, unmapped on drop.
#[derive(Debug)]
struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region owns its mapping exclusively, like a Box<[u8]>; nothing in
// it is tied to the thread that mapped it.
unsafe impl Send for Region {}

impl Region {
    fn map(len: usize) -> Result<Region> {
        if len == 0 {
            return Err(NetError::InvalidInput);
        }
        // SAFETY: a fresh private anonymous mapping aliases no Rust object;
        // the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(NetError::NoBufferSpace);
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(NetError::NoBufferSpace)?;
        Ok(Region { ptr, len })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping came from mmap with this length and is unmapped
        // once, here; no slice into it outlives the Region (see Lease).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[derive(Debug, Default)]
struct Idle {
    by_len: HashMap<usize, Vec<Region>>,
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
    region: Option<Region>,
    idle: Arc<Mutex<Idle>>,
}

impl BufferPool {
    /// Lends a buffer of `len` bytes: the slice for smoltcp and the lease that reclaims it.
    ///
    /// # Safety
    ///
    /// The slice is `'static` only in name: the caller must make sure it is
    /// last used before the [`Lease`] is dropped (the memory then goes back to
    /// the pool and to the next borrower). Every caller puts the slice into a
    /// smoltcp socket and both into one `Slot`, whose socket set is declared,
    /// and so dropped, before its leases.
    unsafe fn lend(&self, len: usize) -> Result<(&'static mut [u8], Lease)> {
        let recycled = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let r = idle.by_len.get_mut(&len).and_then(Vec::pop);
            if r.is_some() {
                idle.bytes -= len;
            }
            r
        };
        let region = match recycled {
            Some(r) => r,
            None => Region::map(len)?,
        };
        // SAFETY: the mapping is valid for `len` bytes, readable and writable,
        // and initialised (zero pages, or bytes written by an earlier user); this
        // slice is the only reference to it, and the Lease that owns the mapping
        // is dropped only after the slice's last use (the caller's contract).
        let slice = unsafe { std::slice::from_raw_parts_mut(region.ptr.as_ptr(), region.len) };
        Ok((
            slice,
            Lease {
                region: Some(region),
                idle: Arc::clone(&self.idle),
            },
        ))
    }

    /// Lends a socket's two buffers (receive, then send).
    ///
    /// # Safety
    ///
    /// As for [`BufferPool::lend`], for both slices.
    pub(crate) unsafe fn lend_two(
        &self,
        rx: usize,
        tx: usize,
    ) -> Result<[(&'static mut [u8], Lease); 2]> {
        // SAFETY: the caller takes on `lend`'s contract for both.
        let rx = unsafe { self.lend(rx) }?;
        // SAFETY: as above.
        let tx = unsafe { self.lend(tx) }?;
        Ok([rx, tx])
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(region) = self.region.take() else {
            return;
        };
        let len = region.len;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.bytes + len <= MAX_IDLE_BYTES {
            idle.bytes += len;
            idle.by_len.entry(len).or_default().push(region);
        }
        // Otherwise `region` is unmapped here.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_without_rezeroing_and_caps_idle_memory() {
        let pool = BufferPool::default();
        // SAFETY: each slice is used only before its lease is dropped.
        let (s, lease) = unsafe { pool.lend(4096) }.unwrap();
        s[0] = 7;
        drop(lease);
        // SAFETY: as above.
        let (s2, lease2) = unsafe { pool.lend(4096) }.unwrap();
        assert_eq!(s2[0], 7, "the same buffer came back");
        drop(lease2);
        // SAFETY: as above (`_l3` lives to the end of the test).
        let (s3, _l3) = unsafe { pool.lend(100) }.unwrap();
        assert!(s3.iter().all(|&b| b == 0), "a new size is fresh zero pages");
        let big: Vec<_> = (0..3)
            .map(|_| {
                // SAFETY: the slices are never used.
                unsafe { pool.lend(MAX_IDLE_BYTES / 2) }.unwrap()
            })
            .collect();
        drop(big);
        assert!(pool.idle.lock().unwrap().bytes <= MAX_IDLE_BYTES);
        assert_eq!(
            // SAFETY: nothing is lent.
            unsafe { pool.lend(0) }.map(|_| ()).unwrap_err(),
            NetError::InvalidInput
        );
    }
}
