//! Our own TCP: one connection as a sans-I/O engine, built on smoltcp's
//! `wire` types, with the loss recovery that smoltcp's socket lacks (SACK,
//! RACK-TLP, PRR, CUBIC with byte counting, a 200 ms RTO floor, timestamps).
//!
//! A [`Connection`] never reads a clock and never touches a device: the
//! caller hands it each parsed segment addressed to it ([`Connection::input`]
//! with a `TcpRepr`), asks it for the segments to send
//! ([`Connection::poll`], which also runs the timers that are due), and calls
//! it again at [`Connection::poll_at`]. The application side is
//! [`Connection::send`] / [`Connection::recv`] / [`Connection::close`].
//! This file holds the connection and what it does with input; `output`
//! what it sends and `timers` what its timers do. States and their
//! transitions live in `state`; the send queue and SACK scoreboard in
//! `send`; reassembly and SACK generation in `recv`; RACK-TLP and NewReno
//! in `loss`; window growth and PRR in `cc`; RTT and RTO in `rtt`.
//!
//! How the socket layer (`socket/tcp.rs`) and the stack use it:
//! - **State.** `Conn` owns a `Connection`; `Conn::prev` is the engine's
//!   `State`, and `tcp_transitions` looks for the same transitions as with
//!   smoltcp's socket (handshake done → accept queue or connect success,
//!   `error()` → `sock.error`, an orphan's `TimeWait` → the 4-tuple-only
//!   `TcpState::TimeWait`).
//! - **Ingress.** `Stack::feed` parses the frame's IP header and TCP
//!   segment with smoltcp's wire types (`stack::parse_tcp`; checksums as the
//!   link's offloads say) and calls `input`. `tcp_target` keeps its job
//!   (4-tuple table, listener choice, a full accept queue drops the SYN or
//!   the last ACK). A listener holds no engine: its SYN becomes
//!   `Connection::accept`, entered in `tcp_conns` as a half-open child.
//!   Segments for no socket still go to smoltcp's interface, which answers
//!   with a RST; so do non-SYN segments for a TIME-WAIT 4-tuple, as before
//!   (`time_wait_ack` is not used yet).
//! - **Egress.** `Stack::egress` calls `poll` and frames each segment
//!   itself when it can (IP links; IPv4 next hops with a fresh ARP entry),
//!   joining runs of full segments with one header into one frame for a
//!   link that offloads segmentation; otherwise the segment, wrapped in IP,
//!   goes through the NIC's raw socket `tcp_tx`, and smoltcp's interface
//!   routes, resolves and frames it. The socket's timer is `poll_at()`
//!   merged with the connect and neighbour deadlines.
//! - **Socket calls.** `send`/`send_room` serve `sendmsg` and `POLLOUT`;
//!   `recv_with`/`peek`/`recv_ready`/`recv_finished` serve `recvmsg`,
//!   `POLLIN` and EOF; `close` is `shutdown(SHUT_WR)` and the FIN of
//!   `close`; `abort` is linger 0 and close with unread data; `error()` is
//!   `SO_ERROR`; `Config` comes from `Options` (buffers, MSS from the NIC's
//!   MTU, `AckPolicy::Interactive`: a stream is acknowledged as the stack
//!   polls, every few segments and once per input batch, while a request
//!   waits up to 40 ms for its answer to carry the ACK, as on Linux),
//!   `set_nagle`/`set_keepalive` follow later `setsockopt`s.
//! - **Not yet:** buffers lent by `BufferPool` (the engine owns its `Vec`s),
//!   `TCP_INFO` from `stats()`/`srtt()`/`cwnd()`, `MSG_OOB`/urgent data
//!   (ignored, as by smoltcp), PSH on the last segment of a write.

mod cc;
mod loss;
mod output;
mod recv;
mod ring;
mod rtt;
mod send;
mod state;
mod timers;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use crate::budget::Budget;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};

pub use cc::Algorithm;
use state::Event;
pub use state::State;

use cc::{Congestion, Prr};
use loss::{DUP_THRESH, Rack, Recovery, Tlp};
use recv::RecvBuffer;
use rtt::RttEstimator;
use send::{SendQueue, SentSegment};

/// `seq + n`, wrapping; never panics (smoltcp's `+` does for n > 2^31).
pub(crate) fn seq_add(seq: TcpSeqNumber, n: usize) -> TcpSeqNumber {
    TcpSeqNumber(seq.0.wrapping_add(n as u32 as i32))
}

/// The distance from `from` forward to `to`; zero if `to` is before `from`
/// (smoltcp's `-` panics there, and a hostile segment can make it so).
pub(crate) fn seq_dist(from: TcpSeqNumber, to: TcpSeqNumber) -> usize {
    let d = to.0.wrapping_sub(from.0);
    if d < 0 { 0 } else { d as usize }
}

/// RFC 9293 (3.7.1): the MSS assumed when the peer sends none.
const DEFAULT_PEER_MSS: usize = 536;
/// Smallest MSS we accept from a peer (Linux's `TCP_MIN_SND_MSS` is 48):
/// a tiny MSS would make us send a segment per few bytes.
const MIN_PEER_MSS: usize = 64;
/// Bytes the timestamp option takes in every segment (10, padded to 12).
const TIMESTAMP_ROOM: usize = 12;
/// Room for three SACK blocks in a data segment (26 bytes, padded).
const SACK_ROOM: usize = 28;
/// Least time between two answers to invalid segments without data
/// (Linux's `tcp_invalid_ratelimit` default).
const INVALID_ANSWER_INTERVAL: Duration = Duration::from_millis(500);
/// RFC 7323 (5.5): how long TS.Recent stays valid without a segment.
const PAWS_IDLE_LIMIT: Duration = Duration::from_secs(24 * 24 * 3600);
/// The largest buffer a window can describe (2^30 with scale 14).
const MAX_BUFFER: usize = 1 << 30;

