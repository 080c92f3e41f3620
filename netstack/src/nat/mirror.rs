//! The guest's listeners, mirrored as host sockets (relay mode).
//!
//! In relay mode the host sockets live in a namespace that keeps the guest's
//! address (the container's). A peer that connects or writes to that
//! address reaches the host kernel, not the guest, so every port the guest
//! listens on gets a host socket on the guest's address:
//! - a TCP listener, whose connections the gateway opens towards the guest
//!   as it opens a published port's;
//! - for a UDP socket bound to a port of the guest's choosing, a UDP socket
//!   on that port, which is also the one the guest's datagrams from the
//!   port leave by (so a server's answers come from the port it was asked at).
//!
//! The gateway's thread makes the host sockets (it is the one in that
//! namespace), but the Sentry waits for them inside the guest's `listen`:
//! a peer that connects as soon as `listen` returned must find one. A
//! listener the guest closes is closed too (queued connections are reset,
//! as the guest's close resets them).

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::eventfd::EventFd;

use crate::{Protocol, Stack};

/// How long the Sentry waits for the gateway to open host listeners.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A change for the gateway's thread to make, in order.
#[derive(Debug)]
pub(super) enum Change {
    /// Listen on the guest's address and this port; answer how it went.
    Open(Protocol, u16),
    /// The guest stopped listening on the port.
    Close(Protocol, u16),
}

/// A mirrored port: its protocol and number.
pub(super) type Mirrored = (Protocol, u16);

/// What the Sentry and the gateway's thread share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) changes: Mutex<Vec<Change>>,
    /// The gateway's answers to [`Change::Open`], in order.
    pub(super) answers: SyncSender<(Mirrored, io::Result<()>)>,
}

/// The Sentry's side of the mirror: made by [`super::Nat::mirror`] and
/// kept in step with the guest's stack by [`ListenMirror::sync`].
#[derive(Debug)]
pub struct ListenMirror {
    guest: Ipv4Addr,
    shared: Arc<Shared>,
    answers: Receiver<(Mirrored, io::Result<()>)>,
    wake: Arc<EventFd>,
    /// The guest's ports that have a host socket.
    open: BTreeSet<Mirrored>,
    generation: Option<u64>,
}

/// Both sides of a new mirror: the Sentry's, and what the gateway keeps.
pub(super) fn new(guest: Ipv4Addr, wake: Arc<EventFd>) -> (ListenMirror, Arc<Shared>) {
    let (answers, receiver) = sync_channel(4096);
    let shared = Arc::new(Shared {
        changes: Mutex::new(Vec::new()),
        answers,
    });
    let mirror = ListenMirror {
        guest,
        shared: Arc::clone(&shared),
        answers: receiver,
        wake,
        open: BTreeSet::new(),
        generation: None,
    };
    (mirror, shared)
}

impl ListenMirror {
    /// Opens a host socket for every port the guest listens on (on every
    /// IPv4 address or on the guest's own) that has none, and closes those
    /// whose port the guest no longer listens on; returns once the gateway
    /// has done it. Cheap when nothing changed. Returns the ports whose host
    /// socket could not be made, with why (the guest's own socket works
    /// regardless, from inside).
    pub fn sync(&mut self, stack: &Stack) -> Vec<(Protocol, u16, io::Error)> {
        if self.generation == Some(stack.listening_generation()) {
            return Vec::new();
        }
        let (generation, listening) = stack.listening();
        self.generation = Some(generation);
        let guest = self.guest;
        let wanted: BTreeSet<Mirrored> = listening
            .iter()
            .filter(|(_, addr, _)| match addr {
                None => true,
                Some(IpAddr::V4(v4)) => *v4 == guest,
                Some(IpAddr::V6(_)) => false,
            })
            .map(|&(proto, _, port)| (proto, port))
            .collect();
        let mut changes: Vec<Change> = self
            .open
            .difference(&wanted)
            .map(|&(proto, port)| Change::Close(proto, port))
            .collect();
        let opening: Vec<Mirrored> = wanted.difference(&self.open).copied().collect();
        changes.extend(
            opening
                .iter()
                .map(|&(proto, port)| Change::Open(proto, port)),
        );
        if changes.is_empty() {
            return Vec::new();
        }
        self.open.retain(|p| wanted.contains(p));
        super::lock(&self.shared.changes).append(&mut changes);
        let _ = self.wake.write(1);
        let mut failed = Vec::new();
        for _ in &opening {
            match self.answers.recv_timeout(ANSWER_WITHIN) {
                Ok((mirrored, Ok(()))) => {
                    self.open.insert(mirrored);
                }
                Ok(((proto, port), Err(e))) => failed.push((proto, port, e)),
                Err(_) => {
                    // The gateway is gone or stuck; try again at the next change.
                    self.generation = None;
                    break;
                }
            }
        }
        failed
    }
}
