"""SO_RCVLOWAT on a TCP socket: a blocking recv waits for that many bytes
(they come one by one, 50 ms apart), and MSG_WAITALL's rule is untouched.
Prints what each read got, then "done"."""

import socket
import threading
import time

lsn = socket.create_server(("127.0.0.1", 0))
c = socket.create_connection(lsn.getsockname())
s, _ = lsn.accept()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 10)
print("rcvlowat reads back", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))


def feed(n):
    for _ in range(n):
        time.sleep(0.05)
        c.send(b"x")


threading.Thread(target=feed, args=(10,)).start()
print("recv got", len(s.recv(100)))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
threading.Thread(target=feed, args=(3,)).start()
print("after lowering, recv got", len(s.recv(100)))
time.sleep(0.3)
print("the rest", len(s.recv(100)))
print("done")
