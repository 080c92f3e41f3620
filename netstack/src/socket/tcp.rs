//! TCP with Linux semantics: a real accept backlog, bind/reuse rules,
//! half-close, linger, connect timeouts and error delivery, on our own
//! engine ([`tcp_engine::Connection`]).
//!
//! A connection owns one engine; the stack hands it the segments parsed
//! from frames (`Stack::feed`) and sends what its `poll` produces
//! (`Stack::egress`). A listening socket holds no engine: a SYN for it
//! becomes a child connection (`Connection::accept`), entered in the
//! connection table under its 4-tuple. Children move to the accept queue
//! when their handshake completes.

use std::collections::VecDeque;
use std::net::SocketAddr;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint, TcpRepr, TcpSeqNumber};

use super::{Binding, Kind, Options, Readiness, RecvFlags, Shutdown, Socket, SocketId};
use crate::budget::Budget;
use crate::error::{NetError, Result};
use crate::stack::{Intercepted, NicId, Stack};
use crate::tcp_engine::{self, ConnError, Connection, Keepalive, State};

pub(crate) enum TcpState {
    /// Created, maybe bound; neither listening nor connected.
    Fresh,
    Listening(Listener),
    Conn(Box<Conn>),
    /// A closed connection waiting out TIME_WAIT: no engine and no
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
/// full segment; an ACK per input batch (up to 64 segments) would stall a
/// sender whose window is smaller than a batch, while an ACK per segment
/// halves bulk throughput. Every fourth segment keeps both close to Linux
/// (benches/netstack.rs, tests/tcp.rs `large_rcvbuf_window_exceeds_64k`).
const ACK_EVERY: u8 = 4;

/// The most one call of a send's `fill` is offered.
const TCP_SEND_CHUNK: usize = 64 << 10;

/// The hop limit when the socket sets none (Linux's `ip_default_ttl`).
const DEFAULT_TTL: u8 = 64;

/// Most connections kept in TIME_WAIT at once (Linux's `tcp_max_tw_buckets`
/// scales with memory; 65536 is its value on small machines).
const MAX_TIME_WAIT: usize = 65536;

/// How long a connection stays in TIME_WAIT (Linux: 60 s).
const TIME_WAIT: Duration = Duration::from_secs(60);
/// How long a half-open request keeps its place in a full request queue:
/// a real peer answers the SYN-ACK (or its retransmission after the 1 s
/// initial RTO) well within it.
const HALF_OPEN_PATIENCE: Duration = Duration::from_secs(3);

pub(crate) struct Listener {
    pub backlog: usize,
    /// Children whose handshake is under way.
    pub half_open: Vec<(SocketId, Instant)>,
    /// Children ready to be accepted.
    pub queue: VecDeque<SocketId>,
}

pub(crate) struct Conn {
    pub engine: Connection,
    /// (local, remote), as on the wire (IPv4 peers of IPv6 sockets unmapped).
    pub key: (IpEndpoint, IpEndpoint),
    /// The state seen after the last input or output, to detect transitions.
    pub prev: State,
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

/// The engine's configuration from the socket's options; `mss` from the
/// MTU of the NIC the connection uses.
pub(crate) fn engine_config(
    opts: &Options,
    mtu: usize,
    v6: bool,
    budget: &Budget,
) -> tcp_engine::Config {
    let headers = if v6 { 60 } else { 40 };
    tcp_engine::Config {
        mss: mtu.saturating_sub(headers).min(usize::from(u16::MAX)) as u16,
        send_buffer: opts.send_buffer,
        recv_buffer: opts.recv_buffer,
        // The stack reads frames in batches and polls once per batch (or
        // every ACK_EVERY segments), which gives the ACK cadence of a
        // stream; an exchange of requests and answers gets Linux's
        // delayed ACKs (40 ms, its `TCP_ATO_MIN`), so that the answer
        // carries the ACK.
        acks: tcp_engine::AckPolicy::Interactive(Duration::from_millis(40)),
        nagle: !opts.nodelay,
        keepalive: keepalive(opts),
        budget: budget.clone(),
        ..tcp_engine::Config::default()
    }
}

fn keepalive(opts: &Options) -> Option<Keepalive> {
    opts.keepalive.then(|| Keepalive {
        idle: Duration::from_secs(u64::from(opts.keep_idle)),
        interval: Duration::from_secs(u64::from(opts.keep_interval)),
        count: opts.keep_count,
    })
}

fn configure(e: &mut Connection, opts: &Options) {
    e.set_nagle(!opts.nodelay);
    e.set_keepalive(keepalive(opts));
    e.set_send_buffer(opts.send_buffer);
    e.set_cork(opts.cork);
}

/// The IP hop limit for a socket's segments.
pub(crate) fn hop_limit(opts: &Options) -> u8 {
    opts.ttl.unwrap_or(DEFAULT_TTL)
}

fn conn_error(e: ConnError) -> NetError {
    match e {
        ConnError::Refused => NetError::ConnectionRefused,
        ConnError::Reset => NetError::ConnectionReset,
        ConnError::TimedOut => NetError::TimedOut,
    }
}

impl TcpState {
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
            TcpState::Conn(c) => configure(&mut c.engine, opts),
            TcpState::Fresh | TcpState::Listening(_) | TcpState::TimeWait { .. } => {}
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
                (c.prev == State::SynReceived && ack && !syn && !rst)
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
        // A full accept queue drops the SYN; the peer retransmits it.
        if l.queue.len() > l.backlog {
            return None;
        }
        // A full request queue: a SYN flood, peers that went away, or a burst
        // of clients. Linux answers with SYN cookies (`tcp_syncookies`),
        // so real clients get through a flood. Here a request that has
        // waited past HALF_OPEN_PATIENCE gives its place to the new SYN (its
        // peer would have answered by then, were it real); a burst of young
        // requests drops the SYN, and the peer retransmits it.
        if l.half_open.len() > l.backlog {
            match l.half_open.first() {
                Some(&(oldest, since)) if self.now - since >= HALF_OPEN_PATIENCE => {
                    self.free(oldest);
                }
                _ => return None,
            }
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
        let sock = self.get_mut(id)?;
        sock.kind = Kind::Tcp(TcpState::Listening(Listener {
            backlog,
            half_open: Vec::new(),
            queue: VecDeque::new(),
        }));
        self.tcp_listeners.entry(binding.port).or_default().push(id);
        self.listen_gen += 1;
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
                if matches!(c.engine.state(), State::SynSent | State::SynReceived) {
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
        let iss = TcpSeqNumber(self.next_random() as i32);
        let ts_offset = self.next_random() as u32;
        let mtu = self.nics[nic].ip_mtu();
        let opts = &self.sockets.get(id).ok_or(NetError::BadHandle)?.opts;
        let v6 = matches!(remote.addr, IpAddress::Ipv6(_));
        let cfg = engine_config(opts, mtu, v6, &self.cfg.tcp_memory);
        let engine = Connection::connect(cfg, local.port, remote.port, iss, ts_offset, self.now);
        let sock = self.get_mut(id)?;
        sock.nic = nic;
        sock.kind = Kind::Tcp(TcpState::Conn(Box::new(Conn {
            engine,
            key,
            prev: State::SynSent,
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
        match c.engine.state() {
            State::Established | State::CloseWait => {}
            State::SynSent | State::SynReceived => return Err(NetError::WouldBlock),
            _ => return Err(NetError::BrokenPipe),
        }
        let room = c.engine.send_room();
        if room == 0 {
            return Err(NetError::WouldBlock);
        }
        // `fill` writes straight into the engine's send queue.
        let mut total = 0;
        if let Some(c) = self.sockets.get_mut(id).and_then(conn) {
            loop {
                let room = c.engine.send_spare(TCP_SEND_CHUNK);
                let want = room.len();
                if want == 0 {
                    break;
                }
                let n = fill(room).min(want);
                c.engine.send_commit(n);
                total += n;
                if n < want {
                    break;
                }
            }
        }
        if total > 0 {
            self.mark_dirty(id);
        }
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
        let e = &mut c.engine;
        // Linux still hands out data after SHUT_RD (even data that arrives
        // later); only an empty queue reads as end of file.
        if e.recv_ready() > 0 {
            let n = match take {
                Take::Peek(buf) => return Ok(e.peek(buf)),
                Take::With(f) => e.recv_with(f),
            };
            // Reading may open the window: let the stack tell the peer.
            self.mark_dirty(id);
            return Ok(n);
        }
        let st = e.state();
        let may_recv = !e.recv_finished() && !matches!(st, State::Closed | State::TimeWait);
        if let Some(e) = sock.error.take() {
            return Err(e);
        }
        if shut_rd {
            return Ok(0);
        }
        match st {
            State::SynSent | State::SynReceived => Err(NetError::WouldBlock),
            // A failed connect whose error was reported reads as end of file.
            State::Closed => Ok(0),
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
                    c.engine.close();
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
                let children: Vec<SocketId> = l
                    .half_open
                    .drain(..)
                    .map(|(id, _)| id)
                    .chain(l.queue.drain(..))
                    .collect();
                self.free(id);
                for child in children {
                    self.tcp_abort_orphan(child);
                }
            }
            Kind::Tcp(TcpState::Conn(c)) => {
                let e = &mut c.engine;
                // Unread data or SO_LINGER 0 make close send RST (RFC 2525, as Linux).
                if linger0 || e.recv_ready() > 0 {
                    e.abort();
                } else {
                    e.close();
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
            c.engine.abort();
            sock.orphan = true;
            self.mark_dirty(id);
        }
    }

    pub(crate) fn tcp_queues(&mut self, id: SocketId) -> Result<(usize, usize)> {
        let sock = self.get_mut(id)?;
        let listening = matches!(sock.kind, Kind::Tcp(TcpState::Listening(_)));
        match conn(sock) {
            Some(c) => Ok((c.engine.recv_ready(), c.engine.send_queued())),
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
                let e = &c.engine;
                let st = e.state();
                let connecting = matches!(st, State::SynSent | State::SynReceived);
                let failed = st == State::Closed && !established;
                // The peer's FIN (or RST) shuts the read side at once, even
                // while received data is still unread (POLLRDHUP).
                let peer_done = matches!(
                    st,
                    State::CloseWait
                        | State::LastAck
                        | State::Closing
                        | State::TimeWait
                        | State::Closed
                );
                let rcv_shut = shut_rd || failed || (established && peer_done);
                let snd_shut = shut_wr
                    || failed
                    || matches!(
                        st,
                        State::Closed
                            | State::FinWait1
                            | State::FinWait2
                            | State::Closing
                            | State::LastAck
                            | State::TimeWait
                    );
                Readiness {
                    readable: !connecting && (e.recv_ready() > 0 || rcv_shut),
                    writable: !connecting && (snd_shut || e.send_room() > 0),
                    read_hangup: !connecting && rcv_shut,
                    hangup: !connecting && ((rcv_shut && snd_shut) || st == State::Closed),
                    error,
                }
            }
            _ => Readiness::default(),
        })
    }

    /// Hands one parsed segment to the socket `tcp_target` chose: a
    /// listener's SYN starts a child connection, anything else goes to the
    /// connection's engine.
    pub(crate) fn tcp_input(
        &mut self,
        nic: NicId,
        id: SocketId,
        local: IpAddress,
        remote: IpAddress,
        seg: &TcpRepr,
    ) {
        let Some(sock) = self.sockets.get_mut(id) else {
            return;
        };
        if listener(sock).is_some() {
            self.tcp_spawn_child(nic, id, local, remote, seg);
            return;
        }
        let now = self.now;
        let orphan = sock.orphan;
        let Some(c) = conn(sock) else {
            return;
        };
        // New bytes for a connection its owner closed: nobody will read
        // them, so it is reset (as Linux's TCPAbortOnData), and the peer's
        // writes fail instead of filling a window forever.
        if orphan && c.established && c.engine.brings_new_data(seg) {
            c.engine.abort();
            self.tcp_transitions(id);
            self.mark_dirty(id);
            return;
        }
        c.engine.input(now, seg);
        self.tcp_after_ingress(id);
    }

    fn tcp_after_ingress(&mut self, id: SocketId) {
        self.tcp_transitions(id);
        self.mark_event(id);
        // An ACK per input batch would stall small windows (see ACK_EVERY).
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

    /// A SYN for a listener: it becomes a half-open child connection.
    fn tcp_spawn_child(
        &mut self,
        nic: NicId,
        lid: SocketId,
        local: IpAddress,
        remote: IpAddress,
        syn: &TcpRepr,
    ) {
        let Some(lsock) = self.sockets.get(lid) else {
            return;
        };
        let domain = lsock.domain;
        let opts = lsock.opts.clone();
        let key = (
            IpEndpoint::new(local, syn.dst_port),
            IpEndpoint::new(remote, syn.src_port),
        );
        if let Some(cid) = self.tcp_adopt(nic, domain, opts, key, syn, Some(lid))
            && let Some(l) = self.sockets.get_mut(lid).and_then(listener)
        {
            l.half_open.push((cid, self.now));
        }
    }

    /// Enters a connection answering `syn` as a socket of its own.
    fn tcp_adopt(
        &mut self,
        nic: NicId,
        domain: super::Domain,
        opts: Options,
        key: (IpEndpoint, IpEndpoint),
        syn: &TcpRepr,
        parent: Option<SocketId>,
    ) -> Option<SocketId> {
        let (local, remote) = key;
        let iss = TcpSeqNumber(self.next_random() as i32);
        let ts_offset = self.next_random() as u32;
        let mtu = self.nics.get(nic)?.ip_mtu();
        let v6 = matches!(remote.addr, IpAddress::Ipv6(_));
        let cfg = engine_config(&opts, mtu, v6, &self.cfg.tcp_memory);
        let engine = Connection::accept(cfg, syn, iss, ts_offset, self.now)?;
        let conn = Conn {
            engine,
            key,
            prev: State::SynReceived,
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
        let n = self.nics.get_mut(syn.nic).ok_or(NetError::InvalidInput)?;
        let medium = n.caps.medium;
        let checksum = n.device.checksum.clone();
        let Some((_, _, repr)) = crate::stack::parse_tcp(medium, &syn.frame, &checksum) else {
            return Err(NetError::InvalidInput);
        };
        self.tcp_adopt(syn.nic, domain, opts, (local, remote), &repr, None)
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
            if c.engine.state() == State::SynSent {
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
        if c.engine.state() != State::TimeWait {
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
        if c.engine.state() != State::SynSent {
            return;
        }
        c.connect_deadline = None;
        c.next_hop = None;
        c.engine.abort();
        c.prev = State::Closed;
        sock.error = Some(err);
        self.mark_event(id);
        self.mark_dirty(id);
    }

    /// Reacts to a change of the TCP state since the last look.
    fn tcp_transitions(&mut self, id: SocketId) {
        let Some(sock) = self.sockets.get_mut(id) else {
            return;
        };
        let Some(c) = conn(sock) else {
            return;
        };
        let st = c.engine.state();
        let prev = c.prev;
        let rst = std::mem::take(&mut c.rst_seen);
        if st == prev {
            self.tcp_release_if_done(id);
            return;
        }
        c.prev = st;
        let mut became_established = None;
        let mut failed_child = None;
        if st.is_synchronized() && !c.established {
            c.established = true;
            c.connect_deadline = None;
            c.next_hop = None;
            match c.parent {
                Some(p) => became_established = Some(p),
                None => c.connect_pending = true,
            }
        } else if st == State::Closed {
            let err = match c.engine.error() {
                Some(e) => Some(conn_error(e)),
                // A RST the engine took without calling it an error (one
                // answering a half-open child, say) still resets.
                None if rst && prev == State::SynSent => Some(NetError::ConnectionRefused),
                None if rst => Some(NetError::ConnectionReset),
                None => None,
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
                l.half_open.retain(|&(x, _)| x != id);
                l.queue.push_back(id);
            }
            self.mark_event(p);
        }
        if let Some(p) = failed_child {
            if let Some(l) = self.sockets.get_mut(p).and_then(listener) {
                l.half_open.retain(|&(x, _)| x != id);
            }
            self.free(id);
            return;
        }
        self.mark_event(id);
        self.tcp_release_if_done(id);
    }

    /// Frees a closed socket once its engine has nothing left to send.
    fn tcp_release_if_done(&mut self, id: SocketId) {
        let done = self
            .orphan_conn(id)
            .is_some_and(|c| c.engine.state() == State::Closed && !c.engine.output_pending());
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
                    l.half_open.retain(|&(x, _)| x != id);
                    l.queue.retain(|&x| x != id);
                }
            }
            TcpState::Listening(_) => {
                if let Some(b) = binding
                    && let Some(v) = self.tcp_listeners.get_mut(&b.port)
                {
                    v.retain(|&x| x != id);
                    self.listen_gen += 1;
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
