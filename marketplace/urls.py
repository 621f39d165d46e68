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
    # The staff console.
    path("console/", views.console_images, name="marketplace-console"),
    path("console/images/<str:identifier>/", views.console_image, name="marketplace-console-image"),
    path(
        "console/images/<str:identifier>/endorse/",
        views.console_image_endorse,
        name="marketplace-console-image-endorse",
    ),
    path(
        "console/images/<str:identifier>/deprecate/",
        views.console_image_deprecate,
        name="marketplace-console-image-deprecate",
    ),
    path("console/keys/<str:fingerprint>/revoke/", views.console_key_revoke, name="marketplace-console-key-revoke"),
    path("console/policy/", views.console_policy, name="marketplace-console-policy"),
    path("console/policy/import/", views.console_policy_import, name="marketplace-console-policy-import"),
    path("console/policy/confirm/", views.console_policy_confirm, name="marketplace-console-policy-confirm"),
    path("console/site-key/", views.console_site_key, name="marketplace-console-site-key"),
]

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("marketplace/entries/", api.EntryListUploadApi.as_view(), name="api-marketplace-entries"),
    path("marketplace/entries/validate/", api.EntryValidateApi.as_view(), name="api-marketplace-entry-validate"),
    path(
        "marketplace/entries/<str:identifier>/<str:email>/<str:created>/",
        api.EntryDetailApi.as_view(),
        name="api-marketplace-entry",
    ),
    path("marketplace/images/", api.ImageListApi.as_view(), name="api-marketplace-images"),
    path("marketplace/images/<str:identifier>/", api.ImageDetailApi.as_view(), name="api-marketplace-image"),
    path(
        "marketplace/images/<str:identifier>/policy/",
        api.ImagePolicyApi.as_view(),
        name="api-marketplace-image-policy",
    ),
    path("marketplace/site-key/", api.SiteKeyApi.as_view(), name="api-marketplace-site-key"),
    path("marketplace/endorsers/", api.EndorserListApi.as_view(), name="api-marketplace-endorsers"),
    path("marketplace/endorsers/<str:email>/", api.EndorserHistoryApi.as_view(), name="api-marketplace-endorser"),
    path("accounts/pgp-keys/", api.PgpKeyListApi.as_view(), name="api-accounts-pgp-keys"),
    path(
        "accounts/pgp-keys/<str:fingerprint>/revoke/",
        api.PgpKeyRevokeApi.as_view(),
        name="api-accounts-pgp-key-revoke",
    ),
    path("admin/policy/", api.AdminPolicyApi.as_view(), name="api-admin-policy"),
    path("admin/policy/dry-run/", api.AdminPolicyDryRunApi.as_view(), name="api-admin-policy-dry-run"),
    path(
        "admin/images/<str:identifier>/endorse/",
        api.AdminImageEndorseApi.as_view(),
        name="api-admin-image-endorse",
    ),
    path(
        "admin/images/<str:identifier>/deprecate/",
        api.AdminImageDeprecateApi.as_view(),
        name="api-admin-image-deprecate",
    ),
]
