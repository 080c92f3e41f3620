//! The capture writer, round trip: any frames on any NICs, each recorded
//! with its direction and time, come back from the written pcapng file
//! through an independent reader (pcap-file's) in order, byte for byte,
//! on the right interface.
#![no_main]

use std::io::{Read, Seek};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netstack::Instant;
use netstack::link::{Capture, CaptureClock, CaptureConfig, Direction, Medium};
use pcap_file::pcapng::{Block, PcapNgReader};

#[derive(Debug, Arbitrary)]
struct Record {
    nic: u8,
    outbound: bool,
    millis: u16,
    frame: Vec<u8>,
}

fuzz_target!(|input: (u8, Vec<Record>)| {
    let (nics, records) = input;
    let nics = usize::from(nics % 4) + 1;
    let mut file = tempfile();
    let writer = file.try_clone().expect("a second descriptor");
    let cfg = CaptureConfig {
        clock: CaptureClock::Stack {
            epoch: std::time::Duration::from_secs(1_700_000_000),
        },
        ..CaptureConfig::default()
    };
    let cap = Capture::from_file(writer, cfg).expect("a capture");
    let ifaces: Vec<_> = (0..nics)
        .map(|i| {
            let medium = if i % 2 == 0 { Medium::Ethernet } else { Medium::Ip };
            cap.add_interface(&format!("eth{i}"), medium)
        })
        .collect();
    let mut now = Instant::from_secs(1);
    let mut want = Vec::new();
    for r in records.iter().take(512) {
        let i = usize::from(r.nic) % nics;
        now += netstack::Duration::from_millis(u64::from(r.millis));
        let dir = if r.outbound {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        cap.record(ifaces[i], dir, now, &r.frame);
        want.push((i as u32, r.frame.clone()));
    }
    let summary = cap.finish();
    assert_eq!(summary.dropped(), 0);
    file.rewind().expect("rewind");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read back");
    let mut reader = PcapNgReader::new(&bytes[..]).expect("a section header");
    let mut got = Vec::new();
    while let Some(block) = reader.next_block() {
        if let Block::EnhancedPacket(p) = block.expect("a well-formed block") {
            got.push((p.interface_id, p.data.into_owned()));
        }
    }
    assert!(got == want, "{} frames read back, {} recorded", got.len(), want.len());
});

/// A file of this run's own, already unlinked.
fn tempfile() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("smolvisor-fuzz-{}.pcapng", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("a temporary file");
    let _ = std::fs::remove_file(&path);
    f
}
