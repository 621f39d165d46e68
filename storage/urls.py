"""URLs of the storage app: REST endpoints (under /api/v1/) in ``api_urlpatterns``, portal pages in
``urlpatterns`` (under /storage/)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from storage import api, views

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("storage/volumes/", api.VolumeListApi.as_view(), name="api-storage-volumes"),
    path("storage/volumes/<str:volume_id>/", api.VolumeDetailApi.as_view(), name="api-storage-volume"),
]

# The htmx partials live under parts/: compute's volume page answers volumes/<id>/ first (DESIGN §1).
urlpatterns: list[URLPattern | URLResolver] = [
    path("volumes/", views.volume_list, name="storage-volumes"),
    path("parts/volumes/", views.volume_rows, name="storage-volumes-live"),
    path("parts/volume-preview/", views.volume_preview, name="storage-volume-preview"),
    path("parts/volumes/<str:volume_id>/state/", views.volume_status, name="storage-volume-status"),
    path("volumes/<str:volume_id>/", views.volume_show, name="storage-volume"),
    path("volumes/<str:volume_id>/delete/", views.volume_delete, name="storage-volume-delete"),
]
