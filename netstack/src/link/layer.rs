//! One generic way to put a layer around a link.
//!
//! A wrapper link (a capture, a fault injector, a relay that takes some
//! frames off the wire) changes a few things about the link it wraps and
//! passes the rest on. A [`Layer`] says only what it changes: each hook has
//! a default that changes nothing. [`Layered`] joins an inner link and a
//! layer into one [`Link`], written once here, so that no wrapper forwards
//! methods by hand (a forward forgotten in one wrapper once turned TSO off
//! under capture).
//!
//! How frames pass through a [`Layered`]:
//! - `recv` takes frames from the inner link and gives each to
//!   [`Layer::inbound`], which passes it up or keeps it; once the inner link
//!   has none, [`Layer::inject`] may hand up a frame of the layer's own.
//! - `send` and `send_segmented` go to [`Layer::outbound`], which by default
//!   passes the frame on as it came ([`pass_on`]).
//! - `flush` runs [`Layer::flush`] first, then flushes the inner link, so
//!   that frames the layer sends there leave in the same flush.
//! - `poll_at` is the earlier of the two; `fd` is the layer's if it has one
//!   (it must then cover the inner link's too), else the inner link's.
//! - Offloads (segmentation, checksum trust) pass through unless
//!   [`Layer::passes_offloads`] says no.
//! - Buffers always come from, and go back to, the inner link.

use std::os::fd::BorrowedFd;

use smoltcp::time::Instant;

use super::{Link, LinkCaps};

/// What a layer changes about the link it wraps. Every hook is given the
/// inner link where it may need it (to send, or for a buffer).
pub trait Layer: Send {
    /// What the layered link carries, from what the inner one does.
    fn caps(&self, inner: LinkCaps) -> LinkCaps {
        inner
    }

    /// Whether the inner link's offloads (segmentation and checksum trust)
    /// show through the layer. A layer that wants every frame whole and
    /// verifiable by smoltcp says no.
    fn passes_offloads(&self) -> bool {
        true
    }

    /// A frame received from the inner link: returned to pass it up, or
    /// kept (or recycled into `link`) by returning `None`; the layered link
    /// then reads the next one.
    fn inbound(&mut self, _link: &mut dyn Link, _now: Instant, frame: Vec<u8>) -> Option<Vec<u8>> {
        Some(frame)
    }

    /// A frame of the layer's own to hand up, asked for when the inner link
    /// has nothing ready at `now`.
    fn inject(&mut self, _link: &mut dyn Link, _now: Instant) -> Option<Vec<u8>> {
        None
    }

    /// A frame the stack sends; `mss` is `Some` for a large TCP segment the
    /// link is to cut (see [`Link::send_segmented`]). Whatever the layer
    /// does, the frame ends in `link`: sent ([`pass_on`]) or recycled.
    fn outbound(&mut self, link: &mut dyn Link, now: Instant, frame: Vec<u8>, mss: Option<u16>) {
        pass_on(link, now, frame, mss);
    }

    /// When the layer has work of its own due (a timer), if ever.
    fn poll_at(&self) -> Option<Instant> {
        None
    }

    /// For a layer with host descriptors of its own: one that turns readable
    /// when any of them, or the inner link's, does (an epoll set holding them).
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// The stack's end-of-poll flush, before the inner link's own.
    fn flush(&mut self, _link: &mut dyn Link, _now: Instant) {}
}

/// Sends `frame` on `link` as the stack gave it: cut by the link when `mss`
/// is `Some`, whole otherwise.
pub fn pass_on(link: &mut dyn Link, now: Instant, frame: Vec<u8>, mss: Option<u16>) {
    match mss {
        Some(mss) => link.send_segmented(now, frame, mss),
        None => link.send(now, frame),
    }
}

/// A link made of an inner link and a [`Layer`] around it.
#[derive(Debug)]
pub struct Layered<L, H> {
    inner: L,
    layer: H,
}

impl<L, H> Layered<L, H> {
    /// Puts `layer` around `inner`.
    pub fn wrap(inner: L, layer: H) -> Self {
        Layered { inner, layer }
    }

    /// The wrapped link.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// The wrapped link, mutably.
    pub fn get_mut(&mut self) -> &mut L {
        &mut self.inner
    }

    /// The layer.
    pub fn layer(&self) -> &H {
        &self.layer
    }

    /// The layer, mutably.
    pub fn layer_mut(&mut self) -> &mut H {
        &mut self.layer
    }

    /// The wrapped link and the layer, apart again.
    pub fn into_parts(self) -> (L, H) {
        (self.inner, self.layer)
    }
}

impl<L: Link, H: Layer> Link for Layered<L, H> {
    fn caps(&self) -> LinkCaps {
        self.layer.caps(self.inner.caps())
    }

    fn recv(&mut self, now: Instant) -> Option<Vec<u8>> {
        while let Some(frame) = self.inner.recv(now) {
            if let Some(frame) = self.layer.inbound(&mut self.inner, now, frame) {
                return Some(frame);
            }
        }
        self.layer.inject(&mut self.inner, now)
    }

    fn send(&mut self, now: Instant, frame: Vec<u8>) {
        self.layer.outbound(&mut self.inner, now, frame, None);
    }

    fn send_segmented(&mut self, now: Instant, frame: Vec<u8>, mss: u16) {
        self.layer.outbound(&mut self.inner, now, frame, Some(mss));
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.inner.buffer()
    }

    fn recycle(&mut self, frame: Vec<u8>) {
        self.inner.recycle(frame);
    }

