//! pcapng capture of both stacks' NICs, checked with tshark: the payload a
//! TCP stream reassembles to, interface names and link types, directions,
//! nanosecond timestamps, snaplen, frame counts against independent counters
//! at the links, a ring of files, write failures, and golden files.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, SystemTime};

use common::*;
use netstack::link::{
    Capture, CaptureClock, CaptureConfig, CaptureSummary, Layer, Layered, Link, Loopback, PairEnd,
    Ring, pair, pass_on,
};
use netstack::{Domain, Duration, Instant, Protocol, Stack, StackConfig, testbed};

// ---- set-up -----------------------------------------------------------------

/// Every frame a [`Counted`] link saw, in order: (interface, length).
type FrameLog = Arc<Mutex<Vec<(&'static str, usize)>>>;

/// Counts the frames through a link, independently of the sniffer around it.
struct Counted {
    name: &'static str,
    log: FrameLog,
    count_received: bool,
}

impl Layer for Counted {
    fn inbound(&mut self, _link: &mut dyn Link, _now: Instant, f: Vec<u8>) -> Option<Vec<u8>> {
        if self.count_received {
            self.log.lock().unwrap().push((self.name, f.len()));
        }
        Some(f)
    }
    fn outbound(&mut self, link: &mut dyn Link, now: Instant, frame: Vec<u8>, mss: Option<u16>) {
        self.log.lock().unwrap().push((self.name, frame.len()));
        pass_on(link, now, frame, mss);
    }
}

/// Host `n` of the testbed, its `lo` and `eth0` (on `end`) recorded into `cap`.
fn captured_host(n: u8, end: PairEnd, cap: &Capture, log: &FrameLog, now: Instant) -> Stack {
    // lo hands every frame it is sent straight back: recorded once, on the way out.
    let counted = Counted {
        name: "lo",
        log: Arc::clone(log),
        count_received: false,
    };
    let lo = Layered::wrap(Loopback::new(), counted);
    let lo = cap.wrap(lo, "lo").sent_only();
    let cfg = StackConfig {
        random_seed: u64::from(n),
        ..StackConfig::default()
    };
    let mut s = Stack::with_loopback(cfg, now, Box::new(lo));
    let counted = Counted {
        name: "eth0",
        log: Arc::clone(log),
        count_received: true,
    };
    let eth = Layered::wrap(end, counted);
    let eth = cap.wrap(eth, "eth0");
    s.add_nic(Box::new(eth), testbed::host_nic(n)).unwrap();
    s
}

/// Hosts a and b on a cable; a's NICs are always captured, b's when asked.
struct Captured {
    a: Stack,
    b: Stack,
    now: Instant,
    cap_a: Capture,
    log_a: FrameLog,
    cap_b: Option<(Capture, FrameLog)>,
}

impl Sim for Captured {
    fn clock(&mut self) -> &mut Instant {
        &mut self.now
    }
    fn stacks(&mut self) -> impl Iterator<Item = &mut Stack> {
        [&mut self.a, &mut self.b].into_iter()
    }
}

fn captured_a(n: &mut Captured) -> &mut Stack {
    &mut n.a
}

fn captured_b(n: &mut Captured) -> &mut Stack {
    &mut n.b
}

impl Captured {
    fn new(cap_a: Capture, cap_b: Option<Capture>) -> Captured {
        let now = Instant::from_secs(1);
        let (ea, eb) = pair(1500, Duration::from_micros(50), false);
        let log_a = FrameLog::default();
        let a = captured_host(1, ea, &cap_a, &log_a, now);
        let (b, cap_b) = match cap_b {
            Some(cap) => {
                let log = FrameLog::default();
                (captured_host(2, eb, &cap, &log, now), Some((cap, log)))
            }
            None => {
                let cfg = StackConfig {
                    random_seed: 2,
                    ..StackConfig::default()
                };
                (testbed::host(2, Box::new(eb), &cfg, now), None)
            }
        };
        Captured {
            a,
            b,
            now,
            cap_a,
            log_a,
            cap_b,
        }
    }
}

/// A directory under the system's temporary one, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("sniffer-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// 2023-11-14 22:13:20.123456789 UTC: sub-microsecond digits that a
/// microsecond-resolution file could not hold.
const EPOCH: StdDuration = StdDuration::new(1_700_000_000, 123_456_789);

fn stack_clock() -> CaptureConfig {
    CaptureConfig {
        clock: CaptureClock::Stack { epoch: EPOCH },
        ..CaptureConfig::default()
    }
}

// ---- tshark -----------------------------------------------------------------

/// Runs tshark on `file`; it must succeed and complain about nothing.
fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("tshark (Debian package tshark) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // As root, tshark warns on every run; anything else is a problem.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("could be dangerous") && !l.trim().is_empty())
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "tshark {args:?} on {}: {}\n{stderr}",
        file.display(),
        out.status
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One line per frame, the given fields separated by tabs.
fn fields(file: &Path, names: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["-T", "fields", "-E", "occurrence=f"];
    for n in names {
        args.extend(["-e", n]);
    }
    tshark(file, &args)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn frame_count(file: &Path) -> usize {
    fields(file, &["frame.number"]).len()
}

/// The two directions of TCP stream `stream`, as `follow,tcp,raw` reassembles
/// them: (from the node that spoke first, from the other).
fn follow_tcp(file: &Path, stream: u32) -> (Vec<u8>, Vec<u8>) {
    let out = tshark(file, &["-q", "-z", &format!("follow,tcp,raw,{stream}")]);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut in_body = false;
    for line in out.lines() {
        if line.starts_with("Node 1:") {
            in_body = true;
            continue;
        }
        if !in_body || line.starts_with("====") {
            continue;
        }
        // The second node's data is indented by a tab.
        let (to, hex) = match line.strip_prefix('\t') {
            Some(h) => (&mut second, h),
            None => (&mut first, line),
        };
        to.extend(decode_hex(hex.trim()));
    }
    (first, second)
}

fn decode_hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex line {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `frame.packet_flags_direction` as tshark prints it (the masked `epb_flags`).
const INBOUND: &str = "0x00000001";
const OUTBOUND: &str = "0x00000002";

/// The wall-clock time as tshark prints `frame.time_epoch`.
fn epoch_string(t: StdDuration) -> String {
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

// ---- traffic ----------------------------------------------------------------

const REQUEST_LEN: usize = 3000;
const REPLY: &[u8] = b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello";

/// A small TCP exchange a → b (a request over two segments, a reply, both
/// sides close), then a UDP datagram over a's `lo`. Returns the request.
fn tcp_exchange(net: &mut Captured) -> Vec<u8> {
    let to = sa(B4, 8080);
    let l = listen_on(&mut net.b, to, 8);
    let (c, s, _) = connect_between(net, captured_a, captured_b, l, to, Duration::from_secs(5));
    let request = tagged_bytes(1, REQUEST_LEN);
    deliver(net, captured_a, c, captured_b, s, &request);
    deliver(net, captured_b, s, captured_a, c, REPLY);
    net.a.close(c).unwrap();
    net.b.close(s).unwrap();
    net.run_for(Duration::from_secs(1));

    let lo = sa(std::net::Ipv4Addr::LOCALHOST, 9);
    let rx = udp_socket(&mut net.a, Some(lo));
    let tx = udp_socket(&mut net.a, None);
    assert_eq!(net.a.send_to(tx, b"over lo", lo), Ok(7));
    net.run_until(Duration::from_secs(1), |n| {
        n.a.readiness(rx).unwrap().readable
    });
    assert_eq!(take(&mut net.a, rx).map(|d| d.0), Some(b"over lo".to_vec()));
    request
}

/// UDP both ways between a and b, then a pings b over IPv4 and IPv6.
fn udp_and_ping(net: &mut Captured) {
    let sb = udp_socket(&mut net.b, Some(sa(B4, 34567)));
    let sa_ = udp_socket(&mut net.a, Some(sa(A4, 40000)));
    assert_eq!(net.a.send_to(sa_, b"question", sa(B4, 34567)), Ok(8));
    net.run_until(Duration::from_secs(1), |n| {
        n.b.readiness(sb).unwrap().readable
    });
    let (q, from) = take(&mut net.b, sb).unwrap();
    assert_eq!(q, b"question");
    assert_eq!(net.b.send_to(sb, b"answer", from), Ok(6));
    net.run_until(Duration::from_secs(1), |n| {
        n.a.readiness(sa_).unwrap().readable
    });
    assert_eq!(take(&mut net.a, sa_).map(|d| d.0), Some(b"answer".to_vec()));

    for (domain, to, ty) in [(Domain::Ipv4, sa(B4, 0), 8), (Domain::Ipv6, sa(B6, 0), 128)] {
        let p = net.a.socket(domain, Protocol::Icmp).unwrap();
        let req = echo_request(ty, 1, b"ping payload");
        assert_eq!(net.a.send_to(p, &req, to), Ok(req.len()));
        net.run_until(Duration::from_secs(2), |n| {
            n.a.readiness(p).unwrap().readable
        });
        assert_eq!(take(&mut net.a, p).unwrap().1, to);
    }
    net.run_for(Duration::from_millis(500));
}

/// Moves `total` bytes a → b over a new connection.
fn bulk(net: &mut Captured, port: u16, total: usize) {
    let to = sa(B4, port);
    let l = listen_on(&mut net.b, to, 8);
    let (c, s, _) = connect_between(net, captured_a, captured_b, l, to, Duration::from_secs(5));
    let chunk = tagged_bytes(2, 64 << 10);
    let (mut sent, mut got) = (0, 0);
    let mut buf = vec![0u8; 64 << 10];
    while got < total {
        while sent < total {
            match net.a.send(c, &chunk[..chunk.len().min(total - sent)]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        net.step(Duration::from_millis(10));
        read_ready(&mut net.b, s, &mut buf, |d| got += d.len());
    }
    net.a.close(c).unwrap();
    net.b.close(s).unwrap();
    net.run_for(Duration::from_secs(1));
}

fn assert_counts_consistent(sum: &CaptureSummary) {
    for i in &sum.interfaces {
        assert_eq!(i.seen, i.written + i.dropped, "{}: {i:?}", i.name);
    }
}

// ---- tests ------------------------------------------------------------------

#[test]
fn tcp_exchange_is_captured_on_every_nic() {
    let dir = TempDir::new("exchange");
    let (fa, fb) = (dir.file("a.pcapng"), dir.file("b.pcapng"));
    let cap_a = Capture::create(&fa, stack_clock()).unwrap();
    let cap_b = Capture::create(&fb, stack_clock()).unwrap();
    let mut net = Captured::new(cap_a, Some(cap_b));
    let first_frame_at = net.now;
    let request = tcp_exchange(&mut net);
    let sum_a = net.cap_a.finish();
    let (cap_b, log_b) = net.cap_b.take().unwrap();
    let sum_b = cap_b.finish();
    assert!(sum_a.error.is_none() && sum_b.error.is_none());
    assert_counts_consistent(&sum_a);
    assert_eq!(sum_a.dropped() + sum_b.dropped(), 0);

    for (file, log, sum) in [(&fa, &net.log_a, &sum_a), (&fb, &log_b, &sum_b)] {
        // The stream as tshark reassembles it, from either host's capture.
        let (to_server, to_client) = follow_tcp(file, 0);
        assert_eq!(to_server, request, "{}: client to server", file.display());
        assert_eq!(to_client, REPLY, "{}: server to client", file.display());

        let rows = fields(
            file,
            &[
                "frame.interface_name",
                "frame.protocols",
                "frame.packet_flags_direction",
                "ip.src",
                "frame.len",
                "frame.cap_len",
            ],
        );
        let log = log.lock().unwrap();
        assert_eq!(rows.len(), log.len(), "frames in the file and at the links");
        let written: u64 = sum.interfaces.iter().map(|i| i.written).sum();
        assert_eq!(rows.len() as u64, written);
        for (row, (name, len)) in rows.iter().zip(log.iter()) {
            assert_eq!(row[0], *name, "interface of {row:?}");
            assert_eq!(row[4], len.to_string(), "length of {row:?}");
            assert_eq!(row[5], row[4], "whole frame captured: {row:?}");
            if *name == "lo" {
                // LINKTYPE_RAW: the packet starts with its IP header.
                assert!(row[1].starts_with("raw:ip:"), "{row:?}");
                assert_eq!(row[2], OUTBOUND, "lo frames are recorded as outbound");
            } else {
                assert!(row[1].starts_with("eth:ethertype:"), "{row:?}");
            }
        }
        assert!(rows.iter().any(|r| r[0] == "lo") == (file == &fa));
    }

    // Directions: a's IPv4 frames on eth0 go out when a is their source and
    // come in otherwise; b's file says the opposite of the same frames.
    for (file, own) in [(&fa, A4), (&fb, B4)] {
        let rows = fields(
            file,
            &[
                "frame.interface_name",
                "frame.packet_flags_direction",
                "ip.src",
            ],
        );
        let ip_rows: Vec<_> = rows
            .iter()
            .filter(|r| r[0] == "eth0" && !r[2].is_empty())
            .collect();
        assert!(ip_rows.len() >= 8, "{rows:?}");
        for r in ip_rows {
            let expect = if r[2] == own.to_string() {
                OUTBOUND
            } else {
                INBOUND
            };
            assert_eq!(r[1], expect, "{}: {r:?}", file.display());
        }
    }

    // Nanosecond timestamps: the first frame is at EPOCH plus the stack's
    // clock, to the nanosecond.
    let t = fields(&fa, &["frame.time_epoch"]);
    let first = EPOCH + StdDuration::from_micros(first_frame_at.total_micros() as u64);
    assert_eq!(t[0][0], epoch_string(first));
    let mut times: Vec<&str> = t.iter().map(|r| r[0].as_str()).collect();
    let sorted = {
        let mut s = times.clone();
        s.sort();
        s
    };
    assert_eq!(times, sorted, "timestamps never go back");
    times.dedup();
    assert!(times.len() > 5);

    // The statistics blocks carry the counts (pcap-file's reader, as tshark
    // does not show them).
    let stats = isb_counts(&fa);
    let seen: Vec<(u64, u64)> = sum_a.interfaces.iter().map(|i| (i.seen, 0)).collect();
    assert_eq!(stats, seen);
}

/// (isb_ifrecv, isb_ifdrop) of each Interface Statistics Block in `file`.
fn isb_counts(file: &Path) -> Vec<(u64, u64)> {
    use pcap_file::pcapng::Block;
    use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption as O;
    let mut r = pcap_file::pcapng::PcapNgReader::new(File::open(file).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        if let Block::InterfaceStatistics(isb) = b.unwrap() {
            let (mut recv, mut drop) = (None, None);
            for o in &isb.options {
                match o {
                    O::IsbIfRecv(n) => recv = Some(*n),
                    O::IsbIfDrop(n) => drop = Some(*n),
                    _ => {}
                }
            }
            out.push((recv.unwrap(), drop.unwrap()));
        }
    }
    out
}

#[test]
fn wall_clock_timestamps_have_nanoseconds() {
    let dir = TempDir::new("wall");
    let f = dir.file("wall.pcapng");
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let cap = Capture::create(&f, CaptureConfig::default()).unwrap();
    let mut net = Captured::new(cap, None);
    udp_and_ping(&mut net);
    net.cap_a.finish();
    let after = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let times: Vec<String> = fields(&f, &["frame.time_epoch"])
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect();
    assert!(times.len() >= 8);
    for t in &times {
        let (s, ns) = t.split_once('.').unwrap();
        assert_eq!(ns.len(), 9, "{t}");
        let d = StdDuration::new(s.parse().unwrap(), ns.parse().unwrap());
        assert!(before <= d && d <= after, "{t} outside the run");
    }
    // A microsecond clock would end every one in 000.
    assert!(times.iter().any(|t| !t.ends_with("000")), "{times:?}");
}

#[test]
fn snaplen_cuts_frames_but_keeps_their_length() {
    let dir = TempDir::new("snaplen");
    let f = dir.file("snap.pcapng");
    let cfg = CaptureConfig {
        snaplen: 96,
        ..stack_clock()
    };
    let mut net = Captured::new(Capture::create(&f, cfg).unwrap(), None);
    tcp_exchange(&mut net);
    let sum = net.cap_a.finish();
    let rows = fields(&f, &["frame.len", "frame.cap_len"]);
    let log = net.log_a.lock().unwrap();
    assert_eq!(rows.len(), log.len());
    let mut cut = 0;
    for (row, (_, len)) in rows.iter().zip(log.iter()) {
        assert_eq!(row[0], len.to_string());
        assert_eq!(row[1], (*len).min(96).to_string());
        cut += usize::from(*len > 96);
    }
    assert!(cut >= 3, "the request's segments and the reply are longer");
    assert_eq!(sum.dropped(), 0);
    // Every interface says what it keeps.
    let snaplens = idb_snaplens(&f);
    assert_eq!(snaplens, vec![96, 96]);
}

fn idb_snaplens(file: &Path) -> Vec<u32> {
    use pcap_file::pcapng::Block;
    let mut r = pcap_file::pcapng::PcapNgReader::new(File::open(file).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        if let Block::InterfaceDescription(idb) = b.unwrap() {
            out.push(idb.snaplen);
        }
    }
    out
}

#[test]
fn frame_counts_match_the_links_exactly() {
    let dir = TempDir::new("counts");
    let f = dir.file("bulk.pcapng");
    let mut net = Captured::new(Capture::create(&f, stack_clock()).unwrap(), None);
    bulk(&mut net, 5001, 4 << 20);
    let sum = net.cap_a.finish();
    let log = net.log_a.lock().unwrap();
    assert!(log.len() > 3000, "{} frames", log.len());
    assert_eq!(frame_count(&f), log.len());
    // capinfos agrees, and so do the capture's own counts.
    let out = Command::new("capinfos")
        .args(["-c", "-M"])
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("Number of packets:   {}", log.len())),
        "{text}"
    );
    for i in &sum.interfaces {
        let n = log.iter().filter(|(name, _)| *name == i.name).count() as u64;
        assert_eq!((i.seen, i.written, i.dropped), (n, n, 0), "{}", i.name);
    }
}

#[test]
fn ring_rotates_within_its_bound_without_opening_files() {
    let dir = TempDir::new("ring");
    let max_size = 256 << 10;
    let cfg = CaptureConfig {
        ring: Some(Ring {
            max_size,
            max_files: 3,
        }),
        ..stack_clock()
    };
    let cap = Capture::create(&dir.file("ring.pcapng"), cfg).unwrap();
    // The directory moves away: any file opened by name from now on would
    // fail (or land elsewhere), so the ring must work on the opened files.
    let moved = TempDir(dir.0.with_extension("moved"));
    let _ = fs::remove_dir_all(&moved.0);
    fs::rename(&dir.0, &moved.0).unwrap();

    let mut net = Captured::new(cap, None);
    bulk(&mut net, 5002, 3 << 20);
    let sum = net.cap_a.finish();
    assert!(sum.error.is_none(), "{:?}", sum.error);
    assert!(
        !dir.0.exists(),
        "nothing was created by name after start-up"
    );
    assert_counts_consistent(&sum);

    let log = net.log_a.lock().unwrap();
    assert_eq!(
        sum.files.len(),
        3,
        "3 MiB through 256 KiB files fills the ring"
    );
    let mut ring_frames = Vec::new();
    for (k, file) in sum.files.iter().enumerate() {
        let name = file.path.as_ref().unwrap().file_name().unwrap();
        let path = moved.0.join(name);
        let size = fs::metadata(&path).unwrap().len();
        assert!(size <= max_size, "{}: {size} bytes", path.display());
        // All but the newest were closed when the next frame did not fit.
        if k + 1 < sum.files.len() {
            assert!(
                size > max_size - 1600,
                "{}: only {size} bytes",
                path.display()
            );
        }
        let rows = fields(&path, &["frame.interface_name", "frame.len"]);
        assert_eq!(rows.len() as u64, file.frames, "{}", path.display());
        ring_frames.extend(rows);
    }
    // The ring holds exactly the last frames, in order.
    let total: u64 = sum.interfaces.iter().map(|i| i.written).sum();
    assert_eq!(total as usize, log.len());
    assert!(ring_frames.len() < log.len());
    let tail = &log[log.len() - ring_frames.len()..];
    for (row, (name, len)) in ring_frames.iter().zip(tail) {
        assert_eq!(
            (row[0].as_str(), row[1].as_str()),
            (*name, len.to_string().as_str())
        );
    }
}

#[test]
fn ring_files_never_reached_are_valid_empty_captures() {
    let dir = TempDir::new("ring-short");
    let cfg = CaptureConfig {
        ring: Some(Ring {
            max_size: 1 << 20,
            max_files: 3,
        }),
        ..stack_clock()
    };
    let cap = Capture::create(&dir.file("r.pcapng"), cfg).unwrap();
    let mut net = Captured::new(cap, None);
    udp_and_ping(&mut net);
    let sum = net.cap_a.finish();
    assert_eq!(sum.files.len(), 3);
    assert_eq!(
        sum.files[2].path.as_deref(),
        Some(dir.file("r.pcapng").as_path())
    );
    let log = net.log_a.lock().unwrap();
    assert_eq!(frame_count(&dir.file("r.pcapng")), log.len());
    for name in ["r.pcapng.1", "r.pcapng.2"] {
        assert_eq!(frame_count(&dir.file(name)), 0, "{name}");
    }
}

#[test]
fn write_to_a_full_device_counts_every_frame_dropped() {
    let full = File::options().write(true).open("/dev/full").unwrap();
    let cap = Capture::from_file(full, stack_clock()).unwrap();
    let mut net = Captured::new(cap, None);
    udp_and_ping(&mut net);
    let sum = net.cap_a.finish();
    let err = sum.error.as_ref().expect("ENOSPC is reported");
    assert_eq!(err.raw_os_error(), Some(libc_enospc()));
    let log = net.log_a.lock().unwrap();
    assert_eq!(sum.dropped(), log.len() as u64);
    for i in &sum.interfaces {
        assert_eq!(i.written, 0);
        assert_eq!(i.seen, i.dropped);
    }
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

#[test]
fn reader_gone_midway_counts_the_rest_dropped() {
    // Close-on-exec: a program another test starts meanwhile (tshark, under
    // `cargo test`'s threads) must not inherit and keep the reader open.
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let cap = Capture::from_file(File::from(wr), stack_clock()).unwrap();
    let mut net = Captured::new(cap, None);
    let mut reader = File::from(rd);

    // Phase 1: a ping, written out and read by a reader that then goes away.
    let p = net.a.socket(Domain::Ipv4, Protocol::Icmp).unwrap();
    let req = echo_request(8, 1, b"first");
    net.a.send_to(p, &req, sa(B4, 0)).unwrap();
    net.run_until(Duration::from_secs(2), |n| {
        n.a.readiness(p).unwrap().readable
    });
    net.cap_a.flush();
    let early = net.cap_a.summary();
    let mut got = Vec::new();
    nix::fcntl::fcntl(
        &reader,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    drop(reader);

    // Phase 2: traffic nobody reads.
    udp_and_ping(&mut net);
    let sum = net.cap_a.finish();
    assert_eq!(
        sum.error.as_ref().map(|e| e.kind()),
        Some(std::io::ErrorKind::BrokenPipe)
    );
    assert_counts_consistent(&sum);
    let written: u64 = sum.interfaces.iter().map(|i| i.written).sum();
    let early_written: u64 = early.interfaces.iter().map(|i| i.written).sum();
    assert!(
        written >= 4,
        "ARP and the ping went out before the reader left"
    );
    assert_eq!(
        written, early_written,
        "nothing written after the reader left"
    );
    assert!(sum.dropped() >= 8);
    assert_eq!(
        sum.dropped() + written,
        net.log_a.lock().unwrap().len() as u64
    );
    // What the reader got is a capture of exactly the frames counted written.
    let dir = TempDir::new("pipe");
    fs::write(dir.file("got.pcapng"), &got).unwrap();
    assert_eq!(frame_count(&dir.file("got.pcapng")) as u64, written);
}

// ---- golden files -----------------------------------------------------------

/// Compares `file` with `pcaps/<name>` at the repository root, byte for byte;
/// with `UPDATE_GOLDEN=1`, replaces the golden file instead.
fn check_golden(file: &Path, name: &str) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pcaps")
        .join(name);
    let got = fs::read(file).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::write(&golden, &got).unwrap();
        return;
    }
    let want = fs::read(&golden)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 makes it)", golden.display()));
    if got != want {
        let keep = std::env::temp_dir().join(name);
        fs::write(&keep, &got).unwrap();
        panic!(
            "capture differs from {}: this run's is at {} (UPDATE_GOLDEN=1 to accept it)",
            golden.display(),
            keep.display()
        );
    }
}

#[test]
fn captures_match_the_golden_files() {
    let dir = TempDir::new("golden");
    let f = dir.file("tcp.pcapng");
    let mut net = Captured::new(Capture::create(&f, stack_clock()).unwrap(), None);
    tcp_exchange(&mut net);
    net.cap_a.finish();
    check_golden(&f, "tcp-exchange.pcapng");

    let f = dir.file("udp.pcapng");
    let mut net = Captured::new(Capture::create(&f, stack_clock()).unwrap(), None);
    udp_and_ping(&mut net);
    net.cap_a.finish();
    check_golden(&f, "udp-ping.pcapng");
}

#[test]
fn a_stack_clock_capture_is_reproducible() {
    let dir = TempDir::new("repro");
    let run = |name: &str| {
        let f = dir.file(name);
        let mut net = Captured::new(Capture::create(&f, stack_clock()).unwrap(), None);
        tcp_exchange(&mut net);
        udp_and_ping(&mut net);
        net.cap_a.finish();
        fs::read(f).unwrap()
    };
    assert!(run("1.pcapng") == run("2.pcapng"));
}
