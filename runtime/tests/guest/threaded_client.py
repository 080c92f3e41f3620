"""8 client threads x 50 requests against one threaded server. Threads 0-3
open a new connection per request (connect/accept churn); threads 4-7 keep
one connection each. Every reply is checked."""

import socket
import sys
import threading

THREADS = 8
REQUESTS = 50


def serve_conn(conn):
    with conn:
        f = conn.makefile("rb")
        for line in f:
            conn.sendall(b"re: " + line)


def serve(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()


def recv_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"EOF after {data!r}")
        data += chunk
    return data


def worker(port, t, errors, counts):
    try:
        persistent = None
        if t >= THREADS // 2:
            persistent = socket.create_connection(("127.0.0.1", port), timeout=20)
        for r in range(REQUESTS):
            msg = f"thread {t} request {r}\n".encode()
            s = persistent or socket.create_connection(("127.0.0.1", port), timeout=20)
            s.sendall(msg)
            got = recv_line(s)
            if got != b"re: " + msg:
                errors.append(f"thread {t} request {r}: got {got!r}")
                return
            if persistent is None:
                s.close()
            counts[t] += 1
        if persistent:
            persistent.close()
    except Exception as e:  # reported below, with the thread's identity
        errors.append(f"thread {t}: {type(e).__name__}: {e}")


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    errors, counts = [], [0] * THREADS
    threads = [
        threading.Thread(target=worker, args=(port, t, errors, counts)) for t in range(THREADS)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for e in errors:
        print(f"FAIL: {e}")
    total = sum(counts)
    print(f"threaded client: {total} of {THREADS * REQUESTS} requests answered")
    return 0 if not errors and total == THREADS * REQUESTS else 1


if __name__ == "__main__":
    sys.exit(main())
