//! The x86_64 Linux ABI of the socket calls: socket addresses, `msghdr`,
//! `iovec`, and the option value layouts, decoded from and encoded to the
//! bytes that move through guest memory.

use crate::errno::Errno;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `sizeof(struct sockaddr_in)`.
pub const SOCKADDR_IN_LEN: usize = 16;
/// `SIN6_LEN_RFC2133`: the shortest `sockaddr_in6` Linux accepts (no scope id).
pub const SOCKADDR_IN6_MIN: usize = 24;
/// `sizeof(struct sockaddr_in6)`.
pub const SOCKADDR_IN6_LEN: usize = 28;
/// `sizeof(struct msghdr)`.
pub const MSGHDR_LEN: usize = 56;
/// `sizeof(struct mmsghdr)`.
pub const MMSGHDR_LEN: usize = 64;
/// `UIO_MAXIOV`.
pub const IOV_MAX: usize = 1024;

/// A socket address as the guest passed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestAddr {
    /// AF_INET or AF_INET6.
    Inet(SocketAddr),
    /// AF_UNSPEC (disconnect, or "any" for some calls).
    Unspec,
    /// Another family, by number.
    Other(u16),
}

/// Decodes a socket address of `bytes.len()` bytes. Too short for its
/// family is `EINVAL`, as Linux's inet and inet6 calls check it.
pub fn decode_addr(bytes: &[u8]) -> Result<GuestAddr, Errno> {
    if bytes.len() < 2 {
        return Err(Errno::EINVAL);
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    match i32::from(family) {
        libc::AF_INET => {
            if bytes.len() < SOCKADDR_IN_LEN {
                return Err(Errno::EINVAL);
            }
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Ok(GuestAddr::Inet(SocketAddr::V4(SocketAddrV4::new(ip, port))))
        }
        libc::AF_INET6 => {
            if bytes.len() < SOCKADDR_IN6_MIN {
                return Err(Errno::EINVAL);
            }
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let flow = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes[8..24]);
            let scope = if bytes.len() >= SOCKADDR_IN6_LEN {
                u32::from_ne_bytes([bytes[24], bytes[25], bytes[26], bytes[27]])
            } else {
                0
            };
            let ip = Ipv6Addr::from(octets);
            Ok(GuestAddr::Inet(SocketAddr::V6(SocketAddrV6::new(
                ip, port, flow, scope,
            ))))
        }
        libc::AF_UNSPEC => Ok(GuestAddr::Unspec),
        _ => Ok(GuestAddr::Other(family)),
    }
}

/// Encodes an address for a socket of `v6` family: an IPv6 socket reports
/// IPv4 peers as IPv4-mapped addresses, as Linux does.
pub fn encode_addr(addr: SocketAddr, v6: bool) -> Vec<u8> {
    let addr = match addr {
        SocketAddr::V4(a) if v6 => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        a => a,
    };
    match addr {
        SocketAddr::V4(a) => {
            let mut b = vec![0u8; SOCKADDR_IN_LEN];
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            b
        }
        SocketAddr::V6(a) => {
            let mut b = vec![0u8; SOCKADDR_IN6_LEN];
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            b
        }
    }
}

/// An IPv4 address as the IPv4-mapped IPv6 address; others unchanged.
pub fn mapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        a => a,
    }
}

/// A `struct msghdr` read from guest memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgHdr {
    /// `msg_name`.
    pub name: u64,
    /// `msg_namelen`.
    pub namelen: u32,
    /// `msg_iov`.
    pub iov: u64,
    /// `msg_iovlen`.
    pub iovlen: u64,
    /// `msg_control`.
    pub control: u64,
    /// `msg_controllen`.
    pub controllen: u64,
    /// `msg_flags`.
    pub flags: i32,
}

impl MsgHdr {
    /// Decodes the 56 bytes of a `struct msghdr`.
    pub fn decode(b: &[u8; MSGHDR_LEN]) -> MsgHdr {
        MsgHdr {
            name: u64_at(b, 0),
            namelen: u32_at(b, 8),
            iov: u64_at(b, 16),
            iovlen: u64_at(b, 24),
            control: u64_at(b, 32),
            controllen: u64_at(b, 40),
            flags: u32_at(b, 48) as i32,
        }
    }
}

