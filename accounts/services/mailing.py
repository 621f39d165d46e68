"""Mail sent by the accounts services: rendered now, sent once the transaction commits; and how long the
links in it (address confirmations) stay valid."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string

logger = logging.getLogger("accounts.services")


def mail_after_commit(
    *, template: str, subject: str, to: list[str], context: dict[str, Any], template_dir: str = "accounts/email"
) -> None:
    """Send a plain-text mail rendered from ``<template_dir>/<template>.txt`` once the transaction commits.
    A mail server that fails is logged: the decision it reports has been made and stays made."""
    recipients = [address for address in to if address]
    if not recipients:
        return
    body = render_to_string(
        f"{template_dir}/{template}.txt", {**context, "site_name": settings.SITE_NAME, "site_url": settings.SITE_URL}
    )

    def send() -> None:
        try:
            send_mail(f"[{settings.SITE_NAME}] {subject}", body, None, recipients)
        except OSError:
            logger.exception("could not send %r to %s", subject, recipients)

    transaction.on_commit(send)


def staff_addresses() -> list[str]:
    return list(User.objects.filter(is_staff=True, is_active=True).exclude(email="").values_list("email", flat=True))


def confirmation_max_age() -> int:
    """Seconds a mailed confirmation link stays valid (``EMAIL_CONFIRMATION_HOURS``)."""
    return settings.EMAIL_CONFIRMATION_HOURS * 3600
