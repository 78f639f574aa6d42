"""Top-level routes: the landing page, the API, its OpenAPI schema and docs, the admin and its dashboard."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from caching import admin_dashboard, pages

urlpatterns = [
    path("", pages.landing, name="landing"),
    path("", include("caching.api.urls")),
    path("v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path("v1/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("admin/dashboard/", include(admin_dashboard.urlpatterns)),
    path("admin/", admin.site.urls),
]

handler400 = "caching.api.errors.json_bad_request"
handler404 = "caching.api.errors.json_not_found"
handler500 = "caching.api.errors.json_server_error"
