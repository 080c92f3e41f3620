//! The event loop: one epoll set for the seccomp listeners, the init's
//! pidfd, signals, host-backed links, the NAT's wake-ups and every pair
//! end. Each round takes the guest's closes and writes first, then one
//! notification per ready listener, then the stack, the pumps, parked
//! calls and deadlines, and tops up the pair pool.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant as StdInstant};

use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use slotmap::KeyData;

use super::{Outcome, Parked, Sentry};
use crate::errno::CALLER_GONE;
use crate::gsock::{GKey, Phase};
use crate::listeners::{ListenerInbox, Ready};
use crate::sys::{self, Notif, Reply};
use crate::syscalls::Resume;

/// Epoll tokens: these few at the top of the range; every other one is a
/// pair end's `GKey`.
pub(super) const TOKEN_LISTENER: u64 = u64::MAX;
pub(super) const TOKEN_INIT: u64 = u64::MAX - 1;
pub(super) const TOKEN_SIGNAL: u64 = u64::MAX - 2;
/// A link backed by the host (AF_PACKET, TAP) has frames.
pub(super) const TOKEN_LINK: u64 = u64::MAX - 3;
/// The NAT gateway has queued frames for the guest.
pub(super) const TOKEN_NAT: u64 = u64::MAX - 4;
/// More listeners arrived (an `exec` into the container).
const TOKEN_MORE: u64 = u64::MAX - 5;
/// An `exec`'s listener has a notification.
pub(super) const TOKEN_EXECS: u64 = u64::MAX - 6;
/// A pod member's init ended.
pub(super) const TOKEN_MEMBERS: u64 = u64::MAX - 7;

impl Sentry {
    /// Serves the guest until its init exits, and in a pod until every
    /// member's init has too; returns the init's exit status (its code, or
    /// 128+N for a signal N).
    pub fn run(mut self) -> io::Result<i32> {
        let mut events = vec![EpollEvent::empty(); 256];
        self.pool.refill();
        self.unconnected.refill(&mut self.pool);
        if self.confine {
            // Nothing is opened by path from here on; a path `connect` may
            // still name (see `crate::connector`) is relative to `/`.
            nix::unistd::chdir("/")?;
            crate::filter::confine_sentry(self.nat_mode)?;
        }
        loop {
            let timeout = self.timeout();
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            // The guest's closes and writes first: a call that traps right
            // after a close must find that socket gone (its port free), and
            // the edge that said so is not reported twice.
            let (mut notified, mut execs, mut ends) = (false, false, false);
            for ev in &events[..n] {
                match ev.data() {
                    // No process uses the init's filter any more (in a pod,
                    // the others' go on): its hang-up, level-triggered,
                    // would wake every round.
                    TOKEN_LISTENER if ev.events().contains(EpollFlags::EPOLLHUP) => {
                        let _ = self.epoll.delete(self.listeners.first());
                        self.retire_listener(0);
                    }
                    TOKEN_LISTENER => notified = true,
                    TOKEN_EXECS => execs = true,
                    TOKEN_INIT => {
                        if let Some(code) = self.reap_init()? {
                            // Level-triggered: an ended init's pidfd stays
                            // readable.
                            let _ = self.epoll.delete(&self.init_pidfd);
                            self.init_status = Some(code);
                            self.sweep_now();
                        }
                    }
                    TOKEN_MEMBERS => {
                        self.members.reap();
                        self.sweep_now();
                    }
                    TOKEN_SIGNAL => self.on_signal(),
                    // The stack reads its links on every round.
                    TOKEN_LINK => {}
                    // Taken before the round reads the cable (frames queued
                    // after it signal again).
                    TOKEN_NAT => {
                        for fd in &self.nat_wakeups {
                            let _ = nix::unistd::read(fd, &mut [0u8; 8]);
                        }
                    }
                    TOKEN_MORE => self.listeners.take_arrivals(&mut self.members),
                    token => {
                        let key = GKey::from(KeyData::from_ffi(token));
                        self.on_end_event(key, ev.events());
                        ends = true;
                    }
                }
            }
            if let Some(code) = self.init_status {
                // A member queued this round counts before the pod ends.
                self.listeners.take_arrivals(&mut self.members);
                if self.members.count() == 0 {
                    return Ok(code);
                }
            }
            if !self.deferred.is_empty() {
                // The closes this round read may have freed their ports.
                self.poll_stack();
                self.retry_deferred();
            }
            if notified || execs {
                if ends {
                    self.poll_stack();
                }
                self.on_notification(notified, execs);
            }
            self.poll_stack();
            self.sync_mirrors();
            self.expire_parked();
            self.pool.set_short(self.stack.tcp_memory().short());
            self.pool.refill();
            self.unconnected.refill(&mut self.pool);
        }
    }

    /// Keeps the relay's host listeners in step with the guest's (a close
    /// shows here; a `listen` syncs before it answers).
    pub(crate) fn sync_mirrors(&mut self) {
        for m in &mut self.mirrors {
            for (proto, port, e) in m.sync(&self.stack) {
                tracing::warn!(
                    "{proto:?} port {port}: no host socket for the guest's ({e}); \
                     only the sandbox's own traffic reaches it"
                );
            }
        }
    }

