"""A forking server: the parent accepts, forks, closes its copy of the
connection; the child answers and exits. A client process (forked first)
makes 6 connections, each read to EOF, which arrives only once both copies
of the server's end are closed."""

import os
import socket
import sys

CONNS = 6


def client(port):
    pids = set()
    for i in range(CONNS):
        with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
            c.sendall(f"request {i}\n".encode())
            data = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
        text = data.decode()
        if not text.startswith(f"reply {i} from pid "):
            print(f"FAIL: connection {i} got {text!r}", flush=True)
            os._exit(1)
        pids.add(text.split()[-1])
    if len(pids) != CONNS:
        print(f"FAIL: {CONNS} connections served by pids {pids}", flush=True)
        os._exit(1)
    os._exit(0)


def handle(conn):
    f = conn.makefile("rb")
    line = f.readline().decode().split()
    conn.sendall(f"reply {line[1]} from pid {os.getpid()}".encode())
    conn.close()
    os._exit(0)


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    client_pid = os.fork()
    if client_pid == 0:
        listener.close()
        client(port)
    children = []
    for _ in range(CONNS):
        conn, _ = listener.accept()
        pid = os.fork()
        if pid == 0:
            listener.close()
            handle(conn)
        conn.close()  # the parent's copy; the client sees EOF once the child closes too
        children.append(pid)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            print(f"FAIL: handler {pid} exited {os.waitstatus_to_exitcode(status)}")
            return 1
    _, status = os.waitpid(client_pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"FAIL: client exited {code}")
        return 1
    print(f"forked server: {CONNS} connections served by {CONNS} child processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
