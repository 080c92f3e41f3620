"""The history that lost a connection (issue 19), several times over.

A connection reset with SO_LINGER {1, 0}; one UDP datagram exchanged; then
a blocking accept() that SIGALRM interrupts after 0.2 s (Python retries it,
PEP 475) while a client connects 0.3 s later. The retried accept must
return that client: the interrupted call, still remembered by the Sentry,
must not take the connection and lose it.

Prints "round N accepted" for each round and "all rounds accepted".
"""

import signal
import socket
import struct
import sys
import threading
import time

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


signal.signal(signal.SIGALRM, lambda *a: None)
for rnd in range(ROUNDS):
    srv = listener()
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    time.sleep(0.2)
    u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u1.bind(("127.0.0.1", 0))
    u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u2.bind(("127.0.0.1", 0))
    u2.sendto(b"hello", u1.getsockname())
    assert u1.recvfrom(100)[0] == b"hello"
    srv2 = listener()
    port = srv2.getsockname()

    def client():
        time.sleep(0.5)
        with socket.create_connection(port) as k:
            k.sendall(b"round %d" % rnd)

    t = threading.Thread(target=client)
    t.start()
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    conn, _ = srv2.accept()
    conn.settimeout(5)
    data = conn.recv(100)
    t.join()
    if data != b"round %d" % rnd:
        sys.exit(f"FAIL: round {rnd} read {data!r}")
    print(f"round {rnd} accepted", flush=True)
    for s in (srv, a, u1, u2, srv2, conn):
        s.close()
print("all rounds accepted")
