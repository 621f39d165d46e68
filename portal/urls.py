from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import urls as accounts_urls
from accounts import views as accounts_views
from compute import urls as compute_urls
from core import api as core_api
from core import converters  # noqa: F401 - registers the <id:…> path converter
from marketplace import urls as marketplace_urls
from portal import console, views
from portal.api import ApiRootView
from storage import urls as storage_urls

# The Django admin names the site too (its login page said "Django administration").
admin.site.site_header = f"{settings.SITE_NAME} administration"
admin.site.site_title = settings.SITE_NAME
admin.site.index_title = "Site data"

api_v1 = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/audit/", core_api.AuditListApi.as_view(), name="api-admin-audit"),
    *accounts_urls.api_urlpatterns,
    *marketplace_urls.api_urlpatterns,
    *compute_urls.api_urlpatterns,
    *storage_urls.api_urlpatterns,
]

urlpatterns = [
    path("", views.home, name="home"),
    path("notices/<id:notice_id>/dismiss/", views.trust_notice_dismiss, name="trust-notice-dismiss"),
    path("dashboard/instances/", views.dashboard_instances, name="dashboard-instances"),
    path("instances/", include(compute_urls.instance_urlpatterns)),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", accounts_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include(accounts_urls.urlpatterns)),
    path("marketplace/", include(marketplace_urls.urlpatterns)),
    path("console/", console.console_overview, name="console"),
    path("console/audit/", console.console_audit, name="console-audit"),
    path("console/", include(compute_urls.console_urlpatterns)),
    # Compute's volume page (storage's, with attach and detach) answers before storage's own (DESIGN §1).
    path("storage/", include(compute_urls.urlpatterns)),
    path("storage/", include(storage_urls.urlpatterns)),
    path("api/v1/", include(api_v1)),
    path("admin/", admin.site.urls),
]

handler403 = "portal.views.permission_denied"
handler404 = "portal.views.page_not_found"
handler500 = "portal.views.server_error"
