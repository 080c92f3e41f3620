//! TCP between two stacks over an in-memory cable, on a simulated clock.
//!
//! Every expectation here is Linux's behaviour, checked against a real kernel
//! (6.x) where it was not obvious; comments say which.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use common::*;
use netstack::link::Impairments;
use netstack::{
    Domain, Duration, Instant, NetError, Protocol, Readiness, Shutdown, SockOpt, SockOptName,
    SocketId, Stack, StackConfig,
};
use sha2::{Digest, Sha256};

// ---- helpers ---------------------------------------------------------------

fn tcp4(st: &mut Stack) -> SocketId {
    st.socket(Domain::Ipv4, Protocol::Tcp).unwrap()
}

/// Starts `n` non-blocking connects from `a` to `to`.
fn start_connects(net: &mut Net, n: usize, to: SocketAddr) -> Vec<SocketId> {
    (0..n)
        .map(|_| {
            let c = tcp4(&mut net.a);
            assert_eq!(net.a.connect(c, to), Err(NetError::InProgress));
            c
        })
        .collect()
}

/// Steps until `b`'s listener `l` accepted a connection and `a`'s connecting
/// socket `c` is writable; returns what `accept` returned.
fn accept_when_writable(net: &mut Net, l: SocketId, c: SocketId) -> (SocketId, SocketAddr) {
    let mut accepted = None;
    net.run_until(Duration::from_secs(5), |n| {
        if accepted.is_none() {
            accepted = n.b.accept(l).ok();
        }
        accepted.is_some() && n.a.readiness(c).unwrap().writable
    });
    accepted.unwrap()
}

/// Everything readable now, without waiting: (data, saw end of file).
fn drain(st: &mut Stack, id: SocketId) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let eof = read_ready(st, id, &mut [0u8; 4096], |d| out.extend_from_slice(d));
    (out, eof)
}

/// Checks a socket whose peer sent `last` and then reset the connection: it
/// reads `last`, then ECONNRESET (once), then end of file; sending gets EPIPE.
fn assert_reset_after(st: &mut Stack, id: SocketId, last: &[u8]) {
    let mut buf = [0u8; 64];
    assert_eq!(st.recv(id, &mut buf, NONE), Ok(last.len()));
    assert_eq!(&buf[..last.len()], last);
    assert_eq!(st.recv(id, &mut buf, NONE), Err(NetError::ConnectionReset));
    assert_eq!(st.recv(id, &mut buf, NONE), Ok(0));
    assert_eq!(st.send(id, b"x"), Err(NetError::BrokenPipe));
}

/// Steps the network until `len` bytes have been read from `id` on the chosen side.
fn recv_exact(net: &mut Net, side: Side<Net>, id: SocketId, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    net.run_until(Duration::from_secs(30), |n| {
        let (data, eof) = drain(side(n), id);
        got.extend_from_slice(&data);
        assert!(
            !eof || got.len() >= len,
            "end of file after {} of {len} bytes",
            got.len()
        );
        got.len() >= len
    });
    assert_eq!(got.len(), len, "more data than expected");
    got
}

/// Sends all of `data` on the chosen side, stepping the network while the buffer is full.
fn send_all(net: &mut Net, side: Side<Net>, id: SocketId, data: &[u8]) {
    let mut off = 0;
    net.run_until(Duration::from_secs(30), |n| {
        while off < data.len() {
            match side(n).send(id, &data[off..]) {
                Ok(k) => off += k,
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("send failed with {e:?}"),
            }
        }
        off == data.len()
    });
}

/// Steps until the socket has a pending error, and returns the readiness seen then.
fn wait_error(net: &mut Net, side: Side<Net>, id: SocketId) -> Readiness {
    let mut r = Readiness::default();
    net.run_until(Duration::from_secs(300), |n| {
        r = side(n).readiness(id).unwrap();
        r.error
    });
    r
}

/// What Linux's poll reports for a socket that failed or was reset:
/// POLLIN | POLLOUT | POLLERR | POLLHUP | POLLRDHUP (0x201d).
const FAILED: Readiness = Readiness {
    readable: true,
    writable: true,
    read_hangup: true,
    hangup: true,
    error: true,
};

