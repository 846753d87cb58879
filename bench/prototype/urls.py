"""The stand-in's routes: the original README's five requests."""

from django.urls import path

from bench.prototype.collection import views

urlpatterns = [
    path(".well-known/core", views.discovery),
    path("collections", views.discovery),
    path("collections/images", views.ImageCollection.as_view()),
]
