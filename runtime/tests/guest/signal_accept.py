"""A signal arrives while the main thread is blocked in accept(2) (called
through ctypes, so the errno is the raw syscall's, not Python's PEP 475
retry).

1. Without SA_RESTART (siginterrupt True): accept fails with EINTR; the
   handler ran; a client that connects afterwards is then accepted and its
   data read: nothing lost.
2. With SA_RESTART (siginterrupt False): accept keeps waiting through the
   signal and returns the client that connects 0.5 s later; its data is read.

The signal is sent with pthread_kill to the blocked thread, so no other
thread can take it.
"""

import ctypes
import errno
import os
import signal
import socket
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.accept.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
handled = []


def on_alarm(signum, frame):
    handled.append(signum)


def fail(msg):
    raise SystemExit(f"FAIL: {msg}")


def raw_accept(fd):
    ctypes.set_errno(0)
    rc = libc.accept(fd, None, None)
    return rc, ctypes.get_errno()


def poke_then_connect(target, port, connect_after, payload, poked):
    time.sleep(0.4)
    signal.pthread_kill(target, signal.SIGALRM)
    poked.set()
    if connect_after is not None:
        time.sleep(connect_after)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(payload)


def read_all(fd):
    with socket.socket(fileno=fd) as s:
        s.settimeout(10)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    me = threading.get_ident()

    # 1. EINTR.
    signal.siginterrupt(signal.SIGALRM, True)
    poked = threading.Event()
    t = threading.Thread(target=poke_then_connect, args=(me, port, None, b"", poked))
    t.start()
    start = time.monotonic()
    rc, err = raw_accept(listener.fileno())
    waited = time.monotonic() - start
    t.join()
    if rc != -1 or err != errno.EINTR:
        fail(f"accept without SA_RESTART returned {rc} errno {errno.errorcode.get(err, err)}, expected -1 EINTR")
    if not handled:
        fail("accept returned EINTR but the handler did not run")
    if waited < 0.3:
        fail(f"accept returned after {waited:.2f}s, before the signal")
    print("no SA_RESTART: accept -> EINTR, handler ran")
    # The interrupted accept must not have eaten a connection.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"after EINTR")
    rc, err = raw_accept(listener.fileno())
    if rc < 0:
        fail(f"accept after EINTR failed: {errno.errorcode.get(err, err)}")
    data = read_all(rc)
    if data != b"after EINTR":
        fail(f"connection after EINTR delivered {data!r}")
    print("after EINTR: next connection accepted, data intact")

    # 2. SA_RESTART.
    handled.clear()
    signal.siginterrupt(signal.SIGALRM, False)
    poked = threading.Event()
    t = threading.Thread(
        target=poke_then_connect, args=(me, port, 0.5, b"restarted accept", poked)
    )
    t.start()
    rc, err = raw_accept(listener.fileno())
    if not poked.is_set():
        fail("accept returned before the signal was sent")
    t.join()
    if rc < 0:
        fail(f"accept with SA_RESTART failed: errno {errno.errorcode.get(err, err)}")
    data = read_all(rc)
    if data != b"restarted accept":
        fail(f"restarted accept delivered {data!r}")
    # The C handler ran during accept; Python runs its part now.
    signal.pthread_kill(me, 0)
    if not handled:
        fail("the signal handler never ran")
    print("SA_RESTART: accept kept waiting, connection accepted, data intact")

    # 3. Nothing left over: no phantom connection is queued.
    listener.setblocking(False)
    try:
        extra = listener.accept()
        fail(f"a phantom connection was queued: {extra}")
    except BlockingIOError:
        pass
    print("no phantom connections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
