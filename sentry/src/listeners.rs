//! The seccomp listeners one Sentry serves.
//!
//! `smolvisor do` has one: the guest's init loaded the filter and every
//! process of the sandbox inherited it. An OCI container gains one more for
//! each `exec`: the new process joins the container's namespaces but loads
//! a filter of its own, whose listener reaches the running Sentry through a
//! [`ListenerSender`]. All of them wait in one epoll set of their own, which
//! the event loop watches as a single descriptor.
//!
//! In a pod, another container's init is a *member*: the same sender brings
//! its pidfd when the container is created (long before its listener, which
//! comes at `start`), and the Sentry serves until the last member has ended
//! ([`Members`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::sys::{self, Notif};

/// What reaches a running Sentry through a [`ListenerSender`].
#[derive(Debug)]
enum Arrival {
    /// A seccomp listener to serve (an `exec`'s, or a pod member's init's).
    Listener(OwnedFd),
    /// The pidfd of a pod member's init: the Sentry lives while it does.
    Member(OwnedFd),
}

/// Hands listeners and pod members to a running Sentry, from another
/// thread.
#[derive(Debug, Clone)]
pub struct ListenerSender {
    tx: Sender<Arrival>,
    wake: Arc<EventFd>,
}

impl ListenerSender {
    /// Queues `listener` for the Sentry and wakes it. Fails only once the
    /// Sentry has ended.
    pub fn send(&self, listener: OwnedFd) -> io::Result<()> {
        self.queue(Arrival::Listener(listener))
    }

    /// Makes the process behind `pidfd` (a pod member's init) one the
    /// Sentry waits for before it ends. Fails only once the Sentry has
    /// ended.
    pub fn send_member(&self, pidfd: OwnedFd) -> io::Result<()> {
        self.queue(Arrival::Member(pidfd))
    }

    fn queue(&self, arrival: Arrival) -> io::Result<()> {
        self.tx
            .send(arrival)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        self.wake.write(1)?;
        Ok(())
    }
}

/// The Sentry's side of [`listener_channel`].
#[derive(Debug)]
pub struct ListenerInbox {
    rx: Receiver<Arrival>,
    wake: Arc<EventFd>,
}

/// A way to give a Sentry more listeners while it runs
/// ([`Sentry::accept_listeners`](crate::Sentry::accept_listeners)).
pub fn listener_channel() -> io::Result<(ListenerSender, ListenerInbox)> {
    let wake = Arc::new(EventFd::from_flags(
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )?);
    let (tx, rx) = mpsc::channel();
    Ok((
        ListenerSender {
            tx,
            wake: Arc::clone(&wake),
        },
        ListenerInbox { rx, wake },
    ))
}

/// What one listener has for the event loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    pub slot: usize,
    /// No process uses its filter any more.
    pub gone: bool,
}

/// The listeners, by slot. Slot 0, the init's, stays for the Sentry's
/// whole life and sits in the event loop's own epoll set: a nested set
/// would cost every trap the kernel's synchronous wake-up
/// (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` wakes the direct waiter only),
/// about 3 µs here. The others (`exec`s) share a nested set.
#[derive(Debug)]
pub(crate) struct Listeners {
    first: OwnedFd,
    /// Slots 1 and up, at index slot - 1.
    more: Vec<Option<OwnedFd>>,
    epoll: Epoll,
    inbox: Option<ListenerInbox>,
}

impl Listeners {
    pub fn new(first: OwnedFd) -> io::Result<Listeners> {
        // Best effort: older kernels lack it.
        let _ = sys::notif_sync_wakeup(first.as_fd());
        Ok(Listeners {
            first,
            more: Vec::new(),
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            inbox: None,
        })
    }

