"""Hostile inputs over HTTP (issue #6, "Trust"): a table of requests no honest client sends.

Two tables, each a list of hand-written cases with a name, the request and the
status the contract gives it:

- ``CASES`` go through Django's test client (DEBUG off, as in production):
  broken and hostile images, decompression bombs, animations past the frame
  limit, polyglots, hostile JSON and CBOR, device ids and timestamps at and
  past the edges, Range and validator garbage, Content-Type and
  Content-Length lies, thousands of query parameters, percent-encoding
  garbage and every method on every endpoint.
- ``RAW_CASES`` are bytes written to a real socket, where the HTTP framing
  itself is hostile (a Content-Length that lies, oversized headers, broken
  request lines), against both the development server (``runserver``, DEBUG
  on, as a newcomer runs it) and the production one (``serve``).

Every answer has its expected status, is never a 5xx and never an HTML page,
and every error body is the contract's ``{"errors": {field: [message]}}`` in
JSON or CBOR (API.md §2). Images stored before each case download
byte-identical after it. Cases that show a known bug are strict xfails whose
reason starts with "bug:".
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import socket
import struct
import time
import urllib.request
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import cbor2
import pytest
from PIL import Image as PILImage

from conftest import LiveServer, png_bytes, start_runserver, stop
from images.compression import pixels_equal
from images.tests.test_crash_safety import Served, start_serve, stop_serve

pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
UPLOAD = "/collections/images"
TS = "2024-01-01T00:00:00Z"
KEY = f"deviceId=hostile&timestamp={quote(TS)}"
RAW_UPLOAD = f"{UPLOAD}?{KEY}"


# --- Images, honest and hostile ---------------------------------------------------------


def pillow(image_format: str, size: tuple[int, int] = (24, 16), seed: int = 0, **save) -> bytes:
    """A small RGB image with varied pixels, encoded by Pillow."""
    image = PILImage.new("RGB", size)
    image.putdata(
        [
            ((x * 11 + seed) % 256, (y * 17 + seed) % 256, (x * y + seed) % 256)
            for y in range(size[1])
            for x in range(size[0])
        ]
    )
    out = io.BytesIO()
    image.save(out, image_format, **save)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few kB whose IHDR claims 10 gigapixels, with a valid zlib stream of zero rows."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    zeros = zlib.compress(b"\x00" * (width + 1) * 20, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zeros)
        + png_chunk(b"IEND", b"")
    )


def apng(frames: int, claimed: int | None = None) -> bytes:
    """A 1x1 grey APNG of ``frames`` frames whose acTL says ``claimed`` (default: the truth)."""
    idat = zlib.compress(b"\x00\x00")
    control = b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)),
            png_chunk(b"acTL", struct.pack(">II", claimed or frames, 0)),
        ]
    )
    parts, sequence = [control], 0
    for index in range(frames):
        fctl = struct.pack(">IIIIIHHBB", sequence, 1, 1, 0, 0, 1, 10, 0, 0)
        parts.append(png_chunk(b"fcTL", fctl))
        sequence += 1
        if index == 0:
            parts.append(png_chunk(b"IDAT", idat))
        else:
            parts.append(png_chunk(b"fdAT", struct.pack(">I", sequence) + idat))
            sequence += 1
    parts.append(png_chunk(b"IEND", b""))
    return b"".join(parts)


GIF_FRAME_1X1 = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"


def gif(screen: tuple[int, int] = (1, 1), frames: list[bytes] | None = None) -> bytes:
    """A hand-assembled GIF89a: logical screen, a 2-colour palette, the given frames."""
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    return head + b"".join(frames if frames is not None else [GIF_FRAME_1X1]) + b"\x3b"


def gif_frame(left: int, top: int, width: int, height: int) -> bytes:
    return b"\x2c" + struct.pack("<HHHHB", left, top, width, height, 0) + b"\x02\x02\x44\x01\x00"


def gif_animation(frames: int) -> bytes:
    delay = b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 10 ms
    return gif(frames=[delay + GIF_FRAME_1X1] * frames)


def riff_webp(chunk: bytes, payload: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_vp8l_bomb() -> bytes:
    """Lossless WebP whose header says 16384 x 16384 (RFC 9649 §3.2.1)."""
    bits = 16383 | (16383 << 14)
    return riff_webp(b"VP8L", b"\x2f" + struct.pack("<I", bits) + b"\x00" * 16)


def webp_vp8x_bomb() -> bytes:
    """Extended WebP whose canvas says 16,777,216 x 16,777,216 (RFC 9649 §2.7)."""
    side = (2**24 - 1).to_bytes(3, "little")
    return riff_webp(b"VP8X", b"\x10\x00\x00\x00" + side + side)


def webp_vp8_bomb() -> bytes:
    """Lossy WebP key frame claiming 16383 x 16383."""
    frame = b"\x10\x02\x00\x9d\x01\x2a" + struct.pack("<HH", 16383, 16383) + b"\x00" * 20
    return riff_webp(b"VP8 ", frame)


def tiff_bomb() -> bytes:
    """A 122-byte TIFF whose single IFD says 100000 x 100000 8-bit grey."""
    entries = [
        (256, 4, 100_000),
        (257, 4, 100_000),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, 100_000),
        (279, 4, 1),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00"


def tiff_short_strips(width: int = 24, height: int = 100_000, rows_per_strip: int = 16) -> bytes:
    """A TIFF with one complete strip of ``rows_per_strip`` rows where ``height`` needs many.

    Pillow fills the rows no strip covers with zeros instead of refusing the
    file, so a few hundred bytes pass for an image of ``height`` rows.
    """
    strip = bytes(index % 256 for index in range(width * rows_per_strip))
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8 + 2 + 9 * 12 + 4),  # the strip follows the IFD
        (277, 3, 1),
        (278, 4, rows_per_strip),
        (279, 4, len(strip)),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00" + strip


def bmp_bomb() -> bytes:
    """A 58-byte BMP whose header says 50000 x 50000 24-bit."""
    info = struct.pack("<IiiHHIIiiII", 40, 50_000, 50_000, 1, 24, 0, 4, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 58, 0, 0, 54) + info + b"\x00" * 4


def jpeg_bomb() -> bytes:
    """A real 8x8 JPEG whose SOF0 is patched to say 65535 x 65535."""
    data = bytearray(pillow("JPEG", (8, 8)))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65535, 65535)
    return bytes(data)


def tiff_pages(pages: int) -> bytes:
    """A little-endian TIFF of ``pages`` 1x1 grey pages: a chain of IFDs, written by hand."""
    entry_count = 9
    ifd_size = 2 + entry_count * 12 + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(pages):
        start = len(out)
        pixel = start + ifd_size
        following = pixel + 1 if page < pages - 1 else 0
        entries = [
            (256, 4, 1),  # width
            (257, 4, 1),  # height
            (258, 3, 8),  # bits per sample
            (259, 3, 1),  # no compression
            (262, 3, 1),  # black is zero
            (273, 4, pixel),  # strip offset
            (277, 3, 1),  # samples per pixel
            (278, 4, 1),  # rows per strip
            (279, 4, 1),  # strip byte count
        ]
        out += struct.pack("<H", entry_count)
        for tag, kind, value in entries:
            packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        out += struct.pack("<I", following) + bytes([page % 256])
    return bytes(out)


def corrupt_png_idat() -> bytes:
    data = bytearray(png_bytes(size=(40, 40), seed=11))
    start = data.find(b"IDAT") + 8
    data[start : start + 20] = bytes(b ^ 0x5A for b in data[start : start + 20])
    return bytes(data)


def corrupt_gif_lzw() -> bytes:
    data = bytearray(pillow("GIF", (40, 40)))
    middle = len(data) // 2
    data[middle : middle + 20] = b"\xff" * 20
    return bytes(data)


def truncated(data: bytes, fraction: float = 0.5) -> bytes:
    return data[: int(len(data) * fraction)]


SCRIPT = b"<html><body><script>alert(document.cookie)</script></body></html>"
PNG = png_bytes(size=(20, 20), seed=3)
GIF = pillow("GIF", seed=4)
JPEG = pillow("JPEG", seed=5)
PNG_B64 = base64.b64encode(PNG).decode()


# --- Hostile CBOR and JSON ----------------------------------------------------------------


def cbor_fields(**overrides: object) -> dict:
    """A valid CBOR upload map (imageData a byte string), with ``overrides``."""
    return {"deviceId": "hostile", "timestamp": TS, "imageData": PNG, **overrides}


def json_fields(**overrides: object) -> dict:
    return {"deviceId": "hostile", "timestamp": TS, "imageData": PNG_B64, **overrides}


def cbor_text(text: str) -> bytes:
    return cbor2.dumps(text)


def cbor_indefinite_upload() -> bytes:
    """A valid upload in indefinite-length encoding (RFC 8949 §3.2.2): map, text and bytes."""
    device = b"\x7f" + cbor_text("host") + cbor_text("ile") + b"\xff"
    image = b"\x5f" + cbor2.dumps(PNG[:10]) + cbor2.dumps(PNG[10:]) + b"\xff"
    return (
        b"\xbf"
        + cbor_text("deviceId")
        + device
        + cbor_text("timestamp")
        + cbor_text(TS)
        + cbor_text("imageData")
        + image
        + b"\xff"
    )


HUGE_LENGTH = b"\xff" * 8  # 2**64 - 1 as an 8-byte CBOR argument


# --- The table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile request through Django's test client, and the status it must get.

    ``path`` may hold ``{id}`` (a stored image's id). ``meta`` are raw WSGI
    environ entries (a lying ``CONTENT_LENGTH``). ``bug``: a strict xfail.
    """

    name: str
    method: str
    path: str
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)
    expect: int | tuple[int, ...] = 400
    bug: str = ""

    def param(self) -> object:
        marks = [pytest.mark.xfail(strict=True, reason=f"bug: {self.bug}")] if self.bug else []
        return pytest.param(self, marks=marks, id=self.name)


