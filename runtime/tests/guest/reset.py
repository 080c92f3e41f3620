"""How a TCP reset shows on the native data path, for a differential test
(the same lines natively and in the sandbox). One line per observation:

  linger: ...   the peer closes with SO_LINGER {1, 0} after sending "hello":
                recv, recv, recv, send, SO_ERROR
  unread: ...   the peer closes with bytes it never read (Linux sends RST)
  drain:  ...   the peer accepts and closes; the client writes until a
                write fails (within 10 s), and names the error
"""

import errno
import socket
import struct
import time


def attempt(f):
    try:
        return repr(f())
    except OSError as e:
        return errno.errorcode[e.errno]


def pair():
    lsn = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(lsn.getsockname())
    s, _ = lsn.accept()
    lsn.close()
    return c, s


def linger():
    c, s = pair()
    s.sendall(b"hello")
    time.sleep(0.1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.2)
    seen = [attempt(lambda: c.recv(100)) for _ in range(3)]
    seen.append(attempt(lambda: c.send(b"x")))
    seen.append(attempt(lambda: c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
    print("linger:", " ".join(seen), flush=True)
    c.close()


def unread():
    c, s = pair()
    c.sendall(b"never read")
    time.sleep(0.1)
    s.close()
    time.sleep(0.2)
    print("unread:", attempt(lambda: c.recv(100)), attempt(lambda: c.recv(100)), flush=True)
    c.close()


def drain():
    c, s = pair()
    s.close()
    c.settimeout(10)
    deadline = time.monotonic() + 10
    outcome = "no error in 10 s"
    while time.monotonic() < deadline:
        try:
            c.send(b"foo\n" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            outcome = "write failed"
            break
        except OSError as e:
            outcome = errno.errorcode[e.errno]
            break
    print("drain:", outcome, flush=True)
    c.close()


linger()
unread()
drain()
print("done", flush=True)
