//! End-to-end tests of `smolvisor do --impair`: delay that ping measures,
//! loss that TCP recovers from byte for byte, the same losses for the same
//! seed, dropped frames marked in the capture, and bad specs refused.
//!
//! The guest runs under `--network nat` in namespace A of a
//! [`common::netns::Topology`]; its peer is B. Needs root, `ip`, `ping`
//! (iputils), `tshark` and `python3`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::netns::{TakeOver, Topology, World, assert_same_stream, bulk_to_peer};
use common::pcap::fields;
use common::{Guest, Outcome, SMOLVISOR, ScratchDir};

/// `ping -c COUNT -i 0.05 PEER` in the sandbox with `extra` options.
fn ping(net: &impl World, extra: &[&str], count: u32) -> Outcome {
    let count = count.to_string();
    let peer = net.peer_ip();
    let argv = ["ping", "-n", "-c", &count, "-i", "0.05", "-W", "1", &peer];
    net.sandbox(extra, Guest::new(&argv)).run()
}

/// The round-trip times ping printed, in milliseconds, by icmp_seq.
fn rtts(out: &Outcome) -> Vec<(u32, f64)> {
    out.stdout
        .lines()
        .filter_map(|l| {
            let seq = l
                .split("icmp_seq=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            let ms = l.split("time=").nth(1)?.split(' ').next()?.parse().ok()?;
            Some((seq, ms))
        })
        .collect()
}

#[test]
fn delay_lengthens_pings_round_trip_by_twice_the_delay() {
    let net = Topology::new();
    let plain = rtts(&ping(&net, &[], 5));
    assert_eq!(plain.len(), 5, "ping without impairment lost replies");
    let base = plain.iter().map(|r| r.1).fold(0.0, f64::max);
    assert!(base < 40.0, "an unimpaired round trip took {base} ms");

    // The first requests also wait for ARP, itself delayed: from the
    // fourth on (sent 150 ms in), each takes the delay only.
    let out = ping(&net, &["--impair", "delay=50ms,jitter=5ms"], 7);
    let slow = rtts(&out);
    assert_eq!(slow.len(), 7, "delay alone lost replies\n{out}");
    for (seq, ms) in slow {
        // 50 ms each way, give or take up to 5 ms of jitter each way (and
        // a loaded machine's lateness above).
        let most = if seq < 4 { 300.0 } else { 150.0 + base };
        assert!(
            (90.0..most).contains(&ms),
            "icmp_seq={seq}: {ms} ms, expected about 100\n{out}"
        );
    }

    // One way only: half of it.
    let out = ping(&net, &["--impair", "dir=in,delay=60ms"], 6);
    let one_way = rtts(&out);
    assert_eq!(one_way.len(), 6, "{out}");
    for (seq, ms) in one_way {
        let most = if seq < 4 { 200.0 } else { 110.0 + base };
        assert!((60.0..most).contains(&ms), "icmp_seq={seq}: {ms} ms\n{out}");
    }
}

#[test]
fn tcp_through_a_lossy_link_still_delivers_every_byte() {
    let net = Topology::new();
    let bytes = 8 << 20;
    let spec = "loss=5%,duplicate=5%,reorder=2%,seed=5";
    let dir = ScratchDir::new("impair-tcp");
    let file = dir.path().join("tcp.pcapng");
    let extra = ["--impair", spec, "--pcap-log", file.to_str().unwrap()];
    let (sent, sink) = bulk_to_peer(&net, &extra, "9000", bytes);
    assert_same_stream("guest to peer through loss", &sent, &sink, bytes);
    // Segments were lost on the way, and duplicated.
    let lost = fields(
        &file,
        "tcp && frame.comment contains \"dropped (loss)\"",
        &["frame.number"],
    );
    let twice = fields(
        &file,
        "tcp && frame.comment contains \"duplicate\"",
        &["frame.number"],
    );
    assert!(
        !lost.is_empty() && !twice.is_empty(),
        "{} lost, {} twice",
        lost.len(),
        twice.len()
    );
}

#[test]
fn a_rate_limit_bounds_a_transfers_throughput() {
    let net = Topology::new();
    let bytes = 2 << 20;
    // 16 Mbit: 2 MiB take at least a second.
    let (sent, sink) = bulk_to_peer(&net, &["--impair", "dir=out,rate=16mbit"], "9000", bytes);
    assert_same_stream("guest to peer at 16 Mbit/s", &sent, &sink, bytes);
    let secs = sent.elapsed.as_secs_f64();
    assert!(
        (1.0..4.0).contains(&secs),
        "2 MiB at 16 Mbit/s took {secs} s\n{sent}"
    );
}

/// Has the sandbox (with `extra` options) take `bytes` from a source in
/// the peer on `port`; returns what the source and the receiver said.
fn bulk_from_peer_with(
    net: &Topology,
    extra: &[&str],
    port: &str,
    bytes: u64,
) -> (Outcome, Outcome) {
    let peer = net.b_ip();
    let mut source = net
        .peer(Guest::python(
            "nat_peer.py",
            &["tcp-source", &peer, port, &bytes.to_string()],
        ))
        .deadline(Duration::from_secs(60))
        .spawn();
    source.wait_for_line("ready");
    let received = net
        .sandbox(
            extra,
            Guest::python("nat_peer.py", &["tcp-recv", &peer, port]),
        )
        .deadline(Duration::from_secs(60))
        .run();
    (source.wait(), received)
}

/// Frames of `file` whose comment holds `word`.
fn commented(file: &std::path::Path, word: &str) -> usize {
    fields(
        file,
        &format!("tcp && frame.comment contains \"{word}\""),
        &["frame.number"],
    )
    .len()
}

#[test]
fn corrupted_frames_never_reach_either_end() {
    // nat's cable trusts its frames: corruption must make the stack check
    // checksums (and fill them into frames from the gateway), or damaged
    // bytes would reach the peer or the guest.
    let net = Topology::new();
    let bytes = 4 << 20;
    let dir = ScratchDir::new("impair-corrupt");
    let up = dir.path().join("up.pcapng");
    let extra = [
        "--impair",
        "corrupt=5%,seed=8",
        "--pcap-log",
        up.to_str().unwrap(),
    ];
    let (sent, sink) = bulk_to_peer(&net, &extra, "9000", bytes);
    assert_same_stream("guest to peer through corruption", &sent, &sink, bytes);
    assert!(commented(&up, "corrupted") > 0, "nothing was corrupted");

    let down = dir.path().join("down.pcapng");
    let extra = [
        "--impair",
        "corrupt=5%,seed=9",
        "--pcap-log",
        down.to_str().unwrap(),
    ];
    let (source, received) = bulk_from_peer_with(&net, &extra, "9001", bytes);
    assert_same_stream(
        "peer to guest through corruption",
        &source,
        &received,
        bytes,
    );
    let flagged = fields(
        &down,
        "frame.packet_flags_crc_error == 1",
        &["frame.number"],
    );
    assert!(!flagged.is_empty(), "no frame carries the CRC-error flag");
}

#[test]
fn a_taken_over_interface_is_impaired_too() {
    // sandbox mode: AF_PACKET on the veth, whose offloads the impairment hides.
    let net = Topology::new();
    let world = TakeOver(&net);
    let out = ping(&world, &["--impair", "delay=40ms"], 6);
    let got = rtts(&out);
    assert_eq!(got.len(), 6, "{out}");
    for (seq, ms) in got {
        let most = if seq < 4 { 300.0 } else { 200.0 };
        assert!((80.0..most).contains(&ms), "icmp_seq={seq}: {ms} ms\n{out}");
    }
    let bytes = 4 << 20;
    let (sent, sink) = bulk_to_peer(&world, &["--impair", "loss=2%,seed=4"], "9002", bytes);
    assert_same_stream("taken-over veth through loss", &sent, &sink, bytes);
}

/// The icmp_seq of every reply ping received.
fn answered(out: &Outcome) -> BTreeSet<u32> {
    rtts(out).into_iter().map(|r| r.0).collect()
}

/// The fate of each frame the guest sent, in order, as the capture
/// records it: true for dropped.
fn fates_sent(net: &Topology, spec: &str) -> Vec<bool> {
    let dir = ScratchDir::new("impair-seed");
    let file = dir.path().join("seed.pcapng");
    let extra = ["--impair", spec, "--pcap-log", file.to_str().unwrap()];
    ping(net, &extra, 30);
    let rows = fields(
        &file,
        "frame.packet_flags_direction == 2",
        &["frame.comment"],
    );
    rows.iter().map(|r| r[0].contains("dropped")).collect()
}

#[test]
fn the_same_seed_drops_the_same_frames() {
    let net = Topology::new();
    // Which ping a fate falls on may shift by a frame between runs (the
    // guest sometimes asks for the gateway's MAC twice), so the fates are
    // compared frame by frame as sent.
    let spec = |seed| format!("dir=out,loss=30%,seed={seed}");
    let a = fates_sent(&net, &spec(3));
    let b = fates_sent(&net, &spec(3));
    let c = fates_sent(&net, &spec(4));
    let n = a.len().min(b.len()).min(c.len());
    assert!(n >= 30, "{} frames sent", n);
    let lost = a[..n].iter().filter(|&&d| d).count();
    assert!((3..=20).contains(&lost), "30% loss dropped {lost} of {n}");
    assert_eq!(a[..n], b[..n], "the same seed dropped other frames");
    assert_ne!(a[..n], c[..n], "another seed dropped the same frames");
}

#[test]
fn the_capture_marks_the_frames_that_were_dropped() {
    let net = Topology::new();
    let dir = ScratchDir::new("impair-pcap");
    let file = dir.path().join("lossy.pcapng");
    let out = ping(
        &net,
        &[
            "--impair",
            "loss=25%,seed=11",
            "--pcap-log",
            file.to_str().unwrap(),
        ],
        30,
    );
    let replies = answered(&out).len();
    let rows = fields(&file, "icmp", &["icmp.type", "frame.comment"]);
    let dropped = |ty: &str| {
        rows.iter()
            .filter(|r| r[0] == ty && r[1].contains("dropped (loss)"))
            .count()
    };
    let delivered = |ty: &str| {
        rows.iter()
            .filter(|r| r[0] == ty && r[1].is_empty())
            .count()
    };
    assert!(
        dropped("8") + dropped("0") > 0,
        "no dropped frame is marked:\n{rows:?}\n{out}"
    );
    // Every request is recorded once, dropped or sent; every reply the
    // guest saw is recorded unmarked, the lost ones marked.
    assert_eq!(dropped("8") + delivered("8"), 30, "{rows:?}");
    assert_eq!(delivered("0"), replies, "{rows:?}\n{out}");
    assert_eq!(dropped("0") + delivered("0"), delivered("8"), "{rows:?}");
    // A display filter finds them (ARP frames may be among them too).
    let marked = fields(
        &file,
        "frame.comment contains \"dropped\"",
        &["frame.number"],
    );
    assert!(marked.len() >= dropped("8") + dropped("0"), "{marked:?}");
}

/// `smolvisor do --network none ARGS -- true`, natively.
fn smolvisor_do(args: &[&str]) -> std::process::Output {
    Command::new(SMOLVISOR)
        .arg("do")
        .args(args)
        .args(["--", "true"])
        .output()
        .expect("run smolvisor")
}

#[test]
fn a_bad_impairment_is_refused_with_a_message_that_says_why() {
    let out = smolvisor_do(&["--impair", "loss=abc"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("loss=abc: expected a percentage"), "{err}");

    let out = smolvisor_do(&["--impair", "delay=20,loss=1%"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("expected a unit"), "{err}");

    let out = smolvisor_do(&["--network", "none", "--impair", "eth9:loss=1%"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some_and(|c| c != 0), "{err}");
    assert!(err.contains("--impair names eth9"), "{err}");
}
