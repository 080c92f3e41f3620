//! Link endpoints: where the stack's frames come from and go to.
//!
//! A [`Link`] moves whole frames (Ethernet frames, or bare IP packets for
//! [`Medium::Ip`]) as owned buffers, so wrappers compose: a fault injector or
//! a pcap sniffer takes any link and is a link itself. The stack reads one
//! frame at a time, looks at its headers to find the owning socket, and only
//! then hands it to smoltcp through `FrameDevice`, a one-frame smoltcp
//! `Device` built around the link for the duration of one call.
//!
//! Links: [`Loopback`] (`lo`), [`pair`] (an in-memory cable), [`Impaired`]
//! (loss, delay, jitter, duplication, reordering, corruption and a rate,
//! each way: `--impair`), [`TapLink`] (an existing TAP
//! device), [`Sniffer`] (pcapng capture of any link into a [`Capture`]), and
//! [`DnsRelay`] (the guest's queries to Docker's 127.0.0.11:53, relayed
//! through host sockets). The wrappers among them are a [`Layer`] around
//! another link, joined by [`Layered`]: each says only what it changes.

mod dns_relay;
mod impair;
mod layer;
mod loopback;
mod packet;
mod pair;
mod sniffer;
mod tap;

pub use dns_relay::{DnsRelay, DnsRelayer, MAX_RELAYS, RELAY_IDLE};
pub use impair::{DEFAULT_LIMIT, ImpairCounts, Impaired, Impairer, Impairments, fill_checksums};
pub use layer::{Layer, Layered, pass_on};
pub use loopback::Loopback;
pub use packet::{PacketLink, PacketStats};
pub use pair::{PairEnd, pair};
pub use sniffer::{
    Capture, CaptureClock, CaptureConfig, CaptureError, CaptureFile, CaptureInterface,
    CaptureSummary, Direction, FrameRecorder, InterfaceCounts, Mark, Ring, Sniffer,
};
pub use tap::{TapError, TapLink, TapStats};

use std::os::fd::BorrowedFd;

pub use smoltcp::phy::Medium;
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, PacketMeta};
use smoltcp::time::Instant;

/// What a link can carry.
#[derive(Debug, Clone)]
pub struct LinkCaps {
    /// Ethernet frames or bare IP packets.
    pub medium: Medium,
    /// Largest IP packet the link carries (the interface MTU, as `ip link` shows it).
    pub mtu: usize,
    /// When true, the link guarantees integrity (in-memory links), so checksums
    /// are neither computed nor verified.
    pub checksum_offload: bool,
}

/// A source and sink of frames.
pub trait Link: Send {
    /// What the link carries.
    fn caps(&self) -> LinkCaps;
    /// The next received frame, if one is ready at `now`.
    fn recv(&mut self, now: Instant) -> Option<Vec<u8>>;
    /// Sends one frame.
    fn send(&mut self, now: Instant, frame: Vec<u8>);
    /// An empty buffer to build a frame in; links that keep a pool hand out
    /// recycled buffers so the hot path does not allocate.
    fn buffer(&mut self) -> Vec<u8> {
        Vec::new()
    }
    /// Returns a buffer obtained from [`Link::recv`] once the stack is done with it.
    fn recycle(&mut self, frame: Vec<u8>) {
        drop(frame);
    }
    /// When a frame held back by the link (a delay) becomes ready, if ever.
    fn poll_at(&self) -> Option<Instant> {
        None
    }
    /// For links backed by the host (AF_PACKET, TAP): the descriptor that
    /// turns readable when frames arrive, for the event loop to wait on.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// Sends what [`Link::send`] queued. The stack calls it at the end of
    /// every [`Stack::poll`](crate::Stack::poll), so links may batch writes.
    fn flush(&mut self, _now: Instant) {}
    /// For links that cut large TCP segments to size themselves, as a NIC
    /// with TSO does (IPv4 only: smoltcp drops larger IPv6 packets): the
    /// largest frame, Ethernet header included, the link takes. One large
    /// segment then costs the stack one pass instead of dozens. Such a link
    /// also completes the TCP checksum of every frame it sends: smoltcp
    /// leaves the field unset (it requires checksum offload with TSO). The
    /// stack asks once, when the link joins it.
    fn segmentation(&self) -> Option<usize> {
        None
    }
    /// Asks the link to vouch, from now on, for the TCP and UDP checksums
    /// of the frames it hands over (it verifies them, or knows them good:
    /// frames the local kernel made) and to drop bad ones itself, so that
    /// smoltcp skips its own pass over every byte. True if it will. The
    /// stack asks once, when the link joins it; a layer that hides the
    /// offloads ([`Layer::passes_offloads`]) does not pass the question on,
    /// and the inner link then makes every frame verifiable.
    fn vouch_for_checksums(&mut self) -> bool {
        false
    }
    /// Sends one TCP segment larger than the MTU, to be cut into segments of
    /// `mss` payload bytes each. Called only on links whose
    /// [`Link::segmentation`] is `Some`.
    fn send_segmented(&mut self, now: Instant, frame: Vec<u8>, _mss: u16) {
        self.send(now, frame);
    }
}

