"""The hop limit and traffic class of received datagrams as control
messages (IP_RECVTTL, IP_RECVTOS, IPV6_RECVHOPLIMIT, IPV6_RECVTCLASS), for
a sender that set IP_TTL and IP_TOS (IPV6_UNICAST_HOPS and IPV6_TCLASS),
with room for every message and then for the first only (MSG_CTRUNC),
then one datagram whose own hop limit and class come as sendmsg control
messages. Prints each datagram's payload, control messages and flags,
then "done"."""

import socket

IP_RECVTTL = 12
CASES = [
    (socket.AF_INET, "127.0.0.1",
     [(socket.IPPROTO_IP, IP_RECVTTL), (socket.IPPROTO_IP, socket.IP_RECVTOS)],
     [(socket.IPPROTO_IP, socket.IP_TTL, 7), (socket.IPPROTO_IP, socket.IP_TOS, 0x10)]),
    (socket.AF_INET6, "::1",
     [(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT), (socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS)],
     [(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 9), (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0x20)]),
]
for family, host, wanted, marks in CASES:
    r = socket.socket(family, socket.SOCK_DGRAM)
    r.bind((host, 0))
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.sendto(b"plain", r.getsockname()[:2])
    print(r.recvmsg(16, 256)[:3])
    for level, name in wanted:
        r.setsockopt(level, name, 1)
    for level, name, value in marks:
        s.setsockopt(level, name, value)
    s.sendto(b"marked", r.getsockname()[:2])
    print(r.recvmsg(16, 256)[:3])
    s.sendto(b"short room", r.getsockname()[:2])
    print(r.recvmsg(16, socket.CMSG_LEN(4))[:3])
    if family == socket.AF_INET:
        own = [(socket.IPPROTO_IP, socket.IP_TTL, (8).to_bytes(4, "little")),
               (socket.IPPROTO_IP, socket.IP_TOS, bytes([0x28]))]
    else:
        own = [(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, (10).to_bytes(4, "little")),
               (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, (0x21).to_bytes(4, "little"))]
    s.sendmsg([b"its own"], own, 0, r.getsockname()[:2])
    print(r.recvmsg(16, 256)[:3])
print("done")
