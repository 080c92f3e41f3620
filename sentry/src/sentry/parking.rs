//! Blocked calls: parked on the socket they wait for with their
//! continuation (the resolved socket, the copy of the guest's descriptor,
//! the decoded arguments), resumed from it when the socket changes (unless
//! a signal cancelled them), answered EAGAIN/EINPROGRESS at their deadline,
//! dropped when their caller left, and watched for missed wake-ups.

use std::collections::VecDeque;
use std::time::{Duration, Instant as StdInstant};

use super::{Outcome, SWEEP, Sentry};
use crate::errno::Errno;
use crate::gsock::{GKey, GSock};
use crate::sys::{self, Notif, Reply};
use crate::syscalls::Resume;

/// A blocked call, waiting on a socket.
#[derive(Debug)]
pub struct Parked {
    /// The notification to answer.
    pub notif: Notif,
    /// When to give up (`SO_RCVTIMEO`/`SO_SNDTIMEO`).
    pub deadline: Option<StdInstant>,
    /// When the call first blocked (for the watchdog).
    pub since: StdInstant,
    /// The watchdog has reported this call.
    pub reported: bool,
    /// Where it resumes.
    pub resume: Box<Resume>,
}

impl Sentry {
    /// Answers (or parks again) a blocked call that was handled again: it
    /// keeps its deadline and its age.
    fn finish_parked_at(
        &mut self,
        notif: Notif,
        deadline: Option<StdInstant>,
        since: StdInstant,
        reported: bool,
        outcome: Outcome,
    ) {
        self.answer(notif, outcome, |_, resume| Parked {
            notif,
            deadline,
            since,
            reported,
            resume,
        });
    }

    /// A connect failed while blocking calls waited for it: the first
    /// caller still there hears the error, which is then consumed (as
    /// `sock_error` is on Linux); a cancelled caller leaves it for `SO_ERROR`.
    pub(super) fn fail_parked_connects(&mut self, key: GKey) {
        let s = &mut self.socks[key];
        let (connects, rest): (VecDeque<Parked>, VecDeque<Parked>) = s
            .parked
            .drain(..)
            .partition(|p| p.notif.nr == libc::SYS_connect);
        s.parked = rest;
        for p in connects {
            let Some(e) = self.socks[key].connect_error else {
                // Taken by an earlier caller: the socket is now simply
                // not connected, and a later connect starts again.
                self.socks[key].parked.push_back(p);
                continue;
            };
            let listener = self.listeners.of(&p.notif);
            if sys::notif_send(listener, p.notif.id, Reply::Errno(e)).is_ok() {
                self.trace(&p.notif, &format!("Errno({e:?})"));
                self.socks[key].connect_error = None;
            }
        }
    }

    pub(super) fn retry_parked(&mut self, key: GKey) {
        let Some(s) = self.socks.get_mut(key) else {
            return;
        };
        if s.parked.is_empty() {
            return;
        }
        let parked: Vec<Parked> = s.parked.drain(..).collect();
        for p in parked {
            // A call cancelled by a signal is gone from the kernel: running
            // it again would consume what its retry (a new notification)
            // is waiting for.
            if !sys::notif_id_valid(self.listeners.of(&p.notif), p.notif.id) {
                self.trace(&p.notif, "cancelled while blocked");
                continue;
            }
            let Parked {
                notif,
                deadline,
                since,
                reported,
                resume,
            } = p;
            let outcome = crate::syscalls::handle(self, &notif, Some(*resume));
            self.finish_parked_at(notif, deadline, since, reported, outcome);
        }
        // Whatever was not taken by a blocked receiver goes into the pair.
        if self.socks.get(key).is_some_and(GSock::is_dgram) {
            self.pump_rx(key);
        }
    }

    pub(super) fn expire_parked(&mut self) {
        if self.parked_keys.is_empty() {
            return;
        }
        let now = StdInstant::now();
        if self.sigwatch.is_some() && now >= self.next_signal_check {
            self.next_signal_check = now + crate::sigwatch::CHECK_EVERY;
            self.end_signalled_calls();
        }
        let sweep = now >= self.next_sweep;
        if sweep {
            self.next_sweep = now + SWEEP;
        }
        let mut keys = std::mem::take(&mut self.parked_keys);
        keys.sort_unstable();
        keys.dedup();
        keys.retain(|&k| self.socks.get(k).is_some_and(|s| !s.parked.is_empty()));
        self.parked_keys.extend_from_slice(&keys);
        if sweep {
            for &key in &keys {
                self.watch_parked(key, now);
            }
        }
        let has_deadline = |s: &GSock| {
            s.parked
                .iter()
                .any(|p| p.deadline.is_some_and(|d| d <= now))
        };
        for key in keys {
            if !sweep && !self.socks.get(key).is_some_and(has_deadline) {
                continue;
            }
            let s = &mut self.socks[key];
            let mut keep = VecDeque::new();
            let mut expired = Vec::new();
            for p in s.parked.drain(..) {
                if p.deadline.is_some_and(|d| d <= now) {
                    expired.push(p);
                } else if sweep && !sys::notif_id_valid(self.listeners.of(&p.notif), p.notif.id) {
                    // The caller left; forget the call.
                } else {
                    keep.push_back(p);
                }
            }
            s.parked = keep;
            for p in expired {
                let errno = timed_out(p.notif.nr);
                self.finish(p.notif, Outcome::Reply(Reply::Errno(errno)));
            }
            if !self.socks[key].is_dgram() || self.socks[key].parked.is_empty() {
                self.pump_rx(key);
            }
            self.maybe_close(key);
        }
    }

