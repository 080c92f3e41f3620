"""asyncio streams: a server upper-casing lines and 20 concurrent clients,
each sending 10 lines and a 256 KiB blob; everything checked."""

import asyncio
import hashlib
import sys

CLIENTS = 20
LINES = 10
BLOB = 256 * 1024


async def handle(reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        if line.startswith(b"BLOB "):
            n = int(line.split()[1])
            data = await reader.readexactly(n)
            writer.write(hashlib.sha256(data).hexdigest().encode() + b"\n")
        else:
            writer.write(line.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def client(port, i):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for j in range(LINES):
        msg = f"client {i} line {j}\n".encode()
        writer.write(msg)
        await writer.drain()
        got = await reader.readline()
        if got != msg.upper():
            raise AssertionError(f"client {i}: got {got!r}, expected {msg.upper()!r}")
    blob = bytes((i + k) % 251 for k in range(BLOB))
    writer.write(f"BLOB {len(blob)}\n".encode() + blob)
    await writer.drain()
    digest = (await reader.readline()).strip().decode()
    if digest != hashlib.sha256(blob).hexdigest():
        raise AssertionError(f"client {i}: blob digest {digest} differs")
    writer.close()
    await writer.wait_closed()
    return i


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        done = await asyncio.wait_for(
            asyncio.gather(*(client(port, i) for i in range(CLIENTS))), 60
        )
    if sorted(done) != list(range(CLIENTS)):
        raise AssertionError(f"clients finished: {done}")
    print(f"asyncio: {CLIENTS} clients x {LINES} lines + {BLOB} byte blob echoed")


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
