//! The Sentry's decoders of what a guest passes in memory: socket
//! addresses, `msghdr`, iovec arrays, timevals and the interface ioctls'
//! `ifreq`. Bytes from guest memory are untrusted: nothing may panic.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sentry::abi;

#[derive(Debug, Arbitrary)]
enum Input {
    Addr(Vec<u8>),
    MsgHdr(Vec<u8>),
    Iovecs(Vec<u8>),
    Timeval(Vec<u8>),
    Ifreq { cmd: u8, req: Vec<u8> },
}

/// The interface ioctls (SIOCGIF*, SIOCSIF*), picked by the fuzzer's byte,
/// or whatever `0x89XX` the byte makes beyond them.
const IOCTLS: &[u32] = &[
    0x8910, 0x8912, 0x8913, 0x8914, 0x8915, 0x8916, 0x8917, 0x8918, 0x8919, 0x891b, 0x891c,
    0x891d, 0x8921, 0x8922, 0x8923, 0x8927, 0x8933, 0x8938, 0x8942,
];

fuzz_target!(|input: Input| {
    match input {
        Input::Addr(b) => {
            let _ = abi::decode_addr(&b);
        }
        Input::MsgHdr(b) => {
            let mut raw = [0u8; abi::MSGHDR_LEN];
            let n = b.len().min(raw.len());
            raw[..n].copy_from_slice(&b[..n]);
            let _ = abi::MsgHdr::decode(&raw);
        }
        Input::Iovecs(b) => {
            let _ = abi::decode_iovecs(&b);
        }
        Input::Timeval(b) => {
            let _ = abi::decode_timeval(&b);
        }
        Input::Ifreq { cmd, req } => {
            let nics = smolvisor_fuzz::nics();
            let mut raw = [0u8; sentry::ifreq::IFREQ_SIZE];
            let n = req.len().min(raw.len());
            raw[..n].copy_from_slice(&req[..n]);
            let cmd = IOCTLS
                .get(usize::from(cmd))
                .copied()
                .unwrap_or(0x8900 | u32::from(cmd));
            let _ = sentry::ifreq::ifreq_ioctl(cmd, &mut raw, nics);
        }
    }
});
