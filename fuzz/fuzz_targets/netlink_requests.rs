//! NETLINK_ROUTE requests as a guest sends them (`ip`, `ss`, glibc's
//! getifaddrs): any bytes, answered from the NICs' state without a panic,
//! and every answer a well-formed sequence of netlink messages.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let nics = smolvisor_fuzz::nics();
    for datagram in sentry::netlink::respond(data, nics, 4242) {
        // Each datagram holds whole messages: nlmsg_len covers at least
        // the header and never runs past the datagram.
        let mut rest = &datagram[..];
        while !rest.is_empty() {
            assert!(rest.len() >= 16, "a truncated netlink header");
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            assert!(
                (16..=rest.len()).contains(&len),
                "nlmsg_len {len} with {} bytes left",
                rest.len()
            );
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
    }
});
