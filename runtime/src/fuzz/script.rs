//! One input as the frames the fuzzer sends for it: a [`Script`]. The
//! fuzzer builds scripts from mutated bytes ([`Script::tcp`],
//! [`Script::udp`]); a replay rebuilds them from a reproducer's frames
//! ([`scripts_from_frames`]). Either way a frame after a TCP handshake
//! holds its acknowledgement number relative to the server's initial
//! sequence number, which differs in every run, and a deliberately bad
//! checksum as the bytes that differ from a good one: both are applied
//! anew when the frame is sent, so a replay sends what the fuzzer sent.

use super::mutate::{self, FrameEdit, Rng};
use super::wire::{self, ACK, FIN, PSH, Proto, SYN, Segment};

/// Payload bytes per segment.
const CHUNK: usize = 1400;
/// The MSS option of the fuzzer's SYN.
const SYN_OPTIONS: [u8; 4] = [2, 4, 0x05, 0xb4];

/// One frame of a script.
#[derive(Debug, Clone)]
pub struct ScriptFrame {
    /// The frame; for a `relative` one, its acknowledgement number is an
    /// offset from the server's initial sequence number.
    pub bytes: Vec<u8>,
    /// Whether to add the server's initial sequence number to the
    /// acknowledgement number when it is known ([`wire::acks_relative`]).
    pub relative: bool,
    /// XORed into the frame after its checksums are made (a bad checksum).
    pub damage: Vec<(usize, u8)>,
}

impl ScriptFrame {
    /// The frame as sent, given the server's initial sequence number.
    pub fn render(&self, irs: Option<u32>) -> Vec<u8> {
        let mut f = self.bytes.clone();
        if let (true, Some(irs)) = (self.relative, irs)
            && let Some((_, ack, _)) = wire::own_tcp_fields(&f)
        {
            wire::set_ack(&mut f, ack.wrapping_add(irs));
        }
        wire::fix_checksums(&mut f);
        for &(at, x) in &self.damage {
            if let Some(b) = f.get_mut(at) {
                *b ^= x;
            }
        }
        f
    }
}

/// The frames of one input (one connection for TCP, one datagram for UDP).
#[derive(Debug, Clone)]
pub struct Script {
    pub proto: Proto,
    /// The client's port: which frames from the server belong to it.
    pub sport: u16,
    pub frames: Vec<ScriptFrame>,
    /// TCP: the client's initial sequence number, and the sequence number
    /// after its last byte and FIN (for its closing ACK or RST).
    pub isn: u32,
    pub end_seq: u32,
    /// Whether frame-level edits were made (such an input may well get no
    /// answer: that is no hang).
    pub frame_mutated: bool,
    /// What it is, for the reproducer's comments.
    pub note: String,
    /// Its number in the campaign (inputs are started in this order).
    pub id: u64,
    /// The client bytes it carries (for the corpus; empty in a replay).
    pub payload: Vec<u8>,
    /// A probe for a listener: it gives up on its handshake soon.
    pub probe: bool,
}

impl Script {
    /// One connection carrying `payload` to `dport`, then FIN.
    pub fn tcp(sport: u16, dport: u16, isn: u32, payload: &[u8]) -> Script {
        let seg = |seq, ack, flags, options, payload| {
            wire::tcp_frame(&Segment {
                sport,
                dport,
                seq,
                ack,
                flags,
                window: 65535,
                options,
                payload,
            })
        };
        let mut frames = vec![ScriptFrame {
            bytes: seg(isn, 0, SYN, &SYN_OPTIONS[..], &[][..]),
            relative: false,
            damage: Vec::new(),
        }];
        let mut seq = isn.wrapping_add(1);
        let chunks: Vec<&[u8]> = if payload.is_empty() {
            vec![&[]]
        } else {
            payload.chunks(CHUNK).collect()
        };
        let last = chunks.len() - 1;
        for (i, c) in chunks.into_iter().enumerate() {
            let flags = if i == last {
                ACK | PSH | FIN
            } else {
                ACK | PSH
            };
            frames.push(ScriptFrame {
                bytes: seg(seq, 1, flags, &[][..], c),
                relative: true,
                damage: Vec::new(),
            });
            seq = seq.wrapping_add(c.len() as u32);
        }
        Script {
            proto: Proto::Tcp,
            sport,
            frames,
            isn,
            end_seq: seq.wrapping_add(1),
            frame_mutated: false,
            note: String::new(),
            id: 0,
            payload: payload.to_vec(),
            probe: false,
        }
    }

    /// One datagram carrying `payload` to `dport`.
    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Script {
        Script {
            proto: Proto::Udp,
            sport,
            frames: vec![ScriptFrame {
                bytes: wire::udp_frame(sport, dport, payload),
                relative: false,
                damage: Vec::new(),
            }],
            isn: 0,
            end_seq: 0,
            frame_mutated: false,
            note: String::new(),
            id: 0,
            payload: payload.to_vec(),
            probe: false,
        }
    }

    /// Applies 1 to 3 frame-level edits to random frames; one time in
    /// eight, a frame also gets a bad checksum.
    pub fn mutate_frames(&mut self, rng: &mut Rng) -> Vec<FrameEdit> {
        let tcp = self.proto == Proto::Tcp;
        let mut edits = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(self.frames.len());
            let edit = mutate::edit_frame(rng, &mut self.frames[i].bytes, tcp);
            if edit == FrameEdit::Duplicate {
                let copy = self.frames[i].clone();
                self.frames.insert(i, copy);
            }
            edits.push(edit);
        }
        for f in &mut self.frames[1..] {
            f.relative = wire::acks_relative(&f.bytes);
        }
        self.frames[0].relative = false;
        if rng.one_in(8) {
            let i = rng.below(self.frames.len());
            let f = &mut self.frames[i];
            if let Some(at) = wire::l4_checksum_at(&f.bytes) {
                f.damage = vec![(at, 1 + rng.byte() % 255), (at + 1, rng.byte())];
            }
        }
        self.frame_mutated = true;
        edits
    }
}

