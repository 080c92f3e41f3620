//! Guest memory, read and written through `/proc/<tid>/mem`.
//!
//! A `mem` file is bound to the address space its thread had when it was
//! opened: if the thread later dies (and its id is reused) or execs, the old
//! file reaches only a dead address space and fails, and is reopened. Each
//! open is followed by a check that the notification is still valid, so a
//! file opened for a reused thread id is never used for it. Every pointer is
//! read once; nothing is decided on memory the guest can change afterwards.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use crate::sys::{self, Notif};

/// Cached `mem` files, per thread id.
#[derive(Debug, Default)]
pub struct Mem {
    files: HashMap<u32, File>,
}

/// How many threads' files are kept before the cache starts over.
const MAX_CACHED: usize = 4096;
/// Largest single read or write the Sentry does on the guest's behalf.
pub const MAX_IO: usize = 1 << 20;

impl Mem {
    /// Reads `len` bytes at `addr` of the calling thread; `EFAULT` when any
    /// of them is unmapped.
    pub fn read(
        &mut self,
        listener: impl AsFd,
        n: &Notif,
        addr: u64,
        len: usize,
    ) -> Result<Vec<u8>, i32> {
        let mut buf = vec![0u8; len];
        self.read_into(listener, n, addr, &mut buf)?;
        Ok(buf)
    }

    /// Reads exactly `buf.len()` bytes at `addr`.
    pub fn read_into(
        &mut self,
        listener: impl AsFd,
        n: &Notif,
        addr: u64,
        buf: &mut [u8],
    ) -> Result<(), i32> {
        if buf.is_empty() {
            return Ok(());
        }
        check_range(addr, buf.len())?;
        self.with_file(listener, n, |f| f.read_exact_at(buf, addr))
    }

    /// A fixed-size read.
    pub fn read_array<const N: usize>(
        &mut self,
        listener: impl AsFd,
        n: &Notif,
        addr: u64,
    ) -> Result<[u8; N], i32> {
        let mut b = [0u8; N];
        self.read_into(listener, n, addr, &mut b)?;
        Ok(b)
    }

    /// Writes `data` at `addr`; `EFAULT` when any of it is unmapped or read-only.
    pub fn write(
        &mut self,
        listener: impl AsFd,
        n: &Notif,
        addr: u64,
        data: &[u8],
    ) -> Result<(), i32> {
        if data.is_empty() {
            return Ok(());
        }
        check_range(addr, data.len())?;
        self.with_file(listener, n, |f| f.write_all_at(data, addr))
    }

    fn with_file(
        &mut self,
        listener: impl AsFd,
        n: &Notif,
        mut op: impl FnMut(&File) -> std::io::Result<()>,
    ) -> Result<(), i32> {
        if let Some(f) = self.files.get(&n.tid)
            && op(f).is_ok()
        {
            return Ok(());
        }
        // No file yet, or a stale one, or a real fault: open afresh and retry once.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{}/mem", n.tid))
            .map_err(|_| libc::EFAULT)?;
        if !sys::notif_id_valid(listener.as_fd(), n.id) {
            // The caller is gone; the id may name another process now.
            return Err(libc::EFAULT);
        }
        let result = op(&f).map_err(|_| libc::EFAULT);
        if self.files.len() >= MAX_CACHED {
            self.files.clear();
        }
        self.files.insert(n.tid, f);
        result
    }

    /// Forgets a thread's file (when its notification turned out stale).
    pub fn forget(&mut self, tid: u32) {
        self.files.remove(&tid);
    }
}

fn check_range(addr: u64, len: usize) -> Result<(), i32> {
    // User space ends below 2^47 on x86_64; /proc/pid/mem would take the
    // offset as signed, so refuse anything beyond before it gets there.
    match addr.checked_add(len as u64) {
        Some(end) if end <= 0x0000_8000_0000_0000 => Ok(()),
        _ => Err(libc::EFAULT),
    }
}
