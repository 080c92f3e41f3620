//! `smolvisor replay`: play a reproducer into a fresh sandbox; say whether
//! the server crashed.

use std::fs::File;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::cli::ReplayArgs;
use crate::fuzz::campaign;
use crate::fuzz::target::Ended;

type Error = Box<dyn std::error::Error>;

pub fn run(args: &ReplayArgs) -> Result<i32, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "`smolvisor replay` must run as root (it creates namespaces and mounts)".into(),
        );
    }
    // The server's output goes where ours does.
    let log = File::from(std::io::stderr().as_fd().try_clone_to_owned()?);
    let ended = campaign::replay_file(&args.command, &args.file, &log, Duration::from_secs(5))?;
    match ended {
        Some(Ended::Signal(sig)) | Some(Ended::SentryDied(sig)) => {
            eprintln!(
                "replay: the server was {}",
                ended.map_or_else(String::new, |e| e.to_string())
            );
            Ok(128 + sig)
        }
        Some(other) => {
            eprintln!("replay: the server {other}, by itself; no crash");
            Ok(0)
        }
        None => {
            eprintln!("replay: the server survived");
            Ok(0)
        }
    }
}
