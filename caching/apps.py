"""App configuration: wires the in-process caches to model changes."""

from django.apps import AppConfig


class CachingConfig(AppConfig):
    name = "caching"
    verbose_name = "Prediction cache"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from caching import signals  # noqa: F401  (connects receivers)
