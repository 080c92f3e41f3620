//! The connection states of RFC 9293 and every transition between them, in
//! one table.
//!
//! The engine decides *that* something happened (a SYN arrived, our FIN was
//! acknowledged, the application closed) and asks `State::on` where that
//! leads; nothing else assigns a state. An event that does not apply in a
//! state leaves it unchanged.

/// Where a connection is (RFC 9293 (3.3.2)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    /// The caller should keep only the 4-tuple until the engine reports
    /// `Closed` (or drop the engine and keep its own timer).
    TimeWait,
}

/// What moves a connection from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The application connects (active open).
    Connect,
    /// The application listens (passive open).
    Listen,
    /// A SYN without ACK arrived (in LISTEN, or in SYN-SENT: simultaneous open).
    Syn,
    /// Our SYN was acknowledged.
    SynAcked,
    /// The application closed its sending side.
    Close,
    /// The peer's FIN arrived in sequence.
    Fin,
    /// Our FIN was acknowledged.
    FinAcked,
    /// A valid RST arrived, the application aborted, or we gave up.
    Reset,
    /// TIME-WAIT's 2 MSL ran out.
    TimeWaitOver,
}

impl State {
    /// The state after `event`: one row per arrow of RFC 9293's diagram,
    /// so rows that lead to the same state stay apart.
    #[allow(clippy::match_same_arms)]
    pub(crate) fn on(self, event: Event) -> State {
        use Event as E;
        use State as S;
        match (self, event) {
            (_, E::Reset) => S::Closed,
            (S::Closed, E::Connect) => S::SynSent,
            (S::Closed, E::Listen) => S::Listen,
            (S::Listen | S::SynSent, E::Syn) => S::SynReceived,
            (S::SynSent | S::SynReceived, E::SynAcked) => S::Established,
            (S::Listen | S::SynSent, E::Close) => S::Closed,
            (S::SynReceived | S::Established, E::Close) => S::FinWait1,
            (S::CloseWait, E::Close) => S::LastAck,
            (S::SynReceived | S::Established, E::Fin) => S::CloseWait,
            (S::FinWait1, E::Fin) => S::Closing,
            (S::FinWait2, E::Fin) => S::TimeWait,
            (S::FinWait1, E::FinAcked) => S::FinWait2,
            (S::Closing, E::FinAcked) => S::TimeWait,
            (S::LastAck, E::FinAcked) => S::Closed,
            (S::TimeWait, E::TimeWaitOver) => S::Closed,
            (s, _) => s,
        }
    }

    /// The handshake is done (RFC 9293's synchronized states).
    pub fn is_synchronized(self) -> bool {
        !matches!(
            self,
            State::Closed | State::Listen | State::SynSent | State::SynReceived
        )
    }

    /// New application data may still be queued for sending.
    pub fn may_send(self) -> bool {
        matches!(
            self,
            State::SynSent | State::SynReceived | State::Established | State::CloseWait
        )
    }

    /// Data from the peer may still arrive.
    pub fn may_receive(self) -> bool {
        matches!(
            self,
            State::SynReceived | State::Established | State::FinWait1 | State::FinWait2
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Event as E, State as S};

    #[test]
    fn close_sequences() {
        // Active close.
        let s = S::Established.on(E::Close);
        assert_eq!(s, S::FinWait1);
        assert_eq!(s.on(E::FinAcked).on(E::Fin), S::TimeWait);
        // Simultaneous close.
        assert_eq!(s.on(E::Fin).on(E::FinAcked), S::Closing.on(E::FinAcked));
        assert_eq!(s.on(E::Fin).on(E::FinAcked), S::TimeWait);
        // Passive close.
        assert_eq!(
            S::Established.on(E::Fin).on(E::Close).on(E::FinAcked),
            S::Closed
        );
        assert_eq!(S::TimeWait.on(E::TimeWaitOver), S::Closed);
        assert_eq!(S::FinWait2.on(E::Reset), S::Closed);
        // Events that do not apply change nothing.
        assert_eq!(S::Established.on(E::FinAcked), S::Established);
        assert_eq!(S::Listen.on(E::Fin), S::Listen);
    }
}