/// Offset of `msg_namelen` in `struct msghdr`.
pub const MSGHDR_NAMELEN_OFF: u64 = 8;
/// Offset of `msg_controllen` in `struct msghdr`.
pub const MSGHDR_CONTROLLEN_OFF: u64 = 40;
/// Offset of `msg_flags` in `struct msghdr`.
pub const MSGHDR_FLAGS_OFF: u64 = 48;
/// Offset of `msg_len` in `struct mmsghdr`.
pub const MMSGHDR_LEN_OFF: u64 = 56;

/// Decodes an array of `struct iovec` into (base, len) pairs.
pub fn decode_iovecs(b: &[u8]) -> Vec<(u64, u64)> {
    b.chunks_exact(16)
        .map(|c| (u64_at(c, 0), u64_at(c, 8)))
        .collect()
}

/// `struct linger` (`l_onoff`, `l_linger`).
pub fn encode_linger(linger: Option<u32>) -> [u8; 8] {
    let mut b = [0u8; 8];
    if let Some(secs) = linger {
        b[..4].copy_from_slice(&1i32.to_ne_bytes());
        b[4..].copy_from_slice(&(secs as i32).to_ne_bytes());
    }
    b
}

/// `struct timeval` to a duration; `None` is "no timeout" (all zero).
pub fn decode_timeval(b: &[u8]) -> Result<Option<std::time::Duration>, Errno> {
    if b.len() < 16 {
        return Err(Errno::EINVAL);
    }
    let sec = u64_at(b, 0) as i64;
    let usec = u64_at(b, 8) as i64;
    if !(0..1_000_000).contains(&usec) {
        return Err(Errno::EDOM);
    }
    if sec < 0 {
        // Linux stores a negative timeout as zero ticks: the call gives up
        // at once (EAGAIN) instead of waiting, and it reads back as {0, 0}.
        return Ok(Some(std::time::Duration::ZERO));
    }
    if sec == 0 && usec == 0 {
        return Ok(None);
    }
    Ok(Some(
        std::time::Duration::from_secs(sec as u64) + std::time::Duration::from_micros(usec as u64),
    ))
}

/// A duration as `struct timeval`.
pub fn encode_timeval(d: Option<std::time::Duration>) -> [u8; 16] {
    let mut b = [0u8; 16];
    if let Some(d) = d {
        b[..8].copy_from_slice(&(d.as_secs() as i64).to_ne_bytes());
        b[8..].copy_from_slice(&i64::from(d.subsec_micros()).to_ne_bytes());
    }
    b
}

/// Little-endian u64 at `off` (x86_64 is little-endian; the guest wrote it natively).
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

/// Native-endian u32 at `off`.
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

