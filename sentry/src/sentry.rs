//! The Sentry's event loop: seccomp notifications in, answers out, and the
//! bytes between each pair end and its netstack socket.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant as StdInstant};

use netstack::{
    Link, NetError, NicSetup, RecvFlags, Shutdown as NetShutdown, SockOpt, SocketId, Stack,
    StackConfig,
};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{MsgFlags, Shutdown, recv, send, shutdown};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use slotmap::{Key, KeyData, SlotMap};

use crate::gsock::{Delivered, GKey, GSock, payload_hash};
use crate::listeners::{ListenerInbox, Listeners, Ready};
use crate::mem::Mem;
use crate::sys::{self, Notif, Reply};
use crate::trace::Tracer;

mod parking;
pub use parking::Parked;

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_INIT: u64 = u64::MAX - 1;
const TOKEN_SIGNAL: u64 = u64::MAX - 2;
/// A link backed by the host (AF_PACKET, TAP) has frames.
const TOKEN_LINK: u64 = u64::MAX - 3;
/// The NAT gateway has queued frames for the guest.
const TOKEN_NAT: u64 = u64::MAX - 4;
/// More listeners arrived (an `exec` into the container).
const TOKEN_MORE: u64 = u64::MAX - 5;
/// An `exec`'s listener has a notification.
const TOKEN_EXECS: u64 = u64::MAX - 6;
/// Tokens below this are pair ends (`GKey`s).
const TOKEN_RESERVED: u64 = u64::MAX - 15;
/// How much the Sentry moves between a pair and the stack per read.
const SCRATCH: usize = 256 << 10;
/// Threads whose pidfds are kept open (each costs the Sentry a descriptor,
/// which guest sockets need more).
const MAX_PIDFDS: usize = 256;
/// How often blocked calls are checked for callers that went away.
const SWEEP: Duration = Duration::from_millis(500);

/// Send buffer of each pair end: room for a fast stream without a trip
/// through the Sentry for every few kilobytes.
const PAIR_BUFFER: usize = 1 << 20;
/// Pairs kept ready, per kind and guest-end mode: making one costs several
/// system calls, which are better spent while the guest runs than while it
/// waits in socket() or accept().
const POOL_STREAM: usize = 4;
const POOL_SEQPACKET: usize = 2;

/// Both ends of an AF_UNIX pair, made ahead of time.
#[derive(Debug)]
struct Pair {
    end: OwnedFd,
    guest: OwnedFd,
    cookie: u64,
}

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

/// Which pool holds pairs of this kind and guest-end mode.
fn pool_slot(stream: bool, guest_nonblock: bool) -> usize {
    usize::from(stream) * 2 + usize::from(guest_nonblock)
}

/// How many pairs of a kind are kept ready.
fn pool_size(stream: bool) -> usize {
    if stream { POOL_STREAM } else { POOL_SEQPACKET }
}

/// Makes a pair: stream (TCP) or seqpacket (datagrams), close-on-exec,
/// with large send buffers; the Sentry's end non-blocking, the guest's as
/// asked.
fn new_pair(stream: bool, guest_nonblock: bool) -> Result<Pair, i32> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};
    let ty = if stream {
        SockType::Stream
    } else {
        SockType::SeqPacket
    };
    let (end, guest) = socketpair(
        AddressFamily::Unix,
        ty,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(|e| e as i32)?;
    if !guest_nonblock {
        fcntl(&guest, FcntlArg::F_SETFL(OFlag::O_RDWR)).map_err(|e| e as i32)?;
    }
    // Root may exceed wmem_max; fall back quietly when not root.
    for fd in [&end, &guest] {
        if setsockopt(fd, sockopt::SndBufForce, &PAIR_BUFFER).is_err() {
            let _ = setsockopt(fd, sockopt::SndBuf, &PAIR_BUFFER);
        }
    }
    let cookie =
        sys::socket_cookie(guest.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    Ok(Pair { end, guest, cookie })
}

/// What a handler decided.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Answer now.
    Reply(Reply),
    /// The handler already answered (a descriptor was installed).
    Done,
    /// Wait for the socket to change, until the deadline.
    Park(GKey, Option<Duration>),
}

