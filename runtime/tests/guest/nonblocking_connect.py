"""Non-blocking connect completed through select, poll and epoll: success
(SO_ERROR 0, data flows) and refusal (SO_ERROR ECONNREFUSED, reported once)
to a port nobody listens on. One line per case."""

import errno
import select
import socket
import sys


def fail(msg):
    raise SystemExit(f"FAIL: {msg}")


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_writable(how, sock):
    """Returns a description of readiness once the socket is writable/errored."""
    if how == "select":
        _, w, x = select.select([], [sock], [sock], 10)
        if not w and not x:
            fail("select timed out")
        return "writable" if w else "exceptional"
    if how == "poll":
        p = select.poll()
        p.register(sock, select.POLLOUT)
        ev = p.poll(10000)
        if not ev:
            fail("poll timed out")
        return ev[0][1]
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLOUT)
    ev = ep.poll(10)
    ep.close()
    if not ev:
        fail("epoll timed out")
    return ev[0][1]


def start_connect(port):
    c = socket.socket()
    c.setblocking(False)
    rc = c.connect_ex(("127.0.0.1", port))
    if rc not in (0, errno.EINPROGRESS):
        fail(f"connect_ex returned {errno.errorcode.get(rc, rc)}, expected EINPROGRESS")
    return c


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    for how in ("select", "poll", "epoll"):
        c = start_connect(port)
        ready = wait_writable(how, c)
        if how == "poll" and not ready & select.POLLOUT:
            fail(f"poll events {ready:#x} lack POLLOUT")
        if how == "epoll" and not ready & select.EPOLLOUT:
            fail(f"epoll events {ready:#x} lack EPOLLOUT")
        err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            fail(f"{how}: SO_ERROR {errno.errorcode.get(err, err)} after a successful connect")
        conn, addr = listener.accept()
        if addr != c.getsockname():
            fail(f"{how}: accept address {addr}, client says {c.getsockname()}")
        c.send(b"ping")
        conn.settimeout(5)
        if conn.recv(16) != b"ping":
            fail(f"{how}: data did not arrive")
        conn.send(b"pong")
        select.select([c], [], [], 5)
        if c.recv(16) != b"pong":
            fail(f"{how}: reply did not arrive")
        print(f"{how} success: SO_ERROR 0, data both ways")
        c.close()
        conn.close()

    for how in ("select", "poll", "epoll"):
        c = start_connect(closed_port())
        ready = wait_writable(how, c)
        err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != errno.ECONNREFUSED:
            fail(f"{how} refused: SO_ERROR {errno.errorcode.get(err, err)}, expected ECONNREFUSED")
        again = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if again != 0:
            fail(f"{how} refused: second SO_ERROR {errno.errorcode.get(again, again)}, expected 0")
        if how == "epoll" and not ready & (select.EPOLLERR | select.EPOLLOUT):
            fail(f"epoll events {ready:#x} lack EPOLLERR and EPOLLOUT")
        print(f"{how} refused: SO_ERROR ECONNREFUSED, then 0")
        c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
