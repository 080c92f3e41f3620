//! Plays scripts at the sandbox over the cable: many connections at once,
//! each through its handshake, its frames, and its end (the server's FIN,
//! acknowledged; a reset; or a deadline, after which the fuzzer resets the
//! connection so the server's side does not linger). ARP requests for the
//! fuzzer's address are answered here. Every frame of a connection, both
//! ways, is kept in its [`Record`], which a reproducer is written from.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::link::MAX_FRAME;
use super::script::Script;
use super::wire::{self, ACK, FIN, FromGuest, Proto, RST, SYN, Segment};

/// How long a frame-mutated input's SYN waits for its SYN-ACK before the
/// rest is sent anyway (an ordinary input waits as long as for an answer:
/// a listener that takes no connection is a hung server).
const HANDSHAKE_WAIT: Duration = Duration::from_millis(100);
/// How long a frame-mutated TCP input, or a datagram, waits for an answer.
pub const SHORT_WAIT: Duration = Duration::from_millis(5);
/// How long the fuzzer answers challenge ACKs on a connection it reset.
const LINGER: Duration = Duration::from_millis(500);

/// One input's frames, both ways, in order (`from_guest`, bytes).
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub note: String,
    /// The input's number.
    pub id: u64,
    /// The client bytes it carried.
    pub payload: Vec<u8>,
    /// Whether it could reach the server's program: a datagram, or a
    /// connection the server's stack took (a SYN-ACK came).
    pub reached: bool,
    pub frames: Vec<(bool, Vec<u8>)>,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered: data, FIN or (TCP) a reset after the handshake.
    Answered,
    /// Nothing came back in time for an input that expected no answer
    /// necessarily (frame-mutated, or a datagram).
    Quiet,
    /// An ordinary TCP input got no answer within the hang deadline.
    Hung,
    /// Nothing listens: a reset answered the SYN, or an ICMP port
    /// unreachable the datagram.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Sent,
}

/// A connection the fuzzer reset after its input ended: a reset the
/// server found inexact gets a challenge ACK, whose number the next
/// reset takes (RFC 5961), so that no connection outlives its input in
/// the server (a server reading one that never ends would stall).
#[derive(Debug)]
struct Linger {
    dport: u16,
    until: Instant,
    tries: u8,
}

#[derive(Debug)]
struct Conn {
    script: Script,
    phase: Phase,
    until: Instant,
    irs: Option<u32>,
    server_ack: Option<u32>,
    answered: bool,
    /// The server ended the connection (FIN acknowledged, or RST).
    finished: bool,
    /// SYNs sent again after a challenge ACK.
    syn_retries: u8,
    refused: bool,
    record: Record,
}

/// The fuzzer's side of the cable and the connections on it.
#[derive(Debug)]
pub struct Driver {
    cable: OwnedFd,
    conns: HashMap<u16, Conn>,
    lingering: HashMap<u16, Linger>,
    /// Frames the cable could not take yet.
    backlog: VecDeque<Vec<u8>>,
    hang_wait: Duration,
    scratch: Vec<u8>,
    /// Whether the cable's other end is gone.
    pub closed: bool,
}

impl Driver {
    pub fn new(cable: OwnedFd, hang_wait: Duration) -> Driver {
        Driver {
            cable,
            conns: HashMap::new(),
            lingering: HashMap::new(),
            backlog: VecDeque::new(),
            hang_wait,
            scratch: vec![0; MAX_FRAME + 1],
            closed: false,
        }
    }

    /// Connections under way.
    pub fn in_flight(&self) -> usize {
        self.conns.len()
    }

    /// Whether a connection from `sport` is under way.
    pub fn busy(&self, sport: u16) -> bool {
        self.conns.contains_key(&sport) || self.lingering.contains_key(&sport)
    }

    /// Starts playing `script`.
    pub fn start(&mut self, script: Script, now: Instant) {
        let mut c = Conn {
            phase: Phase::Sent,
            until: now,
            irs: None,
            server_ack: None,
            answered: false,
            finished: false,
            syn_retries: 0,
            refused: false,
            record: Record {
                note: script.note.clone(),
                id: script.id,
                payload: script.payload.clone(),
                reached: script.proto == Proto::Udp,
                frames: Vec::new(),
            },
            script,
        };
        let first = c.script.frames.first().map(|f| f.render(None));
        let syn = first
            .as_deref()
            .and_then(wire::own_tcp_fields)
            .is_some_and(|(_, _, flags)| flags & (SYN | ACK) == SYN);
        if let Some(f) = first {
            self.send(&mut c.record, f);
        }
        if c.script.proto == Proto::Tcp && syn {
            c.phase = Phase::Handshake;
            c.until = now
                + if c.script.frame_mutated || c.script.probe {
                    HANDSHAKE_WAIT
                } else {
                    self.hang_wait
                };
        } else {
            self.send_rest(&mut c, now);
        }
        self.conns.insert(c.script.sport, c);
    }

