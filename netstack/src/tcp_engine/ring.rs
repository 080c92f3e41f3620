//! The send queue's bytes: a ring that the application writes into in
//! place (`spare` then `commit`, so a host socket or a pair end can be read
//! straight into it) and that the framer reads segments out of
//! (`range`), so a byte is copied once on its way in and once into the
//! frame. It grows on demand, up to its capacity and as far as the stack's
//! [`Budget`] allows, so an idle connection holds no more than it ever
//! buffered; when the stack is short of memory an emptied ring gives its
//! storage back.

use crate::budget::Budget;

/// Smallest storage allocated once bytes arrive.
const MIN_RING: usize = 4096;

#[derive(Debug)]
pub struct ByteRing {
    /// Storage; positions wrap at its current length.
    buf: Vec<u8>,
    /// Most bytes held at once.
    capacity: usize,
    /// Index of the oldest byte.
    head: usize,
    /// Bytes held from `head`.
    len: usize,
    /// Charged for `buf`.
    budget: Budget,
}

impl Drop for ByteRing {
    fn drop(&mut self) {
        self.budget.resized(self.buf.len(), 0);
    }
}

impl ByteRing {
    #[cfg(test)]
    pub fn new(capacity: usize) -> Self {
        ByteRing::with_budget(capacity, Budget::unlimited())
    }

    pub fn with_budget(capacity: usize, budget: Budget) -> Self {
        ByteRing {
            buf: Vec::new(),
            capacity: capacity.max(1),
            head: 0,
            len: 0,
            budget,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// A new limit (`SO_SNDBUF` changed); never below what is held, so no
    /// byte is lost and `room` stays sound.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(self.len).max(1);
    }

    /// Bytes it may take now: up to its capacity, as far as the budget
    /// lets its storage grow.
    pub fn room(&self) -> usize {
        self.budget
            .storage_limit(self.buf.len(), self.capacity)
            .saturating_sub(self.len)
    }

    /// A contiguous free region for up to `want` more bytes (fewer when the
    /// ring is full or the free space wraps); write into it, then `commit`.
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        let want = want.min(self.room());
        if want == 0 {
            return &mut [];
        }
        if self.contiguous_room() < want && self.buf.len() < self.capacity {
            self.grow(self.len + want);
        }
        let n = want.min(self.contiguous_room());
        if n == 0 {
            return &mut [];
        }
        let tail = (self.head + self.len) % self.buf.len();
        &mut self.buf[tail..tail + n]
    }

    /// The first `n` bytes of the region `spare` gave now hold data.
    pub fn commit(&mut self, n: usize) {
        debug_assert!(n <= self.contiguous_room());
        self.len += n.min(self.room());
    }

    /// Copies as much of `bytes` as fits; returns how much.
    pub fn push(&mut self, mut bytes: &[u8]) -> usize {
        let mut total = 0;
        while !bytes.is_empty() {
            let room = self.spare(bytes.len());
            let n = room.len();
            if n == 0 {
                break;
            }
            room.copy_from_slice(&bytes[..n]);
            self.commit(n);
            bytes = &bytes[n..];
            total += n;
        }
        total
    }

