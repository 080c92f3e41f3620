//! Guest memory, read and written with `process_vm_readv`/`process_vm_writev`.
//!
//! These honour page protections as the guest's own system call would (a
//! read-only page refuses a write with `EFAULT`), unlike `/proc/<tid>/mem`,
//! which writes through them. They name the thread by number, so before any
//! write the notification is checked to be still valid: while it is, the
//! thread is blocked in the trapped call and its number cannot have been
//! reused. Every pointer is read once; nothing is decided on memory the
//! guest can change afterwards.

use std::os::fd::AsFd;

use crate::errno::{CALLER_GONE, Errno};
use crate::sys::{self, Notif};

/// Guest memory access.
#[derive(Debug, Default)]
pub struct Mem;

/// Largest single read or write the Sentry does on the guest's behalf.
pub const MAX_IO: usize = 1 << 20;

impl Mem {
    /// Reads `len` bytes at `addr` of the calling thread; `EFAULT` when any
    /// of them is not readable.
    pub fn read(
        &mut self,
        listener: impl AsFd,
        n: &Notif,
        addr: u64,
        len: usize,
    ) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        self.read_into(listener, n, addr, &mut buf)?;
        Ok(buf)
    }

    /// Reads exactly `buf.len()` bytes at `addr`.
    pub fn read_into(
        &mut self,
        _listener: impl AsFd,
        n: &Notif,
        addr: u64,
        buf: &mut [u8],
    ) -> Result<(), Errno> {
        if buf.is_empty() {
            return Ok(());
        }
        check_range(addr, buf.len())?;
        match sys::vm_read(n.tid, addr, buf) {
            Ok(got) if got == buf.len() => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }

    /// A fixed-size read.
    pub fn read_array<const N: usize>(
        &mut self,
        listener: impl AsFd,
        n: &Notif,
        addr: u64,
    ) -> Result<[u8; N], Errno> {
        let mut b = [0u8; N];
        self.read_into(listener, n, addr, &mut b)?;
        Ok(b)
    }

    /// Writes `data` at `addr`; `EFAULT` when any of it is not writable,
    /// [`CALLER_GONE`](CALLER_GONE) when the call was cancelled.
    pub fn write(
        &mut self,
        listener: impl AsFd,
        n: &Notif,
        addr: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        check_range(addr, data.len())?;
        if !sys::notif_id_valid(listener.as_fd(), n.id) {
            // The caller is gone; its thread number may name another process now.
            return Err(CALLER_GONE);
        }
        match sys::vm_write(n.tid, addr, data) {
            Ok(put) if put == data.len() => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }

    /// Writes several ranges in order, with one validity check and one
    /// system call, as `write` of each in turn would: the ranges before the
    /// first bad one are written, then `EFAULT`.
    pub fn write_parts(
        &mut self,
        listener: impl AsFd,
        n: &Notif,
        parts: &[(u64, &[u8])],
    ) -> Result<(), Errno> {
        let parts: Vec<(u64, &[u8])> = parts.iter().copied().filter(|p| !p.1.is_empty()).collect();
        let good = parts
            .iter()
            .position(|&(addr, data)| check_range(addr, data.len()).is_err())
            .unwrap_or(parts.len());
        if good > 0 {
            if !sys::notif_id_valid(listener.as_fd(), n.id) {
                return Err(CALLER_GONE);
            }
            let want: usize = parts[..good].iter().map(|p| p.1.len()).sum();
            match sys::vm_write_parts(n.tid, &parts[..good]) {
                Ok(put) if put == want => {}
                _ => return Err(Errno::EFAULT),
            }
        }
        if good < parts.len() {
            return Err(Errno::EFAULT);
        }
        Ok(())
    }
}

fn check_range(addr: u64, len: usize) -> Result<(), Errno> {
    // User space ends below 2^47 on x86_64.
    match addr.checked_add(len as u64) {
        Some(end) if end <= 0x0000_8000_0000_0000 => Ok(()),
        _ => Err(Errno::EFAULT),
    }
}
