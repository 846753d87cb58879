"""Gallery pages (API.md §8): thin views over the same selectors and services as the API.

Every page is server-rendered HTML with one same-origin stylesheet; images
come from the API's own URLs (thumbnails and downloads). Only the device
page runs script: one same-origin file that adds new images as the device's
event stream announces them (API.md §13); everything else runs none.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView, redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_safe

from formats.rfc3339 import format_timestamp
from images import access, discovery, identity, live, selectors, services, thumbnails
from images.access import Principal
from images.errors import ImageNotFound
from images.models import Image
from images.pages.forms import DeviceImagesForm, DeviceListForm

DEVICES_PER_PAGE = 24
IMAGES_PER_PAGE = 48
# Thumbnails are fetched at twice their CSS size, for high-density screens.
TILE_SIZE = 256
# What browsers show in <img>; anything else (TIFF) is shown as a large thumbnail.
BROWSER_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# Pages load nothing but our own stylesheet and images, and run no script.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
# Any id: an image page's URL is this one with the id cut off (see ``_live``).
_SOME_ID = uuid.UUID(int=0)


@dataclass(frozen=True)
class Tile:
    """An image as a gallery shows it: a thumbnail with its display size, and a link."""

    image: Image
    thumbnail_url: str
    width: int
    height: int
    page_url: str


def tile(image: Image, size: int = TILE_SIZE) -> Tile:
    scale = min(1.0, size / max(image.width, image.height))
    return Tile(
        image=image,
        thumbnail_url=f"{image.href}/thumbnail?size={size}",
        width=max(1, round(image.width * scale)),
        height=max(1, round(image.height * scale)),
        page_url=reverse("gallery-image", kwargs={"image_id": image.id}),
    )


def _render(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    status: int = 200,
    *,
    csp: str = CONTENT_SECURITY_POLICY,
) -> HttpResponse:
    response = render(request, f"images/gallery/{template}", context, status=status)
    response["Content-Security-Policy"] = csp
    return response


def _live(
    request: HttpRequest,
    device_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    has_older: bool,
) -> dict[str, Any]:
    """What ``gallery-live.js`` needs (as ``data-`` attributes) to add new images to a grid.

    ``start`` and ``end`` bound the dates shown (``end`` exclusive): an image
    outside them is not added. With ``has_older``, an image older than the
    page's last one belongs to a later page and is not added either.
    """
    image_url = reverse("gallery-image", kwargs={"image_id": _SOME_ID})
    return {
        # Percent-encoded, "/" too, as the API's own device links are.
        "events_url": _events_origin(request) + f"/devices/{quote(device_id, safe='')}/events",
        "image_url_prefix": image_url.removesuffix(str(_SOME_ID)),
        "tile_size": TILE_SIZE,
        "start": format_timestamp(start) if start is not None else "",
        "end": format_timestamp(end) if end is not None else "",
        "has_older": has_older,
    }


def _events_origin(request: HttpRequest) -> str:
    """Where the page opens its stream: here ("") or ``serve``'s stream listener.

    A browser that reached ``serve`` directly (its Host names a port) opens
    the listener on its own port; behind a proxy (Host without a port) the
    proxy routes the stream path there (docs/live.md), so the page's own
    origin serves.
    """
    host = request.get_host()
    origin = live.listener_origin(host)
    explicit_port = ":" in host.rsplit("]", 1)[-1]
    return origin if origin is not None and explicit_port else ""


def _live_policy(live: dict[str, Any]) -> str:
    """The page's policy: our own script, which may connect to its event stream only."""
    events_url = urlsplit(live["events_url"])
    elsewhere = f" {events_url.scheme}://{events_url.netloc}" if events_url.netloc else ""
    return f"{CONTENT_SECURITY_POLICY}; script-src 'self'; connect-src 'self'{elsewhere}"


def _gallery_access(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """In token mode, only readers may see the gallery (API.md §8): a staff user's
    login, or a reader or device token; anyone else is sent to the login page."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not _allows(request, access.may_read_every_device):
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return wrapper


class StaffAuthenticationForm(AuthenticationForm):
    """Django's login form, for staff users only (like the admin's)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "not_staff": "This account may not use the gallery; ask for a staff account.",
    }

    def confirm_login_allowed(self, user: AbstractBaseUser) -> None:
        super().confirm_login_allowed(user)
        if not getattr(user, "is_staff", False):
            raise ValidationError(self.error_messages["not_staff"], code="not_staff")


class GalleryLoginView(LoginView):
    """``/accounts/login/``: Django's login view in the gallery's style and CSP."""

    authentication_form = StaffAuthenticationForm

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> HttpResponse:
        response = super().render_to_response(context, **kwargs)
        response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response


def _not_found_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A missing device or image is an HTML 404 page here, not the API's JSON error."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ImageNotFound as exc:
            return _render(request, "not_found.html", {"message": exc.message}, status=404)

    return wrapper


