//! The one unsafe call of the fuzzer: forking the process that becomes a
//! sandbox's Sentry, which is sound only while the fuzzer has one thread.

use nix::unistd::ForkResult;

/// The number of threads of this process (from `/proc/self/task`).
fn threads() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Forks, if this process runs a single thread (else EDEADLK: the child
/// would run a whole Sentry, and a lock held by another thread at the fork
/// would never be released in it).
pub fn fork_single_threaded() -> nix::Result<ForkResult> {
    match threads() {
        Ok(1) => {}
        Ok(_) => return Err(nix::errno::Errno::EDEADLK),
        Err(_) => return Err(nix::errno::Errno::EIO),
    }
    // SAFETY: the process has one thread (checked just above, and this
    // thread starts none in between), so the child inherits no lock or
    // state another thread was in the middle of changing: it may run any
    // code, as a fresh process would.
    unsafe { nix::unistd::fork() }
}
