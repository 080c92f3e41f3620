//! End-to-end tests of `smolvisor do --network nat`, the user-mode gateway.
//!
//! Each test builds its own small world ([`common::netns::Topology`]) and
//! tears it down, even when it panics: two network namespaces joined by a
//! veth pair, A (10.201.N.1, where `smolvisor` runs, so A is the sandbox's
//! "host") and B (10.201.N.2, "outside", where the peers live). Nothing touches the host's own
//! interfaces or any real outside address.
//!
//! The peers and clients are Python programs under `tests/guest/`
//! (`nat_peer.py`, `dns_server.py`, `python3 -m http.server`), run with
//! `ip netns exec`. Servers say when they listen; clients of a published
//! port retry until a deadline, never after a fixed sleep.
//!
//! Needs root (CI runs as root), `ip`, `curl`, `ping` (iputils) and `getent`.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::netns::{
    Topology, World, assert_fetched, assert_same_stream, bulk_from_peer, bulk_to_peer, fetch,
    http_server, serve_from_peer, text_file, udp_echo,
};
use common::{Guest, Outcome, ScratchDir};

/// How long a client of a published port keeps retrying.
const READY: Duration = Duration::from_secs(10);

/// `curl URL` with a short timeout, as a native command.
fn curl(url: &str) -> Guest {
    Guest::new(&["curl", "-sS", "--max-time", "3", url]).deadline(Duration::from_secs(6))
}

