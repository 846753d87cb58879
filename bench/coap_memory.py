"""How much ``runcoap`` grows under block-wise uploads, finished and abandoned (prints figures).

    python bench/coap_memory.py [--uploads 600] [--devices 50] [--concurrency 8]

Against a live ``manage.py runcoap`` (its defaults: DEBUG on, as a newcomer
runs it) on a fresh database, with aiocoap's client, 1 KiB blocks:

1. ``--uploads`` block-wise uploads of a PNG of about 9 KB (ten blocks) from
   ``--devices`` device ids, ``--concurrency`` at a time;
2. 1,000 abandoned uploads: the first block of each, then nothing;
3. 1,000 block-wise uploads of about 20 KB.

After each stage it prints the server's resident memory (VmRSS) and its
growth since the warm-up. Nothing here asserts.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import tempfile  # noqa: E402

from aiocoap import POST, Context, Message  # noqa: E402
from aiocoap.optiontypes import BlockOption  # noqa: E402

from bench.coapsupport import LiveCoap, start_runcoap  # noqa: E402
from bench.support import (  # noqa: E402
    fresh_database,
    noise_png,
    rss_mib,
)


async def uploads(
    server: LiveCoap, count: int, side: int, devices: int, concurrency: int, first: int
) -> int:
    """``count`` block-wise uploads (aiocoap's client sends 1 KiB blocks); how many got 2.01."""
    client = await Context.create_client_context()
    limit = asyncio.Semaphore(concurrency)
    created = 0

    async def one(n: int) -> None:
        nonlocal created
        async with limit:
            stamp = f"2024-01-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
            request = Message(
                code=POST,
                uri=f"{server.uri}/collections/images?deviceId=cam-{n % devices}&timestamp={stamp}",
                payload=noise_png(side, n, mode="L"),
                content_format=23,
            )
            response = await client.request(request).response
            created += response.code.is_successful()

    await asyncio.gather(*(one(n) for n in range(first, first + count)))
    await client.shutdown()
    return created


async def abandoned(server: LiveCoap, count: int, concurrency: int) -> None:
    """``count`` uploads that send their first 1 KiB block and never the rest."""
    client = await Context.create_client_context()
    limit = asyncio.Semaphore(concurrency)
    body = noise_png(95, 1, mode="L")

    async def one(n: int) -> None:
        async with limit:
            request = Message(
                code=POST,
                uri=f"{server.uri}/collections/images?deviceId=gone-{n}&timestamp=2024-02-01T00:00:00Z",
                payload=body[:1024],
                content_format=23,
            )
            request.opt.block1 = BlockOption.BlockwiseTuple(0, True, 6)
            request.opt.size1 = len(body)
            await client.request(request, handle_blockwise=False).response

    await asyncio.gather(*(one(n) for n in range(count)))
    await client.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=600)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fresh_database(Path(tmp)) as database_url:
        server = start_runcoap(Path(tmp), database_url)
        pid = server.process.pid
        try:
            asyncio.run(uploads(server, 20, 95, args.devices, args.concurrency, 100_000))
            base = rss_mib(pid)
            print(f"runcoap after warm-up: {base:.1f} MiB")

            def stage(name: str) -> None:
                now = rss_mib(pid)
                print(f"{name:<52} {now:7.1f} MiB  (+{now - base:.1f} MiB)", flush=True)

            created = asyncio.run(
                uploads(server, args.uploads, 95, args.devices, args.concurrency, 0)
            )
            stage(f"{created} block-wise uploads of ~9 KB, {args.devices} devices")
            asyncio.run(abandoned(server, 1000, args.concurrency))
            stage("1000 abandoned uploads (first block only)")
            created = asyncio.run(uploads(server, 1000, 142, args.devices, args.concurrency, 1000))
            stage(f"{created} block-wise uploads of ~20 KB")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
