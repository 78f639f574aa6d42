"""The Django project; importing it loads the Celery app, so tasks enqueued from Django use its settings."""

from predcache_site.celery import app as celery_app

__all__ = ("celery_app",)
