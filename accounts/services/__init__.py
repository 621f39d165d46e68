"""State changes of accounts, one module per subdomain; every public name is re-exported here, so callers
write ``from accounts import services`` and ``services.registration_approve(...)``.

- :mod:`.registration`: submit, confirm the address, resend the link, approve (with the directory write and
  its undo), reject
- :mod:`.email_change`: a new e-mail address, confirmed by its link
- :mod:`.passwords`: set a password where it is checked (directory or local)
- :mod:`.projects`: the personal project, shared projects, members and roles
- :mod:`.keys`: SSH keys; :mod:`.tokens`: API tokens
- :mod:`.directory_sync`: deactivate directory users who left the access group
- :mod:`.mailing`: mail after commit, shared by the flows above

Quotas live in :mod:`accounts.quotas`. Every change writes an audit entry in its transaction; e-mail goes out
after commit.
"""

from __future__ import annotations

from accounts.services.directory_sync import directory_users_sync, directory_users_sync_attempt
from accounts.services.email_change import (
    EmailChange,
    email_change_from_token,
    user_email_change_confirm,
    user_email_change_request,
)
from accounts.services.keys import ssh_key_add, ssh_key_delete
from accounts.services.passwords import is_directory_user, user_password_set
from accounts.services.projects import (
    PERSONAL_PREFIX,
    PROJECT_NAME_PATTERN,
    project_create,
    project_member_add,
    project_member_remove,
    project_member_set_role,
    project_personal_ensure,
)
from accounts.services.registration import (
    CONFIRMATION_RESEND_ANSWER,
    EMAIL_PENDING_MESSAGE,
    USERNAME_PATTERN,
    RegistrationInput,
    registration_approve,
    registration_confirmation_resend,
    registration_confirmation_token,
    registration_email_confirm,
    registration_errors,
    registration_from_token,
    registration_reject,
    registration_submit,
)
from accounts.services.tokens import api_token_create, api_token_revoke

__all__ = [
    "CONFIRMATION_RESEND_ANSWER",
    "EMAIL_PENDING_MESSAGE",
    "PERSONAL_PREFIX",
    "PROJECT_NAME_PATTERN",
    "USERNAME_PATTERN",
    "EmailChange",
    "RegistrationInput",
    "api_token_create",
    "api_token_revoke",
    "directory_users_sync",
    "directory_users_sync_attempt",
    "email_change_from_token",
    "is_directory_user",
    "project_create",
    "project_member_add",
    "project_member_remove",
    "project_member_set_role",
    "project_personal_ensure",
    "registration_approve",
    "registration_confirmation_resend",
    "registration_confirmation_token",
    "registration_email_confirm",
    "registration_errors",
    "registration_from_token",
    "registration_reject",
    "registration_submit",
    "ssh_key_add",
    "ssh_key_delete",
    "user_email_change_confirm",
    "user_email_change_request",
    "user_password_set",
]