def raw(name: str, data: bytes, expect: int | tuple[int, ...], **kwargs: object) -> Case:
    """A raw-image upload of ``data`` (Content-Type application/octet-stream unless given)."""
    return Case(name, "POST", RAW_UPLOAD, data, expect=expect, **kwargs)


def as_json(name: str, body: bytes | dict, expect: int = 400, **kwargs: object) -> Case:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Case(name, "POST", UPLOAD, data, "application/json", expect=expect, **kwargs)


def as_cbor(
    name: str, body: bytes | dict, expect: int | tuple[int, ...] = 400, **kwargs: object
) -> Case:
    data = body if isinstance(body, bytes) else cbor2.dumps(body)
    return Case(name, "POST", UPLOAD, data, "application/cbor", expect=expect, **kwargs)


def device(name: str, device_id: str, expect: int) -> Case:
    path = f"{UPLOAD}?deviceId={quote(device_id, safe='')}&timestamp={quote(TS)}"
    return Case(name, "POST", path, PNG, "image/png", expect=expect)


def timestamp(name: str, value: str, expect: int = 400) -> Case:
    path = f"{UPLOAD}?deviceId=hostile&timestamp={quote(value, safe='')}"
    return Case(name, "POST", path, PNG, "image/png", expect=expect)


FORM = "multipart/form-data; boundary=x"


def form_part(disposition: str, data: bytes, *headers: str) -> bytes:
    """One part of a multipart/form-data body with boundary ``x``."""
    head = "\r\n".join([f"Content-Disposition: form-data; {disposition}", *headers])
    return b"--x\r\n" + head.encode() + b"\r\n\r\n" + data + b"\r\n"


def form_body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--x--\r\n"


def download(name: str, headers: Mapping[str, str], expect: int | tuple[int, ...]) -> Case:
    return Case(name, "GET", "/collections/images/{id}", headers=headers, expect=expect)


def many_params(count: int = 5000) -> str:
    return "&".join(f"p{index}=1" for index in range(count))