    fn send_rest(&mut self, c: &mut Conn, now: Instant) {
        let frames: Vec<Vec<u8>> = c.script.frames[1.min(c.script.frames.len())..]
            .iter()
            .map(|f| f.render(c.irs))
            .collect();
        for f in frames {
            self.send(&mut c.record, f);
        }
        c.phase = Phase::Sent;
        let ordinary = c.script.proto == Proto::Tcp && !c.script.frame_mutated;
        c.until = now
            + if ordinary {
                self.hang_wait
            } else if c.script.probe {
                // A datagram probe is ready when no port-unreachable came.
                HANDSHAKE_WAIT
            } else {
                SHORT_WAIT
            };
    }

    fn send(&mut self, record: &mut Record, frame: Vec<u8>) {
        self.write(&frame);
        record.frames.push((false, frame));
    }

    /// A frame of the fuzzer's own that no reproducer needs (ARP, ACK, RST).
    fn write(&mut self, frame: &[u8]) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(frame.to_vec());
            return;
        }
        match nix::unistd::write(&self.cable, frame) {
            Err(Errno::EAGAIN) => self.backlog.push_back(frame.to_vec()),
            Err(_) => self.closed = true,
            Ok(_) => {}
        }
    }

    fn flush_backlog(&mut self) {
        while let Some(f) = self.backlog.front() {
            match nix::unistd::write(&self.cable, f) {
                Err(Errno::EAGAIN) => return,
                Err(_) => self.closed = true,
                Ok(_) => {}
            }
            self.backlog.pop_front();
        }
    }

    /// Waits for frames (at most `max`, or until the next deadline), takes
    /// them in, and ends the connections that are done or out of time.
    /// Returns the ended ones. `extra` is another descriptor to wake for
    /// (the sandbox's pidfd).
    pub fn step(
        &mut self,
        max: Duration,
        extra: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Vec<(Record, Outcome)> {
        let now = Instant::now();
        let next = self.conns.values().map(|c| c.until).min();
        let wait = next.map_or(max, |t| t.saturating_duration_since(now).min(max));
        let mut flags = PollFlags::POLLIN;
        if !self.backlog.is_empty() {
            flags |= PollFlags::POLLOUT;
        }
        let mut fds = vec![PollFd::new(self.cable.as_fd(), flags)];
        if let Some(e) = extra {
            fds.push(PollFd::new(e, PollFlags::POLLIN));
        }
        let ms = wait.as_millis().min(1000) as u16;
        let ready = poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0);
        let cable_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        if ready > 0 && cable_ready {
            self.flush_backlog();
            self.read_all();
        }
        let now = Instant::now();
        self.lingering.retain(|_, l| l.until > now);
        let mut ended = Vec::new();
        let due: Vec<u16> = self
            .conns
            .iter()
            .filter(|(_, c)| c.until <= now)
            .map(|(p, _)| *p)
            .collect();
        for port in due {
            if let Some(mut c) = self.conns.remove(&port) {
                match self.timeout(&mut c, now) {
                    Some(outcome) => ended.push((c.record, outcome)),
                    None => {
                        self.conns.insert(port, c);
                    }
                }
            }
        }
        let done: Vec<u16> = self
            .conns
            .iter()
            .filter(|(_, c)| c.refused || (c.finished && c.phase != Phase::Handshake))
            .map(|(p, _)| *p)
            .collect();
        for port in done {
            if let Some(c) = self.conns.remove(&port) {
                // Edited frames may have left the server's side open.
                if c.script.frame_mutated && c.script.proto == Proto::Tcp && !c.refused {
                    let dport = wire::own_dport(&c.script.frames[0].bytes).unwrap_or(0);
                    self.abort(&c, dport, now);
                }
                let ordinary = c.script.proto == Proto::Tcp && !c.script.frame_mutated;
                let outcome = if c.refused {
                    Outcome::Refused
                } else if c.answered {
                    Outcome::Answered
                } else if ordinary {
                    Outcome::Hung
                } else {
                    Outcome::Quiet
                };
                ended.push((c.record, outcome));
            }
        }
        ended
    }

    fn read_all(&mut self) {
        for _ in 0..4096 {
            let n = match nix::unistd::read(&self.cable, &mut self.scratch) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => n,
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.closed = true;
                    return;
                }
            };
            let frame = self.scratch[..n].to_vec();
            if let Some(answer) = wire::arp_answer(&frame) {
                self.write(&answer);
                continue;
            }
            if let Some(port) = wire::icmp_unreachable_port(&frame) {
                if let Some(c) = self.conns.get_mut(&port) {
                    c.record.frames.push((true, frame));
                    c.refused = c.script.proto == Proto::Udp;
                }
                continue;
            }
            let Some(parsed) = wire::parse_from_guest(&frame) else {
                continue;
            };
            let port = match parsed {
                FromGuest::Tcp { dport, .. } | FromGuest::Udp { dport, .. } => dport,
            };
            if let Some(mut c) = self.conns.remove(&port) {
                c.record.frames.push((true, frame));
                self.take(&mut c, parsed);
                self.conns.insert(port, c);
            } else {
                self.linger(port, parsed);
            }
        }
    }

    /// A frame from the server for connection `c`.
    fn take(&mut self, c: &mut Conn, parsed: FromGuest) {
        let now = Instant::now();
        let FromGuest::Tcp {
            sport,
            seq,
            ack,
            flags,
            len,
            ..
        } = parsed
        else {
            c.answered = true;
            c.finished = true;
            return;
        };
        if flags & ACK != 0 && flags & RST == 0 {
            c.server_ack = Some(ack);
        }
        if flags & (SYN | ACK) == SYN | ACK && c.irs.is_none() {
            c.irs = Some(seq);
            c.record.reached = true;
        }
        if flags & RST != 0 {
            // Before the handshake: refused (no listener yet, or a mangled
            // SYN). Either way the input is over.
            if c.phase == Phase::Handshake {
                c.refused = true;
                c.phase = Phase::Sent;
            } else {
                // A reset of a connection the server had is its answer;
                // one for segments of no connection is not.
                c.answered |= c.irs.is_some();
            }
            c.finished = true;
            // The server's reset of a bad segment need not end a half-open
            // connection (RFC 9293: it answers an unacceptable ACK in
            // SYN-RECEIVED and stays): end it, or the listener's queue of
            // half-open ones fills for minutes.
            if c.irs.is_some() {
                self.abort(c, sport, now);
            }
            return;
        }
        if c.phase == Phase::Handshake && c.irs.is_some() {
            self.send_rest(c, now);
        } else if c.phase == Phase::Handshake && flags & (SYN | ACK) == ACK && c.syn_retries < 3 {
            // A challenge ACK: our port's last connection lives on in the
            // server. A reset at the number it names ends it; then SYN again.
            c.syn_retries += 1;
            self.control(c.script.sport, sport, ack, 0, RST);
            if let Some(syn) = c.script.frames.first().map(|f| f.render(None)) {
                self.send(&mut c.record, syn);
            }
            return;
        }
        if len > 0 || flags & FIN != 0 {
            c.answered = true;
        }
        if flags & FIN != 0 {
            let ack = seq.wrapping_add(len).wrapping_add(1);
            self.control(c.script.sport, sport, c.script.end_seq, ack, ACK);
            c.finished = true;
        }
    }

    fn control(&mut self, sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) {
        let f = wire::tcp_frame(&Segment {
            sport,
            dport,
            seq,
            ack,
            flags,
            window: 65535,
            options: &[],
            payload: &[],
        });
        self.write(&f);
    }

    /// A connection's deadline passed: `Some` when it has ended.
    fn timeout(&mut self, c: &mut Conn, now: Instant) -> Option<Outcome> {
        match c.phase {
            // The listener took no connection in the hang deadline.
            Phase::Handshake if c.script.probe => Some(Outcome::Quiet),
            Phase::Handshake if !c.script.frame_mutated && c.script.proto == Proto::Tcp => {
                Some(Outcome::Hung)
            }
            Phase::Handshake => {
                self.send_rest(c, now);
                None
            }
            Phase::Sent if c.script.proto == Proto::Udp => Some(Outcome::Quiet),
            Phase::Sent => {
                let dport = wire::own_dport(&c.script.frames[0].bytes).unwrap_or(0);
                self.abort(c, dport, now);
                Some(if c.answered || c.finished {
                    Outcome::Answered
                } else if c.script.frame_mutated {
                    Outcome::Quiet
                } else {
                    Outcome::Hung
                })
            }
        }
    }

    /// Resets what the server may hold of `c`'s connection: at the number
    /// it last acknowledged, and at the ends of what was sent (one of them
    /// is exact, or draws a challenge ACK); then lingers for those.
    fn abort(&mut self, c: &Conn, dport: u16, now: Instant) {
        let s = &c.script;
        let mut seqs = vec![s.isn.wrapping_add(1), s.end_seq.wrapping_sub(1), s.end_seq];
        if let Some(a) = c.server_ack {
            seqs.insert(0, a);
        }
        seqs.dedup();
        for seq in seqs {
            self.control(c.script.sport, dport, seq, 0, RST);
        }
        self.lingering.insert(
            s.sport,
            Linger {
                dport,
                until: now + LINGER,
                tries: 0,
            },
        );
    }

    /// A frame for a connection the fuzzer reset.
    fn linger(&mut self, port: u16, parsed: FromGuest) {
        let FromGuest::Tcp { ack, flags, .. } = parsed else {
            return;
        };
        let Some(l) = self.lingering.get_mut(&port) else {
            return;
        };
        if flags & (SYN | RST) == 0 && flags & ACK != 0 && l.tries < 4 {
            l.tries += 1;
            let dport = l.dport;
            self.control(port, dport, ack, 0, RST);
        }
    }

    /// Drops every connection (the server is gone), returning their records.
    pub fn abandon(&mut self) -> Vec<Record> {
        self.conns.drain().map(|(_, c)| c.record).collect()
    }
}
