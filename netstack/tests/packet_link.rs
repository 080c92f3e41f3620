//! The AF_PACKET link on a real veth between two throw-away namespaces:
//! frames cross both ways, the partial checksums a kernel leaves on veth
//! frames are completed, and a stack over the link moves TCP data with the
//! kernel's TCP in the peer namespace, both ways. Needs root.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration as StdDuration;

use netstack::link::{Impaired, Impairments, Link, PacketLink};
use netstack::testbed::netns::{Netns, Step, drive, echo_server, echo_through, veth, wall_clock};
use netstack::{Domain, IfAddr, NetError, NicConfig, Protocol, RecvFlags, Stack, StackConfig};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, UdpPacket, UdpRepr,
};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0x77, 0, 1];
const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// ns `a` holds `va` (no address: the link owns it), ns `b` holds `vb`
/// with 10.77.0.2/24; `b` knows A's MAC, so it sends without ARP.
fn setup(tag: &str) -> (Netns, Netns) {
    let a = Netns::new(&format!("{tag}a")).unwrap();
    let b = Netns::new(&format!("{tag}b")).unwrap();
    veth(&a, "va", &b, "vb").unwrap();
    a.ip(&["link", "set", "va", "address", "02:00:00:77:00:01"])
        .unwrap();
    b.ip(&["addr", "add", "10.77.0.2/24", "dev", "vb"]).unwrap();
    b.ip(&[
        "neigh",
        "add",
        "10.77.0.1",
        "lladdr",
        "02:00:00:77:00:01",
        "dev",
        "vb",
    ])
    .unwrap();
    (a, b)
}

fn open_link(a: &Netns) -> PacketLink {
    open_on(a, "va")
}

fn open_on(ns: &Netns, ifname: &str) -> PacketLink {
    let index = ns.ifindex(ifname).unwrap();
    ns.run(|| PacketLink::open(index, 1500).unwrap()).unwrap()
}

fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let out = ns.ip(&["-o", "link", "show", ifname]).unwrap();
    let hex = out.split("link/ether ").nth(1).unwrap();
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(hex[..17].split(':')) {
        *m = u8::from_str_radix(h, 16).unwrap();
    }
    mac
}

/// Reads frames from `link` until `keep` accepts one (2 s at most).
fn recv_until(link: &mut PacketLink, mut keep: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let end = std::time::Instant::now() + StdDuration::from_secs(2);
    while std::time::Instant::now() < end {
        match link.recv(wall_clock()) {
            Some(f) if keep(&f) => return f,
            Some(f) => link.recycle(f),
            None => std::thread::sleep(StdDuration::from_millis(1)),
        }
    }
    panic!("no matching frame within 2 s");
}

fn udp_to(frame: &[u8], port: u16) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return false;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    ip.next_header() == IpProtocol::Udp
        && UdpPacket::new_checked(ip.payload()).is_ok_and(|u| u.dst_port() == port)
}

#[test]
fn veth_frames_cross_both_ways_and_partial_checksums_are_completed() {
    let (a, b) = setup("pkt1");
    let mut link = open_link(&a).without_checksum_trust();
    assert_eq!(link.caps().mtu, 1500);

    // In: the kernel of `b` sends a datagram; veth offloads leave its UDP
    // checksum partial, and the link completes it.
    let payload = b"over the veth, checksum left to the device";
    b.run(|| {
        let s = UdpSocket::bind((B, 0)).unwrap();
        s.send_to(payload, (A, 9999)).unwrap();
    })
    .unwrap();
    let frame = recv_until(&mut link, |f| udp_to(f, 9999));
    let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(udp.verify_checksum(&B.into(), &A.into()));
    assert_eq!(udp.payload(), payload);
    let stats = link.stats();
    assert!(stats.rx_csum_completed >= 1, "{stats:?}");
    link.recycle(frame);

    // Out: a frame built here reaches a socket of `b`.
    let mac_b = mac_of(&b, "vb");
    let server = b
        .run(|| {
            let s = UdpSocket::bind((B, 7777)).unwrap();
            s.set_read_timeout(Some(StdDuration::from_secs(2))).unwrap();
            s
        })
        .unwrap();
    let data = b"from the packet link";
    let mut out = link.buffer();
    emit_udp(&mut out, (MAC_A, A, 4444), (mac_b, B, 7777), data);
    link.send(wall_clock(), out);
    link.flush(wall_clock());
    let mut got = [0u8; 64];
    let (n, from) = server.recv_from(&mut got).unwrap();
    assert_eq!(&got[..n], data);
    assert_eq!(from, SocketAddr::from((A, 4444)));
    assert_eq!(link.stats().tx_frames, 1);
    assert_eq!(link.stats().tx_dropped, 0);
}

