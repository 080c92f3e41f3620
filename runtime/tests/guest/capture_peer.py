"""A known conversation for the capture tests, so that what a capture holds
can be compared with what was said. One subcommand each:

    server ADDR PORT          one connection read to EOF, answered with REPLY
    client HOST PORT NBYTES   a datagram over lo, then NBYTES of the pattern
                              to the server, half-close, read the reply

The pattern's byte i is (i * 31 + i // 1024) mod 256: not periodic within a
segment, so a reordered or repeated segment shows. The server prints
"received N SHA256"; the client prints "lo echoed", "sent N SHA256" and
"reply ok" when the reply is REPLY (formatted with N)."""

import hashlib
import socket
import sys

REPLY = "thanks for {} bytes of the pattern\n"


def fail(msg):
    raise SystemExit(f"FAIL: {msg}")


def pattern(nbytes):
    return bytes((i * 31 + i // 1024) % 256 for i in range(nbytes))


def server(addr, port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept()
    digest, total = hashlib.sha256(), 0
    while True:
        data = conn.recv(1 << 16)
        if not data:
            break
        digest.update(data)
        total += len(data)
    print(f"received {total} {digest.hexdigest()}", flush=True)
    conn.sendall(REPLY.format(total).encode())
    conn.close()


def client(host, port, nbytes):
    # Some traffic on lo, so the capture has frames of both interfaces.
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    udp.sendto(b"over lo", udp.getsockname())
    if udp.recv(100) != b"over lo":
        fail("the datagram over lo came back different")
    print("lo echoed", flush=True)

    body = pattern(int(nbytes))
    conn = socket.create_connection((host, int(port)), timeout=20)
    conn.sendall(body)
    conn.shutdown(socket.SHUT_WR)
    print(f"sent {len(body)} {hashlib.sha256(body).hexdigest()}", flush=True)
    reply = b""
    while True:
        data = conn.recv(1 << 16)
        if not data:
            break
        reply += data
    conn.close()
    if reply != REPLY.format(len(body)).encode():
        fail(f"unexpected reply {reply!r}")
    print("reply ok", flush=True)


COMMANDS = {"server": server, "client": client}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
