//! `smolvisor fuzz` and `smolvisor replay`: a guest's own server, fed
//! mutated client traffic through the netstack.
//!
//! The server runs sandboxed as under `do` ([`target`]): a child process
//! is its Sentry, and the sandbox's `eth0` (10.0.2.15) is cabled to the
//! fuzzer ([`link`]), a peer host at 10.0.2.2 on that link: its frames go
//! straight into the Sentry's stack, never through the host's. The fuzzer
//! builds each input's frames itself ([`wire`], [`script`]): one TCP
//! connection (or one datagram) per input, carrying a seed's client bytes
//! after stream-level mutations ([`mutate`]), and for a share of inputs
//! with edited headers as well. [`driver`] plays several at once and sees
//! each to its end; [`campaign`] counts executions, and when the server
//! dies by a signal (its sandbox's exit status says so) or stops
//! answering, writes the inputs as a pcapng reproducer ([`repro`]),
//! restarts the server and goes on. `replay` rebuilds the inputs from such
//! a file and plays them into a fresh sandbox.
//!
//! Where the server keeps an AFL-style coverage map ([`coverage`]), inputs
//! that light new edges join the corpus; otherwise the mutation is blind.

pub mod campaign;
pub mod coverage;
pub mod driver;
pub mod link;
pub mod mutate;
pub mod repro;
pub mod script;
pub mod sys;
pub mod target;
pub mod wire;

/// Why fuzzing or a replay could not go on.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    /// A system call of the fuzzer's own failed.
    #[error("{step}: {}", errno.desc())]
    Host {
        /// What the fuzzer was doing.
        step: &'static str,
        /// How it failed.
        errno: nix::errno::Errno,
    },
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A capture could not be read or written.
    #[error("{0}: {1}")]
    Pcap(String, String),
    /// The server ended before it listened.
    #[error("the server ended before it listened ({0}); its output is in server.log")]
    ServerEnded(String),
    /// The server did not listen in time.
    #[error("nothing answered on port {0} within 15 s")]
    NotListening(u16),
    /// A reproducer holds no input of the fuzzer's.
    #[error("the file holds no frame sent by smolvisor fuzz")]
    EmptyReproducer,
}

impl FuzzError {
    fn host(step: &'static str) -> impl Fn(nix::errno::Errno) -> FuzzError {
        move |errno| FuzzError::Host { step, errno }
    }
}
