"""A port a closed socket held is free for the very next bind.

The close is native (the Sentry learns of it from its pair end's hang-up),
so this checks that a bind trapped right after a close sees the port free:
CPython's find_unused_port() pattern, many times over.
"""

import socket
import sys

rounds = int(sys.argv[1])
busy = 0
for _ in range(rounds):
    sock = socket.socket()
    temp = socket.socket()
    temp.bind(("", 0))
    port = temp.getsockname()[1]
    temp.close()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        busy += 1
    sock.close()
print(f"rounds {rounds} busy {busy}")
