from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from annotation import quality_views
from annotation import views as annotation_views
from config import health

# JSON under /api/, Django's pages elsewhere (config/api_errors.py).
handler400 = "config.api_errors.bad_request"
handler403 = "config.api_errors.permission_denied"
handler404 = "config.api_errors.page_not_found"
handler500 = "config.api_errors.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("annotation.research_urls")),
    path("api/v1/", include("training.urls")),
    path("api/v1/", include("annotation.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("annotate/", annotation_views.annotate_page, name="annotate"),
    path("annotate/next/", annotation_views.annotate_next_fragment, name="annotate-next"),
    path("quality/", quality_views.quality_index, name="quality"),
    path("quality/<int:batch_id>/", quality_views.quality_batch, name="quality-batch"),
    path("", RedirectView.as_view(pattern_name="annotate", permanent=False)),
]