/// How a connection behaves; the socket layer fills it from socket options.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our MSS: the largest payload we accept, announced in our SYN (the
    /// route's MTU minus IP and TCP headers).
    pub mss: u16,
    pub send_buffer: usize,
    pub recv_buffer: usize,
    /// Offer SACK (RFC 2018).
    pub sack: bool,
    /// Offer timestamps (RFC 7323).
    pub timestamps: bool,
    /// Offer window scaling (RFC 7323).
    pub window_scale: bool,
    pub congestion: Algorithm,
    /// When in-order data is acknowledged.
    pub acks: AckPolicy,
    /// How long TIME-WAIT lasts (2 MSL; Linux: 60 s).
    pub time_wait: Duration,
    /// Retransmission timeouts in a row before giving up (Linux's
    /// `tcp_retries2`).
    pub max_retries: u32,
    /// SYN retransmissions before a connect fails (`tcp_syn_retries`).
    pub syn_retries: u32,
    /// Hold back a small segment while data is unacknowledged (RFC 896);
    /// off as with `TCP_NODELAY`.
    pub nagle: bool,
    /// Probe an idle connection (`SO_KEEPALIVE`); `None` for never.
    pub keepalive: Option<Keepalive>,
    /// What the buffers' storage is charged to (shared by the stack).
    pub budget: Budget,
}

/// When in-order data that fills less than two segments is acknowledged
/// (two full segments, out-of-order data, a FIN and the like are
/// acknowledged at once whatever the policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPolicy {
    /// At once.
    Immediate,
    /// After at most the delay, unless data we send carries the ACK sooner
    /// (RFC 1122 (4.2.3.2)).
    Delayed(Duration),
    /// As Linux does: at once, while the connection is not interactive;
    /// once we answered data with data within the delay of its arrival
    /// (Linux's ping-pong mode), delayed as with `Delayed`, so that the
    /// answer carries the ACK. A delayed ACK that had to be sent alone ends
    /// the interactive mode. For a request and its response this halves
    /// the segments on the wire.
    Interactive(Duration),
}

/// Linux's `TCP_KEEPIDLE`, `TCP_KEEPINTVL` and `TCP_KEEPCNT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet time before the first probe.
    pub idle: Duration,
    /// Time between unanswered probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is given up.
    pub count: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mss: 1460,
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
            sack: true,
            timestamps: true,
            window_scale: true,
            congestion: Algorithm::Cubic,
            acks: AckPolicy::Delayed(Duration::from_millis(40)),
            time_wait: Duration::from_secs(60),
            max_retries: 15,
            syn_retries: 6,
            nagle: false,
            keepalive: None,
            budget: Budget::unlimited(),
        }
    }
}

/// Why a connection ended abnormally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnError {
    /// A RST answered our SYN.
    Refused,
    /// The peer reset an open connection.
    Reset,
    /// Retransmissions went unanswered.
    TimedOut,
}

/// Counters for `TCP_INFO`-like reports and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Segments with a SYN, data or a FIN, retransmissions included (pure
    /// ACKs are `acks_sent`).
    pub segments_sent: u64,
    pub acks_sent: u64,
    pub segments_received: u64,
    pub retransmissions: u64,
    /// Retransmissions of segments the peer had SACKed: should stay zero.
    pub sacked_retransmissions: u64,
    pub rto_expiries: u64,
    pub tail_loss_probes: u64,
    pub fast_recoveries: u64,
    /// Fast recoveries found spurious by D-SACK and undone.
    pub undone_recoveries: u64,
    pub dsacks_received: u64,
    /// Segments that carried only data received before (answered by D-SACK).
    pub duplicates_received: u64,
    /// Segments dropped by PAWS (an older timestamp) or as outside the window.
    pub paws_rejected: u64,
    pub out_of_window: u64,
}

/// One segment to send: the header as a `TcpRepr` and its payload.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Everything but the payload (its `payload` field is empty).
    pub header: TcpRepr<'static>,
    /// The payload's length. Its bytes stay in the send queue, from
    /// `header.seq_number` on: [`Connection::payload`] gives them (to be
    /// copied into the frame) until the connection is next used.
    pub len: usize,
}

/// What a fast recovery changed, to put back if D-SACKs show that every
/// retransmission it made was needless (reordering, not loss): Linux's
/// undo, in the spirit of RFC 3708.
#[derive(Debug)]
struct Undo {
    prior: Congestion,
    /// Retransmitted segments (their starts) not yet reported duplicate.
    pending: Vec<TcpSeqNumber>,
}

/// Retransmissions an undo keeps track of; a recovery with more is no
/// reordering episode.
const UNDO_MAX_RETRANSMISSIONS: usize = 16;

/// What the peer agreed to in the handshake.
#[derive(Debug, Clone, Copy, Default)]
struct Negotiated {
    sack: bool,
    timestamps: bool,
    window_scale: bool,
    /// Shifts for the peer's window field and ours (0 without scaling).
    snd_shift: u8,
    rcv_shift: u8,
}

/// A TCP connection's engine.
#[derive(Debug)]
pub struct Connection {
    cfg: Config,
    state: State,
    local_port: u16,
    remote_port: u16,
    /// The latest time seen, so `poll_at` can say "now".
    now: Instant,
    iss: TcpSeqNumber,
    irs: TcpSeqNumber,
    ts_offset: u32,
    ts_recent: u32,
    /// TCP_CORK: while set, a partial segment waits, until this instant
    /// (200 ms after the oldest unsent byte was queued, Linux's ceiling).
    corked: bool,
    cork_deadline: Option<Instant>,
    /// The acknowledgement number we sent last (RFC 7323's Last.ACK.sent).
    last_ack_sent: TcpSeqNumber,
    opts: Negotiated,
    /// Payload bytes per segment after options.
    mss: usize,
    snd: SendQueue,
    snd_wnd: usize,
    max_snd_wnd: usize,
    snd_wl1: TcpSeqNumber,
    snd_wl2: TcpSeqNumber,
    rcv: RecvBuffer,
    /// The right edge of the window we advertised last.
    rcv_adv: TcpSeqNumber,
    /// The peer's FIN, once seen (maybe beyond a hole).
    peer_fin: Option<TcpSeqNumber>,
    fin_received: bool,
    /// The application closed: a FIN follows the data.
    fin_queued: bool,
    rtt: RttEstimator,
    cc: Congestion,
    rack: Rack,
    tlp: Tlp,
    /// Loss probes sent since an ACK last delivered anything; each doubles
    /// the wait for the next.
    probe_backoff: u32,
    recovery: Recovery,
    undo: Option<Undo>,
    /// NewReno (no SACK): duplicate ACKs in a row, and RFC 6582's `recover`.
    dupacks: usize,
    recover: TcpSeqNumber,
    /// snd.nxt when the current round trip began (HyStart++'s rounds).
    round_end: TcpSeqNumber,
    /// When the peer was last heard from, and keep-alive probes sent since.
    last_heard: Instant,
    keepalive_probes: u32,
    /// When an invalid segment without data was last answered.
    last_invalid_answer: Option<Instant>,
    /// Window probes sent since the peer last answered.
    unanswered_probes: u32,
    /// The last transmit stopped because the window was full.
    cwnd_limited: bool,
    rto_at: Option<Instant>,
    tlp_at: Option<Instant>,
    reo_at: Option<Instant>,
    ack_at: Option<Instant>,
    persist_at: Option<Instant>,
    time_wait_at: Option<Instant>,
    ack_now: bool,
    /// In-order bytes received since our last ACK.
    unacked_bytes: usize,
    /// When in-order data last arrived.
    last_data_at: Option<Instant>,
    /// We answer data with data: ACKs wait for the answer
    /// (`AckPolicy::Interactive`).
    interactive: bool,
    /// Resets and challenge ACKs to send before anything else.
    replies: Vec<Segment>,
    error: Option<ConnError>,
    stats: Stats,
}