SURROGATE_JSON = (
    '{"deviceId": "cam\\ud800", "timestamp": "' + TS + '", "imageData": "' + PNG_B64 + '"}'
).encode()
API_ENDPOINTS = [
    "/.well-known/core",
    "/collections",
    UPLOAD,
    "/collections/images/{id}",
    "/collections/images/{id}/thumbnail",
    "/devices",
    "/devices/baseline-png/images",
]

CASES: list[Case] = [
    # Truncated and corrupt images, one of each supported format and more.
    raw("truncated PNG", truncated(PNG), 400, content_type="image/png"),
    raw("PNG signature and IHDR only", PNG[:33], 400, content_type="image/png"),
    raw("PNG with a corrupt zlib stream in IDAT", corrupt_png_idat(), 400),
    raw("truncated JPEG (half)", truncated(JPEG), 400, content_type="image/jpeg"),
    raw("truncated JPEG (90 %)", truncated(JPEG, 0.9), 400, content_type="image/jpeg"),
    raw("JPEG SOI followed by garbage", b"\xff\xd8" + b"\x00" * 64, 400),
    raw("truncated GIF", truncated(GIF), 400, content_type="image/gif"),
    raw("GIF with a corrupt LZW stream", corrupt_gif_lzw(), 400),
    raw("truncated WebP", truncated(pillow("WEBP")), 400, content_type="image/webp"),
    raw("truncated BMP", truncated(pillow("BMP")), 400, content_type="image/bmp"),
    raw("truncated TIFF", truncated(pillow("TIFF")), 400, content_type="image/tiff"),
    raw("TIFF whose first IFD offset points past the end", b"II*\x00\xff\xff\xff\x7f", 400),
    raw(
        "TIFF whose only strip covers 16 of its 100,000 rows",
        tiff_short_strips(),
        400,
        content_type="image/tiff",
    ),
    raw("HTML sent as image/png", SCRIPT, 400, content_type="image/png"),
    raw("SVG with a script sent as image/png", b"<svg onload='alert(1)'/>", 400),
    raw("a PSD (Photoshop) file: not an allowed decoder", b"8BPS\x00\x01" + b"\x00" * 64, 400),
    raw("an EPS file: Ghostscript is never run", b"%!PS-Adobe-3.0 EPSF-3.0\n", 400),
    raw("an ICO file: not an allowed decoder", b"\x00\x00\x01\x00\x01\x00" + b"\x00" * 32, 400),
    raw(
        "an empty raw body",
        b"",
        400,
        meta={"CONTENT_TYPE": "image/png"},
    ),
    # Decompression bombs: tiny files whose headers claim huge dimensions.
    raw("PNG bomb: IHDR 100000x100000, zlib of zeros", png_bomb(), 413),
    raw("GIF bomb: logical screen 65535x65535", gif(screen=(65535, 65535)), 413),
    raw("GIF bomb: one frame 65535x65535", gif(frames=[gif_frame(0, 0, 65535, 65535)]), 413),
    raw(
        "GIF bomb: a 1x1 frame at offset 65000,65000",
        gif(frames=[gif_frame(65000, 65000, 1, 1)]),
        413,
    ),
    raw("WebP bomb: VP8L header 16384x16384", webp_vp8l_bomb(), 413),
    raw("WebP bomb: VP8X canvas 2^24 x 2^24", webp_vp8x_bomb(), 413),
    raw("WebP bomb: VP8 key frame 16383x16383", webp_vp8_bomb(), 413),
    raw("TIFF bomb: IFD 100000x100000", tiff_bomb(), 413),
    raw("BMP bomb: header 50000x50000", bmp_bomb(), 413),
    raw("JPEG bomb: SOF0 65535x65535", jpeg_bomb(), 413),
    # Animations past the 1,000-frame limit.
    raw("GIF with 10,000 frames", gif_animation(10_000), 413),
    raw("APNG with 10,000 frames", apng(10_000), 413),
    raw("APNG whose acTL claims 2^31-1 frames", apng(1, claimed=2**31 - 1), 413),
    raw("TIFF with 10,000 pages", tiff_pages(10_000), 413),
    # Polyglots: stored as images (served safely, see the tests below) or refused.
    raw("polyglot: PNG with HTML appended", PNG + SCRIPT, 201, content_type="image/png"),
    raw("polyglot: GIF with HTML appended", GIF + SCRIPT, 201, content_type="image/gif"),
    raw("polyglot: JPEG with HTML after EOI", JPEG + SCRIPT, 201, content_type="image/jpeg"),
    raw("polyglot: HTML first, PNG after", SCRIPT + PNG, 400, content_type="image/png"),
    # Hostile JSON.
    as_json("JSON nested 100,000 arrays deep", b"[" * 100_000),
    as_json("JSON nested 100,000 objects deep", b'{"a":' * 100_000),
    as_json("JSON NaN and Infinity as values", b'{"deviceId": NaN, "timestamp": Infinity}'),
    as_json("JSON bare NaN", b"NaN"),
    as_json("JSON -Infinity as imageData", json_fields(imageData=float("-inf"))),
    as_json("JSON integer of 5,000 digits", b'{"deviceId": ' + b"9" * 5000 + b"}"),
    as_json("JSON in Latin-1, not UTF-8", '{"deviceId": "caf\xe9"}'.encode("latin-1")),
    as_json("JSON with a UTF-8 BOM", b"\xef\xbb\xbf" + json.dumps(json_fields()).encode()),
    as_json("JSON cut off mid-string", json.dumps(json_fields()).encode()[:40]),
    as_json("JSON array instead of an object", b"[1, 2, 3]"),
    as_json(
        "JSON deviceId with a lone surrogate escape",
        SURROGATE_JSON,
    ),
    as_json("JSON imageData that is not base64", json_fields(imageData="!!!not base64!!!")),
    as_json("JSON imageData: base64 of nothing", json_fields(imageData="")),
    as_json(
        "JSON imageData: a data: URL of HTML",
        json_fields(imageData="data:text/html;base64,PHNjcmlwdD4="),
    ),
    # Hostile CBOR.
    as_cbor("CBOR nested 100,000 arrays deep", b"\x81" * 100_000 + b"\x00"),
    as_cbor("CBOR nested 100,000 maps deep", b"\xa1\x00" * 100_000 + b"\x00"),
    as_cbor(
        "CBOR byte string claiming 2^64-1 bytes",
        b"\xa1" + cbor_text("imageData") + b"\x5b" + HUGE_LENGTH,
    ),
    as_cbor("CBOR map claiming 2^64-1 pairs", b"\xbb" + HUGE_LENGTH),
    as_cbor("CBOR array claiming 2^64-1 items", b"\x9b" + HUGE_LENGTH),
    as_cbor("CBOR text claiming 4 GiB", b"\xa1" + cbor_text("deviceId") + b"\x7a\xff\xff\xff\xff"),
    as_cbor("CBOR hex text claiming 2^64-1 bytes", b"5b" + HUGE_LENGTH.hex().encode()),
    as_cbor(
        "CBOR indefinite bytes with a 64 GiB chunk",
        b"\xa1" + cbor_text("imageData") + b"\x5f\x5b\x00\x00\x00\x10\x00\x00\x00\x00\xff",
    ),
    # RFC 8949 §3.4.2: an epoch date-time is a timestamp like any other.
    as_cbor(
        "CBOR tag 1 (epoch) as timestamp",
        cbor_fields(deviceId="epoch-tag", timestamp=cbor2.CBORTag(1, 1_723_946_647)),
        expect=201,
    ),
    as_cbor(
        "CBOR unknown tag 40000 around deviceId", cbor_fields(deviceId=cbor2.CBORTag(40000, "x"))
    ),
    as_cbor(
        "CBOR tag 5 bigfloat with exponent 10^9",
        cbor_fields(timestamp=cbor2.CBORTag(5, [10**9, 3])),
    ),
    as_cbor(
        "CBOR tag 30 rational with a zero denominator",
        cbor_fields(deviceId=cbor2.CBORTag(30, [1, 0])),
    ),
    as_cbor(
        "CBOR tag 35 regex that does not compile", cbor_fields(deviceId=cbor2.CBORTag(35, "(("))
    ),
    as_cbor("CBOR tag 29 reference to nothing", b"\xa1" + cbor_text("deviceId") + b"\xd8\x1d\x05"),
    as_cbor(
        "CBOR map that contains itself (tags 28/29)",
        b"\xd8\x1c\xa1" + cbor_text("deviceId") + b"\xd8\x1d\x00",
    ),
    as_cbor(
        "CBOR bignum deviceId of 4,800 digits",
        cbor_fields(deviceId=cbor2.CBORTag(2, b"\x01" * 2000)),
    ),
    as_cbor("CBOR map with integer and array keys", b"\xa2\x01\x02\x82\x01\x02\x03"),
    as_cbor(
        "CBOR map with byte-string keys", {b"deviceId": "x", b"timestamp": TS, b"imageData": PNG}
    ),
    as_cbor("CBOR indefinite-length upload (valid)", cbor_indefinite_upload(), 201),
    as_cbor("CBOR indefinite map without its break", cbor_indefinite_upload()[:-1]),
    as_cbor("CBOR valid upload plus trailing bytes", cbor2.dumps(cbor_fields()) + b"\x00"),
    as_cbor("CBOR text string of invalid UTF-8", b"\xa1" + cbor_text("deviceId") + b"\x62\xff\xfe"),
    as_cbor(
        "CBOR undefined and simple(255) values",
        b"\xa2" + cbor_text("deviceId") + b"\xf7" + cbor_text("timestamp") + b"\xf8\xff",
    ),
    as_cbor("CBOR stray break byte", b"\xff"),
    as_cbor("CBOR hex text with an odd digit count", b"a1b"),
    as_cbor("CBOR NaN as deviceId", cbor_fields(deviceId=float("nan"))),
    # Device ids: path separators are allowed (made safe in file names), controls are not.
    device("deviceId ../../etc/passwd", "../../etc/passwd", 201),
    device("deviceId with / and \\", "a/b\\c", 201),
    device("deviceId ..", "..", 201),
    device("deviceId with U+202E (RTL override, category Cf)", "x\u202egnp.exe", 201),
    device("deviceId with NUL", "cam\x00", 400),
    device("deviceId with ESC (C0)", "cam\x1b[31m", 400),
    device("deviceId with DEL", "cam\x7f", 400),
    device("deviceId with NEL (C1)", "cam\x85", 400),
    device("deviceId with CR LF (header injection)", "cam\r\nSet-Cookie: a=b", 400),
    device("deviceId with a tab", "cam\t1", 400),
    device("deviceId of 101 characters", "x" * 101, 400),
    device("deviceId empty", "", 400),
    as_json("deviceId true", json_fields(deviceId=True)),
    as_json("deviceId a list", json_fields(deviceId=["cam"])),
    as_json("deviceId a float", json_fields(deviceId=1.5)),
    as_json("deviceId null", json_fields(deviceId=None)),
    # Timestamps at and past the edges.
    timestamp("timestamp in year 0", "0000-06-01T00:00:00Z"),
    timestamp("timestamp in year 10000", "10000-01-01T00:00:00Z"),
    timestamp("timestamp with 7 fractional digits", "2024-01-01T00:00:00.1234567Z"),
    timestamp("timestamp before year 1 in UTC", "0001-01-01T00:00:00+01:00"),
    timestamp("timestamp after 9999 in UTC", "9999-12-31T23:59:59-01:00"),
    timestamp("timestamp on February 30", "2024-02-30T00:00:00Z"),
    timestamp("timestamp with a leap second", "2016-12-31T23:59:60Z"),
    timestamp("timestamp with offset +24:00", "2024-01-01T00:00:00+24:00"),
    timestamp("timestamp in full-width digits", "２０２４-01-01T00:00:00Z"),
    timestamp("timestamp with a NUL", "2024-01-01T00:00:00Z\x00"),
    timestamp("timestamp at the first instant, year 1", "0001-01-01T00:00:00Z", 201),
    timestamp("timestamp at the last microsecond of 9999", "9999-12-31T23:59:59.999999Z", 201),
    # Content-Type and Content-Length lies.
    raw("Content-Type text/html", PNG, 415, content_type="text/html"),
    raw(
        "multipart/form-data with no image part",
        b"--x\r\n\r\n--x--",
        400,
        content_type=FORM,
    ),
    raw(
        "multipart/form-data with a part header over 1 KiB",
        form_body(form_part(f'name="imageData"; filename="{"a" * 2000}.png"', PNG)),
        400,
        content_type=FORM,
    ),
    raw(
        "multipart/form-data with 1,100 text fields",
        form_body(*(form_part(f'name="f{i}"', b"x") for i in range(1100))),
        400,
        content_type=FORM,
    ),
    raw(
        "multipart/form-data, an image part in base64 that holds nothing",
        form_body(
            form_part(
                'name="imageData"; filename="a.png"', b"!!!!", "Content-Transfer-Encoding: base64"
            )
        ),
        400,
        content_type=FORM,
    ),
    raw(
        "Content-Type form-urlencoded",
        b"deviceId=a",
        415,
        content_type="application/x-www-form-urlencoded",
    ),
    raw("Content-Type ;;; (malformed)", PNG, 415, content_type=";;;"),
    raw("Content-Type image/svg+xml", b"<svg/>", 415, content_type="image/svg+xml"),
    raw("no Content-Type on a body", PNG, 415, content_type=""),
    raw("JSON Content-Type on PNG bytes", PNG, 400, content_type="application/json"),
    raw(
        "image/png Content-Type on JSON text",
        json.dumps(json_fields()).encode(),
        400,
        content_type="image/png",
    ),
    raw(
        "Content-Length that is not a number",
        PNG,
        400,
        content_type="image/png",
        meta={"CONTENT_LENGTH": "abc"},
    ),
    raw(
        "Content-Length of a terabyte",
        PNG,
        413,
        content_type="image/png",
        meta={"CONTENT_LENGTH": str(10**12)},
    ),
    # Range and validators on a stored image.
    download(
        "Range with 1,000 ranges",
        {"Range": "bytes=" + ",".join(f"{i}-{i}" for i in range(1000))},
        416,
    ),
    download("Range malformed", {"Range": "bytes=abc"}, 200),
    download("Range reversed", {"Range": "bytes=10-5"}, 200),
    download("Range in another unit", {"Range": "items=0-1"}, 200),
    download("Range overlapping", {"Range": "bytes=0-10,5-15,0-"}, 206),
    download("Range past the end", {"Range": "bytes=99999-"}, 416),
    download(
        "Range with a 5,000-digit position",
        {"Range": "bytes=" + "9" * 5000 + "-"},
        (200, 416),
    ),
    download(
        "Range with a 5,000-digit suffix",
        {"Range": "bytes=-" + "9" * 5000},
        (200, 206, 416),  # a suffix longer than the image is all of it (RFC 9110 §14.1.2)
    ),
    download("If-None-Match garbage", {"If-None-Match": '"unterminated, W/, ,,,'}, 200),
    download(
        "If-Modified-Since garbage", {"If-Modified-Since": "Mon, 99 Foo 99999 99:99:99 GMT"}, 200
    ),
    download("If-Modified-Since of 5,000 digits", {"If-Modified-Since": "9" * 5000}, 200),
    download("If-Unmodified-Since garbage", {"If-Unmodified-Since": "garbage"}, 200),
    download("If-Range garbage with a Range", {"Range": "bytes=0-1", "If-Range": "garbage"}, 200),
    download("Accept garbage", {"Accept": ";;;,,,/;q=abc"}, 406),
    download("Accept text/html for a stored image", {"Accept": "text/html"}, 406),
    # Thousands of query parameters, and percent-encoding garbage.
    Case(
        "5,000 query parameters on a download",
        "GET",
        f"{UPLOAD}?{KEY}&{many_params()}",
    ),
    Case(
        "5,000 query parameters on an upload",
        "POST",
        f"{RAW_UPLOAD}&{many_params()}",
        PNG,
        "image/png",
    ),
    Case(
        "5,000 query parameters on /.well-known/core",
        "GET",
        f"/.well-known/core?{many_params()}",
    ),
    Case(
        "5,000 query parameters on /devices",
        "GET",
        f"/devices?{many_params()}",
    ),
    Case(
        "5,000 query parameters on /api/schema",
        "GET",
        f"/api/schema?{many_params()}",
    ),
    Case(
        "deviceId %zz in a query", "GET", f"{UPLOAD}?deviceId=%zz&timestamp={quote(TS)}", expect=404
    ),
    Case(
        "deviceId overlong UTF-8 %C0%AF in a query",
        "GET",
        f"{UPLOAD}?deviceId=%C0%AF&timestamp={quote(TS)}",
        expect=404,
    ),
    Case("deviceId %00 in a query", "GET", f"{UPLOAD}?deviceId=%00&timestamp={quote(TS)}"),
    Case("timestamp missing on a download", "GET", f"{UPLOAD}?deviceId=baseline-png"),
    Case("%zz in a path", "GET", "/collections/images/%zz", expect=404),
    Case("encoded ../ in a path", "GET", "/collections/images/..%2F..%2Fetc%2Fpasswd", expect=404),
    Case("overlong UTF-8 in a device path", "GET", "/devices/%C0%AF/images", expect=404),
    Case(
        "%00 in a device path",
        "GET",
        "/devices/%00/images",
        expect=(400, 404),
    ),
    Case("discovery filter with * inside", "GET", "/.well-known/core?rt=*a*"),
    Case("discovery filter without =", "GET", "/.well-known/core?rt"),
    Case("discovery filter with an empty name", "GET", "/.well-known/core?=x"),
    Case("discovery filter name %zz (no match)", "GET", "/.well-known/core?%zz=1", expect=200),
    Case("listing limit 0", "GET", "/devices?limit=0"),
    Case("listing limit not a number", "GET", "/devices?limit=1e9"),
    Case("listing cursor garbage", "GET", "/devices?cursor=%%%25%00"),
    Case(
        "listing from after to",
        "GET",
        f"/devices/baseline-png/images?from=2025-01-01T00:00:00Z&to={quote(TS)}",
    ),
    Case("thumbnail size not a number", "GET", "/collections/images/{id}/thumbnail?size=abc"),
    Case("thumbnail size 10^6", "GET", "/collections/images/{id}/thumbnail?size=1000000"),
    Case(
        "upload with ?format=zz",
        "POST",
        f"{RAW_UPLOAD}&format=zz",
        PNG,
        "image/png",
        expect=201,
    ),
    # Methods.
    *[
        Case(f"{method} {path}", method, path, expect=405)
        for path in API_ENDPOINTS
        for method in ("PUT", "PATCH", "TRACE")
    ],
    *[
        Case(
            f"OPTIONS {path}",
            "OPTIONS",
            path,
            expect=(200, 204, 405),
        )
        for path in API_ENDPOINTS
    ],
    Case("DELETE the collection", "DELETE", UPLOAD, expect=405),
    Case(
        "DELETE an unknown image",
        "DELETE",
        "/collections/images/00000000-0000-0000-0000-000000000000",
        expect=404,
    ),
    Case("PUT /healthz", "PUT", "/healthz", expect=405),
    Case(
        "TRACE /metrics",
        "TRACE",
        "/metrics",
        expect=405,
    ),
]


