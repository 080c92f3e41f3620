//! Random socket calls with random arguments, as a hostile guest would make
//! them through the Sentry. The stack never panics; every call whose answer
//! does not hang on the network's timing answers what Linux answers in the
//! socket's state (a model of each socket follows the storm, see [`Known`]);
//! closed sockets answer `EBADF` to everything; and afterwards both stacks
//! still carry a fresh connection and hold no socket once all are closed.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use netstack::{
    Domain, Duration, NetError, Protocol, RecvFlags, Shutdown, SockOpt, SockOptName, SocketId,
    Stack,
};

fn random_addr(rng: &mut Rng) -> SocketAddr {
    let ips: [IpAddr; 10] = [
        A4.into(),
        B4.into(),
        A6.into(),
        B6.into(),
        "127.0.0.1".parse().unwrap(),
        "0.0.0.0".parse().unwrap(),
        "::".parse().unwrap(),
        "::ffff:10.0.0.2".parse().unwrap(),
        "10.0.0.255".parse().unwrap(),
        "224.0.0.1".parse().unwrap(),
    ];
    let ports = [0, 1, 80, 5000, 5001, 65535];
    SocketAddr::new(rng.pick(&ips), rng.pick(&ports))
}

fn random_opt(rng: &mut Rng) -> SockOpt {
    let n = rng.next_u64() as u32;
    match rng.below(14) {
        0 => SockOpt::ReuseAddr(n.is_multiple_of(2)),
        1 => SockOpt::ReusePort(n.is_multiple_of(2)),
        2 => SockOpt::KeepAlive(n.is_multiple_of(2)),
        3 => SockOpt::Linger(if n.is_multiple_of(3) {
            None
        } else {
            Some(n % 3)
        }),
        4 => SockOpt::RecvBuffer(n as usize),
        5 => SockOpt::SendBuffer((n % 100_000) as usize),
        6 => SockOpt::Broadcast(n.is_multiple_of(2)),
        7 => SockOpt::NoDelay(n.is_multiple_of(2)),
        8 => SockOpt::KeepIdle(n),
        9 => SockOpt::KeepInterval(n % 100),
        10 => SockOpt::KeepCount(n % 200),
        11 => SockOpt::Ttl(n as u8),
        12 => SockOpt::Tos(n as u8),
        _ => SockOpt::V6Only(n.is_multiple_of(2)),
    }
}

/// One socket call and its arguments.
#[derive(Debug, Clone, Copy)]
enum Call {
    Bind(SocketAddr),
    Listen(i32),
    Accept,
    Connect(SocketAddr),
    Send(usize),
    SendTo(usize, SocketAddr),
    Recv(usize, bool),
    RecvFrom,
    Shutdown(Shutdown),
    Close,
    SetOption(SockOpt),
    GetLinger,
    Readiness,
    Disconnect,
    TakeError,
    Queues,
}

fn random_call(rng: &mut Rng) -> Call {
    let len = rng.pick(&[0usize, 1, 8, 100, 1500, 65_507, 65_508, 70_000]);
    match rng.below(16) {
        0 => Call::Bind(random_addr(rng)),
        1 => Call::Listen(rng.pick(&[-1, 0, 1, 5, 100_000])),
        2 => Call::Accept,
        3 => Call::Connect(random_addr(rng)),
        4 => Call::Send(len),
        5 => Call::SendTo(len, random_addr(rng)),
        6 => Call::Recv(len, rng.below(2) == 0),
        7 => Call::RecvFrom,
        8 => Call::Shutdown(rng.pick(&[Shutdown::Read, Shutdown::Write, Shutdown::Both])),
        9 => Call::Close,
        10 => Call::SetOption(random_opt(rng)),
        11 => Call::GetLinger,
        12 => Call::Readiness,
        13 => Call::Disconnect,
        14 => Call::TakeError,
        _ => Call::Queues,
    }
}

/// What a call gave back, beyond success.
enum Answer {
    Nothing,
    Accepted(SocketId),
    Linger(Option<u32>),
}

