from django.apps import AppConfig


class CollectionConfig(AppConfig):
    name = "bench.prototype.collection"
    label = "prototype"
