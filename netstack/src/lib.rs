//! smolvisor's user-space TCP/IP stack.
//!
//! smoltcp does the protocol work; this crate adds what Linux programs
//! expect and smoltcp lacks, and keeps the cost per packet independent of
//! the number of sockets.
//!
//! How a packet flows:
//! - **in**: a [`Link`] yields a frame → `demux` reads its headers → the
//!   [`Stack`] finds the owning socket's one-socket set (connection table by
//!   4-tuple, then listeners, UDP ports, ping identifiers) → smoltcp processes
//!   the frame against that set only → the socket layer reacts to the new state
//!   (a child connection for a SYN, the accept queue, errors) and records an
//!   event for the caller.
//! - **out**: a socket call or a timer marks a socket dirty → `poll` asks
//!   smoltcp for that set's output through the socket's NIC → the frame goes
//!   to the NIC's link, and the socket's next deadline goes into a heap.
//!
//! Layers: [`link`] (frame sources and sinks that compose as wrappers),
//! [`Stack`] (NICs, routing, the socket table, `poll(now)`), the socket layer
//! (TCP, UDP and ping sockets with Linux semantics), and [`NetError`] (one
//! error per errno, translated by the Sentry). Time is always passed in, so
//! tests drive the stack with a simulated clock.
//!
//! What the stack adds beside smoltcp: IPv6 fragmentation both ways
//! (`frag6`), its own ARP requests and neighbour solicitations (smoltcp
//! rate-limits resolution per interface, Linux per neighbour), routes through
//! gateways, socket buffers in lazily-touched anonymous
//! mappings that are recycled (`buffers`), and TIME_WAIT kept as a 4-tuple
//! without buffers. [`testbed`] builds the two-host set-up that the demo,
//! the benches and the tests share.
//!
//! [`tcp_engine`] is our own TCP (SACK, RACK-TLP, PRR, CUBIC, a 200 ms RTO
//! floor) as a sans-I/O engine of one connection, tested on simulated
//! links; every TCP socket runs on it (its module doc says how the socket
//! layer and the stack drive it). smoltcp's TCP socket is no longer used.

mod buffers;
mod demux;
mod error;
mod frag6;
pub mod link;
pub mod nat;
mod socket;
mod stack;
pub mod tcp_engine;
pub mod testbed;

pub use error::{NetError, Result};
pub use link::Link;
pub use smoltcp::time::{Duration, Instant};
pub use socket::{
    Datagram, Domain, MAX_BUFFER, MIN_BUFFER, Protocol, Readiness, RecvFlags, Shutdown, SockOpt,
    SockOptName, SocketId,
};
pub use stack::{
    GatewayRoute, IfAddr, Intercepted, LOOPBACK, NicConfig, NicId, NicInfo, NicSetup, Stack,
    StackConfig,
};

/// Starts a thread of the stack's own (a link's writer, the NAT gateway)
/// and returns once it runs: the system calls of a thread's start (its
/// name, its signal stack, glibc's `rseq`) are then behind it, so a
/// process that confines itself with seccomp right after does not kill it.
pub fn spawn_started(name: &str, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let (started, running) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = started.send(());
            body();
        })?;
    running
        .recv()
        .map_err(|_| std::io::Error::other(format!("thread {name} did not start")))
}

#[cfg(test)]
mod tests {
    /// The Sentry may move its stack to another thread (its event loop).
    #[test]
    fn unpredictable_seeds_differ() {
        let a = super::StackConfig::unpredictable().random_seed;
        let b = super::StackConfig::unpredictable().random_seed;
        assert_ne!(a, b);
        assert_ne!(a, super::StackConfig::default().random_seed);
    }

    #[test]
    fn stack_is_send() {
        fn send<T: Send>() {}
        send::<super::Stack>();
    }
}
