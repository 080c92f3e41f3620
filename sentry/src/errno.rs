//! The Sentry's one error type for the guest: [`Errno`], the errno a
//! trapped call answers. Netstack errors, nix's and the host's become one
//! here, and nowhere else.

use std::fmt;
use std::io;

use netstack::NetError;

/// An errno a trapped call answers (a positive `errno` value), or
/// [`CALLER_GONE`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

macro_rules! errnos {
    ($($name:ident)*) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`.")]
                pub const $name: Errno = Errno(libc::$name);
            )*
        }
    };
}

errnos! {
    EACCES EADDRINUSE EADDRNOTAVAIL EAFNOSUPPORT EAGAIN EALREADY EBADF EBUSY
    ECONNABORTED ECONNREFUSED ECONNRESET EDESTADDRREQ EDOM EFAULT EHOSTUNREACH
    EINPROGRESS EINTR EINVAL EIO EISCONN EMFILE EMSGSIZE ENETUNREACH ENFILE
    ENOBUFS ENOENT ENOMEM ENOPROTOOPT ENOSYS ENOTCONN ENOTTY EOPNOTSUPP EPERM
    EPIPE EPROTO EPROTONOSUPPORT ESOCKTNOSUPPORT ESRCH ETIMEDOUT
}

impl Errno {
    /// The kernel's "restart the call" (512), which a seccomp answer may
    /// carry: the kernel runs the signal handler, then restarts the call
    /// (`SA_RESTART`) or fails it with EINTR.
    pub const ERESTARTSYS: Errno = Errno(512);

    /// The errno with this number.
    pub const fn from_raw(e: i32) -> Errno {
        Errno(e)
    }

    /// Its number, as the seccomp answer carries it.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The errno of a host call that failed, `otherwise` when it has none.
    pub fn of_io(e: &io::Error, otherwise: Errno) -> Errno {
        e.raw_os_error().map_or(otherwise, Errno)
    }
}

/// The number, as the debug log has always shown it.
impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<nix::errno::Errno> for Errno {
    fn from(e: nix::errno::Errno) -> Errno {
        Errno(e as i32)
    }
}

impl From<NetError> for Errno {
    fn from(e: NetError) -> Errno {
        errno(e)
    }
}

/// The errno Linux gives for `e`.
pub fn errno(e: NetError) -> Errno {
    Errno(match e {
        NetError::WouldBlock => libc::EAGAIN,
        NetError::InProgress => libc::EINPROGRESS,
        NetError::Already => libc::EALREADY,
        NetError::IsConnected => libc::EISCONN,
        NetError::NotConnected => libc::ENOTCONN,
        NetError::AddrInUse => libc::EADDRINUSE,
        NetError::AddrNotAvailable => libc::EADDRNOTAVAIL,
        NetError::AddrFamilyNotSupported => libc::EAFNOSUPPORT,
        NetError::ConnectionRefused => libc::ECONNREFUSED,
        NetError::ConnectionReset => libc::ECONNRESET,
        NetError::ConnectionAborted => libc::ECONNABORTED,
        NetError::TimedOut => libc::ETIMEDOUT,
        NetError::BrokenPipe => libc::EPIPE,
        NetError::NetworkUnreachable => libc::ENETUNREACH,
        NetError::HostUnreachable => libc::EHOSTUNREACH,
        NetError::MessageTooLong => libc::EMSGSIZE,
        NetError::BroadcastNotAllowed => libc::EACCES,
        NetError::InvalidInput => libc::EINVAL,
        NetError::DestinationRequired => libc::EDESTADDRREQ,
        NetError::NotSupported => libc::EOPNOTSUPP,
        NetError::NoProtocolOption => libc::ENOPROTOOPT,
        NetError::ProtocolNotSupported => libc::EPROTONOSUPPORT,
        NetError::BadHandle => libc::EBADF,
        NetError::NoBufferSpace => libc::ENOBUFS,
    })
}

/// Not an errno: the trapped call was cancelled (a signal reached the
/// caller) while the Sentry served it. Nothing it would have consumed may
/// be consumed, and no answer is sent; the caller sees EINTR, or the kernel
/// restarts the call as a new notification.
pub const CALLER_GONE: Errno = Errno(-1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_linux_s() {
        assert_eq!(Errno::EINVAL.raw(), 22);
        assert_eq!(Errno::from(NetError::AddrInUse), Errno::EADDRINUSE);
        assert_eq!(Errno::from(nix::errno::Errno::EPIPE), Errno::EPIPE);
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(Errno::of_io(&e, Errno::EIO), Errno::EMFILE);
        assert_eq!(Errno::of_io(&io::Error::other("x"), Errno::EIO), Errno::EIO);
    }

    #[test]
    fn the_debug_log_shows_numbers() {
        use crate::sys::Reply;
        assert_eq!(format!("{:?}", Reply::Errno(Errno::ENOTCONN)), "Errno(107)");
        assert_eq!(format!("{CALLER_GONE:?}"), "-1");
    }
}