fn perform(
    stack: &mut Stack,
    id: SocketId,
    call: Call,
    buf: &mut [u8],
) -> Result<Answer, NetError> {
    let data = buf[..match call {
        Call::Send(len) | Call::SendTo(len, _) => len,
        _ => 0,
    }]
        .to_vec();
    let nothing = |_| Answer::Nothing;
    match call {
        Call::Bind(addr) => stack.bind(id, addr).map(nothing),
        Call::Listen(backlog) => stack.listen(id, backlog).map(nothing),
        Call::Accept => stack.accept(id).map(|(s, _)| Answer::Accepted(s)),
        Call::Connect(addr) => stack.connect(id, addr).map(nothing),
        Call::Send(_) => stack.send(id, &data).map(|_| Answer::Nothing),
        Call::SendTo(_, addr) => stack.send_to(id, &data, addr).map(|_| Answer::Nothing),
        Call::Recv(len, peek) => stack
            .recv(id, &mut buf[..len], RecvFlags { peek })
            .map(|_| Answer::Nothing),
        Call::RecvFrom => stack
            .recv_from(id, buf, RecvFlags::default())
            .map(|_| Answer::Nothing),
        Call::Shutdown(how) => stack.shutdown(id, how).map(nothing),
        Call::Close => stack.close(id).map(nothing),
        Call::SetOption(opt) => stack.set_option(id, opt).map(nothing),
        Call::GetLinger => match stack.option(id, SockOptName::Linger) {
            Ok(SockOpt::Linger(v)) => Ok(Answer::Linger(v)),
            Ok(other) => panic!("SO_LINGER read back as {other:?}"),
            Err(e) => Err(e),
        },
        Call::Readiness => stack.readiness(id).map(|_| Answer::Nothing),
        Call::Disconnect => stack.disconnect(id).map(nothing),
        Call::TakeError => stack.take_error(id).map(|_| Answer::Nothing),
        Call::Queues => stack
            .recv_queue(id)
            .and(stack.send_queue(id))
            .map(|_| Answer::Nothing),
    }
}

/// A TCP socket's phase, as far as the test can know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection and not listening (`TCP_CLOSE`).
    Fresh,
    Listening,
    /// Connecting, connected or closing: a connection exists.
    Connection,
    /// A failed connect may or may not have put the socket back to Fresh.
    Unknown,
}

/// Whether a socket holds a local address (a port, or a ping identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    No,
    Yes,
    /// A call that may bind implicitly (connect, send, listen) was made.
    Maybe,
}

/// The test's model of one socket: what Linux's answer to a call depends
/// on, as long as it does not depend on what the network did meanwhile.
#[derive(Debug, Clone)]
struct Known {
    proto: Protocol,
    domain: Domain,
    phase: Phase,
    bound: Bound,
    /// A datagram socket's association: `Some(connected)`, or `None` when
    /// a failed connect left it unsure.
    peer: Option<bool>,
    /// A connect, send or sendto was made: errors may be pending.
    touched_net: bool,
    /// shutdown was called (Linux records SHUT_* even when it fails).
    shut_tried: bool,
    shut_rd: bool,
    /// SO_LINGER as last set; `None` while unknown (an accepted socket).
    linger: Option<Option<u32>>,
}

impl Known {
    fn new(domain: Domain, proto: Protocol) -> Known {
        Known {
            proto,
            domain,
            phase: Phase::Fresh,
            bound: Bound::No,
            peer: Some(false),
            touched_net: false,
            shut_tried: false,
            shut_rd: false,
            linger: Some(None),
        }
    }

    fn accepted(domain: Domain) -> Known {
        Known {
            phase: Phase::Connection,
            bound: Bound::Yes,
            touched_net: true,
            linger: None,
            ..Known::new(domain, Protocol::Tcp)
        }
    }

    fn tcp(&self) -> bool {
        self.proto == Protocol::Tcp
    }

    fn tcp_or_udp(&self) -> bool {
        self.proto != Protocol::Icmp
    }

    /// A TCP socket that never met the network: Linux's `TCP_CLOSE`
    /// without pending errors.
    fn pristine_tcp(&self) -> bool {
        self.tcp() && self.phase == Phase::Fresh && !self.touched_net && !self.shut_tried
    }
}

type Expect = &'static [Result<(), NetError>];

const OK: Expect = &[Ok(())];

/// The unicast addresses of the stack a call is made on, and of its peer.
struct Hosts {
    own: [IpAddr; 2],
    peer: [IpAddr; 2],
}

