//! The stack's ingress: a sequence of frames, raw or mutated from real
//! ones (checksums repaired, so they reach TCP, UDP, ICMP, ARP, NDP and
//! reassembly), against sockets in every state a peer can reach, over IPv4
//! and IPv6, with time passing between them. No frame may panic the stack,
//! and afterwards it must still serve a new connection.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netstack::Duration;
use smolvisor_fuzz::frames::Edit;
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
                    e.apply(&mut f);
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
