//! The guest's TCP listeners, mirrored as host listeners (relay mode).
//!
//! In relay mode the host sockets live in a namespace that keeps the guest's
//! address (the container's). A peer that connects to that address reaches
//! the host kernel, not the guest, so every port the guest listens on gets a
//! host listener on the guest's address; each connection it accepts is
//! opened towards the guest by the gateway, as a published port's are.
//!
//! The gateway's thread makes the host listeners (it is the one in that
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

use crate::Stack;

/// How long the Sentry waits for the gateway to open host listeners.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A change for the gateway's thread to make, in order.
#[derive(Debug)]
pub(super) enum Change {
    /// Listen on the guest's address and this port; answer how it went.
    Open(u16),
    /// The guest stopped listening on the port.
    Close(u16),
}

/// What the Sentry and the gateway's thread share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) changes: Mutex<Vec<Change>>,
    /// The gateway's answers to [`Change::Open`], in order.
    pub(super) answers: SyncSender<(u16, io::Result<()>)>,
}

/// The Sentry's side of the mirror: made by [`super::Nat::mirror`] and
/// kept in step with the guest's stack by [`ListenMirror::sync`].
#[derive(Debug)]
pub struct ListenMirror {
    guest: Ipv4Addr,
    shared: Arc<Shared>,
    answers: Receiver<(u16, io::Result<()>)>,
    wake: Arc<EventFd>,
    /// The guest's ports that have a host listener.
    open: BTreeSet<u16>,
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
    /// Opens a host listener for every port the guest listens on (on every
    /// IPv4 address or on the guest's own) that has none, and closes those
    /// whose port the guest no longer listens on; returns once the gateway
    /// has done it. Cheap when nothing changed. Returns the ports whose host
    /// listener could not be made, with why (the guest's own listener works
    /// regardless, from inside).
    pub fn sync(&mut self, stack: &Stack) -> Vec<(u16, io::Error)> {
        if self.generation == Some(stack.listening_generation()) {
            return Vec::new();
        }
        let (generation, listening) = stack.listening();
        self.generation = Some(generation);
        let guest = self.guest;
        let wanted: BTreeSet<u16> = listening
            .iter()
            .filter(|(addr, _)| match addr {
                None => true,
                Some(IpAddr::V4(v4)) => *v4 == guest,
                Some(IpAddr::V6(_)) => false,
            })
            .map(|&(_, port)| port)
            .collect();
        let mut changes: Vec<Change> = self
            .open
            .difference(&wanted)
            .map(|&p| Change::Close(p))
            .collect();
        let opening: Vec<u16> = wanted.difference(&self.open).copied().collect();
        changes.extend(opening.iter().map(|&p| Change::Open(p)));
        if changes.is_empty() {
            return Vec::new();
        }
        self.open.retain(|p| wanted.contains(p));
        super::lock(&self.shared.changes).append(&mut changes);
        let _ = self.wake.write(1);
        let mut failed = Vec::new();
        for _ in &opening {
            match self.answers.recv_timeout(ANSWER_WITHIN) {
                Ok((port, Ok(()))) => {
                    self.open.insert(port);
                }
                Ok((port, Err(e))) => failed.push((port, e)),
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
