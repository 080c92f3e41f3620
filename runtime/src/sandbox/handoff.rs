//! The start-up channel between the runtime and the guest's init and command:
//! one `SOCK_SEQPACKET` pair made before the fork, one message per report.
//!
//! The guest side only ever `write()`s and `read()`s it, because after its
//! seccomp filter is loaded every socket call (`sendmsg`, `recvmsg`…) would
//! trap to a Sentry that is not running yet. The runtime's end has
//! `SO_PASSCRED`, so the kernel stamps each message with the sender's pid, as
//! the runtime's PID namespace sees it: that is how the runtime learns the
//! command's host pid for `pidfd_getfd`.
//!
//! Reports go guest → runtime ([`Report`], encoded as a tag byte and a
//! payload); the runtime answers a [`Report::Listener`] with the single byte
//! [`ACK`]. The command's end is close-on-exec, so end-of-file after the
//! listener means the command was executed.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::unistd::Pid;

/// The runtime's answer to [`Report::Listener`]: it holds its own copy now.
pub(crate) const ACK: u8 = b'A';

/// Longest message, tag included; longer texts are cut.
const MAX_MESSAGE: usize = 4096;

const TAG_WARNING: u8 = b'W';
const TAG_SETUP_FAILED: u8 = b'E';
const TAG_LISTENER: u8 = b'L';
const TAG_EXEC_FAILED: u8 = b'X';
const TAG_TREE: u8 = b'T';

/// What the guest side tells the runtime during start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Report {
    /// Something the user should know about, start-up goes on (e.g. a mount
    /// that overlayfs refused and the guest sees read-only).
    Warning(String),
    /// Start-up failed before the command was executed; the guest exits.
    SetupFailed(String),
    /// The seccomp listener's descriptor number in the command's file table.
    Listener(RawFd),
    /// `execvp` of the command failed with this errno; the guest exits.
    ExecFailed(Errno),
    /// The Gofer's writable clone of the file tree: its descriptor number
    /// in the init's file table (the init closes it once acknowledged).
    Tree(RawFd),
}

impl Report {
    /// The wire form: a tag byte, then text (UTF-8) or a little-endian `i32`.
    pub(crate) fn emit(&self) -> Vec<u8> {
        let (tag, payload) = match self {
            Report::Warning(text) => (TAG_WARNING, text.as_bytes().to_vec()),
            Report::SetupFailed(text) => (TAG_SETUP_FAILED, text.as_bytes().to_vec()),
            Report::Listener(fd) => (TAG_LISTENER, fd.to_le_bytes().to_vec()),
            Report::ExecFailed(errno) => (TAG_EXEC_FAILED, (*errno as i32).to_le_bytes().to_vec()),
            Report::Tree(fd) => (TAG_TREE, fd.to_le_bytes().to_vec()),
        };
        let mut out = Vec::with_capacity(1 + payload.len());
        out.push(tag);
        out.extend_from_slice(&payload);
        out.truncate(MAX_MESSAGE);
        out
    }

    /// Parses one message; `None` for anything [`Report::emit`] cannot produce.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Report> {
        let (&tag, payload) = bytes.split_first()?;
        let text = || String::from_utf8_lossy(payload).into_owned();
        let number = || payload.try_into().ok().map(i32::from_le_bytes);
        match tag {
            TAG_WARNING => Some(Report::Warning(text())),
            TAG_SETUP_FAILED => Some(Report::SetupFailed(text())),
            TAG_LISTENER => number().filter(|fd| *fd >= 0).map(Report::Listener),
            TAG_EXEC_FAILED => number().map(|e| Report::ExecFailed(Errno::from_raw(e))),
            TAG_TREE => number().filter(|fd| *fd >= 0).map(Report::Tree),
            _ => None,
        }
    }
}

/// Sends one report from the guest side with a plain `write()`, which the
/// guest's seccomp filter lets through.
pub(crate) fn send(channel: BorrowedFd<'_>, report: &Report) -> nix::Result<()> {
    let message = report.emit();
    loop {
        match nix::unistd::write(channel, &message) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Waits, on the guest side, for the runtime's [`ACK`]; `false` when the
/// runtime said something else or went away.
pub(crate) fn wait_for_ack(channel: BorrowedFd<'_>) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(channel, &mut byte) {
            Ok(1) => return byte[0] == ACK,
            Err(Errno::EINTR) => continue,
            _ => return false,
        }
    }
}

/// A report as the runtime received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    /// What was said; `None` when the message did not parse.
    pub report: Option<Report>,
    /// The sending process, in the runtime's PID namespace (`SCM_CREDENTIALS`).
    pub sender: Option<Pid>,
}

/// Receives the next report on the runtime's end; `Ok(None)` at end-of-file
/// (every guest-side copy of the channel is closed).
pub(crate) fn receive(channel: BorrowedFd<'_>) -> nix::Result<Option<Received>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut control = nix::cmsg_space!(libc::ucred);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        if msg.bytes == 0 {
            return Ok(None);
        }
        let sender = msg.cmsgs()?.find_map(|c| match c {
            ControlMessageOwned::ScmCredentials(creds) => Some(Pid::from_raw(creds.pid())),
            _ => None,
        });
        let bytes = msg.bytes;
        return Ok(Some(Received {
            report: Report::parse(&buf[..bytes]),
            sender,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for report in [
            Report::Warning("overlay refused /x".into()),
            Report::SetupFailed("mounting /proc: EPERM".into()),
            Report::Listener(7),
            Report::ExecFailed(Errno::ENOENT),
            Report::Tree(5),
        ] {
            assert_eq!(Report::parse(&report.emit()), Some(report));
        }
    }

    #[test]
    fn rejects_what_emit_cannot_produce() {
        assert_eq!(Report::parse(b""), None);
        assert_eq!(Report::parse(b"Q"), None);
        assert_eq!(Report::parse(b"L\x01\x00\x00"), None);
        assert_eq!(Report::parse(b"L\xff\xff\xff\xff"), None);
        assert_eq!(Report::parse(b"T\xff\xff\xff\xff"), None);
        assert_eq!(Report::parse(b"X\x02\x00\x00\x00\x00"), None);
    }

    #[test]
    fn long_texts_are_cut() {
        let long = Report::SetupFailed("x".repeat(2 * MAX_MESSAGE));
        assert_eq!(long.emit().len(), MAX_MESSAGE);
    }
}
