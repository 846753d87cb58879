"""CoAP over loopback: transfer times, throughput, and memory under abandoned uploads.

Usage: python bench/coap.py [--rounds N] [--seconds S] [--abandon N] [--abandon-blocks K]

Starts ``manage.py runcoap`` on 127.0.0.1 (a free UDP port, a fresh database:
SQLite, or a throwaway PostgreSQL one when DATABASE_URL names PostgreSQL;
default limits) and prints:

- upload and download times of a 100 KB and a 1 MB PNG (noise, so the stored
  image is as large), block-wise in 1 KiB blocks, with aiocoap's client and,
  when installed, libcoap's ``coap-client``: the median of ``--rounds``, each
  a new image. An upload ends when the 2.01 arrives (the image is stored);
  "again" is a second download, served from the server's image cache;
- uploads per second of a 10 KB PNG with 4 concurrent clients (each its own
  endpoint) over ``--seconds``;
- the server's resident memory before and after ``--abandon`` Block1 uploads
  of ``--abandon-blocks`` KiB each that the client never finishes, next to the
  same number of finished ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiocoap import GET, POST, Context, Message
from aiocoap.numbers.codes import Code

# Replace bench/ on sys.path: its http.py would shadow the standard library.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.coapsupport import LiveCoap, start_runcoap  # noqa: E402
from bench.support import (  # noqa: E402 - needs the root
    fresh_database,
    noise_png_of_size,
    rss_mib,
)
from images.coap.blockwise import MAX_BUFFERED_BYTES, MAX_TRANSFERS  # noqa: E402
from images.compression import pixels_equal  # noqa: E402

COAP_CLIENT = shutil.which("coap-client") or shutil.which("coap-client-notls")
SIZES = (("100 KB", 100_000), ("1 MB", 1_000_000))


class Timestamps:
    """A fresh timestamp, so a fresh key, for every upload."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"2024-08-18T02:04:07.{self._next:06d}Z"


def upload_message(server: LiveCoap, body: bytes, device: str, timestamp: str) -> Message:
    message = Message(code=POST, uri=f"{server.uri}/collections/images", payload=body)
    message.opt.content_format = 23
    message.opt.uri_query = (f"deviceId={device}", f"timestamp={timestamp}")
    return message


def download_message(server: LiveCoap, device: str, timestamp: str) -> Message:
    query = (f"deviceId={device}", f"timestamp={timestamp}")
    return Message(code=GET, uri=f"{server.uri}/collections/images", uri_query=query)


async def timed(context: Context, message: Message, expected: Code) -> tuple[float, Message]:
    """Seconds to the final response (aiocoap does Block1/Block2), and the response."""
    started = time.perf_counter()
    response = await context.request(message).response
    seconds = time.perf_counter() - started
    if response.code != expected:
        raise RuntimeError(f"expected {expected}, got {response.code}: {response.payload[:200]!r}")
    return seconds, response


def row(client: str, label: str, *seconds: list[float]) -> str:
    return f"{client:20} {label:>7}" + "".join(f" {statistics.median(s):9.3f}" for s in seconds)


async def aiocoap_times(server: LiveCoap, rounds: int, stamp: Timestamps) -> None:
    context = await Context.create_client_context()
    for label, size in SIZES:
        ups, downs, again = [], [], []
        for _ in range(rounds):
            image, timestamp = noise_png_of_size(size), stamp()
            up, _ = await timed(
                context, upload_message(server, image, "bench", timestamp), Code.CREATED
            )
            down, response = await timed(
                context, download_message(server, "bench", timestamp), Code.CONTENT
            )
            cached, _ = await timed(
                context, download_message(server, "bench", timestamp), Code.CONTENT
            )
            if not pixels_equal(response.payload, image):
                raise RuntimeError("downloaded pixels differ")
            ups.append(up)
            downs.append(down)
            again.append(cached)
        print(row("aiocoap client", label, ups, downs, again))
    await context.shutdown()


