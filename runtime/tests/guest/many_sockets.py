"""A guest that opens sockets by the tens of thousands, then checks that a
connection in the same sandbox carries 1 MiB exactly.

    many_sockets.py tcp|udp TOTAL PROCESSES HOLD_SECONDS

PROCESSES children open TOTAL/PROCESSES sockets each (as far as they can)
and report how many and the errno that stopped them. Prints "made N
errors E1,E2" (E is 0 when nothing failed), waits HOLD_SECONDS for the
caller to look at the Sentry, then tries the transfer while the sockets
are held ("held: transfer ok" or "held: errno N"); once the children have
exited, tries again ("freed: ...").
"""

import errno
import os
import resource
import socket
import sys
import time

kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
total, procs, hold = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

report_r, report_w = os.pipe()
done_r, done_w = os.pipe()
children = []
for _ in range(procs):
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        os.close(done_w)
        held, failure = [], 0
        try:
            for _ in range(total // procs):
                held.append(socket.socket(socket.AF_INET, kind))
        except OSError as e:
            failure = e.errno
        os.write(report_w, f"{len(held)} {failure}\n".encode())
        os.read(done_r, 1)
        os._exit(0)
    children.append(pid)
os.close(report_w)
os.close(done_r)
reports = os.fdopen(report_r)
made, failures = 0, set()
for _ in children:
    n, e = reports.readline().split()
    made += int(n)
    failures.add(int(e))
print(f"made {made} errors {','.join(map(str, sorted(failures)))}", flush=True)
time.sleep(hold)


def transfer(when):
    try:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        c = socket.create_connection(listener.getsockname())
        s, _ = listener.accept()
        blob = os.urandom(1 << 20)
        pid = os.fork()
        if pid == 0:
            c.sendall(blob)
            os._exit(0)
        c.close()
        got = bytearray()
        while len(got) < len(blob):
            data = s.recv(1 << 16)
            if not data:
                break
            got += data
        os.waitpid(pid, 0)
        for sock in (s, listener):
            sock.close()
        print(f"{when}: transfer {'ok' if got == blob else 'differs'}", flush=True)
    except OSError as e:
        print(f"{when}: errno {errno.errorcode.get(e.errno, e.errno)}", flush=True)


transfer("held")
os.write(done_w, b"x" * len(children))
for pid in children:
    os.waitpid(pid, 0)
transfer("freed")
