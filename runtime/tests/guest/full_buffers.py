"""A guest that fills the buffers of many connections, then checks that a
well-behaved connection still carries every byte.

    full_buffers.py CONNECTIONS HOLD_SECONDS

Opens CONNECTIONS connections over 127.0.0.1 (the clients in a child
process, the accepted ends here, so neither passes its descriptor limit);
the child writes into each until it would block, and nobody reads. Prints
"filled N BYTES" (bytes the child wrote), waits HOLD_SECONDS for the
caller to look at the Sentry, then moves 4 MiB over a fresh connection and
prints "transfer ok" or "transfer differs"; the full connections stay open
all the while.
"""

import os
import resource
import socket
import sys
import time

count = int(sys.argv[1])
hold = float(sys.argv[2])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
addr = listener.getsockname()
report_r, report_w = os.pipe()
done_r, done_w = os.pipe()

child = os.fork()
if child == 0:
    os.close(report_r)
    os.close(done_w)
    clients = []
    written = 0
    chunk = b"x" * 65536
    for _ in range(count):
        c = socket.create_connection(addr)
        c.setblocking(False)
        try:
            while True:
                written += c.send(chunk)
        except BlockingIOError:
            pass
        clients.append(c)
    os.write(report_w, f"{written}\n".encode())
    os.read(done_r, 1)
    os._exit(0)

os.close(report_w)
os.close(done_r)
accepted = [listener.accept()[0] for _ in range(count)]
written = int(os.fdopen(report_r).readline())
print(f"filled {len(accepted)} {written}", flush=True)
time.sleep(hold)

blob = os.urandom(4 << 20)
c = socket.create_connection(addr)
s, _ = listener.accept()
pid = os.fork()
if pid == 0:
    c.sendall(blob)
    c.close()
    os._exit(0)
c.close()
got = bytearray()
while True:
    data = s.recv(1 << 16)
    if not data:
        break
    got += data
os.waitpid(pid, 0)
print("transfer ok" if got == blob else f"transfer differs: {len(got)} bytes", flush=True)
os.write(done_w, b"x")
os.waitpid(child, 0)
