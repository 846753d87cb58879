from django.apps import AppConfig


class ImagesConfig(AppConfig):
    name = "images"
    verbose_name = "Images"

    def ready(self) -> None:
        from images.lifecycle.optimizer import BacklogCollector
        from ops import metrics

        metrics.register_collector(BacklogCollector())
