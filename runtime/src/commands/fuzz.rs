//! `smolvisor fuzz`: load the seeds, run the campaign, report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::{FuzzArgs, FuzzProto};
use crate::fuzz::campaign::{self, Settings};
use crate::fuzz::repro;
use crate::fuzz::wire::Proto;

type Error = Box<dyn std::error::Error>;

/// Exit status when a crash was found.
const CRASHED: i32 = 3;

pub fn run(args: &FuzzArgs) -> Result<i32, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err("`smolvisor fuzz` must run as root (it creates namespaces and mounts)".into());
    }
    let proto = match args.proto {
        FuzzProto::Tcp => Proto::Tcp,
        FuzzProto::Udp => Proto::Udp,
    };
    let seeds = match &args.seeds {
        Some(p) => repro::seeds(p, args.port, proto)?,
        None => Vec::new(),
    };
    if args.seeds.is_some() && seeds.is_empty() {
        return Err(format!("no client bytes to port {} in the seeds", args.port).into());
    }
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let settings = Settings {
        argv: args.command.clone(),
        port: args.port,
        proto,
        seeds,
        time: args.time.map(Duration::from_secs),
        out: args.out.clone(),
        parallel: args.parallel.max(1),
        max_len: args.max_len.max(1),
        frame_share: usize::from(args.frame_share),
        hang_wait: Duration::from_secs_f64(args.hang_timeout.max(0.0)),
        seed: args.seed.unwrap_or(clock.as_nanos() as u64),
        stop_on_crash: args.stop_on_crash,
    };
    eprintln!(
        "fuzz: {} seed(s), mutator seed {}, output in {}",
        settings.seeds.len(),
        settings.seed,
        settings.out.display()
    );
    let f = campaign::run(&settings)?;
    let secs = f.elapsed.as_secs_f64().max(1e-3);
    eprintln!(
        "fuzz: done after {secs:.1} s: {} execs ({:.0}/s), {} crashes ({} unique), {} hangs",
        f.execs,
        f.execs as f64 / secs,
        f.crashes,
        f.unique.len(),
        f.hangs
    );
    Ok(if f.crashes > 0 { CRASHED } else { 0 })
}
