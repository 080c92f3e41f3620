"""A live sandbox under malformed frames. Two subcommands:

    echo PORT
        (in the guest) a TCP server that echoes every connection back;
        prints "ready" once it listens, and ends when its stdin does.
    peer HOST PORT IFACE DSTMAC COUNT SEED [KIND]
        (in the peer's namespace) connects to the guest's echo server, then
        prints "connected" after a first round, waits a second, then sends
        COUNT frames of KIND to DSTMAC out of IFACE from a thread of its
        own while the main thread keeps echoing 256 KiB rounds of random
        bytes through the one connection and checks each comes back intact.
        After the flood, one more round. Prints "flood N frames", "rounds R
        intact" and "done"; any difference or stall fails.

KIND is "malformed" (the default, below), "syn" (well-formed SYNs to the
echo server's port from random addresses and ports, on the guest's subnet
and beyond it: a SYN flood) or "udp" (well-formed datagrams, half to the
UDP socket the echo server binds on PORT+1 and never reads, half to random
closed ports).

The frames are Ethernet frames built from what a stack must parse (ARP,
IPv4 with options and fragments, IPv6 with extension headers, TCP with
options, UDP, ICMP), each with some fields made wrong: lengths that lie,
offsets past the end, truncation, random flags and checksums. A pool of
distinct frames is made from SEED and sent round-robin, so a run is
reproducible."""

import hashlib
import os
import random
import socket
import struct
import sys
import threading
import time

ROUND = 256 << 10


def echo(port):
    lsn = socket.create_server(("0.0.0.0", int(port)))
    # A socket that is sent to and never read.
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("0.0.0.0", int(port) + 1))
    print("ready", flush=True)

    def until_stdin_ends():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=until_stdin_ends, daemon=True).start()

    def serve(c):
        with c:
            while True:
                data = c.recv(1 << 16)
                if not data:
                    return
                c.sendall(data)

    while True:
        c, _ = lsn.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def mac_bytes(text):
    return bytes(int(x, 16) for x in text.split(":"))


def frames(rng, dst, src, guest_ip, count):
    """`count` malformed frames for a guest at `guest_ip` (bytes)."""
    out = []
    peer_ip = bytes([guest_ip[0], guest_ip[1], guest_ip[2], rng.randrange(1, 255)])
    for _ in range(count):
        kind = rng.randrange(8)
        eth_dst = dst if rng.random() < 0.9 else b"\xff" * 6
        if kind == 0:  # ARP with lying lengths and random operations
            body = struct.pack(
                "!HHBBH", 1, 0x0800, rng.choice([6, 0, 255]), rng.choice([4, 0, 16]),
                rng.randrange(0, 5),
            ) + src + peer_ip + b"\0" * 6 + guest_ip + os.urandom(rng.randrange(0, 8))
            ethertype = 0x0806
        elif kind in (1, 2, 3, 4):  # IPv4: TCP, UDP, ICMP, random protocol
            proto = [6, 17, 1, rng.randrange(256)][kind - 1]
            if proto == 6:
                flags = rng.randrange(256)
                doff = rng.choice([5, 6, 15, 0, 4])
                opts = os.urandom(max(0, doff * 4 - 20)) if rng.random() < 0.7 else b""
                l4 = struct.pack(
                    "!HHIIBBHHH", rng.randrange(65536), rng.choice([9000, 22, 80, rng.randrange(65536)]),
                    rng.getrandbits(32), rng.getrandbits(32), doff << 4, flags,
                    rng.randrange(65536), rng.randrange(65536), rng.randrange(65536),
                ) + opts + os.urandom(rng.randrange(0, 64))
            elif proto == 17:
                l4 = struct.pack(
                    "!HHHH", rng.randrange(65536), rng.choice([53, 9000, rng.randrange(65536)]),
                    rng.choice([0, 8, 7, 65535, rng.randrange(65536)]), rng.randrange(65536),
                ) + os.urandom(rng.randrange(0, 64))
            else:
                l4 = bytes([rng.randrange(256), rng.randrange(256)]) + os.urandom(rng.randrange(0, 40))
            ihl = rng.choice([5, 5, 6, 15, 4, 0])
            opts = os.urandom(max(0, ihl * 4 - 20))
            total = rng.choice([20 + len(opts) + len(l4), rng.randrange(65536), 0])
            frag = rng.choice([0, 0x2000, rng.randrange(0x4000), 0x1fff, 0x2000 | rng.randrange(0x2000)])
            ip = struct.pack(
                "!BBHHHBBH4s4s", (4 << 4) | ihl, rng.randrange(256), total, rng.randrange(65536),
                frag, rng.randrange(256), proto, rng.randrange(65536), peer_ip, guest_ip,
            )
            body = ip + opts + l4
            if rng.random() < 0.2:
                body = body[: rng.randrange(len(body) + 1)]
            ethertype = 0x0800
        elif kind in (5, 6):  # IPv6 with extension headers and fragments
            nh = rng.choice([0, 43, 44, 60, 58, 6, 17, 59, rng.randrange(256)])
            payload = b""
            chain = nh
            for _ in range(rng.randrange(0, 4)):
                nxt = rng.choice([0, 43, 44, 60, 58, 6, 17])
                if chain == 44:
                    payload += struct.pack("!BBHI", nxt, 0, rng.randrange(65536), rng.getrandbits(32))
                else:
                    hlen = rng.randrange(0, 4)
                    payload += bytes([nxt, hlen]) + os.urandom(6 + 8 * hlen)
                chain = nxt
            payload += os.urandom(rng.randrange(0, 80))
            plen = rng.choice([len(payload), rng.randrange(65536), 0])
            src6 = b"\xfe\x80" + b"\0" * 6 + os.urandom(8)
            dst6 = rng.choice([b"\xff\x02" + b"\0" * 13 + b"\x01", src6[:8] + os.urandom(8)])
            body = struct.pack("!IHBB", 6 << 28 | rng.getrandbits(20), plen, nh, rng.randrange(256))
            body += src6 + dst6 + payload
            ethertype = 0x86DD
        else:  # anything at all after a header
            ethertype = rng.choice([0x0800, 0x86DD, 0x0806, 0x8100, rng.randrange(65536)])
            body = os.urandom(rng.randrange(0, 1400))
        out.append(eth_dst + src + struct.pack("!H", ethertype) + body)
    return out


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src_ip, dst_ip, proto, l4):
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, src_ip, dst_ip
    )
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + l4


