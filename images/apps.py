from django.apps import AppConfig


class ImagesConfig(AppConfig):
    name = "images"
    verbose_name = "Images"

    def ready(self) -> None:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        from images.delivery.worker import DeliveryCollector
        from images.lifecycle.backlog import BacklogCollector
        from images.storage.objects import Bucket
        from ops import metrics

        if settings.IMAGES_STORAGE != "db":
            # The same refusal as movestorage's (API.md §15), at start-up.
            try:
                Bucket.parse(settings.IMAGES_STORAGE)
            except ValueError as exc:
                raise ImproperlyConfigured(f"IMAGES_STORAGE: {exc}") from None
        if settings.IMAGES_MQTT:
            from images.delivery.mqtt import Broker

            try:
                Broker.parse(settings.IMAGES_MQTT)
            except ValueError as exc:
                raise ImproperlyConfigured(str(exc)) from None
        metrics.register_collector(BacklogCollector())
        metrics.register_collector(DeliveryCollector())