    /// Runs the stack alone: its events wait for the next full round.
    pub(crate) fn poll_stack_only(&mut self) {
        let now = self.now();
        self.stack.poll(now);
    }

    fn timeout(&self) -> EpollTimeout {
        if !self.touched.is_empty() || !self.deferred.is_empty() {
            return EpollTimeout::ZERO;
        }
        let now = StdInstant::now();
        // The sweep for callers that went away matters only while calls are
        // blocked; an idle Sentry sleeps until the stack or the guest wakes it.
        let mut at = if self.parked_keys.is_empty() {
            now + Duration::from_secs(3600)
        } else if self.sigwatch.is_some() {
            self.next_sweep.min(self.next_signal_check)
        } else {
            self.next_sweep
        };
        if let Some(t) = self.stack.poll_at() {
            let t = self.start + Duration::from_micros(t.total_micros().max(0) as u64);
            at = at.min(t);
        }
        for &key in &self.parked_keys {
            if let Some(s) = self.socks.get(key) {
                for p in &s.parked {
                    if let Some(d) = p.deadline {
                        at = at.min(d);
                    }
                }
            }
        }
        epoll_timeout(at.saturating_duration_since(now))
    }

    pub(super) fn now(&self) -> netstack::Instant {
        netstack::Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    /// A container of the pod ended: the calls its processes left blocked
    /// go at the end of this round, not at the next sweep, so that the
    /// copies of their descriptors they hold close and their ports are
    /// free for the pod's other containers at once, as on Linux.
    fn sweep_now(&mut self) {
        self.next_sweep = StdInstant::now();
    }

    fn reap_init(&mut self) -> io::Result<Option<i32>> {
        match waitpid(self.init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => Ok(Some(128 + sig as i32)),
            Ok(_) | Err(Errno::EINTR) => Ok(None),
            // Not our child (an OCI container's init: its caller reaps it).
            // Its pidfd turned readable, so it ended; its status is the
            // reaper's to report.
            Err(Errno::ECHILD) => Ok(Some(0)),
            Err(e) => Err(e.into()),
        }
    }

    fn on_signal(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let signo = info.ssi_signo as i32;
            // The terminal already sent SIGINT/SIGQUIT to the guest, which
            // shares our process group; the others are passed on.
            if signo == libc::SIGTERM || signo == libc::SIGHUP {
                let _ = sys::pidfd_send_signal(self.init_pidfd.as_fd(), signo);
            }
        }
    }