@require_safe
@_gallery_access
def gallery_home(request: HttpRequest) -> HttpResponse:
    """``/``: the devices with their image counts and latest image; how to send one if none."""
    form = DeviceListForm(request.GET)
    after = (form.cleaned_data["after"] or None) if form.is_valid() else None
    page = selectors.device_list(after=after, limit=DEVICES_PER_PAGE)
    latest = selectors.device_latest_images(devices=page.items)
    cards = [
        (device, tile(latest[device.device_id]) if device.device_id in latest else None)
        for device in page.items
    ]
    more_url = None
    if page.has_more:
        more_url = "?" + urlencode({"after": page.items[-1].device_id})
    return _render(
        request,
        "home.html",
        {
            "cards": cards,
            "paged": after is not None,
            "more_url": more_url,
            "upload_url": request.build_absolute_uri("/collections/images"),
            "example_timestamp": format_timestamp(datetime.now(UTC).replace(microsecond=0)),
        },
    )


@require_safe
@_gallery_access
@_not_found_page
def gallery_device(request: HttpRequest, device_id: str) -> HttpResponse:
    """A device's images, newest first, in a paged grid with a date filter."""
    device = selectors.device_summary(device_id=device_id)
    form = DeviceImagesForm(request.GET)
    valid = form.is_valid()
    page = selectors.device_images(
        device_id=device_id,
        start=form.start() if valid else None,
        end=form.end() if valid else None,
        after=form.before() if valid else None,
        limit=IMAGES_PER_PAGE,
        newest_first=True,
    )
    filters = {
        name: request.GET[name] for name in ("from", "to") if valid and request.GET.get(name)
    }
    bounds = {"from": form.start(), "to": form.end()} if valid else {}
    export_query = urlencode(
        {name: format_timestamp(value) for name, value in bounds.items() if value is not None}
    )
    export_url = discovery.device_export_href(device_id) + (
        f"?{export_query}" if export_query else ""
    )
    older_url = None
    if page.has_more:
        older = {**filters, "before": format_timestamp(page.items[-1].timestamp)}
        older_url = "?" + urlencode(older)
    paged = valid and form.before() is not None
    # Only the newest page grows as images arrive; an older page stays as it is.
    live = (
        None
        if paged
        else _live(
            request,
            device_id,
            start=bounds.get("from"),
            end=bounds.get("to"),
            has_older=page.has_more,
        )
    )
    return _render(
        request,
        "device.html",
        {
            "device": device,
            "form": form,
            "tiles": [tile(image) for image in page.items],
            "filtered": bool(filters),
            "paged": paged,
            "newest_url": "?" + urlencode(filters),
            "older_url": older_url,
            "export_url": export_url,
            "live": live,
        },
        csp=_live_policy(live) if live is not None else CONTENT_SECURITY_POLICY,
    )


@require_safe
@_gallery_access
@_not_found_page
def gallery_image(request: HttpRequest, image_id: uuid.UUID) -> HttpResponse:
    """One image: the full picture, its metadata, download and delete, and its neighbours."""
    image = selectors.image_get(image_id=image_id, with_data=False)
    newer = selectors.device_images(device_id=image.device_id, after=image.timestamp, limit=1).items
    older = selectors.device_images(
        device_id=image.device_id, after=image.timestamp, limit=1, newest_first=True
    ).items
    preview = None if image.content_type in BROWSER_TYPES else tile(image, thumbnails.SIZE_MAX)
    saved = image.original_size - image.stored_size
    return _render(
        request,
        "image.html",
        {
            "image": image,
            "display": preview,
            "saved": saved,
            "saved_percent": 100 * saved / image.original_size,
            "newer": tile(newer[0]) if newer else None,
            "older": tile(older[0]) if older else None,
        },
    )


@require_http_methods(["GET", "HEAD", "POST"])
@_gallery_access
@_not_found_page
def gallery_image_delete(request: HttpRequest, image_id: uuid.UUID) -> HttpResponse:
    """GET asks for confirmation; POST (CSRF-checked by Django's middleware) deletes.

    In token mode only those who may delete the image through the API may
    (:func:`images.access.may_delete`). After deleting, back to the
    device's page, or to ``/`` if that was its last image.
    """
    image = selectors.image_get(image_id=image_id, with_data=False)
    if not _allows(request, lambda who: access.may_delete(who, image.device_id)):
        raise PermissionDenied("deleting needs a staff user or the image's device token")
    if request.method != "POST":
        return _render(request, "image_delete.html", {"image": image, "tile": tile(image)})
    services.image_delete(image_id=image.id)
    messages.success(
        request,
        f"Deleted the image from {image.device_id} taken {image.timestamp:%Y-%m-%d %H:%M:%S} UTC.",
    )
    if selectors.device_has_images(device_id=image.device_id):
        return redirect("gallery-device", device_id=image.device_id)
    return redirect("gallery")


def _allows(request: HttpRequest, rule: Callable[[Principal], bool]) -> bool:
    """Whether a page may be shown; a refused bearer token counts as none."""
    return not access.rules_apply() or rule(identity.request_principal_or_anonymous(request))
