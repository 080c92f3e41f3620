//! Random socket calls with random arguments, as a hostile guest would make
//! them through the Sentry: the stack never panics, every call answers with a
//! result, and afterwards both stacks still carry a fresh connection.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use netstack::{
    Domain, Duration, NetError, Protocol, RecvFlags, Shutdown, SockOpt, SockOptName, SocketId,
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

#[test]
fn random_calls_never_break_the_stacks() {
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
    let mut net = Net::new();
    let mut rng = Rng(seed);
    let mut ids: [Vec<SocketId>; 2] = [Vec::new(), Vec::new()];
    let mut buf = vec![0u8; 70_000];
    let mut answered = 0usize;
    for round in 0..40_000 {
        let side = rng.below(2);
        let stack = if side == 0 { &mut net.a } else { &mut net.b };
        let mine = &mut ids[side];
        let id = if mine.is_empty() || rng.below(8) == 0 {
            let domain = rng.pick(&[Domain::Ipv4, Domain::Ipv6]);
            let proto = rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Icmp]);
            let id = stack.socket(domain, proto).unwrap();
            mine.push(id);
            id
        } else {
            mine[rng.below(mine.len())]
        };
        let len = rng.pick(&[0usize, 1, 8, 100, 1500, 65_507, 65_508, 70_000]);
        let data = &buf[..len.min(buf.len())].to_vec();
        let result: Result<(), NetError> = match rng.below(16) {
            0 => stack.bind(id, random_addr(&mut rng)),
            1 => stack.listen(id, rng.pick(&[-1, 0, 1, 5, 100_000])),
            2 => stack.accept(id).map(|(s, _)| ids[side].push(s)),
            3 => stack.connect(id, random_addr(&mut rng)),
            4 => stack.send(id, data).map(drop),
            5 => stack.send_to(id, data, random_addr(&mut rng)).map(drop),
            6 => stack
                .recv(
                    id,
                    &mut buf[..len.min(70_000)],
                    RecvFlags {
                        peek: rng.below(2) == 0,
                    },
                )
                .map(drop),
            7 => stack
                .recv_from(id, &mut buf, RecvFlags::default())
                .map(drop),
            8 => stack.shutdown(
                id,
                rng.pick(&[Shutdown::Read, Shutdown::Write, Shutdown::Both]),
            ),
            9 => {
                ids[side].retain(|&x| x != id);
                stack.close(id)
            }
            10 => stack.set_option(id, random_opt(&mut rng)),
            11 => stack.option(id, SockOptName::Linger).map(drop),
            12 => stack.readiness(id).map(drop),
            13 => stack.disconnect(id),
            14 => stack.take_error(id).map(drop),
            _ => stack.recv_queue(id).and(stack.send_queue(id)).map(drop),
        };
        // Every call answers: success or an error, never a hang or a panic.
        let _ = result;
        answered += 1;
        if round % 16 == 0 {
            net.step(Duration::from_millis(rng.below(300) as u64));
        }
        if round % 4096 == 0 {
            // Closed ids stay invalid for good.
            for stack in [&mut net.a, &mut net.b] {
                let stale = stack.socket(Domain::Ipv4, Protocol::Udp).unwrap();
                stack.close(stale).unwrap();
                assert_eq!(stack.send(stale, b"x"), Err(NetError::BadHandle));
                assert_eq!(stack.close(stale), Err(NetError::BadHandle));
            }
        }
    }
    assert_eq!(answered, 40_000);
    let [ids_a, ids_b] = ids;
    for id in ids_a {
        let _ = net.a.close(id);
    }
    for id in ids_b {
        let _ = net.b.close(id);
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
