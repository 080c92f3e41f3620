//! What the container's process does last, inside libcontainer's init
//! (after its namespaces, root, user, capabilities and the spec's own
//! seccomp profile): load our filter, announce its listener, wait for the
//! acknowledgement, execute the process.

use std::os::fd::RawFd;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::sys;
use crate::sandbox::handoff::{self, Report};

/// Runs the container's process under the Sentry.
#[derive(Debug, Clone)]
pub struct GuestExecutor {
    /// The announcing end of the hand-off channel, inherited (libcontainer
    /// marks it close-on-exec, so the process never keeps it).
    channel: RawFd,
}

impl GuestExecutor {
    pub fn new(channel: RawFd) -> GuestExecutor {
        GuestExecutor { channel }
    }
}

impl Executor for GuestExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let channel = sys::inherited(self.channel);
        // With no_new_privs, which an unprivileged process needs for a filter.
        let listener = sentry::filter::install()
            .map_err(|e| ExecutorError::Other(format!("loading the seccomp filter: {e}")))?;
        // From here on socket calls trap to a Sentry that does not serve us
        // yet: only write, read, close and execve.
        if handoff::send(channel, &Report::Listener(listener)).is_err()
            || !handoff::wait_for_ack(channel)
        {
            return Err(ExecutorError::Other(
                "the Sentry did not take the seccomp listener".into(),
            ));
        }
        // The Sentry holds its own copy; the guest must never keep one.
        nix::unistd::close(listener)
            .map_err(|e| ExecutorError::Other(format!("closing the listener: {e}")))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