# --- Checking an answer --------------------------------------------------------------------


def expected(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value,)


def looks_like_html(content_type: str, body: bytes) -> bool:
    start = body.lstrip()[:15].lower()
    return content_type.lower().startswith("text/html") or start.startswith(
        (b"<!doctype", b"<html")
    )


def contract_errors(content_type: str, body: bytes) -> dict[str, list[str]]:
    """The ``errors`` map of a contract error body; fails the test for anything else."""
    media_type = content_type.split(";")[0].strip().lower()
    assert media_type in ("application/json", "application/cbor"), (content_type, body[:200])
    payload = cbor2.loads(body) if media_type == "application/cbor" else json.loads(body)
    assert isinstance(payload, dict), payload
    assert set(payload) == {"errors"}, payload
    errors = payload["errors"]
    assert isinstance(errors, dict), payload
    assert errors, payload
    for name, messages in errors.items():
        assert isinstance(name, str), payload
        assert isinstance(messages, list), payload
        assert messages, payload
        assert all(isinstance(message, str) and message for message in messages), payload
    assert b"Traceback" not in body
    return errors


def check_answer(status: int, content_type: str, body: bytes, allowed: tuple[int, ...]) -> None:
    assert status < 500, (status, body[:300])
    assert status in allowed, (status, body[:300])
    assert not looks_like_html(content_type, body), (status, content_type, body[:300])
    if status >= 400 and (body or content_type):
        contract_errors(content_type, body)