/// A deterministic, non-repeating byte stream: byte `i` of the stream is
/// byte `i % 8` of a 64-bit mix of `i / 8`. `offset` must be a multiple of 8.
fn pattern(buf: &mut [u8], offset: u64) {
    debug_assert_eq!(offset % 8, 0);
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let mut z = (offset / 8 + i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

struct Transfer {
    bytes: usize,
    simulated: Duration,
    wall: std::time::Duration,
    steps: u64,
}

impl Transfer {
    fn print(&self, what: &str) {
        let sim = self.simulated.total_micros() as f64 / 1e6;
        println!(
            "{what}: {} MiB in {:.2} s simulated ({:.1} MiB/s), {:.2} s wall, {} steps",
            self.bytes >> 20,
            sim,
            self.bytes as f64 / sim / f64::from(1 << 20),
            self.wall.as_secs_f64(),
            self.steps
        );
    }
}

/// Streams `total` pattern bytes from `c` (on `a`) to `s` (on `b`), then
/// half-closes and checks that `b` read exactly the bytes sent, by SHA-256.
fn stream_and_verify(net: &mut Net, c: SocketId, s: SocketId, total: usize) -> Transfer {
    const CHUNK: usize = 256 << 10;
    let wall = std::time::Instant::now();
    let start = net.now;
    let deadline = start + Duration::from_secs(3600);
    let mut chunk = vec![0u8; CHUNK];
    let (mut off, mut len) = (0, 0);
    let mut generated = 0usize;
    let mut rbuf = vec![0u8; CHUNK];
    let mut received = 0usize;
    let mut tx = Sha256::new();
    let mut rx = Sha256::new();
    let mut shut = false;
    let mut steps = 0;
    loop {
        loop {
            if off == len {
                if generated == total {
                    break;
                }
                len = CHUNK.min(total - generated);
                off = 0;
                pattern(&mut chunk[..len], generated as u64);
                tx.update(&chunk[..len]);
                generated += len;
            }
            match net.a.send(c, &chunk[off..len]) {
                Ok(n) => off += n,
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("send failed with {e:?} after {generated} bytes generated"),
            }
        }
        if generated == total && off == len && !shut {
            net.a.shutdown(c, Shutdown::Write).unwrap();
            shut = true;
        }
        let eof = read_ready(&mut net.b, s, &mut rbuf, |d| {
            rx.update(d);
            received += d.len();
        });
        if eof {
            break;
        }
        assert!(
            net.now < deadline,
            "transfer stalled: {received} of {total} bytes received"
        );
        net.step(Duration::from_millis(100));
        steps += 1;
    }
    assert_eq!(received, total, "end of file before all data arrived");
    assert_eq!(
        tx.finalize(),
        rx.finalize(),
        "received bytes differ from sent"
    );
    Transfer {
        bytes: total,
        simulated: net.now - start,
        wall: wall.elapsed(),
        steps,
    }
}

/// Connects `a` to a new listener on `b` at 10.0.0.2:5001 and runs
/// [`stream_and_verify`] over the connection.
fn connect_and_stream(net: &mut Net, total: usize) -> Transfer {
    let l = listen_on(&mut net.b, sa(B4, 5001), 8);
    let (c, s) = connect_pair(net, l, sa(B4, 5001));
    stream_and_verify(net, c, s, total)
}

/// The TCP header fields of an Ethernet frame carrying IPv4.
struct Segment {
    seq: u32,
    len: usize,
}

fn tcp4_segment(f: &[u8]) -> Option<Segment> {
    if f.get(12..14)? != [0x08, 0x00] || *f.get(23)? != 6 {
        return None;
    }
    let ip = f.get(14..)?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let tcp = ip.get(ihl..)?;
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    Some(Segment {
        seq,
        len: total.checked_sub(ihl + doff)?,
    })
}

// ---- connection set-up and addresses ----------------------------------------

#[test]
fn handshake_and_echo() {
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(B4, 80), 16);
    let (c, s) = connect_pair(&mut net, l, sa(B4, 80));
    assert_eq!(net.a.peer_addr(c).unwrap(), sa(B4, 80));
    assert_eq!(net.b.local_addr(s).unwrap(), sa(B4, 80));
    assert_eq!(net.b.peer_addr(s).unwrap(), net.a.local_addr(c).unwrap());
    deliver(&mut net, side_a, c, side_b, s, b"hello");
    let mut buf = [0u8; 16];
    assert_eq!(net.b.recv(s, &mut buf, NONE), Err(NetError::WouldBlock));
}

#[test]
fn getsockname_getpeername_values() {
    let mut net = Net::new();
    // Unbound: the wildcard with port 0; no peer.
    let l = tcp4(&mut net.b);
    assert_eq!(net.b.local_addr(l).unwrap(), sa(Ipv4Addr::UNSPECIFIED, 0));
    assert_eq!(net.b.peer_addr(l), Err(NetError::NotConnected));
    // A listener on the wildcard reports the wildcard; it has no peer.
    net.b.bind(l, sa(Ipv4Addr::UNSPECIFIED, 7000)).unwrap();
    assert_eq!(
        net.b.local_addr(l).unwrap(),
        sa(Ipv4Addr::UNSPECIFIED, 7000)
    );
    net.b.listen(l, 8).unwrap();
    assert_eq!(net.b.peer_addr(l), Err(NetError::NotConnected));

    // A connecting socket already has its local address (ephemeral port from
    // the configured range) but no peer yet (Linux: ENOTCONN in SYN_SENT).
    let c = tcp4(&mut net.a);
    assert_eq!(net.a.connect(c, sa(B4, 7000)), Err(NetError::InProgress));
    let local = net.a.local_addr(c).unwrap();
    assert_eq!(local.ip(), IpAddr::V4(A4));
    let (lo, hi) = StackConfig::default().ephemeral_ports;
    assert!((lo..=hi).contains(&local.port()), "port {local}");
    assert_eq!(net.a.peer_addr(c), Err(NetError::NotConnected));

    let (s, from) = accept_when_writable(&mut net, l, c);
    // accept's address, getpeername on the server and getsockname on the client agree.
    assert_eq!(from, local);
    assert_eq!(net.b.peer_addr(s).unwrap(), local);
    assert_eq!(net.a.local_addr(c).unwrap(), local);
    // The accepted socket is bound to the concrete address the SYN was sent to.
    assert_eq!(net.b.local_addr(s).unwrap(), sa(B4, 7000));
    assert_eq!(net.a.peer_addr(c).unwrap(), sa(B4, 7000));
    // The listener is unchanged.
    assert_eq!(
        net.b.local_addr(l).unwrap(),
        sa(Ipv4Addr::UNSPECIFIED, 7000)
    );

    // The same over IPv6.
    let l6 = listen_on(&mut net.b, sa(B6, 7001), 8);
    let c6 = net.a.socket(Domain::Ipv6, Protocol::Tcp).unwrap();
    assert_eq!(net.a.connect(c6, sa(B6, 7001)), Err(NetError::InProgress));
    let local6 = net.a.local_addr(c6).unwrap();
    assert_eq!(local6.ip(), IpAddr::V6(A6));
    let (s6, from6) = accept_when_writable(&mut net, l6, c6);
    assert_eq!(from6, local6);
    assert_eq!(net.b.local_addr(s6).unwrap(), sa(B6, 7001));
    assert_eq!(net.a.peer_addr(c6).unwrap(), sa(B6, 7001));
}

#[test]
fn nonblocking_connect_readiness() {
    // 10 ms each way, so the handshake visibly takes time.
    let mut net = Net::with(
        1500,
        Duration::from_millis(10),
        Impairments::default(),
        StackConfig::default(),
    );
    let l = listen_on(&mut net.b, sa(B4, 80), 8);
    let c = tcp4(&mut net.a);
    assert_eq!(net.a.connect(c, sa(B4, 80)), Err(NetError::InProgress));
    net.poll();
    // SYN_SENT: poll reports nothing at all (Linux).
    assert_eq!(net.a.readiness(c).unwrap(), Readiness::default());
    assert_eq!(net.a.connect(c, sa(B4, 80)), Err(NetError::Already));
    assert_eq!(net.a.send(c, b"x"), Err(NetError::WouldBlock));
    assert_eq!(net.a.take_error(c).unwrap(), None);
    net.run_for(Duration::from_millis(5));
    assert!(!net.a.readiness(c).unwrap().writable);

    net.run_until(Duration::from_secs(5), |n| {
        n.a.readiness(c).unwrap().writable
    });
    assert!(net.now - Instant::from_secs(1) >= Duration::from_millis(20));
    assert_eq!(
        net.a.readiness(c).unwrap(),
        Readiness {
            writable: true,
            ..Readiness::default()
        }
    );
    // The connect that completed in the background reports success once.
    assert_eq!(net.a.connect(c, sa(B4, 80)), Ok(()));
    assert_eq!(net.a.connect(c, sa(B4, 80)), Err(NetError::IsConnected));
    assert_eq!(net.a.connect(c, sa(B4, 80)), Err(NetError::IsConnected));
    assert_eq!(net.a.take_error(c).unwrap(), None);

    // The listener becomes readable with the pending connection.
    net.run_until(Duration::from_secs(1), |n| {
        n.b.readiness(l).unwrap().readable
    });
    let (s, _) = net.b.accept(l).unwrap();
    assert!(!net.b.readiness(l).unwrap().readable);
    assert_eq!(net.b.accept(l), Err(NetError::WouldBlock));
    assert_eq!(net.a.send(c, b"ping").unwrap(), 4);
    assert_eq!(recv_exact(&mut net, side_b, s, 4), b"ping");
}

// ---- bulk data -----------------------------------------------------------------

const HUNDRED_MIB: usize = 100 << 20;

#[test]
fn bulk_100mib_hash_matches() {
    let mut net = Net::new();
    let t = connect_and_stream(&mut net, HUNDRED_MIB);
    t.print("bulk, clean link");
}

#[test]
fn bulk_100mib_hash_matches_with_loss_and_reordering() {
    let mut net = Net::lossy();
    let t = connect_and_stream(&mut net, HUNDRED_MIB);
    t.print("bulk, 1% loss + 1% reordering");
}

// ---- backlog -------------------------------------------------------------------

#[test]
fn backlog_64_concurrent_connects_all_accepted() {
    const N: usize = 64;
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(B4, 80), N as i32);
    let clients = start_connects(&mut net, N, sa(B4, 80));
    let mut accepted: Vec<(SocketId, SocketAddr)> = Vec::new();
    net.run_until(Duration::from_secs(10), |n| {
        while let Ok(x) = n.b.accept(l) {
            accepted.push(x);
        }
        accepted.len() == N && clients.iter().all(|&c| n.a.readiness(c).unwrap().writable)
    });
    assert_eq!(net.b.accept(l), Err(NetError::WouldBlock));
    for &c in &clients {
        assert_eq!(net.a.take_error(c).unwrap(), None);
        assert_eq!(net.a.connect(c, sa(B4, 80)), Ok(()));
    }
    // Each accepted socket belongs to exactly one client.
    let by_addr: HashMap<SocketAddr, SocketId> = accepted.iter().map(|&(s, a)| (a, s)).collect();
    assert_eq!(by_addr.len(), N);
    // Every client sends a distinct message; its server socket answers with another.
    for (i, &c) in clients.iter().enumerate() {
        let msg = format!("client {i:03} says hi");
        assert_eq!(net.a.send(c, msg.as_bytes()).unwrap(), msg.len());
    }
    for (i, &c) in clients.iter().enumerate() {
        let s = by_addr[&net.a.local_addr(c).unwrap()];
        let msg = format!("client {i:03} says hi");
        assert_eq!(recv_exact(&mut net, side_b, s, msg.len()), msg.as_bytes());
        let reply = format!("server greets client {i:03}");
        assert_eq!(net.b.send(s, reply.as_bytes()).unwrap(), reply.len());
    }
    for (i, &c) in clients.iter().enumerate() {
        let reply = format!("server greets client {i:03}");
        assert_eq!(
            recv_exact(&mut net, side_a, c, reply.len()),
            reply.as_bytes()
        );
    }
}

