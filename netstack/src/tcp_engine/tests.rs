//! The engine against itself over simulated links: handshakes, exact
//! delivery under loss, reordering and duplication, throughput against the
//! Mathis model, the RTO's floor and back-off, resets and closes.
//!
//! Figures are printed; run with `--nocapture` (release mode for the bulk
//! cases) to read them.

use std::time::Instant as WallClock;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};

use super::sim::{LinkParams, Rng, Sim, Stream};
use super::{Config, ConnError, Connection, State};

const A: usize = 0;
const B: usize = 1;

fn config(buffer: usize) -> Config {
    Config {
        send_buffer: buffer,
        recv_buffer: buffer,
        ..Config::default()
    }
}

/// Connects end 0 (active) to end 1 (listening) and runs the handshake.
fn establish(cfg_a: Config, cfg_b: Config, ab: LinkParams, ba: LinkParams, seed: u64) -> Sim {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let a = Connection::connect(
        cfg_a,
        40000,
        80,
        TcpSeqNumber(rng.next_u64() as i32),
        rng.next_u64() as u32,
        Instant::ZERO,
    );
    let b = Connection::listen(
        cfg_b,
        80,
        TcpSeqNumber(rng.next_u64() as i32),
        rng.next_u64() as u32,
    );
    let mut sim = Sim::new(a, b, ab, ba, seed);
    let ok = sim.run(
        Instant::from_secs(60),
        |_| {},
        |s| s.ends[A].state() == State::Established && s.ends[B].state() == State::Established,
    );
    assert!(
        ok,
        "handshake did not complete: {:?} {:?}",
        sim.ends[A].state(),
        sim.ends[B].state()
    );
    sim
}

fn both(p: LinkParams) -> (LinkParams, LinkParams) {
    (p, p)
}

/// Sends `streams` to completion (both sides closing after their data) and
/// checks every byte and the close handshake. Returns the simulated time.
fn transfer_and_close(sim: &mut Sim, streams: &mut [Stream], deadline: Instant) -> Duration {
    let start = sim.now;
    let ok = sim.run(
        deadline,
        |s| {
            for st in streams.iter_mut() {
                st.step(s);
            }
            // An end without a stream of its own closes once the peer's
            // FIN has been read (like a server answering EOF with close).
            for i in 0..2 {
                let sends = streams.iter().any(|st| st.from == i);
                if !sends && s.ends[i].recv_finished() {
                    s.ends[i].close();
                }
            }
        },
        |s| {
            // Closing: a side closes once it has sent and read everything.
            s.ends
                .iter()
                .all(|e| matches!(e.state(), State::TimeWait | State::Closed))
        },
    );
    for st in streams.iter() {
        assert_eq!(st.read, st.total, "stream from end {} incomplete", st.from);
    }
    assert!(
        ok,
        "close did not complete by {deadline}: {:?} / {:?}",
        sim.ends[A].state(),
        sim.ends[B].state()
    );
    for e in &sim.ends {
        assert!(e.recv_finished(), "FIN not delivered");
        assert_eq!(e.error(), None);
    }
    sim.now - start
}

fn print_stats(label: &str, sim: &Sim) {
    for (i, e) in sim.ends.iter().enumerate() {
        let s = e.stats();
        let o = &sim.observers[i];
        let l = sim.link_stats(i);
        println!(
            "  {label} end {i}: sent {} segs ({} data), rexmit {} (wire {}), rexmit of SACKed {} \
             (wire {}), rto {}, tlp {}, recoveries {}, dsacks {} (sent {}), acks {}, paws {}, outside {}; link lost {} tail-dropped {} \
             reordered {} duplicated {}",
            s.segments_sent,
            o.data_segments,
            s.retransmissions,
            o.retransmitted_segments,
            s.sacked_retransmissions,
            o.sacked_retransmissions,
            s.rto_expiries,
            s.tail_loss_probes,
            s.fast_recoveries,
            s.dsacks_received,
            s.duplicates_received,
            s.acks_sent,
            s.paws_rejected,
            s.out_of_window,
            l.lost,
            l.tail_dropped,
            l.reordered,
            l.duplicated,
        );
    }
}

fn assert_no_sacked_retransmissions(sim: &Sim) {
    for (i, e) in sim.ends.iter().enumerate() {
        assert_eq!(
            e.stats().sacked_retransmissions,
            0,
            "end {i} resent SACKed data"
        );
        assert_eq!(
            sim.observers[i].sacked_retransmissions, 0,
            "end {i} resent SACKed data (wire)"
        );
    }
}