/// Scripts rebuilt from recorded frames (`from_guest`, bytes), in order:
/// the fuzzer's frames grouped by their source port, one script per port
/// in the order each first appears, with the server's initial sequence
/// number of that run taken from its SYN-ACK.
pub fn scripts_from_frames(frames: &[(bool, Vec<u8>)]) -> Vec<Script> {
    let mut scripts: Vec<Script> = Vec::new();
    let mut irs: Vec<(u16, u32)> = Vec::new();
    for (from_guest, f) in frames {
        if !from_guest {
            continue;
        }
        if let Some(wire::FromGuest::Tcp {
            dport, seq, flags, ..
        }) = wire::parse_from_guest(f)
            && flags & (SYN | ACK) == SYN | ACK
            && !irs.iter().any(|&(p, _)| p == dport)
        {
            irs.push((dport, seq));
        }
    }
    for (from_guest, f) in frames {
        if *from_guest || f.len() < 6 || f[6..12] != wire::PEER_MAC {
            continue;
        }
        let Some(sport) = wire::own_sport(f) else {
            // Too short to say: it goes with the connection before it.
            if let Some(s) = scripts.last_mut() {
                s.frames.push(ScriptFrame {
                    bytes: f.clone(),
                    relative: false,
                    damage: Vec::new(),
                });
            }
            continue;
        };
        let tcp = f.get(wire::IP + 9) == Some(&wire::PROTO_TCP);
        let i = match scripts.iter().position(|s| s.sport == sport) {
            Some(i) => i,
            None => {
                scripts.push(Script {
                    proto: if tcp { Proto::Tcp } else { Proto::Udp },
                    sport,
                    frames: Vec::new(),
                    isn: 0,
                    end_seq: 0,
                    frame_mutated: false,
                    note: String::new(),
                    id: 0,
                    payload: Vec::new(),
                    probe: false,
                });
                scripts.len() - 1
            }
        };
        let s = &mut scripts[i];
        let first = s.frames.is_empty();
        let server_isn = irs.iter().find(|&&(p, _)| p == sport).map(|&(_, i)| i);
        let mut bytes = f.clone();
        let relative = !first && server_isn.is_some() && wire::acks_relative(f);
        if relative && let (Some(isn), Some((_, ack, _))) = (server_isn, wire::own_tcp_fields(f)) {
            wire::set_ack(&mut bytes, ack.wrapping_sub(isn));
        }
        // What differs from the frame with good checksums is damage.
        let mut good = f.clone();
        wire::fix_checksums(&mut good);
        let damage = good
            .iter()
            .zip(f.iter())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| (i, a ^ b))
            .collect();
        if tcp && let Some(seq) = f.get(wire::L4 + 4..wire::L4 + 8) {
            let seq = u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
            let flags = f.get(wire::L4 + 13).copied().unwrap_or(0);
            let payload = tcp_payload_len(f);
            let end = seq
                .wrapping_add(payload)
                .wrapping_add(u32::from(flags & (SYN | FIN) != 0));
            if first {
                s.isn = seq;
                s.end_seq = end;
            } else if end.wrapping_sub(s.end_seq) as i32 > 0 {
                s.end_seq = end;
            }
        }
        s.frames.push(ScriptFrame {
            bytes,
            relative,
            damage,
        });
    }
    scripts
}

fn tcp_payload_len(f: &[u8]) -> u32 {
    let Some(&off) = f.get(wire::L4 + 12) else {
        return 0;
    };
    let total = f
        .get(wire::IP + 2..wire::IP + 4)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let end = (wire::IP + total).min(f.len());
    end.saturating_sub(wire::L4 + usize::from(off >> 4) * 4) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the fuzzer sent comes back from its record as the same script:
    /// a replay sends the same bytes against another server ISN.
    #[test]
    fn a_recorded_input_replays_as_sent() {
        let mut rng = Rng::new(11);
        for round in 0..500 {
            let mut s = Script::tcp(30000, 7, 1000, b"FUZZ payload");
            if round % 2 == 0 {
                s.mutate_frames(&mut rng);
            }
            let (irs_a, irs_b) = (0x1234_5678u32, 0x9abc_def0u32);
            let mut rec = vec![];
            let synack = wire::tcp_frame(&Segment {
                sport: 7,
                dport: 30000,
                seq: irs_a,
                ack: 1001,
                flags: SYN | ACK,
                window: 100,
                options: &[],
                payload: &[],
            });
            // The guest's frame, as the recorder sees it: to the peer.
            let mut synack = synack;
            synack[wire::IP + 12..wire::IP + 16].copy_from_slice(&wire::GUEST_IP.octets());
            synack[wire::IP + 16..wire::IP + 20].copy_from_slice(&wire::PEER_IP.octets());
            rec.push((false, s.frames[0].render(None)));
            rec.push((true, synack));
            for f in &s.frames[1..] {
                rec.push((false, f.render(Some(irs_a))));
            }
            let back = scripts_from_frames(&rec);
            assert_eq!(back.len(), 1);
            let b = &back[0];
            assert_eq!(b.frames.len(), s.frames.len());
            for (x, y) in s.frames.iter().zip(&b.frames).skip(1) {
                assert_eq!(
                    x.render(Some(irs_b)),
                    y.render(Some(irs_b)),
                    "round {round}"
                );
            }
            if round % 2 == 1 {
                assert_eq!((b.isn, b.end_seq), (1000, 1000 + 1 + 12 + 1));
            }
        }
    }
}