# --- Images stored before each case, and their snapshot --------------------------------------


@dataclass(frozen=True)
class Baseline:
    ids: tuple[str, ...]
    sha256: dict[str, str]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def baseline(client) -> Baseline:
    """Three images stored the three ways (JSON, raw, CBOR), and what they download as."""
    answers = [
        client.post(
            UPLOAD,
            json.dumps({"deviceId": "baseline-png", "timestamp": TS, "imageData": PNG_B64}),
            content_type="application/json",
        ),
        client.post(
            f"{UPLOAD}?deviceId=baseline-gif&timestamp={quote(TS)}", GIF, content_type="image/gif"
        ),
        client.post(
            UPLOAD,
            cbor2.dumps(
                {"deviceId": "baseline-webp", "timestamp": TS, "imageData": pillow("WEBP")}
            ),
            content_type="application/cbor",
            headers={"Accept": "application/json"},
        ),
    ]
    assert [answer.status_code for answer in answers] == [201, 201, 201]
    ids = tuple(answer.json()["id"] for answer in answers)
    downloaded = {image_id: sha256(client.get(f"{UPLOAD}/{image_id}").content) for image_id in ids}
    assert downloaded == {answer.json()["id"]: answer.json()["sha256"] for answer in answers}
    return Baseline(ids, downloaded)


