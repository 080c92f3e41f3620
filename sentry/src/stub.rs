//! Temporary stand-ins until netlink.rs and ifreq.rs land.
#![allow(missing_docs, dead_code)]
use netstack::NicInfo;
pub const SIOCGIFCONF: u32 = 0x8912;
pub fn respond(_req: &[u8], _nics: &[NicInfo], _port: u32) -> Vec<Vec<u8>> {
    Vec::new()
}
pub fn sockaddr_nl(port: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = 16;
    b[4..8].copy_from_slice(&port.to_ne_bytes());
    b
}
pub fn ifconf_len(_n: &[NicInfo]) -> usize {
    0
}
pub fn ifconf(_n: &[NicInfo], _l: usize) -> (Vec<u8>, usize) {
    (Vec::new(), 0)
}
pub fn ifreq_ioctl(_c: u32, _r: &mut [u8; 40], _n: &[NicInfo]) -> Result<(), nix::errno::Errno> {
    Err(nix::errno::Errno::ENOTTY)
}
