//! The Sentry of one sandbox: its state, and how it is set up. The work is
//! split by concern:
//!
//! - `event_loop`: the epoll set, notifications in and answers out, the
//!   rounds that poll the stack and service the sockets it touched;
//! - `table`: the socket table (by key, cookie and stack socket), and a
//!   record's arrival and departure;
//! - `resolve`: from a guest descriptor to our record (pidfds, `pidfd_getfd`,
//!   `SO_COOKIE`);
//! - `pool`: AF_UNIX pairs made ahead of time;
//! - `unconnected`: TCP sockets before they connect or listen;
//! - `pumps`: bytes and datagrams between pair ends and stack sockets;
//! - `listening`, `connecting`: the two states a pair fakes (pending
//!   connections, a connect under way);
//! - `parking`: blocked calls, their deadlines and signals.

use std::io;
use std::time::{Duration, Instant as StdInstant};

use netstack::{Link, NetError, NicSetup, SocketId, Stack, StackConfig};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use std::os::fd::OwnedFd;

use crate::errno::Errno;
use crate::gsock::GKey;
use crate::listeners::{Listeners, Members, Ready};
use crate::mem::Mem;
use crate::sys::{Notif, Reply};
use crate::syscalls::Resume;
use crate::trace::Tracer;

mod connecting;
mod event_loop;
mod listening;
mod parking;
pub(crate) mod pool;
mod pumps;
mod resolve;
mod table;
mod unconnected;

pub use parking::Parked;
pub use resolve::Resolved;
pub(crate) use table::SockTable;

use event_loop::{
    TOKEN_EXECS, TOKEN_INIT, TOKEN_LINK, TOKEN_LISTENER, TOKEN_MEMBERS, TOKEN_NAT, TOKEN_SIGNAL,
};
use pool::PairPool;
use resolve::PidfdCache;

/// How often blocked calls are checked for callers that went away.
const SWEEP: Duration = Duration::from_millis(500);
/// How much the Sentry moves between a pair and the stack per read.
const SCRATCH: usize = 256 << 10;
/// The Sentry holds one descriptor per guest socket: lift its limit as far
/// as the system allows (the guest keeps its own, inherited before).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const WANT: u64 = 1 << 20;
    if setrlimit(Resource::RLIMIT_NOFILE, WANT, WANT).is_ok() {
        return;
    }
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// What a handler decided.
#[derive(Debug)]
pub enum Outcome {
    /// Answer now.
    Reply(Reply),
    /// The handler already answered (a descriptor was installed).
    Done,
    /// Wait for the continuation's socket to change, until the deadline;
    /// then resume from the continuation.
    Park(Box<Resume>, Option<Duration>),
    /// Resume from the continuation after the event loop's next round.
    Defer(Box<Resume>),
}

impl From<Result<i64, Errno>> for Outcome {
    fn from(r: Result<i64, Errno>) -> Self {
        match r {
            Ok(v) => Outcome::Reply(Reply::Value(v)),
            Err(e) => Outcome::Reply(Reply::Errno(e)),
        }
    }
}

/// Settings of one Sentry.
#[derive(Debug, Default)]
pub struct SentryConfig {
    /// Where to record every trapped call (`--debug-log`).
    pub debug_log: Option<std::path::PathBuf>,
    /// Whether `run` confines the Sentry with its own seccomp filter
    /// ([`crate::filter::confine_sentry`]) before serving. On for
    /// `smolvisor`; tests that embed a Sentry in a test process turn it off.
    pub confine: bool,
    /// Most bytes the TCP buffers of the guest's stack hold together
    /// (`--tcp-memory`); [`DEFAULT_TCP_MEMORY`] when unset.
    pub tcp_memory: Option<usize>,
}

/// The TCP buffers' memory limit unless `--tcp-memory` says otherwise:
/// room for about fifty connections with full 4 MiB windows at once.
/// Past it every connection still moves, through a 4 KiB floor each way
/// (see [`netstack::budget`]).
pub const DEFAULT_TCP_MEMORY: usize = 256 << 20;

