//! The one place where netstack errors become errno values.

use netstack::NetError;

/// The errno Linux gives for `e`.
pub fn errno(e: NetError) -> i32 {
    match e {
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
    }
}

/// Not an errno: the trapped call was cancelled (a signal reached the
/// caller) while the Sentry served it. Nothing it would have consumed may
/// be consumed, and no answer is sent; the caller sees EINTR, or the kernel
/// restarts the call as a new notification.
pub const CALLER_GONE: i32 = -1;
