//! End-to-end tests of `smolvisor do --pcap-log`: what the capture holds,
//! read back with tshark, compared with what the guest and its peer said.
//!
//! The guest runs under `--network nat` in namespace A of a
//! [`common::netns::Topology`]; its peers run in B. The conversations are
//! `capture_peer.py` (a fixed byte pattern and a fixed reply) and
//! `nat_peer.py` (random bulk with SHA-256 on both ends).
//!
//! Needs root, `ip`, `tshark` and `python3`.

mod common;

use std::fs;
use std::time::Duration;

use common::netns::{Topology, World, assert_same_stream, bulk_to_peer, tcp_sink, transfer};
use common::pcap::{
    assert_counts_match, assert_guest_stream_complete, assert_nothing_dropped, fields, parse_rows,
    reported, tshark, tshark_with_input,
};
use common::{Guest, Mode, Outcome, Running, ScratchDir};

/// The guest's address on eth0 in nat mode.
const GUEST_IP: &str = "10.0.2.15";
/// The peer's port.
const PORT: &str = "9000";

/// The pattern capture_peer.py sends: byte i is (i * 31 + i / 1024) mod 256.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + i / 1024) % 256) as u8)
        .collect()
}

/// capture_peer.py's reply to `len` bytes.
fn reply(len: usize) -> Vec<u8> {
    format!("thanks for {len} bytes of the pattern\n").into_bytes()
}

/// capture_peer.py's server in B, listening.
fn pattern_server(net: &Topology) -> Running {
    let mut server = net
        .in_b(Guest::python(
            "capture_peer.py",
            &["server", &net.b_ip(), PORT],
        ))
        .deadline(Duration::from_secs(60))
        .spawn();
    server.wait_for_line("ready");
    server
}

/// capture_peer.py's client in the sandbox, sending `len` bytes; checks
/// that both ends agree on what went through.
fn pattern_exchange(net: &Topology, do_args: &[&str], len: usize) -> Outcome {
    let server = pattern_server(net);
    let len_arg = len.to_string();
    let out = net
        .sandbox(
            do_args,
            Guest::python("capture_peer.py", &["client", &net.b_ip(), PORT, &len_arg]),
        )
        .run();
    let server = server.wait();
    server.assert_success();
    // With --pcap-log - the guest's stdout is on stderr.
    let said = format!("{}{}", out.stdout, out.stderr);
    let sent = said.lines().find(|l| l.starts_with("sent "));
    let received = server.stdout.lines().find(|l| l.starts_with("received "));
    assert!(
        matches!((sent, received), (Some(s), Some(r)) if transfer(s) == transfer(r)),
        "the ends disagree: sent {sent:?}, received {received:?}\n{out}\n{server}"
    );
    out.assert_success();
    assert!(
        said.lines().any(|l| l == "lo echoed") && said.lines().any(|l| l == "reply ok"),
        "the guest's exchange did not complete\n{out}"
    );
    out
}