/// Longest a corked partial segment waits (Linux's TCP_CORK ceiling).
const CORK_CEILING: Duration = Duration::from_millis(200);

impl Connection {
    fn new(
        cfg: Config,
        local_port: u16,
        remote_port: u16,
        iss: TcpSeqNumber,
        ts_offset: u32,
    ) -> Self {
        let mut cfg = cfg;
        cfg.send_buffer = cfg.send_buffer.clamp(1, MAX_BUFFER);
        cfg.recv_buffer = cfg.recv_buffer.clamp(1, MAX_BUFFER);
        cfg.mss = cfg.mss.max(MIN_PEER_MSS as u16);
        let mss = usize::from(cfg.mss);
        Connection {
            state: State::Closed,
            local_port,
            remote_port,
            now: Instant::ZERO,
            iss,
            irs: TcpSeqNumber(0),
            ts_offset,
            ts_recent: 0,
            corked: false,
            cork_deadline: None,
            last_ack_sent: TcpSeqNumber(0),
            opts: Negotiated::default(),
            mss,
            snd: SendQueue::with_budget(cfg.send_buffer, iss, cfg.budget.clone()),
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: TcpSeqNumber(0),
            snd_wl2: iss,
            rcv: RecvBuffer::with_budget(cfg.recv_buffer, cfg.budget.clone()),
            rcv_adv: TcpSeqNumber(0),
            peer_fin: None,
            fin_received: false,
            fin_queued: false,
            rtt: RttEstimator::new(),
            cc: Congestion::new(cfg.congestion, mss),
            rack: Rack::default(),
            tlp: Tlp::default(),
            probe_backoff: 0,
            recovery: Recovery::Open,
            undo: None,
            dupacks: 0,
            recover: iss,
            round_end: iss,
            last_heard: Instant::ZERO,
            keepalive_probes: 0,
            last_invalid_answer: None,
            unanswered_probes: 0,
            cwnd_limited: false,
            rto_at: None,
            tlp_at: None,
            reo_at: None,
            ack_at: None,
            persist_at: None,
            time_wait_at: None,
            ack_now: false,
            unacked_bytes: 0,
            last_data_at: None,
            interactive: false,
            replies: Vec::new(),
            error: None,
            stats: Stats::default(),
            cfg,
        }
    }

    /// An active open: the SYN goes out at the next `poll`. `iss` and
    /// `ts_offset` should be unpredictable (RFC 6528, RFC 7323 (5.4)).
    pub fn connect(
        cfg: Config,
        local_port: u16,
        remote_port: u16,
        iss: TcpSeqNumber,
        ts_offset: u32,
        now: Instant,
    ) -> Self {
        let mut c = Connection::new(cfg, local_port, remote_port, iss, ts_offset);
        c.now = now;
        c.last_heard = now;
        c.state = c.state.on(Event::Connect);
        c
    }

    /// A passive open waiting for a SYN on `local_port`. The remote port is
    /// learnt from the SYN.
    pub fn listen(cfg: Config, local_port: u16, iss: TcpSeqNumber, ts_offset: u32) -> Self {
        let mut c = Connection::new(cfg, local_port, 0, iss, ts_offset);
        c.state = c.state.on(Event::Listen);
        c
    }

    /// A passive open from a SYN that a listener received; `None` if the
    /// segment is not a plain SYN.
    pub fn accept(
        cfg: Config,
        syn: &TcpRepr,
        iss: TcpSeqNumber,
        ts_offset: u32,
        now: Instant,
    ) -> Option<Self> {
        if syn.control != TcpControl::Syn || syn.ack_number.is_some() {
            return None;
        }
        let mut c = Connection::listen(cfg, syn.dst_port, iss, ts_offset);
        c.input(now, syn);
        (c.state == State::SynReceived).then_some(c)
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn error(&self) -> Option<ConnError> {
        self.error
    }

    pub fn stats(&self) -> Stats {
        Stats {
            retransmissions: self.snd.retransmissions,
            sacked_retransmissions: self.snd.sacked_retransmissions,
            ..self.stats
        }
    }

    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    pub fn remote_port(&self) -> u16 {
        self.remote_port
    }

    /// The smoothed RTT, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    pub fn cwnd(&self) -> usize {
        self.cc.cwnd()
    }

    /// The payload per full segment, after options.
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// Whether SACK and timestamps were agreed in the handshake.
    pub fn sack_enabled(&self) -> bool {
        self.opts.sack
    }

    pub fn timestamps_enabled(&self) -> bool {
        self.opts.timestamps
    }

    /// Queues application bytes; returns how many were taken.
    pub fn send(&mut self, data: &[u8]) -> usize {
        if !self.state.may_send() || self.fin_queued {
            return 0;
        }
        self.note_queued();
        self.snd.push(data)
    }

    /// Before bytes are queued: starts the cork's clock if they are the
    /// first unsent ones.
    fn note_queued(&mut self) {
        if self.corked && self.snd.unsent() == 0 {
            self.cork_deadline = Some(self.now + CORK_CEILING);
        }
    }

    /// Sets or clears TCP_CORK; clearing lets held bytes go at once.
    pub fn set_cork(&mut self, on: bool) {
        if on && !self.corked {
            self.cork_deadline = Some(self.now + CORK_CEILING);
        }
        if !on {
            self.cork_deadline = None;
        }
        self.corked = on;
    }

    /// Room in the send queue for up to `want` more bytes (empty when
    /// `send` would take nothing), to be written in place and then passed
    /// to `send_commit`: bytes read from a descriptor enter the queue
    /// without a copy of our own.
    pub fn send_spare(&mut self, want: usize) -> &mut [u8] {
        if !self.state.may_send() || self.fin_queued {
            return &mut [];
        }
        self.note_queued();
        self.snd.spare(want)
    }

