//! TCP with Linux semantics: a real accept backlog, bind/reuse rules,
//! half-close, linger, connect timeouts and error delivery.
//!
//! A listening socket keeps one smoltcp socket in LISTEN state. When a SYN
//! turns it into a half-open connection, that socket (with its set) becomes a
//! child socket of its own, is entered in the connection table under its
//! 4-tuple, and a fresh listening socket takes its place. Children move to the
//! accept queue when their handshake completes.

use std::collections::VecDeque;
use std::net::SocketAddr;

use smoltcp::socket::tcp::{self, CongestionControl};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use super::{Binding, Kind, Options, Readiness, RecvFlags, Shutdown, Slot, Socket, SocketId};
use crate::buffers::BufferPool;
use crate::error::{NetError, Result};
use crate::link::FrameDevice;
use crate::stack::{Intercepted, NicId, Stack};

pub(crate) enum TcpState {
    /// Created, maybe bound; neither listening nor connected.
    Fresh,
    Listening(Listener),
    Conn(Box<Conn>),
    /// A closed connection waiting out TIME_WAIT: no smoltcp socket and no
    /// buffers any more (like Linux's timewait sockets), only the 4-tuple and
    /// the port it still holds.
    TimeWait {
        key: (IpEndpoint, IpEndpoint),
        until: Instant,
    },
}

/// How long a connect waits for its next hop to answer ARP/NDP (Linux: 3 probes, 1 s apart).
const NEIGHBOR_TIMEOUT: Duration = Duration::from_secs(3);

/// Segments received before an ACK goes out at once. Linux ACKs every second
/// full segment and counts, in slow start, the segments each ACK covers;
/// smoltcp grows its window by one segment per ACK instead, so an ACK per
/// input batch (up to 64 segments) made slow start crawl, while an ACK per
/// segment halved bulk throughput. Every fourth segment keeps both close to
/// Linux (benches/netstack.rs, tests/tcp.rs `large_rcvbuf_window_exceeds_64k`).
const ACK_EVERY: u8 = 4;

/// Most connections kept in TIME_WAIT at once (Linux's `tcp_max_tw_buckets`
/// scales with memory; 65536 is its value on small machines).
const MAX_TIME_WAIT: usize = 65536;

/// How long a connection stays in TIME_WAIT (Linux: 60 s).
const TIME_WAIT: Duration = Duration::from_secs(60);

pub(crate) struct Listener {
    pub backlog: usize,
    /// The socket that receives the next SYN.
    pub idle: Slot,
    /// Children whose handshake is under way.
    pub half_open: Vec<SocketId>,
    /// Children ready to be accepted.
    pub queue: VecDeque<SocketId>,
}

pub(crate) struct Conn {
    pub slot: Slot,
    /// (local, remote), as smoltcp sees them (IPv4 peers of IPv6 sockets unmapped).
    pub key: (IpEndpoint, IpEndpoint),
    /// The state seen after the last input or output, to detect transitions.
    pub prev: tcp::State,
    /// The listener, until the connection is accepted.
    pub parent: Option<SocketId>,
    /// The handshake completed at some point.
    pub established: bool,
    /// The frame being fed carries RST.
    pub rst_seen: bool,
    /// When an unanswered connect gives up.
    pub connect_deadline: Option<Instant>,
    /// `connect` should report success once after a background completion.
    pub connect_pending: bool,
    /// Segments received since output was last produced.
    pub unacked_segments: u8,
    /// The neighbour a connect waits for, and when it must have answered.
    pub next_hop: Option<(IpAddress, Instant)>,
}

impl Conn {
    pub(crate) fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.slot
            .set
            .get_mut::<tcp::Socket<'static>>(self.slot.handle)
    }
}

