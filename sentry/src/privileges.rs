//! What the Sentry may still do once it is set up: the capabilities each of
//! its threads keeps, and the process-wide limits.
//!
//! Capabilities belong to threads, and a thread inherits its creator's. The
//! Sentry therefore sheds them in two steps:
//! - every thread of the netstack's runs [`thread_hook`] when it starts
//!   (installed by [`install_thread_hook`] before the set-up starts any),
//!   after its own preparation (a gateway enters its namespace): it keeps
//!   [`for_thread`]'s, a gateway [`GATEWAY`], an OCI daemon's control
//!   thread [`CONTROL`], every other thread (a link's writer, the
//!   capture's) nothing;
//! - [`shed_process`], in [`crate::Sentry::new`] once the gateways run: the
//!   event loop's thread keeps [`MAIN`], the bounding set keeps only what
//!   some thread keeps, nothing is inheritable or ambient, and the process
//!   becomes non-dumpable (no other process of the same user may attach to
//!   it or read its memory).
//!
//! A process of the guest whose user differs from the Sentry's can only be
//! read (`pidfd_getfd`, `process_vm_readv`) and signalled with
//! `CAP_SYS_PTRACE` and `CAP_KILL`; a gateway's thread opens raw ICMP
//! sockets when ping sockets are not allowed (`CAP_NET_RAW`) and mirrors
//! the guest's listeners on ports below 1024 (`CAP_NET_BIND_SERVICE`).

use std::io;

use caps::{CapSet, Capability, CapsHashSet};

/// The event loop's: it reads the guest's memory and descriptors and
/// signals its processes, whatever their user.
pub const MAIN: &[Capability] = &[Capability::CAP_SYS_PTRACE, Capability::CAP_KILL];

/// A gateway thread's (`nat`): raw ICMP, and host listeners on low ports.
pub const GATEWAY: &[Capability] = &[Capability::CAP_NET_RAW, Capability::CAP_NET_BIND_SERVICE];

/// An OCI daemon's control thread (`sentry-control`): it takes a pod
/// member's listener from the member's init with `pidfd_getfd` at its
/// `start`, whatever the init's user and capabilities.
pub const CONTROL: &[Capability] = &[Capability::CAP_SYS_PTRACE];

/// What a thread of the netstack keeps, by its name.
pub fn for_thread(name: &str) -> &'static [Capability] {
    match name {
        "nat" => GATEWAY,
        "sentry-control" => CONTROL,
        _ => &[],
    }
}

#[allow(clippy::needless_pass_by_value)] // used as map_err(other)
fn other(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

fn set_of(caps: &[Capability]) -> CapsHashSet {
    caps.iter().copied().collect()
}

/// Makes every thread the netstack starts from now on keep only
/// [`for_thread`]'s capabilities.
pub fn install_thread_hook() {
    netstack::on_thread_start(thread_hook);
}

/// The hook [`install_thread_hook`] installs.
pub fn thread_hook(name: &str) -> io::Result<()> {
    shed_thread(for_thread(name))
}

/// The calling thread keeps `keep` (of what it has) and nothing else.
pub fn shed_thread(keep: &[Capability]) -> io::Result<()> {
    let have = caps::read(None, CapSet::Permitted).map_err(other)?;
    let kept: CapsHashSet = set_of(keep).intersection(&have).copied().collect();
    // Effective first: it may never hold more than permitted.
    caps::set(None, CapSet::Effective, &kept).map_err(other)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(other)?;
    caps::clear(None, CapSet::Inheritable).map_err(other)?;
    caps::clear(None, CapSet::Ambient).map_err(other)
}

/// The process-wide step (see the module's documentation). Needs
/// `CAP_SETPCAP` to shrink the bounding set; without it (an unprivileged
/// caller) the bounding set is left as it is.
pub fn shed_process() -> io::Result<()> {
    let keep: CapsHashSet = set_of(MAIN).union(&set_of(GATEWAY)).copied().collect();
    let effective = caps::read(None, CapSet::Effective).map_err(other)?;
    if effective.contains(&Capability::CAP_SETPCAP) {
        let bounding = caps::read(None, CapSet::Bounding).map_err(other)?;
        for cap in bounding.difference(&keep) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(other)?;
        }
    }
    shed_thread(MAIN)?;
    nix::sys::prctl::set_dumpable(false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run in a thread of its own: capabilities are per thread, and the
    /// test process's other threads keep theirs. (As root, as in CI.)
    #[test]
    fn a_thread_keeps_only_its_own_capabilities() {
        let (eff, prm) = std::thread::spawn(|| {
            shed_thread(GATEWAY).unwrap();
            let eff = caps::read(None, CapSet::Effective).unwrap();
            let prm = caps::read(None, CapSet::Permitted).unwrap();
            (eff, prm)
        })
        .join()
        .unwrap();
        assert_eq!(eff, set_of(GATEWAY));
        assert_eq!(prm, set_of(GATEWAY));
        assert!(for_thread("packet-tx").is_empty());
        assert_eq!(for_thread("nat"), GATEWAY);
        assert_eq!(for_thread("sentry-control"), CONTROL);
    }
}
