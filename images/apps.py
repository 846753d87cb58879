from django.apps import AppConfig


class ImagesConfig(AppConfig):
    name = "images"
    verbose_name = "Images"

    def ready(self) -> None:
        from images.lifecycle.backlog import BacklogCollector
        from ops import metrics

        metrics.register_collector(BacklogCollector())
