"""URLs of the accounts app: portal pages in ``urlpatterns``, REST endpoints (under /api/v1/) in ``api_urlpatterns``."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from accounts import api, views
from core import converters  # noqa: F401 - registers the <id:…> path converter

urlpatterns: list[URLPattern | URLResolver] = [
    path("register/", views.register, name="register"),
    path("register/done/", views.register_done, name="register-done"),
    path("register/confirm/", views.register_confirm_resend, name="register-confirm-resend"),
    path("register/confirm/<str:token>/", views.register_confirm, name="register-confirm"),
    path("profile/", views.profile, name="profile"),
    path("profile/email/", views.profile_email_change, name="profile-email-change"),
    path("profile/email/confirm/<str:token>/", views.profile_email_confirm, name="profile-email-confirm"),
    path("profile/ssh-keys/", views.profile_ssh_key_add, name="profile-ssh-key-add"),
    path("profile/ssh-keys/<id:key_id>/delete/", views.profile_ssh_key_delete, name="profile-ssh-key-delete"),
    path("profile/tokens/", views.profile_token_create, name="profile-token-create"),
    path("profile/tokens/<id:token_id>/revoke/", views.profile_token_revoke, name="profile-token-revoke"),
    path("console/registrations/", views.console_registrations, name="console-registrations"),
    path(
        "console/registrations/<id:registration_id>/approve/",
        views.console_registration_approve,
        name="console-registration-approve",
    ),
    path(
        "console/registrations/<id:registration_id>/reject/",
        views.console_registration_reject,
        name="console-registration-reject",
    ),
    path("console/quotas/", views.console_quotas, name="console-quotas"),
    path("console/quotas/<id:project_id>/", views.console_quota, name="console-quota"),
    path("password-reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("password-reset/sent/", views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password-reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("password-reset/done/", views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
]

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("accounts/registrations/", api.RegistrationCreateApi.as_view(), name="api-registrations"),
    path(
        "accounts/registrations/confirmation/",
        api.RegistrationConfirmationResendApi.as_view(),
        name="api-registration-confirmation",
    ),
    path("accounts/me/", api.MeApi.as_view(), name="api-me"),
    path("accounts/me/email/", api.MeEmailApi.as_view(), name="api-me-email"),
    path("accounts/projects/", api.ProjectListApi.as_view(), name="api-projects"),
    path("accounts/projects/<id:project_id>/", api.ProjectDetailApi.as_view(), name="api-project"),
    path("accounts/projects/<id:project_id>/members/", api.MemberListApi.as_view(), name="api-project-members"),
    path(
        "accounts/projects/<id:project_id>/members/<id:user_id>/",
        api.MemberDetailApi.as_view(),
        name="api-project-member",
    ),
    path("accounts/ssh-keys/", api.SshKeyListApi.as_view(), name="api-ssh-keys"),
    path("accounts/ssh-keys/<id:key_id>/", api.SshKeyDetailApi.as_view(), name="api-ssh-key"),
    path("accounts/tokens/", api.ApiTokenListApi.as_view(), name="api-tokens"),
    path("accounts/tokens/<id:token_id>/", api.ApiTokenDetailApi.as_view(), name="api-token"),
    path("admin/registrations/", api.AdminRegistrationListApi.as_view(), name="api-admin-registrations"),
    path(
        "admin/registrations/<id:registration_id>/",
        api.AdminRegistrationDetailApi.as_view(),
        name="api-admin-registration",
    ),
    path(
        "admin/registrations/<id:registration_id>/approve/",
        api.AdminRegistrationApproveApi.as_view(),
        name="api-admin-registration-approve",
    ),
    path(
        "admin/registrations/<id:registration_id>/reject/",
        api.AdminRegistrationRejectApi.as_view(),
        name="api-admin-registration-reject",
    ),
]
