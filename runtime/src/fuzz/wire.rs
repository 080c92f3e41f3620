//! The fuzzer's frames on the sandbox's wire: Ethernet, IPv4, TCP and UDP
//! built at fixed offsets (the fuzzer's own frames always have a 20-byte
//! IP header, so a frame's ports stay at the same place however its other
//! fields are mutated), ARP answers, and a checked look at what the
//! sandbox sends back. Bytes in, plain values out; nothing here panics on
//! a short or odd frame.

use std::net::Ipv4Addr;

/// The sandbox's NIC, as the fuzzer sees it.
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The fuzzer's own address on the link (the guest's gateway).
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The guest's MAC (locally administered).
pub const GUEST_MAC: [u8; 6] = [0x02, 0x53, 0x4d, 0x56, 0x00, 0x0f];
/// The fuzzer's MAC.
pub const PEER_MAC: [u8; 6] = [0x02, 0x53, 0x4d, 0x56, 0x00, 0x02];

pub const ETH: usize = 14;
pub const IP: usize = ETH;
/// Where the transport header starts in the fuzzer's frames.
pub const L4: usize = ETH + 20;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Transport protocol of the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One TCP segment from the fuzzer to the guest.
#[derive(Debug, Clone)]
pub struct Segment<'a> {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: &'a [u8],
    pub payload: &'a [u8],
}

/// An Ethernet + IPv4 header for a packet of `l4_len` transport bytes.
fn ip_frame(proto: u8, l4_len: usize) -> Vec<u8> {
    let total = 20 + l4_len;
    let mut f = Vec::with_capacity(ETH + total);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(total.min(0xffff) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&PEER_IP.octets());
    f.extend_from_slice(&GUEST_IP.octets());
    f
}

/// A TCP segment as a whole Ethernet frame, checksums filled in.
pub fn tcp_frame(s: &Segment<'_>) -> Vec<u8> {
    // Options are padded to whole words; the data offset says so.
    let opt_len = s.options.len().min(40).div_ceil(4) * 4;
    let hdr = 20 + opt_len;
    let mut f = ip_frame(PROTO_TCP, hdr + s.payload.len());
    f.extend_from_slice(&s.sport.to_be_bytes());
    f.extend_from_slice(&s.dport.to_be_bytes());
    f.extend_from_slice(&s.seq.to_be_bytes());
    f.extend_from_slice(&s.ack.to_be_bytes());
    f.push(((hdr / 4) as u8) << 4);
    f.push(s.flags);
    f.extend_from_slice(&s.window.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    let opts = &s.options[..s.options.len().min(40)];
    f.extend_from_slice(opts);
    f.resize(L4 + hdr, 0);
    f.extend_from_slice(s.payload);
    fix_checksums(&mut f);
    f
}

/// A UDP datagram as a whole Ethernet frame, checksums filled in.
pub fn udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut f = ip_frame(PROTO_UDP, len);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(len.min(0xffff) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    fix_checksums(&mut f);
    f
}

fn sum16(bytes: &[u8], mut acc: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The IPv4 header's length and the transport bytes the frame holds, as
/// its header says, bounded by what is there.
fn ipv4_parts(frame: &[u8]) -> Option<(usize, usize)> {
    if frame.len() < IP + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(frame[IP] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[IP + 2], frame[IP + 3]]));
    if ihl < 20 || frame.len() < IP + ihl {
        return None;
    }
    let end = (IP + total).clamp(IP + ihl, frame.len());
    Some((ihl, end))
}

/// Recomputes the IPv4 header checksum and the TCP or UDP checksum of a
/// frame, as far as its (maybe mutated) headers let them be found.
pub fn fix_checksums(frame: &mut [u8]) {
    let Some((ihl, end)) = ipv4_parts(frame) else {
        return;
    };
    frame[IP + 10] = 0;
    frame[IP + 11] = 0;
    let c = fold(sum16(&frame[IP..IP + ihl], 0));
    frame[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
    let l4 = IP + ihl;
    let field = match frame[IP + 9] {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return,
    };
    if end < l4 + field + 2 {
        return;
    }
    frame[l4 + field] = 0;
    frame[l4 + field + 1] = 0;
    let c = fold(l4_sum(frame, ihl, end));
    let c = if c == 0 && field == 6 { 0xffff } else { c };
    frame[l4 + field..l4 + field + 2].copy_from_slice(&c.to_be_bytes());
}

/// The one's-complement sum of a transport segment and its pseudo-header.
fn l4_sum(frame: &[u8], ihl: usize, end: usize) -> u32 {
    let l4 = IP + ihl;
    let mut acc = sum16(&frame[IP + 12..IP + 20], 0);
    acc += u32::from(frame[IP + 9]);
    acc += (end - l4) as u32;
    sum16(&frame[l4..end], acc)
}

/// Where [`fix_checksums`] puts a frame's TCP or UDP checksum, if anywhere.
pub fn l4_checksum_at(frame: &[u8]) -> Option<usize> {
    let (ihl, end) = ipv4_parts(frame)?;
    let field = match frame[IP + 9] {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return None,
    };
    (end >= IP + ihl + field + 2).then_some(IP + ihl + field)
}

/// Whether a frame's TCP or UDP checksum verifies (false when it has none
/// to verify).
#[cfg(test)]
pub fn l4_checksum_ok(frame: &[u8]) -> bool {
    let Some((ihl, end)) = ipv4_parts(frame) else {
        return false;
    };
    matches!(frame[IP + 9], PROTO_TCP | PROTO_UDP)
        && end > IP + ihl
        && fold(l4_sum(frame, ihl, end)) == 0
}

/// The answer to an ARP request for the fuzzer's address, if `frame` is one.
pub fn arp_answer(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x06] || frame[20..22] != [0, 1] {
        return None;
    }
    if frame[38..42] != PEER_IP.octets() {
        return None;
    }
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&frame[6..12]);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&PEER_IP.octets());
    f.extend_from_slice(&frame[22..32]);
    Some(f)
}

