//! End-to-end tests of `smolvisor do --network relay --netns PATH`, the
//! mode OCI containers get by default: the guest has the interfaces of
//! namespace A with their addresses, A keeps them, and the guest's flows
//! leave as sockets made in A by the Sentry's gateway (which enters A from
//! a thread; smolvisor itself runs in the caller's namespace). The guest's
//! listeners are mirrored as listeners in A.
//!
//! World: [`common::netns::Topology`] (A and B joined by `veth0` on
//! 10.201.N.0/24), made and removed by each test; the peer runs natively
//! in B.
//!
//! Needs root, `ip`, `curl`, `python3`, `ping`, `tshark` and `iperf3`.

mod common;

use std::time::Duration;

use common::netns::{
    Relayed, Topology, assert_fetched, assert_logged_client, ip_out, relayed, serve_from_peer,
    transfer, udp_echo,
};
use common::pcap::{assert_guest_stream_complete, fields};
use common::{Guest, ScratchDir};

/// The guest fetches a file from the peer; the peer sees A's address as the
/// client, and A's kernel keeps that address all along.
#[test]
fn the_guest_reaches_the_peer_from_the_namespaces_address_which_stays() {
    let net = Topology::new();
    let file = serve_from_peer(&Relayed(&net), "file.txt", 300_000);
    let before = ip_out(&["-n", &net.a, "-4", "-o", "addr", "show", "veth0"]);
    let script = format!(
        "curl -sS --max-time 10 {url} && ip -4 -o addr show veth0 >&2",
        url = file.url
    );
    let out = relayed(&net.a, &[], Guest::sh(&script)).run();
    assert_fetched(&out, &file.body);
    assert!(
        out.stderr.contains(&format!("inet {}/24", net.a_ip())),
        "the guest does not see A's address on its veth0:\n{out}"
    );
    assert_logged_client(&file.server, &net.a_ip(), "/file.txt");
    let after = ip_out(&["-n", &net.a, "-4", "-o", "addr", "show", "veth0"]);
    assert!(before.contains(&net.a_ip()), "{before}");
    assert_eq!(before, after, "A's addresses changed");
}

/// The guest listens and says so; the peer connects at once (no retry) and
/// is seen with its own address; after the guest closes its listener, the
/// peer's connection is refused, as Linux refuses it.
#[test]
fn a_peer_reaches_the_guests_listener_as_soon_as_listen_returns_and_not_after_close() {
    let net = Topology::new();
    let guest = "import socket, sys\n\
                 s = socket.socket()\n\
                 s.bind(('', 9000))\n\
                 s.listen()\n\
                 print('listening', flush=True)\n\
                 c, peer = s.accept()\n\
                 c.sendall(('%s:%d' % peer).encode())\n\
                 c.close()\n\
                 s.close()\n\
                 print('closed', flush=True)\n\
                 sys.stdin.read()\n";
    let mut server = relayed(&net.a, &[], Guest::new(&["python3", "-c", guest])).spawn();
    server.wait_for_line("listening");
    let client = format!(
        "import socket\n\
         c = socket.create_connection(('{a}', 9000), timeout=5)\n\
         print(c.getsockname()[1], c.recv(100).decode())\n",
        a = net.a_ip()
    );
    let out = net.in_b(Guest::new(&["python3", "-c", &client])).run();
    out.assert_success();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        words.get(1).copied(),
        Some(format!("{}:{}", net.b_ip(), words[0]).as_str()),
        "the guest saw another peer than B's socket\n{out}"
    );
    server.wait_for_line("closed");
    let refused = format!(
        "import socket\n\
         try:\n\
         \x20   socket.create_connection(('{a}', 9000), timeout=5)\n\
         \x20   print('connected')\n\
         except ConnectionRefusedError:\n\
         \x20   print('refused')\n",
        a = net.a_ip()
    );
    let out = net.in_b(Guest::new(&["python3", "-c", &refused])).run();
    assert_eq!(out.stdout.trim(), "refused", "{out}");
}

/// A datagram from the guest's bound port leaves from that same port of A
/// (so a peer's answer, or a reply to a server's, goes where Linux's would)
/// and the peer's echo comes back.
#[test]
fn udp_leaves_from_the_guests_own_port_and_the_answer_returns() {
    let net = Topology::new();
    let mut echo = udp_echo(&Relayed(&net), "7007");
    let guest = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('', 5399))\n\
         s.settimeout(5)\n\
         s.sendto(b'relayed datagram', ('{b}', 7007))\n\
         data, peer = s.recvfrom(100)\n\
         print(data.decode(), '%s:%d' % peer)\n",
        b = net.b_ip()
    );
    let out = relayed(&net.a, &[], Guest::new(&["python3", "-c", &guest])).run();
    out.assert_success();
    assert_eq!(
        out.stdout.trim(),
        format!("relayed datagram {}:7007", net.b_ip()),
        "{out}"
    );
    let from = echo.wait_for_line("from ");
    assert_eq!(from.trim(), format!("from {}:5399", net.a_ip()));
}

