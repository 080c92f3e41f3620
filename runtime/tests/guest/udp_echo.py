"""UDP echo over 127.0.0.1 and ::1: sendto/recvfrom with addresses, then a
connected client using send/recv, datagram boundaries, and the connected
socket's filtering of other senders. One line per phase."""

import select
import socket
import sys
import threading
import time


def fail(msg):
    raise SystemExit(f"FAIL: {msg}")


def echo_server(family, host):
    srv = socket.socket(family, socket.SOCK_DGRAM)
    srv.bind((host, 0))
    seen = []

    def loop():
        while True:
            data, addr = srv.recvfrom(65535)
            if data == b"quit":
                return
            seen.append(addr)
            srv.sendto(data, addr)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return srv, t, seen


def run(family, host):
    name = "v4" if family == socket.AF_INET else "v6"
    srv, thread, seen = echo_server(family, host)
    srv_addr = srv.getsockname()

    # Unconnected: addresses on every call.
    c = socket.socket(family, socket.SOCK_DGRAM)
    c.settimeout(10)
    c.bind((host, 0))
    mine = c.getsockname()
    sizes = [1, 100, 1472, 9000, 60000]
    for n in sizes:
        msg = bytes((i * 7 + n) % 256 for i in range(n))
        sent = c.sendto(msg, srv_addr)
        if sent != n:
            fail(f"{name} sendto returned {sent}, expected {n}")
        data, addr = c.recvfrom(65535)
        if data != msg:
            fail(f"{name} echo of {n} bytes differs (got {len(data)} bytes)")
        if addr[:2] != srv_addr[:2]:
            fail(f"{name} recvfrom address {addr}, expected {srv_addr}")
    if any(a[:2] != mine[:2] for a in seen):
        fail(f"{name} server saw sources {set(seen)}, expected {mine}")
    print(f"{name} sendto/recvfrom: {len(sizes)} datagrams echoed, addresses correct")

    # Boundaries: three datagrams sent before any is read arrive as three.
    for msg in (b"one", b"two-two", b"three-three-three"):
        c.sendto(msg, srv_addr)
    got = [c.recvfrom(65535)[0] for _ in range(3)]
    if got != [b"one", b"two-two", b"three-three-three"]:
        fail(f"{name} datagram boundaries: got {got}")
    print(f"{name} boundaries: 3 datagrams kept apart")
    c.close()

    # Connected: plain send/recv, getpeername, and only the peer's datagrams.
    cc = socket.socket(family, socket.SOCK_DGRAM)
    cc.settimeout(10)
    cc.connect(srv_addr)
    if cc.getpeername()[:2] != srv_addr[:2]:
        fail(f"{name} getpeername {cc.getpeername()}, expected {srv_addr}")
    stranger = socket.socket(family, socket.SOCK_DGRAM)
    stranger.sendto(b"from a stranger", cc.getsockname())
    for i in range(5):
        msg = f"connected {i}".encode()
        if cc.send(msg) != len(msg):
            fail(f"{name} send short")
        data = cc.recv(65535)
        if data != msg:
            fail(f"{name} connected recv {data!r}, expected {msg!r}")
    cc.settimeout(0.3)
    try:
        extra = cc.recv(65535)
        fail(f"{name} connected socket received {extra!r} from a non-peer")
    except socket.timeout:
        pass
    print(f"{name} connected: 5 echoed, non-peer datagram filtered")
    cc.close()
    stranger.close()

    # A datagram taken by recvfrom/recvmsg is gone: nothing is left to
    # poll or to read natively right after (each is read exactly once).
    rx = socket.socket(family, socket.SOCK_DGRAM)
    rx.bind((host, 0))
    tx = socket.socket(family, socket.SOCK_DGRAM)
    for i in range(20):
        tx.sendto(b"once %d" % i, rx.getsockname())
        time.sleep(0.002)
        if i % 2:
            got = rx.recvfrom(64)[0]
        else:
            got = rx.recvmsg(64)[0]
        if got != b"once %d" % i:
            fail(f"{name} once: read {got!r} for datagram {i}")
        p = select.poll()
        p.register(rx, select.POLLIN)
        if p.poll(0):
            fail(f"{name} once: datagram {i} still readable after it was received")
        try:
            extra = rx.recv(64, socket.MSG_DONTWAIT)
            fail(f"{name} once: datagram {i} read again: {extra!r}")
        except BlockingIOError:
            pass
    print(f"{name} once: 20 datagrams each received once")
    rx.close()
    tx.close()

    q = socket.socket(family, socket.SOCK_DGRAM)
    q.sendto(b"quit", srv_addr)
    thread.join(5)
    srv.close()


def main():
    run(socket.AF_INET, "127.0.0.1")
    run(socket.AF_INET6, "::1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