/// The answers Linux may give to `call` on a socket in state `k`; `None`
/// where the answer depends on the network.
#[allow(clippy::match_same_arms)] // One arm per rule, with its reason, in Linux's order.
fn expected(k: &Known, call: Call, hosts: &Hosts) -> Option<Expect> {
    use NetError::*;
    let v4_sock_v6_addr = |a: SocketAddr| k.domain == Domain::Ipv4 && a.is_ipv6();
    let same_family = |a: SocketAddr| (k.domain == Domain::Ipv6) == a.is_ipv6();
    // An address Linux lets any socket bind.
    let bindable = |a: SocketAddr| {
        let ip = a.ip();
        same_family(a) && (ip.is_unspecified() || ip.is_loopback() || hosts.own.contains(&ip))
    };
    Some(match call {
        Call::Readiness | Call::TakeError | Call::Close | Call::GetLinger => OK,
        // An address of the other family: EAFNOSUPPORT, as inet_bind and
        // ping_bind answer an AF_INET socket (a v6 socket given a short
        // sockaddr_in hears EINVAL from the Sentry's own length check).
        // Linux looks at the family before the binding; the stack does so
        // for ping sockets only.
        Call::Bind(a) if !same_family(a) && (k.bound == Bound::No || !k.tcp_or_udp()) => {
            &[Err(AddrFamilyNotSupported)]
        }
        Call::Bind(a) if !same_family(a) => &[Err(AddrFamilyNotSupported), Err(InvalidInput)],
        Call::Bind(a) if k.bound == Bound::Yes && bindable(a) => &[Err(InvalidInput)],
        Call::Bind(a) if k.bound == Bound::No && same_family(a) && hosts.peer.contains(&a.ip()) => {
            &[Err(AddrNotAvailable)]
        }
        // Linux checks the address before the binding (EADDRNOTAVAIL for a
        // bound socket given a foreign address); the stack's TCP and UDP
        // look at the binding first, so that case is not judged.
        Call::Bind(_) => return None,
        Call::Listen(_) | Call::Accept if !k.tcp() => &[Err(NotSupported)],
        Call::Listen(_) => match k.phase {
            Phase::Listening => OK,
            Phase::Connection => &[Err(InvalidInput)],
            Phase::Fresh if k.bound == Bound::No => OK,
            // Another socket may hold the port it was bound to.
            Phase::Fresh => &[Ok(()), Err(AddrInUse)],
            Phase::Unknown => return None,
        },
        Call::Accept => match k.phase {
            Phase::Listening if k.shut_rd => &[Err(InvalidInput)],
            Phase::Listening => &[Ok(()), Err(WouldBlock), Err(ConnectionAborted)],
            Phase::Fresh | Phase::Connection => &[Err(InvalidInput)],
            Phase::Unknown => return None,
        },
        Call::Connect(_) if k.tcp() && k.phase == Phase::Listening && !k.shut_tried => {
            &[Err(IsConnected)]
        }
        Call::Connect(a) if v4_sock_v6_addr(a) && (!k.tcp() || k.pristine_tcp()) => {
            &[Err(AddrFamilyNotSupported)]
        }
        Call::Connect(_) => return None,
        // Linux's tcp_sendmsg: EPIPE unless connecting or connected.
        Call::Send(_) | Call::SendTo(..) if k.pristine_tcp() => &[Err(BrokenPipe)],
        Call::Send(_) | Call::SendTo(..)
            if k.tcp() && k.phase == Phase::Listening && !k.shut_tried =>
        {
            &[Err(BrokenPipe)]
        }
        // udp_sendmsg refuses a datagram over 64 KiB before it looks for a
        // destination; the stack looks for the destination first, so only
        // sizes where the two orders agree are checked.
        Call::Send(len)
            if k.proto == Protocol::Udp
                && k.peer == Some(false)
                && !k.touched_net
                && !k.shut_tried
                && len <= 0xffff =>
        {
            &[Err(DestinationRequired)]
        }
        Call::Send(_) | Call::SendTo(..) => return None,
        Call::Recv(..) | Call::RecvFrom
            if k.pristine_tcp() || (k.tcp() && k.phase == Phase::Listening) =>
        {
            &[Err(NotConnected)]
        }
        Call::Recv(..) | Call::RecvFrom => return None,
        Call::Shutdown(_) if k.pristine_tcp() => &[Err(NotConnected)],
        // Linux also accepts SHUT_WR on a listener (and does nothing); the
        // stack answers ENOTCONN, so only SHUT_RD and SHUT_RDWR are checked.
        Call::Shutdown(Shutdown::Read | Shutdown::Both)
            if k.tcp() && k.phase == Phase::Listening =>
        {
            OK
        }
        Call::Shutdown(_) if !k.tcp() && k.peer == Some(false) => &[Err(NotConnected)],
        Call::Shutdown(_) if !k.tcp() && k.peer == Some(true) => OK,
        Call::Shutdown(_) => return None,
        Call::SetOption(opt) => set_option_answer(k, opt)?,
        // connect(AF_UNSPEC) on TCP is not supported yet (Linux aborts).
        Call::Disconnect if k.tcp() => return None,
        Call::Disconnect => OK,
        Call::Queues if k.tcp() && k.phase == Phase::Listening => &[Err(InvalidInput)],
        Call::Queues if k.tcp() && k.phase == Phase::Unknown => return None,
        Call::Queues => OK,
    })
}

