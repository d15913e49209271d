from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from annotation import views as annotation_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("annotation.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("annotate/", annotation_views.annotate_page, name="annotate"),
    path("annotate/next/", annotation_views.annotate_next_fragment, name="annotate-next"),
    path("", RedirectView.as_view(pattern_name="annotate", permanent=False)),
]
