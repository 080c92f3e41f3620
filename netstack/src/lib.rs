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

pub mod budget;
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

pub use budget::Budget;
pub use error::{NetError, Result};
pub use link::Link;
pub use smoltcp::time::{Duration, Instant};
pub use socket::{
    Datagram, Domain, IpMarks, MAX_BUFFER, MIN_BUFFER, Protocol, Readiness, RecvFlags, Shutdown,
    SockOpt, SockOptName, SocketId,
};
pub use stack::{
    GatewayRoute, IfAddr, Intercepted, LOOPBACK, NicConfig, NicId, NicInfo, NicSetup, Stack,
    StackConfig,
};

/// What every thread [`spawn_started`] starts runs first, with the
/// thread's name; set once per process ([`on_thread_start`]).
static THREAD_START: std::sync::OnceLock<fn(&str) -> std::io::Result<()>> =
    std::sync::OnceLock::new();

/// Makes every thread [`spawn_started`] starts from now on run `hook` with
/// its name before anything else, and fail to start if it fails: the
/// Sentry sheds each thread's privileges this way, by what the thread is
/// for. Only the first call counts; returns whether this one did.
pub fn on_thread_start(hook: fn(&str) -> std::io::Result<()>) -> bool {
    THREAD_START.set(hook).is_ok()
}

/// Starts a thread of the stack's own (a link's writer, the NAT gateway)
/// and returns once it runs: the system calls of a thread's start (its
/// name, its signal stack, glibc's `rseq`, the [`on_thread_start`] hook)
/// are then behind it, so a process that confines itself with seccomp
/// right after does not kill it.
pub fn spawn_started(name: &str, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    spawn_prepared(name, || Ok(()), body)
}

/// [`spawn_started`], with `prepare` run in the new thread before the
/// [`on_thread_start`] hook (which may take away what `prepare` needs,
/// such as the right to enter a namespace); its failure is the caller's.
pub fn spawn_prepared(
    name: &str,
    prepare: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    let (started, running) = std::sync::mpsc::sync_channel(1);
    let hook = THREAD_START.get().copied();
    let thread_name = name.to_owned();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let ready = prepare().and_then(|()| hook.map_or(Ok(()), |h| h(&thread_name)));
            let failed = ready.is_err();
            let _ = started.send(ready);
            if !failed {
                body();
            }
        })?;
    match running.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(std::io::Error::new(
            e.kind(),
            format!("thread {name} could not start: {e}"),
        )),
        Err(_) => Err(std::io::Error::other(format!(
            "thread {name} did not start"
        ))),
    }
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