    /// The first `n` bytes of the region `send_spare` gave are queued.
    pub fn send_commit(&mut self, n: usize) {
        self.snd.commit(n);
    }

    /// Bytes `send` would take now.
    pub fn send_room(&self) -> usize {
        if !self.state.may_send() || self.fin_queued {
            return 0;
        }
        self.snd.room()
    }

    /// Bytes sent or queued and not yet acknowledged.
    pub fn send_queued(&self) -> usize {
        self.snd.buffered()
    }

    /// Takes received bytes; may open the window (a window update follows).
    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        let before = self.rcv.window();
        let n = self.rcv.read(buf);
        if n > 0 {
            self.note_read(before);
        }
        n
    }

    /// Hands readable bytes to `take` (at most twice, as the buffer may
    /// wrap), which says how many it consumed; returns the total.
    pub fn recv_with(&mut self, take: &mut dyn FnMut(&[u8]) -> usize) -> usize {
        let before = self.rcv.window();
        let mut total = 0;
        for _ in 0..2 {
            let (first, _) = self.rcv.readable_slices();
            if first.is_empty() {
                break;
            }
            let len = first.len();
            let n = take(first).min(len);
            self.rcv.consume(n);
            total += n;
            if n < len {
                break;
            }
        }
        if total > 0 {
            self.note_read(before);
        }
        total
    }

    /// Copies readable bytes without consuming them (`MSG_PEEK`).
    pub fn peek(&self, buf: &mut [u8]) -> usize {
        let (a, b) = self.rcv.readable_slices();
        let n1 = a.len().min(buf.len());
        buf[..n1].copy_from_slice(&a[..n1]);
        let n2 = b.len().min(buf.len() - n1);
        buf[n1..n1 + n2].copy_from_slice(&b[..n2]);
        n1 + n2
    }

    /// After a read: Linux sends a window update once the window it could
    /// offer is twice what the peer last heard (and at least a segment more,
    /// where a segment counts at most half the buffer: a buffer smaller than
    /// a segment, a small `SO_RCVBUF` over loopback, must reopen too).
    fn note_read(&mut self, before: usize) {
        if self.state.may_receive() {
            let offered = seq_dist(self.rcv.nxt(), self.rcv_adv);
            let now_free = self.rcv.window();
            let segment = self.mss.min(self.rcv.capacity() / 2).max(1);
            if now_free >= 2 * offered && now_free - offered >= segment && now_free > before {
                self.ack_now = true;
            }
        }
    }

    /// Turns Nagle's algorithm on or off (`TCP_NODELAY` may change any time).
    /// A new send-buffer size (`SO_SNDBUF` on an open connection): a
    /// larger one has room at once for a writer that was waiting.
    pub fn set_send_buffer(&mut self, bytes: usize) {
        self.snd.set_capacity(bytes.clamp(1, MAX_BUFFER));
    }

    pub fn set_nagle(&mut self, on: bool) {
        self.cfg.nagle = on;
    }

    /// Changes keep-alive (`SO_KEEPALIVE` and its `TCP_KEEP*` figures).
    pub fn set_keepalive(&mut self, keepalive: Option<Keepalive>) {
        self.cfg.keepalive = keepalive;
    }

    /// Segments wait for the next `poll` (a reply, an ACK, data, a RST).
    pub fn output_pending(&self) -> bool {
        self.has_output()
    }

    /// Bytes ready for `recv`.
    pub fn recv_ready(&self) -> usize {
        self.rcv.readable()
    }

    /// Whether `seg` carries bytes beyond what was received so far (not
    /// only a retransmission of bytes already taken).
    pub fn brings_new_data(&self, seg: &TcpRepr) -> bool {
        !seg.payload.is_empty() && seg.seq_number + seg.payload.len() > self.rcv.nxt()
    }

    /// The peer's FIN arrived and every byte before it has been read.
    pub fn recv_finished(&self) -> bool {
        self.fin_received && self.rcv.readable() == 0
    }

    /// Closes the sending side: a FIN follows the queued data.
    pub fn close(&mut self) {
        match self.state {
            // Data written before the handshake completed still goes out,
            // with the FIN after it, once our SYN is acknowledged (RFC 9293
            // (3.10.4) queues the close in SYN-RECEIVED too).
            State::SynSent if self.snd.buffered() > 0 => self.fin_queued = true,
            State::SynReceived => self.fin_queued = true,
            State::Listen | State::SynSent => {
                self.state = self.state.on(Event::Close);
                self.clear_timers();
            }
            State::Established | State::CloseWait => {
                self.fin_queued = true;
                self.state = self.state.on(Event::Close);
            }
            _ => {}
        }
    }

    /// Drops the connection with a RST (linger 0, or the socket closed with
    /// unread data, as Linux does).
    pub fn abort(&mut self) {
        if matches!(
            self.state,
            State::SynReceived
                | State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
                | State::Closing
                | State::LastAck
        ) {
            let rst = self.bare(self.snd.nxt, TcpControl::Rst, Some(self.rcv.nxt()));
            self.replies.push(rst);
        }
        self.reset(None);
    }

    /// The ACK a TIME-WAIT entry sends for a retransmitted FIN, for a caller
    /// that dropped the engine: sequence `snd_nxt`, acknowledging `rcv_nxt`.
    pub fn time_wait_ack(
        local_port: u16,
        remote_port: u16,
        snd_nxt: TcpSeqNumber,
        rcv_nxt: TcpSeqNumber,
    ) -> Segment {
        Segment {
            header: TcpRepr {
                src_port: local_port,
                dst_port: remote_port,
                control: TcpControl::None,
                seq_number: snd_nxt,
                ack_number: Some(rcv_nxt),
                window_len: 0,
                window_scale: None,
                max_seg_size: None,
                sack_permitted: false,
                sack_ranges: [None; 3],
                timestamp: None,
                payload: &[],
            },
            len: 0,
        }
    }

    /// The payload of `seg`, a segment this connection's `poll` just gave,
    /// as one or two slices of the send queue.
    pub fn payload(&self, seg: &Segment) -> (&[u8], &[u8]) {
        if seg.len == 0 {
            return (&[], &[]);
        }
        self.snd.range(seg.header.seq_number, seg.len)
    }

    /// The complete representation of `seg`, ready for `TcpRepr::emit`
    /// (its payload copied into `scratch` only where the queue wraps).
    pub fn repr<'a>(&'a self, seg: &Segment, scratch: &'a mut Vec<u8>) -> TcpRepr<'a> {
        let payload = match self.payload(seg) {
            (a, []) => a,
            (a, b) => {
                scratch.clear();
                scratch.extend_from_slice(a);
                scratch.extend_from_slice(b);
                &scratch[..]
            }
        };
        TcpRepr {
            payload,
            ..seg.header
        }
    }

    /// snd.nxt and rcv.nxt, for a TIME-WAIT entry kept by the caller.
    pub fn sequence_numbers(&self) -> (TcpSeqNumber, TcpSeqNumber) {
        (self.snd.nxt, self.rcv.nxt())
    }

    fn reset(&mut self, error: Option<ConnError>) {
        if error.is_some() {
            self.error = error;
        }
        self.state = self.state.on(Event::Reset);
        self.clear_timers();
    }

    fn clear_timers(&mut self) {
        self.rto_at = None;
        self.tlp_at = None;
        self.reo_at = None;
        self.ack_at = None;
        self.persist_at = None;
        self.time_wait_at = None;
        self.ack_now = false;
    }

    fn tsval(&self, now: Instant) -> u32 {
        // Millisecond ticks (RFC 7323 (5.4): between 1 ms and 1 s).
        (now.total_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// A segment with our ports and no options but what `finish` adds.
    fn bare(&self, seq: TcpSeqNumber, control: TcpControl, ack: Option<TcpSeqNumber>) -> Segment {
        let mut s =
            Connection::time_wait_ack(self.local_port, self.remote_port, seq, TcpSeqNumber(0));
        s.header.control = control;
        s.header.ack_number = ack;
        s
    }

    /// The RST answering an unacceptable segment (RFC 9293 (3.10.7.1)).
    fn reset_for(&self, seg: &TcpRepr) -> Option<Segment> {
        if seg.control == TcpControl::Rst {
            return None;
        }
        let mut rst = match seg.ack_number {
            Some(ack) => self.bare(ack, TcpControl::Rst, None),
            None => self.bare(
                TcpSeqNumber(0),
                TcpControl::Rst,
                Some(seq_add(seg.seq_number, seg.segment_len())),
            ),
        };
        rst.header.src_port = seg.dst_port;
        rst.header.dst_port = seg.src_port;
        Some(rst)
    }

    // ---------------------------------------------------------------- input

    /// Processes one segment addressed to this connection (ports already
    /// matched by the caller). Replies are produced by the next `poll`.
    pub fn input(&mut self, now: Instant, seg: &TcpRepr) {
        self.now = now;
        // After 24 days idle the peer's clock may have wrapped past ours
        // (RFC 7323 (5.5)): the old TS.Recent no longer says anything.
        if self.opts.timestamps
            && now - self.last_heard > PAWS_IDLE_LIMIT
            && let Some(ts) = seg.timestamp
        {
            self.ts_recent = ts.tsval;
        }
        self.last_heard = now;
        self.keepalive_probes = 0;
        self.stats.segments_received += 1;
        match self.state {
            State::Closed => {
                if let Some(rst) = self.reset_for(seg) {
                    self.replies.push(rst);
                }
            }
            State::Listen => self.input_listen(seg),
            State::SynSent => self.input_syn_sent(now, seg),
            _ => self.input_synchronized(now, seg),
        }
    }

    fn input_listen(&mut self, seg: &TcpRepr) {
        if seg.control == TcpControl::Rst {
            return;
        }
        if seg.ack_number.is_some() {
            if let Some(rst) = self.reset_for(seg) {
                self.replies.push(rst);
            }
            return;
        }
        if seg.control != TcpControl::Syn {
            return;
        }
        self.remote_port = seg.src_port;
        self.take_syn(seg);
        self.state = self.state.on(Event::Syn);
    }

    /// Learns the peer's ISN and options from its SYN (or SYN-ACK).
    fn take_syn(&mut self, seg: &TcpRepr) {
        self.irs = seg.seq_number;
        self.rcv.start(seq_add(seg.seq_number, 1));
        self.last_ack_sent = self.rcv.nxt();
        self.rcv_adv = self.rcv.nxt();
        let peer_mss = seg
            .max_seg_size
            .map_or(DEFAULT_PEER_MSS, usize::from)
            .max(MIN_PEER_MSS);
        let ws = self.cfg.window_scale && seg.window_scale.is_some();
        self.opts = Negotiated {
            sack: self.cfg.sack && seg.sack_permitted,
            timestamps: self.cfg.timestamps && seg.timestamp.is_some(),
            window_scale: ws,
            snd_shift: if ws {
                seg.window_scale.unwrap_or(0).min(14)
            } else {
                0
            },
            rcv_shift: if ws { self.our_shift() } else { 0 },
        };
        if let Some(ts) = seg.timestamp {
            self.ts_recent = ts.tsval;
        }
        let mut mss = usize::from(self.cfg.mss).min(peer_mss);
        if self.opts.timestamps {
            mss -= TIMESTAMP_ROOM;
        }
        self.mss = mss;
        self.cc.set_mss(mss);
        // The window in a SYN is never scaled (RFC 7323 (2.2)).
        self.snd_wnd = usize::from(seg.window_len);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = seg.seq_number;
    }

    /// The shift that lets our whole buffer be advertised.
    fn our_shift(&self) -> u8 {
        let mut shift = 0;
        while (self.cfg.recv_buffer >> shift) > 65535 && shift < 14 {
            shift += 1;
        }
        shift
    }

    fn input_syn_sent(&mut self, now: Instant, seg: &TcpRepr) {
        let iss = self.iss;
        let ack_ok = match seg.ack_number {
            Some(ack) if !(ack > iss && ack <= self.snd.nxt) => {
                if let Some(rst) = self.reset_for(seg) {
                    self.replies.push(rst);
                }
                return;
            }
            Some(_) => true,
            None => false,
        };
        if seg.control == TcpControl::Rst {
            if ack_ok {
                self.reset(Some(ConnError::Refused));
            }
            return;
        }
        if seg.control != TcpControl::Syn {
            return;
        }
        self.take_syn(seg);
        if ack_ok {
            self.snd_wl2 = seg.ack_number.unwrap_or(iss);
            self.synchronized();
            self.process_ack(now, seg);
            self.ack_now = true;
        } else {
            // Simultaneous open: our SYN goes again, now with an ACK.
            self.state = self.state.on(Event::Syn);
            self.snd.mark_lost(0);
        }
    }

    fn input_synchronized(&mut self, now: Instant, seg: &TcpRepr) {
        // A retransmitted SYN: our SYN-ACK was lost.
        if self.state == State::SynReceived
            && seg.control == TcpControl::Syn
            && seg.ack_number.is_none()
            && seg.seq_number == self.irs
        {
            self.snd.mark_lost(0);
            return;
        }
        let seg_len = seg.segment_len();
        // PAWS (RFC 7323 (5.3)): an older timestamp is an old duplicate.
        // It guards data; a pure ACK that ACK reordering delayed still
        // carries SACK blocks worth having (Linux spares such ACKs too).
        let pure_ack = seg.payload.is_empty() && seg.control == TcpControl::None;
        if self.opts.timestamps
            && seg.control != TcpControl::Rst
            && !pure_ack
            && let Some(ts) = seg.timestamp
            && (ts.tsval.wrapping_sub(self.ts_recent) as i32) < 0
        {
            self.stats.paws_rejected += 1;
            self.answer_invalid(now, seg);
            self.note_duplicate(seg);
            return;
        }
        if !self.acceptable(seg.seq_number, seg_len) {
            self.stats.out_of_window += 1;
            // RFC 9293 (3.10.7.4): with our window shut, a segment at rcv.nxt
            // is not acceptable but its ACK is (the peer's zero-window probe
            // may be the only news of our own data).
            if self.state.is_synchronized()
                && seg.control == TcpControl::None
                && seg.seq_number == self.rcv.nxt()
                && self.rcv.window() == 0
                && seg
                    .ack_number
                    .is_some_and(|a| a >= self.snd.una && a <= self.snd.nxt)
            {
                self.process_ack(now, seg);
            }
            if seg.control != TcpControl::Rst {
                self.answer_invalid(now, seg);
                self.note_duplicate(seg);
                if self.state == State::TimeWait && seg.control == TcpControl::Fin {
                    self.time_wait_at = Some(now + self.cfg.time_wait);
                }
            }
            return;
        }
        if seg.control == TcpControl::Rst {
            // RFC 5961 (3.2): only an exact RST resets; others get a challenge.
            if seg.seq_number == self.rcv.nxt() {
                let err = if self.state == State::SynReceived {
                    ConnError::Refused
                } else {
                    ConnError::Reset
                };
                self.reset(Some(err));
            } else {
                self.answer_invalid(now, seg);
            }
            return;
        }
        if seg.control == TcpControl::Syn {
            // RFC 5961 (4.2): a SYN in a synchronized state gets a challenge ACK.
            self.answer_invalid(now, seg);
            return;
        }
        // Timestamps: remember the peer's clock for echoing (RFC 7323
        // (4.3)): the first segment after our last ACK sets it, so the echo
        // includes the time an ACK was delayed; never backwards (a pure
        // ACK may be late).
        if self.opts.timestamps
            && let Some(ts) = seg.timestamp
            && seg.seq_number <= self.last_ack_sent
            && (ts.tsval.wrapping_sub(self.ts_recent) as i32) >= 0
        {
            self.ts_recent = ts.tsval;
        }
        let Some(ack) = seg.ack_number else {
            return;
        };
        if self.state == State::SynReceived {
            if ack > self.iss && ack <= self.snd.nxt {
                self.synchronized();
                self.snd_wl1 = seg.seq_number;
                self.snd_wl2 = ack;
            } else {
                if let Some(rst) = self.reset_for(seg) {
                    self.replies.push(rst);
                }
                return;
            }
        }
        if ack > self.snd.nxt {
            // Acknowledges something never sent (RFC 9293): ACK and drop.
            self.answer_invalid(now, seg);
            return;
        }
        if ack < self.snd.una && seq_dist(ack, self.snd.una) > self.max_snd_wnd.max(65535) {
            // RFC 5961 (5.2): too old to be a late duplicate.
            self.answer_invalid(now, seg);
            return;
        }
        // An older ACK (reordered) still brings its SACK blocks.
        self.process_ack(now, seg);
        if self.state == State::Closed {
            return;
        }
        self.process_data(now, seg);
    }

    /// The ACK that answers an invalid segment (out of the window, an old
    /// timestamp, a RST or SYN that needs a challenge). Data and FINs are
    /// answered each time (the peer's recovery counts on those ACKs); the
    /// rest at most once per `INVALID_ANSWER_INTERVAL`, so a blind flood
    /// cannot turn us into an ACK cannon, nor two stacks into an ACK loop
    /// (RFC 5961 (7), Linux's `tcp_invalid_ratelimit`).
    fn answer_invalid(&mut self, now: Instant, seg: &TcpRepr) {
        let carries_sequence = !seg.payload.is_empty() || seg.control == TcpControl::Fin;
        if carries_sequence {
            self.ack_now = true;
            return;
        }
        if self
            .last_invalid_answer
            .is_none_or(|t| now - t >= INVALID_ANSWER_INTERVAL)
        {
            self.last_invalid_answer = Some(now);
            self.ack_now = true;
        }
    }

    /// Old data received again: the ACK reports it with a D-SACK block
    /// (RFC 2883), which tells the sender its retransmission was spurious.
    fn note_duplicate(&mut self, seg: &TcpRepr) {
        if seg.payload.is_empty() {
            return;
        }
        let end = seq_add(seg.seq_number, seg.payload.len());
        if end <= self.rcv.nxt() {
            self.rcv.report_duplicate(seg.seq_number, end);
            self.stats.duplicates_received += 1;
        }
    }

    /// Our SYN was acknowledged; a close that came before goes on now.
    fn synchronized(&mut self) {
        self.state = self.state.on(Event::SynAcked);
        if self.fin_queued {
            self.state = self.state.on(Event::Close);
        }
    }

    /// RFC 9293 (3.10.7.4)'s acceptability test against our window.
    fn acceptable(&self, seq: TcpSeqNumber, len: usize) -> bool {
        let nxt = self.rcv.nxt();
        let wnd = self.rcv.window().max(seq_dist(nxt, self.rcv_adv));
        let in_wnd = |s: TcpSeqNumber| s >= nxt && s < seq_add(nxt, wnd);
        match (len, wnd) {
            (0, 0) => seq == nxt,
            (0, _) => in_wnd(seq),
            (_, 0) => false,
            _ => in_wnd(seq) || in_wnd(seq_add(seq, len - 1)),
        }
    }

    /// The ACK field and SACK blocks of a segment: what was delivered, what
    /// is lost, how the window moves.
    fn process_ack(&mut self, now: Instant, seg: &TcpRepr) {
        let Some(ack) = seg.ack_number else {
            return;
        };
        let una_before = self.snd.una;
        let wnd_before = self.snd_wnd;
        self.unanswered_probes = 0;
        // The send window (RFC 9293 (3.10.7.4)): newer segments only.
        if ack >= una_before
            && (self.snd_wl1 < seg.seq_number
                || (self.snd_wl1 == seg.seq_number && self.snd_wl2 <= ack))
        {
            let shift = if seg.control == TcpControl::Syn {
                0
            } else {
                self.opts.snd_shift
            };
            self.snd_wnd = usize::from(seg.window_len) << shift;
            self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
            self.snd_wl1 = seg.seq_number;
            self.snd_wl2 = ack;
        }
        let tsecr = if self.opts.timestamps {
            seg.timestamp.map(|t| t.tsecr)
        } else {
            None
        };
        let min_rtt = self.rtt.min_rtt();
        let mut delivered = 0;
        let mut newest_clean: Option<Instant> = None;
        let mut fin_acked = false;
        let rack = &mut self.rack;
        let mut on_delivered = |s: &SentSegment, cumulative: bool| {
            // A segment SACKed before was delivered then: its send time says
            // nothing about this ACK (its "RTT" would include the whole
            // repair of the hole before it, and would stall RACK and
            // inflate SRTT, the PTO and the RTO).
            if cumulative && s.sacked {
                return;
            }
            rack.on_delivered(s, now, min_rtt, tsecr.filter(|_| cumulative));
            if s.retransmits == 0 {
                newest_clean = Some(newest_clean.map_or(s.sent_at, |t| t.max(s.sent_at)));
            }
        };
        if ack > una_before {
            let acked = self.snd.ack(ack, |s| on_delivered(s, true));
            delivered += acked.bytes.saturating_sub(acked.were_sacked);
            fin_acked = acked.fin;
        }
        let mut dsack = None;
        if self.opts.sack {
            for (i, block) in seg.sack_ranges.iter().enumerate() {
                let Some((l, r)) = *block else { continue };
                let (l, r) = (TcpSeqNumber(l as i32), TcpSeqNumber(r as i32));
                if i == 0 {
                    // RFC 2883: below the cumulative ACK, or inside the
                    // second block, the first block reports a duplicate.
                    let inside_second = seg.sack_ranges[1].is_some_and(|(l2, r2)| {
                        l >= TcpSeqNumber(l2 as i32) && r <= TcpSeqNumber(r2 as i32)
                    });
                    if r <= ack || inside_second {
                        dsack = Some((l, r));
                        continue;
                    }
                }
                delivered += self.snd.sack(l, r, |s| on_delivered(s, false));
            }
        }
        if let Some((l, _)) = dsack {
            self.stats.dsacks_received += 1;
            self.rack.on_dsack(self.snd.una, self.snd.nxt);
            self.tlp.dsacked = true;
            self.undo_if_spurious(l);
        }
        // An RTT sample: from the newest segment sent once (Karn), else from
        // the echoed timestamp when the ACK moved (RFC 7323 (4.1)).
        if let Some(sent) = newest_clean {
            self.rtt.sample(now - sent);
            self.cc.on_rtt_sample(now - sent);
        } else if ack > una_before
            && let Some(ecr) = tsecr.filter(|&e| e != 0)
        {
            let age = self.tsval(now).wrapping_sub(ecr);
            if age < 60_000 {
                self.rtt
                    .sample_coarse(Duration::from_millis(u64::from(age)));
            }
        }
        if ack > una_before {
            if ack >= self.round_end {
                self.round_end = self.snd.nxt;
                self.cc.on_round_start();
            }
            self.rtt.reset_backoff();
            self.rto_at = (self.snd.outstanding() > 0).then(|| now + self.rtt.rto());
            if !self.opts.sack {
                // NewReno: a partial ACK in recovery means the next segment
                // is lost too (RFC 6582 (3.2) step 5).
                if matches!(self.recovery, Recovery::Fast { until, .. } if ack < until) {
                    self.snd.mark_lost(0);
                }
                self.dupacks = 0;
            }
        } else if !self.opts.sack
            && ack == self.snd.una
            && seg.payload.is_empty()
            && seg.control == TcpControl::None
            && self.snd_wnd == wnd_before
            && self.snd.outstanding() > 0
        {
            // RFC 5681's duplicate ACK; each stands for a delivered segment.
            self.dupacks += 1;
            delivered += self.mss;
            if self.dupacks == DUP_THRESH
                && matches!(self.recovery, Recovery::Open)
                && self.snd.una >= self.recover
            {
                self.snd.mark_lost(0);
            }
        }
        if self.opts.sack {
            self.detect_loss(now);
        }
        self.after_loss_detection();
        // Leave recovery when what was outstanding at its start is acknowledged.
        match self.recovery {
            Recovery::Fast { until, .. } if self.snd.una >= until => {
                self.cc.on_recovery_end();
                self.rack.on_recovery_end();
                self.recovery = Recovery::Open;
            }
            Recovery::Timeout { until } if self.snd.una >= until => {
                self.recovery = Recovery::Open;
            }
            _ => {}
        }
        if delivered > 0 {
            self.probe_backoff = 0;
        }
        // Grow the window, or pace the recovery.
        let pipe = self.pipe();
        let mss = self.mss;
        let ssthresh = self.cc.ssthresh();
        match &mut self.recovery {
            Recovery::Fast { prr, .. } => prr.on_ack(delivered, pipe, ssthresh, mss),
            _ => {
                let rtt = self.rtt.srtt().unwrap_or(Duration::ZERO);
                self.cc.on_ack(now, delivered, rtt, self.cwnd_limited);
            }
        }
        // A tail loss probe answered: if it repaired a loss alone, that loss
        // still calls for a congestion response (RFC 8985 (7.4)).
        if let Some(end) = self.tlp.end
            && ack >= end
        {
            if self.tlp.was_retransmission
                && !self.tlp.dsacked
                && matches!(self.recovery, Recovery::Open)
            {
                self.cc.on_congestion(self.snd.outstanding());
                self.cc.on_recovery_end();
            }
            self.tlp = Tlp::default();
        }
        if fin_acked {
            self.state = self.state.on(Event::FinAcked);
            if self.state == State::TimeWait {
                self.time_wait_at = Some(now + self.cfg.time_wait);
            } else if self.state == State::Closed {
                self.clear_timers();
            }
        }
        self.arm_probe_timers(now);
    }

    /// What counts as in flight: SACK's pipe, or for NewReno the outstanding
    /// data less what duplicate ACKs say has left the network.
    fn pipe(&self) -> usize {
        if self.opts.sack {
            self.snd.pipe()
        } else {
            self.snd.pipe().saturating_sub(self.dupacks * self.mss)
        }
    }

    fn detect_loss(&mut self, now: Instant) {
        let min_rtt = self.rtt.min_rtt().unwrap_or(Duration::ZERO);
        let srtt = self.rtt.srtt().unwrap_or(min_rtt);
        let in_recovery = !matches!(self.recovery, Recovery::Open);
        let wait = self
            .rack
            .detect_loss(&mut self.snd, now, in_recovery, min_rtt, srtt);
        self.reo_at = wait.map(|w| now + w);
    }

    /// Starts fast recovery when something was found lost outside it.
    fn after_loss_detection(&mut self) {
        if self.snd.lost_bytes() == 0 || !matches!(self.recovery, Recovery::Open) {
            return;
        }
        let flight = self.snd.outstanding();
        self.undo = Some(Undo {
            prior: self.cc.clone(),
            pending: Vec::new(),
        });
        self.cc.on_congestion(flight);
        self.recover = self.snd.nxt;
        self.recovery = Recovery::Fast {
            until: self.snd.nxt,
            prr: Prr::new(flight),
        };
        self.stats.fast_recoveries += 1;
        // The probe, if any, did its job: recovery has begun, and it makes
        // the congestion response a repaired probe would call for.
        self.tlp_at = None;
        self.tlp = Tlp::default();
        self.probe_backoff = 0;
    }

    /// A D-SACK reported the segment starting at `start` as received twice.
    /// Once every retransmission of the last fast recovery is so reported,
    /// none was needed: the window goes back to where it was.
    fn undo_if_spurious(&mut self, start: TcpSeqNumber) {
        let Some(u) = &mut self.undo else {
            return;
        };
        let Some(i) = u.pending.iter().position(|&p| p == start) else {
            return;
        };
        u.pending.swap_remove(i);
        if !u.pending.is_empty() {
            return;
        }
        if let Some(u) = self.undo.take() {
            self.cc.undo(&u.prior);
            self.stats.undone_recoveries += 1;
            if matches!(self.recovery, Recovery::Fast { .. }) && self.snd.lost_bytes() == 0 {
                self.recovery = Recovery::Open;
                self.rack.on_recovery_end();
            }
        }
    }

    /// Whether a tail loss probe may be armed. RFC 8985 probes only outside
    /// recovery; we also probe in fast recovery, since a recovery whose
    /// segments in flight are all lost (a lost tail, or one burst that took
    /// every retransmission) gets no ACK to go on, neither for RACK to
    /// notice nor for PRR to send what else is marked lost, and would
    /// otherwise wait for the RTO.
    fn probe_allowed(&self) -> bool {
        match self.recovery {
            Recovery::Open | Recovery::Fast { .. } => true,
            Recovery::Timeout { .. } => false,
        }
    }

    /// When a probe should go if nothing is heard before: a PTO from now,
    /// doubled for each probe already unanswered; never if that is no
    /// sooner than the RTO, which then takes over.
    fn probe_at(&self, now: Instant) -> Option<Instant> {
        let outstanding = self.snd.outstanding();
        if !(self.opts.sack
            && outstanding > 0
            && self.probe_allowed()
            && self.state.is_synchronized())
        {
            return None;
        }
        let rto = self.rtt.rto();
        let pto = Tlp::pto(self.rtt.srtt(), outstanding <= self.mss, rto);
        if self.probe_backoff == 0 {
            return Some(now + pto);
        }
        let shift = self.probe_backoff.min(20);
        let wait = Duration::from_micros(pto.total_micros().saturating_mul(1 << shift));
        (wait < rto).then(|| now + wait)
    }

    /// The tail loss probe and the persist timer follow every ACK.
    fn arm_probe_timers(&mut self, now: Instant) {
        let outstanding = self.snd.outstanding();
        self.tlp_at = self.probe_at(now);
        if self.window_blocked() && outstanding == 0 {
            if self.persist_at.is_none() {
                self.persist_at = Some(now + self.rtt.rto());
            }
        } else {
            self.persist_at = None;
        }
    }

    /// Data waits and the peer's window (not cwnd) keeps it back: closed,
    /// or too small for a segment. Nothing in flight means no ACK will
    /// come to reopen it unless we probe (the window update may be lost).
    fn window_blocked(&self) -> bool {
        let unsent = self.snd.unsent();
        unsent > 0 && self.window_room() < unsent.min(self.mss)
    }

    /// The payload and FIN of a segment.
    fn process_data(&mut self, now: Instant, seg: &TcpRepr) {
        let payload_end = seq_add(seg.seq_number, seg.payload.len());
        if seg.control == TcpControl::Fin && self.peer_fin.is_none() {
            self.peer_fin = Some(payload_end);
        }
        if !seg.payload.is_empty() {
            if !self.state.may_receive() {
                // Data after the peer's FIN: ignored, but acknowledged.
                self.ack_now = true;
                return;
            }
            let arrival = self.rcv.write(seg.seq_number, seg.payload);
            if arrival.duplicate {
                self.stats.duplicates_received += 1;
            }
            if arrival.out_of_order || arrival.filled_hole || arrival.duplicate {
                self.ack_now = true;
            } else if arrival.advanced > 0 {
                self.last_data_at = Some(now);
                self.unacked_bytes += arrival.advanced;
                // RFC 5681 (4.2): at least every second full segment.
                if self.unacked_bytes >= 2 * self.mss {
                    self.ack_now = true;
                } else {
                    match self.cfg.acks {
                        AckPolicy::Delayed(d) => {
                            self.ack_at.get_or_insert(now + d);
                        }
                        AckPolicy::Interactive(d) if self.interactive => {
                            self.ack_at.get_or_insert(now + d);
                        }
                        AckPolicy::Immediate | AckPolicy::Interactive(_) => self.ack_now = true,
                    }
                }
            } else {
                // Nothing fit in the window (a zero-window probe).
                self.ack_now = true;
            }
        }
        if let Some(fin) = self.peer_fin
            && !self.fin_received
            && fin == self.rcv.nxt()
            && self.state.may_receive()
        {
            self.rcv.consume_fin();
            self.fin_received = true;
            self.ack_now = true;
            self.state = self.state.on(Event::Fin);
            if self.state == State::TimeWait {
                self.rto_at = None;
                self.tlp_at = None;
                self.reo_at = None;
                self.time_wait_at = Some(now + self.cfg.time_wait);
            }
        }
    }
}