    /// The watchdog: a call blocked for longer than its timeout (60 s
    /// when it has none) on a socket that is ready has missed its wake-up.
    /// It is reported once, with the socket's state, to the debug log and
    /// as a warning.
    fn watch_parked(&mut self, key: GKey, now: StdInstant) {
        const NO_TIMEOUT: Duration = Duration::from_secs(60);
        let Some(s) = self.socks.get(key) else {
            return;
        };
        let ready = s.id.and_then(|id| self.stack.readiness(id).ok());
        let mut late = Vec::new();
        for (i, p) in s.parked.iter().enumerate() {
            let limit = p.deadline.map_or(NO_TIMEOUT, |d| d.duration_since(p.since));
            if p.reported || now.duration_since(p.since) <= limit {
                continue;
            }
            let stashed = s.queue().is_some_and(|q| !q.stash.is_empty());
            if could_proceed(p.notif.nr, stashed, ready) {
                late.push(i);
            }
        }
        for i in late {
            let s = &mut self.socks[key];
            s.parked[i].reported = true;
            let (notif, since) = (s.parked[i].notif, s.parked[i].since);
            let what = format!(
                "watchdog: blocked {:.1} s on a ready socket ({:?}, stash {}, readiness {:?})",
                now.duration_since(since).as_secs_f64(),
                s.kind,
                s.queue().map_or(0, |q| q.stash.len()),
                ready,
            );
            tracing::warn!("{what}");
            self.trace(&notif, &what);
        }
    }

    /// Ends the blocked calls of threads that have a signal to handle: the
    /// kernel restarts them after the handler, or fails them with EINTR
    /// (see `sigwatch.rs`).
    fn end_signalled_calls(&mut self) {
        let Some(watch) = self.sigwatch.as_mut() else {
            return;
        };
        let mut tids: Vec<u32> = Vec::new();
        for &key in &self.parked_keys {
            if let Some(s) = self.socks.get(key) {
                tids.extend(s.parked.iter().map(|p| p.notif.tid));
            }
        }
        tids.sort_unstable();
        tids.dedup();
        let signalled = match watch.signalled(&tids) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("signal watcher failed: {e}");
                return;
            }
        };
        if signalled.is_empty() {
            return;
        }
        for key in self.parked_keys.clone() {
            let Some(s) = self.socks.get_mut(key) else {
                continue;
            };
            let (ended, kept): (VecDeque<Parked>, VecDeque<Parked>) = s
                .parked
                .drain(..)
                .partition(|p| signalled.contains(&p.notif.tid));
            s.parked = kept;
            for p in ended {
                self.trace(&p.notif, "a signal is pending: ERESTARTSYS");
                let restart = Reply::Errno(crate::sigwatch::ERESTARTSYS);
                let _ = sys::notif_send(self.listeners.of(&p.notif), p.notif.id, restart);
            }
        }
    }
}

/// What a blocked call answers at its deadline: `connect` goes on in the
/// background (EINPROGRESS), anything else would have blocked (EAGAIN).
fn timed_out(nr: i64) -> Errno {
    if nr == libc::SYS_connect {
        Errno::EINPROGRESS
    } else {
        Errno::EAGAIN
    }
}

/// Whether a blocked call could have gone on: its socket is ready for it.
fn could_proceed(nr: i64, stashed: bool, ready: Option<netstack::Readiness>) -> bool {
    match nr {
        libc::SYS_accept | libc::SYS_accept4 => stashed || ready.is_some_and(|r| r.readable),
        libc::SYS_recvfrom | libc::SYS_recvmsg | libc::SYS_recvmmsg => {
            ready.is_some_and(|r| r.readable || r.error)
        }
        _ => ready.is_some_and(|r| r.writable || r.error || r.hangup),
    }
}

#[cfg(test)]
mod tests {
    use netstack::Readiness;

    use super::*;

    #[test]
    fn a_deadline_answers_as_linux_does() {
        assert_eq!(timed_out(libc::SYS_connect), Errno::EINPROGRESS);
        assert_eq!(timed_out(libc::SYS_accept4), Errno::EAGAIN);
        assert_eq!(timed_out(libc::SYS_recvmsg), Errno::EAGAIN);
    }

    #[test]
    fn the_watchdog_knows_what_each_call_waits_for() {
        let r = |f: fn(&mut Readiness)| {
            let mut r = Readiness::default();
            f(&mut r);
            Some(r)
        };
        assert!(could_proceed(libc::SYS_accept, true, None));
        assert!(could_proceed(
            libc::SYS_accept,
            false,
            r(|r| r.readable = true)
        ));
        assert!(!could_proceed(
            libc::SYS_accept,
            false,
            r(|r| r.writable = true)
        ));
        assert!(could_proceed(
            libc::SYS_recvfrom,
            false,
            r(|r| r.error = true)
        ));
        assert!(!could_proceed(
            libc::SYS_recvmsg,
            false,
            r(|r| r.writable = true)
        ));
        assert!(could_proceed(
            libc::SYS_connect,
            false,
            r(|r| r.hangup = true)
        ));
        assert!(could_proceed(
            libc::SYS_sendto,
            false,
            r(|r| r.writable = true)
        ));
        assert!(!could_proceed(libc::SYS_sendmsg, false, None));
    }
}