/// Linux (checked on 6.18, `tcp_syncookies=0`, which is what a stack without
/// SYN cookies must match): with `listen(fd, 2)` the accept queue holds
/// backlog + 1 = 3 connections, and the request queue takes at most as many
/// SYNs (`inet_csk_reqsk_queue_is_full`: qlen > backlog). Other SYNs are
/// dropped silently: those clients stay in SYN_SENT, never see an error, and
/// get in by SYN retransmission once `accept` makes room.
#[test]
fn backlog_overflow_drops_syn_not_rst() {
    const N: usize = 10;
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(B4, 80), 2);
    let clients = start_connects(&mut net, N, sa(B4, 80));
    let count = |n: &mut Net| {
        let mut connected = 0;
        let mut connecting = 0;
        for &c in &clients {
            let r = n.a.readiness(c).unwrap();
            assert!(!r.error, "client failed: {:?}", n.a.take_error(c));
            if r.writable {
                connected += 1;
            } else {
                assert_eq!(r, Readiness::default());
                connecting += 1;
            }
        }
        (connected, connecting)
    };
    // Check often, for 10 s of simulated time (several SYN retransmissions), without accepting.
    let end = net.now + Duration::from_secs(10);
    while net.now < end {
        net.step(Duration::from_millis(50));
        let (connected, _) = count(&mut net);
        assert!(
            connected <= 3,
            "{connected} clients connected, queue holds 3"
        );
    }
    let (connected, connecting) = count(&mut net);
    assert!(net.b.readiness(l).unwrap().readable);
    assert_eq!(
        (connected, connecting),
        (3, N - 3),
        "(connected, still connecting) clients"
    );
    // The clients still connecting are in SYN_SENT: connect says EALREADY.
    for &c in &clients {
        if !net.a.readiness(c).unwrap().writable {
            assert_eq!(net.a.connect(c, sa(B4, 80)), Err(NetError::Already));
        }
    }
    // The queue holds exactly backlog + 1 connections.
    let mut accepted = Vec::new();
    while let Ok((s, _)) = net.b.accept(l) {
        accepted.push(s);
    }
    assert_eq!(accepted.len(), 3, "connections waiting in the accept queue");

    // Accepting as connections arrive lets every client in.
    net.run_until(Duration::from_secs(100), |n| {
        while let Ok((s, _)) = n.b.accept(l) {
            accepted.push(s);
        }
        count(n).0 == N && accepted.len() == N
    });
    for &c in &clients {
        assert_eq!(net.a.take_error(c).unwrap(), None);
    }
    // And each accepted socket is a working connection to a distinct client.
    for (i, &c) in clients.iter().enumerate() {
        let msg = format!("client {i}");
        send_all(&mut net, side_a, c, msg.as_bytes());
    }
    net.run_for(Duration::from_millis(10));
    let mut seen = HashSet::new();
    for &s in &accepted {
        let (data, eof) = drain(&mut net.b, s);
        assert!(!eof);
        let text = String::from_utf8(data).unwrap();
        assert!(text.starts_with("client "), "{text:?}");
        assert!(seen.insert(text), "two connections got the same client");
    }
    assert_eq!(seen.len(), N);
}

#[test]
fn close_listener_resets_unaccepted_connections() {
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(B4, 80), 8);
    let clients = start_connects(&mut net, 3, sa(B4, 80));
    net.run_until(Duration::from_secs(5), |n| {
        clients.iter().all(|&c| n.a.readiness(c).unwrap().writable)
    });
    // One client has even sent data that nobody will read.
    assert_eq!(net.a.send(clients[0], b"never read").unwrap(), 10);
    net.run_for(Duration::from_millis(10));
    net.b.close(l).unwrap();
    for &c in &clients {
        assert_eq!(wait_error(&mut net, side_a, c), FAILED);
        let mut buf = [0u8; 16];
        assert_eq!(
            net.a.recv(c, &mut buf, NONE),
            Err(NetError::ConnectionReset)
        );
        assert_eq!(net.a.send(c, b"x"), Err(NetError::BrokenPipe));
    }
    // The port is closed now: a new connection is refused.
    let c = tcp4(&mut net.a);
    assert_eq!(net.a.connect(c, sa(B4, 80)), Err(NetError::InProgress));
    wait_error(&mut net, side_a, c);
    assert_eq!(
        net.a.take_error(c).unwrap(),
        Some(NetError::ConnectionRefused)
    );
}