    /// Drops the `n` oldest bytes.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        if self.len == 0 {
            // Empty: start again at the front, so the next writes are one
            // contiguous region; give the storage back if memory is short.
            self.head = 0;
            if self.budget.short() && !self.buf.is_empty() {
                self.budget.resized(self.buf.len(), 0);
                self.buf = Vec::new();
            }
        } else {
            self.head = (self.head + n) % self.buf.len();
        }
    }

    /// The bytes at offsets `off..off + len` from the oldest (clipped to
    /// what is held), as one or two slices.
    pub fn range(&self, off: usize, len: usize) -> (&[u8], &[u8]) {
        let off = off.min(self.len);
        let len = len.min(self.len - off);
        if len == 0 {
            return (&[], &[]);
        }
        let size = self.buf.len();
        let start = (self.head + off) % size;
        let first = len.min(size - start);
        (&self.buf[start..start + first], &self.buf[..len - first])
    }

    /// Free bytes from the tail to where the ring wraps or meets the head.
    fn contiguous_room(&self) -> usize {
        let size = self.buf.len();
        if size == 0 || self.len == size {
            return 0;
        }
        let tail = (self.head + self.len) % size;
        // Not full, so the tail equals the head only when empty.
        if tail >= self.head {
            size - tail
        } else {
            self.head - tail
        }
    }

    /// Reallocates to hold `need` bytes, or twice as many as now if that is
    /// less (so a large `spare` asked of a ring that holds little does not
    /// allocate the whole capacity), the held ones first.
    fn grow(&mut self, need: usize) {
        let size = need
            .min(self.buf.len() * 2)
            .max(MIN_RING)
            .min(self.budget.storage_limit(self.buf.len(), self.capacity));
        if size <= self.buf.len() {
            return;
        }
        self.budget.resized(self.buf.len(), size);
        let mut buf = Vec::with_capacity(size);
        let (a, b) = self.range(0, self.len);
        buf.extend_from_slice(a);
        buf.extend_from_slice(b);
        buf.resize(size, 0);
        self.buf = buf;
        self.head = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(r: &ByteRing) -> Vec<u8> {
        let (a, b) = r.range(0, r.len());
        [a, b].concat()
    }

    #[test]
    fn a_new_capacity_gives_room_and_never_drops_held_bytes() {
        let mut r = ByteRing::new(8);
        assert_eq!(r.push(b"0123456789"), 8);
        assert_eq!(r.room(), 0);
        r.set_capacity(12);
        assert_eq!(r.room(), 4);
        assert_eq!(r.push(b"89ab"), 4);
        assert_eq!(held(&r), b"0123456789ab");
        // Below what is held: nothing is lost, there is just no room.
        r.set_capacity(2);
        assert_eq!(r.room(), 0);
        assert_eq!(held(&r), b"0123456789ab");
        // The limit stays where the held bytes put it.
        r.consume(11);
        assert_eq!(r.room(), 11);
    }

    #[test]
    fn bytes_come_out_in_order_across_wraps_and_growth() {
        let mut r = ByteRing::new(10_000);
        let mut model = std::collections::VecDeque::new();
        let mut next = 0u8;
        let mut state = 0x1234_5678u32;
        for _ in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let n = (state % 3000) as usize;
            if state & 1 == 0 {
                let bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        next = next.wrapping_add(1);
                        next
                    })
                    .collect();
                let took = r.push(&bytes);
                assert_eq!(took, n.min(10_000 - model.len()));
                model.extend(&bytes[..took]);
            } else {
                let n = n.min(model.len());
                r.consume(n);
                model.drain(..n);
            }
            assert_eq!(r.len(), model.len());
            assert_eq!(held(&r), model.iter().copied().collect::<Vec<_>>());
            let off = (state as usize >> 3) % (model.len() + 1);
            let (a, b) = r.range(off, 700);
            let want: Vec<u8> = model.iter().skip(off).take(700).copied().collect();
            assert_eq!([a, b].concat(), want);
        }
    }

    #[test]
    fn spare_regions_are_written_in_place() {
        let mut r = ByteRing::new(8192);
        // A first region is the smallest ring; more comes as it fills.
        let room = r.spare(5000);
        assert_eq!(room.len(), MIN_RING);
        room.fill(7);
        r.commit(3000);
        assert_eq!(held(&r), vec![7; 3000]);
        r.consume(3000);
        // Empty again: the next region starts at the front (of a ring
        // grown to twice the size).
        assert_eq!(r.spare(8192).len(), 8192);
        r.commit(8192);
        assert!(r.spare(1).is_empty());
        assert_eq!(r.room(), 0);
        r.consume(100);
        // The free space is at the front now, behind the tail's wrap.
        assert_eq!(r.spare(500).len(), 100);
    }

    #[test]
    fn storage_grows_only_as_far_as_it_is_used() {
        let mut r = ByteRing::new(1 << 20);
        r.push(&[1; 100]);
        assert_eq!(r.buf.len(), MIN_RING);
        r.push(&vec![2; 50_000]);
        assert!(r.buf.len() < 128 << 10, "{}", r.buf.len());
        assert_eq!(r.len(), 50_100);
    }
}