    fn poll_at(&self) -> Option<Instant> {
        match (self.inner.poll_at(), self.layer.poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.layer.fd().or_else(|| self.inner.fd())
    }

    fn flush(&mut self, now: Instant) {
        self.layer.flush(&mut self.inner, now);
        self.inner.flush(now);
    }

    fn segmentation(&self) -> Option<usize> {
        if self.layer.passes_offloads() {
            self.inner.segmentation()
        } else {
            None
        }
    }

    fn vouch_for_checksums(&mut self) -> bool {
        self.layer.passes_offloads() && self.inner.vouch_for_checksums()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Medium;

    /// A link that logs what is done to it, with a segmentation offload and
    /// checksum trust to pass on or hide.
    #[derive(Debug, Default)]
    struct Logged {
        log: Vec<String>,
        incoming: Vec<Vec<u8>>,
    }

    impl Link for Logged {
        fn caps(&self) -> LinkCaps {
            LinkCaps {
                medium: Medium::Ethernet,
                mtu: 1500,
                checksum_offload: false,
            }
        }
        fn recv(&mut self, _now: Instant) -> Option<Vec<u8>> {
            self.incoming.pop()
        }
        fn send(&mut self, _now: Instant, frame: Vec<u8>) {
            self.log.push(format!("send {}", frame.len()));
        }
        fn send_segmented(&mut self, _now: Instant, frame: Vec<u8>, mss: u16) {
            self.log.push(format!("segmented {} {mss}", frame.len()));
        }
        fn poll_at(&self) -> Option<Instant> {
            Some(Instant::from_millis(20))
        }
        fn flush(&mut self, _now: Instant) {
            self.log.push("flush".into());
        }
        fn segmentation(&self) -> Option<usize> {
            Some(65536)
        }
        fn vouch_for_checksums(&mut self) -> bool {
            self.log.push("vouch".into());
            true
        }
    }

    /// A layer that changes nothing.
    #[derive(Debug)]
    struct Nothing;
    impl Layer for Nothing {}

    #[test]
    fn a_layer_that_changes_nothing_is_the_link_it_wraps() {
        let mut l = Layered::wrap(Logged::default(), Nothing);
        l.get_mut().incoming.push(vec![1; 3]);
        assert_eq!(l.recv(Instant::ZERO), Some(vec![1; 3]));
        assert_eq!(l.recv(Instant::ZERO), None);
        l.send(Instant::ZERO, vec![0; 10]);
        l.send_segmented(Instant::ZERO, vec![0; 9000], 1448);
        l.flush(Instant::ZERO);
        assert_eq!(l.segmentation(), Some(65536));
        assert!(l.vouch_for_checksums());
        assert_eq!(l.poll_at(), Some(Instant::from_millis(20)));
        assert_eq!(l.caps().mtu, 1500);
        assert_eq!(
            l.get_ref().log,
            ["send 10", "segmented 9000 1448", "flush", "vouch"]
        );
    }

    /// Keeps odd-length frames, hands up its own frames, queues a frame to
    /// send at flush, hides the offloads and lowers the MTU.
    #[derive(Debug, Default)]
    struct Busy {
        kept: usize,
        own: Vec<Vec<u8>>,
        at_flush: Option<Vec<u8>>,
    }

    impl Layer for Busy {
        fn caps(&self, inner: LinkCaps) -> LinkCaps {
            LinkCaps {
                mtu: inner.mtu - 8,
                ..inner
            }
        }
        fn passes_offloads(&self) -> bool {
            false
        }
        fn inbound(&mut self, _: &mut dyn Link, _: Instant, frame: Vec<u8>) -> Option<Vec<u8>> {
            if frame.len() % 2 == 1 {
                self.kept += 1;
                return None;
            }
            Some(frame)
        }
        fn inject(&mut self, _: &mut dyn Link, _: Instant) -> Option<Vec<u8>> {
            self.own.pop()
        }
        fn poll_at(&self) -> Option<Instant> {
            Some(Instant::from_millis(5))
        }
        fn flush(&mut self, link: &mut dyn Link, now: Instant) {
            if let Some(f) = self.at_flush.take() {
                link.send(now, f);
            }
        }
    }

    #[test]
    fn hooks_take_frames_add_frames_and_hide_offloads() {
        let busy = Busy {
            own: vec![vec![7; 4]],
            at_flush: Some(vec![0; 30]),
            ..Busy::default()
        };
        let mut l = Layered::wrap(Logged::default(), busy);
        // Popped from the end: 2 bytes, then 3 (kept), then 1 (kept).
        l.get_mut().incoming = vec![vec![0; 1], vec![0; 3], vec![0; 2]];
        assert_eq!(l.recv(Instant::ZERO), Some(vec![0; 2]));
        // The inner link's odd frames are kept; then the layer's own.
        assert_eq!(l.recv(Instant::ZERO), Some(vec![7; 4]));
        assert_eq!(l.recv(Instant::ZERO), None);
        assert_eq!(l.layer().kept, 2);
        l.flush(Instant::ZERO);
        assert_eq!(l.get_ref().log, ["send 30", "flush"]);
        assert_eq!(l.segmentation(), None);
        assert!(!l.vouch_for_checksums());
        assert_eq!(l.get_ref().log.len(), 2, "the inner link was not asked");
        assert_eq!(l.poll_at(), Some(Instant::from_millis(5)));
        assert_eq!(l.caps().mtu, 1492);
    }
}