// ---- refusal and timeouts ------------------------------------------------------

#[test]
fn rst_on_closed_port() {
    for to in [sa(B4, 81), sa(B6, 81)] {
        let mut net = Net::new();
        let domain = domain_of(to);
        // Reported by connect.
        let c = net.a.socket(domain, Protocol::Tcp).unwrap();
        let start = net.now;
        assert_eq!(net.a.connect(c, to), Err(NetError::InProgress));
        let r = wait_error(&mut net, side_a, c);
        // An RST answers at once: no retransmission, no timeout.
        assert!(net.now - start < Duration::from_secs(1));
        // Linux: POLLIN | POLLOUT | POLLERR | POLLHUP | POLLRDHUP.
        assert_eq!(r, FAILED);
        assert_eq!(net.a.connect(c, to), Err(NetError::ConnectionRefused));
        // Reported once.
        assert_eq!(net.a.take_error(c).unwrap(), None);
        assert!(!net.a.readiness(c).unwrap().error);

        // Reported by SO_ERROR.
        let c2 = net.a.socket(domain, Protocol::Tcp).unwrap();
        assert_eq!(net.a.connect(c2, to), Err(NetError::InProgress));
        assert_eq!(wait_error(&mut net, side_a, c2), FAILED);
        assert_eq!(
            net.a.take_error(c2).unwrap(),
            Some(NetError::ConnectionRefused)
        );
        assert_eq!(net.a.take_error(c2).unwrap(), None);
        assert_eq!(net.a.peer_addr(c2), Err(NetError::NotConnected));
        assert_eq!(net.a.send(c2, b"x"), Err(NetError::BrokenPipe));

        // Reported by recv, when it comes first.
        let c3 = net.a.socket(domain, Protocol::Tcp).unwrap();
        assert_eq!(net.a.connect(c3, to), Err(NetError::InProgress));
        wait_error(&mut net, side_a, c3);
        let mut buf = [0u8; 4];
        assert_eq!(
            net.a.recv(c3, &mut buf, NONE),
            Err(NetError::ConnectionRefused)
        );
        // Once the error is reported, the dead socket reads end of file
        // (Linux: tcp_done set RCV_SHUTDOWN), as `c2` does.
        assert_eq!(net.a.recv(c3, &mut buf, NONE), Ok(0));
        assert_eq!(net.a.recv(c2, &mut buf, NONE), Ok(0));
    }
}

/// Linux rate-limits address resolution per neighbour: resolving one
/// neighbour does not hold back the resolution of another. Here `a` needs
/// `b`'s IPv4 address (ARP) and its IPv6 address (NDP) at the same time.
#[test]
fn resolving_a_second_neighbor_is_not_delayed() {
    let mut net = Net::new();
    let l4 = listen_on(&mut net.b, sa(B4, 80), 8);
    let l6 = listen_on(&mut net.b, sa(B6, 80), 8);
    let c4 = tcp4(&mut net.a);
    let c6 = net.a.socket(Domain::Ipv6, Protocol::Tcp).unwrap();
    let start = net.now;
    assert_eq!(net.a.connect(c4, sa(B4, 80)), Err(NetError::InProgress));
    assert_eq!(net.a.connect(c6, sa(B6, 80)), Err(NetError::InProgress));
    let mut took = [None, None];
    net.run_until(Duration::from_secs(10), |n| {
        for (i, c) in [c4, c6].into_iter().enumerate() {
            if took[i].is_none() && n.a.readiness(c).unwrap().writable {
                took[i] = Some(n.now - start);
            }
        }
        took.iter().all(Option::is_some)
    });
    net.run_for(Duration::from_millis(1));
    assert!(net.b.accept(l4).is_ok());
    assert!(net.b.accept(l6).is_ok());
    for (what, t) in ["IPv4", "IPv6"].into_iter().zip(took) {
        let t = t.unwrap();
        assert!(
            t < Duration::from_millis(100),
            "{what} handshake took {t} (one-way delay 50 us)"
        );
    }
}

/// Linux: a connect to an address on the local subnet that nobody owns fails
/// when address resolution gives up (3 ARP probes, 1 s apart) with
/// EHOSTUNREACH, after about 3 s, not after the SYN retries (checked on 6.18
/// over a veth pair: `EHOSTUNREACH` after 3.1 s, poll 0x201d). A cable that
/// loses every frame looks the same to the sender: ARP never resolves.
#[test]
fn connect_unreachable_host_gives_host_unreachable() {
    let total_loss = Impairments {
        loss_ppm: 1_000_000,
        ..Impairments::default()
    };
    let nets = [
        (
            "absent host",
            Net::new(),
            sa(Ipv4Addr::new(10, 0, 0, 99), 80),
        ),
        ("total loss", Net::impaired(total_loss), sa(B4, 80)),
    ];
    for (what, mut net, to) in nets {
        let c = tcp4(&mut net.a);
        let start = net.now;
        assert_eq!(net.a.connect(c, to), Err(NetError::InProgress), "{what}");
        let r = wait_error(&mut net, side_a, c);
        let took = net.now - start;
        let err = net.a.take_error(c).unwrap();
        assert_eq!(r, FAILED, "{what}");
        assert_eq!(err, Some(NetError::HostUnreachable), "{what}, after {took}");
        assert!(
            took < Duration::from_secs(10),
            "{what}: failed after {took}"
        );
    }
}

/// A host that is there (it answers ARP) but drops every TCP segment: the
/// SYN is retransmitted until the connect timeout (Linux: 6 retries, 127 s),
/// then connect fails with ETIMEDOUT.
#[test]
fn connect_timeout_when_peer_drops_everything() {
    let cfg = StackConfig::default();
    let timeout = cfg.connect_timeout;
    let mut net = Net::with_filters(
        1500,
        Duration::from_micros(50),
        &cfg,
        None,
        Some(Box::new(|_, f: &[u8]| !is_tcp_frame(f))),
    );
    // b answers nothing: no listener needed, even its RSTs are dropped.
    let c = tcp4(&mut net.a);
    let start = net.now;
    assert_eq!(net.a.connect(c, sa(B4, 80)), Err(NetError::InProgress));
    // Still trying, silently, until just before the timeout.
    while net.now - start < timeout - Duration::from_secs(1) {
        net.step(Duration::from_millis(500));
        assert_eq!(net.a.readiness(c).unwrap(), Readiness::default());
    }
    assert_eq!(net.a.connect(c, sa(B4, 80)), Err(NetError::Already));
    let r = wait_error(&mut net, side_a, c);
    let took = net.now - start;
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "failed after {took}"
    );
    assert_eq!(r, FAILED);
    assert_eq!(net.a.connect(c, sa(B4, 80)), Err(NetError::TimedOut));
    assert_eq!(net.a.take_error(c).unwrap(), None);
}

