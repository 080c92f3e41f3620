//! The stack's ingress: a sequence of frames, raw or mutated from real
//! ones (checksums repaired, so they reach TCP, UDP, ICMP, ARP, NDP and
//! reassembly), against sockets in every state a peer can reach, over IPv4
//! and IPv6, with time passing between them. No frame may panic the stack,
//! and afterwards it must still serve a new connection.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netstack::Duration;
use smolvisor_fuzz::{World, fix_checksums};

#[derive(Debug, Arbitrary)]
enum Op {
    /// Any bytes as a frame.
    Raw(Vec<u8>),
    /// One of the frames the peer sent during set-up, changed.
    Mutate {
        seed: u8,
        edits: Vec<Edit>,
        /// Repair the IP and TCP/UDP checksums afterwards.
        fix: bool,
    },
    /// Time passes (milliseconds) and both hosts poll.
    Wait(u16),
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Set { at: u16, byte: u8 },
    Flip { at: u16, bit: u8 },
    Truncate(u16),
    Append(Vec<u8>),
    /// A 16- or 32-bit field (lengths, ports, sequence numbers) set.
    Word { at: u16, value: u32, wide: bool },
}

fn apply(frame: &mut Vec<u8>, edit: &Edit) {
    let len = frame.len().max(1);
    match *edit {
        Edit::Set { at, byte } => {
            if let Some(b) = frame.get_mut(usize::from(at) % len) {
                *b = byte;
            }
        }
        Edit::Flip { at, bit } => {
            if let Some(b) = frame.get_mut(usize::from(at) % len) {
                *b ^= 1 << (bit % 8);
            }
        }
        Edit::Truncate(at) => frame.truncate(usize::from(at) % len),
        Edit::Append(ref bytes) => frame.extend_from_slice(bytes),
        Edit::Word { at, value, wide } => {
            let at = usize::from(at) % len;
            let bytes = value.to_be_bytes();
            let word = if wide { &bytes[..] } else { &bytes[2..] };
            for (i, b) in word.iter().enumerate() {
                if let Some(x) = frame.get_mut(at + i) {
                    *x = *b;
                }
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut w = World::new();
    for op in ops.iter().take(256) {
        match op {
            Op::Raw(bytes) => w.inject(bytes.clone()),
            Op::Mutate { seed, edits, fix } => {
                if w.seeds.is_empty() {
                    continue;
                }
                let mut f = w.seeds[usize::from(*seed) % w.seeds.len()].clone();
                for e in edits.iter().take(16) {
                    apply(&mut f, e);
                }
                if *fix {
                    fix_checksums(&mut f);
                }
                w.inject(f);
            }
            Op::Wait(ms) => w.poll(Duration::from_millis(u64::from(*ms))),
        }
        w.poll(Duration::from_micros(100));
    }
    w.check_still_serving();
});
