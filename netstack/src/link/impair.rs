//! A link wrapper that loses, duplicates and reorders frames, for tests.
//!
//! Decisions come from a seeded xorshift generator, so a failing run can be
//! replayed exactly with the same seed.

use smoltcp::time::Instant;

use super::{Link, LinkCaps};

/// Probabilities, each in parts per million of frames sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairments {
    /// Frames dropped.
    pub loss_ppm: u32,
    /// Frames sent twice.
    pub duplicate_ppm: u32,
    /// Frames held back and sent after the next one.
    pub reorder_ppm: u32,
    /// Seed of the generator (0 is replaced by a fixed non-zero value).
    pub seed: u64,
}

/// Wraps a link and impairs the frames sent through it.
#[derive(Debug)]
pub struct Impaired<L> {
    inner: L,
    cfg: Impairments,
    state: u64,
    held: Option<Vec<u8>>,
    /// Frames dropped so far.
    pub dropped: u64,
    /// Frames duplicated so far.
    pub duplicated: u64,
    /// Frames reordered so far.
    pub reordered: u64,
}

impl<L: Link> Impaired<L> {
    /// Wraps `inner`.
    pub fn new(inner: L, cfg: Impairments) -> Self {
        let state = if cfg.seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            cfg.seed
        };
        Impaired {
            inner,
            cfg,
            state,
            held: None,
            dropped: 0,
            duplicated: 0,
            reordered: 0,
        }
    }

    fn roll(&mut self, ppm: u32) -> bool {
        if ppm == 0 {
            return false;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % 1_000_000) < u64::from(ppm)
    }
}

impl<L: Link> Link for Impaired<L> {
    fn caps(&self) -> LinkCaps {
        self.inner.caps()
    }

    fn recv(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.inner.recv(now)
    }

    fn send(&mut self, now: Instant, frame: Vec<u8>) {
        if self.roll(self.cfg.loss_ppm) {
            self.dropped += 1;
            self.inner.recycle(frame);
            return;
        }
        if self.held.is_none() && self.roll(self.cfg.reorder_ppm) {
            self.reordered += 1;
            self.held = Some(frame);
            return;
        }
        if self.roll(self.cfg.duplicate_ppm) {
            self.duplicated += 1;
            let mut copy = self.inner.buffer();
            copy.clear();
            copy.extend_from_slice(&frame);
            self.inner.send(now, copy);
        }
        self.inner.send(now, frame);
        if let Some(held) = self.held.take() {
            self.inner.send(now, held);
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.inner.buffer()
    }

    fn recycle(&mut self, frame: Vec<u8>) {
        self.inner.recycle(frame);
    }

    fn poll_at(&self) -> Option<Instant> {
        self.inner.poll_at()
    }

    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.fd()
    }

    fn flush(&mut self, now: Instant) {
        self.inner.flush(now);
    }
}
