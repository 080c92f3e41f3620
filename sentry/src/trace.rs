//! `--debug-log`: one line per trapped call, with its arguments and answer,
//! like runsc's `--strace`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::sys::Notif;

/// Writes the debug log.
#[derive(Debug)]
pub struct Tracer {
    out: BufWriter<File>,
    start: std::time::Instant,
}

impl Tracer {
    /// Creates (truncates) the log file.
    pub fn create(path: &Path) -> io::Result<Tracer> {
        Ok(Tracer {
            out: BufWriter::new(File::create(path)?),
            start: std::time::Instant::now(),
        })
    }

    /// One line: time, thread, call, arguments, and what became of it.
    pub fn line(&mut self, n: &Notif, what: &str) {
        let t = self.start.elapsed();
        let a = n.args;
        let _ = writeln!(
            self.out,
            "{:>6}.{:06} [{}] {}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x}) = {}",
            t.as_secs(),
            t.subsec_micros(),
            n.tid,
            syscall_name(n.nr),
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            what
        );
        let _ = self.out.flush();
    }
}

/// The name of a trapped call.
pub fn syscall_name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_socket => "socket",
        libc::SYS_connect => "connect",
        libc::SYS_accept => "accept",
        libc::SYS_accept4 => "accept4",
        libc::SYS_sendto => "sendto",
        libc::SYS_recvfrom => "recvfrom",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_recvmsg => "recvmsg",
        libc::SYS_sendmmsg => "sendmmsg",
        libc::SYS_recvmmsg => "recvmmsg",
        libc::SYS_shutdown => "shutdown",
        libc::SYS_bind => "bind",
        libc::SYS_listen => "listen",
        libc::SYS_getsockname => "getsockname",
        libc::SYS_getpeername => "getpeername",
        libc::SYS_setsockopt => "setsockopt",
        libc::SYS_getsockopt => "getsockopt",
        libc::SYS_ioctl => "ioctl",
        _ => "syscall",
    }
}
