//! An in-memory Ethernet cable between two stacks, for tests, benches and the demo.
//!
//! Both ends share one lock-protected pair of queues and a pool of buffers,
//! so a steady transfer allocates nothing per frame. An optional one-way delay
//! holds each frame until `now + delay`, which the simulated clock makes exact.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use nix::sys::eventfd::EventFd;
use smoltcp::time::{Duration, Instant};

use super::{Link, LinkCaps, Medium};

#[derive(Debug, Default)]
struct Shared {
    /// `queues[i]` holds frames travelling towards end i, with their delivery time.
    queues: [VecDeque<(Instant, Vec<u8>)>; 2],
    free: Vec<Vec<u8>>,
    /// `wake[i]` is signalled when frames start to wait for end i, for an
    /// end read by another thread.
    wake: [Option<Arc<EventFd>>; 2],
}

/// One end of a [`pair`].
#[derive(Debug)]
pub struct PairEnd {
    shared: Arc<Mutex<Shared>>,
    side: usize,
    mtu: usize,
    delay: Duration,
    checksum_offload: bool,
}

/// Makes a cable with the given MTU and one-way delay. Checksums are
/// computed and verified, as on a real wire, unless `checksum_offload` is set.
pub fn pair(mtu: usize, delay: Duration, checksum_offload: bool) -> (PairEnd, PairEnd) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let end = |side| PairEnd {
        shared: Arc::clone(&shared),
        side,
        mtu,
        delay,
        checksum_offload,
    };
    (end(0), end(1))
}

impl PairEnd {
    /// Signals `fd` whenever frames start to wait for this end (its queue
    /// was empty), so that a reader on another thread can sleep on it. The
    /// reader must take the signal before it drains the queue.
    pub fn wake_on_frames(&self, fd: Arc<EventFd>) {
        self.shared().wake[self.side] = Some(fd);
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A poisoned lock only means another thread panicked mid-push; the
        // queues themselves are always consistent.
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Link for PairEnd {
    fn caps(&self) -> LinkCaps {
        LinkCaps {
            medium: Medium::Ethernet,
            mtu: self.mtu,
            checksum_offload: self.checksum_offload,
        }
    }

    fn recv(&mut self, now: Instant) -> Option<Vec<u8>> {
        let side = self.side;
        // Without a delay a frame is due at once, whatever the clocks of
        // the two ends (threads of their own) say.
        let instant = self.delay == Duration::ZERO;
        let mut s = self.shared();
        match s.queues[side].front() {
            Some((at, _)) if instant || *at <= now => s.queues[side].pop_front().map(|(_, f)| f),
            _ => None,
        }
    }

    fn send(&mut self, now: Instant, frame: Vec<u8>) {
        let at = now + self.delay;
        let other = 1 - self.side;
        let mut s = self.shared();
        let was_empty = s.queues[other].is_empty();
        s.queues[other].push_back((at, frame));
        if was_empty && let Some(fd) = &s.wake[other] {
            // A full counter (never, in practice) still reads as readable.
            let _ = fd.write(1);
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.shared().free.pop().unwrap_or_default()
    }

    fn recycle(&mut self, frame: Vec<u8>) {
        let mut s = self.shared();
        if s.free.len() < 1024 {
            s.free.push(frame);
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        let instant = self.delay == Duration::ZERO;
        let front = self.shared().queues[self.side].front().map(|(at, _)| *at);
        front.map(|at| if instant { Instant::ZERO } else { at })
    }
}
