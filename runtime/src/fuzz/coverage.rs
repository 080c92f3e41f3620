//! Coverage feedback, when the server keeps an AFL-style map: a SysV
//! shared-memory segment of 64 KiB named by `__AFL_SHM_ID`, one byte per
//! edge that it counts up. The sandbox's server is started through a shim
//! (`smolvisor afl-shim`, inside the sandbox, so in its IPC namespace) that
//! makes the segment and sets the variable; the fuzzer enters that
//! namespace to attach it. After each round it reads and clears the map,
//! with AFL's hit-count buckets: an input that lit a new bucket of an edge
//! joins the corpus. A server built without the map leaves it empty, and
//! the fuzzer stays blind.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::sys::{MAP_SIZE, MapMemory};

/// The map of a running sandbox and what has been seen in all of them.
#[derive(Debug)]
pub struct Coverage {
    virgin: Vec<u8>,
    /// Edges seen at least once.
    pub edges: usize,
}

impl Default for Coverage {
    fn default() -> Self {
        Coverage {
            virgin: vec![0xff; MAP_SIZE],
            edges: 0,
        }
    }
}

/// AFL's hit-count bucket of a count, as one bit.
fn bucket(count: u8) -> u8 {
    match count {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        _ => 128,
    }
}

impl Coverage {
    /// Reads and clears `map`; true if it holds a bucket never seen.
    pub fn update(&mut self, map: &MapMemory) -> bool {
        let mut new = false;
        for (i, w) in map.words().iter().enumerate() {
            if w.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let v = w.swap(0, Ordering::Relaxed);
            for (k, count) in v.to_ne_bytes().into_iter().enumerate() {
                let b = bucket(count);
                let seen = &mut self.virgin[i * 8 + k];
                if b == 0 || *seen & b == 0 {
                    continue;
                }
                if *seen == 0xff {
                    self.edges += 1;
                }
                *seen &= !b;
                new = true;
            }
        }
        new
    }
}

/// The server's map: the IPC namespace of the sandbox's init (the child of
/// the Sentry `sentry` that is pid 1 of its own PID namespace).
pub fn attach(sentry: nix::unistd::Pid) -> Option<MapMemory> {
    let children =
        std::fs::read_to_string(format!("/proc/{sentry}/task/{sentry}/children")).ok()?;
    let init = children.split_whitespace().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("NSpid:"))
                .is_some_and(|l| l.split_whitespace().nth(2) == Some("1"))
        })
    })?;
    let ns = std::fs::File::open(Path::new("/proc").join(init).join("ns/ipc")).ok()?;
    MapMemory::attach(&ns).ok()
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_are_afls() {
        let b: Vec<u8> = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 127, 128, 255]
            .into_iter()
            .map(bucket)
            .collect();
        assert_eq!(b, [0, 1, 2, 4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128]);
    }
}
