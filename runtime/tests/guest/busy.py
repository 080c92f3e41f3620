"""A guest that keeps the Sentry busy until it is killed: a second process,
a TCP server and client over loopback, and UDP to itself. Prints "busy" once
it runs. Its first argument is a marker the test finds its processes by."""

import os
import socket
import threading
import time

if os.fork() == 0:
    while True:
        time.sleep(1)

lsn = socket.create_server(("127.0.0.1", 0))
addr = lsn.getsockname()


def serve():
    while True:
        c, _ = lsn.accept()
        c.sendall(c.recv(100))
        c.close()


threading.Thread(target=serve, daemon=True).start()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
print("busy", flush=True)
while True:
    c = socket.create_connection(addr)
    c.sendall(b"x")
    c.recv(1)
    c.close()
    udp.sendto(b"y", udp.getsockname())
    udp.recv(1)
