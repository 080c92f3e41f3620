//! IPv6 fragmentation, which smoltcp 0.14 implements only for 6LoWPAN.
//!
//! In: [`Reassembler`] collects the fragments of each datagram (keyed by
//! source, destination and identification) and rebuilds one unfragmented
//! frame, which the stack then handles like any other. Overlapping
//! fragments discard the datagram (RFC 5722); memory and time are bounded.
//! Out: [`fragment`] cuts an upper-layer packet into IPv6 packets that fit
//! the link, each with a Fragment header; the stack sends them through a
//! raw smoltcp socket so that smoltcp still resolves the neighbour.

use std::collections::HashMap;

use smoltcp::phy::Medium;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpProtocol, Ipv6Address, Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet};

use crate::demux::FragKey;

const IPV6_HEADER: usize = 40;
const FRAGMENT_HEADER: usize = 8;
const MAX_PAYLOAD: usize = 65535;
/// Datagrams being reassembled at once; more are dropped, like a full queue.
const MAX_PENDING: usize = 64;
/// How long a datagram may take to arrive whole (RFC 8200: 60 s).
const TIMEOUT: Duration = Duration::from_secs(60);

struct Partial {
    /// Link header and IPv6 header of the first fragment seen.
    header: Vec<u8>,
    next_header: u8,
    data: Vec<u8>,
    /// Byte ranges received, to detect overlaps and completion.
    ranges: Vec<(usize, usize)>,
    total: Option<usize>,
    expires: Instant,
}

/// Rebuilds fragmented IPv6 datagrams.
#[derive(Default)]
pub(crate) struct Reassembler {
    pending: HashMap<FragKey, Partial>,
}

impl Reassembler {
    /// Takes one fragment frame; returns the whole datagram's frame once complete.
    pub(crate) fn add(
        &mut self,
        medium: Medium,
        key: FragKey,
        frame: &[u8],
        now: Instant,
    ) -> Option<Vec<u8>> {
        let link = if medium == Medium::Ethernet { 14 } else { 0 };
        let ip = Ipv6Packet::new_checked(frame.get(link..)?).ok()?;
        let ext = Ipv6ExtHeader::new_checked(ip.payload()).ok()?;
        let frag = Ipv6FragmentHeader::new_checked(ext.payload()).ok()?;
        let data = ip.payload().get(FRAGMENT_HEADER..)?;
        let start = usize::from(frag.frag_offset()) * 8;
        let end = start + data.len();
        let more = frag.more_frags();
        if end > MAX_PAYLOAD || (more && data.len() % 8 != 0) || data.is_empty() {
            self.pending.remove(&key);
            return None;
        }
        if !self.pending.contains_key(&key) {
            if self.pending.len() >= MAX_PENDING {
                self.expire(now);
                if self.pending.len() >= MAX_PENDING {
                    return None;
                }
            }
            self.pending.insert(
                key,
                Partial {
                    header: frame.get(..link + IPV6_HEADER)?.to_vec(),
                    next_header: ext.next_header().into(),
                    data: Vec::new(),
                    ranges: Vec::new(),
                    total: None,
                    expires: now + TIMEOUT,
                },
            );
        }
        let p = self.pending.get_mut(&key)?;
        let overlaps = p.ranges.iter().any(|&(s, e)| start < e && s < end);
        let beyond_total = p.total.is_some_and(|t| end > t || (!more && end != t));
        let before_known_data = !more && p.ranges.iter().any(|&(_, e)| e > end);
        if overlaps || beyond_total || before_known_data {
            self.pending.remove(&key);
            return None;
        }
        if !more {
            p.total = Some(end);
        }
        if p.data.len() < end {
            p.data.resize(end, 0);
        }
        p.data[start..end].copy_from_slice(data);
        p.ranges.push((start, end));
        let total = p.total?;
        let have: usize = p.ranges.iter().map(|&(s, e)| e - s).sum();
        if have != total {
            return None;
        }
        let p = self.pending.remove(&key)?;
        let mut out = p.header;
        let ip_at = link;
        out[ip_at + 6] = p.next_header;
        let len = u16::try_from(total).ok()?;
        out[ip_at + 4..ip_at + 6].copy_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&p.data[..total]);
        Some(out)
    }

    /// Drops datagrams that did not complete in time.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.pending.retain(|_, p| p.expires > now);
    }
}

