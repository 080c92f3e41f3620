//! A link wrapper that loses, duplicates and reorders frames, for tests.
//!
//! Decisions come from a seeded xorshift generator, so a failing run can be
//! replayed exactly with the same seed.

use smoltcp::time::Instant;

use super::{Layer, Layered, Link, pass_on};

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

/// A link whose sent frames are impaired: an [`Impairer`] around it.
pub type Impaired<L> = Layered<L, Impairer>;

impl<L: Link> Impaired<L> {
    /// Wraps `inner`.
    pub fn new(inner: L, cfg: Impairments) -> Self {
        Layered::wrap(inner, Impairer::new(cfg))
    }
}

/// The layer that loses, duplicates and reorders sent frames, and counts
/// what it did. Received frames pass untouched.
#[derive(Debug)]
pub struct Impairer {
    cfg: Impairments,
    state: u64,
    /// A frame held back, with its segment size, to go after the next one.
    held: Option<(Vec<u8>, Option<u16>)>,
    /// Frames dropped so far.
    pub dropped: u64,
    /// Frames duplicated so far.
    pub duplicated: u64,
    /// Frames reordered so far.
    pub reordered: u64,
}

impl Impairer {
    /// Impairs as `cfg` says.
    pub fn new(cfg: Impairments) -> Self {
        let state = if cfg.seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            cfg.seed
        };
        Impairer {
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

impl Layer for Impairer {
    // Frames are impaired as smoltcp made them, whole and with checksums
    // it verifies: the offloads stay hidden (tests/packet_link.rs relies on
    // a wrapper that hides them).
    fn passes_offloads(&self) -> bool {
        false
    }

    fn outbound(&mut self, link: &mut dyn Link, now: Instant, frame: Vec<u8>, mss: Option<u16>) {
        if self.roll(self.cfg.loss_ppm) {
            self.dropped += 1;
            link.recycle(frame);
            return;
        }
        if self.held.is_none() && self.roll(self.cfg.reorder_ppm) {
            self.reordered += 1;
            self.held = Some((frame, mss));
            return;
        }
        if self.roll(self.cfg.duplicate_ppm) {
            self.duplicated += 1;
            let mut copy = link.buffer();
            copy.clear();
            copy.extend_from_slice(&frame);
            pass_on(link, now, copy, mss);
        }
        pass_on(link, now, frame, mss);
        if let Some((held, mss)) = self.held.take() {
            pass_on(link, now, held, mss);
        }
    }
}
