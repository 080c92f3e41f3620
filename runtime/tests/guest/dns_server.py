"""A one-name DNS server over UDP (RFC 1035), for the nat tests' peer.

    dns_server.py BIND_ADDR PORT NAME IPV4

Answers an A query for NAME with IPV4; any other type for NAME gets an
empty NOERROR answer (so a resolver asking AAAA first moves on to A), and
every other name NXDOMAIN. Prints "ready" once bound, then one line per
query: "query NAME TYPE from IP", so a test can see who asked."""

import socket
import struct
import sys

TYPE_A = 1
CLASS_IN = 1
RCODE_NXDOMAIN = 3
TYPE_NAMES = {1: "A", 28: "AAAA"}


def parse_question(msg):
    """(name, qtype, qclass, end offset) of the first question."""
    labels = []
    pos = 12
    while True:
        n = msg[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            raise ValueError("compressed names are not expected in a question")
        labels.append(msg[pos : pos + n].decode("ascii"))
        pos += n
    qtype, qclass = struct.unpack_from("!HH", msg, pos)
    return ".".join(labels), qtype, qclass, pos + 4


def answer(msg, name, addr):
    """The response to the query `msg`, and what was asked, or None."""
    ident, flags, qdcount = struct.unpack_from("!HHH", msg)
    if flags & 0x8000 or qdcount != 1:
        return None  # a response, or nothing we understand
    qname, qtype, qclass, end = parse_question(msg)
    opcode_rd = flags & 0x7900  # opcode and RD, copied back
    known = qname.rstrip(".").lower() == name
    rcode = 0 if known else RCODE_NXDOMAIN
    answers = b""
    if known and qtype == TYPE_A and qclass == CLASS_IN:
        # The question's name by pointer (offset 12), A, IN, TTL 60, 4 bytes.
        answers = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, 60, 4)
        answers += socket.inet_aton(addr)
    ancount = 1 if answers else 0
    # QR, AA, RA set.
    header = struct.pack(
        "!HHHHHH", ident, 0x8000 | opcode_rd | 0x0400 | 0x0080 | rcode, 1, ancount, 0, 0
    )
    asked = f"{qname} {TYPE_NAMES.get(qtype, qtype)}"
    return header + msg[12:end] + answers, asked


def main():
    bind, port, name, addr = sys.argv[1], int(sys.argv[2]), sys.argv[3].lower(), sys.argv[4]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    print("ready", flush=True)
    while True:
        msg, peer = sock.recvfrom(4096)
        try:
            done = answer(msg, name, addr)
        except (ValueError, IndexError, struct.error, UnicodeDecodeError) as e:
            print(f"bad query from {peer[0]}: {e}", flush=True)
            continue
        if done is not None:
            reply, asked = done
            print(f"query {asked} from {peer[0]}", flush=True)
            sock.sendto(reply, peer)

if __name__ == "__main__":
    main()