// ---- closing -------------------------------------------------------------------

#[test]
fn half_close_both_ways() {
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(B4, 80), 8);
    let (c, s) = connect_pair(&mut net, l, sa(B4, 80));
    assert_eq!(net.a.send(c, b"request").unwrap(), 7);
    net.a.shutdown(c, Shutdown::Write).unwrap();
    assert_eq!(net.a.send(c, b"more"), Err(NetError::BrokenPipe));
    net.run_for(Duration::from_millis(10));
    // Linux, with the data and the FIN queued: POLLIN | POLLOUT | POLLRDHUP (0x2005).
    let b_with_fin_queued = net.b.readiness(s).unwrap();
    // The side that shut down writing: POLLOUT only (0x4).
    assert_eq!(
        net.a.readiness(c).unwrap(),
        Readiness {
            writable: true,
            ..Readiness::default()
        }
    );
    // B reads the data, then end of file, and stays at end of file.
    let mut buf = [0u8; 64];
    assert_eq!(net.b.recv(s, &mut buf, NONE), Ok(7));
    assert_eq!(&buf[..7], b"request");
    assert_eq!(net.b.recv(s, &mut buf, NONE), Ok(0));
    assert_eq!(net.b.recv(s, &mut buf, NONE), Ok(0));
    assert_eq!(
        net.b.readiness(s).unwrap(),
        Readiness {
            readable: true,
            writable: true,
            read_hangup: true,
            ..Readiness::default()
        }
    );
    // B can still send, as much as it likes, and A still receives.
    let reply: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    send_all(&mut net, side_b, s, &reply);
    assert_eq!(recv_exact(&mut net, side_a, c, reply.len()), reply);
    assert_eq!(net.a.recv(c, &mut buf, NONE), Err(NetError::WouldBlock));
    // Then B shuts down writing: A sees end of file.
    net.b.shutdown(s, Shutdown::Write).unwrap();
    assert_eq!(net.b.send(s, b"late"), Err(NetError::BrokenPipe));
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.a.recv(c, &mut buf, NONE), Ok(0));
    assert_eq!(net.a.send(c, b"late"), Err(NetError::BrokenPipe));
    // Both directions closed: POLLIN | POLLOUT | POLLHUP | POLLRDHUP (0x2015), on both sides.
    let closed = Readiness {
        readable: true,
        writable: true,
        read_hangup: true,
        hangup: true,
        error: false,
    };
    assert_eq!(net.a.readiness(c).unwrap(), closed);
    assert_eq!(net.b.readiness(s).unwrap(), closed);
    assert_eq!(net.a.take_error(c).unwrap(), None);
    assert_eq!(net.b.take_error(s).unwrap(), None);
    assert_eq!(
        b_with_fin_queued,
        Readiness {
            readable: true,
            writable: true,
            read_hangup: true,
            ..Readiness::default()
        },
        "readiness with data and FIN received but unread (Linux reports POLLRDHUP)"
    );
}

/// Linux: SO_LINGER {on, 0} makes close send RST instead of FIN. The peer
/// still reads the data that arrived before the RST, then gets ECONNRESET
/// (once), then end of file; sending gets EPIPE.
#[test]
fn linger_zero_sends_rst() {
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(B4, 80), 8);
    let (c, s) = connect_pair(&mut net, l, sa(B4, 80));
    assert_eq!(net.a.send(c, b"last words").unwrap(), 10);
    net.run_for(Duration::from_millis(10));
    net.a.set_option(c, SockOpt::Linger(Some(0))).unwrap();
    assert_eq!(
        net.a.option(c, SockOptName::Linger).unwrap(),
        SockOpt::Linger(Some(0))
    );
    net.a.close(c).unwrap();
    let r = wait_error(&mut net, side_b, s);
    assert_reset_after(&mut net.b, s, b"last words");
    // The closed socket is gone from the caller's view.
    assert_eq!(net.a.readiness(c), Err(NetError::BadHandle));
    // Linux: POLLRDHUP too, although received data is still unread (0x201d).
    assert_eq!(r, FAILED, "readiness once the RST arrived");
}

/// Linux (RFC 2525): closing with unread received data sends RST, and the
/// peer gets ECONNRESET after reading what it had already received.
#[test]
fn close_with_unread_data_sends_rst() {
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(B4, 80), 8);
    let (c, s) = connect_pair(&mut net, l, sa(B4, 80));
    assert_eq!(net.a.send(c, b"unread").unwrap(), 6);
    assert_eq!(net.b.send(s, b"to-a").unwrap(), 4);
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.b.recv_queue(s).unwrap(), 6);
    net.b.close(s).unwrap();
    let r = wait_error(&mut net, side_a, c);
    assert_reset_after(&mut net.a, c, b"to-a");

    // Without unread data, close is graceful: the peer sees end of file, no error.
    let (c, s) = connect_pair(&mut net, l, sa(B4, 80));
    assert_eq!(net.a.send(c, b"read").unwrap(), 4);
    assert_eq!(recv_exact(&mut net, side_b, s, 4), b"read");
    net.b.close(s).unwrap();
    net.run_for(Duration::from_millis(10));
    let mut buf = [0u8; 64];
    assert_eq!(net.a.recv(c, &mut buf, NONE), Ok(0));
    assert_eq!(net.a.take_error(c).unwrap(), None);
    // Linux: POLLRDHUP too, although received data is still unread (0x201d).
    assert_eq!(r, FAILED, "readiness once the RST arrived");
}

#[test]
fn time_wait_then_rebind_with_reuseaddr() {
    let mut net = Net::new();
    let addr = sa(B4, 8080);
    let l = tcp4(&mut net.b);
    net.b.set_option(l, SockOpt::ReuseAddr(true)).unwrap();
    net.b.bind(l, addr).unwrap();
    net.b.listen(l, 8).unwrap();
    let (c, s) = connect_pair(&mut net, l, addr);
    // The server closes first (active close), so its side ends in TIME_WAIT.
    net.b.close(s).unwrap();
    net.run_until(Duration::from_secs(1), |n| {
        let mut buf = [0u8; 8];
        n.a.recv(c, &mut buf, NONE) == Ok(0)
    });
    net.a.close(c).unwrap();
    net.run_for(Duration::from_millis(100));
    net.b.close(l).unwrap();
    // Only the TIME_WAIT connection is left on b.
    assert_eq!(net.b.socket_count(), 1);

    let plain = tcp4(&mut net.b);
    assert_eq!(net.b.bind(plain, addr), Err(NetError::AddrInUse));
    assert_eq!(
        net.b.bind(plain, sa(Ipv4Addr::UNSPECIFIED, 8080)),
        Err(NetError::AddrInUse)
    );
    net.b.close(plain).unwrap();

    let again = tcp4(&mut net.b);
    net.b.set_option(again, SockOpt::ReuseAddr(true)).unwrap();
    assert_eq!(net.b.bind(again, addr), Ok(()));
    assert_eq!(net.b.listen(again, 8), Ok(()));
    let (c2, s2) = connect_pair(&mut net, again, addr);
    assert_eq!(net.a.send(c2, b"new life").unwrap(), 8);
    assert_eq!(recv_exact(&mut net, side_b, s2, 8), b"new life");
}