/// Bulk TCP both ways with iperf3 and a ping, between the guest and the
/// peer, which sees the guest's own address and ports; the capture holds
/// the guest's whole stream of a transfer.
#[test]
fn iperf3_both_ways_ping_and_a_complete_capture() {
    let net = Topology::new();
    let mut server = net
        .in_b(Guest::new(&[
            "iperf3",
            "-s",
            "-B",
            &net.b_ip(),
            "--forceflush",
        ]))
        .deadline(Duration::from_secs(60))
        .spawn();
    server.wait_for_line("Server listening");
    let out = relayed(
        &net.a,
        &[],
        Guest::new(&["iperf3", "-c", &net.b_ip(), "-t", "2", "--bidir", "-f", "m"]),
    )
    .deadline(Duration::from_secs(60))
    .run();
    out.assert_success();
    // `[  5][TX-C] ... 1234 Mbits/sec ... receiver`, one per direction.
    let rates: Vec<f64> = out
        .stdout
        .lines()
        .filter(|l| l.trim_end().ends_with("receiver"))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "Mbits/sec")?;
            words[at - 1].parse().ok()
        })
        .collect();
    assert!(
        rates.len() == 2 && rates.iter().all(|&r| r > 0.0),
        "not two receiver rates above 0: {rates:?}\n{out}"
    );
    let log = server.stdout_so_far();
    assert!(
        log.contains(&format!("Accepted connection from {}", net.a_ip())),
        "the server's log:\n{log}"
    );
    // The peer sees the guest's own ports: each stream's `local A port N`
    // in the guest is `connected to A port N` at the server.
    let local = format!("local {} port ", net.a_ip());
    let ports: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split(&local).nth(1)?.split_whitespace().next())
        .collect();
    assert!(
        ports.len() >= 2,
        "no stream ports in the guest's output\n{out}"
    );
    for port in ports {
        let seen = format!("connected to {} port {port}", net.a_ip());
        assert!(log.contains(&seen), "the server never saw {seen:?}:\n{log}");
    }
    let ping = relayed(
        &net.a,
        &[],
        Guest::new(&["ping", "-c", "2", "-W", "2", &net.b_ip()]),
    )
    .run();
    ping.assert_success();
    assert!(ping.stdout.contains("2 received"), "{ping}");

    let dir = ScratchDir::new("relay-pcap");
    let pcap = dir.path().join("relay.pcapng");
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let mut sink = net
        .in_b(Guest::python(
            "nat_peer.py",
            &["tcp-sink", &net.b_ip(), "7100"],
        ))
        .deadline(Duration::from_secs(60))
        .spawn();
    sink.wait_for_line("ready");
    let send = relayed(
        &net.a,
        &["--pcap-log", &pcap_arg],
        Guest::python("nat_peer.py", &["tcp-send", &net.b_ip(), "7100", "3000000"]),
    )
    .deadline(Duration::from_secs(60))
    .run();
    send.assert_success();
    let received = sink.wait_for_line("received");
    let sent = send
        .stdout
        .lines()
        .find(|l| l.starts_with("sent"))
        .unwrap_or_else(|| panic!("no 'sent' line\n{send}"));
    assert_eq!(transfer(sent), transfer(&received), "the streams differ");
    assert_guest_stream_complete(&pcap, &net.a_ip(), "7100", 3_000_000);
    let dst = fields(&pcap, "tcp.dstport == 7100", &["ip.src", "ip.dst"]);
    assert!(
        dst.iter().all(|r| r[0] == net.a_ip() && r[1] == net.b_ip()),
        "the capture shows other addresses than A's and B's: {:?}",
        &dst[..dst.len().min(5)]
    );
}

/// A UDP server in the guest, bound to its port: a peer's datagram that
/// arrives right after `bind` returned reaches it, with the peer's own
/// address, and its answer comes back from the port the peer wrote to.
#[test]
fn a_guests_udp_server_gets_the_peers_datagrams_and_answers_from_its_port() {
    let net = Topology::new();
    let guest = "import socket, sys\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 s.bind(('', 5353))\n\
                 print('bound', flush=True)\n\
                 data, peer = s.recvfrom(100)\n\
                 s.sendto(data.upper() + (' %s:%d' % peer).encode(), peer)\n\
                 sys.stdin.read()\n";
    let mut server = relayed(&net.a, &[], Guest::new(&["python3", "-c", guest])).spawn();
    server.wait_for_line("bound");
    let client = format!(
        "import socket\n\
         c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         c.settimeout(5)\n\
         c.sendto(b'query', ('{a}', 5353))\n\
         data, peer = c.recvfrom(100)\n\
         print(c.getsockname()[1], data.decode(), '%s:%d' % peer)\n",
        a = net.a_ip()
    );
    let out = net.in_b(Guest::new(&["python3", "-c", &client])).run();
    out.assert_success();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(
        words[1..],
        [
            "QUERY",
            &format!("{}:{}", net.b_ip(), words[0]),
            &format!("{}:5353", net.a_ip())
        ],
        "{out}"
    );
}
