//! The Sentry: serves a sandboxed guest's sockets from the netstack.
//!
//! The guest runs under a seccomp filter ([`filter`]) whose listener the Sentry
//! holds. Socket calls trap here; the data path stays native over AF_UNIX pair
//! ends (see docs/design.md, "Syscall interception"):
//!
//! - [`sentry`]: the event loop, the socket table, descriptor resolution,
//!   the pair pool, blocked calls, and the pumps between each pair end and
//!   its netstack socket, each in a module of its own;
//! - `syscalls`: one handler per trapped call;
//! - [`abi`], [`mem`]: the ABI's layouts, and guest memory;
//! - [`errno`]: the one errno type;
//! - [`netlink`], [`ifreq`]: NETLINK_ROUTE and the interface ioctls,
//!   answered from the netstack's NICs;
//! - [`sys`]: the only module with `unsafe`.

pub mod abi;
pub mod connector;
pub mod errno;
pub mod filter;
pub mod filter_files;
pub mod gsock;
pub mod ifreq;
mod listeners;
pub mod mem;
pub mod netlink;
pub mod privileges;
pub mod sentry;
pub mod sigwatch;
pub mod sys;
mod syscalls;
pub mod trace;

pub use listeners::{ListenerInbox, ListenerSender, listener_channel};
pub use sentry::{Sentry, SentryConfig, SentryNetwork};
pub use syscalls::Resume;