#[test]
fn handshake_negotiates_every_option() {
    let p = LinkParams::clean(Duration::from_millis(1), 0);
    let sim = establish(config(1 << 20), config(1 << 20), p, p, 1);
    for e in &sim.ends {
        assert!(e.sack_enabled() && e.timestamps_enabled());
        assert_eq!(
            e.mss(),
            1460 - 12,
            "timestamps take 12 bytes of each segment"
        );
        assert!(e.srtt().is_some());
    }
}

#[test]
fn handshake_falls_back_without_sack_or_timestamps() {
    let p = LinkParams::clean(Duration::from_millis(1), 0);
    let plain = Config {
        sack: false,
        timestamps: false,
        window_scale: false,
        mss: 1200,
        ..config(60000)
    };
    let sim = establish(config(1 << 20), plain.clone(), p, p, 2);
    for e in &sim.ends {
        assert!(!e.sack_enabled() && !e.timestamps_enabled());
        assert_eq!(e.mss(), 1200);
    }
    // Either side may be the one that lacks them.
    let sim = establish(plain, config(1 << 20), p, p, 3);
    for e in &sim.ends {
        assert!(!e.sack_enabled() && !e.timestamps_enabled());
    }
}

#[test]
fn newreno_path_delivers_exactly_under_loss() {
    let mut p = LinkParams::clean(Duration::from_millis(1), 1_000_000_000);
    p.loss = 0.01;
    let plain = Config {
        sack: false,
        ..config(1 << 20)
    };
    let (ab, ba) = both(p);
    let mut sim = establish(plain.clone(), plain, ab, ba, 4);
    let mut streams = [
        Stream::new(A, 11, 4 << 20, true),
        Stream::new(B, 12, 1 << 20, true),
    ];
    let t = transfer_and_close(&mut sim, &mut streams, Instant::from_secs(120));
    println!("NewReno (no SACK), 1 ms RTT, 1% loss: 4 MiB + 1 MiB in {t}");
    print_stats("newreno", &sim);
    assert!(
        sim.ends[A].stats().fast_recoveries > 0,
        "dup ACKs never started a recovery"
    );
    assert!(t < Duration::from_secs(20), "took {t}");
}

#[test]
fn exact_delivery_both_ways_under_impairments() {
    let rtts = [100u64, 1_000, 20_000, 100_000];
    for (k, &rtt_us) in rtts.iter().enumerate() {
        let rtt = Duration::from_micros(rtt_us);
        let mut p = LinkParams::clean(rtt, 1_000_000_000);
        p.loss = 0.01;
        p.burst = 0.001;
        p.burst_len = 8;
        p.reorder = 0.02;
        p.reorder_delay = Duration::from_micros(rtt_us / 2);
        p.duplicate = 0.01;
        let (ab, ba) = both(p);
        let seed = 100 + k as u64;
        let mut sim = establish(config(1 << 20), config(1 << 20), ab, ba, seed);
        let size = if rtt_us >= 20_000 { 1 << 20 } else { 8 << 20 };
        let mut streams = [
            Stream::new(A, seed, size, true),
            Stream::new(B, seed + 1, size / 2, true),
        ];
        let t = transfer_and_close(&mut sim, &mut streams, Instant::from_secs(600));
        println!(
            "impaired RTT {rtt}: {} + {} bytes exact, closed, in {t}",
            size,
            size / 2
        );
        print_stats("impaired", &sim);
        assert_no_sacked_retransmissions(&sim);
    }
}

/// Bulk transfer from end 0 for `duration` of simulated time; returns the
/// goodput in bit/s (bytes read by end 1 over the time).
fn goodput(sim: &mut Sim, duration: Duration, seed: u64) -> f64 {
    let start = sim.now;
    let mut stream = Stream::new(A, seed, u64::MAX, false);
    sim.run(start + duration, |s| stream.step(s), |_| false);
    stream.read as f64 * 8.0 / ((sim.now - start).total_micros() as f64 / 1e6)
}

