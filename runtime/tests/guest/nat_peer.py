"""Both ends of the nat tests' conversations: run in the guest, in the peer
namespace, or in the namespace smolvisor runs in. One subcommand each:

    udp-echo ADDR PORT               echo every datagram; "from IP:PORT" per peer
    udp-client HOST PORT SIZE...     one datagram per size, each echoed intact
    tcp-sink ADDR PORT               one connection read to EOF
    tcp-source ADDR PORT NBYTES      one connection sent NBYTES, then closed
    tcp-send HOST PORT NBYTES        connect, send NBYTES, half-close, wait EOF
    tcp-recv HOST PORT               connect, read to EOF
    connect HOST PORT                a blocking connect; prints its outcome

Servers print "ready" once they listen. Byte streams are random and
reported as "sent|received N SHA256" so the two ends can be compared."""

import errno
import hashlib
import os
import socket
import sys
import time

CHUNK = 1 << 16


def fail(msg):
    raise SystemExit(f"FAIL: {msg}")


def udp_echo(addr, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, int(port)))
    print("ready", flush=True)
    seen = set()
    while True:
        data, peer = sock.recvfrom(65535)
        if peer not in seen:
            seen.add(peer)
            print(f"from {peer[0]}:{peer[1]}", flush=True)
        sock.sendto(data, peer)


def udp_client(host, port, *sizes):
    """Each datagram carries its sequence number, so a late echo of a resent
    one is recognised. A lost one is resent for up to 2 s, and each resend
    is reported ("resent SIZE"): nothing should be lost on these paths, but
    a test that sees a loss can say so rather than time out."""
    dest = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.2)
    for seq, size in enumerate(int(s) for s in sizes):
        body = seq.to_bytes(4, "big") + os.urandom(max(size, 4) - 4)
        deadline = time.monotonic() + 2
        while True:
            sock.sendto(body, dest)
            try:
                while True:
                    data, peer = sock.recvfrom(65535)
                    if data[:4] == body[:4]:
                        break
            except socket.timeout:
                if time.monotonic() > deadline:
                    fail(f"no echo of the {size}-byte datagram")
                print(f"resent {size}", flush=True)
                continue
            break
        if peer != dest:
            fail(f"the echo came from {peer}, not {dest}")
        if data != body:
            fail(f"{size}-byte datagram came back as {len(data)} different bytes")
        print(f"echoed {size}", flush=True)


def listen(addr, port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(1)
    print("ready", flush=True)
    conn, peer = srv.accept()
    print(f"accepted from {peer[0]}", flush=True)
    return conn


def receive_all(conn):
    digest, total = hashlib.sha256(), 0
    while True:
        data = conn.recv(CHUNK)
        if not data:
            break
        digest.update(data)
        total += len(data)
    print(f"received {total} {digest.hexdigest()}", flush=True)


def send_random(conn, nbytes):
    digest, left = hashlib.sha256(), int(nbytes)
    block = os.urandom(1 << 20)
    while left:
        # A fresh prefix per megabyte keeps equal blocks from hiding reordering.
        chunk = os.urandom(16) + block[16 : min(left, len(block))]
        chunk = chunk[:left]
        conn.sendall(chunk)
        digest.update(chunk)
        left -= len(chunk)
    print(f"sent {nbytes} {digest.hexdigest()}", flush=True)


def tcp_sink(addr, port):
    conn = listen(addr, port)
    receive_all(conn)
    conn.close()


def tcp_source(addr, port, nbytes):
    conn = listen(addr, port)
    send_random(conn, nbytes)
    conn.close()


def tcp_send(host, port, nbytes):
    conn = socket.create_connection((host, int(port)), timeout=20)
    send_random(conn, nbytes)
    conn.shutdown(socket.SHUT_WR)
    if conn.recv(1) != b"":
        fail("the sink sent data")
    conn.close()


def tcp_recv(host, port):
    conn = socket.create_connection((host, int(port)), timeout=20)
    receive_all(conn)
    conn.close()


def connect(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect((host, int(port)))
        print("connected", flush=True)
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e)), type(e).__name__, flush=True)


COMMANDS = {
    "udp-echo": udp_echo,
    "udp-client": udp_client,
    "tcp-sink": tcp_sink,
    "tcp-source": tcp_source,
    "tcp-send": tcp_send,
    "tcp-recv": tcp_recv,
    "connect": connect,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