def with_l4_checksum(src_ip, dst_ip, proto, l4, at):
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, proto, len(l4))
    total = checksum(pseudo + l4)
    if proto == 17 and total == 0:
        total = 0xFFFF
    return l4[:at] + struct.pack("!H", total) + l4[at + 2:]


def well_formed(rng, dst, src, guest_ip, port, kind, count):
    """`count` valid frames of `kind` ("syn" or "udp") for the guest."""
    out = []
    for _ in range(count):
        if rng.random() < 0.5:
            # On the guest's subnet: it must resolve each address to answer.
            src_ip = bytes([guest_ip[0], guest_ip[1], guest_ip[2], rng.randrange(3, 255)])
        else:
            src_ip = bytes([198, 18 + rng.randrange(2), rng.randrange(256), rng.randrange(1, 255)])
        sport = rng.randrange(1024, 65536)
        if kind == "syn":
            # SYN with MSS, SACK-permitted, timestamps and window scale.
            opts = struct.pack("!BBH", 2, 4, 1460) + b"\x04\x02" + struct.pack(
                "!BBII", 8, 10, rng.randrange(1 << 32), 0
            ) + b"\x01\x03\x03\x07"
            l4 = struct.pack(
                "!HHIIBBHHH", sport, port, rng.randrange(1 << 32), 0,
                (5 + len(opts) // 4) << 4, 0x02, 64240, 0, 0,
            ) + opts
            l4 = with_l4_checksum(src_ip, guest_ip, 6, l4, 16)
            packet = ipv4(src_ip, guest_ip, 6, l4)
        else:
            dport = port + 1 if rng.random() < 0.5 else rng.randrange(20000, 30000)
            payload = os.urandom(rng.randrange(1, 1400))
            l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
            l4 = with_l4_checksum(src_ip, guest_ip, 17, l4, 6)
            packet = ipv4(src_ip, guest_ip, 17, l4)
        out.append(dst + src + struct.pack("!H", 0x0800) + packet)
    return out


def peer(host, port, iface, dstmac, count, seed, kind="malformed"):
    count = int(count)
    rng = random.Random(int(seed))
    conn = socket.create_connection((host, int(port)), timeout=30)
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    raw.bind((iface, 0))
    src = raw.getsockname()[4]
    guest_ip = socket.inet_aton(host)
    if kind == "malformed":
        pool = frames(rng, mac_bytes(dstmac), src, guest_ip, 4096)
    else:
        pool = well_formed(rng, mac_bytes(dstmac), src, guest_ip, int(port), kind, 8192)
    sent = [0]
    errors = [0]

    def flood():
        for i in range(count):
            try:
                raw.send(pool[i % len(pool)])
            except OSError:
                # A frame the kernel itself refuses (too short, too long).
                errors[0] += 1
            sent[0] += 1

    t = threading.Thread(target=flood)
    rounds = 0

    def one_round():
        blob = os.urandom(ROUND)
        conn.sendall(blob)
        got = bytearray()
        while len(got) < ROUND:
            data = conn.recv(ROUND - len(got))
            if not data:
                raise SystemExit("FAIL: the echo connection ended")
            got += data
        if hashlib.sha256(got).digest() != hashlib.sha256(blob).digest():
            raise SystemExit(f"FAIL: round {rounds} came back different")

    one_round()
    print("connected", flush=True)
    # A moment for the test to take the Sentry's memory before the flood.
    time.sleep(1)
    t.start()
    start = time.monotonic()
    while t.is_alive():
        one_round()
        rounds += 1
        if time.monotonic() - start > 120:
            raise SystemExit("FAIL: the flood did not end")
    t.join()
    one_round()
    rounds += 1
    print(f"flood {sent[0]} frames ({errors[0]} refused by the kernel)", flush=True)
    print(f"rounds {rounds} intact", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    {"echo": echo, "peer": peer}[sys.argv[1]](*sys.argv[2:])