/// The sandbox's network, set up before the Sentry starts: `--network`.
#[derive(Default)]
pub struct SentryNetwork {
    /// `lo`'s link when it is wrapped (a pcap sniffer); a plain loopback otherwise.
    pub loopback: Option<Box<dyn Link>>,
    /// The other NICs.
    pub nics: Vec<NicSetup>,
    /// The gateways behind them: one in `nat` mode, one per NIC in `relay`
    /// mode (whose guest listeners are mirrored, see
    /// [`netstack::nat::ListenMirror`]).
    pub gateways: Vec<netstack::nat::Nat>,
    /// Whether threads of the Sentry's own make or accept host sockets
    /// besides the NAT's (an OCI container's control socket, the resolver
    /// relay): its confinement then allows them.
    pub host_sockets: bool,
}

impl std::fmt::Debug for SentryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentryNetwork")
            .field("nics", &self.nics)
            .field("gateways", &self.gateways.len())
            .finish_non_exhaustive()
    }
}

/// The Sentry of one sandbox.
#[derive(Debug)]
pub struct Sentry {
    pub(crate) stack: Stack,
    pub(crate) listeners: Listeners,
    ready: Vec<Ready>,
    epoll: Epoll,
    pub(crate) socks: SockTable,
    pidfds: PidfdCache,
    pub(crate) mem: Mem,
    pub(crate) scratch: Vec<u8>,
    start: StdInstant,
    pub(crate) tracer: Option<Tracer>,
    init: Pid,
    init_pidfd: OwnedFd,
    /// The init's status once it has ended (while pod members live on).
    init_status: Option<i32>,
    /// A pod's other containers' inits: the Sentry serves until they end too.
    members: Members,
    signals: SignalFd,
    next_sweep: StdInstant,
    pub(crate) next_nl_port: u32,
    events: Vec<SocketId>,
    touched: Vec<GKey>,
    /// Sockets with blocked calls (may hold stale or repeated keys).
    parked_keys: Vec<GKey>,
    /// Calls to try again after the next round.
    deferred: Vec<(Notif, Box<Resume>)>,
    /// Ready pairs.
    pool: PairPool,
    /// TCP sockets before connect or listen: the connector, ready sockets,
    /// and which of the guest's are open.
    pub(crate) unconnected: unconnected::Unconnected,
    confine: bool,
    /// Threads of the Sentry make host sockets (the NAT gateway, an OCI
    /// container's control socket): the filter allows it.
    nat_mode: bool,
    /// Readable when a gateway queued frames for the guest's NIC.
    nat_wakeups: Vec<OwnedFd>,
    /// Host listeners that mirror the guest's (relay mode).
    pub(crate) mirrors: Vec<netstack::nat::ListenMirror>,
    /// Which blocked callers have a signal to handle, when received calls
    /// wait killably (see `sigwatch.rs`).
    sigwatch: Option<crate::sigwatch::SignalWatch>,
    /// When blocked callers are next checked for signals.
    next_signal_check: StdInstant,
    /// The Gofer that makes the guest's file changes (`syscalls/files.rs`).
    pub(crate) gofer: Option<gofer::Client>,
}

