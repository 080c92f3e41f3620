//! Mutations, blind (no coverage feedback): stream-level edits of a seed's
//! client bytes, AFL's havoc kind, and frame-level edits of the headers
//! of an input's TCP or UDP frames. A seeded generator makes a run
//! repeatable for the same seed.

use super::wire::{IP, L4};

/// xorshift64*: small, fast, seeded.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

const INTERESTING8: [u8; 9] = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40, 0x64];
const INTERESTING16: [u16; 8] = [0, 0x7fff, 0x8000, 0xffff, 0x100, 0x200, 0x1000, 0xfff];
const INTERESTING32: [u32; 5] = [0, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x1_0000];

/// A stack of 1 to 8 stream edits on `data` (a copy of a seed), keeping it
/// at most `max_len` bytes; `other` is another seed to splice from.
pub fn havoc(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], max_len: usize) {
    let n = 1 << rng.below(4);
    for _ in 0..n {
        mutate_once(rng, data, other, max_len);
    }
    data.truncate(max_len);
}

fn mutate_once(rng: &mut Rng, d: &mut Vec<u8>, other: &[u8], max_len: usize) {
    if d.is_empty() {
        let n = 1 + rng.below(16);
        d.extend((0..n).map(|_| rng.byte()));
        return;
    }
    let len = d.len();
    let at = rng.below(len);
    match rng.below(12) {
        0 => d[at] ^= 1 << rng.below(8),
        1 => d[at] = rng.byte(),
        2 => d[at] = INTERESTING8[rng.below(INTERESTING8.len())],
        3 => {
            let delta = 1 + rng.below(35) as u8;
            d[at] = if rng.one_in(2) {
                d[at].wrapping_add(delta)
            } else {
                d[at].wrapping_sub(delta)
            };
        }
        4 if len >= 2 => {
            let at = rng.below(len - 1);
            let v = INTERESTING16[rng.below(INTERESTING16.len())];
            let b = if rng.one_in(2) {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            d[at..at + 2].copy_from_slice(&b);
        }
        5 if len >= 4 => {
            let at = rng.below(len - 3);
            let v = INTERESTING32[rng.below(INTERESTING32.len())];
            let b = if rng.one_in(2) {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            d[at..at + 4].copy_from_slice(&b);
        }
        6 if len > 1 => {
            // Delete a block.
            let n = 1 + rng.below((len - at).min(32));
            d.drain(at..at + n);
        }
        7 if len < max_len => {
            // Insert random bytes or a copy of a block.
            let n = 1 + rng.below(32.min(max_len - len));
            let block: Vec<u8> = if rng.one_in(2) {
                (0..n).map(|_| rng.byte()).collect()
            } else {
                let from = rng.below(len);
                d[from..(from + n).min(len)].to_vec()
            };
            d.splice(at..at, block);
        }
        8 => {
            // Overwrite with a block of itself.
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(len - at).min(32));
            let block = d[from..from + n].to_vec();
            d[at..at + n].copy_from_slice(&block);
        }
        9 if !other.is_empty() => {
            // Splice: our head, the other seed's tail.
            let cut = rng.below(other.len());
            d.truncate(at);
            d.extend_from_slice(&other[cut..]);
        }
        10 => d.truncate(at.max(1)),
        _ => {
            let b = rng.byte();
            let n = 1 + rng.below(16);
            let end = (at + n).min(len);
            d[at..end].fill(b);
        }
    }
}

/// What a frame-level edit changed, for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameEdit {
    Flags,
    Seq,
    Ack,
    Window,
    Urgent,
    DataOffset,
    Options,
    IpLength,
    IpFragment,
    IpTtlTos,
    UdpLength,
    Truncate,
    Duplicate,
}