def assert_unchanged(client, baseline: Baseline) -> None:
    for image_id in baseline.ids:
        response = client.get(f"{UPLOAD}/{image_id}")
        assert response.status_code == 200
        assert sha256(response.content) == baseline.sha256[image_id]


# --- The tests -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_a_hostile_request_gets_its_status_in_the_contract_format(client, baseline, case):
    path = case.path.replace("{id}", baseline.ids[0])
    response = client.generic(
        case.method,
        path,
        case.body,
        content_type=case.content_type,
        headers=dict(case.headers),
        **case.meta,
    )
    body = b"".join(response.streaming_content) if response.streaming else response.content
    check_answer(
        response.status_code, response.get("Content-Type", ""), body, expected(case.expect)
    )
    assert_unchanged(client, baseline)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content_type", "polyglot", "html_kept"),
    [
        # oxipng rewrites the PNG, dropping what follows IEND.
        ("image/png", PNG + SCRIPT, False),
        # GIF is stored as received; JPEG with bytes after its EOI too.
        ("image/gif", GIF + SCRIPT, True),
        ("image/jpeg", JPEG + SCRIPT, True),
    ],
)
def test_a_polyglot_is_served_only_as_its_image_type_with_nosniff_and_csp(
    client, content_type, polyglot, html_kept
):
    answer = client.post(RAW_UPLOAD, polyglot, content_type="application/octet-stream")
    assert answer.status_code == 201
    assert answer.json()["contentType"] == content_type
    href = answer["Location"]
    for accept in (None, "text/html,*/*;q=0.8", "*/*"):
        headers = {"Accept": accept} if accept else {}
        served = client.get(href, headers=headers)
        assert served.status_code == 200
        assert served["Content-Type"] == content_type
        assert served["X-Content-Type-Options"] == "nosniff"
        policy = served["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "sandbox" in policy
        assert "script-src" not in policy
        assert served["Content-Disposition"].startswith("inline; filename=")
        assert (b"<script>" in served.content) is html_kept
        assert pixels_equal(served.content, polyglot)
    refused = client.get(href, headers={"Accept": "text/html"})
    assert refused.status_code == 406
    assert refused["Content-Type"] == "application/json"
    assert client.get(f"{UPLOAD}?{KEY}", headers={"Accept": "text/html"}).status_code == 406


SAFE_FILENAME = re.compile(r'inline; filename="([A-Za-z0-9._-]+)"; filename\*=UTF-8\'\'([^"\s;]+)')


@pytest.mark.django_db
@pytest.mark.parametrize(
    "device_id",
    [
        "../../etc/passwd",
        "a/b\\c",
        "..",
        ".hidden",
        'x";filename="evil.html',
        "x;filename*=UTF-8''evil.html",
        "<script>alert(1)</script>",
        "x\u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE: category Cf, allowed by API.md §9
        "\u2066cam\u2069",  # isolates, Cf too
        "caméra \u00a0 ü",
    ],
)
def test_a_hostile_device_id_gets_a_safe_download_filename(client, device_id):
    path = f"{UPLOAD}?deviceId={quote(device_id, safe='')}&timestamp={quote(TS)}"
    assert client.post(path, PNG, content_type="image/png").status_code == 201
    disposition = client.get(path)["Content-Disposition"]
    assert disposition.isascii()
    assert "\r" not in disposition
    assert "\n" not in disposition
    match = SAFE_FILENAME.fullmatch(disposition)
    assert match, disposition
    safe, encoded = match.groups()
    assert not safe.startswith(".")
    assert "/" not in safe
    assert "\\" not in safe
    assert safe.endswith("_20240101T000000Z.png")
    # The real id travels percent-encoded in filename* (RFC 8187), bidi controls included:
    # a client that honours filename* shows it as sent (see SECURITY.md).
    assert re.fullmatch(r"[A-Za-z0-9%._~-]+", encoded), encoded
    assert unquote(encoded) == f"{device_id}_20240101T000000Z.png"


@pytest.mark.django_db
def test_markup_in_a_device_id_is_escaped_in_the_gallery(client):
    device_id = "<script>alert(1)</script>"
    path = f"{UPLOAD}?deviceId={quote(device_id, safe='')}&timestamp={quote(TS)}"
    assert client.post(path, PNG, content_type="image/png").status_code == 201
    for page in ("/", f"/gallery/devices/{quote(device_id, safe='')}"):
        response = client.get(page)
        assert response.status_code == 200
        assert b"<script>alert(1)</script>" not in response.content
        assert b"&lt;script&gt;" in response.content


@pytest.mark.django_db
def test_a_nul_in_a_gallery_device_path_is_a_404_page(client):
    # The gallery's own HTML 404 page: it is a page for people, not the API.
    # (PostgreSQL refuses a NUL in any text parameter: it must not get one.)
    assert client.get("/gallery/devices/%00").status_code == 404


# --- Hostile framing, over real sockets ----------------------------------------------------


@dataclass(frozen=True)
class RawCase:
    """Bytes written to a server's socket, and the statuses its first answer may have.

    ``expect`` empty: no answer while the connection is held open (the server
    waits for the rest, as it must).
    """

    name: str
    request: bytes
    expect: tuple[int, ...]
    half_close: bool = False


def http_request(head: str, body: bytes = b"", *, close: bool = True) -> bytes:
    """A request from its request line and header lines (``\\n``-separated), Host added."""
    lines = head.split("\n")
    lines.insert(1, "Host: 127.0.0.1")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# Live servers keep what the cases store: each upload case has its own device.
JSON_BODY = json.dumps(json_fields(deviceId="framing-json")).encode()
SERVER_KINDS = ("runserver", "serve")
RAW_JSON_UPLOAD = "POST /collections/images HTTP/1.1\nContent-Type: application/json"

RAW_CASES: list[RawCase] = [
    RawCase(
        "Content-Length shorter than the body",
        http_request(f"{RAW_JSON_UPLOAD}\nContent-Length: 10", JSON_BODY),
        (400,),
    ),
    RawCase(
        "Content-Length longer than a complete JSON body, then half-close",
        http_request(f"{RAW_JSON_UPLOAD}\nContent-Length: {len(JSON_BODY) + 1000}", JSON_BODY),
        (400,),
        half_close=True,
    ),
    RawCase(
        "Content-Length longer than a truncated PNG, then half-close",
        http_request(
            f"POST {UPLOAD}?deviceId=truncated&timestamp={quote(TS)} HTTP/1.1\n"
            f"Content-Type: image/png\nContent-Length: {len(PNG)}",
            truncated(PNG),
        ),
        (400,),
        half_close=True,
    ),
    RawCase(
        "Content-Length longer than the body, held open",
        http_request(f"{RAW_JSON_UPLOAD}\nContent-Length: {len(JSON_BODY) + 1000}", JSON_BODY),
        (),
    ),
    RawCase(
        "Content-Length not a number",
        http_request(f"{RAW_JSON_UPLOAD}\nContent-Length: abc", JSON_BODY),
        (400,),
    ),
    RawCase(
        "Content-Length negative",
        http_request(f"{RAW_JSON_UPLOAD}\nContent-Length: -5", JSON_BODY),
        (400,),
    ),
    RawCase(
        "two different Content-Lengths",
        http_request(f"{RAW_JSON_UPLOAD}\nContent-Length: 5\nContent-Length: 500", JSON_BODY),
        (400,),
    ),
    RawCase(
        "Content-Length and Transfer-Encoding together",
        http_request(
            f"{RAW_JSON_UPLOAD}\nContent-Length: 5\nTransfer-Encoding: chunked", b"0\r\n\r\n"
        ),
        (400,),
    ),
    RawCase(
        "a chunk size that lies, then half-close",
        http_request(f"{RAW_JSON_UPLOAD}\nTransfer-Encoding: chunked", b'ffff\r\n{"a":1}'),
        (400,),
        half_close=True,
    ),
    RawCase(
        "Content-Length of a terabyte, no body sent",
        http_request(
            f"POST {RAW_UPLOAD} HTTP/1.1\nContent-Type: image/png\nContent-Length: 999999999999"
        ),
        (413,),
    ),
    RawCase(
        "a 70 kB header line",
        http_request("GET /healthz HTTP/1.1\nX-Big: " + "a" * 70_000),
        (200, 431),
    ),
    RawCase(
        "a 1 MB header line",
        http_request("GET /healthz HTTP/1.1\nX-Big: " + "a" * 1_000_000),
        (431,),
    ),
    RawCase(
        "200 header fields",
        http_request("GET /healthz HTTP/1.1\n" + "\n".join(f"X-H{i}: 1" for i in range(200))),
        (431,),
    ),
    RawCase(
        "a 70 kB request target",
        http_request(f"GET /{'a' * 70_000} HTTP/1.1"),
        (414,),
    ),
    RawCase(
        "a space inside the request target",
        http_request("GET /heal thz HTTP/1.1"),
        (400,),
    ),
    RawCase(
        "raw non-UTF-8 bytes in the path",
        b"GET /devices/\xff\xfe/images HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        (400, 404),
    ),
    RawCase(
        "a control character in a header value",
        http_request("GET /collections/images/x HTTP/1.1\nAccept: a\x01b"),
        (400, 404),
    ),
    RawCase(
        "a Host naming another site",
        b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        (400,),
    ),
    RawCase(
        "an absolute-form target naming another host",
        http_request("GET http://evil.example/healthz HTTP/1.1"),
        (200, 400, 404),
    ),
    RawCase(
        "a valid request followed by pipelined garbage",
        http_request("GET /healthz HTTP/1.1", close=False) + b"GARBAGE\r\n\r\n",
        (200,),
    ),
    RawCase(
        "headers never finished (slowloris), held open",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: b",
        (),
    ),
]
HOLD_OPEN_SECONDS = 1.5
SOCKET_TIMEOUT = 10.0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(port: int, data: bytes, *, half_close: bool, wait: float) -> bytes:
    """Write ``data``; read until the server closes or ``wait`` seconds pass."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return received


def parse_answers(data: bytes) -> Iterator[Answer]:
    """HTTP/1.x responses in ``data``, framed by Content-Length, chunked, or the close.

    What follows without a status line is an HTTP/0.9 answer (status 0): a
    server answers a request line without a version that way (RFC 1945 §4.1).
    """
    while data:
        if not data.startswith(b"HTTP/"):
            yield Answer(0, {}, data)
            return
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:300]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body, rest = body + rest[:size], rest[size + 2 :]
                if size == 0:
                    break
        elif "content-length" in headers:
            length = int(headers["content-length"])
            body, rest = rest[:length], rest[length:]
        else:
            body, rest = rest, b""
        yield Answer(status, headers, body)
        data = rest


@dataclass(frozen=True)
class Live:
    kind: str
    port: int
    ids: tuple[str, ...]
    sha256: dict[str, str]


def fetch(port: int, path: str, body: bytes | None = None, content_type: str = "") -> bytes:
    headers = {"Content-Type": content_type, "Accept": "application/json"} if body else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body, headers)
    with urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT) as response:
        return response.read()


def live_baseline(kind: str, port: int) -> Live:
    """Three images stored on a live server, and what they download as."""
    ids = []
    for name, data, content_type in (
        ("png", PNG, "image/png"),
        ("gif", GIF, "image/gif"),
        ("webp", pillow("WEBP"), "image/webp"),
    ):
        answer = fetch(
            port, f"{UPLOAD}?deviceId=baseline-{name}&timestamp={quote(TS)}", data, content_type
        )
        ids.append(json.loads(answer)["id"])
    return Live(kind, port, tuple(ids), {i: sha256(fetch(port, f"{UPLOAD}/{i}")) for i in ids})


@pytest.fixture(scope="module")
def live_runserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server: LiveServer = start_runserver(tmp_path_factory.mktemp("hostile-runserver"))
    try:
        yield live_baseline("runserver", server.port)
    finally:
        stop(server.process)


@pytest.fixture(scope="module")
def live_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("hostile-serve")
    # Inline optimization: the stored bytes never change under the snapshot.
    served: Served = start_serve(tmp, workers=1, extra_env={"IMAGES_OPTIMIZE": "inline"})
    try:
        yield live_baseline("serve", served.port)
    finally:
        stop_serve(served)


@pytest.mark.parametrize(
    ("kind", "case"),
    [
        pytest.param(kind, case, id=f"{kind}: {case.name}")
        for kind in SERVER_KINDS
        for case in RAW_CASES
    ],
)
def test_hostile_framing_gets_a_4xx_and_leaves_the_server_serving(request, kind, case):
    live: Live = request.getfixturevalue(f"live_{kind}")
    wait = HOLD_OPEN_SECONDS if not case.expect else SOCKET_TIMEOUT
    received = exchange(live.port, case.request, half_close=case.half_close, wait=wait)
    if not case.expect:
        assert received == b"", received[:300]
    else:
        answers = list(parse_answers(received))
        assert answers, "no answer"
        assert answers[0].status in case.expect, (answers[0].status, answers[0].body[:300])
        for answer in answers:
            # An HTTP/0.9 answer has no headers: its body must be the contract's JSON.
            http09 = answer.status == 0
            content_type = answer.headers.get("content-type", "application/json" if http09 else "")
            status = 400 if http09 else answer.status
            check_answer(status, content_type, answer.body, (status,))
    # The server still serves, and what it stored is untouched.
    assert json.loads(fetch(live.port, "/healthz"))["status"] == "ok"
    for image_id in live.ids:
        assert sha256(fetch(live.port, f"{UPLOAD}/{image_id}")) == live.sha256[image_id]


def test_the_tables_hold_at_least_fifty_hostile_inputs():
    framing = len(RAW_CASES) * len(SERVER_KINDS)
    known_bugs = sum(bool(c.bug) for c in CASES)
    print(
        f"\nhostile inputs: {len(CASES)} through the test client, {len(RAW_CASES)} framing "
        f"cases x {len(SERVER_KINDS)} servers = {len(CASES) + framing} requests; "
        f"{known_bugs} known bugs (strict xfail)"
    )
    assert len(CASES) + len(RAW_CASES) >= 50
    assert len({c.name for c in CASES}) == len(CASES)
    assert len({c.name for c in RAW_CASES}) == len(RAW_CASES)