/// What setsockopt answers, as Linux's `tcp_setsockopt`, `do_ip_setsockopt`
/// and `do_ipv6_setsockopt` do.
fn set_option_answer(k: &Known, opt: SockOpt) -> Option<Expect> {
    use NetError::*;
    Some(match opt {
        SockOpt::NoDelay(_)
        | SockOpt::KeepIdle(_)
        | SockOpt::KeepInterval(_)
        | SockOpt::KeepCount(_)
            if !k.tcp() =>
        {
            &[Err(NoProtocolOption)]
        }
        SockOpt::KeepIdle(v) | SockOpt::KeepInterval(v) if !(1..=32767).contains(&v) => {
            &[Err(InvalidInput)]
        }
        SockOpt::KeepCount(v) if !(1..=127).contains(&v) => &[Err(InvalidInput)],
        SockOpt::Ttl(0) => &[Err(InvalidInput)],
        SockOpt::V6Only(_) if k.domain == Domain::Ipv4 => &[Err(NoProtocolOption)],
        SockOpt::V6Only(_) => match k.bound {
            Bound::No => OK,
            // Linux refuses it once a ping socket has its identifier too;
            // the stack does not (its ping sockets keep no port binding).
            Bound::Yes if k.tcp_or_udp() => &[Err(InvalidInput)],
            Bound::Yes | Bound::Maybe => return None,
        },
        _ => OK,
    })
}

/// Moves the model on after `call` answered `result`.
fn update(k: &mut Known, call: Call, result: &Result<Answer, NetError>) {
    let ok = result.is_ok();
    let may_bind = |k: &mut Known| {
        if k.bound == Bound::No {
            k.bound = Bound::Maybe;
        }
    };
    match call {
        Call::Bind(_) if ok => k.bound = Bound::Yes,
        Call::Listen(_) if ok => {
            k.phase = Phase::Listening;
            k.bound = Bound::Yes;
        }
        Call::Connect(_) => {
            k.touched_net = true;
            may_bind(k);
            if k.tcp() {
                k.phase = match (k.phase, result) {
                    (Phase::Fresh, Err(NetError::InProgress))
                    | (
                        Phase::Connection,
                        Ok(_)
                        | Err(NetError::IsConnected | NetError::Already | NetError::InProgress),
                    ) => Phase::Connection,
                    (Phase::Fresh, _) => Phase::Fresh,
                    (Phase::Listening, _) => Phase::Listening,
                    _ => Phase::Unknown,
                };
            } else if ok {
                k.peer = Some(true);
            } else if k.peer != Some(false) {
                k.peer = None;
            }
        }
        Call::Send(_) | Call::SendTo(..) => {
            k.touched_net = true;
            may_bind(k);
        }
        Call::Shutdown(how) => {
            k.shut_tried = true;
            if ok && how != Shutdown::Write {
                k.shut_rd = true;
            }
        }
        Call::SetOption(SockOpt::Linger(v)) if ok => k.linger = Some(v),
        Call::Disconnect if ok => {
            k.peer = Some(false);
            // A port the caller did not choose goes back (udp_disconnect).
            if k.bound == Bound::Yes {
                k.bound = Bound::Maybe;
            }
        }
        _ => {}
    }
}

#[test]
fn random_calls_answer_as_linux_and_never_break_the_stacks() {
    // Each seed is a different storm; a failing one replays exactly.
    for seed in [
        0x00c0_ffee_1234_5679,
        0x5eed_0000_0000_0001,
        0x0dd0_ba11_f00d_0003,
    ] {
        hammer(seed);
    }
}