/// Edits the headers of one of an input's frames (never its addresses or
/// ports, which tie it to its connection); `tcp` says which transport.
/// Returns what it did; a duplicate is left to the caller (the frame is
/// sent twice).
pub fn edit_frame(rng: &mut Rng, f: &mut Vec<u8>, tcp: bool) -> FrameEdit {
    if f.len() < L4 + 8 {
        return FrameEdit::Truncate;
    }
    let pick = if tcp { rng.below(13) } else { 7 + rng.below(6) };
    let word = |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let read = |f: &[u8], at: usize| u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    let tcp_ok = f.len() >= L4 + 20;
    match pick {
        0 if tcp_ok => {
            f[L4 + 13] = if rng.one_in(2) {
                f[L4 + 13] ^ (1 << rng.below(8))
            } else {
                rng.byte()
            };
            FrameEdit::Flags
        }
        1 if tcp_ok => {
            let v = read(f, L4 + 4);
            word(f, L4 + 4, shift(rng, v));
            FrameEdit::Seq
        }
        2 if tcp_ok => {
            let v = read(f, L4 + 8);
            word(f, L4 + 8, shift(rng, v));
            FrameEdit::Ack
        }
        3 if tcp_ok => {
            let w = INTERESTING16[rng.below(INTERESTING16.len())];
            f[L4 + 14..L4 + 16].copy_from_slice(&w.to_be_bytes());
            FrameEdit::Window
        }
        4 if tcp_ok => {
            f[L4 + 13] |= 0x20;
            let v = rng.next() as u16;
            f[L4 + 18..L4 + 20].copy_from_slice(&v.to_be_bytes());
            FrameEdit::Urgent
        }
        5 if tcp_ok => {
            f[L4 + 12] = (rng.byte() & 0xf0) | (f[L4 + 12] & 0x0f);
            FrameEdit::DataOffset
        }
        6 if tcp_ok => {
            // Options: a few real kinds with odd lengths and values, or bytes.
            let n = 4 * (1 + rng.below(10));
            let mut opts: Vec<u8> = Vec::with_capacity(n);
            while opts.len() < n {
                match rng.below(6) {
                    0 => opts.extend_from_slice(&[2, 4, rng.byte(), rng.byte()]),
                    1 => opts.extend_from_slice(&[3, 3, rng.byte()]),
                    2 => opts.extend_from_slice(&[4, 2]),
                    3 => {
                        opts.extend_from_slice(&[8, 10]);
                        opts.extend((0..8).map(|_| rng.byte()));
                    }
                    4 => opts.extend_from_slice(&[5, 2 + 8 * rng.below(5) as u8]),
                    _ => opts.push(rng.byte()),
                }
            }
            opts.truncate(n);
            let hdr_end = L4 + usize::from(f[L4 + 12] >> 4).max(5) * 4;
            let hdr_end = hdr_end.min(f.len());
            f.splice(L4 + 20..hdr_end, opts);
            let off = ((20 + n) / 4) as u8;
            f[L4 + 12] = (off << 4) | (f[L4 + 12] & 0x0f);
            let total = (f.len() - IP).min(0xffff) as u16;
            f[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
            FrameEdit::Options
        }
        7 => {
            let v = rng.next() as u16;
            let v = if rng.one_in(2) {
                v
            } else {
                (f.len() - IP) as u16 ^ (1 << rng.below(16))
            };
            f[IP + 2..IP + 4].copy_from_slice(&v.to_be_bytes());
            FrameEdit::IpLength
        }
        8 => {
            // More-fragments and an offset: half a datagram, or a late piece.
            let v = (rng.next() as u16) & 0x3fff;
            f[IP + 6..IP + 8].copy_from_slice(&v.to_be_bytes());
            FrameEdit::IpFragment
        }
        9 => {
            if rng.one_in(2) {
                f[IP + 8] = rng.byte();
            } else {
                f[IP + 1] = rng.byte();
            }
            FrameEdit::IpTtlTos
        }
        10 if !tcp => {
            let v = INTERESTING16[rng.below(INTERESTING16.len())] ^ rng.below(16) as u16;
            f[L4 + 4..L4 + 6].copy_from_slice(&v.to_be_bytes());
            FrameEdit::UdpLength
        }
        11 => {
            let keep = L4 + rng.below(f.len() - L4);
            f.truncate(keep);
            FrameEdit::Truncate
        }
        _ => FrameEdit::Duplicate,
    }
}

/// A sequence or acknowledgement number moved a little, by a window's
/// worth, or anywhere.
fn shift(rng: &mut Rng, v: u32) -> u32 {
    match rng.below(4) {
        0 => v.wrapping_add(1 + rng.below(16) as u32),
        1 => v.wrapping_sub(1 + rng.below(16) as u32),
        2 => v
            .wrapping_add(0x1_0000)
            .wrapping_sub(rng.below(0x2_0000) as u32),
        _ => rng.next() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{self, Segment};
    use super::*;

    #[test]
    fn havoc_keeps_inputs_bounded_and_changes_them() {
        let mut rng = Rng::new(7);
        let seed = b"FUZZ hello world".to_vec();
        let mut changed = 0;
        for _ in 0..10_000 {
            let mut d = seed.clone();
            havoc(&mut rng, &mut d, b"other seed", 64);
            assert!(d.len() <= 64);
            changed += usize::from(d != seed);
        }
        assert!(changed > 9_000, "{changed}");
        let mut empty = Vec::new();
        havoc(&mut rng, &mut empty, b"", 8);
        assert!(!empty.is_empty() && empty.len() <= 8);
    }

    #[test]
    fn frame_edits_never_touch_ports_and_never_panic() {
        let mut rng = Rng::new(3);
        let base = wire::tcp_frame(&Segment {
            sport: 41000,
            dport: 7,
            seq: 100,
            ack: 200,
            flags: wire::ACK,
            window: 1000,
            options: &[],
            payload: b"abc",
        });
        for _ in 0..20_000 {
            let mut f = base.clone();
            for _ in 0..3 {
                let tcp = rng.one_in(2);
                edit_frame(&mut rng, &mut f, tcp);
            }
            if f.len() >= L4 + 4 {
                assert_eq!(wire::own_sport(&f), Some(41000));
                assert_eq!(wire::own_dport(&f), Some(7));
            }
            wire::fix_checksums(&mut f);
        }
    }
}