#[test]
fn throughput_meets_half_the_mathis_bound() {
    let rate = 1_000_000_000u64;
    println!(
        "| RTT | loss | goodput Mbit/s | bound Mbit/s | ratio | rexmit | rto | sim s | wall s |"
    );
    let mut failures = Vec::new();
    for &rtt_us in &[1_000u64, 20_000, 100_000] {
        for &loss in &[0.001f64, 0.01] {
            let wall = WallClock::now();
            let rtt = Duration::from_micros(rtt_us);
            let mut p = LinkParams::clean(rtt, rate);
            p.loss = loss;
            // Loss on the data path only: the model is about data segments.
            let clean = LinkParams::clean(rtt, rate);
            let seed = rtt_us ^ (loss * 1e6) as u64;
            let mut sim = establish(config(16 << 20), config(16 << 20), p, clean, seed);
            let mss = sim.ends[A].mss() as f64;
            // Long enough for hundreds of loss episodes.
            let duration = Duration::from_micros((rtt_us * 1500).max(3_000_000));
            let got = goodput(&mut sim, duration, seed);
            let mathis = mss * 8.0 / (rtt_us as f64 / 1e6) * 1.22 / loss.sqrt();
            let link = rate as f64 * mss / (mss + 12.0 + 40.0);
            let bound = mathis.min(link);
            let s = sim.ends[A].stats();
            println!(
                "| {} ms | {}% | {:.1} | {:.1} | {:.2} | {} | {} | {:.0} | {:.2} |",
                rtt_us as f64 / 1000.0,
                loss * 100.0,
                got / 1e6,
                bound / 1e6,
                got / bound,
                s.retransmissions,
                s.rto_expiries,
                duration.total_micros() as f64 / 1e6,
                wall.elapsed().as_secs_f64()
            );
            assert_no_sacked_retransmissions(&sim);
            if got < 0.5 * bound {
                failures.push(format!(
                    "RTT {rtt_us} us loss {loss}: {got:.0} < half of {bound:.0}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// Issue 11's acceptance case: 100 MiB over a 10 Gbit/s link with 100 us
/// RTT, 1% loss and 1% reordering each way, in under 5 simulated seconds
/// (smoltcp's socket took 716).
#[test]
fn hundred_mib_at_one_percent_loss_and_reordering() {
    let wall = WallClock::now();
    let rtt = Duration::from_micros(100);
    let mut p = LinkParams::clean(rtt, 10_000_000_000);
    p.loss = 0.01;
    p.reorder = 0.01;
    p.reorder_delay = Duration::from_micros(50);
    let mut sim = establish(config(4 << 20), config(4 << 20), p, p, 11);
    let total = 100 << 20;
    let mut streams = [Stream::new(A, 7, total, true)];
    let t = transfer_and_close(&mut sim, &mut streams, Instant::from_secs(60));
    let done = streams[0].finished_at.map_or(t, |f| f - Instant::ZERO);
    println!(
        "100 MiB, 100 us RTT, 10 Gbit/s, 1% loss + 1% reordering: delivered in {done} simulated \
         ({:.0} Mbit/s), closed at {t}; wall {:.2} s",
        total as f64 * 8.0 / (done.total_micros() as f64),
        wall.elapsed().as_secs_f64()
    );
    print_stats("100MiB", &sim);
    assert_no_sacked_retransmissions(&sim);
    assert!(done < Duration::from_secs(5), "took {done} simulated");
}

/// Over a fast link, each cause alone: loss costs one retransmission per
/// lost segment, reordering costs (almost) none, and both together stay
/// close to the losses.
#[test]
fn retransmits_what_was_lost_and_little_else() {
    for (loss, reorder, label) in [
        (0.01, 0.0, "1% loss"),
        (0.0, 0.01, "1% reordering"),
        (0.01, 0.01, "1% loss + 1% reordering"),
    ] {
        let rtt = Duration::from_micros(100);
        let mut p = LinkParams::clean(rtt, 10_000_000_000);
        p.loss = loss;
        p.reorder = reorder;
        p.reorder_delay = Duration::from_micros(50);
        let mut sim = establish(config(4 << 20), config(4 << 20), p, p, 11);
        let mut streams = [Stream::new(A, 7, 20 << 20, true)];
        let t = transfer_and_close(&mut sim, &mut streams, Instant::from_secs(60));
        println!("20 MiB, 100 us RTT, {label}: {t}");
        print_stats(label, &sim);
        assert_no_sacked_retransmissions(&sim);
        let rexmit = sim.ends[A].stats().retransmissions;
        let l = sim.link_stats(A);
        let lost = l.lost + l.tail_dropped;
        assert!(
            rexmit <= lost + lost / 10 + l.reordered / 10 + 2,
            "{label}: {rexmit} retransmissions for {lost} losses"
        );
        assert_eq!(sim.ends[A].stats().rto_expiries, 0, "{label}");
    }
}
