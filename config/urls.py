from django.urls import path, re_path

from images.http import errors, views

urlpatterns = [
    path(".well-known/core", views.WellKnownCoreView.as_view(), name="well-known-core"),
    path("collections", views.CollectionsView.as_view(), name="collections"),
    path("collections/images", views.ImageCollectionView.as_view(), name="images"),
    path("collections/images/<uuid:image_id>", views.ImageItemView.as_view(), name="image"),
    # Anything else: a 404 in the contract's error format, in development too
    # (Django's DEBUG 404 page is HTML).
    re_path(r"", errors.not_found),
]

handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.not_found
handler500 = errors.server_error
