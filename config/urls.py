from django.contrib.auth.views import LogoutView
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from images.http import errors, export, listings, live, thumbnails, views
from images.pages import views as pages
from ops import views as ops

urlpatterns = [
    path("healthz", ops.healthz, name="healthz"),
    # Open in every mode: aggregate figures (methods, routes, statuses), no
    # image data or device ids; restrict it at the reverse proxy if need be.
    path("metrics", ops.metrics_view, name="metrics"),
    # The OpenAPI 3 schema (YAML; JSON with Accept: application/json) and Swagger UI.
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path(".well-known/core", views.WellKnownCoreView.as_view(), name="well-known-core"),
    path("collections", views.CollectionsView.as_view(), name="collections"),
    path("collections/images", views.ImageCollectionView.as_view(), name="images"),
    path("collections/images/<uuid:image_id>", views.ImageItemView.as_view(), name="image"),
    path(
        "collections/images/<uuid:image_id>/thumbnail",
        thumbnails.ImageThumbnailView.as_view(),
        name="image-thumbnail",
    ),
    path("devices", listings.DeviceListView.as_view(), name="devices"),
    # Device ids may hold "/", which arrives decoded (%2F -> /): the id is
    # everything between "devices/" and the last "/images".
    re_path(
        r"^devices/(?P<device_id>.+)/images/latest$",
        live.LatestImageView.as_view(),
        name="device-latest",
    ),
    re_path(
        r"^devices/(?P<device_id>.+)/events$", live.DeviceEventsView.as_view(), name="device-events"
    ),
    path("events", live.EventsView.as_view(), name="events"),
    re_path(
        r"^devices/(?P<device_id>.+)/images$",
        listings.DeviceImagesView.as_view(),
        name="device-images",
    ),
    re_path(
        r"^devices/(?P<device_id>.+)/export$",
        export.DeviceExportView.as_view(),
        name="device-export",
    ),
    # The gallery (HTML for people); in token mode behind a login.
    path("accounts/login/", pages.GalleryLoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("", pages.gallery_home, name="gallery"),
    re_path(r"^gallery/devices/(?P<device_id>.+)$", pages.gallery_device, name="gallery-device"),
    path("gallery/images/<uuid:image_id>", pages.gallery_image, name="gallery-image"),
    path(
        "gallery/images/<uuid:image_id>/delete",
        pages.gallery_image_delete,
        name="gallery-image-delete",
    ),
    # Anything else: a 404 in the contract's error format, in development too
    # (Django's DEBUG 404 page is HTML), whatever the method: exempt from the
    # CSRF check, whose refusal is an HTML page (and there is nothing to protect).
    re_path(r"", csrf_exempt(errors.not_found), name="not-found"),
]

handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.not_found
handler500 = errors.server_error
