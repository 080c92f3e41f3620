"""The sandbox's interfaces as libc sees them (through NETLINK_ROUTE):
if_nameindex() and getifaddrs(). Prints the results as sorted lines:
  nameindex: [(1, 'lo')]
  ifaddr: lo AF_INET 127.0.0.1 netmask 255.0.0.0
  ifaddr: lo AF_INET6 ::1 netmask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff
  ifaddr: lo AF_PACKET
"""

import ctypes
import socket
import sys


class Sockaddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 126)]


class Ifaddrs(ctypes.Structure):
    pass


Ifaddrs._fields_ = [
    ("next", ctypes.POINTER(Ifaddrs)),
    ("name", ctypes.c_char_p),
    ("flags", ctypes.c_uint),
    ("addr", ctypes.POINTER(Sockaddr)),
    ("netmask", ctypes.POINTER(Sockaddr)),
    ("ifu", ctypes.c_void_p),
    ("data", ctypes.c_void_p),
]


def fmt(sa_ptr):
    if not sa_ptr:
        return None
    sa = sa_ptr.contents
    raw = bytes(sa.data)
    if sa.family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[2:6])
    if sa.family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[6:22])
    return None


def main():
    print(f"nameindex: {socket.if_nameindex()}")
    libc = ctypes.CDLL(None, use_errno=True)
    head = ctypes.POINTER(Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        err = ctypes.get_errno()
        print(f"getifaddrs failed: errno {err}")
        return 1
    lines = []
    flags = {}
    p = head
    while p:
        ifa = p.contents
        name = ifa.name.decode()
        flags[name] = ifa.flags
        if ifa.addr:
            fam = ifa.addr.contents.family
            fam_name = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6", 17: "AF_PACKET"}.get(fam, str(fam))
            if fam in (socket.AF_INET, socket.AF_INET6):
                lines.append(f"ifaddr: {name} {fam_name} {fmt(ifa.addr)} netmask {fmt(ifa.netmask)}")
            else:
                lines.append(f"ifaddr: {name} {fam_name}")
        else:
            lines.append(f"ifaddr: {name} (no address)")
        p = ifa.next
    libc.freeifaddrs(head)
    for line in sorted(lines):
        print(line)
    for name, f in sorted(flags.items()):
        up = "UP" if f & 1 else "DOWN"
        loop = " LOOPBACK" if f & 8 else ""
        running = " RUNNING" if f & 0x40 else ""
        print(f"flags: {name} {up}{loop}{running}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
