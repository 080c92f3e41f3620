//! End-to-end tests of `smolvisor do --network sandbox --netns PATH`: the
//! Sentry takes over the interfaces of namespace A (veths to peers), the
//! guest reaches the peers from A's own addresses, A's kernel holds none of
//! them while the sandbox runs, and they come back when it ends, however it
//! ends.
//!
//! Worlds: [`common::netns::Topology`] (A and B joined by `veth0` on
//! 10.201.N.0/24) and [`common::netns::TwoPeers`] (A joined to B and to C,
//! with a default, an on-link and a gateway route). Each test makes and
//! removes its own, even on a panic; `smolvisor` runs in A under `ip netns
//! exec`, the peers natively in B and C.
//!
//! Needs root, `ip`, `sysctl`, `curl`, `python3`, `tshark` and `iperf3`.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::netns::{
    TakeOver, Topology, TwoPeers, assert_fetched, assert_logged_client, assert_same_stream, fetch,
    http_server, ip, ip_out, sandboxed, serve_from_peer, tcp_sink, text_file,
};
use common::pcap::{
    assert_counts_match, assert_guest_stream_complete, assert_nothing_dropped, fields,
};
use common::{Guest, Outcome, ScratchDir, vm_rss_kib};

/// A namespace's addresses and routes (every table, both families) as `ip`
/// lists them.
#[derive(Debug, PartialEq, Eq)]
struct NetState {
    addrs: String,
    routes: String,
}

impl NetState {
    fn of(ns: &str) -> NetState {
        // DAD's `tentative` passes by itself within a second or two.
        let steady = |text: String| text.replace(" tentative", "");
        NetState {
            addrs: steady(ip_out(&["-n", ns, "addr", "show"])),
            routes: steady(ip_out(&["-n", ns, "route", "show", "table", "all"])),
        }
    }
}

/// Adds to the [`Topology`] what a container's namespace may hold besides
/// its IPv4 subnet: an IPv6 address on each end, default routes of both
/// families via B, and a gateway route with a metric.
fn add_routes(net: &Topology) {
    for (ns, host) in [(&net.a, 1), (&net.b, 2)] {
        let v6 = format!("{}/64", v6_addr(net, host));
        ip(&["-n", ns, "addr", "add", &v6, "dev", "veth0", "nodad"]);
    }
    ip(&["-n", &net.a, "route", "add", "default", "via", &net.b_ip()]);
    let v6_gateway = v6_addr(net, 2);
    ip(&[
        "-n",
        &net.a,
        "-6",
        "route",
        "add",
        "default",
        "via",
        &v6_gateway,
    ]);
    let beyond = format!("10.202.{}.0/24", net.n);
    ip(&[
        "-n",
        &net.a,
        "route",
        "add",
        &beyond,
        "via",
        &net.b_ip(),
        "metric",
        "7",
    ]);
}

/// fd00:201:N::HOST, the IPv6 counterpart of 10.201.N.HOST.
fn v6_addr(net: &Topology, host: u8) -> String {
    format!("fd00:201:{}::{host}", net.n)
}

/// Panics unless `ns` holds none of the addresses and routes `add_routes`
/// gave it, while its `veth0` stays up.
fn assert_taken_over(net: &Topology) {
    let link = ip_out(&["-n", &net.a, "-br", "addr", "show", "dev", "veth0"]);
    let words: Vec<&str> = link.split_whitespace().collect();
    // `veth0@if2  UP  fe80::.../64`: the link-local address stays with the host.
    assert!(
        words.get(1) == Some(&"UP") && words[2..].iter().all(|w| w.starts_with("fe80:")),
        "A's veth0 while the sandbox runs: {link:?}"
    );
    let state = NetState::of(&net.a);
    let v6_prefix = format!("fd00:201:{}:", net.n);
    for gone in ["10.201.", "10.202.", "default via", &v6_prefix] {
        assert!(
            !state.addrs.contains(gone) && !state.routes.contains(gone),
            "A's kernel still holds {gone:?} while the sandbox runs:\n{}\n{}",
            state.addrs,
            state.routes
        );
    }
}

