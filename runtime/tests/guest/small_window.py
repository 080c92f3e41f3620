"""A receiver with a 4 KiB SO_RCVBUF (set on its listener) takes 256 KiB
and one byte that the sender hands over with os.sendfile and then closes:
everything must arrive, then end of file, within 2 s (natively it takes milliseconds). Over loopback a
segment is near 64 KiB, far more than that window (CPython's asyncio
sendfile tests hung here). Prints "SELECTOR: N rounds intact" for each of
select, poll and epoll."""

import asyncio
import os
import selectors
import socket
import tempfile

DATA = b"x" * (256 * 1024 + 1)


class Sink(asyncio.Protocol):
    def __init__(self, loop):
        self.data = bytearray()
        self.closed = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data.extend(data)

    def eof_received(self):
        pass

    def connection_lost(self, exc):
        self.closed.set_result(exc)


async def one(loop, f):
    sink = Sink(loop)
    lsn = socket.socket()
    lsn.setblocking(False)
    lsn.bind(("127.0.0.1", 0))
    server = await loop.create_server(lambda: sink, sock=lsn)
    lsn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024)
    c = socket.socket()
    c.setblocking(False)
    await loop.sock_connect(c, lsn.getsockname())
    f.seek(0)
    sent = await loop.sock_sendfile(c, f)
    c.close()
    try:
        await asyncio.wait_for(sink.closed, 2)
    except asyncio.TimeoutError:
        raise SystemExit(f"FAIL: {len(sink.data)} of {sent} bytes, then nothing for 2 s")
    server.close()
    await server.wait_closed()
    if bytes(sink.data) != DATA:
        raise SystemExit(f"FAIL: {len(sink.data)} bytes arrived, not the {len(DATA)} sent")


f = tempfile.TemporaryFile()
f.write(DATA)
f.flush()
for name in ("SelectSelector", "PollSelector", "EpollSelector"):
    loop = asyncio.SelectorEventLoop(getattr(selectors, name)())
    for _ in range(3):
        loop.run_until_complete(one(loop, f))
    print(f"{name}: 3 rounds intact", flush=True)
    loop.close()
f.close()
print("done")