/// Runs `attempt` until it succeeds or `READY` passes; returns the success.
fn retry(what: &str, mut attempt: impl FnMut() -> Outcome) -> Outcome {
    let start = Instant::now();
    loop {
        let out = attempt();
        if !out.timed_out && out.status.code() == Some(0) {
            return out;
        }
        if start.elapsed() > READY {
            panic!("{what} never succeeded within {READY:?}; last attempt:\n{out}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn curl_from_the_guest_fetches_a_file_from_the_peer() {
    let net = Topology::new();
    let file = serve_from_peer(&net, "peer.txt", 200_000);
    let out = net.sandbox(&[], fetch(&file.url)).run();
    assert_fetched(&out, &file.body);
    // The request left through A's address, as the gateway's host socket.
    let log = file.server.stderr_so_far();
    assert!(
        log.contains(&format!("{} - - ", net.a_ip())) && log.contains("GET /peer.txt"),
        "the server's log does not show A's request:\n{log}"
    );
}

#[test]
fn host_loopback_is_refused_by_default_and_reached_with_the_flag() {
    let net = Topology::new();
    let dir = ScratchDir::new("www");
    let body = text_file(&dir, "host.txt", 5_000);
    let server = http_server(|g| net.in_a(g), "127.0.0.1", 8081, &dir);
    let script = "curl -sS --max-time 5 http://10.0.2.2:8081/host.txt; echo \"curl exit $?\"";
    let refused = net.sandbox(&[], Guest::sh(script)).run();
    refused.assert_success().assert_line("curl exit 7");
    assert!(
        !server.stderr_so_far().contains("GET /host.txt"),
        "the host's loopback server was reached without --allow-host-loopback\n{refused}"
    );

    let url = "http://10.0.2.2:8081/host.txt";
    let allowed = net.sandbox(&["--allow-host-loopback"], fetch(url)).run();
    allowed.assert_success();
    assert!(allowed.stdout == body, "the body differs\n{allowed}");
    let log = server.stderr_so_far();
    assert!(
        log.contains("127.0.0.1 - - ") && log.contains("GET /host.txt"),
        "the server's log does not show the request on loopback:\n{log}"
    );
}

#[test]
fn published_tcp_ports_reach_the_guests_server() {
    let net = Topology::new();
    let dir = ScratchDir::new("www");
    let body = text_file(&dir, "guest.txt", 100_000);
    // Closing stdin stops the server.
    let script = "python3 -u -m http.server 8000 & cat >/dev/null; kill $!";
    let guest = net
        .sandbox(
            &["-p", "127.0.0.1:18080:8000", "-p", "18081:8000"],
            Guest::sh(script),
        )
        .cwd(dir.path())
        .deadline(Duration::from_secs(60))
        .spawn();

    let from_a = retry("curl in A to the published 127.0.0.1:18080", || {
        net.in_a(curl("http://127.0.0.1:18080/guest.txt")).run()
    });
    assert!(
        from_a.stdout == body,
        "the body differs (via 127.0.0.1)\n{from_a}"
    );

    let url = format!("http://{}:18081/guest.txt", net.a_ip());
    let from_b = retry("curl in B to the published *:18081", || {
        net.in_b(curl(&url)).run()
    });
    assert!(from_b.stdout == body, "the body differs (via B)\n{from_b}");

    // Published on 127.0.0.1 only: from B, A's veth address is closed.
    let url = format!("http://{}:18080/guest.txt", net.a_ip());
    let closed = net.in_b(curl(&url)).run();
    assert_eq!(
        closed.status.code(),
        Some(7),
        "a port published on 127.0.0.1 answered on A's veth address\n{closed}"
    );

    let out = guest.wait();
    assert!(!out.timed_out, "the guest did not stop\n{out}");
    let requests = out
        .stderr
        .lines()
        .filter(|l| l.contains("\"GET /guest.txt HTTP/1.1\" 200"))
        .collect::<Vec<_>>();
    assert!(
        requests.len() >= 2 && requests.iter().all(|l| l.starts_with("10.0.2.2 - - ")),
        "the guest should see both requests come from the gateway 10.0.2.2\n{out}"
    );
}

#[test]
fn dns_queries_are_answered_through_the_forwarder() {
    let net = Topology::new();
    net.set_resolver(&net.b_ip());
    let mut dns = net
        .in_b(Guest::python(
            "dns_server.py",
            &[&net.b_ip(), "53", "peer.test", "192.0.2.44"],
        ))
        .deadline(Duration::from_secs(60))
        .spawn();
    dns.wait_for_line("ready");
    let script = r#"
cat /etc/resolv.conf
python3 - <<'EOF'
import socket
print("peer.test ->", socket.gethostbyname("peer.test"))
try:
    print("unknown.test ->", socket.gethostbyname("unknown.test"))
except socket.gaierror as e:
    print("unknown.test gaierror", e.errno == socket.EAI_NONAME)
EOF
getent hosts peer.test
echo "getent exit $?"
"#;
    // A lost query fails in seconds rather than glibc's default 5 s x 2.
    let out = net
        .sandbox(
            &[],
            Guest::sh(script).env("RES_OPTIONS", "timeout:2 attempts:2"),
        )
        .run();
    out.assert_success()
        .assert_line("nameserver 10.0.2.3")
        .assert_line("peer.test -> 192.0.2.44")
        .assert_line("unknown.test gaierror True")
        .assert_line("getent exit 0");
    let getent = out.line_starting("192.0.2.44");
    assert_eq!(
        getent.split_whitespace().collect::<Vec<_>>(),
        ["192.0.2.44", "peer.test"],
        "getent hosts\n{out}"
    );
    assert!(
        !out.stdout.contains(&net.b_ip()),
        "the guest's resolv.conf names the real upstream\n{out}"
    );
    // The forwarder asked from A, through a host socket.
    let log = dns.stdout_so_far();
    for q in ["peer.test A", "unknown.test A"] {
        assert!(
            log.contains(&format!("query {q} from {}", net.a_ip())),
            "the DNS server did not get `{q}` from A:\n{log}\n{out}"
        );
    }
}

#[test]
fn udp_datagrams_from_the_guest_are_echoed_by_the_peer() {
    let net = Topology::new();
    let echo = udp_echo(&net, "7007");
    let sizes = ["1", "100", "1472", "1473", "9000", "32768", "60000"];
    let b_ip = net.b_ip();
    let mut args = vec!["udp-client", &b_ip, "7007"];
    args.extend_from_slice(&sizes);
    let out = net.sandbox(&[], Guest::python("nat_peer.py", &args)).run();
    out.assert_success();
    for size in sizes {
        out.assert_line(&format!("echoed {size}"));
    }
    assert!(!out.stdout.contains("resent"), "datagrams were lost\n{out}");
    let peers = echo.stdout_so_far();
    assert!(
        peers
            .lines()
            .filter(|l| l.starts_with("from "))
            .all(|l| l.starts_with(&format!("from {}:", net.a_ip())))
            && peers.contains("from "),
        "the peer should see the datagrams come from A's address:\n{peers}"
    );
}

#[test]
fn a_published_udp_port_reaches_the_guests_server() {
    let net = Topology::new();
    let script = format!(
        "python3 -u {} udp-echo 0.0.0.0 5353 & cat >/dev/null; kill $!",
        common::guest_file("nat_peer.py")
    );
    let mut guest = net
        .sandbox(&["-p", "15353:5353/udp"], Guest::sh(&script))
        .deadline(Duration::from_secs(60))
        .spawn();
    guest.wait_for_line("ready");
    let sizes = ["1", "1000", "60000"];
    for (who, host) in [("A", "127.0.0.1".to_owned()), ("B", net.a_ip())] {
        let mut args = vec!["udp-client", &host, "15353"];
        args.extend_from_slice(&sizes);
        let client = Guest::python("nat_peer.py", &args).deadline(Duration::from_secs(10));
        let client = if who == "A" {
            net.in_a(client)
        } else {
            net.in_b(client)
        };
        let out = client.run();
        out.assert_success();
        for size in sizes {
            out.assert_line(&format!("echoed {size}"));
        }
        assert!(!out.stdout.contains("resent"), "datagrams were lost\n{out}");
    }
    let out = guest.wait();
    assert!(!out.timed_out, "the guest did not stop\n{out}");
    // A's loopback appears as the gateway; B as itself.
    assert!(
        out.stdout.contains("from 10.0.2.2:")
            && out.stdout.contains(&format!("from {}:", net.b_ip())),
        "the guest's server should see 10.0.2.2 and B\n{out}"
    );
}

/// `ping` output: (replies from `from`, the summary line, the exit status).
fn ping(net: &Topology, extra: &[&str], to: &str, wait: &str) -> (usize, String, Outcome) {
    let mut argv = vec!["ping", "-c", "3", "-i", "0.2", "-W", wait];
    argv.extend_from_slice(extra);
    argv.push(to);
    let out = net.sandbox(&[], Guest::new(&argv)).run();
    let replies = out
        .stdout
        .lines()
        .filter(|l| l.contains(&format!("bytes from {to}:")))
        .count();
    let summary = out.line_starting("3 packets transmitted").to_owned();
    (replies, summary, out)
}

#[test]
fn ping_reaches_the_peer_and_silence_gets_no_reply() {
    let net = Topology::new();
    // A new namespace's ping_group_range shuts everyone out of ping sockets,
    // so the gateway uses a raw socket; then it is opened to all, and the
    // gateway uses a ping socket.
    for range in ["1 0", "0 2147483647"] {
        let sysctl = Command::new("ip")
            .args(["netns", "exec", &net.a, "sysctl", "-qw"])
            .arg(format!("net.ipv4.ping_group_range={range}"))
            .status()
            .expect("run sysctl");
        assert!(sysctl.success(), "sysctl ping_group_range={range}");
        let (replies, summary, out) = ping(&net, &[], &net.b_ip(), "2");
        assert!(
            out.status.code() == Some(0) && replies == 3 && summary.contains(" 3 received"),
            "ping to the peer (ping_group_range {range}): {replies} replies\n{out}"
        );
    }
    let (replies, summary, out) = ping(&net, &[], &net.silent_ip(), "1");
    assert!(
        out.status.code().is_some_and(|c| c != 0)
            && replies == 0
            && summary.contains(" 0 received"),
        "ping to a silent address: {replies} replies\n{out}"
    );
}

/// 32 MiB: large against every buffer on the way (the gateway's are 1 MiB).
const BULK: u64 = 32 << 20;

#[test]
fn tcp_bulk_from_the_guest_reaches_the_peer_intact() {
    let net = Topology::new();
    let (sent, sink) = bulk_to_peer(&net, &[], "9000", BULK);
    assert_same_stream("guest to peer", &sent, &sink, BULK);
    sink.assert_line(&format!("accepted from {}", net.a_ip()));
}

#[test]
fn tcp_bulk_from_the_peer_reaches_the_guest_intact() {
    let net = Topology::new();
    let (source, received) = bulk_from_peer(&net, "9001", BULK);
    assert_same_stream("peer to guest", &source, &received, BULK);
}

/// Bulk the other way in: the peer connects to a published port and sends.
#[test]
fn tcp_bulk_into_a_published_port_reaches_the_guest_intact() {
    let net = Topology::new();
    let mut sink = net
        .sandbox(
            &["-p", "19000:9000"],
            Guest::python("nat_peer.py", &["tcp-sink", "0.0.0.0", "9000"]),
        )
        .deadline(Duration::from_secs(60))
        .spawn();
    sink.wait_for_line("ready");
    let sent = net
        .in_b(Guest::python(
            "nat_peer.py",
            &["tcp-send", &net.a_ip(), "19000", &BULK.to_string()],
        ))
        .deadline(Duration::from_secs(60))
        .run();
    let sink = sink.wait();
    assert_same_stream("peer to the guest's published port", &sent, &sink, BULK);
    sink.assert_line("accepted from 10.0.2.2");
}

#[test]
fn a_closed_port_on_the_peer_is_refused_with_econnrefused() {
    let net = Topology::new();
    let out = net
        .sandbox(
            &[],
            Guest::python("nat_peer.py", &["connect", &net.b_ip(), "9"]),
        )
        .run();
    out.assert_success()
        .assert_line("ECONNREFUSED ConnectionRefusedError");
}
