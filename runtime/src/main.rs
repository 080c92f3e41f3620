//! `smolvisor`: runs programs in a network sandbox.

mod cli;
mod commands;
// The `sandbox` mode's set-up, not yet wired to `do --network sandbox`.
mod network;
mod sandbox;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    init_logging();
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smolvisor: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Diagnostics go to stderr; `SMOLVISOR_LOG` (e.g. `debug`) sets the level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SMOLVISOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
