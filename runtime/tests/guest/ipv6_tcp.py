"""TCP over IPv6 loopback: echo of 1 MiB over ::1 with addresses checked; a
dual-stack listener on :: accepting a v4 client (seen as ::ffff:127.0.0.1);
an IPV6_V6ONLY listener refusing v4."""

import errno
import hashlib
import os
import socket
import sys
import threading


def fail(msg):
    raise SystemExit(f"FAIL: {msg}")


def echo_once(listener, out):
    conn, addr = listener.accept()
    out.append(addr)
    with conn:
        while True:
            d = conn.recv(65536)
            if not d:
                return
            conn.sendall(d)


def roundtrip(family, connect_addr, listener, payload):
    seen = []
    t = threading.Thread(target=echo_once, args=(listener, seen))
    t.start()
    c = socket.socket(family, socket.SOCK_STREAM)
    c.settimeout(15)
    c.connect(connect_addr)
    local = c.getsockname()
    peer = c.getpeername()
    sender = threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(socket.SHUT_WR)))
    sender.start()
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        h.update(d)
        n += len(d)
    sender.join()
    t.join()
    if n != len(payload) or h.digest() != hashlib.sha256(payload).digest():
        fail(f"echo over {connect_addr}: {n} bytes back of {len(payload)}, digest ok={h.digest() == hashlib.sha256(payload).digest()}")
    c.close()
    return seen[0], local, peer


def main():
    payload = os.urandom(1 << 20)
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.bind(("::1", 0))
    ls.listen(4)
    port = ls.getsockname()[1]
    seen, local, peer = roundtrip(socket.AF_INET6, ("::1", port), ls, payload)
    if peer[:2] != ("::1", port) or local[0] != "::1" or seen[:2] != local[:2]:
        fail(f"addresses: server saw {seen}, client local {local} peer {peer}")
    print(f"::1 echo: {len(payload)} bytes, addresses consistent")
    ls.close()

    dual = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    dual.bind(("::", 0))
    dual.listen(4)
    port = dual.getsockname()[1]
    seen, local, peer = roundtrip(socket.AF_INET, ("127.0.0.1", port), dual, b"mapped" * 1000)
    if seen[0] != "::ffff:127.0.0.1" or seen[1] != local[1]:
        fail(f"dual-stack listener saw {seen}, expected ('::ffff:127.0.0.1', {local[1]}, ...)")
    print("dual-stack: v4 client seen as ::ffff:127.0.0.1")
    dual.close()

    only = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    only.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    only.bind(("::", 0))
    only.listen(4)
    port = only.getsockname()[1]
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    rc = c.connect_ex(("127.0.0.1", port))
    if rc != errno.ECONNREFUSED:
        fail(f"v4 connect to a V6ONLY listener: {errno.errorcode.get(rc, rc)}, expected ECONNREFUSED")
    print("v6only: v4 connect refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
