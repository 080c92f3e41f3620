"""IPV6_PKTINFO and IP_PKTINFO control messages on a dual-stack UDP socket.

Prints each received datagram's payload and control messages (level, type,
data in hex), without the sender's port, so native and sandboxed runs can
be compared line by line.
"""

import socket

IP_PKTINFO = 8  # not exported by Python's socket module

r = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
r.bind(("::", 0))
port = r.getsockname()[1]
r.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
r.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s6.sendto(b"six", ("::1", port))
s4.sendto(b"four", ("127.0.0.1", port))
for _ in range(2):
    data, cmsgs, flags, addr = r.recvmsg(16, 256)
    parts = [f"{level}/{kind}/{blob.hex()}" for level, kind, blob in cmsgs]
    print(data.decode(), flags, addr[0], " ".join(parts))
# Too little room for the control messages: MSG_CTRUNC, as Linux reports it.
s6.sendto(b"tight", ("::1", port))
data, cmsgs, flags, addr = r.recvmsg(16, 8)
print(data.decode(), "ctrunc" if flags & socket.MSG_CTRUNC else "no ctrunc", len(cmsgs))
