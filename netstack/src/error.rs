//! The netstack's one error type.
//!
//! Every variant corresponds to exactly one errno; the translation happens in
//! the Sentry's socket layer, so this crate never speaks in errno numbers.

/// What a socket operation on the stack can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The operation would block (EAGAIN).
    #[error("operation would block")]
    WouldBlock,
    /// A connection attempt has started and completes in the background (EINPROGRESS).
    #[error("connection in progress")]
    InProgress,
    /// A connection attempt is already under way (EALREADY).
    #[error("connection already in progress")]
    Already,
    /// The socket is already connected (EISCONN).
    #[error("socket is already connected")]
    IsConnected,
    /// The socket is not connected (ENOTCONN).
    #[error("socket is not connected")]
    NotConnected,
    /// The local address is in use (EADDRINUSE).
    #[error("address already in use")]
    AddrInUse,
    /// The local address is not one of the stack's, or no port is free (EADDRNOTAVAIL).
    #[error("address not available")]
    AddrNotAvailable,
    /// The address family does not fit the socket (EAFNOSUPPORT).
    #[error("address family not supported")]
    AddrFamilyNotSupported,
    /// The peer refused the connection (ECONNREFUSED).
    #[error("connection refused")]
    ConnectionRefused,
    /// The peer reset the connection (ECONNRESET).
    #[error("connection reset by peer")]
    ConnectionReset,
    /// The connection was aborted locally (ECONNABORTED).
    #[error("connection aborted")]
    ConnectionAborted,
    /// The peer did not answer in time (ETIMEDOUT).
    #[error("connection timed out")]
    TimedOut,
    /// Writing to a connection whose sending side is closed (EPIPE).
    #[error("broken pipe")]
    BrokenPipe,
    /// No route to the destination network (ENETUNREACH).
    #[error("network is unreachable")]
    NetworkUnreachable,
    /// The destination host did not answer at the link layer (EHOSTUNREACH).
    #[error("no route to host")]
    HostUnreachable,
    /// The message is larger than the protocol allows (EMSGSIZE).
    #[error("message too long")]
    MessageTooLong,
    /// Sending to a broadcast address without `SO_BROADCAST` (EACCES).
    #[error("permission denied: broadcast needs SO_BROADCAST")]
    BroadcastNotAllowed,
    /// An argument is out of range or the socket is in the wrong state (EINVAL).
    #[error("invalid argument")]
    InvalidInput,
    /// A destination address is required (EDESTADDRREQ).
    #[error("destination address required")]
    DestinationRequired,
    /// The operation is not supported by this kind of socket (EOPNOTSUPP).
    #[error("operation not supported on this socket")]
    NotSupported,
    /// The option is not known at this level (ENOPROTOOPT).
    #[error("protocol option not available")]
    NoProtocolOption,
    /// The protocol is not supported for this socket type (EPROTONOSUPPORT).
    #[error("protocol not supported")]
    ProtocolNotSupported,
    /// The handle names no socket (EBADF).
    #[error("no such socket")]
    BadHandle,
    /// The stack ran out of a bounded resource (ENOBUFS).
    #[error("no buffer space available")]
    NoBufferSpace,
}

/// Shorthand for results of stack operations.
pub type Result<T> = std::result::Result<T, NetError>;
