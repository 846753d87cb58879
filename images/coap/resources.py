"""CoAP resources: a thin front end over the HTTP side's domain code (API.md §5).

Every resource validates through the serializers HTTP uses, parses bodies with
the same parsers, renders with the same renderers, and calls the same
services, selectors and discovery functions. What is CoAP's own is here:
options instead of headers, Block1/Block2 (see ``blockwise``), response
codes (see ``errors``) and, in token mode, OSCORE instead of bearer tokens
(see ``security``). Database and CPU-heavy work (decoding, compressing)
runs in worker threads through ``sync_to_async``; the event loop only moves
blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from aiocoap import Message, error, resource
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from rest_framework.renderers import BaseRenderer, JSONRenderer

from formats import linkformat
from formats.cbor import CBOR_MEDIA_TYPE, CBORRenderer
from formats.linkformat import FilterError, Link, LinkFormatRenderer, parse_filters
from images import access, discovery, listings, selectors, storage, uploads
from images.access import ANONYMOUS
from images.coap.blockwise import Block1Assembler, block2_slice
from images.coap.edge import in_worker, log_request
from images.coap.errors import error_response
from images.coap.security import Access
from images.errors import (
    DomainError,
    ImageNotFound,
    InvalidInput,
    UnsupportedMediaType,
)
from images.models import Image
from images.serializers import (
    ImageKeySerializer,
    image_metadata,
    validated,
)
from images.storage.cache import BlobCache

JSON = 50
CBOR = 60
LINK_FORMAT = linkformat.CONTENT_FORMAT
OCTET_STREAM = 42

# The envelopes and the raw image types of API.md §2 that have a CoAP
# Content-Format (RFC 7252 §12.3 registry): 21 gif, 22 jpeg, 23 png, 42.
UPLOAD_FORMATS: dict[int, str] = {
    JSON: "application/json",
    CBOR: CBOR_MEDIA_TYPE,
    **{
        number: media_type
        for media_type in sorted(uploads.RAW_IMAGE_TYPES)
        if (number := discovery.content_format(media_type)) is not None
    },
}
# Metadata formats, rendered exactly as HTTP renders them.
METADATA_RENDERERS: dict[int, BaseRenderer] = {
    CBOR: CBORRenderer(),
    JSON: JSONRenderer(),
    LINK_FORMAT: LinkFormatRenderer(),
}
# Options that differ between the blocks of one Block1 upload; the others
# identify the transfer.
_NOT_TRANSFER_KEY = (OptionNumber.BLOCK1, OptionNumber.BLOCK2, OptionNumber.OBSERVE)


class FrontEnd(resource.Resource):
    """Base resource: maps domain errors at the edge and serves GET answers block-wise.

    Block-wise transfers are handled by the resources themselves, within
    bounds (see ``blockwise``), never by aiocoap's unbounded spool.
    """

    # Where the site mounts this resource (set by ``images.coap.server``):
    # a resource sees only the rest of the path below it.
    mounted_at: tuple[str, ...] = ()

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False

    async def render(self, request: Message) -> Message:
        """The answer, and one JSON line per request on the ``requests`` logger, as HTTP writes."""
        started = time.perf_counter()
        code: Code | None = None
        try:
            response = await self._answer(request)
            code = response.code
            return response
        except error.RenderableError as exc:
            code = getattr(exc, "code", Code.INTERNAL_SERVER_ERROR)
            raise
        finally:
            path = (*self.mounted_at, *request.opt.uri_path)
            log_request(request, path, code, time.perf_counter() - started)

    async def _answer(self, request: Message) -> Message:
        try:
            response = await super().render(request)
        except DomainError as exc:
            return error_response(exc)
        if request.code == Code.GET and response.code == Code.CONTENT:
            total = len(response.payload)
            response.payload, response.opt.block2 = block2_slice(
                response.payload,
                request.opt.block2,
                max_szx=request.remote.maximum_block_size_exp,
                max_payload=request.remote.maximum_payload_size,
            )
            if response.opt.block2 is not None and response.opt.block2.block_number == 0:
                response.opt.size2 = total  # RFC 7959 §4: the client learns the total size
        return response


class WellKnownCore(FrontEnd):
    """``GET /.well-known/core``: RFC 6690 discovery, every §4.1 filter ANDed."""

    async def render_get(self, request: Message) -> Message:
        _accept_link_format(request)
        try:
            filters = parse_filters(request.opt.uri_query)
        except FilterError as exc:
            raise InvalidInput(str(exc), field="query") from None
        return _link_format(await in_worker(discovery.links_discover)(filters))


class Collections(FrontEnd):
    """``GET /collections``: the collections, in link format."""

    async def render_get(self, request: Message) -> Message:
        _accept_link_format(request)
        return _link_format(discovery.links_collections())


class ImageDownloads(FrontEnd):
    """Serving one stored image: ETag, 2.03 Valid, Accept, Max-Age (API.md §3, §5).

    ``access`` decides who may read and upload (API.md §6).
    """

    def __init__(self, *, blobs: BlobCache, access: Access) -> None:
        super().__init__()
        self._blobs = blobs
        self._access = access

    async def representation(self, request: Message, image: Image, *, max_age: int) -> Message:
        """The image (or, when Accept names one, its metadata) as a 2.05 or 2.03.

        ``image`` may come without its bytes; they are read only when sent.
        """
        image_format = discovery.content_format(image.content_type) or OCTET_STREAM
        accept = request.opt.accept
        if accept is not None and int(accept) != image_format:
            if int(accept) in METADATA_RENDERERS:
                return _metadata_response(image, int(accept), code=Code.CONTENT)
            raise error.NotAcceptable(
                f"this image is Content-Format {image_format}; its metadata is 40, 50 or 60"
            )
        etag = etag_for(image)
        # RFC 7252 §5.10.6.2: a validation request naming the current ETag gets
        # 2.03 Valid with that ETag (and a fresh Max-Age), no payload.
        if etag in request.opt.etags:
            return Message(code=Code.VALID, etag=etag, max_age=max_age)
        data = self._blobs.get(image.sha256)
        if data is None:
            data = await in_worker(_image_bytes)(image)
            self._blobs.put(image.sha256, data)
        return Message(
            code=Code.CONTENT,
            payload=data,
            content_format=image_format,
            etag=etag,
            max_age=max_age,
        )


class ImageCollection(ImageDownloads):
    """``POST /collections/images`` (upload) and ``GET`` by ``deviceId`` and ``timestamp``."""

    def __init__(self, *, blobs: BlobCache, assembler: Block1Assembler, access: Access) -> None:
        super().__init__(blobs=blobs, access=access)
        self._assembler = assembler

    async def render_post(self, request: Message) -> Message:
        """Upload: :class:`images.uploads.Upload` judges and stores; this only translates.

        The first block (or the only message) is judged before the client
        sends the rest: type, announced size (Size1), and for a raw image its
        key, who may upload as that device, and the rates.
        """
        client = self._access.authenticate(request)
        upload = uploads.Upload(
            media_type=_upload_media_type(request),
            principal=client or ANONYMOUS,
            query=_query(request),
            client=_client_address(request),
        )
        answer_format = _metadata_format(request)
        block1 = request.opt.block1
        first = block1 is None or block1.block_number == 0
        if first:
            size = request.opt.size1 if block1 is not None else len(request.payload)
            await in_worker(upload.admit)(size=size)
        if block1 is None:
            body = request.payload
        else:
            key = (request.remote.blockwise_key, request.get_cache_key(_NOT_TRANSFER_KEY))
            assembled = self._assembler.feed(
                key,
                block1,
                request.payload,
                limit=uploads.body_limit(upload.media_type),
                size1=request.opt.size1,
            )
            if assembled is None:
                # 2.31 Continue acknowledges the block (RFC 7959 §2.9.1); the client sends the next.
                return Message(code=Code.CONTINUE, block1=block1)
            body = assembled
        result = await in_worker(upload.store)(body, admitted=first)
        image = result.image
        # A retried upload gets the very same answer (API.md §9): 2.01, same Location-Path.
        response = _metadata_response(image, answer_format, code=Code.CREATED)
        response.opt.location_path = tuple(image.href.strip("/").split("/"))
        if block1 is not None:
            # RFC 7959 §2.3: the final response names the last block received.
            response.opt.block1 = (block1.block_number, False, block1.size_exponent)
        return response

    async def render_get(self, request: Message) -> Message:
        principal = self._access.authenticate(request) or ANONYMOUS
        image = await in_worker(_find)(_query(request))
        access.read_check(principal, image.device_id)
        max_age, _ = access.image_lifetime(image, by_id=False)
        return await self.representation(request, image, max_age=max_age)


class ImageItem(ImageDownloads, resource.PathCapable):
    """``GET /collections/images/{id}``: the Location-Path of an upload."""

    async def render_get(self, request: Message) -> Message:
        principal = self._access.authenticate(request) or ANONYMOUS
        if len(request.opt.uri_path) != 1:
            raise ImageNotFound("no resource at this path")
        image = await in_worker(selectors.image_get)(
            image_id=request.opt.uri_path[0], with_data=False
        )
        access.read_check(principal, image.device_id)
        max_age, _ = access.image_lifetime(image, by_id=True)
        return await self.representation(request, image, max_age=max_age)


class Listing(FrontEnd):
    """The listings of API.md §4, as HTTP serves them (``images.listings``).

    CBOR by default, JSON or link format by Accept. CoAP has no Link header,
    so in link format the next page is one more link, ``rel="next"`` (RFC 8288).
    """

    def __init__(self, *, access: Access) -> None:
        super().__init__()
        self._access = access

    async def respond(
        self, request: Message, build: Callable[[access.Principal], listings.Listing]
    ) -> Message:
        principal = self._access.authenticate(request) or ANONYMOUS
        content_format = _metadata_format(request)
        listing = await in_worker(build)(principal)
        if content_format != LINK_FORMAT:
            payload = METADATA_RENDERERS[content_format].render(listing.data())
            return Message(payload=payload, content_format=content_format)
        links = listing.links()
        if listing.next_url is not None:
            links.append(Link(listing.next_url, (("rel", "next"),)))
        return _link_format(links)


class DeviceList(Listing):
    """``GET /devices``."""

    async def render_get(self, request: Message) -> Message:
        query = _query(request)

        def build(principal: access.Principal) -> listings.Listing:
            return listings.devices_page(query, only=access.visible_device(principal))

        return await self.respond(request, build)


class DeviceImages(Listing, resource.PathCapable):
    """``GET /devices/{deviceId}/images`` (the id is one Uri-Path option, ``/`` and all)."""

    async def render_get(self, request: Message) -> Message:
        path = request.opt.uri_path
        if len(path) != 2 or path[1] != "images":
            raise ImageNotFound("no resource at this path")
        query = _query(request)

        def build(principal: access.Principal) -> listings.Listing:
            access.read_check(principal, path[0])
            return listings.device_images_page(path[0], query)

        return await self.respond(request, build)


def etag_for(image: Image) -> bytes:
    """The first 8 bytes of the stored sha256 (RFC 7252 §5.10.6: at most 8 bytes)."""
    return bytes.fromhex(image.sha256[:16])


def _find(query: Mapping[str, str]) -> Image:
    return selectors.image_find(with_data=False, **validated(ImageKeySerializer, query))


def _image_bytes(image: Image) -> bytes:
    return storage.image_bytes(selectors.image_get(image_id=image.id))


def _query(request: Message) -> dict[str, str]:
    """Uri-Query options as ``name: value`` (the last one wins, as in a query string)."""
    pairs = (option.partition("=") for option in request.opt.uri_query)
    return {name: value for name, _, value in pairs}


def _client_address(request: Message) -> str:
    """The peer's address, as rates count clients (without the port, which a client may change)."""
    return urlsplit(f"coap://{request.remote.hostinfo}").hostname or request.remote.hostinfo