impl Sentry {
    /// A Sentry serving the guest behind `listener`, whose init is `init`.
    /// Blocks SIGTERM, SIGHUP, SIGINT and SIGQUIT in the calling thread: the
    /// first two are passed on to the guest, the terminal's own go to the
    /// guest directly.
    pub fn new(
        cfg: &SentryConfig,
        net: SentryNetwork,
        listener: OwnedFd,
        init: Pid,
        init_pidfd: OwnedFd,
    ) -> io::Result<Sentry> {
        let start = StdInstant::now();
        let zero = netstack::Instant::from_micros(0);
        // Room for a busy veth's window plus the time the guest or the
        // Sentry is off the CPU (the rings grow on demand, so an idle socket
        // pays nothing): with 1 MiB to receive and 256 KiB to send, iperf3
        // over a veth ran at about 0.6x native either way.
        let stack_cfg = StackConfig {
            tcp_recv_buffer: 4 << 20,
            tcp_send_buffer: 1 << 20,
            tcp_memory: netstack::Budget::new(cfg.tcp_memory.unwrap_or(DEFAULT_TCP_MEMORY)),
            ..StackConfig::unpredictable()
        };
        let mut stack = match net.loopback {
            Some(lo) => Stack::with_loopback(stack_cfg, zero, lo),
            None => Stack::new(stack_cfg, zero),
        };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        for nic in net.nics {
            let name = nic.config.name.clone();
            let bad = |e: NetError| io::Error::other(format!("setting up {name}: {e}"));
            let (_, skipped) = stack.add_nic_setup(nic).map_err(bad)?;
            for why in skipped {
                tracing::warn!("{why}");
            }
        }
        // The stack owns these links, and their descriptors, for as long as
        // the Sentry (and so its epoll set) lives.
        for (_, fd) in stack.link_fds() {
            epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LINK))?;
        }
        // Each gateway runs on a thread of its own (see `Nat::spawn`); it
        // signals when it has frames for the guest's NIC.
        let nat_mode = !net.gateways.is_empty() || net.host_sockets;
        let (mut nat_wakeups, mut mirrors) = (Vec::new(), Vec::new());
        for mut nat in net.gateways {
            let wake = nat.guest_wakeup()?;
            epoll.add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_NAT))?;
            if nat.is_relay() {
                mirrors.push(nat.mirror());
            }
            nat.spawn(start)?;
            nat_wakeups.push(wake);
        }
        // A process of its own, which needs CAP_SYS_ADMIN for its network
        // namespace: before the capabilities go.
        let unconnected = unconnected::Unconnected::new()?;
        // Set-up is over (the gateways' threads entered their namespaces
        // and kept what they need): no thread holds more than it needs.
        if cfg.confine {
            crate::privileges::shed_process()?;
        }
        let listeners = Listeners::new(listener)?;
        epoll.add(
            listeners.first(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LISTENER),
        )?;
        epoll.add(
            listeners.more_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_EXECS),
        )?;
        epoll.add(
            &init_pidfd,
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_INIT),
        )?;
        let members = Members::new()?;
        epoll.add(
            members.fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_MEMBERS),
        )?;
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGINT,
            Signal::SIGQUIT,
        ] {
            mask.add(s);
        }
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        epoll.add(&signals, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL))?;
        raise_fd_limit();
        // Before the Sentry confines itself: the watcher reads /proc.
        let sigwatch = if crate::sigwatch::waits_killable() {
            Some(crate::sigwatch::SignalWatch::spawn()?)
        } else {
            None
        };
        let tracer = match &cfg.debug_log {
            Some(p) => Some(Tracer::create(p)?),
            None => None,
        };
        Ok(Sentry {
            stack,
            listeners,
            ready: Vec::new(),
            epoll,
            socks: SockTable::default(),
            pidfds: PidfdCache::default(),
            mem: Mem,
            scratch: vec![0u8; SCRATCH],
            start,
            tracer,
            init,
            init_pidfd,
            init_status: None,
            members,
            signals,
            next_sweep: start + SWEEP,
            next_nl_port: 0x4000_0000,
            events: Vec::new(),
            touched: Vec::new(),
            parked_keys: Vec::new(),
            deferred: Vec::new(),
            pool: PairPool::default(),
            unconnected,
            confine: cfg.confine,
            nat_mode,
            nat_wakeups,
            mirrors,
            sigwatch,
            next_signal_check: start,
            gofer: None,
        })
    }

    /// Sends the guest's file changes to `gofer` (without one, the calls
    /// that change files run natively).
    pub fn set_gofer(&mut self, gofer: gofer::Client) {
        self.gofer = Some(gofer);
    }

    /// Ends the sandbox: kills its init, so every guest process goes and
    /// the event loop returns (the Gofer stopped answering).
    pub(crate) fn end_sandbox(&self) {
        let _ = crate::sys::pidfd_send_signal(
            std::os::fd::AsFd::as_fd(&self.init_pidfd),
            libc::SIGKILL,
        );
    }

    /// The stack socket behind a resolved guest socket.
    pub(crate) fn stack_id(&self, key: GKey) -> Option<SocketId> {
        self.socks.get(key).and_then(|s| s.id)
    }
}