/// Polls until `ns` is in `state` again; panics after `within`.
fn assert_restored_within(ns: &str, state: &NetState, within: Duration) {
    let start = Instant::now();
    loop {
        let now = NetState::of(ns);
        if now == *state {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{ns} is not as before after {within:?}\n--- before:\n{}{}--- now:\n{}{}",
            state.addrs,
            state.routes,
            now.addrs,
            now.routes
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn curl_in_the_sandbox_fetches_a_file_from_the_peer_with_the_namespaces_address() {
    let net = Topology::new();
    let file = serve_from_peer(&TakeOver(&net), "file.txt", 300_000);
    let out = sandboxed(&net.a, &[], fetch(&file.url)).run();
    assert_fetched(&out, &file.body);
    assert_logged_client(&file.server, &net.a_ip(), "/file.txt");
}

#[test]
fn a_server_in_the_guest_answers_the_peer_on_the_namespaces_address() {
    let net = Topology::new();
    let dir = ScratchDir::new("www");
    let body = text_file(&dir, "guest.txt", 100_000);
    let server = http_server(|g| sandboxed(&net.a, &[], g), "0.0.0.0", 8080, &dir);
    let url = format!("http://{}:8080/guest.txt", net.a_ip());
    let out = net.in_b(fetch(&url)).run();
    assert_fetched(&out, &body);
    assert_logged_client(&server, &net.b_ip(), "/guest.txt");
}

#[test]
fn the_host_loses_the_addresses_to_the_guest_and_gets_them_back() {
    let net = Topology::new();
    add_routes(&net);
    let before = NetState::of(&net.a);
    assert!(
        before.addrs.contains(&format!("{}/24", net.a_ip())),
        "the topology lacks A's address:\n{}",
        before.addrs
    );
    let mut guest = sandboxed(
        &net.a,
        &[],
        Guest::sh(
            "ip -br addr; echo ---; ip route; echo ---; ip -6 route; echo ready; \
             read line; echo \"got $line\"",
        ),
    )
    .spawn();
    guest.wait_for_line("ready");
    assert_taken_over(&net);
    guest.send("go\n");
    let out = guest.wait();
    out.assert_success().assert_line("got go");

    // What the guest saw: A's interface, addresses and routes.
    let seen = out.stdout.split("---\n").collect::<Vec<_>>();
    let [addrs, routes, routes6] = seen[..] else {
        panic!("unexpected output\n{out}");
    };
    let names: Vec<&str> = addrs
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["lo", "veth0"], "the guest's interfaces\n{out}");
    let veth: Vec<&str> = addrs
        .lines()
        .find(|l| l.starts_with("veth0 "))
        .expect("veth0")
        .split_whitespace()
        .collect();
    let (v4, v6) = (
        format!("{}/24", net.a_ip()),
        format!("{}/64", v6_addr(&net, 1)),
    );
    assert!(
        veth[1] == "UP" && veth.contains(&v4.as_str()) && veth.contains(&v6.as_str()),
        "veth0 in the guest's `ip -br addr`\n{out}"
    );
    let n = net.n;
    let b = net.b_ip();
    for (list, route) in [
        (routes, format!("default via {b} dev veth0")),
        (routes, format!("10.201.{n}.0/24 dev veth0 ")),
        (routes, format!("10.202.{n}.0/24 via {b} dev veth0")),
        (routes6, format!("fd00:201:{n}::/64 dev veth0 ")),
        (
            routes6,
            format!("default via {} dev veth0", v6_addr(&net, 2)),
        ),
    ] {
        assert!(
            list.lines().any(|l| l.starts_with(&route)),
            "no route {route:?} in the guest\n{out}"
        );
    }

    // smolvisor waits for the namespace to be restored before it exits.
    let after = NetState::of(&net.a);
    assert_eq!(after, before, "A's addresses and routes after the sandbox");
}

#[test]
fn sigkill_to_smolvisor_still_gives_the_addresses_back() {
    let net = Topology::new();
    add_routes(&net);
    let before = NetState::of(&net.a);
    let mut guest = sandboxed(&net.a, &[], Guest::sh("echo ready; read line")).spawn();
    guest.wait_for_line("ready");
    assert_taken_over(&net);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(guest.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill smolvisor");
    let out = guest.wait();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "smolvisor was not killed\n{out}"
    );
    assert_restored_within(&net.a, &before, Duration::from_secs(10));
    // And A's kernel answers for its address again.
    let ping = Command::new("ip")
        .args(["netns", "exec", &net.b, "ping", "-c", "1", "-W", "2"])
        .arg(net.a_ip())
        .output()
        .expect("run ping");
    assert!(
        ping.status.success(),
        "A does not answer ping after the restore: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
}

/// A terminal sends SIGINT or SIGQUIT (keys) and SIGHUP (hang-up) to the
/// whole foreground process group, and a service manager sends SIGTERM to
/// every process of a service: each reaches the process that restores the
/// namespace as well as smolvisor. Each signal gets a world of its own.
#[test]
fn a_signal_to_the_whole_process_group_still_gives_the_addresses_back() {
    use nix::sys::signal::Signal;
    let mut failed = Vec::new();
    for signal in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGTERM,
    ] {
        let net = Topology::new();
        add_routes(&net);
        let before = NetState::of(&net.a);
        let mut guest = sandboxed(&net.a, &[], Guest::sh("echo ready; exec sleep 60")).spawn();
        guest.wait_for_line("ready");
        assert_taken_over(&net);
        // `spawn` made smolvisor the leader of a process group of its own.
        let group = nix::unistd::Pid::from_raw(i32::try_from(guest.pid()).expect("pid"));
        nix::sys::signal::killpg(group, signal).expect("signal the process group");
        let out = guest.wait();
        assert!(!out.timed_out, "smolvisor ignored {signal}\n{out}");
        let deadline = Instant::now() + Duration::from_secs(2);
        while NetState::of(&net.a) != before && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if NetState::of(&net.a) != before {
            let said = out.stderr.lines().find(|l| l.contains("restor"));
            failed.push(format!("{signal} (smolvisor said {said:?})"));
        }
    }
    assert!(
        failed.is_empty(),
        "A's addresses and routes did not come back after {}",
        failed.join(", ")
    );
}

#[test]
fn several_interfaces_with_default_onlink_and_gateway_routes() {
    let net = TwoPeers::new();
    let (b_dir, c_dir) = (ScratchDir::new("www-b"), ScratchDir::new("www-c"));
    let bodies = [
        ("default.txt", "from B's lo, via the default route\n"),
        ("onlink.txt", "from C's lo, via the on-link route\n"),
        ("gateway.txt", "from C's lo, via the gateway route\n"),
    ];
    for (name, body) in bodies {
        let dir = if name == "default.txt" {
            &b_dir
        } else {
            &c_dir
        };
        std::fs::write(dir.path().join(name), body).expect("write served file");
    }
    let b_server = http_server(|g| net.in_b(g), "0.0.0.0", 8080, &b_dir);
    let c_server = http_server(|g| net.in_c(g), "0.0.0.0", 8080, &c_dir);
    let urls = [
        format!("http://{}:8080/default.txt", net.b_far_ip()),
        format!("http://{}:8080/onlink.txt", net.c_onlink_ip()),
        format!("http://{}:8080/gateway.txt", net.c_gateway_ip()),
    ];
    let script = format!(
        "set -e; ip -br addr; echo ---; ip route; echo ---; \
         for url in {} {} {}; do curl -sS --max-time 10 $url; done",
        urls[0], urls[1], urls[2]
    );
    let out = sandboxed(&net.a, &[], Guest::sh(&script)).run();
    out.assert_success();
    let seen = out.stdout.split("---\n").collect::<Vec<_>>();
    let [addrs, routes, fetched] = seen[..] else {
        panic!("unexpected output\n{out}");
    };
    let expected = bodies.map(|(_, body)| body).concat();
    assert_eq!(fetched, expected, "what curl fetched\n{out}");

    // Each server saw the address of the interface the route leaves by.
    for (server, file, client) in [
        (&b_server, "default.txt", net.a_ip_b()),
        (&c_server, "onlink.txt", net.a_ip_c()),
        (&c_server, "gateway.txt", net.a_ip_c()),
    ] {
        let log = server.stderr_so_far();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("GET /{file} ")))
            .unwrap_or_else(|| panic!("no request for {file} in the log:\n{log}"));
        assert!(
            line.starts_with(&format!("{client} - - ")),
            "{file} was fetched from the wrong address (expected {client}): {line}"
        );
    }

    // The guest sees both interfaces, each with its one address, and the routes.
    let mut lines: Vec<Vec<&str>> = addrs
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    lines.sort();
    let (ab, ac) = (
        format!("{}/24", net.a_ip_b()),
        format!("{}/24", net.a_ip_c()),
    );
    assert_eq!(
        lines[1..],
        [
            vec!["vethb", "UP", ab.as_str()],
            vec!["vethc", "UP", ac.as_str()]
        ],
        "the guest's `ip -br addr`\n{out}"
    );
    let n = net.n;
    for route in [
        format!("default via {} dev vethb", net.b_ip()),
        "10.231.0.0/16 dev vethc".to_owned(),
        format!("10.233.{n}.0/24 via {} dev vethc", net.c_ip()),
        format!("10.201.{n}.0/24 dev vethb "),
        format!("10.231.{n}.0/24 dev vethc "),
    ] {
        assert!(
            routes.lines().any(|l| l.starts_with(&route)),
            "no route {route:?} in the guest\n{out}"
        );
    }
}

