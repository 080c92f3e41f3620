//! The loopback link: frames sent are received by the same stack, in order.

use std::collections::VecDeque;

use smoltcp::time::Instant;

use super::{Link, LinkCaps, Medium};

/// Linux's `lo` MTU.
pub const LOOPBACK_MTU: usize = 65536;

/// An in-process loopback: bare IP packets, no checksums (nothing can corrupt them).
#[derive(Debug, Default)]
pub struct Loopback {
    queue: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
}

impl Loopback {
    /// An empty loopback.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Link for Loopback {
    fn caps(&self) -> LinkCaps {
        LinkCaps {
            medium: Medium::Ip,
            mtu: LOOPBACK_MTU,
            checksum_offload: true,
        }
    }

    fn recv(&mut self, _now: Instant) -> Option<Vec<u8>> {
        self.queue.pop_front()
    }

    fn send(&mut self, _now: Instant, frame: Vec<u8>) {
        self.queue.push_back(frame);
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    fn recycle(&mut self, frame: Vec<u8>) {
        if self.free.len() < 256 {
            self.free.push(frame);
        }
    }
}
