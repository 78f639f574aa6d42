"""Routes of the public API."""

from django.urls import path, re_path

from caching.api import health, views

urlpatterns = [
    # The name is validated in the view so that any name, however hostile, gets a JSON 404.
    re_path(r"^v1/models/(?P<model>[^/]*):predict$", views.PredictView.as_view(), name="predict"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]