/// A deterministic byte pattern that never lines up with segment sizes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed ^ (i >> 16) as u8)
        .collect()
}

fn stack_on(link: impl Link + 'static) -> Stack {
    let mut stack = Stack::new(StackConfig::default(), wall_clock());
    stack
        .add_nic(
            Box::new(link),
            NicConfig {
                name: "va".into(),
                mac: MAC_A,
                addrs: vec![IfAddr {
                    addr: IpAddr::V4(A),
                    prefix_len: 24,
                }],
                gateway_v4: None,
                gateway_v6: None,
            },
        )
        .unwrap();
    stack
}

#[test]
fn stack_over_packet_link_exchanges_4_mib_with_the_kernel_both_ways() {
    let (a, b) = setup("pkt2");
    exchange_4_mib(stack_on(open_link(&a)), &b);
}

#[test]
fn without_offloads_the_stack_still_exchanges_4_mib() {
    let (a, b) = setup("pkt3");
    let link = open_link(&a)
        .without_segmentation()
        .without_checksum_trust();
    exchange_4_mib(stack_on(link), &b);
}

#[test]
fn behind_a_wrapper_that_hides_the_offloads_the_stack_still_exchanges_4_mib() {
    // The wrapper does not pass on `vouch_for_checksums`: smoltcp verifies,
    // so the link must complete the kernel's partial checksums.
    let (a, b) = setup("pkt5");
    let link = Impaired::new(open_link(&a), Impairments::default());
    exchange_4_mib(stack_on(link), &b);
}

/// Fills `out` with an Ethernet frame holding a UDP datagram of `data`
/// from `src` to `dst` (MAC, address, port), checksums complete.
fn emit_udp(
    out: &mut Vec<u8>,
    src: ([u8; 6], Ipv4Addr, u16),
    dst: ([u8; 6], Ipv4Addr, u16),
    data: &[u8],
) {
    let udp = UdpRepr {
        src_port: src.2,
        dst_port: dst.2,
    };
    let ip = Ipv4Repr {
        src_addr: src.1,
        dst_addr: dst.1,
        next_header: IpProtocol::Udp,
        payload_len: 8 + data.len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src.0),
        dst_addr: EthernetAddress(dst.0),
        ethertype: EthernetProtocol::Ipv4,
    };
    out.resize(14 + 20 + 8 + data.len(), 0);
    let caps = smoltcp::phy::ChecksumCapabilities::default();
    let mut f = EthernetFrame::new_unchecked(&mut out[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &caps);
    udp.emit(
        &mut UdpPacket::new_unchecked(p.payload_mut()),
        &src.1.into(),
        &dst.1.into(),
        data.len(),
        |b| b.copy_from_slice(data),
        &caps,
    );
}

/// A UDP frame from `B` to `A` whose checksum is right, or off by one.
fn udp_frame(mac_b: [u8; 6], port: u16, data: &[u8], corrupt: bool) -> Vec<u8> {
    let mut out = Vec::new();
    emit_udp(&mut out, (mac_b, B, 4444), (MAC_A, A, port), data);
    if corrupt {
        let mut u = UdpPacket::new_unchecked(&mut out[14 + 20..]);
        let c = u.checksum();
        u.set_checksum(c.wrapping_add(1));
    }
    out
}