/// The fields every fragment of one datagram shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Datagram {
    pub src: Ipv6Address,
    pub dst: Ipv6Address,
    /// The upper-layer protocol of the whole datagram.
    pub next_header: IpProtocol,
    pub hop_limit: u8,
    pub ident: u32,
}

/// Cuts `payload` (the upper-layer packet of `d`) into IPv6 packets of at
/// most `mtu` bytes and hands each to `out`.
pub(crate) fn fragment(d: &Datagram, payload: &[u8], mtu: usize, mut out: impl FnMut(&[u8])) {
    let Datagram {
        src,
        dst,
        next_header,
        hop_limit,
        ident,
    } = *d;
    let room = (mtu.saturating_sub(IPV6_HEADER + FRAGMENT_HEADER) / 8) * 8;
    if room == 0 {
        return;
    }
    let mut packet = Vec::with_capacity(mtu);
    for (i, chunk) in payload.chunks(room).enumerate() {
        let offset = i * room;
        let more = offset + chunk.len() < payload.len();
        packet.clear();
        // IPv6 header: version 6, no traffic class or flow label.
        packet.extend_from_slice(&[0x60, 0, 0, 0]);
        let len = (FRAGMENT_HEADER + chunk.len()) as u16;
        packet.extend_from_slice(&len.to_be_bytes());
        packet.push(IpProtocol::Ipv6Frag.into());
        packet.push(hop_limit);
        packet.extend_from_slice(&src.octets());
        packet.extend_from_slice(&dst.octets());
        // Fragment header: next header, reserved, offset (8-byte units) | M, identification.
        packet.push(next_header.into());
        packet.push(0);
        let off = ((offset / 8) as u16) << 3 | u16::from(more);
        packet.extend_from_slice(&off.to_be_bytes());
        packet.extend_from_slice(&ident.to_be_bytes());
        packet.extend_from_slice(chunk);
        out(&packet);
    }
}

#[cfg(test)]
mod tests {
    use smoltcp::wire::IpAddress;

    use super::*;

    fn key() -> FragKey {
        FragKey {
            src: IpAddress::v6(0xfd00, 0, 0, 0, 0, 0, 0, 1),
            dst: IpAddress::v6(0xfd00, 0, 0, 0, 0, 0, 0, 2),
            ident: 9,
            proto: 17,
        }
    }

    fn pieces(payload: &[u8]) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        let (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) = (key().src, key().dst) else {
            unreachable!()
        };
        let d = Datagram {
            src: s,
            dst: d,
            next_header: IpProtocol::Udp,
            hop_limit: 64,
            ident: 9,
        };
        fragment(&d, payload, 1280, |p| v.push(p.to_vec()));
        v
    }

    #[test]
    fn fragments_reassemble_in_any_order() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut frags = pieces(&payload);
        assert_eq!(
            frags.len(),
            5,
            "1232 bytes of payload per fragment at MTU 1280"
        );
        assert!(frags.iter().all(|f| f.len() <= 1280));
        frags.reverse();
        let mut r = Reassembler::default();
        let now = Instant::from_secs(0);
        let mut whole = None;
        for f in &frags {
            whole = r.add(Medium::Ip, key(), f, now);
        }
        let whole = whole.expect("complete");
        let ip = Ipv6Packet::new_checked(&whole[..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Udp);
        assert_eq!(ip.payload(), &payload[..]);
    }

    #[test]
    fn overlap_and_duplicates_discard_and_timeouts_expire() {
        let payload = vec![1u8; 3000];
        let frags = pieces(&payload);
        let mut r = Reassembler::default();
        let now = Instant::from_secs(0);
        assert!(r.add(Medium::Ip, key(), &frags[0], now).is_none());
        assert!(
            r.add(Medium::Ip, key(), &frags[0], now).is_none(),
            "duplicate discards"
        );
        assert!(r.pending.is_empty());
        assert!(r.add(Medium::Ip, key(), &frags[1], now).is_none());
        r.expire(now + TIMEOUT);
        assert!(r.pending.is_empty());
        // Garbage never panics.
        for f in &frags {
            for cut in 0..f.len() {
                let _ = r.add(Medium::Ip, key(), &f[..cut], now);
                let _ = r.add(Medium::Ethernet, key(), &f[..cut], now);
            }
        }
    }
}