impl From<Result<i64, i32>> for Outcome {
    fn from(r: Result<i64, i32>) -> Self {
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
}

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

/// A guest descriptor resolved to one of our sockets.
#[derive(Debug)]
pub struct Resolved {
    /// Our record, when the descriptor is one of our pair ends.
    pub key: Option<GKey>,
    /// A copy of the guest's descriptor, valid during this call.
    pub file: OwnedFd,
}

impl Resolved {
    /// The descriptor's O_NONBLOCK (asked only by calls that may block).
    pub fn nonblock(&self) -> bool {
        nix::fcntl::fcntl(&self.file, nix::fcntl::FcntlArg::F_GETFL)
            .is_ok_and(|f| f & libc::O_NONBLOCK != 0)
    }
}

/// The Sentry of one sandbox.
#[derive(Debug)]
pub struct Sentry {
    pub(crate) stack: Stack,
    pub(crate) listeners: Listeners,
    ready: Vec<Ready>,
    epoll: Epoll,
    pub(crate) socks: SlotMap<GKey, GSock>,
    pub(crate) by_cookie: HashMap<u64, GKey>,
    pub(crate) by_id: HashMap<SocketId, GKey>,
    pidfds: HashMap<u32, OwnedFd>,
    pub(crate) mem: Mem,
    pub(crate) scratch: Vec<u8>,
    start: StdInstant,
    pub(crate) tracer: Option<Tracer>,
    init: Pid,
    init_pidfd: OwnedFd,
    signals: SignalFd,
    next_sweep: StdInstant,
    pub(crate) next_nl_port: u32,
    events: Vec<SocketId>,
    touched: Vec<GKey>,
    /// Sockets with blocked calls (may hold stale or repeated keys).
    parked_keys: Vec<GKey>,
    /// Ready pairs, by kind and the guest end's blocking mode (`pool_slot`).
    pools: [Vec<Pair>; 4],
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
            socks: SlotMap::with_key(),
            by_cookie: HashMap::new(),
            by_id: HashMap::new(),
            pidfds: HashMap::new(),
            mem: Mem,
            scratch: vec![0u8; SCRATCH],
            start,
            tracer,
            init,
            init_pidfd,
            signals,
            next_sweep: start + SWEEP,
            next_nl_port: 0x4000_0000,
            events: Vec::new(),
            touched: Vec::new(),
            parked_keys: Vec::new(),
            pools: Default::default(),
            confine: cfg.confine,
            nat_mode,
            nat_wakeups,
            mirrors,
            sigwatch,
            next_signal_check: start,
        })
    }

    /// Serves the guest until its init exits; returns the guest's exit
    /// status (its code, or 128+N for a signal N).
    pub fn run(mut self) -> io::Result<i32> {
        let mut events = vec![EpollEvent::empty(); 256];
        self.refill_pairs();
        if self.confine {
            crate::filter::confine_sentry(self.nat_mode)?;
        }
        loop {
            let timeout = self.timeout();
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            // The guest's closes and writes first: a call that traps right
            // after a close must find that socket gone (its port free), and
            // the edge that said so is not reported twice.
            let (mut notified, mut execs, mut ends) = (false, false, false);
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_LISTENER => notified = true,
                    TOKEN_EXECS => execs = true,
                    TOKEN_INIT => {
                        if let Some(code) = self.reap_init()? {
                            return Ok(code);
                        }
                    }
                    TOKEN_SIGNAL => self.on_signal(),
                    // The stack reads its links on every round.
                    TOKEN_LINK => {}
                    // Taken before the round reads the cable (frames queued
                    // after it signal again).
                    TOKEN_NAT => {
                        for fd in &self.nat_wakeups {
                            let _ = nix::unistd::read(fd, &mut [0u8; 8]);
                        }
                    }
                    TOKEN_MORE => self.listeners.take_arrivals(),
                    token => {
                        let key = GKey::from(KeyData::from_ffi(token));
                        self.on_end_event(key, ev.events());
                        ends = true;
                    }
                }
            }
            if notified || execs {
                if ends {
                    self.poll_stack();
                }
                self.on_notification(notified, execs);
            }
            self.poll_stack();
            self.sync_mirrors();
            self.expire_parked();
            self.refill_pairs();
        }
    }

    /// Keeps the relay's host listeners in step with the guest's (a close
    /// shows here; a `listen` syncs before it answers).
    pub(crate) fn sync_mirrors(&mut self) {
        for m in &mut self.mirrors {
            for (proto, port, e) in m.sync(&self.stack) {
                tracing::warn!(
                    "{proto:?} port {port}: no host socket for the guest's ({e}); \
                     only the sandbox's own traffic reaches it"
                );
            }
        }
    }

    /// A pair for a new guest socket: (Sentry's end, guest's end, the guest
    /// end's cookie), its guest end blocking unless asked otherwise.
    pub(crate) fn take_pair(
        &mut self,
        stream: bool,
        guest_nonblock: bool,
    ) -> Result<(OwnedFd, OwnedFd, u64), i32> {
        let slot = pool_slot(stream, guest_nonblock);
        let p = match self.pools[slot].pop() {
            Some(p) => p,
            None => new_pair(stream, guest_nonblock)?,
        };
        Ok((p.end, p.guest, p.cookie))
    }

    fn refill_pairs(&mut self) {
        for stream in [true, false] {
            for nonblock in [false, true] {
                let (slot, want) = (pool_slot(stream, nonblock), pool_size(stream));
                while self.pools[slot].len() < want {
                    match new_pair(stream, nonblock) {
                        Ok(p) => self.pools[slot].push(p),
                        Err(_) => break,
                    }
                }
            }
        }
    }

    /// Runs the stack alone: its events wait for the next full round.
    pub(crate) fn poll_stack_only(&mut self) {
        let now = self.now();
        self.stack.poll(now);
    }

    /// Handles the guest's closes that already happened: a `close` is
    /// native, so the Sentry learns of it from its end's hang-up, which the
    /// kernel queued before `close` returned. A bind that finds its port
    /// busy settles first, so a port the guest just released is free.
    pub(crate) fn settle(&mut self) {
        let mut events = [EpollEvent::empty(); 64];
        let Ok(n) = self.epoll.wait(&mut events, EpollTimeout::ZERO) else {
            return;
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token < TOKEN_RESERVED {
                let key = GKey::from(KeyData::from_ffi(token));
                self.on_end_event(key, ev.events());
            }
        }
        self.poll_stack();
    }

    fn timeout(&self) -> EpollTimeout {
        if !self.touched.is_empty() {
            return EpollTimeout::ZERO;
        }
        let now = StdInstant::now();
        // The sweep for callers that went away matters only while calls are
        // blocked; an idle Sentry sleeps until the stack or the guest wakes it.
        let mut at = if self.parked_keys.is_empty() {
            now + Duration::from_secs(3600)
        } else if self.sigwatch.is_some() {
            self.next_sweep.min(self.next_signal_check)
        } else {
            self.next_sweep
        };
        if let Some(t) = self.stack.poll_at() {
            let t = self.start + Duration::from_micros(t.total_micros().max(0) as u64);
            at = at.min(t);
        }
        for &key in &self.parked_keys {
            if let Some(s) = self.socks.get(key) {
                for p in &s.parked {
                    if let Some(d) = p.deadline {
                        at = at.min(d);
                    }
                }
            }
        }
        let wait = at.saturating_duration_since(now);
        // Round up so a deadline is never missed by a millisecond.
        let ms = wait.as_micros().div_ceil(1000).min(u128::from(u16::MAX)) as u16;
        EpollTimeout::from(ms)
    }

    fn now(&self) -> netstack::Instant {
        netstack::Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    fn reap_init(&mut self) -> io::Result<Option<i32>> {
        match waitpid(self.init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => Ok(Some(128 + sig as i32)),
            Ok(_) | Err(Errno::EINTR) => Ok(None),
            // Not our child (an OCI container's init: its caller reaps it).
            // Its pidfd turned readable, so it ended; its status is the
            // reaper's to report.
            Err(Errno::ECHILD) => Ok(Some(0)),
            Err(e) => Err(e.into()),
        }
    }

    fn on_signal(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let signo = info.ssi_signo as i32;
            // The terminal already sent SIGINT/SIGQUIT to the guest, which
            // shares our process group; the others are passed on.
            if signo == libc::SIGTERM || signo == libc::SIGHUP {
                let _ = sys::pidfd_send_signal(self.init_pidfd.as_fd(), signo);
            }
        }
    }

    /// Serves one notification from each listener that has one: the
    /// init's when `first`, the `exec`s' ready ones when `execs`.
    fn on_notification(&mut self, first: bool, execs: bool) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        if first {
            ready.push(Ready {
                slot: 0,
                gone: false,
            });
        }
        if execs {
            self.listeners.ready_more(&mut ready);
        }
        for r in &ready {
            if r.gone {
                self.retire_listener(r.slot);
                continue;
            }
            let Some(Some(fd)) = self.listeners.slot(r.slot) else {
                continue;
            };
            let mut n = match sys::notif_recv(fd) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("seccomp listener failed: {e}");
                    self.retire_listener(r.slot);
                    continue;
                }
            };
            n.source = r.slot;
            let outcome = crate::syscalls::handle(self, &n);
            self.finish(n, outcome);
        }
        self.ready = ready;
    }

    /// Forgets a listener whose processes are all gone, and the calls of
    /// theirs that were still blocked.
    fn retire_listener(&mut self, slot: usize) {
        for key in self.parked_keys.clone() {
            if let Some(s) = self.socks.get_mut(key) {
                s.parked.retain(|p| p.notif.source != slot);
            }
        }
        self.listeners.retire(slot);
    }

    /// Serves, besides the init's, every listener that arrives through
    /// `inbox` (see [`crate::listener_channel`]).
    pub fn accept_listeners(&mut self, inbox: ListenerInbox) -> io::Result<()> {
        self.listeners.set_inbox(inbox);
        if let Some(fd) = self.listeners.inbox_fd() {
            self.epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_MORE))?;
        }
        Ok(())
    }

    /// Answers (or parks) a newly handled notification.
    fn finish(&mut self, n: Notif, outcome: Outcome) {
        let now = StdInstant::now();
        self.answer(n, outcome, |timeout| Parked {
            notif: n,
            deadline: timeout.map(|t| now + t),
            since: now,
            reported: false,
        });
    }

    fn answer(
        &mut self,
        n: Notif,
        outcome: Outcome,
        parked: impl FnOnce(Option<Duration>) -> Parked,
    ) {
        match outcome {
            Outcome::Reply(Reply::Errno(crate::errno::CALLER_GONE)) => {
                // Cancelled while it was served; whatever it would have
                // consumed was left in place.
                self.trace(&n, "cancelled");
            }
            Outcome::Reply(reply) => {
                if self.tracer.is_some() {
                    self.trace(&n, &format!("{reply:?}"));
                }
                if let Err(e) = sys::notif_send(self.listeners.of(&n), n.id, reply) {
                    // The caller died (or, on a kernel without killable
                    // waiting, a signal took the call away: see sigwatch.rs).
                    self.trace(&n, &format!("answer lost: {e}"));
                }
            }
            Outcome::Done => {}
            Outcome::Park(key, timeout) => {
                self.trace(&n, "blocked");
                if let Some(s) = self.socks.get_mut(key) {
                    if s.parked.is_empty() {
                        self.parked_keys.push(key);
                    }
                    s.parked.push_back(parked(timeout));
                } else {
                    let _ = sys::notif_send(self.listeners.of(&n), n.id, Reply::Errno(libc::EBADF));
                }
            }
        }
    }

    pub(crate) fn trace(&mut self, n: &Notif, what: &str) {
        if let Some(t) = &mut self.tracer {
            t.line(n, what);
        }
    }

    /// Resolves guest descriptor `fd` of the calling thread.
    pub(crate) fn resolve(&mut self, n: &Notif, fd: u64) -> Result<Resolved, i32> {
        let fd = i32::try_from(fd as i64).map_err(|_| libc::EBADF)?;
        if fd < 0 {
            return Err(libc::EBADF);
        }
        let file = self.guest_fd(n, fd)?;
        let key = match sys::socket_cookie(file.as_fd()) {
            Ok(c) => self.by_cookie.get(&c).copied(),
            Err(_) => None,
        };
        if let Some(k) = key {
            self.socks[k].home = Some((n.tid, fd));
        }
        Ok(Resolved { key, file })
    }

    fn guest_fd(&mut self, n: &Notif, fd: RawFd) -> Result<OwnedFd, i32> {
        // Out of descriptors in the Sentry: the guest hears EMFILE/ENFILE,
        // as if its own call had run out.
        let own_limit = |e: &io::Error| match e.raw_os_error() {
            Some(code @ (libc::EMFILE | libc::ENFILE)) => Some(code),
            _ => None,
        };
        for attempt in 0..2 {
            if attempt == 1 || !self.pidfds.contains_key(&n.tid) {
                let pidfd = match sys::pidfd_open(n.tid as i32, true) {
                    Ok(p) => p,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                        return Err(crate::errno::CALLER_GONE);
                    }
                    Err(e) => return Err(own_limit(&e).unwrap_or(libc::EBADF)),
                };
                if !sys::notif_id_valid(self.listeners.of(n), n.id) {
                    return Err(crate::errno::CALLER_GONE);
                }
                if self.pidfds.len() >= MAX_PIDFDS {
                    self.pidfds.clear();
                }
                self.pidfds.insert(n.tid, pidfd);
            }
            let Some(pidfd) = self.pidfds.get(&n.tid) else {
                return Err(libc::EBADF);
            };
            match sys::pidfd_getfd(pidfd.as_fd(), fd) {
                Ok(f) => return Ok(f),
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => return Err(libc::EBADF),
                Err(e) if own_limit(&e).is_some() => {
                    return Err(own_limit(&e).unwrap_or(libc::EMFILE));
                }
                // ESRCH: a stale pidfd of a thread that exited; reopen once.
                Err(_) => continue,
            }
        }
        Err(libc::EBADF)
    }

    /// Registers a new guest socket and its pair end.
    pub(crate) fn insert(&mut self, sock: GSock) -> io::Result<GKey> {
        let cookie = sock.cookie;
        let id = sock.id;
        let key = self.socks.insert(sock);
        let s = &self.socks[key];
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        if let Err(e) = self
            .epoll
            .add(&s.end, EpollEvent::new(flags, key.data().as_ffi()))
        {
            self.socks.remove(key);
            return Err(e.into());
        }
        self.by_cookie.insert(cookie, key);
        if let Some(id) = id {
            self.by_id.insert(id, key);
        }
        Ok(key)
    }

    /// Drops a socket whose descriptor never reached the guest.
    pub(crate) fn discard(&mut self, key: GKey) {
        self.remove(key);
    }

    /// Drops a socket record but keeps its stack socket (an accepted
    /// connection going back to the listener's stash).
    pub(crate) fn forget(&mut self, key: GKey) {
        if let Some(s) = self.socks.get_mut(key)
            && let Some(id) = s.id.take()
        {
            self.by_id.remove(&id);
        }
        self.remove(key);
    }

    fn remove(&mut self, key: GKey) {
        let Some(s) = self.socks.remove(key) else {
            return;
        };
        // Closing the end (when `s` drops) takes it out of the epoll set.
        self.by_cookie.remove(&s.cookie);
        if let Some(id) = s.id {
            self.by_id.remove(&id);
            let _ = self.stack.close(id);
        }
        for (child, _) in s.stash {
            let _ = self.stack.close(child);
        }
        for p in s.parked {
            let _ = sys::notif_send(
                self.listeners.of(&p.notif),
                p.notif.id,
                Reply::Errno(libc::EBADF),
            );
        }
    }

    fn on_end_event(&mut self, key: GKey, ev: EpollFlags) {
        let Some(s) = self.socks.get_mut(key) else {
            return;
        };
        if ev.contains(EpollFlags::EPOLLHUP) {
            s.guest_gone = true;
        }
        if ev.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP) {
            s.readable = true;
            self.pump_tx(key);
        }
        if ev.contains(EpollFlags::EPOLLOUT) {
            self.pump_rx(key);
        }
        self.touched.push(key);
    }

    /// Runs the stack and passes every change on, until nothing more
    /// happens (bounded: what is left waits for the next round, which then
    /// comes at once).
    pub(crate) fn poll_stack(&mut self) {
        for _ in 0..8 {
            let now = self.now();
            self.stack.poll(now);
            self.stack.drain_events(&mut self.events);
            for id in self.events.drain(..) {
                if let Some(&key) = self.by_id.get(&id) {
                    self.touched.push(key);
                }
            }
            if self.touched.is_empty() {
                return;
            }
            let mut touched = std::mem::take(&mut self.touched);
            touched.sort_unstable();
            touched.dedup();
            for key in touched.drain(..) {
                self.service(key);
            }
            if self.touched.is_empty() {
                self.touched = touched;
            }
        }
    }

    /// Everything one socket may need after a change.
    fn service(&mut self, key: GKey) {
        let Some(s) = self.socks.get(key) else {
            return;
        };
        if s.listening {
            self.refill_stash(key);
        } else if s.filler > 0 {
            self.check_connected(key);
        }
        self.pump_tx(key);
        self.pump_rx(key);
        self.retry_parked(key);
        self.maybe_close(key);
    }

    fn maybe_close(&mut self, key: GKey) {
        let Some(s) = self.socks.get(key) else {
            return;
        };
        if s.reset && s.parked.is_empty() {
            self.report_reset(key);
            self.remove(key);
        } else if s.guest_gone && s.guest_eof && s.tx.is_empty() && s.parked.is_empty() {
            self.remove(key);
        }
    }

    /// A reset as Linux reports it on the native data path: the guest's
    /// next read takes what was already delivered, then fails once with
    /// ECONNRESET (later reads see end of file), and writes fail with EPIPE.
    /// That is what an AF_UNIX stream end does when its peer closes with
    /// unread data: so one byte goes into the Sentry's end through a copy
    /// of the guest's (taken where the guest last named the socket; the
    /// cookie proves it is the same socket), and the caller then closes
    /// the Sentry's end with the socket's record (later trapped calls find
    /// no record and run natively on the dead end, as on a closed socket).
    /// Without a copy (the descriptor moved on) the guest reads end of file.
    fn report_reset(&mut self, key: GKey) {
        let s = &self.socks[key];
        let Some((tid, fd)) = s.home else {
            return;
        };
        let cookie = s.cookie;
        let copy = match self.pidfds.get(&tid) {
            Some(p) => sys::pidfd_getfd(p.as_fd(), fd),
            None => sys::pidfd_open(tid as i32, true).and_then(|p| sys::pidfd_getfd(p.as_fd(), fd)),
        };
        let Ok(copy) = copy else {
            return;
        };
        if sys::socket_cookie(copy.as_fd()).ok() != Some(cookie) {
            return;
        }
        let _ = send(
            copy.as_raw_fd(),
            &[0],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
    }

    /// Moves what the guest wrote before a trapped call that must come
    /// after it: reads even when no edge has been seen yet.
    pub(crate) fn flush_tx(&mut self, key: GKey) {
        if let Some(s) = self.socks.get_mut(key) {
            s.readable = true;
        }
        self.pump_tx(key);
    }

    /// Moves bytes (or datagrams) the guest wrote into its end to the stack.
    pub(crate) fn pump_tx(&mut self, key: GKey) {
        let Some(s) = self.socks.get_mut(key) else {
            return;
        };
        if s.filler > 0 || (!s.is_dgram() && !s.connected && !s.listening && !s.guest_gone) {
            return;
        }
        let Some(id) = s.id else {
            // Netlink: the guest's plain writes are requests too.
            self.pump_netlink(key);
            return;
        };
        let dgram = s.is_dgram();
        if !dgram && s.connected {
            self.pump_stream_tx(key, id);
            return;
        }
        loop {
            let s = &mut self.socks[key];
            if !s.tx.is_empty() {
                let r = if dgram {
                    self.stack.send(id, &s.tx).map(|_| s.tx.len())
                } else {
                    self.stack.send(id, &s.tx)
                };
                match r {
                    Ok(n) => {
                        s.tx.drain(..n);
                        if !s.tx.is_empty() {
                            return;
                        }
                    }
                    Err(NetError::WouldBlock) => return,
                    // The connection cannot carry it any more (or the
                    // datagram has no destination): it is dropped, as the
                    // bytes of a reset connection are.
                    Err(_) => s.tx.clear(),
                }
            }
            if s.guest_eof || !s.readable {
                return;
            }
            let r = recv(s.end.as_raw_fd(), &mut self.scratch, MsgFlags::MSG_DONTWAIT);
            match r {
                Ok(0) if !dgram || s.guest_gone || peer_closed(&s.end) => {
                    s.guest_eof = true;
                    // A close, not a shutdown: the stack's close (when the
                    // record goes) ends the connection as Linux's does,
                    // with RST for SO_LINGER 0 or unread data.
                    let closed = s.guest_gone || peer_closed(&s.end);
                    if !dgram && !s.listening && !closed {
                        let _ = self.stack.shutdown(id, NetShutdown::Write);
                    }
                    return;
                }
                Ok(0) => {
                    // An empty datagram.
                    let _ = self.stack.send(id, &[]);
                }
                Ok(n) => {
                    if s.listening {
                        continue;
                    }
                    s.tx.extend_from_slice(&self.scratch[..n]);
                }
                Err(Errno::EAGAIN) => {
                    s.readable = false;
                    if s.guest_gone {
                        s.guest_eof = true;
                    }
                    return;
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    s.guest_eof = true;
                    return;
                }
            }
        }
    }

    /// Moves a connection's bytes from the pair straight into the stack's
    /// send buffer, until either runs dry.
    fn pump_stream_tx(&mut self, key: GKey, id: SocketId) {
        let s = &mut self.socks[key];
        if !s.tx.is_empty() {
            match self.stack.send(id, &s.tx) {
                Ok(n) => {
                    s.tx.drain(..n);
                }
                Err(NetError::WouldBlock) => {}
                Err(NetError::ConnectionReset) => {
                    s.tx.clear();
                    self.connection_failed(key, NetError::ConnectionReset);
                    return;
                }
                Err(_) => s.tx.clear(),
            }
            if !s.tx.is_empty() {
                return;
            }
        }
        loop {
            let s = &mut self.socks[key];
            if s.guest_eof || !s.readable {
                return;
            }
            let fd = s.end.as_raw_fd();
            let (mut eof, mut stop, mut unread) = (false, false, false);
            let r = self.stack.send_with(id, |room| {
                if room.is_empty() {
                    // No room: nothing is read (a zero-length read is not EOF).
                    return 0;
                }
                match recv(fd, room, MsgFlags::MSG_DONTWAIT) {
                    Ok(0) => {
                        eof = true;
                        0
                    }
                    Ok(n) => n,
                    // The guest closed its end with bytes it never read.
                    Err(Errno::ECONNRESET) => {
                        (eof, unread) = (true, true);
                        0
                    }
                    Err(_) => {
                        stop = true;
                        0
                    }
                }
            });
            if unread {
                // Linux resets a connection closed with unread data: so
                // does the stack's close, with SO_LINGER 0, when the
                // record goes.
                let _ = self.stack.set_option(id, SockOpt::Linger(Some(0)));
                self.socks[key].guest_gone = true;
            }
            if stop {
                self.socks[key].readable = false;
            }
            match r {
                Ok(_) if eof => break,
                Ok(n) if n > 0 && !stop => {}
                // The pair is empty (or the stack full): the next edge resumes.
                Ok(_) | Err(NetError::WouldBlock) => return,
                Err(NetError::ConnectionReset) => {
                    self.connection_failed(key, NetError::ConnectionReset);
                    return;
                }
                Err(_) => {
                    // The connection cannot carry bytes any more: the
                    // guest's are dropped, as a reset connection's are.
                    match recv(fd, &mut self.scratch, MsgFlags::MSG_DONTWAIT) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
        }
        let s = &mut self.socks[key];
        s.guest_eof = true;
        // A close, not a shutdown: the stack's close (when the record goes)
        // ends the connection as Linux's does, with RST for SO_LINGER 0 or
        // unread data.
        if !(s.guest_gone || peer_closed(&s.end)) {
            let _ = self.stack.shutdown(id, NetShutdown::Write);
        }
    }

    /// Moves what the stack received into the pair, towards the guest.
    pub(crate) fn pump_rx(&mut self, key: GKey) {
        let blocked = self.pump_rx_inner(key);
        self.arm_out(key, blocked);
    }

    /// Asks for the pair end's writable edges only while something waits
    /// for room: otherwise every read the guest makes would wake the Sentry.
    fn arm_out(&mut self, key: GKey, on: bool) {
        let Some(s) = self.socks.get_mut(key) else {
            return;
        };
        if s.out_armed == on {
            return;
        }
        let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        if on {
            flags |= EpollFlags::EPOLLOUT;
        }
        let mut ev = EpollEvent::new(flags, key.data().as_ffi());
        if self.epoll.modify(&s.end, &mut ev).is_ok() {
            s.out_armed = on;
        }
    }

    /// Moves what it can; true when it stopped for want of room in the pair.
    fn pump_rx_inner(&mut self, key: GKey) -> bool {
        let Some(s) = self.socks.get_mut(key) else {
            return false;
        };
        let Some(id) = s.id else {
            return false;
        };
        if s.listening || s.filler > 0 || s.guest_gone || (!s.is_dgram() && !s.connected) {
            return false;
        }
        if s.is_dgram() {
            // Blocked receivers are served first, straight from the stack.
            if !s.parked.is_empty() || s.shut_rd {
                return false;
            }
            loop {
                let s = &mut self.socks[key];
                // A datagram waiting for room (it may be empty).
                if let Some((from, to)) = s.rx_from {
                    match send(
                        s.end.as_raw_fd(),
                        &s.rx,
                        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                    ) {
                        Ok(_) => s.delivered.push_back(Delivered {
                            len: s.rx.len(),
                            hash: payload_hash(&s.rx),
                            from,
                            to,
                        }),
                        Err(Errno::EAGAIN) => return true,
                        Err(_) => {}
                    }
                    s.rx.clear();
                    s.rx_from = None;
                }
                match self
                    .stack
                    .recv_from(id, &mut self.scratch, RecvFlags::default())
                {
                    Ok(d) => {
                        let s = &mut self.socks[key];
                        s.rx.extend_from_slice(&self.scratch[..d.copied]);
                        s.rx_from = Some((d.from, d.to));
                    }
                    Err(_) => return false,
                }
            }
        }
        loop {
            let s = &mut self.socks[key];
            if !s.rx.is_empty() {
                match send(
                    s.end.as_raw_fd(),
                    &s.rx,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                ) {
                    Ok(n) => {
                        s.rx.drain(..n);
                        continue;
                    }
                    Err(Errno::EAGAIN) => return true,
                    Err(_) => {
                        s.rx.clear();
                        return false;
                    }
                }
            }
            if s.stack_eof {
                return false;
            }
            // Straight from the stack's receive buffer into the pair.
            let fd = s.end.as_raw_fd();
            let (mut called, mut stop) = (false, false);
            let r = self.stack.recv_with(id, |data| {
                if data.is_empty() {
                    return 0;
                }
                called = true;
                match send(fd, data, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
                    Ok(n) => {
                        stop = n < data.len();
                        n
                    }
                    Err(_) => {
                        stop = true;
                        0
                    }
                }
            });
            match r {
                Ok(0) if !called => {
                    let s = &mut self.socks[key];
                    s.stack_eof = true;
                    let _ = shutdown(s.end.as_raw_fd(), Shutdown::Write);
                    return false;
                }
                Ok(_) => {
                    if stop {
                        return true;
                    }
                }
                Err(NetError::WouldBlock | NetError::NotConnected) => return false,
                Err(e) => {
                    self.connection_failed(key, e);
                    return false;
                }
            }
        }
    }

    /// The stack says the connection is over (`e`, taken from it by a
    /// receive or a send). An established connection reset, with no call
    /// waiting on it, is reported by the guest's end itself
    /// (`report_reset`, when `service` next looks at the socket). Anything
    /// else (timed out, or calls wait): the guest reads end of file, and
    /// writes fail with EPIPE; SO_ERROR tells the cause.
    fn connection_failed(&mut self, key: GKey, e: NetError) {
        let s = &mut self.socks[key];
        s.stack_eof = true;
        if s.connect_error.is_none() {
            s.connect_error = Some(crate::errno::errno(e));
        }
        if e == NetError::ConnectionReset && s.connected && s.parked.is_empty() {
            s.reset = true;
            self.touched.push(key);
            return;
        }
        let _ = shutdown(s.end.as_raw_fd(), Shutdown::Both);
    }

    /// Takes connections off the stack's accept queue (up to the backlog),
    /// serves blocked accepts, and leaves a token byte for each of the rest.
    fn refill_stash(&mut self, key: GKey) {
        let s = &self.socks[key];
        let Some(id) = s.id else {
            return;
        };
        let limit = s.backlog + 1;
        while self.socks[key].stash.len() < limit {
            match self.stack.accept(id) {
                Ok(c) => self.socks[key].stash.push_back(c),
                Err(_) => break,
            }
        }
        self.retry_parked(key);
        self.write_tokens(key);
    }

    /// Leaves one token byte in the listener's pair per stashed connection.
    pub(crate) fn write_tokens(&mut self, key: GKey) {
        let Some(s) = self.socks.get_mut(key) else {
            return;
        };
        while s.tokens < s.stash.len() {
            match send(
                s.end.as_raw_fd(),
                &[0u8],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(_) => s.tokens += 1,
                Err(_) => break,
            }
        }
    }

    /// A non-blocking connect finished (or failed): take the filler away so
    /// the guest sees its descriptor writable.
    fn check_connected(&mut self, key: GKey) {
        let s = &self.socks[key];
        let Some(id) = s.id else {
            return;
        };
        let Ok(r) = self.stack.readiness(id) else {
            return;
        };
        if !(r.writable || r.error || r.hangup) {
            return;
        }
        if r.error
            && let Ok(Some(e)) = self.stack.take_error(id)
        {
            self.socks[key].connect_error = Some(crate::errno::errno(e));
            self.fail_parked_connects(key);
        } else if r.writable {
            self.socks[key].connected = true;
        }
        let s = &mut self.socks[key];
        while s.filler > 0 {
            let want = s.filler.min(self.scratch.len());
            match recv(
                s.end.as_raw_fd(),
                &mut self.scratch[..want],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => break,
                Ok(n) => s.filler -= n,
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        s.filler = 0;
    }

    /// Fills the guest end's send room so it polls not-writable until the
    /// connection is up.
    pub(crate) fn fill(&mut self, key: GKey, guest: BorrowedFd<'_>) {
        let zeros = [0u8; 64 << 10];
        let mut total = 0;
        loop {
            match send(
                guest.as_raw_fd(),
                &zeros,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => total += n,
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        self.socks[key].filler = total;
    }

    /// Answers a datagram socket's netlink requests written with plain `write`.
    fn pump_netlink(&mut self, key: GKey) {
        loop {
            let s = &mut self.socks[key];
            if !s.readable {
                return;
            }
            match recv(s.end.as_raw_fd(), &mut self.scratch, MsgFlags::MSG_DONTWAIT) {
                Ok(0) if s.guest_gone || peer_closed(&s.end) => {
                    s.guest_gone = true;
                    s.guest_eof = true;
                    return;
                }
                Ok(n) => {
                    // An empty request means nothing.
                    if n > 0 {
                        let req = self.scratch[..n].to_vec();
                        self.netlink_request(key, &req);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    let s = &mut self.socks[key];
                    s.readable = false;
                    if s.guest_gone {
                        s.guest_eof = true;
                    }
                    return;
                }
            }
        }
    }

    /// Answers one netlink request by queueing the replies in the pair.
    pub(crate) fn netlink_request(&mut self, key: GKey, req: &[u8]) {
        let port = self.netlink_port(key);
        let nics: Vec<netstack::NicInfo> = self.stack.nics().cloned().collect();
        let replies = crate::netlink::respond(req, &nics, port);
        let s = &self.socks[key];
        for r in replies {
            let _ = send(
                s.end.as_raw_fd(),
                &r,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            );
        }
    }

    /// The netlink port id of a socket, assigned on first use as the kernel's autobind does.
    pub(crate) fn netlink_port(&mut self, key: GKey) -> u32 {
        if self.socks[key].nl_port == 0 {
            self.next_nl_port = self.next_nl_port.wrapping_add(1).max(1);
            self.socks[key].nl_port = self.next_nl_port;
        }
        self.socks[key].nl_port
    }

    /// The stack socket behind a resolved guest socket.
    pub(crate) fn stack_id(&self, key: GKey) -> Option<SocketId> {
        self.socks.get(key).and_then(|s| s.id)
    }

    /// The address of a datagram the guest is about to read from its end:
    /// entries for datagrams it already read natively are dropped.
    pub(crate) fn match_delivered(
        &mut self,
        key: GKey,
        data: &[u8],
        full_len: usize,
        peek: bool,
    ) -> Option<(SocketAddr, Option<std::net::IpAddr>)> {
        let s = self.socks.get_mut(key)?;
        let hash = if data.len() == full_len {
            Some(payload_hash(data))
        } else {
            None
        };
        let pos = s
            .delivered
            .iter()
            .position(|d| d.len == full_len && hash.is_none_or(|h| h == d.hash))?;
        let found = (s.delivered[pos].from, s.delivered[pos].to);
        if peek {
            s.delivered.drain(..pos);
        } else {
            s.delivered.drain(..=pos);
        }
        Some(found)
    }
}

/// Whether the guest's end of a datagram pair is closed: a zero-length read
/// is either an empty datagram or the end of file, and only poll tells.
fn peer_closed(end: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(end.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}
