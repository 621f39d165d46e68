"""Marketplace URLs: portal pages in ``urlpatterns``, REST endpoints (under /api/v1/) in ``api_urlpatterns``."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from marketplace import api, views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.search, name="marketplace-search"),
    path("images/<str:identifier>/", views.image_detail, name="marketplace-image"),
    path("entries/<str:identifier>/<str:email>/<str:created>/", views.entry_detail, name="marketplace-entry"),
    path(
        "entries/<str:identifier>/<str:email>/<str:created>/signed.xml",
        views.entry_download,
        name="marketplace-entry-download",
    ),
    path("endorsers/", views.endorser_list, name="marketplace-endorsers"),
    path("endorsers/<str:email>/", views.endorser_history, name="marketplace-endorser"),
    path("upload/", views.upload, name="marketplace-upload"),
    path("keys/", views.pgp_keys, name="marketplace-pgp-keys"),
    path("keys/<str:fingerprint>/revoke/", views.pgp_key_revoke, name="marketplace-pgp-key-revoke"),
]

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("marketplace/entries/", api.EntryUploadApi.as_view(), name="api-marketplace-entries"),
    path("marketplace/entries/validate/", api.EntryValidateApi.as_view(), name="api-marketplace-entry-validate"),
    path(
        "marketplace/entries/<str:identifier>/<str:email>/<str:created>/",
        api.EntryDetailApi.as_view(),
        name="api-marketplace-entry",
    ),
    path("marketplace/images/", api.ImageListApi.as_view(), name="api-marketplace-images"),
    path("marketplace/images/<str:identifier>/", api.ImageDetailApi.as_view(), name="api-marketplace-image"),
    path("marketplace/endorsers/", api.EndorserListApi.as_view(), name="api-marketplace-endorsers"),
    path("marketplace/endorsers/<str:email>/", api.EndorserHistoryApi.as_view(), name="api-marketplace-endorser"),
    path("accounts/pgp-keys/", api.PgpKeyListApi.as_view(), name="api-accounts-pgp-keys"),
    path(
        "accounts/pgp-keys/<str:fingerprint>/revoke/",
        api.PgpKeyRevokeApi.as_view(),
        name="api-accounts-pgp-key-revoke",
    ),
]
