//! The calling guest thread's file-system credentials, and acting with
//! them.
//!
//! The Gofer reads them from the host's `/proc/TID/status` of the thread
//! the Sentry names (the Sentry is confined and cannot open files): fsuid
//! and fsgid (the 4th field of `Uid:` and `Gid:`), `Groups:`, `CapEff:`,
//! and the umask. The text is the kernel's, but parsed as untrusted: every
//! field must be there once and well-formed, or the request is refused.
//! For each request the Gofer's own thread takes them on ([`Creds::assume`]:
//! `setgroups`, `setfsgid`, `setfsuid`, then `capset` with the caller's
//! effective set within the Gofer's permitted one) and gives them back
//! after ([`Own::restore`]).

use crate::sys::{self, Errno};

/// `NGROUPS_MAX`.
const NGROUPS_MAX: usize = 65536;

/// What one guest thread acts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// Real uid and gid (what `access` checks without `AT_EACCESS`).
    pub ruid: u32,
    pub rgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    pub cap_eff: u64,
    pub cap_prm: u64,
    pub umask: u32,
}

/// Parses the text of `/proc/TID/status`; `None` when anything the Gofer
/// needs is missing, repeated or malformed.
pub fn parse(status: &[u8]) -> Option<Creds> {
    let mut uid = None;
    let mut gid = None;
    let mut groups = None;
    let mut eff = None;
    let mut prm = None;
    let mut umask = None;
    fn once<T>(slot: &mut Option<T>, v: Option<T>) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(v?);
        Some(())
    }
    // Lines as bytes: `Name:` is the thread's own choice, and need not be
    // UTF-8 (the kernel escapes a newline in it, so it cannot add a line).
    for line in status.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        let known = [
            &b"Uid"[..],
            b"Gid",
            b"Groups",
            b"CapEff",
            b"CapPrm",
            b"Umask",
        ];
        if !known.contains(&key) {
            continue;
        }
        let value = std::str::from_utf8(value).ok()?;
        match key {
            b"Uid" => once(&mut uid, ids4(value))?,
            b"Gid" => once(&mut gid, ids4(value))?,
            b"Groups" => once(&mut groups, group_list(value))?,
            b"CapEff" => once(&mut eff, cap(value))?,
            b"CapPrm" => once(&mut prm, cap(value))?,
            b"Umask" => once(&mut umask, octal(value))?,
            _ => {}
        }
    }
    let (uid, gid) = (uid?, gid?);
    Some(Creds {
        ruid: uid[0],
        rgid: gid[0],
        fsuid: uid[3],
        fsgid: gid[3],
        groups: groups?,
        cap_eff: eff?,
        cap_prm: prm?,
        umask: umask?,
    })
}

/// A decimal id: digits only, not -1.
fn id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&v| v != u32::MAX)
}

/// Exactly four tab-separated ids (real, effective, saved, fs).
fn ids4(value: &str) -> Option<[u32; 4]> {
    let value = value.strip_prefix('\t')?;
    let mut it = value.split('\t');
    let out = [it.next()?, it.next()?, it.next()?, it.next()?];
    if it.next().is_some() {
        return None;
    }
    Some([id(out[0])?, id(out[1])?, id(out[2])?, id(out[3])?])
}

/// `\t` then ids each followed by one space (none: "\t" or "\t ").
fn group_list(value: &str) -> Option<Vec<u32>> {
    let value = value.strip_prefix('\t')?;
    let out: Vec<u32> = value
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(id)
        .collect::<Option<_>>()?;
    if out.len() > NGROUPS_MAX || value.contains("  ") {
        return None;
    }
    Some(out)
}

/// 16 hexadecimal digits.
fn cap(value: &str) -> Option<u64> {
    let value = value.strip_prefix('\t')?;
    if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(value, 16).ok()
}

/// Four octal digits.
fn octal(value: &str) -> Option<u32> {
    let value = value.strip_prefix('\t')?;
    if value.len() != 4 || !value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(value, 8).ok()
}

/// The Gofer's own credentials, taken back after each request.
#[derive(Debug, Clone)]
pub struct Own {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<u32>,
    cap_prm: u64,
    cap_eff: u64,
    cap_inh: u64,
}

impl Own {
    /// The calling thread's, as they are now.
    pub fn current() -> Result<Own, Errno> {
        let (cap_eff, cap_prm, cap_inh) = sys::cap_get()?;
        let groups = nix::unistd::getgroups()
            .map_err(|e| e as i32)?
            .into_iter()
            .map(nix::unistd::Gid::as_raw)
            .collect();
        Ok(Own {
            fsuid: nix::unistd::geteuid().as_raw(),
            fsgid: nix::unistd::getegid().as_raw(),
            groups,
            cap_prm,
            cap_eff,
            cap_inh,
        })
    }

