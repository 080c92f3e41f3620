//! The signal watcher's process: a child forked from the Sentry before it
//! confines itself, which reads `/proc/TID/status` for the Sentry (whose own
//! filter lets it open no file) and answers with the signals each thread has
//! pending and not blocked.
//!
//! Protocol, over a SOCK_SEQPACKET pair: a request is up to [`MAX_TIDS`]
//! thread ids (native-endian `u32`s); the answer has, per thread, two
//! native-endian `u64` masks (bit N-1 for signal N): pending for the thread
//! itself, and pending for its process, both less the thread's blocked set.
//! A thread that is gone answers zeros.
//!
//! The child runs in a copy of a process that has other threads, so it
//! makes system calls only: no allocation, no lock. It dies with the Sentry
//! (its end of the pair reads end of file; `PR_SET_PDEATHSIG`) and runs
//! under a filter of its own that allows reading files and nothing else
//! of note.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

/// Most threads one request may name.
pub const MAX_TIDS: usize = 256;

/// Forks the watcher; `end` is its end of the pair, `bpf` its filter.
/// Returns the child's pid.
pub fn spawn(end: OwnedFd, bpf: &[u8]) -> io::Result<i32> {
    super::spawn_helper(end, bpf, child)
}

fn child(fd: RawFd, bpf: &[u8]) -> ! {
    // SAFETY: a plain system call with constant arguments.
    let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if nnp != 0 || super::seccomp_load(bpf, 0).is_err() {
        // SAFETY: ends this process.
        unsafe { libc::_exit(1) };
    }
    let mut req = [0u8; MAX_TIDS * 4];
    let mut resp = [0u8; MAX_TIDS * 16];
    let mut status = [0u8; 8192];
    loop {
        // SAFETY: `req` is writable for its length.
        let n = unsafe { libc::read(fd, req.as_mut_ptr().cast(), req.len()) };
        if n <= 0 {
            // SAFETY: ends this process.
            unsafe { libc::_exit(0) };
        }
        let count = n as usize / 4;
        for i in 0..count {
            let tid =
                u32::from_ne_bytes([req[4 * i], req[4 * i + 1], req[4 * i + 2], req[4 * i + 3]]);
            let (own, shared) = pending(tid, &mut status);
            resp[16 * i..16 * i + 8].copy_from_slice(&own.to_ne_bytes());
            resp[16 * i + 8..16 * i + 16].copy_from_slice(&shared.to_ne_bytes());
        }
        // SAFETY: `resp` is readable for the length written.
        unsafe { libc::write(fd, resp.as_ptr().cast(), count * 16) };
    }
}

/// (thread's own, process-wide) pending signals of `tid`, less its blocked ones.
fn pending(tid: u32, buf: &mut [u8; 8192]) -> (u64, u64) {
    let mut path = [0u8; 32];
    proc_status_path(tid, &mut path);
    // SAFETY: `path` is NUL-terminated (proc_status_path leaves the rest zero).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return (0, 0);
    }
    let mut got = 0usize;
    while got < buf.len() {
        // SAFETY: the rest of `buf` is writable.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    let text = &buf[..got];
    let own = field(text, b"\nSigPnd:\t");
    let shared = field(text, b"\nShdPnd:\t");
    let blocked = field(text, b"\nSigBlk:\t");
    (own & !blocked, shared & !blocked)
}

/// Writes `/proc/TID/status` into `out`; its length.
fn proc_status_path(tid: u32, out: &mut [u8; 32]) -> usize {
    let mut digits = [0u8; 10];
    let mut n = tid;
    let mut d = 0;
    loop {
        digits[d] = b'0' + (n % 10) as u8;
        d += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = 0;
    for &b in b"/proc/" {
        out[at] = b;
        at += 1;
    }
    for i in (0..d).rev() {
        out[at] = digits[i];
        at += 1;
    }
    for &b in b"/status" {
        out[at] = b;
        at += 1;
    }
    at
}

/// The hexadecimal mask after `key` in `text`; 0 when absent or malformed.
fn field(text: &[u8], key: &[u8]) -> u64 {
    let Some(start) = text.windows(key.len()).position(|w| w == key) else {
        return 0;
    };
    let mut v: u64 = 0;
    for &c in text[start + key.len()..].iter().take(16) {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => break,
        };
        v = (v << 4) | u64::from(digit);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_masks_parse() {
        let mut p = [0u8; 32];
        let n = proc_status_path(40213, &mut p);
        assert_eq!(&p[..n], b"/proc/40213/status");
        assert_eq!(p[n], 0);
        let text = b"Name:\tx\nSigQ:\t0/1\nSigPnd:\t0000000000000200\nShdPnd:\t0000000000004000\nSigBlk:\t0000000000000200\n";
        assert_eq!(field(text, b"\nSigPnd:\t"), 0x200);
        assert_eq!(field(text, b"\nShdPnd:\t"), 0x4000);
        assert_eq!(field(text, b"\nSigBlk:\t"), 0x200);
        assert_eq!(field(text, b"\nSigIgn:\t"), 0);
    }

    #[test]
    fn this_threads_blocked_pending_signal_is_not_reported() {
        let mut buf = [0u8; 8192];
        let tid = nix::unistd::gettid().as_raw() as u32;
        let (own, _) = pending(tid, &mut buf);
        assert_eq!(own, 0);
        assert_eq!(pending(u32::MAX - 1, &mut buf), (0, 0), "no such thread");
    }
}
