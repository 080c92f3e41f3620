//! One module per command.

mod afl_shim;
mod fuzz;
mod replay;
mod run_do;

use crate::cli::{Cli, Command};
use crate::oci::{self, commands as c};

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32, Box<dyn std::error::Error>> {
    let g = &cli.global;
    match cli.command {
        Command::Do(args) => run_do::run(args),
        Command::Create(args) => oci::create::create(g, &args).map(|_| 0),
        Command::Start(a) => c::start(g, &a.id),
        Command::State(a) => c::state(g, &a.id),
        Command::Kill(args) => c::kill(g, &args),
        Command::Delete(args) => c::delete(g, &args),
        Command::Exec(args) => c::exec(g, &args),
        Command::Ps(args) => c::ps(g, &args),
        Command::List(args) => c::list(g, &args),
        Command::Pause(a) => c::pause(g, &a.id),
        Command::Resume(a) => c::resume(g, &a.id),
        Command::Update(args) => c::update(g, &args),
        Command::Features => c::features(),
        Command::Spec(args) => c::spec(&args),
        Command::Run(args) => c::run(g, &args),
        Command::Install(args) => oci::install::run(&args),
        Command::Filters => {
            let tables: Vec<String> = sentry::filter::tables()
                .iter()
                .map(sentry::filter::render)
                .collect();
            print!("{}", tables.join("\n"));
            Ok(0)
        }
        Command::Fuzz(args) => fuzz::run(&args),
        Command::AflShim(args) => afl_shim::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::SentryDaemon(args) => oci::daemon::run(g, &args),
        Command::Gofer => crate::gofer::serve(),
    }
}
