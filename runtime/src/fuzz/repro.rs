//! Reproducers as pcapng files, and seeds from captures.
//!
//! A reproducer holds the frames of one or more inputs on one Ethernet
//! interface, both ways: the fuzzer's flagged inbound (to the sandbox),
//! the guest's outbound, each input's first frame with a comment saying
//! what it was. [`read_frames`] reads any pcap or pcapng back as
//! (`from_guest`, bytes); [`seeds`] takes the client payload of every TCP
//! connection (in sequence order, retransmissions left out) and every UDP
//! datagram to a port, from a capture or a directory of captures and raw
//! files.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};

use super::FuzzError;
use super::driver::Record;
use super::wire::{self, Proto};

/// `epb_flags`: the frame's direction, as pcapng says it.
const INBOUND: u32 = 1;
const OUTBOUND: u32 = 2;

/// Writes `records` to `path` as one pcapng file.
pub fn write(path: &Path, records: &[Record]) -> Result<(), FuzzError> {
    let io = |e: pcap_file::PcapError| FuzzError::Pcap(path.display().to_string(), e.to_string());
    let file =
        std::fs::File::create(path).map_err(|e| FuzzError::Io(path.display().to_string(), e))?;
    let mut w = PcapNgWriter::new(std::io::BufWriter::new(file)).map_err(io)?;
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfName(Cow::Borrowed("eth0"))],
    };
    w.write_pcapng_block(idb).map_err(io)?;
    let mut t = Duration::from_secs(1_700_000_000);
    for r in records {
        for (i, (from_guest, frame)) in r.frames.iter().enumerate() {
            t += Duration::from_micros(1);
            let dir = if *from_guest { OUTBOUND } else { INBOUND };
            let mut options = vec![EnhancedPacketOption::Flags(dir)];
            if i == 0 && !r.note.is_empty() {
                options.push(EnhancedPacketOption::Comment(Cow::Borrowed(&r.note)));
            }
            let epb = EnhancedPacketBlock {
                interface_id: 0,
                timestamp: t,
                original_len: frame.len() as u32,
                data: Cow::Borrowed(frame),
                options,
            };
            w.write_pcapng_block(epb).map_err(io)?;
        }
    }
    w.get_mut()
        .flush()
        .map_err(|e| FuzzError::Io(path.display().to_string(), e))
}

/// Every frame of a pcap or pcapng file (Ethernet), with whether the
/// guest sent it (its source MAC is not the fuzzer's).
pub fn read_frames(path: &Path) -> Result<Vec<(bool, Vec<u8>)>, FuzzError> {
    let bytes = std::fs::read(path).map_err(|e| FuzzError::Io(path.display().to_string(), e))?;
    let frames = packets(&bytes).ok_or_else(|| {
        FuzzError::Pcap(
            path.display().to_string(),
            "not a pcap or pcapng file".into(),
        )
    })?;
    Ok(frames
        .into_iter()
        .map(|f| (f.get(6..12) != Some(&wire::PEER_MAC[..]), f))
        .collect())
}

/// The packets of a capture, as Ethernet frames (bare IP packets get a
/// header), or `None` when `bytes` is no capture.
fn packets(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if let Ok(mut r) = PcapNgReader::new(bytes) {
        while let Some(Ok(block)) = r.next_block() {
            let packet = match block {
                Block::EnhancedPacket(p) => Some((p.interface_id, p.data.into_owned())),
                _ => None,
            };
            if let Some((id, data)) = packet {
                let link = r
                    .interfaces()
                    .get(id as usize)
                    .map_or(DataLink::ETHERNET, |i| i.linktype);
                out.extend(as_ethernet(link, &data));
            }
        }
        return Some(out);
    }
    let mut r = pcap_file::pcap::PcapReader::new(bytes).ok()?;
    let link = r.header().datalink;
    while let Some(Ok(p)) = r.next_packet() {
        out.extend(as_ethernet(link, &p.data));
    }
    Some(out)
}

fn as_ethernet(link: DataLink, data: &[u8]) -> Option<Vec<u8>> {
    match link {
        DataLink::ETHERNET => Some(data.to_vec()),
        DataLink::RAW | DataLink::IPV4 if data.first().is_some_and(|b| b >> 4 == 4) => {
            let mut f = Vec::with_capacity(14 + data.len());
            f.extend_from_slice(&wire::GUEST_MAC);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(data);
            Some(f)
        }
        _ => None,
    }
}

/// A client's address and port.
type Flow = (Vec<u8>, u16);

