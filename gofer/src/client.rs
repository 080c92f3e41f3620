//! The Sentry's end of the channel: one request out, one response (and
//! perhaps a descriptor) back, in turn.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::protocol::{RESPONSE_LEN, Request, Response};
use crate::sys::{self, Errno};

/// A connection to a Gofer.
#[derive(Debug)]
pub struct Client {
    sock: OwnedFd,
}

impl Client {
    /// A client on `sock`, one end of a SOCK_SEQPACKET pair whose other
    /// end the Gofer serves.
    pub fn new(sock: OwnedFd) -> Client {
        Client { sock }
    }

    /// Sends `req` with its descriptors (one per [`crate::protocol::Base::Fd`]
    /// path, in order) and waits for the answer. `Err` means the Gofer is
    /// gone or broke the protocol.
    pub fn call(
        &self,
        req: &Request,
        fds: &[OwnedFd],
    ) -> Result<(Response, Option<OwnedFd>), Errno> {
        let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        sys::send(self.sock.as_fd(), &req.emit(), &raw)?;
        let mut buf = [0u8; RESPONSE_LEN + 1];
        let (len, mut got) = sys::recv(self.sock.as_fd(), &mut buf, 1)?.ok_or(libc::EPIPE)?;
        let resp = Response::parse(&buf[..len], got.len()).map_err(|_| libc::EPROTO)?;
        Ok((resp, got.pop()))
    }
}
