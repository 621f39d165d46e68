"""URLs of the storage app: REST endpoints (under /api/v1/) in ``api_urlpatterns``, portal pages in
``urlpatterns`` (under /storage/)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from storage import api, views

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("storage/volumes/", api.VolumeListApi.as_view(), name="api-storage-volumes"),
    path("storage/volumes/<str:volume_id>/", api.VolumeDetailApi.as_view(), name="api-storage-volume"),
]

urlpatterns: list[URLPattern | URLResolver] = [
    path("volumes/", views.volume_list, name="storage-volumes"),
    path("volumes/<str:volume_id>/", views.volume_show, name="storage-volume"),
    path("volumes/<str:volume_id>/delete/", views.volume_delete, name="storage-volume-delete"),
]
