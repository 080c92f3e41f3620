//! Frames for the targets that stand on one side of an Ethernet cable
//! (the NAT gateway's): a few built from scratch, the golden captures'
//! frames moved onto the cable's addresses, an answer to a TCP segment
//! with the right numbers, and byte-level edits.

use std::net::Ipv4Addr;

use arbitrary::Arbitrary;
use pcap_file::DataLink;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::{Block, PcapNgReader};

use crate::fix_checksums;

/// Who sends (`mac`, `ip`) and who is the next hop (`peer_mac`, `peer_ip`).
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub peer_mac: [u8; 6],
    pub peer_ip: Ipv4Addr,
}

/// One change to a frame's bytes.
#[derive(Debug, Arbitrary)]
pub enum Edit {
    Set {
        at: u16,
        byte: u8,
    },
    Flip {
        at: u16,
        bit: u8,
    },
    Truncate(u16),
    Append(Vec<u8>),
    /// A 16- or 32-bit field (lengths, ports, sequence numbers) set.
    Word {
        at: u16,
        value: u32,
        wide: bool,
    },
}

impl Edit {
    pub fn apply(&self, frame: &mut Vec<u8>) {
        let len = frame.len().max(1);
        match *self {
            Edit::Set { at, byte } => {
                if let Some(b) = frame.get_mut(usize::from(at) % len) {
                    *b = byte;
                }
            }
            Edit::Flip { at, bit } => {
                if let Some(b) = frame.get_mut(usize::from(at) % len) {
                    *b ^= 1 << (bit % 8);
                }
            }
            Edit::Truncate(at) => frame.truncate(usize::from(at) % len),
            Edit::Append(ref bytes) => frame.extend_from_slice(bytes),
            Edit::Word { at, value, wide } => {
                let at = usize::from(at) % len;
                let bytes = value.to_be_bytes();
                let word = if wide { &bytes[..] } else { &bytes[2..] };
                for (i, b) in word.iter().enumerate() {
                    if let Some(x) = frame.get_mut(at + i) {
                        *x = *b;
                    }
                }
            }
        }
    }
}

fn ethernet(a: &Addrs, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&a.peer_mac);
    f.extend_from_slice(&a.mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv4(a: &Addrs, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = ethernet(a, 0x0800);
    let total = (20 + l4.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&a.ip.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(l4);
    fix_checksums(&mut f);
    f
}

/// An ARP request for `target`.
pub fn arp_request(a: &Addrs, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&a.mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&a.mac);
    f.extend_from_slice(&a.ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

fn tcp_header(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(24 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[6 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    // MSS 1460: without it smoltcp assumes 536.
    t.extend_from_slice(&[2, 4, 0x05, 0xb4]);
    t.extend_from_slice(payload);
    t
}

/// A TCP segment to `dst`.
pub fn tcp(a: &Addrs, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    ipv4(
        a,
        dst,
        6,
        &tcp_header(sport, dport, 1000, 0, flags, payload),
    )
}

/// A UDP datagram to `dst`.
pub fn udp(a: &Addrs, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ipv4(a, dst, 17, &u)
}

/// An ICMP echo request to `dst`.
pub fn ping(a: &Addrs, dst: Ipv4Addr, ident: u16, seq: u16) -> Vec<u8> {
    let mut i = vec![8, 0, 0, 0];
    i.extend_from_slice(&ident.to_be_bytes());
    i.extend_from_slice(&seq.to_be_bytes());
    i.extend_from_slice(b"ping payload");
    let sum = !checksum(&i);
    i[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4(a, dst, 1, &i)
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut acc: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The answer to `f`, a TCP segment in an IPv4 Ethernet frame: addresses
/// and ports swapped, the sequence number it acknowledged, and an
/// acknowledgement of all it carried; ACK plus `flags`' FIN, RST and PSH.
pub fn reply(f: &[u8], data: &[u8], flags: u8) -> Option<Vec<u8>> {
    if f.len() < 54 || f[12..14] != [0x08, 0x00] || f[23] != 6 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let t = f.get(14 + ihl..(14 + total).min(f.len()))?;
    if t.len() < 20 {
        return None;
    }
    let off = usize::from(t[12] >> 4) * 4;
    let word = |at: usize| u32::from_be_bytes([t[at], t[at + 1], t[at + 2], t[at + 3]]);
    let len = t.len().saturating_sub(off) as u32 + u32::from(t[13] & 0x03 != 0);
    let a = Addrs {
        mac: f[0..6].try_into().ok()?,
        ip: Ipv4Addr::new(f[30], f[31], f[32], f[33]),
        peer_mac: f[6..12].try_into().ok()?,
        peer_ip: Ipv4Addr::new(f[26], f[27], f[28], f[29]),
    };
    let sport = u16::from_be_bytes([t[2], t[3]]);
    let dport = u16::from_be_bytes([t[0], t[1]]);
    let flags = 0x10 | (flags & 0x0d);
    let data = &data[..data.len().min(1400)];
    let seg = tcp_header(
        sport,
        dport,
        word(8),
        word(4).wrapping_add(len),
        flags,
        data,
    );
    Some(ipv4(&a, a.peer_ip, 6, &seg))
}

/// The frames host 1 sent in the golden captures (`pcaps/`), moved onto
/// the cable: from `a`'s MAC and address to its peer's, checksums made.
pub fn from_golden_captures(a: &Addrs) -> Vec<Vec<u8>> {
    let files: [&[u8]; 2] = [
        include_bytes!("../../pcaps/tcp-exchange.pcapng"),
        include_bytes!("../../pcaps/udp-ping.pcapng"),
    ];
    let mut out = Vec::new();
    for bytes in files {
        let Ok(mut r) = PcapNgReader::new(bytes) else {
            continue;
        };
        while let Some(Ok(block)) = r.next_block() {
            let Block::EnhancedPacket(p) = block else {
                continue;
            };
            let sent = p
                .options
                .iter()
                .any(|o| matches!(o, EnhancedPacketOption::Flags(f) if f & 3 == 2));
            let (id, mut f) = (p.interface_id, p.data.into_owned());
            let ethernet = r
                .interfaces()
                .get(id as usize)
                .is_some_and(|i| i.linktype == DataLink::ETHERNET);
            if !ethernet || !sent || f.len() < 14 {
                continue;
            }
            f[0..6].copy_from_slice(&a.peer_mac);
            f[6..12].copy_from_slice(&a.mac);
            match f[12..14] {
                [0x08, 0x00] if f.len() >= 34 => {
                    f[26..30].copy_from_slice(&a.ip.octets());
                    f[30..34].copy_from_slice(&a.peer_ip.octets());
                }
                [0x08, 0x06] if f.len() >= 42 => {
                    f[22..28].copy_from_slice(&a.mac);
                    f[28..32].copy_from_slice(&a.ip.octets());
                    f[38..42].copy_from_slice(&a.peer_ip.octets());
                }
                _ => {}
            }
            fix_checksums(&mut f);
            out.push(f);
        }
    }
    out
}