fn new_slot(
    pool: &BufferPool,
    opts: &Options,
    setup: impl FnOnce(&mut tcp::Socket<'static>) -> Result<()>,
) -> Result<Slot> {
    // SAFETY: both slices go into the socket, and the socket and the leases
    // into one Slot, which drops the socket first (see `BufferPool::lend`).
    let [(rx, rx_lease), (tx, tx_lease)] =
        unsafe { pool.lend_two(opts.recv_buffer, opts.send_buffer)? };
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
    s.set_congestion_control(CongestionControl::Cubic);
    configure(&mut s, opts);
    setup(&mut s)?;
    Ok(Slot::new(s, [rx_lease, tx_lease]))
}

fn configure(s: &mut tcp::Socket<'static>, opts: &Options) {
    s.set_nagle_enabled(!opts.nodelay);
    s.set_hop_limit(opts.ttl);
    // The stack reads frames in batches and answers each batch with one ACK
    // (as GRO does), so a delayed ACK would only stall small transfers.
    s.set_ack_delay(None);
    if opts.keepalive {
        let idle = Duration::from_secs(u64::from(opts.keep_idle));
        let probes =
            Duration::from_secs(u64::from(opts.keep_interval) * u64::from(opts.keep_count));
        s.set_keep_alive(Some(idle));
        s.set_timeout(Some(idle + probes));
    } else {
        s.set_keep_alive(None);
        s.set_timeout(None);
    }
}

fn listening_slot(pool: &BufferPool, opts: &Options, binding: &Binding) -> Result<Slot> {
    new_slot(pool, opts, |s| {
        s.listen(IpListenEndpoint {
            addr: binding.addr,
            port: binding.port,
        })
        .map_err(|_| NetError::InvalidInput)
    })
}

impl TcpState {
    pub(crate) fn ingress_slot(&mut self) -> Option<&mut Slot> {
        match self {
            TcpState::Listening(l) => Some(&mut l.idle),
            TcpState::Conn(c) => Some(&mut c.slot),
            TcpState::Fresh | TcpState::TimeWait { .. } => None,
        }
    }

    pub(crate) fn egress_slot(&mut self) -> Option<&mut Slot> {
        match self {
            TcpState::Conn(c) => Some(&mut c.slot),
            _ => None,
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            TcpState::Conn(c) => match (c.connect_deadline, c.next_hop) {
                (Some(a), Some((_, b))) => Some(a.min(b)),
                (a, hop) => a.or(hop.map(|(_, b)| b)),
            },
            TcpState::TimeWait { until, .. } => Some(*until),
            _ => None,
        }
    }

    pub(crate) fn apply_options(&mut self, opts: &Options) {
        match self {
            TcpState::Conn(c) => configure(c.socket(), opts),
            TcpState::Listening(l) => {
                configure(
                    l.idle.set.get_mut::<tcp::Socket<'static>>(l.idle.handle),
                    opts,
                );
            }
            TcpState::Fresh | TcpState::TimeWait { .. } => {}
        }
    }
}

fn conn(sock: &mut Socket) -> Option<&mut Conn> {
    match &mut sock.kind {
        Kind::Tcp(TcpState::Conn(c)) => Some(c),
        _ => None,
    }
}

fn listener(sock: &mut Socket) -> Option<&mut Listener> {
    match &mut sock.kind {
        Kind::Tcp(TcpState::Listening(l)) => Some(l),
        _ => None,
    }
}

fn is_synchronized(st: tcp::State) -> bool {
    !matches!(
        st,
        tcp::State::Closed | tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived
    )
}

impl Stack {
    /// Decides where a TCP segment goes: `None` drops it, `Some(None)` lets
    /// smoltcp answer as a closed port (RST), `Some(Some(id))` feeds a socket.
    pub(crate) fn tcp_target(
        &mut self,
        dst: IpEndpoint,
        src: IpEndpoint,
        syn: bool,
        ack: bool,
        rst: bool,
    ) -> Option<Option<SocketId>> {
        if let Some(&id) = self.tcp_conns.get(&(dst, src)) {
            if let Some(Kind::Tcp(TcpState::TimeWait { .. })) =
                self.sockets.get(id).map(|s| &s.kind)
            {
                if !syn || ack || rst {
                    return Some(None);
                }
                // A new SYN for a 4-tuple in TIME_WAIT starts a new connection.
                self.free(id);
                return self.tcp_target(dst, src, syn, ack, rst);
            }
            let parent = {
                let c = conn(self.sockets.get_mut(id)?)?;
                c.rst_seen = rst;
                (c.prev == tcp::State::SynReceived && ack && !syn && !rst)
                    .then_some(c.parent)
                    .flatten()
            };
            // The handshake's last ACK finds the accept queue full: Linux
            // drops it and lets the peer retransmit.
            if let Some(p) = parent
                && let Some(l) = self.sockets.get_mut(p).and_then(listener)
                && l.queue.len() > l.backlog
            {
                if let Some(c) = self.sockets.get_mut(id).and_then(conn) {
                    c.rst_seen = false;
                }
                return None;
            }
            return Some(Some(id));
        }
        if !syn || ack || rst {
            return Some(None);
        }
        let Some(lid) = self.find_listener(dst, src) else {
            return Some(None);
        };
        let l = self.sockets.get_mut(lid).and_then(listener)?;
        // Linux without SYN cookies: a full accept queue or a full request
        // queue drops the SYN; the peer retransmits it.
        if l.queue.len() > l.backlog || l.half_open.len() > l.backlog {
            return None;
        }
        Some(Some(lid))
    }

    fn find_listener(&self, dst: IpEndpoint, src: IpEndpoint) -> Option<SocketId> {
        let ids = self.tcp_listeners.get(&dst.port)?;
        let score = |id: SocketId| {
            let s = self.sockets.get(id)?;
            let b = s.binding?;
            if s.shut_rd || !b.matches(dst.addr) {
                return None;
            }
            Some(if b.addr.is_some() { 2 } else { 1 })
        };
        self.pick_socket(ids, src, score)
    }

    pub(crate) fn tcp_listen(&mut self, id: SocketId, backlog: i32) -> Result<()> {
        let somaxconn = self.cfg.somaxconn;
        let backlog = usize::try_from(backlog).map_or(somaxconn, |b| b.min(somaxconn));
        let sock = self.get_mut(id)?;
        match &mut sock.kind {
            Kind::Tcp(TcpState::Listening(l)) => {
                l.backlog = backlog;
                return Ok(());
            }
            Kind::Tcp(TcpState::Fresh) => {}
            _ => return Err(NetError::InvalidInput),
        }
        let binding = match sock.binding {
            Some(b) => {
                if self.bind_conflict(id, &b, true) {
                    return Err(NetError::AddrInUse);
                }
                b
            }
            None => {
                let b = self.claim_port(id, None, 0)?;
                self.get_mut(id)?.binding = Some(b);
                b
            }
        };
        let idle = listening_slot(&self.pool, &self.get(id)?.opts, &binding)?;
        let sock = self.get_mut(id)?;
        sock.kind = Kind::Tcp(TcpState::Listening(Listener {
            backlog,
            idle,
            half_open: Vec::new(),
            queue: VecDeque::new(),
        }));
        self.tcp_listeners.entry(binding.port).or_default().push(id);
        Ok(())
    }

    pub(crate) fn tcp_accept(&mut self, id: SocketId) -> Result<(SocketId, SocketAddr)> {
        let sock = self.get_mut(id)?;
        if sock.shut_rd {
            return Err(NetError::InvalidInput);
        }
        let l = listener(sock).ok_or(NetError::InvalidInput)?;
        let child = l.queue.pop_front().ok_or(NetError::WouldBlock)?;
        self.mark_event(id);
        let csock = self
            .sockets
            .get_mut(child)
            .ok_or(NetError::ConnectionAborted)?;
        let c = conn(csock).ok_or(NetError::ConnectionAborted)?;
        c.parent = None;
        let peer = c.key.1;
        let addr = csock.sockaddr(peer);
        Ok((child, addr))
    }

    pub(crate) fn tcp_connect(&mut self, id: SocketId, addr: SocketAddr) -> Result<()> {
        let sock = self.get_mut(id)?;
        match &mut sock.kind {
            Kind::Tcp(TcpState::Listening(_)) => return Err(NetError::IsConnected),
            Kind::Tcp(TcpState::Conn(c)) => {
                if c.established {
                    if let Some(e) = sock.error.take() {
                        return Err(e);
                    }
                    if c.connect_pending {
                        c.connect_pending = false;
                        return Ok(());
                    }
                    return Err(NetError::IsConnected);
                }
                if matches!(
                    c.socket().state(),
                    tcp::State::SynSent | tcp::State::SynReceived
                ) {
                    return Err(NetError::Already);
                }
                // A failed attempt: report its error (ECONNABORTED once it was
                // taken by SO_ERROR) and forget it, so the next call starts over.
                let err = sock.error.take().unwrap_or(NetError::ConnectionAborted);
                self.tcp_reset_to_fresh(id);
                return Err(err);
            }
            _ => {}
        }
        let sock = self.get(id)?;
        let mut remote = sock.endpoint(addr)?;
        remote.addr = super::wildcard_is_local(remote.addr);
        if remote.addr.is_multicast() || self.is_broadcast(remote.addr) {
            return Err(NetError::NetworkUnreachable);
        }
        if remote.port == 0 {
            return Err(NetError::ConnectionRefused);
        }
        let (nic, src) = self.route(remote.addr)?;
        let binding = match sock.binding {
            Some(b) => b,
            None => {
                let b = self.claim_connect_port(id, src, remote)?;
                self.get_mut(id)?.binding = Some(b);
                b
            }
        };
        let local_addr = match binding.addr {
            Some(a) if std::mem::discriminant(&a) != std::mem::discriminant(&remote.addr) => {
                return Err(NetError::NetworkUnreachable);
            }
            Some(a) => a,
            None => src,
        };
        let local = IpEndpoint::new(local_addr, binding.port);
        let key = (local, remote);
        if self.tcp_conns.contains_key(&key) {
            return Err(NetError::AddrNotAvailable);
        }
        let deadline = self.now + self.cfg.connect_timeout;
        // Linux gives up with EHOSTUNREACH after 3 unanswered ARP/NDP probes.
        let next_hop = self
            .next_hop(nic, remote.addr)
            .filter(|&hop| !self.neighbor_known(nic, hop))
            .map(|hop| (hop, self.now + NEIGHBOR_TIMEOUT));
        if let Some((hop, _)) = next_hop {
            self.solicit(nic, hop);
        }
        let cx = self.nics[nic].iface.context();
        let opts = &self.sockets.get(id).ok_or(NetError::BadHandle)?.opts;
        let slot = new_slot(&self.pool, opts, |s| {
            s.connect(cx, remote, local)
                .map_err(|_| NetError::InvalidInput)
        })?;
        let sock = self.get_mut(id)?;
        sock.nic = nic;
        sock.kind = Kind::Tcp(TcpState::Conn(Box::new(Conn {
            slot,
            key,
            prev: tcp::State::SynSent,
            parent: None,
            established: false,
            rst_seen: false,
            connect_deadline: Some(deadline),
            connect_pending: false,
            unacked_segments: 0,
            next_hop,
        })));
        self.tcp_conns.insert(key, id);
        self.mark_dirty(id);
        Err(NetError::InProgress)
    }

    /// Forgets a failed connection attempt so the socket can connect again.
    fn tcp_reset_to_fresh(&mut self, id: SocketId) {
        if let Some(sock) = self.sockets.get_mut(id)
            && let Kind::Tcp(TcpState::Conn(c)) = &sock.kind
        {
            let key = c.key;
            sock.kind = Kind::Tcp(TcpState::Fresh);
            self.tcp_conns.remove(&key);
        }
    }

    pub(crate) fn tcp_send(&mut self, id: SocketId, data: &[u8]) -> Result<usize> {
        if data.is_empty() {
            // Errors still show; a full buffer does not matter.
            return match self.tcp_send_with(id, &mut |_| 0) {
                Err(NetError::WouldBlock) => Ok(0),
                r => r,
            };
        }
        let mut off = 0;
        self.tcp_send_with(id, &mut |room| {
            let n = room.len().min(data.len() - off);
            room[..n].copy_from_slice(&data[off..off + n]);
            off += n;
            n
        })
    }

    /// Sends what `fill` writes into the send buffer's free room (called
    /// at most twice, as the room may wrap around); the bytes written.
    pub(crate) fn tcp_send_with(
        &mut self,
        id: SocketId,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<usize> {
        let sock = self.get_mut(id)?;
        if let Some(e) = sock.error.take() {
            return Err(e);
        }
        if sock.shut_wr {
            return Err(NetError::BrokenPipe);
        }
        let Some(c) = conn(sock) else {
            return Err(NetError::BrokenPipe);
        };
        let s = c.socket();
        match s.state() {
            tcp::State::Established | tcp::State::CloseWait => {}
            tcp::State::SynSent | tcp::State::SynReceived => return Err(NetError::WouldBlock),
            _ => return Err(NetError::BrokenPipe),
        }
        let mut total = 0;
        for _ in 0..2 {
            let mut full = false;
            let n = s
                .send(|room| {
                    let n = fill(room).min(room.len());
                    full = n == room.len();
                    (n, n)
                })
                .map_err(|_| NetError::BrokenPipe)?;
            total += n;
            if !full || n == 0 {
                break;
            }
        }
        if total == 0 {
            if s.send_capacity() == s.send_queue() {
                return Err(NetError::WouldBlock);
            }
            return Ok(0);
        }
        self.mark_dirty(id);
        Ok(total)
    }

    pub(crate) fn tcp_recv(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
        flags: RecvFlags,
    ) -> Result<usize> {
        if flags.peek {
            return self.tcp_recv_inner(id, Take::Peek(buf));
        }
        let mut off = 0;
        self.tcp_recv_inner(
            id,
            Take::With(&mut |data| {
                let n = data.len().min(buf.len() - off);
                buf[off..off + n].copy_from_slice(&data[..n]);
                off += n;
                n
            }),
        )
    }

    /// Receives by handing the queued bytes to `take` (called at most
    /// twice, as the queue may wrap around), which returns how many it
    /// consumed.
    pub(crate) fn tcp_recv_with(
        &mut self,
        id: SocketId,
        take: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Result<usize> {
        self.tcp_recv_inner(id, Take::With(take))
    }

    fn tcp_recv_inner(&mut self, id: SocketId, take: Take<'_>) -> Result<usize> {
        let sock = self.get_mut(id)?;
        let shut_rd = sock.shut_rd;
        let Some(c) = conn(sock) else {
            return Err(NetError::NotConnected);
        };
        let established = c.established;
        let s = c.socket();
        // Linux still hands out data after SHUT_RD (even data that arrives
        // later); only an empty queue reads as end of file.
        if s.can_recv() {
            let n = match take {
                Take::Peek(buf) => return Ok(s.peek_slice(buf).unwrap_or(0)),
                Take::With(f) => {
                    let mut total = 0;
                    for _ in 0..2 {
                        let mut all = false;
                        let n = s
                            .recv(|data| {
                                let n = f(data).min(data.len());
                                all = n == data.len() && n > 0;
                                (n, n)
                            })
                            .unwrap_or(0);
                        total += n;
                        if !all {
                            break;
                        }
                    }
                    total
                }
            };
            // Reading may open the window: let the stack tell the peer.
            self.mark_dirty(id);
            return Ok(n);
        }
        let st = s.state();
        let may_recv = s.may_recv();
        if let Some(e) = sock.error.take() {
            return Err(e);
        }
        if shut_rd {
            return Ok(0);
        }
        match st {
            tcp::State::SynSent | tcp::State::SynReceived => Err(NetError::WouldBlock),
            // A failed connect whose error was reported reads as end of file.
            tcp::State::Closed => Ok(0),
            _ if !established => Err(NetError::NotConnected),
            _ if may_recv => Err(NetError::WouldBlock),
            _ => Ok(0),
        }
    }

    pub(crate) fn tcp_shutdown(&mut self, id: SocketId, how: Shutdown) -> Result<()> {
        let sock = self.get_mut(id)?;
        let rd = matches!(how, Shutdown::Read | Shutdown::Both);
        let wr = matches!(how, Shutdown::Write | Shutdown::Both);
        match &mut sock.kind {
            Kind::Tcp(TcpState::Conn(c)) => {
                if wr {
                    c.socket().close();
                    sock.shut_wr = true;
                }
                if rd {
                    sock.shut_rd = true;
                }
            }
            Kind::Tcp(TcpState::Listening(_)) if rd => sock.shut_rd = true,
            _ => return Err(NetError::NotConnected),
        }
        self.mark_dirty(id);
        self.mark_event(id);
        Ok(())
    }

    pub(crate) fn tcp_close(&mut self, id: SocketId) -> Result<()> {
        let sock = self.get_mut(id)?;
        let linger0 = sock.opts.linger == Some(0);
        match &mut sock.kind {
            Kind::Tcp(TcpState::Fresh) => {
                self.free(id);
            }
            Kind::Tcp(TcpState::Listening(l)) => {
                // Connections nobody accepted are reset, as Linux does.
                let children: Vec<SocketId> =
                    l.half_open.drain(..).chain(l.queue.drain(..)).collect();
                self.free(id);
                for child in children {
                    self.tcp_abort_orphan(child);
                }
            }
            Kind::Tcp(TcpState::Conn(c)) => {
                let s = c.socket();
                // Unread data or SO_LINGER 0 make close send RST (RFC 2525, as Linux).
                if linger0 || s.recv_queue() > 0 {
                    s.abort();
                } else {
                    s.close();
                }
                sock.orphan = true;
                sock.evented = false;
                self.mark_dirty(id);
            }
            _ => {}
        }
        Ok(())
    }

    fn tcp_abort_orphan(&mut self, id: SocketId) {
        if let Some(sock) = self.sockets.get_mut(id)
            && let Some(c) = conn(sock)
        {
            c.parent = None;
            c.socket().abort();
            sock.orphan = true;
            self.mark_dirty(id);
        }
    }

    pub(crate) fn tcp_queues(&mut self, id: SocketId) -> Result<(usize, usize)> {
        let sock = self.get_mut(id)?;
        let listening = matches!(sock.kind, Kind::Tcp(TcpState::Listening(_)));
        match conn(sock) {
            Some(c) => {
                let s = c.socket();
                Ok((s.recv_queue(), s.send_queue()))
            }
            None if listening => Err(NetError::InvalidInput),
            None => Ok((0, 0)),
        }
    }

    pub(crate) fn tcp_readiness(&mut self, id: SocketId) -> Result<Readiness> {
        let sock = self.get_mut(id)?;
        let error = sock.error.is_some();
        let (shut_rd, shut_wr) = (sock.shut_rd, sock.shut_wr);
        Ok(match &mut sock.kind {
            Kind::Tcp(TcpState::Fresh) => Readiness {
                writable: true,
                hangup: true,
                error,
                ..Readiness::default()
            },
            Kind::Tcp(TcpState::Listening(l)) => Readiness {
                readable: !l.queue.is_empty(),
                error,
                ..Readiness::default()
            },
            Kind::Tcp(TcpState::Conn(c)) => {
                let established = c.established;
                let s = c.socket();
                let st = s.state();
                let connecting = matches!(st, tcp::State::SynSent | tcp::State::SynReceived);
                let failed = st == tcp::State::Closed && !established;
                // The peer's FIN (or RST) shuts the read side at once, even
                // while received data is still unread (POLLRDHUP).
                let peer_done = matches!(
                    st,
                    tcp::State::CloseWait
                        | tcp::State::LastAck
                        | tcp::State::Closing
                        | tcp::State::TimeWait
                        | tcp::State::Closed
                );
                let rcv_shut = shut_rd || failed || (established && peer_done);
                let snd_shut = shut_wr
                    || failed
                    || matches!(
                        st,
                        tcp::State::Closed
                            | tcp::State::FinWait1
                            | tcp::State::FinWait2
                            | tcp::State::Closing
                            | tcp::State::LastAck
                            | tcp::State::TimeWait
                    );
                let space = s.send_capacity() - s.send_queue();
                Readiness {
                    readable: !connecting && (s.can_recv() || rcv_shut),
                    writable: !connecting && (snd_shut || space > 0),
                    read_hangup: !connecting && rcv_shut,
                    hangup: !connecting && ((rcv_shut && snd_shut) || st == tcp::State::Closed),
                    error,
                }
            }
            _ => Readiness::default(),
        })
    }

    pub(crate) fn tcp_after_ingress(&mut self, nic: NicId, id: SocketId) {
        let Some(sock) = self.sockets.get_mut(id) else {
            return;
        };
        if let Some(l) = listener(sock) {
            let st = l
                .idle
                .set
                .get_mut::<tcp::Socket<'static>>(l.idle.handle)
                .state();
            match st {
                tcp::State::Listen => {}
                tcp::State::SynReceived => self.tcp_spawn_child(nic, id),
                // Anything else: the waiting socket is spoiled; make a new one.
                _ => {
                    if let Some(b) = sock.binding
                        && let Ok(slot) = listening_slot(&self.pool, &sock.opts, &b)
                        && let Some(l) = listener(sock)
                    {
                        l.idle = slot;
                    }
                }
            }
            return;
        }
        self.tcp_transitions(id);
        self.mark_event(id);
        // An ACK per input batch would make slow start crawl (see ACK_EVERY).
        let ack_now = match self.sockets.get_mut(id).and_then(conn) {
            Some(c) => {
                c.unacked_segments += 1;
                c.unacked_segments >= ACK_EVERY
            }
            None => false,
        };
        if ack_now {
            self.egress(id);
        } else {
            self.mark_dirty(id);
        }
    }

    /// The listener's waiting socket got a SYN: it becomes a child connection.
    fn tcp_spawn_child(&mut self, nic: NicId, lid: SocketId) {
        let Some(lsock) = self.sockets.get_mut(lid) else {
            return;
        };
        let Some(b) = lsock.binding else {
            return;
        };
        let Ok(fresh) = listening_slot(&self.pool, &lsock.opts, &b) else {
            return;
        };
        let domain = lsock.domain;
        let opts = lsock.opts.clone();
        let Some(l) = listener(lsock) else {
            return;
        };
        let slot = std::mem::replace(&mut l.idle, fresh);
        if let Some(cid) = self.tcp_adopt(nic, domain, opts, slot, Some(lid))
            && let Some(l) = self.sockets.get_mut(lid).and_then(listener)
        {
            l.half_open.push(cid);
        }
    }

    /// Enters a socket that just answered a SYN as a connection of its own.
    fn tcp_adopt(
        &mut self,
        nic: NicId,
        domain: super::Domain,
        opts: Options,
        mut slot: Slot,
        parent: Option<SocketId>,
    ) -> Option<SocketId> {
        let s = slot.set.get_mut::<tcp::Socket<'static>>(slot.handle);
        let (Some(local), Some(remote)) = (s.local_endpoint(), s.remote_endpoint()) else {
            return None;
        };
        let conn = Conn {
            slot,
            key: (local, remote),
            prev: tcp::State::SynReceived,
            parent,
            established: false,
            rst_seen: false,
            connect_deadline: None,
            connect_pending: false,
            unacked_segments: 0,
            next_hop: None,
        };
        let child = Socket::new(domain, opts, Kind::Tcp(TcpState::Conn(Box::new(conn))), nic);
        let cid = self.sockets.insert(child);
        let binding = {
            let c = &self.sockets[cid];
            c.binding_for(Some(local.addr), local.port)
        };
        self.sockets[cid].binding = Some(binding);
        self.tcp_ports.entry(local.port).or_default().push(cid);
        self.tcp_conns.insert((local, remote), cid);
        self.mark_dirty(cid);
        Some(cid)
    }

    /// Answers a held SYN (see [`Stack::set_transparent`]) as if a listener
    /// on its destination had been there: the connection, in SYN_RECEIVED,
    /// reports events like any other and needs no `accept`.
    pub fn accept_intercepted(&mut self, syn: &Intercepted) -> Result<SocketId> {
        let (local, remote) = (IpEndpoint::from(syn.local), IpEndpoint::from(syn.remote));
        if self.tcp_conns.contains_key(&(local, remote)) {
            return Err(NetError::AddrInUse);
        }
        let domain = match syn.local {
            SocketAddr::V4(_) => super::Domain::Ipv4,
            SocketAddr::V6(_) => super::Domain::Ipv6,
        };
        let opts = Options::new(self.cfg.tcp_recv_buffer, self.cfg.tcp_send_buffer);
        let binding = Binding {
            addr: Some(local.addr),
            port: local.port,
            v4: domain == super::Domain::Ipv4,
            v6: domain == super::Domain::Ipv6,
            shared: false,
        };
        let mut slot = listening_slot(&self.pool, &opts, &binding)?;
        let n = self.nics.get_mut(syn.nic).ok_or(NetError::InvalidInput)?;
        let mut dev = FrameDevice::new(&mut *n.link, &n.device, Some(&syn.frame), self.now);
        n.iface
            .poll_ingress_single(self.now, &mut dev, &mut slot.set);
        let st = slot
            .set
            .get_mut::<tcp::Socket<'static>>(slot.handle)
            .state();
        if st != tcp::State::SynReceived {
            return Err(NetError::InvalidInput);
        }
        self.tcp_adopt(syn.nic, domain, opts, slot, None)
            .ok_or(NetError::InvalidInput)
    }

    pub(crate) fn tcp_after_egress(&mut self, id: SocketId) {
        let now = self.now;
        if let Some(sock) = self.sockets.get_mut(id)
            && let Kind::Tcp(TcpState::TimeWait { until, .. }) = sock.kind
        {
            if now >= until {
                self.free(id);
            }
            return;
        }
        let mut hop_check = None;
        if let Some(sock) = self.sockets.get_mut(id)
            && let Some(c) = conn(sock)
        {
            c.unacked_segments = 0;
            if let Some((hop, at)) = c.next_hop
                && now >= at
            {
                c.next_hop = None;
                hop_check = Some((sock.nic, hop));
            }
        }
        if let Some((nic, hop)) = hop_check
            && !self.neighbor_known(nic, hop)
        {
            self.tcp_connect_failed(id, NetError::HostUnreachable);
            self.tcp_release_if_done(id);
            return;
        }
        if let Some(sock) = self.sockets.get_mut(id)
            && let Some(c) = conn(sock)
            && let Some(deadline) = c.connect_deadline
            && now >= deadline
        {
            c.connect_deadline = None;
            if c.socket().state() == tcp::State::SynSent {
                self.tcp_connect_failed(id, NetError::TimedOut);
                self.tcp_release_if_done(id);
                return;
            }
        }
        self.tcp_transitions(id);
        self.tcp_enter_time_wait(id);
    }

    /// The connection of a socket its owner has closed.
    fn orphan_conn(&mut self, id: SocketId) -> Option<&mut Conn> {
        let sock = self.sockets.get_mut(id)?;
        if !sock.orphan {
            return None;
        }
        conn(sock)
    }

    /// An orphan in TIME_WAIT whose last ACK is out gives its buffers back.
    fn tcp_enter_time_wait(&mut self, id: SocketId) {
        let until = self.now + TIME_WAIT;
        let Some(c) = self.orphan_conn(id) else {
            return;
        };
        if c.socket().state() != tcp::State::TimeWait {
            return;
        }
        let key = c.key;
        // Like Linux's tcp_max_tw_buckets: past the limit, skip TIME_WAIT.
        if self.time_wait_count >= MAX_TIME_WAIT {
            self.free(id);
            return;
        }
        if let Some(sock) = self.sockets.get_mut(id) {
            sock.kind = Kind::Tcp(TcpState::TimeWait { key, until });
            self.time_wait_count += 1;
        }
        self.arm_timer(id, Some(until));
    }

    /// An ICMP error ends a connect in progress (later ones are soft errors,
    /// which Linux does not report either).
    pub(crate) fn tcp_connect_failed(&mut self, id: SocketId, err: NetError) {
        let Some(sock) = self.sockets.get_mut(id) else {
            return;
        };
        let Some(c) = conn(sock) else {
            return;
        };
        if c.socket().state() != tcp::State::SynSent {
            return;
        }
        c.connect_deadline = None;
        c.next_hop = None;
        c.socket().abort();
        c.prev = tcp::State::Closed;
        sock.error = Some(err);
        self.mark_event(id);
        self.mark_dirty(id);
    }

    /// A listener's waiting socket was made with the old buffer sizes: remake it.
    pub(crate) fn tcp_refresh_listener(&mut self, id: SocketId) {
        let Some(sock) = self.sockets.get(id) else {
            return;
        };
        let (Some(b), Kind::Tcp(TcpState::Listening(_))) = (sock.binding, &sock.kind) else {
            return;
        };
        let Ok(slot) = listening_slot(&self.pool, &sock.opts, &b) else {
            return;
        };
        if let Some(l) = self.sockets.get_mut(id).and_then(listener) {
            l.idle = slot;
        }
    }

    /// Reacts to a change of the TCP state since the last look.
    fn tcp_transitions(&mut self, id: SocketId) {
        let Some(sock) = self.sockets.get_mut(id) else {
            return;
        };
        let Some(c) = conn(sock) else {
            return;
        };
        let st = c.socket().state();
        let prev = c.prev;
        let rst = std::mem::take(&mut c.rst_seen);
        if st == prev {
            self.tcp_release_if_done(id);
            return;
        }
        c.prev = st;
        let mut became_established = None;
        let mut failed_child = None;
        if is_synchronized(st) && !c.established {
            c.established = true;
            c.connect_deadline = None;
            c.next_hop = None;
            match c.parent {
                Some(p) => became_established = Some(p),
                None => c.connect_pending = true,
            }
        } else if st == tcp::State::Listen {
            // A half-open child was reset: smoltcp put it back to LISTEN.
            failed_child = c.parent;
        } else if st == tcp::State::Closed {
            let err = if rst {
                if prev == tcp::State::SynSent {
                    Some(NetError::ConnectionRefused)
                } else {
                    Some(NetError::ConnectionReset)
                }
            } else if matches!(prev, tcp::State::LastAck | tcp::State::TimeWait) {
                None
            } else {
                Some(NetError::TimedOut)
            };
            if !c.established {
                failed_child = c.parent;
            }
            if !sock.orphan && err.is_some() {
                sock.error = err;
            }
        }
        if let Some(p) = became_established {
            if let Some(l) = self.sockets.get_mut(p).and_then(listener) {
                l.half_open.retain(|&x| x != id);
                l.queue.push_back(id);
            }
            self.mark_event(p);
        }
        if let Some(p) = failed_child {
            if let Some(l) = self.sockets.get_mut(p).and_then(listener) {
                l.half_open.retain(|&x| x != id);
            }
            self.free(id);
            return;
        }
        self.mark_event(id);
        self.tcp_release_if_done(id);
    }

    /// Frees a closed socket once smoltcp has nothing left to send for it.
    fn tcp_release_if_done(&mut self, id: SocketId) {
        let done = self.orphan_conn(id).is_some_and(|c| {
            let s = c.socket();
            s.state() == tcp::State::Closed && s.remote_endpoint().is_none()
        });
        if done {
            self.free(id);
        }
    }

    pub(crate) fn free_tcp(&mut self, id: SocketId, state: &TcpState, binding: Option<Binding>) {
        match state {
            TcpState::Conn(c) => {
                if self.tcp_conns.get(&c.key) == Some(&id) {
                    self.tcp_conns.remove(&c.key);
                }
                if let Some(p) = c.parent
                    && let Some(l) = self.sockets.get_mut(p).and_then(listener)
                {
                    l.half_open.retain(|&x| x != id);
                    l.queue.retain(|&x| x != id);
                }
            }
            TcpState::Listening(_) => {
                if let Some(b) = binding
                    && let Some(v) = self.tcp_listeners.get_mut(&b.port)
                {
                    v.retain(|&x| x != id);
                    if v.is_empty() {
                        self.tcp_listeners.remove(&b.port);
                    }
                }
            }
            TcpState::TimeWait { key, .. } => {
                self.time_wait_count = self.time_wait_count.saturating_sub(1);
                if self.tcp_conns.get(key) == Some(&id) {
                    self.tcp_conns.remove(key);
                }
            }
            TcpState::Fresh => {}
        }
    }
}

/// How a receive takes the queued bytes.
enum Take<'a> {
    /// Copies without consuming (MSG_PEEK).
    Peek(&'a mut [u8]),
    /// Hands them to a consumer, which says how many it took.
    With(&'a mut dyn FnMut(&[u8]) -> usize),
}
