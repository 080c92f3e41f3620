//! What the container's process does last, inside libcontainer's init
//! (after its namespaces, root, user, capabilities and the spec's own
//! seccomp profile): load our filter, announce its listener, wait for the
//! acknowledgement, execute the process.

use std::os::fd::RawFd;
use std::path::PathBuf;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::error::LibcontainerError;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
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

/// What `create` and `exec` tell libcontainer alike.
#[derive(Debug)]
pub struct Launch<'a> {
    pub root: &'a std::path::Path,
    pub id: &'a str,
    pub pid_file: Option<&'a PathBuf>,
    pub console_socket: Option<&'a PathBuf>,
    pub preserve_fds: i32,
}

impl Launch<'_> {
    /// A builder whose process runs under the Sentry, announcing its
    /// listener on `channel`.
    pub fn builder(&self, channel: RawFd) -> Result<ContainerBuilder, LibcontainerError> {
        ContainerBuilder::new(self.id.to_owned(), SyscallType::default())
            .with_executor(GuestExecutor::new(channel))
            .with_root_path(self.root)?
            .with_pid_file(self.pid_file)
            .map(|b| {
                b.with_console_socket(self.console_socket)
                    .with_preserved_fds(self.preserve_fds)
            })?
            .validate_id()
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