/// Turns IPv6 off in `ns`, so no router or neighbour solicitation adds
/// frames to the ones counted.
fn disable_ipv6(ns: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-q", "-w"])
        .args([
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv6.conf.veth0.disable_ipv6=1",
        ])
        .output()
        .expect("run sysctl");
    assert!(
        out.status.success(),
        "sysctl in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kernel's counters of an interface.
#[derive(Debug, Clone, Copy)]
struct LinkCounters {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
}

impl LinkCounters {
    fn of(ns: &str, dev: &str) -> LinkCounters {
        let names = ["rx_packets", "rx_bytes", "tx_packets"];
        let files = names.map(|n| format!("/sys/class/net/{dev}/statistics/{n}"));
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat"])
            .args(&files)
            .output()
            .expect("run cat");
        assert!(
            out.status.success(),
            "reading the counters of {dev} in {ns}"
        );
        let values: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|v| v.parse().expect("a counter"))
            .collect();
        let [rx_packets, rx_bytes, tx_packets] = values[..] else {
            panic!("unexpected counters {values:?}");
        };
        LinkCounters {
            rx_packets,
            rx_bytes,
            tx_packets,
        }
    }
}

/// 32 MiB: some 23,000 full-size frames through the capture and the veth.
const BULK: u64 = 32 << 20;
/// The veth's MTU (the kernel's default).
const MTU: u64 = 1500;
const ETHERNET_HEADER: u64 = 14;

#[test]
fn capture_under_load_matches_the_peers_counters() {
    let net = Topology::new();
    for ns in [&net.a, &net.b] {
        disable_ipv6(ns);
    }
    let dir = ScratchDir::new("capture");
    let file = dir.path().join("bulk.pcapng");
    let sink = tcp_sink(&TakeOver(&net), "9000");
    let before = LinkCounters::of(&net.b, "veth0");
    let bulk = BULK.to_string();
    let sent = sandboxed(
        &net.a,
        &["--pcap-log", file.to_str().expect("UTF-8 path")],
        Guest::python("nat_peer.py", &["tcp-send", &net.b_ip(), "9000", &bulk]),
    )
    .deadline(Duration::from_secs(60))
    .run();
    let sink = sink.wait();
    let after = LinkCounters::of(&net.b, "veth0");
    assert_same_stream("guest to peer", &sent, &sink, BULK);
    sink.assert_line(&format!("accepted from {}", net.a_ip()));
    assert_nothing_dropped(&sent);

    let rows = fields(
        &file,
        "",
        &[
            "frame.interface_name",
            "frame.packet_flags_direction",
            "frame.len",
            "ip.hdr_len",
            "tcp.hdr_len",
            "tcp.len",
        ],
    );
    assert_counts_match(&sent, &rows);
    let num = |s: &str| -> u64 { s.parse().unwrap_or_else(|_| panic!("bad number {s:?}")) };
    let veth = rows.iter().filter(|r| r[0] == "veth0");
    // Received: B's kernel hands the veth whole segments (veth passes its
    // TSO super-frames through uncut), and each is one captured frame.
    let received = veth.clone().filter(|r| r[1] == "0x00000001").count() as u64;
    // Sent: the stack hands TCP segments larger than the MTU to the kernel
    // whole, with a GSO request (segmentation offload), and the capture
    // holds them whole, as a capture on Linux does. The kernel may cut one
    // into segments of at most MTU - headers payload bytes, or let it cross
    // the veth uncut (B then counts it once): how many packets B saw is not
    // known in advance, but every one carries the super-frame's own headers.
    // So with k = B's packets beyond the frames that fit the MTU, the bytes
    // must add up exactly: small frames + super-frames' payload + k headers.
    let (mut small_frames, mut small_bytes) = (0, 0);
    let (mut super_frames, mut super_payload, mut most_cuts) = (0, 0, 0);
    let mut header = None;
    for row in veth.filter(|r| r[1] == "0x00000002") {
        let len = num(&row[2]);
        if len <= ETHERNET_HEADER + MTU {
            small_frames += 1;
            small_bytes += len;
            continue;
        }
        let headers = num(&row[3]) + num(&row[4]);
        let h = *header.get_or_insert(headers);
        assert_eq!(h, headers, "every super-frame has the same headers");
        let payload = num(&row[5]);
        super_frames += 1;
        super_payload += payload;
        most_cuts += payload.div_ceil(MTU - headers);
    }
    let peer = (
        after.rx_packets - before.rx_packets,
        after.rx_bytes - before.rx_bytes,
        after.tx_packets - before.tx_packets,
    );
    let k = peer.0 - small_frames;
    let per_packet = ETHERNET_HEADER + header.unwrap_or(0);
    assert!(
        (super_frames..=most_cuts).contains(&k),
        "B saw {k} packets for {super_frames} super-frames (at most {most_cuts} cut)"
    );
    assert_eq!(
        (small_bytes + super_payload + k * per_packet, received),
        (peer.1, peer.2),
        "bytes sent (frames that fit, super-frames' payload, and one set of headers \
         per packet B counted) and frames received (left) against B's rx_bytes and \
         tx_packets (right)"
    );
    assert_guest_stream_complete(&file, &net.a_ip(), "9000", BULK);
}

/// The receiver's throughput in Mbit/s from iperf3's summary (`-f m`).
fn receiver_mbits(out: &Outcome) -> f64 {
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_end().ends_with("receiver"))
        .unwrap_or_else(|| panic!("no receiver summary from iperf3\n{out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "Mbits/sec")
        .unwrap_or_else(|| panic!("no Mbits/sec in {line:?}"));
    words[at - 1]
        .parse()
        .unwrap_or_else(|_| panic!("bad rate in {line:?}"))
}

#[test]
fn iperf3_runs_both_ways_between_the_guest_and_the_peer() {
    let net = Topology::new();
    let b_ip = net.b_ip();
    let mut server = net
        .in_b(Guest::new(&[
            "iperf3",
            "-s",
            "-B",
            &b_ip,
            "-p",
            "5201",
            "--forceflush",
        ]))
        .deadline(Duration::from_secs(60))
        .spawn();
    server.wait_for_line("Server listening");
    for reverse in [false, true] {
        let mut argv = vec!["iperf3", "-c", &b_ip, "-p", "5201", "-t", "1", "-f", "m"];
        if reverse {
            argv.push("-R");
        }
        let out = sandboxed(&net.a, &[], Guest::new(&argv)).run();
        out.assert_success();
        let rate = receiver_mbits(&out);
        assert!(
            rate > 0.0,
            "iperf3 {} reported {rate} Mbit/s\n{out}",
            if reverse { "-R" } else { "" }
        );
    }
    let log = server.stdout_so_far();
    let accepted = log
        .lines()
        .filter(|l| l.contains(&format!("Accepted connection from {}", net.a_ip())))
        .count();
    assert_eq!(accepted, 2, "the server's log:\n{log}");
}

/// Malformed frames sent into a live sandbox from the peer.
const HOSTILE_FRAMES: u32 = 1_000_000;
/// How much the Sentry's memory may grow while they arrive: the frames
/// themselves are dropped or answered, never kept (fragments wait in a
/// bounded reassembly buffer, half-open connections in a bounded backlog).
const HOSTILE_GROWTH_KIB: u64 = 16 << 10;

/// A million malformed frames (ARP, IPv4 with options and fragments, IPv6
/// with extension headers, TCP, UDP and ICMP, each with lying lengths,
/// offsets, flags or checksums, and truncations) arrive over the veth while
/// the guest echoes a stream back to the peer: every round of the stream
/// comes back intact, the Sentry's memory stays within a bound, and it
/// serves on.
#[test]
fn a_million_hostile_frames_leave_a_transfer_intact_and_the_sentry_flat() {
    flood_during_a_transfer("malformed", HOSTILE_FRAMES);
}

/// Well-formed frames a flood sends.
const FLOOD_FRAMES: u32 = 300_000;

/// A SYN flood from the wire (random sources on the guest's subnet and
/// beyond it, random ports, full options) at the guest's listening port:
/// half-open connections wait in the listener's bounded backlog, so the
/// Sentry stays within the same bound while the echo stream goes on
/// intact, and a new connection is served after it.
#[test]
fn a_syn_flood_leaves_a_transfer_intact_and_the_sentry_flat() {
    flood_during_a_transfer("syn", FLOOD_FRAMES);
}

/// A UDP flood from the wire, half at a socket the guest never reads (its
/// queue is bounded: the rest is dropped, as on Linux) and half at closed
/// ports: the same bounds hold.
#[test]
fn a_udp_flood_leaves_a_transfer_intact_and_the_sentry_flat() {
    flood_during_a_transfer("udp", FLOOD_FRAMES);
}

/// `count` frames of `kind` (see `hostile_frames.py`) from the peer while
/// the guest echoes a stream back to it.
fn flood_during_a_transfer(kind: &str, count: u32) {
    let net = Topology::new();
    let mac = ip_out(&["-n", &net.a, "-br", "link", "show", "veth0"]);
    let mac = mac
        .split_whitespace()
        .nth(2)
        .expect("a MAC in ip -br link")
        .to_owned();
    let mut guest = sandboxed(
        &net.a,
        &[],
        Guest::python("hostile_frames.py", &["echo", "9000"]),
    )
    .deadline(Duration::from_secs(120))
    .spawn();
    guest.wait_for_line("ready");
    let mut peer = net
        .in_b(Guest::python(
            "hostile_frames.py",
            &[
                "peer",
                &net.a_ip(),
                "9000",
                "veth0",
                &mac,
                &count.to_string(),
                "7",
                kind,
            ],
        ))
        .deadline(Duration::from_secs(120))
        .spawn();
    peer.wait_for_line("connected");
    let before = vm_rss_kib(guest.pid());
    let counted = LinkCounters::of(&net.a, "veth0");
    let peer = peer.wait();
    let after = vm_rss_kib(guest.pid());
    let arrived = LinkCounters::of(&net.a, "veth0").rx_packets - counted.rx_packets;
    peer.assert_success().assert_line("done");
    let flood = peer.line_starting("flood ");
    let refused: u64 = flood
        .split(&['(', ' '][..])
        .nth(4)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of refused frames in {flood:?}"));
    assert!(
        flood.starts_with(&format!("flood {count} frames")),
        "{flood}"
    );
    // Every frame the peer's kernel took crossed the veth (with the echo
    // stream's own packets besides).
    assert!(
        arrived >= u64::from(count) - refused,
        "only {arrived} packets reached the sandbox's veth ({flood})"
    );
    let rounds = peer.line_starting("rounds ");
    assert!(!rounds.starts_with("rounds 0 "), "{rounds}");
    eprintln!(
        "{kind}: {flood}; {arrived} packets in; {rounds}; Sentry {before} KiB before, {after} KiB after"
    );
    assert!(
        after <= before + HOSTILE_GROWTH_KIB,
        "the Sentry grew from {before} KiB to {after} KiB under the flood"
    );
    // It still serves: a new connection from the peer is echoed.
    let again = net
        .in_b(Guest::python(
            "hostile_frames.py",
            &["peer", &net.a_ip(), "9000", "veth0", &mac, "0", "8"],
        ))
        .deadline(Duration::from_secs(30))
        .run();
    again.assert_success().assert_line("done");
    let guest = guest.wait();
    guest.assert_success();
}