/// What the guest sent the fuzzer, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromGuest {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        len: u32,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
}

/// Parses a frame the guest sent to the fuzzer's address (IPv4 only).
pub fn parse_from_guest(frame: &[u8]) -> Option<FromGuest> {
    let (ihl, end) = ipv4_parts(frame)?;
    if frame[IP + 16..IP + 20] != PEER_IP.octets() {
        return None;
    }
    let l4 = &frame[IP + ihl..end];
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let word = |at: usize| u32::from_be_bytes([l4[at], l4[at + 1], l4[at + 2], l4[at + 3]]);
    match frame[IP + 9] {
        PROTO_TCP if l4.len() >= 20 => {
            let off = usize::from(l4[12] >> 4) * 4;
            Some(FromGuest::Tcp {
                sport: port(0),
                dport: port(2),
                seq: word(4),
                ack: word(8),
                flags: l4[13],
                len: l4.len().saturating_sub(off) as u32,
            })
        }
        PROTO_UDP if l4.len() >= 8 => Some(FromGuest::Udp {
            sport: port(0),
            dport: port(2),
        }),
        _ => None,
    }
}

/// The fuzzer's port that an ICMP port-unreachable from the guest names.
pub fn icmp_unreachable_port(frame: &[u8]) -> Option<u16> {
    let (ihl, end) = ipv4_parts(frame)?;
    if frame[IP + 9] != 1 || frame[IP + 16..IP + 20] != PEER_IP.octets() {
        return None;
    }
    let icmp = &frame[IP + ihl..end];
    if icmp.len() < 8 + 20 + 2 || icmp[0] != 3 || icmp[1] != 3 {
        return None;
    }
    let inner = usize::from(icmp[8] & 0x0f) * 4;
    let p = icmp.get(8 + inner..8 + inner + 2)?;
    Some(u16::from_be_bytes([p[0], p[1]]))
}

/// The fields of one of the fuzzer's own TCP frames (fixed offsets), as
/// a reproducer holds it: source port, sequence, acknowledgement, flags.
pub fn own_tcp_fields(frame: &[u8]) -> Option<(u16, u32, u8)> {
    let t = frame.get(L4..L4 + 14)?;
    Some((
        u16::from_be_bytes([t[0], t[1]]),
        u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        t[13],
    ))
}

/// Source port of one of the fuzzer's frames (TCP or UDP, fixed offset).
pub fn own_sport(frame: &[u8]) -> Option<u16> {
    let t = frame.get(L4..L4 + 2)?;
    Some(u16::from_be_bytes([t[0], t[1]]))
}

/// Destination port of one of the fuzzer's frames.
pub fn own_dport(frame: &[u8]) -> Option<u16> {
    let t = frame.get(L4 + 2..L4 + 4)?;
    Some(u16::from_be_bytes([t[0], t[1]]))
}

/// Whether one of the fuzzer's frames after the first of its connection
/// carries an acknowledgement number relative to the server's initial
/// sequence number: a TCP frame with ACK set. The rule reads the frame
/// only, so a replay finds the same frames relative as the fuzzer did.
pub fn acks_relative(frame: &[u8]) -> bool {
    frame.get(IP + 9) == Some(&PROTO_TCP)
        && own_tcp_fields(frame).is_some_and(|(_, _, f)| f & ACK != 0)
}

/// Sets the acknowledgement number of one of the fuzzer's TCP frames.
pub fn set_ack(frame: &mut [u8], ack: u32) {
    if let Some(f) = frame.get_mut(L4 + 8..L4 + 12) {
        f.copy_from_slice(&ack.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_verify_and_parse_back() {
        let s = Segment {
            sport: 40000,
            dport: 7,
            seq: 1,
            ack: 2,
            flags: ACK | PSH,
            window: 65535,
            options: &[2, 4, 5, 0xb4, 1],
            payload: b"hello",
        };
        let f = tcp_frame(&s);
        // Five option bytes take two words.
        assert_eq!(f.len(), L4 + 28 + 5);
        assert!(l4_checksum_ok(&f));
        assert_eq!(own_tcp_fields(&f), Some((40000, 2, ACK | PSH)));
        let u = udp_frame(5000, 53, b"q");
        assert!(l4_checksum_ok(&u));
        assert_eq!((own_sport(&u), own_dport(&u)), (Some(5000), Some(53)));
        // A frame mutated short or with a wild header length is left alone.
        let mut short = f[..20].to_vec();
        fix_checksums(&mut short);
        let mut wild = f.clone();
        wild[IP] = 0x4f;
        fix_checksums(&mut wild);
        assert_eq!(parse_from_guest(&wild[..IP + 3]), None);
    }

    #[test]
    fn arp_requests_for_the_peer_are_answered() {
        let mut req = vec![0xff; 6];
        req.extend_from_slice(&GUEST_MAC);
        req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        req.extend_from_slice(&GUEST_MAC);
        req.extend_from_slice(&GUEST_IP.octets());
        req.extend_from_slice(&[0; 6]);
        req.extend_from_slice(&PEER_IP.octets());
        let ans = arp_answer(&req).unwrap();
        assert_eq!(&ans[..6], &GUEST_MAC);
        assert_eq!(&ans[22..28], &PEER_MAC);
        assert_eq!(&ans[38..42], &GUEST_IP.octets());
        req[41] = 9;
        assert!(arp_answer(&req).is_none());
    }
}
