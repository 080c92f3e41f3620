//! End-to-end tests of `smolvisor do --network tap:NAME --address ADDR/PREFIX
//! [--gateway ADDR]`: the guest's NIC rides an existing TAP device.
//!
//! Each test makes its own namespace ([`common::netns::TapNet`]) with a TAP
//! device `tap0` at 10.211.N.1/24 and 10.212.N.1 on its `lo`, runs
//! `smolvisor` and the peers there, and removes it all, even on a panic.
//! The guest is 10.211.N.2/24. The peers see the guest's own address:
//! nothing is translated on this path.
//!
//! Needs root, `ip` (with tuntap), `curl`, `ping` (iputils) and `python3`.

mod common;

use common::netns::{
    TapNet, World, assert_fetched, assert_same_stream, bulk_from_peer, bulk_to_peer, fetch,
    http_server, serve_from_peer, text_file,
};
use common::{Guest, Mode, ScratchDir};

/// 16 MiB: many times the TAP's queue and the stack's buffers.
const BULK: u64 = 16 << 20;

#[test]
fn curl_through_a_tap_fetches_a_file_from_the_namespace() {
    let net = TapNet::new();
    let file = serve_from_peer(&net, "tap.txt", 300_000);
    let out = net.sandbox(&[], fetch(&file.url)).run();
    assert_fetched(&out, &file.body);
    let log = file.server.stderr_so_far();
    assert!(
        log.contains(&format!("{} - - ", net.guest_ip())) && log.contains("GET /tap.txt"),
        "the server's log does not show the guest's own address:\n{log}"
    );
}

#[test]
fn tcp_bulk_from_the_guest_through_a_tap_is_intact() {
    let net = TapNet::new();
    let (sent, sink) = bulk_to_peer(&net, &[], "9000", BULK);
    assert_same_stream("guest to namespace", &sent, &sink, BULK);
    sink.assert_line(&format!("accepted from {}", net.guest_ip()));
}

#[test]
fn tcp_bulk_to_the_guest_through_a_tap_is_intact() {
    let net = TapNet::new();
    let (source, received) = bulk_from_peer(&net, "9001", BULK);
    assert_same_stream("namespace to guest", &source, &received, BULK);
    source.assert_line(&format!("accepted from {}", net.guest_ip()));
}

#[test]
fn ping_through_a_tap_gets_every_reply() {
    let net = TapNet::new();
    let to = net.host_ip();
    let out = net
        .sandbox(
            &[],
            Guest::new(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &to]),
        )
        .run();
    out.assert_success();
    let replies = out
        .stdout
        .lines()
        .filter(|l| l.contains(&format!("bytes from {to}: icmp_seq=")))
        .count();
    assert_eq!(replies, 3, "replies to ping\n{out}");
    assert!(
        out.line_starting("3 packets transmitted")
            .contains(" 3 received"),
        "ping's summary\n{out}"
    );
}

#[test]
fn the_guest_sees_eth0_with_its_tap_address() {
    let net = TapNet::new();
    let out = net
        .sandbox(&[], Guest::sh("ip -br addr; echo ---; ip route"))
        .run();
    out.assert_success();
    let (addrs, routes) = out.stdout.split_once("---\n").expect("separator");
    let eth0: Vec<&str> = addrs
        .lines()
        .find(|l| l.starts_with("eth0 "))
        .unwrap_or_else(|| panic!("no eth0 in `ip -br addr`\n{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        eth0,
        ["eth0", "UP", &format!("{}/24", net.guest_ip())],
        "eth0 in `ip -br addr`\n{out}"
    );
    let names: Vec<&str> = addrs
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["lo", "eth0"], "the guest's interfaces\n{out}");
    // Without --gateway, only the TAP's own subnet is reachable.
    assert!(
        routes.contains(&format!("10.211.{}.0/24 dev eth0", net.n)) && !routes.contains("default"),
        "the routes without --gateway\n{out}"
    );
}

#[test]
fn a_gateway_reaches_an_address_beyond_the_tap() {
    let net = TapNet::new();
    let dir = ScratchDir::new("www");
    let body = text_file(&dir, "far.txt", 50_000);
    let _server = http_server(|g| net.native(g), &net.far_ip(), 8080, &dir);
    let url = format!("http://{}:8080/far.txt", net.far_ip());
    let gateway = net.host_ip();
    let out = net.sandbox(&["--gateway", &gateway], fetch(&url)).run();
    out.assert_success();
    assert!(
        out.stdout == body,
        "the body differs via the gateway\n{out}"
    );

    // Without the gateway there is no route to it.
    let unrouted = net
        .sandbox(
            &[],
            Guest::python("nat_peer.py", &["connect", &net.far_ip(), "8080"]),
        )
        .run();
    unrouted.assert_success().assert_line("ENETUNREACH OSError");
}

#[test]
fn a_missing_tap_device_is_refused_before_the_guest_runs() {
    let net = TapNet::new();
    let out = Guest::sh("echo the-guest-ran")
        .mode(Mode::Sandbox)
        .netns(&net.ns)
        .do_args(&[
            "--network",
            "tap:nosuchtap",
            "--address",
            &format!("{}/24", net.guest_ip()),
        ])
        .run();
    assert!(
        !out.timed_out && out.status.code().is_some_and(|c| c != 0),
        "smolvisor should fail\n{out}"
    );
    assert!(
        out.stderr.contains("no TAP device named nosuchtap"),
        "no clear message naming the device\n{out}"
    );
    assert!(
        !out.stdout.contains("the-guest-ran"),
        "the guest ran\n{out}"
    );
}
