//! Answers that a signal kept from their caller, given to the call's retry.
//!
//! A trapped call waits for the Sentry's answer interruptibly: a signal
//! that reaches the caller while the Sentry is acting on the call takes the
//! notification away, and the answer is refused (`ENOENT`). What the Sentry
//! did stays done (a connect, a bind, a datagram sent, datagrams copied
//! out). The kernel then restarts the call (`SA_RESTART`), or the caller
//! hears EINTR and, as programs do, makes the same call again. Either way
//! the thread's next trapped call is that same call, with the same
//! arguments: it gets the answer the first one should have had, instead of
//! doing the work twice (EISCONN from a connect that succeeded, a datagram
//! or stream bytes sent twice, a bind refused as already bound). What the
//! first call wrote into the caller's memory (a datagram, its sender) is
//! written again first, since a caller may clear its buffers before it
//! retries.
//!
//! Calls that consume nothing until their answer is delivered (a receive
//! that commits after its answer, an accept whose descriptor goes in with
//! the answer) are not recorded: their retry must do the work again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::sys::{Notif, Reply};

/// How long a lost answer waits for its call to come again: a restart is
/// immediate, a retry after EINTR follows the signal handler.
const KEEP: Duration = Duration::from_secs(10);
/// Most answers kept (one per thread at most; threads that exit leave theirs).
const MAX_KEPT: usize = 4096;

/// What the first call wrote to guest memory: (address, bytes), in order.
pub type Writes = Vec<(u64, Vec<u8>)>;

#[derive(Debug)]
struct Lost {
    nr: i64,
    args: [u64; 6],
    reply: Reply,
    writes: Writes,
    at: Instant,
}

/// Lost answers, by (listener slot, thread).
#[derive(Debug, Default)]
pub struct LostAnswers {
    by_thread: HashMap<(usize, u32), Lost>,
}

impl LostAnswers {
    /// Records the answer of a call that acted but could not answer.
    pub fn record(&mut self, n: &Notif, reply: Reply, writes: Writes, now: Instant) {
        if self.by_thread.len() >= MAX_KEPT {
            self.by_thread
                .retain(|_, l| now.duration_since(l.at) < KEEP);
            if self.by_thread.len() >= MAX_KEPT {
                self.by_thread.clear();
            }
        }
        let lost = Lost {
            nr: n.nr,
            args: n.args,
            reply,
            writes,
            at: now,
        };
        self.by_thread.insert((n.source, n.tid), lost);
    }

    /// The answer for `n` when it repeats the thread's call whose answer
    /// was lost. Any call of the thread ends the wait: only the very next
    /// one can be the retry.
    pub fn take(&mut self, n: &Notif, now: Instant) -> Option<(Reply, Writes)> {
        if self.by_thread.is_empty() {
            return None;
        }
        let lost = self.by_thread.remove(&(n.source, n.tid))?;
        let used = arg_count(n.nr);
        (lost.nr == n.nr
            && lost.args[..used] == n.args[..used]
            && now.duration_since(lost.at) < KEEP)
            .then_some((lost.reply, lost.writes))
    }
}

/// How many arguments a trapped call takes: the registers past them hold
/// whatever the caller left there, which differs between a call and its retry.
fn arg_count(nr: i64) -> usize {
    match nr {
        libc::SYS_listen | libc::SYS_shutdown => 2,
        libc::SYS_socket
        | libc::SYS_bind
        | libc::SYS_connect
        | libc::SYS_accept
        | libc::SYS_getsockname
        | libc::SYS_getpeername
        | libc::SYS_ioctl
        | libc::SYS_sendmsg
        | libc::SYS_recvmsg => 3,
        libc::SYS_accept4 | libc::SYS_sendmmsg => 4,
        libc::SYS_getsockopt | libc::SYS_setsockopt | libc::SYS_recvmmsg => 5,
        _ => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notif(tid: u32, nr: i64, arg0: u64) -> Notif {
        Notif {
            id: 1,
            tid,
            nr,
            arch: 0,
            args: [arg0, 0, 0, 0, 0, 0],
            source: 0,
        }
    }

    #[test]
    fn the_same_call_again_gets_the_lost_answer_once() {
        let mut lost = LostAnswers::default();
        let now = Instant::now();
        lost.record(
            &notif(7, libc::SYS_connect, 3),
            Reply::Value(0),
            Vec::new(),
            now,
        );
        assert!(matches!(
            lost.take(&notif(7, libc::SYS_connect, 3), now),
            Some((Reply::Value(0), _))
        ));
        assert!(lost.take(&notif(7, libc::SYS_connect, 3), now).is_none());
    }

    #[test]
    fn another_call_of_the_thread_ends_the_wait() {
        let mut lost = LostAnswers::default();
        let now = Instant::now();
        lost.record(
            &notif(7, libc::SYS_bind, 3),
            Reply::Value(0),
            Vec::new(),
            now,
        );
        assert!(lost.take(&notif(7, libc::SYS_bind, 4), now).is_none());
        assert!(lost.take(&notif(7, libc::SYS_bind, 3), now).is_none());
    }

    #[test]
    fn registers_past_the_arguments_do_not_matter() {
        let mut lost = LostAnswers::default();
        let now = Instant::now();
        let mut first = notif(7, libc::SYS_recvmsg, 4);
        first.args[3] = 0x8;
        first.args[5] = 0x7f00_1234;
        lost.record(&first, Reply::Value(4), Vec::new(), now);
        assert!(lost.take(&notif(7, libc::SYS_recvmsg, 4), now).is_some());
    }

    #[test]
    fn other_threads_and_stale_answers_do_not_match() {
        let mut lost = LostAnswers::default();
        let now = Instant::now();
        lost.record(
            &notif(7, libc::SYS_sendto, 3),
            Reply::Value(5),
            Vec::new(),
            now,
        );
        assert!(lost.take(&notif(8, libc::SYS_sendto, 3), now).is_none());
        assert!(
            lost.take(&notif(7, libc::SYS_sendto, 3), now + KEEP + KEEP)
                .is_none()
        );
    }
}