def _upload_media_type(request: Message) -> str:
    accepted = ", ".join(str(number) for number in sorted(UPLOAD_FORMATS))
    if request.opt.content_format is None:
        raise UnsupportedMediaType(f"an upload needs a Content-Format ({accepted})")
    number = int(request.opt.content_format)
    if number not in UPLOAD_FORMATS:
        raise UnsupportedMediaType(f"unsupported Content-Format {number}; send one of {accepted}")
    return UPLOAD_FORMATS[number]


def _metadata_format(request: Message) -> int:
    """CBOR unless Accept asks for JSON or link format (API.md §9); else 4.06."""
    if request.opt.accept is None:
        return CBOR
    if int(request.opt.accept) not in METADATA_RENDERERS:
        raise error.NotAcceptable("metadata is served as Content-Format 60, 50 or 40")
    return int(request.opt.accept)


def _metadata_response(image: Image, content_format: int, *, code: Code) -> Message:
    data: Any = (
        discovery.image_link(image) if content_format == LINK_FORMAT else image_metadata(image)
    )
    payload = METADATA_RENDERERS[content_format].render(data)
    return Message(code=code, payload=payload, content_format=content_format)


def _accept_link_format(request: Message) -> None:
    if request.opt.accept is not None and int(request.opt.accept) != LINK_FORMAT:
        raise error.NotAcceptable("discovery is served as Content-Format 40 only")


def _link_format(links: Sequence[Link]) -> Message:
    return Message(
        payload=METADATA_RENDERERS[LINK_FORMAT].render(links), content_format=LINK_FORMAT
    )
