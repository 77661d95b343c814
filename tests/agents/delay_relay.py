"""A TCP relay that adds latency, for the across-hosts test where the kernel has no netem.

Runs inside the hub's network namespace: it accepts on ``--listen HOST:PORT`` and forwards
each connection to ``--to HOST:PORT``, holding every chunk ``--delay`` seconds in each
direction (order kept, throughput not limited). Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((0.0, b""))
    await sender


async def main(listen: str, to: str, delay: float) -> None:
    host, port = listen.rsplit(":", 1)
    to_host, to_port = to.rsplit(":", 1)

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(to_host, int(to_port))
        except OSError:
            cw.close()
            return
        await asyncio.gather(_pipe(cr, uw, delay), _pipe(ur, cw, delay), return_exceptions=True)

    server = await asyncio.start_server(handle, host, int(port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--delay", type=float, default=0.05)
    a = p.parse_args()
    asyncio.run(main(a.listen, a.to, a.delay))