    /// The init's listener, for the event loop's set.
    pub fn first(&self) -> BorrowedFd<'_> {
        self.first.as_fd()
    }

    /// Readable when an `exec`'s listener has a notification, or lost its
    /// last user.
    pub fn more_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// The listener `n` came from. A notification outlives its listener
    /// only by mistake; the init's then answers, and the kernel refuses an
    /// id it never issued.
    pub fn of(&self, n: &Notif) -> BorrowedFd<'_> {
        self.slot(n.source).flatten().unwrap_or(self.first.as_fd())
    }

    /// Slot `slot`: None past the end, Some(None) when retired.
    pub fn slot(&self, slot: usize) -> Option<Option<BorrowedFd<'_>>> {
        match slot {
            0 => Some(Some(self.first.as_fd())),
            _ => self.more.get(slot - 1).map(|s| s.as_ref().map(AsFd::as_fd)),
        }
    }

    pub fn add(&mut self, listener: OwnedFd) -> io::Result<usize> {
        let index = self
            .more
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.more.len());
        let slot = index + 1;
        self.epoll
            .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, slot as u64))?;
        let _ = sys::notif_sync_wakeup(listener.as_fd());
        if index == self.more.len() {
            self.more.push(Some(listener));
        } else {
            self.more[index] = Some(listener);
        }
        Ok(slot)
    }

    /// Appends the `exec` listeners with something to say, without waiting.
    pub fn ready_more(&self, out: &mut Vec<Ready>) {
        let mut events = [EpollEvent::empty(); 16];
        let Ok(n) = self.epoll.wait(&mut events, EpollTimeout::ZERO) else {
            return;
        };
        out.extend(events[..n].iter().map(|ev| Ready {
            slot: ev.data() as usize,
            gone: ev.events().contains(EpollFlags::EPOLLHUP),
        }));
    }

    /// Stops watching and closes an `exec`'s listener without users (the
    /// init's stays open: the event loop stops watching it itself).
    pub fn retire(&mut self, slot: usize) {
        let Some(Some(fd)) = slot.checked_sub(1).and_then(|i| self.more.get_mut(i)) else {
            return;
        };
        let _ = self.epoll.delete(&*fd);
        self.more[slot - 1] = None;
    }

    pub fn set_inbox(&mut self, inbox: ListenerInbox) {
        self.inbox = Some(inbox);
    }

    pub fn inbox_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inbox.as_ref().map(|i| i.wake.as_fd())
    }

    /// Takes in what arrived through the inbox: listeners are served from
    /// now on, members join `members`.
    pub fn take_arrivals(&mut self, members: &mut Members) {
        let Some(inbox) = self.inbox.take() else {
            return;
        };
        let _ = inbox.wake.read();
        while let Ok(arrival) = inbox.rx.try_recv() {
            match arrival {
                Arrival::Listener(fd) => match self.add(fd) {
                    Ok(slot) => tracing::debug!(slot, "serving one more seccomp listener"),
                    Err(e) => tracing::warn!("cannot watch a new seccomp listener: {e}"),
                },
                Arrival::Member(pidfd) => {
                    if let Err(e) = members.add(pidfd) {
                        tracing::warn!("cannot watch a pod member's init: {e}");
                    }
                }
            }
        }
        self.inbox = Some(inbox);
    }
}

/// The inits of a pod's other containers, by their pidfds, in an epoll set
/// of their own (a pidfd turns readable when its process ends).
#[derive(Debug)]
pub(crate) struct Members {
    live: Vec<Option<OwnedFd>>,
    epoll: Epoll,
}

impl Members {
    pub fn new() -> io::Result<Members> {
        Ok(Members {
            live: Vec::new(),
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        })
    }

    /// Readable when a member has ended.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    pub fn add(&mut self, pidfd: OwnedFd) -> io::Result<()> {
        let index = self
            .live
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.live.len());
        self.epoll
            .add(&pidfd, EpollEvent::new(EpollFlags::EPOLLIN, index as u64))?;
        if index == self.live.len() {
            self.live.push(Some(pidfd));
        } else {
            self.live[index] = Some(pidfd);
        }
        tracing::debug!(members = self.count(), "a pod member joined");
        Ok(())
    }

    /// Forgets the members that have ended, without waiting.
    pub fn reap(&mut self) {
        let mut events = [EpollEvent::empty(); 16];
        while let Ok(n @ 1..) = self.epoll.wait(&mut events, EpollTimeout::ZERO) {
            for ev in &events[..n] {
                let Some(slot) = self.live.get_mut(ev.data() as usize) else {
                    continue;
                };
                if let Some(fd) = slot.take() {
                    let _ = self.epoll.delete(&fd);
                }
            }
        }
        tracing::debug!(members = self.count(), "a pod member ended");
    }

    /// How many members live.
    pub fn count(&self) -> usize {
        self.live.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn a_member_arrives_through_the_inbox_and_goes_when_its_process_ends() {
        let stand_in = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).unwrap();
        let mut listeners = Listeners::new(OwnedFd::from(stand_in)).unwrap();
        let (sender, inbox) = listener_channel().unwrap();
        listeners.set_inbox(inbox);
        let mut members = Members::new().unwrap();

        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let pidfd = sys::pidfd_open(child.id() as i32, false).unwrap();
        sender.send_member(pidfd).unwrap();
        listeners.take_arrivals(&mut members);
        members.reap();
        assert_eq!(members.count(), 1);

        child.kill().unwrap();
        child.wait().unwrap();
        members.reap();
        assert_eq!(members.count(), 0);
        // Its slot serves the next member.
        let mut next = Command::new("sleep").arg("10").spawn().unwrap();
        members
            .add(sys::pidfd_open(next.id() as i32, false).unwrap())
            .unwrap();
        assert_eq!((members.count(), members.live.len()), (1, 1));
        next.kill().unwrap();
        next.wait().unwrap();
    }
}
