//! `smolvisor afl-shim -- SERVER...` (hidden): run by `fuzz` inside the
//! sandbox, so in its IPC namespace: makes the coverage map, names it in
//! `__AFL_SHM_ID`, and becomes the server.

use std::os::unix::process::CommandExt;

use crate::cli::AflShimArgs;
use crate::fuzz::sys;

type Error = Box<dyn std::error::Error>;

pub fn run(args: &AflShimArgs) -> Result<i32, Error> {
    let mut cmd = std::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    match sys::create_map() {
        Ok(id) => {
            cmd.env("__AFL_SHM_ID", id.to_string());
        }
        Err(e) => eprintln!("smolvisor afl-shim: no coverage map: {e}"),
    }
    let e = cmd.exec();
    eprintln!(
        "smolvisor afl-shim: {}: {e}",
        args.command[0].to_string_lossy()
    );
    Ok(if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}
