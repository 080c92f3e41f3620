//! `smolvisor`: runs programs in a network sandbox, alone (`do`) or as an
//! OCI runtime (runc's commands, for Docker and containerd).

mod cli;
mod commands;
mod fuzz;
mod gofer;
mod logging;
mod network;
mod oci;
mod sandbox;
mod watcher;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let oci = !matches!(
        cli.command,
        cli::Command::Do(_)
            | cli::Command::Gofer
            | cli::Command::Fuzz(_)
            | cli::Command::Replay(_)
            | cli::Command::AflShim(_)
    );
    let logged = oci && cli.global.log.is_some();
    if oci {
        logging::for_oci(&cli.global);
    } else {
        logging::to_stderr();
    }
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smolvisor: {e}");
            if logged {
                tracing::error!("{e}");
            }
            1
        }
    };
    std::process::exit(code);
}
