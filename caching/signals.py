"""Receivers that keep this process's in-memory copies, and the periodic tasks, in step with the database."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.test.signals import setting_changed
from rest_framework_api_key.models import APIKey

from caching.api.authentication import forget_verified_keys
from caching.models import ApiKeyGrant, CachePolicy, ModelEndpoint, WarmSet
from caching.runtime import reset_runtime
from caching.selectors import served_models_forget
from caching.services.schedules import (
    model_schedules_sync,
    schedules_forget_model,
    schedules_forget_warm_set,
    warm_set_schedule_sync,
)


@receiver([post_save, post_delete], sender=ModelEndpoint)
@receiver([post_save, post_delete], sender=CachePolicy)
def _model_changed(**kwargs: Any) -> None:
    served_models_forget()


@receiver([post_save, post_delete], sender=APIKey)
@receiver([post_save, post_delete], sender=ApiKeyGrant)
def _api_key_changed(**kwargs: Any) -> None:
    forget_verified_keys()


@receiver(setting_changed)
def _setting_changed(setting: str, **kwargs: Any) -> None:
    if setting == "REDIS_URL" or setting.startswith("PREDCACHE_"):
        reset_runtime()
        served_models_forget()
        forget_verified_keys()


@receiver(post_save, sender=ModelEndpoint)
def _model_saved(instance: ModelEndpoint, raw: bool = False, **kwargs: Any) -> None:
    if not raw:  # not while loading fixtures
        model_schedules_sync(model=instance)


@receiver(post_save, sender=CachePolicy)
def _policy_saved(instance: CachePolicy, raw: bool = False, **kwargs: Any) -> None:
    if not raw:
        model_schedules_sync(model=instance.model)


@receiver(post_delete, sender=ModelEndpoint)
def _model_deleted(instance: ModelEndpoint, **kwargs: Any) -> None:
    schedules_forget_model(model_id=instance.pk)


@receiver(post_save, sender=WarmSet)
def _warm_set_saved(instance: WarmSet, raw: bool = False, **kwargs: Any) -> None:
    if not raw:
        warm_set_schedule_sync(warm_set=instance)


@receiver(post_delete, sender=WarmSet)
def _warm_set_deleted(instance: WarmSet, **kwargs: Any) -> None:
    schedules_forget_warm_set(warm_set_id=instance.pk)