    /// Serves one notification from each listener that has one: the
    /// init's when `first`, the `exec`s' ready ones when `execs`.
    fn on_notification(&mut self, first: bool, execs: bool) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        if first {
            ready.push(Ready {
                slot: 0,
                gone: false,
            });
        }
        if execs {
            self.listeners.ready_more(&mut ready);
        }
        for r in &ready {
            if r.gone {
                self.retire_listener(r.slot);
                continue;
            }
            let Some(Some(fd)) = self.listeners.slot(r.slot) else {
                continue;
            };
            let mut n = match sys::notif_recv(fd) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("seccomp listener failed: {e}");
                    self.retire_listener(r.slot);
                    continue;
                }
            };
            n.source = r.slot;
            let outcome = crate::syscalls::handle(self, &n, None);
            self.finish(n, outcome);
        }
        self.ready = ready;
    }

    /// Forgets a listener whose processes are all gone, and the calls of
    /// theirs that were still blocked.
    fn retire_listener(&mut self, slot: usize) {
        for key in self.parked_keys.clone() {
            if let Some(s) = self.socks.get_mut(key) {
                s.parked.retain(|p| p.notif.source != slot);
            }
        }
        self.listeners.retire(slot);
    }

    /// Serves, besides the init's, every listener that arrives through
    /// `inbox` (see [`crate::listener_channel`]).
    pub fn accept_listeners(&mut self, inbox: ListenerInbox) -> io::Result<()> {
        self.listeners.set_inbox(inbox);
        if let Some(fd) = self.listeners.inbox_fd() {
            self.epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_MORE))?;
        }
        Ok(())
    }

    /// Tries the calls deferred in the previous round once more.
    fn retry_deferred(&mut self) {
        for (n, resume) in std::mem::take(&mut self.deferred) {
            let outcome = crate::syscalls::handle(self, &n, Some(*resume));
            self.finish(n, outcome);
        }
    }

    /// Answers (or parks) a newly handled notification.
    pub(super) fn finish(&mut self, n: Notif, outcome: Outcome) {
        let now = StdInstant::now();
        self.answer(n, outcome, |timeout, resume| Parked {
            notif: n,
            deadline: timeout.map(|t| now + t),
            since: now,
            reported: false,
            resume,
        });
    }

    pub(super) fn answer(
        &mut self,
        n: Notif,
        outcome: Outcome,
        parked: impl FnOnce(Option<Duration>, Box<Resume>) -> Parked,
    ) {
        match outcome {
            Outcome::Reply(Reply::Errno(CALLER_GONE)) => {
                // Cancelled while it was served; whatever it would have
                // consumed was left in place.
                self.trace(&n, "cancelled");
            }
            Outcome::Reply(reply) => {
                if self.tracer.is_some() {
                    self.trace(&n, &format!("{reply:?}"));
                }
                if let Err(e) = sys::notif_send(self.listeners.of(&n), n.id, reply) {
                    // The caller died (or, on a kernel without killable
                    // waiting, a signal took the call away: see sigwatch.rs).
                    self.trace(&n, &format!("answer lost: {e}"));
                }
            }
            Outcome::Done => {}
            Outcome::Defer(resume) => {
                self.trace(&n, "deferred to the next round");
                self.deferred.push((n, resume));
            }
            Outcome::Park(resume, timeout) => {
                self.trace(&n, "blocked");
                let key = resume.key;
                if let Some(s) = self.socks.get_mut(key) {
                    if s.parked.is_empty() {
                        self.parked_keys.push(key);
                    }
                    s.parked.push_back(parked(timeout, resume));
                } else {
                    let _ = sys::notif_send(
                        self.listeners.of(&n),
                        n.id,
                        Reply::Errno(crate::errno::Errno::EBADF),
                    );
                }
            }
        }
    }

    pub(crate) fn trace(&mut self, n: &Notif, what: &str) {
        if let Some(t) = &mut self.tracer {
            t.line(n, what);
        }
    }

    fn on_end_event(&mut self, key: GKey, ev: EpollFlags) {
        let Some(s) = self.socks.get_mut(key) else {
            return;
        };
        if ev.contains(EpollFlags::EPOLLHUP) {
            s.guest_gone = true;
        }
        if ev.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP) {
            s.hangup_seen = true;
        }
        if ev.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP) {
            s.readable = true;
            self.pump_tx(key);
        }
        if ev.contains(EpollFlags::EPOLLOUT) {
            self.pump_rx(key);
        }
        self.touched.push(key);
    }

    /// Runs the stack and passes every change on, until nothing more
    /// happens (bounded: what is left waits for the next round, which then
    /// comes at once).
    pub(crate) fn poll_stack(&mut self) {
        for _ in 0..8 {
            let now = self.now();
            self.stack.poll(now);
            self.stack.drain_events(&mut self.events);
            for id in self.events.drain(..) {
                if let Some(key) = self.socks.by_stack(id) {
                    self.touched.push(key);
                }
            }
            if self.touched.is_empty() {
                return;
            }
            let mut touched = std::mem::take(&mut self.touched);
            touched.sort_unstable();
            touched.dedup();
            for key in touched.drain(..) {
                self.service(key);
            }
            if self.touched.is_empty() {
                self.touched = touched;
            }
        }
    }

    /// Everything one socket may need after a change.
    fn service(&mut self, key: GKey) {
        let Some(s) = self.socks.get(key) else {
            return;
        };
        match s.phase {
            Phase::Listening(_) => self.refill_stash(key),
            Phase::Connecting { .. } => self.check_connected(key),
            Phase::Idle | Phase::Connected | Phase::Reset => {}
        }
        self.pump_tx(key);
        self.pump_rx(key);
        self.retry_parked(key);
        self.maybe_close(key);
    }
}

/// The epoll timeout for a wait: rounded up so that a deadline is never
/// missed by a millisecond, and capped at what epoll takes (the loop wakes
/// and computes again).
fn epoll_timeout(wait: Duration) -> EpollTimeout {
    let ms = wait.as_micros().div_ceil(1000).min(u128::from(u16::MAX)) as u16;
    EpollTimeout::from(ms)
}

#[cfg(test)]
mod tests {
    use slotmap::Key;

    use super::*;

    #[test]
    fn timeouts_round_up_and_are_capped() {
        let ms = |t: EpollTimeout| i32::from(t);
        assert_eq!(ms(epoll_timeout(Duration::ZERO)), 0);
        assert_eq!(ms(epoll_timeout(Duration::from_micros(1))), 1);
        assert_eq!(ms(epoll_timeout(Duration::from_micros(1001))), 2);
        assert_eq!(
            ms(epoll_timeout(Duration::from_secs(3600))),
            i32::from(u16::MAX)
        );
    }

    #[test]
    fn tokens_are_apart_from_every_pair_end() {
        let tokens = [
            TOKEN_LISTENER,
            TOKEN_INIT,
            TOKEN_SIGNAL,
            TOKEN_LINK,
            TOKEN_NAT,
            TOKEN_MORE,
            TOKEN_EXECS,
            TOKEN_MEMBERS,
        ];
        let mut sorted = tokens.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), tokens.len());
        // A slotmap key is a 32-bit index and a 32-bit odd version: far below.
        let mut keys = slotmap::SlotMap::<GKey, ()>::with_key();
        let k = keys.insert(());
        assert!(tokens.iter().all(|&t| t > k.data().as_ffi() + (1 << 40)));
    }
}
