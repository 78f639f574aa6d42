"""Receivers that keep this process's in-memory copies in step with the database."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.test.signals import setting_changed
from rest_framework_api_key.models import APIKey

from caching.api.authentication import forget_verified_keys
from caching.models import CachePolicy, ModelEndpoint
from caching.runtime import reset_runtime
from caching.selectors import served_models_forget


@receiver([post_save, post_delete], sender=ModelEndpoint)
@receiver([post_save, post_delete], sender=CachePolicy)
def _model_changed(**kwargs: Any) -> None:
    served_models_forget()


@receiver([post_save, post_delete], sender=APIKey)
def _api_key_changed(**kwargs: Any) -> None:
    forget_verified_keys()


@receiver(setting_changed)
def _setting_changed(setting: str, **kwargs: Any) -> None:
    if setting == "REDIS_URL" or setting.startswith("PREDCACHE_"):
        reset_runtime()
        served_models_forget()
        forget_verified_keys()