// ---- binding -------------------------------------------------------------------

#[test]
fn bind_same_addr_port_is_addr_in_use() {
    let mut st = Stack::new(StackConfig::default(), Instant::from_secs(1));
    let lo = |port| sa(Ipv4Addr::LOCALHOST, port);
    let s1 = tcp4(&mut st);
    let s2 = tcp4(&mut st);
    st.bind(s1, lo(6000)).unwrap();
    assert_eq!(st.bind(s2, lo(6000)), Err(NetError::AddrInUse));
    // A wildcard binding overlaps every address of its port.
    assert_eq!(
        st.bind(s2, sa(Ipv4Addr::UNSPECIFIED, 6000)),
        Err(NetError::AddrInUse)
    );
    // The failed binds left s2 unbound: it can bind elsewhere.
    assert_eq!(st.bind(s2, lo(6001)), Ok(()));

    // SO_REUSEADDR on both lets two sockets bind, but only one may listen (Linux).
    let r1 = tcp4(&mut st);
    let r2 = tcp4(&mut st);
    for r in [r1, r2] {
        st.set_option(r, SockOpt::ReuseAddr(true)).unwrap();
        st.bind(r, lo(6100)).unwrap();
    }
    assert_eq!(st.listen(r1, 4), Ok(()));
    assert_eq!(st.listen(r2, 4), Err(NetError::AddrInUse));
    // And nobody binds to a listening port, SO_REUSEADDR or not.
    let r3 = tcp4(&mut st);
    st.set_option(r3, SockOpt::ReuseAddr(true)).unwrap();
    assert_eq!(st.bind(r3, lo(6100)), Err(NetError::AddrInUse));
}

#[test]
fn bind_twice_is_invalid_input() {
    let mut st = Stack::new(StackConfig::default(), Instant::from_secs(1));
    let s = tcp4(&mut st);
    st.bind(s, sa(Ipv4Addr::LOCALHOST, 6000)).unwrap();
    assert_eq!(
        st.bind(s, sa(Ipv4Addr::LOCALHOST, 6001)),
        Err(NetError::InvalidInput)
    );
    assert_eq!(
        st.bind(s, sa(Ipv4Addr::LOCALHOST, 6000)),
        Err(NetError::InvalidInput)
    );
    assert_eq!(st.local_addr(s).unwrap(), sa(Ipv4Addr::LOCALHOST, 6000));
}

#[test]
fn bind_foreign_address_is_addr_not_available() {
    let mut net = Net::new();
    let s = tcp4(&mut net.a);
    // Another host's address, an address nobody has, and one of another subnet.
    for ip in [
        B4,
        Ipv4Addr::new(10, 0, 0, 99),
        Ipv4Addr::new(192, 168, 1, 1),
    ] {
        assert_eq!(net.a.bind(s, sa(ip, 6000)), Err(NetError::AddrNotAvailable));
    }
    let s6 = net.a.socket(Domain::Ipv6, Protocol::Tcp).unwrap();
    assert_eq!(
        net.a.bind(s6, sa(B6, 6000)),
        Err(NetError::AddrNotAvailable)
    );
    // The stack's own addresses are fine.
    assert_eq!(net.a.bind(s, sa(A4, 6000)), Ok(()));
    assert_eq!(net.a.bind(s6, sa(A6, 6000)), Ok(()));
}

#[test]
fn reuseport_listeners_share_connections() {
    const N: usize = 64;
    let mut net = Net::new();
    let addr = sa(B4, 9000);
    let listeners: Vec<SocketId> = (0..2)
        .map(|_| {
            let l = tcp4(&mut net.b);
            net.b.set_option(l, SockOpt::ReusePort(true)).unwrap();
            assert_eq!(net.b.bind(l, addr), Ok(()));
            assert_eq!(net.b.listen(l, N as i32), Ok(()));
            l
        })
        .collect();
    // Every socket of the group needs SO_REUSEPORT.
    let outsider = tcp4(&mut net.b);
    assert_eq!(net.b.bind(outsider, addr), Err(NetError::AddrInUse));

    let clients = start_connects(&mut net, N, addr);
    let mut per_listener = [Vec::new(), Vec::new()];
    net.run_until(Duration::from_secs(10), |n| {
        for (i, &l) in listeners.iter().enumerate() {
            while let Ok((s, _)) = n.b.accept(l) {
                per_listener[i].push(s);
            }
        }
        per_listener[0].len() + per_listener[1].len() == N
    });
    assert!(
        !per_listener[0].is_empty() && !per_listener[1].is_empty(),
        "connections per listener: {} and {}",
        per_listener[0].len(),
        per_listener[1].len()
    );
    // The accepted sockets work.
    for &c in &clients {
        assert_eq!(net.a.send(c, b"spread").unwrap(), 6);
    }
    for &s in per_listener.iter().flatten() {
        assert_eq!(recv_exact(&mut net, side_b, s, 6), b"spread");
    }
}

// ---- options -------------------------------------------------------------------

