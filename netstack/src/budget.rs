//! How much memory the TCP buffers of one stack may hold together, as
//! Linux's `net.ipv4.tcp_mem` bounds its TCP: a guest (or a peer on the
//! wire) that fills every buffer of thousands of connections must not make
//! the Sentry hold gigabytes.
//!
//! Each buffer (a connection's send ring and its receive ring) grows on
//! demand; a growth is charged here, and a buffer's storage is given back
//! when the connection ends, or when the buffer empties while the stack is
//! short of memory. Past the limit a buffer only grows to [`FLOOR`]: a
//! receive window then offers what the stored bytes leave of the buffer's
//! storage (so a peer's data beyond it is not accepted and is sent again
//! later), and a sender takes no more from its application than its
//! storage holds (the guest's writes then wait, or fail with EAGAIN). Every
//! connection keeps [`FLOOR`] bytes each way, so each still moves, slowly,
//! as under Linux's memory pressure.
//!
//! The handle is shared by every buffer of the stack (and may be shared by
//! several stacks); its counters are atomics so that a stack can move to
//! another thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Storage a buffer may always have, whatever the budget says.
pub const FLOOR: usize = 4096;

/// A memory budget for socket buffers: a limit and what is charged.
#[derive(Debug, Clone)]
pub struct Budget(Arc<Counters>);

#[derive(Debug)]
struct Counters {
    limit: usize,
    used: AtomicUsize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::unlimited()
    }
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Budget {
        Budget(Arc::new(Counters {
            limit,
            used: AtomicUsize::new(0),
        }))
    }

    /// No limit (tests, benches, a stack nobody hostile feeds).
    pub fn unlimited() -> Budget {
        Budget::new(usize::MAX)
    }

    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Bytes of storage the buffers hold now.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Bytes a buffer may still grow by.
    pub fn free(&self) -> usize {
        self.limit().saturating_sub(self.used())
    }

    /// Past half the limit: an emptied buffer gives its storage back
    /// rather than keeping it for its next bytes.
    pub fn short(&self) -> bool {
        self.used() > self.limit() / 2
    }

    /// The most storage a buffer that has `held` now and may hold up to
    /// `capacity` can have: what the budget lets it grow to, never below
    /// [`FLOOR`] (nor below what it has).
    pub fn storage_limit(&self, held: usize, capacity: usize) -> usize {
        let reachable = held.saturating_add(self.free()).max(FLOOR).max(held);
        capacity.min(reachable).max(held.min(capacity))
    }

    /// A buffer's storage went from `from` to `to` bytes.
    pub fn resized(&self, from: usize, to: usize) {
        if to > from {
            self.0.used.fetch_add(to - from, Ordering::Relaxed);
        } else if from > to {
            self.0.used.fetch_sub(from - to, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_bounded_by_what_is_left_but_never_below_the_floor() {
        let b = Budget::new(10_000);
        assert_eq!(b.storage_limit(0, 1 << 20), 10_000);
        b.resized(0, 8_000);
        // 2,000 left: a buffer holding 8,000 may reach 10,000.
        assert_eq!(b.storage_limit(8_000, 1 << 20), 10_000);
        // A new buffer still gets the floor, past the limit.
        assert_eq!(b.storage_limit(0, 1 << 20), FLOOR);
        // A buffer smaller than the floor stays at its own size.
        assert_eq!(b.storage_limit(0, 100), 100);
        b.resized(0, 5_000);
        assert_eq!(b.free(), 0);
        assert!(b.short());
        assert_eq!(b.storage_limit(8_000, 1 << 20), 8_000);
        b.resized(8_000, 0);
        b.resized(5_000, 0);
        assert_eq!(b.used(), 0);
        assert!(!b.short());
    }

    #[test]
    fn an_unlimited_budget_gives_the_capacity() {
        let b = Budget::unlimited();
        b.resized(0, 1 << 40);
        assert_eq!(b.storage_limit(0, 1 << 22), 1 << 22);
        assert!(!b.short());
    }
}