#[test]
fn capture_holds_the_exact_exchange_on_lo_and_eth0() {
    let net = Topology::new();
    let dir = ScratchDir::new("capture");
    let file = dir.path().join("guest.pcapng");
    let len = 200_000;
    let out = pattern_exchange(&net, &["--pcap-log", file.to_str().unwrap()], len);
    assert_nothing_dropped(&out);

    let rows = fields(
        &file,
        "",
        &[
            "frame.interface_name",
            "frame.protocols",
            "frame.packet_flags_direction",
            "ip.src",
            "ip.dst",
        ],
    );
    assert_counts_match(&out, &rows);
    let on = |name: &'static str| rows.iter().filter(move |r| r[0] == name);
    // eth0 is Ethernet, lo is raw IP (no link header at all).
    assert!(on("lo").count() > 0, "no frame on lo");
    assert!(on("eth0").count() > 0, "no frame on eth0");
    for row in on("lo") {
        assert!(
            row[1].starts_with("raw:ip:"),
            "lo frame is not raw IP: {row:?}"
        );
    }
    for row in on("eth0") {
        assert!(
            row[1].starts_with("eth:"),
            "eth0 frame is not Ethernet: {row:?}"
        );
    }
    // Both directions, each marked as seen from the guest: outbound 2, inbound 1.
    let from_guest: Vec<_> = on("eth0").filter(|r| r[3] == GUEST_IP).collect();
    let to_guest: Vec<_> = on("eth0").filter(|r| r[4] == GUEST_IP).collect();
    assert!(
        !from_guest.is_empty() && !to_guest.is_empty(),
        "one direction is missing"
    );
    assert!(
        from_guest.iter().all(|r| r[2] == "0x00000002")
            && to_guest.iter().all(|r| r[2] == "0x00000001"),
        "direction flags: from the guest {from_guest:?}, to the guest {to_guest:?}"
    );

    // tshark's reassembly of the one TCP stream: the client's segments as
    // hex lines, the server's indented by a tab.
    let follow = tshark(&["-r", file.to_str().unwrap(), "-q", "-z", "follow,tcp,raw,0"]);
    assert!(
        follow.contains(&format!("Node 0: {GUEST_IP}:"))
            && follow.contains(&format!("Node 1: {}:{PORT}", net.b_ip())),
        "stream 0 is not the guest's connection:\n{follow}"
    );
    let (mut client, mut server) = (Vec::new(), Vec::new());
    let body = follow
        .split_once("Node 1: ")
        .expect("follow header")
        .1
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("====="));
    for line in body {
        let (to, hex) = match line.strip_prefix('\t') {
            Some(hex) => (&mut server, hex),
            None => (&mut client, line),
        };
        to.extend(decode_hex(hex));
    }
    assert!(
        client == pattern(len),
        "the reassembled client stream differs from the pattern ({} bytes, expected {len})",
        client.len()
    );
    assert_eq!(
        String::from_utf8_lossy(&server),
        String::from_utf8_lossy(&reply(len)),
        "the reassembled reply"
    );
}

fn decode_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex line {hex:?}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn capture_to_stdout_is_pcapng_and_the_guests_stdout_goes_to_stderr() {
    let net = Topology::new();
    let out = pattern_exchange(&net, &["--pcap-log", "-"], 5_000);
    assert_nothing_dropped(&out);
    let capture = &out.stdout_bytes;
    // A pcapng file starts with a Section Header Block.
    assert!(
        capture.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]),
        "stdout does not start with a pcapng section header: {:02x?}",
        &capture[..capture.len().min(16)]
    );
    let text = tshark_with_input(
        &["-r", "-", "-T", "fields", "-e", "frame.interface_name"],
        capture,
    );
    assert_counts_match(&out, &parse_rows(&text));
    // The guest's lines went to stderr and nowhere into the capture.
    for line in ["lo echoed", "reply ok", "sent 5000 "] {
        assert!(
            !capture.windows(line.len()).any(|w| w == line.as_bytes()),
            "the guest's output {line:?} is in the capture"
        );
    }
    assert!(
        out.stderr.lines().any(|l| l.starts_with("sent 5000 ")),
        "the guest's stdout is not on stderr\n{out}"
    );
}

/// 64 MiB: about a thousand 64 KiB segments through the sniffer's buffer.
const BULK: u64 = 64 << 20;

#[test]
fn capture_of_a_64_mib_transfer_keeps_every_frame() {
    let net = Topology::new();
    let dir = ScratchDir::new("capture");
    let file = dir.path().join("bulk.pcapng");
    let (sent, sink) = bulk_to_peer(&net, &["--pcap-log", file.to_str().unwrap()], PORT, BULK);
    assert_same_stream("guest to peer", &sent, &sink, BULK);
    assert_nothing_dropped(&sent);
    let rows = fields(&file, "", &["frame.interface_name"]);
    assert_counts_match(&sent, &rows);
    assert_guest_stream_complete(&file, GUEST_IP, PORT, BULK);
}

