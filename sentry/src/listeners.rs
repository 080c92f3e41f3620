//! The seccomp listeners one Sentry serves.
//!
//! `smolvisor do` has one: the guest's init loaded the filter and every
//! process of the sandbox inherited it. An OCI container gains one more for
//! each `exec`: the new process joins the container's namespaces but loads
//! a filter of its own, whose listener reaches the running Sentry through a
//! [`ListenerSender`]. All of them wait in one epoll set of their own, which
//! the event loop watches as a single descriptor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::sys::{self, Notif};

/// Hands listeners to a running Sentry, from another thread.
#[derive(Debug, Clone)]
pub struct ListenerSender {
    tx: Sender<OwnedFd>,
    wake: Arc<EventFd>,
}

impl ListenerSender {
    /// Queues `listener` for the Sentry and wakes it. Fails only once the
    /// Sentry has ended.
    pub fn send(&self, listener: OwnedFd) -> io::Result<()> {
        self.tx
            .send(listener)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        self.wake.write(1)?;
        Ok(())
    }
}

/// The Sentry's side of [`listener_channel`].
#[derive(Debug)]
pub struct ListenerInbox {
    rx: Receiver<OwnedFd>,
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

/// The listeners, by slot; slot 0 is the init's and stays for the
/// Sentry's whole life.
#[derive(Debug)]
pub(crate) struct Listeners {
    slots: Vec<Option<OwnedFd>>,
    epoll: Epoll,
    inbox: Option<ListenerInbox>,
}

impl Listeners {
    pub fn new(first: OwnedFd) -> io::Result<Listeners> {
        let mut set = Listeners {
            slots: Vec::new(),
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            inbox: None,
        };
        set.add(first)?;
        Ok(set)
    }

    /// Readable when a listener has a notification, or lost its last user.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// The listener `n` came from. A notification outlives its listener
    /// only by mistake; the init's then answers, and the kernel refuses an
    /// id it never issued.
    pub fn of(&self, n: &Notif) -> BorrowedFd<'_> {
        match self.slots.get(n.source) {
            Some(Some(fd)) => fd.as_fd(),
            _ => self.slots[0]
                .as_ref()
                .map_or_else(|| self.epoll.0.as_fd(), AsFd::as_fd),
        }
    }

    pub fn slot(&self, slot: usize) -> Option<Option<BorrowedFd<'_>>> {
        self.slots.get(slot).map(|s| s.as_ref().map(AsFd::as_fd))
    }

    pub fn add(&mut self, listener: OwnedFd) -> io::Result<usize> {
        let slot = match self.slots.iter().skip(1).position(Option::is_none) {
            Some(i) if !self.slots.is_empty() => i + 1,
            _ => self.slots.len(),
        };
        let flags = EpollFlags::EPOLLIN;
        self.epoll
            .add(&listener, EpollEvent::new(flags, slot as u64))?;
        // Best effort: older kernels lack it.
        let _ = sys::notif_sync_wakeup(listener.as_fd());
        if slot == self.slots.len() {
            self.slots.push(Some(listener));
        } else {
            self.slots[slot] = Some(listener);
        }
        Ok(slot)
    }

    /// Listeners with something to say, without waiting.
    pub fn ready(&self, out: &mut Vec<Ready>) {
        out.clear();
        let mut events = [EpollEvent::empty(); 16];
        let Ok(n) = self.epoll.wait(&mut events, EpollTimeout::ZERO) else {
            return;
        };
        out.extend(events[..n].iter().map(|ev| Ready {
            slot: ev.data() as usize,
            gone: ev.events().contains(EpollFlags::EPOLLHUP),
        }));
    }

    /// Stops watching a listener without users; closes it unless it is the
    /// init's.
    pub fn retire(&mut self, slot: usize) {
        let Some(Some(fd)) = self.slots.get(slot) else {
            return;
        };
        let _ = self.epoll.delete(fd);
        if slot > 0 {
            self.slots[slot] = None;
        }
    }

    pub fn set_inbox(&mut self, inbox: ListenerInbox) {
        self.inbox = Some(inbox);
    }

    pub fn inbox_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inbox.as_ref().map(|i| i.wake.as_fd())
    }

    /// Takes in what arrived through the inbox.
    pub fn take_arrivals(&mut self) {
        let Some(inbox) = self.inbox.take() else {
            return;
        };
        let _ = inbox.wake.read();
        while let Ok(fd) = inbox.rx.try_recv() {
            match self.add(fd) {
                Ok(slot) => tracing::debug!(slot, "serving one more seccomp listener"),
                Err(e) => tracing::warn!("cannot watch a new seccomp listener: {e}"),
            }
        }
        self.inbox = Some(inbox);
    }
}
