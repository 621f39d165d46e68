"""System checks of the portal: the third-party front-end files ``make install`` puts in ``static/vendor/``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks import Error as CheckError

# What the pages load from static/vendor/ (package.json pins them; npm ci fetches them; they are never committed).
VENDOR_FILES = ["vendor/htmx.min.js"]


@register(Tags.staticfiles)
def vendor_files_check(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Every page loads htmx from our static files: without it, collectstatic leaves it out and every page fails."""
    return [
        CheckError(
            f"static/{name} is missing: the pages load it from the site's own static files.",
            hint="Run `make install` (npm ci at the versions package-lock.json pins, copied into static/vendor/), "
            "then collectstatic.",
            id="portal.E001",
        )
        for name in VENDOR_FILES
        if not (settings.BASE_DIR / "static" / name).is_file()
    ]
