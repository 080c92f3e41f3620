//! Network set-up for the modes that use the host: `sandbox` takes over the
//! interfaces of a namespace ([`takeover`]).

pub mod takeover;