#[test]
fn snaplen_truncates_frames_but_keeps_their_length() {
    let net = Topology::new();
    let dir = ScratchDir::new("capture");
    let file = dir.path().join("short.pcapng");
    let len = 200_000;
    let out = pattern_exchange(
        &net,
        &["--pcap-log", file.to_str().unwrap(), "--pcap-snaplen", "96"],
        len,
    );
    assert_nothing_dropped(&out);
    let rows = fields(
        &file,
        "",
        &[
            "frame.interface_name",
            "frame.cap_len",
            "frame.len",
            "ip.len",
        ],
    );
    assert_counts_match(&out, &rows);
    let num = |s: &str| -> u64 { s.parse().unwrap_or(0) };
    let mut longer = 0;
    for row in &rows {
        let (cap, orig) = (num(&row[1]), num(&row[2]));
        assert_eq!(cap, orig.min(96), "captured length of {row:?}");
        longer += usize::from(orig > 96);
        // The original size is the IP packet's own, plus Ethernet's 14 on eth0.
        if !row[3].is_empty() {
            let link = if row[0] == "eth0" { 14 } else { 0 };
            assert_eq!(
                orig,
                num(&row[3]) + link,
                "frame.len against ip.len: {row:?}"
            );
        }
    }
    assert!(longer > 0, "no frame was longer than the snaplen");
    // The headers that survived still describe every byte sent.
    assert_guest_stream_complete(&file, GUEST_IP, PORT, len as u64);
}

#[test]
fn ring_of_capture_files_wraps_within_its_bounds() {
    let net = Topology::new();
    let dir = ScratchDir::new("capture");
    let file = dir.path().join("ring.pcapng");
    let b_ip = net.b_ip();
    let sink = tcp_sink(&net, PORT);
    // 4 MiB: several times the ring's 600 kB.
    let out = net
        .sandbox(
            &[
                "--pcap-log",
                file.to_str().unwrap(),
                "--pcap-max-size",
                "200000",
                "--pcap-max-files",
                "3",
            ],
            Guest::python("nat_peer.py", &["tcp-send", &b_ip, PORT, "4194304"]),
        )
        .run();
    let sink = sink.wait();
    out.assert_success();
    sink.assert_success();
    assert_eq!(
        transfer(out.line_starting("sent ")),
        transfer(sink.line_starting("received "))
    );
    assert_nothing_dropped(&out);

    let mut names: Vec<String> = fs::read_dir(dir.path())
        .expect("read the capture dir")
        .map(|e| e.expect("dir entry").file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ring.pcapng", "ring.pcapng.1", "ring.pcapng.2"],
        "the files in the capture's directory"
    );
    let mut in_files = 0;
    for name in &names {
        let path = dir.path().join(name);
        let size = fs::metadata(&path).expect("stat").len();
        assert!(size <= 200_000, "{name} has {size} bytes");
        let rows = fields(&path, "", &["frame.interface_name"]);
        assert!(!rows.is_empty(), "{name} holds no frame");
        in_files += rows.len() as u64;
    }
    // The ring wrapped: the oldest frames were overwritten.
    let (total, _) = reported(&out);
    assert!(
        in_files < total,
        "the files hold {in_files} frames of {total}: the ring did not wrap"
    );
}

#[test]
fn an_uncreatable_capture_file_stops_before_the_guest_runs() {
    let dir = ScratchDir::new("capture");
    let file = dir.path().join("missing").join("x.pcapng");
    let out = Guest::sh("echo the-guest-ran")
        .mode(Mode::Sandbox)
        .do_args(&["--network", "none", "--pcap-log", file.to_str().unwrap()])
        .run();
    assert!(
        !out.timed_out && out.status.code().is_some_and(|c| c != 0),
        "smolvisor should fail\n{out}"
    );
    assert!(
        out.stderr
            .contains(&format!("cannot create capture file {}", file.display())),
        "no clear message naming the file\n{out}"
    );
    assert!(
        !out.stdout.contains("the-guest-ran") && !out.stderr.contains("the-guest-ran"),
        "the guest ran\n{out}"
    );
    assert!(!file.exists(), "the capture file was created");
}
