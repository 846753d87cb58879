from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.dateparse import parse_datetime
from rest_framework import generics
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import JSONParser

from bench.prototype.collection.models import Image
from bench.prototype.collection.parsers import HexCBORParser
from bench.prototype.collection.serializers import ImageSerializer


def discovery(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        '</collections/images>;rt="simple.act";if="core.b"',
        content_type="application/link-format",
    )


class ImageCollection(generics.CreateAPIView):
    """POST stores an image; GET downloads one, found through ``get_queryset``."""

    serializer_class = ImageSerializer
    parser_classes = [JSONParser, HexCBORParser]

    def get_queryset(self) -> QuerySet[Image]:
        device_id = self.request.query_params.get("deviceId")
        timestamp = self.request.query_params.get("timestamp")
        try:
            moment = parse_datetime(timestamp or "")
        except ValueError:
            moment = None
        if not device_id or moment is None:
            raise ValidationError("deviceId and timestamp are required")
        return Image.objects.filter(device_id=device_id, timestamp=moment)

    def get(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        image = self.get_queryset().first()
        if image is None:
            raise NotFound()
        return HttpResponse(bytes(image.data), content_type=image.content_type)
