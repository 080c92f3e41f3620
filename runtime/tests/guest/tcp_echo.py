"""TCP echo server and client in one process (threads) over 127.0.0.1.

Small messages one at a time, then a 4 MiB random payload streamed while the
echo streams back; the client compares SHA-256 digests. Prints one line per
phase; exits non-zero on any mismatch.
"""

import hashlib
import os
import socket
import sys
import threading

BULK = 4 << 20


def serve(listener, conns):
    for _ in range(conns):
        conn, _ = listener.accept()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise SystemExit(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def main():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    server = threading.Thread(target=serve, args=(listener, 2), daemon=True)
    server.start()

    messages = [b"hello", b"x" * 1000, bytes(range(256)) * 40]
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        peer = c.getpeername()
        if peer != ("127.0.0.1", port):
            raise SystemExit(f"getpeername {peer}, expected ('127.0.0.1', {port})")
        for msg in messages:
            c.sendall(msg)
            got = recv_exact(c, len(msg))
            if got != msg:
                raise SystemExit(f"echo of {len(msg)} bytes differs")
    print(f"small: {len(messages)} messages echoed")

    payload = os.urandom(BULK)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)

    def send_all():
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send_all)
    sender.start()
    received = hashlib.sha256()
    total = 0
    while True:
        chunk = c.recv(1 << 16)
        if not chunk:
            break
        received.update(chunk)
        total += len(chunk)
    sender.join()
    c.close()
    if total != BULK:
        raise SystemExit(f"bulk: received {total} bytes, sent {BULK}")
    if received.digest() != hashlib.sha256(payload).digest():
        raise SystemExit("bulk: digest of the echo differs from the payload's")
    print(f"bulk: {BULK} bytes echoed, digests equal")
    server.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