/// Client payloads sent to `port` in a capture: per TCP connection its
/// bytes in sequence order, per UDP datagram its payload (IPv4).
pub fn seeds_from_capture(bytes: &[u8], port: u16, proto: Proto) -> Option<Vec<Vec<u8>>> {
    let mut tcp: Vec<(Flow, BTreeMap<u32, Vec<u8>>)> = Vec::new();
    let mut udp = Vec::new();
    for f in packets(bytes)? {
        if f.len() < 34 || f[12..14] != [0x08, 0x00] {
            continue;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let end = (14 + total).min(f.len());
        let Some(l4) = f.get(14 + ihl..end) else {
            continue;
        };
        if l4.len() < 8 || u16::from_be_bytes([l4[2], l4[3]]) != port {
            continue;
        }
        let sport = u16::from_be_bytes([l4[0], l4[1]]);
        match (f[23], proto) {
            (wire::PROTO_TCP, Proto::Tcp) if l4.len() >= 20 => {
                let off = usize::from(l4[12] >> 4) * 4;
                let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
                let key = (f[26..30].to_vec(), sport);
                let i = match tcp.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        tcp.push((key, BTreeMap::new()));
                        tcp.len() - 1
                    }
                };
                if l4[13] & wire::SYN != 0 {
                    // A new connection on the same 4-tuple starts over.
                    tcp[i].1.clear();
                }
                if let Some(data) = l4.get(off..).filter(|d| !d.is_empty()) {
                    tcp[i].1.entry(seq).or_insert_with(|| data.to_vec());
                }
            }
            (wire::PROTO_UDP, Proto::Udp) => udp.push(l4[8..].to_vec()),
            _ => {}
        }
    }
    let mut out = udp;
    for (_, segs) in tcp {
        let mut stream = Vec::new();
        let mut next: Option<u32> = None;
        for (seq, data) in segs {
            let start = next.map_or(0, |n| n.wrapping_sub(seq) as usize);
            if let Some(rest) = data.get(start..) {
                stream.extend_from_slice(rest);
                next = Some(seq.wrapping_add(data.len() as u32));
            }
        }
        if !stream.is_empty() {
            out.push(stream);
        }
    }
    Some(out)
}

/// Seeds from a capture, or from every file of a directory (captures,
/// and any other file as one raw seed).
pub fn seeds(path: &Path, port: u16, proto: Proto) -> Result<Vec<Vec<u8>>, FuzzError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| FuzzError::Io(p.display().to_string(), e));
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| FuzzError::Io(path.display().to_string(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        let mut out = Vec::new();
        for p in entries {
            let bytes = read(&p)?;
            match seeds_from_capture(&bytes, port, proto) {
                Some(s) => out.extend(s),
                None => out.push(bytes),
            }
        }
        return Ok(out);
    }
    let bytes = read(path)?;
    seeds_from_capture(&bytes, port, proto).ok_or_else(|| {
        FuzzError::Pcap(
            path.display().to_string(),
            "not a pcap or pcapng file".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden capture: 3000 bytes to 10.0.0.2:8080 (`eth0`), and a
    /// UDP datagram to 127.0.0.1:9 (`lo`, bare IP packets).
    #[test]
    fn the_golden_capture_yields_its_client_bytes() {
        let pcaps = concat!(env!("CARGO_MANIFEST_DIR"), "/../pcaps");
        let bytes = std::fs::read(format!("{pcaps}/tcp-exchange.pcapng")).unwrap();
        let tcp = seeds_from_capture(&bytes, 8080, Proto::Tcp).unwrap();
        assert_eq!(tcp.iter().map(Vec::len).collect::<Vec<_>>(), [3000]);
        let udp = seeds_from_capture(&bytes, 9, Proto::Udp).unwrap();
        assert_eq!(udp.len(), 1);
        assert!(
            seeds_from_capture(&bytes, 8081, Proto::Tcp)
                .unwrap()
                .is_empty()
        );
        assert!(seeds_from_capture(b"not a capture", 7, Proto::Tcp).is_none());
    }

    #[test]
    fn a_written_reproducer_reads_back() {
        let dir = std::env::temp_dir().join(format!("smv-repro-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.pcapng");
        let s = super::super::script::Script::tcp(30000, 7, 5, b"hello");
        let rec = Record {
            note: "input 1".into(),
            id: 1,
            payload: Vec::new(),
            reached: true,
            frames: s
                .frames
                .iter()
                .map(|f| (false, f.render(Some(9))))
                .collect(),
        };
        write(&path, std::slice::from_ref(&rec)).unwrap();
        let back = read_frames(&path).unwrap();
        assert_eq!(back, rec.frames);
        assert_eq!(
            seeds_from_capture(&std::fs::read(&path).unwrap(), 7, Proto::Tcp).unwrap(),
            vec![b"hello".to_vec()]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