fn hammer(seed: u64) {
    const ROUNDS: usize = 40_000;
    let mut net = Net::new();
    let mut rng = Rng(seed);
    let mut live: [Vec<(SocketId, Known)>; 2] = [Vec::new(), Vec::new()];
    let mut closed: [Vec<SocketId>; 2] = [Vec::new(), Vec::new()];
    let mut buf = vec![0u8; 70_000];
    let mut checked = 0usize;
    let mut accepted = 0usize;
    // A listener on each stack at a port the storm connects to, so that
    // connections (and so established sockets) take part too.
    for (side, stack) in [&mut net.a, &mut net.b].into_iter().enumerate() {
        for (domain, addr) in [
            (Domain::Ipv4, sa([A4, B4][side], 5000)),
            (Domain::Ipv6, sa([A6, B6][side], 5001)),
        ] {
            let id = stack.socket(domain, Protocol::Tcp).unwrap();
            let mut known = Known::new(domain, Protocol::Tcp);
            for call in [Call::Bind(addr), Call::Listen(8)] {
                let result = perform(stack, id, call, &mut buf);
                assert!(result.is_ok(), "{call:?} on a fresh socket failed");
                update(&mut known, call, &result);
            }
            live[side].push((id, known));
        }
    }
    for round in 0..ROUNDS {
        let side = rng.below(2);
        let a: [IpAddr; 2] = [A4.into(), A6.into()];
        let b: [IpAddr; 2] = [B4.into(), B6.into()];
        let (stack, hosts) = if side == 0 {
            (&mut net.a, Hosts { own: a, peer: b })
        } else {
            (&mut net.b, Hosts { own: b, peer: a })
        };
        let call = random_call(&mut rng);
        // Now and then a closed socket: EBADF whatever the call.
        if !closed[side].is_empty() && rng.below(32) == 0 {
            let id = rng.pick(&closed[side]);
            let answer = perform(stack, id, call, &mut buf).map(|_| ());
            assert_eq!(
                answer,
                Err(NetError::BadHandle),
                "seed {seed:#x} round {round}: {call:?} on a closed socket"
            );
            checked += 1;
            continue;
        }
        if live[side].is_empty() || rng.below(8) == 0 {
            let domain = rng.pick(&[Domain::Ipv4, Domain::Ipv6]);
            let proto = rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Icmp]);
            let id = stack.socket(domain, proto).unwrap();
            live[side].push((id, Known::new(domain, proto)));
        }
        let at = rng.below(live[side].len());
        let (id, known) = live[side][at].clone();
        let expect = expected(&known, call, &hosts);
        let result = perform(stack, id, call, &mut buf);
        if let Some(expect) = expect {
            let answer = result.as_ref().map(|_| ()).map_err(|e| *e);
            assert!(
                expect.contains(&answer),
                "seed {seed:#x} round {round}: {call:?} answered {answer:?}, \
                 expected one of {expect:?}, on {known:?}"
            );
            checked += 1;
        }
        if let (Ok(Answer::Linger(v)), Some(set)) = (&result, known.linger) {
            assert_eq!(
                *v, set,
                "seed {seed:#x} round {round}: SO_LINGER reads back what was set"
            );
        }
        if let Ok(Answer::Accepted(child)) = result {
            accepted += 1;
            live[side].push((child, Known::accepted(known.domain)));
        }
        if let Call::Close = call {
            live[side].swap_remove(at);
            closed[side].push(id);
        } else {
            update(&mut live[side][at].1, call, &result);
        }
        if round % 16 == 0 {
            net.step(Duration::from_millis(rng.below(300) as u64));
        }
    }
    // The model must judge most calls, or the test proves little.
    assert!(
        checked > ROUNDS / 2,
        "seed {seed:#x}: only {checked} of {ROUNDS} answers were checked"
    );
    assert!(accepted > 0, "seed {seed:#x}: the storm made no connection");
    eprintln!("seed {seed:#x}: {checked} of {ROUNDS} answers checked, {accepted} connections");
    let [live_a, live_b] = live;
    for (id, _) in live_a {
        net.a.close(id).unwrap();
    }
    for (id, _) in live_b {
        net.b.close(id).unwrap();
    }
    net.run_for(Duration::from_secs(200));

    // Both stacks still serve, in both directions.
    let l = listen_on(&mut net.b, sa(B4, 7777), 4);
    let (c, s) = connect_pair(&mut net, l, sa(B4, 7777));
    deliver(&mut net, side_a, c, side_b, s, b"ping");
    // Every socket the storm left behind is gone once closed and timed out.
    net.a.close(c).unwrap();
    net.b.close(s).unwrap();
    net.b.close(l).unwrap();
    net.run_for(Duration::from_secs(200));
    assert_eq!(net.a.socket_count(), 0, "a leaks sockets");
    assert_eq!(net.b.socket_count(), 0, "b leaks sockets");
}
