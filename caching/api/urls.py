"""Routes of the public API and of the staff management API; the predict routes are served lean."""

from django.urls import path, re_path

from caching.api import admin_api, health, metrics, vertex, views

urlpatterns = [
    # The name is validated in the view so that any name, however hostile, gets a JSON 404.
    re_path(r"^v1/models/(?P<model>[^/]*):predict$", views.predict, name="predict"),
    re_path(rf"^{vertex.ENDPOINT_PATH}:predict$", vertex.vertex_predict, name="vertex-predict"),
    re_path(rf"^{vertex.ENDPOINT_PATH}$", vertex.VertexEndpointView.as_view(), name="vertex-endpoint"),
    re_path(r"^v1/admin/models/(?P<model>[^/]*):purge$", admin_api.PurgeView.as_view(), name="admin-purge"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
]
