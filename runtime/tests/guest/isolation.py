"""Guest halves of the isolation tests.

  connect PORT     TCP connect to 127.0.0.1:PORT and [::1]:PORT and a UDP
                   datagram to 127.0.0.1:PORT; prints the errno names.
  listen PORT      listens on 0.0.0.0:PORT and [::]:PORT (TCP) and binds UDP
                   0.0.0.0:PORT; prints "listening PORT"; when stdin closes,
                   prints how many connections/datagrams arrived.
  hold PORT1 PORT2 a TCP connection 127.0.0.1:PORT2 -> 127.0.0.1:PORT1 between
                   two of its own sockets; prints "established"; when stdin
                   closes, checks it still carries data.
"""

import errno
import socket
import sys


def name(e):
    return errno.errorcode.get(e, str(e))


def connect(port):
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(10)
        rc = s.connect_ex((host, port))
        print(f"tcp {host} {port}: {'connected' if rc == 0 else name(rc)}")
        s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = u.sendto(b"escape?", ("127.0.0.1", port))
    print(f"udp sendto 127.0.0.1 {port}: {n}")


def listen(port):
    t4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t4.bind(("0.0.0.0", port))
    t4.listen(8)
    t6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    t6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    t6.bind(("::", port))
    t6.listen(8)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", port))
    print(f"listening {port}", flush=True)
    sys.stdin.read()
    count = 0
    for s in (t4, t6):
        s.setblocking(False)
        try:
            while True:
                s.accept()
                count += 1
        except BlockingIOError:
            pass
    u.setblocking(False)
    datagrams = 0
    try:
        while True:
            u.recv(100)
            datagrams += 1
    except BlockingIOError:
        pass
    print(f"connections {count} datagrams {datagrams}")


def hold(port1, port2):
    ls = socket.socket()
    ls.bind(("127.0.0.1", port1))
    ls.listen(1)
    c = socket.socket()
    c.bind(("127.0.0.1", port2))
    c.connect(("127.0.0.1", port1))
    a, peer = ls.accept()
    if peer != ("127.0.0.1", port2):
        print(f"FAIL: accepted peer {peer}")
        return 1
    c.sendall(b"ping")
    if a.recv(4) != b"ping":
        print("FAIL: no data")
        return 1
    print(f"established 127.0.0.1:{port2} -> 127.0.0.1:{port1}", flush=True)
    sys.stdin.read()
    a.sendall(b"pong")
    if c.recv(4) != b"pong":
        print("FAIL: connection broke")
        return 1
    print("still established")
    return 0


def main():
    cmd = sys.argv[1]
    if cmd == "connect":
        connect(int(sys.argv[2]))
    elif cmd == "listen":
        listen(int(sys.argv[2]))
    elif cmd == "hold":
        return hold(int(sys.argv[2]), int(sys.argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