// Not a layer: a box is the link it points to. The stack and the runtime
// hold links as `Box<dyn Link>` and put layers around them, so every method
// must reach the boxed link (a default here would hide its offloads).
impl<L: Link + ?Sized> Link for Box<L> {
    fn caps(&self) -> LinkCaps {
        (**self).caps()
    }
    fn recv(&mut self, now: Instant) -> Option<Vec<u8>> {
        (**self).recv(now)
    }
    fn send(&mut self, now: Instant, frame: Vec<u8>) {
        (**self).send(now, frame);
    }
    fn buffer(&mut self) -> Vec<u8> {
        (**self).buffer()
    }
    fn recycle(&mut self, frame: Vec<u8>) {
        (**self).recycle(frame);
    }
    fn poll_at(&self) -> Option<Instant> {
        (**self).poll_at()
    }
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        (**self).fd()
    }
    fn flush(&mut self, now: Instant) {
        (**self).flush(now);
    }
    fn segmentation(&self) -> Option<usize> {
        (**self).segmentation()
    }
    fn vouch_for_checksums(&mut self) -> bool {
        (**self).vouch_for_checksums()
    }
    fn send_segmented(&mut self, now: Instant, frame: Vec<u8>, mss: u16) {
        (**self).send_segmented(now, frame, mss);
    }
}

/// smoltcp's view of a link for one call: at most one received frame (already
/// read and classified by the stack), and transmission straight into the link.
pub(crate) struct FrameDevice<'a> {
    link: &'a mut dyn Link,
    frame: Option<&'a [u8]>,
    caps: &'a DeviceCapabilities,
    now: Instant,
    /// The traffic class (TOS) of the UDP datagrams sent, which smoltcp
    /// always leaves 0 (`IP_TOS`, `IPV6_TCLASS`).
    class: u8,
}

impl<'a> FrameDevice<'a> {
    /// `caps` as [`device_caps`] settled them when the link joined.
    pub(crate) fn new(
        link: &'a mut dyn Link,
        caps: &'a DeviceCapabilities,
        frame: Option<&'a [u8]>,
        now: Instant,
    ) -> Self {
        FrameDevice {
            link,
            frame,
            caps,
            now,
            class: 0,
        }
    }

    /// UDP datagrams sent through it carry traffic class `class`.
    pub(crate) fn with_class(mut self, class: u8) -> Self {
        self.class = class;
        self
    }

    /// How a frame sent through it is marked: where its IP header starts,
    /// the class, and whether the IPv4 header checksum is ours to redo.
    fn mark(&self) -> HeaderMark {
        HeaderMark {
            ip_at: if self.caps.medium == Medium::Ethernet {
                14
            } else {
                0
            },
            class: (self.class != 0).then_some(self.class),
            ipv4_checksum: self.caps.checksum.ipv4.tx(),
        }
    }
}

/// What a UDP packet's IP header gets on its way out that smoltcp cannot
/// write: its socket's traffic class.
#[derive(Clone, Copy)]
struct HeaderMark {
    ip_at: usize,
    class: Option<u8>,
    ipv4_checksum: bool,
}