#[test]
fn socket_options_round_trip() {
    let mut st = Stack::new(StackConfig::default(), Instant::from_secs(1));
    let s = tcp4(&mut st);
    let cases = [
        (
            SockOptName::KeepAlive,
            SockOpt::KeepAlive(false),
            SockOpt::KeepAlive(true),
        ),
        (
            SockOptName::NoDelay,
            SockOpt::NoDelay(false),
            SockOpt::NoDelay(true),
        ),
        (
            SockOptName::KeepIdle,
            SockOpt::KeepIdle(7200),
            SockOpt::KeepIdle(30),
        ),
        (
            SockOptName::KeepInterval,
            SockOpt::KeepInterval(75),
            SockOpt::KeepInterval(5),
        ),
        (
            SockOptName::KeepCount,
            SockOpt::KeepCount(9),
            SockOpt::KeepCount(3),
        ),
        (
            SockOptName::Linger,
            SockOpt::Linger(None),
            SockOpt::Linger(Some(7)),
        ),
        (
            SockOptName::ReuseAddr,
            SockOpt::ReuseAddr(false),
            SockOpt::ReuseAddr(true),
        ),
        (
            SockOptName::ReusePort,
            SockOpt::ReusePort(false),
            SockOpt::ReusePort(true),
        ),
    ];
    for (name, default, set) in cases {
        assert_eq!(st.option(s, name).unwrap(), default);
        st.set_option(s, set).unwrap();
        assert_eq!(st.option(s, name).unwrap(), set);
    }
    st.set_option(s, SockOpt::KeepAlive(false)).unwrap();
    assert_eq!(
        st.option(s, SockOptName::KeepAlive).unwrap(),
        SockOpt::KeepAlive(false)
    );
    st.set_option(s, SockOpt::NoDelay(false)).unwrap();
    assert_eq!(
        st.option(s, SockOptName::NoDelay).unwrap(),
        SockOpt::NoDelay(false)
    );
    // Out of range keepalive settings are EINVAL, as on Linux.
    assert_eq!(
        st.set_option(s, SockOpt::KeepIdle(0)),
        Err(NetError::InvalidInput)
    );
    assert_eq!(
        st.set_option(s, SockOpt::KeepCount(0)),
        Err(NetError::InvalidInput)
    );
    // Linux doubles SO_RCVBUF/SO_SNDBUF and reports the doubled value; tiny
    // values are raised to the minimum.
    st.set_option(s, SockOpt::RecvBuffer(4 << 20)).unwrap();
    assert_eq!(
        st.option(s, SockOptName::RecvBuffer).unwrap(),
        SockOpt::RecvBuffer(8 << 20)
    );
    st.set_option(s, SockOpt::SendBuffer(4 << 20)).unwrap();
    assert_eq!(
        st.option(s, SockOptName::SendBuffer).unwrap(),
        SockOpt::SendBuffer(8 << 20)
    );
    st.set_option(s, SockOpt::RecvBuffer(1)).unwrap();
    assert_eq!(
        st.option(s, SockOptName::RecvBuffer).unwrap(),
        SockOpt::RecvBuffer(netstack::MIN_BUFFER)
    );
    // TCP-level options do not exist on UDP sockets. Linux answers
    // setsockopt with ENOPROTOOPT but getsockopt with EOPNOTSUPP
    // (`ip_getsockopt`: the level is not SOL_IP), checked on 6.18.
    let u = st.socket(Domain::Ipv4, Protocol::Udp).unwrap();
    assert_eq!(
        st.set_option(u, SockOpt::NoDelay(true)),
        Err(NetError::NoProtocolOption)
    );
    assert_eq!(
        st.option(u, SockOptName::NoDelay),
        Err(NetError::NotSupported)
    );
}

/// With a 4 MiB SO_RCVBUF (8 MiB effective) on a 20 ms round trip, window
/// scaling lets far more than 64 KiB be in flight: a transfer runs much faster
/// than 64 KiB per round trip.
#[test]
fn large_rcvbuf_window_exceeds_64k() {
    const TOTAL: usize = 32 << 20;
    let delay = Duration::from_millis(10);
    let mut net = Net::with(1500, delay, Impairments::default(), StackConfig::default());
    let l = tcp4(&mut net.b);
    net.b.set_option(l, SockOpt::RecvBuffer(4 << 20)).unwrap();
    assert_eq!(
        net.b.option(l, SockOptName::RecvBuffer).unwrap(),
        SockOpt::RecvBuffer(8 << 20)
    );
    net.b.bind(l, sa(B4, 5001)).unwrap();
    net.b.listen(l, 8).unwrap();
    let c = tcp4(&mut net.a);
    net.a.set_option(c, SockOpt::SendBuffer(4 << 20)).unwrap();
    assert_eq!(net.a.connect(c, sa(B4, 5001)), Err(NetError::InProgress));
    let (s, _) = accept_when_writable(&mut net, l, c);
    // The accepted socket inherits the listener's buffer size.
    assert_eq!(
        net.b.option(s, SockOptName::RecvBuffer).unwrap(),
        SockOpt::RecvBuffer(8 << 20)
    );
    let t = stream_and_verify(&mut net, c, s, TOTAL);
    t.print("4 MiB SO_RCVBUF, 20 ms RTT");
    let rtt = 2.0 * delay.total_micros() as f64 / 1e6;
    let unscaled_limit = 65535.0 / rtt;
    let rate = TOTAL as f64 / (t.simulated.total_micros() as f64 / 1e6);
    // No 64 KiB window can do this: the window is scaled.
    assert!(
        rate > 2.0 * unscaled_limit,
        "{rate:.0} B/s, while a 64 KiB window allows {unscaled_limit:.0} B/s"
    );
    // And it is far above: Linux's slow start doubles the window every
    // round trip and reaches the 8 MiB receive window in about 10 of them, so
    // 32 MiB take well under 1 s (about 16 round trips).
    assert!(
        rate > 10.0 * unscaled_limit,
        "{rate:.0} B/s is only {:.1} times what a 64 KiB window allows",
        rate / unscaled_limit
    );
}

/// One segment lost in the middle of a full window: the segments after it
/// draw duplicate ACKs and the sender retransmits it after about a round trip
/// (fast retransmit), not after a retransmission timeout (Linux: 200 ms at
/// least; smoltcp: 1 s at least).
#[test]
fn single_loss_recovered_by_fast_retransmit() {
    #[derive(Default)]
    struct Watch {
        data_segments: u64,
        dropped: Option<(u32, Instant)>,
        retransmitted: Option<Instant>,
    }
    let watch = Arc::new(Mutex::new(Watch::default()));
    let w = Arc::clone(&watch);
    let filter: FrameFilter = Box::new(move |now, f: &[u8]| {
        let Some(seg) = tcp4_segment(f) else {
            return true;
        };
        if seg.len == 0 {
            return true;
        }
        let mut w = w.lock().unwrap();
        w.data_segments += 1;
        match w.dropped {
            None if w.data_segments == 2000 => {
                w.dropped = Some((seg.seq, now));
                return false;
            }
            Some((seq, _)) if seq == seg.seq && w.retransmitted.is_none() => {
                w.retransmitted = Some(now);
            }
            _ => {}
        }
        true
    });
    let mut net = Net::with_filters(
        1500,
        Duration::from_micros(50),
        &StackConfig::default(),
        Some(filter),
        None,
    );
    let t = connect_and_stream(&mut net, 8 << 20);
    t.print("one segment lost");
    let w = watch.lock().unwrap();
    let (_, lost_at) = w.dropped.expect("the transfer has 2000 segments");
    let again = w.retransmitted.expect("the lost segment was sent again") - lost_at;
    assert!(
        again < Duration::from_millis(200),
        "lost segment retransmitted {again} later (round trip: 100 us)"
    );
}

// ---- scale -----------------------------------------------------------------------