/// A datagram's own hop limit and traffic class from `sendmsg`'s control
/// messages (`IP_TTL`, `IP_TOS`, `IPV6_HOPLIMIT`, `IPV6_TCLASS`), checked
/// as Linux checks them: a header whose length is short or runs past the
/// buffer, a value of the wrong size or out of range, is EINVAL; -1 asks
/// for the socket's own (IPv6); other messages are left alone.
pub fn send_marks(control: &[u8]) -> Result<netstack::IpMarks, Errno> {
    const HDR: usize = 16;
    let mut marks = netstack::IpMarks::default();
    let mut off = 0;
    while control.len().saturating_sub(off) >= HDR {
        let len = u64_at(control, off);
        if len < HDR as u64 || len > (control.len() - off) as u64 {
            return Err(Errno::EINVAL);
        }
        let len = len as usize;
        let level = u32_at(control, off + 8) as i32;
        let kind = u32_at(control, off + 12) as i32;
        let data = &control[off + HDR..off + len];
        let int = || -> Result<i32, Errno> {
            match data {
                [a, b, c, d] => Ok(i32::from_ne_bytes([*a, *b, *c, *d])),
                _ => Err(Errno::EINVAL),
            }
        };
        let byte = |v: i32| u8::try_from(v).map_err(|_| Errno::EINVAL);
        match (level, kind) {
            (libc::IPPROTO_IP, libc::IP_TTL) => match int()? {
                v @ 1..=255 => marks.hop_limit = Some(v as u8),
                _ => return Err(Errno::EINVAL),
            },
            (libc::IPPROTO_IP, libc::IP_TOS) => {
                marks.class = Some(match data {
                    [b] => *b,
                    _ => byte(int()?)?,
                });
            }
            (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => match int()? {
                -1 => marks.hop_limit = None,
                v => marks.hop_limit = Some(byte(v)?),
            },
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => match int()? {
                -1 => marks.class = None,
                v => marks.class = Some(byte(v)?),
            },
            _ => {}
        }
        off += len.next_multiple_of(8);
    }
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let b = encode_addr(v4, false);
        assert_eq!(b.len(), 16);
        assert_eq!(decode_addr(&b), Ok(GuestAddr::Inet(v4)));
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        let b = encode_addr(v6, true);
        assert_eq!(b.len(), 28);
        assert_eq!(decode_addr(&b), Ok(GuestAddr::Inet(v6)));
        let mapped = encode_addr(v4, true);
        assert_eq!(
            decode_addr(&mapped),
            Ok(GuestAddr::Inet("[::ffff:127.0.0.1]:8080".parse().unwrap()))
        );
    }

    #[test]
    fn short_addresses_are_einval() {
        let b = encode_addr("10.0.0.1:1".parse().unwrap(), false);
        assert_eq!(decode_addr(&b[..15]), Err(Errno::EINVAL));
        assert_eq!(decode_addr(&b[..1]), Err(Errno::EINVAL));
        let b = encode_addr("[::1]:1".parse().unwrap(), false);
        assert!(matches!(decode_addr(&b[..24]), Ok(GuestAddr::Inet(_))));
        assert_eq!(decode_addr(&b[..23]), Err(Errno::EINVAL));
        assert_eq!(decode_addr(&[0, 0]), Ok(GuestAddr::Unspec));
        assert_eq!(decode_addr(&[1, 0, 0]), Ok(GuestAddr::Other(1)));
    }

    #[test]
    fn timevals() {
        assert_eq!(decode_timeval(&encode_timeval(None)), Ok(None));
        let d = std::time::Duration::from_millis(1500);
        assert_eq!(decode_timeval(&encode_timeval(Some(d))), Ok(Some(d)));
        let mut bad = [0u8; 16];
        bad[8..].copy_from_slice(&2_000_000i64.to_ne_bytes());
        assert_eq!(decode_timeval(&bad), Err(Errno::EDOM));
        let mut negative = [0u8; 16];
        negative[..8].copy_from_slice(&(-1i64).to_ne_bytes());
        let immediate = decode_timeval(&negative);
        assert_eq!(immediate, Ok(Some(std::time::Duration::ZERO)));
        assert_eq!(encode_timeval(immediate.unwrap()), [0u8; 16]);
    }

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut m = ((16 + data.len()) as u64).to_ne_bytes().to_vec();
        m.extend_from_slice(&level.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(data);
        m.resize(m.len().next_multiple_of(8), 0);
        m
    }

    #[test]
    fn send_marks_are_read_and_checked_as_linux_does() {
        let int = |v: i32| v.to_ne_bytes();
        let both = [
            cmsg(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &int(0x20)),
            cmsg(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, &int(2)),
        ]
        .concat();
        assert_eq!(
            send_marks(&both),
            Ok(netstack::IpMarks {
                hop_limit: Some(2),
                class: Some(0x20)
            })
        );
        let v4 = [
            cmsg(libc::IPPROTO_IP, libc::IP_TTL, &int(7)),
            cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x10]),
        ]
        .concat();
        assert_eq!(
            send_marks(&v4),
            Ok(netstack::IpMarks {
                hop_limit: Some(7),
                class: Some(0x10)
            })
        );
        // -1: the socket's own.
        let default = cmsg(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, &int(-1));
        assert_eq!(send_marks(&default), Ok(netstack::IpMarks::default()));
        // Wrong sizes, ranges and lengths.
        for bad in [
            cmsg(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &[0, 0, 0, 0, 0]),
            cmsg(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, &int(256)),
            cmsg(libc::IPPROTO_IP, libc::IP_TTL, &int(0)),
            cmsg(libc::IPPROTO_IP, libc::IP_TOS, &int(300)),
            vec![8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(send_marks(&bad), Err(Errno::EINVAL), "{bad:?}");
        }
        // Others are left alone, and a tail too short for a header ends it.
        let other = [
            cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &int(3)),
            vec![1, 2],
        ]
        .concat();
        assert_eq!(send_marks(&other), Ok(netstack::IpMarks::default()));
    }
}