#[test]
fn trusted_checksums_pass_kernel_frames_and_verify_the_others() {
    let (a, b) = setup("pkt4");
    let mut link = open_link(&a);
    // What the stack asks when the link joins it.
    assert!(link.vouch_for_checksums());

    // The kernel's own frame comes with its checksum partial, trusted as is.
    b.run(|| {
        let s = UdpSocket::bind((B, 0)).unwrap();
        s.send_to(b"from the kernel", (A, 9001)).unwrap();
    })
    .unwrap();
    let frame = recv_until(&mut link, |f| udp_to(f, 9001));
    link.recycle(frame);
    assert_eq!(link.stats().rx_csum_completed, 0);
    assert_eq!(link.stats().rx_csum_verified, 0);

    // Frames sent raw from `b` carry a final checksum: checked here, and a
    // wrong one is dropped.
    let mut raw_b = open_on(&b, "vb").without_segmentation();
    let mac_b = mac_of(&b, "vb");
    let dropped = link.stats().rx_dropped;
    raw_b.send(wall_clock(), udp_frame(mac_b, 9002, b"corrupted", true));
    raw_b.send(wall_clock(), udp_frame(mac_b, 9003, b"intact", false));
    raw_b.flush(wall_clock());
    let frame = recv_until(&mut link, |f| udp_to(f, 9002) || udp_to(f, 9003));
    assert!(udp_to(&frame, 9003), "the corrupted datagram came through");
    assert_eq!(link.stats().rx_dropped, dropped + 1);
    assert!(link.stats().rx_csum_verified >= 1);
}

/// Echoes 4 MiB through a server in `b`, then takes 4 MiB from a client in `b`.
fn exchange_4_mib(mut stack: Stack, b: &Netns) {
    const LEN: usize = 4 << 20;

    // The stack connects to an echo server in `b`.
    let echo = echo_server(b, SocketAddr::from((B, 5000))).unwrap();
    let sent = pattern(LEN, 0x5a);
    let s = stack.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    match stack.connect(s, SocketAddr::from((B, 5000))) {
        Err(NetError::InProgress) | Ok(()) => {}
        Err(e) => panic!("connect: {e:?}"),
    }
    let back = echo_through(&mut stack, s, &sent);
    assert!(back == sent, "echoed bytes differ");
    echo.join().unwrap().unwrap();

    // `b` connects to a listener on the stack and sends; the kernel's TSO
    // segments arrive whole, with partial checksums.
    let l = stack.socket(Domain::Ipv4, Protocol::Tcp).unwrap();
    stack.bind(l, SocketAddr::from((A, 6000))).unwrap();
    stack.listen(l, 8).unwrap();
    let upload = pattern(LEN, 0xa5);
    let to_send = upload.clone();
    let client = b
        .spawn(move || {
            let mut c = TcpStream::connect((A, 6000)).unwrap();
            c.write_all(&to_send).unwrap();
        })
        .unwrap();
    let mut conn = None;
    let mut got = Vec::with_capacity(LEN);
    let mut buf = vec![0u8; 256 << 10];
    let done = drive(&mut stack, StdDuration::from_secs(60), |st| {
        let c = match conn {
            Some(c) => c,
            None => match st.accept(l) {
                Ok((c, _)) => *conn.insert(c),
                Err(NetError::WouldBlock) => return Step::Idle,
                Err(e) => panic!("accept: {e:?}"),
            },
        };
        let mut busy = false;
        loop {
            match st.recv(c, &mut buf, RecvFlags::default()) {
                Ok(0) => return Step::Done,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    busy = true;
                }
                Err(NetError::WouldBlock) => break,
                Err(e) => panic!("recv: {e:?}"),
            }
        }
        if busy { Step::Busy } else { Step::Idle }
    });
    client.join().unwrap().unwrap();
    assert!(done, "upload incomplete: got {}", got.len());
    assert!(got == upload, "uploaded bytes differ");
}