#[test]
fn ten_thousand_concurrent_connections() {
    const N: usize = 10_000;
    let wall = std::time::Instant::now();
    let mut net = Net::new();
    let start = net.now;
    let to = sa(B4, 80);
    let l = listen_on(&mut net.b, to, 4096);
    let request = |i: usize| format!("request {i:05}").into_bytes();
    let reply = |i: usize| format!("reply to {i:05}, {:08x}", i * 2_654_435_761 % (1 << 32));

    let clients = start_connects(&mut net, N, to);
    let index: HashMap<SocketId, usize> =
        clients.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    #[derive(Default, Clone)]
    struct Client {
        sent: bool,
        got: Vec<u8>,
        done: bool,
    }
    let mut cl = vec![Client::default(); N];
    // Accepted server sockets, with what they have read so far.
    let mut servers: HashMap<SocketId, Vec<u8>> = HashMap::new();
    let mut served = vec![false; N];
    let (mut n_served, mut n_done) = (0, 0);
    let mut events = Vec::new();
    let mut todo = Vec::new();
    let budget = net.now + Duration::from_secs(120);
    let req_len = request(0).len();
    while n_done < N {
        assert!(
            net.now < budget,
            "{n_served} served, {n_done} of {N} clients done"
        );
        net.step(Duration::from_millis(100));

        // Server side: accept everything, serve every socket with news.
        todo.clear();
        events.clear();
        net.b.drain_events(&mut events);
        todo.extend(events.iter().copied().filter(|&id| id != l));
        while let Ok((s, _)) = net.b.accept(l) {
            servers.insert(s, Vec::new());
            todo.push(s);
        }
        for &s in &todo {
            let Some(buf) = servers.get_mut(&s) else {
                continue;
            };
            let (data, eof) = drain(&mut net.b, s);
            buf.extend_from_slice(&data);
            assert!(!eof || buf.len() == req_len, "early end of file");
            if buf.len() < req_len {
                continue;
            }
            assert_eq!(buf.len(), req_len);
            let text = std::str::from_utf8(buf).unwrap();
            let i: usize = text["request ".len()..].parse().unwrap();
            assert_eq!(buf, &request(i));
            assert!(!served[i], "client {i} served twice");
            served[i] = true;
            n_served += 1;
            let r = reply(i);
            assert_eq!(net.b.send(s, r.as_bytes()).unwrap(), r.len());
            net.b.close(s).unwrap();
            servers.remove(&s);
        }

        // Client side: send the request once connected, read the reply and end of file.
        events.clear();
        net.a.drain_events(&mut events);
        for &c in &events {
            let Some(&i) = index.get(&c) else {
                continue;
            };
            let me = &mut cl[i];
            if me.done {
                continue;
            }
            let r = net.a.readiness(c).unwrap();
            assert!(!r.error, "client {i}: {:?}", net.a.take_error(c));
            if !me.sent {
                if !r.writable {
                    continue;
                }
                let q = request(i);
                assert_eq!(net.a.send(c, &q).unwrap(), q.len());
                me.sent = true;
            }
            let (data, eof) = drain(&mut net.a, c);
            me.got.extend_from_slice(&data);
            if eof {
                assert_eq!(me.got, reply(i).as_bytes(), "client {i}");
                me.done = true;
                n_done += 1;
                net.a.close(c).unwrap();
            }
        }
    }
    assert_eq!(n_served, N);
    assert!(served.iter().all(|&x| x));
    assert!(clients.iter().all(|c| index.contains_key(c)));
    println!(
        "{N} connections: {:.2} s simulated, {:.2} s wall",
        (net.now - start).total_micros() as f64 / 1e6,
        wall.elapsed().as_secs_f64()
    );
}

/// Linux: after `shutdown(SHUT_RD)` the data already queued, and data that
/// arrives later, can still be read; only an empty queue reads as end of file
/// (checked with python3 against the kernel).
#[test]
fn shutdown_read_still_delivers_queued_and_later_data() {
    let mut net = Net::new();
    let l = listen_on(&mut net.b, sa(B4, 7100), 4);
    let (c, s) = connect_pair(&mut net, l, sa(B4, 7100));
    assert_eq!(net.a.send(c, b"before").unwrap(), 6);
    net.run_until(Duration::from_secs(1), |n| n.b.recv_queue(s).unwrap() == 6);
    net.b.shutdown(s, Shutdown::Read).unwrap();
    let r = net.b.readiness(s).unwrap();
    assert!(r.readable && r.read_hangup, "{r:?}");
    assert_eq!(recv_exact(&mut net, side_b, s, 6), b"before");
    assert_eq!(net.a.send(c, b"after").unwrap(), 5);
    net.run_until(Duration::from_secs(1), |n| n.b.recv_queue(s).unwrap() == 5);
    assert_eq!(recv_exact(&mut net, side_b, s, 5), b"after");
    let mut buf = [0u8; 8];
    assert_eq!(
        net.b.recv(s, &mut buf, NONE),
        Ok(0),
        "empty queue after SHUT_RD is EOF"
    );
}

/// The same for two IPv6 neighbours at once (two addresses of `b`): both
/// neighbour solicitations go out at once, as Linux sends them.
#[test]
fn two_ipv6_neighbors_resolve_together() {
    let now = Instant::from_secs(1);
    let cfg = StackConfig::default();
    let (ea, eb) = netstack::link::pair(1500, Duration::from_micros(50), false);
    let a = netstack::testbed::host(1, Box::new(ea), &cfg, now);
    let b3: std::net::Ipv6Addr = "fd00::3".parse().unwrap();
    let mut nic_b = netstack::testbed::host_nic(2);
    nic_b.addrs.push(netstack::IfAddr {
        addr: b3.into(),
        prefix_len: 64,
    });
    let mut b = Stack::new(cfg, now);
    b.add_nic(Box::new(eb), nic_b).unwrap();
    let mut net = Net { a, b, now };
    let targets = [sa(B6, 80), sa(b3, 80)];
    let listeners: Vec<SocketId> = targets
        .iter()
        .map(|&t| listen_on(&mut net.b, t, 8))
        .collect();
    let clients: Vec<SocketId> = targets
        .iter()
        .map(|&t| {
            let c = net.a.socket(Domain::Ipv6, Protocol::Tcp).unwrap();
            assert_eq!(net.a.connect(c, t), Err(NetError::InProgress));
            c
        })
        .collect();
    let start = net.now;
    let mut took = [None, None];
    net.run_until(Duration::from_secs(10), |n| {
        for (i, &c) in clients.iter().enumerate() {
            if took[i].is_none() && n.a.readiness(c).unwrap().writable {
                took[i] = Some(n.now - start);
            }
        }
        took.iter().all(Option::is_some)
    });
    net.run_for(Duration::from_millis(1));
    for (l, t) in listeners.into_iter().zip(took) {
        assert!(net.b.accept(l).is_ok());
        let t = t.unwrap();
        assert!(t < Duration::from_millis(100), "handshake took {t}");
    }
}