def coap_client_times(server: LiveCoap, rounds: int, stamp: Timestamps) -> None:
    if COAP_CLIENT is None:
        print("libcoap coap-client: not installed, skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        sent, received = Path(tmp) / "sent.png", Path(tmp) / "received.png"
        for label, size in SIZES:
            ups, downs = [], []
            for _ in range(rounds):
                sent.write_bytes(noise_png_of_size(size))
                uri = f"{server.uri}/collections/images?deviceId=bench-libcoap&timestamp={stamp()}"
                upload = ["-m", "post", "-t", "23", "-b", "1024", "-f", str(sent), uri]
                download = ["-m", "get", "-b", "1024", "-o", str(received), uri]
                for args, times in ((upload, ups), (download, downs)):
                    started = time.perf_counter()
                    subprocess.run([COAP_CLIENT, *args], check=True, capture_output=True)
                    times.append(time.perf_counter() - started)
                if not pixels_equal(received.read_bytes(), sent.read_bytes()):
                    raise RuntimeError("downloaded pixels differ")
            print(row("libcoap coap-client", label, ups, downs))


async def concurrent_uploads(server: LiveCoap, seconds: float, stamp: Timestamps) -> None:
    image = noise_png_of_size(10_000)
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> int:
        context = await Context.create_client_context()
        done = 0
        while time.perf_counter() < deadline:
            message = upload_message(server, image, f"bench-{number}", stamp())
            await timed(context, message, Code.CREATED)
            done += 1
        await context.shutdown()
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(*(client(number) for number in range(4)))
    elapsed = time.perf_counter() - started
    print(
        f"4 concurrent clients, {len(image):,} B PNG: {sum(counts)} uploads in {elapsed:.1f} s"
        f" = {sum(counts) / elapsed:.1f} uploads/s"
    )


async def block1_uploads(server: LiveCoap, count: int, blocks: int, *, finish: bool) -> float:
    """``count`` Block1 uploads of ``blocks`` KiB of noise each, 32 at a time.

    Finished ones end with a last block (M=0; the server assembles the body
    and answers 4.00: not an image); abandoned ones stop after a block with
    M=1. Returns the seconds taken.
    """
    context = await Context.create_client_context()
    gate = asyncio.Semaphore(32)
    stamp = Timestamps()
    device = "finished" if finish else "abandoned"

    async def upload() -> None:
        timestamp = stamp()
        async with gate:
            for number in range(blocks):
                more = not finish or number < blocks - 1
                message = upload_message(server, os.urandom(1024), device, timestamp)
                message.opt.block1 = (number, more, 6)
                response = await context.request(message, handle_blockwise=False).response
                expected = Code.CONTINUE if more else Code.BAD_REQUEST
                if response.code != expected:
                    raise RuntimeError(f"expected {expected}, got {response.code}")

    started = time.perf_counter()
    await asyncio.gather(*(upload() for _ in range(count)))
    await context.shutdown()
    return time.perf_counter() - started


def memory_under_abandoned_uploads(server: LiveCoap, count: int, blocks: int) -> None:
    """Server RSS before and after ``count`` abandoned uploads.

    aiocoap keeps every exchange for EXCHANGE_LIFETIME (247 s) to answer
    duplicates (RFC 7252 §4.5; uncapped, aiocoap issue #183), finished upload
    or not; the same number of finished uploads first shows that share. What
    abandoned uploads add on top is the partial bodies the server holds.
    """
    pid = server.process.pid
    before = rss_mib(pid)
    finished_seconds = asyncio.run(block1_uploads(server, count, blocks, finish=True))
    after_finished = rss_mib(pid)
    abandoned_seconds = asyncio.run(block1_uploads(server, count, blocks, finish=False))
    after_abandoned = rss_mib(pid)
    sent = count * blocks / 1024
    held = min(count, MAX_TRANSFERS) * blocks / 1024
    print(f"server RSS, Block1 uploads of {blocks} KiB each ({sent:.0f} MiB per {count}):")
    print(f"  before                                {before:7.1f} MiB")
    print(
        f"  after {count} finished  ({finished_seconds:4.1f} s)        {after_finished:7.1f} MiB"
        f"  (+{after_finished - before:.1f}, aiocoap's duplicate detection)"
    )
    print(
        f"  after {count} abandoned ({abandoned_seconds:4.1f} s)        {after_abandoned:7.1f} MiB"
        f"  (+{after_abandoned - after_finished:.1f})"
    )
    print(
        f"  partial bodies held: at most {MAX_TRANSFERS} uploads and {MAX_BUFFERED_BYTES >> 20} MiB"
        f" (here {held:.0f} MiB); aiocoap's own spool would hold all {sent:.0f} MiB for 93 s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--abandon", type=int, default=1000)
    parser.add_argument("--abandon-blocks", type=int, default=32)
    args = parser.parse_args()
    stamp = Timestamps()
    with tempfile.TemporaryDirectory() as tmp, fresh_database(Path(tmp)) as database_url:
        server = start_runcoap(Path(tmp), database_url)
        try:
            print(f"{'client':20} {'image':>7} {'upload s':>9} {'download':>9} {'again':>9}")
            asyncio.run(aiocoap_times(server, args.rounds, stamp))
            coap_client_times(server, args.rounds, stamp)
            asyncio.run(concurrent_uploads(server, args.seconds, stamp))
            memory_under_abandoned_uploads(server, args.abandon, args.abandon_blocks)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
