//! Reading captures back with tshark, for the tests of `--pcap-log`: one
//! row of fields per frame, whether a TCP stream is all there, and whether
//! the file holds what smolvisor said at exit it captured.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::Outcome;

/// Runs tshark with `args`, `input` on its stdin; panics unless it exits 0.
pub fn tshark_with_input(args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("tshark")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tshark");
    let mut stdin = child.stdin.take().expect("tshark stdin");
    let input = input.to_vec();
    // Written from a thread: tshark's stdout fills while it reads.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for tshark");
    writer.join().expect("stdin writer");
    assert!(
        out.status.success(),
        "tshark {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}

/// Runs tshark with `args` (which name the file); panics unless it exits 0.
pub fn tshark(args: &[&str]) -> String {
    tshark_with_input(args, &[])
}

/// One row of tab-separated fields per frame of `file` that matches
/// `filter` (`-` reads stdin: use [`tshark_with_input`] then).
pub fn fields(file: &Path, filter: &str, names: &[&str]) -> Vec<Vec<String>> {
    let file = file.to_str().expect("UTF-8 path");
    let mut args = vec![
        "-r",
        file,
        "-o",
        "tcp.relative_sequence_numbers:TRUE",
        "-T",
        "fields",
        // An ICMP error quotes a second IP header: keep the outer one.
        "-E",
        "occurrence=f",
    ];
    if !filter.is_empty() {
        args.extend(["-Y", filter]);
    }
    for name in names {
        args.extend(["-e", name]);
    }
    parse_rows(&tshark(&args))
}

pub fn parse_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Panics unless the data segments that `guest_ip` sent to port `port`
/// cover relative sequence numbers 1..=len without a hole.
///
/// This is exact where byte totals are not: tshark's `conv,tcp` counts
/// frame bytes (headers included, rounded), and a sum of `tcp.len` counts a
/// retransmitted segment twice. Merging the ranges [seq, seq + len) of all
/// data segments, a frame missing from the file leaves a hole, a repeated
/// one only overlaps; the SYN (relative seq 0) must be there for the
/// numbers to be relative to it, and the FIN (its flag numbered after the
/// segment's data, if it carries any) at 1 + len closes the stream.
pub fn assert_guest_stream_complete(file: &Path, guest_ip: &str, port: &str, len: u64) {
    let filter = format!("ip.src == {guest_ip} && tcp.dstport == {port}");
    let rows = fields(
        file,
        &filter,
        &["tcp.stream", "tcp.seq", "tcp.len", "tcp.flags"],
    );
    let streams: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert!(
        !rows.is_empty() && streams.iter().all(|s| *s == streams[0]),
        "expected one connection to port {port} in {}: streams {streams:?}",
        file.display()
    );
    let num = |s: &str| -> u64 { s.parse().unwrap_or_else(|_| panic!("bad number {s:?}")) };
    let flags = |s: &str| -> u64 {
        u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("tcp.flags in hex")
    };
    let syn = rows
        .iter()
        .any(|r| flags(&r[3]) & 0x02 != 0 && num(&r[1]) == 0);
    let fin = rows
        .iter()
        .any(|r| flags(&r[3]) & 0x01 != 0 && num(&r[1]) + num(&r[2]) == 1 + len);
    assert!(syn, "the guest's SYN is not in {}", file.display());
    assert!(fin, "no FIN numbered {} in {}", 1 + len, file.display());
    let mut ranges: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| (num(&r[1]), num(&r[1]) + num(&r[2])))
        .filter(|(start, end)| end > start)
        .collect();
    ranges.sort_unstable();
    let mut covered = 1; // the first byte after the SYN
    for (start, end) in ranges {
        assert!(
            start <= covered,
            "the capture lacks the guest's bytes {covered}..{start} (relative seq)"
        );
        covered = covered.max(end);
    }
    assert_eq!(
        covered,
        1 + len,
        "the guest's data segments end at relative seq {covered}, expected {}",
        1 + len
    );
}

/// Frames per interface name, as tshark reads them.
pub fn frames_per_interface(rows: &[Vec<String>]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts.entry(row[0].clone()).or_insert(0) += 1;
    }
    counts
}

/// What smolvisor said at exit: `smolvisor: captured N frames (lo X, eth0
/// Y) to FILE`, as (N, {lo: X, eth0: Y}).
pub fn reported(out: &Outcome) -> (u64, BTreeMap<String, u64>) {
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("smolvisor: captured "))
        .unwrap_or_else(|| panic!("no capture summary on stderr\n{out}"));
    let rest = &line["smolvisor: captured ".len()..];
    let (total, rest) = rest.split_once(" frames (").unwrap_or_else(|| bad(line));
    let (per_nic, _) = rest.split_once(')').unwrap_or_else(|| bad(line));
    let per_nic = per_nic
        .split(", ")
        .map(|part| {
            let (name, n) = part.rsplit_once(' ').unwrap_or_else(|| bad(line));
            (name.to_owned(), n.parse().unwrap_or_else(|_| bad(line)))
        })
        .collect();
    (total.parse().unwrap_or_else(|_| bad(line)), per_nic)
}

fn bad<T>(line: &str) -> T {
    panic!("unexpected capture summary {line:?}")
}

/// Panics if smolvisor reported frames it could not write.
pub fn assert_nothing_dropped(out: &Outcome) {
    assert!(
        !out.stderr.contains("could not be written"),
        "frames were dropped from the capture\n{out}"
    );
}

/// Panics unless tshark finds in `rows` (interface name first) exactly the
/// frames smolvisor reported, in total and per interface.
pub fn assert_counts_match(out: &Outcome, rows: &[Vec<String>]) {
    let (total, per_nic) = reported(out);
    let seen = frames_per_interface(rows);
    // An interface without frames has no row in tshark's output.
    let per_nic: BTreeMap<String, u64> = per_nic.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(
        (rows.len() as u64, &seen),
        (total, &per_nic),
        "tshark's frames per interface (left) differ from smolvisor's report (right)\n{out}"
    );
}
