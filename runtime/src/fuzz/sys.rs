//! The one unsafe call of the fuzzer: forking the process that becomes a
//! sandbox's Sentry, which is sound only while the fuzzer has one thread.

use nix::unistd::ForkResult;

/// The number of threads of this process (from `/proc/self/task`).
fn threads() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Forks, if this process runs a single thread (else EDEADLK: the child
/// would run a whole Sentry, and a lock held by another thread at the fork
/// would never be released in it).
pub fn fork_single_threaded() -> nix::Result<ForkResult> {
    match threads() {
        Ok(1) => {}
        Ok(_) => return Err(nix::errno::Errno::EDEADLK),
        Err(_) => return Err(nix::errno::Errno::EIO),
    }
    // SAFETY: the process has one thread (checked just above, and this
    // thread starts none in between), so the child inherits no lock or
    // state another thread was in the middle of changing: it may run any
    // code, as a fresh process would.
    unsafe { nix::unistd::fork() }
}

/// The SysV key of the coverage map in a sandbox's IPC namespace.
const MAP_KEY: libc::key_t = 0x534d_5646;
/// An AFL map's size.
pub const MAP_SIZE: usize = 1 << 16;

/// Creates the coverage map in the calling process's IPC namespace (the
/// shim's, inside the sandbox); returns its id, for `__AFL_SHM_ID`.
pub fn create_map() -> std::io::Result<i32> {
    // SAFETY: shmget takes no pointers.
    let id = unsafe { libc::shmget(MAP_KEY, MAP_SIZE, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(id)
}

/// A sandbox's coverage map, attached in the fuzzer: 8-byte words that the
/// server adds to while the fuzzer reads and clears them.
#[derive(Debug)]
pub struct MapMemory {
    addr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
}

impl MapMemory {
    /// Attaches the map that the shim made in the IPC namespace `ns` (an
    /// open `/proc/PID/ns/ipc`): enters it, attaches, and comes back.
    pub fn attach(ns: &std::fs::File) -> std::io::Result<MapMemory> {
        use nix::sched::{CloneFlags, setns};
        let own = std::fs::File::open("/proc/thread-self/ns/ipc")?;
        setns(ns, CloneFlags::CLONE_NEWIPC)?;
        // SAFETY: shmget takes no pointers.
        let id = unsafe { libc::shmget(MAP_KEY, MAP_SIZE, 0) };
        let found = (id >= 0).then(|| {
            // SAFETY: a null address lets the kernel choose where to map;
            // nothing of ours is at the address it returns.
            unsafe { libc::shmat(id, std::ptr::null(), 0) }
        });
        let error = std::io::Error::last_os_error();
        setns(&own, CloneFlags::CLONE_NEWIPC)?;
        match found {
            Some(p) if p as isize != -1 => Ok(MapMemory {
                addr: std::ptr::NonNull::new(p.cast()).ok_or(error)?,
            }),
            _ => Err(error),
        }
    }

    /// The map as words.
    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is MAP_SIZE bytes, page-aligned, and stays
        // until `drop`, which needs `&mut self`. Another process writes it
        // at any time, which atomics allow (the server's plain byte writes
        // cannot make our loads undefined: they are hardware-atomic here).
        unsafe { std::slice::from_raw_parts(self.addr.as_ptr(), MAP_SIZE / 8) }
    }
}

impl Drop for MapMemory {
    fn drop(&mut self) {
        // SAFETY: the address is the one shmat returned, attached once, and
        // no slice of it outlives `self`.
        unsafe {
            libc::shmdt(self.addr.as_ptr().cast());
        }
    }
}
