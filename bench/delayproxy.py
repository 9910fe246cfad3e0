"""A TCP proxy that adds round-trip time: each chunk is forwarded RTT/2 after it arrived.

This kernel has no `tc netem`, so latency is made in user space. The proxy works on TCP
chunks, so TLS and HTTP/2 pass through untouched. The TCP handshake the client makes with the
proxy is instant on loopback, so the first client→server chunk also waits one whole RTT, as
it would behind a real SYN/SYN-ACK. Bandwidth and slow start are not modelled. Each direction
holds at most `QUEUE_CHUNKS` chunks in flight, so a fast sender is slowed, not buffered
without bound.

Run as `python -m bench.delayproxy --delay-ms 10 LISTEN_PORT:TARGET_PORT ...` (loopback only);
it prints `ready` once every listener is bound and stops on SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys

HOST = "127.0.0.1"
CHUNK = 64 * 1024
QUEUE_CHUNKS = 256


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, first_extra: float) -> None:
    """Forward `reader` to `writer`, each chunk `delay` s after it arrived (plus `first_extra` for the first)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)

    async def receive() -> None:
        extra = first_extra
        try:
            while chunk := await reader.read(CHUNK):
                await queue.put((loop.time() + delay + extra, chunk))
                extra = 0.0
        except (ConnectionError, OSError):
            pass
        await queue.put(None)

    receiver = asyncio.create_task(receive())
    try:
        while (item := await queue.get()) is not None:
            due, chunk = item
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        receiver.cancel()


async def _serve_pair(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target: int,
                      delay: float) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(HOST, target)
    except OSError:
        client_w.close()
        return
    for w in (client_w, server_w):
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(_pump(client_r, server_w, delay, 2 * delay), _pump(server_r, client_w, delay, 0.0))
    finally:
        for w in (client_w, server_w):
            w.close()


async def serve(pairs: list[tuple[int, int]], delay: float, stop: asyncio.Event) -> None:
    servers = []
    for listen, target in pairs:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, target: int = target) -> None:
            await _serve_pair(r, w, target, delay)
        servers.append(await asyncio.start_server(handle, HOST, listen, reuse_address=True, backlog=1024))
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def _pair(text: str) -> tuple[int, int]:
    listen, sep, target = text.partition(":")
    if not sep or not listen.isdigit() or not target.isdigit():
        raise argparse.ArgumentTypeError(f"expected LISTEN_PORT:TARGET_PORT, got {text!r}")
    return int(listen), int(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.delayproxy",
                                     description="Loopback TCP proxy adding a fixed delay per direction.")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay (half the RTT) in ms")
    parser.add_argument("pairs", nargs="+", type=_pair, metavar="LISTEN:TARGET",
                        help="listen on 127.0.0.1:LISTEN and forward to 127.0.0.1:TARGET")
    args = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await serve(args.pairs, args.delay_ms / 1000, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
