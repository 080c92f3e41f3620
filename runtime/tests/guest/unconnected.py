"""TCP sockets before connect or listen, for a differential test (the same
lines natively and in the sandbox, but where the sandbox knowingly answers
another errno, which is printed as "ERROR"). One line per observation:

  fresh: ...    recv, blocking, on a new socket fails at once; send fails;
                getpeername says ENOTCONN; poll says POLLOUT|POLLHUP
  ssl: ...      ssl.wrap_socket of an unconnected socket (it probes recv)
  epoll: ...    registered with epoll before a non-blocking connect, then
                connected: the same registration reports it writable, and a
                duplicate made before connect carries the data
  rebind: ...   bind, close, bind the same port at once, 300 times over
  listen: ...   options set before listen hold; accept takes a connection
  many: ...     5,000 sockets made and closed unconnected, each bound; their
                ports are all free again
"""

import errno
import select
import signal
import socket
import ssl
import struct


def err(f):
    """The errno f fails with: ENOTCONN, or ERROR for the answers the
    sandbox gives instead of Linux's (EINVAL for recv, ENOTCONN for send)."""
    try:
        return "ok " + repr(f())
    except OSError as e:
        return errno.errorcode[e.errno]


def fresh():
    signal.alarm(5)
    s = socket.socket()
    recv = err(lambda: s.recv(1))
    send = err(lambda: s.send(b"x", socket.MSG_NOSIGNAL))
    peer = err(s.getpeername)
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLOUT)
    mask = p.poll(0)[0][1]
    signal.alarm(0)
    recv = "failed" if recv in ("ENOTCONN", "EINVAL") else recv
    send = "failed" if send in ("EPIPE", "ENOTCONN") else send
    print("fresh:", recv, send, peer, hex(mask))
    s.close()


def wrap():
    signal.alarm(5)
    ctx = ssl.create_default_context()
    w = ctx.wrap_socket(socket.socket(), server_hostname="example.invalid")
    signal.alarm(0)
    print("ssl:", type(w).__name__, err(w.getpeername))
    w.close()


def epoll_before_connect():
    lsn = socket.create_server(("127.0.0.1", 0))
    c = socket.socket()
    c.setblocking(False)
    ep = select.epoll()
    ep.register(c.fileno(), select.EPOLLOUT)
    twin = c.dup()
    rc = c.connect_ex(lsn.getsockname())
    events = ep.poll(5)
    got = [hex(m) for _, m in events]
    s, _ = lsn.accept()
    twin.setblocking(True)
    twin.sendall(b"through the twin")
    data = b""
    while len(data) < 16:
        data += s.recv(64)
    print("epoll:", errno.errorcode.get(rc, rc), got, data)
    for x in (c, twin, s, lsn):
        x.close()


def rebind():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    bound = 0
    for _ in range(300):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            bound += 1
        except OSError as e:
            print("rebind failed:", errno.errorcode[e.errno])
            break
        finally:
            s.close()
    print("rebind:", bound)


def listen():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 7, 0))
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    c = socket.create_connection(s.getsockname())
    a, _ = s.accept()
    c.sendall(b"hi")
    reuse = s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    tv = struct.unpack("ll", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    print("listen:", bool(reuse), tv, a.recv(2))
    for x in (c, a, s):
        x.close()


def many():
    ports = []
    for _ in range(5000):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    free = 0
    for port in sorted(set(ports))[:200]:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            free += 1
        except OSError:
            pass
        s.close()
    print("many:", free == min(200, len(set(ports))))


fresh()
wrap()
epoll_before_connect()
rebind()
listen()
many()
print("done")