impl HeaderMark {
    /// Writes the class into a UDP packet's IP header.
    fn apply(self, frame: &mut [u8]) {
        let Some(class) = self.class else {
            return;
        };
        let Some(ip) = frame.get_mut(self.ip_at..) else {
            return;
        };
        match ip.first().map(|b| b >> 4) {
            Some(4) if ip.len() >= 20 && ip[9] == 17 => {
                ip[1] = class;
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                if self.ipv4_checksum && (20..=ip.len()).contains(&ihl) {
                    smoltcp::wire::Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
                }
            }
            Some(6) if ip.len() >= 40 && ip[6] == 17 => {
                ip[0] = (ip[0] & 0xf0) | (class >> 4);
                ip[1] = (ip[1] & 0x0f) | (class << 4);
            }
            _ => {}
        }
    }
}

/// smoltcp's capabilities for a link that joins a stack. The link's
/// offloads are asked about here, once: the answers hold for as long as
/// the link is the stack's, so no frame pays for the questions again.
pub(crate) fn device_caps(link: &mut dyn Link, caps: &LinkCaps) -> DeviceCapabilities {
    let mut dc = DeviceCapabilities::default();
    dc.medium = caps.medium;
    // An IP packet's length field is 16 bits wide: Linux's `lo` says 65536,
    // but no packet can be longer than 65535.
    let ip_mtu = caps.mtu.min(usize::from(u16::MAX));
    dc.max_transmission_unit = match caps.medium {
        Medium::Ethernet => ip_mtu + 14,
        _ => ip_mtu,
    };
    if caps.checksum_offload {
        dc.checksum = ChecksumCapabilities::ignored();
    }
    if let Some(max) = link.segmentation().and_then(std::num::NonZeroUsize::new) {
        dc.segmentation.tcpv4 = Some(max);
        if dc.checksum.tcp.rx() {
            dc.checksum.tcp = Checksum::Rx;
        }
    }
    if link.vouch_for_checksums() {
        for c in [&mut dc.checksum.tcp, &mut dc.checksum.udp] {
            *c = if c.tx() { Checksum::Tx } else { Checksum::None };
        }
    }
    dc
}

impl phy::Device for FrameDevice<'_> {
    type RxToken<'b>
        = FrameRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = FrameTx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(FrameRx<'_>, FrameTx<'_>)> {
        let frame = self.frame.take()?;
        let ip_at = if self.caps.medium == Medium::Ethernet {
            14
        } else {
            0
        };
        let mut meta = PacketMeta::default();
        meta.id = crate::socket::IpMarks::of_frame(frame, ip_at).pack();
        let mark = self.mark();
        Some((
            FrameRx { frame, meta },
            FrameTx {
                link: &mut *self.link,
                now: self.now,
                mss: None,
                mark,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<FrameTx<'_>> {
        let mark = self.mark();
        Some(FrameTx {
            link: &mut *self.link,
            now: self.now,
            mss: None,
            mark,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

pub(crate) struct FrameRx<'a> {
    frame: &'a [u8],
    /// Carries the IP header's hop limit and traffic class into smoltcp's
    /// UDP metadata, which keeps neither.
    meta: PacketMeta,
}

impl phy::RxToken for FrameRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }

    fn meta(&self) -> PacketMeta {
        self.meta
    }
}

pub(crate) struct FrameTx<'a> {
    link: &'a mut dyn Link,
    now: Instant,
    /// The segment size smoltcp asked for, when the frame is to be cut.
    mss: Option<u16>,
    mark: HeaderMark,
}

impl phy::TxToken for FrameTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.link.buffer();
        // smoltcp writes every byte of the frame: a recycled buffer that is
        // long enough is cut to size, not zeroed again.
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        let r = f(&mut buf);
        self.mark.apply(&mut buf);
        match self.mss {
            Some(mss) => self.link.send_segmented(self.now, buf, mss),
            None => self.link.send(self.now, buf),
        }
        r
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.mss = meta
            .segmentation_offload_size
            .map(std::num::NonZeroU16::get);
    }
}