    /// Back to the Gofer's own credentials. A failure here leaves the
    /// thread with a guest's: the Gofer stops rather than serve on.
    pub fn restore(&self) {
        let back = sys::cap_set(self.cap_eff, self.cap_prm, self.cap_inh)
            .and_then(|()| sys::set_fsuid(self.fsuid))
            .and_then(|()| sys::set_fsgid(self.fsgid))
            .and_then(|()| sys::set_groups(&self.groups))
            .and_then(|()| sys::cap_set(self.cap_eff, self.cap_prm, self.cap_inh));
        if let Err(e) = back {
            panic!("the Gofer cannot take its own credentials back: errno {e}");
        }
    }
}

impl Creds {
    /// The credentials `access` (without `AT_EACCESS`) checks with: the
    /// real ids, and the permitted capabilities for a real root, none
    /// otherwise (the kernel's `access_override_creds`).
    pub fn for_access(&self) -> Creds {
        Creds {
            fsuid: self.ruid,
            fsgid: self.rgid,
            cap_eff: if self.ruid == 0 { self.cap_prm } else { 0 },
            ..self.clone()
        }
    }

    /// Whether the Gofer's own credentials are these already (a root
    /// caller with every capability the Gofer has): nothing to take on.
    pub fn same_as(&self, own: &Own) -> bool {
        self.fsuid == own.fsuid
            && self.fsgid == own.fsgid
            && self.groups == own.groups
            && self.cap_eff & own.cap_prm == own.cap_eff
    }

    /// Takes these on for the calling thread, within `own` (whose
    /// capabilities it never exceeds). On an error the caller restores.
    pub fn assume(&self, own: &Own) -> Result<(), Errno> {
        sys::set_groups(&self.groups)?;
        sys::set_fsgid(self.fsgid)?;
        sys::set_fsuid(self.fsuid)?;
        // Last: setfsuid away from 0 has just cleared the file-system
        // capabilities, and the caller's own effective set says which it
        // holds (a non-root caller may hold some; a root one may lack some).
        sys::cap_set(self.cap_eff & own.cap_prm, own.cap_prm, own.cap_inh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\n\
        Uid:\t65534\t65534\t65534\t1000\nGid:\t65534\t65534\t65534\t1001\n\
        FDSize:\t64\nGroups:\t4242 27 \nCapInh:\t0000000000000000\n\
        CapPrm:\t0000000000000000\nCapEff:\t0000000000000001\n";

    #[test]
    fn a_status_gives_fs_ids_groups_caps_and_umask() {
        let c = parse(STATUS.as_bytes()).unwrap();
        assert_eq!(
            (c.ruid, c.rgid, c.fsuid, c.fsgid),
            (65534, 65534, 1000, 1001)
        );
        assert_eq!(c.groups, vec![4242, 27]);
        assert_eq!((c.cap_eff, c.cap_prm, c.umask), (1, 0, 0o022));
        let none = STATUS.replace("Groups:\t4242 27 ", "Groups:\t");
        assert_eq!(parse(none.as_bytes()).unwrap().groups, Vec::<u32>::new());
        let root = parse(
            b"Umask:\t0077\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t \n\
              CapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n",
        )
        .unwrap();
        assert_eq!(
            (root.fsuid, root.cap_eff, root.umask),
            (0, 0x1ff_ffff_ffff, 0o077)
        );
        let access = c.for_access();
        assert_eq!(
            (access.fsuid, access.fsgid, access.cap_eff),
            (65534, 65534, 0)
        );
    }

    #[test]
    fn odd_status_text_is_refused() {
        for (from, to) in [
            ("Uid:\t65534\t65534\t65534\t1000\n", ""),
            (
                "Uid:\t65534\t65534\t65534\t1000",
                "Uid:\t65534\t65534\t1000",
            ),
            (
                "Uid:\t65534\t65534\t65534\t1000",
                "Uid:\t65534\t65534\t65534\t1000\t1",
            ),
            ("\t1000\n", "\t-1\n"),
            ("\t1000\n", "\t+1000\n"),
            ("\t1000\n", "\t4294967295\n"),
            ("\t1000\n", "\t99999999999\n"),
            ("Gid:\t65534", "Gid:\t65534 "),
            ("4242 27 ", "4242 x "),
            ("4242 27 ", "4242  27 "),
            ("CapEff:\t0000000000000001", "CapEff:\t1"),
            ("CapEff:\t0000000000000001", "CapEff:\t000000000000000g"),
            ("Umask:\t0022", "Umask:\t0029"),
            ("Umask:\t0022\n", ""),
            ("Name:\tsh\n", "Name:\tsh\nCapEff:\t0000000000000000\n"),
        ] {
            let odd = STATUS.replacen(from, to, 1);
            assert_ne!(odd, STATUS, "{from:?}");
            assert_eq!(parse(odd.as_bytes()), None, "{odd}");
        }
        let bytes = STATUS.replacen("Name:\tsh", "Name:\t\u{1}", 1);
        let mut bytes = bytes.into_bytes();
        bytes[6] = 0xff;
        assert!(
            parse(&bytes).is_some(),
            "a name that is not UTF-8 is the thread's own"
        );
        let mut groups = STATUS.as_bytes().to_vec();
        let at = STATUS.find("4242").unwrap();
        groups[at] = 0xff;
        assert_eq!(parse(&groups), None);
    }
}
